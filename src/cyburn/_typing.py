"""The types of cyburn's signatures, named once.

Array inputs are NumPy's `ArrayLike`; results are floating-point arrays, in the dtype of the
inputs (float16, float32 or float64; bfloat16 from ml_dtypes too, which NumPy's types cannot
name) or float64 for bool and integer inputs.
"""
from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["ArrayLike", "FloatArray", "Approximate", "Reduction", "LinearCrossEntropyGrads"]

FloatArray: TypeAlias = NDArray[np.floating[Any]]
Approximate: TypeAlias = Literal["none", "tanh"]         # gelu's: erf or GPT-2's tanh form
Reduction: TypeAlias = Literal["mean", "sum", "none"]    # cross-entropy's, as PyTorch's
# linear_cross_entropy(..., return_grad=True): loss, dhidden, dweight, dbias (None without bias)
LinearCrossEntropyGrads: TypeAlias = tuple[FloatArray, FloatArray, FloatArray, FloatArray | None]
