"""How cyburn's OpenMP threads wait between kernels (cyburn._openmp): no core kept busy once a
kernel has returned, the policy visible in show_config(), a user's OMP_WAIT_POLICY or
GOMP_SPINCOUNT winning, the process' environment left as it was, and a runtime of cyburn's
own that PyTorch's does not share."""
import json
import os

import numpy as np
import pytest

import cyburn as cb
from cyburn import _openmp, _runtime
from helpers import run_python

needs_openmp = pytest.mark.skipif(not _runtime.openmp_version(), reason="serial build")
needs_private = pytest.mark.skipif(_openmp.private_runtime() is None,
                                   reason="this build shares the compiler's OpenMP runtime")
needs_two_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                                    reason="a team of two threads needs two CPUs")
WAIT_VARIABLES = _openmp.USER_VARIABLES

# After a two-thread kernel the process sleeps; the CPU time it uses meanwhile is what its
# waiting threads burn (the sleeping main thread uses none). cyburn is imported first, as a
# script may: the environment must come out of the import as it went in.
BUSY_AFTER_KERNEL = r"""
import json, os, sys, time
before = dict(os.environ)
import cyburn as cb
import numpy as np
x = np.random.default_rng(0).standard_normal((256, 3072)).astype(np.float32)
y = np.empty_like(x)
burnt = []
with cb.num_threads(2):
    for _ in range(5):
        cb.gelu(x, out=y)
        start = time.process_time()
        time.sleep(0.1)
        burnt.append(time.process_time() - start)
print(json.dumps({"burnt_ms": [1e3 * b for b in burnt], "policy": cb._openmp.wait_policy(),
                  "environ_unchanged": dict(os.environ) == before}))
"""


def busy_after_kernel(tmp_path, env):
    proc = run_python(BUSY_AFTER_KERNEL, tmp_path, env=env,
                      drop=("CYBURN_SIMD",) + WAIT_VARIABLES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_openmp
@needs_private
@needs_two_cpus
def test_no_core_kept_busy_after_a_kernel(tmp_path):
    """libgomp's own default spins for 300,000 rounds (4-20 ms of a core after every
    kernel); cyburn's policy spins for SPIN_COUNT rounds (well under a millisecond)."""
    report = busy_after_kernel(tmp_path, {})
    assert "spin" in report["policy"] and "cyburn" in report["policy"], report
    assert min(report["burnt_ms"]) < 3.0, report
    assert report["environ_unchanged"], report


@needs_openmp
@needs_two_cpus
@pytest.mark.parametrize("variable, value", [("OMP_WAIT_POLICY", "active"),
                                             ("GOMP_SPINCOUNT", "100000000")])
def test_the_users_wait_policy_wins(tmp_path, variable, value):
    """An active policy or a long spin count keeps the waiting thread spinning through the
    whole 0.1 s sleep (libgomp caps an infinite count at its own limit). The median round is
    asserted: a first round whose other CPU is busy with another process gets a team of one
    or a spinner that shares its core (CI saw 8.7 ms, then 97-100 ms), while cyburn's own
    policy winning would leave every round under 3 ms."""
    report = busy_after_kernel(tmp_path, {variable: value})
    assert report["policy"].startswith(f"{variable}={value}"), report
    assert report["policy"].endswith("(the user's)"), report
    assert sorted(report["burnt_ms"])[2] > 50.0, report
    assert report["environ_unchanged"], report


@needs_openmp
def test_show_config_prints_the_policy(capsys):
    cb.show_config()
    text = capsys.readouterr().out
    line = next(line for line in text.splitlines() if line.strip().startswith("wait policy:"))
    assert line.split(":", 1)[1].strip() == _openmp.wait_policy()
    if _openmp.private_runtime() and not any(v in os.environ for v in WAIT_VARIABLES):
        assert f"spin {_openmp.SPIN_COUNT} rounds" in line


def test_no_wait_variable_left_in_this_process():
    """The variable cyburn sets while its runtime loads is gone once it has loaded (unless
    the user had set it, and then the policy says so)."""
    assert ("GOMP_SPINCOUNT" not in os.environ
            or _openmp.wait_policy().startswith("GOMP_SPINCOUNT="))


TORCH_FIRST = r"""
import json, os
import torch
import cyburn as cb
torch.set_num_threads(1)
print(json.dumps({"cyburn": os.path.realpath(cb._runtime.openmp_library()),
                  "threads": cb.get_num_threads(), "policy": cb._openmp.wait_policy()}))
"""


@needs_openmp
@needs_private
@needs_two_cpus
def test_private_runtime_is_not_pytorchs(tmp_path):
    """PyTorch's libgomp has the compiler's SONAME; cyburn's copy has its own, so importing
    PyTorch first does not make cyburn use (or configure) PyTorch's runtime."""
    pytest.importorskip("torch")
    proc = run_python(TORCH_FIRST, tmp_path, drop=("CYBURN_SIMD", "OMP_NUM_THREADS")
                      + WAIT_VARIABLES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["cyburn"] == os.path.realpath(_openmp.private_runtime()), report
    assert report["threads"] >= 2, report           # torch.set_num_threads(1) is torch's
    assert "cyburn's private runtime" in report["policy"], report


# ---- a team takes only the CPUs that no other thread runs on -----------------------------------

LARGE = 10 ** 7                     # elements: far above the size from which a team starts


def _spinners(count):
    """`count` processes that keep a CPU busy until they are killed."""
    import subprocess
    import sys
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


@needs_openmp
@needs_two_cpus
@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="Linux's run-queue count")
def test_a_team_leaves_out_cpus_other_threads_run_on():
    """With a busy process on every CPU, a kernel that would start a team of two runs on the
    calling thread alone."""
    import time
    from cyburn._dispatch import kernels
    spinners = _spinners(os.cpu_count() or 2)
    try:
        time.sleep(0.3)                 # the spinners are running
        seen = [kernels.team_threads(LARGE, 2) for _ in range(20)]
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert max(seen) == 1, seen


@needs_openmp
@needs_two_cpus
@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="Linux's run-queue count")
def test_a_team_of_all_cpus_when_idle_and_right_after_its_own_team():
    """No other thread running: the team gets every CPU asked for; and right after one of
    cyburn's own teams too, while that team's idle threads spin (they are not others: they
    join at once). Tried several times: on a shared machine another process may run at any
    moment."""
    import time
    from cyburn._dispatch import kernels
    x = np.zeros(LARGE // 10, np.float32)
    idle, after_own_team = [], []
    for _ in range(20):
        time.sleep(0.02)
        idle.append(kernels.team_threads(LARGE, 2))
        with cb.num_threads(2):
            cb.relu(x, out=x)
        after_own_team.append(kernels.team_threads(LARGE, 2))
    assert idle.count(2) >= 10, idle
    assert after_own_team.count(2) >= 10, after_own_team


@pytest.mark.parametrize("environ, ours, rounds", [
    ({}, True, _openmp.SPIN_COUNT),
    ({}, False, _openmp.LIBGOMP_SPIN_COUNT),
    ({"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "1000"}, False, 0),
    ({"GOMP_SPINCOUNT": "5000"}, False, 5000),
    ({"GOMP_SPINCOUNT": "infinite"}, False, float("inf")),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, False, float("inf")),
    ({"GOMP_SPINCOUNT": "lots"}, True, _openmp.SPIN_COUNT),
])
def test_spin_rounds_as_libgomp_reads_them(environ, ours, rounds):
    assert _openmp.spin_rounds(environ, ours) == rounds
