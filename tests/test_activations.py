"""relu, gelu (erf and tanh approximations), silu / swish and their backward functions.

Accuracy: the kernel's own float32 tanh and erf (pyx/cyburn_vmath.h) over a dense grid of all
finite floats; every activation and derivative in float32 over a dense grid of the whole float
range, exhaustively over every float16 and bfloat16, and in float64 against mpmath. The maximum
errors are collected in tables (printed: run with -s; and attached with record_property).
Then: every dtype, shape and memory layout against cyburn.reference, limits at +-inf, NaN,
extreme values without warnings, gradients by central differences, out= and in-place, errors,
PyTorch's autograd. (The contracts every public function keeps, PyTorch parity and thread-count
determinism among them: tests/test_contracts.py, which uses the helpers here.)

How errors are measured. For input x (exact in its dtype) the error of a result is
|got - truth| / (ulp(scale) + m * smallest_subnormal), with truth the float64 (or mpmath) value
and `scale`, `m` from error_scale() below:
  * scale is the magnitude of what a correct implementation rounds on its way to the result:
    |f(x)| itself for products without cancellation (relu, gelu, silu: then the error is the
    plain ulp error), the sum of the magnitudes of the terms where f' adds terms of opposite
    signs (silu' and gelu' cross zero: near their zeros no implementation has a few ulp
    relative to the result), and times (1 + |v|) factors where the formula has an argument
    v = 2 sqrt(2/pi) (x + 0.044715 x^3) that must be rounded (gelu "tanh": sigmoid(v) carries
    v's rounding error times |v| (1 - sigmoid(v)), inherent to the formula in that dtype).
  * m * smallest_subnormal covers a factor that underflows into the subnormals while the
    result is still normal (x * sigmoid(x) for x < -87 in float32: sigmoid(x) < 2^-126 keeps
    fewer digits, and x multiplies its rounding error). m is the factor's multiplier (|x|).
For a correct float32 kernel this is a few units everywhere; a wrong formula, constant,
branch or lost precision is off by orders of magnitude more.
"""
import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cyburn as cb
from helpers import (BF16, DTYPES, F16, F32, F64, LAYOUTS, assert_bitwise_equal, assert_within,
                     central_difference, compute_dtype, eps, in_layout, is_bf16, shapes, tiny)
from cyburn._dispatch import kernels

FLT_MAX = float(np.finfo(np.float32).max)
DBL_MAX = float(np.finfo(np.float64).max)
FORWARD_NAMES = ["relu", "gelu", "gelu_tanh", "silu"]
BACKWARD_NAMES = [name + "_backward" for name in FORWARD_NAMES]
NAMES = FORWARD_NAMES + BACKWARD_NAMES
SMOOTH = ["gelu", "gelu_tanh", "silu"]
NATIVE = [F32, F64]

# ---- bounds. Measured maxima in the comments: x86-64, gcc, CYBURN_SIMD=avx512 (avx2 gives the
# same) / baseline (SSE2, no FMA), on the grids of the tests below (see the printed tables);
# the erf GELU's: CYBURN_SIMD=avx2 / baseline, over every float32 in [-20, 20].

# The kernel's float32 tanh and erf, in ulp of the float64 truth over all finite floats.
MAX_ULP_TANH_F32 = 2.0      # 1.36 / 1.30, at x = 0.6256 (just above the switch at 0.625)
MAX_ULP_ERF_F32 = 2.0       # 0.97 / 1.21, at x = 0.9999 (just below the switch at 1)
# float64 tanh and erf are libm's (glibc documents 2 ulp for tanh, 1 for erf).
MAX_ULP_TANH_F64 = 2.5      # 1.34 here; 1.84 seen on 100k random points (glibc, x86-64)
MAX_ULP_ERF_F64 = 1.5       # 0.83

# float32 activations, in units of ulp(scale) + m * smallest subnormal (module docstring), over
# a dense grid of all finite float32.
MAX_ERROR_F32 = {
    "relu": 0.0,                    # exact
    "relu_backward": 0.0,           # exact
    "gelu": 3.5,                    # plain ulp of the result; every float32 in [-20, 20]:
                                    # 2.87 / 3.23 (x = -5.85, the tail / -2.50, a piece's end)
    "gelu_tanh": 4.0,               # 2.37 / 2.62
    "silu": 5.0,                    # 3.09 / 3.54, plain ulp of the result
    "gelu_backward": 3.75,          # every float32 in [-20, 20]: 3.50 / 3.50 (x = -9.64, the tail)
    "gelu_tanh_backward": 4.0,      # 2.42 / 2.76
    "silu_backward": 6.0,           # 3.89 / 4.18
}
# float16 / bfloat16 (computed in float32, rounded once): every finite value, in ulp of the
# half type. A correct result is the float32 one (a few float32 ulp) rounded: <= 0.5 + a hair.
MAX_ERROR_HALF = 0.502              # 0.5002 (float16 silu_backward), 0.5000 (bfloat16)
# float64 vs mpmath. The erf GELU's normal CDF corrects for the rounding of x / sqrt 2 and of
# x^2 (without it, relative errors grew like x^2 eps / 2 in the left tail: 1540 ulp at x = -36).
# cyburn.reference and PyTorch do not: error_scale(rounded_tails=True) widens the float64 scale
# by 1 + x^2 there when comparing with them.
MAX_ERROR_F64 = {
    "relu": 0.0,
    "relu_backward": 0.0,
    "gelu": 4.0,                    # 2.97 (x = -14.55: libm's erfc in the tail)
    "gelu_tanh": 4.0,               # 2.30 / 2.46
    "silu": 4.0,                    # 2.24
    "gelu_backward": 4.0,           # 3.17 (x = -29.45)
    "gelu_tanh_backward": 4.0,      # 2.17 / 2.05
    "silu_backward": 5.0,           # 3.15
}
# Against cyburn.reference (itself rounded to the dtype) and across dtypes: the bounds above
# plus the reference's rounding, with room.
K_REFERENCE = 10.0


# ================================================================================================
# helpers
# ================================================================================================

def call(name, args, module=cb, **kw):
    """cyburn's (or the reference's) function `name` on args = (x,) or (dy, x)."""
    base = name.removesuffix("_backward")
    if base.startswith("gelu"):
        kw["approximate"] = "tanh" if base == "gelu_tanh" else "none"
    fn = getattr(module, base.replace("gelu_tanh", "gelu") + name[len(base):])
    return fn(*args, **kw)


def arity(name):
    return 2 if name.endswith("_backward") else 1


_ERFC = np.frompyfunc(math.erfc, 1, 1)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _sigmoid(v):
    e = np.exp(-np.abs(v))
    return np.where(v >= 0, 1 / (1 + e), e / (1 + e)), np.where(v >= 0, e / (1 + e), 1 / (1 + e))


def error_scale(name, x, dy=None, dtype=F32, rounded_tails=False):
    """(scale, m) of the module docstring for function `name` computed in `dtype`, elementwise
    (float64 arrays; 0 at infinite and NaN inputs, whose results are checked exactly).
    rounded_tails: widen the float64 erf GELU's scale for a peer (cyburn.reference, PyTorch)
    whose normal CDF rounds x / sqrt 2 and x^2 (see MAX_ERROR_F64)."""
    x = np.asarray(x, dtype=np.float64)
    ax = np.abs(x)
    ady = np.ones_like(x) if dy is None else np.abs(np.asarray(dy, dtype=np.float64))
    xc = np.clip(x, -1e4, 1e4)          # beyond: every sigmoid / Phi is exactly 0 or 1
    backward = name.endswith("_backward")
    base = name.removesuffix("_backward")
    with np.errstate(all="ignore"):
        if base == "relu":
            scale, m = (ady if backward else ax), np.zeros_like(x)
        elif base == "gelu":
            phi_ = np.asarray(_ERFC(-xc / math.sqrt(2.0)), dtype=np.float64) / 2
            tail = np.asarray(_ERFC(np.abs(xc) / math.sqrt(2.0)), dtype=np.float64) / 2
            density = np.exp(-0.5 * xc * xc) / math.sqrt(2 * math.pi)
            widen = 1 + xc * xc if rounded_tails and np.dtype(dtype) == F64 else 1.0
            if backward:
                scale = ady * (phi_ + (widen - 1) * tail + ax * density * widen)
                m = ady * (1 + ax)
            else:
                scale = ax * (phi_ + (widen - 1) * tail)
                m = ax
        elif base == "gelu_tanh":
            v = 2 * _SQRT_2_OVER_PI * (xc + 0.044715 * xc ** 3)
            dv = 2 * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * xc ** 2)
            s, c = _sigmoid(v)
            if backward:
                scale = ady * (s * (1 + c * np.abs(v)) + ax * s * c * dv * (1 + np.abs(v)))
                m = ady * (1 + ax * dv)
            else:
                scale = ax * s * (1 + c * np.abs(v))
                m = ax
        else:
            s, c = _sigmoid(xc)
            if backward:
                scale, m = ady * (s + ax * s * c), ady * (1 + ax)
            else:
                scale, m = ax * s, ax
    scale = np.nan_to_num(np.broadcast_to(scale, x.shape), nan=0.0, posinf=0.0)
    m = np.nan_to_num(np.broadcast_to(m, x.shape), nan=0.0, posinf=0.0)
    return scale, m


def ulp(a, dtype):
    """The spacing of `dtype` at |a| (float64 array; the smallest subnormal below the normals)."""
    info = (pytest.importorskip("ml_dtypes").finfo if is_bf16(dtype) else np.finfo)(dtype)
    with np.errstate(all="ignore"):
        _, e = np.frexp(np.abs(np.asarray(a, dtype=np.float64)))
    return np.ldexp(1.0, np.maximum(e - (info.nmant + 1), info.minexp - info.nmant))


def errors_in_units(got, truth, scale, m, dtype):
    """|got - truth| / (ulp(scale) + m * smallest subnormal) of `dtype`, elementwise; the
    places where got and truth disagree on being NaN or infinite are reported as inf."""
    got = np.asarray(got).astype(np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    scale = np.maximum(scale, np.where(np.isfinite(truth), np.abs(truth), 0.0))
    with np.errstate(all="ignore"):
        err = np.abs(got - truth) / (ulp(scale, dtype) + m * tiny(dtype))
    special = ~np.isfinite(truth) | ~np.isfinite(got)
    same = (np.isnan(got) & np.isnan(truth)) | (got == truth)
    return np.where(special, np.where(same, 0.0, np.inf), err)


def worst(err, x):
    i = int(np.argmax(err))
    return float(err[i]), x[i]


def report(title, rows, record_property):
    """Print a table of max errors (visible with -s) and attach it to the test's report."""
    lines = [title] + [f"  {name:<42} {dtype:<9} {value:10.4f}  at x = {float(at)!r}"
                       for name, dtype, value, at in rows]
    print("\n" + "\n".join(lines))
    record_property(title, {f"{n} {d}": round(v, 4) for n, d, v, _ in rows})


def reference(name, args):
    """cyburn.reference's `name` on args (NumPy errors ignored). 0-d arguments are passed as
    1-element arrays: the reference's erf GELU fails on 0-d input (AttributeError: 'float'
    object has no attribute 'astype', from _normal_cdf; reported)."""
    shape = np.shape(args[-1])
    with np.errstate(all="ignore"):
        if shape == ():
            return call(name, [np.reshape(a, (1,)) for a in args], cb.reference).reshape(())
        return call(name, args, cb.reference)


def reference_tolerance(name, args, dtype, k=K_REFERENCE):
    """Elementwise bound on |cyburn - cyburn.reference| for a result of `dtype` on args."""
    dtype = np.dtype(dtype)
    work = compute_dtype(dtype)
    x = np.asarray(args[-1]).astype(np.float64)
    dy = np.asarray(args[0]).astype(np.float64) if len(args) == 2 else None
    scale, m = error_scale(name, x, dy, work, rounded_tails=True)
    tol = k * (eps(work) * scale + (1 + m) * tiny(work))
    if dtype != work:                   # the float32 result and the truth, each rounded once
        ref = np.abs(reference(name, args).astype(np.float64))
        tol = tol + 2 * eps(dtype) * np.where(np.isfinite(ref), ref, 0.0) + tiny(dtype)
    return tol


def check_against_reference(name, result, args, dtype=None, what=""):
    ref = reference(name, args)
    dtype = ref.dtype if dtype is None else np.dtype(dtype)
    assert result.dtype == ref.dtype == dtype, (result.dtype, ref.dtype, dtype)
    assert result.shape == ref.shape
    assert_within(result, ref, reference_tolerance(name, args, dtype),
                  f"{name} vs cyburn.reference ({dtype}) {what}")


def sample_x(rng, shape, dtype, spread=3.0):
    """Values where the activations are interesting (mostly |x| < 10), some up to 300, some
    tiny."""
    x = rng.standard_normal(shape) * spread
    wide = rng.random(shape) < 0.15
    magnitude = 10.0 ** rng.uniform(-6, 2.5, shape)
    x = np.where(wide, np.copysign(magnitude, x), x)
    return x.astype(dtype)


def laid_out(a, layout, rng):
    """in_layout, keeping 0-d arrays 0-d (np.ascontiguousarray makes them 1-d)."""
    return a if a.ndim == 0 else in_layout(a, layout, rng)


def make_args(name, rng, shape, dtype, layout="C"):
    x = laid_out(sample_x(rng, shape, dtype), layout, rng)
    if arity(name) == 1:
        return (x,)
    dy = laid_out(np.asarray(rng.standard_normal(shape)).astype(dtype), layout, rng)
    return (dy, x)


# ================================================================================================
# the kernel's float32 tanh and erf
# ================================================================================================

def vmath(kind, x, threads=None):
    """The kernel's own tanh or erf (kind: "TANH" / "ERF") of the 1-d float array x."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    kernels.activation_forward(x, y, int(getattr(kernels.Activation, kind)),
                               threads or cb.get_num_threads())
    return y


def float32_grid(step, windows=(), extremes=True):
    """Every `step`-th float32 bit pattern of the finite positives, and of the negatives
    shifted by step / 2 (the functions tested are odd or one-sided: the two halves then cover
    different magnitudes), every float within 2^14 patterns of each point in `windows`, and the
    extremes."""
    pos = np.arange(0, 0x7F800000, step, dtype=np.uint32)
    neg = np.arange(step // 2, 0x7F800000, step, dtype=np.uint32) | np.uint32(0x80000000)
    parts = [pos.view(np.float32), neg.view(np.float32)]
    for w in windows:
        centre = np.array([abs(w)], np.float32).view(np.uint32)[0]
        near = (centre + np.arange(-2**14, 2**14, dtype=np.int64)).astype(np.uint32)
        parts += [near.view(np.float32), -near.view(np.float32)]
    if extremes:
        parts.append(np.array([0.0, -0.0, 1e-45, -1e-45, np.finfo(np.float32).tiny, FLT_MAX,
                               -FLT_MAX, np.inf, -np.inf, np.nan, 1e30, -1e30], np.float32))
    return np.concatenate(parts)


def test_float32_tanh_and_erf_over_all_floats(record_property):
    """tanh and erf of ~4.3M float32 (every 1021st bit pattern of both signs, the floats around
    the polynomial / formula switches and where the results reach +-1, and the extremes)
    within MAX_ULP of the float64 truth; +-1 at +-inf and for huge x, NaN for NaN."""
    x = float32_grid(1021, windows=(0.625, 1.0, 9.01, 3.92, 10.5))
    x64 = x.astype(np.float64)
    rows = []

    got = vmath("TANH", x)
    err = errors_in_units(got, np.tanh(x64), 0.0, 0.0, F32)
    rows.append(("tanh", "float32", *worst(err, x)))
    assert rows[-1][2] <= MAX_ULP_TANH_F32, rows[-1]

    # math.erf (correctly rounded or nearly) where float64 erf is not exactly +-1
    truth = np.sign(x64)
    inner = np.abs(x64) < 6.0
    truth[inner] = np.frompyfunc(math.erf, 1, 1)(x64[inner]).astype(np.float64)
    truth[np.isnan(x64)] = np.nan
    got = vmath("ERF", x)
    err = errors_in_units(got, truth, 0.0, 0.0, F32)
    rows.append(("erf", "float32", *worst(err, x)))
    assert rows[-1][2] <= MAX_ULP_ERF_F32, rows[-1]
    report("max ulp error, kernel tanh / erf", rows, record_property)


@pytest.mark.parametrize("dtype", NATIVE, ids=lambda d: d.name)
def test_tanh_and_erf_special_values(dtype):
    info = np.finfo(dtype)
    x = np.array([0.0, -0.0, info.smallest_subnormal, -info.smallest_subnormal, info.max,
                  -info.max, np.inf, -np.inf, np.nan, 1e30, -1e30, 20.0, -20.0], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t, e = vmath("TANH", x), vmath("ERF", x)
    expected = np.array([0, -0.0, info.smallest_subnormal, -info.smallest_subnormal,
                         1, -1, 1, -1, np.nan, 1, -1, 1, -1], dtype)
    assert_bitwise_equal(t, expected, "tanh")      # (signs of zero included)
    expected_erf = expected.copy()
    expected_erf[2:4] = [info.smallest_subnormal, -info.smallest_subnormal]  # 2/sqrt(pi) x rounds
    assert_bitwise_equal(e, expected_erf, "erf")
    # symmetric, monotone, bounded on a fine grid
    g = np.linspace(-12, 12, 240_001).astype(dtype)
    for kind in ("TANH", "ERF"):
        y = vmath(kind, g)
        assert np.all(np.abs(y) <= 1), kind
        assert np.all(np.diff(y) >= 0), f"{kind} not monotone"
        assert_bitwise_equal(vmath(kind, -g), -y, f"{kind} odd")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_tanh_and_erf_any_thread_count_and_length(threads):
    """The hooks on lengths around the vector and block sizes, on any thread count."""
    rng = np.random.default_rng(11)
    for dtype in NATIVE:
        for n in (1, 7, 63, 64, 65, 1000, 100_003):
            x = (rng.standard_normal(n) * 3).astype(dtype)
            for kind, ref in (("TANH", np.tanh), ("ERF", np.frompyfunc(math.erf, 1, 1))):
                got = vmath(kind, x, threads)
                truth = ref(x.astype(np.float64)).astype(np.float64)
                err = errors_in_units(got, truth, 0.0, 0.0, dtype)
                # float64: libm's tanh (< 2 ulp) against NumPy's own (another ~1 ulp)
                assert err.max() <= (2.0 if dtype == F32 else 4.0), (kind, dtype, n, err.max())
                if n > 64:
                    assert_bitwise_equal(got, vmath(kind, x, 1), f"{kind} threads")


def mp_errors(got, exact, scale, m, dtype, mpmath):
    """errors_in_units against exact mpmath values (no rounding of the truth in between)."""
    truth = np.array([float(t) for t in exact])
    units = ulp(np.maximum(scale, np.abs(truth)), dtype) + m * tiny(dtype)
    err = np.array([float(abs(mpmath.mpf(float(g)) - t)) if np.isfinite(g) else np.inf
                    for g, t in zip(got, exact)]) / units
    special = ~np.isfinite(truth) | ~np.isfinite(got)
    same = (np.isnan(got) & np.isnan(truth)) | (got == truth)
    return np.where(special, np.where(same, 0.0, np.inf), err)


def test_float64_tanh_and_erf_vs_mpmath(record_property):
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(5)
    magnitudes = 10.0 ** rng.uniform(-300, 2.5, 1200)
    x = np.concatenate([np.linspace(-8, 8, 1601),
                        np.copysign(magnitudes, rng.standard_normal(1200)),
                        [5e-324, -5e-324, 1e-308, DBL_MAX, -DBL_MAX]])
    rows = []
    with mpmath.workprec(120):
        for kind, fn, bound in (("TANH", mpmath.tanh, MAX_ULP_TANH_F64),
                                ("ERF", mpmath.erf, MAX_ULP_ERF_F64)):
            got = vmath(kind, x)
            exact = [fn(mpmath.mpf(float(v))) for v in x]
            err = mp_errors(got, exact, 0.0, 0.0, F64, mpmath)
            rows.append((kind.lower(), "float64", *worst(err, x)))
            assert rows[-1][2] <= bound, rows[-1]
    report("max ulp error, float64 tanh / erf (libm) vs mpmath", rows, record_property)


# ================================================================================================
# accuracy of the activations over the whole range
# ================================================================================================

def activation_errors(name, x, dtype):
    """errors_in_units of cyburn's `name` on x (1-d, in `dtype`; dy = 1 for the backward)
    against the float64 reference (the truth for float32 and the half types)."""
    work = compute_dtype(dtype)
    args = (x,) if arity(name) == 1 else (np.ones_like(x), x)
    got = call(name, args)
    assert got.dtype == dtype
    x64 = x.astype(np.float64)
    args64 = (x64,) if arity(name) == 1 else (np.ones_like(x64), x64)
    truth = call(name, args64, cb.reference)
    scale, m = error_scale(name, x64, None, work)
    if dtype != work:                    # the half types: ulps of the half type, and the
        m = m * (tiny(work) / tiny(dtype))   # float32 subnormal term still in float32 units
    return errors_in_units(got, truth, scale, m, dtype)


def test_float32_accuracy_over_all_floats(record_property):
    """Every activation and derivative of ~2M float32: every 4093rd bit pattern (all
    magnitudes, both signs), every float around the ends of the erf GELU's polynomial pieces
    (|x| = 0.5, 1.5, 2.5) and its switch to the tail formula (3.5), dense in [-16, 16] (the
    curved part) and in [-105, -16] (silu's tail, where x * sigmoid(x) reaches the
    subnormals), and the extremes. NaN and infinities exactly where the truth has them,
    finite results within MAX_ERROR_F32."""
    x = np.concatenate([float32_grid(4093, windows=(0.5, 1.5, 2.5, 3.5)),
                        np.linspace(-16, 16, 500_001, dtype=np.float32),
                        np.linspace(-105, -16, 100_001, dtype=np.float32)])
    rows = []
    for name in NAMES:
        err = activation_errors(name, x, F32)
        rows.append((name, "float32", *worst(err, x)))
    report("max error (ulp of the scale, see module docstring), float32", rows, record_property)
    failed = [r for r in rows if not r[2] <= MAX_ERROR_F32[r[0]]]
    assert not failed, failed


@pytest.mark.parametrize("dtype", [F16, BF16] if BF16 is not None else [F16],
                         ids=lambda d: np.dtype(d).name)
def test_half_types_every_value(dtype, record_property):
    """Every finite float16 / bfloat16: the float32 result rounded once, so within
    MAX_ERROR_HALF ulp of the half type; infinities and NaN where the truth has them."""
    patterns = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    x = patterns.view(dtype)
    x = np.concatenate([x[np.isfinite(x.astype(np.float32))],
                        np.array([np.inf, -np.inf, np.nan], np.float32).astype(dtype)])
    rows = []
    for name in NAMES:
        err = activation_errors(name, x, np.dtype(dtype))
        rows.append((name, np.dtype(dtype).name, *worst(err, x.astype(np.float32))))
    report(f"max ulp error, {np.dtype(dtype).name} (every value)", rows, record_property)
    failed = [r for r in rows if not r[2] <= MAX_ERROR_HALF]
    assert not failed, failed


def test_float64_vs_mpmath(record_property):
    """float64 activations and derivatives on 2,500 points against mpmath (100 bits)."""
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(3)
    x = np.concatenate([np.linspace(-38, 12, 1001), rng.uniform(-40, 40, 600),
                        rng.standard_normal(600) * 3,
                        np.copysign(10.0 ** rng.uniform(-300, 100, 300),
                                    rng.standard_normal(300))])
    with mpmath.workprec(100):
        X = [mpmath.mpf(float(v)) for v in x]
        c = 2 * mpmath.sqrt(2 / mpmath.pi)
        exact = {name: [] for name in NAMES}
        for v in X:
            Phi, phi = mpmath.ncdf(v), mpmath.npdf(v)
            w = c * (v + mpmath.mpf(0.044715) * v ** 3)
            sw = 1 / (1 + mpmath.exp(-w))
            s = 1 / (1 + mpmath.exp(-v))
            exact["relu"].append(max(v, 0))
            exact["relu_backward"].append(1 if v > 0 else 0)
            exact["gelu"].append(v * Phi)
            exact["gelu_backward"].append(Phi + v * phi)
            exact["gelu_tanh"].append(v * sw)
            exact["gelu_tanh_backward"].append(
                sw + v * sw * (1 - sw) * c * (1 + 3 * mpmath.mpf(0.044715) * v ** 2))
            exact["silu"].append(v * s)
            exact["silu_backward"].append(s + v * s * (1 - s))
        rows = []
        for name in NAMES:
            args = (x,) if arity(name) == 1 else (np.ones_like(x), x)
            got = call(name, args)
            err = mp_errors(got, exact[name], *error_scale(name, x, None, F64), F64, mpmath)
            rows.append((name, "float64", *worst(err, x)))
        failed = [r for r in rows if not r[2] <= MAX_ERROR_F64[r[0]]]
    report("max error (ulp of the scale), float64 vs mpmath", rows, record_property)
    assert not failed, failed


# ================================================================================================
# every dtype, shape and layout against cyburn.reference
# ================================================================================================

@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_matches_reference_any_shape_dtype_layout(name, data):
    shape = data.draw(shapes(min_dims=1, max_dims=4, max_size=2000), label="shape")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    layout = data.draw(st.sampled_from(LAYOUTS), label="layout")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    args = make_args(name, rng, shape, dtype, layout)
    before = [a.copy() for a in args]
    result = call(name, args)
    assert type(result) is np.ndarray and result.shape == shape and result.dtype == dtype
    assert not any(np.shares_memory(result, a) for a in args)
    for a, b in zip(args, before):
        assert_bitwise_equal(a, b, "input modified")
    check_against_reference(name, result, args, dtype, layout)
    # the same values whatever the layout
    contiguous = call(name, [np.ascontiguousarray(a) for a in args])
    assert_bitwise_equal(np.ascontiguousarray(result), contiguous, f"{layout} vs C")


EXPLICIT_SHAPES = [(), (0,), (3, 0, 2), (1,), (5,), (63,), (64,), (65,), (1000,), (4, 33, 17),
                   (2, 3, 4, 5), (1, 1, 7), (257, 3)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", NAMES)
def test_matches_reference_explicit_shapes(name, dtype, rng):
    for shape in EXPLICIT_SHAPES:
        for layout in LAYOUTS if shape else ("C",):
            args = make_args(name, rng, shape, dtype, layout)
            result = call(name, args)
            assert type(result) is np.ndarray
            assert result.shape == shape and result.dtype == dtype, (shape, layout)
            check_against_reference(name, result, args, dtype, f"{shape} {layout}")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", NATIVE, ids=lambda d: d.name)
@given(data=st.data())
def test_arbitrary_finite_values(name, dtype, data):
    """Any finite values, subnormal to the largest: finite results (no overflow in x^3, no
    inf * 0), matching the reference."""
    shape = data.draw(shapes(max_dims=2, max_side=30, max_size=300), label="shape")
    width = 32 if dtype == F32 else 64
    finite = st.floats(allow_nan=False, allow_infinity=False, width=width)
    x = data.draw(hnp.arrays(dtype, shape, elements=finite), label="x")
    args = (x,)
    if arity(name) == 2:
        dy = data.draw(hnp.arrays(dtype, shape, elements=st.floats(-1e3, 1e3, width=width)),
                       label="dy")
        args = (dy, x)
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        result = call(name, args)
    assert np.all(np.isfinite(result)), "finite input, non-finite output"
    check_against_reference(name, result, args, dtype)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int32, np.int64, np.uint16])
def test_integer_and_bool_inputs_give_float64(name, dtype, rng):
    x = rng.integers(-5, 6, (4, 7)).astype(dtype)
    args = (x,) if arity(name) == 1 else (rng.integers(-3, 4, (4, 7)).astype(dtype), x)
    result = call(name, args)
    assert result.dtype == F64
    check_against_reference(name, result, args, F64)
    np.testing.assert_array_equal(result, call(name, [a.astype(np.float64) for a in args]))


@pytest.mark.parametrize("name", BACKWARD_NAMES)
@pytest.mark.parametrize("dy_dtype, x_dtype, expected", [
    (F32, F64, F64), (F64, F32, F64), (F16, F32, F32), (F32, F16, F32), (F16, F16, F16),
    (np.int32, F32, F64), (F16, np.bool_, F64)])
def test_backward_mixed_dtypes(name, dy_dtype, x_dtype, expected, rng):
    dy = (rng.standard_normal((3, 9)) * 2).astype(dy_dtype)
    x = sample_x(rng, (3, 9), x_dtype)
    result = call(name, (dy, x))
    assert result.dtype == expected
    check_against_reference(name, result, (dy, x), expected)


@pytest.mark.parametrize("name", NAMES)
def test_read_only_and_broadcast_inputs(name, rng):
    x = sample_x(rng, (6, 5), np.float32)
    x.flags.writeable = False
    row = sample_x(rng, (5,), np.float32)
    bx = np.broadcast_to(row, (6, 5))
    for xi in (x, bx):
        args = (xi,) if arity(name) == 1 else (np.ones((6, 5), np.float32), xi)
        result = call(name, args)
        assert result.flags.writeable
        check_against_reference(name, result, args, F32)


# ================================================================================================
# limits, NaN, extreme values
# ================================================================================================

def extreme_values(dtype):
    info = (pytest.importorskip("ml_dtypes").finfo if is_bf16(dtype) else np.finfo)(dtype)
    big = float(info.max)
    values = [np.inf, -np.inf, np.nan, big, -big, 0.0, -0.0, float(info.smallest_subnormal),
              -float(info.smallest_subnormal), float(info.tiny), -float(info.tiny), 1.0, -1.0,
              9999.0, -9999.0, 10001.0, -10001.0, 40.0, -40.0, 200.0, -200.0]
    if big > 1e30:
        values += [1e30, -1e30, 1e20, -1e20, 1e15, -1e15]
    if big > 1e300:
        values += [1e300, -1e300, 1e160, -1e160]
    with np.errstate(over="ignore"):
        return np.array(values, dtype=np.float64).astype(dtype)


# (f(-inf), f(inf)) and (f'(-inf), f'(inf))
LIMITS = {"relu": (0.0, np.inf), "gelu": (0.0, np.inf), "gelu_tanh": (0.0, np.inf),
          "silu": (0.0, np.inf), "relu_backward": (0.0, 1.0), "gelu_backward": (0.0, 1.0),
          "gelu_tanh_backward": (0.0, 1.0), "silu_backward": (0.0, 1.0)}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", NAMES)
def test_extreme_values(name, dtype):
    """+-inf, NaN, +-max, huge and tiny values: the limits at +-inf, NaN for NaN, finite
    results for finite inputs, the reference's values, and not a single warning."""
    x = extreme_values(dtype)
    args = (x,) if arity(name) == 1 else (np.full(x.shape, 1.0, dtype=dtype), x)
    # float16: the float32 results are cast with NumPy, which flags the underflow of results
    # below float16's smallest subnormal (e.g. gelu(6e-8) = 3e-8 -> 0); as NumPy's own float16
    # arithmetic would, and ignored by NumPy's default error state
    under = "ignore" if np.dtype(dtype) == F16 else "raise"
    with np.errstate(all="raise", under=under), warnings.catch_warnings():
        warnings.simplefilter("error")
        result = call(name, args)
        for threads in (1, 2):
            with cb.num_threads(threads):
                assert_bitwise_equal(call(name, args), result, f"{threads} threads")
    r = result.astype(np.float64)
    xs = x.astype(np.float64)
    low, high = LIMITS[name]
    assert r[xs == -np.inf].tolist() == [low], r[xs == -np.inf]
    assert r[xs == np.inf].tolist() == [high], r[xs == np.inf]
    nan_x = np.isnan(xs)
    if name == "relu_backward":
        assert r[nan_x].tolist() == [1.0], "a NaN x passes dy (PyTorch's threshold_backward)"
    else:
        assert np.isnan(r[nan_x]).all(), "NaN does not propagate"
    finite = np.isfinite(xs)
    assert np.all(np.isfinite(r[finite])), (xs[finite][~np.isfinite(r[finite])],
                                            r[finite][~np.isfinite(r[finite])])
    huge = finite & (np.abs(xs) >= 9000)        # saturated: exactly x or 0, f' exactly 1 or 0
    if arity(name) == 1:
        np.testing.assert_array_equal(r[huge], np.where(xs[huge] > 0, xs[huge], 0.0))
        assert r[xs == 0].tolist() == [0.0, 0.0]
    else:
        np.testing.assert_array_equal(r[huge], (xs[huge] > 0).astype(np.float64))
    check_against_reference(name, result, args, dtype)


@pytest.mark.parametrize("dtype", NATIVE, ids=lambda d: d.name)
@pytest.mark.parametrize("name", BACKWARD_NAMES)
def test_backward_nan_and_inf_dy(name, dtype):
    """dy multiplies the derivative: NaN dy gives NaN (relu_backward: 0 where x <= 0, as
    PyTorch), infinite dy gives +-inf where the derivative is positive."""
    x = np.array([-3.0, -0.5, 0.0, 0.5, 3.0, 50.0, np.inf], dtype)
    dy = np.full_like(x, np.nan)
    got = call(name, (dy, x))
    if name == "relu_backward":
        np.testing.assert_array_equal(got, [0, 0, 0, np.nan, np.nan, np.nan, np.nan])
    else:
        assert np.isnan(got).all()
    dy = np.full_like(x, -np.inf)
    with np.errstate(all="ignore"):
        got = call(name, (dy, x))
        ref = call(name, (dy, x), cb.reference)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    assert np.all(got[3:] == -np.inf)



@pytest.mark.parametrize("dtype", NATIVE, ids=lambda d: d.name)
@pytest.mark.parametrize("name", ["gelu_backward", "gelu_tanh_backward", "silu_backward"])
def test_backward_infinite_dy_where_the_derivative_underflows(name, dtype):
    """gelu' and silu' are negative and nonzero at every finite x < -8: far below 0 they
    round to 0 (gelu'(-20) = -1.1e-86 in float64, 0 in float32; gelu'(-104) is 0 in float64
    too), and an infinite dy then gives -dy, not inf * 0 = NaN; a finite dy gives -0 where
    the derivative underflows in float64 as well. The limit at x = -inf is an exact 0
    (dy = inf: NaN, as inf * 0)."""
    x = np.array([-20.0, -104.0, -1e30, -800.0, -1e30, -np.inf], dtype)
    dy = np.array([np.inf, np.inf, -np.inf, 2.0, 3.0, np.inf], dtype)
    with np.errstate(all="ignore"):
        got = call(name, (dy, x))
        ref = call(name, (dy, x), cb.reference)
    expected = [-np.inf, -np.inf, np.inf, -0.0, -0.0, np.nan]
    for result in (got, ref):
        np.testing.assert_array_equal(result, expected)
        assert np.signbit(result[3:5]).all(), result

@pytest.mark.parametrize("dtype", NATIVE, ids=lambda d: d.name)
def test_known_values(dtype):
    """A few values worked out independently (math.erf, math.tanh, math.exp in float64)."""
    xs = [-3.0, -1.0, -0.25, 0.0, 0.5, 2.0]
    x = np.array(xs, dtype)
    Phi = [0.5 * math.erfc(-v / math.sqrt(2)) for v in xs]
    phi = [math.exp(-v * v / 2) / math.sqrt(2 * math.pi) for v in xs]
    u = [math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3) for v in xs]
    du = [math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * v ** 2) for v in xs]
    sg = [1 / (1 + math.exp(-v)) for v in xs]
    expected = {
        "gelu": [v * p for v, p in zip(xs, Phi)],
        "gelu_backward": [p + v * d for v, p, d in zip(xs, Phi, phi)],
        "gelu_tanh": [0.5 * v * (1 + math.tanh(w)) for v, w in zip(xs, u)],
        "gelu_tanh_backward": [0.5 * (1 + math.tanh(w)) + 0.5 * v * (1 - math.tanh(w) ** 2) * d
                               for v, w, d in zip(xs, u, du)],
        "silu": [v * s for v, s in zip(xs, sg)],
        "silu_backward": [s * (1 + v * (1 - s)) for v, s in zip(xs, sg)],
        "relu": [max(v, 0.0) for v in xs],
        "relu_backward": [1.0 if v > 0 else 0.0 for v in xs],
    }
    for name, want in expected.items():
        args = (x,) if arity(name) == 1 else (np.ones_like(x), x)
        scale, _ = error_scale(name, x, None, dtype)
        # (the float64 evaluation above cancels in 1 + tanh(u) for x = -3: ~60 eps)
        tol = (8 * eps(dtype) + 256 * eps(F64)) * scale
        assert_within(call(name, args), want, tol, name)
    # gelu_tanh really is the tanh formula, gelu the erf one: they differ by up to ~5e-4 * |x|
    assert abs(float(cb.gelu(x, approximate="tanh")[1]) - float(cb.gelu(x)[1])) > 1e-4


# ================================================================================================
# gradients
# ================================================================================================

@pytest.mark.parametrize("name", FORWARD_NAMES)
def test_backward_is_the_gradient(name, rng):
    x = np.concatenate([rng.standard_normal(24) * 2.5, [-6.0, -3.2, -1.1, 0.7, 2.9, 5.5, 12.0]])
    if name == "relu":
        x = np.where(np.abs(x) < 1e-2, 0.5, x)       # not at the kink
    w = rng.standard_normal(x.shape)

    def loss(v):
        return float(np.sum(w * call(name, (v,))))

    numeric = central_difference(loss, x)
    analytic = call(name + "_backward", (w, x))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    # and the derivative itself (dy = 1) against the differences of f
    h = 1e-6 * np.maximum(1, np.abs(x))
    slope = (call(name, (x + h,)) - call(name, (x - h,))) / (2 * h)
    np.testing.assert_allclose(call(name + "_backward", (np.ones_like(x), x)), slope,
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", SMOOTH)
@pytest.mark.parametrize("dtype", NATIVE, ids=lambda d: d.name)
def test_gradient_in_float32_and_tails(name, dtype):
    """The derivative on a grid (both dtypes) matches the central differences of the float64
    function, including the tails where it is tiny."""
    x = np.arange(-288, 289) / 32.0                  # exact in float32
    h = 1e-6 * np.maximum(1, np.abs(x))
    slope = (call(name, (x + h,)) - call(name, (x - h,))) / (2 * h)
    got = call(name + "_backward", (np.ones(x.shape, dtype), x.astype(dtype)))
    scale, _ = error_scale(name + "_backward", x, None, F32)
    # differences: truncation ~ (x h)^2 relative, rounding ~ eps |f| / h; the float32 result
    # a few ulp of the scale
    tol = 1e-7 * scale + (16 * eps(F32) * scale if dtype == F32 else 0.0)
    assert_within(got, slope, tol, f"{name}_backward vs differences")


# ================================================================================================
# out= and in-place
# ================================================================================================

@pytest.mark.parametrize("layout", ["C", "F", "strided", "negative"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", NAMES)
def test_in_place(name, dtype, layout, rng):
    shape = (7, 33, 5)
    args = make_args(name, rng, shape, dtype, "C")
    expected = call(name, args)
    for which in range(arity(name)):            # out=x (forward), out=dy and out=x (backward)
        copies = [in_layout(a.copy(), layout, rng) for a in args]
        target = copies[which]
        assert call(name, copies, out=target) is target
        assert_bitwise_equal(np.ascontiguousarray(target), expected,
                             f"{name} out={'dy' if which == 0 and arity(name) == 2 else 'x'} "
                             f"{layout}")
        for i, a in enumerate(copies):        # the other input is left alone
            if i != which:
                assert_bitwise_equal(np.ascontiguousarray(a), args[i], "other input modified")


@pytest.mark.parametrize("out_layout", ["C", "F", "strided"])
@pytest.mark.parametrize("name", NAMES)
def test_out_is_written_and_returned(name, out_layout, rng):
    for dtype in DTYPES:
        args = make_args(name, rng, (6, 40), dtype, "C")
        expected = call(name, args)
        out = in_layout(np.zeros((6, 40), dtype), out_layout, rng)
        assert call(name, args, out=out) is out
        assert_bitwise_equal(np.ascontiguousarray(out), expected, f"{name} into out")


@pytest.mark.parametrize("name", NAMES)
def test_unaligned_and_overlapping_out(name, rng):
    """out= starting off any alignment (the kernel splits at 64-byte boundaries of out), and
    an out that overlaps an input shifted by one element (must not read written values)."""
    n = 10_007
    args = make_args(name, rng, (n,), np.float32)
    expected = call(name, args)
    for offset in (4, 8, 12, 36, 60):
        buf = np.zeros(n * 4 + 128, np.uint8)
        out = np.ndarray((n,), np.float32, buffer=buf, offset=offset)
        assert call(name, args, out=out) is out
        assert_bitwise_equal(out, expected, f"{name} out at byte offset {offset}")
        assert not buf[:offset].any() and not buf[offset + out.nbytes:].any(), "wrote outside"
    for byte_offset in (1, 2):                  # misaligned float data altogether
        buf = np.zeros(n * 4 + 8, np.uint8)
        out = np.ndarray((n,), np.float32, buffer=buf, offset=byte_offset)
        assert call(name, args, out=out) is out
        assert_bitwise_equal(out, expected, f"{name} misaligned out")
    base = np.zeros(n + 1, np.float32)
    base[:n] = args[-1]
    x = base[:n]
    shifted_out = base[1:]
    call_args = (x,) if arity(name) == 1 else (args[0], x)
    call(name, call_args, out=shifted_out)
    assert_bitwise_equal(shifted_out, expected, f"{name} out overlapping x by one element")


# ================================================================================================
# bad arguments
# ================================================================================================

BAD_DTYPES = [np.complex64, np.complex128, object, "U3", "S3", "datetime64[s]"]


def bad_array(dtype):
    if dtype in ("U3", "S3"):
        return np.array([["1", "2"], ["3", "4"]], dtype=dtype)
    if dtype == "datetime64[s]":
        return np.zeros((2, 2), dtype)
    return np.ones((2, 2), dtype=dtype)


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_unsupported_dtypes_raise_type_error(name, dtype):
    bad = bad_array(dtype)
    good = np.full((2, 2), 0.5)
    cases = [(bad,)] if arity(name) == 1 else [(bad, good), (good, bad)]
    d = np.dtype(dtype)
    for args in cases:
        with pytest.raises(TypeError, match=f"{re.escape(str(d))}|{re.escape(d.name)}"):
            call(name, args)


@pytest.mark.parametrize("name", BACKWARD_NAMES)
def test_shape_mismatch_names_both_shapes(name):
    with pytest.raises(ValueError) as info:
        call(name, (np.zeros((3, 4)), np.zeros((4, 3))))
    assert "(3, 4)" in str(info.value) and "(4, 3)" in str(info.value)
    with pytest.raises(ValueError) as info:
        call(name, (np.zeros(5, np.float32), np.zeros((1, 5), np.float32)))
    assert "(5,)" in str(info.value) and "(1, 5)" in str(info.value)
    with pytest.raises(ValueError):          # no broadcasting
        call(name, (np.zeros((2, 5)), np.zeros(5)))
    with pytest.raises(ValueError):
        call(name, (np.zeros((0, 5)), np.zeros((5, 0))))


@pytest.mark.parametrize("bad", ["foo", "Tanh", "NONE", "", None, 1, True, ["none"], "erf"])
def test_bad_approximate(bad):
    x = np.ones(3, np.float32)
    for fn, args in ((cb.gelu, (x,)), (cb.gelu_backward, (x, x)),
                     (cb.reference.gelu, (x,)), (cb.reference.gelu_backward, (x, x))):
        with pytest.raises(ValueError, match="approximate"):
            fn(*args, approximate=bad)


def test_swish_is_silu():
    assert cb.swish is cb.silu
    assert cb.reference.swish is cb.reference.silu
    x = np.linspace(-5, 5, 11, dtype=np.float32)
    assert_bitwise_equal(cb.swish(x), cb.silu(x), "swish")


# ================================================================================================
# PyTorch parity
# ================================================================================================

def torch_call(torch, name, args):
    F = torch.nn.functional
    t = [torch.from_numpy(np.ascontiguousarray(a)) for a in args]
    if name == "relu":
        return F.relu(t[0])
    if name in ("gelu", "gelu_tanh"):
        return F.gelu(t[0], approximate="tanh" if name == "gelu_tanh" else "none")
    if name == "silu":
        return F.silu(t[0])
    dy, x = t
    if name == "relu_backward":
        return torch.ops.aten.threshold_backward(dy, x, 0)
    if name == "silu_backward":
        return torch.ops.aten.silu_backward(dy, x)
    return torch.ops.aten.gelu_backward(dy, x, approximate="tanh" if "tanh" in name else "none")


def torch_tolerance(name, args, dtype):
    """PyTorch computes gelu as x (1 + erf(x / sqrt 2)) / 2 (or with tanh), whose sum cancels
    for negative x: its absolute error is ~eps |x| (eps |dy| (1 + |x| v') for the derivatives),
    far above a few ulp of the result in the left tail. silu is x * sigmoid(x) in both, and
    silu' = s (1 + x (1 - s)) where 1 - s has an absolute error ~eps."""
    x = np.asarray(args[-1], dtype=np.float64)
    dy = np.abs(np.asarray(args[0], dtype=np.float64)) if len(args) == 2 else 1.0
    scale, m = error_scale(name, x, None if len(args) == 1 else args[0], dtype,
                           rounded_tails=True)
    ax = np.abs(x)
    with np.errstate(all="ignore"):
        if name in ("gelu", "gelu_tanh"):
            extra = ax
        elif name == "gelu_backward":
            extra = dy
        elif name == "gelu_tanh_backward":
            extra = dy * (1 + ax * 2 * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x))
        elif name == "silu_backward":
            extra = dy * ax * _sigmoid(x)[0]
        else:
            extra = 0.0
        extra = np.nan_to_num(extra, nan=0.0, posinf=0.0)
    return 6 * (eps(dtype) * (scale + extra) + (1 + m) * tiny(dtype))   # measured <= 2.1 / 6


@pytest.mark.parametrize("name", SMOOTH + ["relu"])
def test_matches_pytorch_autograd(torch, name, rng):
    x = rng.standard_normal((5, 33)) * 3
    g = rng.standard_normal((5, 33))
    tx = torch.tensor(x, requires_grad=True)
    y = torch_call(torch, name, (x,))               # the same function, now with autograd
    kw = {"approximate": "tanh"} if name == "gelu_tanh" else {}
    F = torch.nn.functional
    fn = {"gelu": F.gelu, "gelu_tanh": F.gelu, "silu": F.silu, "relu": F.relu}[name]
    out = fn(tx, **kw)
    np.testing.assert_allclose(out.detach().numpy(), y.numpy(), rtol=0, atol=0)
    out.backward(torch.from_numpy(g))
    got = call(name + "_backward", (g, x))
    np.testing.assert_allclose(got, tx.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(call(name, (x,)), y.numpy(), rtol=1e-12, atol=1e-14)
