"""The caches of the CPU cyburn runs on, read from the OS at import, and the memory-system
choices of the kernels derived from them (the rules are in the README, "Memory system"):

- Non-temporal stores: a kernel stores its output past the caches when the bytes it touches
  (its inputs and its output) exceed the last-level cache: the output would then be evicted
  before anything reads it, and a plain store would first read each line it writes. The cache
  counted on is at most LLC_PER_CPU_MAX per CPU this process may use: a virtual machine sees
  its host's whole L3, which its few CPUs share with every other tenant.
- Threads: a kernel starts a team of n threads when its input holds at least n x L1d / 4
  elements (enough float32 to fill each thread's L1 data cache); smaller inputs run on the
  calling thread, which finishes them before a team would have woken up.
- Reused memory: an output of 128 KiB or more (glibc's first mmap threshold: from there a freed
  block may go back to the OS, which zeroes every page again at its first touch) is made in
  memory that, once the output is gone, is kept idle for the next output of its size; idle
  memory stays within 1/16 of the physical memory (CYBURN_IDLE_MIB sets it in MiB; 0 keeps
  none).
"""
import os
from collections.abc import Mapping
from dataclasses import dataclass

SYS_CACHE = "/sys/devices/system/cpu/cpu0/cache"
ASSUMED_LAST_LEVEL = 32 << 20       # when the OS says nothing: a common server L3
ASSUMED_L1D = 32 << 10              # and a common L1 data cache
# The last-level cache a kernel counts on, per CPU (hardware thread) the process may use, at
# most. No x86 server has more than 24 MiB of L3 per hardware thread (AMD's 16-core EPYC with
# 3D V-Cache: 768 MiB for 32); a larger share is a virtual machine's view of its host, or a
# process pinned to a few CPUs of a large chip, whose neighbours use the rest. Seen on a KVM
# guest with 2 CPUs that reports a 480 MiB L3: a 2-thread copy with ordinary stores falls from
# 59 to 31 GB/s between operands of 32 and 128 MiB, below non-temporal stores' 50 (README,
# "Memory system").
LLC_PER_CPU_MAX = 32 << 20
IDLE_ENV = "CYBURN_IDLE_MIB"
IDLE_SHARE = 16                     # idle reused memory: at most 1/16 of the physical memory


@dataclass
class Cache:
    level: int
    kind: str           # "Data" or "Unified"
    size: int           # bytes
    shared_by: int      # CPUs that share one instance (0: unknown)

    def __str__(self) -> str:
        name = f"L{self.level}{'d' if self.kind == 'Data' else ''}"
        shared = (" per core" if self.shared_by == 1 else
                  f" shared by {self.shared_by} CPUs" if self.shared_by else "")
        return f"{name} {human_size(self.size)}{shared}"


def human_size(nbytes: int) -> str:
    """48 KiB, 2 MiB, 32 MiB, 1.5 GiB."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale and nbytes % (scale // 16) == 0:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes} B"


def _cpu_count(cpu_list: str) -> int:
    """The number of CPUs in a Linux CPU list such as "0-3,8"."""
    count = 0
    for span in cpu_list.strip().split(","):
        first, _, last = span.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def _size(text: str) -> int:
    """'32K' / '32768K' / '1M' / '512' (sysfs's sizes) as bytes."""
    text = text.strip()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text.rstrip("KkMmGg")) * scale


def _from_sysfs() -> list[Cache]:
    found = []
    try:
        for entry in sorted(os.listdir(SYS_CACHE)):
            if not entry.startswith("index"):
                continue
            folder = os.path.join(SYS_CACHE, entry)

            def read(name: str) -> str:
                with open(os.path.join(folder, name)) as f:
                    return f.read().strip()
            kind = read("type")
            if kind in ("Data", "Unified"):
                found.append(Cache(int(read("level")), kind, _size(read("size")),
                                   _cpu_count(read("shared_cpu_list"))))
    except (OSError, ValueError):
        return []
    return found


def _from_sysconf() -> list[Cache]:
    found = []
    for level in (1, 2, 3, 4):
        name = "SC_LEVEL1_DCACHE_SIZE" if level == 1 else f"SC_LEVEL{level}_CACHE_SIZE"
        try:
            size = os.sysconf(name)
        except (ValueError, OSError):
            continue
        if size > 0:
            found.append(Cache(level, "Data" if level == 1 else "Unified", size, 0))
    return found


def caches() -> list[Cache]:
    """The data and unified caches of CPU 0, from Linux's sysfs, else from glibc's sysconf
    names; [] where neither says."""
    return _from_sysfs() or _from_sysconf()


def last_level_cache(found: list[Cache] | None = None) -> int | None:
    """The size in bytes of the last-level cache (None when the OS does not say)."""
    found = caches() if found is None else found
    return max(found, key=lambda c: c.level).size if found else None


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def kernel_cache_sizes(found: list[Cache] | None = None) -> tuple[int, int]:
    """(last-level cache, L1d) in bytes, as the kernels' configure_memory takes them: the
    last-level cache at most LLC_PER_CPU_MAX per usable CPU, and ASSUMED_LAST_LEVEL and
    ASSUMED_L1D for what the OS does not say."""
    found = caches() if found is None else found
    l1d = [c.size for c in found if c.level == 1]
    llc = min(last_level_cache(found) or ASSUMED_LAST_LEVEL, usable_cpus() * LLC_PER_CPU_MAX)
    return llc, l1d[0] if l1d else ASSUMED_L1D


def describe(found: list[Cache] | None = None) -> str:
    """'L1d 32 KiB per core, L2 512 KiB per core, L3 32 MiB shared by 2 CPUs' (or 'unknown')."""
    found = caches() if found is None else found
    return ", ".join(str(c) for c in found) if found else "unknown"


def idle_memory_bytes(environ: Mapping[str, str] = os.environ) -> int:
    """Bytes of freed outputs kept for reuse at most: CYBURN_IDLE_MIB (in MiB; 0 keeps
    none), else 1/IDLE_SHARE of the physical memory (none when the OS does not say)."""
    text = environ.get(IDLE_ENV, "").strip()
    if text:
        try:
            mib = int(text)
        except ValueError:
            mib = -1
        if mib < 0:
            raise ImportError(f"{IDLE_ENV}={text!r} is not a number of MiB (0 or more)")
        return mib << 20
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // IDLE_SHARE
    except (AttributeError, ValueError, OSError):
        return 0
