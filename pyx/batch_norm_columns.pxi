# Batch norm by columns, forward and backward: batch norm of x seen as (N, C, S) (see
# channel_norm.pxi) when S is small (an (N, C) input has S = 1) and runs are too short to walk
# one by one. x is then N rows of W = C * S contiguous columns, channel c owning columns
# c * S .. c * S + S - 1: column sums are accumulated row by row (vectorized across the
# columns) in blocks of BATCH_NORM_BLOCK_ROWS rows, one thread per block, and the blocks are
# added in order, so results are bitwise identical for any thread count. The means are
# shifted by the channel's first value, as for runs (channel_norm.pxi).

from libc.math cimport sqrt as c_sqrt

cdef enum:
    BATCH_NORM_BLOCK_ROWS = 64

cdef enum BatchNormSum:
    BATCH_NORM_DEVIATIONS       # sum of a - center
    BATCH_NORM_SQUARES          # sum of (a - center)^2
    BATCH_NORM_PRODUCTS         # sum of b * (a - center)


cdef void batch_norm_column_sums_block(const real *a, const real *b, const real *center,
                                       double *out, Py_ssize_t W, BatchNormSum kind,
                                       Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef const real *ar
    cdef const real *br
    for j in range(W):
        out[j] = 0.0
    for r in range(first, last):
        ar = a + r * W
        br = b + r * W
        if kind == BATCH_NORM_DEVIATIONS:
            for j in range(W):
                out[j] += ar[j] - center[j]
        elif kind == BATCH_NORM_SQUARES:
            for j in range(W):
                out[j] += (ar[j] - center[j]) * (ar[j] - center[j])
        else:
            for j in range(W):
                out[j] += br[j] * (ar[j] - center[j])


cdef int batch_norm_column_sums(const real *a, const real *b, const real *center, double *out,
                                Py_ssize_t rows, Py_ssize_t W, BatchNormSum kind,
                                int threads) noexcept nogil:
    """out[j] = the `kind` sum over the rows of column j (b may be NULL when unused).
    Returns -1 when the block sums cannot be allocated."""
    cdef Py_ssize_t blocks = (rows + BATCH_NORM_BLOCK_ROWS - 1) // BATCH_NORM_BLOCK_ROWS, k, j
    cdef double *partial = <double *>malloc(blocks * W * sizeof(double))
    cdef int c
    if partial == NULL:
        return -1
    threads = <int>min(<Py_ssize_t>threads, blocks)
    if threads == 1:
        for k in range(blocks):
            batch_norm_column_sums_block(a, b, center, partial + k * W, W, kind,
                                         k * BATCH_NORM_BLOCK_ROWS,
                                         min(rows, (k + 1) * BATCH_NORM_BLOCK_ROWS))
    else:
        for c in prange(threads, num_threads=threads, schedule='static'):
            for k in range(chunk_start(blocks, c, threads), chunk_start(blocks, c + 1, threads)):
                batch_norm_column_sums_block(a, b, center, partial + k * W, W, kind,
                                             k * BATCH_NORM_BLOCK_ROWS,
                                             min(rows, (k + 1) * BATCH_NORM_BLOCK_ROWS))
        team_finished()
    for j in range(W):
        out[j] = 0.0
    for k in range(blocks):
        for j in range(W):
            out[j] += partial[k * W + j]
    free(partial)
    return 0


cdef inline double batch_norm_channel_sum(const double *sums, Py_ssize_t c,
                                          Py_ssize_t S) noexcept nogil:
    """The sum of channel c's column sums sums[c * S : c * S + S]."""
    cdef Py_ssize_t s
    cdef double total = 0.0
    for s in range(c * S, (c + 1) * S):
        total += sums[s]
    return total


cdef int batch_norm_column_means(const real *a, real *center, double *sums, double *means,
                                 Py_ssize_t N, Py_ssize_t C, Py_ssize_t S,
                                 int threads) noexcept nogil:
    """means[c] = the mean of channel c's N * S values (in columns c * S .. c * S + S - 1),
    shifted as row_norm_shifted_mean: a_0 + mean(a - a_0), a_0 = a[0, c * S] the channel's first
    value, or the plain mean where that is not finite. center and sums (W = C * S each) are
    work space. Returns -1 when out of memory."""
    cdef Py_ssize_t W = C * S, c, j
    cdef bint plain = False
    for j in range(W):
        center[j] = a[j - j % S]
    if batch_norm_column_sums(a, NULL, center, sums, N, W, BATCH_NORM_DEVIATIONS, threads):
        return -1
    for c in range(C):
        means[c] = a[c * S] + batch_norm_channel_sum(sums, c, S) / (N * S)
        plain = plain or not isfinite(means[c])
    if not plain:
        return 0
    for j in range(W):
        center[j] = 0
    if batch_norm_column_sums(a, NULL, center, sums, N, W, BATCH_NORM_DEVIATIONS, threads):
        return -1
    for c in range(C):
        if not isfinite(means[c]):
            means[c] = batch_norm_channel_sum(sums, c, S) / (N * S)
    return 0


cdef void batch_norm_columns_affine(const real *a, const real *b, const real *scale_a,
                                    const real *scale_b, const real *factor, const real *center,
                                    const real *shift, real *out, Py_ssize_t rows, Py_ssize_t W,
                                    int threads) noexcept nogil:
    """out[r, j] = scale_a[j] * (a[r, j] - center[j]) + shift[j] when b is NULL (the forward's
    y), otherwise factor[j] * (scale_a[j] * (a[r, j] - center[j]) + shift[j]
    + scale_b[j] * b[r, j]) (the backward's dx), per column."""
    cdef int c
    if threads == 1:
        batch_norm_columns_affine_rows(a, b, scale_a, scale_b, factor, center, shift, out, W, 0,
                                       rows)
        return
    for c in prange(threads, num_threads=threads, schedule='static'):
        batch_norm_columns_affine_rows(a, b, scale_a, scale_b, factor, center, shift, out, W,
                                       chunk_start(rows, c, threads),
                                       chunk_start(rows, c + 1, threads))
    team_finished()


cdef void batch_norm_columns_affine_rows(const real *a, const real *b, const real *scale_a,
                                         const real *scale_b, const real *factor,
                                         const real *center, const real *shift, real *out,
                                         Py_ssize_t W, Py_ssize_t first,
                                         Py_ssize_t last) noexcept nogil:
    cdef Py_ssize_t r, j, at
    for r in range(first, last):
        at = r * W
        if b == NULL:
            for j in range(W):
                out[at + j] = scale_a[j] * (a[at + j] - center[j]) + shift[j]
        else:
            for j in range(W):
                out[at + j] = factor[j] * (scale_a[j] * (a[at + j] - center[j]) + shift[j]
                                           + scale_b[j] * b[at + j])


cdef int batch_norm_columns(const real *x, const real *weight, const real *bias, real *y,
                            real *mean, real *rstd, real *var, Py_ssize_t N, Py_ssize_t C,
                            Py_ssize_t S, bint compute_stats, double eps,
                            int threads) noexcept nogil:
    """batch norm's y (and with `compute_stats` its mean, rstd and var) for x of N rows of
    C * S columns: as channel_norm_stats, by column sums. Returns -1 when out of memory."""
    cdef Py_ssize_t W = C * S, c, j
    cdef double M = <double>(N * S), total
    cdef double *sums = <double *>malloc((W + C) * sizeof(double))
    cdef double *means = sums + W
    cdef real *center = <real *>malloc(3 * W * sizeof(real))
    cdef real *scale = center + W
    cdef real *shift = scale + W
    cdef int status = 0
    if sums == NULL or center == NULL:
        status = -1
    elif compute_stats:
        status = batch_norm_column_means(x, center, sums, means, N, C, S, threads)
        for c in range(C):
            mean[c] = <real>means[c]
        for j in range(W):
            center[j] = mean[j // S]
        status = status or batch_norm_column_sums(x, NULL, center, sums, N, W,
                                                  BATCH_NORM_SQUARES, threads)
        for c in range(C):
            total = batch_norm_channel_sum(sums, c, S)
            rstd[c] = <real>(1.0 / c_sqrt(total / M + eps))
            if var != NULL:
                var[c] = <real>(total / M)
    if status == 0:
        for j in range(W):
            c = j // S
            center[j] = mean[c]
            scale[j] = rstd[c] * weight[c]
            shift[j] = bias[c]
        batch_norm_columns_affine(x, NULL, scale, NULL, NULL, center, shift, y, N, W, threads)
    free(sums)
    free(center)
    return status


cdef int batch_norm_columns_gradient(const real *dy, const real *x, const real *weight,
                                     const real *mean, const real *rstd, real *dx,
                                     real *dweight, real *dbias, Py_ssize_t N, Py_ssize_t C,
                                     Py_ssize_t S, int threads) noexcept nogil:
    """batch norm's dx, dweight and dbias (when not NULL) for N rows of C * S columns, as
    channel_norm_gradient: with g = dy * weight[c], M = N * S values per channel,
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
    mean(g) = weight[c] * mean(dy), the mean of dy shifted (batch_norm_column_means): for a
    constant dy exactly dy * weight[c], so that (with an exact product) a constant channel's
    dx is 0.
    Returns -1 when out of memory."""
    cdef Py_ssize_t W = C * S, c, s, j
    cdef double M = <double>(N * S), sum_dyx, g_mean, q
    cdef double *sums = <double *>malloc((2 * W + C) * sizeof(double))
    cdef double *sums_x = sums + W
    cdef double *means = sums_x + W
    cdef real *center = <real *>malloc(5 * W * sizeof(real))
    cdef real *scale_x = center + W
    cdef real *scale_dy = scale_x + W
    cdef real *factor = scale_dy + W
    cdef real *shift = factor + W
    cdef real r
    cdef int status = 0
    if sums == NULL or center == NULL:
        status = -1
    else:
        status = batch_norm_column_means(dy, center, sums, means, N, C, S, threads)
        for j in range(W):
            center[j] = mean[j // S]
        status = status or batch_norm_column_sums(x, dy, center, sums_x, N, W,
                                                  BATCH_NORM_PRODUCTS, threads)
    if status == 0:
        for c in range(C):
            sum_dyx = batch_norm_channel_sum(sums_x, c, S)
            r = rstd[c]
            g_mean = weight[c] * means[c]
            q = weight[c] * sum_dyx / M * r * r        # xhat * mean(g * xhat) = (x - mean) * q
            for s in range(c * S, (c + 1) * S):         # dx = r * (g - mean(g) - (x - mean) * q)
                factor[s] = r
                scale_dy[s] = weight[c]
                scale_x[s] = <real>-q
                shift[s] = <real>-g_mean
            if dweight != NULL:
                dweight[c] = <real>(r * sum_dyx)
                dbias[c] = <real>(M * means[c])
        batch_norm_columns_affine(x, dy, scale_x, scale_dy, factor, center, shift, dx, N, W,
                                  threads)
    free(sums)
    free(center)
    return status


# ---- Python entry points ----------------------------------------------------------------------
# Arrays are aligned, C-contiguous, non-empty and of x's (or dy's) float type (checked by
# data_of); optional ones may be None. Callers pass weight = ones and bias = zeros when the
# user gave none.

def batch_norm_columns_forward(cnp.ndarray x not None, Py_ssize_t N, Py_ssize_t C,
                               cnp.ndarray weight not None, cnp.ndarray bias not None,
                               cnp.ndarray y not None, cnp.ndarray mean not None,
                               cnp.ndarray rstd not None, var, bint compute_stats, double eps,
                               int num_threads):
    """channel_norm_forward of batch norm (groups == 0) by column sums: for short runs."""
    cdef int t = float_type(x)
    cdef ChannelGrouping g = channel_grouping(x, N, C, 0)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(x)
    cdef void *px = data_of(x, t, size, False)
    cdef void *pw = data_of(weight, t, C, False)
    cdef void *pb = data_of(bias, t, C, False)
    cdef void *py = data_of(y, t, size, True)
    cdef void *pm = data_of(mean, t, C, compute_stats)
    cdef void *ps = data_of(rstd, t, C, compute_stats)
    cdef void *pv = NULL if var is None else data_of(var, t, C, True)
    cdef int threads = team_size(size, N, num_threads), status
    with nogil:
        if t == cnp.NPY_FLOAT:
            status = batch_norm_columns(<const float *>px, <const float *>pw, <const float *>pb,
                                        <float *>py, <float *>pm, <float *>ps, <float *>pv, N,
                                        C, g.S, compute_stats, eps, threads)
        else:
            status = batch_norm_columns(<const double *>px, <const double *>pw,
                                        <const double *>pb, <double *>py, <double *>pm,
                                        <double *>ps, <double *>pv, N, C, g.S, compute_stats,
                                        eps, threads)
    if status:
        raise MemoryError("cyburn: no memory for the column sums")


def batch_norm_columns_backward(cnp.ndarray dy not None, cnp.ndarray x not None, Py_ssize_t N,
                                Py_ssize_t C, cnp.ndarray weight not None,
                                cnp.ndarray mean not None, cnp.ndarray rstd not None,
                                cnp.ndarray dx not None, dweight, dbias, int num_threads):
    """channel_norm_backward of batch norm (groups == 0) by column sums: for short runs."""
    cdef int t = float_type(dy)
    cdef ChannelGrouping g = channel_grouping(dy, N, C, 0)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(dy)
    cdef void *pdy = data_of(dy, t, size, False)
    cdef void *px = data_of(x, t, size, False)
    cdef void *pw = data_of(weight, t, C, False)
    cdef void *pm = data_of(mean, t, C, False)
    cdef void *ps = data_of(rstd, t, C, False)
    cdef void *pdx = data_of(dx, t, size, True)
    cdef void *pdw = NULL if dweight is None else data_of(dweight, t, C, True)
    cdef void *pdb = NULL if dweight is None else data_of(dbias, t, C, True)
    cdef int threads = team_size(size, N, num_threads), status
    with nogil:
        if t == cnp.NPY_FLOAT:
            status = batch_norm_columns_gradient(
                <const float *>pdy, <const float *>px, <const float *>pw, <const float *>pm,
                <const float *>ps, <float *>pdx, <float *>pdw, <float *>pdb, N, C, g.S, threads)
        else:
            status = batch_norm_columns_gradient(
                <const double *>pdy, <const double *>px, <const double *>pw,
                <const double *>pm, <const double *>ps, <double *>pdx, <double *>pdw,
                <double *>pdb, N, C, g.S, threads)
    if status:
        raise MemoryError("cyburn: no memory for the column sums")
