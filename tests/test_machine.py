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


def test_cache_sizes_are_ordered_and_described():
    sizes = _machine.cache_sizes()
    if not sizes:
        pytest.skip("the OS reports no cache sizes here")
    levels = sorted(sizes)
    assert all(sizes[a] <= sizes[b] for a, b in zip(levels, levels[1:]))
    assert _machine.last_level_cache(sizes) == sizes[levels[-1]]
    assert f"L{levels[-1]}" in _machine.describe(sizes)


def test_unknown_caches_fall_back():
    assert _machine.last_level_cache({}) == _machine.ASSUMED_LAST_LEVEL
    assert _machine.describe({}) == "unknown"
    assert _machine.describe({1: 48 << 10, 3: 260 << 20}) == "L1d 48 KiB, L3 260 MiB"


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
    assert _machine.kernel_cache_sizes({}) == (_machine.ASSUMED_LAST_LEVEL, _machine.ASSUMED_L1D)
    assert _machine.kernel_cache_sizes({1: 48 << 10, 2: 2 << 20}) == (2 << 20, 48 << 10)


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
