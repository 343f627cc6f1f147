"""pytest-benchmark suite for the softmax family (softmax, log_softmax and their backward) on
GPT-2 small's shapes, float32: the rows of `python -m cyburn.bench softmax`
(cyburn.bench.cases), each contender timed alone.

    pytest benchmarks/test_bench_softmax.py --benchmark-only

`python -m cyburn.bench softmax` prints the same comparisons as ratios measured interleaved in
one run; this suite is for tracking absolute times and regressions with pytest-benchmark.
"""
import pytest

from cyburn.bench.cases import CONTENDERS, rows


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("row", rows(["softmax"]), ids=lambda row: row.id)
def test_softmax(time_row, row, contender):
    time_row(row, contender)
