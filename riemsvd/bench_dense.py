"""The crossover between solve's two paths, and the fit of the cost model that chooses between them.

``python -m riemsvd.bench_dense --out DIR`` times ``solve(..., method="dense")`` and
``method="iterative"`` (best of a few calls) on Gaussian and gradient-like matrices of 13 shapes from
32×32 to 4096×1024 and k from 1 to 128, in float32 and float64; writes the times to
``DIR/dense_crossover.json``, prints the least-squares fit of ``riemsvd._dense._COSTS`` with how
often its choice is slower than the better path, and plots the ratio of the two paths' times against
k/min(m, n) to ``DIR/dense_crossover.png``. docs/algorithm.md ("The dense path") shows a run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

import riemsvd
from riemsvd._dense import _memory_factor
from riemsvd.bench import HelpFormatter, make_matrix, thread_limits

__all__ = ["fit", "main", "measure"]

SHAPES = [(32, 32), (128, 32), (32, 128), (64, 64), (128, 128), (200, 100), (256, 256), (384, 384),
          (1536, 384), (384, 1536), (1024, 1024), (2048, 512), (4096, 1024)]  # fmt: skip
KS = (1, 4, 16, 32, 64, 128)


def _best(call, reps: int) -> float:
    call()
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def measure(dtype: torch.dtype, shapes=SHAPES, ks=KS, progress: bool = True) -> list[dict]:
    """Seconds of each path per (shape, spectrum, k ≤ min(m, n)/2), and the iteration's products."""
    rows = []
    for m, n in shapes:
        for kind in ("gaussian", "gradient"):
            a = make_matrix(kind, m, n, dtype, torch.Generator().manual_seed(0))
            for k in (k for k in ks if k <= min(m, n) // 2):
                reps = 3 if m * n <= 1_000_000 else 1
                gen = torch.Generator().manual_seed(1)
                row = dict(m=m, n=n, k=k, kind=kind)
                row["dense"] = _best(lambda a=a, k=k: riemsvd.solve(a, k, method="dense"), reps)
                iterative = lambda a=a, k=k, g=gen: riemsvd.solve(a, k, method="iterative", generator=g)  # noqa: E731
                row["iterative"] = _best(iterative, reps)
                info = iterative().info
                assert info is not None  # solve always attaches one
                row["products"] = info.matvecs
                rows.append(row)
                if progress:
                    times = f"dense {row['dense']:.4f} s, iterative {row['iterative']:.4f} s"
                    print(f"  {m}×{n} {kind} k={k}: {times}")
    return rows


def fit(rows: list[dict], itemsize: int) -> dict:
    """The cost model's constants fitted to ``rows`` of a dtype of ``itemsize`` bytes (relative least
    squares; the products per k by a grid search on the loss), and the loss of its choice: its time
    over the better path's."""
    m, n, k = (np.array([r[x] for r in rows], float) for x in "mnk")
    p = np.minimum(m, n)
    dense, iterative = np.array([r["dense"] for r in rows]), np.array([r["iterative"] for r in rows])
    products = np.array([r["products"] for r in rows], float)
    # the entries as the model prices them: more beyond the last-level cache (riemsvd._dense), whose
    # factor is measured apart; a product's cost is fitted on the matrices within half the cache
    factor = np.array([_memory_factor(r["m"] * r["n"] * itemsize) for r in rows])
    entries, within = m * n * factor, factor == 1.0
    x = np.stack([m * n * p, p**3, np.ones_like(p)], 1)
    gram, eigen, fixed = np.linalg.lstsq(x / dense[:, None], np.ones_like(dense), rcond=None)[0]
    y = (np.stack([entries, np.ones_like(m)], 1) * products[:, None] / iterative[:, None])[within]
    product, per_product = np.linalg.lstsq(y, np.ones(int(within.sum())), rcond=None)[0]
    best = None
    for a in range(0, 100, 10):
        for b in np.arange(4.0, 20.0, 1.0):
            choose = x @ [gram, eigen, fixed] < (a + b * k) * (product * entries + per_product)
            loss = np.where(choose, dense, iterative) / np.minimum(dense, iterative)
            score = float(np.log(loss).sum())
            if best is None or score < best[0]:
                best = (score, a, b, loss)
    assert best is not None  # the grid of (a, b) is not empty
    _, a, b, loss = best
    return {
        "constants": [gram, eigen, fixed, product, per_product, a, b],
        "geometric_mean_loss": float(np.exp(np.log(loss).mean())),
        "worst_loss": float(loss.max()),
    }


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), sharey=True)
    for ax, (dtype, rows) in zip(np.atleast_1d(axes), results.items()):
        for i, (m, n) in enumerate(sorted({(r["m"], r["n"]) for r in rows})):
            for kind, marker in (("gaussian", "o"), ("gradient", "s")):
                pts = [r for r in rows if (r["m"], r["n"], r["kind"]) == (m, n, kind)]
                x, y = [r["k"] / min(m, n) for r in pts], [r["iterative"] / r["dense"] for r in pts]
                label = f"{m}×{n}" if kind == "gaussian" else None
                ax.plot(x, y, marker=marker, ms=4, lw=1, color=f"C{i % 10}", label=label)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="k / min(m, n)", title=f"{dtype} (○ Gaussian, □ gradient)")
    np.atleast_1d(axes)[0].set_ylabel("iterative time / dense time")
    np.atleast_1d(axes)[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    about = __doc__.split("\n\n")[0]
    ap = argparse.ArgumentParser(
        prog="python -m riemsvd.bench_dense", description=about, formatter_class=HelpFormatter
    )
    ap.add_argument("--out", default="bench-out", help="directory for the JSON and the plot")
    ap.add_argument(
        "--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"], help="dtypes"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch and BLAS threads (None: torch's)")
    ap.add_argument("--no-plot", action="store_true", help="skip the plot")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    results = {}
    with thread_limits(args.threads or torch.get_num_threads()):
        for name in args.dtypes:
            print(name)
            results[name] = measure(getattr(torch, name))
            f = fit(results[name], getattr(torch, name).itemsize)
            names = "gram, eigen, fixed, product, per product, products, per k"
            print(f"  constants ({names}): {[float(c) for c in f['constants']]}")
            print(f"  the model's choice / the better path: {f['geometric_mean_loss']:.3f} (geometric mean), "
                  f"{f['worst_loss']:.2f} at worst")  # fmt: skip
    with open(os.path.join(args.out, "dense_crossover.json"), "w") as fh:
        json.dump(results, fh, indent=1)
    if not args.no_plot:
        plot(results, os.path.join(args.out, "dense_crossover.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
