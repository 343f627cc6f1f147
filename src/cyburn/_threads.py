"""How many OpenMP threads the kernels use.

Default: OMP_NUM_THREADS when set, else the CPUs this process may run on (its affinity mask,
so a container's or taskset's limit is respected). `set_num_threads` changes the default for
the whole process; `with num_threads(n):` overrides it for the code in the block only, in
the calling thread (and its asyncio tasks), so concurrent Python threads do not see each
other's blocks. The kernels receive the count as an argument, so no global OpenMP setting is
changed; they still run serial on small inputs.
"""
import contextlib
import contextvars
import operator
import os


def _cpus_available():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


# More threads than this could not run at once anyway, and asking OpenMP to start many
# thousands can abort the process when the system refuses to create them.
MAX_THREADS = max(256, 8 * (os.cpu_count() or 1))


def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), MAX_THREADS)
    return _cpus_available()


_default = _default_threads()
_block_override = contextvars.ContextVar("cyburn_num_threads", default=None)


def current():
    """The thread count for a kernel called now (see the module docstring)."""
    return _block_override.get() or _default


def _checked(n):
    if isinstance(n, bool):
        raise TypeError("num_threads must be an integer, not bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"num_threads must be an integer, not {type(n).__name__}") from None
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"num_threads must be between 1 and {MAX_THREADS}, got {n}")
    return n


def get_num_threads():
    """The number of threads cyburn's kernels use."""
    return current()


def set_num_threads(n):
    """Use `n` threads (1 <= n <= MAX_THREADS) in cyburn's kernels from now on."""
    global _default
    _default = _checked(n)


@contextlib.contextmanager
def num_threads(n):
    """`with cyburn.num_threads(n): ...` runs the block's kernels on `n` threads."""
    token = _block_override.set(_checked(n))
    try:
        yield
    finally:
        _block_override.reset(token)
