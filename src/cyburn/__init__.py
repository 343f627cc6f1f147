"""cyburn: fast, exact CPU kernels for the non-matmul parts of a transformer, for NumPy users.

    >>> import numpy as np, cyburn as cb
    >>> cb.softmax(np.array([[0.0, 1.0]], dtype=np.float32))
    array([[0.26894143, 0.7310586 ]], dtype=float32)
"""
from importlib.metadata import PackageNotFoundError, version as _version

from . import _openmp  # first: loads the OpenMP runtime with cyburn's wait policy
from . import reference
from ._config import show_config, simd_path
from ._threads import get_num_threads, num_threads, set_num_threads
from .activations import (gelu, gelu_backward, relu, relu_backward, silu, silu_backward,
                          swish)
from .attention import masked_softmax, masked_softmax_backward
from .cross_entropy import cross_entropy, cross_entropy_backward, linear_cross_entropy
from .normalization import (batch_norm, batch_norm_backward, group_norm, group_norm_backward,
                            instance_norm, instance_norm_backward, layer_norm,
                            layer_norm_backward, rms_norm, rms_norm_backward)
from .optim import adamw_step
from .softmax import log_softmax, log_softmax_backward, softmax, softmax_backward

try:
    __version__ = _version("cyburn")
except PackageNotFoundError:      # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
    "masked_softmax", "masked_softmax_backward",
    "layer_norm", "layer_norm_backward", "rms_norm", "rms_norm_backward",
    "group_norm", "group_norm_backward", "instance_norm", "instance_norm_backward",
    "batch_norm", "batch_norm_backward",
    "cross_entropy", "cross_entropy_backward", "linear_cross_entropy",
    "relu", "relu_backward", "gelu", "gelu_backward", "silu", "silu_backward", "swish",
    "adamw_step",
    "get_num_threads", "set_num_threads", "num_threads", "show_config", "simd_path",
    "reference",
]
