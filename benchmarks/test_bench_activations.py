"""pytest-benchmark suite for the activations (float32, GPT-2 small's MLP activation), forward
and backward into out=, cyburn against its NumPy reference and PyTorch.

    pytest benchmarks/test_bench_activations.py --benchmark-only

The NumPy reference computes in float64 with several temporaries (gelu's erf form calls
math.erfc per element: seconds per call), so it is timed on 1/16 of the rows.
`python -m cyburn.bench act` prints the same comparisons as ratios measured interleaved.
"""
import numpy as np
import pytest

import cyburn as cb
from cyburn import reference

SHAPE = (8192, 3072)
REFERENCE_ROWS = SHAPE[0] // 16
FUNCTIONS = {                       # id: (function name, keyword arguments)
    "relu": ("relu", {}),
    "gelu": ("gelu", {"approximate": "none"}),
    "gelu_tanh": ("gelu", {"approximate": "tanh"}),
    "silu": ("silu", {}),
}


def _inputs(rows=SHAPE[0]):
    rng = np.random.default_rng(0)
    x, dy = (rng.standard_normal(SHAPE, dtype=np.float32) for _ in range(2))
    return x[:rows], dy[:rows]


def _calls(lib, rows=SHAPE[0]):
    """id -> (function, args, kwargs) for `lib` (cyburn or its reference), into out=."""
    x, dy = _inputs(rows)
    calls = {}
    for key, (name, kw) in FUNCTIONS.items():
        calls[key] = (getattr(lib, name), (x,), {**kw, "out": np.empty_like(x)})
        calls[key + "_backward"] = (getattr(lib, name + "_backward"), (dy, x),
                                    {**kw, "out": np.empty_like(x)})
    return calls


NAMES = list(_calls(cb, 1))


@pytest.mark.parametrize("name", NAMES)
def test_cyburn(benchmark, name):
    f, args, kwargs = _calls(cb)[name]
    benchmark(f, *args, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_numpy_reference(benchmark, name):
    f, args, kwargs = _calls(reference, REFERENCE_ROWS)[name]     # 1/16 of the rows
    benchmark.pedantic(f, args, kwargs, rounds=3, iterations=1)


@pytest.mark.parametrize("name", NAMES)
def test_torch(benchmark, name):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(cb.get_num_threads())
    aten = torch.ops.aten
    x, dy = (torch.from_numpy(a) for a in _inputs())
    out = torch.empty_like(x)
    calls = {                       # PyTorch's own kernels, writing into out
        "relu": lambda: torch.clamp_min(x, 0, out=out),
        "relu_backward": lambda: aten.threshold_backward.grad_input(dy, x, 0, grad_input=out),
        "gelu": lambda: torch._C._nn.gelu(x, approximate="none", out=out),
        "gelu_backward": lambda: aten.gelu_backward.grad_input(dy, x, approximate="none",
                                                               grad_input=out),
        "gelu_tanh": lambda: torch._C._nn.gelu(x, approximate="tanh", out=out),
        "gelu_tanh_backward": lambda: aten.gelu_backward.grad_input(dy, x, approximate="tanh",
                                                                    grad_input=out),
        "silu": lambda: torch._C._nn.silu(x, out=out),
        "silu_backward": lambda: aten.silu_backward.grad_input(dy, x, grad_input=out),
    }
    benchmark(calls[name])
