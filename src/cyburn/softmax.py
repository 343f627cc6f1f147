"""softmax, log_softmax and their backward functions along any axis."""
import numpy as np

from . import _arrays, _threads
from ._dispatch import kernels
from ._typing import ArrayLike, FloatArray


def _forward(x: ArrayLike, axis: int, out: FloatArray | None, log: bool) -> FloatArray:
    ready: tuple[FloatArray, int] | None = kernels.ready_call(x, None, out, axis, True)
    if ready is not None:           # the usual call, arrays the kernel takes as they are
        y, axis = ready
        kernels.softmax_forward(x, y, axis, log, _threads.current())
        return y
    x, dtype = _arrays.as_input(x, "x")
    axis = _arrays.normalize_axis(axis, x.ndim)
    if out is not None:
        _arrays.check_out(out, x.shape, dtype)
    if x.size == 0:
        return out if out is not None else np.empty(x.shape, dtype)
    work = _arrays.compute_dtype(dtype)
    x = x.astype(work, copy=False)
    (x,), axis, transposed = _arrays.c_layout((x,), axis)
    y, y_is_out = _arrays.output_for((x,), out, work, transposed)
    kernels.softmax_forward(x, y, axis, log, _threads.current())
    return _arrays.finish(y, y_is_out, out, dtype, transposed)


def _backward(dy: ArrayLike, y: ArrayLike, axis: int, out: FloatArray | None,
              log: bool) -> FloatArray:
    ready: tuple[FloatArray, int] | None = kernels.ready_call(dy, y, out, axis, False)
    if ready is not None:           # the usual call, arrays the kernel takes as they are
        dx, axis = ready
        kernels.softmax_backward(dy, y, dx, axis, log, _threads.current())
        return dx
    dy, dy_dtype = _arrays.as_input(dy, "dy")
    y, y_dtype = _arrays.as_input(y, "y")
    _arrays.check_same_shape(dy, y, "dy", "y")
    axis = _arrays.normalize_axis(axis, y.ndim)
    dtype = np.promote_types(dy_dtype, y_dtype)
    if out is not None:
        _arrays.check_out(out, y.shape, dtype)
    if y.size == 0:
        return out if out is not None else np.empty(y.shape, dtype)
    work = _arrays.compute_dtype(dtype)
    dy = dy.astype(work, copy=False)
    y = y.astype(work, copy=False)
    (dy, y), axis, transposed = _arrays.c_layout((dy, y), axis)
    dx, dx_is_out = _arrays.output_for((dy, y), out, work, transposed, out_may_be_input=False)
    kernels.softmax_backward(dy, y, dx, axis, log, _threads.current())
    return _arrays.finish(dx, dx_is_out, out, dtype, transposed)


def softmax(x: ArrayLike, axis: int = -1, *, out: FloatArray | None = None) -> FloatArray:
    """Softmax along `axis`: y = exp(x - max(x)) / sum(exp(x - max(x))).

    A NaN anywhere in a slice makes that slice NaN; a slice of all -inf is NaN (as in PyTorch).
    `out` may be `x` itself (in-place).
    """
    return _forward(x, axis, out, False)


def log_softmax(x: ArrayLike, axis: int = -1, *, out: FloatArray | None = None) -> FloatArray:
    """Log-softmax along `axis`: y = (x - max(x)) - log(sum(exp(x - max(x))))."""
    return _forward(x, axis, out, True)


def softmax_backward(dy: ArrayLike, y: ArrayLike, axis: int = -1, *,
                     out: FloatArray | None = None) -> FloatArray:
    """Gradient of softmax given its output y = softmax(x): dx = y * (dy - sum(dy * y))."""
    return _backward(dy, y, axis, out, False)


def log_softmax_backward(dy: ArrayLike, y: ArrayLike, axis: int = -1, *,
                         out: FloatArray | None = None) -> FloatArray:
    """Gradient of log_softmax given its output y: dx = dy - exp(y) * sum(dy)."""
    return _backward(dy, y, axis, out, True)
