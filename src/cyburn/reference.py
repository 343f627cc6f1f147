"""Pure-NumPy versions of cyburn's functions: the correctness oracle for the tests.

Written to be read, not to be fast. Same signatures and dtype rules as the kernels: half
types are computed in float32 and returned in their own dtype, bool and integer inputs
become float64.
"""
import numpy as np

from . import _arrays


def _prepare(**named):
    """The named arrays as ndarrays in the dtype to compute in, and the dtype to return."""
    arrays = {name: np.asarray(a) for name, a in named.items()}
    dtype = np.result_type(*(_arrays.result_dtype(a.dtype, name) for name, a in arrays.items()))
    work = _arrays.compute_dtype(dtype)
    return [a.astype(work) for a in arrays.values()], dtype


def _prepare_pair(dy, y):
    (dy, y), dtype = _prepare(dy=dy, y=y)
    _arrays.check_same_shape(dy, y, "dy", "y")
    return dy, y, dtype


def _result(y, dtype, out):
    y = y.astype(dtype)
    if out is None:
        return y
    _arrays.check_out(out, y.shape, dtype)
    out[...] = y
    return out


def softmax(x, axis=-1, *, out=None):
    """y = exp(x - m) / sum(exp(x - m)),  m = max(x)  along `axis`."""
    (x,), dtype = _prepare(x=x)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return _result(e / np.sum(e, axis=axis, keepdims=True), dtype, out)


def log_softmax(x, axis=-1, *, out=None):
    """y = (x - m) - log(sum(exp(x - m))),  m = max(x)  along `axis`."""
    (x,), dtype = _prepare(x=x)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    y = shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
    return _result(y, dtype, out)


def softmax_backward(dy, y, axis=-1, *, out=None):
    """For y = softmax(x): dx = y * (dy - sum(dy * y))  along `axis`."""
    dy, y, dtype = _prepare_pair(dy, y)
    return _result(y * (dy - np.sum(dy * y, axis=axis, keepdims=True)), dtype, out)


def log_softmax_backward(dy, y, axis=-1, *, out=None):
    """For y = log_softmax(x): dx = dy - exp(y) * sum(dy)  along `axis`."""
    dy, y, dtype = _prepare_pair(dy, y)
    return _result(dy - np.exp(y) * np.sum(dy, axis=axis, keepdims=True), dtype, out)
