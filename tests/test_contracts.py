"""The contracts every public function keeps, checked from one registry (scikit-learn's
LOSS_INSTANCES pattern in sklearn/_loss/tests/test_loss.py):

  * the registry covers every name of cyburn.__all__;
  * the function and cyburn.reference's have the same signature: which parameters may be
    given by position, the defaults, the `out=` parameter; one positional argument too many
    is a TypeError;
  * `out=` of the wrong shape or dtype, a list or a read-only array is refused (ValueError or
    TypeError naming what is wrong) and left alone, as is an integer input given as the out of
    its own float64 result;
  * the results are bitwise identical for 1, 2, 3, 5 and 7 threads (inputs of 32768 elements
    or more, where the kernels use threads), and right (the family's truth) at the last count;
  * zero-size inputs give results of the right shapes and dtypes (out= included);
  * array-likes (nested lists, Python scalars) give the results of float64 arrays;
  * Python threads calling the function at once (the GIL released) get the serial results;
  * PyTorch's counterpart agrees within the family's tolerance (skipped without torch).

REGISTRY maps each public function to a Contract: how to build valid inputs (Cases: small ones,
threaded ones, zero-size ones, concurrent ones, those compared with PyTorch), its positional
parameters and defaults, its out= parameter, how to check a result's accuracy, what a zero-size
result must be, PyTorch's counterpart and the tolerance against it. The families' own truth,
tolerances and input makers stay in their test files (test_softmax.py's in helpers.py) and are
used from here; what only one family does (its accuracy, extreme values, options, errors) is
tested there.
"""
import copy
import inspect
import math
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
from numpy.exceptions import AxisError

import cyburn as cb
import test_activations as act
import test_attention as att
import test_cross_entropy as xent
import test_normalization as norm
import test_optim as optim
from helpers import (DTYPES, F16, F32, F64, assert_bitwise_equal, assert_within,
                     check_against_truth, random_inputs, tolerance)

THREADS = (1, 2, 3, 5, 7)
MIN_THREADED = 32768                    # elements from which a kernel uses threads

# The public names that are not kernels, and why they have no contract here.
NOT_KERNELS = {
    "get_num_threads": "thread-count API (tests/test_softmax.py, test_config.py)",
    "set_num_threads": "thread-count API",
    "num_threads": "thread-count API",
    "show_config": "build report (tests/test_config.py)",
    "simd_path": "build report (tests/test_config.py)",
    "reference": "the NumPy oracle the contracts compare with",
}


# ================================================================================================
# The registry's vocabulary
# ================================================================================================

@dataclass
class Call:
    """The arguments of one call; `source`: what they were made from (the forward's inputs of a
    backward, for PyTorch's autograd; the gradients of several optimizer steps)."""
    args: tuple
    kwargs: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)

    def copy(self):
        """Fresh copies of the arrays, for functions that write into their arguments."""
        return Call(copy.deepcopy(self.args), copy.deepcopy(self.kwargs), self.source)


@dataclass(frozen=True)
class Case:
    """Valid inputs: build(rng, dtype) -> Call (or a list of Calls, for PyTorch), for each
    dtype of `dtypes`."""
    id: str
    build: Callable
    dtypes: tuple = (F32, F64)


@dataclass(frozen=True)
class Contract:
    """What one public function must do, and how to check it (see the module docstring)."""
    name: str
    small: tuple                         # Cases with (3, 4)-shaped results: out=, array-likes
    threaded: tuple                      # Cases of MIN_THREADED elements or more
    empty: tuple                         # Cases of zero-size inputs
    concurrent: tuple                    # Cases for Python threads
    positional: tuple                    # the parameters that may be given by position
    defaults: dict
    out: str = None                      # the name of the out= parameter
    out_kwargs: dict = field(default_factory=dict)   # what out= needs besides
    out_index: int = 0                   # which result out= receives, when there are several
    check: Callable = None               # (result, call, dtype): accuracy against the truth
    empty_check: Callable = None         # (result, call, dtype, function): zero-size results
    torch_cases: tuple = ()
    torch: Callable = None               # (torch, call, dtype) -> PyTorch's outputs
    torch_tol: Callable = None           # (call, dtype, torch's outputs) -> tolerances (NaN:
                                         # torch has no value there)
    torch_reference: bool = False        # cyburn.reference also within the tolerance of torch
    examples: tuple = ()                 # (args, kwargs, check(result)) of lists and scalars
    elementwise: bool = False            # any layout gives the same bits; scalars allowed
    array_likes: bool = True             # False: writes into its arguments, needs ndarrays
    run: Callable = None                 # (function, call) -> result, if not function(*args, **kw)
    outputs: Callable = None             # (call, result) -> the arrays compared bitwise

    @property
    def function(self):
        return getattr(cb, self.name)

    def call(self, c, function=None):
        function = function or self.function
        return self.run(function, c) if self.run else function(*c.args, **c.kwargs)

    def with_out(self, c, out=None):
        """The call with out_kwargs, and `out` given as the out= parameter."""
        kwargs = {**c.kwargs, **self.out_kwargs}
        if out is not None:
            kwargs[self.out] = out
        return self.function(*c.args, **kwargs)

    def out_result(self, result):
        """The result that out= receives."""
        return result[self.out_index] if isinstance(result, tuple) else result

    def results(self, c, result):
        """The arrays a call produced (None for an absent gradient), compared bitwise."""
        if self.outputs:
            return self.outputs(c, result)
        return list(result) if isinstance(result, tuple) else [result]


def case(id, build, dtypes=(F32, F64)):
    return Case(id, build, tuple(np.dtype(d) for d in dtypes))


def one_dtype(id, build, dtype=F32):
    return case(id, build, (dtype,))


def largest_input(c):
    arrays = [a for a in (*c.args, *c.kwargs.values()) if isinstance(a, np.ndarray)]
    return max(a.size for a in arrays)


def as_lists(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


# ================================================================================================
# softmax, log_softmax and their backward functions
# ================================================================================================

SOFTMAX_THREADED = [((600, 1000), -1), ((1000, 600), 0), ((7, 100, 300), 1), ((5, 33001), -1),
                    ((12288, 40), 0), ((4100, 1024), 0),
                    # column strips whose width follows the thread count
                    ((40, 3001), 0), ((3, 20, 2500), 1)]
SOFTMAX_EMPTY = [((0,), 0), ((0, 5), 0), ((0, 5), -1), ((5, 0), 0), ((5, 0), 1), ((3, 0, 4), 1),
                 ((3, 0, 4), -1)]
SOFTMAX_TORCH = [((8, 50), -1), ((8, 50), 0), ((4, 7, 9), 1), ((3, 1030), -1)]
SOFTMAX_CONCURRENT = [((128, 300), -1, F64), ((128, 300), 0, F32), ((12, 40), -1, F32),
                      ((12, 40), 0, F64)]


def softmax_call(name, rng, shape, dtype, axis=-1, scale=3.0):
    return Call(random_inputs(name, rng, shape, dtype, axis, "C", scale), {"axis": axis})


def softmax_empty_check(result, c, dtype, function):
    """The input's shape, float64 for integers and booleans; an axis out of range still an
    error."""
    shape = c.args[0].shape
    expected = F64 if dtype.kind in "biu" else dtype
    assert type(result) is np.ndarray and result.shape == shape and result.dtype == expected
    with pytest.raises(AxisError):
        function(*c.args, axis=len(shape))


def softmax_torch_call(name, rng, shape, axis, dtype):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    if name in ("softmax", "log_softmax"):
        rows = np.moveaxis(x, axis, -1)
        rows[0] = -np.inf                       # an all -inf slice: NaN in both
        rows[-1, ..., 1] = -np.inf
        return Call((x,), {"axis": axis})
    dy = rng.standard_normal(shape).astype(dtype)
    y = getattr(cb, name.removesuffix("_backward"))(x, axis=axis)
    return Call((dy, y), {"axis": axis})


def softmax_torch(name):
    def counterpart(torch, c, dtype):
        t = [torch.from_numpy(a) for a in c.args]
        axis = c.kwargs["axis"]
        if len(t) == 1:
            return [getattr(torch, name)(t[0], dim=axis).numpy()]
        backward = getattr(torch, "_softmax_backward_data" if name == "softmax_backward"
                           else "_log_softmax_backward_data")
        return [backward(t[0], t[1], axis, t[1].dtype).numpy()]
    return counterpart


def softmax_contract(name):
    forward = name in ("softmax", "log_softmax")
    examples = {
        "softmax": [(([[1.0, 2.0, 3.0]],), {}, lambda y: check_against_truth(
            "softmax", y, (np.array([[1.0, 2.0, 3.0]]),), -1, F64) is None)],
        "log_softmax": [(((0, 0),), {}, lambda y: y.tolist() == [-math.log(2)] * 2)],
        "softmax_backward": [(([1.0, 0.0], [0.5, 0.5]), {},
                              lambda dx: dx.tolist() == [0.25, -0.25])],
    }.get(name, [])
    return Contract(
        name,
        small=(case("small", lambda rng, d: softmax_call(name, rng, (3, 4), d)),),
        threaded=tuple(case(f"{shape}-axis{axis}", lambda rng, d, s=shape, a=axis:
                            softmax_call(name, rng, s, d, a, 4.0))
                       for shape, axis in SOFTMAX_THREADED),
        empty=tuple(case(f"{shape}-axis{axis}", lambda rng, d, s=shape, a=axis: Call(
                        (np.zeros(s, d),) * (1 if forward else 2), {"axis": a}),
                         (F32, F64, F16, np.int32, np.bool_))
                    for shape, axis in SOFTMAX_EMPTY),
        concurrent=tuple(one_dtype(f"{shape}-axis{axis}", lambda rng, d, s=shape, a=axis:
                                   softmax_call(name, rng, s, d, a), dtype)
                         for shape, axis, dtype in SOFTMAX_CONCURRENT),
        positional=("x", "axis") if forward else ("dy", "y", "axis"),
        defaults={"axis": -1, "out": None},
        out="out",
        check=lambda y, c, dtype: check_against_truth(name, y, c.args, c.kwargs["axis"], dtype),
        empty_check=softmax_empty_check,
        torch_cases=tuple(case(f"{shape}-axis{axis}", lambda rng, d, s=shape, a=axis:
                               softmax_torch_call(name, rng, s, a, d))
                          for shape, axis in SOFTMAX_TORCH),
        torch=softmax_torch(name),
        torch_tol=lambda c, dtype, want: [tolerance(name, c.args, c.kwargs["axis"], dtype,
                                                    k=8, s=32)[1]],
        examples=tuple(examples))


# ================================================================================================
# masked_softmax and masked_softmax_backward
# ================================================================================================

ATTENTION_THREADED = [(tq, tk, causal, kind) for tq, tk in [(200, 300), (300, 200), (256, 256)]
                      for causal, kind in [(False, None), (True, None), (True, "bool"),
                                           (False, "float"), (True, "float")]]
ATTENTION_EMPTY = [((0,), False), ((0, 5), True), ((5, 0), True), ((3, 0, 4), True),
                   ((2, 3, 4, 0), False), ((0, 3, 4), False)]
ATTENTION_TORCH = [(tq, tk, causal, kind) for tq, tk in [(9, 9), (5, 12), (12, 5), (64, 200)]
                   for causal, kind in [(True, None), (False, "bool"), (True, "bool"),
                                        (False, "float"), (True, "float")]]
ATTENTION_DTYPES = (F16, F32, F64, np.int32, np.bool_)


def attention_threaded_call(backward, rng, dtype, tq, tk, causal, kind):
    shape = (2, 3, tq, tk)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    mask = att.make_mask(rng, kind, (2, 1, tq, tk) if kind == "float" else (tq, tk), 0.8)
    forward = Call((x,), dict(scale=0.125, causal=causal, mask=mask))
    if not backward:
        return forward
    dy = rng.standard_normal(shape).astype(dtype)
    return Call((dy, cb.masked_softmax(x, **forward.kwargs)), dict(scale=0.125))


def attention_empty_call(backward, shape, causal, mask_kind):
    def build(rng, dtype):
        x = np.zeros(shape, dtype)
        if backward:
            return Call((x, x))
        mask = {"none": None, "bool": np.ones(shape[-1:], bool),
                "float": np.zeros(shape, np.float32)}[mask_kind]
        return Call((x,), dict(causal=causal, mask=mask))
    return build


def attention_empty_check(result, c, dtype, function):
    assert type(result) is np.ndarray and result.shape == c.args[0].shape
    assert result.dtype == att.result_dtype(dtype)


def attention_torch_call(backward, rng, dtype, tq, tk, causal, kind):
    """The forward on scores of `dtype`; the backward in float64 (PyTorch's autograd through
    the same masked softmax), on x of `dtype` upcast."""
    x = (rng.standard_normal((2, 3, tq, tk)) * 4).astype(dtype)
    mask = att.make_mask(rng, kind, (2, 1, tq, tk), 0.7, dtype)
    kwargs = dict(scale=0.125, causal=causal, mask=mask)
    if not backward:
        return Call((x,), kwargs)
    x64 = x.astype(F64)
    w = rng.standard_normal(x.shape)
    y64 = cb.masked_softmax(x64, **kwargs)
    return Call((w, y64), dict(scale=0.125), source=dict(x=x64, **kwargs))


def attention_torch_scores(torch, x, scale, causal, mask):
    """PyTorch's masked scores of x (a tensor), -inf where a key is hidden, and `live`: the
    rows that see a key (torch's softmax is NaN elsewhere, cyburn's is 0)."""
    tq, tk = x.shape[-2:]
    keep = np.ones((tq, tk), bool)
    if causal:
        keep = ~att.causal_hidden(tq, tk)
    if mask is not None and mask.dtype == np.bool_:
        keep = keep & mask
    t = x * scale
    if mask is not None and mask.dtype != np.bool_:
        t = t + torch.from_numpy(mask.astype(np.float64) if x.dtype == torch.float64 else mask)
    t = t.masked_fill(~torch.from_numpy(np.ascontiguousarray(np.broadcast_to(keep, x.shape))),
                      -math.inf)
    s, _ = att.scores(x.detach().numpy(), scale, causal, mask)
    return t, ~np.all(s == -np.inf, axis=-1)


def attention_torch(backward):
    def counterpart(torch, c, dtype):
        if not backward:
            (x,) = c.args
            t, live = attention_torch_scores(torch, torch.from_numpy(x), **c.kwargs)
            return [np.where(live[..., None], torch.softmax(t, dim=-1).numpy(), 0.0)]
        src = dict(c.source)
        tx = torch.tensor(src.pop("x"), requires_grad=True)
        t, live = attention_torch_scores(torch, tx, **src)
        torch.softmax(t, dim=-1).backward(torch.from_numpy(c.args[0]))
        return [np.where(live[..., None], tx.grad.numpy(), 0.0)]
    return counterpart


def attention_torch_tol(backward):
    def tol(c, dtype, want):
        if backward:
            return [1e-10 * np.abs(want[0]) + 1e-13]
        _, local, sums, _ = att.masked_truth(c.args[0], **c.kwargs)
        return [att.eps(dtype) * (8 * local + 32 * sums) + 4 * att.tiny(dtype)]
    return tol


def attention_examples():
    e = math.e
    return (
        (([[1.0, 2.0], [3.0, 4.0]],), dict(causal=True, mask=[True, True]), lambda y: (
            y[0].tolist() == [1.0, 0.0] and np.allclose(y[1], [1 / (1 + e), e / (1 + e)],
                                                        rtol=4e-16, atol=0))),
        (([0.0, 0.0],), dict(mask=[True, False]), lambda y: y.tolist() == [1.0, 0.0]),
        (([0.0, 0.0],), dict(mask=False), lambda y: y.tolist() == [0.0, 0.0]),
        (([0.0, 0.0],), dict(mask=-math.inf), lambda y: y.tolist() == [0.0, 0.0]),
        (([0.0, 0.0],), dict(mask=[0.0, -math.inf]), lambda y: y.tolist() == [1.0, 0.0]),
        (([0.0, 0.0],), dict(mask=0.5), lambda y: y.tolist() == [0.5, 0.5]),
        (([1.0, 1.0],), dict(scale=np.float32(3)), lambda y: y.tolist() == [0.5, 0.5]),
    )


def attention_contract(backward):
    name = "masked_softmax_backward" if backward else "masked_softmax"
    threaded = [case(f"{tq}x{tk}-causal{int(causal)}-{kind}",
                     lambda rng, d, a=(tq, tk, causal, kind): attention_threaded_call(
                         backward, rng, d, *a))
                for tq, tk, causal, kind in ATTENTION_THREADED]
    if backward:
        empty = [case(str(shape), attention_empty_call(True, shape, False, "none"),
                      ATTENTION_DTYPES) for shape, _ in ATTENTION_EMPTY]
    else:
        empty = [case(f"{shape}-causal{int(causal)}-{m}", attention_empty_call(False, shape,
                                                                              causal, m),
                      ATTENTION_DTYPES)
                 for shape, causal in ATTENTION_EMPTY for m in ("none", "bool", "float")]

    def small(rng, dtype):
        x = rng.standard_normal((3, 4)).astype(dtype)
        if backward:
            return Call((rng.standard_normal((3, 4)).astype(dtype),
                         cb.masked_softmax(x, causal=True)), dict(scale=0.5))
        return Call((x,), dict(causal=True, scale=0.5))

    def check(y, c, dtype):
        if not backward:
            att.check_forward(y, c.args[0], **c.kwargs, what="threads")

    return Contract(
        name,
        small=(case("small", small),),
        threaded=tuple(threaded),
        empty=tuple(empty),
        concurrent=tuple(case(f"{tq}x{tk}-causal{int(causal)}-{kind}",
                              lambda rng, d, a=(tq, tk, causal, kind): attention_threaded_call(
                                  backward, rng, d, *a))
                         for tq, tk, causal, kind in [(20, 30, True, "bool"),
                                                      (30, 20, False, "float")]),
        positional=("dy", "y") if backward else ("x",),
        defaults=dict(scale=1.0, out=None) if backward else dict(scale=1.0, causal=False,
                                                                  mask=None, out=None),
        out="out",
        check=check,
        empty_check=attention_empty_check,
        torch_cases=tuple(case(f"{tq}x{tk}-causal{int(causal)}-{kind}",
                               lambda rng, d, a=(tq, tk, causal, kind): attention_torch_call(
                                   backward, rng, d, *a))
                          for tq, tk, causal, kind in ATTENTION_TORCH),
        torch=attention_torch(backward),
        torch_tol=attention_torch_tol(backward),
        examples=(((([1.0, 0.0], [0.5, 0.5]), dict(scale=2),
                    lambda dx: dx.tolist() == [0.5, -0.5]),) if backward
                  else attention_examples()))


# ================================================================================================
# layer_norm, rms_norm, group_norm, instance_norm, batch_norm and their backward functions
# ================================================================================================

NORM_EMPTY = [("layer", (0, 5)), ("layer", (3, 0)), ("layer", (2, 0, 4)), ("layer", (0,)),
              ("rms", (0, 5)), ("rms", (3, 0)), ("rms", (0,)),
              ("group", (0, 6, 3)), ("group", (2, 6, 0)), ("group", (0, 6)),
              ("instance", (0, 3, 4)), ("instance", (2, 3, 0)),
              ("batch", (0, 3, 4)), ("batch", (2, 3, 0)), ("batch", (0, 3))]
RUNNING = (np.linspace(-1, 1, 8).astype(F32), np.linspace(0.5, 1.5, 8).astype(F32))


def norm_forward_call(kind, inputs, **kwargs):
    """The call of kind's forward on make_inputs' inputs."""
    args = [inputs["x"]]
    if kind == "group":
        args.append(inputs["groups"])
    args.append(inputs["weight"])
    if kind != "rms":
        args.append(inputs["bias"])
    for k in ("eps", "residual"):
        if inputs.get(k) is not None:
            kwargs[k] = inputs[k]
    return Call(tuple(args), kwargs, source=inputs)


def norm_backward_call(kind, forward, dy):
    """The backward's call on a forward's inputs and statistics (forward: a Call with
    return_stats=True)."""
    result = getattr(cb, norm.NAME[kind])(*forward.args, **forward.kwargs)
    h = result[1] if forward.kwargs.get("residual") is not None else forward.args[0]
    stats = result[-(1 if kind == "rms" else 2):]
    args = (dy, h) + ((forward.source["groups"],) if kind == "group" else ())
    return Call(args + (forward.source["weight"], *stats), source=dict(forward.source, x=h))


def norm_call(kind, backward, rng, shape, dtype, running=False, **options):
    inputs = norm.make_inputs(kind, rng, shape, dtype, **options)
    forward = norm_forward_call(kind, inputs, return_stats=True)
    if running:
        forward.kwargs.update(running_mean=RUNNING[0][:shape[1]].copy(),
                              running_var=RUNNING[1][:shape[1]].copy())
    if not backward:
        return forward
    return norm_backward_call(kind, forward, rng.standard_normal(shape).astype(dtype))


def norm_outputs(call, result):
    """The results, and the running statistics a training batch_norm updates."""
    return [*result, *(call.kwargs[k] for k in ("running_mean", "running_var")
                       if k in call.kwargs)]


def norm_empty_call(kind, backward, shape):
    def build(rng, dtype):
        f = norm.n_features(kind, shape)
        x = np.ones(shape, dtype)
        inputs = dict(x=x, weight=np.ones(f, dtype), bias=None if kind == "rms" else
                      np.zeros(f, dtype), groups=3 if kind == "group" else None)
        forward = norm_forward_call(kind, inputs, return_stats=True)
        if kind == "batch":
            forward.kwargs.update(running_mean=np.full(f, 0.5, dtype),
                                  running_var=np.full(f, 2.0, dtype))
        return norm_backward_call(kind, forward, x) if backward else forward
    return build


def norm_empty_check(kind, backward):
    def check(result, c, dtype, function):
        shape = c.args[1 if backward else 0].shape
        f = norm.n_features(kind, shape)
        if backward:
            dx, dw, db = result if kind != "rms" else (*result, None)
            assert dx.shape == shape and dx.dtype == dtype
            assert dw.shape == (f,) and np.all(dw == 0)
            if db is not None:
                assert db.shape == (f,) and np.all(db == 0)
            return
        assert result[0].shape == shape and result[0].dtype == dtype
        for s in result[1:]:
            assert s.shape == norm.stats_shape(kind, shape, 3) and s.dtype == dtype
            assert np.all(np.isnan(s))       # over an empty set: NaN (or no statistics at all)
        if kind == "batch":                                          # as PyTorch: unchanged
            assert np.all(c.kwargs["running_mean"] == 0.5)
            assert np.all(c.kwargs["running_var"] == 2.0)
    return check


def norm_torch_call(kind, backward, rng, dtype, affine):
    """make_inputs with a residual for the row norms and the default eps given explicitly
    (rms_norm's default differs from torch's, which takes eps=None as finfo(dtype).eps)."""
    shape = norm.SHAPE[kind]
    inputs = norm.make_inputs(kind, rng, shape, dtype, weight=affine, bias=affine,
                              residual=kind in norm.ROWS, eps=norm.DEFAULT_EPS[kind])
    forward = norm_forward_call(kind, inputs, return_stats=True)
    if not backward:
        return forward
    return norm_backward_call(kind, forward, rng.standard_normal(shape).astype(dtype))


def norm_torch(kind, backward):
    def counterpart(torch, c, dtype):
        src = c.source
        if backward:                        # autograd through torch.nn.functional's forward
            leaves = {k: torch.tensor(src[k], requires_grad=True)
                      for k in ("x", "weight", "bias") if src.get(k) is not None}
            y = norm.torch_forward(torch, kind, leaves["x"], leaves.get("weight"),
                                   leaves.get("bias"), None, src["groups"], src["eps"])
            y.backward(torch.from_numpy(c.args[0]))
            grads = [leaves[k].grad.numpy() if k in leaves else None
                     for k in ("x", "weight", "bias")]
            return grads[:2] if kind == "rms" else grads
        leaves = {k: torch.from_numpy(src[k])
                  for k in ("x", "weight", "bias", "residual") if src.get(k) is not None}
        y = norm.torch_forward(torch, kind, leaves["x"], leaves.get("weight"),
                               leaves.get("bias"), leaves.get("residual"), src["groups"],
                               src["eps"]).numpy()
        # the statistics PyTorch saves for its backward
        t = leaves["x"] if "residual" not in leaves else leaves["x"] + leaves["residual"]
        e = src["eps"]
        if kind == "layer":
            _, mean, rstd = torch.native_layer_norm(t, t.shape[-1:], None, None, e)
            stats = [mean[..., 0], rstd[..., 0]]
        elif kind in ("group", "instance"):
            n, ch = t.shape[:2]
            _, mean, rstd = torch.native_group_norm(t, None, None, n, ch, t[0, 0].numel(),
                                                    src["groups"] or ch, e)
            stats = [mean, rstd]
        elif kind == "batch":
            _, mean, rstd = torch.native_batch_norm(t, None, None, None, None, True, 0.1, e)
            stats = [mean, rstd]
        else:
            stats = [1 / torch.sqrt(torch.mean(t.double() ** 2, -1) + e)]
        h = [None] if "residual" in leaves else []      # h itself: not compared
        return [y, *h, *(s.numpy() for s in stats)]
    return counterpart


def norm_torch_tol(kind, backward):
    def tol(c, dtype, want):
        src = c.source
        if backward:
            tols = norm.backward_truth(kind, dtype, c.args[0], src["x"], src["weight"],
                                       c.args[-(1 if kind == "rms" else 2):], src["groups"])[1]
            return [None if t is None else 2 * t for t in tols][:2 if kind == "rms" else 3]
        inputs = {k: src[k] for k in ("x", "weight", "bias", "residual", "groups", "eps")}
        tol_y, tol_h, tol_stats = norm.forward_truth(kind, dtype, **inputs)[1]
        h = [2 * tol_h] if src.get("residual") is not None else []
        return [2 * tol_y, *h, *(2 * t for t in tol_stats)]
    return tol


NORM_POSITIONAL = {"layer": ("x", "weight", "bias"), "rms": ("x", "weight"),
                   "group": ("x", "num_groups", "weight", "bias"),
                   "instance": ("x", "weight", "bias"), "batch": ("x", "weight", "bias")}
NORM_BACKWARD_POSITIONAL = {"layer": ("dy", "x", "weight", "mean", "rstd"),
                            "rms": ("dy", "x", "weight", "rstd"),
                            "group": ("dy", "x", "num_groups", "weight", "mean", "rstd"),
                            "instance": ("dy", "x", "weight", "mean", "rstd"),
                            "batch": ("dy", "x", "weight", "mean", "rstd")}


def norm_examples(kind):
    rel = {"rtol": 1e-5, "atol": 0}
    return {
        "layer": [(([[1.0, 2.0, 3.0]],), {}, lambda y: np.allclose(
            y, [[-1.2247357, 0.0, 1.2247357]], rtol=1e-6, atol=1e-12))],
        "rms": [(([3.0, 4.0], [1, 2]), dict(return_stats=True, eps=0.0), lambda r: (
            np.allclose(r[0], [3 / math.sqrt(12.5), 8 / math.sqrt(12.5)], rtol=1e-15, atol=0)
            and r[1].shape == () and r[1].dtype == F64))],
        "group": [(([[1.0, 3.0]], 1), {}, lambda y: np.allclose(y, [[-1.0, 1.0]], **rel))],
        "batch": [(([[1.0], [3.0]],), {}, lambda y: np.allclose(y, [[-1.0], [1.0]], **rel))],
    }.get(kind, [])


def norm_contract(kind, backward):
    name = norm.NAME[kind] + ("_backward" if backward else "")
    rows = kind in norm.ROWS
    threaded = [case(str(norm.THREADED[kind]),
                     lambda rng, d: norm_call(kind, backward, rng, norm.THREADED[kind], d,
                                              residual=rows, groups=4, running=kind == "batch"))]
    if kind == "batch":         # short runs (prod(spatial) < 256): the column-sum kernels
        threaded += [case(str(shape), lambda rng, d, s=shape: norm_call(
            kind, backward, rng, s, d, groups=4, running=True)) for shape in ((5000, 8),
                                                                              (700, 8, 7))]
    small_shape = (3, 4) if rows else (3, 4, 5)
    small = case("small", lambda rng, d: norm_call(kind, backward, rng, small_shape, d,
                                                   groups=2))
    if not backward and rows:               # a plain call: y alone, as out= receives it
        small = case("small", lambda rng, d: Call((rng.standard_normal((3, 4)).astype(d),)))
    defaults = {"layer": dict(weight=None, bias=None, eps=1e-5, residual=None,
                              return_stats=False, out=None),
                "rms": dict(weight=None, eps=1e-6, residual=None, return_stats=False, out=None),
                "group": dict(weight=None, bias=None, eps=1e-5, return_stats=False),
                "instance": dict(weight=None, bias=None, eps=1e-5, return_stats=False),
                "batch": dict(weight=None, bias=None, running_mean=None, running_var=None,
                              training=True, momentum=0.1, eps=1e-5, return_stats=False)}[kind]
    return Contract(
        name,
        small=(small,),
        threaded=tuple(threaded),
        empty=tuple(one_dtype(str(shape), norm_empty_call(kind, backward, shape))
                    for k, shape in NORM_EMPTY if k == kind),
        concurrent=tuple(one_dtype(f"{norm.THREADED[kind]}-{i}", lambda rng, d: norm_call(
            kind, backward, rng, norm.THREADED[kind], d, residual=rows, groups=4))
                         for i in range(2)),
        positional=NORM_BACKWARD_POSITIONAL[kind] if backward else NORM_POSITIONAL[kind],
        defaults={} if backward else defaults,
        out="out" if rows and not backward else None,
        empty_check=norm_empty_check(kind, backward),
        torch_cases=tuple(case(f"affine{int(affine)}", lambda rng, d, a=affine: norm_torch_call(
            kind, backward, rng, d, a)) for affine in (True, False)),
        torch=norm_torch(kind, backward),
        torch_tol=norm_torch_tol(kind, backward),
        examples=() if backward else tuple(norm_examples(kind)),
        outputs=norm_outputs)


# ================================================================================================
# cross_entropy, cross_entropy_backward, linear_cross_entropy
# ================================================================================================

def xent_threaded_call(rng, dtype, kind):
    """xent's thread test inputs: (300, 1000) logits, every option, 10% of the rows ignored."""
    shape = (300, 1000)
    logits = xent.make_logits(rng, shape, dtype)
    target = xent.make_target(rng, shape, kind, ignored=0.1)
    return logits, target, xent.make_options(rng, shape[-1], dtype, **xent.ALL_OPTIONS)


def xent_call(name, kind, reduction="mean", return_grad=False, options=xent.ALL_OPTIONS):
    def build(rng, dtype):
        if name == "linear_cross_entropy":
            hidden, weight, bias, target = xent.linear_inputs(rng, 300, 48, 1000, dtype, kind,
                                                              ignored=0.1)
            kw = {k: v for k, v in options.items() if k != "weight"}
            return Call((hidden, weight, target), dict(kw, bias=bias, chunk_size=64,
                                                       return_grad=True))
        logits, target, kw = xent_threaded_call(rng, dtype, kind)
        if name == "cross_entropy_backward":
            return Call((logits, target, rng.uniform(-1, 1, logits.shape[0])),
                        dict(kw, reduction="none"))
        return Call((logits, target), dict(kw, reduction=reduction, return_grad=return_grad))
    return build


def xent_small(name):
    def build(rng, dtype):
        x = rng.standard_normal((3, 4)).astype(dtype)
        if name == "linear_cross_entropy":
            return Call((x, rng.standard_normal((5, 4)).astype(dtype), np.array([0, 4, 2])))
        return Call((x, np.array([0, 1, 2])))
    return build


XENT_EMPTY_OPTIONS = {"plain": {}, "all": dict(label_smoothing=0.1, z_loss=0.1, softcap=3.0,
                                               weight=True)}


def xent_empty_call(name, shape, kind, options):
    def build(rng, dtype):
        logits = np.ones(shape, dtype)
        target = np.zeros(shape[:-1], np.int64) if kind == "index" else np.ones(shape)
        kw = dict(options)
        if kw.pop("weight", False):
            kw["weight"] = np.ones(shape[-1], dtype)
        if name == "cross_entropy":
            kw["return_grad"] = True
        return Call((logits, target), kw)
    return build


def xent_empty_check(name):
    """No rows: a mean over nothing is NaN, a sum is 0, 'none' is empty; dlogits empty."""
    def check(result, c, dtype, function):
        logits, target = c.args
        shape = logits.shape
        kw = {k: v for k, v in c.kwargs.items() if k != "return_grad"}
        if name == "cross_entropy":
            mean, g = result
            assert mean.shape == () and mean.dtype == dtype and np.isnan(mean)
            assert g.shape == shape and g.dtype == dtype
            total = function(logits, target, reduction="sum", **kw)
            assert total.shape == () and total == 0
            none = function(logits, target, reduction="none", **kw)
            assert none.shape == shape[:-1] and none.dtype == dtype
            return
        for reduction in xent.REDUCTIONS:
            g = function(logits, target, reduction=reduction, **kw)
            assert g.shape == shape and g.dtype == dtype
    return check


def xent_torch_calls(name, options, kind):
    """3-d logits, every reduction (dloss per row for 'none', 0.5 otherwise)."""
    def build(rng, dtype):
        opts = xent.for_kind(options, kind)
        shape = (3, 4, 9)
        logits = xent.make_logits(rng, shape, dtype)
        target = xent.make_target(rng, shape, kind, opts["ignore_index"])
        if kind == "probabilities":
            target = target.astype(dtype)
        kw = xent.make_options(rng, shape[-1], dtype, **opts)
        calls = []
        for reduction in xent.REDUCTIONS:
            dloss = rng.uniform(-2, 2, shape[:-1]) if reduction == "none" else 0.5
            if name == "cross_entropy":
                calls.append(Call((logits, target), dict(kw, reduction=reduction),
                                  source=dict(dloss=dloss)))
            else:
                calls.append(Call((logits, target, dloss), dict(kw, reduction=reduction)))
        return calls
    return build


def xent_torch(name):
    def counterpart(torch, c, dtype):
        logits, target = c.args[:2]
        kw = dict(c.kwargs)
        reduction = kw.pop("reduction")
        tkw = dict(kw, weight=torch.from_numpy(kw["weight"]) if "weight" in kw else None)
        tx = torch.tensor(logits, requires_grad=True)
        loss = xent.torch_loss(torch, tx, torch.from_numpy(target), tkw, reduction)
        if name == "cross_entropy":
            return [loss.detach().numpy()]
        loss.backward(torch.tensor(c.args[2], dtype=tx.dtype).expand_as(loss))
        return [tx.grad.numpy()]
    return counterpart


def xent_torch_tol(name):
    def tol(c, dtype, want):
        logits, target = c.args[:2]
        kw = dict(c.kwargs)
        reduction = kw.pop("reduction")
        dloss = c.source["dloss"] if name == "cross_entropy" else c.args[2]
        _, _, tol_loss, tol_grad = xent.expected(logits, target, dtype, reduction, dloss=dloss,
                                                 **kw)
        return [2 * (tol_loss if name == "cross_entropy" else tol_grad)]
    return tol


def linear_torch_call(rng, dtype, options, bias, reduction):
    hidden, weight, b, target = xent.linear_inputs(
        rng, 12, 8, 20, dtype, bias=bias, ignore_index=options.get("ignore_index", -100))
    return Call((hidden, weight, target), dict(options, bias=b, reduction=reduction,
                                               return_grad=True))


def linear_torch(torch, c, dtype):
    hidden, weight, target = c.args
    kw = dict(c.kwargs)
    bias, reduction = kw.pop("bias"), kw.pop("reduction")
    kw.pop("return_grad")
    leaves = {k: torch.tensor(v, requires_grad=True)
              for k, v in (("hidden", hidden), ("weight", weight), ("bias", bias))
              if v is not None}
    logits = torch.nn.functional.linear(leaves["hidden"], leaves["weight"], leaves.get("bias"))
    loss = xent.torch_loss(torch, logits, torch.from_numpy(target), dict(kw, weight=None),
                           reduction)
    loss.backward(torch.ones_like(loss))
    return [loss.detach().numpy(), leaves["hidden"].grad.numpy(),
            leaves["weight"].grad.numpy(), leaves["bias"].grad.numpy() if "bias" in leaves
            else None]


def linear_torch_tol(c, dtype, want):
    hidden, weight, target = c.args
    kw = {k: v for k, v in c.kwargs.items() if k not in ("bias", "return_grad")}
    _, tols = xent.expected_linear(hidden, weight, target, c.kwargs["bias"], dtype, **kw)
    return [None if t is None else 2 * t for t in tols]


XENT_DEFAULTS = dict(ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0,
                     softcap=None)


def xent_examples(name):
    ln2 = math.log(2)

    def close(want, rtol=1e-15):
        return lambda got: np.allclose(got, want, rtol=rtol, atol=0)

    return {
        "cross_entropy": [
            (([[0.0, 0.0], [0.0, 0.0]], [0, 1]), {},
             lambda loss: loss.shape == () and close(ln2)(loss)),
            (([0.0, 0.0, 0.0], 1), {}, close(math.log(3))),
            (([[0.0, 0.0]], [[0.5, 0.5]]), dict(weight=[2, 2]), close(2 * ln2))],
        "cross_entropy_backward": [
            (([[0.0, 0.0]], [1], [2.0]), dict(reduction="none"), close([[1.0, -1.0]]))],
        "linear_cross_entropy": [
            (([[1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [0]), dict(bias=[0.0, 0.0],
                                                                 return_grad=True),
             lambda r: close(ln2)(r[0]) and close([-0.5, 0.5])(r[3]))],
    }[name]


def xent_contract(name):
    if name == "linear_cross_entropy":
        threaded = [case(kind, xent_call(name, kind)) for kind in xent.KINDS]
        torch_cases = [case(f"{opt}-bias{int(bias)}-{reduction}",
                            lambda rng, d, o=options, b=bias, r=reduction: linear_torch_call(
                                rng, d, o, b, r))
                       for opt, options in zip(("plain", "ls-ii3", "z-cap", "all"),
                                               xent.LINEAR_OPTIONS)
                       for bias in (True, False) for reduction in xent.REDUCTIONS]
        positional = ("hidden", "weight", "target")
        defaults = dict(XENT_DEFAULTS, bias=None, class_weight=None, chunk_size=None,
                        return_grad=False)
    else:
        backward = name == "cross_entropy_backward"
        threaded = [case(f"{kind}-{reduction}" + ("-grad" if grad else ""),
                         xent_call(name, kind, reduction, grad))
                    for kind in xent.KINDS
                    for reduction in (("none",) if backward else xent.REDUCTIONS)
                    for grad in ((False,) if backward else (False, True))]
        torch_cases = [case(f"{kind}-{options.id}", xent_torch_calls(name, options.values[0],
                                                                     kind))
                       for options in xent.option_cases() for kind in xent.KINDS]
        positional = ("logits", "target", "dloss") if backward else ("logits", "target")
        defaults = (dict(XENT_DEFAULTS, dloss=1.0, weight=None, out=None) if backward
                    else dict(XENT_DEFAULTS, weight=None, return_grad=False, grad_out=None))
    empty = ([] if name == "linear_cross_entropy" else
             [one_dtype(f"{shape}-{kind}-{opt}", xent_empty_call(name, shape, kind, options))
              for shape in ((0, 5), (2, 0, 5), (0, 1)) for kind in xent.KINDS
              for opt, options in XENT_EMPTY_OPTIONS.items()])

    def concurrent(i):
        def build(rng, dtype):
            shape = (64 + i, 700)
            logits = xent.make_logits(rng, shape, dtype)
            target = xent.make_target(rng, shape, xent.KINDS[i % 2])
            kw = xent.make_options(rng, shape[-1], dtype, **xent.ALL_OPTIONS)
            if name == "cross_entropy":
                return Call((logits, target), dict(kw, return_grad=True))
            if name == "cross_entropy_backward":
                return Call((logits, target), kw)
            kw.pop("weight")
            return Call((rng.standard_normal((shape[0], 32)).astype(dtype),
                         rng.standard_normal((shape[1], 32)).astype(dtype) / 6, target),
                        dict(kw, return_grad=True, chunk_size=50))
        return one_dtype(str(i), build)

    return Contract(
        name,
        small=(case("small", xent_small(name)),),
        threaded=tuple(threaded),
        empty=tuple(empty),
        concurrent=tuple(concurrent(i) for i in range(6)),
        positional=positional,
        defaults=defaults,
        out={"cross_entropy": "grad_out", "cross_entropy_backward": "out"}.get(name),
        out_kwargs=dict(return_grad=True) if name == "cross_entropy" else {},
        out_index=1 if name == "cross_entropy" else 0,
        empty_check=xent_empty_check(name),
        torch_cases=tuple(torch_cases),
        torch=linear_torch if name == "linear_cross_entropy" else xent_torch(name),
        torch_tol=linear_torch_tol if name == "linear_cross_entropy" else xent_torch_tol(name),
        torch_reference=name != "linear_cross_entropy",
        examples=tuple(xent_examples(name)))


# ================================================================================================
# relu, gelu, silu (swish) and their backward functions
# ================================================================================================

def act_name(name, call):
    """test_activations' name of the function a call computes (gelu_tanh for the tanh GELU)."""
    if call.kwargs.get("approximate") == "tanh":
        return name.replace("gelu", "gelu_tanh")
    return name.replace("swish", "silu")


def act_call(name, approximate, build_args):
    def build(rng, dtype):
        args = build_args(rng, dtype)
        return Call(args, {} if approximate is None else {"approximate": approximate})
    return build


def act_threaded_args(name):
    def build(rng, dtype):
        n = 300_007                              # not a multiple of the 64-element blocks
        x = act.sample_x(rng, (n,), dtype)
        x[rng.integers(0, n, 50)] = np.nan
        x[rng.integers(0, n, 50)] = np.inf
        x[rng.integers(0, n, 50)] = -np.inf
        return (x,) if act.arity(name) == 1 else (rng.standard_normal(n).astype(dtype), x)
    return build


def act_torch_args(name, special):
    def build(rng, dtype):
        if special:
            # PyTorch's formulas give NaN at +-inf (inf * 0, inf - inf) for all but relu,
            # gelu_tanh(inf) and silu(inf); cyburn takes the limits: compared where PyTorch
            # has a number
            x = np.array([np.inf, -np.inf, np.nan, 1.0, -1.0], dtype)
            return (x,) if act.arity(name) == 1 else (np.ones(5, dtype), x)
        x = np.concatenate([np.linspace(-12, 12, 4801), rng.standard_normal(2000) * 3,
                            [0.0, -0.0, 30.0, -30.0, 1e4, -1e4, 1e12, -1e12]]).astype(dtype)
        # (not beyond: PyTorch's gelu_tanh_backward is NaN once x^3 overflows, cyburn's is 0
        # or 1)
        return (x,) if act.arity(name) == 1 else (rng.standard_normal(x.size).astype(dtype), x)
    return build


def act_torch_tol(name):
    def tol(c, dtype, want):
        which = act_name(name, c)
        want = want[0]
        if which.startswith("relu"):
            t = np.zeros(want.shape)
        else:
            t = np.broadcast_to(act.torch_tolerance(which, c.args, dtype), want.shape).copy()
        t[np.isnan(want) & ~np.isnan(c.args[-1])] = np.nan        # no value in PyTorch
        return [t]
    return tol


def act_contract(name):
    base = name.removesuffix("_backward")
    approximations = ("none", "tanh") if base == "gelu" else (None,)
    with_id = len(approximations) > 1

    def cases(id, build_args, dtypes=(F32, F64)):
        return tuple(case(f"{id}-{a}" if with_id else id, act_call(name, a, build_args), dtypes)
                     for a in approximations)

    def small(rng, dtype):
        x = rng.standard_normal((3, 4)).astype(dtype)
        return (x,) if act.arity(name) == 1 else (x, x)

    def empty(shape):
        return lambda rng, dtype: tuple(np.zeros(shape, dtype) for _ in range(act.arity(name)))

    def check(result, c, dtype):
        sample = slice(0, result.size, 97)
        act.check_against_reference(act_name(name, c), result[sample],
                                    tuple(a[sample] for a in c.args), dtype)

    def empty_check(result, c, dtype, function):
        assert result.shape == c.args[0].shape and result.dtype == dtype

    def torch(torch, c, dtype):
        return [act.torch_call(torch, act_name(name, c), c.args).numpy()]

    def concurrent(rng, dtype):
        x = act.sample_x(rng, (40_000,), dtype)
        return (x,) if act.arity(name) == 1 else (rng.standard_normal(x.size).astype(dtype), x)

    lists = ([[-2.0, -0.5, 0.0], [0.25, 1.5, 7.0]],)
    if act.arity(name) == 2:
        lists = ([[1.0, -2.0, 0.5]] * 2,) + lists
    return Contract(
        name,
        small=cases("small", small, (F32,)),
        threaded=cases("300007", act_threaded_args(name), (F32, F64, F16)),
        empty=sum((cases(str(shape), empty(shape), DTYPES) for shape in
                   ((0,), (0, 5), (3, 0, 2))), ()),
        concurrent=cases("40000", concurrent),
        positional=("x",) if act.arity(name) == 1 else ("dy", "x"),
        defaults=dict(out=None, **({"approximate": "none"} if base == "gelu" else {})),
        out="out",
        check=check,
        empty_check=empty_check,
        torch_cases=cases("grid", act_torch_args(name, False)) + cases(
            "special", act_torch_args(name, True)),
        torch=torch,
        torch_tol=act_torch_tol(name),
        examples=tuple((lists, {} if a is None else {"approximate": a},
                        lambda r, a=a: act.check_against_reference(
                            act_name(name, Call((), {"approximate": a})), r,
                            tuple(np.array(v) for v in lists), F64) is None)
                       for a in approximations),
        elementwise=True)


# ================================================================================================
# adamw_step
# ================================================================================================

def adamw_call(shape, settings, steps):
    def build(rng, dtype):
        param, exp_avg, exp_avg_sq = optim.state(rng, shape, dtype)
        grads = optim.grads(rng, shape, dtype, steps)
        return Call((param, grads[0], exp_avg, exp_avg_sq), dict(settings, step=1),
                    source=dict(grads=grads))
    return build


def adamw_run(function, c):
    """One step per gradient of c.source (steps 1, 2, ...) on c's arrays, which it updates."""
    param, _, exp_avg, exp_avg_sq = c.args
    kw = {k: v for k, v in c.kwargs.items() if k != "step"}
    for step, grad in enumerate(c.source.get("grads", [c.args[1]]), 1):
        assert function(param, grad, exp_avg, exp_avg_sq, step=step, **kw) is None
    return None


def adamw_torch_call(settings, fused):
    def build(rng, dtype):
        shape = (40, 130)
        param = rng.standard_normal(shape).astype(dtype)
        exp_avg, exp_avg_sq = np.zeros(shape, dtype), np.zeros(shape, dtype)
        grads = optim.grads(rng, shape, dtype, 6)
        return Call((param, grads[0], exp_avg, exp_avg_sq), dict(settings, step=1),
                    source=dict(grads=grads, fused=fused, start=param.copy()))
    return build


def adamw_torch(torch, c, dtype):
    settings = {k: v for k, v in c.kwargs.items() if k != "step"}
    t_param = torch.tensor(c.source["start"].copy(), requires_grad=True)
    opt = torch.optim.AdamW([t_param], lr=settings["lr"],
                            betas=(settings.get("beta1", 0.9), settings.get("beta2", 0.999)),
                            eps=settings.get("eps", 1e-8),
                            weight_decay=settings.get("weight_decay", 0.0),
                            fused=c.source["fused"])
    for grad in c.source["grads"]:
        t_param.grad = torch.from_numpy(grad.copy())
        opt.step()
    moments = opt.state[t_param]
    want = [t_param.detach().numpy(), moments["exp_avg"].numpy(), moments["exp_avg_sq"].numpy()]
    assert np.max(np.abs(want[0] - c.source["start"])) > settings["lr"]      # it did move
    return want


def adamw_torch_tol(c, dtype, want):
    """test_optim.assert_close's bound: 32 eps (|expected| + rms(expected))."""
    return [32 * optim.eps(dtype) * (np.abs(w) + np.sqrt(np.mean(w.astype(F64) ** 2)))
            for w in want]


def adamw_contract():
    settings = dict(lr=1e-2, weight_decay=0.01)
    return Contract(
        "adamw_step",
        small=(case("small", adamw_call((3, 4), settings, 1)),),
        threaded=(case("(3, 100003)-2-steps", adamw_call((3, 100_003), settings, 2)),),
        empty=(one_dtype("(0, 3)", lambda rng, d: Call(
            tuple(np.zeros((0, 3), d) for _ in range(4)), dict(lr=1e-3, step=1))),),
        concurrent=(case("(50, 1000)", adamw_call((50, 1000), settings, 3)),),
        positional=("param", "grad", "exp_avg", "exp_avg_sq"),
        defaults=dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0),
        empty_check=lambda result, c, dtype, function: None,     # adamw_run checks None
        torch_cases=tuple(case(f"settings{i}-fused{int(fused)}", adamw_torch_call(s, fused))
                          for i, s in enumerate(optim.SETTINGS) for fused in (False, True)),
        torch=adamw_torch,
        torch_tol=adamw_torch_tol,
        array_likes=False,
        run=adamw_run,
        outputs=lambda c, result: [c.args[0], c.args[2], c.args[3]])


# ================================================================================================
# The registry
# ================================================================================================

REGISTRY = {c.name: c for c in [
    *(softmax_contract(n) for n in ("softmax", "log_softmax", "softmax_backward",
                                    "log_softmax_backward")),
    attention_contract(False), attention_contract(True),
    *(norm_contract(kind, backward) for kind in norm.KINDS for backward in (False, True)),
    *(xent_contract(n) for n in ("cross_entropy", "cross_entropy_backward",
                                 "linear_cross_entropy")),
    *(act_contract(n) for n in ("relu", "relu_backward", "gelu", "gelu_backward", "silu",
                                "silu_backward", "swish")),
    adamw_contract(),
]}


def cases_of(attribute, entries=None):
    return [pytest.param(entry, c, dtype, id=f"{entry.name}-{c.id}-{dtype}")
            for entry in (entries or REGISTRY.values()) for c in getattr(entry, attribute)
            for dtype in c.dtypes]


def names(predicate=lambda entry: True):
    return [pytest.param(entry, id=entry.name) for entry in REGISTRY.values() if predicate(entry)]


def assert_same_outputs(a, b, what):
    assert len(a) == len(b), what
    for i, (u, v) in enumerate(zip(a, b)):
        if u is None or v is None:
            assert u is None and v is None, f"{what}: output {i}"
        else:
            assert_bitwise_equal(np.asarray(u), np.asarray(v), f"{what}: output {i}")


# ================================================================================================
# The contracts
# ================================================================================================

def test_registry_covers_every_public_name():
    assert not set(REGISTRY) & set(NOT_KERNELS)
    assert set(REGISTRY) | set(NOT_KERNELS) == set(cb.__all__), (
        "a contract for every public function: add it to REGISTRY",
        sorted(set(cb.__all__) - set(REGISTRY) - set(NOT_KERNELS)))


@pytest.mark.parametrize("entry", names())
def test_reference_has_the_same_signature(entry, rng):
    function, reference = entry.function, getattr(cb.reference, entry.name)
    signature = inspect.signature(function)
    assert signature == inspect.signature(reference)
    params = signature.parameters
    assert tuple(p for p in params if params[p].kind is not inspect.Parameter.KEYWORD_ONLY) \
        == entry.positional
    for p, default in entry.defaults.items():
        got = params[p].default
        assert got == default and type(got) is type(default), (p, got)
    assert entry.out is None or params[entry.out].default is None
    # one positional argument too many (the first keyword-only one given by position)
    c = entry.small[0].build(rng, F64)
    values = list(c.args) + [c.kwargs.get(p, params[p].default)
                             for p in entry.positional[len(c.args):]]
    keywords = {k: v for k, v in c.kwargs.items() if k not in entry.positional}
    with pytest.raises(TypeError):
        function(*values, values[0], **keywords)


@pytest.mark.parametrize("entry, c", [pytest.param(e, c, id=f"{e.name}-{c.id}")
                                      for e in REGISTRY.values() if e.out for c in e.small])
def test_out_errors(entry, c, rng):
    """On float32 inputs of (3, 4)-shaped results."""
    dtype = F32
    call = c.build(rng, dtype)
    assert entry.out_result(entry.with_out(call)).shape == (3, 4)
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        entry.with_out(call, np.zeros((4, 3), dtype))
    with pytest.raises(ValueError):
        entry.with_out(call, np.zeros((12,), dtype))
    with pytest.raises(ValueError):
        entry.with_out(call, np.zeros((3, 4, 1), dtype))
    with pytest.raises(TypeError, match="float64"):
        entry.with_out(call, np.zeros((3, 4), np.float64))
    with pytest.raises(TypeError):
        entry.with_out(call, np.zeros((3, 4), np.float16))
    with pytest.raises(TypeError, match="ndarray"):
        entry.with_out(call, [[0.0] * 4] * 3)
    with pytest.raises(TypeError):
        entry.with_out(call, np.zeros((3, 4), dtype).tolist())
    readonly = np.zeros((3, 4), dtype)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        entry.with_out(call, readonly)
    assert np.all(readonly == 0)
    # integer inputs are computed in float64: neither the input itself nor a float32 array is
    # the right out
    integer = c.build(np.random.default_rng(0), np.dtype(np.int64))
    target = integer.args[0]
    before = target.copy()
    for out in (target, np.zeros((3, 4), F32)):
        with pytest.raises(TypeError):
            entry.with_out(integer, out)
    assert_bitwise_equal(target, before, "integer input used as out")


@pytest.mark.parametrize("entry, c, dtype", cases_of("threaded"))
def test_bitwise_identical_for_any_thread_count(entry, c, dtype, rng, restore_threads):
    call = c.build(rng, dtype)
    assert largest_input(call) >= MIN_THREADED
    results = {}
    for n in THREADS:
        with cb.num_threads(n):
            assert cb.get_num_threads() == n
            mine = call.copy()
            results[n] = entry.results(mine, entry.call(mine))
    for n in THREADS[1:]:
        assert_same_outputs(results[1], results[n], f"{entry.name}: 1 vs {n} threads")
    if entry.elementwise:           # 2-d and F-ordered, through the same kernel
        rows = (600, 500)
        m = rows[0] * rows[1]
        relaid = Call(tuple(np.asfortranarray(a[:m].reshape(rows)) for a in call.args),
                      call.kwargs)
        with cb.num_threads(THREADS[-1]):
            got = entry.call(relaid)
        assert_bitwise_equal(np.ascontiguousarray(got), results[1][0][:m].reshape(rows),
                             f"{entry.name}: F order on {THREADS[-1]} threads")
    if entry.check:
        entry.check(results[THREADS[-1]][0], call, dtype)


@pytest.mark.parametrize("entry, c, dtype", cases_of("threaded"))
def test_allocated_outputs_start_on_a_cache_line(entry, c, dtype, rng):
    """Every array of a page or more that a call allocates and returns starts on a 64-byte
    boundary (NumPy's large arrays start 16 bytes past one), in the caller's layout."""
    call = c.build(rng, dtype)
    given = [a for a in list(call.args) + list(call.kwargs.values()) if isinstance(a, np.ndarray)]
    result = entry.call(call)
    for r in (result if isinstance(result, tuple) else (result,)):
        if (isinstance(r, np.ndarray) and r.nbytes >= 4096
                and not any(np.shares_memory(r, a) for a in given)):
            assert r.ctypes.data % 64 == 0, (entry.name, r.shape, r.dtype, r.ctypes.data % 64)


@pytest.mark.parametrize("entry, c, dtype", cases_of("empty"))
def test_zero_size(entry, c, dtype, rng):
    call = c.build(rng, dtype)
    result = entry.call(call)
    for r in (result if isinstance(result, tuple) else (result,)):
        assert r is None or type(r) is np.ndarray
    entry.empty_check(result, call, dtype, entry.function)
    if entry.out:
        out = np.zeros_like(entry.out_result(entry.with_out(c.build(rng, dtype))))
        assert entry.out_result(entry.with_out(c.build(rng, dtype), out)) is out


@pytest.mark.parametrize("entry", names())
def test_array_likes(entry, rng):
    """Nested lists (and, for the elementwise functions, Python and NumPy scalars and
    byte-swapped arrays) give the results of the same values in arrays."""
    call = entry.small[0].build(rng, F64)
    if not entry.array_likes:                 # it writes into its arguments
        with pytest.raises(TypeError, match="ndarray"):
            entry.call(Call(tuple(as_lists(a) for a in call.args), call.kwargs, call.source))
        return
    want = entry.results(call, entry.call(call.copy()))
    listed = Call(tuple(as_lists(a) for a in call.args),
                  {k: as_lists(v) for k, v in call.kwargs.items()}, call.source)
    got = entry.results(listed, entry.call(listed))
    for g in got:
        assert g is None or type(g) is np.ndarray
    assert_same_outputs(got, want, f"{entry.name} of lists")
    for args, kwargs, check in entry.examples:
        result = entry.function(*args, **kwargs)
        for r in (result if isinstance(result, tuple) else (result,)):
            assert type(r) is np.ndarray and r.dtype == F64
        assert check(result), (entry.name, args, kwargs, result)
    if entry.elementwise:
        for c in entry.small:
            elementwise_scalars_and_byte_order(entry, c, rng)


def elementwise_scalars_and_byte_order(entry, c, rng):
    kwargs = c.build(rng, F32).kwargs
    arity = len(entry.positional)
    which = act_name(entry.name, Call((), kwargs))
    # scalars give 0-d arrays
    scalars = (2.0, 1.25)[-arity:]
    r0 = entry.function(*scalars, **kwargs)
    assert type(r0) is np.ndarray and r0.shape == () and r0.dtype == F64
    act.check_against_reference(which, r0, scalars, F64)
    r32 = entry.function(*(np.float32(a) for a in scalars), **kwargs)
    assert r32.shape == () and r32.dtype == F32
    for dtype in DTYPES:                       # 0-d arrays of every dtype
        args = tuple(np.array(v, dtype) for v in (1.5, -0.75)[:arity])
        result = entry.function(*args, **kwargs)
        assert result.shape == () and result.dtype == dtype
        act.check_against_reference(which, result, args, dtype)
    # byte-swapped data: computed like native, returned native
    a = [act.sample_x(rng, (5, 6), np.float32) for _ in range(arity)]
    swapped = entry.function(*(v.astype(v.dtype.newbyteorder()) for v in a), **kwargs)
    assert swapped.dtype == F32 and swapped.dtype.isnative
    assert_bitwise_equal(swapped, entry.function(*a, **kwargs), "byte order")


@pytest.mark.parametrize("entry", names())
def test_concurrent_python_threads(entry, restore_threads):
    """Python threads calling the function at once (GIL released), 15 times each, get the
    results of serial calls."""
    rng = np.random.default_rng(7)
    jobs = [c.build(rng, dtype) for c in entry.concurrent for dtype in c.dtypes]
    assert len(jobs) >= 2
    serial = []
    for call in jobs:
        mine = call.copy()
        serial.append(entry.results(mine, entry.call(mine)))
    barrier = threading.Barrier(len(jobs))
    errors = []

    def work(call, expected):
        try:
            barrier.wait()
            for _ in range(15):
                mine = call.copy()
                assert_same_outputs(entry.results(mine, entry.call(mine)), expected,
                                    f"{entry.name} in a thread")
        except BaseException as exc:            # pragma: no cover - reported below
            errors.append(exc)

    cb.set_num_threads(2)
    threads = [threading.Thread(target=work, args=job) for job in zip(jobs, serial)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[0]


@pytest.mark.parametrize("entry, c, dtype", cases_of("torch_cases"))
def test_matches_pytorch(entry, c, dtype, torch, rng):
    built = c.build(rng, dtype)
    for call in (built if isinstance(built, list) else [built]):
        want = entry.torch(torch, call, dtype)
        tols = entry.torch_tol(call, dtype, want)
        for lib in (cb, cb.reference) if entry.torch_reference else (cb,):
            mine = call.copy()
            got = entry.results(mine, entry.call(mine, getattr(lib, entry.name)))
            assert len(got) == len(want) == len(tols), (len(got), len(want), len(tols))
            for i, (g, w, t) in enumerate(zip(got, want, tols)):
                if w is None:
                    continue
                assert g.dtype == w.dtype or not entry.elementwise
                t = np.broadcast_to(t, np.shape(w))
                known = ~np.isnan(t)            # NaN tolerance: PyTorch has no value there
                assert_within(np.asarray(g)[known], np.asarray(w)[known], t[known],
                              f"{lib.__name__}.{entry.name} output {i} vs torch")
