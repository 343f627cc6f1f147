# cython: language_level=3
"""What the machine and the build offer, compiled for the baseline instruction set so that it
can be imported on any CPU before choosing a kernel module; and the thread count of a kernel
call (cyburn._threads' state, read in C because every call reads it)."""
from cpython.contextvars cimport PyContextVar_Get
from cpython.ref cimport PyObject, Py_XDECREF

cdef extern from *:
    """
    #if defined(_OPENMP)
    #include <omp.h>
    #define CYB_OPENMP_VERSION _OPENMP
    #define CYB_OMP_MAX_THREADS() omp_get_max_threads()
    #else
    #define CYB_OPENMP_VERSION 0
    #define CYB_OMP_MAX_THREADS() 1
    #endif

    #if defined(_OPENMP) && defined(__linux__)
    #include <dlfcn.h>
    /* the file of the omp_get_max_threads this module's calls were bound to */
    static const char *cyb_openmp_library(void) {
        Dl_info info;
        if (dladdr((void *)&omp_get_max_threads, &info) && info.dli_fname)
            return info.dli_fname;
        return "";
    }
    #else
    static const char *cyb_openmp_library(void) { return ""; }
    #endif

    #if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
    #define CYB_X86_64 1
    /* exactly the instruction sets setup.py enables for each level (and OS support) */
    static int cyb_cpu_has_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("popcnt")
            && __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2")
            && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi")
            && __builtin_cpu_supports("bmi2");
    }
    static int cyb_cpu_has_avx512(void) {
        __builtin_cpu_init();
        return cyb_cpu_has_avx2()
            && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq")
            && __builtin_cpu_supports("avx512vl");
    }
    #else
    #define CYB_X86_64 0
    static int cyb_cpu_has_avx2(void) { return 0; }
    static int cyb_cpu_has_avx512(void) { return 0; }
    #endif
    """
    int CYB_OPENMP_VERSION
    int CYB_X86_64
    int CYB_OMP_MAX_THREADS()
    const char *cyb_openmp_library()
    int cyb_cpu_has_avx2()
    int cyb_cpu_has_avx512()


def openmp_version():
    """The _OPENMP date the kernels were compiled with (e.g. 201511), or 0 without OpenMP."""
    return CYB_OPENMP_VERSION


def openmp_library():
    """The file of the OpenMP runtime this module (built like the kernel modules, and loaded
    the same way) calls, as the dynamic linker bound it; '' without OpenMP or off Linux."""
    return cyb_openmp_library().decode(errors="replace")


def omp_max_threads():
    """omp_get_max_threads() of the calling thread (1 without OpenMP)."""
    return CYB_OMP_MAX_THREADS()


def simd_levels():
    """The instruction-set levels this CPU runs, best last: a subset of
    ('baseline', 'avx2', 'avx512') on x86-64, ('default',) elsewhere."""
    if not CYB_X86_64:
        return ("default",)
    levels = ["baseline"]
    if cyb_cpu_has_avx2():
        levels.append("avx2")
    if cyb_cpu_has_avx512():
        levels.append("avx512")
    return tuple(levels)


# ---- the thread count of a kernel call: cyburn._threads documents it and keeps it here --------

cdef object _block_var = None       # the ContextVar of `with num_threads(n):` blocks
cdef int _set_count = 0             # set_num_threads' count; 0: follow the OpenMP runtime
cdef int _max_count = 1             # cap of the runtime's count (MAX_THREADS)
cdef bint _serial = not CYB_OPENMP_VERSION   # every kernel runs on the calling thread alone:
                                             # a serial build, or a forked process


def configure_threads(block_var, int max_count):
    """Set by cyburn._threads at import: its block ContextVar (default None) and MAX_THREADS."""
    global _block_var, _max_count
    _block_var, _max_count = block_var, max_count


def set_thread_count(int n):
    """set_num_threads' count (0: follow the runtime again); returns the previous one."""
    global _set_count
    previous, _set_count = _set_count, n
    return previous


def make_serial():
    """From now on (and in this process' forks) thread_count() returns 1."""
    global _serial
    _serial = True


def is_serial():
    """Whether every kernel runs on the calling thread (a serial build, or a forked child)."""
    return _serial


def thread_count():
    """The thread count for a kernel called now: 1 in a serial build and after make_serial();
    else the innermost `with num_threads(n)` block of the calling context; else
    set_thread_count's; else omp_get_max_threads() of the calling thread, at most
    MAX_THREADS."""
    cdef PyObject *value = NULL
    cdef object block
    cdef int n
    if _serial:
        return 1
    PyContextVar_Get(_block_var, NULL, &value)     # a new reference (None by default)
    if value != NULL:
        block = <object>value
        Py_XDECREF(value)
        if block is not None:
            return block
    if _set_count:
        return _set_count
    n = CYB_OMP_MAX_THREADS()
    return n if n <= _max_count else _max_count
