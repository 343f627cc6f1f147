"""cyburn.gpt2: gradients of every parameter against PyTorch autograd of the same model and
finite differences, cached generation against recomputing the prefix, a short training run,
checkpoint loading, dtypes and input validation."""
import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import F32, F64

import cyburn
from cyburn.gpt2 import GPT2, AdamW, GPT2Config

TINY = GPT2Config(vocab_size=53, n_positions=16, n_embd=24, n_layer=2, n_head=3)


def tiny_model(dtype=F64, seed=0, config=TINY):
    """A tiny GPT-2 whose biases and layer-norm parameters are random too (GPT-2's
    initialisation makes them 0 and 1, which would hide a transposed or misplaced one)."""
    model = GPT2(config, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for name, p in model.params.items():
        if p.ndim == 1:
            p += 0.1 * rng.standard_normal(p.shape).astype(dtype)
    return model


def batch(rng, B=3, T=11, ignored=3, config=TINY):
    idx = rng.integers(0, config.vocab_size, (B, T))
    targets = rng.integers(0, config.vocab_size, (B, T))
    targets.flat[rng.choice(B * T, ignored, replace=False)] = -100
    return idx, targets


def torch_loss(torch, params, idx, targets, config):
    """The same GPT-2 written in PyTorch (Hugging Face's layout: y = x @ W + b), returning
    the mean cross-entropy of the non-ignored targets and the logits."""
    F = torch.nn.functional
    B, T = idx.shape
    C, H = config.n_embd, config.n_head
    eps = config.layer_norm_epsilon

    def ln(x, name):
        return F.layer_norm(x, (C,), params[name + ".weight"], params[name + ".bias"], eps)

    x = params["transformer.wte.weight"][idx] + params["transformer.wpe.weight"][:T]
    for i in range(config.n_layer):
        p = f"transformer.h.{i}."
        qkv = ln(x, p + "ln_1") @ params[p + "attn.c_attn.weight"] + params[p + "attn.c_attn.bias"]
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in qkv.split(C, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(B, T, C)
        x = x + y @ params[p + "attn.c_proj.weight"] + params[p + "attn.c_proj.bias"]
        f = F.gelu(ln(x, p + "ln_2") @ params[p + "mlp.c_fc.weight"] + params[p + "mlp.c_fc.bias"],
                   approximate="tanh")
        x = x + f @ params[p + "mlp.c_proj.weight"] + params[p + "mlp.c_proj.bias"]
    logits = ln(x, "transformer.ln_f") @ params["transformer.wte.weight"].T
    loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1), ignore_index=-100)
    return loss, logits


def torch_loss_and_grads(torch, model, idx, targets):
    """Loss, logits and gradients of the PyTorch model in float64 on model's parameters."""
    params = {name: torch.tensor(p, dtype=torch.float64, requires_grad=True)
              for name, p in model.params.items()}
    loss, logits = torch_loss(torch, params, torch.from_numpy(idx), torch.from_numpy(targets),
                              model.config)
    loss.backward()
    return (loss.item(), logits.detach().numpy(),
            {name: t.grad.numpy() for name, t in params.items()})


def relative_error(actual, expected):
    """Normwise: max |actual - expected| / max |expected|."""
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("dtype, tol", [(F64, 1e-12), (F32, 1e-5)])
def test_loss_logits_and_every_gradient_match_torch(torch, rng, dtype, tol):
    model = tiny_model(dtype)
    idx, targets = batch(rng)
    loss, grads = model.loss_and_grads(idx, targets)
    t_loss, t_logits, t_grads = torch_loss_and_grads(torch, model, idx, targets)
    assert abs(loss - t_loss) <= tol * abs(t_loss)
    logits = model.forward(idx)
    assert logits.dtype == dtype and logits.shape == idx.shape + (TINY.vocab_size,)
    assert relative_error(logits, t_logits) <= tol
    assert list(grads) == list(model.params)
    for name, g in grads.items():
        assert g.dtype == dtype and g.shape == model.params[name].shape, name
        assert relative_error(g, t_grads[name]) <= tol, name


def test_unused_positions_get_zero_gradient(rng):
    idx, targets = batch(rng, T=5)
    _, grads = tiny_model().loss_and_grads(idx, targets)
    dwpe = grads["transformer.wpe.weight"]
    assert np.all(dwpe[5:] == 0) and np.all(np.abs(dwpe[:5]).sum(axis=1) > 0)


def test_finite_differences_float64(rng):
    model = tiny_model()
    idx, targets = batch(rng, B=2, T=7)
    _, grads = model.loss_and_grads(idx, targets)
    picks = [("transformer.wte.weight", (idx[0, 2], 5)),
             ("transformer.wte.weight", (targets[targets >= 0][0], 1)),
             ("transformer.wpe.weight", (3, 7)), ("transformer.h.0.ln_1.weight", (4,)),
             ("transformer.h.0.attn.c_attn.weight", (2, 30)),
             ("transformer.h.1.attn.c_attn.bias", (60,)),
             ("transformer.h.1.attn.c_proj.weight", (5, 9)),
             ("transformer.h.0.mlp.c_fc.weight", (11, 80)),
             ("transformer.h.1.mlp.c_proj.bias", (0,)),
             ("transformer.ln_f.bias", (23,))]
    for name, where in picks:
        p = model.params[name]
        saved = p[where]
        step = 1e-5
        p[where] = saved + step
        up = model.loss_and_grads(idx, targets)[0]
        p[where] = saved - step
        down = model.loss_and_grads(idx, targets)[0]
        p[where] = saved
        numeric = (up - down) / (2 * step)
        assert abs(grads[name][where] - numeric) <= 1e-7 * max(1.0, abs(numeric)), name


def test_all_targets_ignored_gives_nan_loss_like_torch(rng):
    idx, _ = batch(rng)
    loss, _ = tiny_model().loss_and_grads(idx, np.full(idx.shape, -100))
    assert math.isnan(loss)


def test_generation_with_cache_equals_recomputing_the_prefix(rng):
    model = tiny_model(F64)
    prompt = rng.integers(0, TINY.vocab_size, (2, 4))
    generated = model.generate(prompt, 9, temperature=0)
    tokens = prompt
    for _ in range(9):
        nxt = np.argmax(model.forward(tokens)[:, -1], axis=-1)
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
    assert generated.shape == (2, 13) and generated.dtype == np.int64
    np.testing.assert_array_equal(generated, tokens)
    np.testing.assert_array_equal(model.generate(prompt, 9, top_k=1), tokens)


def test_sampling_follows_the_rng_and_top_k(rng):
    model = tiny_model(F32)
    prompt = rng.integers(0, TINY.vocab_size, (3, 2))
    a = model.generate(prompt, 10, rng=np.random.default_rng(5))
    b = model.generate(prompt, 10, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:, :2], prompt)
    # with top_k=2 every new token is one of the two most likely after its prefix
    sampled = model.generate(prompt, 6, top_k=2, temperature=2.0, rng=np.random.default_rng(1))
    logits = model.forward(sampled[:, :-1])
    for t in range(2, 8):
        top2 = np.argsort(logits[:, t - 1], axis=-1)[:, -2:]
        assert np.all(np.any(top2 == sampled[:, t, None], axis=-1))


def test_training_lowers_the_loss():
    config = GPT2Config(vocab_size=32, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    model = GPT2(config, dtype=F32, seed=0)
    rng = np.random.default_rng(0)
    # a learnable sequence: each token is the previous one plus 3, modulo 32
    starts = rng.integers(0, 32, (8, 1))
    data = (starts + 3 * np.arange(17)) % 32
    idx, targets = data[:, :-1], data[:, 1:]
    optimizer = AdamW(model.params, lr=1e-2, weight_decay=0.01)
    first, _ = model.loss_and_grads(idx, targets)
    for _ in range(30):
        loss, grads = model.loss_and_grads(idx, targets)
        optimizer.step(grads)
    assert first > 3.0 and loss < 0.25 * first, (first, loss)


def test_adamw_matches_torch_on_the_model(torch, rng):
    model = tiny_model(F64)
    idx, targets = batch(rng)
    t_params = {n: torch.tensor(p, requires_grad=True) for n, p in model.params.items()}
    ours = AdamW(model.params, lr=3e-3, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.1)
    theirs = torch.optim.AdamW(t_params.values(), lr=3e-3, betas=(0.8, 0.99), eps=1e-7,
                               weight_decay=0.1)
    for _ in range(3):
        _, grads = model.loss_and_grads(idx, targets)
        ours.step(grads)
        for name, t in t_params.items():
            t.grad = torch.from_numpy(grads[name].copy())
        theirs.step()
    for name, t in t_params.items():
        np.testing.assert_allclose(model.params[name], t.detach().numpy(), rtol=1e-12,
                                   atol=1e-14, err_msg=name)
    with pytest.raises(KeyError, match="transformer.wte.weight"):
        ours.step({})
    # a bad gradient anywhere fails the step before any parameter moves
    before = {n: p.copy() for n, p in model.params.items()}
    bad = {n: t.grad.numpy() for n, t in t_params.items()}
    last = list(bad)[-1]
    bad[last] = bad[last][..., :1]
    with pytest.raises(ValueError, match=last.replace(".", r"\.")):
        ours.step(bad)
    for name, p in model.params.items():
        np.testing.assert_array_equal(p, before[name], err_msg=name)
    with pytest.raises(ValueError, match="lr"):
        AdamW(model.params, lr=-1.0)


def test_params_are_never_modified(rng):
    model = tiny_model(F32)
    before = {n: p.copy() for n, p in model.params.items()}
    idx, targets = batch(rng)
    model.forward(idx)
    model.loss_and_grads(idx, targets)
    model.generate(idx[:, :3], 5, rng=np.random.default_rng(0))
    for name, p in model.params.items():
        np.testing.assert_array_equal(p, before[name], err_msg=name)


def test_initialisation():
    config = GPT2Config(vocab_size=1000, n_positions=64, n_embd=64, n_layer=4, n_head=4)
    model = GPT2(config, seed=3)
    p = model.params
    assert list(p) == list(config.parameter_shapes())
    assert all(a.shape == s and a.dtype == F32 for a, s in zip(p.values(),
                                                               config.parameter_shapes().values()))
    assert abs(p["transformer.wte.weight"].std() - 0.02) < 0.001
    assert abs(p["transformer.h.1.mlp.c_fc.weight"].std() - 0.02) < 0.001
    assert abs(p["transformer.h.2.attn.c_proj.weight"].std() - 0.02 / math.sqrt(8)) < 0.001
    assert np.all(p["transformer.h.0.ln_2.weight"] == 1) and np.all(p["transformer.ln_f.bias"] == 0)
    assert np.all(p["transformer.h.3.mlp.c_proj.bias"] == 0)
    same = GPT2(config, seed=3).params["transformer.wpe.weight"]
    np.testing.assert_array_equal(same, p["transformer.wpe.weight"])
    assert not np.array_equal(GPT2(config, seed=4).params["transformer.wpe.weight"], same)
    assert GPT2(config, dtype=np.float64).params["transformer.wte.weight"].dtype == F64
    with pytest.raises(TypeError, match="float16"):
        GPT2(config, dtype=np.float16)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_from_state_dict_keeps_dtype_and_copies(rng, dtype):
    source = tiny_model(dtype)
    extra = {"lm_head.weight": source.params["transformer.wte.weight"],
             "transformer.h.0.attn.bias": np.tril(np.ones((1, 1, 16, 16), np.float32))}
    model = GPT2.from_state_dict({**source.params, **extra}, TINY)
    assert all(p.dtype == dtype for p in model.params.values())
    assert set(model.params) == set(source.params)
    idx, targets = batch(rng)
    assert model.loss_and_grads(idx, targets)[0] == source.loss_and_grads(idx, targets)[0]
    model.params["transformer.ln_f.bias"] += 1
    assert not np.array_equal(model.params["transformer.ln_f.bias"],
                              source.params["transformer.ln_f.bias"])


def test_from_state_dict_takes_keys_without_the_transformer_prefix():
    """The published GPT-2 checkpoint names its tensors wte.weight, h.0.ln_1.weight, ..."""
    source = tiny_model()
    short = {n.removeprefix("transformer."): p for n, p in source.params.items()}
    model = GPT2.from_state_dict(short, TINY)
    for name, p in source.params.items():
        np.testing.assert_array_equal(model.params[name], p)


def test_from_state_dict_errors():
    params = tiny_model(F32).params
    missing = {n: p for n, p in params.items() if n != "transformer.h.1.mlp.c_fc.bias"}
    with pytest.raises(ValueError, match="transformer.h.1.mlp.c_fc.bias"):
        GPT2.from_state_dict(missing, TINY)
    transposed = {**params, "transformer.h.0.attn.c_attn.weight":
                  params["transformer.h.0.attn.c_attn.weight"].T}
    with pytest.raises(ValueError, match=r"transformer.h.0.attn.c_attn.weight.*\(72, 24\)"):
        GPT2.from_state_dict(transposed, TINY)
    mixed = {**params, "transformer.ln_f.weight": params["transformer.ln_f.weight"].astype(F64)}
    with pytest.raises(ValueError, match="transformer.ln_f.weight.*float64"):
        GPT2.from_state_dict(mixed, TINY)
    half = {n: p.astype(np.float16) for n, p in params.items()}
    with pytest.raises(TypeError, match="float16"):
        GPT2.from_state_dict(half, TINY)
    with pytest.raises(ValueError, match="transformer.wpe.weight"):
        GPT2.from_state_dict(params, GPT2Config(vocab_size=53, n_positions=32, n_embd=24,
                                                n_layer=2, n_head=3))
    with pytest.raises(TypeError, match="GPT2Config"):
        GPT2.from_state_dict(params, {"n_embd": 24})
    with pytest.raises(TypeError, match="GPT2Config"):
        GPT2({"n_embd": 24})


def test_safetensors_round_trip(tmp_path, rng):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    source = tiny_model(F32)
    path = tmp_path / "model.safetensors"
    # as the published checkpoint: short names, plus tensors the model does not use
    safetensors_numpy.save_file({**{n.removeprefix("transformer."): p
                                    for n, p in source.params.items()},
                                 "h.0.attn.bias": np.ones((1, 1, 16, 16), F32)}, str(path))
    model = GPT2.from_safetensors(path, TINY)
    for name, p in source.params.items():
        assert model.params[name].dtype == F32
        np.testing.assert_array_equal(model.params[name], p)
    idx, targets = batch(rng)
    loss, grads = model.loss_and_grads(idx, targets)        # the loaded arrays train
    AdamW(model.params, lr=1e-3).step(grads)


def test_from_safetensors_without_the_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)      # as if not installed
    with pytest.raises(ImportError, match="pip install safetensors"):
        GPT2.from_safetensors(tmp_path / "model.safetensors", TINY)


def test_empty_batches_and_sequences():
    model = tiny_model(F32)
    assert model.forward(np.zeros((2, 0), int)).shape == (2, 0, TINY.vocab_size)
    assert model.forward(np.zeros((0, 3), int)).shape == (0, 3, TINY.vocab_size)
    loss, grads = model.loss_and_grads(np.zeros((0, 3), int), np.zeros((0, 3), int))
    assert math.isnan(loss)             # a mean over no targets, as in PyTorch
    assert all(g.shape == model.params[n].shape and g.dtype == F32 for n, g in grads.items())
    assert model.generate(np.zeros((0, 3), int), 2).shape == (0, 5)


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of n_head"):
        GPT2Config(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="n_layer"):
        GPT2Config(n_layer=0)


def test_input_validation(rng):
    model = tiny_model(F32)
    idx, targets = batch(rng)
    bad = idx.copy()
    bad[1, 2] = 53
    with pytest.raises(IndexError, match="53"):
        model.forward(bad)
    with pytest.raises(IndexError, match="-2"):
        model.generate(np.array([[1, -2]]), 2)
    bad_targets = targets.copy()
    bad_targets[0, 0] = 99
    with pytest.raises(IndexError, match="99"):
        model.loss_and_grads(idx, bad_targets)
    with pytest.raises(ValueError, match="n_positions"):
        model.forward(rng.integers(0, 53, (1, 17)))
    with pytest.raises(ValueError, match="n_positions"):
        model.generate(idx[:, :10], 7)
    with pytest.raises(ValueError, match=r"\(3, 10\)"):
        model.loss_and_grads(idx, targets[:, :10])
    with pytest.raises(TypeError, match="float"):
        model.forward(idx.astype(np.float64))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model.forward(idx[0])
    with pytest.raises(TypeError, match="Generator"):
        model.generate(idx, 1, rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(idx, 1, temperature=-1)
    assert model.generate(idx, 0).tolist() == idx.tolist()


def test_demo_command_line(tmp_path):
    """python -m cyburn.gpt2 with tiny settings: progress with loss and tokens/s on stderr,
    the summary and a sample after the prompt on stdout (and --compare when torch is here)."""
    compare = ["--compare"] if importlib.util.find_spec("torch") else []
    # the child imports the cyburn under test, wherever it was found
    source = os.path.dirname(os.path.dirname(os.path.abspath(cyburn.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [source] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    result = subprocess.run(
        [sys.executable, "-m", "cyburn.gpt2", "--steps", "4", "--batch", "2", "--context", "16",
         "--layers", "1", "--embd", "16", "--heads", "2", "--sample", "40", *compare],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "loss" in result.stderr and "tok/s" in result.stderr
    assert "cyburn: loss" in result.stdout and "tokens/s" in result.stdout
    assert ("torch:  loss" in result.stdout) == bool(compare)
    assert "\ndef " in result.stdout
    bad = subprocess.run([sys.executable, "-m", "cyburn.gpt2", "--embd", "10", "--heads", "3"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "multiple of --heads" in bad.stderr
