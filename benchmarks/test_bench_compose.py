"""pytest-benchmark suite for cyburn's kernels between NumPy matrix products (the cases of
cyburn.bench_compose: GPT-2 small's MLP, residual layer norm and attention at B=4, T=64 and
B=8, T=1024), each step alone and the steps composed.

    pytest benchmarks/test_bench_compose.py --benchmark-only

`python -m cyburn.bench compose` prints composed / sum of the parts from interleaved rounds,
and each step's time alone and inside the composed loop.
"""
import numpy as np
import pytest

from cyburn.bench_compose import compose_cases

CASES = list(compose_cases())
IDS = [label.replace(" -> ", "-").replace("  ", " ").replace(" ", "_") for label, _ in CASES]


@pytest.mark.parametrize("label, make", CASES, ids=IDS)
def test_composed(benchmark, label, make):
    steps = make(np.random.default_rng(0))

    def composed():
        for _, f in steps:
            f()
    benchmark(composed)


STEPS = [(make, i) for _, make in CASES for i in range(len(make(np.random.default_rng(0))))]
STEP_IDS = [f"{case_id}-step{i}" for case_id, (_, make) in zip(IDS, CASES)
            for i in range(len(make(np.random.default_rng(0))))]


@pytest.mark.parametrize("make, step", STEPS, ids=STEP_IDS)
def test_step_alone(benchmark, make, step):
    """One step in a loop of its own: the sum of these is the composed loop's baseline."""
    benchmark(make(np.random.default_rng(0))[step][1])
