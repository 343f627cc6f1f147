"""Shared helpers of cyburn's tests: dtypes and their epsilons, arrays in any memory layout,
hypothesis shapes, the softmax family's float64 truth and error bounds, elementwise and bitwise
comparisons, and a fresh interpreter for code that must run alone. Plain functions (imported with
`from helpers import ...`), so that hypothesis tests can use them without function-scoped
fixtures; the fixtures live in conftest.py.

Error bounds: every comparison against float64 "truth" uses an elementwise bound
`k * eps(dtype) * scale`, where `scale` is the magnitude of the quantities whose rounding
errors propagate into that element (derived from the formula of each function in
`truth_and_scale`). A wrong kernel (wrong axis, wrong formula, lost precision, a dropped
element) is off by far more than a few ulps of those magnitudes.
"""
import math
import os
import subprocess
import sys

import numpy as np
from hypothesis import strategies as st

import cyburn as cb

# ---- constants ----------------------------------------------------------------------------------

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:                 # pragma: no cover - ml_dtypes is a test dependency
    ml_dtypes, BF16 = None, None

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
NATIVE = (F32, F64)
DTYPES = [F16, F32, F64] + ([BF16] if BF16 is not None else [])       # every dtype computed
FORWARD = {"softmax": cb.softmax, "log_softmax": cb.log_softmax}
BACKWARD = {"softmax_backward": cb.softmax_backward,
            "log_softmax_backward": cb.log_softmax_backward}
ALL_FUNCS = {**FORWARD, **BACKWARD}
REFERENCE = {name: getattr(cb.reference, name) for name in ALL_FUNCS}
LAYOUTS = ("C", "F", "transposed", "strided", "negative", "strided-transposed")


def is_bf16(dtype):
    return BF16 is not None and np.dtype(dtype) == BF16       # (np.dtype(...) == None: float64)


def _finfo(dtype):
    return (ml_dtypes.finfo if is_bf16(dtype) else np.finfo)(np.dtype(dtype))


def eps(dtype):
    return float(_finfo(dtype).eps)


def tiny(dtype):
    """The spacing of the subnormals: the rounding error of a tiny result."""
    return float(_finfo(dtype).smallest_subnormal)


def compute_dtype(dtype):
    """The dtype cyburn computes a dtype in: float32 for the half types."""
    return np.dtype(dtype) if np.dtype(dtype) in NATIVE else F32


# ---- gradients ----------------------------------------------------------------------------------

def central_difference(loss, v, rel_step=1e-6):
    """d loss(v) / dv by central differences, element by element (loss: array -> float)."""
    grad = np.empty_like(v)
    for i in np.ndindex(v.shape):
        step = rel_step * max(1.0, abs(v[i]))
        up, down = v.copy(), v.copy()
        up[i] += step
        down[i] -= step
        grad[i] = (loss(up) - loss(down)) / (2 * step)
    return grad


# ---- arrays in any memory layout ----------------------------------------------------------------

def in_layout(a, layout, rng):
    """A view with the values and shape of `a` (a C array) in the given memory layout."""
    a = np.asarray(a)
    ndim = a.ndim
    if layout == "C" or ndim == 0:
        return np.ascontiguousarray(a)
    if layout == "F":
        out = np.asfortranarray(a)
        return out
    if layout in ("transposed", "strided-transposed"):
        perm = rng.permutation(ndim) if ndim > 1 else np.arange(1)
        if ndim > 1 and np.all(perm == np.arange(ndim)):
            perm = perm[::-1]
        base = np.ascontiguousarray(a.transpose(perm))       # base.shape[i] = a.shape[perm[i]]
        view = base.transpose(np.argsort(perm))
        if layout == "transposed":
            return view
        a = view
        layout = "strided"
    if layout in ("strided", "negative"):
        steps = ([int(s) for s in rng.choice([1, 2, 3], ndim)] if layout == "strided"
                 else [1] * ndim)
        signs = ([int(s) for s in rng.choice([1, -1], ndim)] if layout == "strided"
                 else [-1] * ndim)
        # the order in which `base` is laid out follows `a`'s (keeps transposes)
        big_shape = tuple(n * s for n, s in zip(a.shape, steps))
        base = np.empty_like(a, shape=big_shape)
        if base.dtype.kind == "f":
            base[...] = np.nan                                  # poison the gaps
        index = tuple(slice(None, None, st * sg) for st, sg in zip(steps, signs))
        view = base[index]
        view[...] = a
        return view
    raise ValueError(layout)


def random_array(rng, shape, dtype, layout="C", scale=1.0):
    a = (rng.standard_normal(shape) * scale).astype(dtype)
    return in_layout(a, layout, rng)


def random_inputs(name, rng, shape, dtype, axis=-1, layout="C", scale=3.0):
    """Realistic arguments for function `name`: x, or (dy, y) with y = [log_]softmax(x)."""
    if name in FORWARD:
        return (random_array(rng, shape, dtype, layout, scale),)
    x = rng.standard_normal(shape) * scale
    y = (cb.reference.softmax if name == "softmax_backward" else cb.reference.log_softmax)(
        x, axis=axis).astype(dtype)
    dy = random_array(rng, shape, dtype, "C")
    return in_layout(dy, layout, rng), in_layout(y, layout, rng)


@st.composite
def shapes(draw, min_dims=1, max_dims=4, max_side=40, max_size=3000):
    """Shapes of 1..4 dimensions, sides up to 40, at most `max_size` elements; any axis
    may be the long one."""
    ndim = draw(st.integers(min_dims, max_dims))
    sides = []
    for _ in range(ndim):
        cap = max(1, min(max_side, max_size // max(1, math.prod(sides))))
        sides.append(draw(st.integers(1, cap)))
    return tuple(draw(st.permutations(sides)))


# ---- truth and error bounds ---------------------------------------------------------------------

def truth_and_scale(name, args, axis=-1, exact_shift=False):
    """(float64 truth, local scale, sum scale) for function `name` on `args` (upcast to float64).

    A correct implementation in dtype d is, elementwise, within
        eps(d) * (K * local + S * sums)
    of the truth for small K and S: `local` bounds the magnitudes rounded on the way to that
    element (x - max(x), exp, the final products and differences), `sums` the effect of the one
    reduction of the slice (its relative error times sum |terms|), which a kernel may
    accumulate in d in blocks (so its error grows with the block length, not with n).
    `exact_shift` (float64 input): the truth takes x - max(x) rounded to float64, as every
    float64 implementation computes it, so that rounding is not counted.

    The rest is computed in extended precision where the platform has it: NumPy sums along a
    non-contiguous axis one element after another, whose float64 rounding error (~sqrt(n)
    eps) would exceed that of a careful float64 kernel.
    """
    a = [np.asarray(v, dtype=np.float64).astype(np.longdouble) for v in args]
    with np.errstate(all="ignore"):
        if name in FORWARD:
            (x,) = a
            z = x - np.max(x, axis=axis, keepdims=True)
            if exact_shift:
                z = z.astype(np.float64).astype(np.longdouble)
            s = np.sum(np.exp(z), axis=axis, keepdims=True)
            shift = 0.0 if exact_shift else np.abs(z)
            if name == "softmax":
                y = np.exp(z) / s
                local = y * (1.0 + shift)
                sums = y
            else:
                y = z - np.log(s)
                local = 1.0 + shift + np.abs(z) + np.abs(np.log(s))
                sums = np.ones_like(y)
        elif name == "softmax_backward":
            dy, y0 = a
            s = np.sum(dy * y0, axis=axis, keepdims=True)
            y = y0 * (dy - s)
            local = np.abs(y0) * (np.abs(dy) + np.abs(s))
            sums = np.abs(y0) * np.sum(np.abs(dy * y0), axis=axis, keepdims=True)
        else:
            dy, y0 = a
            s = np.sum(dy, axis=axis, keepdims=True)
            y = dy - np.exp(y0) * s
            local = np.abs(dy) + np.exp(y0) * np.abs(s)
            sums = np.exp(y0) * np.sum(np.abs(dy), axis=axis, keepdims=True)
    local = np.nan_to_num(np.broadcast_to(local, y.shape), nan=0.0, posinf=0.0)
    sums = np.nan_to_num(np.broadcast_to(sums, y.shape), nan=0.0, posinf=0.0)
    return y.astype(np.float64), local.astype(np.float64), sums.astype(np.float64)


def tolerance(name, args, axis, dtype, k=4.0, s=16.0, exact_shift=False):
    """(truth, elementwise tolerance) for results in `dtype` (see truth_and_scale)."""
    truth, local, sums = truth_and_scale(name, args, axis, exact_shift)
    with np.errstate(over="ignore"):
        return truth, eps(dtype) * (k * local + s * sums) + 2 * tiny(dtype)


def assert_within(actual, expected, tol, what=""):
    """Elementwise |actual - expected| <= tol, with NaN and +-inf required at the same places."""
    actual = np.asarray(actual)
    e = np.asarray(expected, dtype=np.float64)
    a = actual.astype(np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    assert np.array_equal(nan_a, nan_e), (
        f"{what}: NaN at different places ({nan_a.sum()} vs {nan_e.sum()} NaNs)")
    inf_e = np.isinf(e)
    assert np.array_equal(a[inf_e], e[inf_e]), f"{what}: infinities differ"
    ok = ~nan_e & ~inf_e
    err = np.abs(a[ok] - e[ok])
    bound = np.broadcast_to(tol, e.shape)[ok]
    bad = err > bound
    if bad.any():
        i = np.flatnonzero(bad)[np.argmax((err - bound)[bad])]
        ratio = float(np.max(err / np.maximum(bound, 1e-300)))
        raise AssertionError(
            f"{what}: {bad.sum()} of {err.size} elements off; worst: got {a[ok][i]!r}, "
            f"expected {e[ok][i]!r}, |error| {err[i]:.3g} > bound {bound[i]:.3g} "
            f"(max error/bound {ratio:.3g})")


def check_against_truth(name, result, args, axis, dtype, k=4.0, s=16.0):
    """result of cyburn's `name` on args vs the float64 truth, within the tolerance of
    truth_and_scale: about 20 eps(dtype) relative for softmax (2.4e-6 in float32)."""
    exact_shift = np.dtype(dtype) == F64
    truth, tol = tolerance(name, args, axis, dtype, k, s, exact_shift)
    with np.errstate(over="ignore"):
        rounded = truth.astype(dtype).astype(np.float64)
    truth = np.where(np.isinf(rounded), rounded, truth)     # beyond the dtype's range: +-inf
    assert_within(result, truth, tol, f"{name} vs float64 truth ({np.dtype(dtype)})")


def check_against_reference(name, result, args, axis, dtype, k=8.0, s=32.0):
    """result vs cyburn.reference in the same dtype: the two errors (each like
    check_against_truth's) add up."""
    with np.errstate(all="ignore"):
        ref = REFERENCE[name](*args, axis=axis)
    assert ref.dtype == result.dtype, (ref.dtype, result.dtype)
    _, tol = tolerance(name, args, axis, dtype, k, s)
    assert_within(result, ref, tol + 2 * tiny(dtype),
                  f"{name} vs cyburn.reference ({np.dtype(dtype)})")


def bits(a):
    """The array's bit patterns, for bitwise comparisons (NaN == NaN, -0.0 != 0.0)."""
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.itemsize])


def assert_bitwise_equal(a, b, what=""):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    diff = bits(a) != bits(b)
    assert not diff.any(), f"{what}: {diff.sum()} of {diff.size} elements differ in their bits"


# ---- subprocesses -------------------------------------------------------------------------------

def run_python(code, cwd, env=None, args=(), timeout=120, drop=("CYBURN_SIMD",)):
    """Run `code` in a fresh interpreter (this one) with extra `env`, without the variables in
    `drop` (by default without any CYBURN_SIMD of ours). sys.argv[1:] are `args`."""
    child_env = {k: v for k, v in os.environ.items() if k not in drop}
    child_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=str(cwd),
                          env=child_env, capture_output=True, text=True, timeout=timeout)
