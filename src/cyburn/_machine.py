"""The caches of the CPU cyburn runs on, read from the OS at import, and the memory-system
choices of the kernels derived from them (the rules are in the README, "Memory system").

- Non-temporal stores: a kernel stores its output past the caches when the bytes it touches
  (its inputs and its output) exceed the last-level cache: the output would then be evicted
  before anything reads it, and a plain store would first read each line it writes.
- Threads: a kernel starts a team of n threads when its input holds at least n x L1d / 4
  elements (enough float32 to fill each thread's L1 data cache); smaller inputs run on the
  calling thread, which finishes them before a team would have woken up.
"""
import os
from collections.abc import Mapping

_SYSFS = "/sys/devices/system/cpu/cpu0/cache"
_SYSCONF = {1: "SC_LEVEL1_DCACHE_SIZE", 2: "SC_LEVEL2_CACHE_SIZE", 3: "SC_LEVEL3_CACHE_SIZE"}
ASSUMED_LAST_LEVEL = 32 << 20       # when the OS says nothing: a common server L3
ASSUMED_L1D = 32 << 10              # and a common L1 data cache


def _size(text: str) -> int:
    """'32K' / '512K' / '32768K' / '1M' as bytes."""
    text = text.strip()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text.rstrip("KkMmGg")) * scale


def _from_sysfs() -> dict[int, int]:
    sizes: dict[int, int] = {}
    try:
        entries = sorted(os.listdir(_SYSFS))
    except OSError:
        return sizes
    for entry in entries:
        if not entry.startswith("index"):
            continue
        try:
            with open(f"{_SYSFS}/{entry}/type") as f:
                kind = f.read().strip()
            with open(f"{_SYSFS}/{entry}/level") as f:
                level = int(f.read())
            with open(f"{_SYSFS}/{entry}/size") as f:
                size = _size(f.read())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified") and size > 0:
            sizes[level] = size
    return sizes


def _from_sysconf() -> dict[int, int]:
    sizes: dict[int, int] = {}
    for level, name in _SYSCONF.items():
        try:
            size = os.sysconf(name)
        except (ValueError, OSError):
            continue
        if size > 0:
            sizes[level] = size
    return sizes


def cache_sizes() -> dict[int, int]:
    """{level: bytes} of the data (or unified) caches one core sees: level 1 per core, the
    last level usually shared by all. Empty when the OS does not say."""
    return _from_sysfs() or _from_sysconf()


def last_level_cache(sizes: Mapping[int, int] | None = None) -> int:
    """The largest cache's size in bytes (ASSUMED_LAST_LEVEL when unknown)."""
    sizes = cache_sizes() if sizes is None else sizes
    return max(sizes.values()) if sizes else ASSUMED_LAST_LEVEL


def kernel_cache_sizes(sizes: Mapping[int, int] | None = None) -> tuple[int, int]:
    """(last-level cache, L1d) in bytes, as the kernels' configure_memory takes them."""
    sizes = cache_sizes() if sizes is None else sizes
    return last_level_cache(sizes), sizes.get(1, ASSUMED_L1D)


def describe(sizes: Mapping[int, int] | None = None) -> str:
    """'L1d 32 KiB, L2 512 KiB, L3 32 MiB' (or 'unknown')."""
    sizes = cache_sizes() if sizes is None else sizes
    if not sizes:
        return "unknown"
    def human(n: int) -> str:
        return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n >> 10} KiB"
    return ", ".join(f"L{level}{'d' if level == 1 else ''} {human(size)}"
                     for level, size in sorted(sizes.items()))
