"""show_config() and simd_path(): what cyburn runs with."""
from . import _dispatch, _runtime, _threads


def simd_path():
    """The instruction-set level of the kernels in use: 'baseline', 'avx2', 'avx512' or 'default'."""
    return _dispatch.simd_level


def _openmp_runtime():
    """The OpenMP library loaded in this process (read from /proc/self/maps on Linux)."""
    if not _runtime.openmp_version():
        return "none (serial build)"
    try:
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1].rsplit("/", 1)[-1] for line in maps if "omp" in line}
    except OSError:
        libs = set()
    names = sorted(lib for lib in libs if lib.startswith(("libgomp", "libomp", "libiomp")))
    return f"OpenMP {_runtime.openmp_version()}" + (f" ({', '.join(names)})" if names else "")


def show_config():
    """Print the version, the SIMD path, the OpenMP runtime and the thread count."""
    from . import __version__
    print(f"cyburn {__version__}")
    print(f"  simd path:       {simd_path()} (CPU supports: {', '.join(_runtime.simd_levels())})")
    print(f"  openmp:          {_openmp_runtime()}")
    serial = "" if _runtime.openmp_version() else " (serial build: kernels run on one)"
    print(f"  threads:         {_threads.get_num_threads()}{serial}")
