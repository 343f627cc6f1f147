"""AdamW over a model's parameter dict, one cb.adamw_step per parameter."""
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

import cyburn as cb
from cyburn._typing import FloatArray
from cyburn.optim import _hyperparameters


class AdamW:
    """torch.optim.AdamW (amsgrad and maximize off) for a dict of NumPy arrays, updated in
    place by step(grads), each parameter by one fused cyburn.adamw_step (see it for the
    formula). `lr` may be changed between steps (a learning-rate schedule)."""

    def __init__(self, params: Mapping[str, FloatArray], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        if not hasattr(params, "items"):
            raise TypeError(f"params must be a dict of arrays (e.g. model.params), not "
                            f"{type(params).__name__}")
        beta1, beta2 = betas
        _hyperparameters(lr, beta1, beta2, eps, weight_decay, 1)     # fail now, not at step 1
        self.params = params
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.eps, self.weight_decay = eps, weight_decay
        self.exp_avg = {name: np.zeros_like(p, order="C") for name, p in params.items()}
        self.exp_avg_sq = {name: np.zeros_like(p, order="C") for name, p in params.items()}
        self.steps = 0

    def step(self, grads: Mapping[str, ArrayLike]) -> None:
        """Update every parameter in place with its gradient grads[name]."""
        missing = [name for name in self.params if name not in grads]
        if missing:
            raise KeyError(f"grads has no {missing[0]!r}")
        for name, param in self.params.items():       # all checked before any is updated
            grad = np.asarray(grads[name])
            if grad.shape != param.shape or grad.dtype != param.dtype:
                raise ValueError(f"grads[{name!r}] is {grad.dtype} {grad.shape}; its parameter "
                                 f"is {param.dtype} {param.shape}")
        self.steps += 1
        for name, param in self.params.items():
            cb.adamw_step(param, grads[name], self.exp_avg[name], self.exp_avg_sq[name],
                          lr=self.lr, beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                          weight_decay=self.weight_decay, step=self.steps)
