"""The report of cyburn.bench: the machine it ran on, each suite's table (rows timed as they
are made), and progress on stderr."""
import os
import shutil
import sys
import textwrap
import time

import numpy as np

import cyburn as cb
from cyburn.bench import machine, ort
from cyburn.bench.timing import ONE, OneThread, best_times

try:
    import torch
except ImportError:          # PyTorch is an optional peer
    torch = None


class Progress:
    """Progress of a run on stderr: one line rewritten in place (with a bar) when stderr is a
    terminal, plain lines otherwise, nothing when disabled."""

    def __init__(self, enabled=True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.start = time.perf_counter()
        self.shown = 0                      # length of the line on screen (terminal only)

    def elapsed(self):
        seconds = int(time.perf_counter() - self.start)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def update(self, done, total, where, what):
        """Report that item `done` (1-based) of `total` (None: unknown) in `where` starts."""
        if not self.enabled:
            return
        sys.stdout.flush()
        known = total is not None and done <= total
        count = f"{done}/{total if known else '?'}"
        if self.tty:
            filled = 20 * (done - 1) // total if known else 0
            bar = "#" * filled + "-" * (20 - filled)
            line = f"[{bar}] {count} {where} {self.elapsed()}  {what}"
            width = shutil.get_terminal_size().columns - 1
            line = line[:width]
            self.stream.write("\r" + line.ljust(self.shown))
            self.shown = len(line)
        else:
            self.stream.write(f"[{count}] {where} {self.elapsed()}  {what}\n")
        self.stream.flush()

    def clear(self):
        """Erase the in-place line (before the results go to the same terminal)."""
        if self.tty and self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
            self.shown = 0


def run_rows(suite, rows, args, progress):
    """Time every row of one suite, print its table and return (row, case, times) for each.
    A row's inputs are made just before it is timed and let go right after."""
    results, skipped = [], []
    for done, row in enumerate(rows, 1):
        if row.skip:
            skipped.append(row)
            continue
        progress.update(done, len(rows), suite, row.name)
        case = row.make()
        contenders = dict(case.contenders)
        if args.scaling:
            for name in ("cyburn", "torch"):
                if name in contenders:
                    contenders[name + ONE] = OneThread(contenders[name])
        times = best_times(contenders, args.seconds, args.rounds)
        case.contenders = None              # let the row's arrays go as soon as possible
        results.append((row, case, {name: t * case.scaled.get(name, 1)
                                    for name, t in times.items()}))
        del contenders
    progress.clear()
    print_table(results)
    for row in skipped:
        print(f"skipped: {row.name} [{row.regime}]: {row.skip}")
    return results


def format_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} us"
    return f"{seconds * 1e3:8.2f} ms"


def roofline(case, times):
    """cyburn's achieved GB/s, the ceiling of its memory pattern (the faster probe, timed in
    the same rounds; None for a row bound by arithmetic or a small one) and the first as a
    percentage of the second."""
    gbs = case.traffic / times["cyburn"] / 1e9
    if "ceiling" not in times:
        return gbs, None, None
    top = machine.ceiling(case.pattern, case.operand_bytes, times)
    return gbs, top, 100 * gbs / top


SHORT = {ort.NAME: "ort"}                # column names of the peers, where shorter


def peers():
    """The peers installed, in the table's order."""
    return ["numpy"] + (["torch"] if torch is not None else []) + ([ort.NAME] if ort.version()
                                                                  else [])


def print_table(results):
    columns = peers()
    scaling = [p for p in ("cyburn", "torch") if any(p + ONE in t for *_, t in results)]
    n = cb.get_num_threads()
    header = (f"{'function':<23} {'case':<38} {'regime':<6} {'mode':<6} {'cyburn':>11} "
              + " ".join(f"{SHORT.get(p, p):>11} {'x' + SHORT.get(p, p):>7}" for p in columns)
              + f" {'GB/s':>6} {'ceiling':>8} {'%ceil':>6}"
              + "".join(f" {p + ' 1->' + str(n):>11}" for p in scaling))
    print(header)
    print("-" * len(header))
    for row, case, times in results:
        ours = times["cyburn"]
        cells = " ".join(f"{format_time(times[p])}{'*' if p in case.scaled else ' '}"
                         f"{times[p] / ours:6.2f}x" if p in times
                         else f"{'no op' if p == ort.NAME else '-':>11} {'-':>7}"
                         for p in columns)
        gbs, top, percent = roofline(case, times)
        ceiling = (f"{top:8.1f} {percent:5.0f}%" if top else f"{'-':>8} {'-':>6}")
        threads = "".join(f" {times[p + ONE] / times[p]:10.2f}x" if p + ONE in times
                          else f" {'-':>11}" for p in scaling)
        print(f"{row.function:<23} {row.label:<38} {row.regime:<6} {row.mode:<6} "
              f"{format_time(ours)} {cells} {gbs:6.1f} {ceiling}{threads}")
    for _, case, times in results:
        if case.note:
            print(case.note(times))
    print()


def print_legend(scaling):
    """What the tables' columns mean (printed once, after the last table)."""
    n = cb.get_num_threads()
    text = (
        "regime: gpt2 = GPT-2 small's shape; stream = the same case grown to a working set of "
        "at least twice the last-level cache; both = a GPT-2 shape that large already. "
        "x<peer> = peer time / cyburn time (higher: cyburn faster); * = timed on a part of the "
        "input (1/16 of the rows, about 16 MiB of a larger input, or one head), the time "
        "scaled to the whole. "
        + (f"ort = ONNX Runtime {ort.version()}, a one-node model per row run through "
           "io_binding into preallocated outputs (in every row), its intra-op threads cyburn's; "
           "no op = no single ONNX operator computes the row's function. " if ort.version()
           else "")
        + "GB/s = the achieved bandwidth, each input read once and each output written once; "
        "ceiling = the GB/s of cyburn's probe of the row's memory pattern (read 1; read 1 "
        "write 1; read 2 write 1; read 4 write 3) on arrays of the row's size, on the same "
        "threads, timed in the same rounds (with ordinary stores, or, where the kernels store "
        "past the cache, the faster of ordinary and non-temporal ones, prefetching as they "
        "do); "
        "%ceil = GB/s / ceiling."
        + (f" <lib> 1->{n} = its time on 1 thread / its time on {n} threads, timed in the same "
           "rounds." if scaling else ""))
    print(textwrap.fill(text, 100) + "\n")


def describe_run(args):
    """One line saying what the run measured on: CPU, SIMD path, threads and versions."""
    from cyburn import __version__
    return (f"{machine.cpu_model()} ({os.cpu_count()} CPUs), {cb.simd_path()} path, "
            f"{cb.get_num_threads()} threads, float32{', --quick' if args.quick else ''}; "
            f"cyburn {__version__}, NumPy {np.__version__}, "
            f"PyTorch {torch.__version__ if torch else 'not installed'}, "
            f"ONNX Runtime {ort.version() or 'not installed'}")
