"""pytest-benchmark suite for the activations and their backward on GPT-2 small's MLP activations,
float32: the rows of `python -m cyburn.bench act` (cyburn.bench.cases), each contender timed
alone.

    pytest benchmarks/test_bench_activations.py --benchmark-only

`python -m cyburn.bench act` prints the same comparisons as ratios measured interleaved in
one run; this suite is for tracking absolute times and regressions with pytest-benchmark.
"""
import pytest

from cyburn.bench.cases import CONTENDERS, rows


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("row", rows(["act"]), ids=lambda row: row.id)
def test_act(time_row, row, contender):
    time_row(row, contender)
