"""Backpropagate through the top singular triplets: shrink a matrix's leading directions.

Minimizes ‖A − A₀‖² + λ Σᵢ σᵢ(A)·(cᵀuᵢ)² by gradient descent, differentiating S and U through
riemsvd.solve (no full SVD), and checks one gradient against torch.linalg.svd's backward.

Run: ``python examples/differentiate_top_pair.py``.
"""

from __future__ import annotations

import argparse

import torch

import riemsvd
from riemsvd.bench.cli import positive_int


def _loss(u, s, a, a0, c, lam):
    return (a - a0).square().sum() + lam * (s * (c @ u) ** 2).sum()


def run(steps: int = 30, m: int = 120, n: int = 80, k: int = 3, seed: int = 0) -> dict:
    """Run the descent; return the losses and the gradient's relative error against torch's."""
    g = torch.Generator().manual_seed(seed)
    a0 = torch.randn(m, n, generator=g, dtype=torch.float64)
    c = torch.randn(m, generator=g, dtype=torch.float64)
    c = c / c.norm()
    lam = 5.0
    a = a0.clone().requires_grad_()
    opt = torch.optim.SGD([a], lr=0.05)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        u, s, _ = riemsvd.solve(a, k, generator=g)
        loss = _loss(u, s, a, a0, c, lam)
        loss.backward()
        losses.append(float(loss.detach()))
        opt.step()
    # the same gradient through a full SVD
    ours = a.detach().clone().requires_grad_()
    u, s, _ = riemsvd.solve(ours, k, generator=g)
    _loss(u, s, ours, a0, c, lam).backward()
    ref = a.detach().clone().requires_grad_()
    u2, s2, _ = torch.linalg.svd(ref, full_matrices=False)
    _loss(u2[:, :k], s2[:k], ref, a0, c, lam).backward()
    err = float((ours.grad - ref.grad).norm() / ref.grad.norm())
    return {"losses": losses, "gradient_relative_error": err}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=positive_int, default=30, help="descent steps (default 30)")
    p.add_argument("--seed", type=int, default=0, help="the random matrix's seed (default 0)")
    args = p.parse_args()
    out = run(steps=args.steps, seed=args.seed)
    print(f"loss {out['losses'][0]:.4f} -> {out['losses'][-1]:.4f}")
    err = out["gradient_relative_error"]
    print(f"gradient against torch.linalg.svd's backward: relative error {err:.1e}")
