# cython: language_level=3
"""What the machine and the build offer, compiled for the baseline instruction set so that it
can be imported on any CPU before choosing a kernel module."""

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
    int cyb_cpu_has_avx2()
    int cyb_cpu_has_avx512()


def openmp_version():
    """The _OPENMP date the kernels were compiled with (e.g. 201511), or 0 without OpenMP."""
    return CYB_OPENMP_VERSION


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
