"""adamw_step: one fused, threaded AdamW update of one parameter, in place."""
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import _arrays, _threads
from ._dispatch import kernels
from ._typing import ArrayLike, FloatArray


def _state_array(a: object, name: str) -> NDArray[Any]:
    """`a`, an array the step updates in place: an ndarray, writeable, aligned, C-contiguous."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray (it is updated in place), "
                        f"not {type(a).__name__}")
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only; adamw_step updates it in place")
    if not (a.flags.c_contiguous and a.flags.aligned):
        raise ValueError(f"{name} must be an aligned, C-contiguous array (adamw_step updates "
                         f"it in place): use np.ascontiguousarray when creating it")
    return a


def _hyperparameters(lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
                     step: int) -> tuple[float, float, float, float, float, int]:
    """The hyperparameters as Python numbers, in the ranges torch.optim.AdamW accepts."""
    lr, beta1, beta2, eps, weight_decay = (
        _arrays.real_number(value, name) for value, name in
        ((lr, "lr"), (beta1, "beta1"), (beta2, "beta2"), (eps, "eps"),
         (weight_decay, "weight_decay")))
    step = _arrays.integer(step, "step")
    for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    for name, value in (("beta1", beta1), ("beta2", beta2)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if step < 1:
        raise ValueError(f"step counts from 1, got {step}")
    return lr, beta1, beta2, eps, weight_decay, step


def adamw_step(param: FloatArray, grad: ArrayLike, exp_avg: FloatArray, exp_avg_sq: FloatArray,
               *, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.0, step: int) -> None:
    """One step of torch.optim.AdamW (amsgrad and maximize off) on one parameter, in place.

    With t = step (counting from 1), g = grad, m = exp_avg, v = exp_avg_sq:

        param <- param * (1 - lr * weight_decay)
        m     <- beta1 * m + (1 - beta1) * g
        v     <- beta2 * v + (1 - beta2) * g**2
        param <- param - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    `param`, `exp_avg` and `exp_avg_sq` are updated: they must be writeable, aligned,
    C-contiguous ndarrays. All four share one shape and one float dtype (float32 or float64);
    no two may overlap. One pass over memory, on cyburn's threads.
    """
    lr, beta1, beta2, eps, weight_decay, step = _hyperparameters(
        lr, beta1, beta2, eps, weight_decay, step)
    param = _state_array(param, "param")
    exp_avg = _state_array(exp_avg, "exp_avg")
    exp_avg_sq = _state_array(exp_avg_sq, "exp_avg_sq")
    grad = grad if type(grad) is np.ndarray else np.asarray(grad)
    named = {"param": param, "grad": grad, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    if param.dtype not in _arrays.NATIVE:
        raise TypeError(f"param has dtype {param.dtype}; adamw_step takes float32 or float64")
    for name, a in named.items():
        if a.dtype != param.dtype:
            raise TypeError(f"{name} has dtype {a.dtype}, expected param's dtype {param.dtype}")
        _arrays.check_same_shape(param, a, "param", name)
    names = list(named)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if np.may_share_memory(named[first], named[second]):
                raise ValueError(f"{first} and {second} overlap in memory; adamw_step needs "
                                 f"four separate arrays")
    if param.size == 0:
        return None
    grad = _arrays.contiguous(grad, param.dtype)
    kernels.adamw_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
                       step, _threads.current())
    return None
