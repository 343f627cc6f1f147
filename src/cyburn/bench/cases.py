"""Side-by-side benchmark: cyburn vs its NumPy reference vs PyTorch (when installed).

    python -m cyburn.bench            # GPT-2 small shapes, float32, all threads
    python -m cyburn.bench --quick    # fewer repetitions
    python -m cyburn.bench norm       # one suite: softmax, norm, xent, attention, act, gpt2,
                                      # compose
    python -m cyburn.bench --scaling  # also time cyburn and torch on 1 thread (1->N thr)
    python -m cyburn.bench --plot docs/bench.png   # and draw charts (implies --scaling)

Every case times its contenders interleaved (one call of each per round, repeated), so
they share the machine's state; the table reports each one's best time and the ratios against
cyburn from the same run. GB/s counts the bytes a kernel must read and write, and is compared
with np.copyto's bandwidth measured in the same run (the roofline columns: achieved GB/s vs
np.copyto). With --scaling, cyburn (and torch) also run on one thread in the same rounds, and
"1->N" is the one-thread time divided by the N-thread time.

--plot FILE.png (needs matplotlib: pip install 'cyburn[plot]') writes two charts:
FILE.png, the speed-up of cyburn against PyTorch and NumPy per row (log scale), and
FILE-scaling.png, the roofline (achieved GB/s as % of np.copyto) and the 1 -> N thread
speed-up of cyburn and torch (--plot turns --scaling on; --no-scaling leaves that panel
out). Progress goes to stderr: one line updated in place on a terminal, plain lines otherwise.
"""
import argparse
import contextlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np

import cyburn as cb
from cyburn import reference
from cyburn.bench.compose import run_compose
from cyburn.bench.gpt2 import gpt2_cases, run_gpt2

try:
    import torch
except ImportError:          # PyTorch is an optional peer
    torch = None

SOFTMAX_SHAPES = [          # (label, shape, axis)
    ("attention rows", (12288, 1024), -1),
    ("LM-head rows", (1024, 50257), -1),
    ("non-last axis", (1024, 12288), 0),
    ("small", (4, 64), -1),
]


WARM_SECONDS = 0.03


def best_times(contenders, min_seconds, max_rounds):
    """Fastest seconds per call of each callable, timed in interleaved rounds.

    In each round every contender first runs untimed for WARM_SECONDS: that outlasts what
    the previous contender left behind (another library's OpenMP threads spin for several
    milliseconds after their last parallel region, competing for the cores), so no contender
    is charged for its neighbour. The minimum is the time least disturbed by the rest of a
    shared machine.
    """
    slowest = 0.0
    for f in contenders.values():
        with _pinned(f) as call:
            call()
            slowest = max(slowest, _time_once(call))
    rounds = int(min(max_rounds, max(5, min_seconds / max(slowest, 1e-9))))
    batch = int(1e-3 / max(slowest, 1e-7)) + 1 if slowest < 1e-4 else 1  # tiny calls: batches
    samples = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, f in contenders.items():
            with _pinned(f) as call:        # a OneThread contender: its setting, once a round
                warm_until = time.perf_counter() + WARM_SECONDS
                while time.perf_counter() < warm_until:
                    call()
                samples[name].append(_time_once(call, batch) / batch)
    return {name: min(s) for name, s in samples.items()}


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


class Progress:
    """Progress of a run on stderr: one line rewritten in place (with a bar) when stderr is a
    terminal, plain lines otherwise, nothing when disabled."""

    def __init__(self, enabled=True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.start = time.perf_counter()
        self.shown = 0                      # length of the line on screen (terminal only)

    def elapsed(self):
        seconds = int(time.perf_counter() - self.start)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def update(self, done, total, where, what):
        """Report that item `done` (1-based) of `total` (None: unknown) in `where` starts."""
        if not self.enabled:
            return
        sys.stdout.flush()
        known = total is not None and done <= total
        count = f"{done}/{total if known else '?'}"
        if self.tty:
            filled = 20 * (done - 1) // total if known else 0
            bar = "#" * filled + "-" * (20 - filled)
            line = f"[{bar}] {count} {where} {self.elapsed()}  {what}"
            width = shutil.get_terminal_size().columns - 1
            line = line[:width]
            self.stream.write("\r" + line.ljust(self.shown))
            self.shown = len(line)
        else:
            self.stream.write(f"[{count}] {where} {self.elapsed()}  {what}\n")
        self.stream.flush()

    def clear(self):
        """Erase the in-place line (before the results go to the same terminal)."""
        if self.tty and self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
            self.shown = 0


class Case:
    """One benchmark row: the contenders (name -> callable) for one function, input and mode,
    the bytes the function must move (inputs read once, outputs written once) and an array
    of the operand size for the np.copyto bandwidth reference.

    scaled: contender -> factor its measured time is multiplied by (a slow contender timed on
    a slice of the input, e.g. {"numpy": 16} for 1/16 of the rows; say so in the label).
    note: times -> a line printed under the table (comparisons of extra contenders, which
    the table's columns do not show)."""

    def __init__(self, function, label, mode, contenders, traffic, operand, *, scaled=None,
                 note=None):
        copy = np.empty_like(operand)
        self.function, self.label, self.mode, self.traffic = function, label, mode, traffic
        self.operand_bytes = operand.nbytes
        self.contenders = {"copyto": lambda: np.copyto(copy, operand), **contenders}
        self.scaled, self.note = scaled or {}, note


def _torch_softmax_calls(name, arrays, axis, out):
    """The PyTorch equivalents of one cyburn call, allocating and writing into `out`."""
    t = [torch.from_numpy(a) for a in arrays]
    o = torch.from_numpy(out)
    aten = torch.ops.aten
    if name in ("softmax", "log_softmax"):
        op = aten._softmax if name == "softmax" else aten._log_softmax
        return (lambda: op(t[0], axis, False)), (lambda: op.out(t[0], axis, False, out=o))
    if name == "softmax_backward":
        op, out_kw = aten._softmax_backward_data, "grad_input"
    else:
        op, out_kw = aten._log_softmax_backward_data, "out"
    return ((lambda: op(t[0], t[1], axis, t[0].dtype)),
            (lambda: op.out(t[0], t[1], axis, t[0].dtype, **{out_kw: o})))


def softmax_cases(rng):
    """Both modes of the four softmax functions on every SOFTMAX_SHAPES entry."""
    for label, shape, axis in SOFTMAX_SHAPES:
        x = rng.standard_normal(shape, dtype=np.float32)
        dy = rng.standard_normal(shape, dtype=np.float32)
        out = np.empty_like(x)
        for name, inputs in [("softmax", (x,)), ("log_softmax", (x,)),
                             ("softmax_backward", (dy, cb.softmax(x, axis))),
                             ("log_softmax_backward", (dy, cb.log_softmax(x, axis)))]:
            ours, ref = getattr(cb, name), getattr(reference, name)
            torch_calls = _torch_softmax_calls(name, inputs, axis, out) if torch else None
            for mode in ("alloc", "out="):
                kw = {"out": out} if mode == "out=" else {}
                contenders = {"cyburn": lambda f=ours, kw=kw: f(*inputs, axis, **kw),
                              "numpy": lambda f=ref, kw=kw: f(*inputs, axis, **kw)}
                if torch_calls:
                    contenders["torch"] = torch_calls[mode == "out="]
                yield Case(name, f"{label} {shape} axis={axis}", mode, contenders,
                           (len(inputs) + 1) * x.nbytes, x)


NORM_ROWS = (8192, 768)                 # GPT-2 small: 8 sequences of 1024 tokens, 768 features
NORM_CHANNELS = (32, 64, 56, 56)        # a ResNet-style activation, for group and batch norm


def row_norm_cases(rng):
    """layer_norm and rms_norm on NORM_ROWS: forward (alloc and out=) and backward."""
    x = rng.standard_normal(NORM_ROWS, dtype=np.float32)
    dy = rng.standard_normal(NORM_ROWS, dtype=np.float32)
    n = NORM_ROWS[-1]
    w = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    out = np.empty_like(x)
    label = f"rows {NORM_ROWS}"
    _, mean, rstd = cb.layer_norm(x, w, b, return_stats=True)
    _, rms_rstd = cb.rms_norm(x, w, return_stats=True)
    if torch:
        X, DY, W, B, O = (torch.from_numpy(a) for a in (x, dy, w, b, out))
        aten = torch.ops.aten
        _, TM, TS = aten.native_layer_norm(X, [n], W, B, 1e-5)
        M, S = torch.empty_like(TM), torch.empty_like(TS)
        XR, WR = X.clone().requires_grad_(), W.clone().requires_grad_()
        YR = torch.nn.functional.rms_norm(XR, (n,), WR, 1e-6)
    for mode in ("alloc", "out="):
        kw = {"out": out} if mode == "out=" else {}
        ln = {"cyburn": lambda kw=kw: cb.layer_norm(x, w, b, **kw),
              "numpy": lambda kw=kw: reference.layer_norm(x, w, b, **kw)}
        rms = {"cyburn": lambda kw=kw: cb.rms_norm(x, w, **kw),
               "numpy": lambda kw=kw: reference.rms_norm(x, w, **kw)}
        if torch:
            ln["torch"] = ((lambda: aten.native_layer_norm(X, [n], W, B, 1e-5)) if not kw else
                           (lambda: aten.native_layer_norm.out(X, [n], W, B, 1e-5,
                                                               out0=O, out1=M, out2=S)))
            rms["torch"] = lambda: torch.nn.functional.rms_norm(X, (n,), W, 1e-6)  # no out=
        yield Case("layer_norm", label, mode, ln, 2 * x.nbytes, x)
        yield Case("rms_norm", label, mode, rms, 2 * x.nbytes, x)
    ln = {"cyburn": lambda: cb.layer_norm_backward(dy, x, w, mean, rstd),
          "numpy": lambda: reference.layer_norm_backward(dy, x, w, mean, rstd)}
    rms = {"cyburn": lambda: cb.rms_norm_backward(dy, x, w, rms_rstd),
           "numpy": lambda: reference.rms_norm_backward(dy, x, w, rms_rstd)}
    if torch:
        ln["torch"] = lambda: aten.native_layer_norm_backward(DY, X, [n], TM, TS, W, B,
                                                             [True, True, True])
        rms["torch"] = lambda: torch.autograd.grad(YR, (XR, WR), DY, retain_graph=True)
    yield Case("layer_norm_backward", label, "alloc", ln, 3 * x.nbytes, x)
    yield Case("rms_norm_backward", label, "alloc", rms, 3 * x.nbytes, x)


def channel_norm_cases(rng):
    """group_norm (32 groups) and batch_norm (training, with running statistics) on
    NORM_CHANNELS, forward and backward."""
    x = rng.standard_normal(NORM_CHANNELS, dtype=np.float32)
    dy = rng.standard_normal(NORM_CHANNELS, dtype=np.float32)
    N, C = NORM_CHANNELS[:2]
    S = x.size // (N * C)
    G = 32
    w = rng.standard_normal(C, dtype=np.float32)
    b = rng.standard_normal(C, dtype=np.float32)
    running = [np.zeros(C, np.float32), np.ones(C, np.float32)]
    label = f"(N, C, H, W) {NORM_CHANNELS}"
    _, gmean, grstd = cb.group_norm(x, G, w, b, return_stats=True)
    _, bmean, brstd = cb.batch_norm(x, w, b, return_stats=True)
    gn = {"cyburn": lambda: cb.group_norm(x, G, w, b),
          "numpy": lambda: reference.group_norm(x, G, w, b)}
    gnb = {"cyburn": lambda: cb.group_norm_backward(dy, x, G, w, gmean, grstd),
           "numpy": lambda: reference.group_norm_backward(dy, x, G, w, gmean, grstd)}
    bn = {"cyburn": lambda: cb.batch_norm(x, w, b, running_mean=running[0],
                                          running_var=running[1]),
          "numpy": lambda: reference.batch_norm(x, w, b, running_mean=running[0],
                                                running_var=running[1])}
    bnb = {"cyburn": lambda: cb.batch_norm_backward(dy, x, w, bmean, brstd),
           "numpy": lambda: reference.batch_norm_backward(dy, x, w, bmean, brstd)}
    if torch:
        aten = torch.ops.aten
        X, DY, W, B, RM, RV = (torch.from_numpy(a) for a in (x, dy, w, b, *running))
        _, TGM, TGS = aten.native_group_norm(X, W, B, N, C, S, G, 1e-5)
        _, TBM, TBS = aten.native_batch_norm(X, W, B, None, None, True, 0.1, 1e-5)
        gn["torch"] = lambda: aten.native_group_norm(X, W, B, N, C, S, G, 1e-5)
        gnb["torch"] = lambda: aten.native_group_norm_backward(DY, X, TGM, TGS, W, N, C, S, G,
                                                              [True, True, True])
        bn["torch"] = lambda: aten.native_batch_norm(X, W, B, RM, RV, True, 0.1, 1e-5)
        bnb["torch"] = lambda: aten.native_batch_norm_backward(DY, X, W, RM, RV, TBM, TBS, True,
                                                              1e-5, [True, True, True])
    yield Case("group_norm", label, "alloc", gn, 2 * x.nbytes, x)
    yield Case("group_norm_backward", label, "alloc", gnb, 3 * x.nbytes, x)
    yield Case("batch_norm", label, "alloc", bn, 2 * x.nbytes, x)
    yield Case("batch_norm_backward", label, "alloc", bnb, 3 * x.nbytes, x)


CE_LOGITS = (2048, 50257)               # GPT-2's vocabulary, 2048 token positions
LM_HEAD = (1024, 768, 50257)            # hidden (N, D) x weight (C, D)


def cross_entropy_cases(rng):
    """cross_entropy forward, and forward + backward into grad_out, on CE_LOGITS."""
    x = rng.standard_normal(CE_LOGITS, dtype=np.float32)
    target = rng.integers(0, CE_LOGITS[1], CE_LOGITS[0])
    grad = np.empty_like(x)
    label = f"logits {CE_LOGITS}"
    forward = {"cyburn": lambda: cb.cross_entropy(x, target),
               "numpy": lambda: reference.cross_entropy(x, target)}
    both = {"cyburn": lambda: cb.cross_entropy(x, target, return_grad=True, grad_out=grad),
            "numpy": lambda: reference.cross_entropy(x, target, return_grad=True)}
    if torch:
        X, T = torch.from_numpy(x), torch.from_numpy(target)
        forward["torch"] = lambda: torch.nn.functional.cross_entropy(X, T)
        both["torch"] = lambda: _torch_loss_and_grad(
            lambda a: torch.nn.functional.cross_entropy(a, T), X)
    yield Case("cross_entropy", label, "alloc", forward, x.nbytes, x)
    yield Case("cross_entropy", label, "grad", both, 2 * x.nbytes, x)


def _torch_loss_and_grad(loss_of, *tensors):
    leaves = [t.detach().requires_grad_() for t in tensors]
    loss_of(*leaves).backward()
    return [t.grad for t in leaves]


def linear_cross_entropy_cases(rng):
    """linear_cross_entropy forward + backward for GPT-2's LM head (LM_HEAD)."""
    N, D, C = LM_HEAD
    hidden = rng.standard_normal((N, D), dtype=np.float32)
    weight = rng.standard_normal((C, D), dtype=np.float32) * np.float32(0.02)
    target = rng.integers(0, C, N)
    both = {"cyburn": lambda: cb.linear_cross_entropy(hidden, weight, target, return_grad=True),
            "numpy": lambda: reference.linear_cross_entropy(hidden, weight, target,
                                                            return_grad=True)}
    if torch:
        H, W, T = (torch.from_numpy(a) for a in (hidden, weight, target))
        both["torch"] = lambda: _torch_loss_and_grad(
            lambda h, w: torch.nn.functional.cross_entropy(h @ w.T, T), H, W)
    yield Case("linear_cross_entropy", f"hidden {(N, D)}, weight {(C, D)}", "grad", both,
               hidden.nbytes * 2 + weight.nbytes * 2, weight)


PEAK_PROBE = """
import numpy as np
N, D, C = {shape}
rng = np.random.default_rng(0)
hidden = rng.standard_normal((N, D), dtype=np.float32)
weight = rng.standard_normal((C, D), dtype=np.float32)
weight *= 0.02
target = rng.integers(0, C, N)
{setup}
def status(field):       # Linux: this process's VmRSS (resident now) or VmHWM (its peak), bytes
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024
before = status("VmRSS")
{call}
print(status("VmHWM") - before)
"""
PEAK_CALLS = {
    "cyburn": ("import cyburn as cb",
               "cb.linear_cross_entropy(hidden, weight, target, return_grad=True)"),
    "torch": ("import torch\nH, W, T = (torch.from_numpy(a) for a in (hidden, weight, target))"
              "\nH.requires_grad_(); W.requires_grad_()",
              "torch.nn.functional.cross_entropy(H @ W.T, T).backward()"),
}


def run_linear_cross_entropy_memory(args, progress=None):
    """Peak memory a linear_cross_entropy forward + backward adds to its process (its
    outputs included), measured in fresh processes: the resident-set high-water mark after
    the call less the resident set before it (Linux's /proc/self/status)."""
    peaks = {}
    for name, (setup, call) in PEAK_CALLS.items():
        if name == "torch" and torch is None:
            continue
        code = PEAK_PROBE.format(shape=LM_HEAD, setup=setup, call=call)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True)
        peaks[name] = int(result.stdout.split()[-1])
    if progress:
        progress.clear()
    print(f"linear_cross_entropy {LM_HEAD[:2]} x {LM_HEAD[2]} forward + backward, peak extra "
          f"memory (outputs included; dweight alone is {LM_HEAD[1] * LM_HEAD[2] * 4 >> 20} MiB):")
    for name, peak in peaks.items():
        ratio = f"   {peak / peaks['cyburn']:.2f}x cyburn's" if name != "cyburn" else ""
        print(f"  {name:<7} {peak / 2**20:8.0f} MiB{ratio}")
    print()


ATTENTION_SCORES = (1, 12, 1024, 1024)  # GPT-2 small: one sequence of 1024 tokens, 12 heads
ATTENTION_SCALE = 0.125                   # 1 / sqrt(64), GPT-2's head size


def attention_cases(rng):
    """masked_softmax into out= on ATTENTION_SCORES: causal, with a boolean mask broadcast
    over the heads, and unmasked; masked_softmax_backward with a scale."""
    x = rng.standard_normal(ATTENTION_SCORES, dtype=np.float32)
    dy = rng.standard_normal(ATTENTION_SCORES, dtype=np.float32)
    out = np.empty_like(x)
    *lead, tq, tk = ATTENTION_SCORES
    heads = x.size // (tq * tk)
    keep = np.tril(np.ones((tq, tk), dtype=np.bool_))      # the causal pattern, as a mask
    visible = heads * int(keep.sum())
    y = cb.masked_softmax(x, causal=True)
    label = f"scores {ATTENTION_SCORES}"
    causal = {"cyburn": lambda: cb.masked_softmax(x, causal=True, out=out),
              "numpy": lambda: reference.masked_softmax(x, causal=True, out=out),
              # extra contenders for the note below (the table shows only numpy and torch)
              "softmax": lambda: cb.softmax(x, out=out),
              "unmasked": lambda: cb.masked_softmax(x, out=out)}
    masked = {"cyburn": lambda: cb.masked_softmax(x, mask=keep, out=out),
              "numpy": lambda: reference.masked_softmax(x, mask=keep, out=out)}
    unmasked = {"cyburn": lambda: cb.masked_softmax(x, out=out),
                "numpy": lambda: reference.masked_softmax(x, out=out)}
    backward = {"cyburn": lambda: cb.masked_softmax_backward(dy, y, scale=ATTENTION_SCALE,
                                                             out=out),
                "numpy": lambda: reference.masked_softmax_backward(dy, y, scale=ATTENTION_SCALE,
                                                                   out=out)}
    if torch:
        X, DY, Y, O = (torch.from_numpy(a) for a in (x, dy, y, out))
        # What a NumPy-style PyTorch user writes: fill the hidden scores with -inf (a new
        # tensor), then softmax, which has an out= overload.
        hidden = torch.triu(torch.ones(tq, tk, dtype=torch.bool), 1)
        causal["torch"] = lambda: torch.softmax(X.masked_fill(hidden, float("-inf")), -1, out=O)
        masked["torch"] = causal["torch"]       # the same call: the mask is the causal pattern
        unmasked["torch"] = lambda: torch.softmax(X, -1, out=O)
        # aten's softmax backward has no scale: for y = softmax(scale * x) the chain rule makes
        # dx = scale * softmax_backward(dy, y), a second (in-place) pass over the output.
        backward["torch"] = lambda: torch.ops.aten._softmax_backward_data.out(
            DY, Y, -1, torch.float32, grad_input=O).mul_(ATTENTION_SCALE)

    def causal_note(times):
        ours, t = times["cyburn"], {k: _fmt_time(v).strip() for k, v in times.items()}
        return (f"masked_softmax causal, out=, {t['cyburn']}; in the same rounds cb.softmax "
                f"{t['softmax']} = {times['softmax'] / ours:.2f}x and masked_softmax unmasked "
                f"{t['unmasked']} = {times['unmasked'] / ours:.2f}x the causal time "
                f"(target: >= 1.6x)")

    # traffic: causal reads only the visible scores and writes every output (zeros included)
    yield Case("masked_softmax", f"{label} causal", "out=", causal,
               (visible + x.size) * x.itemsize, x, note=causal_note)
    yield Case("masked_softmax", f"{label} bool mask", "out=", masked,
               2 * x.nbytes + keep.nbytes, x)
    yield Case("masked_softmax", f"{label} unmasked", "out=", unmasked, 2 * x.nbytes, x)
    yield Case("masked_softmax_backward", f"{label} scale={ATTENTION_SCALE}", "out=", backward,
               3 * x.nbytes, x)


ACTIVATION_SHAPE = (8192, 3072)         # GPT-2 small's MLP: 8 sequences of 1024 tokens, 4 * 768
ACTIVATION_SLICE = 16                   # slow NumPy references run on 1/16 of the rows


def activation_cases(rng):
    """relu, gelu (erf and tanh) and silu, forward and backward, into out= on
    ACTIVATION_SHAPE. The NumPy references of gelu and silu, in float64 with several
    temporaries (gelu's erf one calls math.erfc per element), are timed on 1/ACTIVATION_SLICE
    of the rows and their time multiplied by ACTIVATION_SLICE."""
    x = rng.standard_normal(ACTIVATION_SHAPE, dtype=np.float32)
    dy = rng.standard_normal(ACTIVATION_SHAPE, dtype=np.float32)
    out = np.empty_like(x)
    rows = ACTIVATION_SHAPE[0] // ACTIVATION_SLICE
    sx, sdy, sout = x[:rows], dy[:rows], out[:rows]
    label = f"{ACTIVATION_SHAPE}"
    sliced = f"; numpy 1/{ACTIVATION_SLICE} x{ACTIVATION_SLICE}"
    if torch:
        X, DY, O = (torch.from_numpy(a) for a in (x, dy, out))
        aten = torch.ops.aten
    for name, kw, slow in [("gelu", {"approximate": "tanh"}, True),
                           ("gelu", {"approximate": "none"}, True),
                           ("silu", {}, True), ("relu", {}, False)]:
        forward, backward = getattr(cb, name), getattr(cb, name + "_backward")
        ref_forward = getattr(reference, name)
        ref_backward = getattr(reference, name + "_backward")
        rx, rdy, rout = (sx, sdy, sout) if slow else (x, dy, out)
        fwd = {"cyburn": lambda f=forward, kw=kw: f(x, out=out, **kw),
               "numpy": lambda f=ref_forward, kw=kw: f(rx, out=rout, **kw)}
        bwd = {"cyburn": lambda f=backward, kw=kw: f(dy, x, out=out, **kw),
               "numpy": lambda f=ref_backward, kw=kw: f(rdy, rx, out=rout, **kw)}
        if torch:           # PyTorch's own kernels, writing into out
            if name == "gelu":
                a = kw["approximate"]
                fwd["torch"] = lambda a=a: torch._C._nn.gelu(X, approximate=a, out=O)
                bwd["torch"] = lambda a=a: aten.gelu_backward.grad_input(DY, X, approximate=a,
                                                                         grad_input=O)
            elif name == "silu":
                fwd["torch"] = lambda: torch._C._nn.silu(X, out=O)
                bwd["torch"] = lambda: aten.silu_backward.grad_input(DY, X, grad_input=O)
            else:
                fwd["torch"] = lambda: torch.clamp_min(X, 0, out=O)
                bwd["torch"] = lambda: aten.threshold_backward.grad_input(DY, X, 0,
                                                                          grad_input=O)
        case_label = label + (f" {kw['approximate']}" if kw else "") + (sliced if slow else "")
        scaled = {"numpy": ACTIVATION_SLICE} if slow else None
        yield Case(name, case_label, "out=", fwd, 2 * x.nbytes, x, scaled=scaled)
        yield Case(name + "_backward", case_label, "out=", bwd, 3 * x.nbytes, x, scaled=scaled)


SUITES = {"softmax": softmax_cases,
          "norm": lambda rng: [*row_norm_cases(rng), *channel_norm_cases(rng)],
          "xent": lambda rng: [*cross_entropy_cases(rng), *linear_cross_entropy_cases(rng)],
          "attention": attention_cases,
          "act": activation_cases,
          "gpt2": gpt2_cases}
# Rows each suite yields, for the progress display only (it shows "?" past the count). The
# suites are run as generators, one case timed before the next is made: some cases' lambdas
# read loop variables of their generator, so the cases must not be collected first.
# Suites that time and print in their own way: name -> run(args, progress).
OWN_TABLE_SUITES = {"compose": run_compose}
SUITE_ROWS = {"softmax": 8 * len(SOFTMAX_SHAPES), "norm": 10, "xent": 3, "attention": 4,
              "act": 8, "gpt2": 1}


ALL_SUITES = [*SUITES, *OWN_TABLE_SUITES]
ONE = "@1"                  # suffix of the one-thread contenders ("cyburn@1", "torch@1")


def run_cases(suite, cases, args, progress, total=None):
    """Time every case of one suite (`total` of them, if known), print its table and return
    its rows (case, times). Each case is timed as soon as it is made (see SUITE_ROWS)."""
    rows = []
    for done, case in enumerate(cases, 1):
        progress.update(done, total, suite, f"{case.function} {case.label} {case.mode}")
        contenders = dict(case.contenders)
        if args.scaling:
            for name in ("cyburn", "torch"):
                if name in contenders:
                    contenders[name + ONE] = OneThread(contenders[name])
        times = best_times(contenders, args.seconds, args.rounds)
        case.suite = suite
        case.contenders = None              # let the suite's arrays go as soon as possible
        rows.append((case, {name: t * case.scaled.get(name, 1) for name, t in times.items()}))
    progress.clear()
    print_table(rows)
    return rows


def _fmt_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} us"
    return f"{seconds * 1e3:8.2f} ms"


def roofline(case, times):
    """Achieved GB/s of cyburn, and as a percentage of np.copyto's in the same rounds."""
    gbs = case.traffic / times["cyburn"] / 1e9
    copy_gbs = 2 * case.operand_bytes / times["copyto"] / 1e9
    return gbs, 100 * gbs / copy_gbs


def print_table(rows):
    peers = ["numpy"] + (["torch"] if torch is not None else [])
    scaling = [p for p in ("cyburn", "torch") if any(p + ONE in t for _, t in rows)]
    n = cb.get_num_threads()
    header = (f"{'function':<23} {'case':<38} {'mode':<6} {'cyburn':>11} "
              + " ".join(f"{p:>11} {'x' + p:>7}" for p in peers)
              + f" {'GB/s':>6} {'%copyto':>7}"
              + "".join(f" {p + ' 1->' + str(n):>11}" for p in scaling))
    print(header)
    print("-" * len(header))
    for case, times in rows:
        ours = times["cyburn"]
        cells = " ".join(f"{_fmt_time(times[p])} {times[p] / ours:6.2f}x" if p in times
                         else f"{'-':>11} {'-':>7}" for p in peers)
        gbs, percent = roofline(case, times)
        threads = "".join(f" {times[p + ONE] / times[p]:10.2f}x" if p + ONE in times
                          else f" {'-':>11}" for p in scaling)
        print(f"{case.function:<23} {case.label:<38} {case.mode:<6} {_fmt_time(ours)} {cells} "
              f"{gbs:6.1f} {percent:6.0f}%{threads}")
    for case, times in rows:
        if case.note:
            print(case.note(times))
    print("x<peer> = peer time / cyburn time (higher: cyburn faster). Roofline: GB/s is the "
          "achieved bandwidth, counting each input read once and each output written once; "
          "%copyto compares it with np.copyto of one operand, timed in the same rounds."
          + (f" <lib> 1->{n} = its time on 1 thread / its time on {n} threads, timed in the "
             "same rounds." if scaling else "") + "\n")


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine(args):
    """One line saying what the run measured on: CPU, SIMD path, threads and versions."""
    from cyburn import __version__
    return (f"{_cpu_name()} ({os.cpu_count()} CPUs), {cb.simd_path()} path, "
            f"{cb.get_num_threads()} threads, float32{', --quick' if args.quick else ''}; "
            f"cyburn {__version__}, NumPy {np.__version__}, "
            f"PyTorch {torch.__version__ if torch else 'not installed'}")


def _row_label(case):
    return f"{case.function}  {case.label}  [{case.mode}]"


def _bar_text(ax, bars, values, fmt):
    for bar, v in zip(bars, values):
        if v == v:                          # not NaN (a missing contender)
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + fmt(v),
                    va="center", ha="left", fontsize=6)


def _speedup_text(v):
    return f"{v:.2f}x" if v < 10 else f"{v:.0f}x"


def _suite_lines(ax, rows):
    """Thin lines between suites."""
    for i, (case, _) in enumerate(rows):
        if i and case.suite != rows[i - 1][0].suite:
            ax.axhline(i - 0.5, color="0.6", lw=0.6)


def plot(rows, path, args):
    """Write the speed-up chart to `path` and the roofline + thread scaling one next to it
    (`<stem>-scaling<suffix>`); return both paths."""
    from matplotlib.figure import Figure     # imported here: matplotlib is an optional extra

    n_rows = len(rows)
    labels = [_row_label(case) for case, _ in rows]
    y = np.arange(n_rows)
    height = 1.7 + 0.28 * n_rows
    machine = _machine(args)
    peers = [("torch", "vs PyTorch", "tab:orange"), ("numpy", "vs NumPy", "tab:blue")]
    peers = [p for p in peers if any(p[0] in t for _, t in rows)]

    fig = Figure(figsize=(10.5, height), layout="constrained")
    ax = fig.add_subplot()
    bar_h = 0.8 / len(peers)
    for k, (peer, legend, color) in enumerate(peers):
        ratios = [t[peer] / t["cyburn"] if peer in t else float("nan") for _, t in rows]
        bars = ax.barh(y - 0.4 + bar_h * (k + 0.5), ratios, height=bar_h, color=color,
                       label=f"cyburn {legend} (its time / cyburn's)")
        _bar_text(ax, bars, ratios, _speedup_text)
    ax.set_xscale("log")
    ax.axvline(1, color="black", lw=1, ls="--")
    ax.set_yticks(y, labels, fontsize=7.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    _suite_lines(ax, rows)
    finite = [t[p] / t["cyburn"] for _, t in rows for p, *_ in peers if p in t]
    ax.set_xlim(min(0.5, min(finite) / 1.5), max(finite) * 3)
    ax.set_xlabel("speed-up of cyburn (log scale; right of the dashed 1x line: cyburn faster)")
    ax.grid(axis="x", which="major", color="0.85", lw=0.6)
    ax.set_axisbelow(True)
    fig.legend(loc="outside lower center", ncols=len(peers), fontsize=8, frameon=False)
    fig.suptitle(f"cyburn speed-up per kernel (best of interleaved rounds)\n{machine}",
                 fontsize=9)
    fig.savefig(path, dpi=110)

    root, ext = os.path.splitext(path)
    scaling_path = f"{root}-scaling{ext or '.png'}"
    threaded = [p for p in ("cyburn", "torch") if any(p + ONE in t for _, t in rows)]
    n = cb.get_num_threads()
    fig = Figure(figsize=(13 if threaded else 10, height), layout="constrained")
    axes = fig.subplots(1, 2 if threaded else 1, sharey=True, squeeze=False)[0]
    ax = axes[0]
    achieved = [roofline(case, t) for case, t in rows]
    bars = ax.barh(y, [p for _, p in achieved], height=0.6, color="tab:green")
    _bar_text(ax, bars, [g for g, _ in achieved], lambda g: f"{g:.1f} GB/s")
    ax.axvline(100, color="black", lw=1, ls="--")
    ax.set_xlim(0, max(150, max(p for _, p in achieved) * 1.3))
    ax.set_xlabel("roofline: achieved GB/s as % of np.copyto's", fontsize=9)
    ax.set_yticks(y, labels, fontsize=7.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.grid(axis="x", color="0.85", lw=0.6)
    ax.set_axisbelow(True)
    _suite_lines(ax, rows)
    if threaded:
        ax = axes[1]
        colors = {"cyburn": "tab:purple", "torch": "tab:orange"}
        bar_h = 0.8 / len(threaded)
        for k, lib in enumerate(threaded):
            ratios = [t[lib + ONE] / t[lib] if lib + ONE in t else float("nan")
                      for _, t in rows]
            bars = ax.barh(y - 0.4 + bar_h * (k + 0.5), ratios, height=bar_h,
                           color=colors[lib], label=lib)
            _bar_text(ax, bars, ratios, lambda v: f"{v:.2f}x")
        ax.axvline(1, color="black", lw=1, ls="--")
        ax.axvline(n, color="0.4", lw=1, ls=":")
        finite = [t[lib + ONE] / t[lib] for _, t in rows for lib in threaded if lib + ONE in t]
        ax.set_xlim(0, max(n * 1.3, max(finite) * 1.2))
        ax.set_xlabel(f"thread scaling: time on 1 thread / on {n} (dotted: ideal)", fontsize=9)
        ax.grid(axis="x", color="0.85", lw=0.6)
        ax.set_axisbelow(True)
        fig.legend(loc="outside lower right", ncols=len(threaded), fontsize=8, frameon=False,
                   title=f"1 -> {n} threads:", title_fontsize=8, alignment="left")
        _suite_lines(ax, rows)
    fig.suptitle("cyburn roofline: achieved GB/s (at the bars) against single-threaded "
                 "np.copyto's, same rounds" + (f", and 1 -> {n} thread scaling" if threaded
                                                else "") + f"\n{machine}", fontsize=9)
    fig.savefig(scaling_path, dpi=110)
    return path, scaling_path


SIMD_PROBE = """
import time, numpy as np, cyburn as cb
x = np.random.default_rng(0).standard_normal((12288, 1024), dtype=np.float32)
y = np.empty_like(x)
cb.softmax(x, out=y)
best = min((lambda t: (cb.softmax(x, out=y), time.perf_counter() - t)[1])(time.perf_counter())
           for _ in range({reps}))
print(best)
"""


def run_simd_levels(args, progress=None):
    """softmax (12288, 1024) float32 into out= on every SIMD path this CPU runs."""
    from cyburn import _runtime
    levels = _runtime.simd_levels()
    times = {}
    for level in levels:
        env = dict(os.environ, CYBURN_SIMD=level)
        result = subprocess.run([sys.executable, "-c", SIMD_PROBE.format(reps=args.rounds)],
                                env=env, capture_output=True, text=True, check=True)
        times[level] = float(result.stdout)
    best = levels[-1]
    if progress:
        progress.clear()
    print(f"\nsoftmax (12288, 1024) float32, out=, per SIMD path (best of {args.rounds}):")
    for level in levels:
        print(f"  {level:<9} {_fmt_time(times[level])}   {times[level] / times[best]:5.2f}x the "
              f"time of {best}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cyburn.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--threads", type=int, default=None, help="threads for cyburn and torch")
    parser.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=None,
                        help="also time cyburn and torch on 1 thread, in the same rounds, and "
                             "print their 1->N thread speed-up (about 1.5x the run time; "
                             "default: on with --plot, else off)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="after the run, write the speed-up chart to FILE.png and the "
                             "roofline (and, with --scaling, thread scaling) chart to "
                             "FILE-scaling.png; needs matplotlib (pip install 'cyburn[plot]')")
    parser.add_argument("--no-progress", action="store_true",
                        help="do not report progress on stderr")
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"what to run: {', '.join(ALL_SUITES)} (default: all)")
    args = parser.parse_args(argv)
    args.suites = args.suites or list(ALL_SUITES)
    for suite in args.suites:
        if suite not in ALL_SUITES:
            parser.error(f"unknown suite {suite!r}; choose from {', '.join(ALL_SUITES)}")
    if args.plot:                           # fail now, not after a long run
        if importlib.util.find_spec("matplotlib") is None:
            parser.error("--plot needs matplotlib, which is not installed: "
                         "pip install 'cyburn[plot]' (or pip install matplotlib)")
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            parser.error(f"--plot: no directory {folder!r}")
    if args.scaling is None:
        args.scaling = bool(args.plot)
    args.seconds, args.rounds = (0.2, 15) if args.quick else (1.0, 50)
    if args.threads:
        cb.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(cb.get_num_threads())
    if args.scaling and cb.get_num_threads() == 1:
        print("--scaling: cyburn runs on 1 thread already; no scaling to measure",
              file=sys.stderr)
        args.scaling = False
    cb.show_config()
    print(f"numpy {np.__version__}; torch {torch.__version__ if torch else 'not installed'}; "
          f"threads {cb.get_num_threads()}")
    if args.scaling and not OneThread.blas_limited():
        print("(threadpoolctl not installed: on 1 thread, linear_cross_entropy's NumPy matrix "
              "products still use every BLAS thread)")
    print()
    progress = Progress(enabled=not args.no_progress)
    rows = []
    for i, suite in enumerate(args.suites, 1):
        name = suite if len(args.suites) == 1 else f"{suite} ({i}/{len(args.suites)})"
        if suite in OWN_TABLE_SUITES:
            OWN_TABLE_SUITES[suite](args, progress)
            continue
        rows += run_cases(name, SUITES[suite](np.random.default_rng(0)), args, progress,
                          SUITE_ROWS.get(suite))
    if "xent" in args.suites:
        progress.update(1, 1, "xent", "linear_cross_entropy peak memory, in fresh processes")
        run_linear_cross_entropy_memory(args, progress)
    if "gpt2" in args.suites:
        run_gpt2(args, progress)
    if "softmax" in args.suites:
        progress.update(1, 1, "softmax", "softmax on every SIMD path, in fresh processes")
        run_simd_levels(args, progress)
    if args.plot:
        for written in plot(rows, args.plot, args):
            print(f"wrote {written}")


if __name__ == "__main__":
    main()
