"""relu, gelu, silu (swish) and their backward functions, elementwise."""
import numpy as np

from . import _arrays, _threads
from ._dispatch import kernels
from ._typing import Approximate, ArrayLike, FloatArray

# the kernels' activation codes, as plain ints (a call converts them for free)
RELU, GELU, GELU_TANH, SILU = (int(kernels.Activation[name])
                               for name in ("RELU", "GELU", "GELU_TANH", "SILU"))
_GELU: dict[object, int] = {"none": GELU, "tanh": GELU_TANH}


def _gelu_kind(approximate: object) -> int:
    try:
        return _GELU[approximate]
    except (KeyError, TypeError):
        raise ValueError(f'approximate must be "none" or "tanh", not {approximate!r}') from None


def _forward(function: int, x: ArrayLike, out: FloatArray | None) -> FloatArray:
    """out = function(x) elementwise; out may be x (in-place)."""
    ready: tuple[FloatArray, int] | None = kernels.ready_call(x, None, out, 0, True)
    if ready is not None:           # the usual call, arrays the kernel takes as they are
        kernels.activation_forward(x, ready[0], function, _threads.current())
        return ready[0]
    x, dtype = _arrays.as_input(x, "x")
    if out is not None:
        _arrays.check_out(out, x.shape, dtype)
    if x.size == 0:
        return out if out is not None else np.empty(x.shape, dtype)
    x = x.astype(_arrays.compute_dtype(dtype), copy=False)
    (x,), _, transposed = _arrays.c_layout((x,), 0)
    y, y_is_out = _arrays.output_for((x,), out, x.dtype, transposed)
    kernels.activation_forward(x, y, function, _threads.current())
    return _arrays.finish(y, y_is_out, out, dtype, transposed)


def _backward(function: int, dy: ArrayLike, x: ArrayLike, out: FloatArray | None
              ) -> FloatArray:
    """out = dy * function'(x) elementwise; out may be dy or x (in-place)."""
    ready: tuple[FloatArray, int] | None = kernels.ready_call(dy, x, out, 0, True)
    if ready is not None:           # the usual call, arrays the kernel takes as they are
        kernels.activation_backward(dy, x, ready[0], function, _threads.current())
        return ready[0]
    (dy, x), dtype = _arrays.as_inputs(dy=dy, x=x)
    _arrays.check_same_shape(dy, x, "dy", "x")
    if out is not None:
        _arrays.check_out(out, x.shape, dtype)
    if x.size == 0:
        return out if out is not None else np.empty(x.shape, dtype)
    work = _arrays.compute_dtype(dtype)
    (dy, x), _, transposed = _arrays.c_layout((dy.astype(work, copy=False),
                                               x.astype(work, copy=False)), 0)
    dx, dx_is_out = _arrays.output_for((dy, x), out, work, transposed)
    kernels.activation_backward(dy, x, dx, function, _threads.current())
    return _arrays.finish(dx, dx_is_out, out, dtype, transposed)


def relu(x: ArrayLike, *, out: FloatArray | None = None) -> FloatArray:
    """y = max(x, 0); NaN stays NaN. `out` may be `x` (in-place)."""
    return _forward(RELU, x, out)


def relu_backward(dy: ArrayLike, x: ArrayLike, *, out: FloatArray | None = None) -> FloatArray:
    """dx = dy where x > 0, else 0 (as PyTorch's threshold_backward, a NaN x passes dy)."""
    return _backward(RELU, dy, x, out)


def gelu(x: ArrayLike, *, approximate: Approximate = "none",
         out: FloatArray | None = None) -> FloatArray:
    """GELU, y = x * Phi(x) with Phi the standard normal CDF (approximate="none"), or GPT-2's
    y = x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))) (approximate="tanh").
    gelu(-inf) = 0, the limit. `out` may be `x` (in-place)."""
    return _forward(_gelu_kind(approximate), x, out)


def gelu_backward(dy: ArrayLike, x: ArrayLike, *, approximate: Approximate = "none",
                  out: FloatArray | None = None) -> FloatArray:
    """dx = dy * gelu'(x): Phi(x) + x * phi(x) (phi the normal density), or for "tanh"
    s + x * s * (1 - s) * v'(x) with s = sigmoid(v), v = 2 * sqrt(2 / pi) * (x + 0.044715 x**3)
    (the same derivative, as 1 + tanh(v / 2) = 2 sigmoid(v))."""
    return _backward(_gelu_kind(approximate), dy, x, out)


def silu(x: ArrayLike, *, out: FloatArray | None = None) -> FloatArray:
    """SiLU (swish), y = x * sigmoid(x) = x / (1 + exp(-x)). `out` may be `x` (in-place)."""
    return _forward(SILU, x, out)


def silu_backward(dy: ArrayLike, x: ArrayLike, *, out: FloatArray | None = None) -> FloatArray:
    """dx = dy * (s + x * s * (1 - s)), s = sigmoid(x)."""
    return _backward(SILU, dy, x, out)


swish = silu
