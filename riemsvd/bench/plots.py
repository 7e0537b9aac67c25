"""The PNG plots of the solver table, per (size, k): residual against products per class, and the time of
each solver per class. matplotlib (the benchmark's extra) draws them; without it there are none.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import numpy as np

from riemsvd.bench.records import Record
from riemsvd.bench.summary import by_size_and_k

__all__ = ["plot"]


def plot(records: list[Record], out: str) -> list[str]:
    """PNG plots per (size, k): residual against products per class, and time per class and solver.

    Returns the paths written; an empty list (with a message) when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'riemsvd[bench]'): no plots", file=sys.stderr)
        return []
    os.makedirs(out, exist_ok=True)
    paths = []
    solvers = list(dict.fromkeys(r.solver for r in records))
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(solvers)}
    for (m, n, k), rs in by_size_and_k(records).items():
        fig = _convergence_figure(plt, rs, colors)
        paths.append(os.path.join(out, f"convergence_{m}x{n}_k{k}.png"))
        fig.savefig(paths[-1], dpi=70)
        plt.close(fig)
        fig = _time_figure(plt, rs, solvers, colors)
        paths.append(os.path.join(out, f"time_{m}x{n}_k{k}.png"))
        fig.savefig(paths[-1], dpi=70)
        plt.close(fig)
    return paths


def _convergence_figure(plt, rs: list[Record], colors: dict):
    """Residual against products, one panel per class: a line for a solver's history, a marker for its
    final residual; the solvers without a product count are not shown."""
    import matplotlib.ticker

    m, n, k, tol = rs[0].m, rs[0].n, rs[0].k, rs[0].tol
    classes = list(dict.fromkeys(r.cls for r in rs))
    cols = min(3, len(classes))
    rows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, c in zip(axes.flat, classes):
        for r in rs:
            if r.cls != c or not r.products or r.residual is None:
                continue
            col, final = colors[r.solver], max(r.residual, 1e-17)
            if r.history:
                h = np.array(r.history, dtype=float)
                ax.plot(h[:, 0], np.maximum(h[:, 1], 1e-17), color=col, lw=1.2, label=r.solver)
                ax.plot([r.products], [final], "o", color=col, ms=4)
            else:
                ax.plot([r.products], [final], "s", color=col, ms=5, label=r.solver)
        ax.axhline(tol, color="gray", ls="--", lw=0.8)
        ax.set(xscale="log", yscale="log", title=c, xlabel="products with A and Aᵀ")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylabel("relative residual")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(classes) :]:
        ax.axis("off")
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.suptitle(
        f"{m}×{n}, k = {k}: residual against products (line: history, marker: final residual; "
        "solvers without a product count are not shown)"
    )
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    return fig


def _time_figure(plt, rs: list[Record], solvers: list[str], colors: dict):
    """The median time of each solver on each class, log scale; hatched where the record does not count."""
    m, n, k = rs[0].m, rs[0].n, rs[0].k
    classes = list(dict.fromkeys(r.cls for r in rs))
    fig, ax = plt.subplots(figsize=(11, 4))
    width = 0.8 / len(solvers)
    labelled = set()
    for j, s in enumerate(solvers):
        for i, c in enumerate(classes):
            rec = next((r for r in rs if r.cls == c and r.solver == s), None)
            if rec is None or rec.time_s is None:
                continue
            ok = rec.status == "ok"
            ax.bar(
                i + (j - (len(solvers) - 1) / 2) * width,
                rec.time_s * 1e3,
                width,
                color=colors[s],
                alpha=1.0 if ok else 0.35,
                hatch=None if ok else "//",
                edgecolor="k",
                lw=0.3,
                label=None if s in labelled else s,
            )
            labelled.add(s)
    ax.set_xticks(range(len(classes)), classes)
    ax.set(yscale="log", ylabel="median time (ms)")
    ax.set_title(f"{m}×{n}, k = {k}: time (hatched: did not reach tol, or failed to find the top k)")
    ax.legend(fontsize=8, ncol=len(solvers), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
