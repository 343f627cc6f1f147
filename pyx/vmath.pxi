# Typed access to the vector primitives of cyburn_vmath.h, for the fused type `real`.
# Each wrapper picks the float or double version at compile time; GCC inlines them into
# the calling loop, which is what lets those loops vectorize.

cdef extern from "cyburn_vmath.h" nogil:
    float cyb_exp_f32(float x)
    double cyb_exp_f64(double x)
    float cyb_tanh_f32(float x)
    double cyb_tanh_f64(double x)
    float cyb_erf_f32(float x)
    double cyb_erf_f64(double x)
    double cyb_normal_cdf_f64(double x)
    double cyb_normal_pdf_f64(double x)
    float cyb_times_slope_f32(float dy, float slope, float x)
    double cyb_times_slope_f64(double dy, double slope, double x)
    enum: CYB_SATURATED
    # the float32 activation kernels: out = f(x) (dy NULL) or dy * f'(x)
    void cyb_relu_f32(const float *dy, const float *x, float *out, Py_ssize_t n, bint stream)
    void cyb_relu_backward_f32(const float *dy, const float *x, float *out, Py_ssize_t n,
                               bint stream)
    void cyb_gelu_f32(const float *dy, const float *x, float *out, Py_ssize_t n, bint stream)
    void cyb_gelu_backward_f32(const float *dy, const float *x, float *out, Py_ssize_t n,
                               bint stream)
    void cyb_gelu_tanh_f32(const float *dy, const float *x, float *out, Py_ssize_t n,
                           bint stream)
    void cyb_gelu_tanh_backward_f32(const float *dy, const float *x, float *out, Py_ssize_t n,
                                    bint stream)
    void cyb_silu_f32(const float *dy, const float *x, float *out, Py_ssize_t n, bint stream)
    void cyb_silu_backward_f32(const float *dy, const float *x, float *out, Py_ssize_t n,
                               bint stream)
    float cyb_max_f32(const float *x, Py_ssize_t n)
    double cyb_max_f64(const double *x, Py_ssize_t n)
    double CYB_EXP64_LOG_SCALE
    void cyb_norm_apply_f32(const float *x, float m, float r, const float *w, const float *b,
                            float *y, Py_ssize_t n, bint stream)
    void cyb_channel_apply_f32(const float *x, float m, float a, float b, float *y,
                               Py_ssize_t n, bint stream)
    void cyb_channel_backward_apply_f32(const float *dy, const float *x, float r, float a,
                                        float g_mean, float m, float q, float *dx,
                                        Py_ssize_t n, bint stream)
    void cyb_scale_span_f32(float *y, float c, Py_ssize_t n)
    void cyb_softmax_backward_span_f32(const float *dy, const float *y, float s, float scale,
                                       float *dx, Py_ssize_t n, bint stream)
    double cyb_sum_exp64_f32(const float *x, float shift, float *y, bint shifted, Py_ssize_t n)
    double cyb_sum_exp_f64(const double *x, double shift, double *y, bint shifted, Py_ssize_t n)
    double cyb_sum_exp_online_f32(const float *x, Py_ssize_t n, float *max)
    double cyb_sum_exp_online_f64(const double *x, Py_ssize_t n, double *max)
    double cyb_dot_f32(const float *a, const float *b, Py_ssize_t n)
    double cyb_dot_f64(const double *a, const double *b, Py_ssize_t n)
    double cyb_sum_f32(const float *a, Py_ssize_t n)
    double cyb_sum_f64(const double *a, Py_ssize_t n)
    double cyb_sum_sq_dev_f32(const float *x, float m, Py_ssize_t n)
    double cyb_sum_sq_dev_f64(const double *x, double m, Py_ssize_t n)
    void cyb_sums_centered_f32(const float *dy, const float *w, const float *x, float m,
                               Py_ssize_t n, double *sum_g, double *sum_gx)
    void cyb_sums_centered_f64(const double *dy, const double *w, const double *x, double m,
                               Py_ssize_t n, double *sum_g, double *sum_gx)
    double cyb_sum_store_exp_f32(const float *a, const float *b, float *e, Py_ssize_t n,
                                 bint prefetch)
    double cyb_sum_store_exp_f64(const double *a, const double *b, double *e, Py_ssize_t n,
                                 bint prefetch)
    void cyb_prefetch(const void *p, Py_ssize_t nbytes)
    void cyb_prefetch_ahead(const void *p, Py_ssize_t nbytes)
    enum: CYB_PREFETCH_MAX
    void cyb_stream_copy(void *dst, const void *src, Py_ssize_t nbytes)
    void cyb_stream_fence()

from libc.math cimport log as c_log
from libc.string cimport memcpy

ctypedef fused real:
    float
    double


cdef inline real vexp(real x) noexcept nogil:
    """exp(x), vectorizable, within about 1 ulp (see cyburn_vmath.h)."""
    if real is float:
        return cyb_exp_f32(x)
    else:
        return cyb_exp_f64(x)


cdef inline real vtanh(real x) noexcept nogil:
    """tanh(x): our vectorizable polynomial for float, libm for double (cyburn_vmath.h)."""
    if real is float:
        return cyb_tanh_f32(x)
    else:
        return cyb_tanh_f64(x)


cdef inline real verf(real x) noexcept nogil:
    """erf(x): our vectorizable polynomial for float, libm for double (cyburn_vmath.h)."""
    if real is float:
        return cyb_erf_f32(x)
    else:
        return cyb_erf_f64(x)


cdef inline double normal_cdf(double x) noexcept nogil:
    """Phi(x) = erfc(-x / sqrt 2) / 2, the standard normal CDF, tails kept (cyburn_vmath.h)."""
    return cyb_normal_cdf_f64(x)


cdef inline double normal_pdf(double x) noexcept nogil:
    """exp(-x^2 / 2) / sqrt(2 pi), the standard normal density (cyburn_vmath.h)."""
    return cyb_normal_pdf_f64(x)


cdef inline void prefetch_span(const real *x, Py_ssize_t n) noexcept nogil:
    """Start loading (the beginning of) x[0:n] into cache."""
    cyb_prefetch(x, n * sizeof(real))


cdef inline void store_span(real *dst, const real *src, Py_ssize_t n, bint stream) noexcept nogil:
    """dst[0:n] = src[0:n], with non-temporal stores when `stream` (see cyburn_vmath.h)."""
    if stream:
        cyb_stream_copy(dst, src, n * sizeof(real))
    else:
        memcpy(dst, src, n * sizeof(real))


cdef inline real span_max(const real *x, Py_ssize_t n) noexcept nogil:
    """max(x[0:n]) for n >= 1."""
    if real is float:
        return cyb_max_f32(x, n)
    else:
        return cyb_max_f64(x, n)


cdef inline double span_sum_exp(const real *x, real shift, real *y, bint shifted,
                                Py_ssize_t n) noexcept nogil:
    """c sum(exp(x - shift)) for x <= shift (shift = max x), storing c exp(x - shift) in y, or
    x - shift when `shifted`; accumulated in real within blocks of 256 elements and in double
    across blocks. The factor c is 2^64 for float32 (cyb_sum_exp64_f32: whole vectors, and no
    exp rounded into the subnormals) and 1 for float64: a quotient of the two cancels it, a
    log of the sum takes it off with span_log_sum_exp."""
    if real is float:
        return cyb_sum_exp64_f32(x, shift, y, shifted, n)
    else:
        return cyb_sum_exp_f64(x, shift, y, shifted, n)


cdef inline double span_log_sum_exp(double sum, const real *x) noexcept nogil:
    """log(sum(exp(x - shift))) from the sum span_sum_exp returned for x (its factor c off)."""
    if real is float:
        return c_log(sum) - CYB_EXP64_LOG_SCALE
    else:
        return c_log(sum)


cdef inline double span_sum_exp_online(const real *x, Py_ssize_t n, real *max) noexcept nogil:
    """sum(exp(x - max(x))) in one read of x, storing max(x) in *max (see cyburn_vmath.h)."""
    if real is float:
        return cyb_sum_exp_online_f32(x, n, max)
    else:
        return cyb_sum_exp_online_f64(x, n, max)


cdef inline double span_dot(const real *a, const real *b, Py_ssize_t n) noexcept nogil:
    """sum(a * b), blocked like span_sum_exp."""
    if real is float:
        return cyb_dot_f32(a, b, n)
    else:
        return cyb_dot_f64(a, b, n)


cdef inline double span_sum(const real *a, Py_ssize_t n) noexcept nogil:
    """sum(a), blocked like span_sum_exp."""
    if real is float:
        return cyb_sum_f32(a, n)
    else:
        return cyb_sum_f64(a, n)


cdef inline double span_sum_store_exp(const real *a, const real *b, real *e, Py_ssize_t n,
                                      bint prefetch) noexcept nogil:
    """sum(a), blocked like span_sum_exp, storing exp(b) in e; a and b prefetched a page ahead
    with `prefetch`."""
    if real is float:
        return cyb_sum_store_exp_f32(a, b, e, n, prefetch)
    else:
        return cyb_sum_store_exp_f64(a, b, e, n, prefetch)


cdef inline double span_sum_sq_dev(const real *x, real m, Py_ssize_t n) noexcept nogil:
    """sum((x - m)**2), blocked like span_sum_exp."""
    if real is float:
        return cyb_sum_sq_dev_f32(x, m, n)
    else:
        return cyb_sum_sq_dev_f64(x, m, n)


cdef inline void span_sums_centered(const real *dy, const real *w, const real *x, real m,
                                    Py_ssize_t n, double *sum_g, double *sum_gx) noexcept nogil:
    """sum(g) and sum(g * (x - m)) in one pass, g = dy * w (g = dy when w is NULL), blocked
    like span_sum_exp."""
    if real is float:
        cyb_sums_centered_f32(dy, w, x, m, n, sum_g, sum_gx)
    else:
        cyb_sums_centered_f64(dy, w, x, m, n, sum_g, sum_gx)
