# Elementwise activations and their derivatives, dx = dy * f'(x):
#
#   relu       f(x) = max(x, 0)                       f'(x) = 1 for x > 0, else 0
#   gelu       f(x) = x Phi(x)                        f'(x) = Phi(x) + x phi(x)
#              (Phi, phi: the standard normal CDF and density; approximate="none")
#   gelu_tanh  f(x) = x (1 + tanh(u)) / 2,  u = sqrt(2 / pi) (x + 0.044715 x^3)    (GPT-2's)
#                   = x sigmoid(v),  v = 2u           f'(x) = s + x s (1 - s) v',  s = sigmoid(v)
#   silu       f(x) = x sigmoid(x)                    f'(x) = s + x s (1 - s),     s = sigmoid(x)
#
# gelu_tanh is computed as x sigmoid(2u), the same function: 1 + tanh(u) cancels to 0 for
# u < -9 in float32 while sigmoid keeps its digits (gelu_tanh(-10) = -1.6e-37, not -0). The
# sigmoid and 1 - sigmoid come from one exp(-|v|) without cancellation either.
# In float32 every function and derivative is a vector kernel of cyburn_vmath.h (silu and the
# tanh GELU from one exp and one division, the erf GELU one polynomial per lane), the loops below
# are float64's (the erf GELU's from libm's erfc).
# At x = -inf every f is 0 and every f' is 0 (the limits), at +inf f = inf and f' = 1; NaN
# stays NaN. Every loop below is one vectorized pass over memory.

from libc.float cimport DBL_MAX, FLT_MAX

cpdef enum Activation:
    RELU = 0
    GELU = 1
    GELU_TANH = 2
    SILU = 3
    TANH = 4            # the vector math functions themselves, for their accuracy tests
    ERF = 5

cdef enum:
    ELEMENT_BLOCK = 64      # threads split arrays at multiples of this: whole vectors at any level


cdef inline real activation_sigmoid_pair(real v, real *complement) noexcept nogil:
    """sigmoid(v) = 1 / (1 + exp(-v)), storing 1 - sigmoid(v) = sigmoid(-v) in complement[0].
    With e = exp(-|v|) <= 1 the two are 1 / (1 + e) and e / (1 + e): neither cancels nor
    overflows, and a NaN v gives NaN for both."""
    cdef real e = vexp(-v if v > 0 else v)
    cdef real one = 1
    cdef real r = one / (one + e)
    complement[0] = e * r if v >= 0 else r
    return r if v >= 0 else e * r


cdef inline real activation_at_least_lowest(real x) noexcept nogil:
    """x, with -inf raised to the lowest finite value: -inf * f(-inf)/x's factor 0 then gives
    0, the limit, instead of NaN (NaN stays NaN)."""
    if real is float:
        return -FLT_MAX if x < -FLT_MAX else x
    else:
        return -DBL_MAX if x < -DBL_MAX else x


cdef inline real activation_saturate(real x) noexcept nogil:
    """x within [-CYB_SATURATED, CYB_SATURATED] (NaN stays NaN): where the derivatives'
    factors of x would meet a sigmoid or density of exactly 0 as inf * 0."""
    return -CYB_SATURATED if x < -CYB_SATURATED else (CYB_SATURATED if x > CYB_SATURATED else x)


cdef inline real activation_gelu_tanh_v(real x) noexcept nogil:
    """v = 2u = x (V1 + V3 x^2), V1 = 2 sqrt(2 / pi), V3 = 0.044715 V1; +-inf once x^3
    overflows, as the sigmoid wants."""
    return x * (<real>1.5957691216057308 + <real>0.07135481627260025 * x * x)


cdef inline real activation_gelu_tanh_dv(real x) noexcept nogil:
    """v' = V1 + 3 V3 x^2."""
    return <real>1.5957691216057308 + <real>0.21406444881780076 * x * x


cdef void activation_float32_span(Activation f, const float *dy, const float *x, float *out,
                                  Py_ssize_t n, bint stream) noexcept nogil:
    """out = f(x) (dy NULL) or dy * f'(x) for n float32 elements, f up to SILU: the vector
    kernels of cyburn_vmath.h, their whole vectors stored non-temporally with `stream`."""
    if dy == NULL:
        if f == RELU:
            cyb_relu_f32(dy, x, out, n, stream)
        elif f == GELU:
            cyb_gelu_f32(dy, x, out, n, stream)
        elif f == GELU_TANH:
            cyb_gelu_tanh_f32(dy, x, out, n, stream)
        else:
            cyb_silu_f32(dy, x, out, n, stream)
    elif f == RELU:
        cyb_relu_backward_f32(dy, x, out, n, stream)
    elif f == GELU:
        cyb_gelu_backward_f32(dy, x, out, n, stream)
    elif f == GELU_TANH:
        cyb_gelu_tanh_backward_f32(dy, x, out, n, stream)
    else:
        cyb_silu_backward_f32(dy, x, out, n, stream)


cdef void activation_span(Activation f, const real *x, real *y, Py_ssize_t n) noexcept nogil:
    """y = f(x) for n float64 elements, or float32 ones of TANH and ERF (y may be x)."""
    cdef Py_ssize_t i
    cdef real unused
    if f == TANH:
        for i in range(n):
            y[i] = vtanh(x[i])
    elif f == ERF:
        for i in range(n):
            y[i] = verf(x[i])
    elif f == RELU:
        for i in range(n):
            y[i] = 0 if x[i] < 0 else x[i]
    elif f == GELU:
        for i in range(n):
            y[i] = activation_at_least_lowest(x[i]) * normal_cdf(x[i])
    elif f == GELU_TANH:
        for i in range(n):
            y[i] = (activation_at_least_lowest(x[i])
                    * activation_sigmoid_pair(activation_gelu_tanh_v(x[i]), &unused))
    else:
        for i in range(n):
            y[i] = activation_at_least_lowest(x[i]) * activation_sigmoid_pair(x[i], &unused)


cdef inline real activation_times_slope(real dy, real slope, real x) noexcept nogil:
    """dy * slope, slope = f'(x) for gelu or silu, with -dy's sign where f'(x) < 0 rounds to 0
    far left (cyb_times_slope of cyburn_vmath.h: -dy for an infinite dy, not inf * 0 = NaN)."""
    if real is float:
        return cyb_times_slope_f32(dy, slope, x)
    else:
        return cyb_times_slope_f64(dy, slope, x)


cdef void activation_gradient_span(Activation f, const real *dy, const real *x, real *dx,
                                   Py_ssize_t n) noexcept nogil:
    """dx = dy * f'(x) for n float64 elements (dx may be dy or x)."""
    cdef Py_ssize_t i
    cdef real s, complement, v
    if f == RELU:
        for i in range(n):
            dx[i] = 0 if x[i] <= 0 else dy[i]            # PyTorch's threshold_backward
    elif f == GELU:
        for i in range(n):
            v = activation_saturate(x[i])
            dx[i] = activation_times_slope(dy[i], normal_cdf(v) + v * normal_pdf(v), x[i])
    elif f == GELU_TANH:
        for i in range(n):
            v = activation_saturate(x[i])
            s = activation_sigmoid_pair(activation_gelu_tanh_v(v), &complement)
            dx[i] = activation_times_slope(
                dy[i], s + v * s * complement * activation_gelu_tanh_dv(v), x[i])
    else:
        for i in range(n):
            v = activation_saturate(x[i])
            s = activation_sigmoid_pair(v, &complement)
            dx[i] = activation_times_slope(dy[i], s + v * s * complement, x[i])


cdef void activation_elementwise(Activation f, const real *dy, const real *x, real *out,
                                 Py_ssize_t n, bint stream, int threads) noexcept nogil:
    """out = f(x) (dy NULL) or dy * f'(x), threads taking contiguous runs of whole blocks."""
    cdef Py_ssize_t blocks = (n + ELEMENT_BLOCK - 1) // ELEMENT_BLOCK, first, last
    cdef int c
    if threads == 1:
        activation_elementwise_chunk(f, dy, x, out, 0, n, stream)
        return
    for c in prange(threads, num_threads=threads, schedule='static'):
        first = min(n, chunk_start(blocks, c, threads) * ELEMENT_BLOCK)
        last = min(n, chunk_start(blocks, c + 1, threads) * ELEMENT_BLOCK)
        activation_elementwise_chunk(f, dy, x, out, first, last, stream)
    team_finished()


cdef void activation_elementwise_chunk(Activation f, const real *dy, const real *x, real *out,
                                       Py_ssize_t first, Py_ssize_t last,
                                       bint stream) noexcept nogil:
    """Elements first..last-1: up to the first 64-byte boundary of out, then the rest, whose
    stores are then aligned (NumPy aligns data to 16 bytes only, and full-width stores that
    straddle cache lines cost: relu of 25M float32 on 1 thread: 12.0 ms unaligned, against
    NumPy's 10.6) and may stream (float32's; a streaming thread fences before it returns). Where
    the rest starts depends on the thread count: the float32 kernels give an element the same
    lanes wherever it falls, and the float64 loops compute the same operations in their vector
    loop and scalar remainder (tests check the results are bitwise identical for any thread
    count). With `stream`, the float32 kernels also prefetch a page ahead (cyb_prefetch_ahead)."""
    cdef Py_ssize_t head = min(last - first, (-(<Py_ssize_t>(out + first)) & 63) // sizeof(real))
    activation_elementwise_span(f, dy, x, out, first, head, stream)
    activation_elementwise_span(f, dy, x, out, first + head, last - first - head, stream)
    if stream:
        cyb_stream_fence()


cdef inline void activation_elementwise_span(Activation f, const real *dy, const real *x,
                                             real *out, Py_ssize_t first, Py_ssize_t n,
                                             bint stream) noexcept nogil:
    """Elements first..first+n-1 through their kernel (`stream`: float32's only)."""
    if real is float:
        if f <= SILU:
            activation_float32_span(f, NULL if dy == NULL else dy + first, x + first,
                                    out + first, n, stream)
            return
    if dy == NULL:
        activation_span(f, x + first, out + first, n)
    else:
        activation_gradient_span(f, dy + first, x + first, out + first, n)


# ---- Python entry points ----------------------------------------------------------------------

def activation_forward(cnp.ndarray x not None, cnp.ndarray y not None, int f, int num_threads):
    """y = f(x) elementwise, for C-contiguous x and y of one size and float dtype (y may be x);
    f an Activation."""
    activation_run(f, None, x, y, num_threads)


def activation_backward(cnp.ndarray dy not None, cnp.ndarray x not None, cnp.ndarray dx not None,
                        int f, int num_threads):
    """dx = dy * f'(x) elementwise (dx may be dy or x); f an Activation up to SILU."""
    activation_run(f, dy, x, dx, num_threads)


cdef object activation_run(int f, object dy, cnp.ndarray x, cnp.ndarray out, int num_threads):
    cdef const void *x_data
    cdef const void *dy_data
    cdef void *out_data
    cdef int typenum = float_data(x, dy, out, &x_data, &dy_data, &out_data)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef int threads = team_size(n, (n + ELEMENT_BLOCK - 1) // ELEMENT_BLOCK, num_threads)
    cdef bint stream = beyond_cache(x, x if dy is None else <cnp.ndarray>dy, out)
    if not RELU <= f <= (SILU if dy is not None else ERF):
        raise ValueError(f"cyburn kernel: no activation {f}")
    with nogil:
        if typenum == cnp.NPY_FLOAT:
            activation_elementwise(<Activation>f, <const float *>dy_data, <const float *>x_data,
                                   <float *>out_data, n, stream, threads)
        else:
            activation_elementwise(<Activation>f, <const double *>dy_data,
                                   <const double *>x_data, <double *>out_data, n, stream,
                                   threads)
