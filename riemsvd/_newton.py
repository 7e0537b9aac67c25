"""The Newton operator of the leading singular triplets, and truncated CG on it.

Written once; the forward solve uses it for its corrections, the backward for its adjoint solves.
"""

from __future__ import annotations

import math

import torch

from riemsvd._backend import any_in_batch
from riemsvd._operator import Operator

__all__ = ["NewtonOperator", "tcg"]


class NewtonOperator:
    """K(X, Y) = (X Σ − P_U A Y,  Y Σ − P_V Aᵀ X) on the complements of span(U) and span(V).

    At a point (U, V) on St(m, b) × St(n, b) (the product of spheres for b = 1) with Σ = diag(sigma),
    column i is the Newton / Jacobi–Davidson operator of the i-th triplet,
    (σ_i x − P_U A y, σ_i y − P_V Aᵀ x), whose eigenvalues near the top triplets are σ_i ∓ σ_j over the
    triplets j outside the block: positive definite there when σ_b > σ_{b+1}. P_U = I − U Uᵀ is the
    manifold's ``proj_horizontal``, computed in the operator's spaces (``op.left``, ``op.right``), so
    that it holds for vectors split across processes too. Each application costs one block product
    with A and one with Aᵀ.

    Shapes: U (..., m, b), V (..., n, b), sigma (..., b); X (..., m, b), Y (..., n, b).
    """

    def __init__(self, op: Operator, u: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> None:
        self.op, self.u, self.v = op, u, v
        self.sigma = sigma.unsqueeze(-2)

    def project(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project (x, y) onto the complements of span(U) and span(V)."""
        return self.op.left.project_out(self.u, x), self.op.right.project_out(self.v, y)

    def dot(self, a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Column-wise inner products of pairs (x, y) in the product space, shape (..., b)."""
        return self.op.left.dots(a[0], b[0]) + self.op.right.dots(a[1], b[1])

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._applied(x, y, self.op.matmat(y), self.op.rmatmat(x))

    def _applied(self, x, y, ay, atx) -> tuple[torch.Tensor, torch.Tensor]:
        """K (x, y) from the products A y, Aᵀ x."""
        px, py = self.project(ay, atx)
        return x * self.sigma - px, y * self.sigma - py

    def with_residual(self, x: torch.Tensor, y: torch.Tensor):
        """(K (x, y), ‖R‖_F per matrix (...)) in one block product each way, R = (A V − U Σ, Aᵀ U − V Σ)
        the residual block of the triplets the operator is built on (the backward's check of how
        well they resolve σ_b − σ_{b+1}): the columns of V and U ride with y's and x's."""
        b = y.shape[-1]
        ay = self.op.matmat(torch.cat([y, self.v], dim=-1))
        atx = self.op.rmatmat(torch.cat([x, self.u], dim=-1))
        r_u, r_v = ay[..., b:] - self.u * self.sigma, atx[..., b:] - self.v * self.sigma
        residual = self.dot((r_u, r_v), (r_u, r_v)).sum(-1).sqrt()
        return self._applied(x, y, ay[..., :b], atx[..., :b]), residual


def _to_boundary(k: NewtonOperator, x, d, radius: float | torch.Tensor) -> torch.Tensor:
    """τ ≥ 0 with ‖x + τ d‖ = radius, per column."""
    xd, dd, xx = k.dot(x, d), k.dot(d, d), k.dot(x, x)
    dd = torch.where(dd > 0, dd, torch.ones_like(dd))
    disc = (xd * xd + dd * (radius * radius - xx)).clamp_min(0)
    return (disc.sqrt() - xd) / dd


def tcg(
    k: NewtonOperator,
    rhs: tuple[torch.Tensor, torch.Tensor],
    *,
    maxiter: int,
    rtol: float | torch.Tensor,
    radius: float | torch.Tensor | None = None,
    curvature: bool = False,
    budget: int | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor], dict]:
    """Solve K (x, y) = rhs column by column with truncated CG (Steihaug–Toint).

    A column stops when its residual falls below ``rtol`` times that of the right-hand side; when it
    meets negative curvature (with a trust region it then steps to the boundary along that
    direction, without one it keeps its iterate, or the right-hand side itself at the first step:
    the gradient direction); or when its step would leave the trust region of radius ``radius``
    (then it stops on the boundary). ``rtol`` and ``radius`` are floats, or tensors of shape (..., 1)
    (one per matrix of a batch) or (..., b) (one per column). All columns advance together: one
    application of K, that is one block product with A and one with Aᵀ, per iteration. The
    right-hand side is expected in the complements, and the solution then stays there. With
    ``budget`` (the iterations that another way to the solution costs), CG gives up
    (``stats['gave_up']``) once the iterations still to go, at its columns' mean rate so far, exceed
    it at two looks in a row (every 4 iterations from the 8th: fewer say little of the rate, and on
    clustered spectra it swings from one look to the next). The looks read tensors: eager calls only
    (the backward passes a budget only outside torch.func transforms).

    Returns ((x, y), stats) with ``stats['iterations']``, ``stats['negative_curvature']`` and
    ``stats['active']`` (bool tensors of shape (..., b): the columns still short of ``rtol`` when
    ``maxiter`` stopped them) and ``stats['residual']``, the pair rhs − K (x, y) kept by the recurrence
    (the trust-region method reads the model's decrease off it without another product); with
    ``curvature``, ``stats['least_curvature']`` (..., b) too (:func:`_least_curvature`).
    """
    x = (torch.zeros_like(rhs[0]), torch.zeros_like(rhs[1]))
    r = rhs
    d = r
    rr = rr_start = k.dot(r, r)
    stop = rr.sqrt() * rtol
    gave_up, over = False, 0
    if budget is not None:  # log(‖r‖²/‖r₀‖²) that stops a column
        needed = 2 * torch.log(torch.as_tensor(rtol, dtype=rr.dtype, device=rr.device))
    active = rr > 0
    negative = torch.zeros_like(active)
    seen: list | None = [] if curvature else None
    it = 0
    for it in range(1, maxiter + 1):
        kd = k(*d)
        dkd = k.dot(d, kd)
        if seen is not None:
            seen.append((rr, dkd, active))
        curved = dkd > 0
        alpha = rr / torch.where(curved, dkd, torch.ones_like(dkd))
        step = torch.where(active & curved, alpha, torch.zeros_like(alpha))
        hits = active & ~curved
        if radius is not None:
            trial = (x[0] + step.unsqueeze(-2) * d[0], x[1] + step.unsqueeze(-2) * d[1])
            hits = hits | (active & curved & (k.dot(trial, trial) > radius * radius))
            step = torch.where(hits, _to_boundary(k, x, d, radius), step)
        elif it == 1:
            step = torch.where(hits, torch.ones_like(step), step)  # the gradient direction itself
        negative = negative | (active & ~curved)
        a = step.unsqueeze(-2)
        x = (x[0] + a * d[0], x[1] + a * d[1])
        r = (r[0] - a * kd[0], r[1] - a * kd[1])
        rr_new = k.dot(r, r)
        active = active & ~hits & (rr_new.sqrt() > stop)
        if it == maxiter or not any_in_batch(active):
            break
        if budget is not None and it >= 8 and it % 4 == 0:
            # the iterations at the mean rate so far, log(‖r‖²/‖r₀‖²) a step; a column that has not
            # moved projects forever. One read a look
            done = torch.log(rr_new / torch.where(active, rr_start, 1.0))
            projected = torch.where(done < 0, it * needed / done, math.inf)
            over = over + 1 if float(torch.where(active, projected, 0.0).max()) - it > budget else 0
            if over == 2:
                gave_up = True
                break
        beta = (rr_new / torch.where(rr > 0, rr, torch.ones_like(rr))).unsqueeze(-2)
        d = (r[0] + beta * d[0], r[1] + beta * d[1])
        rr = rr_new
    stats = {
        "iterations": it,
        "negative_curvature": negative,
        "residual": r,
        "active": active,
        "gave_up": gave_up,
    }
    if seen is not None:
        stats["least_curvature"] = _least_curvature(seen)
    return x, stats


def _least_curvature(seen: list) -> torch.Tensor:
    """The least Rayleigh quotient dⱼᵀK dⱼ/‖dⱼ‖² over the directions a column of CG took while active,
    (..., b), from what each iteration held: (‖rⱼ‖², dⱼᵀK dⱼ, active). At least K's least eigenvalue
    on the complements, and near it once CG has met its vector. ‖dⱼ‖² comes from the recurrence, not
    a product: dⱼ = rⱼ + βⱼ₋₁dⱼ₋₁ with rⱼ ⊥ dⱼ₋₁ and βⱼ₋₁ = ‖rⱼ‖²/‖rⱼ₋₁‖², so ‖dⱼ‖² = ‖rⱼ‖⁴·Σ_{i≤j} 1/‖rᵢ‖²
    (a dot product an iteration had cost a 384×384 backward 15% of its time)."""
    rr, dkd, active = (torch.stack(x) for x in zip(*seen))
    dd = rr * rr * torch.cumsum(1.0 / torch.where(rr > 0, rr, 1.0), 0)
    quotient = dkd / torch.where(dd > 0, dd, 1.0)
    return torch.where(active & (dd > 0), quotient, math.inf).amin(0)
