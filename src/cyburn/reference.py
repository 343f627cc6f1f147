"""Pure-NumPy versions of cyburn's functions: the correctness oracle for the tests.

Written to be read, not to be fast. Same signatures and dtype rules as the kernels: half
types are computed in float32 and returned in their own dtype, bool and integer inputs
become float64.
"""
import math
import warnings

import numpy as np

from . import _arrays
from ._typing import (Approximate, ArrayLike, FloatArray, LinearCrossEntropyGrads,
                      Reduction)


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


def softmax(x: ArrayLike, axis: int = -1, *, out: FloatArray | None = None) -> FloatArray:
    """y = exp(x - m) / sum(exp(x - m)),  m = max(x)  along `axis`."""
    (x,), dtype = _prepare(x=x)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return _result(e / np.sum(e, axis=axis, keepdims=True), dtype, out)


def log_softmax(x: ArrayLike, axis: int = -1, *, out: FloatArray | None = None) -> FloatArray:
    """y = (x - m) - log(sum(exp(x - m))),  m = max(x)  along `axis`."""
    (x,), dtype = _prepare(x=x)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    y = shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
    return _result(y, dtype, out)


def softmax_backward(dy: ArrayLike, y: ArrayLike, axis: int = -1, *,
                     out: FloatArray | None = None) -> FloatArray:
    """For y = softmax(x): dx = y * (dy - sum(dy * y))  along `axis`."""
    dy, y, dtype = _prepare_pair(dy, y)
    return _result(y * (dy - np.sum(dy * y, axis=axis, keepdims=True)), dtype, out)


def log_softmax_backward(dy: ArrayLike, y: ArrayLike, axis: int = -1, *,
                         out: FloatArray | None = None) -> FloatArray:
    """For y = log_softmax(x): dx = dy - exp(y) * sum(dy)  along `axis`."""
    dy, y, dtype = _prepare_pair(dy, y)
    return _result(dy - np.exp(y) * np.sum(dy, axis=axis, keepdims=True), dtype, out)


# ---- attention softmax --------------------------------------------------------------------------

def masked_softmax(x: ArrayLike, *, scale: float = 1.0, causal: bool = False,
                   mask: ArrayLike | None = None, out: FloatArray | None = None) -> FloatArray:
    """Softmax over the last axis of s = scale * x, x of shape (..., Tq, Tk), where

        s[..., i, j] = -inf  if causal and j > i + (Tk - Tq),  or where a boolean mask is False
        s = s + mask         for a float mask (broadcast to x)
        y = exp(s - m) / sum(exp(s - m)),  m = max(s),  and y = 0 on rows where m = -inf.

    Entries hidden by the causal rule or a boolean mask are replaced, not computed with: a NaN
    there does not spread (an additive -inf is added, so NaN + -inf stays NaN)."""
    (x,), dtype = _prepare(x=x)
    _arrays.check_scores(x, causal)
    s = _arrays.real_number(scale, "scale") * x
    if causal:
        tq, tk = x.shape[-2:]
        hidden = np.arange(tk) > np.arange(tq)[:, None] + (tk - tq)
        s = np.where(hidden, -np.inf, s)
    if mask is not None:
        mask = _arrays.check_mask(mask, x.shape)
        s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + mask.astype(x.dtype)
    m = np.max(s, axis=-1, keepdims=True)
    every_key_hidden = m == -np.inf
    with np.errstate(invalid="ignore"):
        e = np.exp(s - np.where(every_key_hidden, 0, m))
        y = np.where(every_key_hidden, 0, e / np.sum(e, axis=-1, keepdims=True))
    return _result(y, dtype, out)


def masked_softmax_backward(dy: ArrayLike, y: ArrayLike, *, scale: float = 1.0,
                            out: FloatArray | None = None) -> FloatArray:
    """For y = masked_softmax(x, scale=scale, ...): dx = scale * y * (dy - sum(dy * y)) along
    the last axis."""
    dy, y, dtype = _prepare_pair(dy, y)
    _arrays.check_scores(y, False, "y")
    dx = _arrays.real_number(scale, "scale") * (y * (dy - np.sum(dy * y, axis=-1, keepdims=True)))
    return _result(dx, dtype, out)


# ---- normalization ------------------------------------------------------------------------------
#
# Statistics are two-pass (the mean, then the mean of squared deviations) over C-contiguous rows,
# which NumPy sums pairwise. Group, instance and batch normalization view x (N, C, *spatial) as
# rows that are their statistics sets (see _to_sets), so all five share the row formulas.

def _prepare_optional(**named):
    """_prepare for arguments that may be None, made C-contiguous (NumPy sums a contiguous row
    pairwise, a strided one element after another)."""
    given = {name: a for name, a in named.items() if a is not None}
    arrays, dtype = _prepare(**given)
    arrays = iter([np.asarray(a, order="C") for a in arrays])
    return [None if a is None else next(arrays) for a in named.values()], dtype


def _check_shape(a, name, expected, x_shape):
    if a is not None and a.shape != tuple(expected):
        raise ValueError(f"{name} has shape {a.shape}, expected {tuple(expected)} "
                         f"for x of shape {x_shape}")


def _row_mean(a):
    """The mean of each row (last axis kept, of length 1); NaN for an empty row, as a mean of
    nothing is in PyTorch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)         # "Mean of empty slice"
        with np.errstate(invalid="ignore"):
            return np.mean(a, axis=-1, keepdims=True)


def _moments(rows):
    """Two-pass mean and biased variance of each row: mean(h), then mean((h - mean)**2)."""
    mean = _row_mean(rows)
    return mean, _row_mean((rows - mean) ** 2)


def _affine(xhat, weight, bias):
    """xhat * weight + bias, each factor optional (weight/bias broadcast against xhat)."""
    y = xhat if weight is None else xhat * weight
    return y if bias is None else y + bias


def _norm_result(y, dtype, out, h, stats):
    """y (into out=), then h when a residual was added, then the statistics when asked."""
    y = _result(np.asarray(y, order="C"), dtype, out)
    extra = ([] if h is None else [h.astype(dtype)]) + list(stats or ())
    return (y, *extra) if extra else y


def _rows_input(x, residual):
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (the normalized axis), got a scalar")
    if residual is None:
        return x
    _arrays.check_same_shape(x, residual, "x", "residual")
    return x + residual


def layer_norm(x: ArrayLike, weight: ArrayLike | None = None, bias: ArrayLike | None = None, *,
               eps: float = 1e-5, residual: ArrayLike | None = None, return_stats: bool = False,
               out: FloatArray | None = None) -> FloatArray | tuple[FloatArray, ...]:
    """Layer normalization over the last axis, after an optional residual add:

        h = x + residual  (or x)
        mean = mean(h),  var = mean((h - mean)**2)  (biased),  rstd = 1 / sqrt(var + eps)
        y = (h - mean) * rstd * weight + bias

    Returns y; (y, h) with `residual`; with `return_stats` mean and rstd (shape x.shape[:-1],
    in the compute dtype) are appended.
    """
    eps = _arrays.real_number(eps, "eps")
    (x, weight, bias, residual), dtype = _prepare_optional(x=x, weight=weight, bias=bias,
                                                           residual=residual)
    h = _rows_input(x, residual)
    _check_shape(weight, "weight", h.shape[-1:], h.shape)
    _check_shape(bias, "bias", h.shape[-1:], h.shape)
    mean, var = _moments(h)
    rstd = 1 / np.sqrt(var + eps)
    y = _affine((h - mean) * rstd, weight, bias)
    stats = (mean[..., 0], rstd[..., 0]) if return_stats else None
    return _norm_result(y, dtype, out, None if residual is None else h, stats)


def layer_norm_backward(dy: ArrayLike, x: ArrayLike, weight: ArrayLike | None, mean: ArrayLike,
                        rstd: ArrayLike
                        ) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Gradient of layer_norm (x is the normalized input h), statistics depending on x:

        xhat = (x - mean) * rstd,  g = dy * weight  (dy without weight)
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))        (means along the last axis)
        dweight = sum(dy * xhat),  dbias = sum(dy)               (over all but the last axis)

    Returns (dx, dweight, dbias); dweight and dbias are None when weight is None.
    """
    (dy, x, weight), dtype = _prepare_optional(dy=dy, x=x, weight=weight)
    _arrays.check_given(mean=mean, rstd=rstd)
    (mean, rstd), _ = _prepare_optional(mean=mean, rstd=rstd)
    x = _rows_input(x, None)
    _arrays.check_same_shape(dy, x, "dy", "x")
    _check_shape(weight, "weight", x.shape[-1:], x.shape)
    _check_shape(mean, "mean", x.shape[:-1], x.shape)
    _check_shape(rstd, "rstd", x.shape[:-1], x.shape)
    work = _arrays.compute_dtype(dtype)
    mean, rstd = mean[..., None].astype(work), rstd[..., None].astype(work)
    xhat = (x - mean) * rstd
    g = dy if weight is None else dy * weight
    dx = rstd * (g - _row_mean(g) - xhat * _row_mean(g * xhat))
    return _weight_grads(dx, dy, xhat, weight, dtype, axes=tuple(range(x.ndim - 1)))


def _weight_grads(dx, dy, xhat, weight, dtype, axes):
    dx = np.asarray(dx, dtype=dtype, order="C")
    if weight is None:
        return dx, None, None
    dweight = _sum_over(dy * xhat, axes)
    dbias = _sum_over(dy, axes)
    return dx, dweight.astype(dtype), dbias.astype(dtype)


def _sum_over(a, axes, dtype=None):
    """np.sum(a, axis=axes), pairwise: the summed axes are made one contiguous last axis first
    (np.sum adds a contiguous axis pairwise, a strided one term by term, whose error grows
    with the count: 5000 values of 3.3 summed to 16499.9999999985)."""
    keep = [i for i in range(a.ndim) if i not in axes]
    rows = np.moveaxis(a, keep, list(range(len(keep))))
    kept = rows.shape[:len(keep)]
    rows = np.ascontiguousarray(rows).reshape(kept + (math.prod(rows.shape[len(keep):]),))
    return rows.sum(axis=-1, dtype=dtype)


def rms_norm(x: ArrayLike, weight: ArrayLike | None = None, *, eps: float = 1e-6,
             residual: ArrayLike | None = None, return_stats: bool = False,
             out: FloatArray | None = None) -> FloatArray | tuple[FloatArray, ...]:
    """RMS normalization over the last axis, after an optional residual add:

        h = x + residual  (or x),   rstd = 1 / sqrt(mean(h**2) + eps),   y = h * rstd * weight

    Returns y; (y, h) with `residual`; with `return_stats` rstd (shape x.shape[:-1], in the
    compute dtype) is appended.
    """
    eps = _arrays.real_number(eps, "eps")
    (x, weight, residual), dtype = _prepare_optional(x=x, weight=weight, residual=residual)
    h = _rows_input(x, residual)
    _check_shape(weight, "weight", h.shape[-1:], h.shape)
    rstd = 1 / np.sqrt(_row_mean(h ** 2) + eps)
    y = _affine(h * rstd, weight, None)
    stats = (rstd[..., 0],) if return_stats else None
    return _norm_result(y, dtype, out, None if residual is None else h, stats)


def rms_norm_backward(dy: ArrayLike, x: ArrayLike, weight: ArrayLike | None, rstd: ArrayLike
                      ) -> tuple[FloatArray, FloatArray | None]:
    """Gradient of rms_norm (x is the normalized input h), rstd depending on x:

        xhat = x * rstd,  g = dy * weight  (dy without weight)
        dx = rstd * (g - xhat * mean(g * xhat))                  (mean along the last axis)
        dweight = sum(dy * xhat)                                 (over all but the last axis)

    Returns (dx, dweight); dweight is None when weight is None.
    """
    (dy, x, weight), dtype = _prepare_optional(dy=dy, x=x, weight=weight)
    _arrays.check_given(rstd=rstd)
    (rstd,), _ = _prepare_optional(rstd=rstd)
    x = _rows_input(x, None)
    _arrays.check_same_shape(dy, x, "dy", "x")
    _check_shape(weight, "weight", x.shape[-1:], x.shape)
    _check_shape(rstd, "rstd", x.shape[:-1], x.shape)
    rstd = rstd[..., None].astype(_arrays.compute_dtype(dtype))
    xhat = x * rstd
    g = dy if weight is None else dy * weight
    dx = rstd * (g - xhat * _row_mean(g * xhat))
    dx, dweight, _ = _weight_grads(dx, dy, xhat, weight, dtype, axes=tuple(range(x.ndim - 1)))
    return dx, dweight


# -- group, instance and batch normalization: statistics over sets of x (N, C, *spatial) --------

def _channels_input(x):
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, C, *spatial), got shape {x.shape}")
    return x.reshape(_ncs(x.shape))


def _ncs(shape):
    """(N, C, *spatial) -> (N, C, S), S = prod(spatial)."""
    return shape[0], shape[1], math.prod(shape[2:])


def _to_sets(a, groups):
    """Rows that are the statistics sets of a (N, C, S): (N, groups, C // groups * S) for
    group normalization (groups = C for instance normalization), (C, N * S) for batch
    normalization (groups None). A copy for batch normalization, so its rows are contiguous
    (np.mean sums a contiguous row pairwise, a strided one term by term: for 5000 values of
    1234.567 the mean was 1.2e-10 off)."""
    n, c, s = a.shape
    if groups is None:
        return np.ascontiguousarray(a.transpose(1, 0, 2).reshape(c, n * s))
    return a.reshape(n, groups, c // max(groups, 1) * s)


def _from_sets(rows, shape, groups):
    """The inverse of _to_sets, back to (N, C, S)."""
    n, c, s = shape
    if groups is None:
        return rows.reshape(c, n, s).transpose(1, 0, 2)
    return rows.reshape(n, c, s)


def _sets_forward(x, weight, bias, eps, groups, return_stats):
    """y = (x - mean) * rstd * weight + bias with mean, rstd over each set (see _to_sets;
    groups "channels": one group per channel)."""
    eps = _arrays.real_number(eps, "eps")
    (x, weight, bias), dtype = _prepare_optional(x=x, weight=weight, bias=bias)
    x3 = _channels_input(x)
    if groups == "channels":
        groups = x3.shape[1]
    _check_shape(weight, "weight", x3.shape[1:2], x.shape)
    _check_shape(bias, "bias", x3.shape[1:2], x.shape)
    rows = _to_sets(x3, groups)
    mean, var = _moments(rows)
    rstd = 1 / np.sqrt(var + eps)
    y = _sets_affine((rows - mean) * rstd, x, groups, weight, bias)
    stats = (mean[..., 0], rstd[..., 0]) if return_stats else None
    return _norm_result(y, dtype, None, None, stats)


def _sets_affine(xhat_rows, x, groups, weight, bias):
    """xhat (as rows of sets) back in the shape of x, times weight plus bias per channel."""
    xhat = _from_sets(xhat_rows, _ncs(x.shape), groups)
    weight, bias = [None if p is None else p[:, None] for p in (weight, bias)]
    return _affine(xhat, weight, bias).reshape(x.shape)


def _sets_backward(dy, x, weight, mean, rstd, groups):
    """The layer_norm_backward formulas with the means over each set (see _to_sets), dweight and
    dbias summed over all axes but the channel axis, written as
        dx = rstd * weight[c] * dy - rstd * (mean(g) + (x - mean) * q),
        q = rstd**2 * mean(g * (x - mean)),  g = dy * weight[c]."""
    (dy, x, weight), dtype = _prepare_optional(dy=dy, x=x, weight=weight)
    _arrays.check_given(mean=mean, rstd=rstd)
    (mean, rstd), _ = _prepare_optional(mean=mean, rstd=rstd)
    x3 = _channels_input(x)
    _arrays.check_same_shape(dy, x, "dy", "x")
    if groups == "channels":
        groups = x3.shape[1]
    _check_shape(weight, "weight", x3.shape[1:2], x.shape)
    rows = _to_sets(x3, groups)
    _check_shape(mean, "mean", rows.shape[:-1], x.shape)
    _check_shape(rstd, "rstd", rows.shape[:-1], x.shape)
    work = _arrays.compute_dtype(dtype)
    mean, rstd = mean[..., None].astype(work), rstd[..., None].astype(work)
    dy3 = dy.reshape(x3.shape)
    centered = _from_sets(rows - mean, x3.shape, groups)
    xhat = _from_sets((rows - mean) * rstd, x3.shape, groups)
    w = np.ones(x3.shape[1], work) if weight is None else weight
    # sum(g) over a set as sum over its channels of weight[c] * (the sum of dy over the
    # channel's elements in the set), the same for sum(g * (x - mean)): exact algebra, and the
    # kernels' order. It decides what an infinite weight gives: +-inf where the channel's sum
    # is not 0 (rather than NaN for any set whose dy change sign). Sums in float64.
    def set_means(a):
        if groups is None:                          # batch norm: the set is the channel
            sums = (w * _sum_over(a, (0, 2), np.float64))[:, None]
        else:
            sums = _to_sets((w * a.sum(axis=2, dtype=np.float64))[..., None], groups).sum(
                axis=-1, keepdims=True)
        return sums / rows.shape[-1]
    with np.errstate(all="ignore"):             # a set of no elements: NaN; inf stays inf
        g_mean = set_means(dy3).astype(work)
        q = (set_means(dy3 * centered) * rstd * rstd).astype(work)
    element_rstd = _from_sets(np.broadcast_to(rstd, rows.shape), x3.shape, groups)
    dx_rows = (_to_sets(element_rstd * w[:, None] * dy3, groups)
               - rstd * (g_mean + (rows - mean) * q))
    dx = _from_sets(dx_rows, x3.shape, groups).reshape(x.shape)
    return _weight_grads(dx, dy3, xhat, weight, dtype, axes=(0, 2))


def group_norm(x: ArrayLike, num_groups: int, weight: ArrayLike | None = None,
               bias: ArrayLike | None = None, *, eps: float = 1e-5, return_stats: bool = False
               ) -> FloatArray | tuple[FloatArray, FloatArray, FloatArray]:
    """Group normalization of x (N, C, *spatial): the C channels form num_groups groups of
    C // num_groups consecutive channels; for each sample n and group:

        mean = mean(x[n, group]),  var = mean((x[n, group] - mean)**2)  (biased),
        rstd = 1 / sqrt(var + eps),  y = (x - mean) * rstd * weight[c] + bias[c]

    Returns y, or (y, mean, rstd) with `return_stats` (statistics (N, num_groups), in the
    compute dtype).
    """
    x_shape = np.shape(x)
    groups = _arrays.check_num_groups(num_groups, x_shape[1] if len(x_shape) >= 2 else 0)
    return _sets_forward(x, weight, bias, eps, groups, return_stats)


def group_norm_backward(dy: ArrayLike, x: ArrayLike, num_groups: int, weight: ArrayLike | None,
                        mean: ArrayLike, rstd: ArrayLike
                        ) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Gradient of group_norm, statistics depending on x; per (sample, group) set:

        xhat = (x - mean) * rstd,  g = dy * weight[c]  (dy without weight)
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))        (means over the set)
        dweight[c] = sum(dy * xhat),  dbias[c] = sum(dy)         (over N and spatial)

    Returns (dx, dweight, dbias); dweight and dbias are None when weight is None.
    """
    x_shape = np.shape(x)
    groups = _arrays.check_num_groups(num_groups, x_shape[1] if len(x_shape) >= 2 else 0)
    return _sets_backward(dy, x, weight, mean, rstd, groups)


def instance_norm(x: ArrayLike, weight: ArrayLike | None = None, bias: ArrayLike | None = None, *,
                  eps: float = 1e-5, return_stats: bool = False
                  ) -> FloatArray | tuple[FloatArray, FloatArray, FloatArray]:
    """Instance normalization of x (N, C, *spatial): group_norm with one group per channel,

        mean, var (biased) over x[n, c],  y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c]

    A single spatial element (prod(spatial) == 1) raises ValueError, as in PyTorch.
    Returns y, or (y, mean, rstd) with `return_stats` (statistics (N, C), compute dtype).
    """
    shape = np.shape(x)
    if len(shape) >= 2 and math.prod(shape[2:]) == 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got x of shape "
                         f"{shape}")
    return _sets_forward(x, weight, bias, eps, "channels", return_stats)


def instance_norm_backward(dy: ArrayLike, x: ArrayLike, weight: ArrayLike | None,
                           mean: ArrayLike, rstd: ArrayLike
                           ) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Gradient of instance_norm: group_norm_backward with one group per channel."""
    return _sets_backward(dy, x, weight, mean, rstd, "channels")


def batch_norm(x: ArrayLike, weight: ArrayLike | None = None, bias: ArrayLike | None = None, *,
               running_mean: FloatArray | None = None, running_var: FloatArray | None = None,
               training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
               return_stats: bool = False
               ) -> FloatArray | tuple[FloatArray, FloatArray, FloatArray]:
    """Batch normalization of x (N, C, *spatial), per channel c over the M = N * prod(spatial)
    values x[:, c]:

        training:   mean = mean(x[:, c]),  var = mean((x[:, c] - mean)**2)  (biased)
                    running_mean = (1 - momentum) * running_mean + momentum * mean
                    running_var  = (1 - momentum) * running_var + momentum * var * M / (M - 1)
                    (in place when given, unless M == 0; M == 1 is an error, as in PyTorch)
        evaluation: mean = running_mean,  var = running_var
        rstd = 1 / sqrt(var + eps),  y = (x - mean) * rstd * weight[c] + bias[c]

    Returns y, or (y, mean, rstd) with `return_stats` (statistics (C,), in the compute dtype).
    """
    eps = _arrays.real_number(eps, "eps")
    (x, weight, bias), dtype = _prepare_optional(x=x, weight=weight, bias=bias)
    x3 = _channels_input(x)
    n, c, s = x3.shape
    _check_shape(weight, "weight", (c,), x.shape)
    _check_shape(bias, "bias", (c,), x.shape)
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        _check_running(r, name, c, x.shape, training)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be given or both be None")
    rows = _to_sets(x3, None)                                   # (C, M)
    if training:
        m = n * s
        if m == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, "
                             f"got x of shape {x.shape}")
        mean, var = _moments(rows)
        momentum = _arrays.real_number(momentum, "momentum")
        if running_mean is not None and m > 0:          # no update from an empty batch
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean[:, 0]
            running_var[...] = (1 - momentum) * running_var + momentum * var[:, 0] * m / (m - 1)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm with training=False needs running_mean and running_var")
        mean = running_mean.astype(rows.dtype)[:, None]
        var = running_var.astype(rows.dtype)[:, None]
    rstd = 1 / np.sqrt(var + eps)
    y = _sets_affine((rows - mean) * rstd, x, None, weight, bias)
    stats = (mean[:, 0], rstd[:, 0]) if return_stats else None
    return _norm_result(y, dtype, None, None, stats)


def _check_running(r, name, channels, x_shape, training):
    """Running statistics are float ndarrays of shape (C,), writeable in training (batch_norm
    updates them in place)."""
    if r is None:
        return
    if not isinstance(r, np.ndarray) or not (r.dtype.kind == "f" or _arrays.is_half(r.dtype)):
        raise TypeError(f"{name} must be a float numpy.ndarray, got "
                        f"{getattr(r, 'dtype', type(r).__name__)}")
    _check_shape(r, name, (channels,), x_shape)
    if training and not r.flags.writeable:
        raise ValueError(f"{name} is read-only; batch_norm updates it in place")


def batch_norm_backward(dy: ArrayLike, x: ArrayLike, weight: ArrayLike | None, mean: ArrayLike,
                        rstd: ArrayLike
                        ) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Gradient of batch_norm in training mode (statistics depending on x); per channel c:

        xhat = (x - mean) * rstd,  g = dy * weight[c]  (dy without weight)
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))        (means over x[:, c])
        dweight[c] = sum(dy * xhat),  dbias[c] = sum(dy)

    Returns (dx, dweight, dbias); dweight and dbias are None when weight is None.
    """
    return _sets_backward(dy, x, weight, mean, rstd, None)


# ---- cross-entropy ------------------------------------------------------------------------------
#
# The class axis is last: logits (..., C) are taken as N rows of C classes. With z the logits
# (after the optional softcap), lse = logsumexp(z) and logp = z - lse per row, both kinds of
# target become class coefficients r[i, c] >= 0 of the row's loss,
#
#     loss_i = sum_c r[i, c] * (-logp[i, c]) + z_loss * lse_i**2
#     dloss_i / dz[i, j] = softmax(z[i])_j * (sum_c r[i, c] + 2 * z_loss * lse_i) - r[i, j]
#
#   class index t:        r[i, c] = (1 - eps) * w[t] * [c == t] + (eps / C) * w[c]
#   probabilities q:      r[i, c] = w[c] * ((1 - eps) * q[i, c] + eps / C)
#
# (w: the class weights, 1 without them; eps: label_smoothing), as in PyTorch's F.cross_entropy.
# log_softmax is computed in the compute dtype (float32 for half logits) after subtracting the
# row's maximum; the sum of exponentials, the per-row losses and the reductions in float64.

_REDUCTIONS = ("mean", "sum", "none")


def _ce_options(reduction, label_smoothing, z_loss, softcap):
    """The scalar options, checked, as Python floats (softcap None when off)."""
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    eps = _arrays.real_number(label_smoothing, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if softcap is not None:
        softcap = _arrays.real_number(softcap, "softcap")
        if not 0.0 < softcap < math.inf:
            raise ValueError(f"softcap must be a positive finite number or None, got {softcap!r}")
    return eps, _arrays.real_number(z_loss, "z_loss"), softcap


def _ce_logits(logits):
    """logits as rows (N, C) in the compute dtype, the dtype to return and logits' shape."""
    logits = np.asarray(logits)
    dtype = _arrays.result_dtype(logits.dtype, "logits")
    if logits.ndim == 0:
        raise ValueError("logits must have at least one dimension (the classes), got a scalar")
    rows = logits.astype(_arrays.compute_dtype(dtype)).reshape(math.prod(logits.shape[:-1]),
                                                                logits.shape[-1])
    return rows, dtype, logits.shape


def _ce_target(target, shape, ignore_index, work):
    """The target as (t, valid, q): integer class indices give t (N,) int64 (0 where ignored)
    and valid (N,) bool, q None; floating class probabilities give q (N, C) in the compute
    dtype, t None and every row valid."""
    target = np.asarray(target)
    batch, classes = tuple(shape[:-1]), shape[-1]
    if target.dtype.kind in "iu":
        if target.shape != batch:
            raise ValueError(f"target of class indices has shape {target.shape}, expected "
                             f"logits.shape[:-1] = {batch} (logits of shape {tuple(shape)})")
        t = target.reshape(-1)
        valid = t != ignore_index
        bad = valid & ((t < 0) | (t >= classes))
        if bad.any():
            value = t[np.flatnonzero(bad)[0]]
            raise IndexError(f"target {value} is out of bounds for {classes} classes (valid: "
                             f"0 to {classes - 1}, or ignore_index={ignore_index})")
        return np.where(valid, t, 0).astype(np.int64), valid, None
    if target.dtype.kind == "f" or _arrays.is_half(target.dtype):
        if target.shape == batch:
            raise TypeError(f"class-index targets must have an integer dtype, got "
                            f"{target.dtype}")
        if target.shape != tuple(shape):
            raise ValueError(f"target of class probabilities has shape {target.shape}, expected "
                             f"logits' shape {tuple(shape)} (class indices must be integers)")
        if ignore_index >= 0:
            raise ValueError(f"ignore_index={ignore_index} is not supported with "
                             f"class-probability targets (PyTorch allows only a negative one)")
        return None, np.ones(math.prod(batch), bool), target.astype(work).reshape(-1, classes)
    raise TypeError(f"target has unsupported dtype {target.dtype}: class indices must be "
                    f"integers, class probabilities floating point")


def _ce_class_weights(weight, shape, work, name="weight"):
    """The class weights (C,) in the compute dtype, or None."""
    if weight is None:
        return None
    w = np.asarray(weight)
    _arrays.result_dtype(w.dtype, name)                    # TypeError for complex, object, str
    if w.shape != tuple(shape[-1:]):
        raise ValueError(f"{name} has shape {w.shape}, expected (C,) = {tuple(shape[-1:])} "
                         f"for logits of shape {tuple(shape)}")
    return w.astype(work)


def _ce_rows(x, t, valid, q, w, eps, z_loss, softcap, need_grad):
    """Per row of x (N, C), in float64: the loss, the row's part of the mean's denominator
    (w[t], or 1 for probabilities; 0 when ignored) and, when need_grad, the gradient of the
    row's loss with respect to the row's logits (zero for ignored rows)."""
    n, classes = x.shape
    if n == 0:
        return np.zeros(0), np.zeros(0), np.zeros((0, classes)) if need_grad else None
    work = x.dtype
    z = x if softcap is None else softcap * np.tanh(x / softcap)
    m = np.max(z, axis=-1, keepdims=True)
    shifted = z - m
    sumexp = np.sum(np.exp(shifted), axis=-1, keepdims=True, dtype=np.float64)
    logp = shifted - np.log(sumexp).astype(work)                 # log_softmax(z), compute dtype
    lse = m[:, 0].astype(np.float64) + np.log(sumexp[:, 0])
    nlogp = -logp.astype(np.float64)
    wc = np.ones(classes) if w is None else w.astype(np.float64)

    if q is None:                        # class indices; PyTorch's terms, each only when used
        rows = np.arange(n)
        share = np.where(valid, wc[t], 0.0)                      # w[t_i]
        loss = (1 - eps) * share * nlogp[rows, t]
        r = np.zeros((n, classes)) if eps == 0 else np.tile(eps / classes * wc, (n, 1))
        r[rows, t] += (1 - eps) * share
        if eps > 0:
            loss = loss + eps / classes * np.sum(wc * nlogp, axis=-1)
    else:                                # class probabilities
        share = np.ones(n)
        r = wc * ((1 - eps) * q.astype(np.float64) + eps / classes)
        loss = np.sum(r * nlogp, axis=-1)
    if z_loss != 0:
        loss = loss + z_loss * lse ** 2
    loss = np.where(valid, loss, 0.0)
    if not need_grad:
        return loss, share, None

    p = np.exp(logp).astype(np.float64)                          # softmax(z)
    dz = p * (np.sum(r, axis=-1) + 2 * z_loss * lse)[:, None] - r
    if softcap is not None:
        # d(c tanh(x / c))/dx in the precision of the forward: z / c <= 1 there, so the factor
        # is never negative (float64 division by a c not representable in float32 could be)
        dz = dz * (1 - (z / work.type(softcap)) ** 2).astype(np.float64)
    return loss, share, np.where(valid[:, None], dz, 0.0)


def _ce_dloss(dloss, reduction, batch):
    """dloss as float64: a scalar, or for reduction 'none' also one value per row (N,)."""
    d = np.asarray(dloss)
    _arrays.result_dtype(d.dtype, "dloss")
    if d.ndim == 0:
        return d.astype(np.float64)
    if reduction != "none":
        raise ValueError(f"dloss of reduction={reduction!r} must be a scalar, got shape {d.shape}")
    if d.shape != tuple(batch):
        raise ValueError(f"dloss has shape {d.shape}, expected () or logits.shape[:-1] = "
                         f"{tuple(batch)}")
    return d.astype(np.float64).reshape(-1)


def _cross_entropy(x, shape, target, weight, ignore_index, reduction, label_smoothing, z_loss,
                   softcap, dloss, weight_name="weight"):
    """The cross-entropy of rows x (N, C) (logits of `shape`) reduced, in float64, and the
    gradient (N, C) of dloss * loss when dloss is not None."""
    eps, z_loss, softcap = _ce_options(reduction, label_smoothing, z_loss, softcap)
    ignore_index = _arrays.integer(ignore_index, "ignore_index")
    if x.shape[1] == 0 and x.shape[0] > 0:
        raise ValueError(f"logits of shape {tuple(shape)} have no classes")
    t, valid, q = _ce_target(target, shape, ignore_index, x.dtype)
    w = _ce_class_weights(weight, shape, x.dtype, weight_name)
    if dloss is not None:
        dloss = _ce_dloss(dloss, reduction, shape[:-1])
    with np.errstate(all="ignore"):          # inf and NaN propagate, a mean of nothing is NaN
        loss, share, grad = _ce_rows(x, t, valid, q, w, eps, z_loss, softcap, dloss is not None)
        if reduction == "none":
            result, scale = loss.reshape(shape[:-1]), dloss
        elif reduction == "sum":
            result, scale = np.sum(loss), dloss
        else:
            denominator = np.sum(share)
            result, scale = np.sum(loss) / denominator, None if dloss is None else (
                dloss / denominator)
        if dloss is not None:
            scale = np.broadcast_to(scale, loss.shape)[:, None]
            grad = np.where(valid[:, None], scale * grad, 0.0)    # 0 even when scale is inf
    return result, grad


def _ce_loss_result(loss, dtype):
    """The loss in the result dtype: a 0-d array when reduced, else the per-row array."""
    with np.errstate(over="ignore"):
        return np.asarray(loss, dtype=np.float64).astype(dtype)


def cross_entropy(logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = None,
                  ignore_index: int = -100, reduction: Reduction = "mean",
                  label_smoothing: float = 0.0, z_loss: float = 0.0, softcap: float | None = None,
                  return_grad: bool = False, grad_out: FloatArray | None = None
                  ) -> FloatArray | tuple[FloatArray, FloatArray]:
    """Cross-entropy of logits (..., C), class axis last, as torch.nn.functional.cross_entropy:

        z = softcap * tanh(logits / softcap)  (z = logits when softcap is None)
        lse = logsumexp(z) = m + log(sum(exp(z - m))),  m = max(z),  logp = z - lse
        class index t (integer target of shape logits.shape[:-1]; t == ignore_index: ignored,
        loss 0, not counted):
            loss_i = (1 - eps) * w[t] * (-logp[t]) + (eps / C) * sum_c w[c] * (-logp[c])
                     + z_loss * lse**2
        class probabilities q (floating target of logits' shape), q' = (1 - eps) * q + eps / C:
            loss_i = sum_c w[c] * q'[c] * (-logp[c]) + z_loss * lse**2
        eps = label_smoothing, w = weight (ones when None).
        reduction "none": loss_i (shape logits.shape[:-1]); "sum": sum_i loss_i;
        "mean": sum_i loss_i / sum_i w[t_i] over the rows not ignored (class indices), or / N
        (probabilities); a mean over no rows is NaN.

    Returns the loss (a 0-d array when reduced) in the logits' result dtype; with
    return_grad=True, (loss, dlogits) as cross_entropy_backward with dloss = 1 gives it,
    written into grad_out when given (which may be logits itself).
    """
    x, dtype, shape = _ce_logits(logits)
    loss, grad = _cross_entropy(x, shape, target, weight, ignore_index, reduction,
                                label_smoothing, z_loss, softcap, 1.0 if return_grad else None)
    loss = _ce_loss_result(loss, dtype)
    if not return_grad:
        if grad_out is not None:
            raise ValueError("grad_out is only written with return_grad=True")
        return loss
    return loss, _result(grad.reshape(shape), dtype, grad_out)


def cross_entropy_backward(logits: ArrayLike, target: ArrayLike, dloss: ArrayLike = 1.0, *,
                           weight: ArrayLike | None = None, ignore_index: int = -100,
                           reduction: Reduction = "mean", label_smoothing: float = 0.0,
                           z_loss: float = 0.0, softcap: float | None = None,
                           out: FloatArray | None = None) -> FloatArray:
    """Gradient of dloss * cross_entropy(logits, target, ...) with respect to the logits,
    with p = softmax(z) and z, lse, w, eps as in cross_entropy, per row i:

        class index t:  dz_j = s_i * (p_j * ((1 - eps) * w[t] + (eps / C) * sum(w)
                                             + 2 * z_loss * lse) - (1 - eps) * w[t] * [j == t]
                                      - (eps / C) * w[j]),   0 for ignored rows
        probabilities:  dz_j = s_i * (p_j * (sum_c w[c] * q'[c] + 2 * z_loss * lse) - w[j] * q'[j])
        dlogits = dz * (1 - (z / softcap)**2)  with softcap, else dz
        s_i = dloss / (the mean's denominator) for "mean", dloss for "sum", dloss[i] for "none"
        (dloss a scalar, or of shape logits.shape[:-1] for "none").

    Returns dlogits (logits' shape and result dtype), into out= when given.
    """
    x, dtype, shape = _ce_logits(logits)
    _, grad = _cross_entropy(x, shape, target, weight, ignore_index, reduction, label_smoothing,
                             z_loss, softcap, dloss)
    return _result(grad.reshape(shape), dtype, out)


def linear_cross_entropy(hidden: ArrayLike, weight: ArrayLike, target: ArrayLike, *,
                         bias: ArrayLike | None = None, class_weight: ArrayLike | None = None,
                         chunk_size: int | None = None, ignore_index: int = -100,
                         reduction: Reduction = "mean", label_smoothing: float = 0.0,
                         z_loss: float = 0.0, softcap: float | None = None,
                         return_grad: bool = False) -> FloatArray | LinearCrossEntropyGrads:
    """cross_entropy(hidden @ weight.T + bias, target, weight=class_weight, ...) for hidden
    (N, D), weight (C, D), bias (C,) and class weights class_weight (C,) (the other options as
    in cross_entropy). cyburn's kernel computes the logits chunk_size rows at a time; this
    oracle materializes all of them, in the compute dtype, and checks chunk_size only (None or
    an integer >= 1). hidden and weight, the matmul's inputs, set the compute and result
    dtypes; bias and class_weight are cast to them.

    With return_grad=True returns (loss, dhidden, dweight, dbias) by the chain rule from
    dlogits = cross_entropy_backward(logits, target, 1, ...), in float64:

        dhidden = dlogits @ weight,  dweight = dlogits.T @ hidden,  dbias = sum_i dlogits[i]

    dbias is None without a bias; all in the result dtype of hidden and weight.
    """
    (hidden, weight), dtype = _prepare_optional(hidden=hidden, weight=weight)
    if bias is not None:
        bias = np.asarray(bias)
        _arrays.result_dtype(bias.dtype, "bias")            # TypeError for complex, object, str
        bias = bias.astype(hidden.dtype)
    if hidden.ndim != 2:
        raise ValueError(f"hidden must have shape (N, D), got shape {hidden.shape}")
    if weight.ndim != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"weight has shape {weight.shape}, expected (C, D) with D = "
                         f"{hidden.shape[1]} for hidden of shape {hidden.shape}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias has shape {bias.shape}, expected (C,) = {weight.shape[:1]} "
                         f"for weight of shape {weight.shape}")
    if chunk_size is not None and _arrays.integer(chunk_size, "chunk_size") < 1:
        raise ValueError(f"chunk_size must be None or an integer >= 1, got {chunk_size!r}")
    logits = hidden @ weight.T
    if bias is not None:
        logits = logits + bias
    loss, grad = _cross_entropy(logits, logits.shape, target, class_weight, ignore_index,
                                reduction, label_smoothing, z_loss, softcap,
                                1.0 if return_grad else None, weight_name="class_weight")
    loss = _ce_loss_result(loss, dtype)
    if not return_grad:
        return loss
    dhidden = grad @ weight.astype(np.float64)
    dweight = grad.T @ hidden.astype(np.float64)
    dbias = None if bias is None else np.sum(grad, axis=0).astype(dtype)
    return loss, dhidden.astype(dtype), dweight.astype(dtype), dbias


# ---- activations ------------------------------------------------------------------------------
#
# Computed in float64 whatever the input (then rounded to its dtype): the float64 truth. The
# sigmoid is written so that neither it nor 1 - sigmoid cancels: with e = exp(-|v|),
# sigmoid(v) = 1 / (1 + e) for v >= 0 and e / (1 + e) below. At x = +-inf the functions and
# derivatives take their limits.

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def _activation_input(**named):
    arrays, dtype = _prepare(**named)
    for a, name in zip(arrays[1:], list(named)[1:]):
        _arrays.check_same_shape(arrays[0], a, list(named)[0], name)
    return [a.astype(np.float64) for a in arrays], dtype


def _sigmoid(v):
    """sigmoid(v) = 1 / (1 + exp(-v)), and 1 - sigmoid(v), without cancellation."""
    e = np.exp(-np.abs(v))
    big, small = 1 / (1 + e), e / (1 + e)
    return np.where(v >= 0, big, small), np.where(v >= 0, small, big)


def _normal_cdf(x):
    """Phi(x) = erfc(-x / sqrt(2)) / 2."""
    return np.asarray(0.5 * _erfc(-x / math.sqrt(2.0)), dtype=np.float64)


def _gelu_tanh_v(x):
    """v = 2u = 2 sqrt(2 / pi) (x + 0.044715 x^3), and dv/dx."""
    return (2 * _SQRT_2_OVER_PI * (x + 0.044715 * x ** 3),
            2 * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x ** 2))


def _limits(x, value, at_minus_inf, at_plus_inf):
    return np.where(x == -np.inf, at_minus_inf, np.where(x == np.inf, at_plus_inf, value))


def _times_slope(dy, slope, x):
    """dy * slope, slope = f'(x) for gelu or silu: below x = -8 (far below their derivatives'
    zeros, -0.75 and -1.28) the derivative is negative and nonzero at every finite x, so where
    it rounds to 0 there an infinite dy gives -dy (not inf * 0 = NaN, PyTorch's answer) and a
    finite dy gives 0 (with -dy's sign)."""
    underflowed = (slope == 0) & np.isfinite(x) & (x < -8)
    return np.where(underflowed, -dy * np.where(np.isinf(dy), 1.0, 0.0), dy * slope)


def _check_approximate(approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f'approximate must be "none" or "tanh", not {approximate!r}')


def relu(x: ArrayLike, *, out: FloatArray | None = None) -> FloatArray:
    """y = max(x, 0), NaN propagating."""
    (x,), dtype = _activation_input(x=x)
    return _result(np.where(x < 0, 0.0, x), dtype, out)


def relu_backward(dy: ArrayLike, x: ArrayLike, *, out: FloatArray | None = None) -> FloatArray:
    """dx = 0 where x <= 0, else dy (PyTorch's threshold_backward: a NaN x passes dy)."""
    (dy, x), dtype = _activation_input(dy=dy, x=x)
    return _result(np.where(x <= 0, 0.0, dy), dtype, out)


def gelu(x: ArrayLike, *, approximate: Approximate = "none",
         out: FloatArray | None = None) -> FloatArray:
    """approximate="none":  y = x Phi(x),  Phi(x) = erfc(-x / sqrt 2) / 2;
    approximate="tanh":  y = x (1 + tanh(u)) / 2,  u = sqrt(2 / pi) (x + 0.044715 x^3),
                         evaluated as x sigmoid(2u) (equal: 1 + tanh(u) = 2 sigmoid(2u));
    y(-inf) = 0, y(inf) = inf."""
    _check_approximate(approximate)
    (x,), dtype = _activation_input(x=x)
    with np.errstate(all="ignore"):
        if approximate == "none":
            y = x * _normal_cdf(x)
        else:
            y = x * _sigmoid(_gelu_tanh_v(x)[0])[0]
        y = _limits(x, y, 0.0, np.inf)
    return _result(y, dtype, out)


def gelu_backward(dy: ArrayLike, x: ArrayLike, *, approximate: Approximate = "none",
                  out: FloatArray | None = None) -> FloatArray:
    """approximate="none":  dx = dy (Phi(x) + x phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi);
    approximate="tanh":  dx = dy (s + x s (1 - s) v'),  s = sigmoid(v),  v = 2u as in gelu;
    the derivative is 0 at -inf and 1 at inf, and nonzero at every finite x below -8 (see
    _times_slope where it underflows)."""
    _check_approximate(approximate)
    (dy, x), dtype = _activation_input(dy=dy, x=x)
    with np.errstate(all="ignore"):
        if approximate == "none":
            d = _normal_cdf(x) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        else:
            v, dv = _gelu_tanh_v(x)
            s, complement = _sigmoid(v)
            d = s + x * s * complement * dv
        d = np.where(np.abs(x) > 1e4, x > 0, d)      # (s (1 - s) underflows long before)
        dx = _times_slope(dy, _limits(x, d, 0.0, 1.0), x)
    return _result(dx, dtype, out)


def silu(x: ArrayLike, *, out: FloatArray | None = None) -> FloatArray:
    """y = x sigmoid(x) = x / (1 + exp(-x)); y(-inf) = 0, y(inf) = inf."""
    (x,), dtype = _activation_input(x=x)
    with np.errstate(all="ignore"):
        y = _limits(x, x * _sigmoid(x)[0], 0.0, np.inf)
    return _result(y, dtype, out)


def silu_backward(dy: ArrayLike, x: ArrayLike, *, out: FloatArray | None = None) -> FloatArray:
    """dx = dy (s + x s (1 - s)),  s = sigmoid(x); the derivative is 0 at -inf, 1 at inf,
    and nonzero at every finite x below -8 (see _times_slope where it underflows)."""
    (dy, x), dtype = _activation_input(dy=dy, x=x)
    with np.errstate(all="ignore"):
        s, complement = _sigmoid(x)
        dx = _times_slope(dy, _limits(x, s + x * s * complement, 0.0, 1.0), x)
    return _result(dx, dtype, out)


swish = silu


# ---- optimizer --------------------------------------------------------------------------------

def adamw_step(param: FloatArray, grad: ArrayLike, exp_avg: FloatArray, exp_avg_sq: FloatArray,
               *, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.0, step: int) -> None:
    """One step of torch.optim.AdamW (amsgrad and maximize off), in place. With t = step
    (from 1), g = grad, m = exp_avg, v = exp_avg_sq:

        param <- param * (1 - lr * weight_decay)
        m     <- beta1 * m + (1 - beta1) * g
        v     <- beta2 * v + (1 - beta2) * g**2
        param <- param - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Computed in float64, each updated array rounded to its own dtype once."""
    for name, a in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq), ("grad", grad)):
        _arrays.check_same_shape(param, np.asarray(a), "param", name)
    if step < 1:
        raise ValueError(f"step counts from 1, got {step}")
    g = np.asarray(grad, dtype=np.float64)
    m = beta1 * exp_avg.astype(np.float64) + (1 - beta1) * g
    v = beta2 * exp_avg_sq.astype(np.float64) + (1 - beta2) * g * g
    p = param.astype(np.float64) * (1 - lr * weight_decay)
    p -= lr / (1 - beta1**step) * m / (np.sqrt(v) / math.sqrt(1 - beta2**step) + eps)
    exp_avg[...] = m
    exp_avg_sq[...] = v
    param[...] = p
