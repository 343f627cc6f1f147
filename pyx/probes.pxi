# Memory probes: the ceilings that cyburn.bench measures beside the kernels. Each moves the
# bytes of one memory pattern of the kernels with as little arithmetic as a vector loop
# needs, and splits its arrays between threads as the element-wise kernels do (team_size,
# contiguous runs of whole ELEMENT_BLOCKs), so that it runs on the same team:
#
#   read_probe          s = a[0] + a[1] + ...  (32-bit words)  read one array (a reduction)
#   scale_probe         out = s a                               read one, write one (a copy)
#   triad_probe         out = a + s b                           read two, write one
#   read4_write3_probe  a += b, c += b, d += b^2                read four, write three (AdamW)
#
# The read probe adds integer words, modulo 2^32: an integer sum vectorizes under strict IEEE
# rules, where a float sum would be one scalar chain and measure the adder, not the memory.
# scale and triad with `stream` compute into a span on the stack and store it with
# non-temporal stores (cyb_stream_copy), as the kernels' streamed outputs do, and prefetch
# their inputs a page ahead as they go, as the streaming elementwise kernels do. Every probe
# returns a value or writes an array that depends on all it reads: none can be optimized away.

cdef enum:
    PROBE_SPAN = 2048       # elements per streamed store: 8 KiB of float32, inside L1
    PROBE_PREFETCH = 256    # elements computed per prefetch of what lies a page ahead of them


cdef unsigned int probe_read_span(const unsigned int *a, Py_ssize_t n) noexcept nogil:
    """The sum of n words, modulo 2^32 (this loop is the one that must vectorize)."""
    cdef unsigned int s = 0
    cdef Py_ssize_t i
    for i in range(n):
        s += a[i]
    return s


cdef unsigned int probe_read_words(const unsigned int *a, Py_ssize_t n,
                                   int threads) noexcept nogil:
    """probe_read_span over n words, threads taking contiguous runs of whole blocks."""
    cdef Py_ssize_t blocks = (n + ELEMENT_BLOCK - 1) // ELEMENT_BLOCK, first, last
    cdef unsigned int total = 0
    cdef int c
    for c in prange(threads, num_threads=threads, schedule='static'):
        first = min(n, chunk_start(blocks, c, threads) * ELEMENT_BLOCK)
        last = min(n, chunk_start(blocks, c + 1, threads) * ELEMENT_BLOCK)
        total += probe_read_span(a + first, last - first)
    team_finished()
    return total


cdef void probe_scale_or_triad_span(const real *a, const real *b, real *out, Py_ssize_t n,
                                    real s) noexcept nogil:
    """out = s a (b NULL) or out = a + s b, over n elements: one vector loop each."""
    cdef Py_ssize_t i
    if b == NULL:
        for i in range(n):
            out[i] = s * a[i]
    else:
        for i in range(n):
            out[i] = a[i] + s * b[i]


cdef void probe_scale_or_triad_chunk(const real *a, const real *b, real *out, Py_ssize_t n,
                                     real s, bint stream) noexcept nogil:
    """probe_scale_or_triad_span over n elements: straight into out, or with `stream` through a
    span on the stack stored non-temporally, its inputs prefetched a page ahead
    (cyb_prefetch_ahead) a PROBE_PREFETCH block at a time."""
    cdef real span[PROBE_SPAN]
    cdef Py_ssize_t start = 0, w, at, k
    if not stream:
        probe_scale_or_triad_span(a, b, out, n, s)
        return
    while start < n:
        w = min(n - start, <Py_ssize_t>PROBE_SPAN)
        at = 0
        while at < w:
            k = min(w - at, <Py_ssize_t>PROBE_PREFETCH)
            cyb_prefetch_ahead(a + start + at, k * sizeof(real))
            if b != NULL:
                cyb_prefetch_ahead(b + start + at, k * sizeof(real))
            probe_scale_or_triad_span(a + start + at, NULL if b == NULL else b + start + at,
                                      span + at, k, s)
            at += k
        cyb_stream_copy(out + start, span, w * sizeof(real))
        start += w
    cyb_stream_fence()


cdef void probe_scale_or_triad(const real *a, const real *b, real *out, Py_ssize_t n, real s,
                               bint stream, int threads) noexcept nogil:
    """probe_scale_or_triad_chunk over n elements, threads taking contiguous runs of whole
    blocks."""
    cdef Py_ssize_t blocks = (n + ELEMENT_BLOCK - 1) // ELEMENT_BLOCK, first, last
    cdef int c
    for c in prange(threads, num_threads=threads, schedule='static'):
        first = min(n, chunk_start(blocks, c, threads) * ELEMENT_BLOCK)
        last = min(n, chunk_start(blocks, c + 1, threads) * ELEMENT_BLOCK)
        probe_scale_or_triad_chunk(a + first, NULL if b == NULL else b + first, out + first,
                                   last - first, s, stream)
    team_finished()


cdef void probe_read4_write3_span(real *a, const real *b, real *c, real *d,
                                  Py_ssize_t n) noexcept nogil:
    """a += b, c += b, d += b^2: the memory traffic of adamw_span (read four arrays, write
    three) with next to no arithmetic (d, like exp_avg_sq, stays >= 0)."""
    cdef Py_ssize_t i
    for i in range(n):
        a[i] = a[i] + b[i]
        c[i] = c[i] + b[i]
        d[i] = d[i] + b[i] * b[i]


cdef void probe_read4_write3(real *a, const real *b, real *c, real *d, Py_ssize_t n,
                             int threads) noexcept nogil:
    cdef Py_ssize_t blocks = (n + ELEMENT_BLOCK - 1) // ELEMENT_BLOCK, first, last
    cdef int t
    for t in prange(threads, num_threads=threads, schedule='static'):
        first = min(n, chunk_start(blocks, t, threads) * ELEMENT_BLOCK)
        last = min(n, chunk_start(blocks, t + 1, threads) * ELEMENT_BLOCK)
        probe_read4_write3_span(a + first, b + first, c + first, d + first, last - first)
    team_finished()


# ---- Python entry points ----------------------------------------------------------------------

def read_probe(cnp.ndarray a not None, int num_threads):
    """The sum of the words of a C-contiguous uint32 array, modulo 2^32 (view a float array
    as uint32 to read its bytes): the benchmark's ceiling for kernels that read one array."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    cdef const unsigned int *words = <const unsigned int *>data_of(a, cnp.NPY_UINT32, n, False)
    cdef int threads = team_size(n, (n + ELEMENT_BLOCK - 1) // ELEMENT_BLOCK, num_threads)
    cdef unsigned int total
    with nogil:
        total = probe_read_words(words, n, threads)
    return total


def scale_probe(cnp.ndarray a not None, cnp.ndarray out not None, double s, bint stream,
                int num_threads):
    """out = s a, for C-contiguous arrays of one size and float dtype that do not overlap
    (non-temporal stores with `stream`): the ceiling for kernels that read one array and
    write one."""
    probe_run_scale_or_triad(a, None, out, s, stream, num_threads)


def triad_probe(cnp.ndarray a not None, cnp.ndarray b not None, cnp.ndarray out not None,
                double s, bint stream, int num_threads):
    """out = a + s b, as scale_probe: the ceiling for kernels that read two arrays and write
    one."""
    probe_run_scale_or_triad(a, b, out, s, stream, num_threads)


cdef object probe_run_scale_or_triad(cnp.ndarray a, object b, cnp.ndarray out, double s,
                                     bint stream, int num_threads):
    cdef const void *a_data
    cdef const void *b_data
    cdef void *out_data
    cdef int typenum = float_data(a, b, out, &a_data, &b_data, &out_data)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    cdef int threads = team_size(n, (n + ELEMENT_BLOCK - 1) // ELEMENT_BLOCK, num_threads)
    with nogil:
        if typenum == cnp.NPY_FLOAT:
            probe_scale_or_triad(<const float *>a_data, <const float *>b_data,
                                 <float *>out_data, n, <float>s, stream, threads)
        else:
            probe_scale_or_triad(<const double *>a_data, <const double *>b_data,
                                 <double *>out_data, n, s, stream, threads)


def read4_write3_probe(cnp.ndarray a not None, cnp.ndarray b not None, cnp.ndarray c not None,
                       cnp.ndarray d not None, int num_threads):
    """a += b, c += b, d += b^2, split between threads as adamw_step splits its arrays: the
    benchmark's ceiling for adamw_step, its memory pattern with no arithmetic to speak of."""
    cdef void *data[4]
    cdef int typenum = four_operands(a, b, c, d, data)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    cdef int threads = team_size(n, (n + ELEMENT_BLOCK - 1) // ELEMENT_BLOCK, num_threads)
    with nogil:
        if typenum == cnp.NPY_FLOAT:
            probe_read4_write3(<float *>data[0], <const float *>data[1], <float *>data[2],
                               <float *>data[3], n, threads)
        else:
            probe_read4_write3(<double *>data[0], <const double *>data[1], <double *>data[2],
                               <double *>data[3], n, threads)
