"""relu, gelu, silu (swish) and their backward functions, elementwise."""
import numpy as np

from . import _arrays, _threads
from ._dispatch import kernels

_A = kernels.Activation
_GELU = {"none": _A.GELU, "tanh": _A.GELU_TANH}


def _gelu_kind(approximate):
    try:
        return _GELU[approximate]
    except (KeyError, TypeError):
        raise ValueError(f'approximate must be "none" or "tanh", not {approximate!r}') from None


def _apply(function, arrays, names, out):
    """out = function(x) (arrays = (x,)) or dy * function'(x) (arrays = (dy, x)), elementwise;
    out may be any of the arrays (in-place)."""
    arrays, dtype = _arrays.as_inputs(**dict(zip(names, arrays)))
    for a, name in zip(arrays[1:], names[1:]):
        _arrays.check_same_shape(arrays[0], a, names[0], name)
    shape = arrays[0].shape
    if out is not None:
        _arrays.check_out(out, shape, dtype)
    if arrays[0].size == 0:
        return out if out is not None else np.empty(shape, dtype)
    work = _arrays.compute_dtype(dtype)
    arrays = [a.astype(work, copy=False) for a in arrays]
    arrays, _, transposed = _arrays.c_layout(arrays, 0)
    target, target_is_out = _arrays.output_for(arrays, out, work, transposed)
    if len(arrays) == 1:
        kernels.activation_forward(arrays[0], target, function, _threads.current())
    else:
        kernels.activation_backward(arrays[0], arrays[1], target, function, _threads.current())
    return _arrays.finish(target, target_is_out, out, dtype, transposed)


def relu(x, *, out=None):
    """y = max(x, 0); NaN stays NaN. `out` may be `x` (in-place)."""
    return _apply(_A.RELU, (x,), ("x",), out)


def relu_backward(dy, x, *, out=None):
    """dx = dy where x > 0, else 0 (as PyTorch's threshold_backward, a NaN x passes dy)."""
    return _apply(_A.RELU, (dy, x), ("dy", "x"), out)


def gelu(x, *, approximate="none", out=None):
    """GELU, y = x * Phi(x) with Phi the standard normal CDF (approximate="none"), or GPT-2's
    y = x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))) (approximate="tanh").
    gelu(-inf) = 0, the limit. `out` may be `x` (in-place)."""
    return _apply(_gelu_kind(approximate), (x,), ("x",), out)


def gelu_backward(dy, x, *, approximate="none", out=None):
    """dx = dy * gelu'(x): Phi(x) + x * phi(x) (phi the normal density), or for "tanh"
    s + x * s * (1 - s) * v'(x) with s = sigmoid(v), v = 2 * sqrt(2 / pi) * (x + 0.044715 x**3)
    (the same derivative, as 1 + tanh(v / 2) = 2 sigmoid(v))."""
    return _apply(_gelu_kind(approximate), (dy, x), ("dy", "x"), out)


def silu(x, *, out=None):
    """SiLU (swish), y = x * sigmoid(x) = x / (1 + exp(-x)). `out` may be `x` (in-place)."""
    return _apply(_A.SILU, (x,), ("x",), out)


def silu_backward(dy, x, *, out=None):
    """dx = dy * (s + x * s * (1 - s)), s = sigmoid(x)."""
    return _apply(_A.SILU, (dy, x), ("dy", "x"), out)


swish = silu
