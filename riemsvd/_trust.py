"""``solve(A, k, method="trust-region")``: Riemannian trust-region on St(m, k) × St(n, k).

The Hessian products are the Newton operator of ``_newton``, the model is solved by its truncated CG;
the acceptance and radius rule (:class:`RadiusRule`) is shared with ``riemsvd.optim``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from riemsvd._newton import NewtonOperator, tcg
from riemsvd._operator import Operator
from riemsvd._subspace import _NEAR_PAIR, Outcome, empty_outcome, subspace_svd, verify
from riemsvd._validate import check_radius_rule

__all__ = ["RadiusRule", "trust_region_svd"]


@dataclass(frozen=True)
class RadiusRule:
    """Acceptance of a step and the update of the radius (Absil, Baker, Gallivan 2007, Algorithm 1).

    A step whose ratio ρ of actual to predicted decrease exceeds ``accept`` (ρ′) is taken. The radius
    is multiplied by ``shrink`` where ρ < 1/4 (NaN included), by ``grow`` (up to the largest radius)
    where ρ > 3/4 and the step reached the boundary, and kept otherwise. ``kappa`` and ``theta`` stop
    the inner CG at ‖r_j‖ ≤ ‖r_0‖·min(κ, ‖r_0‖^θ): θ = 1 gives quadratic convergence (their Theorem
    4.13), κ = 0.1 keeps the first steps cheap.
    """

    accept: float = 0.1
    shrink: float = 0.25
    grow: float = 2.0
    kappa: float = 0.1
    theta: float = 1.0

    def __post_init__(self) -> None:
        check_radius_rule(self.accept, self.shrink, self.grow, self.kappa, self.theta)

    def inner_rtol(self, relative_gradient: torch.Tensor) -> torch.Tensor:
        """The inner CG's stop relative to its first residual, min(κ, ‖g‖^θ)."""
        return torch.clamp(relative_gradient**self.theta, max=self.kappa)

    def update(
        self, radius: torch.Tensor, rho: torch.Tensor, boundary: torch.Tensor, max_radius: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(accepted, next radius), elementwise over tensors of the same shape."""
        shrunk = ~(rho >= 0.25)  # also NaN: a step whose decrease could not be evaluated
        grown = (rho > 0.75) & boundary
        nxt = torch.where(shrunk, radius * self.shrink, radius)
        nxt = torch.where(grown, torch.clamp(radius * self.grow, max=max_radius), nxt)
        return rho > self.accept, nxt


# The largest radius of a column's step (x_i, y_i): the retraction qf(U + X) turns a column by
# atan(‖x_i‖), so steps much beyond π/2 per factor only flatten; π·√2 is the typical distance on a
# product of two spheres (manopt's typicaldist), and the first radius is an eighth of it (ABG 2007).
# 2000×1000, k = 1, from random starts: Δ₀ = Δ̄/8 took as many products as Δ̄/2 and Δ̄/32 to 1e-12.
MAX_RADIUS = math.pi * math.sqrt(2)
# Outer iterations by default: quadratic convergence needs ~5 once near, and a random start a few
# tens at most (tests/test_trust.py); this many only where the spectrum gives no gap at all.
DEFAULT_MAXITER = 500
# Outer iterations without a new best residual before giving up (the rounding floor).
_PATIENCE = 20


@dataclass
class _Point:
    """An iterate after Rayleigh–Ritz: Uᵀ A V = diag(s), with the residuals of its columns."""

    u: torch.Tensor
    v: torch.Tensor
    s: torch.Tensor
    ru: torch.Tensor
    rv: torch.Tensor

    def select(self, take: torch.Tensor, other: _Point) -> _Point:
        """This point where ``take`` (shape (...)) is True, ``other`` elsewhere."""
        col, mat = take[..., None], take[..., None, None]
        return _Point(
            torch.where(mat, self.u, other.u),
            torch.where(mat, self.v, other.v),
            torch.where(col, self.s, other.s),
            torch.where(mat, self.ru, other.ru),
            torch.where(mat, self.rv, other.rv),
        )


def _rayleigh_ritz(op: Operator, u, v, av, atu) -> _Point:
    """Rotate (U, V) within their spans so that Uᵀ A V is diagonal, descending: the largest weighted
    Brockett cost on those spans, and a Riemannian gradient orthogonal to them."""
    y, s, zh = torch.linalg.svd(op.left.inner(u, av))
    z = zh.mT
    u, v, av, atu = u @ y, v @ z, av @ z, atu @ y
    row = s.unsqueeze(-2)
    ru = op.left.project_out(u, av - u * row)
    rv = op.right.project_out(v, atu - v * row)
    return _Point(u, v, s, ru, rv)


def _evaluate(op: Operator, u, v) -> _Point:
    return _rayleigh_ritz(op, u, v, op.matmat(v), op.rmatmat(u))


def _relative(point: _Point, op: Operator) -> tuple[torch.Tensor, torch.Tensor]:
    """(per matrix max_i max(‖A vᵢ − σᵢuᵢ‖, ‖Aᵀuᵢ − σᵢvᵢ‖)/σ₁, per column ‖(rᵤ, rᵥ)ᵢ‖/σ₁); 0/0 = 0."""
    nu, nv = op.left.norms(point.ru), op.right.norms(point.rv)
    s1 = point.s[..., :1]
    safe = torch.where(s1 > 0, s1, torch.ones_like(s1))
    worst = torch.maximum(nu, nv)
    rel = torch.where(s1 > 0, worst / safe, torch.where(worst > 0, math.inf, 0.0)).amax(-1)
    col = torch.where(s1 > 0, torch.hypot(nu, nv) / safe, torch.zeros_like(nu))
    return rel, col


def _start(op: Operator, k: int, init, tol: float, generator) -> torch.Tensor:
    """V₀ (..., n, k) with orthonormal columns: random, or the warm start's V0 (its first k columns,
    random ones beside it if it has fewer) plus a random part of relative size 10·tol, so that a V0
    spanning an exact but not leading singular subspace is not a critical point."""
    m, n = op.shape
    shape, dt, dev = op.batch_shape, op.dtype, op.device
    x = op.right.randn(shape, k, dt, dev, generator)
    if init is not None:
        v0 = init[1].detach().to(dtype=dt, device=dev)
        v0 = v0.unsqueeze(-1) if v0.dim() == 1 else v0[..., :k]
        v0 = v0.expand(shape + v0.shape[-2:])
        j = v0.shape[-1]
        v0 = v0 / op.right.norms(v0).unsqueeze(-2).clamp_min(torch.finfo(dt).tiny)
        x = torch.cat([v0 + (10 * tol / math.sqrt(n)) * x[..., :j], x[..., j:]], dim=-1)
    return op.right.qr(x)[0]


def _model_step(op: Operator, point: _Point, live, radius, rtol, inner_max: int):
    """The step (X, Y) of truncated CG on the model of −tr(Uᵀ A V N) at ``point`` within ``radius``
    per column, and the model's decrease Σ μᵢ(⟨rᵢ, sᵢ⟩ − ½⟨sᵢ, K sᵢ⟩), shape (...): K s = r − r_final
    comes from CG's recurrence, so it costs no product. Only the columns where ``live`` (..., k) is
    True move. Returns (K, (X, Y), decrease)."""
    newton = NewtonOperator(op, point.u, point.v, point.s)
    k = point.s.shape[-1]
    mu = torch.arange(k, 0, -1, dtype=point.s.dtype, device=point.s.device)  # N = diag(k, …, 1)
    # Each column's model in units of its gradient (rhs/‖rᵢ‖, radius/‖rᵢ‖: the same step, scaled), so
    # that CG's squares neither underflow nor overflow: a float32 A of scale 1e-8 at a relative
    # residual of 1e-4 has ‖rᵢ‖² ≈ 1e-24, and dᵀKd underflowed to 0 ("negative curvature").
    norm = newton.dot((point.ru, point.rv), (point.ru, point.rv)).sqrt()
    scale = torch.where((norm > 0) & live, 1 / norm, torch.zeros_like(norm)).unsqueeze(-2)
    rhs = (point.ru * scale, point.rv * scale)
    (x, y), stats = tcg(newton, rhs, maxiter=inner_max, rtol=rtol, radius=radius * scale.squeeze(-2))
    decrease = 0.5 * (newton.dot(rhs, (x, y)) + newton.dot((x, y), stats["residual"]))
    back = torch.where(scale > 0, 1 / scale, torch.zeros_like(scale))
    # A column whose curvature is rounding noise (σᵢ/σ₁ below float32's ε: its CG residual grew until
    # the step overflowed) does not move: its residual is at the rounding floor already.
    finite = torch.isfinite(decrease) & torch.isfinite(x).all(-2) & torch.isfinite(y).all(-2)
    keep = torch.where(finite, back.squeeze(-2), torch.zeros_like(decrease)).unsqueeze(-2)
    x, y = torch.nan_to_num(x) * keep, torch.nan_to_num(y) * keep
    decrease = torch.where(finite, mu * norm.square() * decrease, torch.zeros_like(decrease))
    return newton, (x, y), decrease.sum(-1)


def trust_region_svd(
    op: Operator,
    k: int,
    *,
    tol: float,
    maxiter: int | None,
    init,
    generator: torch.Generator | None,
    rule: RadiusRule = RadiusRule(),
) -> Outcome:
    """Leading k singular triplets of ``op`` to relative residual ``tol`` by Riemannian trust-region.

    The cost is Brockett's f(U, V) = −tr(Uᵀ A V N), N = diag(k, …, 1), on St(m, k) × St(n, k)
    (spheres for k = 1). Every iterate is first rotated within its spans by Rayleigh–Ritz (Uᵀ A V =
    Σ diagonal: the best rotation for f, at no product), so that the gradient −(A V − UΣ, AᵀU − VΣ)N
    is orthogonal to the spans and the Hessian's block there is K·N with K the Newton operator: each
    column's model is that of its own triplet, weighted by N. The model is minimized by ``tcg``
    within a radius per column, the step retracted by QR (qf), and taken where ρ > ρ′. Each outer
    iteration costs 2k products for the trial point and 2k per CG step.

    ``maxiter`` counts outer iterations (default :data:`DEFAULT_MAXITER`). Returns an
    :class:`~riemsvd._subspace.Outcome` whose residual comes from fresh products (``verify``).
    """
    m, n = op.shape
    batch = op.batch_shape
    dt = op.dtype
    if batch.numel() == 0:
        return empty_outcome(op, k, "trust-region")
    maxiter = DEFAULT_MAXITER if maxiter is None else maxiter
    eps = torch.finfo(dt).eps
    mu = torch.arange(k, 0, -1, dtype=dt, device=op.device)  # N = diag(k, …, 1)
    inner_max = max(1, m + n - 2 * k)  # the complements' dimension: CG is exact by then
    start = op.matvecs

    v = _start(op, k, init, tol, generator)
    av = op.matmat(v)
    u = op.left.qr(av)[0]  # half a power step: U₀ spans A V₀, and A V₀ is needed anyway
    point = _rayleigh_ritz(op, u, v, av, op.rmatmat(u))
    radius = torch.full(tuple(batch) + (1,), MAX_RADIUS / 8, dtype=dt, device=op.device)
    rel, col = _relative(point, op)
    if init is not None and float(rel.max()) <= _NEAR_PAIR * tol:
        # The start holds singular triplets already: are they the leading ones? The trust region cannot
        # tell, and converged to them (from the exact (u₂, v₂) of a float32 300×200 A with σ₁ − σ₂ =
        # 1e-3 it returned σ₂, converged, on 3 of 20 seeds; a new user's trial). The iteration's probe
        # for a larger value can: it solves from here, its products counted with these.
        return subspace_svd(op, k, tol=tol, maxiter=maxiter, init=init, generator=generator)
    best, since_best = rel, torch.zeros(batch, dtype=torch.long, device=op.device)
    history, iterations, reason, checks = [], 0, None, 0
    target = torch.full_like(rel, tol)
    while True:
        history.append((op.matvecs - start, float(rel.max())))
        done = rel <= target
        verified = None
        if bool(done.all()):
            verified = verify(op, point.u, point.v, None, tol)
            fresh = torch.from_numpy(np.asarray(verified[3])).to(op.device, dt)
            if bool((fresh <= tol).all()):
                reason = "converged"
                break
            if checks == 2:
                reason = "stalled"
                break
            # Rounding: the fresh products found more than the rotated ones; demand what they lacked.
            checks += 1
            ratio = torch.clamp(rel / fresh.clamp_min(torch.finfo(dt).tiny), max=1.0)
            target = torch.where(fresh <= tol, target, 0.5 * tol * ratio)
            done = rel <= target
        if iterations >= maxiter:
            reason = "maxiter"
            break
        if bool(((since_best >= _PATIENCE) | done).all()):
            reason = "stalled"
            break
        iterations += 1
        active = ~done
        # A column whose residual is far below the target has converged: scaled by 1/‖rᵢ‖ its radius
        # could overflow (float32, 2×50, σ₂/σ₁ = 3e-9: a NaN step), and its step would be noise.
        live = active[..., None] & (col > 1e-2 * target[..., None])
        newton, step, predicted = _model_step(op, point, live, radius, rule.inner_rtol(col), inner_max)
        x, y = step
        trial = _evaluate(op, op.left.qr(point.u + x)[0], op.right.qr(point.v + y)[0])
        actual = (mu * (trial.s - point.s)).sum(-1)
        # The decrease is lost in the rounding of the cost near the solution; both terms then get the
        # same small regularization, so that ρ → 1 there (manopt's rho_regularization, relative to f).
        reg = 1e3 * eps * (mu * point.s).sum(-1)
        rho = (actual + reg) / (predicted + reg)
        rho = torch.where(predicted > 0, rho, torch.full_like(rho, math.nan))  # rounding lost the model
        boundary = (newton.dot(step, step).sqrt() >= 0.99 * radius).any(-1, keepdim=True)
        accepted, nxt = rule.update(radius, rho.unsqueeze(-1), boundary, MAX_RADIUS)
        accepted = accepted.squeeze(-1) & active
        radius = torch.where(active.unsqueeze(-1), nxt, radius)
        point = trial.select(accepted, point)
        rel, col = _relative(point, op)
        improved = rel < best
        best = torch.minimum(best, rel)
        since_best = torch.where(improved, torch.zeros_like(since_best), since_best + 1)
    if verified is None:
        verified = verify(op, point.u, point.v, None, tol)
    u, s, v, residual, errors = verified
    s, residual, errors = (torch.from_numpy(np.asarray(a)).to(op.device, dt) for a in (s, residual, errors))
    return Outcome(u, s, v, residual <= tol, residual, iterations, history, errors, reason, 0, "trust-region")
