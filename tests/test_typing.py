"""Types for users: cyburn ships py.typed, and `mypy --strict` accepts a user's program that
calls every public function (of cyburn, cyburn.reference, cyburn.gpt2) correctly, with the
results typed as precisely as the options allow, and rejects programs with type errors.
The package itself passes mypy with the project's configuration (pyproject.toml).

mypy runs in a subprocess, in a fresh directory with an empty configuration (as a user's
project would), on the cyburn these tests import: the installed one (found by mypy through
py.typed) or a source tree (given as MYPYPATH, its own errors silenced as an installed
package's are). Skipped when mypy is not installed.
"""
import os
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest

import cyburn as cb
import cyburn.gpt2

pytest.importorskip("mypy", reason="mypy is not installed (pip install '.[test]')")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

USER_PROGRAM = '''
"""A user's program: every call is correct, and each result has the type asserted."""
from typing import Any

import numpy as np
from numpy.typing import NDArray
from typing_extensions import assert_type

import cyburn as cb
from cyburn.gpt2 import GPT2, AdamW, GPT2Config

Floats = NDArray[np.floating[Any]]
Pair = tuple[Floats, Floats]
Triple = tuple[Floats, Floats, Floats]
Four = tuple[Floats, Floats, Floats, Floats]

rng = np.random.default_rng(0)
x = rng.standard_normal((4, 8), dtype=np.float32)
w, b = np.ones(8, np.float32), np.zeros(8, np.float32)
flag = bool(rng.integers(2))                    # an option known only at run time

# softmax: any array-like in, an array out (into out= when given)
y = assert_type(cb.softmax(x), Floats)
assert_type(cb.softmax([[0.0, 1.0], [2.0, 3.0]], axis=0), Floats)
assert_type(cb.log_softmax(x, -1, out=np.empty_like(x)), Floats)
assert_type(cb.softmax_backward(np.ones_like(y), y), Floats)
assert_type(cb.log_softmax_backward(np.ones_like(y), cb.log_softmax(x)), Floats)
np.testing.assert_allclose(y, cb.reference.softmax(x), rtol=1e-5)

scores = rng.standard_normal((2, 3, 5, 5))
p = assert_type(cb.masked_softmax(scores, scale=0.5, causal=True), Floats)
assert_type(cb.masked_softmax(scores, mask=np.tril(np.ones((5, 5), bool)), out=scores), Floats)
assert_type(cb.masked_softmax_backward(np.ones_like(p), p, scale=0.5), Floats)

# normalization: how many results follows residual= and return_stats=
assert_type(cb.layer_norm(x, w, b, eps=1e-6), Floats)
assert_type(cb.layer_norm(x, w, b, residual=x), Pair)
y, mean, rstd = assert_type(cb.layer_norm(x, w, b, return_stats=True), Triple)
y, h, mean, rstd = assert_type(cb.layer_norm(x, w, b, residual=x, return_stats=True), Four)
assert_type(cb.layer_norm(x, return_stats=flag), Floats | tuple[Floats, ...])
dx, dw, db = assert_type(cb.layer_norm_backward(np.ones_like(y), h, w, mean, rstd), Triple)
assert_type(cb.layer_norm_backward(y, h, None, mean, rstd), tuple[Floats, None, None])
assert_type(cb.rms_norm(x, w), Floats)
assert_type(cb.rms_norm(x, w, residual=x), Pair)
y, rstd = assert_type(cb.rms_norm(x, w, eps=1e-5, return_stats=True), Pair)
y, h, rstd = assert_type(cb.rms_norm(x, w, residual=x, return_stats=True), Triple)
dx, dw = assert_type(cb.rms_norm_backward(np.ones_like(y), h, w, rstd), Pair)
assert_type(cb.rms_norm_backward(y, h, None, rstd), tuple[Floats, None])

images = rng.standard_normal((2, 4, 3, 3))
c = np.ones(4)
assert_type(cb.group_norm(images, 2, c, c), Floats)
z, mean, rstd = assert_type(cb.group_norm(images, 2, c, c, return_stats=True), Triple)
assert_type(cb.group_norm_backward(np.ones_like(z), images, 2, c, mean, rstd), Triple)
assert_type(cb.instance_norm(images), Floats)
z, mean, rstd = assert_type(cb.instance_norm(images, c, c, eps=1e-3, return_stats=True), Triple)
assert_type(cb.instance_norm_backward(np.ones_like(z), images, None, mean, rstd),
            tuple[Floats, None, None])
running_mean, running_var = np.zeros(4), np.ones(4)
assert_type(cb.batch_norm(images, c, c, running_mean=running_mean, running_var=running_var,
                          momentum=0.2), Floats)
assert_type(cb.batch_norm(images, running_mean=running_mean, running_var=running_var,
                          training=False), Floats)
z, mean, rstd = assert_type(cb.batch_norm(images, c, c, return_stats=True), Triple)
assert_type(cb.batch_norm_backward(np.ones_like(z), images, c, mean, rstd), Triple)

# cross-entropy: a loss array; with return_grad=True its gradients too
logits = rng.standard_normal((4, 10))
target = rng.integers(0, 10, 4)
loss = assert_type(cb.cross_entropy(logits, target), Floats)
print(float(loss))
assert_type(cb.cross_entropy(logits, target, weight=np.ones(10), ignore_index=3,
                             reduction="none", label_smoothing=0.1, z_loss=1e-4,
                             softcap=30.0), Floats)
assert_type(cb.cross_entropy(logits, np.full((4, 10), 0.1)), Floats)
loss, dlogits = assert_type(cb.cross_entropy(logits, target, return_grad=True,
                                             grad_out=logits), Pair)
assert_type(cb.cross_entropy_backward(logits, target, 2.0, reduction="sum"), Floats)
assert_type(cb.cross_entropy_backward(logits, target, np.ones(4), reduction="none",
                                      out=np.empty_like(logits)), Floats)
hidden, head = rng.standard_normal((6, 5)), rng.standard_normal((10, 5))
target = rng.integers(0, 10, 6)
assert_type(cb.linear_cross_entropy(hidden, head, target, chunk_size=2), Floats)
loss, dhidden, dhead, dbias = assert_type(
    cb.linear_cross_entropy(hidden, head, target, bias=np.zeros(10), class_weight=np.ones(10),
                            return_grad=True),
    tuple[Floats, Floats, Floats, Floats | None])
if dbias is not None:
    print(dbias.sum())

# activations
assert_type(cb.relu(x), Floats)
assert_type(cb.relu_backward(np.ones_like(x), x), Floats)
assert_type(cb.gelu(x, approximate="tanh"), Floats)
assert_type(cb.gelu_backward(np.ones_like(x), x, approximate="none", out=np.empty_like(x)),
            Floats)
assert_type(cb.silu(x, out=x), Floats)
assert_type(cb.silu_backward(np.ones_like(x), x), Floats)
assert_type(cb.swish(x), Floats)

# the optimizer updates its arrays in place and returns nothing
param, grad = np.ones(8), np.full(8, 0.5)
exp_avg, exp_avg_sq = np.zeros(8), np.zeros(8)
cb.adamw_step(param, grad, exp_avg, exp_avg_sq, lr=1e-3, beta1=0.9, beta2=0.99, eps=1e-8,
              weight_decay=0.01, step=1)

# threads and configuration
threads = assert_type(cb.get_num_threads(), int)
cb.set_num_threads(threads)
with cb.num_threads(1):
    cb.relu(x)
cb.show_config()
assert_type(cb.simd_path(), str)

# cyburn.gpt2
config = GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)
assert_type(config.parameter_shapes(), dict[str, tuple[int, ...]])
model = GPT2(config, dtype=np.float64, seed=1)
idx = rng.integers(0, 11, (2, 5))
assert_type(model.forward(idx), Floats)
loss_value, grads = model.loss_and_grads(idx, idx)
assert_type(loss_value, float)
assert_type(grads, dict[str, Floats])
optimizer = AdamW(model.params, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
optimizer.step(grads)
assert_type(model.generate(idx, 3, temperature=0.8, top_k=5, rng=rng), NDArray[np.int64])
assert_type(GPT2.from_state_dict(model.params, config), GPT2)


def load(path: str) -> GPT2:
    return GPT2.from_safetensors(path, config)
'''

# Each line marked "# error: [code]" must be reported with that code, and no other line.
WRONG_PROGRAM = '''
import numpy as np

import cyburn as cb
from cyburn.gpt2 import GPT2Config

x = np.zeros((2, 3))
cb.softmax(x, axis="1")                                     # error: [arg-type]
cb.softmax(x, out=[0.0, 0.0])                               # error: [arg-type]
cb.gelu(x, approximate="erf")                               # error: [arg-type]
cb.cross_entropy(x, [0, 1], reduction="avg")                # error: [call-overload]
y, mean = cb.layer_norm(x, return_stats=True)               # error: [misc]
dx, dweight, dbias = cb.rms_norm_backward(x, x, x, x[:, 0])  # error: [misc]
cb.rms_norm_backward(x, x, None, x[:, 0])[1].sum()          # error: [attr-defined]
cb.adamw_step([1.0], np.ones(1), np.ones(1), np.ones(1), lr=1e-3, step=1)  # error: [arg-type]
cb.set_num_threads("2")                                     # error: [arg-type]
GPT2Config(n_embd="768")                                    # error: [arg-type]
'''


def cyburn_source_root():
    """The directory holding the cyburn package these tests run, unless it is installed
    (in site-packages, where mypy finds it by itself)."""
    root = Path(cb.__file__).resolve().parents[1]
    installed = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    return None if root in installed else root


def mypy(tmp_path, *arguments, cwd=None, config=None, mypy_path=None):
    """Run mypy in `cwd` (default tmp_path) with its cache in tmp_path and the configuration
    file `config` (default: an empty one, as a user's project has no settings of cyburn's)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    if mypy_path is not None:
        env["MYPYPATH"] = str(mypy_path)
    if config is None:
        config = tmp_path / "mypy.ini"
        config.write_text("[mypy]\n")
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config),
                           "--cache-dir", str(tmp_path / "mypy-cache"), *map(str, arguments)],
                          cwd=cwd or tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)


def errors_by_line(output, name):
    """{line: [error codes]} of mypy's errors in the file `name`."""
    found = {}
    for line, code in re.findall(rf"^{re.escape(name)}:(\d+): error: .*\[([\w-]+)\]$", output,
                                 re.M):
        found.setdefault(int(line), []).append(code)
    return found


def test_the_package_ships_py_typed():
    assert (Path(cb.__file__).parent / "py.typed").is_file()


def test_the_user_program_calls_every_public_function():
    called = set(re.findall(r"\bcb\.(\w+)\(", USER_PROGRAM))
    assert sorted(set(cb.__all__) - {"reference"} - called) == []
    assert "cb.reference." in USER_PROGRAM
    for name in cyburn.gpt2.__all__:
        assert f"{name}(" in USER_PROGRAM, name
    for method in ("forward", "loss_and_grads", "generate", "from_state_dict",
                   "from_safetensors", "step"):
        assert f".{method}(" in USER_PROGRAM, method


def test_mypy_strict_accepts_correct_calls_and_rejects_wrong_ones(tmp_path):
    (tmp_path / "user.py").write_text(USER_PROGRAM)
    (tmp_path / "wrong.py").write_text(WRONG_PROGRAM)
    result = mypy(tmp_path, "--strict", "--follow-imports=silent", "user.py", "wrong.py",
                  mypy_path=cyburn_source_root())
    report = f"mypy exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 1, report                  # errors found, and no crash
    assert errors_by_line(result.stdout, "user.py") == {}, report
    expected = {number: re.findall(r"\[([\w-]+)\]", line.split("# error:")[1])
                for number, line in enumerate(WRONG_PROGRAM.splitlines(), 1)
                if "# error:" in line}
    assert errors_by_line(result.stdout, "wrong.py") == expected, report


def test_the_user_program_runs(tmp_path):
    """The calls the types accept are correct calls: the program runs."""
    (tmp_path / "user.py").write_text(USER_PROGRAM)
    env = dict(os.environ)
    root = cyburn_source_root()
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "user.py"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_passes_mypy_with_its_configuration(tmp_path):
    if not (ROOT / "pyproject.toml").is_file() or not (ROOT / "src" / "cyburn").is_dir():
        pytest.skip("not a source tree")
    from mypy.version import __version__
    if int(__version__.split(".")[0]) < 2:
        pytest.skip(f"mypy {__version__}: the configuration needs mypy 2's allow_redefinition")
    result = mypy(tmp_path, cwd=ROOT, config=ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
