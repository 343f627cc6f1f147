"""cyburn.bench's own parts: the memory probes (pyx/probes.pxi) compute what they claim on
every thread count and store type, the machine's caches are read from the OS's files, the
registry of rows is well formed, and contenders wait for other threads to stop."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from cyburn._dispatch import kernels
from cyburn.bench import cases, machine, timing

SIZES = [1, 63, 64, 1000, 100_003]          # below, at and above a block; odd tails
DTYPES = [np.float32, np.float64]


def _arrays(n, dtype, count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for _ in range(count)]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_read_probe_sums_the_words(n, threads):
    (a,) = _arrays(n, np.float32, 1)
    words = a.view(np.uint32)
    assert kernels.read_probe(words, threads) == int(words.astype(np.uint64).sum()) % 2**32


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_scale_and_triad_probes(n, dtype, stream, threads):
    a, b = _arrays(n, dtype, 2)
    out = np.full(n, np.nan, dtype)
    kernels.scale_probe(a, out, 2.5, stream, threads)
    np.testing.assert_array_equal(out, dtype(2.5) * a)
    out[:] = np.nan
    kernels.triad_probe(a, b, out, 0.5, stream, threads)
    np.testing.assert_allclose(out, a + dtype(0.5) * b, rtol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_read4_write3_probe(n, dtype, threads):
    a, b, c, d = _arrays(n, dtype, 4)
    expected = a + b, c + b, d + b * b
    kernels.read4_write3_probe(a, b, c, d, threads)
    eps = np.finfo(dtype).eps                   # d + b * b may be one fused op, rounded once
    for actual, want in zip((a, c, d), expected):
        np.testing.assert_allclose(actual, want, rtol=4 * eps, atol=4 * eps * np.max(b * b))


def test_probes_reject_what_they_cannot_run():
    a = np.ones(10, np.float32)
    with pytest.raises(ValueError):
        kernels.read_probe(a, 1)                        # floats: view them as uint32
    with pytest.raises(ValueError):
        kernels.scale_probe(a, np.ones(9, np.float32), 1.0, False, 1)
    with pytest.raises(ValueError):
        kernels.triad_probe(a, a, np.ones(10), 1.0, False, 1)        # mixed float types


@pytest.mark.parametrize("pattern", list(machine.PATTERNS))
def test_each_pattern_has_its_probes(pattern):
    operand = np.ones(1000, np.float32)
    calls = machine.probes(pattern, operand)
    expected = {"ceiling", "ceiling nt"} if pattern in ("copy", "triad") else {"ceiling"}
    assert set(calls) == expected, pattern
    for call in calls.values():
        call()
    np.testing.assert_array_equal(operand, 1)           # the operand is only read


def test_rows_are_one_registry():
    every = cases.rows()
    core = cases.rows(full=False)
    assert core and set(r.id for r in core) < set(r.id for r in every)
    assert len({r.id for r in every}) == len(every)                 # ids are unique
    assert {r.suite for r in core} == set(cases.SUITES)             # every suite is sampled


def test_regimes_grow_to_twice_the_last_level_cache(monkeypatch):
    monkeypatch.setattr(machine, "last_level_cache", lambda: 32 << 20)
    monkeypatch.setattr(machine, "available_memory", lambda: 16 << 30)
    # (8192, 768) float32 read and written: 48 MiB, grown 2x along the rows to 96 MiB
    assert cases.regimes((8192, 768), "copy") == [("gpt2", (8192, 768), ""),
                                                  ("stream", (16384, 768), "")]
    # reduced along axis 0: grown along axis 1
    assert cases.regimes((1024, 4096), "copy", grow=1)[1] == ("stream", (1024, 8192), "")
    assert cases.regimes((12288, 1024), "copy") == [("both", (12288, 1024), "")]
    monkeypatch.setattr(machine, "available_memory", lambda: 100 << 20)
    (_, _, skip), = cases.regimes((8192, 768), "copy")[1:]
    assert skip == "needs about 0.4 GiB of memory, 0.1 available"     # 8 arrays of 48 MiB
    monkeypatch.setattr(machine, "last_level_cache", lambda: None)
    assert cases.regimes((8192, 768), "copy") == [("gpt2", (8192, 768), "")]


def test_parts_scale_to_the_whole():
    x = np.ones((1024, 12288), np.float32)
    part = cases.Part(x, axis=1)
    assert part(x).shape == (1024, 768) and part(x).flags.c_contiguous
    assert part.scale == 16 and part.scaled() == {"numpy": 16}
    small = np.ones((4, 64), np.float32)
    assert cases.Part(small).scaled() is None                       # small rows run whole
    heads = cases.Part(np.ones((1, 12, 256, 256), np.float32), axis=1)
    assert heads.stop == 1 and heads.scale == 12
    big = np.broadcast_to(np.float32(1), (8192, 16384))       # 512 MiB: about 16 MiB parts
    assert cases.Part(big).stop == 8192 // 32 and cases.Part(big).scale == 32


def test_probes_stream_where_the_kernels_do():
    threshold = kernels.memory_rules(2)["stream_min_bytes"]
    assert machine.streams(threshold + 1) and not machine.streams(threshold)


def test_slow_calls_take_fewer_rounds_and_no_warm_up(monkeypatch):
    calls = {"fast": 0, "slow": 0}

    def contender(name, seconds):
        def call():
            calls[name] += 1
            if seconds:
                time.sleep(seconds)
        return call
    monkeypatch.setattr(timing, "SLOW_CALL", 0.02)
    monkeypatch.setattr(timing, "wait_for_quiet", lambda timeout: None)
    times = timing.best_times({"fast": contender("fast", 0),
                               "slow": contender("slow", 0.05)}, 0.0, 20)
    assert calls["slow"] == 2 + timing.SLOW_ROUNDS          # first calls, then one a round
    assert calls["fast"] >= 2 + 2 * timing.SLOW_ROUNDS       # warm-up calls every round
    assert times["fast"] < 0.05 <= times["slow"]
    calls.update(fast=0)
    timing.best_times({"fast": contender("fast", 0)}, 0.0, 20)
    assert calls["fast"] >= 2 + 2 * 5                       # no slow call: 5 rounds at least


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="Linux's run-queue count")
def test_contenders_wait_until_other_threads_stop():
    """wait_for_quiet does not return True while another process spins (it may give up)."""
    spin = "import time\nend = time.perf_counter() + 0.4\nwhile time.perf_counter() < end: pass"
    spinner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.15)                    # the child is starting or spinning: running
        quiet = timing.wait_for_quiet(5.0)
        assert quiet is False or spinner.poll() is not None
        assert timing.running_threads() >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_command_line_help():
    result = subprocess.run([sys.executable, "-m", "cyburn.bench", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "--full" in result.stdout, result.stderr


def test_onnxruntime_runs_one_node_models_into_preallocated_outputs():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import cyburn as cb
    from cyburn.bench import ort
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 768), dtype=np.float32)
    w, b = (rng.standard_normal(768, dtype=np.float32) for _ in range(2))
    for op, opset, inputs, attributes, expected in [
            ("Softmax", 13, {"x": x}, {"axis": 0}, cb.softmax(x, 0)),
            ("LayerNormalization", 17, {"x": x, "scale": w, "bias": b},
             {"axis": -1, "epsilon": 1e-5}, cb.layer_norm(x, w, b)),
            ("Gelu", 20, {"x": x}, {"approximate": "tanh"}, cb.gelu(x, approximate="tanh"))]:
        out = np.full_like(x, np.nan)
        call = ort.contender(op, opset, inputs, {"y": out}, **attributes)
        assert call is not None, op
        call()
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5, err_msg=op)
    assert ort.contender("NoSuchOperator", 13, {"x": x}, {"y": x}) is None


def test_the_report_opens_with_the_machine():
    lines = machine.describe()
    assert lines[0].startswith("CPU: ") and any(line.startswith("caches: ") for line in lines)
