"""Certified spectral norms against the full SVD and Gram iteration, on the same dense matrices.

``python -m riemsvd.bench_bounds`` prints, per matrix, the median time of each way to an upper bound
on ‖A‖₂ (repetitions interleaved) as a ratio to ``torch.linalg.matrix_norm(A, 2)``, and how far above
‖A‖₂ each bound is:

- ``riemsvd``: ``riemsvd.norm_bounds(A)``, the default call (certified; its ``method`` is printed);
- ``matrix_norm``: ‖A‖₂ from a full SVD's values: exact to rounding, but not a bound (no margin);
- ``gram t``: Gram iteration (Delattre, Barthélemy, Araujo, Allauzen, ICML 2023): G₀ = A,
  G_{i+1} = G_iᵀG_i rescaled, ‖A‖₂ ≤ ‖G_t‖_F^{1/2^t}; an upper bound in exact arithmetic, its
  rounding not bounded.

``--plot PATH`` draws upper/‖A‖₂ − 1 against time for every case. ``--convs`` runs the 3×3 Conv2d
layers of ``CONVS`` instead (:func:`run_convs`): circular padding, whose norm is the largest over
frequencies of the FFT's blocks' σ₁, and zero padding.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import time
from typing import Callable, cast

import torch

import riemsvd
from riemsvd.bench import HelpFormatter, make_matrix, positive_int, shape_arg, thread_limits

__all__ = ["fourier_blocks", "gram_iteration", "main", "run", "run_convs"]

SIZES = ((384, 384), (1536, 384), (384, 1536), (2000, 1000), (4096, 1024), (2048, 2048))
CLASSES = ("weight", "gaussian", "flat", "cluster", "decay", "rankdef")
GRAM_STEPS = (6, 12, 20)


def gram_iteration(a: torch.Tensor, steps: int) -> float:
    """Gram iteration's bound ‖A‖₂ ≤ ‖G_t‖_F^{1/2^t}, each G_i rescaled to unit Frobenius norm
    (its logarithm carried), in A's dtype; for a batch (…, m, n), real or complex, the largest
    matrix's bound (a convolution's frequencies)."""
    g = a if a.shape[-1] <= a.shape[-2] else a.mT
    # log of the bound so far: σ₁(A)^{2^i} = e^{2^i·log_scale}·σ₁(G_i)
    log_scale = torch.zeros(g.shape[:-2], dtype=torch.float64)
    for i in range(steps):
        f = torch.linalg.matrix_norm(g).double()
        f = torch.where(f > 0, f, torch.ones_like(f))  # a zero matrix stays zero: its bound 0
        log_scale += f.log() / 2**i
        g = g / f.to(g.dtype)[..., None, None]
        g = g.mH @ g
    last = torch.linalg.matrix_norm(g).double()
    return float((log_scale + last.log() / 2**steps).exp().max())


def _matrix(kind: str, m: int, n: int, gen: torch.Generator) -> torch.Tensor:
    r = min(m, n)
    if kind == "flat":  # σ uniform on [0.9, 1]
        s = 0.9 + 0.1 * torch.rand(r, generator=gen, dtype=torch.float64)
    elif kind == "rankdef":  # half the values exactly zero
        s = torch.cat([torch.linspace(1.0, 0.1, r // 2, dtype=torch.float64), torch.zeros(r - r // 2)])
    else:
        return make_matrix(kind, m, n, torch.float64, gen)
    q1 = torch.linalg.qr(torch.randn(m, r, generator=gen, dtype=torch.float64))[0]
    q2 = torch.linalg.qr(torch.randn(n, r, generator=gen, dtype=torch.float64))[0]
    return (q1 * s) @ q2.mT


def run(
    sizes=SIZES, classes=CLASSES, reps: int = 3, gram_steps=GRAM_STEPS, progress=print, pause: float = 0.2
) -> list[dict]:
    """One row per matrix (see the module's docstring). Each timed call follows a ``pause``: the BLAS
    threads of one call spin for a while after it and slowed the next one (torch.linalg.matrix_norm
    of a 2000×1000 matrix: 179 ms alone, 238 ms right after norm_bounds)."""
    rows = []
    for m, n in sizes:
        for kind in classes:
            a = _matrix(kind, m, n, torch.Generator().manual_seed(0))
            calls = {
                "riemsvd": functools.partial(_seeded_bounds, a),
                "matrix_norm": lambda a=a: torch.linalg.matrix_norm(a, 2),
            }
            # mypy cannot infer the type of a lambda with default arguments here
            calls |= {f"gram {t}": (lambda a=a, t=t: gram_iteration(a, t)) for t in gram_steps}  # type: ignore[misc]
            results, times = _timed(calls, reps, pause)
            true = float(torch.linalg.svdvals(a)[0])
            base = statistics.median(times["matrix_norm"])
            row = {"case": f"{m}×{n} {kind}", "matrix_norm_s": base, "method": results["riemsvd"].method}
            for name in calls:
                value = results[name]
                upper = float(value.upper) if name == "riemsvd" else float(value)
                row[name] = {
                    "time_ratio": statistics.median(times[name]) / base,
                    "excess": upper / true - 1 if true > 0 else 0.0,
                }
            row["riemsvd"]["certified"] = bool(results["riemsvd"].certified)
            rows.append(row)
            if progress is not None:
                progress(_line(row))
    return rows


# (channels, input size, padding) of bias-free 3×3 Conv2d layers: ResNet-like widths at their sizes
CONVS = (
    (16, 16, "circular"),
    (64, 32, "circular"),
    (64, 56, "circular"),
    (128, 28, "circular"),
    (256, 14, "circular"),
    (512, 7, "circular"),
    (16, 16, "zeros"),
    (64, 32, "zeros"),
)


def fourier_blocks(layer: torch.nn.Conv2d, size: int) -> torch.Tensor:
    """The matrices (size·size, c_out, c_in) of a stride-1 circular Conv2d at each frequency: the
    FFT of its kernel placed on the grid (Sedghi, Gupta and Long, ICLR 2019)."""
    w = layer.weight.detach().double()
    placed = torch.zeros(w.shape[:2] + (size, size), dtype=torch.float64)
    placed[..., : w.shape[2], : w.shape[3]] = w
    return torch.fft.fft2(placed).permute(2, 3, 0, 1).reshape(size * size, *w.shape[:2])


def _timed(calls: dict, reps: int, pause: float) -> tuple[dict, dict[str, list[float]]]:
    """(each call's value, its times): a warm-up call each, then ``reps`` rounds of all of them in
    turn, each after a pause of ``pause`` seconds (see :func:`run`)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    results = {name: call() for name, call in calls.items()}  # warm-up, and the values
    for _ in range(reps):
        for name, call in calls.items():
            time.sleep(pause)
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return results, times


def _seeded_bounds(a) -> riemsvd.NormBounds:
    return riemsvd.norm_bounds(a, generator=torch.Generator().manual_seed(1))


def _largest_block_norm(layer: torch.nn.Conv2d, size: int) -> float:
    return float(torch.linalg.svdvals(fourier_blocks(layer, size))[:, 0].max())


def _gram_on_blocks(layer: torch.nn.Conv2d, size: int, steps: int) -> float:
    return gram_iteration(fourier_blocks(layer, size), steps)


def run_convs(
    cases=CONVS, reps: int = 3, gram_steps=GRAM_STEPS, progress=print, pause: float = 0.2
) -> list[dict]:
    """One row per layer (float64, torch's default init, seeded): ``riemsvd.norm_bounds`` of
    ``riemsvd.linear_operator(layer, (c, size, size))``, the FFT's blocks' SVDs (``fft svd``: the
    circular layer's norm, exact to rounding but not a bound; the time base) and Gram iteration on
    those blocks (the largest block's bound). A zero-padded layer's reference is the SVD of its
    matrix written out where that has at most 4096 columns, else none (excess NaN)."""
    rows = []
    for channels, size, padding in cases:
        torch.manual_seed(0)
        layer = torch.nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding, bias=False).double()
        op = riemsvd.linear_operator(layer, (channels, size, size))
        calls: dict[str, Callable[[], object]] = {
            "riemsvd": functools.partial(_seeded_bounds, op),
            "fft svd": functools.partial(_largest_block_norm, layer, size),
        }
        calls |= {f"gram {t}": functools.partial(_gram_on_blocks, layer, size, t) for t in gram_steps}
        results, times = _timed(calls, reps, pause)
        bounds = cast(riemsvd.NormBounds, results.pop("riemsvd"))
        if padding == "circular":
            true = cast(float, results["fft svd"])
        elif channels * size * size <= 4096:
            eye = torch.eye(channels * size * size, dtype=torch.float64).reshape(-1, channels, size, size)
            with torch.no_grad():
                true = float(torch.linalg.svdvals(layer(eye).reshape(eye.shape[0], -1))[0])
        else:
            true = math.nan
        base = statistics.median(times["fft svd"])
        uppers = {"riemsvd": float(bounds.upper)} | {
            name: cast(float, value) for name, value in results.items()
        }
        row: dict = {
            "case": f"Conv2d {channels}, {size}×{size}, {padding}",
            "fft_svd_s": base,
            "method": bounds.method,
        }
        for name, upper in uppers.items():
            row[name] = {"time_ratio": statistics.median(times[name]) / base, "excess": upper / true - 1}
        row["riemsvd"] |= {
            "certified": bool(bounds.certified),
            "upper_over_lower": float(bounds.upper / bounds.lower) - 1,
        }
        rows.append(row)
        if progress is not None:
            progress(_line(row))
    return rows


def _line(row: dict) -> str:
    base = "matrix_norm" if "matrix_norm_s" in row else "fft svd"
    parts = [f"{row['case']:22s} {base} {row[base.replace(' ', '_') + '_s'] * 1e3:8.1f} ms"]
    for name, fig in row.items():
        if isinstance(fig, dict):
            parts.append(f"{name} {fig['time_ratio']:5.2f}× {fig['excess']:+.1e}")
    return " | ".join(parts) + f" | {row['method']}"


def plot(rows: list[dict], path: str, base: str = "torch.linalg.matrix_norm(A, 2)") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = [k for k, v in rows[0].items() if isinstance(v, dict)]
    for name, marker in zip(names, "os^vD"):
        xs = [r[name]["time_ratio"] for r in rows]
        ys = [max(r[name]["excess"], 1e-17) for r in rows]
        ax.scatter(xs, ys, marker=marker, label=name, alpha=0.7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"time / {base}")
    ax.set_ylabel("upper / ‖A‖₂ − 1")
    ax.axhline(1e-6, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=8)
    ax.set_title("Upper bounds on ‖A‖₂, float64, 2-core CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m riemsvd.bench_bounds", description=__doc__, formatter_class=HelpFormatter
    )
    p.add_argument("--sizes", type=shape_arg, nargs="+", default=list(SIZES), help="m×n shapes")
    p.add_argument("--classes", nargs="+", default=list(CLASSES), choices=CLASSES)
    p.add_argument("--reps", type=positive_int, default=3, help="interleaved repetitions per case")
    p.add_argument("--gram-steps", type=int, nargs="*", default=list(GRAM_STEPS), help="Gram iteration's t")
    p.add_argument("--pause", type=float, default=0.2, help="seconds before each timed call")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch and BLAS threads")
    p.add_argument(
        "--convs",
        action="store_true",
        help="the convolutions of CONVS instead of dense matrices (--sizes and --classes do not apply)",
    )
    p.add_argument("--json", help="write the rows to this file")
    p.add_argument("--plot", help="write the plot to this PNG file")
    args = p.parse_args(argv)
    sizes = args.sizes
    with thread_limits(args.threads):
        if args.convs:
            rows = run_convs(reps=args.reps, gram_steps=args.gram_steps, pause=args.pause)
        else:
            rows = run(sizes, args.classes, args.reps, args.gram_steps, pause=args.pause)
    base = "the blocks' SVDs" if args.convs else "torch.linalg.matrix_norm(A, 2)"
    ratios = [r["riemsvd"]["time_ratio"] for r in rows]
    excess = [r["riemsvd"]["excess"] for r in rows if not math.isnan(r["riemsvd"]["excess"])]
    print(
        f"riemsvd / {base}: geometric mean {math.exp(statistics.fmean(map(math.log, ratios))):.2f}, "
        f"max {max(ratios):.2f}; largest upper/‖A‖₂ − 1: {max(excess, default=math.nan):.1e}; "
        f"certified: {sum(r['riemsvd']['certified'] for r in rows)} of {len(rows)}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        plot(rows, args.plot, base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
