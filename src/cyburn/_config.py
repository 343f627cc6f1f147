"""show_config() and simd_path(): what cyburn runs with."""
from . import _dispatch, _machine, _openmp, _runtime, _threads


def simd_path() -> str:
    """The instruction-set level of the kernels in use: 'baseline', 'avx2', 'avx512' or 'default'."""
    return _dispatch.simd_level


def _openmp_runtime() -> str:
    if not _runtime.openmp_version():
        return "none (serial build: every kernel runs on the calling thread)"
    library = _runtime.openmp_library()
    return f"OpenMP {_runtime.openmp_version()}" + (f" ({library})" if library else "")


def show_config() -> None:
    """Print the version, the SIMD path, the caches, the OpenMP runtime, how its threads wait between
    kernels, and the thread count."""
    from . import __version__
    print(f"cyburn {__version__}")
    print(f"  simd path:       {simd_path()} (CPU supports: {', '.join(_runtime.simd_levels())})")
    rules = _dispatch.kernels.memory_rules(_threads.get_num_threads())
    print(f"  caches:          {_machine.describe()}: non-temporal stores when a kernel's "
          f"operands exceed {rules['stream_min_bytes'] >> 20} MiB (the last level, at most "
          f"{_machine.LLC_PER_CPU_MAX >> 20} MiB per usable CPU), threads from "
          f"{rules['parallel_min_elements']} elements")
    reuse = _dispatch.kernels.reuse_state()
    print(f"  memory:          outputs of {_machine.human_size(reuse['min_bytes'])} or more "
          f"reuse the memory of freed ones, up to {reuse['max_idle_bytes'] >> 20} MiB kept "
          f"idle ({_machine.IDLE_ENV} sets it in MiB)")
    print(f"  openmp:          {_openmp_runtime()}")
    print(f"  wait policy:     {_openmp.wait_policy()}")
    serial = " (serial build)" if not _runtime.openmp_version() else (
        " (forked child: serial)" if _runtime.is_serial() else "")
    shared = "" if serial else (", fewer while other threads run on the CPUs (a team takes only "
                                "idle ones, by Linux's count in /proc/loadavg)")
    print(f"  threads:         {_threads.get_num_threads()}{serial}{shared}")
