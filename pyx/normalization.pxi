# Normalization kernels, forward and backward:
#   rows      layer norm and RMSNorm: each row of n contiguous features has its own statistics
#             and each feature its own weight and bias;
#   channels  group, instance and batch norm of x seen as (N, C, S): statistics over sets of
#             channel runs (S contiguous elements each), a weight and bias per channel.
#
# Statistics are two-pass -- the mean, then the mean of squared deviations from it -- over data
# that the first pass brought into cache. The one-pass mean(x^2) - mean(x)^2 loses every digit
# on rows like 1e4 + N(0, 1) in float32; two passes keep the float64 truth's first 6.
#
# Every statistic and every dx element is computed by one thread in an order that depends only
# on the shape; weight and bias gradients are reduced from per-block (rows) or per-run
# (channels) partial sums in a fixed order. Results are bitwise identical for any thread count.

from libc.math cimport isfinite, sqrt as c_sqrt

cdef enum:
    GRADIENT_BLOCK_ROWS = 64    # rows backward: dweight and dbias are summed in blocks of rows
    SEGMENT_BATCH = 64          # rows cut into segments: statistics taken for this many at once
    SHORT_RUN = 8               # channel runs shorter than this are summed inline


# ---- sums: shifted (exact on constant sets) and over the segments of a row ------------------
# See cyburn_norm.h: means are taken as x_0 + mean(x - x_0), x_0 the set's first element, and
# the segments of a row (group norm of an (N, C) input) are summed several at a time.

cdef extern from "cyburn_norm.h" nogil:
    bint cyb_norm_lane_wise(Py_ssize_t L)
    double cyb_norm_sum_dev_f32(const float *x, float c, Py_ssize_t n)
    double cyb_norm_sum_dev_f64(const double *x, double c, Py_ssize_t n)
    void cyb_norm_sums_shifted_centered_f32(const float *dy, const float *w, float c,
                                            const float *x, float m, Py_ssize_t n,
                                            double *sum_g, double *sum_gx)
    void cyb_norm_sums_shifted_centered_f64(const double *dy, const double *w, double c,
                                            const double *x, double m, Py_ssize_t n,
                                            double *sum_g, double *sum_gx)
    void cyb_norm_segments_sum_dev_f32(const float *x, Py_ssize_t L, Py_ssize_t count,
                                       double *out)
    void cyb_norm_segments_sum_dev_f64(const double *x, Py_ssize_t L, Py_ssize_t count,
                                       double *out)
    void cyb_norm_segments_sum_sq_dev_f32(const float *x, const float *m, Py_ssize_t L,
                                          Py_ssize_t count, double *out)
    void cyb_norm_segments_sum_sq_dev_f64(const double *x, const double *m, Py_ssize_t L,
                                          Py_ssize_t count, double *out)
    void cyb_norm_segments_sums_centered_f32(const float *dy, const float *w, const float *x,
                                             const float *m, Py_ssize_t L, Py_ssize_t count,
                                             double *sum_g, double *sum_gx)
    void cyb_norm_segments_sums_centered_f64(const double *dy, const double *w,
                                             const double *x, const double *m, Py_ssize_t L,
                                             Py_ssize_t count, double *sum_g, double *sum_gx)
    void cyb_norm_segment_affine_f32(const float *x, float m, float r, const float *w,
                                     const float *b, float *y, Py_ssize_t n)
    void cyb_norm_segment_affine_f64(const double *x, double m, double r, const double *w,
                                     const double *b, double *y, Py_ssize_t n)
    void cyb_norm_segment_backward_f32(const float *dy, const float *x, const float *w, float m,
                                       float r, float g_mean, float q, float *dx,
                                       float *dweight, float *dbias, Py_ssize_t n)
    void cyb_norm_segment_backward_f64(const double *dy, const double *x, const double *w,
                                       double m, double r, double g_mean, double q, double *dx,
                                       double *dweight, double *dbias, Py_ssize_t n)


cdef inline real shifted_mean(const real *x, double deviations, Py_ssize_t length,
                              Py_ssize_t spans, Py_ssize_t stride) noexcept nogil:
    """The mean of a set of `spans` spans of `length` elements, span j at x + j * stride, given
    deviations = sum(x - x[0]) over the set: x[0] + deviations / n, n = spans * length, or
    sum(x) / n when deviations is not finite (an infinite or NaN term, or beyond the range of
    real)."""
    cdef Py_ssize_t j
    cdef double total = 0.0
    if isfinite(deviations):
        return <real>(x[0] + deviations / (spans * length))
    for j in range(spans):
        total += span_sum(x + j * stride, length)
    return <real>(total / (spans * length))


cdef inline real shifted_mean_of_products(const real *a, const real *b, double deviations,
                                          Py_ssize_t n) noexcept nogil:
    """mean(g) of g = a[0:n] * b[0:n] given deviations = sum(g - g[0]), as shifted_mean."""
    if isfinite(deviations):
        return <real>(a[0] * b[0] + deviations / n)
    return <real>(span_dot(a, b, n) / n)


cdef inline double span_sum_dev(const real *x, real c, Py_ssize_t n) noexcept nogil:
    """sum(x[0:n] - c), blocked like span_sum."""
    if real is float:
        return cyb_norm_sum_dev_f32(x, c, n)
    else:
        return cyb_norm_sum_dev_f64(x, c, n)


cdef inline void span_sums_shifted_centered(const real *dy, const real *w, real c, const real *x,
                                            real m, Py_ssize_t n, double *sum_g,
                                            double *sum_gx) noexcept nogil:
    """sum(g - c) and sum(g * (x - m)) over [0:n] in one pass, g = dy * w, blocked like
    span_sum."""
    if real is float:
        cyb_norm_sums_shifted_centered_f32(dy, w, c, x, m, n, sum_g, sum_gx)
    else:
        cyb_norm_sums_shifted_centered_f64(dy, w, c, x, m, n, sum_g, sum_gx)


cdef inline void segments_sum_dev(const real *x, Py_ssize_t L, Py_ssize_t count,
                                  double *out) noexcept nogil:
    """out[k] = sum(x_k - x_k[0]) for the segments x_k = x[k L : (k + 1) L], k < count, lane-wise
    (cyb_norm_lane_wise(L) must hold)."""
    if real is float:
        cyb_norm_segments_sum_dev_f32(x, L, count, out)
    else:
        cyb_norm_segments_sum_dev_f64(x, L, count, out)


cdef inline void segments_sum_sq_dev(const real *x, const real *m, Py_ssize_t L,
                                     Py_ssize_t count, double *out) noexcept nogil:
    """out[k] = sum((x_k - m[k])^2) over the segments, lane-wise."""
    if real is float:
        cyb_norm_segments_sum_sq_dev_f32(x, m, L, count, out)
    else:
        cyb_norm_segments_sum_sq_dev_f64(x, m, L, count, out)


cdef inline void segments_sums_centered(const real *dy, const real *w, const real *x,
                                        const real *m, Py_ssize_t L, Py_ssize_t count,
                                        double *sum_g, double *sum_gx) noexcept nogil:
    """sum_g[k] = sum(g_k - g_k[0]) and sum_gx[k] = sum(g_k * (x_k - m[k])) over the segments,
    g = dy * w, lane-wise."""
    if real is float:
        cyb_norm_segments_sums_centered_f32(dy, w, x, m, L, count, sum_g, sum_gx)
    else:
        cyb_norm_segments_sums_centered_f64(dy, w, x, m, L, count, sum_g, sum_gx)


cdef inline void segment_affine(const real *x, real m, real r, const real *w, const real *b,
                                real *y, Py_ssize_t n) noexcept nogil:
    """y = (x - m) * r * w + b over [0:n], n lane-wise."""
    if real is float:
        cyb_norm_segment_affine_f32(x, m, r, w, b, y, n)
    else:
        cyb_norm_segment_affine_f64(x, m, r, w, b, y, n)


cdef inline void segment_backward(const real *dy, const real *x, const real *w, real m, real r,
                                  real g_mean, real q, real *dx, real *dweight, real *dbias,
                                  Py_ssize_t n) noexcept nogil:
    """dweight += dy * ((x - m) * r), dbias += dy, dx = r * (dy * w - g_mean - (x - m) * q)
    over [0:n], n lane-wise."""
    if real is float:
        cyb_norm_segment_backward_f32(dy, x, w, m, r, g_mean, q, dx, dweight, dbias, n)
    else:
        cyb_norm_segment_backward_f64(dy, x, w, m, r, g_mean, q, dx, dweight, dbias, n)


# ---- rows: layer norm and RMSNorm ---------------------------------------------------------
# RMSNorm is layer norm with the mean taken as 0, the bias as 0 (the caller passes zeros)
# and no mean(g) term in the gradient: one kernel does both, told by `centered`.
# A row of n features may be cut into `groups` segments of L = n / groups, each with its own
# statistics (stat r * groups + g): group norm of an (N, C) input, whose groups of one-element
# runs are such segments, takes this path (groups = 1 for layer norm and RMSNorm).
# norm_row_segments takes a row's segments in batches of up to SEGMENT_BATCH, statistic by
# statistic (layer norm's single segment keeps norm_row): every
# segment's sum, then every mean, every sum of squared deviations, every rstd, and then the
# normalization. The sums of different segments do not depend on each other, so the CPU
# overlaps them (segments of 8 k <= 256 elements: several at once, see cyburn_norm.h), and the
# divisions and square roots of a batch run as vector instructions (segment after segment, each
# short segment would wait on its own scalar divide and sqrt).
# Means are shifted, x_0 + mean(x - x_0) with x_0 the first element (shifted_mean), and so is
# the backward's mean(g): a constant row or segment has deviations of exactly 0, hence mean =
# its value, y = bias, and dx = 0 for a constant g (see cyburn_norm.h).

cdef void norm_row(const real *x, const real *residual, const real *weight, const real *bias,
                   real *h, real *y, real *mean, real *rstd, Py_ssize_t n, double eps,
                   bint centered) noexcept nogil:
    """h = x + residual (when residual != NULL; otherwise h is x itself), then
        layer norm:  y = (h - mean(h)) * rstd * weight + bias,  rstd = 1 / sqrt(var(h) + eps)
        RMSNorm:     y = h * rstd * weight,                     rstd = 1 / sqrt(mean(h^2) + eps)
    storing mean(h) (layer norm) and rstd where they are not NULL."""
    cdef Py_ssize_t i
    cdef real m = 0, r
    if residual != NULL:
        for i in range(n):
            h[i] = x[i] + residual[i]
        x = h
    if centered:
        m = shifted_mean(x, span_sum_dev(x, x[0], n), n, 1, 0)
        if mean != NULL:
            mean[0] = m
    r = <real>(1.0 / c_sqrt(span_sum_sq_dev(x, m, n) / n + eps))
    if rstd != NULL:
        rstd[0] = r
    for i in range(n):
        y[i] = (x[i] - m) * r * weight[i] + bias[i]


cdef void norm_row_segments(const real *x, const real *weight, const real *bias, real *y,
                            real *mean, real *rstd, Py_ssize_t n, Py_ssize_t groups,
                            double eps) noexcept nogil:
    """norm_row (layer norm, no residual) of each of the `groups` segments
    x_g = x[g L : (g + 1) L] of L = n / groups elements (group norm of an (N, C) input):
        y = (x_g - mean(x_g)) * rstd * weight + bias,  rstd = 1 / sqrt(var(x_g) + eps),
    var(x_g) = mean((x_g - mean(x_g))^2) (two passes), storing mean[g] and rstd[g]."""
    cdef Py_ssize_t i, g, batch, first, last, length = n // groups
    cdef double sums[SEGMENT_BATCH]
    cdef real m, r
    cdef bint lanes = cyb_norm_lane_wise(length)
    for batch in range((groups + SEGMENT_BATCH - 1) // SEGMENT_BATCH):
        first = batch * SEGMENT_BATCH
        last = min(groups, first + SEGMENT_BATCH)
        if lanes:
            segments_sum_dev(x + first * length, length, last - first, sums)
        else:
            for g in range(first, last):
                sums[g - first] = span_sum_dev(x + g * length, x[g * length], length)
        for g in range(first, last):
            mean[g] = shifted_mean(x + g * length, sums[g - first], length, 1, 0)
        if lanes:
            segments_sum_sq_dev(x + first * length, mean + first, length, last - first, sums)
        else:
            for g in range(first, last):
                sums[g - first] = span_sum_sq_dev(x + g * length, mean[g], length)
        for g in range(first, last):
            rstd[g] = <real>(1.0 / c_sqrt(sums[g - first] / length + eps))
    for g in range(groups):
        m = mean[g]
        r = rstd[g]
        if lanes:
            segment_affine(x + g * length, m, r, weight + g * length, bias + g * length,
                           y + g * length, length)
            continue
        for i in range(g * length, (g + 1) * length):
            y[i] = (x[i] - m) * r * weight[i] + bias[i]


cdef void norm_rows_chunk(const real *x, const real *residual, const real *weight,
                          const real *bias, real *h, real *y, real *mean, real *rstd,
                          Py_ssize_t n, Py_ssize_t groups, double eps, bint centered,
                          Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    cdef Py_ssize_t r, at
    for r in range(first, last):
        if r + 1 < last:
            prefetch_span(x + (r + 1) * n, n)
            if residual != NULL:
                prefetch_span(residual + (r + 1) * n, n)
        at = r * n
        if groups > 1:
            norm_row_segments(x + at, weight, bias, y + at, mean + r * groups,
                              rstd + r * groups, n, groups, eps)
        else:
            norm_row(x + at, residual + at if residual != NULL else NULL, weight, bias,
                     h + at if h != NULL else NULL, y + at, mean + r if mean != NULL else NULL,
                     rstd + r if rstd != NULL else NULL, n, eps, centered)


cdef void norm_rows(const real *x, const real *residual, const real *weight, const real *bias,
                    real *h, real *y, real *mean, real *rstd, Py_ssize_t rows, Py_ssize_t n,
                    Py_ssize_t groups, double eps, bint centered, int threads) noexcept nogil:
    cdef int c
    if threads == 1:        # a thread team costs about 0.4 us even for one thread
        norm_rows_chunk(x, residual, weight, bias, h, y, mean, rstd, n, groups, eps, centered,
                        0, rows)
        return
    for c in prange(threads, num_threads=threads, schedule='static'):
        norm_rows_chunk(x, residual, weight, bias, h, y, mean, rstd, n, groups, eps, centered,
                        chunk_start(rows, c, threads), chunk_start(rows, c + 1, threads))


cdef void norm_backward_row(const real *dy, const real *x, const real *weight, const real *mean,
                            const real *rstd, real *dx, real *dweight, real *dbias,
                            Py_ssize_t n, Py_ssize_t groups, bint centered) noexcept nogil:
    """For each of the `groups` segments of L = n / groups elements (as in norm_row), with
    xhat = (x - mean[g]) * rstd[g] and g = dy * weight (RMSNorm: mean = 0, may be NULL):
        layer norm:  dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
        RMSNorm:     dx = rstd * (g - xhat * mean(g * xhat))
    and dweight += dy * xhat, dbias += dy, mean(g) = g_0 + mean(g - g_0) (shifted_mean).
    Segments go in batches, sums first (see norm_row); groups > 1 only for layer norm."""
    cdef Py_ssize_t i, g, k, at, batch, first, last, length = n // groups
    cdef double sum_g[SEGMENT_BATCH]
    cdef double sum_gx[SEGMENT_BATCH]
    cdef real g_mean[SEGMENT_BATCH]
    cdef real q[SEGMENT_BATCH]          # xhat * mean(g * xhat) = (x - mean) * q
    cdef real m, r
    cdef bint lanes = groups > 1 and cyb_norm_lane_wise(length)  # (layer norm: blocked sums)
    for batch in range((groups + SEGMENT_BATCH - 1) // SEGMENT_BATCH):
        first = batch * SEGMENT_BATCH
        last = min(groups, first + SEGMENT_BATCH)
        if lanes:
            at = first * length
            segments_sums_centered(dy + at, weight + at, x + at, mean + first, length,
                                   last - first, sum_g, sum_gx)
        else:
            for g in range(first, last):
                at = g * length
                span_sums_shifted_centered(dy + at, weight + at,
                                           dy[at] * weight[at] if centered else 0, x + at,
                                           mean[g] if centered else 0, length,
                                           &sum_g[g - first], &sum_gx[g - first])
        for k in range(last - first):
            at = (first + k) * length
            g_mean[k] = (shifted_mean_of_products(dy + at, weight + at, sum_g[k], length)
                         if centered else 0)
            q[k] = <real>(sum_gx[k] / length * rstd[first + k] * rstd[first + k])
        if lanes:
            for g in range(first, last):
                k = g - first
                segment_backward(dy + g * length, x + g * length, weight + g * length,
                                 mean[g] if centered else 0, rstd[g], g_mean[k], q[k],
                                 dx + g * length, dweight + g * length, dbias + g * length,
                                 length)
            continue
        for g in range(first, last):
            m = mean[g] if centered else 0
            r = rstd[g]
            for i in range(g * length, (g + 1) * length):  # apart from dx: GCC would not vectorize
                dweight[i] += dy[i] * ((x[i] - m) * r)
                dbias[i] += dy[i]
        for g in range(first, last):
            m = mean[g] if centered else 0
            r = rstd[g]
            k = g - first
            if centered and length == 1:
                # g - mean(g) is exactly 0 (NaN for an infinite g); computed, it would be the
                # rounding error of g, as the compiler fuses g - mean(g) into one multiply-add of
                # dy * weight
                dx[g] = r * (0 * (dy[g] * weight[g]) - (x[g] - m) * q[k])
                continue
            for i in range(g * length, (g + 1) * length):
                dx[i] = r * (dy[i] * weight[i] - g_mean[k] - (x[i] - m) * q[k])


cdef void norm_backward_block(const real *dy, const real *x, const real *weight,
                              const real *mean, const real *rstd, real *dx, real *partial,
                              Py_ssize_t n, Py_ssize_t groups, bint centered, Py_ssize_t first,
                              Py_ssize_t last) noexcept nogil:
    """Rows first..last-1, their dweight and dbias sums in partial[0:n] and partial[n:2n]."""
    cdef Py_ssize_t r, at
    for r in range(2 * n):
        partial[r] = 0
    for r in range(first, last):
        if r + 1 < last:
            prefetch_span(dy + (r + 1) * n, n)
            prefetch_span(x + (r + 1) * n, n)
        at = r * n
        norm_backward_row(dy + at, x + at, weight, mean + r * groups if centered else NULL,
                          rstd + r * groups, dx + at, partial, partial + n, n, groups, centered)


cdef int norm_rows_gradient(const real *dy, const real *x, const real *weight,
                            const real *mean, const real *rstd, real *dx, real *dweight,
                            real *dbias, Py_ssize_t rows, Py_ssize_t n, Py_ssize_t groups,
                            bint centered, int threads) noexcept nogil:
    """dx for every row; dweight and dbias (when not NULL) as sums of GRADIENT_BLOCK_ROWS-row
    block sums (accumulated in real, a few dozen terms each), added in block order in double.
    Threads take contiguous runs of whole blocks, so the sums do not depend on the thread
    count. Returns -1 when the block sums cannot be allocated."""
    cdef Py_ssize_t blocks = (rows + GRADIENT_BLOCK_ROWS - 1) // GRADIENT_BLOCK_ROWS, b, j
    cdef real *partials = <real *>malloc(blocks * 2 * n * sizeof(real))
    cdef double *totals
    cdef int c
    if partials == NULL:
        return -1
    threads = <int>min(<Py_ssize_t>threads, blocks)
    if threads == 1:
        backward_blocks(dy, x, weight, mean, rstd, dx, partials, rows, n, groups, centered, 0,
                        blocks)
    else:
        for c in prange(threads, num_threads=threads, schedule='static'):
            backward_blocks(dy, x, weight, mean, rstd, dx, partials, rows, n, groups, centered,
                            chunk_start(blocks, c, threads), chunk_start(blocks, c + 1, threads))
    if dweight != NULL:
        totals = <double *>calloc(2 * n, sizeof(double))
        if totals == NULL:
            free(partials)
            return -1
        for b in range(blocks):
            for j in range(2 * n):
                totals[j] += partials[b * 2 * n + j]
        for j in range(n):
            dweight[j] = <real>totals[j]
            if dbias != NULL:
                dbias[j] = <real>totals[n + j]
        free(totals)
    free(partials)
    return 0


cdef void backward_blocks(const real *dy, const real *x, const real *weight, const real *mean,
                          const real *rstd, real *dx, real *partials, Py_ssize_t rows,
                          Py_ssize_t n, Py_ssize_t groups, bint centered, Py_ssize_t first,
                          Py_ssize_t last) noexcept nogil:
    """Blocks first..last-1 of GRADIENT_BLOCK_ROWS rows (the last one shorter)."""
    cdef Py_ssize_t b
    for b in range(first, last):
        norm_backward_block(dy, x, weight, mean, rstd, dx, partials + b * 2 * n, n, groups,
                            centered, b * GRADIENT_BLOCK_ROWS,
                            min(rows, (b + 1) * GRADIENT_BLOCK_ROWS))


# ---- channels: group, instance and batch norm -------------------------------------------
# x is (N, C, S): N samples, C channels, S = prod(spatial) contiguous elements per channel
# "run". One statistic ("stat") covers a set of runs:
#   group norm (groups = G):  stat n * G + g = the C / G consecutive runs of group g of sample n
#                             (instance norm: G = C);
#   batch norm (groups = 0):  stat c = run c of every sample.
# As for rows, the means of x and of dy are shifted by the stat's first element, so that a
# constant stat has mean = its value, y = bias, and dx = 0 for a constant g.

cdef struct Grouping:
    Py_ssize_t N, C, S
    Py_ssize_t groups           # G, or 0 for batch norm


cdef inline Py_ssize_t stat_count(Grouping g) noexcept nogil:
    return g.N * g.groups if g.groups else g.C


cdef inline Py_ssize_t runs_per_stat(Grouping g) noexcept nogil:
    return g.C // g.groups if g.groups else g.N


cdef inline Py_ssize_t first_run(Grouping g, Py_ssize_t k) noexcept nogil:
    """n * C + c of the first run of stat k (a run starts at element S * (n * C + c)); its
    j-th run is first_run + j * run_step(g), of channel first_run % C + j * channel_step(g)."""
    if g.groups:
        return (k // g.groups) * g.C + (k % g.groups) * (g.C // g.groups)
    return k


cdef inline Py_ssize_t run_step(Grouping g) noexcept nogil:
    return 1 if g.groups else g.C


cdef inline Py_ssize_t channel_step(Grouping g) noexcept nogil:
    return 1 if g.groups else 0


cdef void channel_norm_stat(const real *x, const real *weight, const real *bias, real *y,
                            real *mean, real *rstd, real *var, Grouping g, Py_ssize_t k,
                            bint compute_stats, double eps) noexcept nogil:
    """y = (x - mean) * rstd * weight[c] + bias[c] over the runs of stat k. With
    `compute_stats`, first mean = mean(x), var = mean((x - mean)^2) over those runs (stored,
    var only when var != NULL) and rstd = 1 / sqrt(var + eps); otherwise they are given.
    The mean is shifted, x_0 + mean(x - x_0) with x_0 the stat's first element (shifted_mean):
    a constant stat has mean = its value and y = bias exactly."""
    cdef Py_ssize_t j, s, at, c, runs = runs_per_stat(g), first = first_run(g, k)
    cdef Py_ssize_t step = run_step(g), c_step = channel_step(g), c0 = first % g.C
    # a group's runs are consecutive: its statistics take one span of all of them
    cdef Py_ssize_t spans = 1 if g.groups else runs, length = runs * g.S // spans
    cdef double total, variance
    cdef real m, r, a, b
    if compute_stats:
        total = 0.0
        for j in range(spans):
            total += span_sum_dev(x + (first + j * step) * g.S, x[first * g.S], length)
        m = shifted_mean(x + first * g.S, total, length, spans, step * g.S)
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
        for s in range(g.S):
            y[at + s] = (x[at + s] - m) * a + b


cdef void channel_norm_backward_stat(const real *dy, const real *x, const real *weight,
                                     const real *mean, const real *rstd, real *dx,
                                     double *run_dy, double *run_dyx, Grouping g,
                                     Py_ssize_t k) noexcept nogil:
    """dx over the runs of stat k, as norm_backward_row with the means over the stat's M
    elements and g = dy * weight[c]:  dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
    The sums of dy are shifted by d = the stat's first dy: with D_c = sum(dy - d) over the
    n_c elements of channel c in the stat,
        mean(g) = d * sum_c(weight[c] * n_c) / M + sum_c(weight[c] * D_c) / M,
    exactly d * weight for a constant dy and one weight, so that (with an exact product)
    a constant stat's dx is exactly 0. Where that is not finite, sum(g) is summed as
    weight[c] * sum(dy) per channel of the stat (all its runs for batch norm), as sum(g * xhat)
    always is: an infinite weight then gives +-inf, not inf - inf.
    Also stores each run's sum(dy) (S d + sum(dy - d), summed again when that is not finite)
    and sum(dy * (x - mean)), for dbias and dweight."""
    cdef Py_ssize_t j, s, at, c, runs = runs_per_stat(g), first = first_run(g, k)
    cdef Py_ssize_t step = run_step(g), c_step = channel_step(g), c0 = first % g.C
    cdef double sum_g = 0.0, sum_g_dev = 0.0, sum_w = 0.0, sum_gx = 0.0, shifted, dev
    cdef double channel_dy = 0.0, channel_dev = 0.0, channel_dyx = 0.0
    cdef double count = <double>(runs * g.S)
    cdef real m = mean[k], r = rstd[k], d = dy[first * g.S], g_mean, q, a
    for j in range(runs):
        at = first + j * step
        c = c0 + j * c_step
        if g.S < SHORT_RUN:                 # (the call would cost more than the sums)
            dev = 0.0
            run_dyx[at] = 0.0
            for s in range(at * g.S, (at + 1) * g.S):
                dev += dy[s] - d
                run_dyx[at] += dy[s] * (x[s] - m)
        else:
            span_sums_shifted_centered(dy + at * g.S, NULL, d, x + at * g.S, m, g.S, &dev,
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
        for s in range(g.S):
            dx[at + s] = r * (a * dy[at + s] - g_mean - (x[at + s] - m) * q)


cdef void norm_channels(const real *x, const real *weight, const real *bias, real *y,
                       real *mean, real *rstd, real *var, Grouping g, bint compute_stats,
                       double eps, int threads) noexcept nogil:
    cdef Py_ssize_t k, stats = stat_count(g)
    cdef int c
    if threads == 1:
        for k in range(stats):
            channel_norm_stat(x, weight, bias, y, mean, rstd, var, g, k, compute_stats, eps)
        return
    for c in prange(threads, num_threads=threads, schedule='static'):
        for k in range(chunk_start(stats, c, threads), chunk_start(stats, c + 1, threads)):
            channel_norm_stat(x, weight, bias, y, mean, rstd, var, g, k, compute_stats, eps)


cdef int norm_channels_gradient(const real *dy, const real *x, const real *weight,
                               const real *mean, const real *rstd, real *dx, real *dweight,
                               real *dbias, Grouping g, int threads) noexcept nogil:
    """dx per stat; then, when dweight != NULL, dweight[c] = sum over samples of
    rstd * sum(dy * (x - mean)) and dbias[c] = sum(dy) from the per-run sums, in sample order.
    Returns -1 when the per-run sums cannot be allocated."""
    cdef Py_ssize_t k, n, c, run, stats = stat_count(g)
    cdef Py_ssize_t per_stat = g.C // g.groups if g.groups else 1   # channels of a sample's stat
    cdef double *run_dy = <double *>malloc(2 * g.N * g.C * sizeof(double))
    cdef double *run_dyx = run_dy + g.N * g.C
    cdef double r
    cdef int t
    if run_dy == NULL:
        return -1
    if threads == 1:
        for k in range(stats):
            channel_norm_backward_stat(dy, x, weight, mean, rstd, dx, run_dy, run_dyx, g, k)
    else:
        for t in prange(threads, num_threads=threads, schedule='static'):
            for k in range(chunk_start(stats, t, threads), chunk_start(stats, t + 1, threads)):
                channel_norm_backward_stat(dy, x, weight, mean, rstd, dx, run_dy, run_dyx, g, k)
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


# ---- columns: batch norm of short runs -----------------------------------------------------
# When S is small (an (N, C) input has S = 1), runs are too short to walk one by one. x is then
# N rows of W = C * S contiguous columns, channel c owning columns c * S .. c * S + S - 1:
# column sums are accumulated row by row (vectorized across the columns) in blocks of
# COLUMN_BLOCK_ROWS rows, one thread per block, and the blocks are added in order. The means
# are shifted by the channel's first value, as for runs.

cdef enum:
    COLUMN_BLOCK_ROWS = 64

cdef enum ColumnSum:
    SUM_DEVIATION               # sum of a - center
    SUM_SQUARED_DEVIATION       # sum of (a - center)^2
    SUM_B_TIMES_DEVIATION       # sum of b * (a - center)


cdef void column_sums_block(const real *a, const real *b, const real *center, double *out,
                            Py_ssize_t W, ColumnSum kind, Py_ssize_t first,
                            Py_ssize_t last) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef const real *ar
    cdef const real *br
    for j in range(W):
        out[j] = 0.0
    for r in range(first, last):
        ar = a + r * W
        br = b + r * W
        if kind == SUM_DEVIATION:
            for j in range(W):
                out[j] += ar[j] - center[j]
        elif kind == SUM_SQUARED_DEVIATION:
            for j in range(W):
                out[j] += (ar[j] - center[j]) * (ar[j] - center[j])
        else:
            for j in range(W):
                out[j] += br[j] * (ar[j] - center[j])


cdef int column_sums(const real *a, const real *b, const real *center, double *out,
                     Py_ssize_t rows, Py_ssize_t W, ColumnSum kind, int threads) noexcept nogil:
    """out[j] = the `kind` sum over the rows of column j (b may be NULL when unused).
    Returns -1 when the block sums cannot be allocated."""
    cdef Py_ssize_t blocks = (rows + COLUMN_BLOCK_ROWS - 1) // COLUMN_BLOCK_ROWS, k, j
    cdef double *partial = <double *>malloc(blocks * W * sizeof(double))
    cdef int c
    if partial == NULL:
        return -1
    threads = <int>min(<Py_ssize_t>threads, blocks)
    if threads == 1:
        for k in range(blocks):
            column_sums_block(a, b, center, partial + k * W, W, kind, k * COLUMN_BLOCK_ROWS,
                              min(rows, (k + 1) * COLUMN_BLOCK_ROWS))
    else:
        for c in prange(threads, num_threads=threads, schedule='static'):
            for k in range(chunk_start(blocks, c, threads), chunk_start(blocks, c + 1, threads)):
                column_sums_block(a, b, center, partial + k * W, W, kind,
                                  k * COLUMN_BLOCK_ROWS, min(rows, (k + 1) * COLUMN_BLOCK_ROWS))
    for j in range(W):
        out[j] = 0.0
    for k in range(blocks):
        for j in range(W):
            out[j] += partial[k * W + j]
    free(partial)
    return 0


cdef inline double channel_sum(const double *sums, Py_ssize_t c, Py_ssize_t S) noexcept nogil:
    """The sum of channel c's column sums sums[c * S : c * S + S]."""
    cdef Py_ssize_t s
    cdef double total = 0.0
    for s in range(c * S, (c + 1) * S):
        total += sums[s]
    return total


cdef int column_means(const real *a, real *center, double *sums, double *means, Py_ssize_t N,
                      Py_ssize_t C, Py_ssize_t S, int threads) noexcept nogil:
    """means[c] = the mean of channel c's N * S values (in columns c * S .. c * S + S - 1),
    shifted as shifted_mean: a_0 + mean(a - a_0), a_0 = a[0, c * S] the channel's first
    value, or the plain mean where that is not finite. center and sums (W = C * S each) are
    work space. Returns -1 when out of memory."""
    cdef Py_ssize_t W = C * S, c, j
    cdef bint plain = False
    for j in range(W):
        center[j] = a[j - j % S]
    if column_sums(a, NULL, center, sums, N, W, SUM_DEVIATION, threads):
        return -1
    for c in range(C):
        means[c] = a[c * S] + channel_sum(sums, c, S) / (N * S)
        plain = plain or not isfinite(means[c])
    if not plain:
        return 0
    for j in range(W):
        center[j] = 0
    if column_sums(a, NULL, center, sums, N, W, SUM_DEVIATION, threads):
        return -1
    for c in range(C):
        if not isfinite(means[c]):
            means[c] = channel_sum(sums, c, S) / (N * S)
    return 0


cdef void columns_affine(const real *a, const real *b, const real *scale_a,
                         const real *scale_b, const real *factor, const real *center,
                         const real *shift, real *out, Py_ssize_t rows, Py_ssize_t W,
                         int threads) noexcept nogil:
    """out[r, j] = scale_a[j] * (a[r, j] - center[j]) + shift[j] when b is NULL (the forward's
    y), otherwise factor[j] * (scale_a[j] * (a[r, j] - center[j]) + shift[j]
    + scale_b[j] * b[r, j]) (the backward's dx), per column."""
    cdef int c
    if threads == 1:
        columns_affine_rows(a, b, scale_a, scale_b, factor, center, shift, out, W, 0, rows)
        return
    for c in prange(threads, num_threads=threads, schedule='static'):
        columns_affine_rows(a, b, scale_a, scale_b, factor, center, shift, out, W,
                            chunk_start(rows, c, threads), chunk_start(rows, c + 1, threads))


cdef void columns_affine_rows(const real *a, const real *b, const real *scale_a,
                              const real *scale_b, const real *factor, const real *center,
                              const real *shift, real *out, Py_ssize_t W, Py_ssize_t first,
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
    C * S columns: as norm_channels, by column sums. Returns -1 when out of memory."""
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
        status = column_means(x, center, sums, means, N, C, S, threads)
        for c in range(C):
            mean[c] = <real>means[c]
        for j in range(W):
            center[j] = mean[j // S]
        status = status or column_sums(x, NULL, center, sums, N, W, SUM_SQUARED_DEVIATION,
                                       threads)
        for c in range(C):
            total = channel_sum(sums, c, S)
            rstd[c] = <real>(1.0 / c_sqrt(total / M + eps))
            if var != NULL:
                var[c] = <real>(total / M)
    if status == 0:
        for j in range(W):
            c = j // S
            center[j] = mean[c]
            scale[j] = rstd[c] * weight[c]
            shift[j] = bias[c]
        columns_affine(x, NULL, scale, NULL, NULL, center, shift, y, N, W, threads)
    free(sums)
    free(center)
    return status


cdef int batch_norm_columns_gradient(const real *dy, const real *x, const real *weight,
                                     const real *mean, const real *rstd, real *dx,
                                     real *dweight, real *dbias, Py_ssize_t N, Py_ssize_t C,
                                     Py_ssize_t S, int threads) noexcept nogil:
    """batch norm's dx, dweight and dbias (when not NULL) for N rows of C * S columns, as
    norm_channels_gradient: with g = dy * weight[c], M = N * S values per channel,
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
    mean(g) = weight[c] * mean(dy), the mean of dy shifted (column_means): for a constant dy
    exactly dy * weight[c], so that (with an exact product) a constant channel's dx is 0.
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
        status = column_means(dy, center, sums, means, N, C, S, threads)
        for j in range(W):
            center[j] = mean[j // S]
        status = status or column_sums(x, dy, center, sums_x, N, W, SUM_B_TIMES_DEVIATION,
                                       threads)
    if status == 0:
        for c in range(C):
            sum_dyx = channel_sum(sums_x, c, S)
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
        columns_affine(x, dy, scale_x, scale_dy, factor, center, shift, dx, N, W, threads)
    free(sums)
    free(center)
    return status


# ---- Python entry points ----------------------------------------------------------------------
# Arrays are aligned, C-contiguous, non-empty and of x's (or dy's) float type (checked by
# data_of); optional ones may be None. Callers pass weight = ones and bias = zeros when the
# user gave none.

def row_norm_forward(cnp.ndarray x not None, residual, cnp.ndarray weight not None,
                     cnp.ndarray bias not None, cnp.ndarray y not None, h, mean, rstd,
                     bint centered, double eps, int num_threads, Py_ssize_t groups=1):
    """Layer norm (centered) or RMSNorm of the rows of x, n = weight.size features each, each
    row cut into `groups` segments with statistics of their own (group norm of (N, C)):
    y, and h = x + residual when residual is not None; mean and rstd per segment when they are
    not None."""
    cdef int t = float_type(x)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(x), n = cnp.PyArray_SIZE(weight)
    if n == 0 or size % n or groups < 1 or n % groups:
        raise ValueError("cyburn kernel: x does not hold whole rows of weight.size, or groups "
                         "does not divide them")
    cdef Py_ssize_t rows = size // n
    cdef void *px = data_of(x, t, size, False)
    cdef void *pr = NULL if residual is None else data_of(residual, t, size, False)
    cdef void *pw = data_of(weight, t, n, False)
    cdef void *pb = data_of(bias, t, n, False)
    cdef void *py = data_of(y, t, size, True)
    cdef void *ph = NULL if residual is None else data_of(h, t, size, True)
    if groups > 1 and (mean is None or rstd is None or residual is not None or not centered):
        raise ValueError("cyburn kernel: segments are layer-normed without residual, into "
                         "mean and rstd arrays")
    cdef void *pm = NULL if mean is None else data_of(mean, t, rows * groups, True)
    cdef void *ps = NULL if rstd is None else data_of(rstd, t, rows * groups, True)
    cdef int threads = team_size(size, rows, num_threads)
    with nogil:
        if t == cnp.NPY_FLOAT:
            norm_rows(<const float *>px, <const float *>pr, <const float *>pw, <const float *>pb,
                      <float *>ph, <float *>py, <float *>pm, <float *>ps, rows, n, groups, eps,
                      centered, threads)
        else:
            norm_rows(<const double *>px, <const double *>pr, <const double *>pw,
                      <const double *>pb, <double *>ph, <double *>py, <double *>pm, <double *>ps,
                      rows, n, groups, eps, centered, threads)


def row_norm_backward(cnp.ndarray dy not None, cnp.ndarray x not None,
                      cnp.ndarray weight not None, mean, cnp.ndarray rstd not None,
                      cnp.ndarray dx not None, dweight, dbias, bint centered, int num_threads,
                      Py_ssize_t groups=1):
    """dx of layer norm (centered) or RMSNorm, rows cut into `groups` segments as in
    row_norm_forward; dweight and dbias, when not None, summed over the rows."""
    cdef int t = float_type(dy)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(dy), n = cnp.PyArray_SIZE(weight)
    if n == 0 or size % n or groups < 1 or n % groups or groups > 1 and not centered:
        raise ValueError("cyburn kernel: dy does not hold whole rows of weight.size, or groups "
                         "does not divide them, or segments of RMSNorm")
    cdef Py_ssize_t rows = size // n
    cdef void *pdy = data_of(dy, t, size, False)
    cdef void *px = data_of(x, t, size, False)
    cdef void *pw = data_of(weight, t, n, False)
    cdef void *pm = data_of(mean, t, rows * groups, False) if centered else NULL
    cdef void *ps = data_of(rstd, t, rows * groups, False)
    cdef void *pdx = data_of(dx, t, size, True)
    cdef void *pdw = NULL if dweight is None else data_of(dweight, t, n, True)
    cdef void *pdb = NULL if dbias is None else data_of(dbias, t, n, True)
    cdef int threads = team_size(size, (rows + GRADIENT_BLOCK_ROWS - 1) // GRADIENT_BLOCK_ROWS,
                                 num_threads), status
    with nogil:
        if t == cnp.NPY_FLOAT:
            status = norm_rows_gradient(<const float *>pdy, <const float *>px, <const float *>pw,
                                        <const float *>pm, <const float *>ps, <float *>pdx,
                                        <float *>pdw, <float *>pdb, rows, n, groups, centered,
                                        threads)
        else:
            status = norm_rows_gradient(<const double *>pdy, <const double *>px,
                                        <const double *>pw, <const double *>pm,
                                        <const double *>ps, <double *>pdx, <double *>pdw,
                                        <double *>pdb, rows, n, groups, centered, threads)
    if status:
        raise MemoryError("cyburn: no memory for the weight-gradient block sums")


cdef Grouping grouping(cnp.ndarray x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t groups) except *:
    cdef Grouping g
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
    cdef Grouping g = grouping(x, N, C, groups)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(x), stats = stat_count(g)
    cdef void *px = data_of(x, t, size, False)
    cdef void *pw = data_of(weight, t, C, False)
    cdef void *pb = data_of(bias, t, C, False)
    cdef void *py = data_of(y, t, size, True)
    cdef void *pm = data_of(mean, t, stats, compute_stats)
    cdef void *ps = data_of(rstd, t, stats, compute_stats)
    cdef void *pv = NULL if var is None else data_of(var, t, stats, True)
    cdef int threads = team_size(size, stats, num_threads)
    with nogil:
        if t == cnp.NPY_FLOAT:
            norm_channels(<const float *>px, <const float *>pw, <const float *>pb, <float *>py,
                          <float *>pm, <float *>ps, <float *>pv, g, compute_stats, eps, threads)
        else:
            norm_channels(<const double *>px, <const double *>pw, <const double *>pb,
                          <double *>py, <double *>pm, <double *>ps, <double *>pv, g,
                          compute_stats, eps, threads)


def channel_norm_backward(cnp.ndarray dy not None, cnp.ndarray x not None, Py_ssize_t N,
                          Py_ssize_t C, Py_ssize_t groups, cnp.ndarray weight not None,
                          cnp.ndarray mean not None, cnp.ndarray rstd not None,
                          cnp.ndarray dx not None, dweight, dbias, int num_threads):
    """dx of group norm (groups > 0) or batch norm (groups == 0) of x seen as (N, C, S);
    dweight and dbias, when not None, summed over samples and positions."""
    cdef int t = float_type(dy)
    cdef Grouping g = grouping(dy, N, C, groups)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(dy), stats = stat_count(g)
    cdef void *pdy = data_of(dy, t, size, False)
    cdef void *px = data_of(x, t, size, False)
    cdef void *pw = data_of(weight, t, C, False)
    cdef void *pm = data_of(mean, t, stats, False)
    cdef void *ps = data_of(rstd, t, stats, False)
    cdef void *pdx = data_of(dx, t, size, True)
    cdef void *pdw = NULL if dweight is None else data_of(dweight, t, C, True)
    cdef void *pdb = NULL if dweight is None else data_of(dbias, t, C, True)
    cdef int threads = team_size(size, stats, num_threads), status
    with nogil:
        if t == cnp.NPY_FLOAT:
            status = norm_channels_gradient(<const float *>pdy, <const float *>px,
                                            <const float *>pw, <const float *>pm,
                                            <const float *>ps, <float *>pdx, <float *>pdw,
                                            <float *>pdb, g, threads)
        else:
            status = norm_channels_gradient(<const double *>pdy, <const double *>px,
                                            <const double *>pw, <const double *>pm,
                                            <const double *>ps, <double *>pdx, <double *>pdw,
                                            <double *>pdb, g, threads)
    if status:
        raise MemoryError("cyburn: no memory for the per-channel gradient sums")


def batch_norm_columns_forward(cnp.ndarray x not None, Py_ssize_t N, Py_ssize_t C,
                               cnp.ndarray weight not None, cnp.ndarray bias not None,
                               cnp.ndarray y not None, cnp.ndarray mean not None,
                               cnp.ndarray rstd not None, var, bint compute_stats, double eps,
                               int num_threads):
    """channel_norm_forward of batch norm (groups == 0) by column sums: for short runs."""
    cdef int t = float_type(x)
    cdef Grouping g = grouping(x, N, C, 0)
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
    cdef Grouping g = grouping(dy, N, C, 0)
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
