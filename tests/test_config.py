"""Introspection (simd_path, show_config), the CYBURN_SIMD switch, agreement of the kernels of
every instruction-set level, and "importing cyburn changes nothing in the process"."""
import json
import os
import re

import numpy as np
import pytest

import cyburn as cb
from cyburn import _runtime
from helpers import (ALL_FUNCS, F64, assert_within, check_against_truth, run_python,
                     tolerance)

LEVELS = tuple(_runtime.simd_levels())


def test_simd_levels_shape():
    assert LEVELS, "no SIMD level at all"
    assert LEVELS in {("default",), ("baseline",), ("baseline", "avx2"),
                      ("baseline", "avx2", "avx512")}, LEVELS


def test_simd_path_is_a_supported_level():
    assert cb.simd_path() in LEVELS
    if not os.environ.get("CYBURN_SIMD"):
        assert cb.simd_path() == LEVELS[-1], "by default the best level the CPU runs"


def test_show_config(capsys):
    cb.show_config()
    text = capsys.readouterr().out
    assert cb.__version__ in text
    assert re.search(rf"simd path:\s*{re.escape(cb.simd_path())}\b", text), text
    assert re.search(r"(?im)^\s*openmp:?\s*\S+", text), text
    assert int(re.search(r"threads:\s*(\d+)", text).group(1)) == cb.get_num_threads(), text
    with cb.num_threads(3):
        cb.show_config()
    assert int(re.search(r"threads:\s*(\d+)", capsys.readouterr().out).group(1)) == 3
    if _runtime.openmp_version():
        assert re.search(r"OpenMP \d{6}", text), text


# ================================================================================================
# Every SIMD level, forced with CYBURN_SIMD in a child process
# ================================================================================================

CASES = [  # (label, shape, axis, kept columns): rows with vector tails, long rows, column
           # tiles, threads, narrow tiles of a long axis, a result of 16 MiB or more (of which
           # the child saves every 64th column: all that is needed to check them)
    ("rows", (37, 1030), -1, 1),
    ("long", (2, 50257), -1, 1),
    ("columns", (300, 130), 0, 1),
    ("middle", (5, 301, 7), 1, 1),
    ("threads", (64, 4099), -1, 1),
    ("threads-columns", (513, 129), 0, 1),
    ("tall-columns", (6000, 40), 0, 1),
    ("huge-columns", (4100, 1024), 0, 64),
]

LEVEL_CHILD = r"""
import json, sys
import numpy as np
import cyburn as cb

out_path = sys.argv[1]
cases = json.loads(sys.argv[2])
rng = np.random.default_rng(20240607)
saved = {}
for label, shape, axis, keep in cases:
    shape = tuple(shape)
    for dt in (np.float32, np.float64):
        x = (rng.standard_normal(shape) * 4).astype(dt)
        dy = rng.standard_normal(shape).astype(dt)
        y = cb.reference.softmax(x.astype(np.float64), axis=axis).astype(dt)
        ly = cb.reference.log_softmax(x.astype(np.float64), axis=axis).astype(dt)
        key = f"{label}-{np.dtype(dt).name}"
        saved[key + "-x"], saved[key + "-dy"] = x, dy
        saved[key + "-y"], saved[key + "-ly"] = y, ly
        saved[key + "-softmax"] = cb.softmax(x, axis=axis)
        saved[key + "-log_softmax"] = cb.log_softmax(x, axis=axis)
        saved[key + "-softmax_backward"] = cb.softmax_backward(dy, y, axis=axis)
        saved[key + "-log_softmax_backward"] = cb.log_softmax_backward(dy, ly, axis=axis)
        for k in [k for k in saved if k.startswith(key + "-")]:
            saved[k] = saved[k][..., ::keep]

# subnormals after the kernels ran: no flush-to-zero / denormals-are-zero in this process
sub32 = cb.softmax(np.array([[0.0, -100.0]], np.float32))[0, 1]     # exp(-100) ~ 3.7e-44
sub64 = cb.softmax(np.array([[0.0, -740.0]]))[0, 1]                 # exp(-740) ~ 4.2e-322
report = {
    "simd_path": cb.simd_path(),
    "f32_subnormal_product": bool(np.float32(1e-45) * np.float32(1) > 0),
    "f64_subnormal": bool(np.nextafter(np.float64(0), 1) > 0),
    "f64_subnormal_product": bool(np.float64(5e-324) * np.float64(1) > 0),
    "kernel_f32_subnormal": float(sub32),
    "kernel_f64_subnormal": float(sub64),
}
np.savez(out_path, **saved)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def level_runs(tmp_path_factory):
    """{level: (report, arrays)} from one child process per supported level."""
    tmp = tmp_path_factory.mktemp("levels")
    runs = {}
    for level in LEVELS:
        path = tmp / f"{level}.npz"
        proc = run_python(LEVEL_CHILD, tmp, env={"CYBURN_SIMD": level},
                          args=(path, json.dumps(CASES)))
        assert proc.returncode == 0, f"CYBURN_SIMD={level}: {proc.stderr}"
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        with np.load(path) as data:
            runs[level] = (report, dict(data))
    return runs


@pytest.mark.parametrize("level", LEVELS)
def test_forced_level_is_used(level, level_runs):
    report, _ = level_runs[level]
    assert report["simd_path"] == level


def _case_arrays(arrays, label, dtype, name):
    key = f"{label}-{np.dtype(dtype).name}"
    args = {"softmax": ("x",), "log_softmax": ("x",), "softmax_backward": ("dy", "y"),
            "log_softmax_backward": ("dy", "ly")}[name]
    return [arrays[f"{key}-{a}"] for a in args], arrays[f"{key}-{name}"]


@pytest.mark.parametrize("name", list(ALL_FUNCS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_levels_agree(name, dtype, level_runs):
    """Each level is within float rounding of the float64 truth and of every other level
    (about 1e-6 relative in float32, 1e-15 in float64); the current process agrees too."""
    first = LEVELS[0]
    for label, _, axis, _ in CASES:
        args, result0 = _case_arrays(level_runs[first][1], label, dtype, name)
        here = ALL_FUNCS[name](*args, axis=axis)
        _, tol = tolerance(name, args, axis, dtype, k=8, s=32,
                           exact_shift=np.dtype(dtype) == F64)
        for level in LEVELS:
            level_args, result = _case_arrays(level_runs[level][1], label, dtype, name)
            for a, b in zip(args, level_args):
                assert np.array_equal(a, b), "children generated different inputs"
            assert result.dtype == dtype and result.shape == args[0].shape
            check_against_truth(name, result, args, axis, dtype)
            assert_within(result, result0, tol, f"{name} {label}: {level} vs {first}")
        assert_within(here, result0, tol, f"{name} {label}: this process vs {first}")


@pytest.mark.parametrize("level", LEVELS)
def test_subnormals_intact_after_kernels(level, level_runs):
    report, _ = level_runs[level]
    assert report["f32_subnormal_product"], f"{level}: float32 subnormals flushed to zero"
    assert report["f64_subnormal"] and report["f64_subnormal_product"], \
        f"{level}: float64 subnormals flushed to zero"
    # the kernels themselves return subnormal results, within one subnormal ulp or so
    assert abs(report["kernel_f32_subnormal"] - np.exp(-100.0)) <= 1.5 * 2.0**-149, report
    assert abs(report["kernel_f64_subnormal"] - np.exp(-740.0)) <= 1.5 * 2.0**-1074, report


def test_subnormals_intact_in_this_process():
    for dtype in (np.float32, np.float64):
        cb.softmax(np.ones((4, 9000), dtype))
        cb.log_softmax_backward(np.ones((9000, 4), dtype), np.zeros((9000, 4), dtype), axis=0)
    assert np.float32(1e-45) * np.float32(1) > 0
    assert np.nextafter(np.float64(0), 1) > 0
    assert np.float64(5e-324) * np.float64(1) > 0
    assert cb.softmax(np.array([[0.0, -100.0]], np.float32))[0, 1] > 0


def test_unknown_level_is_an_import_error(tmp_path):
    code = ("import json\n"
            "try:\n"
            "    import cyburn\n"
            "    print(json.dumps(None))\n"
            "except BaseException as e:\n"
            "    print(json.dumps([[c.__name__ for c in type(e).__mro__], str(e)]))\n")
    proc = run_python(code, tmp_path, env={"CYBURN_SIMD": "bogus"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result is not None, "CYBURN_SIMD=bogus was accepted"
    mro, message = result
    assert "ImportError" in mro, mro
    assert "CYBURN_SIMD" in message and "bogus" in message, message


@pytest.mark.skipif("avx512" in LEVELS, reason="this CPU runs AVX-512")
def test_unsupported_level_is_refused(tmp_path):
    code = ("import json\n"
            "try:\n"
            "    import cyburn\n"
            "    print(json.dumps(cyburn.simd_path()))\n"
            "except BaseException as e:\n"
            "    print(json.dumps([[c.__name__ for c in type(e).__mro__], str(e)]))\n")
    proc = run_python(code, tmp_path, env={"CYBURN_SIMD": "avx512"})
    assert proc.returncode == 0, proc.stderr    # an exception, not a crash (SIGILL)
    result = json.loads(proc.stdout)
    assert isinstance(result, list), f"CYBURN_SIMD=avx512 was accepted: {result}"
    mro, message = result
    assert "ImportError" in mro or "RuntimeError" in mro, mro
    assert "CYBURN_SIMD" in message, message


# ================================================================================================
# Importing cyburn changes nothing in the process
# ================================================================================================

STATE_CHILD = r"""
import json, os, warnings
import numpy as np

def state():
    return {"err": np.geterr(), "print": repr(np.get_printoptions()),
            "bufsize": np.getbufsize()}

before = state()
warnings.simplefilter("error")          # importing cyburn warns about nothing
import cyburn as cb
import cyburn._runtime as rt
after_import = state()
omp_after_import = rt.omp_max_threads()
x = np.random.default_rng(0).standard_normal((300, 300)).astype(np.float32)
with np.errstate(all="raise"):          # and the kernels raise no floating-point error
    cb.softmax(x); cb.log_softmax(x, axis=0)
    cb.softmax(np.array([[-np.inf, -np.inf], [np.nan, 1.0], [np.inf, 0.0]]))
with cb.num_threads(1):
    cb.softmax(x)
cb.set_num_threads(2)
cb.softmax(x)
print(json.dumps({
    "unchanged": before == after_import == state(),
    "threads": cb.get_num_threads(),
    "omp_after_import": omp_after_import,
    "omp_after_calls": rt.omp_max_threads(),
}))
"""


def test_import_changes_no_numpy_state(tmp_path):
    proc = run_python(STATE_CHILD, tmp_path, env={"OMP_NUM_THREADS": "3"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["unchanged"], "importing or calling cyburn changed NumPy's settings"
    if _runtime.openmp_version():
        # no global OpenMP setting: the runtime's own default (OMP_NUM_THREADS) survives
        assert report["omp_after_import"] == 3 and report["omp_after_calls"] == 3, report


def test_numpy_error_state_untouched_in_this_process():
    before = np.geterr()
    with np.errstate(all="raise"):
        cb.softmax(np.array([[-np.inf, -np.inf], [np.nan, 1.0], [1e308, -1e308]]))
        cb.log_softmax(np.array([[3e38, -3e38]], np.float32), axis=-1)
    assert np.geterr() == before
    assert before == {"divide": "warn", "over": "warn", "under": "ignore", "invalid": "warn"}


@pytest.mark.parametrize("omp_num_threads, expected", [("3", 3), ("1", 1), ("5,2", 5),
                                                       (None, "cpus")])
def test_default_thread_count(tmp_path, omp_num_threads, expected):
    code = ("import json, os, cyburn as cb\n"
            "cpus = sorted({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')"
            " else os.cpu_count(), os.cpu_count()})\n"
            "print(json.dumps([cb.get_num_threads(), cpus]))\n")
    env = {} if omp_num_threads is None else {"OMP_NUM_THREADS": omp_num_threads}
    proc = run_python(code, tmp_path, env=env, drop=("CYBURN_SIMD", "OMP_NUM_THREADS"))
    assert proc.returncode == 0, proc.stderr
    threads, cpus = json.loads(proc.stdout)
    if expected == "cpus":
        assert threads in cpus, (threads, cpus)
    else:
        assert threads == expected
