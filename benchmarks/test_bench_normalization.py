"""pytest-benchmark suite for the normalization functions on GPT-2 small's rows and a ResNet-style
(N, C, H, W) activation, float32: the rows of `python -m cyburn.bench norm`
(cyburn.bench.cases), each contender timed alone; and group norm of an (N, C) input beside layer
norm of the same data (N_BY_C_ROWS).

    pytest benchmarks/test_bench_normalization.py --benchmark-only

`python -m cyburn.bench norm` prints the same comparisons as ratios measured interleaved in
one run; this suite is for tracking absolute times and regressions with pytest-benchmark.
"""
import functools

import pytest

from cyburn.bench.cases import CONTENDERS, channel_norm_case, large_rows, row_norm_case, rows

N_BY_C = (16384, 1024)          # 32 groups of 32 channels (cases.GROUPS), one spatial element


def n_by_c_rows():
    """group_norm and its backward of an (N, C) input, whose groups are segments of its rows,
    and layer_norm and its backward of the same data: the same bytes through the row kernels,
    segment by segment or row by row (issue 15: group norm at most ~1.1x layer norm)."""
    for name in ("group_norm", "group_norm_backward"):
        yield from large_rows("norm", name, "alloc", lambda s: f"(N, C) {s}",
                              functools.partial(channel_norm_case, name), N_BY_C,
                              "triad" if name.endswith("backward") else "copy", False)
    for name in ("layer_norm", "layer_norm_backward"):
        yield from large_rows("norm", name, "alloc", lambda s: f"rows {s}",
                              functools.partial(row_norm_case, name, "alloc"), N_BY_C,
                              "triad" if name.endswith("backward") else "copy", False)


N_BY_C_ROWS = list(n_by_c_rows())


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("row", rows(["norm"]) + N_BY_C_ROWS, ids=lambda row: row.id)
def test_norm(time_row, row, contender):
    time_row(row, contender)
