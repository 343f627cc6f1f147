"""pytest-benchmark suite for the attention softmax on GPT-2 small's scores (12 heads, 1024
tokens), float32: the rows of `python -m cyburn.bench attention` (cyburn.bench.cases), each
contender timed alone.

    pytest benchmarks/test_bench_attention.py --benchmark-only

`python -m cyburn.bench attention` prints the same comparisons as ratios measured interleaved in
one run; this suite is for tracking absolute times and regressions with pytest-benchmark.
"""
import pytest

from cyburn.bench.cases import CONTENDERS, rows


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("row", rows(["attention"]), ids=lambda row: row.id)
def test_attention(time_row, row, contender):
    time_row(row, contender)


def test_softmax_on_the_causal_scores(time_row):
    """cb.softmax of the causal row's scores: the unmasked time the causal one should beat."""
    (causal,) = [row for row in rows(["attention"]) if row.label.endswith("causal")]
    time_row(causal, "softmax")
