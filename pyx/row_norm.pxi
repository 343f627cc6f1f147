# Row norms, forward and backward: layer norm and RMSNorm, each row of n contiguous features
# with its own statistics and each feature with its own weight and bias; also group norm of an
# (N, C) input, whose groups are segments of a row.
#
# Statistics are two-pass -- the mean, then the mean of squared deviations from it -- over data
# that the first pass brought into cache. The one-pass mean(x^2) - mean(x)^2 loses every digit
# on rows like 1e4 + N(0, 1) in float32; two passes keep the float64 truth's first 6.
#
# Every statistic and every dx element is computed by one thread in an order that depends only
# on the shape; weight and bias gradients are reduced from per-block partial sums in a fixed
# order. Results are bitwise identical for any thread count.

from libc.math cimport isfinite, sqrt as c_sqrt

cdef enum:
    ROW_NORM_BLOCK_ROWS = 64        # backward: dweight and dbias are summed in blocks of rows
    ROW_NORM_SEGMENT_BATCH = 64     # segments not lane-wise: statistics of this many at once


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
    void cyb_norm_segments_forward_f32(const float *x, const float *w, const float *b, float *y,
                                       Py_ssize_t L, Py_ssize_t count, double eps, float *mean,
                                       float *rstd)
    void cyb_norm_segments_forward_f64(const double *x, const double *w, const double *b,
                                       double *y, Py_ssize_t L, Py_ssize_t count, double eps,
                                       double *mean, double *rstd)
    void cyb_norm_backward_span_f32(const float *dy, const float *x, const float *w, float m,
                                    float r, float g_mean, float q, float *dx, float *dweight,
                                    float *dbias, Py_ssize_t n)
    void cyb_norm_backward_span_f64(const double *dy, const double *x, const double *w,
                                    double m, double r, double g_mean, double q, double *dx,
                                    double *dweight, double *dbias, Py_ssize_t n)
    void cyb_norm_segments_backward_f32(const float *dy, const float *x, const float *w,
                                        const float *mean, const float *rstd, float *dx,
                                        float *dweight, float *dbias, Py_ssize_t L,
                                        Py_ssize_t count)
    void cyb_norm_segments_backward_f64(const double *dy, const double *x, const double *w,
                                        const double *mean, const double *rstd, double *dx,
                                        double *dweight, double *dbias, Py_ssize_t L,
                                        Py_ssize_t count)


cdef inline real row_norm_shifted_mean(const real *x, double deviations, Py_ssize_t length,
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


cdef inline real row_norm_shifted_mean_of_products(const real *a, const real *b, double deviations,
                                                   Py_ssize_t n) noexcept nogil:
    """mean(g) of g = a[0:n] * b[0:n] given deviations = sum(g - g[0]), as
    row_norm_shifted_mean."""
    if isfinite(deviations):
        return <real>(a[0] * b[0] + deviations / n)
    return <real>(span_dot(a, b, n) / n)


cdef inline double row_norm_sum_dev(const real *x, real c, Py_ssize_t n) noexcept nogil:
    """sum(x[0:n] - c), blocked like span_sum."""
    if real is float:
        return cyb_norm_sum_dev_f32(x, c, n)
    else:
        return cyb_norm_sum_dev_f64(x, c, n)


cdef inline void row_norm_sums_shifted_centered(const real *dy, const real *w, real c,
                                                const real *x, real m, Py_ssize_t n,
                                                double *sum_g, double *sum_gx) noexcept nogil:
    """sum(g - c) and sum(g * (x - m)) over [0:n] in one pass, g = dy * w, blocked like
    span_sum."""
    if real is float:
        cyb_norm_sums_shifted_centered_f32(dy, w, c, x, m, n, sum_g, sum_gx)
    else:
        cyb_norm_sums_shifted_centered_f64(dy, w, c, x, m, n, sum_g, sum_gx)


cdef inline void row_norm_segments_forward(const real *x, const real *w, const real *b, real *y,
                                           Py_ssize_t L, Py_ssize_t count, double eps, real *mean,
                                           real *rstd) noexcept nogil:
    """Layer norm of each segment x_k = x[k L : (k + 1) L], k < count, lane-wise
    (cyb_norm_lane_wise(L) must hold): row_norm_segments, statistics a batch at a time."""
    if real is float:
        cyb_norm_segments_forward_f32(x, w, b, y, L, count, eps, mean, rstd)
    else:
        cyb_norm_segments_forward_f64(x, w, b, y, L, count, eps, mean, rstd)


cdef inline void row_norm_backward_span(const real *dy, const real *x, const real *w, real m,
                                        real r, real g_mean, real q, real *dx, real *dweight,
                                        real *dbias, Py_ssize_t n) noexcept nogil:
    """dweight += dy * ((x - m) * r), dbias += dy, dx = r * (dy * w - g_mean - (x - m) * q) over
    [0:n], in one pass."""
    if real is float:
        cyb_norm_backward_span_f32(dy, x, w, m, r, g_mean, q, dx, dweight, dbias, n)
    else:
        cyb_norm_backward_span_f64(dy, x, w, m, r, g_mean, q, dx, dweight, dbias, n)


cdef inline void row_norm_segments_backward(const real *dy, const real *x, const real *w,
                                            const real *mean, const real *rstd, real *dx,
                                            real *dweight, real *dbias, Py_ssize_t L,
                                            Py_ssize_t count) noexcept nogil:
    """The backward of row_norm_segments_forward over `count` lane-wise segments of L."""
    if real is float:
        cyb_norm_segments_backward_f32(dy, x, w, mean, rstd, dx, dweight, dbias, L, count)
    else:
        cyb_norm_segments_backward_f64(dy, x, w, mean, rstd, dx, dweight, dbias, L, count)


# ---- rows: layer norm and RMSNorm ---------------------------------------------------------
# RMSNorm is layer norm with the mean taken as 0, the bias as 0 (the caller passes zeros)
# and no mean(g) term in the gradient: one kernel does both, told by `centered`.
# A row of n features may be cut into `groups` segments of L = n / groups, each with its own
# statistics (stat r * groups + g): group norm of an (N, C) input, whose groups of one-element
# runs are such segments, takes this path (groups = 1 for layer norm and RMSNorm).
# row_norm_segments takes a row's segments in batches of up to ROW_NORM_SEGMENT_BATCH,
# statistic by statistic (layer norm's single segment keeps row_norm_row): every segment's sum,
# then every mean, every sum of squared deviations, every rstd, and then the normalization. The
# sums of different segments do not depend on each other, so the CPU overlaps them, and the
# divisions and square roots of a batch run as vector instructions (segment after segment, each
# short segment would wait on its own scalar divide and sqrt). Segments of 8 to 256 elements
# go to cyburn_norm.h, which sums several at once and takes their statistics in T.
# The next row is prefetched while a row is normalized, but not a row of lane-wise segments:
# their short batches already keep reads and writes in flight together, and the prefetch
# slowed them (on the README's EPYC, (16384, 1024) in 32 groups against layer norm of the same
# rows, one thread: forward 1.07-1.10x with the prefetch, 0.90-0.96x without; backward 1.05x
# and 0.83-0.86x).
# Means are shifted, x_0 + mean(x - x_0) with x_0 the first element (row_norm_shifted_mean),
# and so is the backward's mean(g): a constant row or segment has deviations of exactly 0,
# hence mean = its value, y = bias, and dx = 0 for a constant g (see cyburn_norm.h).

cdef void row_norm_row(const real *x, const real *residual, const real *weight, const real *bias,
                       real *h, real *y, real *mean, real *rstd, Py_ssize_t n, double eps,
                       bint centered, bint stream) noexcept nogil:
    """h = x + residual (when residual != NULL; otherwise h is x itself), then
        layer norm:  y = (h - mean(h)) * rstd * weight + bias,  rstd = 1 / sqrt(var(h) + eps)
        RMSNorm:     y = h * rstd * weight,                     rstd = 1 / sqrt(mean(h^2) + eps)
    storing mean(h) (layer norm) and rstd where they are not NULL. With `stream`, float32's y
    is stored past the cache (cyb_norm_apply_f32; the caller fences)."""
    cdef Py_ssize_t i
    cdef real m = 0, r
    if residual != NULL:
        for i in range(n):
            h[i] = x[i] + residual[i]
        x = h
    if centered:
        m = row_norm_shifted_mean(x, row_norm_sum_dev(x, x[0], n), n, 1, 0)
        if mean != NULL:
            mean[0] = m
    r = <real>(1.0 / c_sqrt(span_sum_sq_dev(x, m, n) / n + eps))
    if rstd != NULL:
        rstd[0] = r
    if real is float:
        cyb_norm_apply_f32(x, m, r, weight, bias, y, n, stream)
    else:
        for i in range(n):
            y[i] = (x[i] - m) * r * weight[i] + bias[i]


cdef void row_norm_segments(const real *x, const real *weight, const real *bias, real *y,
                            real *mean, real *rstd, Py_ssize_t n, Py_ssize_t groups,
                            double eps) noexcept nogil:
    """row_norm_row (layer norm, no residual) of each of the `groups` segments
    x_g = x[g L : (g + 1) L] of L = n / groups elements (group norm of an (N, C) input):
        y = (x_g - mean(x_g)) * rstd * weight + bias,  rstd = 1 / sqrt(var(x_g) + eps),
    var(x_g) = mean((x_g - mean(x_g))^2) (two passes), storing mean[g] and rstd[g] when they
    are not NULL. Lane-wise segments go to row_norm_segments_forward; others in batches, each
    normalized right after its statistics."""
    cdef Py_ssize_t i, k, batch, first, count, at, length = n // groups
    cdef double sums[ROW_NORM_SEGMENT_BATCH]
    cdef real m[ROW_NORM_SEGMENT_BATCH]
    cdef real r[ROW_NORM_SEGMENT_BATCH]
    if cyb_norm_lane_wise(length):
        row_norm_segments_forward(x, weight, bias, y, length, groups, eps, mean, rstd)
        return
    for batch in range((groups + ROW_NORM_SEGMENT_BATCH - 1) // ROW_NORM_SEGMENT_BATCH):
        first = batch * ROW_NORM_SEGMENT_BATCH
        count = min(groups - first, ROW_NORM_SEGMENT_BATCH)
        for k in range(count):
            at = (first + k) * length
            sums[k] = row_norm_sum_dev(x + at, x[at], length)
        for k in range(count):
            m[k] = row_norm_shifted_mean(x + (first + k) * length, sums[k], length, 1, 0)
        for k in range(count):
            sums[k] = span_sum_sq_dev(x + (first + k) * length, m[k], length)
        for k in range(count):
            r[k] = <real>(1.0 / c_sqrt(sums[k] / length + eps))
        for k in range(count):
            at = (first + k) * length
            for i in range(at, at + length):
                y[i] = (x[i] - m[k]) * r[k] * weight[i] + bias[i]
        if mean != NULL:
            for k in range(count):
                mean[first + k] = m[k]
                rstd[first + k] = r[k]


cdef inline bint row_norm_prefetches(Py_ssize_t n, Py_ssize_t groups) noexcept nogil:
    """Whether the forward prefetches the next row: not for rows cut into lane-wise segments.
    The backward never does (see row_norm_backward_block)."""
    return groups == 1 or not cyb_norm_lane_wise(n // groups)


cdef void row_norm_chunk(const real *x, const real *residual, const real *weight,
                         const real *bias, real *h, real *y, real *mean, real *rstd,
                         Py_ssize_t n, Py_ssize_t groups, double eps, bint centered,
                         bint stream, Py_ssize_t first, Py_ssize_t last) noexcept nogil:
    cdef Py_ssize_t r, at
    cdef bint prefetch = row_norm_prefetches(n, groups)
    for r in range(first, last):
        if r + 1 < last and prefetch:
            prefetch_span(x + (r + 1) * n, n)
            if residual != NULL:
                prefetch_span(residual + (r + 1) * n, n)
        at = r * n
        if groups > 1:
            row_norm_segments(x + at, weight, bias, y + at,
                              mean + r * groups if mean != NULL else NULL,
                              rstd + r * groups if rstd != NULL else NULL, n, groups, eps)
        else:
            row_norm_row(x + at, residual + at if residual != NULL else NULL, weight, bias,
                         h + at if h != NULL else NULL, y + at, mean + r if mean != NULL else NULL,
                         rstd + r if rstd != NULL else NULL, n, eps, centered, stream)
    if stream:
        cyb_stream_fence()


cdef void row_norm_rows(const real *x, const real *residual, const real *weight, const real *bias,
                        real *h, real *y, real *mean, real *rstd, Py_ssize_t rows, Py_ssize_t n,
                        Py_ssize_t groups, double eps, bint centered, bint stream,
                        int threads) noexcept nogil:
    cdef int c
    if threads == 1:        # a thread team costs about 0.4 us even for one thread
        row_norm_chunk(x, residual, weight, bias, h, y, mean, rstd, n, groups, eps, centered,
                       stream, 0, rows)
        return
    for c in prange(threads, num_threads=threads, schedule='static'):
        row_norm_chunk(x, residual, weight, bias, h, y, mean, rstd, n, groups, eps, centered,
                       stream, chunk_start(rows, c, threads), chunk_start(rows, c + 1, threads))
    team_finished()


cdef void row_norm_backward_row(const real *dy, const real *x, const real *weight,
                                const real *mean, const real *rstd, real *dx, real *dweight,
                                real *dbias, Py_ssize_t n, Py_ssize_t groups,
                                bint centered) noexcept nogil:
    """For each of the `groups` segments of L = n / groups elements (as in row_norm_row), with
    xhat = (x - mean[g]) * rstd[g] and g = dy * weight (RMSNorm: mean = 0, may be NULL):
        layer norm:  dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
        RMSNorm:     dx = rstd * (g - xhat * mean(g * xhat))
    and dweight += dy * xhat, dbias += dy, mean(g) = g_0 + mean(g - g_0) (row_norm_shifted_mean).
    Segments go in batches, sums first (see row_norm_segments); groups > 1 only for layer
    norm, lane-wise segments to row_norm_segments_backward."""
    cdef Py_ssize_t g, k, at, batch, first, last, length = n // groups
    cdef double sum_g[ROW_NORM_SEGMENT_BATCH]
    cdef double sum_gx[ROW_NORM_SEGMENT_BATCH]
    cdef real g_mean[ROW_NORM_SEGMENT_BATCH]
    cdef real q[ROW_NORM_SEGMENT_BATCH]          # xhat * mean(g * xhat) = (x - mean) * q
    cdef real m, r
    if groups > 1 and cyb_norm_lane_wise(length):
        row_norm_segments_backward(dy, x, weight, mean, rstd, dx, dweight, dbias, length, groups)
        return
    for batch in range((groups + ROW_NORM_SEGMENT_BATCH - 1) // ROW_NORM_SEGMENT_BATCH):
        first = batch * ROW_NORM_SEGMENT_BATCH
        last = min(groups, first + ROW_NORM_SEGMENT_BATCH)
        for g in range(first, last):
            at = g * length
            row_norm_sums_shifted_centered(dy + at, weight + at,
                                           dy[at] * weight[at] if centered else 0, x + at,
                                           mean[g] if centered else 0, length,
                                           &sum_g[g - first], &sum_gx[g - first])
        for k in range(last - first):
            at = (first + k) * length
            g_mean[k] = (row_norm_shifted_mean_of_products(dy + at, weight + at, sum_g[k], length)
                         if centered else 0)
            q[k] = <real>(sum_gx[k] / length * rstd[first + k] * rstd[first + k])
        for g in range(first, last):
            m = mean[g] if centered else 0
            r = rstd[g]
            k = g - first
            at = g * length
            if centered and length == 1:
                # g - mean(g) is exactly 0 (NaN for an infinite g); computed, it would be the
                # rounding error of g, as the compiler fuses g - mean(g) into one multiply-add of
                # dy * weight
                dweight[g] += dy[g] * ((x[g] - m) * r)
                dbias[g] += dy[g]
                dx[g] = r * (0 * (dy[g] * weight[g]) - (x[g] - m) * q[k])
                continue
            row_norm_backward_span(dy + at, x + at, weight + at, m, r, g_mean[k], q[k], dx + at,
                                   dweight + at, dbias + at, length)


cdef void row_norm_backward_block(const real *dy, const real *x, const real *weight,
                                  const real *mean, const real *rstd, real *dx, real *partial,
                                  Py_ssize_t n, Py_ssize_t groups, bint centered, Py_ssize_t first,
                                  Py_ssize_t last) noexcept nogil:
    """Rows first..last-1, their dweight and dbias sums in partial[0:n] and partial[n:2n]. The
    next row's dy and x are not prefetched: layer_norm_backward (8192, 768) float32 took 3.07
    ms with the prefetch and 2.62 ms without on 2 threads, 5.79 and 4.68 ms on one (EPYC Zen 3,
    best of 15 interleaved rounds; in cache, (1024, 768), 0.187 and 0.167 ms)."""
    cdef Py_ssize_t r, at
    for r in range(2 * n):
        partial[r] = 0
    for r in range(first, last):
        at = r * n
        row_norm_backward_row(dy + at, x + at, weight, mean + r * groups if centered else NULL,
                              rstd + r * groups, dx + at, partial, partial + n, n, groups,
                              centered)


cdef int row_norm_gradient(const real *dy, const real *x, const real *weight,
                           const real *mean, const real *rstd, real *dx, real *dweight,
                           real *dbias, Py_ssize_t rows, Py_ssize_t n, Py_ssize_t groups,
                           bint centered, int threads) noexcept nogil:
    """dx for every row; dweight and dbias (when not NULL) as sums of ROW_NORM_BLOCK_ROWS-row
    block sums (accumulated in real, a few dozen terms each), added in block order in double.
    Threads take contiguous runs of whole blocks, so the sums do not depend on the thread
    count. Returns -1 when the block sums cannot be allocated."""
    cdef Py_ssize_t blocks = (rows + ROW_NORM_BLOCK_ROWS - 1) // ROW_NORM_BLOCK_ROWS, b, j
    cdef real *partials = <real *>malloc(blocks * 2 * n * sizeof(real))
    cdef double *totals
    cdef int c
    if partials == NULL:
        return -1
    threads = <int>min(<Py_ssize_t>threads, blocks)
    if threads == 1:
        row_norm_backward_blocks(dy, x, weight, mean, rstd, dx, partials, rows, n, groups,
                                 centered, 0, blocks)
    else:
        for c in prange(threads, num_threads=threads, schedule='static'):
            row_norm_backward_blocks(dy, x, weight, mean, rstd, dx, partials, rows, n, groups,
                                     centered, chunk_start(blocks, c, threads),
                                     chunk_start(blocks, c + 1, threads))
        team_finished()
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


cdef void row_norm_backward_blocks(const real *dy, const real *x, const real *weight,
                                   const real *mean, const real *rstd, real *dx, real *partials,
                                   Py_ssize_t rows, Py_ssize_t n, Py_ssize_t groups,
                                   bint centered, Py_ssize_t first,
                                   Py_ssize_t last) noexcept nogil:
    """Blocks first..last-1 of ROW_NORM_BLOCK_ROWS rows (the last one shorter)."""
    cdef Py_ssize_t b
    for b in range(first, last):
        row_norm_backward_block(dy, x, weight, mean, rstd, dx, partials + b * 2 * n, n, groups,
                                centered, b * ROW_NORM_BLOCK_ROWS,
                                min(rows, (b + 1) * ROW_NORM_BLOCK_ROWS))


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
    if groups > 1 and ((mean is None) != (rstd is None) or residual is not None
                       or not centered):
        raise ValueError("cyburn kernel: segments are layer-normed without residual, into "
                         "both mean and rstd or neither")
    cdef void *pm = NULL if mean is None else data_of(mean, t, rows * groups, True)
    cdef void *ps = NULL if rstd is None else data_of(rstd, t, rows * groups, True)
    cdef int threads = team_size(size, rows, num_threads)
    cdef bint stream = beyond_cache(x, x, y)
    with nogil:
        if t == cnp.NPY_FLOAT:
            row_norm_rows(<const float *>px, <const float *>pr, <const float *>pw,
                          <const float *>pb, <float *>ph, <float *>py, <float *>pm, <float *>ps,
                          rows, n, groups, eps, centered, stream, threads)
        else:
            row_norm_rows(<const double *>px, <const double *>pr, <const double *>pw,
                          <const double *>pb, <double *>ph, <double *>py, <double *>pm,
                          <double *>ps, rows, n, groups, eps, centered, stream, threads)


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
    cdef int threads = team_size(size, (rows + ROW_NORM_BLOCK_ROWS - 1) // ROW_NORM_BLOCK_ROWS,
                                 num_threads), status
    with nogil:
        if t == cnp.NPY_FLOAT:
            status = row_norm_gradient(<const float *>pdy, <const float *>px, <const float *>pw,
                                       <const float *>pm, <const float *>ps, <float *>pdx,
                                       <float *>pdw, <float *>pdb, rows, n, groups, centered,
                                       threads)
        else:
            status = row_norm_gradient(<const double *>pdy, <const double *>px,
                                       <const double *>pw, <const double *>pm,
                                       <const double *>ps, <double *>pdx, <double *>pdw,
                                       <double *>pdb, rows, n, groups, centered, threads)
    if status:
        raise MemoryError("cyburn: no memory for the weight-gradient block sums")
