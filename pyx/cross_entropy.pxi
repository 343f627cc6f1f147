# Cross-entropy over the rows of (N, C) logits, fused with its gradient.
#
# Per row, with z = softcap * tanh(logits / softcap) (or z = logits), lse = logsumexp(z),
# weights w (ones when none were given), label smoothing e and a target distribution q
# (one-hot for a class index t):
#     q'   = (1 - e) q + e / C
#     loss = sum_c w_c q'_c (lse - z_c) + z_loss lse^2
#     dz_j = p_j (sum_c w_c q'_c + 2 z_loss lse) - w_j q'_j,      p = softmax(z)
# which for a class index is PyTorch's weighted, label-smoothed loss. A row is read from
# memory once: for the loss alone, the max and the sum of exponentials come from one read
# (block by block, rescaling the sum when the max rises); with the gradient, the max is taken
# first and the sum and gradient passes re-read the row from cache (50257 float32 are
# 200 KB: L2). The gradient may be written over the logits.

from libc.stdint cimport int64_t

cdef struct CrossEntropyOptions:
    double smoothing            # e
    double z_loss
    double softcap              # 0: none


cdef double cross_entropy_row(const real *x, const real *q, Py_ssize_t t, const real *w,
                              real *z_buffer, real *grad, Py_ssize_t C, CrossEntropyOptions o,
                              double scale) noexcept nogil:
    """The loss of one row with target q (probabilities) or, when q is NULL, class t; when
    grad is not NULL, also grad = scale * dloss/dlogits (grad may be x itself).
    z_buffer has room for C elements when o.softcap."""
    cdef const real *z = x
    cdef Py_ssize_t j
    cdef real m, p_factor, p_scale, row_scale, exp_t, e_over_c = <real>(o.smoothing / C)
    cdef real keep = <real>(1.0 - o.smoothing)
    cdef real cap = <real>o.softcap
    cdef double s, log_s, lse, wq, wqz, wz, w_sum, loss
    if o.softcap:
        for j in range(C):
            z_buffer[j] = cap * vtanh(x[j] / cap)
        z = z_buffer
    if grad == NULL:
        s = span_sum_exp_online(z, C, &m)                 # the row is read once
        log_s = c_log(s)
    else:
        m = span_max(z, C)
    # wq = sum_c w_c q'_c and wqz = sum_c w_c q'_c (z_c - m): shifted by the max, so that
    # logits of 1e30 still give a loss of their differences
    if q == NULL:
        wq = w[t]
        wqz = wq * <double>(z[t] - m)
    else:
        span_sums_centered(q, w, z, m, C, &wq, &wqz)
    if o.smoothing:                                       # (never 0 * a NaN weight sum)
        span_sums_centered(w, NULL, z, m, C, &w_sum, &wz)    # sum_c w_c, sum_c w_c (z_c - m)
        wq = (1.0 - o.smoothing) * wq + o.smoothing / C * w_sum
        wqz = (1.0 - o.smoothing) * wqz + o.smoothing / C * wz
    if grad != NULL:
        s = span_sum_exp(z, m, grad, False, C)   # grad = c exp(z - m), s = c sum: p = grad / s
        log_s = span_log_sum_exp(s, z)
    lse = m + log_s
    loss = wq * log_s - wqz + o.z_loss * lse * lse        # = sum_c w_c q'_c (lse - z_c) + ...
    if grad == NULL:
        return loss
    # dz_j = scale * (p_j * (wq + 2 z_loss lse) - w_j q'_j), p_j = grad_j / s: the scale
    # multiplies the difference, so that an infinite scale (a mean over zero weights) gives
    # +-inf where the difference is not 0, never inf - inf * 0
    p_factor = <real>((wq + 2.0 * o.z_loss * lse) / s)
    row_scale = <real>scale
    if q == NULL:
        exp_t = grad[t]
        if o.smoothing:
            for j in range(C):
                grad[j] = row_scale * (grad[j] * p_factor - e_over_c * w[j])
        else:
            p_scale = <real>(scale * (wq + 2.0 * o.z_loss * lse) / s)
            for j in range(C):
                grad[j] = grad[j] * p_scale
        grad[t] = row_scale * (exp_t * p_factor - e_over_c * w[t] - keep * w[t])
    else:
        for j in range(C):
            grad[j] = row_scale * (grad[j] * p_factor - w[j] * (keep * q[j] + e_over_c))
    if o.softcap:      # dlogits = dz * (1 - (z / c)^2), in the forward's precision: z / c <= 1
        for j in range(C):
            grad[j] = grad[j] * (1 - (z[j] / cap) * (z[j] / cap))
    return loss


cdef int cross_entropy_chunk(const real *x, const real *q, const int64_t *target,
                             int64_t ignore_index, const real *w, real *grad, double *losses,
                             const double *row_scale, double scale, Py_ssize_t C,
                             CrossEntropyOptions o, Py_ssize_t first,
                             Py_ssize_t last) noexcept nogil:
    """Rows first..last-1: losses[r] and, when grad is not NULL, their gradient rows scaled by
    scale * row_scale[r] (row_scale may be NULL). Ignored rows: loss 0, gradient 0.
    Returns -1 when the softcap buffer cannot be allocated, -2 at a class index out of range."""
    cdef Py_ssize_t r, j, at
    cdef real *z_buffer = NULL
    if o.softcap:
        z_buffer = <real *>malloc(C * sizeof(real))
        if z_buffer == NULL:
            return -1
    for r in range(first, last):
        at = r * C
        if r + 1 < last:
            prefetch_span(x + at + C, C)
        if target != NULL and target[r] == ignore_index:
            losses[r] = 0.0
            if grad != NULL:
                for j in range(C):
                    grad[at + j] = 0
            continue
        # (cross_entropy_check_targets reports these to the user)
        if target != NULL and not 0 <= target[r] < C:
            free(z_buffer)
            return -2
        losses[r] = cross_entropy_row(
            x + at, q + at if q != NULL else NULL, target[r] if target != NULL else 0, w,
            z_buffer, grad + at if grad != NULL else NULL, C, o,
            scale * row_scale[r] if row_scale != NULL else scale)
    free(z_buffer)
    return 0


cdef int cross_entropy_rows(const real *x, const real *q, const int64_t *target,
                            int64_t ignore_index, const real *w, real *grad, double *losses,
                            const double *row_scale, double scale, Py_ssize_t N, Py_ssize_t C,
                            CrossEntropyOptions o, int threads) noexcept nogil:
    """cross_entropy_chunk over all rows; -2 if any chunk met a bad class index, else -1 if
    any ran out of memory, else 0."""
    cdef int c, status, bad_index = 0, no_memory = 0
    if threads == 1:
        return cross_entropy_chunk(x, q, target, ignore_index, w, grad, losses, row_scale,
                                   scale, C, o, 0, N)
    for c in prange(threads, num_threads=threads, schedule='static'):
        status = cross_entropy_chunk(x, q, target, ignore_index, w, grad, losses, row_scale,
                                     scale, C, o, chunk_start(N, c, threads),
                                     chunk_start(N, c + 1, threads))
        bad_index += status == -2           # reductions: every thread's outcome counts
        no_memory += status == -1
    team_finished()
    return -2 if bad_index else -1 if no_memory else 0


# ---- Python entry points ----------------------------------------------------------------------

def cross_entropy_check_targets(cnp.ndarray target not None, weight, int64_t ignore_index,
                                Py_ssize_t C):
    """For int64 class indices: (index of the first row whose target is neither in [0, C) nor
    ignore_index, or -1; the sum of weight[t] over the other rows, or their count when weight
    is None). Runs without the GIL."""
    cdef Py_ssize_t N = cnp.PyArray_SIZE(target), r, bad = -1
    cdef const int64_t *t = <const int64_t *>data_of(target, cnp.NPY_INT64, N, False) if N else NULL
    cdef const double *w = NULL if weight is None else <const double *>data_of(
        weight, cnp.NPY_DOUBLE, C, False)
    cdef double total = 0.0
    with nogil:
        for r in range(N):
            if t[r] == ignore_index:
                continue
            if t[r] < 0 or t[r] >= C:
                bad = r
                break
            total += w[t[r]] if w != NULL else 1.0
    return bad, total


def cross_entropy_loss_and_grad(cnp.ndarray logits not None, target, probabilities,
                                cnp.ndarray weight not None, int64_t ignore_index,
                                double smoothing, double z_loss, double softcap, double scale,
                                row_scale, cnp.ndarray losses not None, grad, int num_threads):
    """Per-row losses (float64) of (N, C) logits against int64 class indices `target` (check
    them with cross_entropy_check_targets first: a bad one here raises a bare IndexError) or
    `probabilities`; with grad, their gradient times scale (and row_scale[r] when not None);
    grad may be logits itself, but no other input."""
    cdef int t = float_type(logits)
    if cnp.PyArray_NDIM(logits) != 2 or cnp.PyArray_DIM(logits, 1) == 0:
        raise ValueError("cyburn kernel: logits must be (N, C) with C > 0")
    cdef Py_ssize_t N = cnp.PyArray_DIM(logits, 0), C = cnp.PyArray_DIM(logits, 1)
    if (target is None) == (probabilities is None):
        raise ValueError("cyburn kernel: give exactly one of target and probabilities")
    cdef CrossEntropyOptions o
    o.smoothing = smoothing
    o.z_loss = z_loss
    o.softcap = softcap
    cdef void *px = data_of(logits, t, N * C, False)
    cdef const int64_t *pt = NULL if target is None else <const int64_t *>data_of(
        target, cnp.NPY_INT64, N, False)
    cdef void *pq = NULL if probabilities is None else data_of(probabilities, t, N * C, False)
    cdef void *pw = data_of(weight, t, C, False)
    cdef void *pg = NULL if grad is None else data_of(grad, t, N * C, True)
    cdef double *pl = <double *>data_of(losses, cnp.NPY_DOUBLE, N, True)
    cdef const double *ps = NULL if row_scale is None else <const double *>data_of(
        row_scale, cnp.NPY_DOUBLE, N, False)
    cdef int threads = team_size(N * C, N, num_threads), status
    with nogil:
        if t == cnp.NPY_FLOAT:
            status = cross_entropy_rows(<const float *>px, <const float *>pq, pt, ignore_index,
                                        <const float *>pw, <float *>pg, pl, ps, scale, N, C, o,
                                        threads)
        else:
            status = cross_entropy_rows(<const double *>px, <const double *>pq, pt,
                                        ignore_index, <const double *>pw, <double *>pg, pl, ps,
                                        scale, N, C, o, threads)
    if status == -2:
        raise IndexError("cyburn kernel: a class index is out of range")
    if status:
        raise MemoryError("cyburn: no memory for the softcap buffers")
