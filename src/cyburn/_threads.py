"""How many OpenMP threads the kernels use.

Default: the OpenMP runtime's thread count (omp_get_max_threads(), its "nthreads" setting),
read at every kernel call. GCC's libgomp starts it from OMP_NUM_THREADS, else from the CPUs
the process may run on when the runtime loads (its affinity mask, so a container's or
taskset's limit is respected and the machine is not oversubscribed). Whatever changes the
setting later changes cyburn's default too: omp_set_num_threads, threadpoolctl's
`threadpool_limits(n)`. The runtime is cyburn's own (see cyburn._openmp), so PyTorch's
`torch.set_num_threads(n)` does not move it; a build that shares the compiler's libgomp
(CYBURN_SHARED_OPENMP=1) is moved by the libraries sharing it too. OpenMP keeps the setting
per thread, so such a change applies to the kernels of the Python thread that made it. The
default is capped at MAX_THREADS. A serial build (no OpenMP) runs every kernel on the
calling thread, and get_num_threads() says 1 there.

`set_num_threads(n)` replaces that default with `n` for the whole process (the runtime's
setting, threadpoolctl's limits included, then no longer matters to cyburn); `with
num_threads(n):` overrides either for the code in the block only, in the calling thread (and
its asyncio tasks), so concurrent Python threads do not see each other's blocks. The kernels
receive the count as an argument, so cyburn changes no OpenMP setting; they still run serial
on small inputs.

Forked children run serial. GCC's libgomp is not fork-safe: after a process has used a thread
team, a child made by fork() inherits the team's bookkeeping but not its threads, and the
child's next parallel region can wait for them forever. Whether the parent used a team cannot
be known (any library sharing the runtime, PyTorch among them, may have), so an at-fork
handler (os.register_at_fork: os.fork(), multiprocessing's "fork" and "forkserver" start
methods) makes every kernel of the child, and of the child's own children, run on the calling
thread alone. get_num_threads() there returns 1; set_num_threads(n) and num_threads(n) still
check `n` but change nothing (the runtime cannot be restarted in the child). Processes that
want threads should be started with the "spawn" start method, or by a forkserver that has not
imported cyburn. A fork() made directly by C code runs no Python at-fork handler, and a
child that first imports cyburn after the fork cannot know whether its parent used the
runtime: import cyburn before forking.
"""
import contextlib
import contextvars
import operator
import os
from collections.abc import Iterator
from typing import Any

from . import _runtime


# More threads than this could not run at once anyway, and asking OpenMP to start many
# thousands can abort the process when the system refuses to create them.
MAX_THREADS = max(256, 8 * (os.cpu_count() or 1))


_block_override: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "cyburn_num_threads", default=None)
# The state lives in cyburn._runtime, whose thread_count() reads it in C: the count is read
# at every kernel call, and a Python function reading it took about twice as long.
_runtime.configure_threads(_block_override, MAX_THREADS)

current = _runtime.thread_count     # the count for a kernel called now (see the docstring)


def _after_fork_in_child() -> None:
    _runtime.make_serial()          # inherited by the child's own children


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _checked(n: Any) -> int:
    if isinstance(n, bool):
        raise TypeError("num_threads must be an integer, not bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"num_threads must be an integer, not {type(n).__name__}") from None
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"num_threads must be between 1 and {MAX_THREADS}, got {n}")
    return n


def get_num_threads() -> int:
    """The number of threads cyburn's kernels use (1 in a forked child)."""
    return _runtime.thread_count()


def set_num_threads(n: int) -> None:
    """Use `n` threads (1 <= n <= MAX_THREADS) in cyburn's kernels from now on, whatever the
    OpenMP runtime's setting (in a forked child, which stays serial, `n` is only checked)."""
    _runtime.set_thread_count(_checked(n))


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """`with cyburn.num_threads(n): ...` runs the block's kernels on `n` threads (in a forked
    child, which stays serial, `n` is only checked)."""
    token = _block_override.set(_checked(n))
    try:
        yield
    finally:
        _block_override.reset(token)
