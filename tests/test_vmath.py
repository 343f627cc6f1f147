"""Accuracy of cyburn's vectorized exp (pyx/cyburn_vmath.h), measured through a public function.

log_softmax_backward computes dx = dy - exp(y) * sum(dy). With dy = [0, -1] and y = [t, 0]:
sum(dy) = -1 exactly and dx[0] = 0 - exp(t) * (-1) = exp(t), with no rounding besides exp's
own (negation and adding zero are exact, with or without a fused multiply-add). So an (N, 2)
array evaluates the kernel's exp at N points in one call; (2, N) along axis 0 does the same
through the column-tile kernel.
"""
import numpy as np
import pytest

import cyburn as cb
from cyburn import _runtime
from helpers import run_python

LEVELS = tuple(_runtime.simd_levels())
LONG_DOUBLE_IS_EXTENDED = np.finfo(np.longdouble).nmant >= 63

# bounds, in units in the last place of the exact result (see the docstring of ulp_errors)
MAX_ULP_F32 = 1.5           # measured: ~1.19 without FMA (baseline), ~0.91 with FMA
MAX_ULP_F64 = 1.5           # vs exp in extended precision; measured ~1.08 / ~0.84
MAX_ULP_F64_VS_NUMPY = 2.0  # vs np.exp (itself within ~0.7 ulp)
MAX_SUBNORMAL_ULP = 1.0     # subnormal results, in units of the smallest subnormal


def kernel_exp(t, layout="rows"):
    """The kernel's exp at every point of the 1-d float array t (see the module docstring)."""
    t = np.asarray(t)
    if layout == "rows":
        y = np.zeros((t.size, 2), t.dtype)
        y[:, 0] = t
        dy = np.zeros_like(y)
        dy[:, 1] = -1
        dx = cb.log_softmax_backward(dy, y)
        assert np.all(dx[:, 1] == 0), "exp(0) != 1"
        return dx[:, 0]
    y = np.zeros((2, t.size), t.dtype)
    y[0] = t
    dy = np.zeros_like(y)
    dy[1] = -1
    dx = cb.log_softmax_backward(dy, y, axis=0)
    assert np.all(dx[1] == 0), "exp(0) != 1"
    return dx[0]


def ulp_errors(got, t, reference="best"):
    """|got - exp(t)| in units in the last place of exp(t) in got's dtype (for a subnormal
    exp(t): in units of the smallest subnormal). The exact exp is float64 for float32 results
    and long double (when it has a 64-bit mantissa) for float64 results, or np.exp in float64
    with reference="numpy". Beyond the largest finite value, the dtype's next power of two
    stands for inf, so an overflow within an ulp of the threshold counts as under an ulp."""
    dtype = got.dtype
    info = np.finfo(dtype)
    if dtype == np.float32:
        calc = source = np.float64
    else:
        calc = np.longdouble if LONG_DOUBLE_IS_EXTENDED else np.float64
        source = calc if reference == "best" else np.float64
    with np.errstate(over="ignore"):
        exact = np.exp(t.astype(source)).astype(calc)
        big = np.ldexp(calc(1), info.maxexp)        # inf if calc cannot hold it
    exact = np.minimum(exact, big)
    _, e = np.frexp(exact)
    ulp = np.ldexp(calc(1), np.maximum(e - (info.nmant + 1), info.minexp - info.nmant))
    g = np.where(np.isinf(got), big, got.astype(calc))
    with np.errstate(invalid="ignore"):
        err = (np.abs(g - exact) / ulp).astype(np.float64)
    err[np.isinf(g) & np.isinf(exact)] = 0.0
    err[np.isnan(got) != np.isnan(exact)] = np.inf
    err[np.isnan(got) & np.isnan(exact)] = 0.0
    return err, exact < info.smallest_normal


def grid(dtype, seed=0):
    """Dense and random points over the whole range where exp is neither 0 nor inf (and a
    little beyond), plus the points where the reduction k = round(t / ln 2) changes."""
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        lo, hi, sub_lo, sub_hi = -104.0, 89.0, -104.0, -87.0
    else:
        lo, hi, sub_lo, sub_hi = -745.2, 709.9, -745.2, -707.0
    ln2 = np.log(2.0)
    halves = (np.arange(np.floor(lo / ln2), np.ceil(hi / ln2)) + 0.5) * ln2
    near_halves = np.concatenate([
        np.nextafter(halves.astype(dtype), np.inf if k > 0 else -np.inf)
        for k in (1, -1)] + [halves.astype(dtype)])
    points = np.concatenate([
        np.linspace(lo, hi, 200_001),
        rng.uniform(lo, hi, 100_000),
        np.linspace(-1.0, 1.0, 20_001),
        np.linspace(sub_lo, sub_hi, 20_001),
        rng.uniform(-1e-3, 1e-3, 1000),
    ]).astype(dtype)
    return np.concatenate([points, near_halves])


def assert_exp_accurate(t, got, what):
    err, sub = ulp_errors(got, t)
    normal = ~sub
    if t.dtype == np.float32:
        limit = MAX_ULP_F32
    else:
        limit = MAX_ULP_F64 if LONG_DOUBLE_IS_EXTENDED else MAX_ULP_F64_VS_NUMPY
        err_np, _ = ulp_errors(got, t, reference="numpy")
        worst = err_np[normal].max()
        at = t[normal][err_np[normal].argmax()]
        assert worst <= MAX_ULP_F64_VS_NUMPY, (
            f"{what}: exp off np.exp by {worst:.3f} ulp at t={at!r}")
    worst = err[normal].max()
    assert worst <= limit, (
        f"{what}: max error {worst:.3f} ulp > {limit} at t={t[normal][err[normal].argmax()]!r}")
    worst_sub = err[sub].max()
    assert worst_sub <= MAX_SUBNORMAL_ULP, (
        f"{what}: subnormal results off by {worst_sub:.3f} smallest-subnormal units "
        f"at t={t[sub][err[sub].argmax()]!r}")


@pytest.mark.parametrize("layout", ["rows", "columns"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_accuracy(dtype, layout):
    t = grid(dtype)
    got = kernel_exp(t, layout)
    assert got.dtype == dtype
    assert_exp_accurate(t, got, f"{np.dtype(dtype).name} {layout} {cb.simd_path()}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(dtype):
    info = np.finfo(dtype)
    t = np.array([-np.inf, np.inf, np.nan, 1e30, -1e30, info.max, -info.max, 0.0, -0.0,
                  1e-30, -1e-30, info.smallest_subnormal, 1000.0, -1000.0], dtype)
    got = kernel_exp(t)
    expected = np.array([0, np.inf, np.nan, np.inf, 0, np.inf, 0, 1, 1, 1, 1, 1, np.inf, 0],
                        dtype)
    np.testing.assert_array_equal(got, expected)
    assert not np.signbit(got[[0, 4, 6, 13]]).any(), "exp underflows to +0"


def neighbours(x, dtype, k=40):
    """The 2k+1 floats of `dtype` around the positive number x."""
    uint = np.uint32 if dtype == np.float32 else np.uint64
    bits = np.array([x], dtype).view(uint)[0]
    return (bits + np.arange(-k, k + 1).astype(uint)).view(dtype)


def limit_for(dtype):
    if dtype == np.float32:
        return MAX_ULP_F32
    return MAX_ULP_F64 if LONG_DOUBLE_IS_EXTENDED else MAX_ULP_F64_VS_NUMPY


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_overflow_threshold(dtype):
    """Finite up to log(max), inf beyond it, accurate right up to the threshold."""
    info = np.finfo(dtype)
    wide = np.float64 if dtype == np.float32 or not LONG_DOUBLE_IS_EXTENDED else np.longdouble
    t = neighbours(np.log(wide(info.max)), dtype)
    got = kernel_exp(t)
    err, _ = ulp_errors(got, t)
    assert err.max() <= limit_for(dtype), f"max error {err.max():.3f} ulp near overflow"
    exact = np.exp(t.astype(wide))
    clearly_finite = exact < wide(info.max) * (1 - 4 * wide(info.eps))
    assert np.all(np.isfinite(got[clearly_finite])), "spurious overflow below log(max)"
    assert np.all(got[exact >= np.ldexp(wide(1), info.maxexp)] == np.inf)
    assert clearly_finite.sum() > 30 and (~clearly_finite).sum() > 30


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_subnormal_results(dtype):
    """Results below the smallest normal are (nearly) correctly rounded subnormals: not
    flushed to zero, not lost to a double rounding."""
    info = np.finfo(dtype)
    ln2 = np.log(2.0)
    lo, hi = (info.minexp - info.nmant) * ln2, info.minexp * ln2      # 2**-149 .. 2**-126
    t = np.linspace(lo - 0.5, hi + 0.5, 100_001).astype(dtype)
    got = kernel_exp(t)
    err, sub = ulp_errors(got, t)
    assert sub.mean() > 0.9
    assert err[sub].max() <= MAX_SUBNORMAL_ULP, f"max error {err[sub].max():.3f} subnormal ulp"
    assert np.all(got[t > lo + 0.1] > 0), "subnormal results flushed to zero"
    # exp(t) == the smallest subnormal where the exact value is closest to it
    tiny = info.smallest_subnormal
    assert kernel_exp(np.array([(info.minexp - info.nmant) * ln2], dtype))[0] == tiny
    # the largest subnormal and the smallest normal neighbourhood
    t_edge = neighbours(info.minexp * ln2, dtype, k=5)
    err_edge, _ = ulp_errors(kernel_exp(t_edge), t_edge)
    assert err_edge.max() <= limit_for(dtype), err_edge.max()


# ================================================================================================
# every SIMD level
# ================================================================================================

EXP_CHILD = r"""
import sys
import numpy as np
import cyburn as cb

def kernel_exp(t, layout):
    if layout == "rows":
        y = np.zeros((t.size, 2), t.dtype); y[:, 0] = t
        dy = np.zeros_like(y); dy[:, 1] = -1
        return cb.log_softmax_backward(dy, y)[:, 0]
    y = np.zeros((2, t.size), t.dtype); y[0] = t
    dy = np.zeros_like(y); dy[1] = -1
    return cb.log_softmax_backward(dy, y, axis=0)[0]

data = np.load(sys.argv[1])
out = {}
for dt in ("float32", "float64"):
    for layout in ("rows", "columns"):
        out[f"{dt}-{layout}"] = kernel_exp(data[dt], layout)
np.savez(sys.argv[2], **out)
print(cb.simd_path())
"""


@pytest.mark.parametrize("level", LEVELS)
def test_exp_accuracy_every_level(level, tmp_path):
    points = {"float32": grid(np.float32, seed=1), "float64": grid(np.float64, seed=1)}
    np.savez(tmp_path / "points.npz", **points)
    proc = run_python(EXP_CHILD, tmp_path, env={"CYBURN_SIMD": level},
                      args=(tmp_path / "points.npz", tmp_path / "exp.npz"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [level]
    with np.load(tmp_path / "exp.npz") as results:
        for key, got in results.items():
            dt, layout = key.split("-")
            assert_exp_accurate(points[dt], got, f"{key} {level}")
