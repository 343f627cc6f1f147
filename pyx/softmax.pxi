# Softmax family kernels: softmax, log_softmax and their backward functions.
#
# Two layouts cover every axis of every array without transposing through a copy
# (the Python layer reshapes the input into one of them):
#   rows    (rows, n):          the reduced axis is the last one and contiguous; a row is a
#                               contiguous span and threads take whole rows.
#   columns (outer, n, inner):  the reduced axis has stride inner; the kernel walks tiles of
#                               TILE contiguous columns and reduces down the n rows of a tile,
#                               vectorized across the columns.
# Each output element is computed by one thread in an order that depends only on the shape,
# so results are bitwise identical for any thread count.

from libc.math cimport log as c_log

cdef enum:
    TILE = 128                      # columns per tile: TILE * n elements stay in L2


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


# ---- one tile: w <= TILE contiguous columns, n >= 1 rows apart by a stride ------------------

cdef void softmax_tile(const real *x, Py_ssize_t x_stride, real *y, Py_ssize_t y_stride,
                       Py_ssize_t n, Py_ssize_t w, bint log) noexcept nogil:
    """softmax_row / log_softmax_row applied down each of the w columns at once."""
    cdef real m[TILE]
    cdef double s[TILE]
    cdef real c[TILE]
    cdef const real *xi
    cdef real *yi
    cdef real e
    cdef Py_ssize_t i, j
    for j in range(w):
        m[j] = x[j]
        s[j] = 0.0
    for i in range(1, n):
        xi = x + i * x_stride
        for j in range(w):
            m[j] = xi[j] if xi[j] > m[j] else m[j]
    if log:
        for i in range(n):
            xi = x + i * x_stride
            for j in range(w):
                s[j] += vexp(xi[j] - m[j])
        for j in range(w):
            c[j] = <real>c_log(s[j])
        for i in range(n):
            xi = x + i * x_stride
            yi = y + i * y_stride
            for j in range(w):
                yi[j] = (xi[j] - m[j]) - c[j]
    else:
        for i in range(n):
            xi = x + i * x_stride
            yi = y + i * y_stride
            for j in range(w):
                e = vexp(xi[j] - m[j])
                yi[j] = e
                s[j] += e
        for j in range(w):
            c[j] = <real>(1.0 / s[j])
        for i in range(n):
            yi = y + i * y_stride
            for j in range(w):
                yi[j] = yi[j] * c[j]


cdef void softmax_backward_tile(const real *dy, Py_ssize_t dy_stride,
                                const real *y, Py_ssize_t y_stride,
                                real *dx, Py_ssize_t dx_stride,
                                Py_ssize_t n, Py_ssize_t w, bint log) noexcept nogil:
    """softmax_backward_row / log_softmax_backward_row applied down each of the w columns."""
    cdef double s[TILE]
    cdef real c[TILE]
    cdef const real *dyi
    cdef const real *yi
    cdef real *dxi
    cdef Py_ssize_t i, j
    for j in range(w):
        s[j] = 0.0
    for i in range(n):
        dyi = dy + i * dy_stride
        yi = y + i * y_stride
        if log:
            for j in range(w):
                s[j] += dyi[j]
        else:
            for j in range(w):
                s[j] += <double>dyi[j] * yi[j]
    for j in range(w):
        c[j] = <real>s[j]
    for i in range(n):
        dyi = dy + i * dy_stride
        yi = y + i * y_stride
        dxi = dx + i * dx_stride
        if log:
            for j in range(w):
                dxi[j] = dyi[j] - vexp(yi[j]) * c[j]
        else:
            for j in range(w):
                dxi[j] = yi[j] * (dyi[j] - c[j])


# ---- whole arrays: threads over rows or over tiles ------------------------------------------
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


cdef void softmax_columns(const real *x, real *y, Py_ssize_t outer, Py_ssize_t n,
                          Py_ssize_t inner, bint log, int threads) noexcept nogil:
    cdef Py_ssize_t t, tiles = (inner + TILE - 1) // TILE
    if threads > 1:
        for t in prange(outer * tiles, num_threads=threads, schedule='static'):
            softmax_columns_one(x, y, n, inner, tiles, t, log)
    else:
        for t in range(outer * tiles):
            softmax_columns_one(x, y, n, inner, tiles, t, log)


cdef inline void softmax_columns_one(const real *x, real *y, Py_ssize_t n, Py_ssize_t inner,
                                     Py_ssize_t tiles, Py_ssize_t t, bint log) noexcept nogil:
    cdef Py_ssize_t start = (t // tiles) * n * inner + (t % tiles) * TILE
    softmax_tile(x + start, inner, y + start, inner, n,
                 min(<Py_ssize_t>TILE, inner - (t % tiles) * TILE), log)


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


cdef void softmax_backward_columns(const real *dy, const real *y, real *dx, Py_ssize_t outer,
                                   Py_ssize_t n, Py_ssize_t inner, bint log,
                                   int threads) noexcept nogil:
    cdef Py_ssize_t t, tiles = (inner + TILE - 1) // TILE
    if threads > 1:
        for t in prange(outer * tiles, num_threads=threads, schedule='static'):
            softmax_backward_columns_one(dy, y, dx, n, inner, tiles, t, log)
    else:
        for t in range(outer * tiles):
            softmax_backward_columns_one(dy, y, dx, n, inner, tiles, t, log)


cdef inline void softmax_backward_columns_one(const real *dy, const real *y, real *dx,
                                              Py_ssize_t n, Py_ssize_t inner, Py_ssize_t tiles,
                                              Py_ssize_t t, bint log) noexcept nogil:
    cdef Py_ssize_t start = (t // tiles) * n * inner + (t % tiles) * TILE
    softmax_backward_tile(dy + start, inner, y + start, inner, dx + start, inner, n,
                          min(<Py_ssize_t>TILE, inner - (t % tiles) * TILE), log)


# ---- Python entry points ----------------------------------------------------------------------

def softmax_forward(cnp.ndarray x, cnp.ndarray y, int axis, bint log, int num_threads):
    """y = softmax(x) (or log_softmax) along `axis` of C-contiguous x and y (see Operands)."""
    cdef Operands op = operands(x, x, y, axis, num_threads)
    with nogil:
        if op.inner == 1:
            if op.is_float:
                softmax_rows(<const float *>op.a, <float *>op.out, op.outer, op.n, log, op.threads)
            else:
                softmax_rows(<const double *>op.a, <double *>op.out, op.outer, op.n, log, op.threads)
        else:
            if op.is_float:
                softmax_columns(<const float *>op.a, <float *>op.out, op.outer, op.n, op.inner,
                                log, op.threads)
            else:
                softmax_columns(<const double *>op.a, <double *>op.out, op.outer, op.n, op.inner,
                                log, op.threads)


def softmax_backward(cnp.ndarray dy, cnp.ndarray y, cnp.ndarray dx, int axis, bint log,
                     int num_threads):
    """dx = softmax_backward(dy, y) (or log_softmax_backward) along `axis` (see Operands)."""
    cdef Operands op = operands(dy, y, dx, axis, num_threads)
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
                softmax_backward_columns(<const float *>op.a, <const float *>op.b,
                                         <float *>op.out, op.outer, op.n, op.inner, log,
                                         op.threads)
            else:
                softmax_backward_columns(<const double *>op.a, <const double *>op.b,
                                         <double *>op.out, op.outer, op.n, op.inner, log,
                                         op.threads)
