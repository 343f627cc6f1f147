"""pytest-benchmark suite for the attention softmax (float32 scores of GPT-2 small: 12 heads,
1024 tokens), into out=, cyburn against its NumPy reference and PyTorch.

    pytest benchmarks/test_bench_attention.py --benchmark-only

`python -m cyburn.bench attention` prints the same comparisons as ratios measured interleaved,
and causal's time against the unmasked softmax's.
"""
import numpy as np
import pytest

import cyburn as cb
from cyburn import reference

SCORES = (1, 12, 1024, 1024)
SCALE = 0.125                   # 1 / sqrt(64), GPT-2's head size


def _inputs():
    rng = np.random.default_rng(0)
    x, dy = (rng.standard_normal(SCORES, dtype=np.float32) for _ in range(2))
    keep = np.tril(np.ones(SCORES[-2:], dtype=np.bool_))    # the causal pattern, as a mask
    return x, dy, keep, cb.masked_softmax(x, causal=True)


def _calls(lib):
    """name -> (function, args, kwargs) for `lib` (cyburn or its reference), into out=."""
    x, dy, keep, y = _inputs()
    out = np.empty_like(x)
    return {
        "causal": (lib.masked_softmax, (x,), {"causal": True, "out": out}),
        "bool_mask": (lib.masked_softmax, (x,), {"mask": keep, "out": out}),
        "unmasked": (lib.masked_softmax, (x,), {"out": out}),
        "backward": (lib.masked_softmax_backward, (dy, y), {"scale": SCALE, "out": out}),
    }


NAMES = ["causal", "bool_mask", "unmasked", "backward"]


@pytest.mark.parametrize("name", NAMES)
def test_cyburn(benchmark, name):
    f, args, kwargs = _calls(cb)[name]
    benchmark(f, *args, **kwargs)


def test_cyburn_softmax(benchmark):
    """cb.softmax on the same scores: the unmasked time causal should beat."""
    x, _, _, _ = _inputs()
    benchmark(cb.softmax, x, out=np.empty_like(x))


@pytest.mark.parametrize("name", NAMES)
def test_numpy_reference(benchmark, name):
    f, args, kwargs = _calls(reference)[name]
    benchmark.pedantic(f, args, kwargs, rounds=5, iterations=1)


@pytest.mark.parametrize("name", NAMES)
def test_torch(benchmark, name):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(cb.get_num_threads())
    x, dy, keep, y = (torch.from_numpy(a) for a in _inputs())
    out = torch.empty_like(x)
    hidden = ~keep
    calls = {   # what a NumPy-style user writes: -inf on the hidden scores, then softmax
        "causal": lambda: torch.softmax(x.masked_fill(hidden, float("-inf")), -1, out=out),
        "bool_mask": lambda: torch.softmax(x.masked_fill(hidden, float("-inf")), -1, out=out),
        "unmasked": lambda: torch.softmax(x, -1, out=out),
        # no scale in aten's softmax backward: the chain rule's factor is a second pass
        "backward": lambda: torch.ops.aten._softmax_backward_data.out(
            dy, y, -1, torch.float32, grad_input=out).mul_(SCALE),
    }
    benchmark(calls[name])
