"""pytest-benchmark suite for cyburn's kernels between NumPy matrix products (the cases of
cyburn.bench.compose: GPT-2 small's MLP, residual layer norm, attention and a whole block's
forward and backward at B=4, T=64 and B=8, T=1024), each step alone and the steps composed.

    pytest benchmarks/test_bench_compose.py --benchmark-only

`python -m cyburn.bench compose` prints composed / sum of the parts from interleaved rounds,
and each step's time alone and inside the composed loop.
"""
import numpy as np
import pytest

from cyburn.bench.compose import CASES as KINDS, compose_cases

CASES = list(compose_cases())
IDS = [label.replace(" -> ", "-").replace("  ", " ").replace(" ", "_") for label, _ in CASES]
# steps per case, counted at the smallest shape (the same at every shape)
STEP_COUNT = {label: len(make(np.random.default_rng(0), 1, 8)[0]) for label, make in KINDS}


@pytest.mark.parametrize("label, make", CASES, ids=IDS)
def test_composed(benchmark, label, make):
    steps, whole = make(np.random.default_rng(0))

    def in_order():
        for _, f in steps:
            f()
    benchmark(whole or in_order)


STEP_COUNTS = [STEP_COUNT[label.split("  ")[0]] for label, _ in CASES]
STEPS = [(make, i) for (_, make), n in zip(CASES, STEP_COUNTS) for i in range(n)]
STEP_IDS = [f"{case_id}-step{i}" for case_id, n in zip(IDS, STEP_COUNTS) for i in range(n)]


@pytest.mark.parametrize("make, step", STEPS, ids=STEP_IDS)
def test_step_alone(benchmark, make, step):
    """One step in a loop of its own: the sum of these is the composed loop's baseline."""
    benchmark(make(np.random.default_rng(0))[0][step][1])
