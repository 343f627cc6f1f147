"""adamw_step against cyburn.reference over several steps, in place, bad inputs. (Its contracts,
torch.optim.AdamW and thread-count determinism among them: tests/test_contracts.py.)"""

import numpy as np
import pytest
from helpers import F32, F64, eps

import cyburn as cb

SETTINGS = [dict(lr=1e-3), dict(lr=3e-2, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.1)]


def state(rng, shape, dtype):
    """A parameter, and moments as they are after some training (v >= 0)."""
    param = rng.standard_normal(shape).astype(dtype)
    exp_avg = (0.1 * rng.standard_normal(shape)).astype(dtype)
    exp_avg_sq = (0.01 * rng.random(shape)).astype(dtype)
    return param, exp_avg, exp_avg_sq


def grads(rng, shape, dtype, steps):
    return [rng.standard_normal(shape).astype(dtype) for _ in range(steps)]


def assert_close(actual, expected, dtype, what):
    """Elementwise |actual - expected| <= 32 eps (|expected| + rms(expected)): each step rounds
    a few terms of the size of the array's typical element (a moment near zero still carries
    the rounding of beta1 m and (1 - beta1) g, which nearly cancelled)."""
    expected = np.asarray(expected, np.float64)
    bound = 32 * eps(dtype) * (np.abs(expected) + np.sqrt(np.mean(expected**2)))
    err = np.abs(actual.astype(np.float64) - expected)
    assert np.all(err <= bound), f"{what}: error/bound up to {np.max(err / bound):.3g}"


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("shape", [(7,), (33, 65), (5, 4, 3001)])
def test_matches_reference_over_steps(rng, dtype, settings, shape):
    param, exp_avg, exp_avg_sq = state(rng, shape, dtype)
    ours = [param, exp_avg, exp_avg_sq]
    ref = [a.copy() for a in ours]
    for step, grad in enumerate(grads(rng, shape, dtype, 5), 1):
        assert cb.adamw_step(*ours[:1], grad, *ours[1:], step=step, **settings) is None
        cb.reference.adamw_step(*ref[:1], grad, *ref[1:], step=step, **settings)
    for name, a, r in zip(("param", "exp_avg", "exp_avg_sq"), ours, ref):
        assert a.dtype == dtype
        assert_close(a, r, dtype, f"{name} vs reference")
    assert np.max(np.abs(param.astype(np.float64) - state(rng, shape, dtype)[0])) > 0


def test_first_step_moves_every_element_by_lr(rng):
    """At step 1 from zero moments m_hat / sqrt(v_hat) = g / |g|: every element moves by lr
    (eps = 0 here), whatever the size of its gradient."""
    param = rng.standard_normal(1000)
    start = param.copy()
    grad = rng.standard_normal(1000) * np.logspace(-3, 3, 1000)
    cb.adamw_step(param, grad, np.zeros(1000), np.zeros(1000), lr=0.5, eps=0.0, step=1)
    np.testing.assert_allclose(param, start - 0.5 * np.sign(grad), rtol=0, atol=1e-15)


def test_weight_decay_is_decoupled():
    """With a zero gradient only the decay acts: param * (1 - lr * weight_decay)."""
    param = np.linspace(-2, 2, 50)
    cb.adamw_step(param, np.zeros(50), np.zeros(50), np.zeros(50), lr=0.1, weight_decay=0.5,
                  step=3)
    np.testing.assert_allclose(param, np.linspace(-2, 2, 50) * 0.95, rtol=1e-15)


def good(dtype=np.float32, shape=(4, 5)):
    return [np.ones(shape, dtype) for _ in range(4)]


@pytest.mark.parametrize("make, error, match", [
    (lambda: (good()[:3] + [np.ones((4, 6), np.float32)], {}), ValueError, r"\(4, 6\)"),
    (lambda: (good()[:1] + [np.ones((4, 5))] + good()[2:], {}), TypeError, "float64"),
    (lambda: (good(np.int32), {}), TypeError, "int32"),
    (lambda: (good(np.float16), {}), TypeError, "float16"),
    (lambda: ([np.ones(20, np.float32)[::2]] + good(shape=(10,))[1:], {}), ValueError,
     "C-contiguous"),
    (lambda: ([[1.0, 2.0]] + good(shape=(2,))[1:], {}), TypeError, "ndarray"),
    (lambda: (good(), {"step": 0}), ValueError, "step"),
    (lambda: (good(), {"step": 1.5}), TypeError, "step"),
    (lambda: (good(), {"lr": "0.1"}), TypeError, "lr"),
    (lambda: (good(), {"lr": -1.0}), ValueError, "lr"),
    (lambda: (good(), {"beta1": 1.0}), ValueError, "beta1"),
    (lambda: (good(), {"beta2": -0.1}), ValueError, "beta2"),
    (lambda: (good(), {"eps": float("nan")}), ValueError, "eps"),
])
def test_bad_inputs(make, error, match):
    arrays, kwargs = make()
    with pytest.raises(error, match=match):
        cb.adamw_step(*arrays, **{"lr": 1e-3, "step": 1, **kwargs})


def test_read_only_and_overlapping_arrays_are_refused():
    param, grad, m, v = good()
    frozen = param.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="param is read-only"):
        cb.adamw_step(frozen, grad, m, v, lr=1e-3, step=1)
    with pytest.raises(ValueError, match="exp_avg and exp_avg_sq overlap"):
        cb.adamw_step(param, grad, m, m, lr=1e-3, step=1)
    with pytest.raises(ValueError, match="param and grad overlap"):
        cb.adamw_step(param, param, m, v, lr=1e-3, step=1)
    flat = np.zeros(40, np.float32)
    with pytest.raises(ValueError, match="overlap"):     # neighbouring views of one buffer
        cb.adamw_step(flat[0:20], grad.ravel(), flat[10:30], v.ravel(), lr=1e-3, step=1)
    assert np.all(param == 1) and np.all(m == 1)


def test_strided_grad_is_accepted(rng):
    """grad is only read: any layout works (it is copied when it must be)."""
    param, m, v = state(rng, (30, 20), F64)
    ref = [a.copy() for a in (param, m, v)]
    grad = np.asfortranarray(rng.standard_normal((30, 20)))[:, ::-1]
    cb.adamw_step(param, grad, m, v, lr=1e-2, step=2)
    cb.reference.adamw_step(ref[0], grad, ref[1], ref[2], lr=1e-2, step=2)
    np.testing.assert_allclose(param, ref[0], rtol=1e-14)
