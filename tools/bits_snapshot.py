"""Every bit of cyburn's results on a fixed set of inputs: save them before a refactor, compare
after it.

    python tools/bits_snapshot.py --save before.npz       # on the build before the change
    python tools/bits_snapshot.py --compare before.npz    # on the build after it

Calls every public kernel function (forward and backward) and the kernel module's memory
probes on seeded inputs: float32 and float64, odd and even sizes, every axis of a 3-d array,
F-ordered and strided inputs, out= (a new array, the input itself), residual, weights, masks,
ignore_index, label smoothing, z-loss, softcap, return_stats, and sizes that start a thread
team; each under 1 and 3 threads. --compare prints every result whose bytes differ (NaN
payloads included) and exits 1 if any does, or if a result is missing on either side. A
refactor that claims to change nothing must print "identical".
"""
import argparse
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import cyburn as cb
from cyburn._dispatch import kernels

F32, F64 = np.float32, np.float64
DTYPES = (F32, F64)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any,
            special: bool = False) -> np.ndarray:
    """N(0, 2) data; with `special` a few NaN, +-inf and large values among it."""
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    if special and x.size >= 8:
        flat = x.reshape(-1)
        flat[[1, x.size // 3, x.size // 2, -2]] = [np.nan, np.inf, -np.inf, 1e4]
    return x


def _f_order(a: np.ndarray) -> np.ndarray:
    return np.asfortranarray(a)


def _strided(a: np.ndarray) -> np.ndarray:
    """The same values, every other element of a larger buffer along the last axis."""
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


# ---- the cases: (name, call) with call() -> a result, or a tuple of results ----------------

Case = tuple[str, Callable[[], Any]]


def softmax_cases(rng: np.random.Generator) -> Iterator[Case]:
    shapes_axes = [((4, 64), -1), ((7, 33), -1), ((7, 33), 0), ((3, 5, 17), 0),
                   ((3, 5, 17), 1), ((3, 5, 17), 2), ((1,), 0), ((2049,), 0),
                   ((64, 3000), 0), ((300, 200), -1), ((40, 1100), 0), ((2, 50257), -1)]
    for dtype in DTYPES:
        for shape, axis in shapes_axes:
            tag = f"{np.dtype(dtype).name}{shape}axis{axis}"
            x = _normal(rng, shape, dtype, special=shape == (7, 33))
            dy = _normal(rng, shape, dtype)
            for name in ("softmax", "log_softmax"):
                f = getattr(cb, name)
                yield f"{name}/{tag}", lambda f=f, x=x, axis=axis: f(x, axis)
                backward = getattr(cb, name + "_backward")
                y = f(x, axis)
                yield (f"{name}_backward/{tag}",
                       lambda b=backward, dy=dy, y=y, axis=axis: b(dy, y, axis))
        x = _normal(rng, (6, 10), dtype)
        dy = _normal(rng, (6, 10), dtype)
        tag = np.dtype(dtype).name
        yield f"softmax/out/{tag}", lambda x=x: cb.softmax(x, out=np.empty_like(x))
        yield f"softmax/inplace/{tag}", lambda x=x: cb.softmax((c := x.copy()), out=c)
        yield f"log_softmax/inplace/{tag}", lambda x=x: cb.log_softmax((c := x.copy()), out=c)
        yield f"softmax/forder/{tag}", lambda x=x: cb.softmax(_f_order(x), axis=0)
        yield f"softmax/strided/{tag}", lambda x=x: cb.softmax(_strided(x))
        yield f"softmax_backward/forder/{tag}", lambda x=x, dy=dy: cb.softmax_backward(
            _f_order(dy), _f_order(cb.softmax(x)), 1)
        yield f"softmax_backward/out/{tag}", lambda x=x, dy=dy: cb.softmax_backward(
            dy, cb.softmax(x), out=np.empty_like(x))
        yield f"log_softmax_backward/strided/{tag}", lambda x=x, dy=dy: cb.log_softmax_backward(
            _strided(dy), cb.log_softmax(x))
    x16 = _normal(rng, (5, 20), np.float16)
    yield "softmax/float16", lambda: cb.softmax(x16)
    yield "softmax/int", lambda: cb.softmax(np.arange(12).reshape(3, 4))


def attention_cases(rng: np.random.Generator) -> Iterator[Case]:
    for dtype in DTYPES:
        tag = np.dtype(dtype).name
        for shape in ((1, 2, 16, 16), (2, 3, 7, 9), (2, 9, 7), (3, 80, 80), (2, 4, 128, 128)):
            x = _normal(rng, shape, dtype, special=shape == (2, 3, 7, 9))
            dy = _normal(rng, shape, dtype)
            for causal in (False, True):
                for scale in (1.0, 0.125):
                    key = f"{tag}{shape}causal{causal}scale{scale}"
                    yield (f"masked_softmax/{key}",
                           lambda x=x, c=causal, s=scale: cb.masked_softmax(x, scale=s, causal=c))
                    y = cb.masked_softmax(x, scale=scale, causal=causal)
                    yield (f"masked_softmax_backward/{key}",
                           lambda dy=dy, y=y, s=scale: cb.masked_softmax_backward(dy, y, scale=s))
            keep = rng.random((1,) * (len(shape) - 2) + shape[-2:]) > 0.3
            add = np.where(rng.random(shape[-2:]) > 0.3, 0.0, -np.inf).astype(dtype)
            add_row = _normal(rng, shape[-1:], dtype)
            yield (f"masked_softmax/keep/{tag}{shape}",
                   lambda x=x, m=keep: cb.masked_softmax(x, mask=m, causal=True))
            yield (f"masked_softmax/add/{tag}{shape}",
                   lambda x=x, m=add: cb.masked_softmax(x, mask=m, scale=0.5))
            yield (f"masked_softmax/addrow/{tag}{shape}",
                   lambda x=x, m=add_row: cb.masked_softmax(x, mask=m))
            yield (f"masked_softmax/inplace/{tag}{shape}",
                   lambda x=x: cb.masked_softmax((c := x.copy()), causal=True, out=c))
            yield (f"masked_softmax_backward/inplace/{tag}{shape}",
                   lambda x=x, dy=dy: cb.masked_softmax_backward(
                       (c := dy.copy()), cb.masked_softmax(x), out=c))
        all_hidden = np.zeros((3, 5), bool)
        all_hidden[1] = True
        x = _normal(rng, (2, 3, 5), dtype)
        yield f"masked_softmax/hidden/{tag}", lambda x=x: cb.masked_softmax(x, mask=all_hidden)


def norm_cases(rng: np.random.Generator) -> Iterator[Case]:
    for dtype in DTYPES:
        tag = np.dtype(dtype).name
        for shape in ((4, 64), (7, 33), (3, 5, 17), (1, 1), (512, 768), (3, 1)):
            key = f"{tag}{shape}"
            n = shape[-1]
            x = (_normal(rng, shape, dtype) + 3).astype(dtype)
            r = _normal(rng, shape, dtype)
            w = _normal(rng, (n,), dtype)
            b = _normal(rng, (n,), dtype)
            dy = _normal(rng, shape, dtype)
            yield f"layer_norm/{key}", lambda x=x, w=w, b=b: cb.layer_norm(x, w, b,
                                                                           return_stats=True)
            yield f"layer_norm/plain/{key}", lambda x=x: cb.layer_norm(x, eps=1e-3)
            yield f"layer_norm/residual/{key}", lambda x=x, r=r, w=w, b=b: cb.layer_norm(
                x, w, b, residual=r, return_stats=True)
            yield f"layer_norm/out/{key}", lambda x=x, w=w: cb.layer_norm(
                (c := x.copy()), w, out=c)
            yield f"rms_norm/{key}", lambda x=x, w=w: cb.rms_norm(x, w, return_stats=True)
            yield f"rms_norm/residual/{key}", lambda x=x, r=r: cb.rms_norm(
                x, residual=r, return_stats=True)
            _, mean, rstd = cb.layer_norm(x, w, b, return_stats=True)
            yield (f"layer_norm_backward/{key}",
                   lambda dy=dy, x=x, w=w, m=mean, s=rstd: cb.layer_norm_backward(dy, x, w, m, s))
            yield (f"layer_norm_backward/noweight/{key}",
                   lambda dy=dy, x=x, m=mean, s=rstd: cb.layer_norm_backward(dy, x, None, m, s))
            _, rstd = cb.rms_norm(x, w, return_stats=True)
            yield (f"rms_norm_backward/{key}",
                   lambda dy=dy, x=x, w=w, s=rstd: cb.rms_norm_backward(dy, x, w, s))
            yield (f"rms_norm_backward/noweight/{key}",
                   lambda dy=dy, x=x, s=rstd: cb.rms_norm_backward(dy, x, None, s))
        const = np.full((4, 32), 2.5, dtype)
        yield f"layer_norm/constant/{tag}", lambda c=const: cb.layer_norm(c, return_stats=True)
        for shape, groups in (((4, 6, 5, 3), 3), ((300, 15), 5), ((2, 8, 1000), 4),
                              ((3, 8320), 130), ((9, 14), 7), ((2, 4, 9), 1), ((64, 32, 64), 8),
                              ((5, 256), 32), ((7, 1024), 32), ((3, 96), 2), ((2, 4096), 16),
                              ((5, 200), 25)):
            key = f"{tag}{shape}g{groups}"
            C = shape[1]
            x = (_normal(rng, shape, dtype) + 1).astype(dtype)
            w = _normal(rng, (C,), dtype)
            b = _normal(rng, (C,), dtype)
            dy = _normal(rng, shape, dtype)
            yield f"group_norm/{key}", lambda x=x, g=groups, w=w, b=b: cb.group_norm(
                x, g, w, b, return_stats=True)
            y, mean, rstd = cb.group_norm(x, groups, w, b, return_stats=True)
            yield (f"group_norm_backward/{key}",
                   lambda dy=dy, x=x, g=groups, w=w, m=mean, s=rstd: cb.group_norm_backward(
                       dy, x, g, w, m, s))
            yield (f"group_norm_backward/noweight/{key}",
                   lambda dy=dy, x=x, g=groups, m=mean, s=rstd: cb.group_norm_backward(
                       dy, x, g, None, m, s))
        special = _normal(rng, (6, 1024), dtype, special=True)
        yield (f"group_norm/special/{tag}",
               lambda x=special: cb.group_norm(x, 32, return_stats=True))
        for shape in ((2, 3, 17), (4, 5, 6, 7), (2, 64, 1024)):
            key = f"{tag}{shape}"
            C = shape[1]
            x = _normal(rng, shape, dtype)
            w = _normal(rng, (C,), dtype)
            b = _normal(rng, (C,), dtype)
            dy = _normal(rng, shape, dtype)
            yield f"instance_norm/{key}", lambda x=x, w=w, b=b: cb.instance_norm(
                x, w, b, return_stats=True)
            _, mean, rstd = cb.instance_norm(x, w, b, return_stats=True)
            yield (f"instance_norm_backward/{key}",
                   lambda dy=dy, x=x, w=w, m=mean, s=rstd: cb.instance_norm_backward(
                       dy, x, w, m, s))
        for shape in ((8, 5), (4, 3, 300), (16, 6, 7), (3, 2, 2), (256, 128), (32, 16, 300)):
            key = f"{tag}{shape}"
            C = shape[1]
            x = (_normal(rng, shape, dtype) + 2).astype(dtype)
            w = _normal(rng, (C,), dtype)
            b = _normal(rng, (C,), dtype)
            dy = _normal(rng, shape, dtype)
            run_mean0 = rng.standard_normal(C)
            run_var0 = rng.random(C) + 0.5

            def training(x=x, w=w, b=b, m0=run_mean0, v0=run_var0):
                rm, rv = m0.copy(), v0.copy()
                y, mean, rstd = cb.batch_norm(x, w, b, running_mean=rm, running_var=rv,
                                              momentum=0.2, return_stats=True)
                return y, mean, rstd, rm, rv

            yield f"batch_norm/train/{key}", training
            yield f"batch_norm/eval/{key}", lambda x=x, w=w, b=b, m0=run_mean0, v0=run_var0: (
                cb.batch_norm(x, w, b, running_mean=m0, running_var=v0, training=False,
                              return_stats=True))
            yield f"batch_norm/plain/{key}", lambda x=x: cb.batch_norm(x)
            _, mean, rstd = cb.batch_norm(x, w, b, return_stats=True)
            yield (f"batch_norm_backward/{key}",
                   lambda dy=dy, x=x, w=w, m=mean, s=rstd: cb.batch_norm_backward(dy, x, w, m, s))
            yield (f"batch_norm_backward/noweight/{key}",
                   lambda dy=dy, x=x, m=mean, s=rstd: cb.batch_norm_backward(dy, x, None, m, s))
    x16 = _normal(rng, (6, 40), np.float16)
    yield "layer_norm/float16", lambda: cb.layer_norm(x16, return_stats=True)


def cross_entropy_cases(rng: np.random.Generator) -> Iterator[Case]:
    for dtype in DTYPES:
        tag = np.dtype(dtype).name
        for N, C in ((4, 10), (7, 33), (300, 1000), (1, 1), (3, 50257)):
            key = f"{tag}({N},{C})"
            logits = _normal(rng, (N, C), dtype, special=(N, C) == (7, 33))
            target = rng.integers(0, C, N)
            ignored = target.copy()
            ignored[::3] = 1
            w = (rng.random(C) + 0.5).astype(dtype)
            q = rng.random((N, C)).astype(dtype)
            q /= q.sum(-1, keepdims=True)
            dloss_rows = rng.standard_normal(N)
            yield f"cross_entropy/{key}", lambda x=logits, t=target: cb.cross_entropy(x, t)
            yield f"cross_entropy/sum/{key}", lambda x=logits, t=target: cb.cross_entropy(
                x, t, reduction="sum")
            yield f"cross_entropy/none/{key}", lambda x=logits, t=target: cb.cross_entropy(
                x, t, reduction="none")
            yield (f"cross_entropy/options/{key}",
                   lambda x=logits, t=ignored, w=w: cb.cross_entropy(
                       x, t, weight=w, ignore_index=1, label_smoothing=0.1, z_loss=1e-3,
                       return_grad=True))
            yield (f"cross_entropy/softcap/{key}",
                   lambda x=logits, t=target: cb.cross_entropy(x, t, softcap=5.0,
                                                               return_grad=True))
            yield (f"cross_entropy/probabilities/{key}",
                   lambda x=logits, q=q, w=w: cb.cross_entropy(x, q, weight=w,
                                                               label_smoothing=0.05,
                                                               return_grad=True))
            yield (f"cross_entropy/grad_out/{key}",
                   lambda x=logits, t=target: cb.cross_entropy(
                       (c := x.copy()), t, return_grad=True, grad_out=c))
            yield (f"cross_entropy_backward/{key}",
                   lambda x=logits, t=target: cb.cross_entropy_backward(x, t, 0.5))
            yield (f"cross_entropy_backward/rows/{key}",
                   lambda x=logits, t=ignored, d=dloss_rows, w=w: cb.cross_entropy_backward(
                       x, t, d, weight=w, ignore_index=1, reduction="none", z_loss=1e-2,
                       softcap=3.0, out=np.empty_like(x)))
        x3 = _normal(rng, (2, 3, 11), dtype)
        t3 = rng.integers(0, 11, (2, 3))
        yield f"cross_entropy/3d/{tag}", lambda: cb.cross_entropy(x3, t3, return_grad=True)
        hidden = _normal(rng, (9, 16), dtype)
        weight = _normal(rng, (33, 16), dtype)
        bias = _normal(rng, (33,), dtype)
        target = rng.integers(0, 33, 9)
        target[4] = -100
        yield (f"linear_cross_entropy/{tag}",
               lambda: cb.linear_cross_entropy(hidden, weight, target, bias=bias, chunk_size=4,
                                               label_smoothing=0.1, return_grad=True))
        yield (f"linear_cross_entropy/plain/{tag}",
               lambda: cb.linear_cross_entropy(hidden, weight, target))


def activation_cases(rng: np.random.Generator) -> Iterator[Case]:
    forwards = {"relu": cb.relu, "gelu": cb.gelu,
                "gelu_tanh": lambda x, **k: cb.gelu(x, approximate="tanh", **k), "silu": cb.silu}
    backwards = {"relu": cb.relu_backward, "gelu": cb.gelu_backward,
                 "gelu_tanh": lambda dy, x, **k: cb.gelu_backward(dy, x, approximate="tanh", **k),
                 "silu": cb.silu_backward}
    for dtype in DTYPES:
        tag = np.dtype(dtype).name
        for shape in ((4, 64), (1001,), (3, 5, 7), (300, 300), (1,)):
            x = _normal(rng, shape, dtype, special=True) * 4
            dy = _normal(rng, shape, dtype, special=shape == (1001,))
            for name, f in forwards.items():
                yield f"{name}/{tag}{shape}", lambda f=f, x=x: f(x)
                yield f"{name}/inplace/{tag}{shape}", lambda f=f, x=x: f((c := x.copy()), out=c)
                b = backwards[name]
                yield f"{name}_backward/{tag}{shape}", lambda b=b, dy=dy, x=x: b(dy, x)
                yield (f"{name}_backward/out_dy/{tag}{shape}",
                       lambda b=b, dy=dy, x=x: b((c := dy.copy()), x, out=c))
        x = _normal(rng, (9, 13), dtype)
        yield f"gelu/forder/{tag}", lambda x=x: cb.gelu(_f_order(x))
        yield f"silu/strided/{tag}", lambda x=x: cb.silu(_strided(x))
        yield f"relu_backward/strided/{tag}", lambda x=x: cb.relu_backward(_strided(x), x)
    x = np.linspace(-12, 12, 4099).astype(F32)
    for kind in ("TANH", "ERF"):
        yield f"vmath/{kind}", lambda kind=kind: _kernel_vmath(kind, x)


def _kernel_vmath(kind: str, x: np.ndarray) -> np.ndarray:
    y = np.empty_like(x)
    kernels.activation_forward(x, y, int(getattr(kernels.Activation, kind)), cb.get_num_threads())
    return y


def optim_cases(rng: np.random.Generator) -> Iterator[Case]:
    for dtype in DTYPES:
        tag = np.dtype(dtype).name
        for shape in ((4, 64), (1001,), (300, 300)):
            state = [_normal(rng, shape, dtype) for _ in range(3)]
            state[2] = np.abs(state[2])
            grads = [_normal(rng, shape, dtype) for _ in range(3)]

            def steps(state=state, grads=grads):
                param, m, v = (a.copy() for a in state)
                for t, g in enumerate(grads, 1):
                    cb.adamw_step(param, g, m, v, lr=1e-2, weight_decay=0.1, step=t)
                return param, m, v

            yield f"adamw_step/{tag}{shape}", steps


def probe_cases(rng: np.random.Generator) -> Iterator[Case]:
    for dtype in DTYPES:
        tag = np.dtype(dtype).name
        for n in (1, 1001, 100000):
            a, b, c, d = (_normal(rng, (n,), dtype) for _ in range(4))

            def probes(a=a, b=b, c=c, d=d):
                threads = cb.get_num_threads()
                words = np.asarray(kernels.read_probe(a.view(np.uint32), threads))
                scaled, triad = np.empty_like(a), np.empty_like(a)
                kernels.scale_probe(a, scaled, 2.5, False, threads)
                kernels.triad_probe(a, b, triad, 0.5, True, threads)
                a2, c2, d2 = a.copy(), c.copy(), d.copy()
                kernels.read4_write3_probe(a2, b, c2, d2, threads)
                return words, scaled, triad, a2, c2, d2

            yield f"probes/{tag}({n})", probes


FAMILIES = (softmax_cases, attention_cases, norm_cases, cross_entropy_cases, activation_cases,
            optim_cases, probe_cases)
THREADS = (1, 3)


def snapshot() -> dict[str, np.ndarray]:
    """Every result, keyed "threads/case[/i]" (i: the index in a tuple of results)."""
    results: dict[str, np.ndarray] = {}
    for threads in THREADS:
        for family in FAMILIES:
            for name, call in family(np.random.default_rng(2024)):
                key = f"t{threads}/{name}"
                if key in results or f"{key}/0" in results:
                    raise KeyError(f"two cases named {name}")
                with cb.num_threads(threads):
                    result = call()
                parts = result if isinstance(result, tuple) else (result,)
                for i, part in enumerate(parts):
                    if part is None:
                        continue
                    results[f"{key}/{i}" if isinstance(result, tuple) else key] = np.asarray(part)
    return results


def differences(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> list[str]:
    """What differs between two snapshots: missing results, shapes, dtypes, bytes."""
    found = [f"only before: {k}" for k in sorted(set(before) - set(after))]
    found += [f"only after: {k}" for k in sorted(set(after) - set(before))]
    for key in sorted(set(before) & set(after)):
        a, b = before[key], after[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            found.append(f"{key}: {a.dtype}{a.shape} -> {b.dtype}{b.shape}")
        elif a.tobytes() != b.tobytes():
            bits = np.frombuffer(a.tobytes(), np.uint8) != np.frombuffer(b.tobytes(), np.uint8)
            found.append(f"{key}: {np.count_nonzero(bits)} bytes of {a.nbytes} differ")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--save", metavar="NPZ", help="write every result to this file")
    action.add_argument("--compare", metavar="NPZ", help="compare every result with this file")
    args = parser.parse_args(argv)
    results = snapshot()
    if args.save:
        np.savez_compressed(args.save, **results)
        print(f"saved {len(results)} results ({cb.simd_path()}) to {args.save}")
        return 0
    with np.load(args.compare) as saved:
        before = {k: saved[k] for k in saved.files}
    found = differences(before, results)
    for line in found:
        print(line)
    print(f"{len(results)} results ({cb.simd_path()}): "
          + (f"{len(found)} differences" if found else "identical"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
