"""Large arrays: softmax and cross_entropy on float32 arrays of more than 2**31 elements, where
any 32-bit element index or offset in a kernel would wrap around.

One buffer of (2**21 + 3) * 1024 float32 (8.6 GB) serves both, in a fresh interpreter
(helpers.run_python) so that its memory goes back to the system when it ends:

1. softmax in place (out=x) on it as (2**21 + 3, 1024): rows from 2**21 on start at or past
   element 2**31.
2. cross_entropy (loss only) on its first 2147484 * 1000 elements as (2147484, 1000) logits:
   the last row straddles element 2**31.

Filling 8.6 GB with random numbers would take longer than the kernels; instead the rows repeat
a small random table T of P = 4093 rows (P prime, so that no row offset that is a power of two
-- what an overflowing index produces -- maps a row onto a row with the same values). Row r
holds T[r % P], so the truth of every row is known from T alone:

- softmax: every row of the result is checked against the float64 truth of its T row, with
  helpers' softmax tolerance (about 20 float32 ulps); rows before, at and past element 2**31
  (and the last) also against cyburn.reference run on just those rows.
- cross_entropy: class-index targets that do not repeat with P (and every 997th row ignored):
  reduction="none" gives every row's loss, each checked against the float64 truth
  lse(T row) - T[row, target]; reduction="mean" against the float64 mean over the kept rows
  (a sum in float64 of 2 million values); selected rows also against cyburn.reference.

Guard: the child needs the 8.6 GB buffer plus ~0.5 GB of tables and check temporaries (its peak
RSS, measured: about 9.1 GB). On this machine other jobs run in parallel and there is no swap,
so it runs only when MemAvailable (/proc/meminfo) leaves ~5 GB for everyone else on top of that:
MIN_AVAILABLE = 14 GB. It checks again just before allocating; if the child is killed by
SIGKILL anyway (the OOM killer, when others' memory grew meanwhile) the test skips and says so.
"""
import json
import signal
from pathlib import Path

import pytest

from helpers import run_python

MIN_AVAILABLE = 14 * 10**9          # bytes: see the module docstring
TESTS = Path(__file__).resolve().parent


def mem_available():
    """MemAvailable of /proc/meminfo in bytes, or None where there is none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


CHILD = r'''
import json, math, sys, time
import numpy as np

sys.path.insert(0, sys.argv[1])             # the tests' folder, for helpers
import cyburn as cb
from helpers import F32, assert_within, check_against_reference, tolerance

MIN_AVAILABLE = int(sys.argv[2])
P = 4093                                    # rows of the repeated table (prime)
N, C = 2**21 + 3, 1024                      # softmax
N_CE, C_CE = 2**31 // 1000 + 1, 1000        # cross_entropy: 2147484 rows
assert N * C > 2**31 and N_CE * C_CE > 2**31 and N_CE * C_CE <= N * C
E32 = float(np.finfo(np.float32).eps)
timings = {}
clock = time.perf_counter()


def phase(name):
    global clock
    now = time.perf_counter()
    timings[name] = round(now - clock, 2)
    clock = now


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024


def available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024


def fill(a, table):
    """Row r of a (n, c) = table[r % P]: whole periods at once, then the rest."""
    q = a.shape[0] // P
    a[:q * P].reshape(q, P, a.shape[1])[...] = table
    a[q * P:] = table[:a.shape[0] - q * P]


def selected(n, c):
    """Rows to check against cyburn.reference: first, around the row holding element 2**31,
    the last."""
    b = 2**31 // c
    return np.array(sorted({0, 1, P - 1, P, b - 1, b, b + 1, n - 2, n - 1} & set(range(n))))


if available() < MIN_AVAILABLE:
    print(json.dumps({"skip": f"MemAvailable fell to {available() / 1e9:.1f} GB"}))
    sys.exit(0)
rng = np.random.default_rng(31)
buffer = np.empty(N * C, np.float32)
phase("allocate")

# ---- softmax, in place, on (2**21 + 3, 1024) -----------------------------------------------
T = (rng.standard_normal((P, C)) * 3.0).astype(np.float32)
x = buffer.reshape(N, C)
fill(x, T)
phase("fill softmax input")
y = cb.softmax(x, out=x)
assert y is x
phase("softmax")
rows = selected(N, C)
check_against_reference("softmax", x[rows], (T[rows % P],), -1, F32)
# every row: |y - truth| <= tol, compared in float32 against the truth rounded to float32
truth, tol = tolerance("softmax", (T,), -1, F32)
truth32 = truth.astype(np.float32)
tol32 = ((tol + np.abs(truth - truth32)) * 1.001).astype(np.float32)
del truth, tol
periods = 16
diff = np.empty((periods, P, C), np.float32)
bad = np.empty((periods, P, C), np.bool_)
q = N // P
x3 = x[:q * P].reshape(q, P, C)
for i in range(0, q, periods):
    chunk = x3[i:i + periods]
    d, b = diff[:len(chunk)], bad[:len(chunk)]
    np.subtract(chunk, truth32, out=d)
    np.abs(d, out=d)
    np.greater(d, tol32, out=b)
    if b.any():
        period, row, col = np.argwhere(b)[0]
        r = (i + period) * P + row
        raise AssertionError(f"softmax row {r} (element {r * C + col}), column {col}: "
                             f"{chunk[period, row, col]!r}, expected {truth32[row, col]!r}")
tail = x[q * P:]
assert_within(tail, truth32[:len(tail)], tol32[:len(tail)], "softmax, last rows")
del diff, bad, x3, chunk, d, b, tail
phase("check softmax")

# ---- cross_entropy, loss only, on (2147484, 1000) ------------------------------------------
T = (rng.standard_normal((P, C_CE)) * 3.0).astype(np.float32)
logits = buffer[:N_CE * C_CE].reshape(N_CE, C_CE)
fill(logits, T)
target = np.arange(N_CE, dtype=np.int64) * 7919 % C_CE
target[::997] = -100
phase("fill cross_entropy input")
losses = cb.cross_entropy(logits, target, reduction="none")
phase("cross_entropy none")
mean = cb.cross_entropy(logits, target)
phase("cross_entropy mean")

# the float64 truth of every row: lse(T[r % P]) - T[r % P, target[r]], 0 where ignored
T64 = T.astype(np.float64)
m = T64.max(axis=1)
lse = m + np.log(np.exp(T64 - m[:, None]).sum(axis=1))
kept = target != -100
pattern = np.arange(N_CE) % P
z_t = T64[pattern, np.where(kept, target, 0)]
row_truth = np.where(kept, lse[pattern] - z_t, 0.0)
# the per-row budget of test_cross_entropy's docstring: -logp_t carries
# e (2 (|z_t| + |m|) + k + 2) + k e |logp_t|, k = 8 + 2 sqrt(C); then float32's rounding
k = 8 + 2 * math.sqrt(C_CE)
row_tol = np.where(kept, E32 * (2 * (np.abs(z_t) + np.abs(m[pattern])) + k + 2
                                + k * row_truth) + E32 * row_truth, 0.0)
assert losses.dtype == np.float32 and losses.shape == (N_CE,)
assert_within(losses, row_truth, row_tol, "cross_entropy reduction='none', every row")
rows = selected(N_CE, C_CE)
ref = cb.reference.cross_entropy(T[rows % P], target[rows], reduction="none")
assert_within(losses[rows], ref, 2 * row_tol[rows], "cross_entropy vs cyburn.reference")
count = int(kept.sum())
mean_truth = math.fsum(row_truth) / count
mean_tol = float(row_tol.sum()) / count + E32 * abs(mean_truth)
assert mean.dtype == np.float32 and mean.shape == ()
assert abs(float(mean) - mean_truth) <= mean_tol, (float(mean), mean_truth, mean_tol)
phase("check cross_entropy")

print(json.dumps({"softmax_shape": [N, C], "cross_entropy_shape": [N_CE, C_CE],
                  "mean_loss": float(mean), "mean_truth": mean_truth,
                  "peak_rss_gb": round(status("VmHWM") / 1e9, 2), "seconds": timings}))
'''


@pytest.mark.slow
def test_softmax_and_cross_entropy_past_2_31_elements(tmp_path):
    available = mem_available()
    if available is None or available < MIN_AVAILABLE:
        pytest.skip(f"needs MemAvailable >= {MIN_AVAILABLE / 1e9:.0f} GB (an 8.6 GB buffer and "
                    f"room for everyone else), have "
                    f"{'unknown' if available is None else f'{available / 1e9:.1f} GB'}")
    # NUMPY_MADVISE_HUGEPAGE=0: NumPy asks for transparent huge pages for large arrays, which
    # here made the first touch of the buffer twice as slow (page compaction; 3.3 vs 1.6 s/2 GB)
    proc = run_python(CHILD, tmp_path, env={"NUMPY_MADVISE_HUGEPAGE": "0"},
                      args=(TESTS, MIN_AVAILABLE), timeout=900)
    if proc.returncode == -signal.SIGKILL:
        pytest.skip(f"the child was killed by SIGKILL, most likely by the OOM killer: other "
                    f"processes took memory meanwhile (MemAvailable now "
                    f"{mem_available() / 1e9:.1f} GB)")
    assert proc.returncode == 0, proc.stderr[-5000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    if "skip" in report:
        pytest.skip(report["skip"])
    print(f"\nlarge arrays: {report}")
