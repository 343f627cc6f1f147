# Softmax family kernels: softmax, log_softmax and their backward functions.
#
# A C-contiguous array reduced along one axis is (outer, n, inner), and two kernels cover
# every axis without transposing the array:
#   rows     inner == 1: outer rows of n contiguous elements; threads take whole rows.
#   columns  inner > 1:  the reduced axis has stride inner; threads take strips of
#                        contiguous columns and reduce down the n rows of a strip, vectorized
#                        across its columns.
# Each output element is computed by one thread in an order that depends only on the shape,
# so results are bitwise identical for any thread count.

from libc.math cimport log as c_log
from libc.stdlib cimport free, malloc
from cython.parallel cimport threadid

cdef enum:
    STRIP_MIN = 1024                # fewest columns per strip of the column kernels


# ---- one row: a contiguous span of n >= 1 elements -----------------------------------------

cdef inline void softmax_row(const real *x, real *y, Py_ssize_t n) noexcept nogil:
    """y = exp(x - max x) / sum(exp(x - max x))"""
    cdef real m = span_max(x, n)
    cdef real inv_sum = <real>(1.0 / span_sum_exp(x, m, y, n))
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = y[i] * inv_sum


cdef inline void log_softmax_row(const real *x, real *y, Py_ssize_t n) noexcept nogil:
    """y = (x - max x) - log(sum(exp(x - max x)))   (in this order, for precision)"""
    cdef real m = span_max(x, n)
    cdef real log_sum = <real>c_log(span_sum_exp(x, m, <real *>NULL, n))
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = (x[i] - m) - log_sum


cdef inline void softmax_backward_row(const real *dy, const real *y, real *dx,
                                      Py_ssize_t n) noexcept nogil:
    """dx = y * (dy - sum(dy * y))"""
    cdef real s = <real>span_dot(dy, y, n)
    cdef Py_ssize_t i
    for i in range(n):
        dx[i] = y[i] * (dy[i] - s)


cdef inline void log_softmax_backward_row(const real *dy, const real *y, real *dx,
                                          Py_ssize_t n) noexcept nogil:
    """dx = dy - exp(y) * sum(dy)"""
    cdef real s = <real>span_sum(dy, n)
    cdef Py_ssize_t i
    for i in range(n):
        dx[i] = dy[i] - vexp(y[i]) * s


# ---- one strip: w contiguous columns, n >= 1 rows `stride` elements apart -----------------
# Down a column the elements are `stride` apart, so these kernels work on strips of many
# columns and walk them row by row: every pass reads long contiguous row segments, which
# the hardware prefetchers stream from memory. Packing short strided column tiles into a
# contiguous copy to read them only once was measured slower (rows a multiple of 4 KiB apart
# also fall into the same few cache sets).

cdef void softmax_strip(const real *x, real *y, Py_ssize_t stride, Py_ssize_t n, Py_ssize_t w,
                        bint log, bint stream, double *buffer) noexcept nogil:
    """softmax_row / log_softmax_row applied down each of the w columns.
    `buffer` has room for w doubles and 3 * w reals."""
    cdef double *s = buffer
    cdef real *m = <real *>(buffer + w)
    cdef real *c = m + w
    cdef real *row = c + w
    cdef const real *xi
    cdef Py_ssize_t i, j
    for j in range(w):
        m[j] = x[j]
        s[j] = 0.0
    for i in range(1, n):
        xi = x + i * stride
        for j in range(w):
            m[j] = xi[j] if xi[j] > m[j] else m[j]
    for i in range(n):
        xi = x + i * stride
        for j in range(w):
            s[j] += vexp(xi[j] - m[j])
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
    if stream:
        cyb_stream_fence()


cdef void softmax_backward_strip(const real *dy, const real *y, real *dx, Py_ssize_t stride,
                                 Py_ssize_t n, Py_ssize_t w, bint log, bint stream,
                                 double *sums) noexcept nogil:
    """softmax_backward_row / log_softmax_backward_row applied down each of w columns.
    `sums` has room for w doubles and 2 * w reals."""
    cdef real *c = <real *>(sums + w)
    cdef real *row = c + w
    cdef const real *dyi
    cdef const real *yi
    cdef Py_ssize_t i, j
    for j in range(w):
        sums[j] = 0.0
    for i in range(n):
        dyi = dy + i * stride
        yi = y + i * stride
        if log:
            for j in range(w):
                sums[j] += dyi[j]
        else:
            for j in range(w):
                sums[j] += <double>dyi[j] * yi[j]
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
    if stream:
        cyb_stream_fence()


cdef Py_ssize_t strip_width(Py_ssize_t inner, int threads) noexcept nogil:
    """Columns per strip: enough strips for every thread, each of at least STRIP_MIN columns
    (a strip's results do not depend on its width)."""
    return min(inner, max(<Py_ssize_t>STRIP_MIN, (inner + threads - 1) // threads))


# ---- whole arrays: threads over rows or over strips of columns ------------------------------
# A C-contiguous array reduced along one axis is (outer, n, inner): inner == 1 is `rows`
# (outer rows of n contiguous elements), anything else is `columns`. A team of threads costs
# about 0.4 us even with one thread, so one thread runs a plain loop.

cdef void softmax_rows(const real *x, real *y, Py_ssize_t rows, Py_ssize_t n, bint log,
                       int threads) noexcept nogil:
    cdef Py_ssize_t r
    if threads > 1:
        for r in prange(rows, num_threads=threads, schedule='static'):
            softmax_rows_one(x, y, rows, n, r, log)
    else:
        for r in range(rows):
            softmax_rows_one(x, y, rows, n, r, log)


cdef inline void softmax_rows_one(const real *x, real *y, Py_ssize_t rows, Py_ssize_t n,
                                  Py_ssize_t r, bint log) noexcept nogil:
    if r + 1 < rows:
        prefetch_span(x + (r + 1) * n, n)
    if log:
        log_softmax_row(x + r * n, y + r * n, n)
    else:
        softmax_row(x + r * n, y + r * n, n)


cdef int softmax_columns(const real *x, real *y, Py_ssize_t outer, Py_ssize_t n,
                         Py_ssize_t inner, bint log, bint stream, int threads) noexcept nogil:
    """Threads take strips of columns. Returns -1 when the per-thread buffers cannot be
    allocated."""
    cdef Py_ssize_t w = strip_width(inner, threads)
    cdef Py_ssize_t t, strips = (inner + w - 1) // w
    cdef Py_ssize_t buffer = w + (3 * w * sizeof(real) + sizeof(double) - 1) // sizeof(double)
    cdef double *buffers = <double *>malloc(threads * buffer * sizeof(double))
    if buffers == NULL:
        return -1
    if threads > 1:
        for t in prange(outer * strips, num_threads=threads, schedule='static'):
            softmax_columns_one(x, y, n, inner, w, t, log, stream, buffers + threadid() * buffer)
    else:
        for t in range(outer * strips):
            softmax_columns_one(x, y, n, inner, w, t, log, stream, buffers)
    free(buffers)
    return 0


cdef inline void softmax_columns_one(const real *x, real *y, Py_ssize_t n, Py_ssize_t inner,
                                     Py_ssize_t w, Py_ssize_t t, bint log, bint stream,
                                     double *buffer) noexcept nogil:
    cdef Py_ssize_t strips = (inner + w - 1) // w
    cdef Py_ssize_t first_column = (t % strips) * w
    cdef Py_ssize_t start = (t // strips) * n * inner + first_column
    softmax_strip(x + start, y + start, inner, n, min(w, inner - first_column), log, stream,
                  buffer)


cdef void softmax_backward_rows(const real *dy, const real *y, real *dx, Py_ssize_t rows,
                                Py_ssize_t n, bint log, int threads) noexcept nogil:
    cdef Py_ssize_t r
    if threads > 1:
        for r in prange(rows, num_threads=threads, schedule='static'):
            softmax_backward_rows_one(dy, y, dx, rows, n, r, log)
    else:
        for r in range(rows):
            softmax_backward_rows_one(dy, y, dx, rows, n, r, log)


cdef inline void softmax_backward_rows_one(const real *dy, const real *y, real *dx,
                                           Py_ssize_t rows, Py_ssize_t n, Py_ssize_t r,
                                           bint log) noexcept nogil:
    if r + 1 < rows:
        prefetch_span(dy + (r + 1) * n, n)
        prefetch_span(y + (r + 1) * n, n)
    if log:
        log_softmax_backward_row(dy + r * n, y + r * n, dx + r * n, n)
    else:
        softmax_backward_row(dy + r * n, y + r * n, dx + r * n, n)


cdef int softmax_backward_columns(const real *dy, const real *y, real *dx, Py_ssize_t outer,
                                  Py_ssize_t n, Py_ssize_t inner, bint log, bint stream,
                                  int threads) noexcept nogil:
    """Threads take strips of columns. Returns -1 when the per-thread buffers cannot be
    allocated."""
    cdef Py_ssize_t w = strip_width(inner, threads)
    cdef Py_ssize_t t, strips = (inner + w - 1) // w
    cdef Py_ssize_t buffer = w + (2 * w * sizeof(real) + sizeof(double) - 1) // sizeof(double)
    cdef double *buffers = <double *>malloc(threads * buffer * sizeof(double))
    if buffers == NULL:
        return -1
    if threads > 1:
        for t in prange(outer * strips, num_threads=threads, schedule='static'):
            softmax_backward_columns_one(dy, y, dx, n, inner, w, t, log, stream,
                                         buffers + threadid() * buffer)
    else:
        for t in range(outer * strips):
            softmax_backward_columns_one(dy, y, dx, n, inner, w, t, log, stream, buffers)
    free(buffers)
    return 0


cdef inline void softmax_backward_columns_one(const real *dy, const real *y, real *dx,
                                              Py_ssize_t n, Py_ssize_t inner, Py_ssize_t w,
                                              Py_ssize_t t, bint log, bint stream,
                                              double *buffer) noexcept nogil:
    cdef Py_ssize_t strips = (inner + w - 1) // w
    cdef Py_ssize_t first_column = (t % strips) * w
    cdef Py_ssize_t start = (t // strips) * n * inner + first_column
    softmax_backward_strip(dy + start, y + start, dx + start, inner, n,
                           min(w, inner - first_column), log, stream, buffer)


# ---- Python entry points ----------------------------------------------------------------------

def softmax_forward(cnp.ndarray x, cnp.ndarray y, int axis, bint log, int num_threads):
    """y = softmax(x) (or log_softmax) along `axis` of C-contiguous x and y (see Operands)."""
    cdef Operands op = operands(x, x, y, axis, num_threads)
    cdef int status = 0
    with nogil:
        if op.inner == 1:
            if op.is_float:
                softmax_rows(<const float *>op.a, <float *>op.out, op.outer, op.n, log, op.threads)
            else:
                softmax_rows(<const double *>op.a, <double *>op.out, op.outer, op.n, log, op.threads)
        else:
            if op.is_float:
                status = softmax_columns(<const float *>op.a, <float *>op.out, op.outer, op.n,
                                         op.inner, log, op.stream, op.threads)
            else:
                status = softmax_columns(<const double *>op.a, <double *>op.out, op.outer, op.n,
                                         op.inner, log, op.stream, op.threads)
    if status:
        raise MemoryError("cyburn: no memory for the softmax column buffers")


def softmax_backward(cnp.ndarray dy, cnp.ndarray y, cnp.ndarray dx, int axis, bint log,
                     int num_threads):
    """dx = softmax_backward(dy, y) (or log_softmax_backward) along `axis` (see Operands)."""
    cdef Operands op = operands(dy, y, dx, axis, num_threads)
    cdef int status = 0
    with nogil:
        if op.inner == 1:
            if op.is_float:
                softmax_backward_rows(<const float *>op.a, <const float *>op.b, <float *>op.out,
                                      op.outer, op.n, log, op.threads)
            else:
                softmax_backward_rows(<const double *>op.a, <const double *>op.b,
                                      <double *>op.out, op.outer, op.n, log, op.threads)
        else:
            if op.is_float:
                status = softmax_backward_columns(<const float *>op.a, <const float *>op.b,
                                                  <float *>op.out, op.outer, op.n, op.inner,
                                                  log, op.stream, op.threads)
            else:
                status = softmax_backward_columns(<const double *>op.a, <const double *>op.b,
                                                  <double *>op.out, op.outer, op.n, op.inner,
                                                  log, op.stream, op.threads)
    if status:
        raise MemoryError("cyburn: no memory for the softmax column buffers")
