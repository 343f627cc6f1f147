"""Side-by-side benchmark: cyburn vs its NumPy reference, PyTorch and ONNX Runtime (the last
two when installed: pip install 'cyburn[bench]' brings onnxruntime and onnx).

    python -m cyburn.bench            # a representative set of rows, float32, all threads
                                      # (GPT-2 small shapes; about 3 minutes on 2 cores)
    python -m cyburn.bench --full     # every row, then the measurements of whole suites
    python -m cyburn.bench --quick    # fewer repetitions
    python -m cyburn.bench norm       # one suite: softmax, norm, xent, attention, act, gpt2,
                                      # compose (its representative rows, and what it
                                      # measures beyond rows: e.g. gpt2's training step)
    python -m cyburn.bench --scaling  # also time cyburn and torch on 1 thread (1->N thr)
    python -m cyburn.bench --plot docs/bench.png   # and draw charts (implies --scaling)

Every row times its contenders interleaved (one call of each per round, repeated), so
they share the machine's state; the table reports each one's best time and the ratios against
cyburn from the same run. A large row times the NumPy reference on 1/16 of its input (about
16 MiB of a larger one) and multiplies the time to the whole (marked *): in float64 with
temporaries it would otherwise take most of the run.

The report opens with the machine (CPU, cores, caches as the OS reports them, SIMD path,
threads) and the ceilings of its memory: cyburn's probes of the kernels' four memory patterns
(read 1; read 1 write 1; read 2 write 1; read 4 write 3: cyburn.bench.machine), on the same
threads, within the last-level cache and streaming from memory. In each row, GB/s counts the
bytes the kernel must read and write, and %ceil compares it with the probe of the row's own
pattern on arrays of the row's size, timed in the same rounds.

Every large case runs in two regimes: GPT-2 small's shape ("gpt2") and a streaming variant
("stream") grown along an axis it does not reduce until its arrays hold at least twice the
last-level cache detected at run time (skipped, with the reason, when the memory is short);
a GPT-2 shape that large already is one row ("both"). With --scaling, cyburn (and torch) also run on one thread in the same rounds, and
"1->N" is the one-thread time divided by the N-thread time.

--plot FILE.png (needs matplotlib: pip install 'cyburn[plot]') writes two charts:
FILE.png, the speed-up of cyburn against PyTorch and NumPy per row (log scale), and
FILE-scaling.png, the roofline (achieved GB/s as % of the ceiling) and the 1 -> N thread
speed-up of cyburn and torch (--plot turns --scaling on; --no-scaling leaves that panel
out). Progress goes to stderr: one line updated in place on a terminal, plain lines otherwise.
"""
import argparse
import importlib.util
import os
import sys

import numpy as np

import cyburn as cb
from cyburn.bench import cases, machine, ort
from cyburn.bench.compose import run_compose
from cyburn.bench.gpt2 import run_gpt2
from cyburn.bench.report import Progress, print_legend, run_rows
from cyburn.bench.timing import OneThread

try:
    import torch
except ImportError:          # PyTorch is an optional peer
    torch = None

# Suites that time and print in their own way: name -> run(args, progress).
OWN_TABLE_SUITES = {"compose": run_compose}
ALL_SUITES = [*cases.SUITES, *OWN_TABLE_SUITES]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cyburn.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true",
                        help="every row of every suite named (default: the representative "
                             "rows), and each suite's measurements beyond its rows")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--threads", type=int, default=None, help="threads for cyburn and torch")
    parser.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=None,
                        help="also time cyburn and torch on 1 thread, in the same rounds, and "
                             "print their 1->N thread speed-up (about 1.5x the run time; "
                             "default: on with --plot, else off)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="after the run, write the speed-up chart to FILE.png and the "
                             "roofline (and, with --scaling, thread scaling) chart to "
                             "FILE-scaling.png; needs matplotlib (pip install 'cyburn[plot]')")
    parser.add_argument("--no-progress", action="store_true",
                        help="do not report progress on stderr")
    parser.add_argument("suites", nargs="*", metavar="SUITE",
                        help=f"what to run: {', '.join(ALL_SUITES)} (default: every suite "
                             "of rows; with --full, all)")
    args = parser.parse_args(argv)
    named = set(args.suites)                # suites named run their extra measurements too
    if not args.suites:
        args.suites = list(ALL_SUITES if args.full else cases.SUITES)
    extras = named | (set(args.suites) if args.full else set())
    for suite in args.suites:
        if suite not in ALL_SUITES:
            parser.error(f"unknown suite {suite!r}; choose from {', '.join(ALL_SUITES)}")
    if args.plot:                           # fail now, not after a long run
        if importlib.util.find_spec("matplotlib") is None:
            parser.error("--plot needs matplotlib, which is not installed: "
                         "pip install 'cyburn[plot]' (or pip install matplotlib)")
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            parser.error(f"--plot: no directory {folder!r}")
    if args.scaling is None:
        args.scaling = bool(args.plot)
    args.seconds, args.rounds = (0.2, 10) if args.quick else (0.5, 20)
    if args.threads:
        cb.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(cb.get_num_threads())
    if args.scaling and cb.get_num_threads() == 1:
        print("--scaling: cyburn runs on 1 thread already; no scaling to measure",
              file=sys.stderr)
        args.scaling = False
    print("\n".join(machine.describe()))
    cb.show_config()
    print(f"numpy {np.__version__}; torch {torch.__version__ if torch else 'not installed'}; "
          f"onnxruntime {ort.version() or 'not installed'}; threads {cb.get_num_threads()}")
    if args.scaling and not OneThread.blas_limited():
        print("(threadpoolctl not installed: on 1 thread, linear_cross_entropy's NumPy matrix "
              "products still use every BLAS thread)")
    print()
    progress = Progress(enabled=not args.no_progress)
    progress.update(1, 1, "machine", "the ceilings of each memory pattern")
    figures = machine.ceilings(args.rounds)
    progress.clear()
    machine.print_ceilings(figures, args.rounds)
    results = []
    for i, suite in enumerate(args.suites, 1):
        name = suite if len(args.suites) == 1 else f"{suite} ({i}/{len(args.suites)})"
        if suite in OWN_TABLE_SUITES:
            OWN_TABLE_SUITES[suite](args, progress)
            continue
        results += run_rows(name, cases.rows([suite], args.full), args, progress)
    if results:
        print_legend(args.scaling)
    if "xent" in extras:
        progress.update(1, 1, "xent", "linear_cross_entropy peak memory, in fresh processes")
        cases.run_linear_cross_entropy_memory(args, progress)
    if "gpt2" in extras:
        run_gpt2(args, progress)
    if "softmax" in extras:
        progress.update(1, 1, "softmax", "softmax on every SIMD path, in fresh processes")
        cases.run_simd_levels(args, progress)
    if args.plot:
        from cyburn.bench.plot import plot
        for written in plot(results, args.plot, args):
            print(f"wrote {written}")


if __name__ == "__main__":
    main()
