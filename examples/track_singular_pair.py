"""Track the top singular pair of a layer's weight while it trains, one Riemannian step per training step.

A linear layer is fitted by Adam to a regression target whose weight has a clear top singular value. Beside
it a ``SingularPair`` (u, v) follows σ₁(W) by one ``RiemannianAdam`` step on −uᵀWv per training step
(two matvec-equivalents: W v and Wᵀ u), after one ``refine`` at the start. The same σ₁ is also
computed by ``riemsvd.solve``'s iteration at every step, warm-started from the previous step. Both are
compared with ``torch.linalg.svdvals`` for accuracy, and by matvec-equivalents and time for cost.

Run: ``python examples/track_singular_pair.py [plot.png]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import geoopt
import torch

import riemsvd
from riemsvd import SingularPair
from riemsvd.bench.cli import positive_int


def run(
    steps: int = 300,
    n_in: int = 60,
    n_out: int = 40,
    pair_lr: float = 0.03,
    seed: int = 0,
    plot_path: str | None = None,
) -> dict:
    """Train and track; return per-step relative σ₁ errors and the total cost of both trackers."""
    g = torch.Generator().manual_seed(seed)
    dtype = torch.float64
    # Target weight: rank-1 spike of size 3 above a noise floor, so σ₁ separates as training goes on.
    w_true = 3.0 * torch.outer(
        torch.randn(n_out, generator=g, dtype=dtype), torch.randn(n_in, generator=g, dtype=dtype)
    )
    w_true = w_true / n_in**0.5 + 0.3 * torch.randn(n_out, n_in, generator=g, dtype=dtype) / n_in**0.5
    x = torch.randn(512, n_in, generator=g, dtype=dtype)
    y = x @ w_true.T + 0.1 * torch.randn(512, n_out, generator=g, dtype=dtype)

    layer = torch.nn.Linear(n_in, n_out, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n_out, n_in, generator=g, dtype=dtype) / n_in**0.5)
        layer.bias.zero_()
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)

    pair = SingularPair(n_out, n_in, dtype=dtype, generator=g)
    pair_matvecs = pair.refine(layer.weight).info.matvecs
    pair_opt = geoopt.optim.RiemannianAdam(pair.parameters(), lr=pair_lr)
    prev = None
    solve_matvecs, pair_time, solve_time = 0, 0.0, 0.0
    pair_err, solve_err, sigma = [], [], []
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(layer(x), y).backward()
        opt.step()
        w = layer.weight.detach()

        t0 = time.perf_counter()
        pair_opt.zero_grad()
        est = pair(w)
        (-est.sum()).backward()
        pair_opt.step()
        pair_time += time.perf_counter() - t0
        pair_matvecs += 2  # Wᵀu in the forward, W v in the backward

        t0 = time.perf_counter()
        # the iteration, whose cost is its products: at this size method="auto" takes the dense
        # path (a whole SVD, faster here, which products do not measure)
        result = riemsvd.solve(w, 1, init=prev, generator=g, method="iterative")
        solve_time += time.perf_counter() - t0
        prev = (result.U, result.V)
        solve_matvecs += result.info.matvecs

        s1 = float(torch.linalg.svdvals(w)[0])
        sigma.append(s1)
        pair_err.append(abs(float(pair(w).detach()[0]) - s1) / s1)
        solve_err.append(abs(float(result.S[0]) - s1) / s1)

    if plot_path is not None:
        _plot(pair_err, solve_err, plot_path)
    return {
        "sigma": sigma,
        "pair_relative_error": pair_err,
        "solve_relative_error": solve_err,
        "pair_matvecs": pair_matvecs,
        "solve_matvecs": solve_matvecs,
        "pair_seconds": pair_time,
        "solve_seconds": solve_time,
    }


def _plot(pair_err, solve_err, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    floor = 1e-17  # so that exact zeros show on the log axis
    ax.semilogy([e + floor for e in pair_err], label="SingularPair, 1 RiemannianAdam step / training step")
    ax.semilogy([e + floor for e in solve_err], label="riemsvd.solve every step (warm start)")
    ax.set_xlabel("training step")
    ax.set_ylabel("relative error in σ₁(W)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    # --help had been taken for the plot's file name (a new user's trial)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plot", nargs="?", default=None, help="write both trackers' σ₁ errors to this PNG")
    p.add_argument("--steps", type=positive_int, default=300, help="training steps (default 300)")
    p.add_argument("--seed", type=int, default=0, help="the target's and data's seed (default 0)")
    args = p.parse_args()
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        p.error("writing a plot needs matplotlib: pip install matplotlib, or leave the plot out")
    out = run(steps=args.steps, seed=args.seed, plot_path=args.plot)
    n = len(out["sigma"])
    for name in ("pair", "solve"):
        errs = out[f"{name}_relative_error"]
        print(
            f"{name:5s}: {out[f'{name}_matvecs']:6d} matvec-equivalents, {out[f'{name}_seconds']:.3f} s; "
            f"σ₁ relative error max {max(errs):.1e}, over the last half max {max(errs[n // 2 :]):.1e}"
        )
    print(f"σ₁(W): {out['sigma'][0]:.3f} -> {out['sigma'][-1]:.3f}")
