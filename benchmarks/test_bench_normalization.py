"""pytest-benchmark suite for the normalization functions on GPT-2 small's rows and a ResNet-style
(N, C, H, W) activation, float32: the rows of `python -m cyburn.bench norm --full`
(cyburn.bench.cases, group norm of an (N, C) input beside layer norm of the same data
included), each contender timed alone.

    pytest benchmarks/test_bench_normalization.py --benchmark-only

`python -m cyburn.bench norm` prints the same comparisons as ratios measured interleaved in
one run; this suite is for tracking absolute times and regressions with pytest-benchmark.
"""
import pytest

from cyburn.bench.cases import CONTENDERS, rows


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("row", rows(["norm"]), ids=lambda row: row.id)
def test_norm(time_row, row, contender):
    time_row(row, contender)
