# The body of cyburn's kernel module. setup.py compiles it once per instruction-set level
# (cyburn._kernels_baseline, _kernels_avx2, _kernels_avx512, or _kernels_default off x86-64);
# cyburn._dispatch imports the best one the CPU runs.

cimport numpy as cnp
from cpython.ref cimport Py_INCREF
from cython.parallel cimport prange
from libc.stdlib cimport calloc, free, malloc

cnp.import_array()

cdef enum:
    MAX_TEAM = 1024                 # threads a kernel starts at most, whatever it is asked

cdef extern from "cyburn_cores.h" nogil:
    double cyb_monotonic_seconds()
    int cyb_running_threads()
    int cyb_online_cpus()


# The entry points take whole C-contiguous ndarrays and read their data pointers through the
# NumPy C-API (data_of, float_data); the kernels below them are fused functions on pointers.
# Entry points on fused typed memoryviews were measured instead, with every entry point
# converted and the same result bits: taking a view costs 0.15-0.3 us per array and call
# (Cython makes and frees a memoryview object, NumPy describes the buffer anew for each
# request), and Cython's choice between the float and double versions 0.25 us more unless
# they are bound at import. (4, 64) float32 calls took 1.6-2.7x as long (softmax with out=
# 0.78 -> 1.45 us, relu 0.67 -> 1.41 us, layer_norm 4.2 -> 5.7 us on an EPYC Zen 3): past
# the 1.5 us budget of a one-array call.

# The memory-system choices, derived from the caches by cyburn._machine at import (the rules
# are there and in the README, "Memory system"); until then nothing streams and the L1d is
# taken as 32 KiB.
cdef Py_ssize_t stream_min_bytes = 0        # operands beyond this: non-temporal stores
cdef Py_ssize_t l1d_bytes = 32768           # one core's L1 data cache: when to start a team


def configure_memory(Py_ssize_t last_level_cache_bytes, Py_ssize_t l1d_cache_bytes):
    """Take the sizes of the last-level cache and of one core's L1 data cache."""
    global stream_min_bytes, l1d_bytes
    if last_level_cache_bytes <= 0 or l1d_cache_bytes <= 0:
        raise ValueError("cyburn kernel: cache sizes must be positive")
    stream_min_bytes = last_level_cache_bytes
    l1d_bytes = l1d_cache_bytes


def memory_rules(int num_threads):
    """What the kernels decide from the caches: {'stream_min_bytes': operands beyond which
    outputs are stored non-temporally, 'parallel_min_elements': the smallest input that
    `num_threads` threads share}."""
    return {"stream_min_bytes": stream_min_bytes,
            "parallel_min_elements": parallel_min_elements(num_threads)}


cdef inline Py_ssize_t parallel_min_elements(int num_threads) noexcept:
    """A team starts when the input fills each thread's L1d with float32 (4-byte) elements:
    below that one core finishes sooner than a team wakes up (EPYC Zen 3, 32 KiB L1d, 2
    threads: softmax, gelu and layer_norm of 16384 elements 1.2-1.4x faster on the team,
    of 8192 0.86-1.10x)."""
    return num_threads * l1d_bytes // 4


# ---- the fast lane of a call -------------------------------------------------------------------

cdef inline bint kernel_ready(object a, int typenum):
    """a is an ndarray the kernels take as it is: native float32/float64 of type `typenum`
    (-1: either), aligned, C-contiguous and not empty."""
    if type(a) is not cnp.ndarray:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int t = cnp.PyArray_TYPE(arr)
    return ((t == typenum if typenum >= 0 else t == cnp.NPY_FLOAT or t == cnp.NPY_DOUBLE)
            and cnp.PyArray_ISNOTSWAPPED(arr) and cnp.PyArray_IS_C_CONTIGUOUS(arr)
            and cnp.PyArray_ISALIGNED(arr) and cnp.PyArray_SIZE(arr) > 0)


cdef inline bint overlap(cnp.ndarray a, cnp.ndarray b) noexcept:
    """The memory of two C-contiguous arrays intersects."""
    cdef char *a0 = <char *>cnp.PyArray_DATA(a)
    cdef char *b0 = <char *>cnp.PyArray_DATA(b)
    return a0 < b0 + cnp.PyArray_NBYTES(b) and b0 < a0 + cnp.PyArray_NBYTES(a)


def ready_call(x, second, out, axis, bint out_may_be_input):
    """The fast lane of the usual call: x (and `second`, when not None) ndarrays the kernels
    take as they are (kernel_ready, one shape and dtype), `axis` an int within x's dimensions,
    and `out` None or an array the kernel can write directly: an aligned, C-contiguous,
    writeable ndarray of x's shape and dtype that shares no memory with the inputs, or, when
    `out_may_be_input`, is the very same elements as one. Returns (target, axis): the array to
    write (out, or a new one) and the axis counted from 0; None for every other call, which
    the general path of cyburn._arrays then handles (conversions, copies, errors) with the
    same results."""
    if not kernel_ready(x, -1) or type(axis) is not int:
        return None
    cdef cnp.ndarray a = <cnp.ndarray>x, b, target
    cdef int typenum = cnp.PyArray_TYPE(a), ndim = cnp.PyArray_NDIM(a)
    if not -ndim <= axis < ndim:        # (compared as Python ints: any size)
        return None
    cdef Py_ssize_t k = axis
    if k < 0:
        k += ndim
    if second is not None:
        if not kernel_ready(second, typenum) or not cnp.PyArray_SAMESHAPE(a, <cnp.ndarray>second):
            return None
        b = <cnp.ndarray>second
    if out is None:
        return aligned_empty(ndim, cnp.PyArray_DIMS(a), typenum, cnp.PyArray_DATA(a)), k
    if (not kernel_ready(out, typenum) or not cnp.PyArray_SAMESHAPE(a, <cnp.ndarray>out)
            or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)):
        return None
    target = <cnp.ndarray>out
    for inp in (a, b) if second is not None else (a,):
        if overlap(target, <cnp.ndarray>inp) and not (
                out_may_be_input and cnp.PyArray_DATA(target) == cnp.PyArray_DATA(<cnp.ndarray>inp)):
            return None
    return target, k


# ---- outputs on cache-line boundaries ------------------------------------------------------------
# NumPy's data start where malloc puts them: 16 bytes past a 64-byte boundary for large arrays,
# so every other 32-byte store (every 64-byte one) of a vector loop straddles two cache lines.
# The outputs cyburn allocates start on a boundary instead. Below a page the straddling stores
# are a handful, and the extra allocation would be a share of a small call: NumPy's own then.
#
# Where in its 4 KiB page an output starts matters too. A CPU compares a load's address with
# the older stores still in flight by its low 12 bits first, and a load whose bits match a
# store's waits for it ("4K aliasing"). A kernel reading x[i] while it writes y[i] is safe
# when y's offset in its page is x's or a little below (a load then matches only stores that
# come after it), and slowed when it is a little above: with y 48 bytes past x in the page (a
# new NumPy array, 16 bytes past a page, and an output on the next line boundary), the erf
# GELU of (8192, 768) float32 took 4.1 ms against 2.1 ms (EPYC Zen 3, 2 threads). So an output
# starts at the offset in its page of the array it is computed from (`near`), rounded down to
# a line: the page's first byte when there is none.

cdef extern from "numpy/arrayobject.h":
    object PyArray_NewFromDescr(void *subtype, void *descr, int nd, cnp.npy_intp *dims,
                                cnp.npy_intp *strides, void *data, int flags, void *obj)

cdef enum:
    LINE_BYTES = 64
    PAGE_BYTES = 4096
    ALIGNED_MIN_BYTES = 4096


cdef cnp.ndarray aligned_empty(int ndim, cnp.npy_intp *dims, int typenum, const void *near):
    """An uninitialised C-contiguous array of `typenum` whose data start on a 64-byte
    boundary at near's offset in a page rounded down to a line (near NULL: a page boundary);
    from ALIGNED_MIN_BYTES; smaller ones as NumPy allocates them."""
    cdef cnp.dtype descr = cnp.PyArray_DescrFromType(typenum)
    cdef cnp.npy_intp nbytes = descr.itemsize, padded
    cdef int d
    for d in range(ndim):
        nbytes *= dims[d]
    if nbytes < ALIGNED_MIN_BYTES:
        return cnp.PyArray_EMPTY(ndim, dims, typenum, 0)
    padded = nbytes + PAGE_BYTES - 1
    cdef object base
    cdef cnp.ndarray raw
    if nbytes >= REUSE_MIN_BYTES and idle_max_bytes > 0:
        padded = (padded + REUSE_GRAIN - 1) // REUSE_GRAIN * REUSE_GRAIN
        raw = reused_block(padded)
        base = ReusableMemory(raw)
    else:
        raw = cnp.PyArray_EMPTY(1, &padded, cnp.NPY_UINT8, 0)
        base = raw
    cdef char *data = <char *>cnp.PyArray_DATA(raw)
    cdef size_t offset = <size_t>near & (PAGE_BYTES - LINE_BYTES)
    data += (offset - <size_t>data) & (PAGE_BYTES - 1)
    Py_INCREF(descr)                    # (PyArray_NewFromDescr steals a reference to it)
    cdef cnp.ndarray arr = PyArray_NewFromDescr(<void *>cnp.ndarray, <void *>descr, ndim, dims,
                                                NULL, data, cnp.NPY_ARRAY_CARRAY, NULL)
    cnp.set_array_base(arr, base)
    return arr


# ---- outputs reuse freed memory -----------------------------------------------------------------
# glibc's malloc maps a block of its mmap threshold (128 KiB at first, raised by the blocks freed,
# to 32 MiB at most) or more from the OS and unmaps it when freed, and it hands the free top of
# its heap back to the OS; the OS then zeroes each page again at its first touch, and a fault
# costs about 2.6 us in a KVM guest. A softmax of (12288, 1024) float32 into a new 48 MiB output
# took 7.6 ms, into an `out=` 4.8 ms; in a GPT-2 training step written in NumPy (B=4, T=64),
# every layer_norm and gelu output came in fresh pages, a layer_norm of (256, 768) with a
# residual taking 1 ms instead of 66 us (EPYC Zen 3, 2 threads). So an output of
# REUSE_MIN_BYTES or more is made in a block (a uint8 ndarray, its size rounded up to
# REUSE_GRAIN) that is kept idle when the output and every view of it are gone, and the next
# output of the same rounded size takes the newest such block. The idle blocks total at most
# idle_max_bytes (cyburn._machine.idle_memory_bytes: a share of the physical memory, or
# CYBURN_IDLE_MIB); beyond it, the blocks of the size idle longest are freed first.

cdef Py_ssize_t REUSE_MIN_BYTES = 128 << 10
cdef Py_ssize_t REUSE_GRAIN = 64 << 10
cdef Py_ssize_t idle_max_bytes = 0          # 0: no block is kept
cdef Py_ssize_t idle_bytes = 0, idle_count = 0
cdef dict idle_blocks = {}                  # rounded size -> its idle blocks, the newest last


cdef class ReusableMemory:
    """The block under one output: kept idle, for the next output of its size, when the
    output and its views are gone."""
    cdef cnp.ndarray block

    def __cinit__(self, cnp.ndarray block not None):
        self.block = block

    def __dealloc__(self):
        keep_idle(self.block)


cdef void keep_idle(cnp.ndarray block) noexcept:
    """Add `block` to the idle ones (unless it alone exceeds idle_max_bytes)."""
    global idle_bytes, idle_count
    cdef Py_ssize_t size = cnp.PyArray_NBYTES(block)
    if idle_blocks is None or size > idle_max_bytes:       # (None: at interpreter exit)
        return
    idle_blocks.setdefault(size, []).append(block)
    idle_bytes += size
    idle_count += 1
    free_oldest_idle()


cdef void free_oldest_idle() noexcept:
    """Free idle blocks, of the size idle longest first, while they exceed idle_max_bytes."""
    global idle_bytes, idle_count
    cdef Py_ssize_t size
    cdef list same
    while idle_bytes > idle_max_bytes:
        size = next(iter(idle_blocks))
        same = idle_blocks[size]
        del same[0]
        if not same:
            del idle_blocks[size]
        idle_bytes -= size
        idle_count -= 1


cdef cnp.ndarray reused_block(cnp.npy_intp size):
    """The newest idle block of `size` bytes, taken out of the idle ones, else a new one."""
    global idle_bytes, idle_count
    cdef list same = idle_blocks.get(size)
    if same is None:
        return cnp.PyArray_EMPTY(1, &size, cnp.NPY_UINT8, 0)
    block = same.pop()
    if not same:
        del idle_blocks[size]
    idle_bytes -= size
    idle_count -= 1
    return block


def configure_reuse(Py_ssize_t max_idle_bytes):
    """Keep at most `max_idle_bytes` of freed outputs' memory for reuse (0: none)."""
    global idle_max_bytes
    if max_idle_bytes < 0:
        raise ValueError("cyburn kernel: max_idle_bytes must be >= 0")
    idle_max_bytes = max_idle_bytes
    free_oldest_idle()


def reuse_state():
    """{'min_bytes': outputs from this size reuse memory, 'max_idle_bytes', 'idle_bytes',
    'idle_blocks': what is kept now}."""
    return {"min_bytes": REUSE_MIN_BYTES, "max_idle_bytes": idle_max_bytes,
            "idle_bytes": idle_bytes, "idle_blocks": idle_count}


def empty(shape, dtype, near=None):
    """np.empty(shape, dtype) for a float32 or float64 output, its data on a 64-byte
    boundary from ALIGNED_MIN_BYTES, at the offset in a page of the array `near` (the input it
    is computed from; None: a page boundary), rounded down to a line (see aligned_empty)."""
    cdef cnp.dtype descr = cnp.dtype(dtype)
    cdef tuple dims_tuple = tuple(shape) if not isinstance(shape, int) else (shape,)
    cdef int ndim = len(dims_tuple), d
    cdef const void *near_data = NULL
    if ndim > cnp.NPY_MAXDIMS:
        raise ValueError("cyburn kernel: too many dimensions")
    cdef cnp.npy_intp dims[64]
    for d in range(ndim):
        dims[d] = dims_tuple[d]
        if dims[d] < 0:
            raise ValueError("cyburn kernel: negative dimension")
    if near is not None:
        near_data = cnp.PyArray_DATA(<cnp.ndarray?>near)
    return aligned_empty(ndim, dims, descr.type_num, near_data)


# ---- what every kernel module shares ------------------------------------------------------------

cdef void *data_of(object a, int typenum, Py_ssize_t size, bint write) except NULL:
    """The data of `a`, after checking that it is an aligned, C-contiguous, native ndarray of
    `size` elements of type `typenum` (and writeable when `write`). cyburn's Python layer
    guarantees this; the checks keep misuse from crashing."""
    if not isinstance(a, cnp.ndarray):
        raise TypeError("cyburn kernel: expected an ndarray")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if (cnp.PyArray_TYPE(arr) != typenum or cnp.PyArray_SIZE(arr) != size or size == 0
            or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISBEHAVED_RO(arr)
            or write and not cnp.PyArray_ISWRITEABLE(arr)):
        raise ValueError("cyburn kernel: operand of the wrong type, size or layout")
    return cnp.PyArray_DATA(arr)


cdef int float_data(cnp.ndarray x, object second, cnp.ndarray out, const void **x_data,
                    const void **second_data, void **out_data) except -1:
    """The data of x, of `second` (NULL when it is None) and of out, after checking that all
    are like x (see data_of: one float type, x's size; out writeable); returns the type."""
    cdef int typenum = float_type(x)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(x)
    x_data[0] = data_of(x, typenum, size, False)
    second_data[0] = NULL if second is None else data_of(second, typenum, size, False)
    out_data[0] = data_of(out, typenum, size, True)
    return typenum


cdef int four_operands(cnp.ndarray param, cnp.ndarray grad, cnp.ndarray m, cnp.ndarray v,
                       void **data) except -1:
    """The data pointers of the four arrays (grad read-only, the others written), after
    checking that they are C-contiguous, aligned and of one size and float type; returns it."""
    cdef int typenum = float_type(param)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(param)
    data[0] = data_of(param, typenum, size, True)
    data[1] = <void *>data_of(grad, typenum, size, False)
    data[2] = data_of(m, typenum, size, True)
    data[3] = data_of(v, typenum, size, True)
    return typenum


cdef int float_type(cnp.ndarray x) except -1:
    """x's type number, which must be float32 or float64."""
    cdef int typenum = cnp.PyArray_TYPE(x)
    if typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE:
        raise ValueError("cyburn kernel: operands must be float32 or float64")
    return typenum


cdef inline bint beyond_cache(cnp.ndarray a, cnp.ndarray b, cnp.ndarray out) noexcept:
    """Whether the bytes a kernel reads and writes -- its inputs (b may be a) and its output --
    exceed stream_min_bytes (the last-level cache, at most 32 MiB per usable CPU:
    cyburn._machine): its output is then stored past the cache."""
    return stream_min_bytes > 0 and (cnp.PyArray_NBYTES(out) + cnp.PyArray_NBYTES(a) * (
        1 if b is a else 2)) > stream_min_bytes


cdef int team_size(Py_ssize_t elements, Py_ssize_t items, int num_threads) except -1:
    """Threads for `items` independent pieces of work over `elements` elements: one below
    parallel_min_elements, never more than the pieces, MAX_TEAM or the CPUs that no other
    thread occupies (free_cpus)."""
    if num_threads < 1:
        raise ValueError("cyburn kernel: num_threads must be >= 1")
    if elements < parallel_min_elements(num_threads):
        return 1
    cdef int threads = <int>min(<Py_ssize_t>num_threads, max(items, 1), <Py_ssize_t>MAX_TEAM)
    return free_cpus(threads) if threads > 1 else 1


# ---- sharing the CPUs with other threads ------------------------------------------------------
# A team is only as fast as its slowest thread. Right after a BLAS product, OpenBLAS's idle
# threads spin for about a tenth of a second (other runtimes' for milliseconds), and a team
# thread that lands on the core of one of them gets a fraction of it: on a 2-core EPYC, a
# layer norm of (8192, 768) right after a product took 28.9 ms on a team of two, 13.1 ms on
# one thread, 9.8 ms on two after a quiet pause. So a team takes only the CPUs that no other
# thread is running on (Linux's count in /proc/loadavg, cyburn_cores.h) -- except while this
# module's own idle threads may still be spinning after its last team (then they are the
# threads counted, and they join at once): for own_spin_seconds after a team finished.

cdef double own_spin_seconds = 0.0         # how long this module's idle threads spin
cdef double team_finished_at = -1e300      # when this module's last team finished


def configure_waiting(double spin_seconds):
    """Take how long, at most, the runtime's idle threads spin after a team (inf: always)."""
    global own_spin_seconds
    if not spin_seconds >= 0:
        raise ValueError("cyburn kernel: spin_seconds must be >= 0")
    own_spin_seconds = spin_seconds


def team_threads(Py_ssize_t elements, int num_threads):
    """The threads a kernel over `elements` independent elements would start now."""
    return team_size(elements, elements, num_threads)


cdef inline void team_finished() noexcept nogil:
    """Note the end of a team: its threads now spin for up to own_spin_seconds."""
    global team_finished_at
    team_finished_at = cyb_monotonic_seconds()


cdef int free_cpus(int threads) noexcept nogil:
    """`threads`, or fewer: the online CPUs less those running another thread than the
    caller (at least 1); `threads` when the system does not say, or while this module's own
    threads may be the ones spinning."""
    if cyb_monotonic_seconds() - team_finished_at < own_spin_seconds:
        return threads
    cdef int running = cyb_running_threads(), cpus = cyb_online_cpus()
    if running < 1 or cpus < 1:
        return threads
    return max(1, min(threads, cpus - (running - 1)))


# Every threaded kernel has the same scaffold: on one thread it calls its chunk directly,
# else a prange over `threads` chunks calls it with chunk_start's bounds (a team costs about
# 0.4 us even for one thread). Cython's prange(..., use_threads_if=threads > 1) would say it
# once, but still starts a team: 1.38 us per one-thread call of a 256-element loop against
# 0.38 us. One helper that keeps the serial branch must take the chunk as a function pointer
# and its arguments as a void * record (no measurable cost: 0.38 us too), which brings back
# the casts the fused types avoid; the scaffold stays written out.

cdef inline Py_ssize_t chunk_start(Py_ssize_t items, Py_ssize_t chunk, int chunks) noexcept nogil:
    """The first of `items` that chunk `chunk` of `chunks` equal contiguous chunks takes."""
    return items * chunk // chunks



include "vmath.pxi"
include "softmax.pxi"
include "attention.pxi"
include "row_norm.pxi"
include "channel_norm.pxi"
include "batch_norm_columns.pxi"
include "cross_entropy.pxi"
include "activations.pxi"
include "optim.pxi"
include "probes.pxi"
