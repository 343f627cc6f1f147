"""cross_entropy, cross_entropy_backward and linear_cross_entropy: every option and combination
against float64 truth and cyburn.reference; vocabularies from 2 to 50257 classes and 1-d to
4-d logits; gradients by finite differences; gradients written over the logits; ignored and empty
batches; extreme logits; errors; dtypes; the loss summed in float64; and the chunked linear
cross-entropy's results and memory. (The contracts every public function keeps, PyTorch parity
over every option and thread-count determinism among them: tests/test_contracts.py, which uses
the helpers here.)

Truth is cyburn.reference run in float64 on the values the kernel computes with (logits, class
weights and probability targets rounded to the compute dtype first), so the only differences
left are the kernel's own roundings. With z the (soft-capped) logits of a row, m = max(z),
lse = logsumexp(z), p = softmax(z) and r the row's class coefficients (loss_i =
sum_c r_c * (-logp_c) + z_loss * lse**2, see cyburn.reference), e = eps(compute dtype) and
k = K(C) = 8 + 2 sqrt(C) (the rounding of a sum over C terms), the elements carry

    -logp_c:  d_c = e * (2 (|z_c| + |m|) + k + 2)            (4 instead of 2 with a softcap)
    lse:      d = e * (2 |m| + k)
    loss_i:   sum_c |r_c| (d_c + k e |logp_c|) + |z_loss| (2 |lse| d + k e lse**2)
    dz_j:     p_j (R + 2 |z_loss lse|) (d_j + k e) + 2 |z_loss| p_j d + 2 e |r_j|,  R = sum_c |r_c|
              times the softcap's factor 1 - (z_j / c)**2, whose own rounding adds 4 e |dz_j|,

times |dloss| (/ the mean's denominator), summed over the rows for "sum" and "mean", plus the
result dtype's rounding of the value. For N(0, 3**2) logits that is about 1e-6 relative in
float32, while a wrong kernel (a missing smoothing term, a wrong denominator, a weighted z-loss,
no softcap chain rule) is off by 1e-3 to 1. linear_cross_entropy adds the rounding of its
matmuls: e K(D) (|hidden| @ |weight|.T + |bias|) on each logit, propagated to the loss and its
gradients, and e K(n) of the sums its chain rule takes.
"""
import itertools
import math
import re
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

import cyburn as cb
from helpers import DTYPES, F16, F32, F64, assert_bitwise_equal, assert_within, \
    central_difference, compute_dtype, in_layout, is_bf16
from helpers import eps as eps_of
from helpers import tiny as ulp_floor

REDUCTIONS = ("mean", "sum", "none")
KINDS = ("index", "probabilities")
FUNCTIONS = ("cross_entropy", "cross_entropy_backward", "linear_cross_entropy")


def K(n):
    """Rounding-error allowance, in units of eps, of a reduction over n terms."""
    return 8 + 2 * math.sqrt(max(n, 1))


def as_computed(a, dtype):
    """a rounded to the compute dtype of `dtype`, as float64: the values the kernel uses."""
    return None if a is None else np.asarray(a).astype(compute_dtype(dtype)).astype(F64)


def is_probabilities(target):
    target = np.asarray(target)
    return target.dtype.kind == "f" or is_bf16(target.dtype)


# ================================================================================================
# Inputs
# ================================================================================================

def make_logits(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def make_target(rng, shape, kind, ignore_index=-100, ignored=0.25):
    """A target for logits of `shape`. Class indices: a share `ignored` of the rows (at least
    one, never all of them when there are two or more) set to ignore_index. Probabilities:
    rows with zeros and sums from 0.5 to 1.5 (PyTorch does not require them to sum to 1)."""
    batch, classes = tuple(shape[:-1]), shape[-1]
    if kind == "index":
        t = np.asarray(rng.integers(0, classes, batch))
        flat = t.reshape(-1)
        if ignored and flat.size > 1:
            count = max(1, int(ignored * flat.size))
            flat[rng.choice(flat.size, count, replace=False)] = ignore_index
        return t
    q = rng.random(shape) ** 2
    q[q < 0.05] = 0.0
    return q * rng.uniform(0.5, 1.5, batch + (1,)) / np.maximum(q.sum(-1, keepdims=True), 1e-3)


def make_options(rng, classes, dtype, weight=False, **options):
    """Keyword arguments of the functions; class weights from 0.25 to 2 when `weight`, in the
    logits' dtype (test_result_dtypes_follow_the_logits passes other dtypes)."""
    if weight:
        options["weight"] = rng.uniform(0.25, 2.0, classes).astype(dtype)
    return options


def option_cases():
    """Every combination of class weights, ignore_index (the default with ignored rows, or one
    inside the class range), label smoothing, z-loss and softcap."""
    for w, ignore, eps, a, c in itertools.product((False, True), (-100, 1), (0.0, 0.1),
                                                  (0.0, 0.02), (None, 4.0)):
        name = "-".join(s for s in ("w" if w else "", f"ii{ignore}", f"ls{eps}" if eps else "",
                                    f"z{a}" if a else "", f"cap{c}" if c else "") if s)
        yield pytest.param(dict(weight=w, ignore_index=ignore, label_smoothing=eps, z_loss=a,
                                softcap=c), id=name)


ALL_OPTIONS = dict(weight=True, ignore_index=-100, label_smoothing=0.1, z_loss=0.02, softcap=4.0)


def for_kind(options, kind):
    """The options for targets of `kind`: probability targets take only a negative
    ignore_index (as in PyTorch; test_probabilities_with_ignore_index checks the error), so an
    ignore_index inside the class range becomes -1 for them."""
    if kind == "probabilities" and options.get("ignore_index", -100) >= 0:
        return dict(options, ignore_index=-1)
    return options


# ================================================================================================
# Truth and tolerances
# ================================================================================================

def parts(x, target, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0,
          softcap=None, **_):
    """The definitions' per-row quantities in float64, for logits x (..., C) taken as rows:
    z, m, lse, p, nlogp = -logp, the class coefficients r (zero for ignored rows), valid,
    share (a row's part of the mean's denominator), the row losses, and the gradient of each
    row's loss before the softcap (dz_pre), the softcap's factor (fac) and after it (dz)."""
    classes = x.shape[-1]
    x = np.asarray(x, F64).reshape(-1, classes)
    n, eps = x.shape[0], label_smoothing
    target = np.asarray(target)
    with np.errstate(all="ignore"):
        z = x if softcap is None else softcap * np.tanh(x / softcap)
        m = z.max(axis=-1)
        lse = m + np.log(np.exp(z - m[:, None]).sum(axis=-1))
        nlogp = lse[:, None] - z
        p = np.exp(-nlogp)
        w = np.ones(classes) if weight is None else np.asarray(weight, F64)
        if is_probabilities(target):
            r = w * ((1 - eps) * target.reshape(-1, classes).astype(F64) + eps / classes)
            valid, share = np.ones(n, bool), np.ones(n)
        else:
            t = target.reshape(-1)
            valid = t != ignore_index
            ts = np.where(valid, t, 0)
            r = np.tile(eps / classes * w, (n, 1))
            r[np.arange(n), ts] += (1 - eps) * w[ts]
            share = np.where(valid, w[ts], 0.0)
        r[~valid] = 0.0
        loss = np.where(valid, (r * nlogp).sum(-1) + z_loss * lse ** 2, 0.0)
        dz_pre = p * (r.sum(-1) + 2 * z_loss * lse)[:, None] - r
        fac = np.ones_like(z) if softcap is None else 1 - (z / softcap) ** 2
        dz = np.where(valid[:, None], dz_pre * fac, 0.0)
    return SimpleNamespace(z=z, m=m, lse=lse, p=p, nlogp=nlogp, r=r, valid=valid, share=share,
                           loss=loss, dz_pre=dz_pre, fac=fac, dz=dz)


def row_tolerances(P, dtype, z_loss=0.0, softcap=None, **_):
    """(tolerance of each row's loss (N,), of each row's gradient (N, C) before dloss), from the
    error budget in the module's docstring."""
    e, k = eps_of(compute_dtype(dtype)), K(P.z.shape[-1])
    c1 = 2 if softcap is None else 4
    am = np.abs(P.m)[:, None]
    d_nlogp = e * (c1 * (np.abs(P.z) + am) + k + 2)
    d_lse = e * (c1 * np.abs(P.m) + k)
    L, A, R = np.abs(P.lse), abs(z_loss), np.abs(P.r)
    with np.errstate(all="ignore"):
        row = (np.sum(R * (d_nlogp + k * e * np.abs(P.nlogp)), axis=-1)
               + A * (2 * L * d_lse + k * e * L ** 2))
        coef = (R.sum(-1) + 2 * A * L)[:, None]
        dz = P.p * (coef * (d_nlogp + k * e) + 2 * A * d_lse[:, None]) + 2 * e * R
        dz = dz * np.abs(P.fac) + (0.0 if softcap is None else 4 * e * np.abs(P.dz_pre))
    return np.where(P.valid, row, 0.0), np.where(P.valid[:, None], dz, 0.0)


def reduce_tolerances(P, row, dz, reduction, dloss, batch):
    """Tolerances of the reduced loss and of dlogits (rows) for gradient scale dloss."""
    d = np.abs(np.broadcast_to(np.asarray(dloss, F64), batch)).reshape(-1)
    with np.errstate(all="ignore"):
        if reduction == "none":
            return row.reshape(batch), d[:, None] * dz
        if reduction == "sum":
            return row.sum(), d[:, None] * dz
        den = P.share.sum()
        return row.sum() / den, np.where(P.valid[:, None], d[:, None] / den * dz, 0.0)


def truth_target(target, dtype):
    return as_computed(target, dtype) if is_probabilities(target) else np.asarray(target)


def expected(logits, target, dtype, reduction="mean", dloss=None, **options):
    """(loss, dlogits, tolerance of loss, tolerance of dlogits) for the kernel on these inputs;
    dlogits of dloss * loss (dloss None: 1, as return_grad gives it)."""
    x = as_computed(logits, dtype)
    opts = dict(options, weight=as_computed(options.get("weight"), dtype))
    tgt = truth_target(target, dtype)
    dloss = 1.0 if dloss is None else dloss
    loss = cb.reference.cross_entropy(x, tgt, reduction=reduction, **opts)
    grad = cb.reference.cross_entropy_backward(x, tgt, dloss, reduction=reduction, **opts)
    P = parts(x, tgt, **opts)
    row, dz = row_tolerances(P, dtype, **opts)
    tol_loss, tol_grad = reduce_tolerances(P, row, dz, reduction, dloss, x.shape[:-1])
    eo, tiny = eps_of(dtype), ulp_floor(dtype)
    with np.errstate(invalid="ignore"):
        tol_loss = tol_loss + eo * np.abs(loss) + tiny
    tol_grad = tol_grad.reshape(x.shape) + eo * np.abs(grad) + tiny
    return loss, grad, tol_loss, tol_grad


def check(got, truth, tol, dtype, what):
    """got is an ndarray of `dtype` and truth's shape, within tol of the truth (which is +-inf
    where it rounds beyond the dtype's range)."""
    truth = np.asarray(truth, F64)
    assert type(got) is np.ndarray, f"{what}: {type(got).__name__}, not numpy.ndarray"
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, expected {dtype}"
    assert got.shape == truth.shape, f"{what}: shape {got.shape}, expected {truth.shape}"
    with np.errstate(over="ignore"):
        rounded = truth.astype(dtype).astype(F64)
    truth = np.where(np.isinf(rounded), rounded, truth)
    assert_within(got, truth, tol, what)


def run_and_check(logits, target, dtype, options, rng, what=""):
    """Every reduction, the loss alone and with return_grad, cross_entropy_backward with a
    random dloss (scalar; per row for "none") and the default one: against the truth, and the
    reference in the same dtype (both within the tolerance, so within twice it of each
    other)."""
    batch = tuple(np.shape(logits)[:-1])
    for reduction in REDUCTIONS:
        kw = dict(options, reduction=reduction)
        name = f"{what} {reduction}"
        loss_t, grad_t, tol_l, tol_g = expected(logits, target, dtype, **kw)
        loss = cb.cross_entropy(logits, target, **kw)
        check(loss, loss_t, tol_l, dtype, f"loss {name}")
        ref = cb.reference.cross_entropy(logits, target, **kw)
        check(ref, loss_t, tol_l, dtype, f"reference loss {name}")
        assert_within(loss, ref, 2 * tol_l, f"loss vs reference {name}")

        result = cb.cross_entropy(logits, target, return_grad=True, **kw)
        assert type(result) is tuple and len(result) == 2
        check(result[0], loss_t, tol_l, dtype, f"loss with return_grad {name}")
        check(result[1], grad_t, tol_g, dtype, f"dlogits {name}")
        assert result[1].flags.c_contiguous
        ref_grad = cb.reference.cross_entropy(logits, target, return_grad=True, **kw)[1]
        check(ref_grad, grad_t, tol_g, dtype, f"reference dlogits {name}")
        assert_within(result[1], ref_grad, 2 * tol_g, f"dlogits vs reference {name}")
        check(cb.cross_entropy_backward(logits, target, **kw), grad_t, tol_g, dtype,
              f"backward, default dloss {name}")

        dlosses = [float(rng.uniform(-2, 2))]
        if reduction == "none":
            dlosses.append(rng.uniform(-2, 2, batch))
        for dloss in dlosses:
            _, grad_t, _, tol_g = expected(logits, target, dtype, dloss=dloss, **kw)
            got = cb.cross_entropy_backward(logits, target, dloss, **kw)
            check(got, grad_t, tol_g, dtype, f"backward, dloss of shape {np.shape(dloss)} {name}")
            ref = cb.reference.cross_entropy_backward(logits, target, dloss, **kw)
            assert_within(got, ref, 2 * tol_g, f"backward vs reference {name}")


def copies(*arrays):
    return [None if a is None else np.array(a, copy=True) for a in arrays]


def assert_unchanged(arrays, before, what="input"):
    for a, b in zip(arrays, before):
        if a is not None:
            assert_bitwise_equal(np.asarray(a), b, f"{what} modified")


# ================================================================================================
# Every option and combination, every dtype
# ================================================================================================

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("options", option_cases())
def test_every_option_matches_truth_and_reference(options, kind, dtype, rng):
    options = for_kind(options, kind)
    shape = (2, 3, 17)
    logits = make_logits(rng, shape, dtype)
    target = make_target(rng, shape, kind, options["ignore_index"])
    kw = make_options(rng, shape[-1], dtype, **options)
    before = copies(logits, target, kw.get("weight"))
    run_and_check(logits, target, dtype, kw, rng, f"{kind} {dtype}")
    assert_unchanged((logits, target, kw.get("weight")), before)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("options", option_cases())
def test_reference_follows_the_formulas(options, kind, rng):
    """The oracle itself, in float64, against the definitions written out in this file."""
    options = for_kind(options, kind)
    shape = (3, 4, 6)
    x = rng.standard_normal(shape) * 3
    target = make_target(rng, shape, kind, options["ignore_index"])
    kw = make_options(rng, shape[-1], F64, **options)
    P = parts(x, target, **kw)
    denominator = P.share.sum()
    want = {"none": P.loss.reshape(shape[:-1]), "sum": P.loss.sum(),
            "mean": P.loss.sum() / denominator}
    grads = {"none": P.dz, "sum": P.dz, "mean": P.dz / denominator}
    for reduction in REDUCTIONS:
        loss, grad = cb.reference.cross_entropy(x, target, reduction=reduction, return_grad=True,
                                                **kw)
        np.testing.assert_allclose(loss, want[reduction], rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(grad, grads[reduction].reshape(shape), rtol=1e-12,
                                   atol=1e-15)


def test_small_exact_values():
    """Values worked out by hand (float64)."""
    ln2 = math.log(2)
    loss, g = cb.cross_entropy(np.zeros((2, 2)), [0, 1], return_grad=True)
    np.testing.assert_allclose(loss, ln2, rtol=1e-15)
    np.testing.assert_allclose(g, [[-0.25, 0.25], [0.25, -0.25]], rtol=1e-15)
    # weights: the mean divides by the targets' weights, 1 + 3
    kw = dict(weight=[1.0, 3.0])
    np.testing.assert_allclose(cb.cross_entropy(np.zeros((2, 2)), [0, 1], **kw), ln2, rtol=1e-15)
    np.testing.assert_allclose(cb.cross_entropy(np.zeros((2, 2)), [0, 1], reduction="sum", **kw),
                               4 * ln2, rtol=1e-15)
    # label smoothing 1 with logits (0, ln 3): the uniform target, (ln 4 + ln(4/3)) / 2
    x = np.array([[0.0, math.log(3)]])
    np.testing.assert_allclose(cb.cross_entropy(x, [1], label_smoothing=1.0),
                               (math.log(4) + math.log(4 / 3)) / 2, rtol=1e-15)
    # smoothing 0.5: 0.5 * ln(4/3) + 0.25 * (ln 4 + ln(4/3))
    np.testing.assert_allclose(cb.cross_entropy(x, [1], label_smoothing=0.5),
                               0.5 * math.log(4 / 3) + 0.25 * (math.log(4) + math.log(4 / 3)),
                               rtol=1e-15)
    # z-loss: lse = ln 4; unweighted, reduced like the loss (mean over the weight 2 of target 1)
    np.testing.assert_allclose(
        cb.cross_entropy(x, [1], z_loss=0.5, weight=[1.0, 2.0]),
        (2 * math.log(4 / 3) + 0.5 * math.log(4) ** 2) / 2, rtol=1e-15)
    # softcap: logits (0, 1e3) with cap 2 are z = (0, 2)
    np.testing.assert_allclose(cb.cross_entropy([[0.0, 1e3]], [0], softcap=2.0),
                               math.log(1 + math.exp(2)), rtol=1e-15)
    # probabilities: the uniform target on equal logits
    np.testing.assert_allclose(cb.cross_entropy(np.zeros((3, 4)), np.full((3, 4), 0.25)),
                               math.log(4), rtol=1e-15)


# ================================================================================================
# Vocabulary sizes, shapes, zero sizes
# ================================================================================================

def vocabulary_cases():
    for classes in (2, 3, 16, 17, 255, 256, 257, 1000, 4097, 50257):
        for dtype in ((F32, F64) if classes <= 4097 else (F32,)):
            for kind in KINDS:
                for full in (False, True):
                    yield pytest.param(classes, dtype, kind, full,
                                       id=f"C{classes}-{dtype}-{kind}-{'all' if full else 'plain'}")


@pytest.mark.parametrize("classes, dtype, kind, all_options", vocabulary_cases())
def test_vocabulary_sizes(classes, dtype, kind, all_options, rng):
    n = 8 if classes > 5000 else max(3, min(40, 12000 // classes))
    shape = (n, classes)
    options = ALL_OPTIONS if all_options else dict(ignore_index=-100)
    logits = make_logits(rng, shape, dtype)
    target = make_target(rng, shape, kind, ignored=0.25 if all_options else 0)
    run_and_check(logits, target, dtype, make_options(rng, classes, dtype, **options), rng,
                  f"{shape} {kind}")


@pytest.mark.parametrize("shape", [(7,), (1, 7), (5, 7), (2, 3, 7), (2, 1, 3, 7), (4, 1), (1,),
                                   (3, 300)])
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_shapes(shape, dtype, kind, rng):
    """1-d logits (one row, a 0-d target), 2-d to 4-d, a single class."""
    logits = make_logits(rng, shape, dtype)
    for options in (dict(), ALL_OPTIONS):
        target = make_target(rng, shape, kind, ignored=0.25 if options else 0)
        kw = make_options(rng, shape[-1], dtype, **options)
        run_and_check(logits, target, dtype, kw, rng, f"{shape} {kind} {options}")


# ================================================================================================
# Ignored rows
# ================================================================================================

@pytest.mark.parametrize("options", [dict(), ALL_OPTIONS,
                                     dict(ALL_OPTIONS, ignore_index=1)], ids=["plain", "all",
                                                                              "in-range"])
@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=str)
def test_all_ignored(options, dtype, rng):
    """Every target ignored: mean NaN (0/0, as PyTorch), sum 0, 'none' zeros, gradients zero."""
    shape = (4, 3, 9)
    logits = make_logits(rng, shape, dtype)
    target = np.full(shape[:-1], options.get("ignore_index", -100))
    kw = make_options(rng, shape[-1], dtype, **options)
    for reduction in REDUCTIONS:
        loss, g = cb.cross_entropy(logits, target, reduction=reduction, return_grad=True, **kw)
        if reduction == "mean":
            assert loss.shape == () and np.isnan(loss)
        else:
            assert loss.shape == (() if reduction == "sum" else shape[:-1])
            assert np.all(loss == 0)
        assert g.dtype == dtype and np.all(g == 0), reduction
        dloss = rng.uniform(1, 2, shape[:-1]) if reduction == "none" else 1.5
        assert np.all(cb.cross_entropy_backward(logits, target, dloss, reduction=reduction,
                                                **kw) == 0)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_ignored_rows_do_not_count(dtype, rng):
    """Ignored rows add nothing, not even their z-loss, and are left out of the mean's
    denominator: the loss is that of the other rows alone, whatever the ignored rows hold."""
    shape = (12, 33)
    logits = make_logits(rng, shape, dtype)
    target = make_target(rng, shape, "index", ignored=0.5)
    kept = target != -100
    kw = make_options(rng, shape[-1], dtype, **ALL_OPTIONS)
    for reduction in ("mean", "sum"):
        loss_t, _, tol, _ = expected(logits[kept], target[kept], dtype, reduction, **kw)
        garbage = logits.copy()
        garbage[~kept] = np.array(1e4, dtype) if dtype == F32 else 1e300
        for x in (logits, garbage):
            loss, g = cb.cross_entropy(x, target, reduction=reduction, return_grad=True, **kw)
            check(loss, loss_t, tol, dtype, f"{reduction} with ignored rows")
            assert np.all(g[~kept] == 0)


def test_masked_logits(rng):
    """-inf logits (masked classes): probability zero. Without smoothing the loss is finite
    (that of the same logits with the masked ones at -1e4); with smoothing it is inf, as in
    PyTorch; the gradient is finite either way (at the masked classes zero, or -eps / C from
    the smoothing term)."""
    shape = (5, 11)
    logits = make_logits(rng, shape, F32)
    target = np.array([0, 3, 5, 10, -100])
    masked = rng.random(shape) < 0.3
    masked[np.arange(4), target[:4]] = False
    x = np.where(masked, -np.inf, logits).astype(F32)
    finite = np.where(masked, -1e4, logits).astype(F32)
    for eps in (0.0, 0.1):
        loss, g = cb.cross_entropy(x, target, label_smoothing=eps, return_grad=True)
        loss_f, g_f = cb.cross_entropy(finite, target, label_smoothing=eps, return_grad=True)
        if eps == 0:
            _, _, tol, tol_g = expected(finite, target, F32)
            assert np.isfinite(loss)
            assert_within(loss, loss_f, 2 * tol, "masked loss")
        else:
            assert loss == np.inf
            _, _, _, tol_g = expected(finite, target, F32, label_smoothing=eps)
        assert np.all(np.isfinite(g)) and np.all(g[4] == 0)             # row 4 is ignored
        assert_within(g[:4][masked[:4]], np.full(masked[:4].sum(), -eps / 11 / 4), 1e-8,
                      "masked classes' gradient")
        assert_within(g, g_f, 2 * tol_g, f"masked gradient, smoothing {eps}")


# ================================================================================================
# Extreme logits
# ================================================================================================

@pytest.mark.parametrize("big", [1e4, 1e30])
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("options", [dict(), dict(weight=True, label_smoothing=0.1),
                                     dict(z_loss=1e-3), dict(softcap=30.0)],
                         ids=["plain", "w-ls", "z", "cap"])
def test_extreme_logits_stay_finite(big, dtype, options, rng):
    """Rows mixing +-big with ordinary logits, rows all +-big, a constant row of +big, targets
    on +big and on -big entries: finite losses and gradients wherever the mathematics is
    finite in the dtype (max subtraction; a z-loss of lse**2 = 1e60 is not, in float32)."""
    if big == 1e30 and dtype == F32 and options.get("z_loss"):
        pytest.skip("lse**2 = 1e60 overflows float32")
    shape = (6, 33)
    x = rng.standard_normal(shape)
    pick = rng.random(shape) < 0.2
    x[pick] = big * rng.choice([-1.0, 1.0], pick.sum())
    x[1] = big * rng.choice([-1.0, 1.0], shape[1])
    x[2] = big
    x[3, :3] = (big, -big, big)
    x = x.astype(dtype)
    target = np.array([0, 1, 2, 1, 4, 5])
    target[0] = int(np.argmax(x[0]))
    target[4] = int(np.argmin(x[4]))
    kw = make_options(rng, shape[-1], dtype, **options)
    for reduction in REDUCTIONS:
        loss, g = cb.cross_entropy(x, target, reduction=reduction, return_grad=True, **kw)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(g)), reduction
        loss_t, grad_t, tol_l, tol_g = expected(x, target, dtype, reduction, **kw)
        check(loss, loss_t, tol_l, dtype, f"extreme loss {reduction}")
        check(g, grad_t, tol_g, dtype, f"extreme dlogits {reduction}")
    assert np.all(np.isfinite(cb.cross_entropy_backward(x, target, 0.5, **kw)))


# ================================================================================================
# Gradients by finite differences (float64)
# ================================================================================================

FD_OPTIONS = [dict(), dict(weight=True, label_smoothing=0.2), dict(z_loss=0.05, softcap=2.5),
              dict(ALL_OPTIONS, z_loss=0.05, softcap=2.5), dict(ALL_OPTIONS, ignore_index=2)]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("options", FD_OPTIONS, ids=["plain", "w-ls", "z-cap", "all", "ii2"])
def test_gradient_is_the_derivative(options, kind, reduction, rng):
    """Central differences of L = sum(dloss * loss(logits)) against cross_entropy_backward
    (dloss a scalar, and per row for 'none') and against return_grad (dloss = 1)."""
    options = for_kind(options, kind)
    shape = (2, 3, 5)
    x = rng.standard_normal(shape) * 2
    target = make_target(rng, shape, kind, options.get("ignore_index", -100))
    kw = make_options(rng, shape[-1], F64, reduction=reduction, **options)
    dlosses = [1.0, -0.7] + ([rng.uniform(-2, 2, shape[:-1])] if reduction == "none" else [])

    def numeric(dloss):
        return central_difference(
            lambda logits: np.sum(dloss * cb.cross_entropy(logits, target, **kw)), x)

    for dloss in dlosses:
        num = numeric(dloss)
        got = cb.cross_entropy_backward(x, target, dloss, **kw)
        assert_within(got, num, 1e-6 * (1 + np.max(np.abs(num))),
                      f"backward vs finite differences, dloss {np.shape(dloss)}")
        if np.ndim(dloss) == 0 and dloss == 1.0:
            _, g = cb.cross_entropy(x, target, return_grad=True, **kw)
            assert_within(g, num, 1e-6 * (1 + np.max(np.abs(num))), "return_grad vs f.d.")


# ================================================================================================
# grad_out= and out=: into a given array, over the logits
# ================================================================================================

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_over_the_logits(kind, layout, dtype, rng):
    """grad_out=logits overwrites the logits with their gradient: the same loss and the same
    bits as the out-of-place call; likewise cross_entropy_backward(out=logits) and a separate
    grad_out / out."""
    shape = (6, 40)
    logits0 = make_logits(rng, shape, dtype)
    target = make_target(rng, shape, kind)
    kw = make_options(rng, shape[-1], dtype, **ALL_OPTIONS)
    for reduction in REDUCTIONS:
        x = in_layout(logits0.copy(), layout, rng)
        want_loss, want = cb.cross_entropy(x, target, reduction=reduction, return_grad=True,
                                           **kw)
        out = in_layout(np.zeros(shape, dtype), layout, rng)
        loss, g = cb.cross_entropy(x, target, reduction=reduction, return_grad=True,
                                   grad_out=out, **kw)
        assert g is out
        assert_bitwise_equal(loss, want_loss, f"loss with grad_out ({reduction})")
        assert_bitwise_equal(np.ascontiguousarray(out), want, "dlogits into grad_out")
        assert_bitwise_equal(np.ascontiguousarray(x), logits0, "logits kept")
        loss, g = cb.cross_entropy(x, target, reduction=reduction, return_grad=True,
                                   grad_out=x, **kw)
        assert g is x
        assert_bitwise_equal(loss, want_loss, f"loss computed in place ({reduction})")
        assert_bitwise_equal(np.ascontiguousarray(x), want, f"dlogits in place ({reduction})")

        dloss = rng.uniform(0.5, 2, shape[:-1]) if reduction == "none" else 0.75
        x = in_layout(logits0.copy(), layout, rng)
        want = cb.cross_entropy_backward(x, target, dloss, reduction=reduction, **kw)
        out = in_layout(np.zeros(shape, dtype), layout, rng)
        assert cb.cross_entropy_backward(x, target, dloss, reduction=reduction, out=out,
                                         **kw) is out
        assert_bitwise_equal(np.ascontiguousarray(out), want, f"backward into out ({reduction})")
        assert cb.cross_entropy_backward(x, target, dloss, reduction=reduction, out=x, **kw) is x
        assert_bitwise_equal(np.ascontiguousarray(x), want, f"backward in place ({reduction})")


def test_grad_out_needs_return_grad():
    """(The other out= and grad_out= errors: tests/test_contracts.py.)"""
    x = np.zeros((3, 4), F32)
    with pytest.raises(ValueError, match="return_grad"):       # it would be left unwritten
        cb.cross_entropy(x, np.array([0, 1, 2]), grad_out=np.zeros_like(x))


# ================================================================================================
# Errors
# ================================================================================================

def names_value(message, value):
    """The message names `value` as a number of its own (-1 is not found in -100)."""
    return re.search(rf"(?<![\d.\-]){re.escape(str(value))}(?![\d.])", message) is not None


def _raises_naming(func, shapes, exc=ValueError):
    """func raises exc naming every shape in `shapes` (each a shape or a tuple of choices)."""
    with pytest.raises(exc) as info:
        func()
    message = str(info.value)
    for s in shapes:
        choices = s if s and isinstance(s[0], tuple) else (s,)
        assert any(str(tuple(c)) in message for c in choices), (message, s)


BAD_TARGET_CASES = [(-100, 5), (-100, 12), (-100, -1), (-100, -3), (2, -100), (5, -1)]


@pytest.mark.parametrize("ignore_index, bad", BAD_TARGET_CASES)
@pytest.mark.parametrize("position", range(6))
def test_bad_target_raises_index_error_naming_it(ignore_index, bad, position, rng):
    """An out-of-range class index in any row (the others valid or ignored) raises IndexError
    naming it, from every function (5 classes; with ignore_index=2, -100 is out of range; with
    ignore_index=5, a target 5 is ignored and -1 is out of range)."""
    classes = 5
    target = rng.integers(0, classes, 6)
    target[(position + 3) % 6] = ignore_index
    target[position] = bad
    x = rng.standard_normal((6, classes)).astype(F32)
    kw = dict(ignore_index=ignore_index)
    eye = np.eye(classes, dtype=F32)
    calls = [lambda: cb.cross_entropy(x, target, **kw),
             lambda: cb.cross_entropy(x, target, reduction="none", **kw),
             lambda: cb.cross_entropy(x, target, return_grad=True, label_smoothing=0.1, **kw),
             lambda: cb.cross_entropy_backward(x, target, **kw),
             lambda: cb.cross_entropy(x.reshape(2, 3, classes), target.reshape(2, 3), **kw),
             lambda: cb.linear_cross_entropy(x, eye, target, chunk_size=4, **kw),
             lambda: cb.linear_cross_entropy(x, eye, target, return_grad=True, **kw)]
    for call in calls:
        with pytest.raises(IndexError) as info:
            call()
        assert names_value(str(info.value), bad), str(info.value)


def test_bad_targets_with_other_ignore_index():
    x = np.zeros((3, 5))
    # ignore_index=5 (outside the range) makes 5 an ignored target, -1 still an error
    assert float(cb.cross_entropy(x, [5, 0, 1], ignore_index=5, reduction="sum")) == (
        pytest.approx(2 * math.log(5)))
    with pytest.raises(IndexError) as info:
        cb.cross_entropy(x, [5, -1, 1], ignore_index=5)
    assert names_value(str(info.value), -1)
    # negative ignore_index other than -100
    assert float(cb.cross_entropy(x, [-1, 0, -1], ignore_index=-1)) == pytest.approx(math.log(5))


@pytest.mark.parametrize("reduction", ["avg", "MEAN", "", None, 1])
def test_bad_reduction(reduction):
    """ValueError (a TypeError is also fine for what is not a string at all)."""
    x, t = np.zeros((2, 3)), np.array([0, 1])
    error = ValueError if isinstance(reduction, str) else (ValueError, TypeError)
    with pytest.raises(error):
        cb.cross_entropy(x, t, reduction=reduction)
    with pytest.raises(error):
        cb.cross_entropy_backward(x, t, reduction=reduction)
    with pytest.raises(error):
        cb.linear_cross_entropy(x, np.eye(3), t, reduction=reduction)


@pytest.mark.parametrize("option, value", [("label_smoothing", -0.1), ("label_smoothing", 1.5),
                                           ("label_smoothing", float("nan")),
                                           ("softcap", 0.0), ("softcap", -1.0),
                                           ("softcap", float("inf")), ("softcap", float("nan"))])
def test_bad_label_smoothing_and_softcap(option, value):
    x, t = np.zeros((2, 3)), np.array([0, 1])
    q = np.full((2, 3), 1 / 3)
    for call in (lambda: cb.cross_entropy(x, t, **{option: value}),
                 lambda: cb.cross_entropy(x, q, **{option: value}),
                 lambda: cb.cross_entropy_backward(x, t, **{option: value}),
                 lambda: cb.linear_cross_entropy(x, np.eye(3), t, **{option: value})):
        with pytest.raises(ValueError):
            call()


def test_shape_mismatches_name_both_shapes():
    x = np.zeros((4, 3, 5))
    t = np.zeros((4, 3), np.int64)
    for bad in (np.zeros((4,), np.int64), np.zeros((3, 4), np.int64), np.zeros((4, 3, 1), int)):
        _raises_naming(lambda: cb.cross_entropy(x, bad), [bad.shape, ((4, 3), (4, 3, 5))])
        _raises_naming(lambda: cb.cross_entropy_backward(x, bad), [bad.shape, ((4, 3),
                                                                              (4, 3, 5))])
    for bad in (np.zeros((4, 3, 4)), np.zeros((4, 5)), np.zeros((4, 3, 5, 1))):
        _raises_naming(lambda: cb.cross_entropy(x, bad), [bad.shape, (4, 3, 5)])
    _raises_naming(lambda: cb.cross_entropy(x, t, weight=np.ones(4)), [(4,), ((5,), (4, 3, 5))])
    _raises_naming(lambda: cb.cross_entropy(x, t, weight=np.ones((5, 1))),
                   [(5, 1), ((5,), (4, 3, 5))])
    _raises_naming(lambda: cb.cross_entropy_backward(x, t, np.ones((4, 2)), reduction="none"),
                   [(4, 2), ((4, 3), (4, 3, 5))])
    with pytest.raises(ValueError):
        cb.cross_entropy_backward(x, t, np.ones((4, 3)), reduction="mean")   # dloss is scalar
    # a floating target of logits.shape[:-1]: class indices must be integers
    with pytest.raises((ValueError, TypeError)):
        cb.cross_entropy(x, t.astype(F32))
    with pytest.raises((ValueError, TypeError)):
        cb.cross_entropy(x, t.astype(bool))
    with pytest.raises(ValueError):
        cb.cross_entropy(np.float32(1.0), np.int64(0))                      # no class axis
    with pytest.raises(ValueError):
        cb.cross_entropy(np.zeros((3, 0)), np.zeros(3, np.int64))           # no classes

    h, w, target = np.zeros((6, 4)), np.zeros((5, 4)), np.zeros(6, np.int64)
    _raises_naming(lambda: cb.linear_cross_entropy(h, np.zeros((5, 3)), target),
                   [(5, 3), ((6, 4), (4,))])
    _raises_naming(lambda: cb.linear_cross_entropy(h, w, target, bias=np.zeros(4)),
                   [(4,), ((5,), (5, 4))])
    _raises_naming(lambda: cb.linear_cross_entropy(h, w, np.zeros(5, np.int64)),
                   [(5,), ((6,), (6, 5))])


@pytest.mark.parametrize("bad", ["logits", "weight", "target"])
def test_complex_and_object_inputs_raise_type_error(bad):
    x, t, w = np.zeros((2, 3)), np.array([0, 1]), np.ones(3)
    kw = dict(logits=x, target=t, weight=w)
    kw[bad] = kw[bad].astype(complex)
    with pytest.raises(TypeError):
        cb.cross_entropy(**kw)
    kw[bad] = kw[bad].astype(object)
    with pytest.raises(TypeError):
        cb.cross_entropy(**kw)


# ================================================================================================
# dtypes and array-likes
# ================================================================================================

def test_result_dtypes_follow_the_logits(rng):
    """Class weights and probability targets are cast to the logits' compute dtype: the
    results have the logits' dtype; integer logits give float64."""
    x = make_logits(rng, (4, 6), F32)
    t = np.array([0, 5, 2, 3])
    q = make_target(rng, (4, 6), "probabilities")
    for kw in (dict(weight=np.ones(6, F64)), dict(weight=np.ones(6, F16)), dict()):
        for target in (t, q, q.astype(F16)):
            loss, g = cb.cross_entropy(x, target, return_grad=True, **kw)
            assert loss.dtype == F32 and g.dtype == F32
            assert cb.cross_entropy(x, target, reduction="none", **kw).dtype == F32
            assert cb.cross_entropy_backward(x, target, np.float64(2.0), **kw).dtype == F32
    for dtype in (np.int32, np.int64, np.uint8, bool):
        xi = rng.integers(0, 2, (4, 6)).astype(dtype)
        loss, g = cb.cross_entropy(xi, t, return_grad=True)
        assert loss.dtype == F64 and g.dtype == F64
        np.testing.assert_allclose(loss, cb.cross_entropy(xi.astype(F64), t), rtol=1e-15)
    x16 = x.astype(F16)
    loss, g = cb.cross_entropy(x16, t, return_grad=True)
    assert loss.dtype == F16 and g.dtype == F16
    big_endian = x.astype(x.dtype.newbyteorder(">"))
    loss, g = cb.cross_entropy(big_endian, t, return_grad=True)
    assert loss.dtype.isnative and g.dtype == F32


@pytest.mark.parametrize("tdtype", [np.int8, np.int16, np.int32, np.uint8, np.uint16, np.int64,
                                    np.uint64])
def test_target_integer_dtypes(tdtype, rng):
    x = make_logits(rng, (5, 7), F32)
    t = np.array([0, 6, 3, 3, 1])
    want = cb.cross_entropy(x, t, return_grad=True, reduction="none", label_smoothing=0.1)
    got = cb.cross_entropy(x, t.astype(tdtype), return_grad=True, reduction="none",
                           label_smoothing=0.1)
    for a, b in zip(got, want):
        assert_bitwise_equal(a, b, f"target {np.dtype(tdtype)}")


# ================================================================================================
# PyTorch parity
# ================================================================================================

def torch_loss(torch, x, target, options, reduction):
    """torch.nn.functional.cross_entropy (class axis moved to 1), with the softcap and z-loss
    built by hand: z = c * tanh(x / c); loss + z_loss * logsumexp(z)**2 over the rows not
    ignored, reduced with the loss's denominator."""
    F = torch.nn.functional
    c, a = options.get("softcap"), options.get("z_loss", 0.0)
    weight = options.get("weight")
    z = x if c is None else c * torch.tanh(x / c)
    prob = target.is_floating_point()
    ii = options.get("ignore_index", -100)
    moved = z.movedim(-1, 1) if z.ndim > 2 else z
    tgt = target.movedim(-1, 1) if prob and target.ndim > 2 else target
    loss = F.cross_entropy(moved, tgt, weight=weight, ignore_index=ii, reduction=reduction,
                           label_smoothing=options.get("label_smoothing", 0.0))
    if a:
        lse = torch.logsumexp(z, -1)
        keep = torch.ones_like(lse, dtype=torch.bool) if prob else target != ii
        zl = torch.where(keep, a * lse ** 2, torch.zeros_like(lse))
        if reduction == "none":
            loss = loss + zl
        elif reduction == "sum":
            loss = loss + zl.sum()
        elif prob:
            loss = loss + zl.sum() / lse.numel()
        else:
            den = keep.sum() if weight is None else weight[target[keep]].sum()
            loss = loss + zl.sum() / den
    return loss


def test_matches_pytorch_edge_cases(torch, rng):
    """All ignored, one row, no rows, a 1-d logits vector, in float64."""
    F = torch.nn.functional
    cases = [(rng.standard_normal((4, 5)), np.full(4, -100), {}),
             (rng.standard_normal((4, 5)), np.full(4, -100), dict(label_smoothing=0.2)),
             (rng.standard_normal(5), np.array(3), dict(label_smoothing=0.3)),
             (rng.standard_normal(5), np.array(-100), {}),
             (np.zeros((0, 5)), np.zeros(0, np.int64), {}),
             (rng.standard_normal((0, 5)), np.zeros((0, 5)), {})]
    for x, t, kw in cases:
        for reduction in REDUCTIONS:
            want = F.cross_entropy(torch.from_numpy(x), torch.from_numpy(t), reduction=reduction,
                                   **kw).numpy()
            got = cb.cross_entropy(x, t, reduction=reduction, **kw)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)


# ================================================================================================
# The loss summed in float64
# ================================================================================================

@pytest.mark.parametrize("kind", KINDS)
def test_reductions_add_the_row_losses_in_float64(kind, rng):
    """The reductions add the rows' losses in float64: within an ulp of the float64 sum of the
    rows (each within half an ulp of the kernel's own double)."""
    dtype, shape = F32, (300, 1000)
    logits = make_logits(rng, shape, dtype)
    target = make_target(rng, shape, kind, ignored=0.1)
    kw = make_options(rng, shape[-1], dtype, **ALL_OPTIONS)
    mean = cb.cross_entropy(logits, target, reduction="mean", **kw)
    total = cb.cross_entropy(logits, target, reduction="sum", **kw)
    rows = cb.cross_entropy(logits, target, reduction="none", **kw)
    P = parts(as_computed(logits, dtype), truth_target(target, dtype),
              **dict(kw, weight=as_computed(kw["weight"], dtype)))
    s64 = np.sum(rows.astype(F64))
    for got, want in ((total, s64), (mean, s64 / P.share.sum())):
        want = np.asarray(want).astype(dtype)
        assert abs(float(got) - float(want)) <= np.spacing(want), (got, want)


# ================================================================================================
# linear_cross_entropy
# ================================================================================================

def expected_linear(hidden, weight, target, bias, dtype, reduction="mean", **options):
    """Truth (loss, dhidden, dweight, dbias) and tolerances for the kernel: the cross-entropy
    tolerances of the logits, plus the matmul's rounding of each logit propagated to the loss
    and dlogits, plus the rounding of the chain rule's sums."""
    h, w, b = (as_computed(a, dtype) for a in (hidden, weight, bias))
    tgt = truth_target(target, dtype)
    options = dict(options, class_weight=as_computed(options.get("class_weight"), dtype))
    truth = cb.reference.linear_cross_entropy(h, w, tgt, bias=b, reduction=reduction,
                                              return_grad=True, **options)
    options["weight"] = options.pop("class_weight")     # cross_entropy's name, for parts()
    x = h @ w.T + (0.0 if b is None else b)
    P = parts(x, tgt, **options)
    row, tdz = row_tolerances(P, dtype, **options)
    e = eps_of(compute_dtype(dtype))
    n, d = h.shape
    c = w.shape[0]
    delta = e * K(d) * (np.abs(h) @ np.abs(w).T + (0.0 if b is None else np.abs(b)))
    a, cap = abs(options.get("z_loss", 0.0)), options.get("softcap")
    coef = (np.abs(P.r).sum(-1) + 2 * a * np.abs(P.lse))[:, None]
    dzx = np.abs(P.fac) * delta                          # the logits' error after the softcap
    pd = np.sum(P.p * dzx, axis=-1, keepdims=True)
    row = row + np.sum((np.abs(P.dz) + P.p * coef) * delta, axis=-1) * P.valid
    extra = np.abs(P.fac) * (coef * P.p * (dzx + pd) + 2 * a * P.p * pd)
    if cap is not None:
        extra = extra + np.abs(P.dz_pre) * 2 * np.abs(P.z) / cap ** 2 * dzx
    tdz = tdz + np.where(P.valid[:, None], extra, 0.0)
    tol_loss, tol_dl = reduce_tolerances(P, row, tdz, reduction, 1.0, (n,))
    scale = np.abs(reduce_tolerances(P, row, P.dz, reduction, 1.0, (n,))[1])   # |dlogits|
    eo, tiny = eps_of(dtype), ulp_floor(dtype)
    loss = truth[0]
    with np.errstate(invalid="ignore"):
        tol_loss = tol_loss + eo * np.abs(loss) + tiny
    tols = [tol_loss,
            tol_dl @ np.abs(w) + e * K(c) * (scale @ np.abs(w)),
            tol_dl.T @ np.abs(h) + e * K(n) * (scale.T @ np.abs(h)),
            None if b is None else tol_dl.sum(0) + e * K(n) * scale.sum(0)]
    tols[1:] = [None if t is None else t + eo * np.abs(v) + tiny for t, v in zip(tols[1:],
                                                                              truth[1:])]
    return truth, tols


def linear_inputs(rng, n, d, c, dtype, kind="index", bias=True, ignored=0.2, ignore_index=-100):
    hidden = rng.standard_normal((n, d)).astype(dtype)
    weight = (rng.standard_normal((c, d)) * 3 / math.sqrt(d)).astype(dtype)
    b = rng.standard_normal(c).astype(dtype) if bias else None
    target = make_target(rng, (n, c), kind, ignore_index, ignored)
    return hidden, weight, b, target


LINEAR_OPTIONS = [dict(), dict(label_smoothing=0.1, ignore_index=3),
                  dict(z_loss=0.02, softcap=4.0), dict(label_smoothing=0.1, z_loss=0.02,
                                                       softcap=4.0)]


@pytest.mark.parametrize("chunk_size", [1, 7, None, 1000])
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("options", LINEAR_OPTIONS, ids=["plain", "ls-ii3", "z-cap", "all"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_equals_cross_entropy_of_the_logits(bias, options, dtype, chunk_size, rng):
    """linear_cross_entropy = cross_entropy(hidden @ weight.T + bias) and its gradients are
    the chain rule of that cross-entropy's dlogits: dhidden = dlogits @ weight,
    dweight = dlogits.T @ hidden, dbias = sum(dlogits over rows); for chunk sizes of one row,
    7 (not dividing N = 37), the default and more than N."""
    n, d, c = 37, 16, 50
    hidden, weight, b, target = linear_inputs(rng, n, d, c, dtype, bias=bias,
                                              ignore_index=options.get("ignore_index", -100))
    before = copies(hidden, weight, b, target)
    logits = hidden @ weight.T + (0 if b is None else b)
    for reduction in REDUCTIONS:
        kw = dict(options, reduction=reduction)
        truth, tols = expected_linear(hidden, weight, target, b, dtype, **kw)
        loss = cb.linear_cross_entropy(hidden, weight, target, bias=b, chunk_size=chunk_size,
                                       **kw)
        check(loss, truth[0], tols[0], dtype, f"linear loss {reduction}")
        result = cb.linear_cross_entropy(hidden, weight, target, bias=b, chunk_size=chunk_size,
                                         return_grad=True, **kw)
        assert type(result) is tuple and len(result) == 4
        for name, got, want, tol in zip(("loss", "dhidden", "dweight", "dbias"), result, truth,
                                        tols):
            if want is None:
                assert got is None, f"{name} should be None without a bias"
            else:
                check(got, want, tol, dtype, f"linear {name} {reduction} chunk {chunk_size}")

        # against cyburn's cross_entropy of the materialized logits and the chain rule
        ce_loss, dl = cb.cross_entropy(logits, target, return_grad=True, **kw)
        assert_within(result[0], ce_loss, 2 * tols[0], "linear vs cross_entropy of the logits")
        dl = dl.astype(F64)
        chain = (dl @ weight.astype(F64), dl.T @ hidden.astype(F64),
                 None if b is None else dl.sum(0))
        for name, got, want, tol in zip(("dhidden", "dweight", "dbias"), result[1:], chain,
                                        tols[1:]):
            if want is not None:
                assert_within(got, want, 2 * tol, f"linear {name} vs the chain rule")
    assert_unchanged((hidden, weight, b, target), before)


@pytest.mark.parametrize("dtype", [F16, F32], ids=str)
def test_linear_probabilities_and_half(dtype, rng):
    """Probability targets and float16 inputs (computed in float32, returned in float16)."""
    hidden, weight, b, target = linear_inputs(rng, 19, 8, 30, dtype, kind="probabilities")
    for chunk_size in (4, None):
        kw = dict(label_smoothing=0.1, z_loss=0.01)
        truth, tols = expected_linear(hidden, weight, target, b, dtype, **kw)
        result = cb.linear_cross_entropy(hidden, weight, target, bias=b, chunk_size=chunk_size,
                                         return_grad=True, **kw)
        for name, got, want, tol in zip(("loss", "dhidden", "dweight", "dbias"), result, truth,
                                        tols):
            check(got, want, tol, dtype, f"linear {name} chunk {chunk_size}")


def test_linear_ignored_and_empty(rng):
    hidden, weight, b, _ = linear_inputs(rng, 9, 4, 6, F32)
    target = np.full(9, -100)
    loss, dh, dw, db = cb.linear_cross_entropy(hidden, weight, target, bias=b, chunk_size=4,
                                               return_grad=True, label_smoothing=0.1, z_loss=0.1)
    assert np.isnan(loss) and not dh.any() and not dw.any() and not db.any()
    loss, dh, dw, db = cb.linear_cross_entropy(np.zeros((0, 4), F32), weight,
                                               np.zeros(0, np.int64), bias=b, return_grad=True)
    assert np.isnan(loss) and dh.shape == (0, 4) and dw.shape == (6, 4) and not dw.any()
    assert db.shape == (6,) and not db.any()
    total = cb.linear_cross_entropy(np.zeros((0, 4), F32), weight, np.zeros(0, np.int64),
                                    reduction="sum")
    assert total == 0 and total.dtype == F32


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", [dict(), dict(ALL_OPTIONS, z_loss=0.05, softcap=2.0,
                                                  ignore_index=1)],
                         ids=["plain", "all"])
def test_linear_gradient_is_the_derivative(options, reduction, rng):
    """Central differences of sum(loss) with respect to hidden, weight and bias (float64),
    with class weights ("all")."""
    n, d, c = 4, 3, 5
    hidden, weight, b, target = linear_inputs(rng, n, d, c, F64, ignored=0)
    target[1] = 1                                        # ignored under ignore_index=1
    kw = dict(options, reduction=reduction)
    if kw.pop("weight", False):
        kw["class_weight"] = rng.uniform(0.25, 2.0, c)
    inputs = dict(hidden=hidden, weight=weight, bias=b)
    result = cb.linear_cross_entropy(hidden, weight, target, bias=b, chunk_size=3,
                                     return_grad=True, **kw)

    def loss(**change):
        a = dict(inputs, **change)
        return float(np.sum(cb.linear_cross_entropy(a["hidden"], a["weight"], target,
                                                    bias=a["bias"], chunk_size=3, **kw)))

    for name, analytic in zip(("hidden", "weight", "bias"), result[1:]):
        num = central_difference(lambda v: loss(**{name: v}), inputs[name])
        assert_within(analytic, num, 1e-6 * (1 + np.max(np.abs(num))), f"d{name}")


def test_linear_memory_is_chunked(rng):
    """Extra memory O(chunk_size * C): the peak of the memory traced during the call (NumPy's
    allocations are traced), less the outputs, stays under a quarter of the full (N, C)
    logits, with return_grad and without."""
    n, c, d, chunk = 2048, 4096, 64, 32
    hidden = rng.standard_normal((n, d)).astype(F32)
    weight = (rng.standard_normal((c, d)) / 8).astype(F32)
    bias = rng.standard_normal(c).astype(F32)
    target = rng.integers(0, c, n)
    full = n * c * 4
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        probe = np.empty((n, c), F32)          # the measurement sees a NumPy array
        assert tracemalloc.get_traced_memory()[1] - base >= full
        del probe
        for return_grad in (False, True):
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            result = cb.linear_cross_entropy(hidden, weight, target, bias=bias,
                                             chunk_size=chunk, return_grad=return_grad,
                                             label_smoothing=0.1, z_loss=1e-3)
            peak = tracemalloc.get_traced_memory()[1] - base
            outputs = sum(a.nbytes for a in (result if return_grad else (result,)))
            extra = peak - outputs
            assert extra < full / 4, (
                f"return_grad={return_grad}: {extra / 2**20:.1f} MiB beyond the outputs "
                f"(full logits: {full / 2**20:.0f} MiB, "
                f"one chunk: {chunk * c * 4 / 2**20:.2f} MiB)")
            del result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("chunk_size", [0, -3])
def test_linear_chunk_size_must_be_positive(chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        cb.linear_cross_entropy(np.zeros((4, 2)), np.zeros((3, 2)), np.array([0, 1, 2, 0]),
                                chunk_size=chunk_size)


def test_gradient_over_the_probability_target_is_right(rng):
    """grad_out / out may not reuse the target's memory: the kernel reads q after writing."""
    x = rng.standard_normal((6, 9))
    q = rng.random((6, 9))
    q /= q.sum(axis=1, keepdims=True)
    want_loss, want = cb.cross_entropy(x, q.copy(), return_grad=True)
    target = q.copy()
    loss, grad = cb.cross_entropy(x, target, return_grad=True, grad_out=target)
    assert grad is target
    assert_bitwise_equal(grad, want, "grad_out=q")
    target = q.copy()
    assert_bitwise_equal(cb.cross_entropy_backward(x, target, out=target), want, "out=q")


def test_nan_weight_of_an_untargeted_class_without_smoothing(rng):
    x = rng.standard_normal((4, 5))
    t = np.array([0, 1, 2, 1])
    w = np.array([1.0, 2.0, 0.5, np.nan, np.inf])
    loss, grad = cb.cross_entropy(x, t, weight=w, return_grad=True)
    ref_loss, ref_grad = cb.reference.cross_entropy(x, t, weight=w, return_grad=True)
    assert np.isfinite(loss) and np.all(np.isfinite(grad[:, :3]))
    assert_within(loss, ref_loss, 1e-12, "loss")


def test_targets_and_options_out_of_int64_or_finite_range():
    x = np.zeros((2, 3))
    with pytest.raises(IndexError):
        cb.cross_entropy(x, np.array([0, 2**64 - 100], np.uint64))
    with pytest.raises(TypeError):
        cb.cross_entropy(x, np.array([0, 1]), ignore_index=1.5)
    with pytest.raises(ValueError, match="ignore_index"):
        cb.cross_entropy(x, np.array([0, 1]), ignore_index=2**63)
    for z_loss in (np.inf, np.nan):
        with pytest.raises(ValueError, match="z_loss"):
            cb.cross_entropy(x, np.array([0, 1]), z_loss=z_loss)


def test_kernel_itself_rejects_a_class_index_out_of_range():
    """The kernel entry checks what cross_entropy_check_targets checks, so a direct call
    cannot crash."""
    from cyburn._dispatch import kernels
    x = np.zeros((3, 4))
    for bad in (4, -5, 10**12):
        with pytest.raises(IndexError):
            kernels.cross_entropy_loss_and_grad(
                x, np.array([0, bad, 1], np.int64), None, np.ones(4), -100, 0.0, 0.0, 0.0, 1.0,
                None, np.empty(3), np.empty_like(x), 1)


# ================================================================================================
# Edges closed by issue 15
# ================================================================================================

@pytest.mark.parametrize("lib", [cb, cb.reference], ids=["cyburn", "reference"])
@pytest.mark.parametrize("ignore_index", [0, 2, 10**6])
def test_probabilities_with_ignore_index_raise_value_error(lib, ignore_index, rng):
    """A class-probability target has no class index to compare with ignore_index: PyTorch
    raises for any ignore_index >= 0, and so do cross_entropy, cross_entropy_backward and
    linear_cross_entropy, naming the argument."""
    logits = make_logits(rng, (4, 5), F32)
    q = make_target(rng, (4, 5), "probabilities").astype(F32)
    calls = [lambda: lib.cross_entropy(logits, q, ignore_index=ignore_index),
             lambda: lib.cross_entropy(logits, q, ignore_index=ignore_index, return_grad=True),
             lambda: lib.cross_entropy_backward(logits, q, ignore_index=ignore_index),
             lambda: lib.linear_cross_entropy(logits, np.eye(5, dtype=F32), q,
                                              ignore_index=ignore_index)]
    for call in calls:
        with pytest.raises(ValueError, match=r"\bignore_index\b"):
            call()


@pytest.mark.parametrize("lib", [cb, cb.reference], ids=["cyburn", "reference"])
def test_probabilities_with_a_negative_ignore_index_ignore_it(lib, rng):
    """A negative ignore_index matches no class: accepted with probability targets and without
    effect, as in PyTorch."""
    logits = make_logits(rng, (4, 5), F64)
    q = make_target(rng, (4, 5), "probabilities")
    for reduction in REDUCTIONS:
        assert_bitwise_equal(lib.cross_entropy(logits, q, ignore_index=-1, reduction=reduction),
                             lib.cross_entropy(logits, q, reduction=reduction), reduction)
        assert_bitwise_equal(lib.cross_entropy_backward(logits, q, ignore_index=-7,
                                                        reduction=reduction),
                             lib.cross_entropy_backward(logits, q, reduction=reduction),
                             reduction)


def test_probabilities_with_ignore_index_as_pytorch(torch, rng):
    """PyTorch's own behaviour, which the two tests above follow."""
    logits = torch.from_numpy(make_logits(rng, (4, 5), F32))
    q = torch.from_numpy(make_target(rng, (4, 5), "probabilities").astype(F32))
    with pytest.raises(RuntimeError, match="ignore_index"):
        torch.nn.functional.cross_entropy(logits, q, ignore_index=0)
    got = cb.cross_entropy(logits.numpy(), q.numpy(), ignore_index=-1)
    want = torch.nn.functional.cross_entropy(logits, q, ignore_index=-1).numpy()
    assert_within(got, want, 1e-6 * abs(float(want)), "loss, ignore_index=-1")


@pytest.mark.parametrize("lib", [cb, cb.reference], ids=["cyburn", "reference"])
def test_softcap_factor_in_the_forward_precision(lib):
    """d(c tanh(x / c))/dx = 1 - (z / c)**2 is taken in the precision of z: where tanh rounds
    to 1 in float32, z is float32(c) and the factor exactly 0. Taken in float64 with a cap
    that float32 cannot represent (30.1), z / c exceeded 1 and the factor was -2.5e-8: a
    gradient of the wrong sign (its float64 truth is +4e-29)."""
    logits = np.array([[1000.0, 0.0, 0.0], [-1000.0, 0.0, 0.0]], F32)
    target = np.array([1, 1])
    for reduction in REDUCTIONS:
        grad = lib.cross_entropy_backward(logits, target, softcap=30.1, reduction=reduction)
        assert grad[0, 0] == 0.0 and grad[1, 0] == 0.0, (reduction, grad)
        _, grad = lib.cross_entropy(logits, target, softcap=30.1, reduction=reduction,
                                    return_grad=True)
        assert grad[0, 0] == 0.0 and grad[1, 0] == 0.0, (reduction, grad)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_infinite_gradient_scale_gives_inf_not_nan(dtype):
    """A mean over targets whose weights sum to 0 divides by 0: the gradient's scale is inf.
    d(row loss)/dz is finite and, with z_loss, nonzero at every class (the target's
    w_t q'_t is 0), so every element is +-inf, not NaN (inf - inf * 0); the same with an
    infinite dloss. The float64 reference agrees."""
    logits = np.zeros((1, 3), dtype)
    target = np.array([0])
    for kw, signs in ((dict(weight=np.zeros(3, dtype), z_loss=1e-4), [1, 1, 1]),
                      (dict(weight=np.array([0.0, 1.0, 1.0], dtype), z_loss=1e-4,
                            label_smoothing=0.1), [1, -1, -1])):    # p_j R - w_j e / C < 0
        want = np.array([signs], F64) * np.inf
        for lib in (cb, cb.reference):
            grad = lib.cross_entropy_backward(logits, target, **kw)
            assert_bitwise_equal(grad.astype(F64), want, f"{lib.__name__} {kw}")
            _, grad = lib.cross_entropy(logits, target, return_grad=True, **kw)
            assert_bitwise_equal(grad.astype(F64), want, f"{lib.__name__} {kw} return_grad")
    for lib in (cb, cb.reference):              # dloss = inf: the target's element is -inf
        grad = lib.cross_entropy_backward(np.array([[0.0, 1.0, 2.0]], dtype), target, np.inf,
                                          reduction="sum")
        assert np.isneginf(grad[0, 0]) and np.all(np.isposinf(grad[0, 1:])), (lib.__name__,
                                                                                 grad)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_linear_class_weight(reduction, dtype, rng):
    """class_weight is cross_entropy's weight: the loss and the three gradients against the
    truth, chunked (7 rows, not dividing N)."""
    n, d, c = 23, 8, 30
    hidden, weight, b, target = linear_inputs(rng, n, d, c, dtype)
    class_weight = rng.uniform(0.25, 2.0, c).astype(dtype)
    truth, tols = expected_linear(hidden, weight, target, b, dtype, reduction=reduction,
                                  class_weight=class_weight, label_smoothing=0.1)
    result = cb.linear_cross_entropy(hidden, weight, target, bias=b, class_weight=class_weight,
                                     chunk_size=7, reduction=reduction, label_smoothing=0.1,
                                     return_grad=True)
    for name, got, want, tol in zip(("loss", "dhidden", "dweight", "dbias"), result, truth,
                                    tols):
        check(got, want, tol, dtype, f"linear {name} with class_weight")
    unweighted = cb.linear_cross_entropy(hidden, weight, target, bias=b, reduction=reduction,
                                         label_smoothing=0.1)
    assert not np.allclose(result[0], unweighted), "class_weight made no difference"
    with pytest.raises(ValueError, match=r"\bclass_weight\b"):
        cb.linear_cross_entropy(hidden, weight, target, class_weight=np.ones(c + 1))
    with pytest.raises(TypeError, match=r"\bclass_weight\b"):
        cb.linear_cross_entropy(hidden, weight, target, class_weight=np.ones(c, complex))


@pytest.mark.parametrize("lib", [cb, cb.reference], ids=["cyburn", "reference"])
def test_linear_dtype_follows_the_matmul_inputs(lib, rng):
    """A float64 bias (or class_weight) with float32 hidden and weight: the computation and
    every result stay float32, as the logits hidden @ weight.T are; the bias is cast."""
    hidden, weight, b, target = linear_inputs(rng, 9, 4, 6, F32)
    b64 = b.astype(F64)
    loss, dh, dw, db = lib.linear_cross_entropy(hidden, weight, target, bias=b64,
                                                class_weight=np.ones(6), return_grad=True)
    assert [a.dtype for a in (loss, dh, dw, db)] == [F32] * 4
    same = lib.linear_cross_entropy(hidden, weight, target, bias=b, return_grad=True)
    for got, want in zip((loss, dh, dw, db), same):
        assert_bitwise_equal(got, want, "a float64 bias acts as its float32 rounding")
