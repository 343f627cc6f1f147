"""Pure-NumPy versions of cyburn's functions: the correctness oracle for the tests.

Written to be read, not to be fast. Same signatures and dtype rules as the kernels: half
types are computed in float32 and returned in their own dtype, bool and integer inputs
become float64.
"""
import math
import operator
import warnings

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


def layer_norm(x, weight=None, bias=None, *, eps=1e-5, residual=None, return_stats=False,
               out=None):
    """Layer normalization over the last axis, after an optional residual add:

        h = x + residual  (or x)
        mean = mean(h),  var = mean((h - mean)**2)  (biased),  rstd = 1 / sqrt(var + eps)
        y = (h - mean) * rstd * weight + bias

    Returns y; (y, h) with `residual`; with `return_stats` mean and rstd (shape x.shape[:-1],
    in the compute dtype) are appended.
    """
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


def layer_norm_backward(dy, x, weight, mean, rstd):
    """Gradient of layer_norm (x is the normalized input h), statistics depending on x:

        xhat = (x - mean) * rstd,  g = dy * weight  (dy without weight)
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))        (means along the last axis)
        dweight = sum(dy * xhat),  dbias = sum(dy)               (over all but the last axis)

    Returns (dx, dweight, dbias); dweight and dbias are None when weight is None.
    """
    (dy, x, weight), dtype = _prepare_optional(dy=dy, x=x, weight=weight)
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
    dweight = np.sum(dy * xhat, axis=axes)
    dbias = np.sum(dy, axis=axes)
    return dx, dweight.astype(dtype), dbias.astype(dtype)


def rms_norm(x, weight=None, *, eps=1e-6, residual=None, return_stats=False, out=None):
    """RMS normalization over the last axis, after an optional residual add:

        h = x + residual  (or x),   rstd = 1 / sqrt(mean(h**2) + eps),   y = h * rstd * weight

    Returns y; (y, h) with `residual`; with `return_stats` rstd (shape x.shape[:-1], in the
    compute dtype) is appended.
    """
    (x, weight, residual), dtype = _prepare_optional(x=x, weight=weight, residual=residual)
    h = _rows_input(x, residual)
    _check_shape(weight, "weight", h.shape[-1:], h.shape)
    rstd = 1 / np.sqrt(_row_mean(h ** 2) + eps)
    y = _affine(h * rstd, weight, None)
    stats = (rstd[..., 0],) if return_stats else None
    return _norm_result(y, dtype, out, None if residual is None else h, stats)


def rms_norm_backward(dy, x, weight, rstd):
    """Gradient of rms_norm (x is the normalized input h), rstd depending on x:

        xhat = x * rstd,  g = dy * weight  (dy without weight)
        dx = rstd * (g - xhat * mean(g * xhat))                  (mean along the last axis)
        dweight = sum(dy * xhat)                                 (over all but the last axis)

    Returns (dx, dweight); dweight is None when weight is None.
    """
    (dy, x, weight), dtype = _prepare_optional(dy=dy, x=x, weight=weight)
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
    normalization (groups None). A copy for batch normalization, so its rows are contiguous."""
    n, c, s = a.shape
    if groups is None:
        return a.transpose(1, 0, 2).reshape(c, n * s)
    return a.reshape(n, groups, c // max(groups, 1) * s)


def _from_sets(rows, shape, groups):
    """The inverse of _to_sets, back to (N, C, S)."""
    n, c, s = shape
    if groups is None:
        return rows.reshape(c, n, s).transpose(1, 0, 2)
    return rows.reshape(n, c, s)


def _num_groups(num_groups, channels):
    try:
        groups = operator.index(num_groups)
    except TypeError:
        raise TypeError(f"num_groups must be an integer, got {num_groups!r}") from None
    if groups < 1 or channels % groups:
        raise ValueError(f"num_groups={groups} must be >= 1 and divide the {channels} channels")
    return groups


def _sets_forward(x, weight, bias, eps, groups, return_stats):
    """y = (x - mean) * rstd * weight + bias with mean, rstd over each set (see _to_sets;
    groups "channels": one group per channel)."""
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
    dbias summed over all axes but the channel axis."""
    (dy, x, weight), dtype = _prepare_optional(dy=dy, x=x, weight=weight)
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
    xhat = _from_sets((rows - mean) * rstd, x3.shape, groups)
    g = dy3 if weight is None else dy3 * weight[:, None]
    g_rows, xhat_rows = _to_sets(g, groups), _to_sets(xhat, groups)
    dx_rows = rstd * (g_rows - _row_mean(g_rows) - xhat_rows * _row_mean(g_rows * xhat_rows))
    dx = _from_sets(dx_rows, x3.shape, groups).reshape(x.shape)
    return _weight_grads(dx, dy3, xhat, weight, dtype, axes=(0, 2))


def group_norm(x, num_groups, weight=None, bias=None, *, eps=1e-5, return_stats=False):
    """Group normalization of x (N, C, *spatial): the C channels form num_groups groups of
    C // num_groups consecutive channels; for each sample n and group:

        mean = mean(x[n, group]),  var = mean((x[n, group] - mean)**2)  (biased),
        rstd = 1 / sqrt(var + eps),  y = (x - mean) * rstd * weight[c] + bias[c]

    Returns y, or (y, mean, rstd) with `return_stats` (statistics (N, num_groups), in the
    compute dtype).
    """
    x_shape = np.shape(x)
    groups = _num_groups(num_groups, x_shape[1] if len(x_shape) >= 2 else 0)
    return _sets_forward(x, weight, bias, eps, groups, return_stats)


def group_norm_backward(dy, x, num_groups, weight, mean, rstd):
    """Gradient of group_norm, statistics depending on x; per (sample, group) set:

        xhat = (x - mean) * rstd,  g = dy * weight[c]  (dy without weight)
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))        (means over the set)
        dweight[c] = sum(dy * xhat),  dbias[c] = sum(dy)         (over N and spatial)

    Returns (dx, dweight, dbias); dweight and dbias are None when weight is None.
    """
    x_shape = np.shape(x)
    groups = _num_groups(num_groups, x_shape[1] if len(x_shape) >= 2 else 0)
    return _sets_backward(dy, x, weight, mean, rstd, groups)


def instance_norm(x, weight=None, bias=None, *, eps=1e-5, return_stats=False):
    """Instance normalization of x (N, C, *spatial): group_norm with one group per channel,

        mean, var (biased) over x[n, c],  y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c]

    Returns y, or (y, mean, rstd) with `return_stats` (statistics (N, C), compute dtype).
    """
    return _sets_forward(x, weight, bias, eps, "channels", return_stats)


def instance_norm_backward(dy, x, weight, mean, rstd):
    """Gradient of instance_norm: group_norm_backward with one group per channel."""
    return _sets_backward(dy, x, weight, mean, rstd, "channels")


def batch_norm(x, weight=None, bias=None, *, running_mean=None, running_var=None, training=True,
               momentum=0.1, eps=1e-5, return_stats=False):
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
    if not isinstance(r, np.ndarray) or not (r.dtype.kind == "f" or _arrays._is_half(r.dtype)):
        raise TypeError(f"{name} must be a float numpy.ndarray, got "
                        f"{getattr(r, 'dtype', type(r).__name__)}")
    _check_shape(r, name, (channels,), x_shape)
    if training and not r.flags.writeable:
        raise ValueError(f"{name} is read-only; batch_norm updates it in place")


def batch_norm_backward(dy, x, weight, mean, rstd):
    """Gradient of batch_norm in training mode (statistics depending on x); per channel c:

        xhat = (x - mean) * rstd,  g = dy * weight[c]  (dy without weight)
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))        (means over x[:, c])
        dweight[c] = sum(dy * xhat),  dbias[c] = sum(dy)

    Returns (dx, dweight, dbias); dweight and dbias are None when weight is None.
    """
    return _sets_backward(dy, x, weight, mean, rstd, None)
