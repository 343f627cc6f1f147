"""Timing for cyburn.bench: contenders timed in interleaved rounds, and the one-thread
variant of a contender for the 1 -> N thread scaling."""
import contextlib
import time

import cyburn as cb

try:
    import torch
except ImportError:          # PyTorch is an optional peer
    torch = None

ONE = "@1"                  # suffix of the one-thread contenders ("cyburn@1", "torch@1")

WARM_SECONDS = 0.03
QUIET_TIMEOUT = 0.25        # seconds a contender waits, at most, for the other threads to stop
SLOW_CALL = 0.25            # seconds: a call this long is timed without warm-up calls, ...
SLOW_ROUNDS = 3             # ... in at least this many rounds (5 otherwise)


def best_times(contenders, min_seconds, max_rounds):
    """Fastest seconds per call of each callable, timed in interleaved rounds.

    In each round every contender first waits until no other thread runs on the machine
    (wait_for_quiet), then runs untimed for WARM_SECONDS, so that no contender is charged for
    its neighbour. After their last call, ONNX Runtime's pool threads spin for about 50 ms
    and PyTorch's OpenMP threads for several (on the README's EPYC): a contender started
    meanwhile shares a core with one of them, and a cyburn team leaves that core out (its
    rms_norm of (8192, 768) took 3.3 ms right after ONNX Runtime's, even after 30 ms of
    warm-up, against 1.4 ms). The minimum is the time least disturbed by the rest of a shared
    machine. A call of SLOW_CALL seconds or more (a slow peer, a large reference) warms up
    in its own first milliseconds: it is timed without a warm-up call, and its row takes
    SLOW_ROUNDS rounds at least instead of 5.
    """
    once = {}
    for name, f in contenders.items():
        with _pinned(f) as call:
            call()
            once[name] = _time_once(call)
    slowest = max(once.values(), default=0.0)
    least = SLOW_ROUNDS if slowest >= SLOW_CALL else 5
    rounds = int(min(max_rounds, max(least, min_seconds / max(slowest, 1e-9))))
    batch = int(1e-3 / max(slowest, 1e-7)) + 1 if slowest < 1e-4 else 1  # tiny calls: batches
    samples = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, f in contenders.items():
            with _pinned(f) as call:        # a OneThread contender: its setting, once a round
                wait_for_quiet(QUIET_TIMEOUT)
                warm = WARM_SECONDS if once[name] < SLOW_CALL else 0.0
                warm_until = time.perf_counter() + warm
                while time.perf_counter() < warm_until:
                    call()
                samples[name].append(_time_once(call, batch) / batch)
    return {name: min(s) for name, s in samples.items()}


def running_threads():
    """Threads running or ready to run on the machine, the caller included (Linux's count,
    the fourth field of /proc/loadavg); None where the system does not say."""
    try:
        with open("/proc/loadavg") as loadavg:
            return int(loadavg.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def wait_for_quiet(timeout):
    """Sleep in steps of a millisecond until the caller is the only thread running on the
    machine, for at most `timeout` seconds. Whether it is (None: the system does not say)."""
    give_up = time.perf_counter() + timeout
    while True:
        running = running_threads()
        if running is None or running <= 1:
            return None if running is None else True
        if time.perf_counter() >= give_up:
            return False
        time.sleep(1e-3)


def _time_once(f, calls=1):
    start = time.perf_counter()
    for _ in range(calls):
        f()
    return time.perf_counter() - start


class OneThread:
    """A contender run on one thread, for the 1 -> N thread scaling: cyburn's kernels through
    `cb.num_threads(1)`, PyTorch's through `torch.set_num_threads(1)` (a global setting,
    restored on exit) and, when threadpoolctl is installed, NumPy's BLAS (which
    linear_cross_entropy calls) limited to one thread. best_times enters the setting once per
    round, around the warm-up and the timed calls, so the calls themselves pay nothing."""

    _blas = None                            # threadpoolctl's controller, made once

    def __init__(self, f):
        self.f = f

    @classmethod
    def blas_limited(cls):
        """Whether NumPy's BLAS can be limited (threadpoolctl installed)."""
        if cls._blas is None:
            try:
                from threadpoolctl import ThreadpoolController
                cls._blas = ThreadpoolController()
            except ImportError:
                cls._blas = False
        return cls._blas is not False

    @contextlib.contextmanager
    def pinned(self):
        saved = torch.get_num_threads() if torch is not None else None
        with contextlib.ExitStack() as stack:
            stack.enter_context(cb.num_threads(1))
            if self.blas_limited():
                stack.enter_context(self._blas.limit(limits=1, user_api="blas"))
            if torch is not None:
                torch.set_num_threads(1)
                stack.callback(torch.set_num_threads, saved)
            yield self.f

    def __call__(self):
        with self.pinned() as f:
            return f()


def _pinned(f):
    """The context best_times calls a contender in: its thread setting (OneThread) or none."""
    return f.pinned() if isinstance(f, OneThread) else contextlib.nullcontext(f)
