"""Reliability of the threaded kernels: fork safety (os.fork and multiprocessing's "fork"
start method), many Python threads calling kernels at once, and living with other OpenMP
runtimes (PyTorch's, scikit-learn's), threadpoolctl and the CPU affinity mask.

Children that could hang run in subprocesses with timeouts, so a hang fails the test
instead of hanging the suite."""
import json
import os
import threading
import time

import numpy as np
import pytest

import cyburn as cb
from cyburn import _runtime
from helpers import assert_bitwise_equal, run_python

OPENMP = bool(_runtime.openmp_version())
needs_openmp = pytest.mark.skipif(not OPENMP, reason="serial build (no OpenMP)")
needs_fork = pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(os, "register_at_fork"),
                                reason="no os.fork on this platform")

# Every public kernel, on inputs of 32768 elements or more (the size from which a kernel uses
# threads), each call returning an array or a tuple of arrays. Executed here and in children:
# `calls` maps a name to a function of no argument.
KERNEL_CALLS = r"""
import numpy as np
import cyburn as cb

def make_calls(seed=20240611):
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    x, dy = f32(128, 1024), f32(128, 1024)               # rows
    xc = f32(96, 512)                                    # softmax along axis 0 (column strips)
    x64 = rng.standard_normal((64, 1024))                # float64
    y, ly = cb.softmax(x), cb.log_softmax(x)
    att, datt = f32(2, 4, 64, 128), f32(2, 4, 64, 128)
    keep = rng.random((64, 128)) < 0.8
    ya = cb.masked_softmax(att, scale=0.125, causal=True)
    w, b = f32(1024), f32(1024)
    _, mean, rstd = cb.layer_norm(x, w, b, return_stats=True)
    _, rms_rstd = cb.rms_norm(x, w, return_stats=True)
    img, dimg = f32(8, 32, 16, 16), f32(8, 32, 16, 16)   # (N, C, H, W)
    cw, cbias = f32(32), f32(32)
    _, g_mean, g_rstd = cb.group_norm(img, 8, cw, cbias, return_stats=True)
    _, i_mean, i_rstd = cb.instance_norm(img, cw, cbias, return_stats=True)
    _, b_mean, b_rstd = cb.batch_norm(img, cw, cbias, return_stats=True)
    tab, dtab = f32(4096, 16), f32(4096, 16)             # (N, C): batch norm by columns
    tw, tb = f32(16), f32(16)
    _, t_mean, t_rstd = cb.batch_norm(tab, tw, tb, return_stats=True)
    logits = f32(256, 1000) * 3
    target = rng.integers(0, 1000, 256)
    target[::17] = -100
    hidden, weight = f32(64, 64), f32(1000, 64) * 0.2
    adamw_state = [f32(65536) for _ in range(4)]       # param, grad, exp_avg, exp_avg_sq
    adamw_state[3] = np.abs(adamw_state[3])

    def adamw():                                        # on copies: every call the same
        param, grad, exp_avg, exp_avg_sq = (a.copy() for a in adamw_state)
        cb.adamw_step(param, grad, exp_avg, exp_avg_sq, lr=1e-3, weight_decay=0.1, step=3)
        return param, exp_avg, exp_avg_sq

    return {
        "softmax": lambda: cb.softmax(x),
        "softmax_axis0": lambda: cb.softmax(xc, axis=0),
        "softmax_f64": lambda: cb.softmax(x64),
        "log_softmax": lambda: cb.log_softmax(x),
        "log_softmax_axis0": lambda: cb.log_softmax(xc, axis=0),
        "softmax_backward": lambda: cb.softmax_backward(dy, y),
        "log_softmax_backward": lambda: cb.log_softmax_backward(dy, ly),
        "masked_softmax_causal": lambda: cb.masked_softmax(att, scale=0.125, causal=True),
        "masked_softmax_mask": lambda: cb.masked_softmax(att, mask=keep),
        "masked_softmax_backward": lambda: cb.masked_softmax_backward(datt, ya, scale=0.125),
        "layer_norm": lambda: cb.layer_norm(x, w, b, return_stats=True),
        "layer_norm_residual": lambda: cb.layer_norm(x, w, b, residual=dy),
        "layer_norm_backward": lambda: cb.layer_norm_backward(dy, x, w, mean, rstd),
        "rms_norm": lambda: cb.rms_norm(x, w, return_stats=True),
        "rms_norm_backward": lambda: cb.rms_norm_backward(dy, x, w, rms_rstd),
        "group_norm": lambda: cb.group_norm(img, 8, cw, cbias, return_stats=True),
        "group_norm_backward": lambda: cb.group_norm_backward(dimg, img, 8, cw, g_mean, g_rstd),
        "instance_norm": lambda: cb.instance_norm(img, cw, cbias),
        "instance_norm_backward": lambda: cb.instance_norm_backward(dimg, img, cw, i_mean,
                                                                     i_rstd),
        "batch_norm": lambda: cb.batch_norm(img, cw, cbias, return_stats=True),
        "batch_norm_backward": lambda: cb.batch_norm_backward(dimg, img, cw, b_mean, b_rstd),
        "batch_norm_columns": lambda: cb.batch_norm(tab, tw, tb, return_stats=True),
        "batch_norm_columns_backward": lambda: cb.batch_norm_backward(dtab, tab, tw, t_mean,
                                                                      t_rstd),
        "cross_entropy": lambda: cb.cross_entropy(logits, target, label_smoothing=0.1,
                                                  return_grad=True),
        "cross_entropy_backward": lambda: cb.cross_entropy_backward(logits, target),
        "linear_cross_entropy": lambda: cb.linear_cross_entropy(hidden, weight, target[:64],
                                                                return_grad=True),
        "relu": lambda: cb.relu(x),
        "relu_backward": lambda: cb.relu_backward(dy, x),
        "gelu": lambda: cb.gelu(x),
        "gelu_tanh": lambda: cb.gelu(x, approximate="tanh"),
        "gelu_f64": lambda: cb.gelu(x64),
        "gelu_backward": lambda: cb.gelu_backward(dy, x),
        "gelu_tanh_backward": lambda: cb.gelu_backward(dy, x, approximate="tanh"),
        "silu": lambda: cb.silu(x),
        "silu_backward": lambda: cb.silu_backward(dy, x),
        "adamw_step": adamw,
    }

def arrays(result):
    return [np.asarray(r) for r in (result if isinstance(result, tuple) else (result,))
            if r is not None]

def same_bits(a, b):
    a, b = arrays(a), arrays(b)
    return len(a) == len(b) and all(
        u.dtype == v.dtype and u.shape == v.shape and u.tobytes() == v.tobytes()
        for u, v in zip(a, b))
"""

_namespace = {}
exec(KERNEL_CALLS, _namespace)
make_calls, arrays, same_bits = (_namespace[k] for k in ("make_calls", "arrays", "same_bits"))


def test_every_public_kernel_is_covered(monkeypatch):
    """The calls above (used by the fork, concurrency and other-runtime tests) use every
    public kernel."""
    from test_contracts import REGISTRY     # every public function
    kernels = set(REGISTRY) - {"swish"}             # swish is silu
    calls = make_calls()
    used = set()

    def recording(name, function):
        def call(*args, **kwargs):
            used.add(name)
            return function(*args, **kwargs)
        return call

    for name in kernels:
        monkeypatch.setattr(cb, name, recording(name, getattr(cb, name)))
    for call in calls.values():
        call()
    assert used == kernels, f"not called: {sorted(kernels - used)}"


def test_calls_are_threaded_and_thread_count_independent():
    """The inputs are big enough for threads, and 1 or 2 threads give the same bits (which
    the fork and concurrency tests rely on)."""
    calls = make_calls()
    for name, call in calls.items():
        with cb.num_threads(1):
            one = call()
        with cb.num_threads(2):
            two = call()
        assert same_bits(one, two), name
        if name != "linear_cross_entropy":      # its inputs are small; the logits are not
            assert max(a.size for a in arrays(one)) >= 32768, name


# ================================================================================================
# Fork safety
# ================================================================================================

FORK_CHILD = KERNEL_CALLS + r"""
import json, multiprocessing, os, signal, sys, time

cb.set_num_threads(2)                   # teams of 2 in the parent, whatever the CPU count
calls = make_calls()
expected = {name: call() for name, call in calls.items()}     # the pool has been used

def check_all():
    bad = [name for name, call in calls.items() if not same_bits(call(), expected[name])]
    cb.set_num_threads(2)               # accepted, but the child stays serial
    with cb.num_threads(3):
        in_block = cb.get_num_threads()
        bad += [name for name, call in calls.items() if not same_bits(call(), expected[name])]
    try:
        cb.set_num_threads(0)
        rejected = False
    except ValueError:
        rejected = True
    return {"bad": bad, "threads": cb.get_num_threads(), "in_block": in_block,
            "rejected": rejected}

def forked(body, timeout):
    # body() runs in a forked child, whose JSON result comes back through a pipe; a child
    # still running after `timeout` s is killed and reported as hung
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            out = json.dumps(body()).encode()
        except BaseException as e:
            out = json.dumps({"error": repr(e)}).encode()
        with os.fdopen(write, "wb") as f:
            f.write(out)
        os._exit(0)
    os.close(write)
    deadline = time.monotonic() + timeout
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read)
            return {"error": "hung"}
        time.sleep(0.01)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    return json.loads(data) if data else {"error": "no result"}

def grandchild():
    result = check_all()
    result["grandchild"] = forked(check_all, 30)     # a forked child's own children
    return result

def pool_task(name):
    return name, same_bits(calls[name](), expected[name]), cb.get_num_threads()

report = {"fork": forked(grandchild, 60)}
# the parent still runs on 2 threads after forking
report["parent_threads"] = cb.get_num_threads()
report["parent_bad"] = [n for n, c in calls.items() if not same_bits(c(), expected[n])]

with multiprocessing.get_context("fork").Pool(2) as pool:
    try:
        results = pool.map_async(pool_task, list(calls)).get(timeout=60)
        report["pool"] = {"bad": [n for n, ok, _ in results if not ok],
                          "threads": sorted({t for _, _, t in results}),
                          "count": len(results)}
    except multiprocessing.TimeoutError:
        report["pool"] = {"error": "hung"}
print(json.dumps(report))
"""


@needs_fork
@pytest.mark.slow
def test_fork_after_threads(tmp_path):
    """A process that ran every kernel on 2 threads forks (os.fork, then a child of that child,
    then a multiprocessing Pool with the "fork" start method): the children run every kernel
    serially, without hanging, to the parent's bits; set_num_threads and num_threads there
    check their argument and keep the child serial; the parent keeps its threads."""
    proc = run_python(FORK_CHILD, tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    calls = len(make_calls())
    for where, result in (("child", report["fork"]), ("grandchild", report["fork"]["grandchild"])):
        assert "error" not in result, f"{where}: {result}"
        assert result["bad"] == [], f"{where}: wrong results from {result['bad']}"
        assert result["threads"] == 1 and result["in_block"] == 1, (where, result)
        assert result["rejected"], f"{where}: set_num_threads(0) accepted"
    assert "error" not in report["pool"], report["pool"]
    assert report["pool"] == {"bad": [], "threads": [1], "count": calls}, report["pool"]
    assert report["parent_threads"] == 2 and report["parent_bad"] == [], report


@needs_fork
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")   # Python 3.12+: threads
def test_fork_handler_in_this_process():
    """In a fork of this very process (which may have used threads), the child is serial."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # pragma: no cover - the child
        try:
            os.close(read)
            with cb.num_threads(2):
                threads = cb.get_num_threads()
                ok = same_bits(cb.softmax(np.ones((64, 1024), np.float32)),
                               np.full((64, 1024), 1 / 1024, np.float32))
            os.write(write, json.dumps([threads, ok]).encode())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 60
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.01)
    with os.fdopen(read, "rb") as f:
        assert json.loads(f.read()) == [1, True]
    assert cb.get_num_threads() >= 1                # the parent is untouched
    with cb.num_threads(2):
        assert cb.get_num_threads() == 2


# ================================================================================================
# Many Python threads at once
# ================================================================================================

@pytest.mark.slow
def test_concurrent_python_threads_bitwise():
    """8 Python threads call mixed kernels on shared inputs for ~3 s, each in its own
    num_threads block (1, 2 or 3 OpenMP threads): every result has the single-threaded bits,
    and each thread sees its own block's count."""
    calls = make_calls()
    names = sorted(calls)
    with cb.num_threads(1):
        expected = {name: calls[name]() for name in names}
    deadline = time.monotonic() + 3.0
    errors, counts = [], [0] * 8
    start = threading.Barrier(8)

    def worker(k):
        try:
            start.wait()
            threads = 1 + k % 3
            with cb.num_threads(threads):
                i = k
                while time.monotonic() < deadline:
                    name = names[i % len(names)]
                    got = calls[name]()
                    if not same_bits(got, expected[name]):
                        errors.append(f"thread {k}: {name} differs")
                    if cb.get_num_threads() != threads:
                        errors.append(f"thread {k}: sees {cb.get_num_threads()} threads")
                    i += 7
                    counts[k] += 1
        except BaseException as e:                  # pragma: no cover - reported below
            errors.append(f"thread {k}: {e!r}")

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in workers), "a thread hung"
    assert not errors, errors[:10]
    assert min(counts) >= len(names) // 7, counts       # every thread really ran
    assert sum(counts) >= len(names), counts


# ================================================================================================
# Other OpenMP runtimes, threadpoolctl, the affinity mask
# ================================================================================================

OTHERS_CHILD = r"""
import importlib, sys

# the import order, e.g. "torch,cyburn", kept before anything else imports cyburn
mods = {name: importlib.import_module(name) for name in sys.argv[1].split(",")}
""" + KERNEL_CALLS + r"""
import ctypes, json, os

def cyburn_libgomp():
    # the OpenMP library cyburn's kernel module resolves omp_get_max_threads to (with
    # PyTorch imported first it is PyTorch's, which has the same soname)
    from cyburn import _dispatch
    class DlInfo(ctypes.Structure):
        _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p),
                    ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]
    lib = ctypes.CDLL(_dispatch.kernels.__file__)
    address = ctypes.cast(lib.omp_get_max_threads, ctypes.c_void_p)
    info = DlInfo()
    ctypes.CDLL(None).dladdr(address, ctypes.byref(info))
    return os.path.realpath(info.fname.decode())

report = {}
calls = make_calls()
with cb.num_threads(1):
    expected = {n: c() for n, c in calls.items()}

def use_others():
    # run the other libraries' own OpenMP code between cyburn's calls
    if "torch" in mods:
        torch = mods["torch"]
        t = torch.randn(512, 1024)
        torch.softmax(t, -1).sum().item()
        (t @ t.T).sum().item()
    if "sklearn" in mods:
        from sklearn.cluster import KMeans
        pts = np.random.default_rng(0).standard_normal((4000, 8))
        KMeans(4, n_init=1, random_state=0).fit(pts)

bad = []
for _ in range(2):
    use_others()
    with cb.num_threads(2):
        bad += [n for n, c in calls.items() if not same_bits(c(), expected[n])]
    bad += [n for n, c in calls.items() if not same_bits(c(), expected[n])]
x = np.random.default_rng(1).standard_normal((128, 1024)).astype(np.float32)
close = bool(np.allclose(cb.softmax(x), cb.reference.softmax(x.astype(np.float64)),
                         rtol=1e-5, atol=1e-7))
report.update(bad=bad, close=close)

import threadpoolctl
info = threadpoolctl.threadpool_info()
report["openmp_libs"] = [os.path.realpath(i["filepath"]) for i in info
                         if i["user_api"] == "openmp"]
report["cyburn_libgomp"] = cyburn_libgomp()
before = cb.get_num_threads()
with threadpoolctl.threadpool_limits(1):
    report["limited"] = cb.get_num_threads()
    with cb.num_threads(2):             # an explicit block still wins
        report["limited_block"] = cb.get_num_threads()
# (limiting the BLAS too would change the bits of linear_cross_entropy's matmuls)
with threadpoolctl.threadpool_limits(1, user_api="openmp"):
    report["limited_openmp"] = cb.get_num_threads()
    report["limited_bad"] = [n for n, c in calls.items() if not same_bits(c(), expected[n])]
report["restored"] = cb.get_num_threads() == before
cb.set_num_threads(2)                   # an explicit count is not limited by threadpoolctl
with threadpoolctl.threadpool_limits(1):
    report["limited_after_set"] = cb.get_num_threads()
print(json.dumps(report))
"""

# PyTorch's libgomp has the soname of the system's: whichever loads first serves both.
# scikit-learn's wheel brings a renamed copy, a second runtime in the process.
ORDERS = [("cyburn", "torch"), ("torch", "cyburn"), ("cyburn", "sklearn"), ("sklearn", "cyburn")]


def _installed(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


@needs_openmp
@pytest.mark.slow
@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_other_openmp_runtimes_and_threadpoolctl(order, tmp_path):
    """cyburn imported before or after PyTorch and scikit-learn (each with its own OpenMP
    runtime), their OpenMP code run in between: no crash, the same bits as alone;
    threadpoolctl lists the OpenMP library cyburn's kernels use and its limits apply to
    cyburn's default thread count (not to an explicit set_num_threads)."""
    for name in order + ("threadpoolctl",):
        if not _installed(name):
            pytest.skip(f"{name} is not installed")
    proc = run_python(OTHERS_CHILD, tmp_path, args=(",".join(order),), timeout=240,
                      drop=("CYBURN_SIMD", "OMP_NUM_THREADS"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["bad"] == [] and report["close"], report
    assert report["cyburn_libgomp"] in report["openmp_libs"], report
    assert report["limited"] == 1 and report["limited_openmp"] == 1, report
    assert report["limited_bad"] == [], report
    assert report["limited_block"] == 2 and report["restored"], report
    assert report["limited_after_set"] == 2, report


@needs_openmp
def test_threadpoolctl_limits_this_process():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from cyburn import _threads
    saved = _runtime.set_thread_count(0)    # follow the runtime, whatever earlier tests set
    try:
        default = cb.get_num_threads()
        assert default == min(_runtime.omp_max_threads(), _threads.MAX_THREADS)
        with threadpoolctl.threadpool_limits(1):
            assert cb.get_num_threads() == 1
            x = np.random.default_rng(0).standard_normal((64, 1024)).astype(np.float32)
            with cb.num_threads(1):
                expected = cb.softmax(x)
            assert_bitwise_equal(cb.softmax(x), expected, "softmax under threadpool_limits(1)")
        assert cb.get_num_threads() == default
    finally:
        _runtime.set_thread_count(saved)


AFFINITY_CHILD = r"""
import json, os, sys
cpus = sorted(os.sched_getaffinity(0))
os.sched_setaffinity(0, cpus[:int(sys.argv[1])])    # before the OpenMP runtime loads
import numpy as np
import cyburn as cb
x = np.random.default_rng(0).standard_normal((64, 1024)).astype(np.float32)
ok = bool(np.allclose(cb.softmax(x), cb.reference.softmax(x.astype(np.float64)), rtol=1e-5))
print(json.dumps([cb.get_num_threads(), len(os.sched_getaffinity(0)), ok]))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
@pytest.mark.parametrize("env, cpus, expected", [
    ({}, 1, 1),                                     # the affinity mask, not os.cpu_count()
    ({}, "all", "all"),
    ({"OMP_NUM_THREADS": "1"}, "all", 1),
    ({"OMP_NUM_THREADS": "3"}, 1, 3),               # an explicit OMP_NUM_THREADS wins
])
def test_default_threads_follow_affinity_and_env(tmp_path, env, cpus, expected):
    available = len(os.sched_getaffinity(0))
    cpus = available if cpus == "all" else cpus
    expected = available if expected == "all" else expected
    proc = run_python(AFFINITY_CHILD, tmp_path, env=env, args=(cpus,), timeout=120,
                      drop=("CYBURN_SIMD", "OMP_NUM_THREADS"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    threads, allowed, ok = json.loads(proc.stdout.strip().splitlines()[-1])
    assert allowed == cpus and ok
    assert threads == expected, (threads, env, cpus)
