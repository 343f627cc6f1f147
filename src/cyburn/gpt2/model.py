"""GPT-2 in NumPy: the matrix products are NumPy's matmul (BLAS), everything else a cyburn kernel.

Shapes: B sequences of T tokens, N = B * T rows, C = n_embd features, H heads of D = C / H
features, V tokens in the vocabulary. One block (GPT-2 normalizes before each sub-layer):

    a   = layer_norm(h)                             ln_1
    q, k, v = split(a @ W_attn + b_attn)            c_attn, (N, 3C) -> three (B, H, T, D)
    p   = masked_softmax(q @ k^T, scale=1/sqrt(D), causal=True)
    y   = merge_heads(p @ v) @ W_proj + b_proj      attn.c_proj
    h   = h + y
    m   = layer_norm(h)                             ln_2
    f   = gelu_tanh(m @ W_fc + b_fc)                mlp.c_fc
    h   = h + f @ W_mproj + b_mproj                 mlp.c_proj

with h = wte[idx] + wpe[positions] entering the first block, and the logits
layer_norm(h) @ wte^T after the last (ln_f, then the LM head tied to wte). Each residual add
is fused into the layer norm that follows it (cb.layer_norm(..., residual=h) returns the
normalized rows and the sum). The loss is cb.linear_cross_entropy, which computes the logits
a few rows at a time and returns the gradients of its input and of wte directly.

The backward pass walks the blocks in reverse with the activations the forward saved, in
the order of the formulas above: for y = x @ W + b, dW = x^T dy, db = sum of dy over rows,
dx = dy W^T; the attention's dp = dy_heads v^T, dv = p^T dy_heads,
ds = masked_softmax_backward(dp, p, scale), dq = ds k, dk = ds^T q; a residual stream's
gradient is the sum of what flows back through the layer norm and around it.
"""
import dataclasses
import math
import numbers
import operator
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

import cyburn as cb
from cyburn._dispatch import kernels
from cyburn._typing import FloatArray

IGNORE_INDEX = -100
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """The hyperparameters of a GPT-2 (the defaults are GPT-2 small, 124M parameters), named
    as in Hugging Face's GPT2Config."""
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"GPT2Config.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")
        if not self.layer_norm_epsilon > 0:
            raise ValueError(f"layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon}")

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """{name: shape} of every parameter, with the names and layouts of Hugging Face's
        GPT2LMHeadModel (Conv1D weights stored input by output, so y = x @ W + b)."""
        V, P, C = self.vocab_size, self.n_positions, self.n_embd
        shapes: dict[str, tuple[int, ...]] = {"transformer.wte.weight": (V, C),
                                              "transformer.wpe.weight": (P, C)}
        for i in range(self.n_layer):
            block = f"transformer.h.{i}."
            for name, shape in (("ln_1.weight", (C,)), ("ln_1.bias", (C,)),
                                ("attn.c_attn.weight", (C, 3 * C)), ("attn.c_attn.bias", (3 * C,)),
                                ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
                                ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
                                ("mlp.c_fc.weight", (C, 4 * C)), ("mlp.c_fc.bias", (4 * C,)),
                                ("mlp.c_proj.weight", (4 * C, C)), ("mlp.c_proj.bias", (C,))):
                shapes[block + name] = shape
        shapes["transformer.ln_f.weight"] = (C,)
        shapes["transformer.ln_f.bias"] = (C,)
        return shapes


class _Block:
    """The parameters of block i, looked up in the model's dict at each pass (a user may
    replace an array in `params`)."""

    ln1_w: FloatArray
    ln1_b: FloatArray
    attn_w: FloatArray
    attn_b: FloatArray
    proj_w: FloatArray
    proj_b: FloatArray
    ln2_w: FloatArray
    ln2_b: FloatArray
    fc_w: FloatArray
    fc_b: FloatArray
    mproj_w: FloatArray
    mproj_b: FloatArray

    def __init__(self, params: Mapping[str, FloatArray], i: int) -> None:
        prefix = f"transformer.h.{i}."
        self.names = {field: prefix + name for field, name in (
            ("ln1_w", "ln_1.weight"), ("ln1_b", "ln_1.bias"),
            ("attn_w", "attn.c_attn.weight"), ("attn_b", "attn.c_attn.bias"),
            ("proj_w", "attn.c_proj.weight"), ("proj_b", "attn.c_proj.bias"),
            ("ln2_w", "ln_2.weight"), ("ln2_b", "ln_2.bias"),
            ("fc_w", "mlp.c_fc.weight"), ("fc_b", "mlp.c_fc.bias"),
            ("mproj_w", "mlp.c_proj.weight"), ("mproj_b", "mlp.c_proj.bias"))}
        for field, name in self.names.items():
            setattr(self, field, params[name])


class _KVCache:
    """Keys and values of every layer for up to `length` positions, (B, H, length, D) each."""

    def __init__(self, config: GPT2Config, batch: int, length: int, dtype: np.dtype[Any]
                 ) -> None:
        shape = (batch, config.n_head, length, config.n_embd // config.n_head)
        self.keys = [np.empty(shape, dtype) for _ in range(config.n_layer)]
        self.values = [np.empty(shape, dtype) for _ in range(config.n_layer)]


class GPT2:
    """A GPT-2 whose parameters are NumPy arrays in `params` (Hugging Face names, see
    GPT2Config.parameter_shapes), all of one dtype, float32 or float64."""

    def __init__(self, config: GPT2Config, dtype: DTypeLike = np.float32, seed: int | None = 0
                 ) -> None:
        """GPT-2's initialisation: weights N(0, 0.02), the residual projections (c_proj)
        N(0, 0.02 / sqrt(2 n_layer)), biases 0, layer-norm weights 1; from numpy's
        default_rng(seed)."""
        _check_config(config)
        dtype = _float_dtype(dtype, "dtype")
        rng = np.random.default_rng(seed)
        params: dict[str, FloatArray] = {}
        for name, shape in config.parameter_shapes().items():
            if name.endswith(".bias"):
                params[name] = np.zeros(shape, dtype)
            elif ".ln_" in name:
                params[name] = np.ones(shape, dtype)
            else:
                residual = name.endswith("c_proj.weight")
                params[name] = rng.standard_normal(shape, dtype=dtype)
                params[name] *= 0.02 / math.sqrt(2 * config.n_layer) if residual else 0.02
        self._adopt(config, params)

    def _adopt(self, config: GPT2Config, params: dict[str, FloatArray]) -> None:
        _check_config(config)
        self.config = config
        self.params = params
        self.dtype = params["transformer.wte.weight"].dtype

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, ArrayLike], config: GPT2Config) -> "GPT2":
        """A model holding copies of the arrays of `state_dict` (name -> array, e.g. a
        Hugging Face GPT2LMHeadModel's weights as NumPy arrays), in their float dtype (float32
        or float64, one for all). Keys may also come without the "transformer." prefix, as in
        the published GPT-2 checkpoint; keys the model does not use (lm_head.weight, the
        attention-mask buffers) are ignored. A missing or mis-shaped key is a ValueError
        naming it."""
        return cls._from_arrays(state_dict, config, copy=True)

    @classmethod
    def from_safetensors(cls, path: str | os.PathLike[str], config: GPT2Config) -> "GPT2":
        """A model from a .safetensors checkpoint (read with the `safetensors` package's
        NumPy loader: pip install safetensors), such as GPT-2's published model.safetensors."""
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise ImportError("GPT2.from_safetensors needs the safetensors package: "
                              "pip install safetensors") from None
        return cls._from_arrays(load_file(str(path)), config, copy=False)

    @classmethod
    def _from_arrays(cls, state_dict: Mapping[str, ArrayLike], config: GPT2Config, copy: bool
                     ) -> "GPT2":
        if not isinstance(config, GPT2Config):
            raise TypeError(f"config must be a GPT2Config, not {type(config).__name__}")
        params, dtype = {}, None
        for name, shape in config.parameter_shapes().items():
            short = name.removeprefix("transformer.")
            if name in state_dict:
                array = state_dict[name]
            elif short in state_dict:
                array = state_dict[short]
            else:
                raise ValueError(f"the state dict has no {name!r} (nor {short!r})")
            array = np.asarray(array)
            if array.shape != shape:
                raise ValueError(f"{name!r} has shape {array.shape}, expected {shape} for {config}")
            if dtype is None:
                dtype = _float_dtype(array.dtype, name)
            elif array.dtype != dtype:
                raise ValueError(f"{name!r} has dtype {array.dtype}, but the parameters before it "
                                 f"have {dtype}: convert the state dict to one float dtype")
            params[name] = (np.array(array, order="C") if copy or not array.flags.writeable
                            else np.ascontiguousarray(array))
        model = cls.__new__(cls)
        model._adopt(config, params)
        return model

    # ---- inputs ------------------------------------------------------------------------------

    def _tokens(self, idx: ArrayLike, name: str = "idx", start: int = 0) -> NDArray[np.int64]:
        """idx as an int64 (B, T) array of token ids that fit after `start` positions."""
        idx = np.asarray(idx)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer token ids, not {idx.dtype}")
        if idx.ndim != 2:
            raise ValueError(f"{name} must have shape (B, T), got {idx.shape}")
        if start + idx.shape[1] > self.config.n_positions:
            raise ValueError(f"{start + idx.shape[1]} positions exceed n_positions="
                             f"{self.config.n_positions}")
        if idx.size:
            bad = (idx < 0) | (idx >= self.config.vocab_size)
            if bad.any():
                raise IndexError(f"{name} holds token id {idx[bad].flat[0]}, out of range for "
                                 f"vocab_size={self.config.vocab_size}")
        return idx.astype(np.int64, copy=False)

    def _targets(self, targets: ArrayLike, shape: tuple[int, ...]) -> NDArray[np.int64]:
        targets = np.asarray(targets)
        if targets.dtype.kind not in "iu":
            raise TypeError(f"targets must hold integer token ids, not {targets.dtype}")
        if targets.shape != shape:
            raise ValueError(f"targets has shape {targets.shape}, expected idx's {shape}")
        bad = ((targets < 0) | (targets >= self.config.vocab_size)) & (targets != IGNORE_INDEX)
        if bad.any():
            raise IndexError(f"targets holds token id {targets[bad].flat[0]}, out of range for "
                             f"vocab_size={self.config.vocab_size} (and not {IGNORE_INDEX})")
        return targets.reshape(-1).astype(np.int64, copy=False)

    # ---- forward -----------------------------------------------------------------------------

    def _hidden(self, idx: NDArray[np.int64], saved: list[tuple[FloatArray, ...]] | None = None,
                cache: _KVCache | None = None, start: int = 0) -> FloatArray:
        """The last layer norm's output, (N, C), for tokens idx at positions start.. (see the
        module docstring). `saved`: a list that receives what the backward pass needs;
        `cache`: a _KVCache holding the keys and values of positions 0..start-1, to which
        this call adds idx's."""
        config, params = self.config, self.params
        B, T = idx.shape
        C, eps = config.n_embd, config.layer_norm_epsilon
        scale = 1.0 / math.sqrt(C // config.n_head)
        h = params["transformer.wte.weight"][idx.reshape(-1)]        # (N, C), a copy
        h.reshape(B, T, C)[...] += params["transformer.wpe.weight"][start:start + T]
        branch = None               # what the previous sub-layer adds to the residual stream h
        for i in range(config.n_layer):
            p = _Block(params, i)
            if branch is None:
                a, mean1, rstd1 = cb.layer_norm(h, p.ln1_w, p.ln1_b, eps=eps, return_stats=True)
            else:
                a, h, mean1, rstd1 = cb.layer_norm(branch, p.ln1_w, p.ln1_b, eps=eps,
                                                   residual=h, return_stats=True)
            qkv = _matmul(a, p.attn_w)
            qkv += p.attn_b
            q, k, v = _split_heads(qkv, B, T, config.n_head)
            if cache is not None:
                cache.keys[i][:, :, start:start + T] = k
                cache.values[i][:, :, start:start + T] = v
                k = cache.keys[i][:, :, :start + T]
                v = cache.values[i][:, :, :start + T]
            att = _matmul(q, k.swapaxes(-1, -2))
            att = cb.masked_softmax(att, scale=scale, causal=True, out=att)
            y = _merge_heads(_matmul(att, v))
            branch = _matmul(y, p.proj_w)
            branch += p.proj_b
            m, h_mid, mean2, rstd2 = cb.layer_norm(branch, p.ln2_w, p.ln2_b, eps=eps,
                                                   residual=h, return_stats=True)
            pre = _matmul(m, p.fc_w)
            pre += p.fc_b
            f = cb.gelu(pre, approximate="tanh")
            if saved is not None:
                saved.append((h, mean1, rstd1, a, qkv, att, y, h_mid, mean2, rstd2, m, pre, f))
            branch = _matmul(f, p.mproj_w)
            branch += p.mproj_b
            h = h_mid
        assert branch is not None                   # (n_layer >= 1)
        out, h, mean, rstd = cb.layer_norm(branch, params["transformer.ln_f.weight"],
                                           params["transformer.ln_f.bias"], eps=eps,
                                           residual=h, return_stats=True)
        if saved is not None:
            saved.append((h, mean, rstd))
        return out

    def forward(self, idx: ArrayLike) -> FloatArray:
        """The logits (B, T, V) of the next token after each prefix of idx (B, T)."""
        idx = self._tokens(idx)
        hidden = self._hidden(idx)
        return _matmul(hidden, self.params["transformer.wte.weight"].T).reshape(
            *idx.shape, self.config.vocab_size)

    # ---- training ----------------------------------------------------------------------------

    def loss_and_grads(self, idx: ArrayLike, targets: ArrayLike
                       ) -> tuple[float, dict[str, FloatArray]]:
        """(loss, grads): the mean cross-entropy of the next tokens `targets` (B, T) after
        each prefix of idx (targets equal to -100 are ignored), and its gradient for every
        parameter, in a dict keyed like `params` (wte's includes the tied LM head's)."""
        idx = self._tokens(idx)
        targets = self._targets(targets, idx.shape)
        config, params = self.config, self.params
        B, T = idx.shape
        saved: list[tuple[FloatArray, ...]] = []
        hidden = self._hidden(idx, saved)
        wte = params["transformer.wte.weight"]
        loss, dhidden, dwte, _ = cb.linear_cross_entropy(hidden, wte, targets,
                                                         ignore_index=IGNORE_INDEX,
                                                         return_grad=True)
        grads: dict[str, FloatArray] = {}
        h, mean, rstd = saved.pop()
        dh, grads["transformer.ln_f.weight"], grads["transformer.ln_f.bias"] = (
            cb.layer_norm_backward(dhidden, h, params["transformer.ln_f.weight"], mean, rstd))
        for i in reversed(range(config.n_layer)):
            dh = self._block_backward(dh, _Block(params, i), saved.pop(), grads, B, T)
        np.add.at(dwte, idx.reshape(-1), dh)
        grads["transformer.wte.weight"] = dwte
        dwpe = np.zeros_like(params["transformer.wpe.weight"])
        dwpe[:T] = dh.reshape(B, T, config.n_embd).sum(axis=0)
        grads["transformer.wpe.weight"] = dwpe
        return float(loss), {name: grads[name] for name in params}

    def _block_backward(self, dh: FloatArray, p: _Block, saved: tuple[FloatArray, ...],
                        grads: dict[str, FloatArray], B: int, T: int) -> FloatArray:
        """Given dh, the gradient of the residual stream leaving block p, store the block's
        parameter gradients in `grads` and return the gradient of the stream entering it."""
        h, mean1, rstd1, a, qkv, att, y, h_mid, mean2, rstd2, m, pre, f = saved
        H = self.config.n_head
        scale = 1.0 / math.sqrt(self.config.n_embd // H)
        g = grads                           # (short: it is on every line below)
        # mlp: h_out = h_mid + gelu(m @ W_fc + b_fc) @ W_mproj + b_mproj
        g[p.names["mproj_w"]] = _matmul(f.T, dh)
        g[p.names["mproj_b"]] = dh.sum(axis=0)
        dpre = cb.gelu_backward(_matmul(dh, p.mproj_w.T), pre, approximate="tanh")
        g[p.names["fc_w"]] = _matmul(m.T, dpre)
        g[p.names["fc_b"]] = dpre.sum(axis=0)
        dh_mid, g[p.names["ln2_w"]], g[p.names["ln2_b"]] = cb.layer_norm_backward(
            _matmul(dpre, p.fc_w.T), h_mid, p.ln2_w, mean2, rstd2)
        dh_mid += dh
        # attention: h_mid = h + merge(softmax(q k^T) v) @ W_proj + b_proj
        g[p.names["proj_w"]] = _matmul(y.T, dh_mid)
        g[p.names["proj_b"]] = dh_mid.sum(axis=0)
        dy = _split(_matmul(dh_mid, p.proj_w.T), B, T, H)
        q, k, v = _split_heads(qkv, B, T, H)
        datt = _matmul(dy, v.swapaxes(-1, -2))
        dv = _matmul(att.swapaxes(-1, -2), dy)
        ds = cb.masked_softmax_backward(datt, att, scale=scale, out=datt)
        dqkv = kernels.empty((B, T, 3, H, q.shape[-1]), qkv.dtype)
        dqkv[:, :, 0] = _matmul(ds, k).transpose(0, 2, 1, 3)
        dqkv[:, :, 1] = _matmul(ds.swapaxes(-1, -2), q).transpose(0, 2, 1, 3)
        dqkv[:, :, 2] = dv.transpose(0, 2, 1, 3)
        dqkv = dqkv.reshape(B * T, 3 * self.config.n_embd)
        g[p.names["attn_w"]] = _matmul(a.T, dqkv)
        g[p.names["attn_b"]] = dqkv.sum(axis=0)
        dh_in, g[p.names["ln1_w"]], g[p.names["ln1_b"]] = cb.layer_norm_backward(
            _matmul(dqkv, p.attn_w.T), h, p.ln1_w, mean1, rstd1)
        dh_in += dh_mid
        return dh_in

    # ---- generation --------------------------------------------------------------------------

    def generate(self, idx: ArrayLike, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, rng: np.random.Generator | None = None
                 ) -> NDArray[np.int64]:
        """idx (B, T) followed by max_new_tokens sampled tokens, (B, T + max_new_tokens).

        Each new token comes from softmax(logits / temperature), restricted to the top_k most
        likely when top_k is given; temperature=0 or top_k=1 picks the most likely (greedy).
        `rng`: a numpy.random.Generator (a fresh one when None). The keys and values of past
        positions are kept in a cache: each step runs the model on the new token only, which
        attends over the cache through the bottom-right-aligned causal softmax."""
        max_new_tokens = operator.index(max_new_tokens)
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        idx = self._tokens(idx)
        B, T = idx.shape
        if T + max_new_tokens > self.config.n_positions:
            raise ValueError(f"{T} prompt tokens + {max_new_tokens} new ones exceed "
                             f"n_positions={self.config.n_positions}")
        if T == 0:
            raise ValueError("generate needs a prompt of at least one token")
        temperature = float(temperature)
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None:
            top_k = operator.index(top_k)
            if top_k < 1:
                raise ValueError(f"top_k must be >= 1, got {top_k}")
        if rng is None:
            rng = np.random.default_rng()
        elif not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, not {type(rng).__name__}")
        tokens = np.empty((B, T + max_new_tokens), np.int64)
        tokens[:, :T] = idx
        cache = _KVCache(self.config, B, T + max_new_tokens, self.dtype)
        wte = self.params["transformer.wte.weight"]
        last = self._hidden(idx, cache=cache)[T - 1::T]        # each sequence's last row
        for t in range(T, T + max_new_tokens):
            tokens[:, t] = _sample(_matmul(last, wte.T), temperature, top_k, rng)
            if t + 1 < T + max_new_tokens:
                last = self._hidden(tokens[:, t:t + 1], cache=cache, start=t)
        return tokens


def _check_config(config: object) -> None:
    if not isinstance(config, GPT2Config):
        raise TypeError(f"config must be a GPT2Config, not {type(config).__name__}")


def _float_dtype(dtype: DTypeLike, name: str) -> np.dtype[Any]:
    dtype = np.dtype(dtype)
    if dtype not in _FLOATS:
        raise TypeError(f"{name}: GPT2 computes in float32 or float64, not {dtype} "
                        f"(convert with .astype(np.float32))")
    return dtype


def _matmul(a: FloatArray, b: FloatArray) -> FloatArray:
    """a @ b, into an array made as cyburn makes its outputs (kernels.empty), whose memory is
    kept for the next array of its size once this one is freed: a step's products would
    otherwise come in pages that the OS zeroes anew at every step (README, "Outputs reuse
    freed memory")."""
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    out: FloatArray = np.matmul(a, b, out=kernels.empty(shape, np.result_type(a, b)))
    return out


def _split(x: FloatArray, B: int, T: int, H: int) -> FloatArray:
    """(N, H * D) rows -> (B, H, T, D) heads (a view)."""
    return x.reshape(B, T, H, x.shape[-1] // H).transpose(0, 2, 1, 3)


def _split_heads(qkv: FloatArray, B: int, T: int, H: int) -> FloatArray:
    """q, k, v as (B, H, T, D) views of c_attn's output (N, 3C)."""
    return qkv.reshape(B, T, 3, H, qkv.shape[-1] // (3 * H)).transpose(2, 0, 3, 1, 4)


def _merge_heads(y: FloatArray) -> FloatArray:
    """(B, H, T, D) -> (N, H * D) rows (a copy)."""
    B, H, T, D = y.shape
    return y.transpose(0, 2, 1, 3).reshape(B * T, H * D)


def _sample(logits: FloatArray, temperature: float, top_k: int | None, rng: np.random.Generator
            ) -> Any:
    """One token per row of logits (B, V): see GPT2.generate."""
    if temperature == 0 or top_k == 1:
        return np.argmax(logits, axis=-1)
    logits = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[:, -top_k, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = cb.softmax(logits)
    return np.array([rng.choice(probs.shape[-1], p=row / row.sum()) for row in probs])
