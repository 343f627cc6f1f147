"""Layer norm and RMSNorm over the last axis; group, instance and batch norm of (N, C, *spatial).

Each forward function returns its statistics on request (`return_stats`), and the matching
backward function takes them back. Statistics are returned in the dtype the kernels compute in
(float32 for float16/bfloat16 inputs), so that the backward pass loses nothing to rounding.
"""

import math
import sys
from collections.abc import Callable
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import NDArray

from . import _arrays, _threads
from ._dispatch import kernels
from ._typing import ArrayLike, FloatArray


def _results(*values: FloatArray) -> FloatArray | tuple[FloatArray, ...]:
    """One result alone, several as a tuple."""
    return values[0] if len(values) == 1 else values


def _as(a: NDArray[Any], dtype: np.dtype[Any]) -> NDArray[Any]:
    return _arrays.as_dtype(a, dtype)


def _optional(a: NDArray[Any] | None, work: np.dtype[Any], default: float, n: int
              ) -> NDArray[Any]:
    """`a` for the kernels, or n copies of `default` (1 for a weight, 0 for a bias) when None."""
    return _arrays.constant(default, n, work) if a is None else _arrays.contiguous(a, work)


# ---- layer norm and RMSNorm --------------------------------------------------------------------
# The usual call -- float32 or float64 arrays the kernels take as they are, a new result -- goes
# straight to the kernel (the fast lane, as kernels.ready_call's); every other call takes the
# general path, with the same results.

def _ready_vector(a: object, like: Any, shape: tuple[int, ...]) -> bool:
    """`a` is None, or an ndarray the kernels take as it is: `like`'s dtype, `shape`, aligned
    and C-contiguous."""
    return a is None or (type(a) is np.ndarray and a.dtype == like.dtype and a.shape == shape
                         and a.flags.c_contiguous and a.flags.aligned)


def _row_norm(x: ArrayLike, weight: ArrayLike | None, bias: ArrayLike | None, eps: float,
              residual: ArrayLike | None, return_stats: bool, out: FloatArray | None,
              centered: bool) -> FloatArray | tuple[FloatArray, ...]:
    ready = None if out is not None else kernels.ready_call(x, residual, None, -1, True)
    if ready is not None:               # x (and residual) are ndarrays the kernel takes
        lane: Any = x
        if (type(eps) is float and _ready_vector(weight, lane, lane.shape[-1:])
                and _ready_vector(bias, lane, lane.shape[-1:])):
            return _row_norm_lane(lane, weight, bias, eps, residual, return_stats,
                                  centered, ready[0])
    (x, weight, bias, residual), dtype = _arrays.as_inputs(
        x=x, weight=weight, bias=bias, residual=residual)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension: the normalized last axis")
    _arrays.check_shape(weight, "weight", x.shape[-1:], "x.shape[-1:]")
    _arrays.check_shape(bias, "bias", x.shape[-1:], "x.shape[-1:]")
    _arrays.check_shape(residual, "residual", x.shape, "x.shape")
    eps = _arrays.real_number(eps, "eps")
    if out is not None:
        _arrays.check_out(out, x.shape, dtype)
    work = _arrays.compute_dtype(dtype)
    n = x.shape[-1]
    if x.size == 0:         # statistics over no features are NaN, as torch.mean of nothing
        y = out if out is not None else np.empty(x.shape, dtype)
        h = np.empty(x.shape, dtype)
        mean = np.full(x.shape[:-1], np.nan, work)
        rstd = np.full(x.shape[:-1], np.nan, work)
    else:
        x = _arrays.contiguous(x, work)
        if residual is not None:
            residual = _arrays.contiguous(residual, work)
        # out may be x or residual (in place); weight and bias are read for every row
        y, y_is_out = _arrays.output_for((x,) if residual is None else (x, residual), out,
                                         work, False, read_later=(weight, bias))
        h = None if residual is None else kernels.empty(x.shape, work, x)
        mean = np.empty(x.shape[:-1], work) if centered and return_stats else None
        rstd = np.empty(x.shape[:-1], work) if return_stats else None
        kernels.row_norm_forward(x, residual, _optional(weight, work, 1, n),
                                 _optional(bias, work, 0, n), y, h, mean, rstd,
                                 centered, eps, _threads.current())
        y = _arrays.finish(y, y_is_out, out, dtype, False)
    results: list[Any] = [y]
    if residual is not None:
        results.append(_as(h, dtype))  # type: ignore[arg-type]  # (h is an array here)
    if return_stats:
        results += [mean, rstd] if centered else [rstd]
    return _results(*results)


def _row_norm_lane(x: NDArray[Any], weight: Any, bias: Any, eps: float, residual: Any,
                   return_stats: bool, centered: bool, y: NDArray[Any]
                   ) -> FloatArray | tuple[FloatArray, ...]:
    """_row_norm's fast lane: x, weight, bias (None or arrays) and residual (None or an
    array) the kernel takes as they are, y a new result."""
    work, n, rows = x.dtype, x.shape[-1], x.shape[:-1]
    h = None if residual is None else kernels.empty(x.shape, work, x)
    mean = np.empty(rows, work) if centered and return_stats else None
    rstd = np.empty(rows, work) if return_stats else None
    kernels.row_norm_forward(x, residual, _optional(weight, work, 1, n),
                             _optional(bias, work, 0, n), y, h, mean, rstd, centered, eps,
                             _threads.current())
    if residual is None and not return_stats:
        return y
    results: list[Any] = [y] if h is None else [y, h]
    if return_stats:
        results += [mean, rstd] if centered else [rstd]
    return tuple(results)


def _row_norm_backward(dy: ArrayLike, x: ArrayLike, weight: ArrayLike | None,
                       mean: ArrayLike | None, rstd: ArrayLike, centered: bool
                       ) -> tuple[Any, ...]:
    ready = kernels.ready_call(dy, x, None, -1, False)
    if ready is not None:               # dy and x are ndarrays the kernel takes
        lane: Any = x
        if (_ready_vector(weight, lane, lane.shape[-1:]) and rstd is not None
                and _ready_vector(rstd, lane, lane.shape[:-1])
                and (not centered or mean is not None
                     and _ready_vector(mean, lane, lane.shape[:-1]))):
            n, work, dx = lane.shape[-1], lane.dtype, ready[0]
            dweight = _arrays.zeros(n, work) if weight is not None else None
            dbias = _arrays.zeros(n, work) if weight is not None and centered else None
            kernels.row_norm_backward(dy, x, _optional(weight, work, 1, n),  # type: ignore
                                      mean if centered else None, rstd, dx, dweight, dbias,
                                      centered, _threads.current())
            return (dx, dweight, dbias) if centered else (dx, dweight)
    _arrays.check_given(rstd=rstd, **({"mean": mean} if centered else {}))
    (dy, x, weight), dtype = _arrays.as_inputs(dy=dy, x=x, weight=weight)
    (mean, rstd), _ = _arrays.as_inputs(mean=mean, rstd=rstd)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension: the normalized last axis")
    _arrays.check_shape(dy, "dy", x.shape, "x.shape")
    _arrays.check_shape(weight, "weight", x.shape[-1:], "x.shape[-1:]")
    _arrays.check_shape(mean, "mean", x.shape[:-1], "x.shape[:-1]")
    _arrays.check_shape(rstd, "rstd", x.shape[:-1], "x.shape[:-1]")
    work = _arrays.compute_dtype(dtype)
    n = x.shape[-1]
    gradients = weight is not None
    dweight = _arrays.zeros(n, work) if gradients else None
    dbias = _arrays.zeros(n, work) if gradients and centered else None
    if x.size == 0:
        dx = kernels.empty(x.shape, work, x)
    else:
        dy, x = _arrays.contiguous(dy, work), _arrays.contiguous(x, work)
        dx = kernels.empty(x.shape, work, x)
        kernels.row_norm_backward(
            dy, x, _optional(weight, work, 1, n),
            _arrays.contiguous(mean, work) if centered else None,
            _arrays.contiguous(rstd, work), dx, dweight, dbias, centered, _threads.current())
    results = [_as(a, dtype) if a is not None else None for a in (dx, dweight, dbias)]
    return tuple(results) if centered else tuple(results[:2])


@overload
def layer_norm(x: ArrayLike, weight: ArrayLike | None = ..., bias: ArrayLike | None = ..., *,
               eps: float = ..., residual: None = ..., return_stats: Literal[False] = ...,
               out: FloatArray | None = ...) -> FloatArray: ...
@overload
def layer_norm(x: ArrayLike, weight: ArrayLike | None = ..., bias: ArrayLike | None = ..., *,
               eps: float = ..., residual: ArrayLike, return_stats: Literal[False] = ...,
               out: FloatArray | None = ...) -> tuple[FloatArray, FloatArray]: ...
@overload
def layer_norm(x: ArrayLike, weight: ArrayLike | None = ..., bias: ArrayLike | None = ..., *,
               eps: float = ..., residual: None = ..., return_stats: Literal[True],
               out: FloatArray | None = ...) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def layer_norm(x: ArrayLike, weight: ArrayLike | None = ..., bias: ArrayLike | None = ..., *,
               eps: float = ..., residual: ArrayLike, return_stats: Literal[True],
               out: FloatArray | None = ...
               ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]: ...
@overload
def layer_norm(x: ArrayLike, weight: ArrayLike | None = ..., bias: ArrayLike | None = ..., *,
               eps: float = ..., residual: ArrayLike | None = ..., return_stats: bool = ...,
               out: FloatArray | None = ...) -> FloatArray | tuple[FloatArray, ...]: ...
def layer_norm(x: ArrayLike, weight: ArrayLike | None = None, bias: ArrayLike | None = None, *,
               eps: float = 1e-5, residual: ArrayLike | None = None, return_stats: bool = False,
               out: FloatArray | None = None) -> FloatArray | tuple[FloatArray, ...]:
    """Layer norm over the last axis, of h = x + residual (or of x):
        y = (h - mean) * rstd * weight + bias,   rstd = 1 / sqrt(var + eps)   (biased var).
    Returns y; (y, h) with a residual; with return_stats also mean and rstd, of x.shape[:-1]."""
    return _row_norm(x, weight, bias, eps, residual, return_stats, out, True)


@overload
def layer_norm_backward(dy: ArrayLike, x: ArrayLike, weight: ArrayLike, mean: ArrayLike,
                        rstd: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def layer_norm_backward(dy: ArrayLike, x: ArrayLike, weight: None, mean: ArrayLike,
                        rstd: ArrayLike) -> tuple[FloatArray, None, None]: ...
def layer_norm_backward(dy: ArrayLike, x: ArrayLike, weight: ArrayLike | None, mean: ArrayLike,
                        rstd: ArrayLike
                        ) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Gradients of layer_norm given its input x (h with a residual) and statistics:
    with xhat = (x - mean) * rstd and g = dy * weight,
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))   (means over the last axis),
        dweight = sum(dy * xhat), dbias = sum(dy)           (sums over the other axes).
    Returns (dx, dweight, dbias); the last two are None when weight is None."""
    return _row_norm_backward(dy, x, weight, mean, rstd, True)


@overload
def rms_norm(x: ArrayLike, weight: ArrayLike | None = ..., *, eps: float = ...,
             residual: None = ..., return_stats: Literal[False] = ...,
             out: FloatArray | None = ...) -> FloatArray: ...
@overload
def rms_norm(x: ArrayLike, weight: ArrayLike | None = ..., *, eps: float = ...,
             residual: ArrayLike, return_stats: Literal[False] = ...,
             out: FloatArray | None = ...) -> tuple[FloatArray, FloatArray]: ...
@overload
def rms_norm(x: ArrayLike, weight: ArrayLike | None = ..., *, eps: float = ...,
             residual: None = ..., return_stats: Literal[True],
             out: FloatArray | None = ...) -> tuple[FloatArray, FloatArray]: ...
@overload
def rms_norm(x: ArrayLike, weight: ArrayLike | None = ..., *, eps: float = ...,
             residual: ArrayLike, return_stats: Literal[True],
             out: FloatArray | None = ...) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def rms_norm(x: ArrayLike, weight: ArrayLike | None = ..., *, eps: float = ...,
             residual: ArrayLike | None = ..., return_stats: bool = ...,
             out: FloatArray | None = ...) -> FloatArray | tuple[FloatArray, ...]: ...
def rms_norm(x: ArrayLike, weight: ArrayLike | None = None, *, eps: float = 1e-6,
             residual: ArrayLike | None = None, return_stats: bool = False,
             out: FloatArray | None = None) -> FloatArray | tuple[FloatArray, ...]:
    """RMSNorm over the last axis, of h = x + residual (or of x):
        y = h * rstd * weight,   rstd = 1 / sqrt(mean(h**2) + eps).
    Returns y; (y, h) with a residual; with return_stats also rstd, of x.shape[:-1]."""
    return _row_norm(x, weight, None, eps, residual, return_stats, out, False)


@overload
def rms_norm_backward(dy: ArrayLike, x: ArrayLike, weight: ArrayLike, rstd: ArrayLike
                      ) -> tuple[FloatArray, FloatArray]: ...
@overload
def rms_norm_backward(dy: ArrayLike, x: ArrayLike, weight: None, rstd: ArrayLike
                      ) -> tuple[FloatArray, None]: ...
def rms_norm_backward(dy: ArrayLike, x: ArrayLike, weight: ArrayLike | None, rstd: ArrayLike
                      ) -> tuple[FloatArray, FloatArray | None]:
    """Gradients of rms_norm given its input x (h with a residual) and rstd: with
    xhat = x * rstd and g = dy * weight,
        dx = rstd * (g - xhat * mean(g * xhat)),   dweight = sum(dy * xhat).
    Returns (dx, dweight); dweight is None when weight is None."""
    return _row_norm_backward(dy, x, weight, None, rstd, False)


# ---- group, instance and batch norm -----------------------------------------------------------
# The kernels see x as (N, C, S), S = prod(spatial); `groups` is group norm's number of groups
# (statistics per sample and group), or BATCH for batch norm (statistics per channel).

BATCH: None = None
BATCH_RUN_MIN = 256     # batch norm of shorter runs (e.g. (N, C) input) goes by column sums

def _channels(x: NDArray[Any]) -> tuple[int, int]:
    if x.ndim < 2:
        raise ValueError(f"x must be (N, C, *spatial), got shape {x.shape}")
    return x.shape[0], x.shape[1]


def _stats_shape(N: int, C: int, groups: int | None) -> tuple[int, ...]:
    """(C,) for batch norm, (N, groups) for group norm; groups beyond any array size (possible
    only with 0 channels, which every count divides) are a ValueError naming num_groups."""
    if groups is BATCH:
        return (C,)
    if groups > sys.maxsize:
        raise ValueError(f"num_groups={groups} is beyond any array size (the statistics have "
                         f"shape (N, num_groups))")
    return (N, groups)


def _by_columns(x: NDArray[Any], N: int, C: int, groups: int | None) -> bool:
    """Batch norm of short runs (e.g. an (N, C) input) goes by column sums (see the kernels)."""
    return groups is BATCH and x.size // (N * C) < BATCH_RUN_MIN


def _by_rows(x: NDArray[Any], N: int, C: int, groups: int | None) -> bool:
    """Group norm of one spatial element (an (N, C) input): a group of C / G one-element runs is
    a contiguous segment of the sample's row, normalized by the layer-norm row kernels."""
    return groups is not BATCH and x.size == N * C


def _channel_norm(x: NDArray[Any], weight: NDArray[Any] | None, bias: NDArray[Any] | None,
                  dtype: np.dtype[Any], groups: int | None, eps: float,
                  given_stats: tuple[NDArray[Any], NDArray[Any]] | None = None,
                  want_var: bool = False, want_stats: bool = True
                  ) -> tuple[NDArray[Any], Any, Any, NDArray[Any] | None]:
    """y, mean, rstd, var (var only with want_var) of group norm (`groups` groups) or batch norm
    (BATCH); with given_stats = (mean, rstd) those are used instead of computed. Without
    want_stats, mean and rstd may come back as None (the row kernels need none)."""
    N, C = _channels(x)
    _arrays.check_shape(weight, "weight", (C,), "(C,)")
    _arrays.check_shape(bias, "bias", (C,), "(C,)")
    eps = _arrays.real_number(eps, "eps")
    work = _arrays.compute_dtype(dtype)
    shape = _stats_shape(N, C, groups)
    by_rows = _by_rows(x, N, C, groups) and given_stats is None and not want_var
    if given_stats is not None:
        mean, rstd = given_stats
    elif by_rows and not want_stats:
        mean = rstd = None
    else:
        mean = np.empty(shape, work)
        rstd = np.empty(shape, work)
    var = np.empty(shape, work) if want_var else None
    if x.size == 0:
        if given_stats is None:
            for a in (mean, rstd, var):
                if a is not None:
                    a.fill(np.nan)
        return np.empty(x.shape, dtype), mean, rstd, var
    x = _arrays.contiguous(x, work)
    y = kernels.empty(x.shape, work, x)
    affine = _optional(weight, work, 1, C), _optional(bias, work, 0, C)
    if _by_columns(x, N, C, groups):
        kernels.batch_norm_columns_forward(x, N, C, *affine, y, mean, rstd, var,
                                           given_stats is None, eps, _threads.current())
    elif by_rows:
        kernels.row_norm_forward(x, None, *affine, y, None, mean, rstd, True, eps,
                                 _threads.current(), groups)
    else:
        kernels.channel_norm_forward(x, N, C, 0 if groups is BATCH else groups, *affine, y,
                                     mean, rstd, var, given_stats is None, eps,
                                     _threads.current())
    return _as(y, dtype), mean, rstd, var


def _channel_norm_backward(dy: ArrayLike, x: ArrayLike, weight: ArrayLike | None,
                           mean: ArrayLike, rstd: ArrayLike,
                           groups_of_C: Callable[[int], int | None]) -> tuple[Any, ...]:
    """(dx, dweight, dbias) of group norm (groups_of_C(C) groups) or batch norm (BATCH)."""
    _arrays.check_given(mean=mean, rstd=rstd)
    (dy, x, weight), dtype = _arrays.as_inputs(dy=dy, x=x, weight=weight)
    (mean, rstd), _ = _arrays.as_inputs(mean=mean, rstd=rstd)
    N, C = _channels(x)
    groups = groups_of_C(C)
    _arrays.check_shape(dy, "dy", x.shape, "x.shape")
    _arrays.check_shape(weight, "weight", (C,), "(C,)")
    shape = _stats_shape(N, C, groups)
    _arrays.check_shape(mean, "mean", shape, "the statistics' shape")
    _arrays.check_shape(rstd, "rstd", shape, "the statistics' shape")
    work = _arrays.compute_dtype(dtype)
    dweight = _arrays.zeros(C, work) if weight is not None else None
    dbias = _arrays.zeros(C, work) if weight is not None else None
    if x.size == 0:
        dx = kernels.empty(x.shape, work, x)
    else:
        dy, x = _arrays.contiguous(dy, work), _arrays.contiguous(x, work)
        dx = kernels.empty(x.shape, work, x)
        stats = _arrays.contiguous(mean, work), _arrays.contiguous(rstd, work)
        if _by_columns(x, N, C, groups):
            kernels.batch_norm_columns_backward(dy, x, N, C, _optional(weight, work, 1, C),
                                                *stats, dx, dweight, dbias, _threads.current())
        elif _by_rows(x, N, C, groups):
            kernels.row_norm_backward(dy, x, _optional(weight, work, 1, C), *stats, dx,
                                      dweight, dbias, True, _threads.current(), groups)
        else:
            kernels.channel_norm_backward(dy, x, N, C, 0 if groups is BATCH else groups,
                                          _optional(weight, work, 1, C), *stats, dx, dweight,
                                          dbias, _threads.current())
    return tuple(_as(a, dtype) if a is not None else None for a in (dx, dweight, dbias))


@overload
def group_norm(x: ArrayLike, num_groups: int, weight: ArrayLike | None = ...,
               bias: ArrayLike | None = ..., *, eps: float = ...,
               return_stats: Literal[False] = ...) -> FloatArray: ...
@overload
def group_norm(x: ArrayLike, num_groups: int, weight: ArrayLike | None = ...,
               bias: ArrayLike | None = ..., *, eps: float = ..., return_stats: Literal[True]
               ) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def group_norm(x: ArrayLike, num_groups: int, weight: ArrayLike | None = ...,
               bias: ArrayLike | None = ..., *, eps: float = ..., return_stats: bool = ...
               ) -> FloatArray | tuple[FloatArray, FloatArray, FloatArray]: ...
def group_norm(x: ArrayLike, num_groups: int, weight: ArrayLike | None = None,
               bias: ArrayLike | None = None, *, eps: float = 1e-5, return_stats: bool = False
               ) -> FloatArray | tuple[FloatArray, FloatArray, FloatArray]:
    """Group norm of x (N, C, *spatial): the C channels form num_groups groups of C / num_groups,
    and each (sample, group) is normalized over its channels and positions:
        y = (x - mean) * rstd * weight[c] + bias[c],   rstd = 1 / sqrt(var + eps)   (biased var).
    Returns y, or (y, mean, rstd) with statistics of shape (N, num_groups)."""
    (x, weight, bias), dtype = _arrays.as_inputs(x=x, weight=weight, bias=bias)
    groups = _arrays.check_num_groups(num_groups, _channels(x)[1])
    y, mean, rstd, _ = _channel_norm(x, weight, bias, dtype, groups, eps,
                                     want_stats=return_stats)
    return (y, mean, rstd) if return_stats else y


@overload
def group_norm_backward(dy: ArrayLike, x: ArrayLike, num_groups: int, weight: ArrayLike,
                        mean: ArrayLike, rstd: ArrayLike
                        ) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def group_norm_backward(dy: ArrayLike, x: ArrayLike, num_groups: int, weight: None,
                        mean: ArrayLike, rstd: ArrayLike) -> tuple[FloatArray, None, None]: ...
def group_norm_backward(dy: ArrayLike, x: ArrayLike, num_groups: int, weight: ArrayLike | None,
                        mean: ArrayLike, rstd: ArrayLike
                        ) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Gradients of group_norm: as layer_norm_backward with the means over each (sample, group)
    and g = dy * weight[c]; dweight and dbias sum over samples and positions.
    Returns (dx, dweight, dbias); the last two are None when weight is None."""
    return _channel_norm_backward(dy, x, weight, mean, rstd,
                                  lambda C: _arrays.check_num_groups(num_groups, C))


@overload
def instance_norm(x: ArrayLike, weight: ArrayLike | None = ..., bias: ArrayLike | None = ..., *,
                  eps: float = ..., return_stats: Literal[False] = ...) -> FloatArray: ...
@overload
def instance_norm(x: ArrayLike, weight: ArrayLike | None = ..., bias: ArrayLike | None = ..., *,
                  eps: float = ..., return_stats: Literal[True]
                  ) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def instance_norm(x: ArrayLike, weight: ArrayLike | None = ..., bias: ArrayLike | None = ..., *,
                  eps: float = ..., return_stats: bool = ...
                  ) -> FloatArray | tuple[FloatArray, FloatArray, FloatArray]: ...
def instance_norm(x: ArrayLike, weight: ArrayLike | None = None, bias: ArrayLike | None = None, *,
                  eps: float = 1e-5, return_stats: bool = False
                  ) -> FloatArray | tuple[FloatArray, FloatArray, FloatArray]:
    """Instance norm: group_norm with one group per channel; statistics of shape (N, C).
    A single spatial element (prod(spatial) == 1, e.g. an (N, C) input) is a ValueError, as in
    PyTorch: each channel would be normalized over one value."""
    (x, weight, bias), dtype = _arrays.as_inputs(x=x, weight=weight, bias=bias)
    _check_spatial(x)
    y, mean, rstd, _ = _channel_norm(x, weight, bias, dtype, _channels(x)[1], eps)
    return (y, mean, rstd) if return_stats else y


def _check_spatial(x: NDArray[Any]) -> None:
    """instance_norm's input needs more than one spatial element."""
    _channels(x)
    if math.prod(x.shape[2:]) == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got x of shape "
                         f"{x.shape}")


@overload
def instance_norm_backward(dy: ArrayLike, x: ArrayLike, weight: ArrayLike, mean: ArrayLike,
                           rstd: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def instance_norm_backward(dy: ArrayLike, x: ArrayLike, weight: None, mean: ArrayLike,
                           rstd: ArrayLike) -> tuple[FloatArray, None, None]: ...
def instance_norm_backward(dy: ArrayLike, x: ArrayLike, weight: ArrayLike | None,
                           mean: ArrayLike, rstd: ArrayLike
                           ) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Gradients of instance_norm (group_norm_backward with one group per channel)."""
    return _channel_norm_backward(dy, x, weight, mean, rstd, lambda C: C)


def _check_running(a: object, name: str, C: int, training: bool) -> None:
    if a is None:
        return
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray updated in place, not {type(a).__name__}")
    _arrays.check_shape(a, name, (C,), "(C,)")
    if a.dtype.kind != "f" and not _arrays.is_half(a.dtype):
        raise TypeError(f"{name} must have a floating dtype, not {a.dtype}")
    if training and not a.flags.writeable:
        raise ValueError(f"{name} is read-only; batch_norm updates it in place")


@overload
def batch_norm(x: ArrayLike, weight: ArrayLike | None = ..., bias: ArrayLike | None = ..., *,
               running_mean: FloatArray | None = ..., running_var: FloatArray | None = ...,
               training: bool = ..., momentum: float = ..., eps: float = ...,
               return_stats: Literal[False] = ...) -> FloatArray: ...
@overload
def batch_norm(x: ArrayLike, weight: ArrayLike | None = ..., bias: ArrayLike | None = ..., *,
               running_mean: FloatArray | None = ..., running_var: FloatArray | None = ...,
               training: bool = ..., momentum: float = ..., eps: float = ...,
               return_stats: Literal[True]) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def batch_norm(x: ArrayLike, weight: ArrayLike | None = ..., bias: ArrayLike | None = ..., *,
               running_mean: FloatArray | None = ..., running_var: FloatArray | None = ...,
               training: bool = ..., momentum: float = ..., eps: float = ...,
               return_stats: bool = ...
               ) -> FloatArray | tuple[FloatArray, FloatArray, FloatArray]: ...
def batch_norm(x: ArrayLike, weight: ArrayLike | None = None, bias: ArrayLike | None = None, *,
               running_mean: FloatArray | None = None, running_var: FloatArray | None = None,
               training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
               return_stats: bool = False
               ) -> FloatArray | tuple[FloatArray, FloatArray, FloatArray]:
    """Batch norm of x (N, C, *spatial): each channel normalized over samples and positions,
        y = (x - mean) * rstd * weight[c] + bias[c],   rstd = 1 / sqrt(var + eps).
    training: batch statistics (biased var); running_mean and running_var, when given, are
    updated in place as in PyTorch:
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)
    with M = N * prod(spatial) values per channel. Not training: mean = running_mean and
    var = running_var. Returns y, or (y, mean, rstd) with statistics of shape (C,)."""
    (x, weight, bias), dtype = _arrays.as_inputs(x=x, weight=weight, bias=bias)
    N, C = _channels(x)
    _check_running(running_mean, "running_mean", C, training)
    _check_running(running_var, "running_var", C, training)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be given or both be None")
    work = _arrays.compute_dtype(dtype)
    eps = _arrays.real_number(eps, "eps")
    if training:
        values = N * math.prod(x.shape[2:])        # per channel, also when C == 0 (PyTorch)
        if values == 1:
            raise ValueError(f"batch_norm in training needs more than 1 value per channel, "
                             f"got x of shape {x.shape}")
        momentum = _arrays.real_number(momentum, "momentum")
        y, mean, rstd, var = _channel_norm(x, weight, bias, dtype, BATCH, eps,
                                           want_var=running_var is not None)
        if values and running_mean is not None:        # no update from an empty batch
            assert running_var is not None and var is not None      # (given with running_mean)
            running_mean[...] = (momentum * mean.astype(np.float64)
                                 + (1 - momentum) * running_mean)
            running_var[...] = (momentum * var.astype(np.float64) * values / (values - 1)
                                + (1 - momentum) * running_var)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm with training=False needs running_mean and running_var")
        mean = np.array(running_mean, dtype=work)
        rstd = (1.0 / np.sqrt(running_var.astype(np.float64) + eps)).astype(work)
        y, mean, rstd, _ = _channel_norm(x, weight, bias, dtype, BATCH, eps,
                                         given_stats=(mean, rstd))
    return (y, mean, rstd) if return_stats else y


@overload
def batch_norm_backward(dy: ArrayLike, x: ArrayLike, weight: ArrayLike, mean: ArrayLike,
                        rstd: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def batch_norm_backward(dy: ArrayLike, x: ArrayLike, weight: None, mean: ArrayLike,
                        rstd: ArrayLike) -> tuple[FloatArray, None, None]: ...
def batch_norm_backward(dy: ArrayLike, x: ArrayLike, weight: ArrayLike | None, mean: ArrayLike,
                        rstd: ArrayLike
                        ) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Gradients of batch_norm in training (batch statistics): as layer_norm_backward with the
    means over each channel's samples and positions, g = dy * weight[c]; dweight and dbias sum
    over samples and positions. Returns (dx, dweight, dbias); None for the last two when weight
    is None."""
    return _channel_norm_backward(dy, x, weight, mean, rstd, lambda C: BATCH)
