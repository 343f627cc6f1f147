"""What the pytest-benchmark suites share: each test times one contender of one row of
cyburn.bench's registry (cyburn.bench.cases), so that the shapes and the peers' calls are
written once, for `python -m cyburn.bench` and for these suites alike."""
import pytest

import cyburn as cb

@pytest.fixture
def time_row(benchmark):
    """time_row(row, contender): benchmark that contender of the row (skipped where the row
    has none). A NumPy contender timed on a slice of the input says so in the row's name."""
    def run(row, contender):
        if row.skip:
            pytest.skip(f"{row.name}: {row.skip}")
        if contender == "torch":
            torch = pytest.importorskip("torch")
            torch.set_num_threads(cb.get_num_threads())
        f = row.make().contenders.get(contender)
        if f is None:
            pytest.skip(f"{row.name}: no {contender} contender")
        benchmark(f)
    return run
