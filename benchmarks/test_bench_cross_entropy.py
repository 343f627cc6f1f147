"""pytest-benchmark suite for cross-entropy (float32): GPT-2's vocabulary on 2048 positions, and
its LM head fused with the loss, cyburn against its NumPy reference and PyTorch.

    pytest benchmarks/test_bench_cross_entropy.py --benchmark-only

`python -m cyburn.bench xent` prints the same comparisons as ratios measured interleaved, and
the peak memory of linear_cross_entropy.
"""
import numpy as np
import pytest

import cyburn as cb
from cyburn import reference

LOGITS = (2048, 50257)
HEAD = (1024, 768, 50257)       # hidden (N, D), weight (C, D)


def _logits():
    rng = np.random.default_rng(0)
    return rng.standard_normal(LOGITS, dtype=np.float32), rng.integers(0, LOGITS[1], LOGITS[0])


def _head():
    rng = np.random.default_rng(0)
    N, D, C = HEAD
    weight = rng.standard_normal((C, D), dtype=np.float32)
    weight *= 0.02
    return rng.standard_normal((N, D), dtype=np.float32), weight, rng.integers(0, C, N)


@pytest.mark.parametrize("lib", [cb, reference], ids=["cyburn", "numpy"])
def test_forward(benchmark, lib):
    x, target = _logits()
    benchmark.pedantic(lib.cross_entropy, (x, target), rounds=5, iterations=1)


@pytest.mark.parametrize("lib", [cb, reference], ids=["cyburn", "numpy"])
def test_forward_backward(benchmark, lib):
    x, target = _logits()
    kwargs = {"return_grad": True}
    if lib is cb:
        kwargs["grad_out"] = np.empty_like(x)
    benchmark.pedantic(lib.cross_entropy, (x, target), kwargs, rounds=5, iterations=1)


@pytest.mark.parametrize("lib", [cb, reference], ids=["cyburn", "numpy"])
def test_linear_forward_backward(benchmark, lib):
    hidden, weight, target = _head()
    benchmark.pedantic(lib.linear_cross_entropy, (hidden, weight, target),
                       {"return_grad": True}, rounds=3, iterations=1)


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(cb.get_num_threads())
    return torch


def _loss_and_grad(torch, loss_of, *arrays):
    leaves = [torch.from_numpy(a).requires_grad_() for a in arrays]
    loss_of(*leaves).backward()


def test_torch_forward(benchmark):
    torch = _torch()
    x, target = (torch.from_numpy(a) for a in _logits())
    benchmark.pedantic(torch.nn.functional.cross_entropy, (x, target), rounds=5, iterations=1)


def test_torch_forward_backward(benchmark):
    torch = _torch()
    x, target = _logits()
    t = torch.from_numpy(target)
    benchmark.pedantic(_loss_and_grad, (torch, lambda z: torch.nn.functional.cross_entropy(z, t),
                                        x), rounds=5, iterations=1)


def test_torch_linear_forward_backward(benchmark):
    torch = _torch()
    hidden, weight, target = _head()
    t = torch.from_numpy(target)
    benchmark.pedantic(_loss_and_grad, (torch, lambda h, w: torch.nn.functional.cross_entropy(
        h @ w.T, t), hidden, weight), rounds=3, iterations=1)
