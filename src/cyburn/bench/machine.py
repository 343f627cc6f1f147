"""The machine a cyburn.bench run measures on, read from the OS at run time, and the
ceilings of its memory: cyburn's own probes (pyx/probes.pxi) run with the kernels' threads.

Every kernel has one of four memory patterns; its probe moves the same bytes with as little
arithmetic as a vector loop needs, split between threads as the element-wise kernels split
their arrays:

    read    read one array                      (a reduction: cross_entropy's forward)
    copy    read one, write one                 (softmax, the norms, the activations)
    triad   read two, write one                 (their backward passes)
    adamw   read four, write three, in place    (adamw_step)

A probe that writes runs with ordinary stores and, beyond the last-level cache, also with
non-temporal ones (the kernels' streamed outputs); its ceiling is the faster of the two.
"""
import os
import platform

import numpy as np

import cyburn as cb
from cyburn._dispatch import kernels
from cyburn._machine import SYS_CACHE, caches, human_size, last_level_cache, usable_cpus
from cyburn.bench.timing import best_times

# pattern: (arrays read, arrays written, what it is)
PATTERNS = {
    "read": (1, 0, "read 1 (a reduction)"),
    "copy": (1, 1, "read 1, write 1 (a copy)"),
    "triad": (2, 1, "read 2, write 1 (a triad)"),
    "adamw": (4, 3, "read 4, write 3 (adamw_step's)"),
}


def available_memory():
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def cpu_model():
    """The CPU's model name (with its family and model numbers on Linux)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def describe():
    """Lines saying what the run measures on: CPU, cores, caches, memory, SIMD path, threads."""
    usable = usable_cpus()
    found = caches()
    memory = available_memory()
    return [f"CPU: {cpu_model()}; {os.cpu_count()} CPUs, {usable} usable by this process, "
            f"{cb.get_num_threads()} threads used (cyburn's, and its peers'); "
            f"{cb.simd_path()} SIMD path",
            "caches: " + (", ".join(str(c) for c in found) + f" (from {SYS_CACHE})"
                          if found else "not reported by the OS")
            + (f"; memory: {memory / 2**30:.1f} GiB available" if memory else "")]


# ---- the probes -----------------------------------------------------------------------------------

def streams(traffic):
    """Whether the kernels store an output past the caches when they move `traffic` bytes (the
    rule of cyburn._machine, as the kernels apply it)."""
    return traffic > kernels.memory_rules(cb.get_num_threads())["stream_min_bytes"]


def probes(pattern, operand, streaming=True):
    """name -> callable: the probe of `pattern` on arrays of `operand`'s size and type (the
    operand itself is the array read first, never written), with ordinary stores
    ("ceiling") and, if `streaming` and the pattern writes a new array, non-temporal ones
    ("ceiling nt"). The probes run on cyburn's threads at the time of the call."""
    a = operand.reshape(-1)
    if pattern == "read":
        words = a.view(np.uint32)
        return {"ceiling": lambda: kernels.read_probe(words, cb.get_num_threads())}
    if pattern == "adamw":
        param, exp_avg, exp_avg_sq = (np.zeros_like(a) for _ in range(3))
        return {"ceiling": lambda: kernels.read4_write3_probe(param, a, exp_avg, exp_avg_sq,
                                                              cb.get_num_threads())}
    out = np.empty_like(a)
    if pattern == "copy":
        def probe(stream):
            return lambda: kernels.scale_probe(a, out, 1.0, stream, cb.get_num_threads())
    else:
        b = np.ones_like(a)

        def probe(stream):
            return lambda: kernels.triad_probe(a, b, out, 1.0, stream, cb.get_num_threads())
    calls = {"ceiling": probe(False)}
    if streaming:
        calls["ceiling nt"] = probe(True)
    return calls


def pattern_bytes(pattern, operand_bytes):
    """The bytes a pattern moves over arrays of operand_bytes: each read or written once."""
    reads, writes, _ = PATTERNS[pattern]
    return (reads + writes) * operand_bytes


def ceiling(pattern, operand_bytes, times):
    """GB/s of the faster probe in `times` (seconds per call by contender name)."""
    best = min(t for name, t in times.items() if name.startswith("ceiling"))
    return pattern_bytes(pattern, operand_bytes) / best / 1e9


def ceiling_sizes():
    """(label, working set in bytes) of the header's ceilings: half the last-level cache,
    and four times it (at least 256 MiB) when the memory is there."""
    llc, memory = last_level_cache(), available_memory()
    sizes = [(f"within LLC ({human_size(llc // 2)})", llc // 2)] if llc else []
    streaming = max(4 * llc if llc else 0, 256 << 20)
    if memory is None or 2 * streaming < memory:
        sizes.append((f"streaming ({human_size(streaming)})", streaming))
    return sizes


def ceilings(rounds):
    """The ceiling of every pattern in GB/s at every ceiling_sizes() working set, with
    ordinary and non-temporal stores: {(pattern, size label, "" or "nt"): GB/s}, each
    pattern's probes timed together in interleaved rounds."""
    figures = {}
    for pattern, (reads, writes, _) in PATTERNS.items():
        contenders, moved = {}, {}
        for label, working_set in ceiling_sizes():
            operand = np.ones(working_set // ((reads + writes) * 4), np.float32)
            for name, call in probes(pattern, operand).items():
                key = (pattern, label, "nt" if name.endswith("nt") else "")
                contenders[key], moved[key] = call, pattern_bytes(pattern, operand.nbytes)
        times = best_times(contenders, 0.2, rounds)
        figures.update({key: moved[key] / t / 1e9 for key, t in times.items()})
    return figures


def print_ceilings(figures, rounds):
    print(f"ceilings: cyburn's probes on {cb.get_num_threads()} threads, GB/s counting each "
          f"array read or written once (best of up to {rounds} interleaved rounds; "
          "nt: non-temporal stores)")
    labels = list(dict.fromkeys(label for _, label, _ in figures))
    print(f"  {'pattern':<32}" + "".join(f"{label:>26}" for label in labels))
    for pattern, (_, _, what) in PATTERNS.items():
        cells = []
        for label in labels:
            plain = figures[(pattern, label, "")]
            nt = figures.get((pattern, label, "nt"))
            cells.append(f"{plain:6.1f}" + (f" / {nt:6.1f} nt" if nt else " " * 12))
        print(f"  {what:<32}" + "".join(f"{c:>26}" for c in cells))
    print()
