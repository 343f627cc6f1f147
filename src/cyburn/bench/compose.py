"""The `compose` suite of `python -m cyburn.bench`: cyburn's kernels between NumPy matrix
products, as a transformer written in NumPy calls them.

A kernel timed alone says nothing about what it does to its neighbours. After a parallel
region an OpenMP runtime's threads wait for the next one, and while they spin they take the
cores that the BLAS threads of the next matrix product need; OpenBLAS's idle threads, in
turn, keep spinning for about 2^28 cycles (a tenth of a second) after a product, on the
cores of the kernel that follows. Each case here is a loop of steps in the shapes of a GPT-2
small layer (n_embd 768, 12 heads of 64), timed in interleaved rounds of one run:

- alone: each step in a loop of its own, started after the process has been quiet for
  QUIET_SECONDS (longer than either library's idle threads spin), so that it pays only for
  itself; their sum is the "sum of the parts";
- composed: the steps one after the other, as a model calls them, each step timed too; or,
  for a whole block's forward and backward, the real step, whose two parts are its NumPy
  work (every cyburn call answered from a record) and its cyburn calls replayed alone;
- floor: the sum of the parts with cyburn's on one thread (NumPy's as they are). Right after
  a product OpenBLAS's idle threads hold a core for about 0.1 s and cyburn's kernels then
  take the calling thread's core alone (cyburn._openmp, "a team takes only idle CPUs"), so
  this is the best a composed loop can do while they spin.

composed / sum of the parts is 1.00x when the libraries share the cores without getting in
each other's way; the per-step columns say which side pays when they do not, and composed /
floor what is left beyond the core OpenBLAS's threads hold.
"""
import contextlib
import json
import os
import subprocess
import sys
import time

import numpy as np

import cyburn as cb
from cyburn import _openmp

N_EMBD, N_HEAD = 768, 12
HEAD = N_EMBD // N_HEAD
SHAPES = ((4, 64), (8, 1024))           # (B, T): llm.c's CPU training shape, and GPT-2's context
QUIET_SECONDS = 0.25                    # > OpenBLAS's 2^28-cycle idle spin at >= 1.1 GHz


def _weights(rng, *shape):
    return (0.02 * rng.standard_normal(shape)).astype(np.float32)   # GPT-2's initialisation


def mlp_case(rng, B, T):
    """h = x @ W_fc, (B*T, 768) @ (768, 3072), then GPT-2's GELU of h."""
    x = rng.standard_normal((B * T, N_EMBD), dtype=np.float32)
    w = _weights(rng, N_EMBD, 4 * N_EMBD)
    h = x @ w
    g = np.empty_like(h)
    return [("matmul", lambda: np.matmul(x, w, out=h)),
            ("gelu", lambda: cb.gelu(h, approximate="tanh", out=g))], None


def layer_norm_case(rng, B, T):
    """a = g @ W_proj, (B*T, 3072) @ (3072, 768), then the residual add and layer norm."""
    g = rng.standard_normal((B * T, 4 * N_EMBD), dtype=np.float32)
    w = _weights(rng, 4 * N_EMBD, N_EMBD)
    residual = rng.standard_normal((B * T, N_EMBD), dtype=np.float32)
    weight, bias = np.ones(N_EMBD, np.float32), np.zeros(N_EMBD, np.float32)
    a = g @ w
    return [("matmul", lambda: np.matmul(g, w, out=a)),
            ("layer_norm", lambda: cb.layer_norm(a, weight, bias, residual=residual))], None


def attention_case(rng, B, T):
    """scores = q @ k^T per head, the causal softmax of scores / 8, then p @ v."""
    q, k, v = (rng.standard_normal((B, N_HEAD, T, HEAD), dtype=np.float32) for _ in range(3))
    kt = k.swapaxes(-1, -2)
    scores = np.matmul(q, kt)
    out = np.matmul(scores, v)
    scale = 1.0 / np.sqrt(HEAD)
    return [("q @ k^T", lambda: np.matmul(q, kt, out=scores)),
            ("masked_softmax", lambda: cb.masked_softmax(scores, scale=scale, causal=True,
                                                         out=scores)),
            ("p @ v", lambda: np.matmul(scores, v, out=out))], None


KERNELS = ("layer_norm", "masked_softmax", "gelu", "gelu_backward", "layer_norm_backward",
           "masked_softmax_backward")          # what a GPT-2 block calls


class _Recorded:
    """cyburn's kernels as one step calls them, recorded once: `replay()` calls them again
    alone, in order, on copies of their inputs (a call that wrote into `out=` writes into a
    buffer of its own); inside `answering()` each kernel returns the result it had instead
    of computing, so that the step runs everything but cyburn. `names`: the cyburn functions
    recorded (KERNELS by default)."""

    def __init__(self, step, names=None):
        self.names = KERNELS if names is None else names
        self.calls = []                     # (function, args, kwargs, result)
        with self._patched(self._record):
            step()

    def _record(self, function, args, kwargs):
        copy = lambda v: v.copy() if isinstance(v, np.ndarray) else v       # noqa: E731
        inputs = [copy(a) for a in args], {k: copy(v) for k, v in kwargs.items()}
        result = function(*args, **kwargs)
        self.calls.append((function, *inputs, result))
        return result

    @contextlib.contextmanager
    def _patched(self, handler):
        """The recorded functions call handler(function, args, kwargs) instead, in the block."""
        saved = {name: getattr(cb, name) for name in self.names}
        for name, function in saved.items():
            setattr(cb, name, lambda *a, _f=function, **k: handler(_f, a, k))
        try:
            yield
        finally:
            for name, function in saved.items():
                setattr(cb, name, function)

    def replay(self):
        for function, args, kwargs, _ in self.calls:
            function(*args, **kwargs)

    @contextlib.contextmanager
    def answering(self):
        answers = iter(self.calls)
        with self._patched(lambda function, args, kwargs: next(answers)[3]):
            yield


def block_case(rng, B, T):
    """The forward and backward of one GPT-2 small block (cyburn.gpt2 with one layer, the
    embedding and final layer norm included). Its parts: cyburn's kernel calls of the step,
    replayed alone in order, and the rest of the step (NumPy's products and additions) with
    each kernel call answered from a record. The composed step is the real one."""
    from cyburn.gpt2 import GPT2, GPT2Config
    from cyburn.gpt2.model import _Block
    model = GPT2(GPT2Config(vocab_size=256, n_positions=T, n_embd=N_EMBD, n_layer=1,
                            n_head=N_HEAD), seed=0)
    idx = rng.integers(0, 256, (B, T))
    dh = rng.standard_normal((B * T, N_EMBD)).astype(np.float32)

    def step():
        saved = []
        model._hidden(idx, saved)
        saved.pop()                                 # the final layer norm's, not the block's
        model._block_backward(dh, _Block(model.params, 0), saved.pop(), {}, B, T)
    record = _Recorded(step)

    def numpy_part():
        with record.answering():
            step()
    return [("NumPy", numpy_part), ("cyburn", record.replay)], step


CASES = (("matmul -> gelu", mlp_case), ("matmul -> layer_norm", layer_norm_case),
         ("attention", attention_case), ("block forward+backward", block_case))


def _per_call(f, calls):
    start = time.perf_counter()
    for _ in range(calls):
        f()
    return (time.perf_counter() - start) / calls


def time_composed(steps, seconds=1.0, max_rounds=15, whole=None):
    """Median seconds per iteration of each step alone, of each step inside the composed
    loop, and of the whole composed loop, over interleaved rounds (see the module's
    docstring). The composed loop is the steps in order, or `whole` when given (a step whose
    parts the steps are: then no step is timed inside it). Returns ({step: alone},
    {step: alone with cyburn on one thread}, {step: in the composed loop}, composed)."""
    names = [name for name, _ in steps]
    stamps = np.zeros(len(steps) + 1)

    def composed():
        stamps[0] = time.perf_counter()
        if whole is not None:
            whole()
            return
        for i, (_, f) in enumerate(steps, 1):
            f()
            stamps[i] = time.perf_counter()

    composed()
    once = _per_call(composed, 1)
    calls = max(1, int(0.02 / max(once, 1e-6)))
    rounds = int(min(max_rounds, max(5, seconds / (2 * calls * once + QUIET_SECONDS))))
    alone = {name: [] for name in names}
    alone_serial = {name: [] for name in names}
    inside = {name: [] for name in names}
    loops = []
    for _ in range(rounds):
        for name, f in steps:
            for times, threads in ((alone, cb.get_num_threads()), (alone_serial, 1)):
                with cb.num_threads(threads):
                    time.sleep(QUIET_SECONDS)
                    f()
                    times[name].append(_per_call(f, calls))
        composed()
        step_sums = np.zeros(len(steps))
        start = time.perf_counter()
        for _ in range(calls):
            composed()
            step_sums += np.diff(stamps)
        loops.append((time.perf_counter() - start) / calls)
        for name, total in zip(names, step_sums):
            inside[name].append(total / calls if whole is None else np.nan)
    median = lambda d: {name: float(np.median(s)) for name, s in d.items()}   # noqa: E731
    return median(alone), median(alone_serial), median(inside), float(np.median(loops))


BACK_TO_BACK = r"""
import json, sys, time
import numpy as np
import cyburn as cb
x = np.random.default_rng(0).standard_normal((256, 768)).astype(np.float32)
weight, bias = np.ones(768, np.float32), np.zeros(768, np.float32)
y = np.empty_like(x)
def ten():
    for _ in range(10):
        cb.layer_norm(x, weight, bias, out=y)
samples = []
for _ in range(int(sys.argv[1])):
    ten()
    start = time.perf_counter()
    for _ in range(20):
        ten()
    samples.append((time.perf_counter() - start) / 20)
print(json.dumps(float(np.median(samples))))
"""
SPINNING = {"GOMP_SPINCOUNT": "300000"}     # libgomp's own default: threads spin for ms


def time_back_to_back(rounds=6, samples=10):
    """Median seconds of ten layer_norms of (256, 768) called back to back, in fresh
    processes under cyburn's wait policy and with libgomp's default spinning (what cyburn's
    threads did before it chose its own), alternating; returns (policy, spinning)."""
    env = {k: v for k, v in os.environ.items() if k not in _openmp.USER_VARIABLES}
    times = {"policy": [], "spinning": []}
    for _ in range(rounds):
        for name, extra in (("policy", {}), ("spinning", SPINNING)):
            out = subprocess.run([sys.executable, "-c", BACK_TO_BACK, str(samples)],
                                 env={**env, **extra}, capture_output=True, text=True,
                                 check=True).stdout
            times[name].append(json.loads(out.strip().splitlines()[-1]))
    return float(np.median(times["policy"])), float(np.median(times["spinning"]))


def compose_cases():
    """(label, make) for every case at every shape: make(rng) returns (steps, whole), the
    named steps and the step they compose (None: the steps in order)."""
    for B, T in SHAPES:
        for label, make in CASES:
            yield f"{label}  B={B} T={T}", lambda rng, make=make, B=B, T=T: make(rng, B, T)


def _ms(seconds):
    return f"{seconds * 1e3:.3f}"


def run_compose(args=None, progress=None):
    """Time every case and the back-to-back calls, print the table; returns its rows
    (label, alone, alone on one thread, inside, composed)."""
    seconds = getattr(args, "seconds", 1.0)
    cases = list(compose_cases())
    rows = []
    for done, (label, make) in enumerate(cases, 1):
        if progress is not None:
            progress.update(done, len(cases), "compose", label)
        steps, whole = make(np.random.default_rng(0))
        rows.append((label, *time_composed(steps, seconds, whole=whole)))
    if progress is not None:
        progress.update(len(cases), len(cases), "compose",
                        "back-to-back layer_norms, in fresh processes")
    policy, spinning = time_back_to_back()
    if progress is not None:
        progress.clear()
    print(f"{'case':<34} {'step: alone -> in the loop (ms)':<62} {'sum':>8} "
          f"{'composed':>8} {'ratio':>6} {'floor':>8} {'/floor':>6}")
    for label, alone, alone_serial, inside, composed in rows:
        total, floor = sum(alone.values()), sum(alone_serial.values())
        steps = ", ".join(f"{name} {_ms(alone[name])}" + ("" if np.isnan(inside[name]) else
                                                          f"->{_ms(inside[name])}")
                          for name in alone)
        print(f"{label:<34} {steps:<62} {_ms(total):>8} {_ms(composed):>8} "
              f"{composed / total:5.2f}x {_ms(floor):>8} {composed / floor:5.2f}x")
    print(f"ratio = composed / sum of the parts (medians of interleaved rounds; 1.00x: the "
          f"libraries share the cores without slowing each other); floor = the sum of the "
          f"parts with cyburn's on one thread, the most a loop can get while OpenBLAS's idle "
          f"threads hold a core after each product. Wait policy: {_openmp.wait_policy()}.")
    print(f"ten layer_norms (256, 768) back to back, fresh processes: {policy * 1e6:.0f} us "
          f"with that policy, {spinning * 1e6:.0f} us with spinning threads "
          f"({', '.join(f'{k}={v}' for k, v in SPINNING.items())}): {policy / spinning:.2f}x\n")
    return rows


if __name__ == "__main__":
    run_compose()
