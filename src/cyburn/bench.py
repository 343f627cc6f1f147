"""Side-by-side benchmark: cyburn vs its NumPy reference vs PyTorch (when installed).

    python -m cyburn.bench            # GPT-2 small shapes, float32, all threads
    python -m cyburn.bench --quick    # fewer repetitions
    python -m cyburn.bench norm       # one suite: softmax, norm, xent, attention, act

Every case times its contenders interleaved (one call of each per round, repeated), so
they share the machine's state; the table reports each one's best time and the ratios against
cyburn from the same run. GB/s counts the bytes a kernel must read and write, and is compared
with np.copyto's bandwidth measured in the same run.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

import cyburn as cb
from cyburn import reference

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
    for f in contenders.values():
        f()
    slowest = max(_time_once(f) for f in contenders.values())
    rounds = int(min(max_rounds, max(5, min_seconds / max(slowest, 1e-9))))
    batch = int(1e-3 / max(slowest, 1e-7)) + 1 if slowest < 1e-4 else 1  # tiny calls: batches
    samples = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, f in contenders.items():
            warm_until = time.perf_counter() + WARM_SECONDS
            while time.perf_counter() < warm_until:
                f()
            samples[name].append(_time_once(f, batch) / batch)
    return {name: min(s) for name, s in samples.items()}


def _time_once(f, calls=1):
    start = time.perf_counter()
    for _ in range(calls):
        f()
    return time.perf_counter() - start


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


def run_linear_cross_entropy_memory(args):
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
          "act": activation_cases}


def run_cases(cases, args):
    rows = []
    for case in cases:
        times = best_times(case.contenders, args.seconds, args.rounds)
        rows.append((case, {name: t * case.scaled.get(name, 1) for name, t in times.items()}))
    print_table(rows)


def _fmt_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} us"
    return f"{seconds * 1e3:8.2f} ms"


def print_table(rows):
    peers = ["numpy"] + (["torch"] if torch is not None else [])
    header = (f"{'function':<23} {'case':<38} {'mode':<6} {'cyburn':>11} "
              + " ".join(f"{p:>11} {'x' + p:>7}" for p in peers)
              + f" {'GB/s':>6} {'%copyto':>7}")
    print(header)
    print("-" * len(header))
    for case, times in rows:
        ours = times["cyburn"]
        cells = " ".join(f"{_fmt_time(times[p])} {times[p] / ours:6.2f}x" if p in times
                         else f"{'-':>11} {'-':>7}" for p in peers)
        gbs = case.traffic / ours / 1e9
        copy_gbs = 2 * case.operand_bytes / times["copyto"] / 1e9
        print(f"{case.function:<23} {case.label:<38} {case.mode:<6} {_fmt_time(ours)} {cells} "
              f"{gbs:6.1f} {100 * gbs / copy_gbs:6.0f}%")
    for case, times in rows:
        if case.note:
            print(case.note(times))
    print("x<peer> = peer time / cyburn time (higher: cyburn faster). GB/s counts each input "
          "read once and each output written once; %copyto compares it with np.copyto of one "
          "operand, timed in the same rounds.\n")


SIMD_PROBE = """
import time, numpy as np, cyburn as cb
x = np.random.default_rng(0).standard_normal((12288, 1024), dtype=np.float32)
y = np.empty_like(x)
cb.softmax(x, out=y)
best = min((lambda t: (cb.softmax(x, out=y), time.perf_counter() - t)[1])(time.perf_counter())
           for _ in range({reps}))
print(best)
"""


def run_simd_levels(args):
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
    print(f"\nsoftmax (12288, 1024) float32, out=, per SIMD path (best of {args.rounds}):")
    for level in levels:
        print(f"  {level:<9} {_fmt_time(times[level])}   {times[level] / times[best]:5.2f}x the "
              f"time of {best}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cyburn.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--threads", type=int, default=None, help="threads for cyburn and torch")
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"what to run: {', '.join(SUITES)} (default: all)")
    args = parser.parse_args(argv)
    args.suites = args.suites or list(SUITES)
    for suite in args.suites:
        if suite not in SUITES:
            parser.error(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
    args.seconds, args.rounds = (0.2, 15) if args.quick else (1.0, 50)
    if args.threads:
        cb.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(cb.get_num_threads())
    cb.show_config()
    print(f"numpy {np.__version__}; torch {torch.__version__ if torch else 'not installed'}; "
          f"threads {cb.get_num_threads()}")
    print()
    for suite in args.suites:
        run_cases(SUITES[suite](np.random.default_rng(0)), args)
    if "xent" in args.suites:
        run_linear_cross_entropy_memory(args)
    if "softmax" in args.suites:
        run_simd_levels(args)


if __name__ == "__main__":
    main()
