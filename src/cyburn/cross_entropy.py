"""Cross-entropy with PyTorch's options plus z-loss and softcap, fused with its gradient, and
fused with the final linear layer (the LM head) so that the (N, C) logits never exist whole.

Per row, with z = softcap * tanh(logits / softcap) (or the logits), lse = logsumexp(z),
class weights w and label smoothing e:
    class index t:          loss = (1 - e) w_t (lse - z_t) + e / C * sum_c w_c (lse - z_c)
    probabilities q:        loss = sum_c w_c ((1 - e) q_c + e / C) (lse - z_c)
    plus z_loss * lse**2 on every row that is not ignored.
"mean" divides the sum by the summed weight of the non-ignored class targets (PyTorch), or
by the number of rows for probability targets. Probability targets have no class index to
ignore: an ignore_index >= 0 with them is a ValueError (a negative one matches nothing), as in
PyTorch.
"""
import math
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import NDArray

from . import _arrays, _threads
from ._dispatch import kernels
from ._typing import ArrayLike, FloatArray, LinearCrossEntropyGrads, Reduction

REDUCTIONS = ("mean", "sum", "none")
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1      # (np.iinfo's are slow properties)
INT64 = np.dtype(np.int64)
FLOAT64 = np.dtype(np.float64)
CHUNK_BYTES = 80 << 20      # linear_cross_entropy: logits per chunk, when chunk_size is None
CLASS_BLOCK = 2048          # linear_cross_entropy: dweight is accumulated in blocks of classes


class _Problem:
    """The validated targets and options of one cross-entropy call on logits of `shape`,
    seen as N rows of C classes."""

    target: NDArray[np.int64] | None         # class indices, (N,)
    probabilities: NDArray[Any] | None      # or class probabilities, (N, C)

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype[Any], target: ArrayLike,
                 weight: NDArray[Any] | None, ignore_index: int, reduction: str,
                 label_smoothing: float, z_loss: float, softcap: float | None,
                 weight_name: str = "weight") -> None:
        if len(shape) == 0:
            raise ValueError("logits must have at least one dimension: the class axis, last")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.smoothing = _arrays.real_number(label_smoothing, "label_smoothing")
        if not 0.0 <= self.smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
        self.softcap = 0.0 if softcap is None else _arrays.real_number(softcap, "softcap")
        if softcap is not None and not 0 < self.softcap < np.inf:
            raise ValueError(f"softcap must be positive and finite, got {softcap}")
        self.z_loss = _arrays.real_number(z_loss, "z_loss")
        if not math.isfinite(self.z_loss):
            raise ValueError(f"z_loss must be finite, got {z_loss}")
        self.ignore_index = _arrays.integer(ignore_index, "ignore_index")
        if not INT64_MIN <= self.ignore_index <= INT64_MAX:
            raise ValueError(f"ignore_index must fit in int64, got {ignore_index}")
        self.reduction = reduction
        self.shape, self.dtype = shape, dtype
        self.work = work = _arrays.compute_dtype(dtype)
        self.C = C = shape[-1]
        self.N = N = math.prod(shape[:-1])
        if C == 0 and N > 0:
            raise ValueError(f"logits of shape {shape} have no classes")
        _arrays.check_shape(weight, weight_name, (C,), "(C,)")
        self.weight = (_arrays.constant(1, C, work) if weight is None
                       else _arrays.contiguous(weight, work))
        target = np.asarray(target)
        if target.dtype.kind not in "iuf" and not _arrays.is_half(target.dtype):
            raise TypeError(f"target has unsupported dtype {target.dtype}: class indices must "
                            f"be integers, class probabilities floating point")
        if target.shape == shape and (target.dtype.kind == "f" or _arrays.is_half(target.dtype)):
            if self.ignore_index >= 0:      # PyTorch: a negative one can match no class
                raise ValueError(f"ignore_index={self.ignore_index} is not supported with "
                                 f"class-probability targets (only a negative ignore_index, "
                                 f"which matches no class, as in PyTorch)")
            self.target = None
            self.probabilities = _arrays.contiguous(target, work).reshape(N, C)
        elif target.shape == shape[:-1]:
            if target.dtype.kind not in "iu":
                raise TypeError(f"class-index targets must have an integer dtype, got "
                                f"{target.dtype}")
            if target.dtype.kind == "u" and target.size and target.max() > INT64_MAX:
                raise IndexError(f"target {target.max()} is out of range for {C} classes")
            self.target = _arrays.contiguous(target, INT64).reshape(N)
            self.probabilities = None
        else:
            raise ValueError(f"target has shape {target.shape}, expected {shape[:-1]} "
                             f"(class indices) or {shape} (probabilities) for logits "
                             f"of shape {shape}")
        self.denominator = self._denominator(weight is not None)

    def _denominator(self, weighted: bool) -> float:
        """What "mean" divides by; raises IndexError for a class index out of range."""
        if self.target is None:
            return float(self.N)
        if self.N == 0:
            return 0.0
        total: float
        bad, total = kernels.cross_entropy_check_targets(
            self.target, self.weight.astype(np.float64) if weighted else None,
            self.ignore_index, self.C)
        if bad >= 0:
            raise IndexError(f"target {self.target[bad]} is out of range for {self.C} classes "
                             f"(row {bad}; ignore_index is {self.ignore_index})")
        return total

    def grad_scale(self, dloss: ArrayLike) -> tuple[float, NDArray[Any] | None]:
        """(scale, row_scale) of the gradient rows, for the upstream gradient dloss."""
        dloss = np.asarray(dloss)
        if dloss.dtype.kind not in "biuf" and not _arrays.is_half(dloss.dtype):
            raise TypeError(f"dloss must be real numbers, not {dloss!r}")
        dloss = dloss.astype(np.float64)
        if self.reduction == "none" and dloss.shape == self.shape[:-1] != ():
            return 1.0, _arrays.contiguous(dloss, FLOAT64).reshape(self.N)
        if dloss.shape != ():
            expected = f"() or {self.shape[:-1]}" if self.reduction == "none" else "()"
            raise ValueError(f"dloss has shape {dloss.shape}, expected {expected} for "
                             f"reduction={self.reduction!r}")
        if self.reduction == "mean":
            return _divide(float(dloss), self.denominator), None
        return float(dloss), None

    def run(self, logits: NDArray[Any], grad: NDArray[Any] | None, losses: NDArray[np.float64],
            rows: slice = slice(None), scale: float = 1.0,
            row_scale: NDArray[Any] | None = None) -> None:
        """Per-row losses of the (n, C) `logits`, which are the rows `rows` of the problem, into
        `losses` (float64) and, with `grad` (which may be `logits`), their scaled gradient."""
        kernels.cross_entropy_loss_and_grad(
            logits, None if self.target is None else self.target[rows],
            None if self.probabilities is None else self.probabilities[rows], self.weight,
            self.ignore_index, self.smoothing, self.z_loss, self.softcap, scale, row_scale,
            losses, grad, _threads.current())

    def reduce(self, losses: NDArray[np.float64]) -> NDArray[Any]:
        """The loss to return, from the per-row losses."""
        if self.reduction == "none":
            return _arrays.as_dtype(losses.reshape(self.shape[:-1]), self.dtype)
        total = float(np.add.reduce(losses))     # losses.sum(), without its wrapper
        if self.reduction == "mean":
            total = _divide(total, self.denominator)
        return np.asarray(total, dtype=self.dtype)


def _prepare(logits: ArrayLike, target: ArrayLike, weight: ArrayLike | None, *options: Any
             ) -> tuple[_Problem, NDArray[Any]]:
    """(problem, the logits as aligned C-contiguous rows in the compute dtype). The logits
    alone set the result dtype; class weights are cast to it."""
    logits, dtype = _arrays.as_input(logits, "logits")
    weight = None if weight is None else _arrays.as_input(weight, "weight")[0]
    p = _Problem(logits.shape, dtype, target, weight, *options)
    return p, _arrays.contiguous(logits, p.work)


def _divide(a: float, b: float) -> float:
    """a / b with IEEE results for b == 0 (a mean over no targets is NaN, as in PyTorch)."""
    if b:
        return a / b
    return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1, b)


def _gradient_target(p: _Problem, logits: NDArray[Any], out: FloatArray | None, name: str
                     ) -> tuple[NDArray[Any], bool]:
    """The array the kernel writes the gradient into (`out`, the argument `name`, when it fits:
    it may be the logits themselves, but not the probability targets) and whether it is
    `out`."""
    if out is not None:
        _arrays.check_out(out, p.shape, p.dtype, name)
    return _arrays.output_for((logits,), out, p.work, False, read_later=(p.probabilities,))


def _usual_loss(logits: ArrayLike, target: ArrayLike, reduction: str) -> FloatArray | None:
    """The fast lane of the usual call, cross_entropy(logits, target) of (N, C) logits the
    kernel takes as they are, int64 class indices in range, "mean" or "sum" and the other
    options at their defaults: the loss, computed as the general path computes it. None for
    every other call, which the general path then answers (or rejects)."""
    if (type(logits) is not np.ndarray or type(target) is not np.ndarray
            or logits.ndim != 2 or target.dtype != INT64 or target.shape != logits.shape[:1]
            or reduction == "none" or reduction not in REDUCTIONS):
        return None
    dtype = logits.dtype
    if (dtype not in _arrays.NATIVE or not logits.flags.c_contiguous or not logits.flags.aligned
            or not target.flags.c_contiguous or not target.flags.aligned):
        return None
    N, C = logits.shape
    if N == 0 or C == 0:
        return None
    bad, count = kernels.cross_entropy_check_targets(target, None, -100, C)
    if bad >= 0:
        return None
    losses = np.zeros(N, np.float64)
    kernels.cross_entropy_loss_and_grad(logits, target, None, _arrays.constant(1, C, dtype), -100,
                                        0.0, 0.0, 0.0, 1.0, None, losses, None,
                                        _threads.current())
    total = float(np.add.reduce(losses))
    return np.asarray(_divide(total, count) if reduction == "mean" else total, dtype=dtype)


@overload
def cross_entropy(logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
                  ignore_index: int = ..., reduction: Reduction = ...,
                  label_smoothing: float = ..., z_loss: float = ..., softcap: float | None = ...,
                  return_grad: Literal[False] = ..., grad_out: None = ...) -> FloatArray: ...
@overload
def cross_entropy(logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
                  ignore_index: int = ..., reduction: Reduction = ...,
                  label_smoothing: float = ..., z_loss: float = ..., softcap: float | None = ...,
                  return_grad: Literal[True], grad_out: FloatArray | None = ...
                  ) -> tuple[FloatArray, FloatArray]: ...
@overload
def cross_entropy(logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = ...,
                  ignore_index: int = ..., reduction: Reduction = ...,
                  label_smoothing: float = ..., z_loss: float = ..., softcap: float | None = ...,
                  return_grad: bool = ..., grad_out: FloatArray | None = ...
                  ) -> FloatArray | tuple[FloatArray, FloatArray]: ...
def cross_entropy(logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = None,
                  ignore_index: int = -100, reduction: Reduction = "mean",
                  label_smoothing: float = 0.0, z_loss: float = 0.0, softcap: float | None = None,
                  return_grad: bool = False, grad_out: FloatArray | None = None
                  ) -> FloatArray | tuple[FloatArray, FloatArray]:
    """Cross-entropy of logits (..., C) against class indices (logits.shape[:-1]) or
    probabilities (logits.shape); see the module docstring for the formulas.
    With return_grad, returns (loss, dlogits) from one fused pass: dlogits is the gradient of
    the returned loss (of their sum for reduction="none"), written into grad_out when given,
    which may be logits itself."""
    if (weight is None and ignore_index == -100 and label_smoothing == 0.0 and z_loss == 0.0
            and softcap is None and not return_grad and grad_out is None):
        loss = _usual_loss(logits, target, reduction)
        if loss is not None:
            return loss
    if grad_out is not None and not return_grad:
        raise ValueError("grad_out is only written with return_grad=True")
    p, logits = _prepare(logits, target, weight, ignore_index, reduction, label_smoothing,
                         z_loss, softcap)
    losses = _arrays.zeros(p.N, np.float64)
    if not return_grad:
        if p.N:
            p.run(logits.reshape(p.N, p.C), None, losses)
        return p.reduce(losses)
    grad, grad_is_out = _gradient_target(p, logits, grad_out, "grad_out")
    if p.N:
        p.run(logits.reshape(p.N, p.C), grad.reshape(p.N, p.C), losses,
              scale=p.grad_scale(1.0)[0])
    return p.reduce(losses), _arrays.finish(grad, grad_is_out, grad_out, p.dtype, False)


def cross_entropy_backward(logits: ArrayLike, target: ArrayLike, dloss: ArrayLike = 1.0, *,
                           weight: ArrayLike | None = None, ignore_index: int = -100,
                           reduction: Reduction = "mean", label_smoothing: float = 0.0,
                           z_loss: float = 0.0, softcap: float | None = None,
                           out: FloatArray | None = None) -> FloatArray:
    """dlogits = dloss * d(cross_entropy)/d(logits), recomputed from the logits: with
    p = softmax(z) and q' the smoothed target,
        dz_j = s * (p_j * (sum_c w_c q'_c + 2 z_loss lse) - w_j q'_j),
    s = dloss / denominator ("mean"), dloss ("sum") or dloss per row ("none"), and softcap's
    chain rule dlogits = dz * (1 - (z / softcap)**2). Ignored rows get 0."""
    p, logits = _prepare(logits, target, weight, ignore_index, reduction, label_smoothing,
                         z_loss, softcap)
    scale, row_scale = p.grad_scale(dloss)
    grad, grad_is_out = _gradient_target(p, logits, out, "out")
    if p.N:
        p.run(logits.reshape(p.N, p.C), grad.reshape(p.N, p.C), np.empty(p.N),
              scale=scale, row_scale=row_scale)
    return _arrays.finish(grad, grad_is_out, out, p.dtype, False)


@overload
def linear_cross_entropy(hidden: ArrayLike, weight: ArrayLike, target: ArrayLike, *,
                         bias: ArrayLike | None = ..., class_weight: ArrayLike | None = ...,
                         chunk_size: int | None = ..., ignore_index: int = ...,
                         reduction: Reduction = ..., label_smoothing: float = ...,
                         z_loss: float = ..., softcap: float | None = ...,
                         return_grad: Literal[False] = ...) -> FloatArray: ...
@overload
def linear_cross_entropy(hidden: ArrayLike, weight: ArrayLike, target: ArrayLike, *,
                         bias: ArrayLike | None = ..., class_weight: ArrayLike | None = ...,
                         chunk_size: int | None = ..., ignore_index: int = ...,
                         reduction: Reduction = ..., label_smoothing: float = ...,
                         z_loss: float = ..., softcap: float | None = ...,
                         return_grad: Literal[True]) -> LinearCrossEntropyGrads: ...
@overload
def linear_cross_entropy(hidden: ArrayLike, weight: ArrayLike, target: ArrayLike, *,
                         bias: ArrayLike | None = ..., class_weight: ArrayLike | None = ...,
                         chunk_size: int | None = ..., ignore_index: int = ...,
                         reduction: Reduction = ..., label_smoothing: float = ...,
                         z_loss: float = ..., softcap: float | None = ...,
                         return_grad: bool = ...) -> FloatArray | LinearCrossEntropyGrads: ...
def linear_cross_entropy(hidden: ArrayLike, weight: ArrayLike, target: ArrayLike, *,
                         bias: ArrayLike | None = None, class_weight: ArrayLike | None = None,
                         chunk_size: int | None = None, ignore_index: int = -100,
                         reduction: Reduction = "mean", label_smoothing: float = 0.0,
                         z_loss: float = 0.0, softcap: float | None = None,
                         return_grad: bool = False) -> FloatArray | LinearCrossEntropyGrads:
    """cross_entropy(hidden @ weight.T + bias, target, weight=class_weight, ...) for hidden
    (N, D), weight (C, D), bias and class_weight (C,), computed chunk_size rows at a time (by
    default in equal chunks of at most 80 MiB of logits): the logits of a chunk go through
    NumPy's matmul into one reused buffer, the fused kernel turns them into losses and, in
    place, their gradient, which is multiplied back:
        dhidden = dlogits @ weight,  dweight = dlogits.T @ hidden,  dbias = dlogits.T @ ones.
    dweight and dbias are accumulated alike: each chunk's part is one matmul in the compute
    dtype, added to the running sum (in the compute dtype) in chunk order.
    hidden and weight, the matmul's inputs, set the dtype of the computation and of the
    results; bias and class_weight are cast to it (a float64 bias does not make a float32
    head compute in float64).
    Returns loss, or (loss, dhidden, dweight, dbias) with return_grad (dbias None without bias)."""
    (hidden, weight), dtype = _arrays.as_inputs(hidden=hidden, weight=weight)
    bias = None if bias is None else _arrays.as_input(bias, "bias")[0]
    class_weight = (None if class_weight is None
                    else _arrays.as_input(class_weight, "class_weight")[0])
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden must be (N, D) and weight (C, D), got hidden.shape="
                         f"{hidden.shape} and weight.shape={weight.shape}")
    (N, D), C = hidden.shape, weight.shape[0]
    if C == 0:
        raise ValueError(f"weight of shape {weight.shape} has no classes (rows)")
    _arrays.check_shape(bias, "bias", (C,), "(C,) = weight.shape[:1]")
    p = _Problem((N, C), dtype, target, class_weight, ignore_index, reduction, label_smoothing,
                 z_loss, softcap, weight_name="class_weight")
    hidden, weight = _arrays.contiguous(hidden, p.work), _arrays.contiguous(weight, p.work)
    bias = None if bias is None else _arrays.contiguous(bias, p.work)
    if chunk_size is None:              # equal chunks, each within CHUNK_BYTES of logits
        chunks = -(-N // max(1, CHUNK_BYTES // max(1, C * p.work.itemsize)))
        chunk_size = -(-N // max(1, chunks))
    else:
        chunk_size = _arrays.integer(chunk_size, "chunk_size")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    chunk_size = max(1, min(chunk_size, N))
    losses = _arrays.zeros(N, np.float64)
    scale = p.grad_scale(1.0)[0] if return_grad else 1.0
    if return_grad:
        dhidden = kernels.empty((N, D), p.work)
        dweight = _arrays.zeros((C, D), p.work) if N == 0 else kernels.empty((C, D), p.work)
        block = np.empty((min(C, CLASS_BLOCK), D), p.work)
        if bias is not None:
            dbias = _arrays.zeros(C, p.work) if N == 0 else kernels.empty(C, p.work)
            ones, bias_part = np.ones(chunk_size, p.work), np.empty(C, p.work)
    buffer = kernels.empty((chunk_size, C), p.work)
    for start in range(0, N, chunk_size):
        rows = slice(start, min(N, start + chunk_size))
        logits = buffer[:rows.stop - start]
        np.matmul(hidden[rows], weight.T, out=logits)
        if bias is not None:
            logits += bias
        p.run(logits, logits if return_grad else None, losses[rows], rows, scale)
        if not return_grad:
            continue
        # logits now hold their gradient; the first chunk writes dweight and dbias themselves
        np.matmul(logits, weight, out=dhidden[rows])
        for c0 in range(0, C, CLASS_BLOCK):
            c1 = min(C, c0 + CLASS_BLOCK)
            into = dweight[c0:c1] if start == 0 else block[:c1 - c0]
            np.matmul(logits[:, c0:c1].T, hidden[rows], out=into)
            if start:
                dweight[c0:c1] += into
        if bias is not None:
            into = dbias if start == 0 else bias_part
            np.matmul(ones[:len(logits)], logits, out=into)
            if start:
                dbias += into
    loss = p.reduce(losses)
    if not return_grad:
        return loss
    return loss, _arrays.as_dtype(dhidden, dtype), _arrays.as_dtype(dweight, dtype), (
        None if bias is None else _arrays.as_dtype(dbias, dtype))
