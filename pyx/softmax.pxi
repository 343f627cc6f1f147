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

cdef void softmax_rows(const real[:, ::1] x, real[:, ::1] y, bint log, int threads) noexcept:
    cdef Py_ssize_t r, n = x.shape[1]
    for r in prange(x.shape[0], nogil=True, num_threads=threads, schedule='static'):
        if log:
            log_softmax_row(&x[r, 0], &y[r, 0], n)
        else:
            softmax_row(&x[r, 0], &y[r, 0], n)


cdef void softmax_columns(const real[:, :, ::1] x, real[:, :, ::1] y, bint log,
                          int threads) noexcept:
    cdef Py_ssize_t inner = x.shape[2]
    cdef Py_ssize_t tiles = (inner + TILE - 1) // TILE
    cdef Py_ssize_t t, o, j0
    for t in prange(x.shape[0] * tiles, nogil=True, num_threads=threads, schedule='static'):
        o = t // tiles
        j0 = (t % tiles) * TILE
        softmax_tile(&x[o, 0, j0], x.strides[1] // sizeof(real),
                     &y[o, 0, j0], y.strides[1] // sizeof(real),
                     x.shape[1], min(<Py_ssize_t>TILE, inner - j0), log)


cdef void softmax_backward_rows(const real[:, ::1] dy, const real[:, ::1] y, real[:, ::1] dx,
                                bint log, int threads) noexcept:
    cdef Py_ssize_t r, n = y.shape[1]
    for r in prange(y.shape[0], nogil=True, num_threads=threads, schedule='static'):
        if log:
            log_softmax_backward_row(&dy[r, 0], &y[r, 0], &dx[r, 0], n)
        else:
            softmax_backward_row(&dy[r, 0], &y[r, 0], &dx[r, 0], n)


cdef void softmax_backward_columns(const real[:, :, ::1] dy, const real[:, :, ::1] y,
                                   real[:, :, ::1] dx, bint log, int threads) noexcept:
    cdef Py_ssize_t inner = y.shape[2]
    cdef Py_ssize_t tiles = (inner + TILE - 1) // TILE
    cdef Py_ssize_t t, o, j0
    for t in prange(y.shape[0] * tiles, nogil=True, num_threads=threads, schedule='static'):
        o = t // tiles
        j0 = (t % tiles) * TILE
        softmax_backward_tile(&dy[o, 0, j0], dy.strides[1] // sizeof(real),
                              &y[o, 0, j0], y.strides[1] // sizeof(real),
                              &dx[o, 0, j0], dx.strides[1] // sizeof(real),
                              y.shape[1], min(<Py_ssize_t>TILE, inner - j0), log)


# ---- Python entry points ----------------------------------------------------------------------
# x, y, dy, dx are float32 or float64 arrays of one dtype and one shape, prepared by
# cyburn._arrays: 2-d (rows, n) with contiguous rows, or 3-d (outer, n, inner) with contiguous
# inner dimension, and n >= 1. The checks below only guard the process against misuse.

cdef int team_size(cnp.ndarray a, int num_threads):
    return num_threads if cnp.PyArray_SIZE(a) >= PARALLEL_MIN_ELEMENTS else 1


def softmax_forward(cnp.ndarray x, cnp.ndarray y, bint log, int num_threads):
    """y = softmax(x) (or log_softmax) along axis 1 of a 2-d or 3-d array."""
    check_same_layout(x, y)
    cdef int threads = team_size(x, num_threads)
    cdef bint is_float = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT
    if cnp.PyArray_NDIM(x) == 2:
        if is_float:
            softmax_rows[float](x, y, log, threads)
        else:
            softmax_rows[double](x, y, log, threads)
    else:
        if is_float:
            softmax_columns[float](x, y, log, threads)
        else:
            softmax_columns[double](x, y, log, threads)


def softmax_backward(cnp.ndarray dy, cnp.ndarray y, cnp.ndarray dx, bint log, int num_threads):
    """dx = softmax_backward(dy, y) (or log_softmax_backward) along axis 1."""
    check_same_layout(y, dy)
    check_same_layout(y, dx)
    cdef int threads = team_size(y, num_threads)
    cdef bint is_float = cnp.PyArray_TYPE(y) == cnp.NPY_FLOAT
    if cnp.PyArray_NDIM(y) == 2:
        if is_float:
            softmax_backward_rows[float](dy, y, dx, log, threads)
        else:
            softmax_backward_rows[double](dy, y, dx, log, threads)
    else:
        if is_float:
            softmax_backward_columns[float](dy, y, dx, log, threads)
        else:
            softmax_backward_columns[double](dy, y, dx, log, threads)
