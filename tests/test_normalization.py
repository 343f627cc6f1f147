"""layer_norm, rms_norm, group_norm, instance_norm, batch_norm and their backward functions:
float64 truth and cyburn.reference for every dtype and option, any shape and memory layout,
finite-difference gradients, hard inputs (large means, constant sets), errors, batch_norm's
running statistics. (The contracts every public function keeps, PyTorch parity and thread-count
determinism among them: tests/test_contracts.py, which uses the helpers here.)

Truth is cyburn.reference run in float64 on the very values the kernel computes with (inputs
upcast; h = x + residual rounded once in the compute dtype, as the kernel must form it), so the
only differences left are the kernel's own roundings. Each output element is allowed

    K(n) * eps(compute dtype) * (magnitudes rounded on the way to it) + eps(result dtype) * |truth|

where K(n) = 8 + 2 sqrt(n) covers a reduction over n terms (see forward_truth and
backward_truth for the magnitudes). For N(0, 1)-like data that is a few 1e-6 relative in
float32, while a wrong kernel (missing bias, eps outside the square root, unbiased variance
for normalizing, a missing term of dx, a wrong reduction set) is off by 1e-3 to 1.
"""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cyburn as cb
from helpers import BF16, DTYPES, F16, F32, F64, LAYOUTS, assert_bitwise_equal, assert_within, \
    central_difference, compute_dtype, in_layout, shapes
from helpers import eps as eps_of
from helpers import tiny as ulp_floor

KINDS = ("layer", "rms", "group", "instance", "batch")
ROWS = ("layer", "rms")                          # normalized over the last axis
NAME = {"layer": "layer_norm", "rms": "rms_norm", "group": "group_norm",
        "instance": "instance_norm", "batch": "batch_norm"}
FUNCTIONS = [f"{n}{s}" for n in NAME.values() for s in ("", "_backward")]
DEFAULT_EPS = {"layer": 1e-5, "rms": 1e-6, "group": 1e-5, "instance": 1e-5, "batch": 1e-5}
SHAPE = {"layer": (3, 10, 67), "rms": (3, 10, 67), "group": (3, 6, 5, 7),
         "instance": (3, 6, 5, 7), "batch": (3, 6, 5, 7)}
GROUPS = 3                                       # for group_norm on SHAPE["group"]
EXAMPLES = max(10, settings.default.max_examples // 3)


def K(n):
    """Rounding-error allowance, in units of eps, of a reduction over n terms."""
    return 8 + 2 * math.sqrt(max(n, 1))


# ================================================================================================
# Calling the functions uniformly, and the geometry of their statistics sets
# ================================================================================================

def forward(kind, x, weight=None, bias=None, *, groups=None, residual=None, lib=None, **kw):
    """lib's forward of `kind` with return_stats=True: (y, h or None, stats tuple)."""
    lib = lib or cb
    if residual is not None:
        kw["residual"] = residual
    if kind == "layer":
        r = lib.layer_norm(x, weight, bias, return_stats=True, **kw)
    elif kind == "rms":
        assert bias is None
        r = lib.rms_norm(x, weight, return_stats=True, **kw)
    elif kind == "group":
        r = lib.group_norm(x, groups, weight, bias, return_stats=True, **kw)
    else:
        r = getattr(lib, NAME[kind])(x, weight, bias, return_stats=True, **kw)
    assert type(r) is tuple and len(r) == (2 if kind == "rms" else 3) + (residual is not None)
    nstats = 1 if kind == "rms" else 2
    return r[0], (r[1] if residual is not None else None), tuple(r[-nstats:])


def backward(kind, dy, x, weight, stats, *, groups=None, lib=None):
    """lib's backward of `kind`: (dx, dweight, dbias), dbias None for rms_norm."""
    lib = lib or cb
    if kind == "rms":
        r = lib.rms_norm_backward(dy, x, weight, *stats)
        assert type(r) is tuple and len(r) == 2
        return r[0], r[1], None
    if kind == "group":
        r = lib.group_norm_backward(dy, x, groups, weight, *stats)
    else:
        r = getattr(lib, NAME[kind] + "_backward")(dy, x, weight, *stats)
    assert type(r) is tuple and len(r) == 3
    return r


def n_groups(kind, shape, groups):
    return {"group": groups, "instance": shape[1] if len(shape) > 1 else 0}.get(kind)


def sets(kind, a, groups=None):
    """a (shaped like x) as rows whose last axis is one statistics set."""
    if kind in ROWS:
        return a
    n, c = a.shape[:2]
    if kind == "batch":
        return np.moveaxis(a, 1, 0).reshape(c, -1)
    return a.reshape(n, n_groups(kind, a.shape, groups), -1)


def unsets(kind, rows, shape):
    """The inverse of sets: back to x's shape."""
    if kind in ROWS:
        return rows
    if kind == "batch":
        return np.moveaxis(rows.reshape((shape[1], shape[0]) + tuple(shape[2:])), 0, 1)
    return rows.reshape(shape)


def stats_shape(kind, shape, groups=None):
    if kind in ROWS:
        return tuple(shape[:-1])
    return (shape[1],) if kind == "batch" else (shape[0], n_groups(kind, shape, groups))


def set_size(kind, shape, groups=None):
    return math.prod(shape) // max(1, math.prod(stats_shape(kind, shape, groups)))


def expand(kind, stat, shape, groups=None):
    """A per-set statistic broadcast to every element of its set (x's shape)."""
    stat = np.asarray(stat, dtype=np.float64)
    rows = np.broadcast_to(stat[..., None], stat.shape + (set_size(kind, shape, groups),))
    return unsets(kind, rows, shape)


def set_mean(kind, a, groups=None):
    """The mean of a over each statistics set (shape: the statistics')."""
    return sets(kind, a, groups).mean(axis=-1)


def per_feature(kind, p, ndim):
    """weight/bias shaped to broadcast against x."""
    return p if kind in ROWS else p.reshape((-1,) + (1,) * (ndim - 2))


def feature_sum(kind, a):
    """Sum over all axes but the feature (last) / channel (1) axis: how dweight is reduced."""
    axis = -1 if kind in ROWS else 1
    return np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis]).sum(axis=0)


def n_features(kind, shape):
    return shape[-1] if kind in ROWS else shape[1]


# ================================================================================================
# Truth and tolerances
# ================================================================================================

def f64(a):
    return None if a is None else np.asarray(a).astype(np.float64)


def forward_truth(kind, dtype, x, weight=None, bias=None, residual=None, groups=None, **kw):
    """Truth and elementwise tolerance of (y, h, stats) for the forward on these inputs."""
    cdt, shape = compute_dtype(dtype), np.shape(x)
    h = np.asarray(x).astype(cdt)
    if residual is not None:
        h = h + np.asarray(residual).astype(cdt)           # rounded once, as the kernel does
    y, _, stats = forward(kind, f64(h), f64(weight), f64(bias), groups=groups,
                          lib=cb.reference, **kw)
    ec, eo = eps_of(cdt), eps_of(dtype)
    k = K(set_size(kind, shape, groups))
    h = f64(h)
    w = 1.0 if weight is None else per_feature(kind, np.abs(f64(weight)), len(shape))
    b = 0.0 if bias is None else per_feature(kind, np.abs(f64(bias)), len(shape))
    rstd = stats[-1]
    if kind == "rms":
        rel = k * ec * np.ones_like(rstd)                  # relative error of rstd
        r = expand(kind, rstd, shape, groups)
        tol_y = w * np.abs(h) * r * (expand(kind, rel, shape, groups) + 4 * ec)
        tol_stats = (rel * rstd,)
    else:
        d = k * ec * set_mean(kind, np.abs(h), groups)     # error of the mean
        rel = k * ec + 0.5 * (d * rstd) ** 2               # rounding, and d**2 added to var
        r, centered = expand(kind, rstd, shape, groups), np.abs(h - expand(kind, stats[0], shape,
                                                                            groups))
        tol_y = (w * r * (expand(kind, d, shape, groups) + 2 * ec * centered)
                 + w * centered * r * (expand(kind, rel, shape, groups) + 4 * ec) + 2 * ec * b)
        tol_stats = (d, rel * rstd)
    tiny = ulp_floor(dtype)
    tol_y = tol_y + eo * np.abs(y) + tiny
    tol_h = eo * np.abs(h) + tiny
    return (y, h, stats), (tol_y, tol_h, tol_stats)


def backward_truth(kind, dtype, dy, x, weight, stats, groups=None):
    """Truth and elementwise tolerance of (dx, dweight, dbias) for the backward on these
    inputs (x the forward's normalized input, stats the forward's statistics)."""
    cdt, shape = compute_dtype(dtype), np.shape(x)
    dx, dw, db = backward(kind, f64(dy), f64(x), f64(weight), tuple(f64(s) for s in stats),
                          groups=groups, lib=cb.reference)
    ec, eo, tiny = eps_of(cdt), eps_of(dtype), ulp_floor(dtype)
    k = K(set_size(kind, shape, groups))
    r = expand(kind, stats[-1], shape, groups)
    x = f64(x)
    # a: the magnitudes xhat = (x - mean) * rstd is computed from
    a = r * (np.abs(x) if kind == "rms" else np.abs(x) + np.abs(expand(kind, stats[0], shape,
                                                                          groups)))
    g = np.abs(f64(dy)) * (1.0 if weight is None
                           else per_feature(kind, np.abs(f64(weight)), len(shape)))
    ga = expand(kind, set_mean(kind, g * a, groups), shape, groups)
    gm = 0.0 if kind == "rms" else expand(kind, set_mean(kind, g, groups), shape, groups)
    tol_dx = k * ec * r * (g + gm + a * ga) + eo * np.abs(dx) + tiny
    if weight is None:
        return (dx, dw, db), (tol_dx, None, None)
    kr = K(math.prod(shape) // max(1, n_features(kind, shape)))
    tol_dw = kr * ec * feature_sum(kind, np.abs(f64(dy)) * a) + eo * np.abs(dw) + tiny
    tol_db = (None if db is None
              else kr * ec * feature_sum(kind, np.abs(f64(dy))) + eo * np.abs(db) + tiny)
    return (dx, dw, db), (tol_dx, tol_dw, tol_db)


def check_forward(kind, dtype, got, inputs, factor=1.0, what="", y_is_out=False):
    """got = (y, h, stats) from the kernel on `inputs`: dtypes, shapes, layout (C-contiguous
    unless y is a given out=), and values within factor * tolerance of the truth."""
    y, h, stats = got
    (ty, th, tstats), (tol_y, tol_h, tol_stats) = forward_truth(kind, dtype, **inputs)
    shape, cdt = np.shape(inputs["x"]), compute_dtype(dtype)
    assert type(y) is np.ndarray and y.dtype == dtype and y.shape == shape
    assert y.flags.c_contiguous or y_is_out
    assert_within(y, ty, factor * tol_y, f"{kind} y {what}")
    if inputs.get("residual") is not None:
        assert h.dtype == dtype and h.shape == shape and h.flags.c_contiguous
        assert_within(h, th, factor * tol_h, f"{kind} h {what}")
    for name, s, t, tol in zip(("mean", "rstd")[-len(stats):], stats, tstats, tol_stats):
        assert type(s) is np.ndarray and s.dtype == cdt, (name, s.dtype, cdt)
        assert s.flags.c_contiguous, name
        assert s.shape == stats_shape(kind, shape, inputs.get("groups")), (name, s.shape)
        assert_within(s, t, factor * tol, f"{kind} {name} {what}")


def check_backward(kind, dtype, got, dy, x, weight, stats, groups=None, factor=1.0, what=""):
    truth, tols = backward_truth(kind, dtype, dy, x, weight, stats, groups)
    for name, g, t, tol in zip(("dx", "dweight", "dbias"), got, truth, tols):
        if t is None:
            assert g is None, f"{kind} {name} should be None"
            continue
        assert type(g) is np.ndarray and g.dtype == dtype and g.shape == t.shape, (name, g.dtype)
        assert g.flags.c_contiguous
        assert_within(g, t, factor * tol, f"{kind} {name} {what}")


# ================================================================================================
# Inputs
# ================================================================================================

def make_inputs(kind, rng, shape, dtype, *, weight=True, bias=True, residual=False, eps=None,
                loc=0.5, scale=1.5, groups=GROUPS):
    """Keyword arguments of forward() (x, weight, bias, residual, groups, eps)."""
    f = n_features(kind, shape)
    cast = (lambda a: np.asarray(a).astype(dtype))
    args = {"x": cast(loc + scale * rng.standard_normal(shape)),
            "weight": cast(1 + 0.5 * rng.standard_normal(f)) if weight else None,
            "bias": cast(rng.standard_normal(f)) if bias and kind != "rms" else None,
            "residual": cast(rng.standard_normal(shape)) if residual else None,
            "groups": groups if kind == "group" else None}
    if eps is not None:
        args["eps"] = eps
    return args


def run_both(kind, dtype, inputs, rng, dy=None, lib=None):
    """Forward, then backward on the forward's h and statistics, with a random dy."""
    y, h, stats = forward(kind, **inputs, lib=lib)
    x = h if inputs.get("residual") is not None else inputs["x"]
    dy = np.asarray(rng.standard_normal(y.shape)).astype(dtype) if dy is None else dy
    grads = backward(kind, dy, x, inputs["weight"], stats, groups=inputs.get("groups"), lib=lib)
    return (y, h, stats), (dy, x), grads


def option_cases():
    for kind in KINDS:
        for w, b, r, e in itertools.product((True, False), (True, False), (False, True),
                                            (None, 0.5)):
            if (kind == "rms" and b) or (kind not in ROWS and r):
                continue
            name = f"{kind}-{'w' if w else 'now'}-{'b' if b else 'nob'}" + ("-res" if r else "")
            yield pytest.param(kind, dict(weight=w, bias=b, residual=r, eps=e),
                               id=name + ("" if e is None else f"-eps{e}"))


# ================================================================================================
# Every dtype and option against float64 truth and the reference
# ================================================================================================

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind, options", option_cases())
def test_every_option_matches_truth_and_reference(kind, options, dtype, rng):
    inputs = make_inputs(kind, rng, SHAPE[kind], dtype, **options)
    before = {k: v.copy() for k, v in inputs.items() if isinstance(v, np.ndarray)}
    fwd, (dy, x), grads = run_both(kind, dtype, inputs, rng)
    for k, v in before.items():
        assert_bitwise_equal(inputs[k], v, f"input {k} modified")
    check_forward(kind, dtype, fwd, inputs)
    check_backward(kind, dtype, grads, dy, x, inputs["weight"], fwd[2], inputs["groups"])

    # cyburn.reference in the same dtype: both within the tolerance of the truth
    ref_fwd = forward(kind, **inputs, lib=cb.reference)
    check_forward(kind, dtype, ref_fwd, inputs, what="(reference)")
    for name, got, ref in zip(("y", "h"), fwd[:2], ref_fwd[:2]):
        if ref is not None:
            tol = forward_truth(kind, dtype, **inputs)[1][name == "h"]
            assert_within(got, ref, 2 * tol, f"{kind} {name} vs reference")
    ref_grads = backward(kind, dy, x, inputs["weight"], fwd[2], groups=inputs["groups"],
                         lib=cb.reference)
    tols = backward_truth(kind, dtype, dy, x, inputs["weight"], fwd[2], inputs["groups"])[1]
    for name, got, ref, tol in zip(("dx", "dweight", "dbias"), grads, ref_grads, tols):
        if ref is None:
            assert got is None
        else:
            assert_within(got, ref, 2 * tol, f"{kind} {name} vs reference")

    # without return_stats: y alone, or (y, h)
    kw = {k: inputs[k] for k in ("weight", "bias", "residual", "eps") if inputs.get(k) is not None}
    if kind == "group":
        plain = cb.group_norm(inputs["x"], GROUPS, **kw)
    else:
        plain = getattr(cb, NAME[kind])(inputs["x"], **kw)
    if options["residual"]:
        assert type(plain) is tuple and len(plain) == 2
        assert_bitwise_equal(plain[1], fwd[1], "h without return_stats")
        plain = plain[0]
    assert type(plain) is np.ndarray
    assert_within(plain, fwd[0], forward_truth(kind, dtype, **inputs)[1][0], "y without stats")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("eps", [1e-2, 1.0])
def test_eps_inside_the_square_root(kind, eps, rng):
    """Small-variance data, where eps dominates: rstd = 1 / sqrt(var + eps) exactly."""
    inputs = make_inputs(kind, rng, SHAPE[kind], F64, loc=2.0, scale=0.03, eps=eps)
    fwd, (dy, x), grads = run_both(kind, F64, inputs, rng)
    check_forward(kind, F64, fwd, inputs)
    check_backward(kind, F64, grads, dy, x, inputs["weight"], fwd[2], inputs["groups"])
    h = sets(kind, inputs["x"], inputs["groups"])
    var = np.mean(h**2, axis=-1) if kind == "rms" else np.var(h, axis=-1)
    np.testing.assert_allclose(fwd[2][-1], 1 / np.sqrt(var + eps), rtol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_stats_formulas(kind, rng):
    """The statistics are the textbook ones (biased variance), whatever the reference says."""
    inputs = make_inputs(kind, rng, SHAPE[kind], F64, residual=kind in ROWS)
    y, _, stats = forward(kind, **inputs)
    h = inputs["x"] + inputs["residual"] if kind in ROWS else inputs["x"]
    v = sets(kind, h, inputs["groups"])
    if kind == "rms":
        np.testing.assert_allclose(stats[0], 1 / np.sqrt(np.mean(v**2, -1) + 1e-6), rtol=1e-13)
        want = h * expand(kind, stats[0], h.shape) * inputs["weight"]
    else:
        np.testing.assert_allclose(stats[0], v.mean(-1), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(stats[1], 1 / np.sqrt(v.var(-1, ddof=0) + 1e-5), rtol=1e-13)
        xhat = (h - expand(kind, stats[0], h.shape, inputs["groups"])) * expand(
            kind, stats[1], h.shape, inputs["groups"])
        want = (xhat * per_feature(kind, inputs["weight"], h.ndim)
                + per_feature(kind, inputs["bias"], h.ndim))
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


# ================================================================================================
# Any shape and memory layout (hypothesis)
# ================================================================================================

@st.composite
def layout_cases(draw, kind):
    shape = draw(shapes(min_dims=1 if kind in ROWS else 2).filter(
        lambda s: kind != "batch" or math.prod(s) >= 2 * s[1]).filter(      # training
        lambda s: kind != "instance" or math.prod(s[2:]) != 1), label="shape")  # (an error)
    groups = None
    if kind == "group":
        c = shape[1]
        groups = draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]), label="G")
    options = draw(st.fixed_dictionaries({
        "weight": st.booleans(), "bias": st.booleans(),
        "residual": st.booleans() if kind in ROWS else st.just(False),
        "eps": st.sampled_from([None, 1e-3])}), label="options")
    data = draw(st.sampled_from([(0.0, 1.0), (3.0, 1.0), (-2.0, 30.0), (1.0, 1e-2)]),
                label="loc, scale")
    layouts = draw(st.lists(st.sampled_from(LAYOUTS), min_size=6, max_size=6), label="layouts")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    return shape, groups, options, data, layouts, seed


def _hypothesis_check(kind, dtype, case):
    shape, groups, options, (loc, scale), layouts, seed = case
    rng = np.random.default_rng(seed)
    inputs = make_inputs(kind, rng, shape, dtype, loc=loc, scale=scale, groups=groups,
                         **options)
    for name, layout in zip(("x", "weight", "bias", "residual"), layouts):
        if inputs[name] is not None:
            inputs[name] = in_layout(inputs[name], layout, rng)
    before = {k: v.copy() for k, v in inputs.items() if isinstance(v, np.ndarray)}
    fwd = forward(kind, **inputs)
    for k, v in before.items():
        assert_bitwise_equal(inputs[k], v, f"input {k} modified")
    check_forward(kind, dtype, fwd, inputs)
    x = in_layout(fwd[1], layouts[0], rng) if fwd[1] is not None else inputs["x"]
    dy = in_layout(rng.standard_normal(shape).astype(dtype), layouts[4], rng)
    stats = tuple(s if s.ndim == 0 else in_layout(s, layouts[5], rng) for s in fwd[2])
    grads = backward(kind, dy, x, inputs["weight"], stats, groups=groups)
    check_backward(kind, dtype, grads, dy, x, inputs["weight"], fwd[2], groups)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_any_shape_and_layout(kind, dtype, data):
    _hypothesis_check(kind, dtype, data.draw(layout_cases(kind)))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=max(5, EXAMPLES // 3))
@given(data=st.data())
def test_any_shape_and_layout_float16(kind, data):
    _hypothesis_check(kind, F16, data.draw(layout_cases(kind)))


@pytest.mark.parametrize("kind, shape", [
    ("layer", (1, 1)), ("layer", (7,)), ("layer", (2, 1030)), ("layer", (1030, 3)),
    ("rms", (1,)), ("rms", (5, 1)), ("rms", (2, 3, 4, 300)),
    ("group", (1, 3, 1)), ("group", (2, 6)), ("group", (1, 12, 300)),
    ("instance", (2, 3, 2)), ("instance", (1, 1, 2, 1030)),
    ("batch", (2, 3)), ("batch", (1, 4, 2)), ("batch", (1030, 2)), ("batch", (2, 3, 4, 5, 6)),
])
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_explicit_shapes(kind, shape, dtype, rng):
    groups = 3 if kind == "group" and shape[1] % 3 == 0 else 1
    inputs = make_inputs(kind, rng, shape, dtype, residual=kind in ROWS, groups=groups)
    for layout in ("C", "strided-transposed"):
        args = dict(inputs, x=in_layout(inputs["x"], layout, rng))
        fwd, (dy, x), grads = run_both(kind, dtype, args, rng)
        check_forward(kind, dtype, fwd, args, what=layout)
        check_backward(kind, dtype, grads, dy, x, args["weight"], fwd[2], args["groups"],
                       what=layout)


def unaligned(a):
    """A copy of `a` whose data sits one byte off alignment."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    u = buf[1:].view(a.dtype).reshape(a.shape)
    u[...] = a
    return u


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_read_only_broadcast_and_unaligned_inputs(kind, dtype, rng):
    inputs = make_inputs(kind, rng, SHAPE[kind], dtype, residual=kind in ROWS)
    f = n_features(kind, SHAPE[kind])
    for name in ("x", "residual"):
        if inputs[name] is not None:
            inputs[name].flags.writeable = False
    inputs["weight"] = np.broadcast_to(np.asarray(1.25, dtype), (f,))      # stride 0
    fwd, (dy, x), grads = run_both(kind, dtype, inputs, rng)
    check_forward(kind, dtype, fwd, inputs)
    check_backward(kind, dtype, grads, dy, x, inputs["weight"], fwd[2], inputs["groups"])
    args = {k: (unaligned(v) if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}
    assert not args["x"].flags.aligned
    fwd, (dy, x), grads = run_both(kind, dtype, args, rng, dy=unaligned(dy))
    check_forward(kind, dtype, fwd, inputs, what="unaligned")
    check_backward(kind, dtype, grads, dy, x, inputs["weight"], fwd[2], inputs["groups"],
                   what="unaligned")


# ================================================================================================
# Gradients by finite differences (float64)
# ================================================================================================

FD_SHAPE = {"layer": (3, 6), "rms": (2, 7), "group": (2, 6, 3), "instance": (2, 3, 4),
            "batch": (3, 2, 2)}


def fd_cases():
    for kind in KINDS:
        for w, b, r in itertools.product((True, False), (True, False), (True, False)):
            if (kind == "rms" and b) or (kind not in ROWS and r):
                continue
            yield pytest.param(kind, w, b, r, id=f"{kind}-w{int(w)}-b{int(b)}-r{int(r)}")


@pytest.mark.parametrize("kind, weight, bias, residual", fd_cases())
def test_backward_is_the_gradient(kind, weight, bias, residual, rng):
    """Central differences of L = sum(dy * y) with respect to x, residual, weight and bias
    against the backward (given h and the statistics, as the forward returns them)."""
    inputs = make_inputs(kind, rng, FD_SHAPE[kind], F64, weight=weight, bias=bias,
                         residual=residual, groups=3)
    dy = rng.standard_normal(FD_SHAPE[kind])
    _, _, (dx, dw, db) = run_both(kind, F64, inputs, rng, dy=dy)

    def loss(**change):
        return float(np.sum(dy * forward(kind, **dict(inputs, **change))[0]))

    wanted = {"x": dx, "residual": dx, "weight": dw, "bias": db}
    for name, analytic in wanted.items():
        if inputs.get(name) is None or name == "bias" and not weight:
            continue                       # without weight, the backward gives no dbias
        num = central_difference(lambda v: loss(**{name: v}), inputs[name])
        assert analytic is not None, f"{kind}: d{name} is None"
        assert_within(analytic, num, 1e-6 * (1 + np.max(np.abs(num))), f"{kind} d{name}")
    if not weight:
        assert dw is None and db is None


# ================================================================================================
# Hard inputs: large means, constant sets
# ================================================================================================

LARGE = {"layer": (64, 1024), "rms": (64, 1024), "group": (4, 8, 33, 35),
         "instance": (4, 8, 33, 35), "batch": (4, 8, 33, 35)}


@pytest.mark.parametrize("kind", KINDS)
def test_large_mean_float32(kind, rng):
    """x = 1e4 + N(0, 1) in float32: a one-pass E[x^2] - E[x]^2 variance would be all
    cancellation; the two-pass statistics stay close to float64 truth."""
    inputs = make_inputs(kind, rng, LARGE[kind], F32, loc=1e4, scale=1.0, groups=4)
    fwd, (dy, x), grads = run_both(kind, F32, inputs, rng)
    check_forward(kind, F32, fwd, inputs)
    check_backward(kind, F32, grads, dy, x, inputs["weight"], fwd[2], inputs["groups"])
    (ty, _, tstats), _ = forward_truth(kind, F32, **inputs)
    y, _, stats = fwd
    rstd_error = np.max(np.abs(stats[-1] / tstats[-1] - 1))
    assert rstd_error < 1e-5, rstd_error
    if kind != "rms":
        mean_error = np.max(np.abs(stats[0] / tstats[0] - 1))
        assert mean_error < 1e-6, mean_error
        # y's error is about rstd * |error of the mean|: an ulp of 1e4 is 1e-3
        y_error = np.max(np.abs(y - ty))
        assert y_error < 4e-3, y_error
    else:
        assert np.max(np.abs(y - ty)) < 1e-5 * np.max(np.abs(ty))


def constant_inputs(kind, rng, dtype, value):
    """Random inputs with some sets constant (every set constant for group_norm's G=1)."""
    shape = SHAPE[kind]
    inputs = make_inputs(kind, rng, shape, dtype, residual=kind in ROWS)
    x = inputs["x"].astype(np.float64)
    if kind in ROWS:
        x[0] = value
        x[1, 3] = value
        inputs["residual"][0] = 0
        inputs["residual"][1, 3] = 0
    elif kind == "batch":
        x[:, 1] = value
    elif kind == "instance":
        x[1, 2] = value
    else:
        x[:] = value
        inputs["groups"] = 1
    inputs["x"] = x.astype(dtype)
    return inputs


@pytest.mark.parametrize("value", [3.7, -250.0, 0.0])
@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_constant_sets_are_finite(kind, dtype, value, rng):
    """Zero variance (for rms_norm: zero rows): rstd = 1/sqrt(eps), y = bias, finite
    gradients."""
    inputs = constant_inputs(kind, rng, dtype, value)
    fwd, (dy, x), grads = run_both(kind, dtype, inputs, rng)
    for a in (*fwd[2], fwd[0], *[g for g in grads if g is not None]):
        assert np.all(np.isfinite(a))
    check_forward(kind, dtype, fwd, inputs)
    check_backward(kind, dtype, grads, dy, x, inputs["weight"], fwd[2], inputs["groups"])
    if kind != "rms" or value == 0.0:
        eps = DEFAULT_EPS[kind]
        constant = np.isclose(forward_truth(kind, dtype, **inputs)[0][2][-1], eps ** -0.5,
                              rtol=1e-3)
        assert constant.any()
        np.testing.assert_allclose(fwd[2][-1][constant], eps ** -0.5, rtol=1e-3)


# ================================================================================================
# dtypes and array-likes
# ================================================================================================

@pytest.mark.parametrize("kind", KINDS)
def test_mixed_and_integer_dtypes(kind, rng):
    shape = SHAPE[kind]
    f = n_features(kind, shape)
    x16 = rng.standard_normal(shape).astype(F16)
    w32 = rng.standard_normal(f).astype(F32)
    g = GROUPS if kind == "group" else None
    y, _, stats = forward(kind, x16, w32, groups=g)                  # float16 x, float32 weight
    assert y.dtype == F32 and stats[-1].dtype == F32
    check_forward(kind, F32, (y, None, stats), dict(x=x16, weight=w32, groups=g))
    dx, dw, _ = backward(kind, x16, x16, w32, stats, groups=g)
    assert dx.dtype == F32 and dw.dtype == F32
    y, _, stats = forward(kind, x16, None, groups=g)                 # float16: stats float32
    assert y.dtype == F16 and all(s.dtype == F32 for s in stats)
    xi = rng.integers(-5, 6, shape)                                  # integers -> float64
    y, _, stats = forward(kind, xi, groups=g)
    assert y.dtype == F64 and stats[-1].dtype == F64
    check_forward(kind, F64, (y, None, stats), dict(x=xi, groups=g))
    y, _, _ = forward(kind, xi.astype(F32), rng.integers(1, 3, f), groups=g)
    assert y.dtype == F64                                            # int weight promotes
    xb = np.asarray(x16.astype(F64), dtype=x16.dtype.newbyteorder(">"))  # big-endian
    y, _, _ = forward(kind, xb, groups=g)
    assert y.dtype == F16 and y.dtype.isnative


def bad_dtype_cases():
    for kind in KINDS:
        for bad in ("x", "weight", "bias", "residual", "dy", "object"):
            if not (bad == "residual" and kind not in ROWS or bad == "bias" and kind == "rms"):
                yield pytest.param(kind, bad, id=f"{kind}-{bad}")


@pytest.mark.parametrize("kind, bad", bad_dtype_cases())
def test_complex_and_object_inputs_raise_type_error(kind, bad):
    shape = SHAPE[kind]
    f = n_features(kind, shape)
    x, w, b = np.ones(shape), np.ones(f), np.zeros(f)
    x[..., 0] = 2
    kw = dict(weight=w, bias=None if kind == "rms" else b, groups=GROUPS)
    if bad == "dy":
        _, _, stats = forward(kind, x, **kw)
        with pytest.raises(TypeError, match="complex"):
            backward(kind, x.astype(complex), x, w, stats, groups=GROUPS)
        return
    if bad == "object":
        kw["x"] = x.astype(object)
    elif bad == "x":
        kw["x"] = x.astype(np.complex64)
    elif bad == "residual":
        kw.update(x=x, residual=np.zeros(shape, complex))
    else:
        kw.update(x=x, **{bad: kw[bad].astype(complex)})
    with pytest.raises(TypeError, match="complex|object"):
        forward(kind, **kw)


@pytest.mark.skipif(BF16 is None, reason="ml_dtypes not installed")
@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_stats_in_float32(kind, rng):
    inputs = make_inputs(kind, rng, SHAPE[kind], BF16, residual=kind in ROWS, loc=40.0)
    fwd, (dy, x), grads = run_both(kind, BF16, inputs, rng)
    assert fwd[0].dtype == BF16 and all(s.dtype == F32 for s in fwd[2])
    check_forward(kind, BF16, fwd, inputs)
    check_backward(kind, BF16, grads, dy, x, inputs["weight"], fwd[2], inputs["groups"])


# ================================================================================================
# out= (layer_norm, rms_norm)
# ================================================================================================

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("kind", ROWS)
def test_out_and_in_place(kind, layout, dtype, rng):
    shape = (40, 67)
    inputs = make_inputs(kind, rng, shape, dtype)
    x0, fn = inputs["x"], getattr(cb, NAME[kind])
    kw = {k: inputs[k] for k in ("weight", "bias") if inputs[k] is not None}
    expected = fn(x0, **kw)
    tol = forward_truth(kind, dtype, **inputs)[1][0]
    out = in_layout(np.zeros(shape, dtype), layout, rng)
    assert fn(in_layout(x0.copy(), layout, rng), **kw, out=out) is out
    assert_within(out, expected, tol, f"{kind} into out ({layout})")
    x = in_layout(x0.copy(), layout, rng)
    assert fn(x, **kw, out=x) is x                                   # in place
    assert_within(x, expected, tol, f"{kind} in place ({layout})")
    # in place with a residual and statistics: h and the statistics are those of x + residual
    r = rng.standard_normal(shape).astype(dtype)
    want = forward(kind, x0, residual=r, **kw)
    x = in_layout(x0.copy(), layout, rng)
    got = fn(x, **kw, residual=r, return_stats=True, out=x)
    assert got[0] is x
    check_forward(kind, dtype, (got[0], got[1], got[2:]), dict(inputs, residual=r),
                  y_is_out=True)
    assert_bitwise_equal(got[1], want[1], "h in place")


@pytest.mark.parametrize("kind", ROWS)
def test_out_dtype_follows_the_promoted_weight(kind):
    """A float64 weight makes a float32 x's result float64: a float32 out= is refused. (The
    other out= errors: tests/test_contracts.py.)"""
    x = np.ones((3, 4), F32)
    with pytest.raises(TypeError):
        getattr(cb, NAME[kind])(x, np.ones(4, F64), out=x)


# ================================================================================================
# Errors: shapes, num_groups
# ================================================================================================

def _assert_raises_naming(func, shapes_named, exc=ValueError):
    with pytest.raises(exc) as info:
        func()
    message = str(info.value)
    for s in shapes_named:
        assert str(tuple(s)) in message, (message, s)


@pytest.mark.parametrize("kind", KINDS)
def test_shape_mismatches_name_both_shapes(kind, rng):
    shape = (4, 6, 5) if kind not in ROWS else (4, 5)
    g = 3
    x = rng.standard_normal(shape)
    f = n_features(kind, shape)
    good = np.ones(f)
    bad = np.ones(f + 1)
    _assert_raises_naming(lambda: forward(kind, x, bad, groups=g), [(f + 1,), (f,)])
    if kind != "rms":
        _assert_raises_naming(lambda: forward(kind, x, good, bad, groups=g), [(f + 1,), (f,)])
        _assert_raises_naming(lambda: forward(kind, x, None, np.ones((f, 1)), groups=g),
                              [(f, 1), (f,)])
    if kind in ROWS:
        r = np.ones((4, 1))
        _assert_raises_naming(lambda: forward(kind, x, residual=r), [(4, 1), shape])
        _assert_raises_naming(lambda: forward(kind, x, residual=np.ones(shape[::-1])),
                              [shape[::-1], shape])
    _, _, stats = forward(kind, x, good, groups=g)
    dy = np.ones(shape)
    wrong_dy = np.ones(shape[:-1] + (shape[-1] + 2,))
    _assert_raises_naming(lambda: backward(kind, wrong_dy, x, good, stats, groups=g),
                          [wrong_dy.shape, shape])
    _assert_raises_naming(lambda: backward(kind, dy, x, bad, stats, groups=g), [(f + 1,), (f,)])
    for i, s in enumerate(stats):
        wrong = list(stats)
        wrong[i] = np.ones(s.shape[:-1] + (s.shape[-1] + 3,))
        _assert_raises_naming(lambda: backward(kind, dy, x, good, tuple(wrong), groups=g),
                              [wrong[i].shape, s.shape])
        wrong[i] = s.ravel()[:-1] if s.ndim > 1 else s[None]
        _assert_raises_naming(lambda: backward(kind, dy, x, good, tuple(wrong), groups=g),
                              [wrong[i].shape, s.shape])
    # too few dimensions
    low = () if kind in ROWS else (5,)
    with pytest.raises(ValueError):
        forward(kind, np.ones(low), groups=1)
    with pytest.raises(ValueError):
        backward(kind, np.ones(low), np.ones(low), None, stats, groups=1)


@pytest.mark.parametrize("groups", [0, -1, 4, 7])
def test_bad_num_groups_value(groups):
    x = np.ones((2, 6, 3))
    with pytest.raises(ValueError, match="num_groups"):
        cb.group_norm(x, groups)
    y, mean, rstd = cb.group_norm(x, 3, return_stats=True)
    with pytest.raises(ValueError, match="num_groups"):
        cb.group_norm_backward(x, x, groups, None, mean, rstd)


@pytest.mark.parametrize("groups", [2.0, "2", None, 1.5])
def test_bad_num_groups_type(groups):
    x = np.ones((2, 6, 3))
    with pytest.raises(TypeError, match="num_groups"):
        cb.group_norm(x, groups)
    _, mean, rstd = cb.group_norm(x, 2, return_stats=True)
    with pytest.raises(TypeError, match="num_groups"):
        cb.group_norm_backward(x, x, groups, None, mean, rstd)


def test_num_groups_of_zero_channels():
    """Every count divides 0 channels: statistics (N, num_groups) of NaN, as PyTorch's shapes;
    a count beyond any array size is a ValueError naming num_groups (PyTorch: an overflow),
    not the statistics' shape or NumPy's dimension limit."""
    x = np.ones((2, 0))
    for groups in (1, 3):
        y, mean, rstd = cb.group_norm(x, groups, return_stats=True)
        assert y.shape == (2, 0) and mean.shape == rstd.shape == (2, groups)
        assert cb.group_norm_backward(x, x, groups, None, mean, rstd)[0].shape == (2, 0)
    with pytest.raises(ValueError, match="num_groups"):
        cb.group_norm(x, 10**20)
    with pytest.raises(ValueError, match="num_groups"):
        cb.group_norm_backward(x, x, 10**20, None, np.ones((2, 1)), np.ones((2, 1)))


def test_num_groups_accepts_numpy_integers(rng):
    x = rng.standard_normal((2, 6, 3))
    assert_bitwise_equal(cb.group_norm(x, np.int64(3)), cb.group_norm(x, 3), "np.int64 groups")
    tol = forward_truth("instance", F64, x=x)[1][0]
    assert_within(cb.group_norm(x, 6), cb.instance_norm(x), 2 * tol, "group_norm(C) vs instance")


# ================================================================================================
# batch_norm: running statistics, evaluation mode
# ================================================================================================

@pytest.mark.parametrize("momentum", [0.1, 0.35])
@pytest.mark.parametrize("xdtype, rdtype", [(F64, F64), (F32, F32), (F16, F32), (F32, F64)],
                         ids=str)
def test_running_stats_update_formula(xdtype, rdtype, momentum, rng):
    shape = (5, 4, 3, 7)
    m = 5 * 3 * 7
    inputs = make_inputs("batch", rng, shape, xdtype, loc=2.0)
    rm0 = rng.standard_normal(4).astype(rdtype)
    rv0 = (rng.random(4) + 0.5).astype(rdtype)
    rm, rv = rm0.copy(), rv0.copy()
    y, mean, rstd = cb.batch_norm(inputs["x"], inputs["weight"], inputs["bias"], running_mean=rm,
                                  running_var=rv, momentum=momentum, return_stats=True)
    assert rm.dtype == rdtype and rv.dtype == rdtype
    check_forward("batch", xdtype, (y, None, (mean, rstd)), inputs)
    x = inputs["x"].astype(np.float64)
    true_mean = x.mean(axis=(0, 2, 3))
    true_var = x.var(axis=(0, 2, 3), ddof=1)
    want_rm = (1 - momentum) * rm0.astype(np.float64) + momentum * true_mean
    want_rv = (1 - momentum) * rv0.astype(np.float64) + momentum * true_var
    ec, er = eps_of(compute_dtype(xdtype)), eps_of(rdtype)
    k = K(m)
    tol_rm = (4 * er * ((1 - momentum) * abs(rm0) + momentum * abs(true_mean))
              + momentum * k * ec * np.abs(x).mean(axis=(0, 2, 3)))
    tol_rv = 4 * er * np.abs(want_rv) + momentum * true_var * 2 * k * ec
    assert_within(rm, want_rm, tol_rm, "running_mean")
    assert_within(rv, want_rv, tol_rv, "running_var")
    # a biased running variance is off by momentum * var / (m - 1)
    assert np.all(momentum * true_var / (m - 1) > 4 * tol_rv)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("shape", [(6, 4), (5, 4, 3, 7)])
def test_running_stats_match_pytorch(torch, dtype, shape, rng):
    inputs = make_inputs("batch", rng, shape, dtype, loc=-1.0)
    rm = rng.standard_normal(4).astype(dtype)
    rv = (rng.random(4) + 0.5).astype(dtype)
    trm, trv = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    for step in range(3):
        x = (inputs["x"] * (step + 1)).astype(dtype)
        cb.batch_norm(x, running_mean=rm, running_var=rv, momentum=0.2)
        torch.nn.functional.batch_norm(torch.from_numpy(x), trm, trv, training=True,
                                       momentum=0.2)
    e = eps_of(dtype)
    assert_within(rm, trm.numpy(), 64 * e * (1 + np.abs(rm)), "running_mean vs torch")
    assert_within(rv, trv.numpy(), 64 * e * np.abs(rv), "running_var vs torch")


@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=str)
def test_batch_norm_evaluation_uses_running_stats(dtype, rng):
    shape = (3, 4, 5)
    inputs = make_inputs("batch", rng, shape, dtype)
    rm = rng.standard_normal(4).astype(F32)
    rv = (rng.random(4) + 0.5).astype(F32)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, rstd = cb.batch_norm(inputs["x"], inputs["weight"], inputs["bias"], running_mean=rm,
                                  running_var=rv, training=False, eps=1e-3, return_stats=True)
    assert_bitwise_equal(rm, rm0, "running_mean changed in evaluation")
    assert_bitwise_equal(rv, rv0, "running_var changed in evaluation")
    cdt = compute_dtype(dtype)
    assert mean.dtype == cdt and rstd.dtype == cdt and y.dtype == dtype
    np.testing.assert_allclose(mean, rm0, rtol=eps_of(cdt))
    np.testing.assert_allclose(rstd, 1 / np.sqrt(rv0.astype(np.float64) + 1e-3),
                               rtol=4 * eps_of(F32))
    x = inputs["x"].astype(np.float64)
    c = (slice(None), None)
    want = ((x - rm0[c]) / np.sqrt(rv0[c].astype(np.float64) + 1e-3) * f64(inputs["weight"])[c]
            + f64(inputs["bias"])[c])
    tol = 16 * eps_of(cdt) * (np.abs(x) + 4) + eps_of(dtype) * np.abs(want)
    assert_within(y, want, tol, "evaluation-mode y")
    y1 = cb.batch_norm(x[:1, :, :1], running_mean=rm, running_var=rv, training=False)
    assert y1.shape == (1, 4, 1)                                     # one value: fine here
    with pytest.raises(ValueError):
        cb.batch_norm(x, training=False)
    with pytest.raises(ValueError):
        cb.batch_norm(x, running_mean=rm, training=False)


@pytest.mark.parametrize("shape", [(1, 4), (1, 4, 1), (1, 3, 1, 1), (1, 0), (1, 0, 1)])
def test_batch_norm_training_needs_two_values_per_channel(shape):
    with pytest.raises(ValueError):
        cb.batch_norm(np.ones(shape))
    rm, rv = np.zeros(shape[1]), np.ones(shape[1])
    with pytest.raises(ValueError):
        cb.batch_norm(np.ones(shape), running_mean=rm, running_var=rv)
    assert np.all(rm == 0) and np.all(rv == 1)


def test_running_stats_validation():
    x = np.random.default_rng(0).standard_normal((3, 4, 2))
    ok = np.zeros(4)
    for bad, error in [([0.0] * 4, TypeError), (np.zeros(4, np.int64), TypeError),
                       (np.zeros(4, complex), TypeError), (np.zeros(5), ValueError),
                       (np.zeros((4, 1)), ValueError)]:
        with pytest.raises(error):
            cb.batch_norm(x, running_mean=bad, running_var=ok.copy())
        with pytest.raises(error):
            cb.batch_norm(x, running_mean=ok.copy(), running_var=bad)
    _assert_raises_naming(lambda: cb.batch_norm(x, running_mean=np.zeros(5), running_var=ok),
                          [(5,), (4,)])
    read_only = np.zeros(4)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        cb.batch_norm(x, running_mean=read_only, running_var=np.ones(4))
    # evaluation only reads them
    y = cb.batch_norm(x, running_mean=read_only, running_var=np.ones(4), training=False)
    assert_within(y, x / np.sqrt(1 + 1e-5), 1e-15, "evaluation with read-only running stats")
    # as in PyTorch, both or neither
    for training in (True, False):
        for only_one in ({"running_mean": np.zeros(4)}, {"running_var": np.ones(4)}):
            with pytest.raises(ValueError, match="both"):
                cb.batch_norm(x, training=training, **only_one)


# ================================================================================================
# For tests/test_contracts.py: the shapes of its thread tests, PyTorch's counterparts
# ================================================================================================

THREADED = {"layer": (300, 771), "rms": (300, 771), "group": (4, 8, 33, 35),
            "instance": (4, 8, 33, 35), "batch": (4, 8, 33, 35)}


def torch_forward(torch, kind, x, weight, bias, residual, groups, eps):
    F = torch.nn.functional
    if kind == "layer":
        return F.layer_norm(x if residual is None else x + residual, x.shape[-1:], weight, bias,
                            eps)
    if kind == "rms":
        return F.rms_norm(x if residual is None else x + residual, x.shape[-1:], weight, eps)
    if kind == "group":
        return F.group_norm(x, groups, weight, bias, eps)
    if kind == "instance":
        return F.instance_norm(x, weight=weight, bias=bias, eps=eps)
    return F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)


# ================================================================================================
# Edges closed by issue 15
# ================================================================================================

@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("lib", [cb, cb.reference], ids=["cyburn", "reference"])
def test_layer_norm_backward_of_one_feature_is_exactly_zero(lib, dtype, rng):
    """With one normalized element, y = bias whatever x: dx = rstd * (g - mean(g) - ...) is
    exactly 0 (PyTorch gives 0), not the rounding error of g = dy * weight times rstd (about
    3e-5 in float32 before), and NaN where g is infinite."""
    x = rng.standard_normal((9, 1)).astype(dtype)
    dy = (rng.standard_normal((9, 1)) * 10).astype(dtype)
    w = np.array([0.7], dtype)
    _, mean, rstd = cb.layer_norm(x, w, np.zeros(1, dtype), return_stats=True)
    dx, dw, db = lib.layer_norm_backward(dy, x, w, mean, rstd)
    assert np.all(dx == 0), dx.ravel()
    assert_within(db, dy.astype(F64).sum(0), 1e-5 * np.abs(dy).sum(), "dbias")
    assert np.all(dw == 0)                                          # xhat = 0
    dx = lib.layer_norm_backward(dy, x, None, mean, rstd)[0]
    assert np.all(dx == 0), dx.ravel()
    dy[3] = np.inf
    dx = lib.layer_norm_backward(dy, x, w, mean, rstd)[0]
    assert np.isnan(dx[3, 0]) and np.all(np.delete(dx, 3) == 0), dx.ravel()


def test_layer_norm_backward_of_one_feature_as_pytorch(torch, rng):
    x = rng.standard_normal((9, 1)).astype(F32)
    dy = (rng.standard_normal((9, 1)) * 10).astype(F32)
    w, b = np.array([0.7], F32), np.zeros(1, F32)
    _, mean, rstd = cb.layer_norm(x, w, b, return_stats=True)
    want = torch.ops.aten.native_layer_norm_backward(
        torch.from_numpy(dy), torch.from_numpy(x), [1], torch.from_numpy(mean[:, None]),
        torch.from_numpy(rstd[:, None]), torch.from_numpy(w), torch.from_numpy(b),
        [True, True, True])
    got = cb.layer_norm_backward(dy, x, w, mean, rstd)
    assert np.all(got[0] == 0)             # PyTorch's own dx: 0 up to the rounding of its terms
    assert_within(got[0], want[0].numpy(), 8 * eps_of(F32) * rstd[:, None] * np.abs(dy * w),
                  "dx")
    assert_within(got[2], want[2].numpy(), 1e-5 * np.abs(dy).sum(), "dbias")


CONSTANT_ROWS = (1, 3)        # the rows of constant_rows that are constant


def constant_rows(rng, shape, dtype):
    """(x, dy): N(0, 1) rows, but rows CONSTANT_ROWS of x are 0.3 and -7.1, whose sums do not
    round back to n times the value, and the same rows of dy are 0.7 and -1.3."""
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    for row, value, g in zip(CONSTANT_ROWS, (0.3, -7.1), (0.7, -1.3)):
        x[row], dy[row] = value, g
    return x, dy


def check_constant_set(y, mean, rstd, x, bias, eps, what, rstd_in_dtype=False):
    """A constant set's statistics and y, exactly: mean = the value, var = 0, y = bias. rstd is
    1 / sqrt(eps) rounded once, or with `rstd_in_dtype` computed in x's precision (sqrt, then
    the division, each rounded to it: within an ulp of the other)."""
    T = x.dtype.type
    want_rstd = T(1) / np.sqrt(T(eps)) if rstd_in_dtype else T(1 / math.sqrt(eps))
    assert mean == x.flat[0], f"{what}: mean - value = {mean - x.flat[0]}"
    assert rstd == want_rstd, f"{what}: rstd = {rstd}, not 1 / sqrt(eps) = {want_rstd}"
    assert_bitwise_equal(y, bias, f"{what}: y, not the bias")


@pytest.mark.parametrize("residual", [False, True], ids=["x", "x+residual"])
@pytest.mark.parametrize("n", [2, 7, 16, 768, 1000, 100_000])
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_layer_norm_of_a_constant_row_is_exact(n, dtype, residual, rng):
    """A constant row's centred values are exactly 0 (not the rounding error of its mean): its
    mean is the value, rstd = 1 / sqrt(eps), y = bias exactly (PyTorch's y too). With a
    constant g = dy * weight the true dx = rstd * (g - mean(g)) is exactly 0 as well, and so
    is the row's share of dweight; with any g, dx = rstd * (g - mean(g)) within rounding."""
    x, dy = constant_rows(rng, (4, n), dtype)
    w = rng.uniform(0.5, 2, n).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    kw = {}
    if residual:        # h = x + residual, constant in the constant rows
        kw["residual"] = rng.standard_normal((4, n)).astype(dtype)
        kw["residual"][list(CONSTANT_ROWS)] = 0.25
        x[list(CONSTANT_ROWS)] -= dtype.type(0.25)
    y, *h, mean, rstd = cb.layer_norm(x, w, b, return_stats=True, **kw)
    h = h[0] if residual else x
    assert np.ptp(h[list(CONSTANT_ROWS)], axis=1).max() == 0
    for row in CONSTANT_ROWS:
        check_constant_set(y[row], mean[row], rstd[row], h[row], b, 1e-5, f"row {row}")
    for weight in (None, np.ones(n, dtype), np.full(n, 0.5, dtype)):    # g exact and constant
        dx, dw, _ = cb.layer_norm_backward(dy, h, weight, mean, rstd)
        assert np.all(dx[list(CONSTANT_ROWS)] == 0), np.abs(dx[list(CONSTANT_ROWS)]).max()
        if weight is not None:                          # dy * xhat: the other rows' alone
            other = cb.layer_norm_backward(dy[[0, 2]], h[[0, 2]], weight, mean[[0, 2]],
                                           rstd[[0, 2]])[1]
            assert_within(dw, other, 4 * eps_of(dtype) * np.abs(other), "dweight")
    dx, dw, db = cb.layer_norm_backward(dy, h, w, mean, rstd)
    check_backward("layer", dtype, (dx, dw, db), dy, h, w, (mean, rstd))


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("n, groups", [(7, 1), (768, 1), (96, 3), (120, 3), (60, 3)], ids=str)
def test_a_set_starting_with_an_infinity_has_the_plain_mean(n, groups, dtype, rng):
    """The shifted mean x_0 + mean(x - x_0) is taken as sum(x) / n when the deviations' sum is
    not finite: a set whose x_0 (or g_0 = dy_0 * weight_0) is +-inf gets the reference's
    infinite mean (and dx, NaN only where it has NaN), not inf - inf = NaN throughout. Rows
    (layer norm) and segments of rows (group norm of (N, C): lane-wise, blocked)."""
    kind, length = ("layer" if groups == 1 else "group"), n // groups
    x = rng.standard_normal((3, n)).astype(dtype)
    dy = rng.standard_normal((3, n)).astype(dtype)
    w = np.full(n, 1.5, dtype)
    stats = forward(kind, x, groups=groups)[2]             # of finite x, for the backward
    x_inf = x.copy()
    x_inf[0, 0], x_inf[1, length * (groups - 1)] = np.inf, -np.inf      # first of their sets
    dy[1, 0], dy[2, length * (groups - 1)] = -np.inf, np.inf
    got, want = ((forward(kind, x_inf, groups=groups, lib=lib)[2],
                  backward(kind, dy, x, w, stats, groups=groups, lib=lib)[0])
                 for lib in (cb, cb.reference))
    mean = got[0][0].reshape(3, groups)
    assert mean[0, 0] == np.inf and mean[1, -1] == -np.inf, mean
    for name, a, b in zip(("mean", "rstd"), got[0], want[0]):
        assert_within(a, b, 1e-5 * (1 + np.abs(b)), name)
    assert np.isinf(got[1]).any()
    assert_within(got[1], want[1], 1e-4 * (1 + np.abs(want[1])), "dx")


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("shape, groups", [((5, 96), 3), ((5, 120), 3), ((5, 60), 3),
                                           ((5, 6), 2)], ids=str)
def test_group_norm_of_a_constant_segment_is_exact(shape, groups, dtype, rng):
    """group_norm of an (N, C) input (rows cut into segments, lane-wise and blocked sums) keeps
    layer norm's property: a constant group has mean = the value, y = bias, and with a
    constant g its dx is exactly 0. Lane-wise segments (8 to 256 elements, the last L % 8 in
    a masked vector) take their statistics in the input's precision, as PyTorch does."""
    x, dy = constant_rows(rng, shape, dtype)
    x[0, :shape[1] // groups] = 0.3                    # one constant group in a random row
    dy[0, :shape[1] // groups] = 0.7
    b = rng.standard_normal(shape[1]).astype(dtype)
    y, mean, rstd = cb.group_norm(x, groups, None, b, return_stats=True)
    length = shape[1] // groups
    constant = [(0, 0)] + [(row, g) for row in CONSTANT_ROWS for g in range(groups)]
    for row, g in constant:
        part = slice(g * length, (g + 1) * length)
        check_constant_set(y[row, part], mean[row, g], rstd[row, g], x[row, part], b[part],
                           1e-5, f"row {row} group {g}",
                           rstd_in_dtype=8 <= length <= 256)
    dx = cb.group_norm_backward(dy, x, groups, None, mean, rstd)[0]
    for row, g in constant:
        assert np.all(dx[row, g * length:(g + 1) * length] == 0), (row, g)


CONSTANT_VALUES = ((0.3, 0.7), (-7.1, -1.3), (1234.567, 3.3))    # (x, dy) of constant sets


def constant_sets(kind, shape, groups, dtype, rng):
    """(x, dy, sets): N(0, 1) data in which the first, third and last statistics sets (instance
    norm: (n, c); group norm: (n, group); batch norm: channels) hold the x and dy values of
    CONSTANT_VALUES; `sets` are their indices in the statistics' shape."""
    stats = stats_shape(kind, shape, groups)
    flat = (0, 2, math.prod(stats) - 1)
    constant = [tuple(int(i) for i in np.unravel_index(k, stats)) for k in flat]
    arrays = []
    for column in (0, 1):
        rows = sets(kind, rng.standard_normal(shape), groups).copy()
        for k, values in zip(constant, CONSTANT_VALUES):
            rows[k] = values[column]
        arrays.append(np.ascontiguousarray(unsets(kind, rows, shape)).astype(dtype))
    return arrays[0], arrays[1], constant


@pytest.mark.parametrize("affine", [False, True], ids=["plain", "affine"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("kind, shape, groups", [
    ("instance", (2, 3, 5), None),          # runs shorter than SHORT_RUN
    ("instance", (2, 3, 70, 70), None),     # sets of 4900, many blocks of the sums
    ("group", (3, 6, 5, 7), 3),             # 2 channels a group
    ("group", (4, 6, 3), 2),                # 3 short runs a group
    ("group", (2, 8, 40, 40), 4),           # sets of 3200
    ("batch", (3, 4, 300), None),           # run by run
    ("batch", (2, 4, 64, 64), None),        # run by run, sets of 8192
    ("batch", (7, 4, 5), None),             # by column sums
    ("batch", (5000, 4), None),             # by column sums, an (N, C) input, sets of 5000
], ids=str)
def test_channel_norm_of_a_constant_set_is_exact(kind, shape, groups, dtype, affine, rng,
                                                 restore_threads):
    """Group norm over spatial elements, instance norm and batch norm (run by run and by
    column sums) keep layer norm's property: a constant set has mean = its value,
    rstd = 1 / sqrt(eps) and y = bias (beta) bit for bit, with or without affine; with a
    constant g = dy * weight[c] (weight None, ones, 0.5: exact products) its dx is exactly 0,
    and a constant channel adds exactly 0 to batch norm's dweight. The same bits for 1 and 2
    threads, and the float64 truth within the tolerances for a random weight."""
    x, dy, constant = constant_sets(kind, shape, groups, dtype, rng)
    C = shape[1]
    w = rng.uniform(0.5, 2, C).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    results = []
    for threads in (1, 2):
        cb.set_num_threads(threads)
        y, _, stats = forward(kind, x, w, b, groups=groups)
        results.append((y, *stats) + tuple(backward(kind, dy, x, w, stats, groups=groups)))
    for got, other in zip(*results):
        if got is not None:
            assert_bitwise_equal(got, other, "1 thread vs 2")
    y, mean, rstd = results[0][:3]
    bias = np.broadcast_to(per_feature(kind, np.zeros(C, dtype) if b is None else b, x.ndim),
                           shape)
    y_sets, x_sets, bias_sets = (sets(kind, a, groups) for a in (y, x, bias))
    for k in constant:
        check_constant_set(y_sets[k], mean[k], rstd[k], x_sets[k], bias_sets[k], 1e-5,
                           f"set {k}")
    for weight in (None, np.ones(C, dtype), np.full(C, 0.5, dtype)):     # g exact and constant
        dx, dw, _ = backward(kind, dy, x, weight, (mean, rstd), groups=groups)
        dx_sets = sets(kind, dx, groups)
        for k in constant:
            assert np.all(dx_sets[k] == 0), (k, np.abs(dx_sets[k]).max())
        if kind == "batch" and weight is not None:
            assert np.all(dw[[k[0] for k in constant]] == 0), dw
    check_forward(kind, dtype, (y, None, (mean, rstd)),
                  dict(x=x, weight=w, bias=b, groups=groups))
    check_backward(kind, dtype, results[0][3:], dy, x, w, (mean, rstd), groups)


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 1), (4, 3, 1, 1), (0, 3, 1)])
@pytest.mark.parametrize("lib", [cb, cb.reference], ids=["cyburn", "reference"])
def test_instance_norm_of_one_spatial_element_raises(lib, shape):
    """Normalizing each channel over one value: ValueError, as in PyTorch (which returned
    the bias before)."""
    x = np.ones(shape, F32)
    with pytest.raises(ValueError, match=r"Expected more than 1 spatial element.*\bx\b"):
        lib.instance_norm(x)
    with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
        lib.instance_norm(x, np.ones(3, F32), np.ones(3, F32), return_stats=True)


@pytest.mark.parametrize("lib", [cb, cb.reference], ids=["cyburn", "reference"])
def test_group_norm_of_one_element_per_group_is_the_bias(lib, rng):
    """One element per group (C groups of an (N, C) input) stays as PyTorch has it: y = bias."""
    x = rng.standard_normal((3, 4)).astype(F32)
    assert np.all(lib.group_norm(x, 4) == 0)
    b = rng.standard_normal(4).astype(F32)
    assert_bitwise_equal(lib.group_norm(x, 4, np.ones(4, F32), b), np.tile(b, (3, 1)), "y")


def test_one_spatial_element_as_pytorch(torch, rng):
    x = rng.standard_normal((3, 4, 1)).astype(F32)
    with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
        torch.nn.functional.instance_norm(torch.from_numpy(x))
    want = torch.nn.functional.group_norm(torch.from_numpy(x[..., 0]), 4).numpy()
    assert_bitwise_equal(cb.group_norm(x[..., 0], 4), want, "group_norm, one element a group")


@pytest.mark.parametrize("case", ["batch columns", "batch runs", "instance", "group"])
def test_infinite_weight_in_a_channel_norm_backward(case, rng):
    """An infinite weight: sum(dy * weight * ...) over a set is taken as weight[c] times the
    channel's sum (exact algebra for finite values, PyTorch's order), so the channel's dx are
    +-inf where that gives one infinity and NaN where opposite ones meet, the same in the
    kernels (columns and runs) and the reference. The issue's example: batch norm of
    dy = [1, 2, -1], x = [1, -1, 0], weight = inf, mean = -2, rstd = 1 gives
    [inf - inf, inf - inf, -inf - inf] = [nan, nan, -inf] (the reference gave NaN at all)."""
    if case == "batch columns":
        dy, x = np.array([[1.0], [2.0], [-1.0]]), np.array([[1.0], [-1.0], [0.0]])
        w, mean, rstd = np.array([np.inf]), np.array([-2.0]), np.array([1.0])
        want = np.array([[np.nan], [np.nan], [-np.inf]])
        for lib in (cb, cb.reference):
            dx = lib.batch_norm_backward(dy, x, w, mean, rstd)[0]
            assert np.array_equal(dx, want, equal_nan=True), (lib.__name__, dx.ravel())
        return
    shape = {"batch runs": (3, 2, 300), "instance": (2, 3, 5), "group": (2, 4, 5)}[case]
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    w = np.array([1.5, np.inf, -0.5, 2.0][:shape[1]])
    if case == "batch runs":
        _, mean, rstd = cb.batch_norm(x, return_stats=True)
        results = [lib.batch_norm_backward(dy, x, w, mean, rstd) for lib in (cb, cb.reference)]
    elif case == "instance":
        _, mean, rstd = cb.instance_norm(x, return_stats=True)
        results = [lib.instance_norm_backward(dy, x, w, mean, rstd)
                   for lib in (cb, cb.reference)]
    else:
        _, mean, rstd = cb.group_norm(x, 2, return_stats=True)
        results = [lib.group_norm_backward(dy, x, 2, w, mean, rstd)
                   for lib in (cb, cb.reference)]
    (dx, dw, db), (rdx, rdw, rdb) = results
    assert np.array_equal(np.isnan(dx), np.isnan(rdx)), "NaN at different places"
    infinite = np.isinf(rdx)
    assert np.array_equal(dx[infinite], rdx[infinite]), "different infinities"
    assert (~np.isfinite(rdx)).any()
    finite = np.isfinite(rdx)
    assert_within(dx[finite], rdx[finite], 1e-12 * (1 + np.abs(rdx[finite])), "finite dx")
    assert_within(dw, rdw, 1e-12 * (1 + np.abs(rdw)), "dweight")
    assert_within(db, rdb, 1e-12 * (1 + np.abs(rdb)), "dbias")


def check_group_norm_of_rows(x, dy, groups, dtype, rng):
    """group_norm and its backward of (N, C) data with a random affine: the same bits for 1
    and 2 threads, and the float64 truth within the tolerances; returns (mean, rstd)."""
    w = rng.uniform(0.5, 2, x.shape[1]).astype(dtype)
    b = rng.standard_normal(x.shape[1]).astype(dtype)
    results = []
    for threads in (1, 2):
        cb.set_num_threads(threads)
        y, mean, rstd = cb.group_norm(x, groups, w, b, return_stats=True)
        results.append((y, mean, rstd) + cb.group_norm_backward(dy, x, groups, w, mean, rstd))
    for a, b_ in zip(*results):
        assert_bitwise_equal(a, b_, "1 thread vs 2")
    check_forward("group", dtype, (results[0][0], None, results[0][1:3]),
                  dict(x=x, weight=w, bias=b, groups=groups))
    check_backward("group", dtype, results[0][3:], dy, x, w, results[0][1:3], groups)
    return results[0][1:3]


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("shape, groups", [((7, 12), 3), ((300, 64), 8), ((5, 6), 6),
                                           ((130, 40, 1, 1), 4)])
def test_group_norm_of_one_spatial_element_takes_the_row_path(shape, groups, dtype, rng,
                                                               monkeypatch, restore_threads):
    """An (N, C) input's group of C / G one-element runs is a contiguous segment of a row: the
    layer-norm row kernels normalize it (the run-by-run channel kernels, much slower there, are
    not called), forward and backward, against the truth, bitwise alike for 1 and 2 threads."""
    import cyburn.normalization as module

    def not_this_path(*args):
        raise AssertionError("the run-by-run channel kernel was called")
    monkeypatch.setattr(module, "kernels", _Without(module.kernels, not_this_path))
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    mean, rstd = check_group_norm_of_rows(x, dy, groups, dtype, rng)
    dx, dw, db = cb.group_norm_backward(dy, x, groups, None, mean, rstd)
    assert dw is None and db is None
    want = cb.reference.group_norm_backward(dy.astype(F64), x.astype(F64), groups, None,
                                            mean, rstd)[0]
    assert_within(dx, want, 1e-4 if dtype == F32 else 1e-12, "dx without weight")


class _Without:
    """A kernels module whose channel_norm_forward and channel_norm_backward are `replacement`."""

    def __init__(self, kernels, replacement):
        self._kernels, self._replacement = kernels, replacement

    def __getattr__(self, name):
        if name in ("channel_norm_forward", "channel_norm_backward"):
            return self._replacement
        return getattr(self._kernels, name)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("shape, groups", [
    ((300, 5), 5),          # groups of 1 element, odd C
    ((9, 14), 7),           # 2
    ((300, 15), 5),         # 3, odd C
    ((6, 35), 7),           # 5, odd C: blocked sums (shorter than a vector)
    ((50, 112), 7),         # 16: the lane-wise sums, 7 segments (not a multiple of 8 or 4)
    ((300, 96), 3),         # 32: the lane-wise sums
    ((20, 144), 3),         # 48: 16 lanes, a constant length
    ((5, 192), 3),          # 64
    ((4, 4096), 16),        # 256: the longest lane-wise segment
    ((3, 1056), 2),         # 528: blocked sums, a multiple of 16
    ((70, 120), 3),         # 40: 16 lanes and 8
    ((70, 72), 3),          # 24: 16 lanes and 8, a constant length
    ((70, 60), 3),          # 20: 16 lanes and a masked vector of 4
    ((40, 768), 64),        # 12: 8 lanes and a masked vector of 4, a constant length
    ((40, 90), 10),         # 9: the shortest odd lane-wise segment, a masked vector of 1
    ((30, 85), 5),          # 17: 16 lanes and a masked vector of 1, odd C
    ((4, 765), 3),          # 255: 16 lanes, 8 and a masked vector of 7
    ((4, 771), 3),          # 257: blocked sums, just past the lane-wise lengths
    ((3, 8320), 130),       # 64 elements in many batches, the last one short
], ids=str)
def test_group_norm_of_an_n_by_c_input_against_the_truth(shape, groups, dtype, rng,
                                                           restore_threads):
    """group_norm and group_norm_backward of (N, C) data, each group a segment of C / G
    elements of its row, for segments summed lane-wise (8 to 256 elements, in 16 lanes or 8 and
    a masked last vector) and by the blocked sums (other lengths): the truth in float64 within
    the tolerances, and the same bits for 1 and 2 threads. x = 300 + N(0, 1) checks the
    two-pass variance."""
    x = (rng.standard_normal(shape) + 300).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    check_group_norm_of_rows(x, dy, groups, dtype, rng)
