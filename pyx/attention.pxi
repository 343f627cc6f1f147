# Attention softmax: the softmax over the last axis of s = scale * x for attention scores x of
# shape (..., Tq, Tk), seen as rows of Tk keys, row r being query i = r % Tq.
#
#   causal      hides key j from query i when j > i + Tk - Tq (bottom-right aligned): a row's
#               visible keys are its first clamp(i + Tk - Tq + 1, 0, Tk), and the kernel reads
#               and exponentiates only those; it writes zeros over the rest.
#   keep mask   (boolean) hides key j where it is False;
#   add mask    (float) is added to s; -inf hides a key.
# A mask arrives as rows of Tk (mask_rows) and an index row_of: row r of x takes mask row
# row_of[r], so a mask broadcast over batch and heads is never materialized.
# A row whose every key is hidden is all zeros (not the NaN of softmax over nothing).
#
# The backward is softmax's with the chain rule's factor: dx = scale * y * (dy - sum(dy * y)).
# Rows go to threads in blocks of up to ATTENTION_BLOCK_ROWS (fewer when there are few rows, so
# that every thread gets some), dealt in turn: causal rows grow longer with i, and dealing
# blocks round-robin balances them. Each row is computed by one
# thread in a fixed order, so results do not depend on the thread count.

from libc.math cimport INFINITY, fabs, isnan
from libc.stdint cimport int64_t
from libc.string cimport memset

cdef enum:
    ATTENTION_BLOCK_ROWS = 16
    ATTENTION_SHORT_ROW = 64    # causal rows this short are computed in whole vectors

# ATTENTION_HIDES_* + ATTENTION_SHORT_ROW - v: v zeros, then ones (for v <= ATTENTION_SHORT_ROW):
# which keys a causal row with v visible keys hides, in the scores' type (a select on a
# compare of the same width vectorizes whole; one on bytes or on the loop index does not).
cdef float ATTENTION_HIDES_F32[2 * ATTENTION_SHORT_ROW]
cdef double ATTENTION_HIDES_F64[2 * ATTENTION_SHORT_ROW]
for _attention_key in range(2 * ATTENTION_SHORT_ROW):
    ATTENTION_HIDES_F32[_attention_key] = _attention_key >= ATTENTION_SHORT_ROW
    ATTENTION_HIDES_F64[_attention_key] = ATTENTION_HIDES_F32[_attention_key]

cdef enum AttentionMask:
    NO_MASK
    KEEP_MASK
    ADD_MASK

cdef struct Attention:
    Py_ssize_t rows, Tq, Tk
    Py_ssize_t block_rows       # rows per block dealt to a thread
    bint causal
    AttentionMask mask_kind
    const void *mask_rows       # (M, Tk): bool (KEEP_MASK) or the scores' type (ADD_MASK)
    const int64_t *row_of       # (rows,): the mask row of each row of x
    bint stream                 # the backward's operands exceed the cache: store past it
    bint prefetch               # the forward's operands exceed it: prefetch the next row


cdef void masked_softmax_row(const real *x, real *y, Py_ssize_t visible, Py_ssize_t n,
                             real scale, AttentionMask kind, const void *mask) noexcept nogil:
    """y[0:visible] = softmax(s) over the visible keys, s = scale * x masked by `mask`'s row;
    y[visible:n] = 0, and all of y = 0 when every s is -inf. A NaN (or +inf) among the visible
    s makes the whole row NaN, hidden keys included, as softmax of s with -inf there does.
    A short causal row (n <= ATTENTION_SHORT_ROW, no mask) goes through whole SIMD vectors (see
    cyb_visible_max). y may be x."""
    cdef const real *s = x
    cdef const real *add = <const real *>mask
    cdef const char *keep = <const char *>mask
    cdef real m = -INFINITY, hidden = -INFINITY
    cdef double total = 0.0
    cdef Py_ssize_t j
    if kind == NO_MASK and 0 < visible < n <= ATTENTION_SHORT_ROW:
        attention_short_causal_row(x, y, visible, n, scale)
        return
    if kind == KEEP_MASK:
        for j in range(visible):
            y[j] = scale * x[j] if keep[j] else hidden
        s = y
    elif kind == ADD_MASK:
        for j in range(visible):
            y[j] = scale * x[j] + add[j]
        s = y
    elif scale != 1:
        for j in range(visible):
            y[j] = scale * x[j]
        s = y
    if visible > 0:
        m = span_max(s, visible)
    # every key hidden: m = -inf, and no NaN among them (a sum of -infs is -inf, not NaN)
    if m == -INFINITY and (visible == 0 or not isnan(span_sum(s, visible))):
        visible = 0
    else:
        total = span_sum_exp(s, m, y, False, visible)
        for j in range(visible):
            y[j] = y[j] * <real>(1.0 / total)
    if isnan(total):
        for j in range(visible, n):
            y[j] = <real>total
    else:
        memset(y + visible, 0, (n - visible) * sizeof(real))


cdef void attention_short_causal_row(const real *x, real *y, Py_ssize_t visible,
                                     Py_ssize_t n, real scale) noexcept nogil:
    """masked_softmax_row of a row without a mask whose first 0 < visible < n keys are
    visible (n <= ATTENTION_SHORT_ROW), in loops over all n keys: whole SIMD vectors, where loops
    over the visible keys would end in scalar remainders (three quarters of the work of a
    (..., 16, 16) causal softmax). The hidden keys are set by selects (x is not used there):
    to -inf for the max m, then to m - 80 (less when m is large), whose exponential of at
    most 1.8e-35 adds nothing to a sum of at least 1 (exp(-inf) would take the exponential's
    slow subnormal path), and their results are overwritten with zeros."""
    cdef const real *hides
    cdef real m, scaled, hidden = -INFINITY
    cdef double total
    cdef Py_ssize_t j
    if real is float:
        hides = ATTENTION_HIDES_F32 + ATTENTION_SHORT_ROW - visible
    else:
        hides = ATTENTION_HIDES_F64 + ATTENTION_SHORT_ROW - visible
    for j in range(n):
        scaled = scale * x[j]
        y[j] = hidden if hides[j] > 0 else scaled
    m = span_max(y, n)
    if m == -INFINITY and not isnan(span_sum(y, visible)):     # every key hidden: zeros
        memset(y, 0, n * sizeof(real))
        return
    hidden = m - (80 + fabs(m) / 1024)    # (80 alone would be lost in a large m's rounding)
    for j in range(n):
        scaled = y[j]
        y[j] = hidden if hides[j] > 0 else scaled
    total = span_sum_exp(y, m, y, False, n)
    for j in range(n):
        y[j] = y[j] * <real>(1.0 / total)
    if not isnan(total):        # (a NaN or +inf among the visible keys: NaN everywhere)
        memset(y + visible, 0, (n - visible) * sizeof(real))


cdef inline Py_ssize_t attention_visible_keys(Attention a, Py_ssize_t r) noexcept nogil:
    """How many of row r's first keys the causal rule leaves visible (all without it)."""
    if not a.causal:
        return a.Tk
    return min(a.Tk, max(<Py_ssize_t>0, r % a.Tq + a.Tk - a.Tq + 1))


cdef void attention_block(Attention a, const real *x, const real *dy, real *out, real scale,
                          Py_ssize_t block) noexcept nogil:
    """Rows of block `block`: the forward (dy NULL) or the backward (x is then y). As in
    softmax_rows_chunk, only the forward's rows from memory prefetch (the next row's visible
    keys): (1, 12, 1024, 1024) scores 1.03-1.11x faster with it on 1 and 2 threads, (1, 12,
    256, 256) ones, from the caches, 0.97-0.99x (EPYC Zen 3, 21 interleaved rounds)."""
    cdef Py_ssize_t r, at, first = block * a.block_rows
    cdef Py_ssize_t last = min(a.rows, first + a.block_rows)
    cdef const void *mask = NULL
    cdef Py_ssize_t mask_item = sizeof(real) if a.mask_kind == ADD_MASK else 1
    for r in range(first, last):
        at = r * a.Tk
        if r + 1 < last and a.prefetch:
            prefetch_span(x + at + a.Tk, attention_visible_keys(a, r + 1))
        if dy != NULL:
            softmax_backward_row(dy + at, x + at, out + at, a.Tk, scale, a.stream)
        else:
            if a.mask_kind != NO_MASK:
                mask = <const char *>a.mask_rows + a.row_of[r] * a.Tk * mask_item
            masked_softmax_row(x + at, out + at, attention_visible_keys(a, r), a.Tk, scale,
                               a.mask_kind, mask)
    if a.stream:
        cyb_stream_fence()


cdef void attention_rows(Attention a, const real *x, const real *dy, real *out, real scale,
                         int threads) noexcept nogil:
    cdef Py_ssize_t b, blocks = (a.rows + a.block_rows - 1) // a.block_rows
    if threads == 1:
        for b in range(blocks):
            attention_block(a, x, dy, out, scale, b)
        return
    for b in prange(blocks, num_threads=threads, schedule='static', chunksize=1):
        attention_block(a, x, dy, out, scale, b)
    team_finished()


cdef object attention_run(Attention a, cnp.ndarray x, object dy, cnp.ndarray out,
                          double scale, int num_threads):
    cdef const void *x_data
    cdef const void *dy_data
    cdef void *out_data
    cdef int typenum = float_data(x, dy, out, &x_data, &dy_data, &out_data)
    cdef int threads = team_size(cnp.PyArray_SIZE(x), a.rows, num_threads)
    cdef bint from_memory = beyond_cache(x, x if dy is None else <cnp.ndarray>dy, out)
    a.stream = from_memory and dy is not None
    a.prefetch = from_memory and dy is None
    a.block_rows = max(1, min(<Py_ssize_t>ATTENTION_BLOCK_ROWS, a.rows // (4 * threads)))
    threads = <int>min(<Py_ssize_t>threads, (a.rows + a.block_rows - 1) // a.block_rows)
    with nogil:
        if typenum == cnp.NPY_FLOAT:
            attention_rows(a, <const float *>x_data, <const float *>dy_data, <float *>out_data,
                           <float>scale, threads)
        else:
            attention_rows(a, <const double *>x_data, <const double *>dy_data,
                           <double *>out_data, scale, threads)


cdef Attention attention_rows_of(cnp.ndarray x, bint causal) except *:
    """x as rows of Tk keys, Tq rows per score matrix."""
    cdef Attention a
    cdef int ndim = cnp.PyArray_NDIM(x)
    if ndim < 1 or causal and ndim < 2:
        raise ValueError("cyburn kernel: scores must have a key axis (and a query axis if causal)")
    a.Tk = cnp.PyArray_DIM(x, ndim - 1)
    a.Tq = cnp.PyArray_DIM(x, ndim - 2) if ndim >= 2 else 1
    a.rows = cnp.PyArray_SIZE(x) // a.Tk if a.Tk else 0
    a.causal = causal
    a.mask_kind = NO_MASK
    a.mask_rows = NULL
    a.row_of = NULL
    return a


cdef bint attention_indices_below(const int64_t *index, Py_ssize_t n,
                                  Py_ssize_t bound) noexcept nogil:
    """0 <= index[i] < bound for every i < n."""
    cdef Py_ssize_t i
    for i in range(n):
        if not 0 <= index[i] < bound:
            return False
    return True


# ---- Python entry points ----------------------------------------------------------------------

def masked_softmax_forward(cnp.ndarray x not None, cnp.ndarray y not None, double scale,
                           bint causal, object mask_rows, object row_of, int num_threads):
    """y = masked softmax of scale * x over its last axis (y may be x), for C-contiguous x and
    y of one float dtype and shape (..., Tq, Tk). mask_rows: None, or an (M, Tk) C-contiguous
    bool array (keep) or x-typed array (add); row_of: (rows,) int64 indices into it."""
    cdef Attention a = attention_rows_of(x, causal)
    cdef cnp.ndarray mask, index
    cdef Py_ssize_t M
    if mask_rows is not None:
        mask = mask_rows
        index = row_of
        if cnp.PyArray_NDIM(mask) != 2 or cnp.PyArray_DIM(mask, 1) != a.Tk:
            raise ValueError("cyburn kernel: mask rows must be (M, Tk)")
        M = cnp.PyArray_DIM(mask, 0)
        if cnp.PyArray_TYPE(mask) == cnp.NPY_BOOL:
            a.mask_kind = KEEP_MASK
            a.mask_rows = data_of(mask, cnp.NPY_BOOL, M * a.Tk, False)
        else:
            a.mask_kind = ADD_MASK
            a.mask_rows = data_of(mask, float_type(x), M * a.Tk, False)
        a.row_of = <const int64_t *>data_of(index, cnp.NPY_INT64, a.rows, False)
        if not attention_indices_below(a.row_of, a.rows, M):
            raise ValueError("cyburn kernel: mask row index out of range")
    attention_run(a, x, None, y, scale, num_threads)


def masked_softmax_backward(cnp.ndarray dy not None, cnp.ndarray y not None,
                            cnp.ndarray dx not None, double scale, int num_threads):
    """dx = scale * y * (dy - sum(dy * y)) over the last axis (dx may be dy), for C-contiguous
    arrays of one shape and float dtype."""
    attention_run(attention_rows_of(y, False), y, dy, dx, scale, num_threads)
