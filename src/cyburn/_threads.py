"""How many OpenMP threads the kernels use.

Default: OMP_NUM_THREADS when set, else the CPUs this process may run on (its affinity mask,
so a container's or taskset's limit is respected). The kernels receive the count as an
argument, so no global OpenMP setting is changed; they still run serial on small inputs.
"""
import contextlib
import os


def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


_num_threads = _default_threads()


def get_num_threads():
    """The number of threads cyburn's kernels use."""
    return _num_threads


def set_num_threads(n):
    """Use `n` threads (a positive integer) in cyburn's kernels from now on."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) and not hasattr(n, "__index__"):
        raise TypeError(f"num_threads must be an integer, not {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"num_threads must be at least 1, got {n}")
    _num_threads = n


@contextlib.contextmanager
def num_threads(n):
    """`with cyburn.num_threads(n): ...` runs the block's kernels on `n` threads."""
    previous = _num_threads
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(previous)
