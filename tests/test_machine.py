"""The caches read from the OS, and the non-temporal-store rule derived from them."""
import numpy as np
import pytest

import cyburn as cb
from cyburn import _machine
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
    assert _machine.kernel_cache_sizes() == (105 << 20, 48 << 10)
    assert str(found[2]) == "L3 105 MiB shared by 128 CPUs"


def test_unknown_caches_fall_back():
    assert _machine.last_level_cache([]) is None
    assert _machine.kernel_cache_sizes([]) == (_machine.ASSUMED_LAST_LEVEL, _machine.ASSUMED_L1D)
    assert _machine.describe([]) == "unknown"
    assert _machine.human_size(48 << 10) == "48 KiB" and _machine.human_size(3 << 29) == "1.5 GiB"


def test_show_config_names_the_rule(capsys):
    cb.show_config()
    out = capsys.readouterr().out
    assert "non-temporal stores when" in out and "threads from" in out


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
