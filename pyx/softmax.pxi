# Softmax family kernels: softmax, log_softmax and their backward functions.
#
# A C-contiguous array reduced along one axis is (outer, n, inner), and two kernels cover
# every axis without transposing the array:
#   softmax_rows     inner == 1: outer rows of n contiguous elements; threads take whole rows.
#   softmax_columns  inner > 1:  the reduced axis has stride inner; threads take strips of
#                                contiguous columns and reduce down the n rows of a strip,
#                                vectorized across its columns.
# Each output element is computed by one thread in an order that depends only on the shape,
# so results are bitwise identical for any thread count.

from libc.math cimport log as c_log

cdef enum:
    SOFTMAX_STRIP_MIN = 1024                # columns per strip of the column kernels: at least,
    SOFTMAX_STRIP_MAX = 16384               # at most (the per-thread sums stay in L2),
    SOFTMAX_STRIP_ALIGN = 64                # and a multiple of (whole vectors at any SIMD level)


# ---- one row: a contiguous span of n >= 1 elements -----------------------------------------

cdef inline void softmax_row(const real *x, real *y, Py_ssize_t n) noexcept nogil:
    """y = exp(x - max x) / sum(exp(x - max x))"""
    cdef real m = span_max(x, n)
    cdef real inv_sum = <real>(1.0 / span_sum_exp(x, m, y, False, n))
    cdef Py_ssize_t i
    if real is float:
        cyb_scale_span_f32(y, inv_sum, n)
    else:
        for i in range(n):
            y[i] = y[i] * inv_sum


cdef inline void log_softmax_row(const real *x, real *y, Py_ssize_t n) noexcept nogil:
    """y = (x - max x) - log(sum(exp(x - max x)))   (in this order, for precision)"""
    cdef real m = span_max(x, n)
    cdef real log_sum = <real>span_log_sum_exp(span_sum_exp(x, m, y, True, n), x)  # y = x - m
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = y[i] - log_sum


cdef inline void softmax_backward_row(const real *dy, const real *y, real *dx, Py_ssize_t n,
                                      real scale, bint stream) noexcept nogil:
    """dx = y * (dy - sum(dy * y)) * scale   (the gradient of softmax(scale * x); dx may be
    dy or y); float32's stored non-temporally with `stream` (cyb_softmax_backward_span_f32),
    float64's ignore it."""
    cdef real s = <real>span_dot(dy, y, n)
    cdef Py_ssize_t i
    if real is float:
        cyb_softmax_backward_span_f32(dy, y, s, scale, dx, n, stream)
    else:
        for i in range(n):
            dx[i] = y[i] * (dy[i] - s) * scale


cdef inline void log_softmax_backward_row(const real *dy, const real *y, real *dx,
                                          Py_ssize_t n, bint prefetch) noexcept nogil:
    """dx = dy - exp(y) * sum(dy)   (dx must not overlap dy)

    A row longer than the prefetch of the next row (8 KiB) gets exp(y) in the pass that sums
    dy, so that y streams in with the arithmetic (LM-head rows of 50257: 26 -> 22 ms), with
    `prefetch` (from memory) dy and y a page ahead; a shorter one, already in cache, computes
    it in the second pass (12288 rows of 1024: 4.2 ms, against 4.6 the other way)."""
    cdef real s
    cdef Py_ssize_t i
    if n * <Py_ssize_t>sizeof(real) > CYB_PREFETCH_MAX:
        s = <real>span_sum_store_exp(dy, y, dx, n, prefetch)      # dx = exp(y)
        for i in range(n):
            dx[i] = dy[i] - dx[i] * s
    else:
        s = <real>span_sum(dy, n)
        for i in range(n):
            dx[i] = dy[i] - vexp(y[i]) * s


cdef inline void softmax_kahan_add(double *total, double *error, double term) noexcept nogil:
    """total += term, carrying the rounding error forward (Kahan): a column's sum over n rows
    is then as accurate as a row's blocked sum, whatever n. Once the total is infinite there
    is no error to carry (inf - inf would turn the sum into NaN)."""
    cdef double corrected = term - error[0]
    cdef double new_total = total[0] + corrected
    error[0] = (new_total - total[0]) - corrected if new_total - new_total == 0 else 0.0
    total[0] = new_total


# ---- one strip: w contiguous columns, n >= 1 rows `stride` elements apart -----------------
# Down a column the elements are `stride` apart, so these kernels work on strips of many
# columns and walk them row by row: every pass reads long contiguous row segments, which
# the hardware prefetchers stream from memory. Packing short strided column tiles into a
# contiguous copy to read them only once was measured slower (rows a multiple of 4 KiB apart
# also fall into the same few cache sets).

cdef void softmax_strip(const real *x, real *y, Py_ssize_t stride, Py_ssize_t n, Py_ssize_t w,
                        bint log, bint stream, double *buffer) noexcept nogil:
    """softmax_row / log_softmax_row applied down each of the w columns.
    `buffer` has room for 2 * w doubles and 3 * w reals."""
    cdef double *s = buffer
    cdef double *s_error = buffer + w
    cdef real *m = <real *>(buffer + 2 * w)
    cdef real *c = m + w
    cdef real *row = c + w
    cdef const real *xi
    cdef Py_ssize_t i, j
    for j in range(w):
        m[j] = x[j]
        s[j] = 0.0
        s_error[j] = 0.0
    for i in range(1, n):
        xi = x + i * stride
        for j in range(w):
            m[j] = xi[j] if xi[j] > m[j] else m[j]
    # four rows per sweep: a quarter of the loads and stores of the sums
    for i in range(0, n - 3, 4):
        xi = x + i * stride
        for j in range(w):
            softmax_kahan_add(&s[j], &s_error[j],
                              (vexp(xi[j] - m[j]) + vexp(xi[stride + j] - m[j]))
                              + (vexp(xi[2 * stride + j] - m[j])
                                 + vexp(xi[3 * stride + j] - m[j])))
    for i in range(n - n % 4, n):
        xi = x + i * stride
        for j in range(w):
            softmax_kahan_add(&s[j], &s_error[j], vexp(xi[j] - m[j]))
    for j in range(w):
        c[j] = <real>c_log(s[j]) if log else <real>(1.0 / s[j])
    for i in range(n):
        xi = x + i * stride
        if log:
            for j in range(w):
                row[j] = (xi[j] - m[j]) - c[j]
        else:
            for j in range(w):
                row[j] = vexp(xi[j] - m[j]) * c[j]
        store_span(y + i * stride, row, w, stream)


cdef void softmax_backward_strip(const real *dy, const real *y, real *dx, Py_ssize_t stride,
                                 Py_ssize_t n, Py_ssize_t w, bint log, bint stream,
                                 double *buffer) noexcept nogil:
    """softmax_backward_row / log_softmax_backward_row applied down each of w columns.
    `buffer` has room for 2 * w doubles and 2 * w reals (softmax_strip's suits too)."""
    cdef double *sums = buffer
    cdef double *sums_error = buffer + w
    cdef real *c = <real *>(buffer + 2 * w)
    cdef real *row = c + w
    cdef const real *dyi
    cdef const real *yi
    cdef Py_ssize_t i, j
    for j in range(w):
        sums[j] = 0.0
        sums_error[j] = 0.0
    for i in range(0, n - 3, 4):           # four rows per sweep, as in softmax_strip
        dyi = dy + i * stride
        yi = y + i * stride
        if log:
            for j in range(w):
                softmax_kahan_add(&sums[j], &sums_error[j],
                                  (<double>dyi[j] + dyi[stride + j])
                                  + (<double>dyi[2 * stride + j] + dyi[3 * stride + j]))
        else:
            for j in range(w):
                softmax_kahan_add(&sums[j], &sums_error[j],
                                  (<double>dyi[j] * yi[j]
                                   + <double>dyi[stride + j] * yi[stride + j])
                                  + (<double>dyi[2 * stride + j] * yi[2 * stride + j]
                                     + <double>dyi[3 * stride + j] * yi[3 * stride + j]))
    for i in range(n - n % 4, n):
        dyi = dy + i * stride
        yi = y + i * stride
        if log:
            for j in range(w):
                softmax_kahan_add(&sums[j], &sums_error[j], dyi[j])
        else:
            for j in range(w):
                softmax_kahan_add(&sums[j], &sums_error[j], <double>dyi[j] * yi[j])
    for j in range(w):
        c[j] = <real>sums[j]
    for i in range(n):
        dyi = dy + i * stride
        yi = y + i * stride
        if log:
            for j in range(w):
                row[j] = dyi[j] - vexp(yi[j]) * c[j]
        else:
            for j in range(w):
                row[j] = yi[j] * (dyi[j] - c[j])
        store_span(dx + i * stride, row, w, stream)


cdef Py_ssize_t softmax_strip_width(Py_ssize_t inner, int threads) noexcept nogil:
    """Columns per strip: enough strips for every thread, within [SOFTMAX_STRIP_MIN,
    SOFTMAX_STRIP_MAX]. A multiple of SOFTMAX_STRIP_ALIGN, so that whatever the thread count
    every strip but the last is whole vectors, and a column meets the same arithmetic (vector
    body or remainder) in any split: the results do not depend on the thread count."""
    cdef Py_ssize_t w = (inner + threads - 1) // threads
    w = (w + SOFTMAX_STRIP_ALIGN - 1) // SOFTMAX_STRIP_ALIGN * SOFTMAX_STRIP_ALIGN
    return min(inner, <Py_ssize_t>SOFTMAX_STRIP_MAX, max(w, <Py_ssize_t>SOFTMAX_STRIP_MIN))


# ---- whole arrays: each thread takes one contiguous chunk of rows or of column strips ------
# (outer, n, inner) with inner == 1 is softmax_rows' (outer rows of n); anything else is
# softmax_columns' (outer * strips strips). A team of threads costs about 0.4 us even with
# one thread, so one thread calls its chunk directly. With `stream` (the operands exceed the
# last-level cache: the rule of cyburn._machine), results go out with non-temporal stores
# and the chunk ends with a fence. The forward rows never stream: their output is written
# twice in cache, then once more to memory through a scratch row (on a Xeon with 48 KiB L1d:
# (12288, 1024) float32, 2 threads, 3.3 -> 4.3 ms). Measured on an EPYC (Zen 3, 32 MiB L3,
# 2 threads, 40 interleaved rounds, medians): streaming the column strips 0.94x the time of
# plain stores, their backward 0.90x; the backward rows of (12288, 1024), (24576, 1024) and
# (1024, 50257) 0.86-1.11x, within this machine's noise.

cdef enum SoftmaxOp:
    SOFTMAX
    LOG_SOFTMAX
    SOFTMAX_BACKWARD            # a = dy, b = y
    LOG_SOFTMAX_BACKWARD


cdef inline bint softmax_is_backward(SoftmaxOp op) noexcept nogil:
    return op == SOFTMAX_BACKWARD or op == LOG_SOFTMAX_BACKWARD


cdef inline bint softmax_is_log(SoftmaxOp op) noexcept nogil:
    return op == LOG_SOFTMAX or op == LOG_SOFTMAX_BACKWARD


cdef void softmax_rows(SoftmaxOp op, const real *a, const real *b, real *out, Py_ssize_t count,
                       Py_ssize_t n, bint stream, bint prefetch, int threads) noexcept nogil:
    cdef Py_ssize_t c
    if threads > 1:
        for c in prange(threads, num_threads=threads, schedule='static'):
            softmax_rows_chunk(op, a, b, out, n, chunk_start(count, c, threads),
                               chunk_start(count, c + 1, threads), stream, prefetch)
        team_finished()
    else:
        softmax_rows_chunk(op, a, b, out, n, 0, count, stream, prefetch)


cdef void softmax_rows_chunk(SoftmaxOp op, const real *a, const real *b, real *out,
                             Py_ssize_t n, Py_ssize_t first, Py_ssize_t last, bint stream,
                             bint prefetch) noexcept nogil:
    """Rows first..last-1, each computed in cache (into a scratch row, then stored past the
    cache, with `stream`; float32 softmax_backward rows store past it from their arithmetic).
    With `prefetch` (the forward's operands beyond the cache the kernels count on), the next
    row's input is prefetched while a row is computed: rows from memory, (12288, 1024) float32
    softmax on one thread 1.17x faster. Rows from the caches are not: there the prefetches only
    wait for line fill buffers. Nor is the next row of the backward's two inputs, from the
    caches or not: (1024, 1024) softmax_backward took 1.2-1.5x as long with it,
    log_softmax_backward 1.0-1.15x, (12288, 1024) softmax_backward rows on one thread
    1.15-1.3x (EPYC Zen 3). Long log_softmax_backward rows prefetch within the row instead, a
    page ahead as they go (log_softmax_backward_row)."""
    cdef Py_ssize_t r
    cdef bint direct = real is float and op == SOFTMAX_BACKWARD
    cdef real *scratch = <real *>malloc(n * sizeof(real)) if stream and not direct else NULL
    cdef real *target
    for r in range(first, last):
        target = scratch if scratch != NULL else out + r * n
        if r + 1 < last and prefetch:
            prefetch_span(a + (r + 1) * n, n)
        if op == SOFTMAX:
            softmax_row(a + r * n, target, n)
        elif op == LOG_SOFTMAX:
            log_softmax_row(a + r * n, target, n)
        elif op == SOFTMAX_BACKWARD:
            softmax_backward_row(a + r * n, b + r * n, target, n, 1, stream)
        else:
            log_softmax_backward_row(a + r * n, b + r * n, target, n, stream)
        if scratch != NULL:
            store_span(out + r * n, scratch, n, True)
    if stream:
        cyb_stream_fence()
    free(scratch)


cdef int softmax_columns(SoftmaxOp op, const real *a, const real *b, real *out,
                         Py_ssize_t outer, Py_ssize_t n, Py_ssize_t inner, bint stream,
                         int threads) noexcept nogil:
    """Returns -1 when the per-thread buffers cannot be allocated."""
    cdef Py_ssize_t w = softmax_strip_width(inner, threads)
    cdef Py_ssize_t c, strips = outer * ((inner + w - 1) // w)
    cdef Py_ssize_t buffer = 2 * w + (3 * w * sizeof(real) + sizeof(double) - 1) // sizeof(double)
    cdef double *buffers = <double *>malloc(threads * buffer * sizeof(double))
    if buffers == NULL:
        return -1
    if threads > 1:
        for c in prange(threads, num_threads=threads, schedule='static'):
            softmax_columns_chunk(op, a, b, out, n, inner, w, chunk_start(strips, c, threads),
                                  chunk_start(strips, c + 1, threads), stream,
                                  buffers + c * buffer)
        team_finished()
    else:
        softmax_columns_chunk(op, a, b, out, n, inner, w, 0, strips, stream, buffers)
    free(buffers)
    return 0


cdef void softmax_columns_chunk(SoftmaxOp op, const real *a, const real *b, real *out,
                                Py_ssize_t n, Py_ssize_t inner, Py_ssize_t w, Py_ssize_t first,
                                Py_ssize_t last, bint stream, double *buffer) noexcept nogil:
    """Strips first..last-1 of the (outer, inner / w) strips, `buffer` as softmax_strip's."""
    cdef Py_ssize_t t, start, width, per_slice = (inner + w - 1) // w
    for t in range(first, last):
        start = (t // per_slice) * n * inner + (t % per_slice) * w
        width = min(w, inner - (t % per_slice) * w)
        if softmax_is_backward(op):
            softmax_backward_strip(a + start, b + start, out + start, inner, n, width,
                                   softmax_is_log(op), stream, buffer)
        else:
            softmax_strip(a + start, out + start, inner, n, width, softmax_is_log(op), stream,
                          buffer)
    if stream:
        cyb_stream_fence()


cdef struct SoftmaxOperands:
    const void *a           # first input
    const void *b           # second input (== a for one-input kernels)
    void *out
    Py_ssize_t outer, n, inner   # the arrays as (outer, n, inner), reduced along n
    bint is_float           # float32, else float64
    bint stream             # the operands exceed the cache: store past it (non-temporal)
    int threads


cdef SoftmaxOperands softmax_operands(cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, int axis,
                                      int num_threads) except *:
    """Check that a, b and out are C-contiguous, aligned arrays of one shape and one native
    float dtype (out writeable), and describe them for a reduction along `axis`.
    cyburn's Python layer guarantees this; the checks keep misuse from crashing."""
    cdef int ndim = cnp.PyArray_NDIM(a), typenum, d
    cdef SoftmaxOperands o
    for arr in (b, out):
        if cnp.PyArray_NDIM(arr) != ndim or not cnp.PyArray_SAMESHAPE(a, arr):
            raise ValueError("cyburn kernel: operands differ in shape")
    if not 0 <= axis < ndim:
        raise ValueError("cyburn kernel: axis out of range")
    typenum = float_data(a, b, out, &o.a, &o.b, &o.out)
    o.outer = 1
    o.inner = 1
    for d in range(axis):
        o.outer *= cnp.PyArray_DIM(a, d)
    for d in range(axis + 1, ndim):
        o.inner *= cnp.PyArray_DIM(a, d)
    o.n = cnp.PyArray_DIM(a, axis)
    o.is_float = typenum == cnp.NPY_FLOAT
    o.stream = beyond_cache(a, b, out)
    o.threads = team_size(cnp.PyArray_SIZE(a), o.outer * o.inner, num_threads)
    return o


cdef object softmax_run(SoftmaxOp op, cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, int axis,
                        int num_threads):
    """out = op(a[, b]) along `axis`, for arrays checked by softmax_operands."""
    cdef SoftmaxOperands o = softmax_operands(a, b, out, axis, num_threads)
    cdef bint stream = o.stream and (o.inner > 1 or softmax_is_backward(op))    # see above
    cdef bint prefetch = o.stream and not softmax_is_backward(op)   # the next row's: see
                                                                    # softmax_rows_chunk
    cdef int status = 0
    with nogil:
        if o.inner == 1 and o.is_float:
            softmax_rows(op, <const float *>o.a, <const float *>o.b, <float *>o.out, o.outer,
                         o.n, stream, prefetch, o.threads)
        elif o.inner == 1:
            softmax_rows(op, <const double *>o.a, <const double *>o.b, <double *>o.out, o.outer,
                         o.n, stream, prefetch, o.threads)
        elif o.is_float:
            status = softmax_columns(op, <const float *>o.a, <const float *>o.b, <float *>o.out,
                                     o.outer, o.n, o.inner, stream, o.threads)
        else:
            status = softmax_columns(op, <const double *>o.a, <const double *>o.b,
                                     <double *>o.out, o.outer, o.n, o.inner, stream, o.threads)
    if status:
        raise MemoryError("cyburn: no memory for the softmax column buffers")


# ---- Python entry points ----------------------------------------------------------------------

def softmax_forward(cnp.ndarray x not None, cnp.ndarray y not None, int axis, bint log,
                    int num_threads):
    """y = softmax(x) (or log_softmax) along `axis` of C-contiguous x and y (see
    SoftmaxOperands)."""
    softmax_run(LOG_SOFTMAX if log else SOFTMAX, x, x, y, axis, num_threads)


def softmax_backward(cnp.ndarray dy not None, cnp.ndarray y not None, cnp.ndarray dx not None,
                     int axis, bint log, int num_threads):
    """dx = softmax_backward(dy, y) (or log_softmax_backward) along `axis` (see
    SoftmaxOperands)."""
    softmax_run(LOG_SOFTMAX_BACKWARD if log else SOFTMAX_BACKWARD, dy, y, dx, axis, num_threads)
