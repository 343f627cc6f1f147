"""pytest-benchmark suite for cross-entropy on GPT-2's vocabulary, and its LM head fused with the
loss, float32: the rows of `python -m cyburn.bench xent` (cyburn.bench.cases), each contender
timed alone.

    pytest benchmarks/test_bench_cross_entropy.py --benchmark-only

`python -m cyburn.bench xent` prints the same comparisons as ratios measured interleaved in
one run; this suite is for tracking absolute times and regressions with pytest-benchmark.
"""
import pytest

from cyburn.bench.cases import CONTENDERS, rows


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("row", rows(["xent"]), ids=lambda row: row.id)
def test_xent(time_row, row, contender):
    time_row(row, contender)
