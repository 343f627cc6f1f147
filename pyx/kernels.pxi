# The body of cyburn's kernel module. setup.py compiles it once per instruction-set level
# (cyburn._kernels_baseline, _kernels_avx2, _kernels_avx512, or _kernels_default off x86-64);
# cyburn._dispatch imports the best one the CPU runs.

cimport numpy as cnp
from cython.parallel cimport prange

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
    cdef int ndim = cnp.PyArray_NDIM(a), typenum = cnp.PyArray_TYPE(a), d
    cdef Operands op
    for arr in (a, b, out):
        if (cnp.PyArray_NDIM(arr) != ndim or not cnp.PyArray_SAMESHAPE(a, arr)
                or cnp.PyArray_TYPE(arr) != typenum or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
                or not cnp.PyArray_ISBEHAVED_RO(arr)):      # aligned, native byte order
            raise ValueError("cyburn kernel: operands differ in shape, dtype or layout")
    if (typenum not in (cnp.NPY_FLOAT, cnp.NPY_DOUBLE) or not cnp.PyArray_ISWRITEABLE(out)
            or not 0 <= axis < ndim or num_threads < 1):
        raise ValueError("cyburn kernel: unsupported operands")
    op.a = cnp.PyArray_DATA(a)
    op.b = cnp.PyArray_DATA(b)
    op.out = cnp.PyArray_DATA(out)
    op.outer = 1
    op.inner = 1
    for d in range(axis):
        op.outer *= cnp.PyArray_DIM(a, d)
    for d in range(axis + 1, ndim):
        op.inner *= cnp.PyArray_DIM(a, d)
    op.n = cnp.PyArray_DIM(a, axis)
    if op.n == 0 or op.outer == 0 or op.inner == 0:
        raise ValueError("cyburn kernel: empty operands")
    op.is_float = typenum == cnp.NPY_FLOAT
    op.stream = cnp.PyArray_NBYTES(out) >= STREAM_MIN_BYTES
    op.threads = min(num_threads, MAX_TEAM) if cnp.PyArray_SIZE(a) >= PARALLEL_MIN_ELEMENTS else 1
    return op


include "vmath.pxi"
include "softmax.pxi"
include "normalization.pxi"
include "cross_entropy.pxi"
