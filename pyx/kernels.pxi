# The body of cyburn's kernel module. setup.py compiles it once per instruction-set level
# (cyburn._kernels_baseline, _kernels_avx2, _kernels_avx512, or _kernels_default off x86-64);
# cyburn._dispatch imports the best one the CPU runs.

cimport numpy as cnp
from cython.parallel cimport prange

cnp.import_array()

cdef enum:
    PARALLEL_MIN_ELEMENTS = 32768   # below this, a thread team costs more than it saves


cdef int check_same_layout(cnp.ndarray a, cnp.ndarray b) except -1:
    """Guard: the kernels index b exactly as a."""
    cdef int ndim = cnp.PyArray_NDIM(a)
    if (ndim not in (2, 3) or ndim != cnp.PyArray_NDIM(b)
            or cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(b)
            or cnp.PyArray_TYPE(a) not in (cnp.NPY_FLOAT, cnp.NPY_DOUBLE)
            or not cnp.PyArray_SAMESHAPE(a, b) or cnp.PyArray_DIM(a, 1) < 1):
        raise ValueError("cyburn kernel: arrays of different layouts")
    return 0


include "vmath.pxi"
include "softmax.pxi"
