"""The caches read from the OS, the non-temporal-store rule derived from them, and the reuse of
freed outputs' memory."""
import os

import numpy as np
import pytest

from helpers import run_python

import cyburn as cb
from cyburn import _machine, reference
from cyburn._dispatch import kernels


def test_sizes_parse_as_the_kernel_writes_them():
    assert _machine._size("32K\n") == 32 << 10
    assert _machine._size("32768K") == 32 << 20
    assert _machine._size("1M") == 1 << 20
    assert _machine._size("512") == 512


def test_caches_of_this_machine_are_ordered():
    found = _machine.caches()
    if not found:
        pytest.skip("the OS reports no cache sizes here")
    sizes = [c.size for c in sorted(found, key=lambda c: c.level)]
    assert sizes == sorted(sizes) and _machine.last_level_cache(found) == sizes[-1]
    assert f"L{max(c.level for c in found)}" in _machine.describe(found)


def test_caches_are_read_from_sysfs(tmp_path, monkeypatch):
    for index, (level, kind, size, shared) in enumerate([
            (1, "Data", "48K", "0,64"), (1, "Instruction", "32K", "0,64"),
            (2, "Unified", "2048K", "0,64"), (3, "Unified", "105M", "0-63,64-127")]):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size),
                            ("shared_cpu_list", shared)):
            (folder / name).write_text(f"{value}\n")
    (tmp_path / "uevent").write_text("")
    monkeypatch.setattr(_machine, "SYS_CACHE", str(tmp_path))
    found = _machine.caches()
    assert [(c.level, c.kind, c.size, c.shared_by) for c in found] == [
        (1, "Data", 48 << 10, 2), (2, "Unified", 2 << 20, 2), (3, "Unified", 105 << 20, 128)]
    assert _machine.last_level_cache() == 105 << 20
    monkeypatch.setattr(_machine, "usable_cpus", lambda: 64)
    assert _machine.kernel_cache_sizes() == (105 << 20, 48 << 10)
    assert str(found[2]) == "L3 105 MiB shared by 128 CPUs"


def test_the_cache_counted_on_is_a_share_per_usable_cpu(monkeypatch):
    assert 0 < _machine.usable_cpus() <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3})
        assert _machine.usable_cpus() == 2
    l3 = [_machine.Cache(1, "Data", 48 << 10, 1), _machine.Cache(3, "Unified", 480 << 20, 2)]
    monkeypatch.setattr(_machine, "usable_cpus", lambda: 2)    # a 2-CPU VM of a large host
    assert _machine.kernel_cache_sizes(l3) == (2 * _machine.LLC_PER_CPU_MAX, 48 << 10)
    monkeypatch.setattr(_machine, "usable_cpus", lambda: 64)
    assert _machine.kernel_cache_sizes(l3) == (480 << 20, 48 << 10)


def test_unknown_caches_fall_back(monkeypatch):
    assert _machine.last_level_cache([]) is None
    monkeypatch.setattr(_machine, "usable_cpus", lambda: 2)
    assert _machine.kernel_cache_sizes([]) == (_machine.ASSUMED_LAST_LEVEL, _machine.ASSUMED_L1D)
    assert _machine.describe([]) == "unknown"
    assert _machine.human_size(48 << 10) == "48 KiB" and _machine.human_size(3 << 29) == "1.5 GiB"


def test_show_config_names_the_rule(capsys):
    cb.show_config()
    out = capsys.readouterr().out
    assert "non-temporal stores when" in out and "threads from" in out
    assert "reuse the memory of freed ones" in out and _machine.IDLE_ENV in out


def test_configure_memory_rejects_a_bad_size():
    with pytest.raises(ValueError):
        kernels.configure_memory(0, 32768)
    with pytest.raises(ValueError):
        kernels.configure_memory(1 << 25, 0)


def test_rules_follow_the_caches():
    try:
        kernels.configure_memory(260 << 20, 48 << 10)
        assert kernels.memory_rules(2) == {"stream_min_bytes": 260 << 20,
                                           "parallel_min_elements": 2 * 12288}
        assert kernels.memory_rules(4)["parallel_min_elements"] == 4 * 12288
    finally:
        kernels.configure_memory(*_machine.kernel_cache_sizes())


def test_small_and_large_inputs_agree_across_the_team_threshold():
    """Inputs just below and above the threads' threshold give the serial results."""
    rng = np.random.default_rng(5)
    n = kernels.memory_rules(2)["parallel_min_elements"]
    for size in (n - 64, n + 64):
        x = rng.standard_normal(size, dtype=np.float32)
        with cb.num_threads(1):
            serial = cb.gelu(x), cb.softmax(x)
        with cb.num_threads(2):
            team = cb.gelu(x), cb.softmax(x)
        for a, b in zip(serial, team):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("axis", [-1, 0])
def test_streamed_results_equal_cached_ones(axis):
    """The same softmax and backward with every output streamed and with none: bitwise."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((96, 2051), dtype=np.float32)
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    results = []
    try:
        for threshold in (1, 1 << 60):
            kernels.configure_memory(threshold, 32768)
            y = cb.softmax(x, axis)
            results.append((y, cb.softmax_backward(dy, y, axis),
                            cb.log_softmax_backward(dy, cb.log_softmax(x, axis), axis)))
    finally:
        kernels.configure_memory(*_machine.kernel_cache_sizes())
    for streamed, cached in zip(*results):
        np.testing.assert_array_equal(streamed, cached)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streamed_norms_equal_cached_ones(dtype):
    """layer_norm (with and without a residual) and rms_norm with their outputs streamed and
    not, into an output 4 bytes past a cache line, rows of an odd length; group and batch
    norm and their backward, runs of an odd length long enough for batch norm's channel runs
    (not its columns) and a team of threads: bitwise the same, and the reference's."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((67, 771)) * 3 + 1).astype(dtype)
    residual = rng.standard_normal(x.shape).astype(dtype)
    w, b = (rng.standard_normal(771).astype(dtype) for _ in range(2))
    channels = (rng.standard_normal((4, 6, 31, 33)) * 3 + 1).astype(dtype)    # a team's worth
    dy = rng.standard_normal(channels.shape).astype(dtype)
    wc, bc = (rng.standard_normal(6).astype(dtype) for _ in range(2))
    _, group_mean, group_rstd = cb.group_norm(channels, 3, wc, bc, return_stats=True)
    _, batch_mean, batch_rstd = cb.batch_norm(channels, wc, bc, return_stats=True)
    results = []
    try:
        for threshold in (1, 1 << 60):
            kernels.configure_memory(threshold, 32768)
            buffer = np.empty(x.size + 16, dtype)
            offset = next(o for o in range(16) if (buffer.ctypes.data + o * (
                buffer.itemsize)) % 64 == buffer.itemsize)
            out = buffer[offset:offset + x.size].reshape(x.shape)
            results.append((cb.layer_norm(x, w, b, out=out).copy(), cb.rms_norm(x, w),
                            cb.layer_norm(x, w, b, residual=residual)[0],
                            cb.group_norm(channels, 3, wc, bc), cb.group_norm(channels[1:], 6),
                            cb.batch_norm(channels, wc, bc),
                            *cb.group_norm_backward(dy, channels, 3, wc, group_mean, group_rstd),
                            *cb.batch_norm_backward(dy, channels, wc, batch_mean, batch_rstd)))
    finally:
        kernels.configure_memory(*_machine.kernel_cache_sizes())
    for streamed, cached in zip(*results):
        np.testing.assert_array_equal(streamed, cached)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12       # every element written, rightly
    np.testing.assert_allclose(results[0][3], reference.group_norm(channels, 3, wc, bc),
                               rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(results[0][5], reference.batch_norm(channels, wc, bc),
                               rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streamed_activations_equal_cached_ones(dtype):
    """Every activation and derivative with its output streamed and not, on 1 and 2 threads,
    into an output 4 bytes past a cache line and in place: bitwise the same."""
    rng = np.random.default_rng(4)
    n = 2 * kernels.memory_rules(2)["parallel_min_elements"] + 37
    x = (rng.standard_normal(n) * 6).astype(dtype)
    x[:5] = [-np.inf, np.inf, np.nan, -200.0, -0.0]
    dy = rng.standard_normal(n).astype(dtype)
    calls = [(lambda out, f=f, kw=kw: getattr(cb, f)(x, out=out, **kw)) for f, kw in
             [("relu", {}), ("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {})]]
    calls += [(lambda out, f=f, kw=kw: getattr(cb, f)(dy, x, out=out, **kw)) for f, kw in
              [("relu_backward", {}), ("gelu_backward", {}),
               ("gelu_backward", {"approximate": "tanh"}), ("silu_backward", {})]]
    results = []
    try:
        for threshold in (1, 1 << 60):
            kernels.configure_memory(threshold, 32768)
            for threads in (1, 2):
                with cb.num_threads(threads):
                    for call in calls:
                        buffer = np.empty(n + 16, dtype)
                        offset = next(o for o in range(16) if (buffer.ctypes.data + o * (
                            buffer.itemsize)) % 64 == buffer.itemsize)
                        results.append(call(buffer[offset:offset + n]).copy())
                    inplace = x.copy()
                    cb.silu(inplace, out=inplace)
                    results.append(inplace)
    finally:
        kernels.configure_memory(*_machine.kernel_cache_sizes())
    per_run = len(results) // 4
    for run in range(1, 4):
        for a, b in zip(results[:per_run], results[run * per_run:(run + 1) * per_run]):
            np.testing.assert_array_equal(a, b)


# ---- outputs reuse freed memory ------------------------------------------------------------

REUSED_ROWS = 8192                  # (8192, 1024) float32: 32 MiB


@pytest.fixture
def reuse_kept():
    """Reuse with room for a few idle (8192, 1024) float32 outputs, or as the test configures
    it; the idle blocks are dropped before and after."""
    def configure(max_idle_bytes):
        kernels.configure_reuse(0)
        kernels.configure_reuse(max_idle_bytes)
    configure(256 << 20)
    yield configure
    kernels.configure_reuse(0)
    kernels.configure_reuse(_machine.idle_memory_bytes())


def _large_softmax_input(seed):
    return np.random.default_rng(seed).standard_normal((REUSED_ROWS, 1024), dtype=np.float32)


def test_large_output_takes_the_memory_of_a_freed_one(reuse_kept):
    x1, x2 = _large_softmax_input(1), _large_softmax_input(2)
    y1 = cb.softmax(x1)
    address = y1.ctypes.data
    assert address % 64 == 0 and y1.flags.c_contiguous and y1.flags.writeable
    assert kernels.reuse_state()["idle_blocks"] == 0
    del y1
    assert kernels.reuse_state()["idle_blocks"] == 1
    y2 = cb.softmax(x2)           # in the same block, at x2's offset in a page (kernels.empty)
    assert abs(y2.ctypes.data - address) < 4096 and kernels.reuse_state()["idle_blocks"] == 0
    assert y2.ctypes.data % 4096 == x2.ctypes.data % 4096 // 64 * 64
    expected = np.empty_like(x2)
    cb.softmax(x2, out=expected)
    np.testing.assert_array_equal(y2, expected)


def test_a_view_keeps_the_memory_of_its_output(reuse_kept):
    x = _large_softmax_input(3)
    y1 = cb.softmax(x)
    address, view = y1.ctypes.data, y1[1::2]
    kept = view.copy()
    del y1
    assert kernels.reuse_state()["idle_blocks"] == 0       # the view still uses it
    y2 = cb.softmax(-x)
    assert y2.ctypes.data != address
    np.testing.assert_array_equal(view, kept)
    del view
    assert kernels.reuse_state()["idle_blocks"] == 1


def test_idle_memory_stays_within_its_bound(reuse_kept):
    reuse_kept(70 << 20)                # room for two idle 32 MiB outputs, not three
    x = _large_softmax_input(4)
    outputs = [cb.softmax(x) for _ in range(3)]
    sizes = [o.nbytes for o in outputs]
    del outputs
    state = kernels.reuse_state()
    assert state["idle_blocks"] == 2 and state["idle_bytes"] <= 70 << 20, (state, sizes)
    reuse_kept(0)
    state = kernels.reuse_state()
    assert state["idle_blocks"] == 0 and state["idle_bytes"] == 0
    y = cb.softmax(x)                   # nothing kept: a fresh block, freed with the output
    del y
    assert kernels.reuse_state()["idle_blocks"] == 0
    with pytest.raises(ValueError):
        kernels.configure_reuse(-1)


def test_small_outputs_are_not_kept(reuse_kept):
    smallest = kernels.reuse_state()["min_bytes"]
    y = cb.softmax(np.ones(smallest // 4 - 1, np.float32))
    del y
    assert kernels.reuse_state()["idle_blocks"] == 0
    y = cb.softmax(np.ones(smallest // 4, np.float32))
    del y
    assert kernels.reuse_state()["idle_blocks"] == 1


def test_idle_sizes_are_freed_oldest_first(reuse_kept):
    def block_bytes(n):                 # the idle block a gelu of n float32 leaves
        reuse_kept(1 << 30)
        y = cb.gelu(np.ones(n, np.float32))
        del y
        return kernels.reuse_state()["idle_bytes"]
    mid, small, big = block_bytes(1 << 18), block_bytes(1 << 17), block_bytes(1 << 19)
    assert small < mid < big
    reuse_kept(small + mid + big - 1)   # not room for all four blocks below, nor for three
    outputs = [cb.gelu(np.ones(n, np.float32)) for n in (1 << 18, 1 << 18, 1 << 17, 1 << 19)]
    while outputs:
        del outputs[0]                  # freed in that order: both blocks of `mid` go
    assert kernels.reuse_state() | {"min_bytes": 0, "max_idle_bytes": 0} == {
        "min_bytes": 0, "max_idle_bytes": 0, "idle_bytes": small + big, "idle_blocks": 2}
    y = cb.gelu(np.ones(1 << 17, np.float32))
    assert kernels.reuse_state()["idle_bytes"] == big
    del y
    assert kernels.reuse_state()["idle_bytes"] == small + big


def test_idle_memory_variable(tmp_path):
    code = ("import json, cyburn\n"
            "from cyburn._dispatch import kernels\n"
            "print(json.dumps(kernels.reuse_state()['max_idle_bytes']))\n")
    proc = run_python(code, tmp_path, env={_machine.IDLE_ENV: "0"})
    assert proc.returncode == 0 and proc.stdout.strip() == "0", proc.stderr
    proc = run_python(code, tmp_path, env={_machine.IDLE_ENV: "100"})
    assert proc.returncode == 0 and proc.stdout.strip() == str(100 << 20), proc.stderr
    proc = run_python(code, tmp_path, env={_machine.IDLE_ENV: "lots"})
    assert proc.returncode != 0 and _machine.IDLE_ENV in proc.stderr
    assert _machine.idle_memory_bytes({}) > 0
