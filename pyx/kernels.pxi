# The body of cyburn's kernel module. setup.py compiles it once per instruction-set level
# (cyburn._kernels_baseline, _kernels_avx2, _kernels_avx512, or _kernels_default off x86-64);
# cyburn._dispatch imports the best one the CPU runs.

cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdlib cimport calloc, free, malloc

cnp.import_array()

cdef enum:
    PARALLEL_MIN_ELEMENTS = 32768   # below this, a thread team costs more than it saves
    STREAM_MIN_BYTES = 16777216     # outputs this large bypass the caches when stored
    MAX_TEAM = 1024                 # threads a kernel starts at most, whatever it is asked


# The entry points take whole C-contiguous ndarrays and read their data pointers through the
# NumPy C-API: acquiring typed memoryviews costs about 0.1 us per array, a tenth of the
# budget of a small call, and the kernels walk raw spans anyway.

cdef struct Operands:
    const void *a           # first input
    const void *b           # second input (== a for one-input kernels)
    void *out
    Py_ssize_t outer, n, inner   # the arrays as (outer, n, inner), reduced along n
    bint is_float           # float32, else float64
    bint stream             # the output is large: store it with non-temporal stores
    int threads


cdef Operands operands(cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, int axis,
                       int num_threads) except *:
    """Check that a, b and out are C-contiguous, aligned arrays of one shape and one native
    float dtype (out writeable), and describe them for a reduction along `axis`.
    cyburn's Python layer guarantees this; the checks keep misuse from crashing."""
    cdef int ndim = cnp.PyArray_NDIM(a), typenum, d
    cdef Operands op
    for arr in (b, out):
        if cnp.PyArray_NDIM(arr) != ndim or not cnp.PyArray_SAMESHAPE(a, arr):
            raise ValueError("cyburn kernel: operands differ in shape")
    if not 0 <= axis < ndim:
        raise ValueError("cyburn kernel: axis out of range")
    typenum = float_data(a, b, out, &op.a, &op.b, &op.out)
    op.outer = 1
    op.inner = 1
    for d in range(axis):
        op.outer *= cnp.PyArray_DIM(a, d)
    for d in range(axis + 1, ndim):
        op.inner *= cnp.PyArray_DIM(a, d)
    op.n = cnp.PyArray_DIM(a, axis)
    op.is_float = typenum == cnp.NPY_FLOAT
    op.stream = cnp.PyArray_NBYTES(out) >= STREAM_MIN_BYTES
    op.threads = team_size(cnp.PyArray_SIZE(a), op.outer * op.inner, num_threads)
    return op


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


cdef int float_type(cnp.ndarray x) except -1:
    """x's type number, which must be float32 or float64."""
    cdef int typenum = cnp.PyArray_TYPE(x)
    if typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE:
        raise ValueError("cyburn kernel: operands must be float32 or float64")
    return typenum


cdef int team_size(Py_ssize_t elements, Py_ssize_t items, int num_threads) except -1:
    """Threads for `items` independent pieces of work over `elements` elements: one below
    PARALLEL_MIN_ELEMENTS, never more than the pieces or MAX_TEAM."""
    if num_threads < 1:
        raise ValueError("cyburn kernel: num_threads must be >= 1")
    if elements < PARALLEL_MIN_ELEMENTS:
        return 1
    return <int>min(<Py_ssize_t>num_threads, max(items, 1), <Py_ssize_t>MAX_TEAM)


cdef inline Py_ssize_t chunk_start(Py_ssize_t items, Py_ssize_t chunk, int chunks) noexcept nogil:
    """The first of `items` that chunk `chunk` of `chunks` equal contiguous chunks takes."""
    return items * chunk // chunks



include "vmath.pxi"
include "softmax.pxi"
include "attention.pxi"
include "normalization.pxi"
include "cross_entropy.pxi"
include "activations.pxi"
include "optim.pxi"
include "probes.pxi"
