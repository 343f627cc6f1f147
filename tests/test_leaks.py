"""No leaks: 10^5 calls of each public kernel on small inputs -- with and without out=, in
float32, float64 and float16, through every code path that allocates (softmax's column kernel,
softcap buffers, weight-gradient block sums, batch norm's column sums, linear_cross_entropy's
chunks), and including calls that raise (wrong out= shape or dtype, shape mismatches,
out-of-range class indices) -- leave the process's memory flat.

Everything runs in one fresh interpreter (helpers.run_python), so that the memory of other
tests cannot interfere. For each function the child warms up (WARMUP calls: caches such as
_arrays.constant and attention._row_index fill, NumPy's and the allocators' free lists reach
their steady state), then makes CALLS calls, its variants interleaved, and measures across
them:

- RSS (VmRSS of /proc/self/status, read after glibc's malloc_trim(0) hands free heap pages
  back, so that a leak cannot hide in memory freed earlier): sees memory lost at the C level
  (a malloc without a free in a kernel), which no Python-level counter sees.
- sys.getallocatedblocks(): Python objects (an ndarray, a tuple, a float) that are never freed.
- the reference counts of every input array: a reference leaked on an input frees nothing
  more when the input is reused, so neither counter above would see it.
- tracemalloc's current size over the last TRACED of the CALLS: also covers NumPy's data
  buffers, and names the line of a leak in the failure message. Tracing makes small calls
  several times slower (all 10^5 calls of 25 functions traced: ~90 s instead of ~25 s), so
  it covers a fifth of them; the counters above cover every call.

Bounds (growth over the CALLS = 10^5 calls of one function), and what was measured:
- RSS < 1 MiB; measured 0 to 53 KiB (allocator fragmentation, e.g. group_norm_backward). A C
  leak of L bytes on a fraction f of the calls grows RSS by ~(L + 16) * f * 10^5 bytes (the
  32-byte control below: 4.8 MB): 1 MiB is reached by 32 bytes on 1 call in 4, or by a block
  of 1 KiB (a softmax strip buffer, a softcap row) on 1 call in 80.
- allocated blocks < 1000; measured +13 to +50 (the measurement's own objects). A leaked
  object is at least one block, so this catches a Python-object leak on 1% of the calls.
- tracemalloc < 64 KiB over TRACED = 2 * 10^4 calls; measured -88 to +1.6 KiB (tracemalloc's
  own bookkeeping). A leaked ndarray (>= 100 bytes) on 1 call in 30 exceeds it.
- reference counts of the inputs: unchanged.
The child also runs two deliberately leaking controls through the same harness -- a C leak of
malloc(32) per call and a Python leak of one float per call (32 bytes) -- and the test requires
that they exceed these bounds: the harness demonstrably sees leaks that small. (Wrapping
cb.relu to keep its results, or cb.softmax_backward to malloc(64) per call, fails
test_no_leak for them: RSS +43 MB and +8 MB.)
"""
import json
import re
import sys

import pytest

import cyburn as cb
from helpers import run_python

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc/self/status")

CALLS = 100_000             # per function, split evenly between its variants
TRACED = 20_000             # of which the last TRACED run under tracemalloc
WARMUP = 2_000

MAX_RSS = 1 << 20           # bytes
MAX_BLOCKS = 1_000          # sys.getallocatedblocks()
MAX_TRACED = 64 << 10       # bytes

NOT_KERNELS = {"get_num_threads", "set_num_threads", "num_threads", "show_config", "simd_path",
               "reference", "swish"}        # swish is silu
FUNCTIONS = sorted(set(cb.__all__) - NOT_KERNELS)

CHILD = r'''
import ctypes, gc, json, sys, time, tracemalloc
import numpy as np
import cyburn as cb

CALLS, TRACED, WARMUP = map(int, sys.argv[1:4])


libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
trim = getattr(libc, "malloc_trim", None)      # glibc


def rss():
    """Resident memory, after handing the allocator's free pages back to the system (glibc's
    malloc_trim): otherwise memory freed earlier would hide a leak that reuses it."""
    if trim is not None:
        trim(0)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def raises(exc, fn, *args, **kwargs):
    """A call of fn that must raise exc (every time)."""
    def call():
        try:
            fn(*args, **kwargs)
        except exc:
            return
        raise AssertionError(f"{fn.__name__}{args!r:.60} did not raise {exc.__name__}")
    return call


rng = np.random.default_rng(2024)
f16, f32, f64 = np.float16, np.float32, np.float64


def r(*shape, dtype=f32, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# softmax family
x, x64, x16 = r(4, 64), r(4, 64, dtype=f64), r(4, 64, dtype=f16)
o, o64, o16 = np.empty_like(x), np.empty_like(x64), np.empty_like(x16)
bad = np.empty((4, 63), f32)
dy = r(4, 64)
y_sm, y_lsm = cb.softmax(x), cb.log_softmax(x)
xc = r(16, 64)                  # along axis 0: the column kernel, with its malloc'd strips
oc = np.empty_like(xc)
# attention
s = r(2, 2, 8, 8)
s_out = np.empty_like(s)
keep = rng.random((8, 8)) < 0.7
add = np.where(keep, 0.0, -np.inf).astype(f32)
y_att = cb.masked_softmax(s, causal=True)
dy_att = r(2, 2, 8, 8)
# layer norm, RMSNorm
w64, b64, res = r(64), r(64), r(4, 64)
ln_y, ln_mean, ln_rstd = cb.layer_norm(x, w64, b64, return_stats=True)
rms_y, rms_rstd = cb.rms_norm(x, w64, return_stats=True)
# group, instance and batch norm
xn, dyn = r(2, 6, 5, 5), r(2, 6, 5, 5)
wc, bc = r(6), r(6)
gn_y, gn_mean, gn_rstd = cb.group_norm(xn, 3, wc, bc, return_stats=True)
in_y, in_mean, in_rstd = cb.instance_norm(xn, wc, bc, return_stats=True)
xb_cols, dyb_cols = r(8, 6), r(8, 6)                # batch norm by column sums
xb_runs, dyb_runs = r(2, 6, 256), r(2, 6, 256)      # batch norm run by run
run_mean, run_var = np.zeros(6), np.ones(6)
run_mean32, run_var32 = np.zeros(6, f32), np.ones(6, f32)
bn_y, bn_mean, bn_rstd = cb.batch_norm(xb_cols, wc, bc, return_stats=True)
bn2_y, bn2_mean, bn2_rstd = cb.batch_norm(xb_runs, wc, bc, return_stats=True)
# cross-entropy
logits = r(8, 64, scale=3.0)
logits64 = logits.astype(f64)
target = rng.integers(0, 64, 8)
target_bad = target.copy()
target_bad[5] = 64
target_ign = target.copy()
target_ign[::3] = -100
probs = cb.softmax(r(8, 64))
grad_out = np.empty_like(logits)
cw = rng.random(64).astype(f32)
hidden, lm_w, lm_b = r(8, 16), r(64, 16), r(64)
# activations
xa, dya, xa16 = r(4, 64), r(4, 64), r(4, 64, dtype=f16)
oa = np.empty_like(xa)
# optimizer
pa, ga, ma, va = r(256), r(256), r(256), np.abs(r(256))
pa64, ga64, ma64, va64 = (a.astype(f64) for a in (pa, ga, ma, va))

CASES = {
    "softmax": [
        lambda: cb.softmax(x), lambda: cb.softmax(x, out=o), lambda: cb.softmax(x64, out=o64),
        lambda: cb.softmax(x16), lambda: cb.softmax(xc, axis=0, out=oc),
        raises(ValueError, cb.softmax, x, out=bad)],
    "log_softmax": [
        lambda: cb.log_softmax(x), lambda: cb.log_softmax(x, out=o),
        lambda: cb.log_softmax(x16, out=o16), lambda: cb.log_softmax(xc, axis=0),
        raises(ValueError, cb.log_softmax, x, out=bad)],
    "softmax_backward": [
        lambda: cb.softmax_backward(dy, y_sm), lambda: cb.softmax_backward(dy, y_sm, out=o),
        lambda: cb.softmax_backward(xc, oc, axis=0),
        raises(ValueError, cb.softmax_backward, dy, y_sm[:, :63])],
    "log_softmax_backward": [
        lambda: cb.log_softmax_backward(dy, y_lsm),
        lambda: cb.log_softmax_backward(dy, y_lsm, out=o),
        raises(ValueError, cb.log_softmax_backward, dy, y_lsm, out=bad)],
    "masked_softmax": [
        lambda: cb.masked_softmax(s, causal=True),
        lambda: cb.masked_softmax(s, mask=keep, scale=0.5, out=s_out),
        lambda: cb.masked_softmax(s, mask=add),
        lambda: cb.masked_softmax(s_out, causal=True, mask=keep, out=s_out),
        raises(ValueError, cb.masked_softmax, s, mask=keep[:, :7])],
    "masked_softmax_backward": [
        lambda: cb.masked_softmax_backward(dy_att, y_att, scale=0.5),
        lambda: cb.masked_softmax_backward(dy_att, y_att, out=s_out),
        raises(ValueError, cb.masked_softmax_backward, dy_att, y_att[..., :7])],
    "layer_norm": [
        lambda: cb.layer_norm(x, w64, b64),
        lambda: cb.layer_norm(x, w64, b64, residual=res, return_stats=True, out=o),
        lambda: cb.layer_norm(x16, return_stats=True),
        raises(ValueError, cb.layer_norm, x, w64[:63])],
    "layer_norm_backward": [
        lambda: cb.layer_norm_backward(dy, x, w64, ln_mean, ln_rstd),
        lambda: cb.layer_norm_backward(dy, x, None, ln_mean, ln_rstd),
        raises(ValueError, cb.layer_norm_backward, dy, x, w64, ln_mean, ln_rstd[:3])],
    "rms_norm": [
        lambda: cb.rms_norm(x, w64), lambda: cb.rms_norm(x, w64, residual=res, out=o),
        lambda: cb.rms_norm(x64, return_stats=True),
        raises(ValueError, cb.rms_norm, x, w64, out=bad)],
    "rms_norm_backward": [
        lambda: cb.rms_norm_backward(dy, x, w64, rms_rstd),
        lambda: cb.rms_norm_backward(dy, x, None, rms_rstd),
        raises(ValueError, cb.rms_norm_backward, dy, x, w64[:63], rms_rstd)],
    "group_norm": [
        lambda: cb.group_norm(xn, 3, wc, bc), lambda: cb.group_norm(xn, 2, return_stats=True),
        raises(ValueError, cb.group_norm, xn, 4)],
    "group_norm_backward": [
        lambda: cb.group_norm_backward(dyn, xn, 3, wc, gn_mean, gn_rstd),
        lambda: cb.group_norm_backward(dyn, xn, 3, None, gn_mean, gn_rstd),
        raises(ValueError, cb.group_norm_backward, dyn, xn, 3, wc, gn_mean[:1], gn_rstd)],
    "instance_norm": [
        lambda: cb.instance_norm(xn, wc, bc), lambda: cb.instance_norm(xn, return_stats=True),
        raises(ValueError, cb.instance_norm, xn, wc[:5])],
    "instance_norm_backward": [
        lambda: cb.instance_norm_backward(dyn, xn, wc, in_mean, in_rstd),
        lambda: cb.instance_norm_backward(dyn, xn, None, in_mean, in_rstd),
        raises(ValueError, cb.instance_norm_backward, dyn, xn, wc, in_mean[:1], in_rstd)],
    "batch_norm": [
        lambda: cb.batch_norm(xb_cols, wc, bc, running_mean=run_mean, running_var=run_var),
        lambda: cb.batch_norm(xb_runs, wc, bc, running_mean=run_mean32, running_var=run_var32,
                              return_stats=True),
        lambda: cb.batch_norm(xb_cols, wc, bc, running_mean=run_mean, running_var=run_var,
                              training=False),
        lambda: cb.batch_norm(xb_runs, running_mean=run_mean32, running_var=run_var32,
                              training=False, return_stats=True),
        raises(ValueError, cb.batch_norm, xb_cols, training=False)],
    "batch_norm_backward": [
        lambda: cb.batch_norm_backward(dyb_cols, xb_cols, wc, bn_mean, bn_rstd),
        lambda: cb.batch_norm_backward(dyb_runs, xb_runs, wc, bn2_mean, bn2_rstd),
        raises(ValueError, cb.batch_norm_backward, dyb_cols, xb_cols, wc, bn_mean[:5],
               bn_rstd)],
    "cross_entropy": [
        lambda: cb.cross_entropy(logits, target),
        lambda: cb.cross_entropy(logits, probs, label_smoothing=0.1),
        lambda: cb.cross_entropy(logits, target_ign, weight=cw, softcap=30.0, z_loss=1e-4,
                                 reduction="none"),
        lambda: cb.cross_entropy(logits64, target, return_grad=True),
        lambda: cb.cross_entropy(logits, target, return_grad=True, grad_out=grad_out,
                                 softcap=30.0),
        raises(IndexError, cb.cross_entropy, logits, target_bad),
        raises(IndexError, cb.cross_entropy, logits, target_bad, return_grad=True,
               grad_out=grad_out)],
    "cross_entropy_backward": [
        lambda: cb.cross_entropy_backward(logits, target),
        lambda: cb.cross_entropy_backward(logits, probs, 0.5, out=grad_out),
        lambda: cb.cross_entropy_backward(logits, target_ign, 2.0, weight=cw, softcap=30.0),
        raises(IndexError, cb.cross_entropy_backward, logits, target_bad, out=grad_out)],
    "linear_cross_entropy": [
        lambda: cb.linear_cross_entropy(hidden, lm_w, target),
        lambda: cb.linear_cross_entropy(hidden, lm_w, target, bias=lm_b, chunk_size=3,
                                        return_grad=True),
        raises(IndexError, cb.linear_cross_entropy, hidden, lm_w, target_bad,
               return_grad=True)],
    "relu": [lambda: cb.relu(xa), lambda: cb.relu(xa, out=oa),
             raises(ValueError, cb.relu, xa, out=bad)],
    "relu_backward": [
        lambda: cb.relu_backward(dya, xa), lambda: cb.relu_backward(dya, xa, out=oa),
        raises(ValueError, cb.relu_backward, dya, xa[:, :63])],
    "gelu": [lambda: cb.gelu(xa), lambda: cb.gelu(xa16, approximate="tanh"),
             lambda: cb.gelu(xa, approximate="tanh", out=oa),
             raises(ValueError, cb.gelu, xa, approximate="fast")],
    "gelu_backward": [
        lambda: cb.gelu_backward(dya, xa),
        lambda: cb.gelu_backward(dya, xa, approximate="tanh", out=oa),
        raises(ValueError, cb.gelu_backward, dya, xa, out=bad)],
    "silu": [lambda: cb.silu(xa), lambda: cb.silu(xa, out=oa),
             raises(TypeError, cb.silu, xa, out=o64)],
    "silu_backward": [
        lambda: cb.silu_backward(dya, xa), lambda: cb.silu_backward(dya, xa, out=oa),
        raises(ValueError, cb.silu_backward, dya, xa, out=bad)],
    "adamw_step": [
        lambda: cb.adamw_step(pa, ga, ma, va, lr=1e-6, weight_decay=0.1, step=2),
        lambda: cb.adamw_step(pa64, ga64, ma64, va64, lr=1e-6, step=2),
        raises(ValueError, cb.adamw_step, pa, ga, ma, ma, lr=1e-6, step=1),
        raises(ValueError, cb.adamw_step, pa, ga[:255], ma, va, lr=1e-6, step=1)],
}

# controls: leaks as small as the bounds claim to catch, through the same harness
python_leak = []
CONTROLS = {
    "control: 32-byte C leak": [lambda: libc.malloc(32)],
    "control: 32-byte Python leak": [lambda: python_leak.append(float(len(python_leak)))],
}

INPUTS = [v for v in list(globals().values()) if isinstance(v, np.ndarray)]


def measure(name, variants):
    """Warm up, then CALLS calls (round-robin over the variants), the last TRACED traced."""
    rounds, traced_rounds = CALLS // len(variants), TRACED // len(variants)
    for _ in range(-(-WARMUP // len(variants))):
        for f in variants:
            f()
    gc.collect()
    refs = [sys.getrefcount(a) for a in INPUTS]
    rss0, blocks0 = rss(), sys.getallocatedblocks()
    start = time.perf_counter()
    for _ in range(rounds - traced_rounds):
        for f in variants:
            f()
    tracemalloc.start()
    gc.collect()
    snapshot0 = tracemalloc.take_snapshot()
    traced0 = tracemalloc.get_traced_memory()[0]
    for _ in range(traced_rounds):
        for f in variants:
            f()
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - traced0
    top = [str(stat) for stat in tracemalloc.take_snapshot().compare_to(snapshot0, "lineno")[:3]]
    tracemalloc.stop()
    seconds = time.perf_counter() - start
    gc.collect()
    rss1, blocks1 = rss(), sys.getallocatedblocks()
    changed = [i for i, n in enumerate([sys.getrefcount(a) for a in INPUTS]) if n != refs[i]]
    return dict(name=name, calls=rounds * len(variants),
                traced_calls=traced_rounds * len(variants), seconds=round(seconds, 2),
                rss=rss1 - rss0, blocks=blocks1 - blocks0, traced=traced,
                refcounts_changed=len(changed), top=top)


# tracemalloc's own tables, once, so that they are allocator free lists, not growth, later
tracemalloc.start()
tracemalloc.take_snapshot()
tracemalloc.stop()
for name, variants in {**CASES, **CONTROLS}.items():
    print(json.dumps(measure(name, variants)), flush=True)
'''


@pytest.fixture(scope="module")
def leak_report(tmp_path_factory):
    proc = run_python(CHILD, tmp_path_factory.mktemp("leaks"), args=(CALLS, TRACED, WARMUP),
                      timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = {}
    for line in proc.stdout.splitlines():
        row = json.loads(line)
        report[row["name"]] = row
    summary = "\n".join(
        f"  {r['name']:<30} {r['calls']:>6} calls {r['seconds']:6.2f} s  RSS {r['rss']:>+9} B"
        f"  blocks {r['blocks']:>+7}  traced {r['traced']:>+8} B" for r in report.values())
    print(f"\nleak report (python {sys.version.split()[0]}):\n{summary}")
    return report


def describe(row):
    return (f"{row['name']}: {row['calls']} calls grew RSS by {row['rss']} B, Python blocks "
            f"by {row['blocks']}, tracemalloc by {row['traced']} B over the last "
            f"{row['traced_calls']} calls, changed {row['refcounts_changed']} input refcounts;"
            f" tracemalloc's top growth:\n  " + "\n  ".join(row["top"]))


def test_every_kernel_is_covered():
    covered = set(re.findall(r'^    "(\w+)": \[', CHILD, re.MULTILINE))
    assert covered == set(FUNCTIONS), (set(FUNCTIONS) - covered, covered - set(FUNCTIONS))


@pytest.mark.slow
@pytest.mark.parametrize("name", FUNCTIONS)
def test_no_leak(leak_report, name):
    row = leak_report[name]
    assert row["calls"] >= 0.99 * CALLS, row
    assert row["rss"] < MAX_RSS, describe(row)
    assert row["blocks"] < MAX_BLOCKS, describe(row)
    assert row["traced"] < MAX_TRACED, describe(row)
    assert row["refcounts_changed"] == 0, describe(row)


@pytest.mark.slow
def test_controls_are_caught(leak_report):
    """The harness sees leaks as small as 32 bytes a call: a Python one in every counter that
    covers Python objects, a C one in RSS."""
    py, c = (leak_report["control: 32-byte Python leak"], leak_report["control: 32-byte C leak"])
    assert py["blocks"] >= MAX_BLOCKS and py["traced"] >= MAX_TRACED and py["rss"] >= MAX_RSS, py
    assert c["rss"] >= MAX_RSS, c
