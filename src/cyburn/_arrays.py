"""Input validation, dtype resolution and the array layouts the kernels take.

The kernels reduce along axis 1 of one of two layouts (see pyx/softmax.pxi):
  rows     (rows, n)          with unit stride along n,
  columns  (outer, n, inner)  with unit stride along inner.
`kernel_views` finds, without copying, views of several same-shape arrays in one common
layout; only an array with no such view (e.g. a strided slice along the reduced axis) is copied.
"""
import math
import operator

import numpy as np
from numpy.exceptions import AxisError

FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
NATIVE = (FLOAT32, FLOAT64)


def _is_half(dtype):
    return dtype == np.float16 or dtype.name == "bfloat16"   # bfloat16: from ml_dtypes


def result_dtype(dtype, name):
    """The dtype a function returns for an input of `dtype` (NumPy's rules for ints and bools)."""
    if dtype in NATIVE or _is_half(dtype):
        return dtype
    if dtype.kind in "biu":
        return FLOAT64
    raise TypeError(f"{name} has unsupported dtype {dtype}; cyburn computes on float16, "
                    f"bfloat16, float32, float64 (bool and integer inputs become float64)")


def compute_dtype(dtype):
    """The dtype the kernels compute in: float32 for the half types, else the dtype itself."""
    return FLOAT32 if _is_half(dtype) else dtype


def as_input(x, name):
    """`x` as an ndarray, and the dtype the result will have."""
    a = x if type(x) is np.ndarray else np.asarray(x)
    return a, result_dtype(a.dtype, name)


def normalize_axis(axis, ndim):
    axis = operator.index(axis)
    if not -ndim <= axis < ndim:
        raise AxisError(axis, ndim)
    return axis % ndim


def check_same_shape(a, b, name_a, name_b):
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, "
                         f"got {name_a}.shape={a.shape} and {name_b}.shape={b.shape}")


def check_out(out, shape, dtype):
    """Validate a user's `out=` array; returns it (or None)."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, not {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def _rows_view(a, axis):
    if axis != a.ndim - 1:
        a = np.moveaxis(a, axis, -1)
    if a.strides[-1] != a.itemsize:
        return None
    try:
        return a.reshape(-1, a.shape[-1], copy=False)
    except ValueError:
        return None


def _columns_view(a, axis):
    outer = math.prod(a.shape[:axis])
    inner = math.prod(a.shape[axis + 1:])
    try:
        v = a.reshape(outer, a.shape[axis], inner, copy=False)
    except ValueError:
        return None
    return v if v.strides[2] == a.itemsize else None


def kernel_views(arrays, axis):
    """Views of same-shape, non-empty `arrays` in one kernel layout, or None if there is none."""
    for layout in (_rows_view, _columns_view):
        views = [layout(a, axis) for a in arrays]
        if all(v is not None for v in views):
            return views
    return None


def same_memory_layout(a, b):
    """True when a and b are the same elements of the same buffer (e.g. out=x)."""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.strides == b.strides)


def output_for(inputs, out, dtype, axis):
    """An array for the kernel to write, in `dtype` and a layout shared with `inputs`:
    `out` itself when possible, else a new array (the caller copies it into `out`).
    `inputs` must already be in `dtype`. Returns (target, views of inputs + [target])."""
    if out is not None and out.dtype == dtype and all(
            not np.may_share_memory(out, a) or same_memory_layout(out, a) for a in inputs):
        views = kernel_views(inputs + [out], axis)
        if views is not None:
            return out, views
    target = np.empty_like(inputs[0], dtype=dtype)
    views = kernel_views(inputs + [target], axis)
    if views is None:
        target = np.empty(inputs[0].shape, dtype=dtype)
        views = kernel_views([np.ascontiguousarray(a) for a in inputs] + [target], axis)
    return target, views


def finish(target, out, dtype):
    """The result to return: `target` in `dtype`, copied into `out` if the kernel wrote elsewhere."""
    if out is not None:
        if target is not out:
            np.copyto(out, target, casting="unsafe")
        return out
    return target if target.dtype == dtype else target.astype(dtype)
