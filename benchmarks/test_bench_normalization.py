"""pytest-benchmark suite for the normalization functions (float32, GPT-2 small rows and a
ResNet-style (N, C, H, W) activation), cyburn against its NumPy reference and PyTorch.

    pytest benchmarks/test_bench_normalization.py --benchmark-only

`python -m cyburn.bench norm` prints the same comparisons as ratios measured interleaved.
"""
import numpy as np
import pytest

import cyburn as cb
from cyburn import reference

ROWS = (8192, 768)
CHANNELS = (32, 64, 56, 56)
GROUPS = 32


def _rows():
    rng = np.random.default_rng(0)
    x, dy = (rng.standard_normal(ROWS, dtype=np.float32) for _ in range(2))
    w, b = (rng.standard_normal(ROWS[-1], dtype=np.float32) for _ in range(2))
    return x, dy, w, b


def _channels():
    rng = np.random.default_rng(0)
    x, dy = (rng.standard_normal(CHANNELS, dtype=np.float32) for _ in range(2))
    w, b = (rng.standard_normal(CHANNELS[1], dtype=np.float32) for _ in range(2))
    return x, dy, w, b


def _calls(lib):
    """name -> (function, args, kwargs) for `lib` (cyburn or its reference)."""
    x, dy, w, b = _rows()
    _, mean, rstd = cb.layer_norm(x, w, b, return_stats=True)
    _, rms_rstd = cb.rms_norm(x, w, return_stats=True)
    cx, cdy, cw, cb_ = _channels()
    _, gmean, grstd = cb.group_norm(cx, GROUPS, cw, cb_, return_stats=True)
    _, bmean, brstd = cb.batch_norm(cx, cw, cb_, return_stats=True)
    return {
        "layer_norm": (lib.layer_norm, (x, w, b), {}),
        "layer_norm_out": (lib.layer_norm, (x, w, b), {"out": np.empty_like(x)}),
        "layer_norm_backward": (lib.layer_norm_backward, (dy, x, w, mean, rstd), {}),
        "rms_norm": (lib.rms_norm, (x, w), {}),
        "rms_norm_out": (lib.rms_norm, (x, w), {"out": np.empty_like(x)}),
        "rms_norm_backward": (lib.rms_norm_backward, (dy, x, w, rms_rstd), {}),
        "group_norm": (lib.group_norm, (cx, GROUPS, cw, cb_), {}),
        "group_norm_backward": (lib.group_norm_backward, (cdy, cx, GROUPS, cw, gmean, grstd), {}),
        "batch_norm": (lib.batch_norm, (cx, cw, cb_), {}),
        "batch_norm_backward": (lib.batch_norm_backward, (cdy, cx, cw, bmean, brstd), {}),
    }


NAMES = list(_calls(cb))


@pytest.mark.parametrize("name", NAMES)
def test_cyburn(benchmark, name):
    f, args, kwargs = _calls(cb)[name]
    benchmark(f, *args, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_numpy_reference(benchmark, name):
    f, args, kwargs = _calls(reference)[name]
    benchmark.pedantic(f, args, kwargs, rounds=5, iterations=1)


@pytest.mark.parametrize("name", NAMES)
def test_torch(benchmark, name):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(cb.get_num_threads())
    aten = torch.ops.aten
    x, dy, w, b = (torch.from_numpy(a) for a in _rows())
    n = ROWS[-1]
    cx, cdy, cw, cbias = (torch.from_numpy(a) for a in _channels())
    N, C = CHANNELS[:2]
    S = cx.numel() // (N * C)
    y, mean, rstd = aten.native_layer_norm(x, [n], w, b, 1e-5)
    _, gmean, grstd = aten.native_group_norm(cx, cw, cbias, N, C, S, GROUPS, 1e-5)
    _, bmean, brstd = aten.native_batch_norm(cx, cw, cbias, None, None, True, 0.1, 1e-5)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    rms_y = torch.nn.functional.rms_norm(xr, (n,), wr, 1e-6)
    outs = (torch.empty_like(y), torch.empty_like(mean), torch.empty_like(rstd))
    calls = {
        "layer_norm": lambda: aten.native_layer_norm(x, [n], w, b, 1e-5),
        "layer_norm_out": lambda: aten.native_layer_norm.out(x, [n], w, b, 1e-5, out0=outs[0],
                                                             out1=outs[1], out2=outs[2]),
        "layer_norm_backward": lambda: aten.native_layer_norm_backward(
            dy, x, [n], mean, rstd, w, b, [True, True, True]),
        "rms_norm": lambda: torch.nn.functional.rms_norm(x, (n,), w, 1e-6),
        "rms_norm_out": lambda: torch.nn.functional.rms_norm(x, (n,), w, 1e-6),   # no out=
        "rms_norm_backward": lambda: torch.autograd.grad(rms_y, (xr, wr), dy, retain_graph=True),
        "group_norm": lambda: aten.native_group_norm(cx, cw, cbias, N, C, S, GROUPS, 1e-5),
        "group_norm_backward": lambda: aten.native_group_norm_backward(
            cdy, cx, gmean, grstd, cw, N, C, S, GROUPS, [True, True, True]),
        "batch_norm": lambda: aten.native_batch_norm(cx, cw, cbias, None, None, True, 0.1, 1e-5),
        "batch_norm_backward": lambda: aten.native_batch_norm_backward(
            cdy, cx, cw, None, None, bmean, brstd, True, 1e-5, [True, True, True]),
    }
    benchmark(calls[name])
