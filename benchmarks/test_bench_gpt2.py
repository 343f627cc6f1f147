"""pytest-benchmark suite for cyburn.gpt2 at GPT-2 small's shapes (124M parameters, float32):
a training step (B=4, T=64), greedy generation of 64 tokens after 64 with the cache, and
adamw_step over 124M parameters, each against PyTorch (and NumPy for adamw_step).

    pytest benchmarks/test_bench_gpt2.py --benchmark-only

`python -m cyburn.bench.gpt2` prints the same comparisons as ratios measured interleaved,
with the step's breakdown, the generation ceiling and peak memory.
"""
import numpy as np
import pytest

import cyburn as cb
from cyburn.bench import gpt2 as b
from cyburn.bench.cases import CONTENDERS
from cyburn.gpt2 import GPT2

ROUNDS = 3


@pytest.fixture(scope="module")
def model():
    return GPT2(b.SMALL)


@pytest.fixture(scope="module")
def torch_model(model):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(cb.get_num_threads())
    return b.torch_trainer({n: p.copy() for n, p in model.params.items()}, b.SMALL)


@pytest.fixture(scope="module")
def prompt():
    return np.random.default_rng(1).integers(0, b.SMALL.vocab_size, (1, b.PROMPT))


def test_training_step_cyburn(benchmark, model):
    benchmark.pedantic(b.cyburn_trainer(model), rounds=ROUNDS, warmup_rounds=1)


def test_training_step_torch(benchmark, torch_model):
    benchmark.pedantic(torch_model[1], rounds=ROUNDS, warmup_rounds=1)


def test_generate_cyburn(benchmark, model, prompt):
    benchmark.pedantic(model.generate, (prompt, b.NEW_TOKENS), {"temperature": 0},
                       rounds=ROUNDS, warmup_rounds=1)


def test_generate_torch(benchmark, torch_model, prompt):
    import torch
    benchmark.pedantic(torch_model[0].generate_greedy, (torch.from_numpy(prompt), b.NEW_TOKENS),
                       rounds=ROUNDS, warmup_rounds=1)


@pytest.mark.parametrize("contender", [*CONTENDERS, "ceiling"])
def test_adamw_step(time_row, contender):
    (row,) = b.gpt2_rows()
    time_row(row, contender)
