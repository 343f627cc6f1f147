"""masked_softmax and masked_softmax_backward: the softmax of attention scores (..., Tq, Tk)
over their keys, with keys hidden by a causal rule or a mask."""
import functools
import math

from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import _arrays, _threads
from ._dispatch import kernels
from ._typing import ArrayLike, FloatArray


def _mask_rows(mask: NDArray[Any], shape: tuple[int, ...], work: np.dtype[Any]
               ) -> tuple[NDArray[Any], NDArray[np.intp]]:
    """The mask as C-contiguous (M, Tk) rows of bool or `work`, and for every row of the
    scores (shape[:-1], flattened) the index of its mask row: the mask's own rows are kept, and
    broadcasting over the leading axes stays in the index (only a broadcast key axis is
    materialized)."""
    padded = mask.reshape((1,) * (len(shape) - mask.ndim) + mask.shape)
    if padded.shape[-1] != shape[-1]:
        padded = np.broadcast_to(padded, padded.shape[:-1] + shape[-1:])
    rows = np.ascontiguousarray(padded, dtype=np.bool_ if mask.dtype == np.bool_ else work)
    return rows.reshape(-1, shape[-1]), _row_index(padded.shape[:-1], shape[:-1])


@functools.lru_cache(maxsize=16)
def _row_index(mask_lead: tuple[int, ...], lead: tuple[int, ...]) -> NDArray[np.intp]:
    """For every row of scores with leading shape `lead` (flattened), the index of its row in
    a mask whose leading shape `mask_lead` broadcasts to `lead`. Read-only, made once per
    pair of shapes: a training loop asks for the same ones at every step."""
    index = np.broadcast_to(np.arange(math.prod(mask_lead)).reshape(mask_lead), lead).ravel()
    index.flags.writeable = False
    return index


def masked_softmax(x: ArrayLike, *, scale: float = 1.0, causal: bool = False,
                   mask: ArrayLike | None = None, out: FloatArray | None = None) -> FloatArray:
    """Softmax over the last axis of s = scale * x, for attention scores x of shape
    (..., Tq, Tk), with hidden keys:

        causal=True   hides key j from query i when j > i + (Tk - Tq) (bottom-right aligned);
                      the kernel does no work on hidden keys and writes their zeros.
        mask          boolean (True = keep) or float (added to s), broadcastable to x.

    y = exp(s - max s) / sum(exp(s - max s)) over the visible keys, 0 on hidden ones; a row
    whose every key is hidden is all zeros (not NaN). `out` may be `x` (in-place).
    """
    if mask is None and type(scale) is float:
        ready: tuple[FloatArray, int] | None = kernels.ready_call(x, None, out, -1, True)
        if ready is not None and (not causal or ready[0].ndim >= 2):    # the usual call
            kernels.masked_softmax_forward(x, ready[0], scale, bool(causal), None, None,
                                           _threads.current())
            return ready[0]
    x, dtype = _arrays.as_input(x, "x")
    _arrays.check_scores(x, causal)
    scale = _arrays.real_number(scale, "scale")
    if mask is not None:
        mask = _arrays.check_mask(mask, x.shape)
    if out is not None:
        _arrays.check_out(out, x.shape, dtype)
    if x.size == 0:
        return out if out is not None else np.empty(x.shape, dtype)
    work = _arrays.compute_dtype(dtype)
    x = _arrays.contiguous(x, work)
    mask_rows, row_of = (None, None) if mask is None else _mask_rows(mask, x.shape, work)
    y, y_is_out = _arrays.output_for((x,), out, work, False, read_later=(mask_rows,))
    kernels.masked_softmax_forward(x, y, scale, bool(causal), mask_rows, row_of,
                                   _threads.current())
    return _arrays.finish(y, y_is_out, out, dtype, False)


def masked_softmax_backward(dy: ArrayLike, y: ArrayLike, *, scale: float = 1.0,
                            out: FloatArray | None = None) -> FloatArray:
    """Gradient of masked_softmax given its output y: dx = scale * y * (dy - sum(dy * y)) over
    the last axis (hidden keys have y = 0, hence dx = 0). `out` may be `dy` (in-place)."""
    if type(scale) is float:
        ready: tuple[FloatArray, int] | None = kernels.ready_call(dy, y, out, -1, True)
        if ready is not None:       # the usual call, arrays the kernel takes as they are
            kernels.masked_softmax_backward(dy, y, ready[0], scale, _threads.current())
            return ready[0]
    (dy, y), dtype = _arrays.as_inputs(dy=dy, y=y)
    _arrays.check_same_shape(dy, y, "dy", "y")
    _arrays.check_scores(y, False, "y")
    scale = _arrays.real_number(scale, "scale")
    if out is not None:
        _arrays.check_out(out, y.shape, dtype)
    if y.size == 0:
        return out if out is not None else np.empty(y.shape, dtype)
    work = _arrays.compute_dtype(dtype)
    dy = _arrays.contiguous(dy, work)
    y = _arrays.contiguous(y, work)
    dx, dx_is_out = _arrays.output_for((dy, y), out, work, False)
    kernels.masked_softmax_backward(dy, y, dx, scale, _threads.current())
    return _arrays.finish(dx, dx_is_out, out, dtype, False)
