"""The top-k singular vectors of a weight's gradient at every step, warm-started (the seed's use case).

A low-rank optimizer (GaLore-style) projects each weight's gradient on its top-k singular subspace.
Here a small regression model is trained with plain SGD while, at each step, riemsvd finds the top k
singular triplets of one layer's gradient — cold and warm-started from the previous step — and they
are checked against torch.linalg.svd.

Run: ``python examples/gradient_subspace.py``.
"""

from __future__ import annotations

import argparse

import torch

import riemsvd
from riemsvd.bench.cli import positive_int


def run(steps: int = 20, k: int = 4, width: int = 256, seed: int = 0) -> dict:
    """Train for ``steps`` steps; return the products per step (cold, warm) and the worst σ error."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, width, generator=g, dtype=torch.float64)
    y = torch.tanh(x @ torch.randn(width, 32, generator=g, dtype=torch.float64) / width**0.5)
    model = torch.nn.Sequential(
        torch.nn.Linear(width, 2 * width), torch.nn.Tanh(), torch.nn.Linear(2 * width, 32)
    ).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    weight = model[0].weight  # (2·width) × width
    cold_products, warm_products, worst_error = [], [], 0.0
    previous = None
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        grad = weight.grad.detach()
        # The iterative method on purpose, to compare its cold and warm starts; on small gradients
        # method="auto" would take the dense path, which has no use for a warm start.
        cold = riemsvd.solve(grad, k, generator=g, method="iterative")
        warm = riemsvd.solve(grad, k, init=previous, generator=g, method="iterative") if previous else cold
        previous = (warm.U, warm.V)
        ref = torch.linalg.svdvals(grad)[:k]
        worst_error = max(worst_error, float((warm.S - ref).abs().max() / ref[0]))
        cold_products.append(cold.info.matvecs)
        warm_products.append(warm.info.matvecs)
        opt.step()
    return {
        "cold_products": cold_products,
        "warm_products": warm_products,
        "worst_relative_sigma_error": worst_error,
        "final_loss": float(loss.detach()),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=positive_int, default=20, help="training steps (default 20)")
    p.add_argument("--k", type=positive_int, default=4, help="singular triplets a step (default 4)")
    p.add_argument("--seed", type=int, default=0, help="the model's and data's seed (default 0)")
    args = p.parse_args()
    out = run(steps=args.steps, k=args.k, seed=args.seed)
    cold, warm = out["cold_products"][1:], out["warm_products"][1:]
    print(f"products per step, cold start: mean {sum(cold) / len(cold):.0f}")
    print(f"products per step, warm start: mean {sum(warm) / len(warm):.0f}")
    print(f"worst |σ − σ_ref| / σ₁ over the run: {out['worst_relative_sigma_error']:.1e}")
