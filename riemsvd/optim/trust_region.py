"""``RiemannianTrustRegion``: a second-order ``torch.optim.Optimizer`` for geoopt parameters.

Gradients and Hessian-vector products by autograd (double backward), made Riemannian by each
parameter's manifold; the model solved by truncated CG (Steihaug–Toint) within the trust region.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import geoopt
import torch

from riemsvd._result import ConvergenceWarning, callers_level
from riemsvd._trust import RadiusRule
from riemsvd._validate import (
    as_number,
    check_closure,
    check_manifold,
    check_on_manifolds,
    check_param_groups,
    check_trust_region_args,
    check_trust_region_params,
)
from riemsvd.manifolds import Grassmann, Sphere, Stiefel

__all__ = ["RiemannianTrustRegion", "TrustRegionInfo"]

Vectors = list  # one tensor per parameter: a tangent vector of the product manifold


@dataclass
class TrustRegionInfo:
    """What the last :meth:`RiemannianTrustRegion.step` did. ``stop_reason`` says whether the
    optimization is done, what a loop ``while not (opt.info and opt.info.stop_reason)`` waits for, and
    ``converged`` (a property) whether it got there by the gradient norm (``"gradient norm"``, or
    ``"rounding"``), not by a stall above the gradient's rounding.

    Attributes
    ----------
    step : int
        Steps taken so far, this one included (accepted or not).
    loss : float
        The loss at the start of the step (what ``step`` returns, as a tensor).
    gradient_norm : float
        ‖grad f‖ at the start of the step, in the manifolds' metric.
    radius : float
        The trust-region radius this step used; ``next_radius`` the one the next step will use.
    rho : float
        Actual over predicted decrease of the loss (NaN where no step was tried).
    accepted : bool
        Whether the parameters moved.
    inner_iterations : int
        CG iterations, each one Hessian-vector product.
    inner_stop : str
        Why CG stopped: ``"kappa/theta"`` (the residual criterion), ``"negative curvature"`` or
        ``"trust region"`` (a step to the boundary), ``"model increased"`` (rounding: the last CG
        iterate was dropped), ``"max_inner"``, or ``""`` where no step was tried.
    stop_reason : str or None
        ``"gradient norm"`` where ‖grad f‖ ≤ ``gradient_tol`` (by default the gradient's rounding in
        its dtype); ``"stalled"`` where ``patience``
        accepted steps in a row found no new low of the gradient norm or of the loss, as where
        ``gradient_tol`` lies below what the dtype's rounding lets the gradient reach, with a
        :class:`~riemsvd.ConvergenceWarning`; with the default ``gradient_tol``, ``"rounding"``
        instead (no warning) where that stall came within 10 times ε·√N·‖g₀‖, the estimate with the
        first step's gradient norm (the rounding of a gradient that vanishes at the solution, which
        the estimate at the step misses), or the gradient norm's low did and the loss is the low's
        within its rounding. Either way the step did not move, and the optimization
        is done. None otherwise."""

    step: int
    loss: float
    gradient_norm: float
    radius: float
    next_radius: float
    rho: float
    accepted: bool
    inner_iterations: int
    inner_stop: str
    stop_reason: str | None = None

    @property
    def converged(self) -> bool:
        """Whether the gradient norm is within ``gradient_tol``, or (by default) stopped at its
        rounding (not after a stall above it)."""
        return self.stop_reason in ("gradient norm", "rounding")


# A stall with the default gradient_tol within this many times ε·√N·‖g₀‖ (the default's estimate,
# with the first step's gradient norm) ends "rounding": orthogonal Procrustes fits, whose Euclidean
# gradient vanishes at the solution, stalled at 0.08–0.36 of it (18 runs: 6 seeds, noise 0 to 0.1).
_AT_ROUNDING = 10.0


def _gradient_rounding(xs: list, norm: float, eps: float) -> float:
    """ε·√N·norm: about the rounding of a Riemannian gradient computed from a Euclidean one ∇f of that
    norm at the points ``xs`` (N entries in all, ``eps`` of their least precise dtype); with ‖∇f‖ at
    the step, the default ``gradient_tol``. With 0 for it, every run had ended "stalled" with a
    ConvergenceWarning, fully converged or not, after ``patience`` steps at that floor (a new user's
    trial)."""
    return eps * math.sqrt(sum(x.numel() for x in xs)) * norm


def _uphill_reach(state: dict, f: float, eps: float) -> float:
    """ρ's regularization, 1e3·ε·max(|f|, |f₀|) (manopt's ``rho_regularization``, relative to the loss's
    own size: see :meth:`RiemannianTrustRegion.step`), and so about the most one accepted step can
    raise the loss: ρ > ``accept`` holds for an increase of up to (1 − ``accept``) of it where the
    model predicts no decrease."""
    return 1e3 * eps * max(abs(f), state.get("first_loss", 1.0))


def _loss_rounding(f: float, eps: float) -> float:
    """4·ε·|f|: two losses this close are the same loss to its rounding."""
    return 4 * eps * abs(f)


def _loss_scale(lowest: float, state: dict) -> float:
    """The size of the terms the loss sums, whose rounding it carries: the larger of the lowest loss
    since the count began and the first one's (a loss small by cancellation, as a least-squares fit
    at its minimum, rounds as its terms do; see :func:`_progress`). inf before a first low."""
    return max(abs(lowest), state.get("first_loss", 0.0))


def _progress(
    state: dict, f: float, gnorm: float, eps: float, moved: bool, unit: float, modeled: bool = False
) -> tuple[int, bool]:
    """Accepted steps in a row that found neither a new low of the gradient norm above its rounding
    (``unit`` times the first norm: ``_AT_ROUNDING``·ε·√N) nor one of the loss beyond its rounding
    (4·ε·|f|) nor the decrease the model predicted (``modeled``: see :func:`_as_modeled`), kept in
    ``state`` with the lows; the step at loss f and gradient norm ``gnorm`` counted
    where the last one ``moved`` the parameters (a rejected step left them where they were: nothing
    new to judge; a radius too large to start with takes several), and whether this step starts
    afresh: the first, or one whose gradient norm is 10 times the low (a new closure, or the iteration
    leaving a basin), whose loss and gradient norm are kept. Lows within the rounding are noise:
    an orthogonal Procrustes fit at its closed form to 1e-14 after 6–7 steps wandered between 1.1e-14
    and 3.3e-14 and stopped at steps 20–36, each small low starting the count again (a new user's
    trial)."""
    best_f, best_g = state.get("best_loss", math.inf), state.get("best_gradient", math.inf)
    # the loss this point had when it was last evaluated: the last step's own where that step did
    # not move, its trial's where it did
    seen = state.get("last_loss") if not moved else state.get("trial_loss")
    state["last_loss"] = f
    # another loss at the same point is another problem (a closure over data that changed): a
    # stalled optimizer reused to track it stopped "stalled" at once, its gradient only 3.6 times
    # the old low (a new user's trial); and a closure changed between an accepted step's trial and
    # the next step, by less than ρ's regularization (a float32 Rayleigh quotient of a matrix turned
    # by 1e-2, its loss risen 1.4e-5), is told by the trial's loss at that point (a review)
    changed = seen is not None and abs(f - seen) > _loss_rounding(seen, eps)
    # a gradient norm 10 times the low where the loss moved too: a loss invariant along some
    # directions (a PCA fit on the Stiefel manifold, X → XQ), at its minimum to the last digit, took
    # steps to the trust region's boundary along them that left the loss equal to 17 digits and the
    # gradient norm swinging from 4e-15 to 1e-7, and each swing had started the count afresh: no stop
    # in 200 steps (a new user's trial). Moved beyond what an accepted step can raise it by (ρ's
    # regularization): a factorization ‖Y − X W‖² (X on a Stiefel manifold, W plain) is the same at
    # (XQ, QᵀW), and at its minimum the boundary steps along those directions, straight in W, rose
    # the loss by up to 1.8e-13 of itself (float64; 4e-5 in float32), accepted, the gradient norm
    # swinging from 1e-13 to 2e-4 (float32: 3e-5 to 3.4): each counted afresh, 500 steps without a
    # stop (a new user's trial). And risen beyond it: a loss that fell is progress, not another
    # problem, and a gradient norm rising 20-fold on the way down (0.083 to 1.7, the loss falling by
    # 40%) had made that point the reference of "rounding", 9.8e-14 at the end then above it
    jumped = gnorm > 10 * best_g and f - best_f > _uphill_reach(state, best_f, eps)
    if jumped or changed:
        best_f, best_g = math.inf, math.inf
        state["since_progress"] = 0
    fresh = best_g == math.inf
    if fresh:  # a first step, or a fresh start: what "rounding" is judged against
        state["first_gradient"], state["first_loss"] = gnorm, abs(f)
    elif not moved:
        return state.get("since_progress", 0), fresh
    lower = gnorm < best_g and gnorm > unit * state.get("first_gradient", 0.0)
    # a loss's rounding is that of the terms it sums, whose size the first loss keeps: relative to
    # the low alone, a loss falling to an exact 0 (xᵀAx on the sphere, A = diag(0, …): 5e-13 at step 16)
    # made progress at every step, and the steps ran on to 5e-320, 242 of them (a new user's trial)
    # a new low beyond the loss's own rounding that the model predicted (see _as_modeled); not one
    # that only undid an uphill step (lower than the low by less than that rounding)
    modeled = modeled and f < best_f - _loss_rounding(best_f, eps)
    if lower or modeled or f < best_f - _loss_rounding(_loss_scale(best_f, state), eps):
        state["since_progress"] = 0
    else:
        state["since_progress"] = state.get("since_progress", 0) + 1
    state["best_loss"], state["best_gradient"] = min(best_f, f), min(best_g, gnorm)
    return state["since_progress"], fresh


def _sizes(xs: list) -> list[float]:
    """The parameters' norms (of all their entries)."""
    return [math.sqrt(float(x.square().sum())) for x in xs]


def _norm_all(manifolds, xs, a: Vectors) -> float:
    """√(Σᵢ ⟨aᵢ, aᵢ⟩) over the parameters in their manifolds' metrics, a Python float: the manifolds'
    own sums in the parameters' dtype, added in one transfer, and parameter by parameter through
    :func:`_norm_of` where that total is not finite or lies within underflow's reach."""
    total = float(sum(m.inner(x, u, u).sum() for m, x, u in zip(manifolds, xs, a)))
    if math.isfinite(total) and all(abs(total) > _UNDERFLOW.get(u.dtype, 0.0) for u in a):
        return math.sqrt(max(total, 0.0))
    return math.hypot(*(_norm_of(m, x, u) for m, x, u in zip(manifolds, xs, a)))


# per dtype, a sum of squares at or below this may have lost terms to underflow: its least normal / ε
_UNDERFLOW = {d: torch.finfo(d).tiny / torch.finfo(d).eps for d in (torch.float32, torch.float64)}


def _norm_of(manifold, x: torch.Tensor, u: torch.Tensor) -> float:
    """‖u‖ in ``manifold``'s metric at x, from ⟨û, û⟩ for û = u·2⁻ᵉ, its largest entry in [½, 1) as far
    as the dtype's powers of two reach (:func:`_shift`; exact), and 2ᵉ applied to the root: a norm is
    right where its square leaves the dtype's range or float64's. ‖g‖² had underflowed to 0 for a
    float32 Rayleigh quotient scaled by 1e-25 (and a float64 one by 1e-200), which stopped
    "converged" at its random start (a new user's trial)."""
    largest = float(u.abs().max()) if u.numel() else 0.0
    if not 0 < largest < math.inf:  # zero, or not finite (NaN where an entry is)
        return 0.0 if largest == 0 else largest
    e = _shift(largest, [u.dtype])
    scaled = u * 2.0**-e
    root = math.sqrt(max(float(manifold.inner(x, scaled, scaled).sum()), 0.0))
    try:
        return math.ldexp(root, e)
    except OverflowError:  # beyond float64: inf, as the dtype's own sum would say
        return math.inf


def _shift(norm: float, dtypes: list) -> int:
    """e with 2^e about ``norm`` (0 where it is 0 or not finite), within the exponents whose powers of
    two every one of ``dtypes`` holds as normal numbers, both ways."""
    if not 0 < norm < math.inf:
        return 0
    most = min(
        min(math.frexp(torch.finfo(d).max)[1] - 1, -math.frexp(torch.finfo(d).tiny)[1] + 1) for d in dtypes
    )
    return min(max(math.frexp(norm)[1], -most), most)


def _as_modeled(decrease: float, predicted: float, lengths: list, sizes: list, eps: float) -> bool:
    """Whether an accepted step's ``decrease`` of the loss is the one the quadratic model predicted
    (within half of it), by a step that moved some parameter by more than its rounding: its part's
    norm (``lengths``, one per parameter) above ε times the parameter's size (``sizes``: the larger of
    its norm now and at the count's fresh start). Such a decrease is progress, though it may lie below
    the rounding of the terms the loss summed at the first step (:func:`_loss_scale`). That estimate
    stays as the loss falls, and Rosenbrock's function in float32 from (−30, 30), its first loss
    7.6e7, stopped "rounding", converged, at f = 34.5 and a gradient norm of 15.4, its last ten steps
    lowering the loss by 0.01 to 1.7 (ρ without its regularization 0.93–1.07) against the 36 counted
    as rounding (a review). Rounding's decreases agree with no model: an orthogonal Procrustes fit at
    its closed form, small by cancellation, had decreases of 1e-16 where the model predicted 1e-28.
    Each parameter on its own: with all of them together, one of 1e9 beside Rosenbrock's two hid
    every step (a review). Its size at the start too: a minimum at 0 approached by steps of a third
    of x (Σxᵢ⁴), each as the model predicted, stays above ε·‖x‖ down to ‖x‖ = 1e-39 (252 steps
    where the first loss's rounding had stopped at 39; a review). And no step on its own rounding:
    xᵀAx on the sphere, falling to an exact 0 (A = diag(0, …)), kept the model's decrease to 5e-320
    at x₁ = 1 exactly (see :func:`_progress`)."""
    moved = any(length > eps * size for length, size in zip(lengths, sizes))
    return predicted > 0 and abs(decrease - predicted) <= predicted / 2 and moved


class _Euclidean:
    """A plain tensor, or a geoopt parameter on ``geoopt.Euclidean``: the identity everywhere."""

    def egrad2rgrad(self, x, g):
        return g

    def proju(self, x, u):
        return u

    def retr(self, x, u):
        return x + u

    def inner(self, x, u, v):
        return (u * v).sum()

    def ehess2rhess(self, x, egrad, ehess, u):
        return ehess


_EUCLIDEAN = _Euclidean()  # the Euclidean gradient's norm (_norm_all)


def _manifold(p: torch.Tensor, index: int):
    """Parameter ``index``'s manifold as the trust region works on it. geoopt's Scaled is its base:
    the same points and the same optima, but Scaled's retraction divides a step by its scale where
    its gradient, inner product and (passed-through) ehess2rhess do not, so every step fell short by
    that factor (scale 3: a Rayleigh quotient took 69 steps where the sphere took 9; a new user's
    trial)."""
    m = getattr(p, "manifold", None)
    while isinstance(m, geoopt.Scaled):
        m = m.base
    if m is None or isinstance(m, geoopt.Euclidean):
        return _Euclidean()
    check_manifold(m, index)
    return m


def _curvature(manifold, index: int):
    """The manifold's ``ehess2rhess``. geoopt's Sphere and EuclideanStiefel have the embedded metric of
    riemsvd's and get their formula; for another manifold without one, None (with a warning): the
    Hessian is then approximated by ``proju(x, ∇²f[η])``."""
    if isinstance(manifold, _Euclidean) or hasattr(manifold, "ehess2rhess"):
        return manifold.ehess2rhess
    if isinstance(manifold, geoopt.Sphere):
        return functools.partial(Sphere.ehess2rhess, manifold)
    if isinstance(manifold, geoopt.EuclideanStiefel):
        return functools.partial(Stiefel.ehess2rhess, manifold)
    # geoopt.Stiefel() is canonical by default, the natural thing to type: 300 steps to 4.6e-6 where
    # the embedded metric took 13 to 1e-15 (a Brockett cost on St(30, 4); a new user's trial)
    remedy = (
        " Use riemsvd.manifolds.Stiefel() (or geoopt.Stiefel(canonical=False)): the embedded metric, "
        "whose curvature term it has."
        if isinstance(manifold, geoopt.Stiefel)
        else ""
    )
    warnings.warn(
        f"RiemannianTrustRegion: parameter {index} lies on {type(manifold).__name__}, which has no "
        "ehess2rhess; its Hessian is approximated by the projected Euclidean one, which drops the "
        f"curvature term: convergence may be slow, and is not quadratic.{remedy}",
        stacklevel=callers_level(),
    )
    return None


def _typical_distance(p: torch.Tensor, manifold) -> float:
    """π per unit column of a point on spheres or Stiefel manifolds (the most a column can turn);
    π/2 per column on Grassmann (its diameter where k ≤ d/2: principal angles of at most π/2); √(entries)
    elsewhere, manopt's default √dim."""
    if isinstance(manifold, geoopt.Sphere):
        return math.pi * math.sqrt(max(1, p.numel() // max(1, p.shape[-1])))
    if isinstance(manifold, geoopt.Stiefel):  # Grassmann's points too
        turn = 0.5 * math.pi if isinstance(manifold, Grassmann) else math.pi
        return turn * math.sqrt(max(1, p.numel() // max(1, p.shape[-2])))
    return math.sqrt(max(1, p.numel()))


# Accepted steps in a row that went the whole max_radius before a warning that it may be too small:
# a Procrustes fit with a translation (40×5, max_radius 7.4) took runs of 0, 2 and 19 such steps for
# translations of size 1, 10 and 100 (12, 13 and 41 steps in all), 7.4 a step for 1e3
_FULL_STEPS = 50


def _called_backward() -> ValueError:
    """The error for a closure that calls backward(), as torch.optim.LBFGS's closures do."""
    return ValueError(
        "`closure` called backward() on the loss (as torch.optim.LBFGS's closures do): "
        "RiemannianTrustRegion differentiates the loss itself, twice. Return the loss "
        "without calling backward() or zero_grad()."
    )


class RiemannianTrustRegion(torch.optim.Optimizer):
    r"""Riemannian trust-region (Absil, Baker, Gallivan 2007) for geoopt and plain parameters.

    Minimizes a loss over the product of the parameters' manifolds — ``geoopt.ManifoldParameter``\ s
    on :class:`riemsvd.manifolds.Sphere` or :class:`~riemsvd.manifolds.Stiefel` (or any geoopt
    manifold with ``egrad2rgrad``, ``proju``, ``retr`` and ``inner``) and plain tensors beside them.
    Each :meth:`step` is one outer iteration: the Riemannian gradient and Hessian-vector products of
    the loss by autograd (a double backward, made Riemannian by the manifold's ``egrad2rgrad`` and
    ``ehess2rhess``), the quadratic model minimized by truncated CG within the radius, the ratio ρ of
    actual to predicted decrease, the step taken where ρ > ``accept``, the radius updated. One trust
    region spans all parameters: the options are global, not per parameter group.

    The Riemannian Hessian comes from the manifold's ``ehess2rhess`` (riemsvd's manifolds); geoopt's
    own ``Sphere`` and ``EuclideanStiefel``, which have the same embedded metric, get riemsvd's
    formulas. On another manifold without ``ehess2rhess`` the Hessian is approximated by the
    projected Euclidean one, ``proju(x, ∇²f[η])``, with a warning: that drops the curvature term,
    and convergence is then slow (on spheres, the radius collapses).

    Parameters
    ----------
    params : iterable of tensors or dicts
        The parameters, as for any ``torch.optim.Optimizer``.
    radius : float, optional
        The first radius Δ₀; default ``max_radius / 8`` (ABG 2007).
    max_radius : float, optional
        Δ̄, the largest radius. Default: √(Σ d_p²) with d_p = π·√(unit columns) for a point on
        spheres or Stiefel manifolds (no column turns more than π) and √(entries) for others
        (manopt's √dim). A problem whose Euclidean part moves on a larger scale wants a larger one.
    accept : float
        ρ′: steps with ρ above it are taken (default 0.1, in [0, 1/4)).
    shrink, grow : float
        The radius times ``shrink`` (0.25) where ρ < 1/4, times ``grow`` (2, up to Δ̄) where ρ > 3/4
        and the step reached the boundary.
    kappa, theta : float
        CG stops at ‖r_j‖ ≤ ‖r_0‖·min(κ, ‖r_0‖^θ) (default κ = 0.1, θ = 1: quadratic convergence
        where the Hessian is exact and positive definite at the solution; ABG 2007, Theorem 4.13).
    max_inner : int, optional
        CG iterations at most; default the parameters' total number of entries (CG is exact by then
        in exact arithmetic).
    gradient_tol : float, optional
        A step with ‖grad f‖ ≤ ``gradient_tol`` does not move and sets ``info.stop_reason`` to
        ``"gradient norm"`` (0: only at a gradient of exactly 0). The gradient cannot fall below the
        rounding of its dtype (near 1e-5 for a float32 leading pair of a 400×200 Gaussian matrix,
        whose σ₁ is about 34): where ``gradient_tol`` asks for less, the steps stop ``"stalled"``
        (``patience``). Default
        (None): that rounding, ε·√N·‖∇f‖ at the step (ε of the parameters' least precise dtype, N
        their entries, ∇f the Euclidean gradient), which the gradient norm reaches: the floor
        measured was 0.04–0.26 of it (leading pairs, Rayleigh quotients and Brockett costs of
        60×40 to 2000×1000 in float32 and float64), so where the last step cut the gradient norm
        fourfold or more the steps go on until one does not. Where ∇f vanishes at the solution (a Euclidean
        minimum) it does too, and ``patience`` ends the steps: ``"rounding"`` (converged) where they
        stalled within 10 times ε·√N·‖g₀‖ (the estimate with the first step's gradient norm), or
        reached it and stayed at its loss, else ``"stalled"``.
    preconditioner : callable, optional
        ``preconditioner(params, vectors) -> vectors``: an approximation of the inverse Hessian, a
        linear map (it sees the residuals scaled by a power of two), symmetric positive definite on
        the tangent space, applied to lists of tangent vectors (one per parameter); its output is
        projected on the tangent space. The trust region is then measured
        in its inverse's norm, as in preconditioned Steihaug–Toint CG, and so are ``radius`` and
        ``max_radius``, whose defaults are sizes in the parameters' own norm: give a
        ``max_radius`` of the order of the distance to the minimum in that norm (docs/optim.md).
    patience : int or None
        Accepted steps in a row that find neither a new low of the gradient norm above its rounding
        nor one of the loss beyond its rounding (that of the first loss's terms, or of its own where
        the quadratic model predicted the decrease), after which a step does not move and sets
        ``info.stop_reason`` to ``"stalled"``, with a :class:`~riemsvd.ConvergenceWarning` (default
        10; None: never), or, with the default ``gradient_tol``, to ``"rounding"`` where the stall
        came at the gradient's rounding (``gradient_tol`` above). Such a stop returns the parameters
        to the best point since the count began (the lowest loss, or within its rounding the least
        gradient norm), where an accepted step may have left it: ρ's regularization accepts a rise
        of the loss by up to 1e3·ε of it (the point is kept in memory, not in ``state_dict()``: after
        a load, the best since it). A loss at the point other than the one found there before (its
        trial's, or the last step's where that one did not move), or a gradient norm 10 times its
        low at a loss risen beyond ρ's regularization, starts the count afresh (a new closure).
        Steps rejected down to a radius under ε·``max_radius`` stop too, whatever ``patience``, and
        so do ``patience`` accepted steps in a row that crawl: each to the boundary of a radius under
        √ε·``max_radius`` that does not grow, lowering the loss by at most √ε of its size (a loss that
        is not smooth, or a point that a retraction left off its manifold: the quadratic model holds
        at no larger step).

    Attributes
    ----------
    info : TrustRegionInfo or None
        What the last step did: gradient norm, radius, ρ, inner iterations and why they stopped,
        whether the step was taken, and a stop reason.

    Notes
    -----
    ``step(closure)`` needs a closure that **returns the loss without calling** ``backward``: the
    optimizer differentiates it itself, twice, and evaluates it again (without gradients) at the
    trial point. This differs from ``torch.optim.LBFGS``, whose closure zeroes the gradients, calls
    ``loss.backward()`` and returns the loss; here ``.grad`` is neither read nor written. Each step
    costs one closure call with a double-backward graph, one Hessian-vector product per CG iteration,
    and one closure call without gradients.

    Examples
    --------
    The leading singular pair of A, maximizing uᵀAv on two spheres:

    >>> import torch, geoopt, riemsvd
    >>> from riemsvd.optim import RiemannianTrustRegion
    >>> g = torch.Generator().manual_seed(0)
    >>> A = torch.randn(60, 40, dtype=torch.float64, generator=g)
    >>> sphere = riemsvd.manifolds.Sphere()
    >>> u = geoopt.ManifoldParameter(sphere.random(60, dtype=torch.float64), manifold=sphere)
    >>> v = geoopt.ManifoldParameter(sphere.random(40, dtype=torch.float64), manifold=sphere)
    >>> opt = RiemannianTrustRegion([u, v], gradient_tol=1e-10)
    >>> while not (opt.info and opt.info.stop_reason):
    ...     _ = opt.step(lambda: -(u @ A @ v))
    >>> s1 = torch.linalg.svdvals(A)[0]
    >>> opt.info.converged, bool(abs(u @ A @ v - s1) < 1e-12 * s1), opt.info.step < 30
    (True, True, True)
    """

    def __init__(
        self,
        params,
        *,
        radius: float | None = None,
        max_radius: float | None = None,
        accept: float = 0.1,
        shrink: float = 0.25,
        grow: float = 2.0,
        kappa: float = 0.1,
        theta: float = 1.0,
        max_inner: int | None = None,
        gradient_tol: float | None = None,
        preconditioner: Callable[[list, Vectors], Vectors] | None = None,
        patience: int | None = 10,
    ) -> None:
        rule = RadiusRule(accept=accept, shrink=shrink, grow=grow, kappa=kappa, theta=theta)
        if gradient_tol is not None:
            gradient_tol = as_number(gradient_tol)  # e.g. 1e-10 * torch.linalg.matrix_norm(A, 2)
        check_trust_region_args(radius, max_radius, max_inner, gradient_tol, preconditioner, patience)
        defaults = dict(radius=radius, max_radius=max_radius, max_inner=max_inner, gradient_tol=gradient_tol)
        super().__init__(params, defaults)
        self.rule, self.preconditioner, self.patience = rule, preconditioner, patience
        self.gradient_tol = gradient_tol
        self.info: TrustRegionInfo | None = None
        self._given = (radius, max_radius, max_inner)
        # (step, loss, gradient norm, point) of the best point since the count of steps without
        # progress began (see _keep_if_best); not saved with the state
        self._best: tuple[int, float, float, list] | None = None
        self._forget_graphless()
        self._take_params()

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters; it joins the one trust region (its defaults — the largest
        radius, the first radius, CG's iterations — are recomputed over all parameters where they
        were not given). It was added to ``param_groups`` and never optimized (a new user's trial)."""
        super().add_param_group(param_group)
        if hasattr(self, "_given"):  # torch's __init__ adds the first groups, before the rest is set
            try:
                self._take_params()
            except Exception:  # refused: the optimizer stays as it was (a review)
                self.param_groups.pop()
                self._take_params()
                raise

    # the options beside torch's state, which a copy carries over (see __getstate__)
    _OPTIONS = ("rule", "preconditioner", "patience", "gradient_tol", "info", "_given")

    def __getstate__(self) -> dict:
        """torch's state (``defaults``, ``state``, ``param_groups``) and the options beside it: a copy
        (``copy.deepcopy``, ``pickle``, ``torch.save``) had kept torch's alone, and its first step raised
        AttributeError (a new user's trial). The best point kept in memory (see ``patience``) stays
        behind, as it does in ``state_dict()``. A ``preconditioner`` goes with the copy: the same
        function after a deepcopy, and one that pickle cannot take (a lambda) fails ``pickle`` and
        ``torch.save``, where ``state_dict()`` saves none."""
        state = super().__getstate__()
        state.update({name: getattr(self, name) for name in self._OPTIONS})
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "_given" in state:  # a copy's; torch's load_state_dict passes its state alone, then loads
            self._forget_graphless()
            self._take_params()

    def _forget_graphless(self) -> None:
        """No parameter seen with a gradient that has no graph (see :meth:`_check_hessians`)."""
        # the last point and gradient of each parameter whose gradient has no graph, and those warned of
        self._graphless: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._warned_graphless: set[int] = set()

    def load_state_dict(self, state_dict: dict) -> None:
        """The saved state, and the options saved with it (``radius``, ``max_radius``, ``max_inner``,
        ``gradient_tol``): they had shown in ``param_groups`` while the constructor's ran on, and a
        group added after the load was refused with a KeyError and kept, never optimized (a new
        user's trial)."""
        # checked before anything is loaded: a refused dict had left the groups and state loaded
        # beside the constructor's options (a review)
        group = state_dict["param_groups"][0]
        radius, max_radius, max_inner = group["radius"], group["max_radius"], group["max_inner"]
        gradient_tol = group["gradient_tol"]
        check_trust_region_args(radius, max_radius, max_inner, gradient_tol, None)
        # its radius, losses and gradient norms are those of its own parameters: a state saved for
        # St(100, 5) had gone on for St(100, 6) from its step 6 and its radius (a new user's trial)
        shapes = [list(p.shape) for group in self.param_groups for p in group["params"]]
        for saved in state_dict["state"].values():
            if "shapes" in saved and [list(s) for s in saved["shapes"]] != shapes:
                raise ValueError(
                    f"`state_dict` was saved for parameters of shapes {saved['shapes']}, and this "
                    f"optimizer's have shapes {shapes}: load it into an optimizer over parameters "
                    "shaped like the ones it was saved for, or start this one afresh."
                )
        super().load_state_dict(state_dict)
        options = dict(radius=radius, max_radius=max_radius, max_inner=max_inner, gradient_tol=gradient_tol)
        self.defaults.update(options)
        self.gradient_tol = gradient_tol
        self._given = (radius, max_radius, max_inner)
        self._take_params()

    def _take_params(self) -> None:
        """The parameters of all groups, their manifolds and the defaults that depend on them."""
        radius, max_radius, max_inner = self._given
        self._best = None  # a point of other parameters, or of the state before a load
        check_param_groups(self.param_groups, self.defaults)
        self._params = [p for group in self.param_groups for p in group["params"]]
        check_trust_region_params(self._params)
        self._manifolds = [_manifold(p, i) for i, p in enumerate(self._params)]
        self._curvatures = [_curvature(m, i) for i, m in enumerate(self._manifolds)]
        self.max_radius = max_radius or math.sqrt(
            sum(_typical_distance(p, m) ** 2 for p, m in zip(self._params, self._manifolds))
        )
        self.radius0 = radius if radius is not None else self.max_radius / 8
        self.max_inner = max_inner or max(1, sum(p.numel() for p in self._params))

    # -- the product manifold of the parameters ------------------------------------------------------

    def _inner(self, xs, a: Vectors, b: Vectors) -> float:
        return float(sum(m.inner(x, u, w).sum() for m, x, u, w in zip(self._manifolds, xs, a, b)))

    def _hessian(self, xs, egrads, graph, eta: Vectors) -> Vectors:
        """Hess f(x)[η]: ∇²f η by a backward through the gradient's graph, then ``ehess2rhess``."""
        live = [i for i, g in enumerate(graph) if g is not None and g.requires_grad]
        ehess = [torch.zeros_like(x) for x in xs]
        if live:
            with torch.enable_grad():
                hv = torch.autograd.grad(
                    [graph[i] for i in live],
                    self._params,
                    grad_outputs=[eta[i] for i in live],
                    retain_graph=True,
                    allow_unused=True,
                )
            ehess = [h.detach() if h is not None else z for h, z in zip(hv, ehess)]
        out = []
        for m, curvature, x, g, h, e in zip(self._manifolds, self._curvatures, xs, egrads, ehess, eta):
            out.append(curvature(x, g, h, e) if curvature is not None else m.proju(x, h))
        return out

    def _preconditioned(self, xs, r: Vectors) -> tuple[Vectors, float]:
        """(z, ⟨z, r⟩) with z = P r, the preconditioner's image of the residual (r itself without
        one), projected onto the tangent spaces. The preconditioner is checked: a list of tensors
        shaped like the parameters (one tensor returned for a list was zipped against the
        parameters, silently), and ⟨P r, r⟩ > 0 as a symmetric positive definite P keeps it (a
        preconditioner returning zeros raised ZeroDivisionError in CG, and one returning NaN ran
        every CG iteration while the radius fell to 1e-24; new users' trials)."""
        if self.preconditioner is None:
            return r, self._inner(xs, r, r)
        z = self.preconditioner(self._params, [t.clone() for t in r])
        if not (
            isinstance(z, (list, tuple))
            and len(z) == len(r)
            and all(isinstance(t, torch.Tensor) and t.shape == x.shape for t, x in zip(z, r))
        ):
            got = f"a {type(z).__name__}" + (f" of {len(z)}" if isinstance(z, (list, tuple)) else "")
            raise TypeError(
                f"`preconditioner` must return a list of {len(r)} tensors shaped like the parameters "
                f"(one tangent vector each), got {got}."
            )
        z = [m.proju(x, t) for m, x, t in zip(self._manifolds, xs, z)]
        z_r = self._inner(xs, z, r)
        if not z_r > 0:
            raise ValueError(
                f"`preconditioner` gave ⟨P r, r⟩ = {z_r} for a nonzero tangent vector r: it must "
                "approximate the inverse Hessian, symmetric positive definite on the tangent space "
                "(finite, and nonzero where r is)."
            )
        return z, z_r

    def _derivatives(self, closure):
        """(loss, points, Euclidean gradients, their graph, Riemannian gradient) at the parameters."""
        with torch.enable_grad():
            loss = closure()
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.requires_grad:
                got = type(loss).__name__
                if isinstance(loss, torch.Tensor):
                    got += f" of shape {tuple(loss.shape)}" + ("" if loss.requires_grad else " without grad")
                raise ValueError(
                    "`closure` must return the loss as a one-element tensor that depends on the "
                    f"parameters, got {got}."
                )
            try:
                graph = torch.autograd.grad(loss, self._params, create_graph=True, allow_unused=True)
            except RuntimeError as err:
                if "second time" not in str(err):
                    raise
                # torch's own message named neither the closure nor the fix (a new user's trial); a
                # loss that saves no tensors (linear in the parameters) lets a backward() through
                # here, and fails at the trial point instead (step)
                raise _called_backward() from err
        if all(g is None for g in graph):
            # its gradient had read as 0, "converged" at the first step (a loss of another tensor than
            # the parameters, by a typo; a new user's trial)
            raise ValueError(
                "`closure` returned a loss that does not depend on the optimizer's parameters (no "
                "gradient reaches any of them): check that it is computed from the tensors passed to "
                "RiemannianTrustRegion, not from copies or other tensors."
            )
        xs = [p.detach() for p in self._params]
        egrads = [g.detach() if g is not None else torch.zeros_like(x) for g, x in zip(graph, xs)]
        grad = [m.egrad2rgrad(x, g) for m, x, g in zip(self._manifolds, xs, egrads)]
        return loss, xs, egrads, graph, grad

    def _check_hessians(self, xs, egrads, graph) -> None:
        """A warning, once per parameter, where the loss's gradient carries no graph to differentiate
        (a backward computed outside autograd, or marked ``once_differentiable``) and yet changed
        from the last point to this one: its Hessian-vector products are zero, and the steps are the
        model's without curvature (a Rayleigh quotient with a numpy backward ran 500 steps to ‖g‖ =
        1.5e-2, where autograd's converged in 13; a new user's trial). A gradient without a graph that
        stays the same is that of a loss linear in the parameter, whose Hessian is zero."""
        for i, (x, g, g_graph) in enumerate(zip(xs, egrads, graph)):
            if g_graph is None or g_graph.requires_grad or i in self._warned_graphless:
                continue  # unused, differentiable, or warned of already
            last = self._graphless.get(i)
            self._graphless[i] = (x.clone(), g.clone())
            if last is None or torch.equal(last[0], x) or torch.equal(last[1], g):
                continue
            self._warned_graphless.add(i)
            del self._graphless[i]
            warnings.warn(
                f"RiemannianTrustRegion: the loss's gradient with respect to parameter {i} carries no "
                "graph (a backward computed outside autograd, or marked once_differentiable), but it "
                "changed from the last point: its Hessian is taken as zero, and convergence is slow. "
                "Compute the loss (or its custom backward) with torch operations, so that it can be "
                "differentiated twice, or use a first-order optimizer (geoopt.optim.RiemannianAdam).",
                stacklevel=callers_level(),
            )

    # -- one outer iteration ----------------------------------------------------------------------------

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """One trust-region iteration; ``closure()`` returns the loss and does not call ``backward``.

        Returns the loss at the start of the step (detached). ``info`` describes the step.
        """
        check_closure(closure)
        params, manifolds = self._params, self._manifolds
        check_trust_region_params(params)  # frozen since (requires_grad_(False)): named, not the closure
        check_on_manifolds(params, manifolds)
        state = self.state[params[0]]
        state["shapes"] = [list(p.shape) for p in params]  # what load_state_dict checks a saved state by
        radius = state.get("radius", self.radius0)
        count = state["step"] = state.get("step", 0) + 1
        loss, xs, egrads, graph, grad = self._derivatives(closure)
        self._check_hessians(xs, egrads, graph)
        gnorm = _norm_all(manifolds, xs, grad)
        f = float(loss.detach())
        if not (math.isfinite(f) and math.isfinite(gnorm)):  # no step can be judged from there
            # which of the two: a finite loss with a NaN gradient (√(x²) at 0) had been called a
            # non-finite loss (a new user's trial)
            what = "loss" if not math.isfinite(f) else "gradient (of a finite loss)"
            raise ValueError(
                f"`closure` returned a loss of {f} (gradient norm {gnorm}) at the parameters' current "
                f"values: the trust region cannot judge a step from a non-finite {what}. Check the loss "
                "there (a log or division of zero? a square root or norm of zero, whose gradient is "
                "NaN?), or start from another point."
            )
        # the least precise of the parameters' and the loss's: a float64 u beside a float32 v had
        # judged progress at float64's rounding, which the float32 gradient never reached, and ran on
        # (a review); so had float64 parameters whose loss is computed in float32 (data kept in
        # float32): 3000 steps without a stop, a third of them rejected, the radius down to 2e-17 (a
        # new user's trial)
        dtype = max([x.dtype for x in xs] + [loss.dtype], key=lambda d: torch.finfo(d).eps)
        eps = torch.finfo(dtype).eps
        moved = state.get("moved", True)
        unit = _AT_ROUNDING * _gradient_rounding(xs, 1.0, eps)  # the gradient's rounding per unit of ‖g₀‖
        since, fresh = _progress(state, f, gnorm, eps, moved, unit, state.get("modeled", False))
        if fresh:  # the parameters' sizes that a step is judged against (see _as_modeled)
            state["first_sizes"] = _sizes(xs)
        floor = unit * state.get("first_gradient", 0.0)  # the gradient's rounding ("rounding" below)
        lowest = state["best_loss"]
        self._keep_if_best(fresh, count, f, gnorm, xs, lowest, _loss_scale(lowest, state), floor, eps)
        stalled = self.patience is not None and since >= self.patience
        # every step from here rejected, down to a radius that moves the parameters by less than their
        # rounding: a closure NaN at every trial point had run on without end, the radius at 4e-181
        # after 300 steps (rejected steps do not count towards patience; a new user's trial). A
        # changed problem (a fresh start) starts again from the first radius.
        collapsed = radius < eps * self.max_radius
        if collapsed and fresh:
            radius, collapsed = self.radius0, False
            state.pop("collapse_warned", None)
        if fresh:
            state.pop("crawl", None)
        crawling = self.patience is not None and state.get("crawl", 0) >= self.patience
        settled = True
        if self.gradient_tol is None:
            egrad_norm = _norm_all([_EUCLIDEAN] * len(egrads), egrads, egrads)
            tol = _gradient_rounding(xs, egrad_norm, eps)
            # The estimate is of the rounding, not the floor itself, which lay at 0.04–0.26 of it: a
            # last step that cut the gradient norm fourfold or more may cut it again. A float32
            # Procrustes fit on St(1000, 64) had stopped at ‖X − P‖ = 3e-5 where two more steps
            # (2–3 CG iterations each) reach 2.5e-6, below a float32 SVD's polar factor (6e-6; a new
            # user's trial). After a rejected step the point is as it was: no second try.
            falling = moved and gnorm < state.get("departed_gradient", 0.0) / 4
            settled = gnorm == 0 or not falling
        else:
            tol = self.gradient_tol
        stopped = stalled or collapsed or crawling
        done = "gradient norm" if gnorm <= tol and settled else "stalled" if stopped else None
        if done == "stalled" and self._best is not None and self._best[0] != count:
            # back to the best point since the count began: accepted steps can climb by ρ's
            # regularization (_uphill_reach), and a factorization ‖Y − X W‖² at its minimum had
            # wandered up by 4e-5 of its loss in float32, its gradient norm at 3.4 (a new user's trial)
            _, f, gnorm, point = self._best
            with torch.no_grad():
                for p, x in zip(params, point):
                    p.copy_(x)
            loss = loss.new_full(loss.shape, f)
            state["last_loss"] = f  # the same point's loss at the next step: no changed problem
        first = state.get("first_gradient")  # none in a state saved before this rule
        if done == "stalled" and self.gradient_tol is None and first is not None:
            # The default's estimate vanishes with a Euclidean gradient that does at the solution: an
            # orthogonal Procrustes fit stopped 2–6× above it at 2.4e-14, within 7.8e-16 of the closed
            # form, and ended "stalled" with a warning (a new user's trial). The estimate with the
            # first step's gradient norm keeps the size of the terms the gradient sums; √ε of that
            # norm had called a float32 Rayleigh quotient cut at 3 CG iterations converged where it
            # stalled 0.14 above its minimum, at 2e-4 of its first norm (a review).
            # or the low was, and the loss here is the low's within its rounding: a loss invariant
            # along some directions swings its gradient norm about that low at the same loss (float32
            # PCA on St(40, 4): 2.1e-6 to 2.6e-3, the loss equal to its 7 digits; a new user's trial)
            same_loss = f <= lowest + _loss_rounding(_loss_scale(lowest, state), eps)
            at_low = state["best_gradient"] <= floor and same_loss
            if gnorm <= floor or at_low:
                done = "rounding"
        if done == "stalled" and collapsed and not state.get("collapse_warned"):
            state["collapse_warned"] = True
            finite = state.get("trial_finite") is not False
            trials = "no lower than the model predicted" if finite else "non-finite"
            warnings.warn(
                f"RiemannianTrustRegion: every step from this point was rejected, down to a radius of "
                f"{radius:.3g}, which moves the parameters by less than their rounding; the last trial "
                f"loss was {trials}: stopped, info.stop_reason = 'stalled'. Check the loss and its "
                "gradient near the current point (a NaN or inf beside it, a gradient that is not the "
                "loss's own?).",
                ConvergenceWarning,
                stacklevel=callers_level(),
            )
        if done is not None:
            state["moved"] = False  # the point stays: the next step judges it no better
            if done == "stalled" and moved and crawling:  # once, as it stops
                warnings.warn(
                    f"RiemannianTrustRegion: {state['crawl']} accepted steps in a row at a radius of "
                    f"{radius:.3g} (max_radius {self.max_radius:.3g}) that never grew, the gradient norm "
                    f"still {gnorm:.3g}: stopped, info.stop_reason = 'stalled'. The quadratic model "
                    "fits no larger step: is the loss smooth (abs, relu, max and norms at 0 are not), "
                    "and the point on its manifold (a retraction that leaves it)? For a non-smooth loss "
                    "use a first-order optimizer (geoopt's RiemannianSGD or RiemannianAdam).",
                    ConvergenceWarning,
                    stacklevel=callers_level(),
                )
            elif done == "stalled" and moved and since == self.patience:  # once, as it stops
                # a manifold without ehess2rhess is the likelier cause than rounding (a new user's
                # trial: a float64 product manifold stalled at 1e-5 was pointed to float64)
                flat = [i for i, c in enumerate(self._curvatures) if c is None]
                cause = (
                    f"Parameter {flat[0]}'s manifold has no ehess2rhess: its Hessian lacks the curvature "
                    "term, which can stall the steps above the rounding; give the manifold one, or use a "
                    "first-order optimizer. "
                    if flat
                    else ""
                )
                # a loss of span(X) alone on Stiefel: its Hessian is singular along X → XQ, and the
                # steps stalled with the gradient at 2-4e-7 in float64 (PCA's −tr(XᵀAX); a new user's
                # trial), where on Gr(d, k) they converge quadratically
                frames = [
                    i
                    for i, m in enumerate(self._manifolds)
                    if isinstance(m, geoopt.Stiefel) and not isinstance(m, Grassmann)
                ]
                if frames:
                    cause += (
                        f"Where the loss depends on parameter {frames[0]} through its span alone (the same "
                        "at X and XQ, as tr(XᵀAX) or X Xᵀ are), put it on riemsvd.manifolds.Grassmann(), "
                        "where the steps converge quadratically. "
                    )
                warnings.warn(
                    f"RiemannianTrustRegion: {since} accepted steps without a new low of the gradient "
                    f"norm (now {gnorm:.3g}, gradient_tol {tol:.3g}) or of the loss: "
                    f"stopped, info.stop_reason = 'stalled'. {cause}Where the gradient norm is at the "
                    f"rounding of the loss's gradient in {dtype}, ask for a gradient_tol above it, or "
                    "compute in float64; where it converges slowly, raise `patience` (None: never stop).",
                    ConvergenceWarning,
                    stacklevel=callers_level(),
                )
            self.info = TrustRegionInfo(count, f, gnorm, radius, radius, math.nan, False, 0, "", done)
            return loss.detach()

        eta, heta, inner_iterations, inner_stop = self._tcg(xs, egrads, graph, grad, radius, gnorm)
        predicted = -(self._inner(xs, grad, eta) + 0.5 * self._inner(xs, eta, heta))
        # the point as it is, to go back to: the copy _keep_if_best made where it kept this one
        old = self._best[3] if self._best is not None and self._best[0] == count else [x.clone() for x in xs]
        try:
            with torch.no_grad():
                for p, m, x, e in zip(params, manifolds, old, eta):
                    p.copy_(m.retr(x, e))
                f_new = float(closure())
        except BaseException as err:  # the parameters stay where they were (a new user's trial)
            with torch.no_grad():
                for p, x in zip(params, old):
                    p.copy_(x)
            if isinstance(err, RuntimeError) and "does not require grad" in str(err):
                raise _called_backward() from err  # backward() under no_grad
            raise
        # The decrease is lost in the rounding of f near a minimum: ρ's terms both get this small
        # regularization, so that ρ → 1 there (manopt's rho_regularization, 1e3·ε·max(1, |f|)), here
        # relative to the loss's own size, |f| or the first step's |f₀| (its terms' size, where f
        # converges to 0 by cancellation): with manopt's 1, a loss far below 1 (float32 of size 1e-4,
        # float64 scaled by 1e-14) had every decrease drowned, uphill steps accepted, and runs ended
        # "stalled" or even converged at a gradient of 16 (a new user's trial); with |f| alone, a
        # Rayleigh quotient less its minimum (f → 0, its rounding ε·|λ|) had ρ of rounding noise near
        # the minimum, steps rejected down to the radius's collapse (a review). A state saved before
        # the first loss was kept takes manopt's 1.
        reg = _uphill_reach(state, f, eps)
        # a non-finite trial loss judges nothing: as NaN, the radius shrinks (−inf gave ρ = inf, the
        # step rejected and the radius grown, cycling without end; a new user's trial)
        rho = (f - f_new + reg) / (predicted + reg) if predicted > 0 and math.isfinite(f_new) else math.nan
        boundary = inner_stop in ("negative curvature", "trust region")
        f64 = functools.partial(torch.tensor, dtype=torch.float64)
        taken, nxt = self.rule.update(f64(radius), f64(rho), torch.tensor(boundary), self.max_radius)
        accepted, state["radius"] = bool(taken) and math.isfinite(f_new), float(nxt)
        if accepted:
            state["departed_gradient"], state["trial_loss"] = gnorm, f_new
            # a crawl: a non-smooth loss (−xᵀAx + ‖x‖₁ on S⁹⁹) had its steps accepted at ρ ≈ 0.45 for
            # 4750 steps at a radius of 3.6e-13, each a new low of the loss by 3e-12, the gradient
            # norm at 8.5, without a stop (a new user's trial); Brockett's cost on geoopt's
            # EuclideanStiefelExact, its point 6.4e-10 off the manifold after an accepted step at
            # ρ = 2838 (step 13), crawled at 1.3e-13 from step 24 to 300. A radius that grows is a
            # recovery from rejections, not a crawl (a smooth loss's steps from a first radius of
            # 1e-12·max_radius), and a step that lowers the loss by more than √ε of its size is
            # progress (σ₁'s pair on spheres with max_radius 1e9: boundary steps of 0.93 at ρ within
            # (1/4, 3/4)).
            small = boundary and radius < math.sqrt(eps) * self.max_radius and state["radius"] <= radius
            little = f - f_new <= math.sqrt(eps) * _loss_scale(min(f, f_new), state)
            state["crawl"] = state.get("crawl", 0) + 1 if small and little else 0
            # each parameter's step length (in its manifold's metric) and size (see _as_modeled)
            lengths = [
                math.sqrt(max(float(m.inner(x, e, e).sum()), 0.0)) for m, x, e in zip(manifolds, xs, eta)
            ]
            sizes = [max(now, then) for now, then in zip(_sizes(xs), state.get("first_sizes", []))]
            state["modeled"] = _as_modeled(f - f_new, predicted, lengths, sizes, eps)
        state["trial_finite"] = math.isfinite(f_new)
        state["moved"] = accepted
        if not accepted:
            with torch.no_grad():
                for p, x in zip(params, old):
                    p.copy_(x)
        self._note_full_steps(state, accepted and boundary and radius >= self.max_radius * (1 - 1e-9))
        self.info = TrustRegionInfo(
            count, f, gnorm, radius, state["radius"], rho, accepted, inner_iterations, inner_stop
        )
        return loss.detach()

    def _keep_if_best(
        self,
        fresh: bool,
        count: int,
        f: float,
        gnorm: float,
        xs: list,
        lowest: float,
        scale: float,
        floor: float,
        eps: float,
    ) -> None:
        """Keep this step's point as the one a stall returns to where it is the best since the count
        began (``fresh``: it begins here): its loss below the kept one's beyond the rounding of
        ``lowest``, the lowest loss seen, or within that rounding of ``lowest`` and its gradient norm
        lower. Not the loss alone: at a minimum within the loss's rounding the lowest loss can lie
        at a point of a larger gradient (a float32 Rayleigh quotient's first point of a changed
        problem, 2.5e-5, where later ones reached half of it).

        Between a point whose gradient norm is at its rounding (at most ``floor``) and one whose is
        not, the loss decides only beyond the rounding of a loss of ``scale``, the size of the terms
        it sums (:func:`_loss_scale`): an orthogonal Procrustes fit with a translation, its loss
        0.0081 by cancellation of terms near 1, went back from steps 9–17 at gradient norms of
        8e-15–2e-14 to step 8's point at 2.3e-8, whose loss was lower by 6e-17, and returned it
        converged, 4.4e-10 from the closed form (seed 12 of 20; a new user's trial). That band for
        every pair kept a point of a loss 0.3% higher, and a gradient norm half as large, over a
        lower one where the loss had fallen from 1e4 to 1 in float32 (a review)."""
        best = self._best
        if not fresh and best is not None and best[0] < count:
            settled, kept_settled = gnorm <= floor, best[2] <= floor
            if settled == kept_settled:
                band = _loss_rounding(lowest, eps)
                take = f < best[1] - band or (f <= lowest + band and gnorm < best[2])
            else:  # one at the gradient's rounding and one not: the loss beyond its terms' rounding
                band = _loss_rounding(scale, eps)
                take = f < best[1] - band or (settled and f <= best[1] + band)
            if not take:
                return
        self._best = (count, f, gnorm, [x.clone() for x in xs])

    def _note_full_steps(self, state: dict, full: bool) -> None:
        """Count the accepted steps in a row that went the whole ``max_radius``, and warn once where
        _FULL_STEPS of them suggest a minimum far beyond it: a translation fitted beside a rotation, its
        answer 1e5 from the start, was 2000 steps of 7.4 from it, silently (a new user's trial)."""
        state["full_steps"] = state.get("full_steps", 0) + 1 if full else 0
        if state["full_steps"] == _FULL_STEPS:
            warnings.warn(
                f"RiemannianTrustRegion: {_FULL_STEPS} accepted steps in a row went the whole "
                f"max_radius ({self.max_radius:.3g}): the minimum may lie much farther from the start "
                "than that (parameters without a manifold on a large scale?). Pass a max_radius of the "
                "order of the distance to it (with a preconditioner P, in P⁻¹'s norm, which the region "
                "is measured in).",
                ConvergenceWarning,
                stacklevel=callers_level(),
            )

    def _tcg(self, xs, egrads, graph, grad: Vectors, radius: float, r0: float):
        """Preconditioned Steihaug–Toint CG on the model ⟨g, η⟩ + ½⟨η, H η⟩ within ‖η‖_{P⁻¹} ≤ Δ.

        Returns (η, H η, iterations, why it stopped); H η is kept by the recurrence, so that the
        model's decrease needs no further Hessian product. ``r0``: ‖g‖, as the step measured it."""
        # The model divided by a power of two near ‖g‖ (g and each H d scaled by it, exactly: the same
        # iterates η; H η scaled back): r, d and H d had the gradient's size, and H d of a float32
        # loss scaled by 1e-25 (‖g‖ ≈ 1e-24, ‖H‖ ≈ 1e-25) underflowed to 0, every step then "negative
        # curvature" along −g, and the solve stalled 7.8e-5 above its minimum; at 1e17 ⟨d, H d⟩
        # overflowed. η and the radius keep their own units (scaled with g, the radius's square left
        # float64 beyond 1e±175: a review of a first version).
        shift = _shift(r0, [g.dtype for g in grad])
        down = 2.0**-shift
        stop_at = r0 * down * min(self.rule.kappa, r0**self.rule.theta)  # ‖r‖ ≤ it, in the model's units
        eta, heta, j, why = self._tcg_scaled(
            xs, egrads, graph, [g * down for g in grad], radius, stop_at, down
        )
        return eta, [t * 2.0**shift for t in heta], j, why

    def _tcg_scaled(self, xs, egrads, graph, grad: Vectors, radius: float, stop_at: float, down: float):
        """:meth:`_tcg`'s iteration on the model times ``down``: ``grad`` (norm near 1) and each
        Hessian product scaled by it, η in its own units; returns H η times ``down`` too."""
        zero = [torch.zeros_like(g) for g in grad]
        eta, heta = zero, zero
        r = grad
        z, z_r = self._preconditioned(xs, r)
        d = [-t for t in z]
        e_pe, e_pd, d_pd = 0.0, 0.0, z_r  # ⟨η, P⁻¹η⟩, ⟨η, P⁻¹d⟩, ⟨d, P⁻¹d⟩ by recurrence
        model, delta2 = 0.0, radius * radius
        for j in range(1, self.max_inner + 1):
            hd = self._hessian(xs, egrads, graph, d)
            if down != 1.0:
                hd = [t * down for t in hd]
            d_hd = self._inner(xs, d, hd)
            alpha = z_r / d_hd if d_hd > 0 else math.inf
            e_pe_new = e_pe + 2 * alpha * e_pd + alpha * alpha * d_pd
            if d_hd <= 0 or e_pe_new >= delta2:
                tau = (-e_pd + math.sqrt(max(e_pd * e_pd + d_pd * (delta2 - e_pe), 0.0))) / d_pd
                eta = [a + tau * b for a, b in zip(eta, d)]
                heta = [a + tau * b for a, b in zip(heta, hd)]
                return eta, heta, j, "negative curvature" if d_hd <= 0 else "trust region"
            new_eta = [a + alpha * b for a, b in zip(eta, d)]
            new_heta = [a + alpha * b for a, b in zip(heta, hd)]
            new_model = self._inner(xs, grad, new_eta) + 0.5 * self._inner(xs, new_eta, new_heta)
            if new_model >= model:
                return eta, heta, j, "model increased"
            eta, heta, model, e_pe = new_eta, new_heta, new_model, e_pe_new
            r = [a + alpha * b for a, b in zip(r, hd)]
            if math.sqrt(max(self._inner(xs, r, r), 0.0)) <= stop_at:
                return eta, heta, j, "kappa/theta"
            z_r_old = z_r
            z, z_r = self._preconditioned(xs, r)
            beta = z_r / z_r_old
            d = [m.proju(x, -a + beta * b) for m, x, a, b in zip(self._manifolds, xs, z, d)]
            e_pd = beta * (e_pd + alpha * d_pd)
            d_pd = z_r + beta * beta * d_pd
        return eta, heta, self.max_inner, "max_inner"
