"""Charts of a cyburn.bench run (--plot FILE.png; needs matplotlib: pip install 'cyburn[plot]'):
FILE.png, the speed-up of cyburn against each peer per row (log scale), and
FILE-scaling.png, the roofline and, with --scaling, the 1 -> N thread speed-up."""
import os

import numpy as np

import cyburn as cb
from cyburn.bench import ort
from cyburn.bench.report import describe_run, roofline
from cyburn.bench.timing import ONE


def _row_label(row):
    return f"{row.function}  {row.label}  [{row.mode}]"


def _bar_text(ax, bars, values, fmt):
    for bar, v in zip(bars, values):
        if v == v:                          # not NaN (a missing contender)
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + fmt(v),
                    va="center", ha="left", fontsize=6)


def _speedup_text(v):
    return f"{v:.2f}x" if v < 10 else f"{v:.0f}x"


def _suite_lines(ax, results):
    """Thin lines between suites."""
    for i, (row, *_) in enumerate(results):
        if i and row.suite != results[i - 1][0].suite:
            ax.axhline(i - 0.5, color="0.6", lw=0.6)


def plot(results, path, args):
    """Write the speed-up chart to `path` and the roofline + thread scaling one next to it
    (`<stem>-scaling<suffix>`); return both paths."""
    from matplotlib.figure import Figure     # imported here: matplotlib is an optional extra

    n_rows = len(results)
    labels = [_row_label(row) for row, *_ in results]
    y = np.arange(n_rows)
    height = 1.7 + 0.28 * n_rows
    title = describe_run(args)
    peers = [("torch", "vs PyTorch", "tab:orange"), (ort.NAME, "vs ONNX Runtime", "tab:red"),
             ("numpy", "vs NumPy", "tab:blue")]
    peers = [p for p in peers if any(p[0] in t for *_, t in results)]

    fig = Figure(figsize=(10.5, height), layout="constrained")
    ax = fig.add_subplot()
    bar_h = 0.8 / len(peers)
    for k, (peer, legend, color) in enumerate(peers):
        ratios = [t[peer] / t["cyburn"] if peer in t else float("nan") for *_, t in results]
        bars = ax.barh(y - 0.4 + bar_h * (k + 0.5), ratios, height=bar_h, color=color,
                       label=f"cyburn {legend} (its time / cyburn's)")
        _bar_text(ax, bars, ratios, _speedup_text)
    ax.set_xscale("log")
    ax.axvline(1, color="black", lw=1, ls="--")
    ax.set_yticks(y, labels, fontsize=7.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    _suite_lines(ax, results)
    finite = [t[p] / t["cyburn"] for *_, t in results for p, *_ in peers if p in t]
    ax.set_xlim(min(0.5, min(finite) / 1.5), max(finite) * 3)
    ax.set_xlabel("speed-up of cyburn (log scale; right of the dashed 1x line: cyburn faster)")
    ax.grid(axis="x", which="major", color="0.85", lw=0.6)
    ax.set_axisbelow(True)
    fig.legend(loc="outside lower center", ncols=len(peers), fontsize=8, frameon=False)
    fig.suptitle(f"cyburn speed-up per kernel (best of interleaved rounds)\n{title}",
                 fontsize=9)
    fig.savefig(path, dpi=110)

    root, ext = os.path.splitext(path)
    scaling_path = f"{root}-scaling{ext or '.png'}"
    threaded = [p for p in ("cyburn", "torch") if any(p + ONE in t for *_, t in results)]
    n = cb.get_num_threads()
    fig = Figure(figsize=(13 if threaded else 10, height), layout="constrained")
    axes = fig.subplots(1, 2 if threaded else 1, sharey=True, squeeze=False)[0]
    ax = axes[0]
    achieved = [roofline(case, t) for _, case, t in results]
    percents = [float("nan") if p is None else p for *_, p in achieved]
    bars = ax.barh(y, percents, height=0.6, color="tab:green")
    _bar_text(ax, bars, [g if p == p else float("nan") for (g, *_), p in zip(achieved, percents)],
              lambda g: f"{g:.1f} GB/s")
    ax.axvline(100, color="black", lw=1, ls="--")
    ax.set_xlim(0, max(150, max(p for p in percents if p == p) * 1.3))
    ax.set_xlabel("roofline: achieved GB/s as % of the probe of the row's memory pattern",
                  fontsize=9)
    ax.set_yticks(y, labels, fontsize=7.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.grid(axis="x", color="0.85", lw=0.6)
    ax.set_axisbelow(True)
    _suite_lines(ax, results)
    if threaded:
        ax = axes[1]
        colors = {"cyburn": "tab:purple", "torch": "tab:orange"}
        bar_h = 0.8 / len(threaded)
        for k, lib in enumerate(threaded):
            ratios = [t[lib + ONE] / t[lib] if lib + ONE in t else float("nan")
                      for *_, t in results]
            bars = ax.barh(y - 0.4 + bar_h * (k + 0.5), ratios, height=bar_h,
                           color=colors[lib], label=lib)
            _bar_text(ax, bars, ratios, lambda v: f"{v:.2f}x")
        ax.axvline(1, color="black", lw=1, ls="--")
        ax.axvline(n, color="0.4", lw=1, ls=":")
        finite = [t[lib + ONE] / t[lib] for *_, t in results for lib in threaded if lib + ONE in t]
        ax.set_xlim(0, max(n * 1.3, max(finite) * 1.2))
        ax.set_xlabel(f"thread scaling: time on 1 thread / on {n} (dotted: ideal)", fontsize=9)
        ax.grid(axis="x", color="0.85", lw=0.6)
        ax.set_axisbelow(True)
        fig.legend(loc="outside lower right", ncols=len(threaded), fontsize=8, frameon=False,
                   title=f"1 -> {n} threads:", title_fontsize=8, alignment="left")
        _suite_lines(ax, results)
    fig.suptitle("cyburn roofline: achieved GB/s (at the bars) against the probe of each "
                 "row's memory pattern, same threads and rounds" + (f", and 1 -> {n} thread scaling" if threaded
                                                else "") + f"\n{title}", fontsize=9)
    fig.savefig(scaling_path, dpi=110)
    return path, scaling_path
