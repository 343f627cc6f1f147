"""Input validation, dtype resolution and the array layout the kernels take.

The kernels take aligned C-contiguous arrays and reduce along any one axis of them
(pyx/softmax.pxi treats the array as (outer, n, inner)). Aligned F-contiguous arrays are
passed transposed, without a copy; any other strides, and misaligned data, are copied once.
"""
import functools
import operator
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.exceptions import AxisError
from numpy.typing import ArrayLike, NDArray

from ._dispatch import kernels

FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
FLOAT16 = np.dtype(np.float16)
NATIVE = (FLOAT32, FLOAT64)


def is_half(dtype: np.dtype[Any]) -> bool:
    return dtype == FLOAT16 or (dtype.kind == "V" and dtype.name == "bfloat16")  # ml_dtypes


def result_dtype(dtype: np.dtype[Any], name: str) -> np.dtype[Any]:
    """The dtype a function returns for an input of `dtype`: bool and integers give float64
    (as NumPy's true division does); non-native byte order gives the native dtype."""
    if dtype in NATIVE:
        return dtype
    if not dtype.isnative:
        dtype = dtype.newbyteorder("=")
    if dtype in NATIVE or is_half(dtype):
        return dtype
    if dtype.kind in "biu":
        return FLOAT64
    raise TypeError(f"{name} has unsupported dtype {dtype}; cyburn computes on float16, "
                    f"bfloat16, float32, float64 (bool and integer inputs become float64)")


def compute_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype the kernels compute in: float32 for the half types, else the dtype itself."""
    return dtype if dtype in NATIVE else FLOAT32


def as_input(x: ArrayLike, name: str) -> tuple[NDArray[Any], np.dtype[Any]]:
    """`x` as an ndarray, and the dtype the result will have."""
    a = x if type(x) is np.ndarray else np.asarray(x)
    return a, result_dtype(a.dtype, name)


def as_inputs(**named: ArrayLike | None) -> tuple[list[Any], Any]:
    """The named array-likes as ndarrays (None stays None), and the result dtype they promote to."""
    arrays, others = [], []
    dtype = None
    for name, a in named.items():
        if a is not None:
            if type(a) is not np.ndarray:
                a = np.asarray(a)
            if a.dtype is not dtype:        # (the usual case, arrays of one dtype, skips this)
                a_dtype = result_dtype(a.dtype, name)
                if dtype is None:
                    dtype = a_dtype
                elif a_dtype != dtype:
                    others.append(a_dtype)
        arrays.append(a)
    if others:      # all at once: float16 with bfloat16 fails whatever else is among them
        dtype = np.result_type(dtype, *others)
    return arrays, dtype


def contiguous(a: NDArray[Any], dtype: np.dtype[Any]) -> NDArray[Any]:
    """`a` as an aligned, C-contiguous array of the native `dtype`: itself when it is one."""
    if a.dtype == dtype and a.flags.c_contiguous and a.flags.aligned:
        return a
    return np.array(a, dtype=dtype, order="C")


def check_shape(a: NDArray[Any] | None, name: str, shape: tuple[int, ...],
                expected_as: str) -> None:
    """ValueError naming both shapes unless a.shape == shape (a None passes)."""
    if a is not None and a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {expected_as} = {shape}")


def check_num_groups(num_groups: Any, channels: int) -> int:
    """num_groups as an int >= 1 that divides `channels` (else TypeError / ValueError)."""
    try:
        groups = operator.index(num_groups)
    except TypeError:
        raise TypeError(f"num_groups must be an integer, not {type(num_groups).__name__}") from None
    if groups < 1 or channels % groups:
        raise ValueError(f"num_groups={groups} must be at least 1 and divide the {channels} "
                         f"channels")
    return groups


def real_number(value: Any, name: str) -> float:
    """`value` as a Python float, or TypeError naming the argument (float() alone would not)."""
    if isinstance(value, float):
        return value
    try:
        if isinstance(value, (str, bytes)) or value is None:    # (float() would parse "2")
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, not {value!r}") from None


def integer(value: Any, name: str) -> int:
    """`value` as a Python int (anything with __index__), or TypeError naming the argument."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {value!r}") from None


def check_given(**named: object) -> None:
    """TypeError naming any of the named arrays that is None (a backward function's saved
    statistics)."""
    for name, a in named.items():
        if a is None:
            raise TypeError(f"{name} is required: the statistics returned by the forward "
                            f"function with return_stats=True")


def check_scores(x: NDArray[Any], causal: object, name: str = "x") -> None:
    """ValueError unless x (the argument `name`) has a key axis, and a query axis too when
    causal."""
    if x.ndim < 1 or causal and x.ndim < 2:
        raise ValueError(f"{name} of shape {x.shape} must have a key axis"
                         + (" and a query axis (..., Tq, Tk) for causal=True" if causal else ""))


def check_mask(mask: ArrayLike, shape: tuple[int, ...]) -> NDArray[Any]:
    """`mask` as an ndarray, boolean or floating, that broadcasts to `shape` (else TypeError /
    ValueError naming both shapes)."""
    mask = mask if type(mask) is np.ndarray else np.asarray(mask)
    if mask.dtype != np.bool_ and mask.dtype.kind != "f" and not is_half(mask.dtype):
        raise TypeError(f"mask must be boolean (True = keep) or floating (added to the scores), "
                        f"not {mask.dtype}")
    if mask.ndim > len(shape) or any([m != 1 and m != n for m, n in
                                      zip(mask.shape[::-1], shape[::-1])]):
        raise ValueError(f"mask has shape {mask.shape}, which does not broadcast to the scores' "
                         f"shape {shape}")
    return mask


def normalize_axis(axis: Any, ndim: int) -> int:
    axis = integer(axis, "axis")
    if not -ndim <= axis < ndim:
        raise AxisError(axis, ndim)
    return axis % ndim


def check_same_shape(a: NDArray[Any], b: NDArray[Any], name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, "
                         f"got {name_a}.shape={a.shape} and {name_b}.shape={b.shape}")


def check_out(out: object, shape: tuple[int, ...], dtype: np.dtype[Any],
              name: str = "out") -> None:
    """Validate a user's `out=` array (not None; `name` is the argument's name)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, not {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}, expected {shape}")
    if out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")


def c_layout(arrays: Sequence[NDArray[Any]], axis: int
             ) -> tuple[Sequence[NDArray[Any]], int, bool]:
    """The kernels take aligned, C-contiguous arrays. Returns (arrays, axis, transposed): the
    arrays themselves when they are so, their transposes (same memory, reversed axes) when all
    are aligned and F-contiguous, else aligned C-contiguous copies."""
    if _all_flags(arrays, "C_CONTIGUOUS"):
        return arrays, axis, False
    if _all_flags(arrays, "F_CONTIGUOUS"):
        return [a.T for a in arrays], arrays[0].ndim - 1 - axis, True
    return [np.array(a, order="C") for a in arrays], axis, False


def _all_flags(arrays: Sequence[NDArray[Any]],
               contiguous: Literal["C_CONTIGUOUS", "F_CONTIGUOUS"]) -> bool:
    """Every array aligned and `contiguous` (written as a loop: this is on every call's path)."""
    for a in arrays:
        flags = a.flags
        if not (flags[contiguous] and flags.aligned):
            return False
    return True


def _same_elements(a: NDArray[Any], b: NDArray[Any]) -> bool:
    """True when a and b are the same elements of the same buffer (e.g. out=x)."""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.strides == b.strides)


def output_for(inputs: Sequence[NDArray[Any]], out: NDArray[Any] | None, dtype: np.dtype[Any],
               transposed: bool, out_may_be_input: bool = True,
               read_later: Sequence[NDArray[Any] | None] = ()) -> tuple[NDArray[Any], bool]:
    """The aligned C-contiguous array the kernel writes (a new one on a 64-byte boundary near
    the first input's offset in its page: kernels.empty), in the orientation of `inputs`
    (from c_layout): `out` itself when it fits and does not overlap an input (except as the
    very same elements, when `out_may_be_input`) nor any array of `read_later` (read after
    the output is written: weights, targets), else a new array.
    Returns (target, target_is_out)."""
    if out is None:
        return kernels.empty(inputs[0].shape, dtype, inputs[0]), False
    if out.dtype == dtype:
        target = out.T if transposed else out
        if (target.flags.c_contiguous and target.flags.aligned
                and all([not np.may_share_memory(target, a)
                         or out_may_be_input and (a is target or _same_elements(target, a))
                         for a in inputs])
                and not any([a is not None and np.may_share_memory(target, a)
                             for a in read_later])):
            return target, True
    return kernels.empty(inputs[0].shape, dtype, inputs[0]), False


def finish(target: NDArray[Any], target_is_out: bool, out: NDArray[Any] | None,
           dtype: np.dtype[Any], transposed: bool) -> NDArray[Any]:
    """The result to return, from the array the kernel wrote (see output_for)."""
    result = target.T if transposed else target
    if out is not None:
        if not target_is_out:
            np.copyto(out, result, casting="unsafe")
        return out
    return as_dtype(result, dtype)


def as_dtype(a: NDArray[Any], dtype: np.dtype[Any]) -> NDArray[Any]:
    """`a`, or a copy of it in `dtype` on a 64-byte boundary (kernels.empty)."""
    if a.dtype == dtype:
        return a
    copy: NDArray[Any] = kernels.empty(a.shape, dtype, a)
    np.copyto(copy, a, casting="unsafe")
    return copy


def zeros(shape: int | tuple[int, ...], dtype: "np.dtype[Any] | type[np.floating[Any]]"
          ) -> NDArray[Any]:
    """np.zeros(shape, dtype), on a 64-byte boundary (kernels.empty)."""
    a: NDArray[Any] = kernels.empty(shape, dtype)
    a.fill(0)
    return a


@functools.lru_cache(maxsize=32)
def constant(value: float, n: int, dtype: np.dtype[Any]) -> NDArray[Any]:
    """A read-only array of n copies of `value` (the default weights and biases of the
    kernels), made once per (value, n, dtype): small calls must not pay for it each time."""
    a = np.full(n, value, dtype)
    a.flags.writeable = False
    return a
