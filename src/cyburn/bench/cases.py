"""The rows of cyburn's benchmark, one registry for `python -m cyburn.bench` and for the
pytest-benchmark suites in benchmarks/.

A Row is cheap: the function, the case, the mode and a `make` that builds the inputs and the
contenders (a Case) only when the row is timed, so that a run holds one row's arrays at a
time. Rows of one shape share their random inputs (`_normal` keeps the last ones made).
"""
import functools
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

import cyburn as cb
from cyburn import reference
from cyburn.bench import machine, ort
from cyburn.bench.report import format_time

try:
    import torch
except ImportError:          # PyTorch is an optional peer
    torch = None


CONTENDERS = ("cyburn", "numpy", "torch", ort.NAME)  # the table's columns, in order
LARGE_BYTES = 1 << 20       # a large row (an input of 1 MiB or more) has a ceiling and ...
NUMPY_PARTS = 16            # ... times its NumPy reference on 1/16 of the input, or less:
PART_BYTES = 16 << 20       # a part holds at most about this much of the input


class Case:
    """One row's contenders (name -> callable, or None for a peer that has no such call)
    for one function, input and mode; the memory pattern of the function (machine.PATTERNS,
    None for one bound by arithmetic) over arrays of `operand`'s size, and, for a large
    operand, the probes of that pattern on such arrays ("ceiling", and "ceiling nt" when the
    bytes exceed the last-level cache), timed with the contenders.

    traffic: the bytes the function must move, each input read once and each output written
    once (default: the pattern's).
    scaled: contender -> factor its measured time is multiplied by (a slow contender timed on
    a part of the input, e.g. {"numpy": 16} for 1/16 of the rows; see Part).
    note: times -> a line printed under the table (comparisons of extra contenders, which
    the table's columns do not show)."""

    def __init__(self, contenders, pattern, operand, *, traffic=None, scaled=None, note=None):
        self.pattern, self.operand_bytes = pattern, operand.nbytes
        self.traffic = traffic or machine.pattern_bytes(pattern, operand.nbytes)
        self.contenders = {name: f for name, f in contenders.items() if f is not None}
        if pattern and operand.nbytes >= LARGE_BYTES:     # (a small call: overhead, no GB/s)
            self.contenders.update(machine.probes(pattern, operand,
                                                  streaming=machine.streams(self.traffic)))
        self.scaled, self.note = scaled or {}, note


@dataclass
class Row:
    """A row of the report: `make()` builds its Case. `core` rows make the default run.
    regime: "gpt2" (GPT-2 small's shape), "stream" (its streaming variant, see regimes),
    "both" (a GPT-2 shape that streams already) or "small"; `skip` says why a row cannot run
    here (empty: it can)."""
    suite: str
    function: str
    label: str
    mode: str
    make: Callable[[], Case]
    core: bool = False
    regime: str = "gpt2"
    skip: str = ""

    @property
    def name(self):
        return f"{self.function} {self.label} {self.mode}"

    @property
    def id(self):
        """The name without spaces (a pytest id)."""
        return "_".join(self.name.split())


class Part:
    """The first 1/NUMPY_PARTS of a large row's arrays along `axis` (one not reduced), or less
    for an input over NUMPY_PARTS x PART_BYTES (a streaming row's: about PART_BYTES of it), on
    which its NumPy reference is timed: in float64 with temporaries it takes 10-100x
    cyburn's time, which would otherwise be most of a run. The time is multiplied by `scale`,
    the full length over the part's (the reference's cost is linear in that length). A row
    under LARGE_BYTES runs whole (scale 1)."""

    def __init__(self, x, axis=0):
        length = x.shape[axis]
        parts = max(NUMPY_PARTS, -(-x.nbytes // PART_BYTES)) if x.nbytes >= LARGE_BYTES else 1
        self.axis, self.stop = axis, max(1, length // parts)
        self.scale = length / self.stop

    def __call__(self, *arrays):
        """The part of each array (a view along axis 0, a contiguous copy along others)."""
        index = (slice(None),) * self.axis + (slice(0, self.stop),)
        parts = tuple(np.ascontiguousarray(a[index]) for a in arrays)
        return parts if len(parts) > 1 else parts[0]

    def scaled(self):
        return {"numpy": self.scale} if self.scale != 1 else None


STREAM_FACTOR = 2       # a streaming variant's working set: at least twice the last-level cache
FOOTPRINT = 8           # arrays of its operand's size a row holds at most (inputs, outputs,
                        # the peers' and the probes' own)


def regimes(shape, pattern, grow=0):
    """[(regime, shape, skip)] of a large case: GPT-2's `shape`, and its streaming variant,
    `shape` with axis `grow` (one not reduced) multiplied by the least integer that makes
    the pattern's arrays (machine.PATTERNS) hold at least STREAM_FACTOR times the last-level
    cache detected at run time; one row, "both", when the GPT-2 shape holds that much
    already (or "gpt2" alone when the OS does not say). The variant is skipped, with a
    reason, when FOOTPRINT arrays of its size exceed the available memory."""
    llc = machine.last_level_cache()
    reads, writes, _ = machine.PATTERNS[pattern]
    operand = 4 * int(np.prod(shape))
    if llc is None:
        return [("gpt2", shape, "")]
    factor = -(-STREAM_FACTOR * llc // ((reads + writes) * operand))      # ceil
    if factor <= 1:
        return [("both", shape, "")]
    stream = tuple(d * factor if i == grow else d for i, d in enumerate(shape))
    memory, needed = machine.available_memory(), FOOTPRINT * operand * factor
    skip = ("" if memory is None or needed <= memory else
            f"needs about {needed / 2**30:.1f} GiB of memory, {memory / 2**30:.1f} available")
    return [("gpt2", shape, ""), ("stream", stream, skip)]


def large_rows(suite, function, mode, describe, make, shape, pattern, core, grow=0):
    """The Rows of one large case in every regime: describe(shape) is a row's label,
    make(shape) its Case."""
    for regime, size, skip in regimes(shape, pattern, grow):
        yield Row(suite, function, describe(size), mode, functools.partial(make, size), core,
                  regime, skip)


@functools.lru_cache(maxsize=1)
def _normal(shape, count=2):
    """`count` float32 arrays of standard normal numbers of `shape`: the inputs of a row (the
    same for every row of that shape, made once for consecutive ones; no contender writes
    them)."""
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal(shape, dtype=np.float32) for _ in range(count))


def _weights(n):
    """A weight and a bias of n float32 numbers."""
    rng = np.random.default_rng(1)
    return rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)


def _modes(out):
    """(mode, keyword arguments) of a call that allocates and of one into `out`."""
    return [("alloc", {}), ("out=", {"out": out})]


# ---- softmax ------------------------------------------------------------------------------------

SOFTMAX_SHAPES = [          # (label, shape, axis)
    ("attention rows", (12288, 1024), -1),
    ("LM-head rows", (1024, 50257), -1),
    ("non-last axis", (1024, 12288), 0),
    ("small", (4, 64), -1),
]
SOFTMAX_FUNCTIONS = ("softmax", "log_softmax", "softmax_backward", "log_softmax_backward")
SOFTMAX_CORE = {            # the rows of the default run: (shape label, function, mode)
    ("attention rows", "softmax", "alloc"), ("attention rows", "softmax", "out="),
    ("attention rows", "softmax_backward", "out="),
    ("LM-head rows", "log_softmax_backward", "out="), ("non-last axis", "softmax", "out="),
    ("small", "softmax", "alloc"), ("small", "softmax", "out="),
}


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


def softmax_case(name, axis, mode, shape):
    x, dy = _normal(shape)
    out = np.empty_like(x)
    if name == "softmax_backward":
        inputs = (dy, cb.softmax(x, axis))
    elif name == "log_softmax_backward":
        inputs = (dy, cb.log_softmax(x, axis))
    else:
        inputs = (x,)
    ours, ref = getattr(cb, name), getattr(reference, name)
    kw = dict(_modes(out))[mode]
    part = Part(x, axis=1 if axis == 0 else 0)
    part_inputs = part(*inputs) if len(inputs) > 1 else (part(*inputs),)
    part_kw = {"out": part(out)} if kw else {}
    contenders = {"cyburn": lambda: ours(*inputs, axis, **kw),
                  "numpy": lambda: ref(*part_inputs, axis, **part_kw)}
    if torch:
        contenders["torch"] = _torch_softmax_calls(name, inputs, axis, out)[mode == "out="]
    if name in ("softmax", "log_softmax"):
        contenders[ort.NAME] = ort.contender("Softmax" if name == "softmax" else "LogSoftmax",
                                             13, {"x": x}, {"y": out}, axis=axis)
    return Case(contenders, "triad" if name.endswith("backward") else "copy", x,
                scaled=part.scaled())


def softmax_rows():
    """Both modes of the four softmax functions on every SOFTMAX_SHAPES entry, in both
    regimes (small: one)."""
    for label, shape, axis in SOFTMAX_SHAPES:
        for name in SOFTMAX_FUNCTIONS:
            for mode in ("alloc", "out="):
                core = (label, name, mode) in SOFTMAX_CORE
                make = functools.partial(softmax_case, name, axis, mode)
                if label == "small":
                    yield Row("softmax", name, f"{label} {shape} axis={axis}", mode,
                              functools.partial(make, shape), core, "small")
                    continue
                yield from large_rows("softmax", name, mode,
                                      lambda s, label=label, axis=axis: f"{label} {s} axis={axis}",
                                      make, shape, "triad" if name.endswith("backward") else "copy",
                                      core, grow=1 if axis == 0 else 0)


# ---- normalization ------------------------------------------------------------------------------

NORM_ROWS = (8192, 768)                 # GPT-2 small: 8 sequences of 1024 tokens, 768 features
NORM_CHANNELS = (32, 64, 56, 56)        # a ResNet-style activation, for group and batch norm
NORM_N_BY_C = (16384, 1024)             # group norm of an (N, C) input: GROUPS segments a row
GROUPS = 32
NORM_CORE = {("layer_norm", "out="), ("rms_norm", "out="), ("layer_norm_backward", "alloc"),
             ("group_norm", "alloc"), ("batch_norm", "alloc")}


def row_norm_case(name, mode, shape):
    """layer_norm or rms_norm (forward in `mode`) or their backward on rows of `shape`."""
    x, dy = _normal(shape)
    n = shape[-1]
    w, b = _weights(n)
    out = np.empty_like(x)
    kw = dict(_modes(out)).get(mode, {})
    part = Part(x)
    px, pdy = part(x, dy)
    part_kw = {"out": part(out)} if kw else {}
    if name == "layer_norm":
        contenders = {"cyburn": lambda: cb.layer_norm(x, w, b, **kw),
                      "numpy": lambda: reference.layer_norm(px, w, b, **part_kw)}
    elif name == "rms_norm":
        contenders = {"cyburn": lambda: cb.rms_norm(x, w, **kw),
                      "numpy": lambda: reference.rms_norm(px, w, **part_kw)}
    elif name == "layer_norm_backward":
        _, mean, rstd = cb.layer_norm(x, w, b, return_stats=True)
        pmean, prstd = part(mean, rstd)
        contenders = {"cyburn": lambda: cb.layer_norm_backward(dy, x, w, mean, rstd),
                      "numpy": lambda: reference.layer_norm_backward(pdy, px, w, pmean, prstd)}
    else:
        _, rstd = cb.rms_norm(x, w, return_stats=True)
        prstd = part(rstd)
        contenders = {"cyburn": lambda: cb.rms_norm_backward(dy, x, w, rstd),
                      "numpy": lambda: reference.rms_norm_backward(pdy, px, w, prstd)}
    if torch:
        X, DY, W, B, O = (torch.from_numpy(a) for a in (x, dy, w, b, out))
        aten = torch.ops.aten
        if name == "layer_norm" and kw:
            _, TM, TS = aten.native_layer_norm(X, [n], W, B, 1e-5)
            M, S = torch.empty_like(TM), torch.empty_like(TS)
            contenders["torch"] = lambda: aten.native_layer_norm.out(X, [n], W, B, 1e-5,
                                                                     out0=O, out1=M, out2=S)
        elif name == "layer_norm":
            contenders["torch"] = lambda: aten.native_layer_norm(X, [n], W, B, 1e-5)
        elif name == "rms_norm":                                            # no out=
            contenders["torch"] = lambda: torch.nn.functional.rms_norm(X, (n,), W, 1e-6)
        elif name == "layer_norm_backward":
            _, TM, TS = aten.native_layer_norm(X, [n], W, B, 1e-5)
            contenders["torch"] = lambda: aten.native_layer_norm_backward(
                DY, X, [n], TM, TS, W, B, [True, True, True])
        else:
            XR, WR = X.clone().requires_grad_(), W.clone().requires_grad_()
            YR = torch.nn.functional.rms_norm(XR, (n,), WR, 1e-6)
            contenders["torch"] = lambda: torch.autograd.grad(YR, (XR, WR), DY,
                                                              retain_graph=True)
    if name == "layer_norm":
        contenders[ort.NAME] = ort.contender("LayerNormalization", 17,
                                             {"x": x, "scale": w, "bias": b}, {"y": out},
                                             axis=-1, epsilon=1e-5)
    elif name == "rms_norm":
        contenders[ort.NAME] = ort.contender("RMSNormalization", 23, {"x": x, "scale": w},
                                             {"y": out}, axis=-1, epsilon=1e-6)
    return Case(contenders, "triad" if name.endswith("backward") else "copy", x,
                scaled=part.scaled())


def channel_norm_case(name, shape):
    """group_norm (GROUPS groups) or batch_norm (training, with running statistics) on
    (N, C, H, W) `shape`, forward or backward."""
    x, dy = _normal(shape)
    N, C = shape[:2]
    S = x.size // (N * C)
    w, b = _weights(C)
    running = [np.zeros(C, np.float32), np.ones(C, np.float32)]
    part = Part(x)                  # some of the N samples (batch norm's statistics per channel)
    px, pdy = part(x, dy)
    if name.startswith("group_norm"):
        _, mean, rstd = cb.group_norm(x, GROUPS, w, b, return_stats=True)
        pmean, prstd = part(mean, rstd)
    else:
        _, mean, rstd = cb.batch_norm(x, w, b, return_stats=True)
        pmean, prstd = mean, rstd
    contenders = {
        "group_norm": {"cyburn": lambda: cb.group_norm(x, GROUPS, w, b),
                       "numpy": lambda: reference.group_norm(px, GROUPS, w, b)},
        "group_norm_backward": {
            "cyburn": lambda: cb.group_norm_backward(dy, x, GROUPS, w, mean, rstd),
            "numpy": lambda: reference.group_norm_backward(pdy, px, GROUPS, w, pmean, prstd)},
        "batch_norm": {"cyburn": lambda: cb.batch_norm(x, w, b, running_mean=running[0],
                                                       running_var=running[1]),
                       "numpy": lambda: reference.batch_norm(px, w, b, running_mean=running[0],
                                                             running_var=running[1])},
        "batch_norm_backward": {
            "cyburn": lambda: cb.batch_norm_backward(dy, x, w, mean, rstd),
            "numpy": lambda: reference.batch_norm_backward(pdy, px, w, pmean, prstd)},
    }[name]
    if torch:
        aten = torch.ops.aten
        X, DY, W, B, RM, RV = (torch.from_numpy(a) for a in (x, dy, w, b, *running))
        if name == "group_norm":
            contenders["torch"] = lambda: aten.native_group_norm(X, W, B, N, C, S, GROUPS, 1e-5)
        elif name == "group_norm_backward":
            _, TGM, TGS = aten.native_group_norm(X, W, B, N, C, S, GROUPS, 1e-5)
            contenders["torch"] = lambda: aten.native_group_norm_backward(
                DY, X, TGM, TGS, W, N, C, S, GROUPS, [True, True, True])
        elif name == "batch_norm":
            contenders["torch"] = lambda: aten.native_batch_norm(X, W, B, RM, RV, True, 0.1,
                                                                 1e-5)
        else:
            _, TBM, TBS = aten.native_batch_norm(X, W, B, None, None, True, 0.1, 1e-5)
            contenders["torch"] = lambda: aten.native_batch_norm_backward(
                DY, X, W, RM, RV, TBM, TBS, True, 1e-5, [True, True, True])
    y = np.empty_like(x)
    if name == "group_norm":
        contenders[ort.NAME] = ort.contender("GroupNormalization", 21,
                                             {"x": x, "scale": w, "bias": b}, {"y": y},
                                             num_groups=GROUPS, epsilon=1e-5)
    elif name == "batch_norm":      # training: batch statistics, running ones updated
        stats = {"mean": np.zeros(C, np.float32), "var": np.ones(C, np.float32)}
        updated = {"running_mean": np.empty(C, np.float32),
                   "running_var": np.empty(C, np.float32)}
        contenders[ort.NAME] = ort.contender("BatchNormalization", 15,
                                             {"x": x, "scale": w, "bias": b, **stats},
                                             {"y": y, **updated}, epsilon=1e-5, momentum=0.9,
                                             training_mode=1)
    return Case(contenders, "triad" if name.endswith("backward") else "copy", x,
                scaled=part.scaled())


def norm_rows():
    """layer_norm and rms_norm on NORM_ROWS: forward (alloc and out=) and backward; group_norm
    and batch_norm on NORM_CHANNELS, forward and backward; and (--full) group_norm of an
    (N, C) input, NORM_N_BY_C, each beside layer_norm of the same data: the same bytes through
    the row kernels, segment by segment or row by row (issue 15: group norm at least as fast
    as layer norm)."""
    cases = [(name, mode) for mode in ("alloc", "out=") for name in ("layer_norm", "rms_norm")]
    cases += [("layer_norm_backward", "alloc"), ("rms_norm_backward", "alloc")]
    for name, mode in cases:
        yield from large_rows("norm", name, mode, lambda s: f"rows {s}",
                              functools.partial(row_norm_case, name, mode), NORM_ROWS,
                              _norm_pattern(name), (name, mode) in NORM_CORE)
    for name in ("group_norm", "group_norm_backward", "batch_norm", "batch_norm_backward"):
        yield from large_rows("norm", name, "alloc", lambda s: f"(N, C, H, W) {s}",
                              functools.partial(channel_norm_case, name), NORM_CHANNELS,
                              _norm_pattern(name), (name, "alloc") in NORM_CORE)
    for group, layer in (("group_norm", "layer_norm"),
                         ("group_norm_backward", "layer_norm_backward")):
        yield from large_rows("norm", group, "alloc", lambda s: f"(N, C) {s}",
                              functools.partial(channel_norm_case, group), NORM_N_BY_C,
                              _norm_pattern(group), False)
        yield from large_rows("norm", layer, "alloc", lambda s: f"rows {s}",
                              functools.partial(row_norm_case, layer, "alloc"), NORM_N_BY_C,
                              _norm_pattern(layer), False)


def _norm_pattern(name):
    return "triad" if name.endswith("backward") else "copy"


# ---- cross-entropy ------------------------------------------------------------------------------

CE_LOGITS = (2048, 50257)               # GPT-2's vocabulary, 2048 token positions
LM_HEAD = (1024, 768, 50257)            # hidden (N, D) x weight (C, D)


def _torch_loss_and_grad(loss_of, *tensors):
    leaves = [t.detach().requires_grad_() for t in tensors]
    loss_of(*leaves).backward()
    return [t.grad for t in leaves]


def cross_entropy_case(mode, shape):
    """cross_entropy on logits of `shape`: forward ("alloc"), or forward + backward into
    grad_out ("grad")."""
    (x,) = _normal(shape, 1)
    target = np.random.default_rng(1).integers(0, shape[1], shape[0])
    part = Part(x)
    px, ptarget = part(x, target)
    if mode == "alloc":
        contenders = {"cyburn": lambda: cb.cross_entropy(x, target),
                      "numpy": lambda: reference.cross_entropy(px, ptarget)}
    else:
        grad = np.empty_like(x)
        contenders = {
            "cyburn": lambda: cb.cross_entropy(x, target, return_grad=True, grad_out=grad),
            "numpy": lambda: reference.cross_entropy(px, ptarget, return_grad=True)}
    if torch:
        X, T = torch.from_numpy(x), torch.from_numpy(target)
        contenders["torch"] = ((lambda: torch.nn.functional.cross_entropy(X, T))
                               if mode == "alloc" else
                               (lambda: _torch_loss_and_grad(
                                   lambda a: torch.nn.functional.cross_entropy(a, T), X)))
    if mode == "alloc":
        contenders[ort.NAME] = ort.contender("SoftmaxCrossEntropyLoss", 13,
                                             {"scores": x, "labels": target},
                                             {"loss": np.empty((), np.float32)},
                                             reduction="mean")
    return Case(contenders, "read" if mode == "alloc" else "copy", x, scaled=part.scaled())


def linear_cross_entropy_case():
    """linear_cross_entropy forward + backward for GPT-2's LM head (LM_HEAD)."""
    N, D, C = LM_HEAD
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((N, D), dtype=np.float32)
    weight = rng.standard_normal((C, D), dtype=np.float32) * np.float32(0.02)
    target = rng.integers(0, C, N)
    contenders = {
        "cyburn": lambda: cb.linear_cross_entropy(hidden, weight, target, return_grad=True),
        "numpy": lambda: reference.linear_cross_entropy(hidden, weight, target,
                                                        return_grad=True)}
    if torch:
        H, W, T = (torch.from_numpy(a) for a in (hidden, weight, target))
        contenders["torch"] = lambda: _torch_loss_and_grad(
            lambda h, w: torch.nn.functional.cross_entropy(h @ w.T, T), H, W)
    return Case(contenders, None, weight, traffic=hidden.nbytes * 2 + weight.nbytes * 2)


def xent_rows():
    """cross_entropy on CE_LOGITS, forward and forward + backward; linear_cross_entropy on
    LM_HEAD (its NumPy reference whole: matrix products, like cyburn's)."""
    for mode in ("alloc", "grad"):
        yield from large_rows("xent", "cross_entropy", mode, lambda s: f"logits {s}",
                              functools.partial(cross_entropy_case, mode), CE_LOGITS,
                              "read" if mode == "alloc" else "copy", True)
    N, D, C = LM_HEAD
    yield Row("xent", "linear_cross_entropy", f"hidden {(N, D)}, weight {(C, D)}", "grad",
              linear_cross_entropy_case)


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


# ---- attention ----------------------------------------------------------------------------------

ATTENTION_SCORES = (1, 12, 1024, 1024)  # GPT-2 small: one sequence of 1024 tokens, 12 heads
ATTENTION_SCALE = 0.125                   # 1 / sqrt(64), GPT-2's head size


ATTENTION_KINDS = ("causal", "bool mask", "unmasked", "backward")
ATTENTION_CORE = {"causal", "backward"}


def attention_case(kind, shape):
    """masked_softmax into out= on scores of `shape` (B, H, T, T): "causal", with a boolean
    mask of the causal pattern broadcast over the heads ("bool mask"), "unmasked"; or
    ("backward") masked_softmax_backward with a scale."""
    x, dy = _normal(shape)
    out = np.empty_like(x)
    *lead, tq, tk = shape
    heads = x.size // (tq * tk)
    keep = np.tril(np.ones((tq, tk), dtype=np.bool_))      # the causal pattern, as a mask
    kw = {"causal": {"causal": True}, "bool mask": {"mask": keep}, "unmasked": {}}.get(kind)
    part = Part(x, axis=1)                                  # some of the heads
    px, pdy, pout = part(x, dy, out)
    if kind == "backward":
        y = cb.masked_softmax(x, causal=True)
        py = part(y)
        contenders = {
            "cyburn": lambda: cb.masked_softmax_backward(dy, y, scale=ATTENTION_SCALE, out=out),
            "numpy": lambda: reference.masked_softmax_backward(pdy, py, scale=ATTENTION_SCALE,
                                                               out=pout)}
    else:
        contenders = {"cyburn": lambda: cb.masked_softmax(x, out=out, **kw),
                      "numpy": lambda: reference.masked_softmax(px, out=pout, **kw)}
    if kind == "causal":       # extra contenders for the note below (not columns of the table)
        contenders["softmax"] = lambda: cb.softmax(x, out=out)
        contenders["unmasked"] = lambda: cb.masked_softmax(x, out=out)
    if torch:
        X, DY, O = (torch.from_numpy(a) for a in (x, dy, out))
        # What a NumPy-style PyTorch user writes: fill the hidden scores with -inf (a new
        # tensor), then softmax, which has an out= overload (the bool mask is the causal
        # pattern: the same call).
        hidden = torch.triu(torch.ones(tq, tk, dtype=torch.bool), 1)
        if kind in ("causal", "bool mask"):
            contenders["torch"] = lambda: torch.softmax(X.masked_fill(hidden, float("-inf")),
                                                        -1, out=O)
        elif kind == "unmasked":
            contenders["torch"] = lambda: torch.softmax(X, -1, out=O)
        else:
            # aten's softmax backward has no scale: for y = softmax(scale * x) the chain rule
            # makes dx = scale * softmax_backward(dy, y), a second (in-place) pass.
            Y = torch.from_numpy(y)
            contenders["torch"] = lambda: torch.ops.aten._softmax_backward_data.out(
                DY, Y, -1, torch.float32, grad_input=O).mul_(ATTENTION_SCALE)

    if kind == "unmasked":
        contenders[ort.NAME] = ort.contender("Softmax", 13, {"x": x}, {"y": out}, axis=-1)

    def causal_note(times):
        ours, t = times["cyburn"], {k: format_time(v).strip() for k, v in times.items()}
        return (f"masked_softmax causal, out=, {t['cyburn']}; in the same rounds cb.softmax "
                f"{t['softmax']} = {times['softmax'] / ours:.2f}x and masked_softmax unmasked "
                f"{t['unmasked']} = {times['unmasked'] / ours:.2f}x the causal time "
                f"(target: >= 1.6x)")

    # traffic: causal reads only the visible scores and writes every output (zeros included)
    traffic = {"causal": (heads * int(keep.sum()) + x.size) * x.itemsize,
               "bool mask": 2 * x.nbytes + keep.nbytes, "unmasked": 2 * x.nbytes,
               "backward": 3 * x.nbytes}[kind]
    return Case(contenders, "triad" if kind == "backward" else "copy", x, traffic=traffic,
                scaled=part.scaled(),
                note=causal_note if kind == "causal" else None)


def attention_rows():
    for kind in ATTENTION_KINDS:
        function, label = (("masked_softmax_backward", f"scale={ATTENTION_SCALE}")
                           if kind == "backward" else ("masked_softmax", kind))
        yield from large_rows("attention", function, "out=",
                              lambda s, label=label: f"scores {s} {label}",
                              functools.partial(attention_case, kind), ATTENTION_SCORES,
                              "triad" if kind == "backward" else "copy", kind in ATTENTION_CORE)


# ---- activations --------------------------------------------------------------------------------

ACTIVATION_SHAPE = (8192, 3072)         # GPT-2 small's MLP: 8 sequences of 1024 tokens, 4 * 768
ACTIVATIONS = [                         # (function, keyword arguments)
    ("gelu", {"approximate": "tanh"}),
    ("gelu", {"approximate": "none"}),
    ("silu", {}),
    ("relu", {}),
]
ACTIVATION_CORE = {("gelu", "tanh"), ("gelu", "none"), ("gelu_backward", "none"), ("silu", ""),
                   ("silu_backward", ""), ("relu", "")}


def activation_case(name, kw, shape):
    """`name` (an activation or its _backward) into out= on `shape`."""
    x, dy = _normal(shape)
    out = np.empty_like(x)
    part = Part(x)
    px, pdy, pout = part(x, dy, out)
    ours, ref = getattr(cb, name), getattr(reference, name)
    backward = name.endswith("_backward")
    if backward:
        contenders = {"cyburn": lambda: ours(dy, x, out=out, **kw),
                      "numpy": lambda: ref(pdy, px, out=pout, **kw)}
    else:
        contenders = {"cyburn": lambda: ours(x, out=out, **kw),
                      "numpy": lambda: ref(px, out=pout, **kw)}
    if torch:               # PyTorch's own kernels, writing into out
        X, DY, O = (torch.from_numpy(a) for a in (x, dy, out))
        aten = torch.ops.aten
        contenders["torch"] = {
            "gelu": lambda: torch._C._nn.gelu(X, out=O, **kw),
            "gelu_backward": lambda: aten.gelu_backward.grad_input(DY, X, grad_input=O, **kw),
            "silu": lambda: torch._C._nn.silu(X, out=O),
            "silu_backward": lambda: aten.silu_backward.grad_input(DY, X, grad_input=O),
            "relu": lambda: torch.clamp_min(X, 0, out=O),
            "relu_backward": lambda: aten.threshold_backward.grad_input(DY, X, 0,
                                                                        grad_input=O),
        }[name]
    if name == "gelu":                                          # either approximation
        contenders[ort.NAME] = ort.contender("Gelu", 20, {"x": x}, {"y": out}, **kw)
    elif name == "silu":                                        # x sigmoid(x)
        contenders[ort.NAME] = ort.contender("Swish", 24, {"x": x}, {"y": out})
    elif name == "relu":
        contenders[ort.NAME] = ort.contender("Relu", 14, {"x": x}, {"y": out})
    return Case(contenders, "triad" if backward else "copy", x, scaled=part.scaled())


def activation_rows():
    """relu, gelu (erf and tanh) and silu, forward and backward, into out= on
    ACTIVATION_SHAPE."""
    for name, kw in ACTIVATIONS:
        approximate = kw.get("approximate", "")
        for function in (name, name + "_backward"):
            yield from large_rows("act", function, "out=",
                                  lambda s, a=approximate: f"{s} {a}".rstrip(),
                                  functools.partial(activation_case, function, kw),
                                  ACTIVATION_SHAPE,
                                  "triad" if function.endswith("backward") else "copy",
                                  (function, approximate) in ACTIVATION_CORE)


# ---- the SIMD paths, in fresh processes ----------------------------------------------------------

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
        print(f"  {level:<9} {format_time(times[level])}   {times[level] / times[best]:5.2f}x "
              f"the time of {best}")


# ---- the registry -------------------------------------------------------------------------------

def _gpt2_rows():
    from cyburn.bench.gpt2 import gpt2_rows       # (it imports Case and Row from here)
    return gpt2_rows()


SUITES = {"softmax": softmax_rows, "norm": norm_rows, "xent": xent_rows,
          "attention": attention_rows, "act": activation_rows, "gpt2": _gpt2_rows}


def rows(suites=None, full=True):
    """The rows of the named suites (default: all) in the report's order: every one, or
    (full=False) the core rows of the default run."""
    return [row for suite in (suites or SUITES) for row in SUITES[suite]() if full or row.core]
