"""pytest-benchmark suite for the softmax family, on GPT-2 small shapes (float32).

    pytest benchmarks/ --benchmark-only            # cyburn, its NumPy reference, PyTorch
    pytest benchmarks/ --benchmark-only -k torch   # just the PyTorch peers

`python -m cyburn.bench` prints the same comparisons as ratios measured interleaved in one
run; this suite is for tracking absolute times and regressions with pytest-benchmark's tools.
"""
import numpy as np
import pytest

import cyburn as cb
from cyburn import reference

CASES = {                                   # id: (shape, axis)
    "attention-rows": ((12288, 1024), -1),
    "lm-head-rows": ((1024, 50257), -1),
    "non-last-axis": ((1024, 12288), 0),
    "small": ((4, 64), -1),
}
FUNCTIONS = ["softmax", "log_softmax", "softmax_backward", "log_softmax_backward"]


def _inputs(name, shape, axis):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    if name in ("softmax", "log_softmax"):
        return (x,)
    y = cb.softmax(x, axis) if name == "softmax_backward" else cb.log_softmax(x, axis)
    return (rng.standard_normal(shape, dtype=np.float32), y)


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request):
    return CASES[request.param]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_cyburn_out(benchmark, name, case):
    shape, axis = case
    args = _inputs(name, shape, axis)
    out = np.empty(shape, np.float32)
    benchmark(getattr(cb, name), *args, axis, out=out)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_cyburn_alloc(benchmark, name, case):
    shape, axis = case
    args = _inputs(name, shape, axis)
    benchmark(getattr(cb, name), *args, axis)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_numpy_reference(benchmark, name, case):
    shape, axis = case
    if shape[0] * shape[1] > 2**22:
        benchmark.pedantic(getattr(reference, name), _inputs(name, shape, axis) + (axis,),
                           rounds=3, iterations=1)
    else:
        benchmark(getattr(reference, name), *_inputs(name, shape, axis), axis)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_torch_out(benchmark, name, case):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(cb.get_num_threads())
    shape, axis = case
    args = [torch.from_numpy(a) for a in _inputs(name, shape, axis)]
    out = torch.empty(shape, dtype=torch.float32)
    aten = torch.ops.aten
    if name == "softmax":
        benchmark(aten._softmax.out, args[0], axis, False, out=out)
    elif name == "log_softmax":
        benchmark(aten._log_softmax.out, args[0], axis, False, out=out)
    elif name == "softmax_backward":
        benchmark(aten._softmax_backward_data.out, *args, axis, torch.float32, grad_input=out)
    else:
        benchmark(aten._log_softmax_backward_data.out, *args, axis, torch.float32, out=out)
