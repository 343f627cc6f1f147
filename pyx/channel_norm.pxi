# Channel norms, forward and backward: group, instance and batch norm of x seen as (N, C, S),
# statistics over sets of channel runs (S contiguous elements each), a weight and bias per
# channel (batch norm of short runs: batch_norm_columns.pxi).
#
# Statistics are two-pass -- the mean, then the mean of squared deviations from it -- over data
# that the first pass brought into cache (see row_norm.pxi).
#
# Every statistic and every dx element is computed by one thread in an order that depends only
# on the shape; weight and bias gradients are reduced from per-run partial sums in a fixed
# order. Results are bitwise identical for any thread count.

from libc.math cimport sqrt as c_sqrt

cdef enum:
    CHANNEL_SHORT_RUN = 8           # runs shorter than this are summed inline


# ---- channels: group, instance and batch norm -------------------------------------------
# x is (N, C, S): N samples, C channels, S = prod(spatial) contiguous elements per channel
# "run". One statistic ("stat") covers a set of runs:
#   group norm (groups = G):  stat n * G + g = the C / G consecutive runs of group g of sample n
#                             (instance norm: G = C);
#   batch norm (groups = 0):  stat c = run c of every sample.
# As for rows, the means of x and of dy are shifted by the stat's first element, so that a
# constant stat has mean = its value, y = bias, and dx = 0 for a constant g.

cdef struct ChannelGrouping:
    Py_ssize_t N, C, S
    Py_ssize_t groups           # G, or 0 for batch norm


cdef inline Py_ssize_t channel_stat_count(ChannelGrouping g) noexcept nogil:
    return g.N * g.groups if g.groups else g.C


cdef inline Py_ssize_t channel_runs_per_stat(ChannelGrouping g) noexcept nogil:
    return g.C // g.groups if g.groups else g.N


cdef inline Py_ssize_t channel_first_run(ChannelGrouping g, Py_ssize_t k) noexcept nogil:
    """n * C + c of the first run of stat k (a run starts at element S * (n * C + c)); its
    j-th run is channel_first_run + j * channel_run_step(g), of channel
    channel_first_run % C + j * channel_step(g)."""
    if g.groups:
        return (k // g.groups) * g.C + (k % g.groups) * (g.C // g.groups)
    return k


cdef inline Py_ssize_t channel_run_step(ChannelGrouping g) noexcept nogil:
    return 1 if g.groups else g.C


cdef inline Py_ssize_t channel_step(ChannelGrouping g) noexcept nogil:
    return 1 if g.groups else 0


cdef void channel_norm_stat(const real *x, const real *weight, const real *bias, real *y,
                            real *mean, real *rstd, real *var, ChannelGrouping g, Py_ssize_t k,
                            bint compute_stats, double eps, bint stream) noexcept nogil:
    """y = (x - mean) * rstd * weight[c] + bias[c] over the runs of stat k. With
    `compute_stats`, first mean = mean(x), var = mean((x - mean)^2) over those runs (stored,
    var only when var != NULL) and rstd = 1 / sqrt(var + eps); otherwise they are given.
    The mean is shifted, x_0 + mean(x - x_0) with x_0 the stat's first element
    (row_norm_shifted_mean): a constant stat has mean = its value and y = bias exactly.
    With `stream`, float32's y is stored past the cache (cyb_channel_apply_f32; the caller
    fences)."""
    cdef Py_ssize_t j, s, at, c, runs = channel_runs_per_stat(g), first = channel_first_run(g, k)
    cdef Py_ssize_t step = channel_run_step(g), c_step = channel_step(g), c0 = first % g.C
    # a group's runs are consecutive: its statistics take one span of all of them
    cdef Py_ssize_t spans = 1 if g.groups else runs, length = runs * g.S // spans
    cdef double total, variance
    cdef real m, r, a, b
    if compute_stats:
        total = 0.0
        for j in range(spans):
            total += row_norm_sum_dev(x + (first + j * step) * g.S, x[first * g.S], length)
        m = row_norm_shifted_mean(x + first * g.S, total, length, spans, step * g.S)
        total = 0.0
        for j in range(spans):
            total += span_sum_sq_dev(x + (first + j * step) * g.S, m, length)
        variance = total / (runs * g.S)
        mean[k] = m
        rstd[k] = <real>(1.0 / c_sqrt(variance + eps))
        if var != NULL:
            var[k] = <real>variance
    m = mean[k]
    r = rstd[k]
    for j in range(runs):
        c = c0 + j * c_step
        a = r * weight[c]
        b = bias[c]
        at = (first + j * step) * g.S
        if real is float:
            cyb_channel_apply_f32(x + at, m, a, b, y + at, g.S, stream)
        else:
            for s in range(g.S):
                y[at + s] = (x[at + s] - m) * a + b


cdef void channel_norm_backward_stat(const real *dy, const real *x, const real *weight,
                                     const real *mean, const real *rstd, real *dx,
                                     double *run_dy, double *run_dyx, ChannelGrouping g,
                                     Py_ssize_t k, bint stream) noexcept nogil:
    """dx over the runs of stat k, as row_norm_backward_row with the means over the stat's M
    elements and g = dy * weight[c]:  dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
    The sums of dy are shifted by d = the stat's first dy: with D_c = sum(dy - d) over the
    n_c elements of channel c in the stat,
        mean(g) = d * sum_c(weight[c] * n_c) / M + sum_c(weight[c] * D_c) / M,
    exactly d * weight for a constant dy and one weight, so that (with an exact product)
    a constant stat's dx is exactly 0. Where that is not finite, sum(g) is summed as
    weight[c] * sum(dy) per channel of the stat (all its runs for batch norm), as sum(g * xhat)
    always is: an infinite weight then gives +-inf, not inf - inf.
    Also stores each run's sum(dy) (S d + sum(dy - d), summed again when that is not finite)
    and sum(dy * (x - mean)), for dbias and dweight. With `stream`, float32's dx is stored
    past the cache (cyb_channel_backward_apply_f32; the caller fences)."""
    cdef Py_ssize_t j, s, at, c, runs = channel_runs_per_stat(g), first = channel_first_run(g, k)
    cdef Py_ssize_t step = channel_run_step(g), c_step = channel_step(g), c0 = first % g.C
    cdef double sum_g = 0.0, sum_g_dev = 0.0, sum_w = 0.0, sum_gx = 0.0, shifted, dev
    cdef double channel_dy = 0.0, channel_dev = 0.0, channel_dyx = 0.0
    cdef double count = <double>(runs * g.S)
    cdef real m = mean[k], r = rstd[k], d = dy[first * g.S], g_mean, q, a
    for j in range(runs):
        at = first + j * step
        c = c0 + j * c_step
        if g.S < CHANNEL_SHORT_RUN:                 # (the call would cost more than the sums)
            dev = 0.0
            run_dyx[at] = 0.0
            for s in range(at * g.S, (at + 1) * g.S):
                dev += dy[s] - d
                run_dyx[at] += dy[s] * (x[s] - m)
        else:
            row_norm_sums_shifted_centered(dy + at * g.S, NULL, d, x + at * g.S, m, g.S, &dev,
                                           &run_dyx[at])
        run_dy[at] = <double>d * g.S + dev if isfinite(dev) else span_sum(dy + at * g.S, g.S)
        channel_dy += run_dy[at]
        channel_dev += dev
        channel_dyx += run_dyx[at]
        sum_w += <double>weight[c] * g.S
        if c_step or j == runs - 1:                     # the channel's last run in the stat
            sum_g += weight[c] * channel_dy
            sum_g_dev += weight[c] * channel_dev
            sum_gx += weight[c] * channel_dyx
            channel_dy = 0.0
            channel_dev = 0.0
            channel_dyx = 0.0
    shifted = d * (sum_w / count) + sum_g_dev / count
    g_mean = <real>(shifted if isfinite(shifted) else sum_g / count)
    q = <real>(sum_gx / count * r * r)                   # xhat * mean(g * xhat) = (x - mean) * q
    for j in range(runs):
        a = weight[c0 + j * c_step]
        at = (first + j * step) * g.S
        if real is float:
            cyb_channel_backward_apply_f32(dy + at, x + at, r, a, g_mean, m, q, dx + at, g.S,
                                           stream)
        else:
            for s in range(g.S):
                dx[at + s] = r * (a * dy[at + s] - g_mean - (x[at + s] - m) * q)


cdef void channel_norm_chunk(const real *x, const real *weight, const real *bias, real *y,
                             real *mean, real *rstd, real *var, ChannelGrouping g,
                             bint compute_stats, double eps, bint stream, Py_ssize_t first,
                             Py_ssize_t last) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(first, last):
        channel_norm_stat(x, weight, bias, y, mean, rstd, var, g, k, compute_stats, eps, stream)
    if stream:
        cyb_stream_fence()


cdef void channel_norm_stats(const real *x, const real *weight, const real *bias, real *y,
                             real *mean, real *rstd, real *var, ChannelGrouping g,
                             bint compute_stats, double eps, bint stream,
                             int threads) noexcept nogil:
    cdef Py_ssize_t stats = channel_stat_count(g)
    cdef int c
    if threads == 1:
        channel_norm_chunk(x, weight, bias, y, mean, rstd, var, g, compute_stats, eps, stream,
                           0, stats)
        return
    for c in prange(threads, num_threads=threads, schedule='static'):
        channel_norm_chunk(x, weight, bias, y, mean, rstd, var, g, compute_stats, eps, stream,
                           chunk_start(stats, c, threads), chunk_start(stats, c + 1, threads))
    team_finished()


cdef void channel_norm_backward_chunk(const real *dy, const real *x, const real *weight,
                                      const real *mean, const real *rstd, real *dx,
                                      double *run_dy, double *run_dyx, ChannelGrouping g,
                                      bint stream, Py_ssize_t first,
                                      Py_ssize_t last) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(first, last):
        channel_norm_backward_stat(dy, x, weight, mean, rstd, dx, run_dy, run_dyx, g, k, stream)
    if stream:
        cyb_stream_fence()


cdef int channel_norm_gradient(const real *dy, const real *x, const real *weight,
                              const real *mean, const real *rstd, real *dx, real *dweight,
                              real *dbias, ChannelGrouping g, bint stream,
                              int threads) noexcept nogil:
    """dx per stat; then, when dweight != NULL, dweight[c] = sum over samples of
    rstd * sum(dy * (x - mean)) and dbias[c] = sum(dy) from the per-run sums, in sample order.
    Returns -1 when the per-run sums cannot be allocated."""
    cdef Py_ssize_t k, n, c, run, stats = channel_stat_count(g)
    cdef Py_ssize_t per_stat = g.C // g.groups if g.groups else 1   # channels of a sample's stat
    cdef double *run_dy = <double *>malloc(2 * g.N * g.C * sizeof(double))
    cdef double *run_dyx = run_dy + g.N * g.C
    cdef double r
    cdef int t
    if run_dy == NULL:
        return -1
    if threads == 1:
        channel_norm_backward_chunk(dy, x, weight, mean, rstd, dx, run_dy, run_dyx, g, stream,
                                    0, stats)
    else:
        for t in prange(threads, num_threads=threads, schedule='static'):
            channel_norm_backward_chunk(dy, x, weight, mean, rstd, dx, run_dy, run_dyx, g,
                                        stream, chunk_start(stats, t, threads),
                                        chunk_start(stats, t + 1, threads))
        team_finished()
    if dweight != NULL:
        # sample by sample, into sample 0's sums: contiguous, one rstd per stat
        for n in range(g.N):
            for k in range(g.C // per_stat):              # the sample's stats, in order
                r = rstd[n * g.groups + k] if g.groups else rstd[k]
                for c in range(k * per_stat, (k + 1) * per_stat):
                    run = n * g.C + c
                    if n == 0:
                        run_dyx[c] = r * run_dyx[c]
                    else:
                        run_dyx[c] += r * run_dyx[run]
                        run_dy[c] += run_dy[run]
        for c in range(g.C):
            dweight[c] = <real>run_dyx[c]
            dbias[c] = <real>run_dy[c]
    free(run_dy)
    return 0


# ---- Python entry points ----------------------------------------------------------------------
# Arrays are aligned, C-contiguous, non-empty and of x's (or dy's) float type (checked by
# data_of); optional ones may be None. Callers pass weight = ones and bias = zeros when the
# user gave none.

cdef ChannelGrouping channel_grouping(cnp.ndarray x, Py_ssize_t N, Py_ssize_t C,
                                      Py_ssize_t groups) except *:
    cdef ChannelGrouping g
    cdef Py_ssize_t size = cnp.PyArray_SIZE(x)
    if (N < 1 or C < 1 or N > size or C > size // N or size % (N * C) or groups < 0
            or groups and C % groups):
        raise ValueError("cyburn kernel: inconsistent (N, C, S) or groups")
    g.N = N
    g.C = C
    g.S = cnp.PyArray_SIZE(x) // (N * C)
    g.groups = groups
    return g


def channel_norm_forward(cnp.ndarray x not None, Py_ssize_t N, Py_ssize_t C, Py_ssize_t groups,
                         cnp.ndarray weight not None, cnp.ndarray bias not None,
                         cnp.ndarray y not None, cnp.ndarray mean not None,
                         cnp.ndarray rstd not None, var, bint compute_stats, double eps,
                         int num_threads):
    """Group norm (groups > 0) or batch norm (groups == 0) of x seen as (N, C, S): y, and
    with `compute_stats` the statistics mean, rstd and (when not None) the biased var;
    otherwise mean and rstd are given."""
    cdef int t = float_type(x)
    cdef ChannelGrouping g = channel_grouping(x, N, C, groups)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(x), stats = channel_stat_count(g)
    cdef void *px = data_of(x, t, size, False)
    cdef void *pw = data_of(weight, t, C, False)
    cdef void *pb = data_of(bias, t, C, False)
    cdef void *py = data_of(y, t, size, True)
    cdef void *pm = data_of(mean, t, stats, compute_stats)
    cdef void *ps = data_of(rstd, t, stats, compute_stats)
    cdef void *pv = NULL if var is None else data_of(var, t, stats, True)
    cdef int threads = team_size(size, stats, num_threads)
    cdef bint stream = beyond_cache(x, x, y)
    with nogil:
        if t == cnp.NPY_FLOAT:
            channel_norm_stats(<const float *>px, <const float *>pw, <const float *>pb,
                               <float *>py, <float *>pm, <float *>ps, <float *>pv, g,
                               compute_stats, eps, stream, threads)
        else:
            channel_norm_stats(<const double *>px, <const double *>pw, <const double *>pb,
                               <double *>py, <double *>pm, <double *>ps, <double *>pv, g,
                               compute_stats, eps, stream, threads)


def channel_norm_backward(cnp.ndarray dy not None, cnp.ndarray x not None, Py_ssize_t N,
                          Py_ssize_t C, Py_ssize_t groups, cnp.ndarray weight not None,
                          cnp.ndarray mean not None, cnp.ndarray rstd not None,
                          cnp.ndarray dx not None, dweight, dbias, int num_threads):
    """dx of group norm (groups > 0) or batch norm (groups == 0) of x seen as (N, C, S);
    dweight and dbias, when not None, summed over samples and positions."""
    cdef int t = float_type(dy)
    cdef ChannelGrouping g = channel_grouping(dy, N, C, groups)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(dy), stats = channel_stat_count(g)
    cdef void *pdy = data_of(dy, t, size, False)
    cdef void *px = data_of(x, t, size, False)
    cdef void *pw = data_of(weight, t, C, False)
    cdef void *pm = data_of(mean, t, stats, False)
    cdef void *ps = data_of(rstd, t, stats, False)
    cdef void *pdx = data_of(dx, t, size, True)
    cdef void *pdw = NULL if dweight is None else data_of(dweight, t, C, True)
    cdef void *pdb = NULL if dweight is None else data_of(dbias, t, C, True)
    cdef int threads = team_size(size, stats, num_threads), status
    cdef bint stream = beyond_cache(dy, x, dx)
    with nogil:
        if t == cnp.NPY_FLOAT:
            status = channel_norm_gradient(<const float *>pdy, <const float *>px,
                                           <const float *>pw, <const float *>pm,
                                           <const float *>ps, <float *>pdx, <float *>pdw,
                                           <float *>pdb, g, stream, threads)
        else:
            status = channel_norm_gradient(<const double *>pdy, <const double *>px,
                                           <const double *>pw, <const double *>pm,
                                           <const double *>ps, <double *>pdx, <double *>pdw,
                                           <double *>pdb, g, stream, threads)
    if status:
        raise MemoryError("cyburn: no memory for the per-channel gradient sums")
