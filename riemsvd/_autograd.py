"""Exact derivatives of the leading k singular triplets, through the Newton operator's solves.

The backward (VJP) and forward (JVP) rules of ``riemsvd.solve`` for dense tensors, whole or sharded
across processes: the part of dU, dV inside span(U), span(V) by the full-SVD formula on the k×k block,
the part outside by CG on the same tangent-space operator that the solver's Newton step uses. No full
SVD of A; for a dense A on the CPU, where CG's rate says it costs less, the part outside is solved
directly from the Gram matrix of the complement (docs/derivation.md, §7).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from riemsvd._backend import batch_elements, dense_threads, mm, no_autocast, readable_any, solver_threads
from riemsvd._newton import NewtonOperator, tcg
from riemsvd._operator import DenseOperator, Operator
from riemsvd._result import DegenerateSpectrumWarning, callers_level
from riemsvd._tolerance import eps

__all__ = ["Layout", "SolveCall", "SolveFunction", "cotangent", "needs_graph"]


class Layout:
    """How A and its triplets are held: whole by this process (this class), or sharded.

    The derivative rules work on the blocks this process holds (``local``) and reach A only through
    the operator that ``operator`` builds from its block, whose spaces do the reductions over rows.
    """

    def operator(self, a: torch.Tensor) -> Operator:
        """The operator of the (local block of the) matrix ``a``."""
        return DenseOperator(a)

    def local(self, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        """The block of ``x`` (an input, output or their (co)tangent; laid out as ``like``) held here."""
        return x

    def wrap(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A tensor laid out as ``like`` from the block ``x`` held here."""
        return x

    def outputs(self, u: torch.Tensor, s: torch.Tensor, v: torch.Tensor):
        """The results (U, S, V) as returned to the user, from the blocks held here."""
        return u, s, v


@dataclass
class SolveCall:
    """What ``SolveFunction`` needs besides A and the warm start: the solver to run (on A and the
    warm start, or None for the one it was prepared with), how A is laid out, and a place for the
    solve's ``info`` (the whole batch's, also under vmap)."""

    run: Callable[[torch.Tensor, Any], Any]
    layout: Layout = field(default_factory=Layout)
    info: Any = field(default=None)


def _block_rates(
    s: torch.Tensor,
    c: torch.Tensor,
    what: str,
    weight: torch.Tensor | None = None,
    whole: torch.Tensor | None = None,
    common: torch.Tensor | None = None,
    cotangent_eps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(D̂⁻, D̂⁺) = (D⁻, D⁺)/c for the values s (..., k) and the unit c (..., 1, 1) of :func:`_unit`,
    in which ŝ = c·σ is of order 1 (the products stay in range at any scale of A):
    D⁻_ij = 1/(σ_j − σ_i) and D⁺_ij = 1/(σ_j + σ_i) off the diagonal, 0 on it. Within
    the k×k block, Ω_U = ½[(P + Pᵀ)∘D⁻ + (P − Pᵀ)∘D⁺] and Ω_V = ½[(P + Pᵀ)∘D⁻ − (P − Pᵀ)∘D⁺]: a
    common rotation of the pairs (uᵢ, vᵢ), (uⱼ, vⱼ) at the rate D⁻, and a relative one at D⁺ (the
    full-SVD formula, (σ_j P_ij + σ_i P_ji)/(σ_j² − σ_i²) for Ω_U, split in two).

    Where σ_i and σ_j tie, the common rotation is not defined and D⁻ is 0 there, with a warning
    where ``weight`` (..., k, k), the skew parts the rates multiply, is above its rounding for the
    pair (the loss turns with it), or always without ``weight``: a loss on the first pair alone of
    σ = 3, 2, 1, 1 (k = 4) drew the warning for the last two, whose rotations it does not see (a new
    user's trial). The rounding is that of ``whole``, what ``weight`` is the skew part of (weight's
    own without it): a loss of span(U) alone (‖UᵀX‖², σ = 3, 2, 2) has a symmetric UᵀŪ, whose skew
    part is rounding only, and that rounding, measured against itself, drew the warning (another
    trial).

    Values tie where they differ by at most 64ε·σ₁, or 16ε·σ₁ where ``common`` (..., k, k), the part
    of the skew parts that D⁻ multiplies (|S_U + S_V|), shows the loss turning with the pair beyond
    its rounding and the cotangent's (``cotangent_eps`` (...): a result cast to a coarser dtype
    hands back a cotangent with that dtype's rounding; a bfloat16 result's, taken for float32's,
    kept the rate under a loss of span(U), 10.6× off, and a float32 loss of a float64 solve's U
    2.0e4 off; reviews). Not |S_U| + |S_V|, which ``weight`` is: a loss of U Vᵀ has S_V = −S_U,
    and its gradient came out 1.9e-3 off where it had been 1.0e-5 (a review). The tangents of
    forward mode, which serve any function, keep 64ε·σ₁. Why two floors: values equal by
    construction came out up to 2.5ε·σ₁ apart (float32 and float64, dense and iterative, 64×64 to
    1000×400, 20 seeds each), and a skew part that should be 0 carries rounding that
    1/(σ_j − σ_i) magnifies, which only a loss that turns with the pair outweighs. A fixed 64ε·σ₁
    had taken a float32 gap of 5.6e-6·σ₁ (47ε) for a tie, and the gradient of Σ i·‖uᵢᵀX‖²
    (1536×384, k = 32) came out 1.8e-2 off where torch.linalg.svd's float32 one was 2.2e-4 (a new
    user's trial); it is 7.8e-6 off now. Between the two floors the rate is kept and a warning says so: the
    magnified rounding left such a gradient 1–7% off at a gap of 25ε (float32, 300×200, k = 6, 5
    seeds; 100% with the rate left out, 11–130% by torch.linalg.svd in float32).

    The relative rotation stays defined at a tie: D⁺ is kept, 0 only where σ_i + σ_j is itself
    rounding (two zero values). Both had been dropped, and the gradient of U Vᵀ at σ₂ = σ₃ (k = 5)
    came out 6% off (a new user's trial), where it is exact now. Values coincided where their squares
    did, within 64ε·σ₁², which for small values is no rounding: float32 σ₄ = 2e-3, σ₅ = 1e-3 (σ₁ = 5)
    counted as a tie and u₄'s gradient came out 2.7e-10 for −3.97e-5 (a review)."""
    s_hat = s * c[..., 0]
    minus = s_hat.unsqueeze(-2) - s_hat.unsqueeze(-1)  # [..., i, j] = ŝ_j − ŝ_i
    plus = s_hat.unsqueeze(-2) + s_hat.unsqueeze(-1)
    top = s_hat[..., :1].unsqueeze(-1).clamp_min(torch.finfo(s.dtype).tiny)
    rounding = 64 * eps(s.dtype) * top
    eye = torch.eye(s.shape[-1], dtype=torch.bool, device=s.device)
    felt = ~eye  # pairs the loss's vectors turn with, for the warning: all, unless ``weight`` shows
    sharp = torch.zeros_like(eye)  # pairs that tie at 16ε·σ₁ (see above)
    if weight is not None:
        reference = (weight if whole is None else whole).abs().amax((-2, -1), keepdim=True)
        felt = felt & (weight.abs() > 64 * eps(s.dtype) * reference)
        if common is not None:
            unit = torch.full_like(reference, eps(s.dtype))
            if cotangent_eps is not None:
                unit = torch.maximum(unit, cotangent_eps[..., None, None].to(unit.dtype))
            noise = 64 * unit * reference
            sharp = ~eye & (common > noise)
    close = (minus.abs() <= torch.where(sharp, rounding / 4, rounding)) & ~eye
    near = sharp & ~close & (minus.abs() <= rounding)
    if readable_any(close & felt, default=False) or readable_any(near, default=False):
        _warn_close(s, what, close & felt, near)
    drop_minus = close | eye
    drop_plus = eye | (plus <= rounding)
    d_minus = torch.where(drop_minus, torch.zeros_like(minus), 1.0 / torch.where(drop_minus, 1.0, minus))
    d_plus = torch.where(drop_plus, torch.zeros_like(plus), 1.0 / torch.where(drop_plus, 1.0, plus))
    return d_minus, d_plus


def _warn_close(s, what: str, tied: torch.Tensor, near: torch.Tensor) -> None:
    """The warnings of :func:`_block_rates`: values that tie (``tied`` (..., k, k)), and values kept
    apart within 64ε·σ₁ (``near``), each where the loss turns with their pair."""
    top = s[..., :1].unsqueeze(-1).clamp_min(torch.finfo(s.dtype).tiny)
    gaps = (s.unsqueeze(-1) - s.unsqueeze(-2)).abs() / top
    if readable_any(tied, default=False):
        gap = float(gaps.masked_fill(~tied, math.inf).min())
        warnings.warn(
            f"two of the k singular values coincide ({gap:.2g}·σ₁ apart, within the rounding of "
            f"{s.dtype}): a common rotation of their pairs (uᵢ, vᵢ), (uⱼ, vⱼ) changes no singular "
            f"triplet, so the {what} gradient of those vectors is not defined, and that rotation's part "
            "is left out of it. Exact all the same: gradients of span(U), span(V) and U Vᵀ, and of S "
            "through symmetric functions of the tied values only (their sum, not one of them alone, "
            "which has no derivative there); not those of U S Vᵀ (write it A V Vᵀ, whose gradient "
            "through span(V) is exact) or of the vectors themselves." + batch_elements(tied.any(-1).any(-1)),
            DegenerateSpectrumWarning,
            stacklevel=callers_level(),
        )
    if readable_any(near, default=False):
        gap = float(gaps.masked_fill(~near, math.inf).min())
        # the remedy by the dtype: float64 at its own rounding has none but a loss blind to the turn
        remedy = (
            "float64 resolves them"
            if s.dtype != torch.float64
            else "at float64's own rounding only a loss blind to their turn is well determined"
        )
        warnings.warn(
            f"two of the k singular values are {gap:.2g}·σ₁ apart, within 64 times the rounding of "
            f"{s.dtype} ({64 * eps(s.dtype):.2g}·σ₁): the {what} gradients of those vectors themselves "
            "divide rounding by that gap and can be off by a sizeable part of themselves (not those of "
            f"span(U), span(V), U Vᵀ or S); {remedy}." + batch_elements(near.any(-1).any(-1)),
            DegenerateSpectrumWarning,
            stacklevel=callers_level(),
        )


def _unit(s: torch.Tensor) -> torch.Tensor:
    """c = 2^−⌊log₂ σ₁⌋ per matrix, shape (...): σ·c is of order 1, exactly, whatever A's scale
    (squares of σ and CG's inner products would overflow or underflow beyond about 1e±154). Where σ₁
    is subnormal, c is the largest power of two the dtype holds, and σ₁·c still at least the dtype's
    ε: 2^−⌊log₂ σ₁⌋ was infinite there, and the U/V gradient of a float64 A scaled by 2⁻¹⁰³⁰ failed
    in eigh or came back NaN (a new user's trial)."""
    s1 = s[..., 0]
    power = -torch.floor(torch.log2(torch.where(s1 > 0, s1, torch.ones_like(s1))))
    return torch.exp2(power.clamp_max(math.frexp(torch.finfo(s.dtype).max)[1] - 1))  # 2^1023 in float64


def _complement_solve(op: Operator, u, s, v, rhs_u, rhs_v, warn: bool = True):
    """(p, q) with K_i (p_i, q_i) = (rhs_u_i, rhs_v_i) on the complements of span(U), span(V).

    K_i = [[σ_i, −A], [−Aᵀ, σ_i]] restricted there has eigenvalues σ_i ∓ σ_j (j > k): positive
    definite when σ_k > σ_{k+1}, so CG applies; all k columns advance together. CG runs on c·K_i
    (c from :func:`_unit`), whose solution is the wanted one divided by c. ``op`` (A's operator, not
    yet scaled) is scaled by c here. A dense A held whole on the CPU is solved directly instead
    (:func:`_direct_complement_solve`) where CG's rate projects more iterations still to go than the
    direct solve costs (:func:`_cg_budget`), or at once where it costs fewer than CG ever takes.

    Recorded by autograd (a backward with ``create_graph``), the right-hand sides' part goes through
    :class:`_AlongRhs`, the solve being linear in them: CG's own graph, nonlinear in them, had no
    derivative at a zero right-hand side, where torch.autograd.functional.hvp differentiates the
    double backward (σ₁'s Hessian-vector product came back 0, a normalization's 19% off; a new
    user's trial).
    """
    along = torch.is_grad_enabled() and not torch._C._are_functorch_transforms_active()
    if along and (rhs_u.requires_grad or rhs_v.requires_grad):
        p, q = _complement_solve(op, u, s, v, rhs_u.detach(), rhs_v.detach(), warn)
        dp, dq = _AlongRhs.apply(rhs_u, rhs_v, lambda gu, gv: _complement_solve(op, u, s, v, gu, gv, False))
        return p + dp, q + dq
    budget = _cg_budget(op, s.shape[-1], u, s, v, rhs_u, rhs_v)
    if budget is not None and budget < _CG_LEAST:
        return _direct_complement_solve(op, u, s, v, rhs_u, rhs_v, warn)
    c = _unit(s)
    op.scale = scale = c.reshape(c.shape + (1, 1))
    newton = NewtonOperator(op, u, v, s * c.unsqueeze(-1))
    rhs = newton.project(rhs_u, rhs_v)
    if not op.distributed:  # (a block's largest entry is its own: sharded columns would differ)
        # each column's right-hand side with its largest entry 1 (the solution scales back with it): a
        # cotangent of 1e-24 in float32 (1e-170 in float64) had its ‖r‖² underflow to 0, and CG
        # stopped at once with a gradient 96% off, unsaid (a review)
        largest = torch.maximum(rhs[0].abs().amax(-2), rhs[1].abs().amax(-2)).unsqueeze(-2)
        largest = torch.where(largest > 0, largest, torch.ones_like(largest))
        rhs = (rhs[0] / largest, rhs[1] / largest)
        scale = scale * largest
    # float32 at 1e3·ε left gradients 1.1–5.8e-4 off (torch.linalg.svd's own float32 ones 1.2e-5 to
    # 2.2e-4; a new user's trial), at 1e2·ε 1.2e-5 to 7.8e-5 for 13–19% more CG iterations; float64's
    # error is the forward's (2e-12 to 8e-12) either way, and 1e2·ε took 4–8% more iterations there
    rtol = (1e2 if op.dtype == torch.float32 else 1e3) * eps(op.dtype)
    m, n = op.shape
    maxiter = max(200, 4 * (m + n))
    if budget is not None:  # CG's rate promised the end within the budget: not far past it
        maxiter = min(maxiter, 3 * budget)
    with solver_threads(op.device, m * n * op.batch_shape.numel(), distributed=op.distributed):
        (p, q), stats = tcg(newton, rhs, maxiter=maxiter, rtol=rtol, curvature=warn, budget=budget)
        unfinished = budget is not None and (stats["gave_up"] or readable_any(stats["active"], default=True))
        if warn and not unfinished:
            (kp, kq), residual = newton.with_residual(p, q)
    if unfinished:  # the direct solve costs less than CG's remaining iterations would
        return _direct_complement_solve(op, u, s, v, rhs_u, rhs_v, warn)
    if warn:
        diff = (kp - rhs[0], kq - rhs[1])
        res, size = newton.dot(diff, diff).sqrt(), newton.dot(rhs, rhs).sqrt()
        least = stats["least_curvature"].amin(-1)
        # where CG met negative curvature or left more than 1e6·ε (the threshold of both dtypes
        # before float32's tighter rtol), or met a curvature within 10‖R‖ of the triplets' residual
        # block R: by Wedin's sin θ theorem the computed span(U), span(V) are off the exact ones by up
        # to ‖R‖/(σ_k − σ_{k+1}), and each Rayleigh quotient CG takes on the complements is at least
        # σ_k − σ_{k+1}. Float32 at σ_{k+1} = (1 − 1e-6)·σ_k (300×200, k = 5) had given ⟨X, U Uᵀ⟩'s
        # gradient off by a median 120%, up to 4600%, without a word: the residuals of 2–4e-6
        # exceeded the gap (a new user's trial). One-sided: a curvature CG did not meet (no part of
        # the cotangent there) warns of nothing.
        bad = (stats["negative_curvature"] | (res > 1e6 * eps(op.dtype) * size)).any(-1)
        bad = bad | (least <= 10 * residual)  # an exact tie: both 0 (see the direct solve's)
        top = newton.sigma[..., 0, 0].clamp_min(torch.finfo(op.dtype).tiny)  # c·σ₁
        relative = (res / size.clamp_min(torch.finfo(op.dtype).tiny)).detach()  # read as a figure
        steps = stats["iterations"]
        _warn_unresolved(
            bad,
            least / top,
            residual / top,
            lambda: f"; its relative residual {float(relative.max()):.2g} after {steps} CG steps",
        )
    p, q = newton.project(p, q)
    return p * scale, q * scale


def _warn_unresolved(bad: torch.Tensor, least: torch.Tensor, residual: torch.Tensor, how=lambda: "") -> None:
    """The warning that σ_k − σ_{k+1} is below what the triplets resolve, for the matrices ``bad``
    (...): ``least`` the least curvature met on the complements, ``residual`` the triplets' residual
    block's norm (both (...), relative to σ₁); ``how()`` says more of the solve (read only where it
    warns: under vmap no tensor can be read)."""
    if not readable_any(bad, default=False):
        return
    # read detached: under torch.func.grad they carry a graph, and float() of one made torch warn
    # of "a tensor with requires_grad=True" beside this warning (a new user's trial)
    least, residual = least.detach(), residual.detach()
    warnings.warn(
        "the singular vector gradient is ill-conditioned: σ_k is (nearly) equal to σ_{k+1}, "
        "closer than the returned triplets resolve or than the adjoint solve could solve for, so "
        "the k-th singular subspace is not known to this accuracy (the adjoint solve met a "
        f"curvature of {float(least.min()):.2g} on the complements against the triplets' residual "
        f"{float(residual.max()):.2g}, relative to σ₁{how()}). The U/V gradient can be off by its own "
        "size; a smaller `tol`, or float64, resolves a gap that is not an exact tie. So can σ_k's own "
        "gradient, u_k v_kᵀ of the returned triplet, which needs no solve but may stand for a mix of "
        "the k-th and (k+1)-th pairs (at an exact tie σ_k alone has no derivative: u_k v_kᵀ is the "
        "limit of its gradients from one side); the other values' gradients are exact." + batch_elements(bad),
        DegenerateSpectrumWarning,
        stacklevel=callers_level(),
    )


# CG's iterations that cost what the direct solve does, about γ·(1 + 1.55·p/q)·p/(k + 20) for an m×n
# A with p = min(m, n), q = max(m, n): an iteration is a k-column block product each way with a fixed
# part (m·n·(k + 20)), the direct solve the Gram matrix of the smaller side and its eigendecomposition
# (q·p² + 1.55·p³; in float64 for a float32 A, hence float32's larger γ). Fitted to the measured
# ratio, one thread (the direct solve's time over CG's per iteration, k = 4, 16, 64): float32
# 384×384 76, 48, 22; 1536×384 38, 29, 14; 2000×384 35, 27, 13; 4000×1000 87, 60, 21; float64
# 2000×1000 68, 45, 16; 1000×500 31, 22, 10. CG took 13–268 iterations there (the gap
# σ_k − σ_{k+1} sets how many): float64 2000×1000, k = 64, 3705 ms for 268 where the direct solve
# takes 223; float32 384×384, k = 4, 2.2 ms for 13 where it takes 12.4. Where the budget is below
# _CG_LEAST, fewer than CG ever took, the direct solve runs at once.
_DIRECT_COST = {torch.float32: 1.8, torch.float64: 0.9}  # γ
_CG_LEAST = 12
# The direct solve holds A in float64 about three times over (A, B = P_U A P_V, their products): up
# to this many bytes; beyond, CG, whose memory is a few blocks of k columns (a float32 4000×2000 A:
# 299 MB more at its peak against CG's 160; a review)
_DIRECT_BYTES = 1 << 30


def _cg_budget(op: Operator, k: int, *tensors: torch.Tensor) -> int | None:
    """CG's iterations worth the direct solve for k columns, where that can run: a dense A held whole
    on the CPU whose float64 work fits _DIRECT_BYTES, no graph being recorded through the solve from
    A or ``tensors`` (a second derivative: the complement's Gram matrix has k zero eigenvalues, where
    torch's own eigh backward has no derivative), no forward-mode tangent riding on them, no
    torch.func transform around it (:func:`needs_graph`); else None."""
    if not isinstance(op, DenseOperator) or op.distributed or torch.device(op.device).type != "cpu":
        return None
    if 3 * 8 * op.a.numel() > _DIRECT_BYTES:
        return None
    if any(needs_graph(t) for t in (op.a, *tensors) if t is not None):
        return None
    p, q = sorted(op.shape)
    return int(_DIRECT_COST.get(op.dtype, 0.9) * (1 + 1.55 * p / q) * p / (k + 20))


class _AlongRhs(torch.autograd.Function):
    """Zero, with the derivative of the complement solve (p, q) = M (rhs_u, rhs_v) in its right-hand
    sides: M itself, which is symmetric (the inverse of K_i on the complements, column by column), so
    the backward of a gradient (g_p, g_q) is ``solve(g_p, g_q)``, one more solve, made only where a
    derivative in the right-hand sides is asked for."""

    @staticmethod
    def forward(ctx, rhs_u, rhs_v, solve):
        ctx.solve = solve
        return torch.zeros_like(rhs_u), torch.zeros_like(rhs_v)

    @staticmethod
    def backward(ctx, g_p, g_q):
        return (*ctx.solve(g_p, g_q), None)

    @staticmethod
    def jvp(ctx, d_rhs_u, d_rhs_v, _solve):
        # forward over reverse (a forward_ad dual through a backward with create_graph): the same
        # linear map on the right-hand sides' tangents, which the detached solve beside it drops
        return ctx.solve(d_rhs_u, d_rhs_v)


def _direct_complement_solve(op: Operator, u, s, v, rhs_u, rhs_v, warn: bool):
    """:func:`_complement_solve` by eliminating p: with B = P_U A P_V (P_U = I − U Uᵀ), the system
    σ_i p − B q = r_u, −Bᵀ p + σ_i q = r_v gives (σ_i² − BᵀB) q = Bᵀ r_u + σ_i r_v and
    p = (r_u + B q)/σ_i; BᵀB = Z Λ Zᵀ by one symmetric eigendecomposition of the smaller side's Gram
    matrix (A's transpose where it is wide), in float64 (a float32 A's too: its float32 decomposition
    left the gradients of Gaussian 300×200 matrices, k = 3, 1.3e-4 off float64's, CG 6e-6 to 2.5e-5).
    In c-scaled units (:func:`_unit`). ``op``: a dense A's (:func:`_cg_budget`). All of it under the
    dense path's threads: numpy's BLAS threads, left spinning by its products, had slowed torch's
    LAPACK call on a 384×384 float32 A from 13 ms to 27–97."""
    assert isinstance(op, DenseOperator)
    with dense_threads(op.device):
        work = torch.float64 if op.dtype == torch.float32 else op.dtype
        u, s, v, rhs_u, rhs_v = (t.to(work) for t in (u, s, v, rhs_u, rhs_v))
        c = _unit(s).reshape(s.shape[:-1] + (1, 1))
        a = op.a.to(work) * c
        wide = a.shape[-2] < a.shape[-1]
        if wide:  # the same equations for Aᵀ, with (p, q) and (U, V) swapped
            a, u, v, rhs_u, rhs_v = a.mT, v, u, rhs_v, rhs_u
        out = op.left.project_out  # a Space of local tensors: the same on both sides
        r_u, r_v = out(u, rhs_u), out(v, rhs_v)
        uta = mm(u.mT, a)  # Uᵀ A
        b = a - mm(u, uta)
        bv = mm(b, v)  # (A − U UᵀA) V
        b = b - mm(bv, v.mT)
        # torch's product, on its threads (numpy's BLAS has one here): 15.9 ms against 19.3 at
        # 2000×800, 2.6 against 3.9 at 1536×384 (a review)
        lam, z = torch.linalg.eigh(b.mT @ b)
        s_i = (s * c[..., 0]).unsqueeze(-2)  # (..., 1, k)
        det = s_i * s_i - lam.clamp_min(0).unsqueeze(-1)  # (..., n, k)
        safe = torch.where(det != 0, det, torch.ones_like(det))
        coef = mm(z.mT, mm(b.mT, r_u) + r_v * s_i)
        q = out(v, mm(z, torch.where(det != 0, coef / safe, torch.zeros_like(coef))))
        s_safe = torch.where(s_i != 0, s_i, torch.ones_like(s_i))
        p = out(u, torch.where(s_i != 0, (r_u + mm(b, q)) / s_safe, torch.zeros_like(r_u)))
        if warn:
            # as CG's: the least curvature of K_i met, σ_i − σ̄₁ (over the columns with a cotangent),
            # against 10 times the triplets' residual block
            met = (r_u.abs().amax(-2) > 0) | (r_v.abs().amax(-2) > 0)  # (..., k)
            curvature = s_i[..., 0, :] - lam[..., -1:].clamp_min(0).sqrt()
            least = torch.where(met, curvature, torch.full_like(curvature, math.inf)).amin(-1)
            # R from the products above (A V = bv + U UᵀA V, Aᵀ U = (UᵀA)ᵀ), not two more passes over A
            r_left, r_right = bv + mm(u, mm(uta, v)) - u * s_i, uta.mT - v * s_i
            residual = (r_left.square().sum((-2, -1)) + r_right.square().sum((-2, -1))).sqrt()
            top = s_i[..., 0, 0].clamp_min(torch.finfo(work).tiny)
            # ≤: an exact tie of exact triplets (diag(3, 3, …), k = 1, on the dense path) meets a
            # curvature of 0 beside a residual of 0, and had its U gradient silently finite and
            # meaningless, where the iteration's rounding warned (a new user's trial)
            _warn_unresolved(least <= 10 * residual, least / top, residual / top)
        if wide:
            p, q = q, p
        return (p * c).to(op.dtype), (q * c).to(op.dtype)


def _unrecorded(a: torch.Tensor) -> torch.Tensor:
    """A for the complement solve's operator: detached where no derivative of the solve is taken
    (:func:`needs_graph`: grad mode off, as in a backward that makes no graph, no torch.func
    transform, no forward-mode dual on A), so that its products go through numpy's BLAS as the
    forward's do (``mm``: torch's for a tensor that requires grad). A dual's tangent rides through a
    backward that makes no graph on the backward's own torch operations, which a detached A (and the
    direct solve's numpy and LAPACK) drop: forward over reverse without ``create_graph`` came out
    47–93% off, unsaid (a review). With torch's, a float32 1500×600 A times 2
    columns took 1.35 ms against numpy's 0.24, and the backward of a k = 2 subspace loss 371–510 ms
    against 56–59 at k = 1 (a new user's trial; 2-core AMD EPYC). Not under a transform: vjp's
    backward inside jacfwd runs with grad mode off under an outer ``torch.no_grad()``, and a detached
    A dropped jacfwd's tangent, torch.func.hessian 19–72% off, unsaid (a review)."""
    return a if needs_graph(a) else a.detach()


def _tangent(layout: Layout, a, u, s, v, da):
    """dU, dS, dV for a perturbation dA of A (the JVP); all arguments are the blocks held here."""
    with no_autocast(a.device):  # see cotangent
        d_op = layout.operator(da)
        da_v, da_t_u = d_op.matmat(v), d_op.rmatmat(u)
        p = d_op.left.inner(u, da_v)  # Uᵀ dA V
        ds = torch.diagonal(p, dim1=-2, dim2=-1)
        c = _unit(s).reshape(s.shape[:-1] + (1, 1))
        d_minus, d_plus = _block_rates(s, c, "U/V")
        common, relative = d_minus * (p + p.mT), d_plus * (p - p.mT)
        omega_u = 0.5 * (common + relative) * c
        omega_v = 0.5 * (common - relative) * c
        x, y = _complement_solve(layout.operator(_unrecorded(a)), u, s, v, da_v, da_t_u)
        return mm(u, omega_u) + x, ds, mm(v, omega_v) + y


def cotangent(layout: Layout, a, u, s, v, gu, gs, gv):
    """Ā for cotangents (Ū, S̄, V̄); Ū, V̄ may be None (then no linear solve at all). All arguments
    and the result are the blocks held here: Ā is laid out as A.

    Autocast off, as in the forward: a backward run under ``torch.autocast`` had CG's products in
    bfloat16, the float32 gradient of ‖U Uᵀ x‖² 5.9e-3 off where it is 4.4e-5 outside, and a false
    warning of a tie (1536×384, k = 8; a new user's trial)."""
    with no_autocast(a.device):
        ga = torch.zeros_like(a)
        if gs is not None:
            ga = ga + mm(u * gs.unsqueeze(-2), v.mT)
        if gu is None and gv is None:
            return ga
        given = [g for g in (gu, gv) if g is not None]
        gu = torch.zeros_like(u) if gu is None else gu
        gv = torch.zeros_like(v) if gv is None else gv
        c = _unit(s).reshape(s.shape[:-1] + (1, 1))
        op = layout.operator(_unrecorded(a))
        zero_tail = min(op.shape) > s.shape[-1] and readable_any(s[..., -1] == 0, default=False)
        if zero_tail:
            # σ_k = σ_{k+1} = 0 exactly (A of rank below k, a zero matrix): no solve sees it where the
            # cotangent lies in the returned vectors' span, and a zero matrix's U loss got a silent 0
            # gradient, where torch.linalg.svd gives NaN (a new user's trial)
            warnings.warn(
                "σ_k is 0, as is σ_{k+1} (A has rank below k): the singular vectors of a zero singular "
                "value are not unique, so the U/V gradient of those is not defined. The S gradient is "
                "still exact for the nonzero values (a zero one has none: σ ≥ 0 has a kink there)."
                + batch_elements(s[..., -1] == 0),
                DegenerateSpectrumWarning,
                stacklevel=callers_level(),
            )
        if op.distributed:  # each process's block could tell another story: the floors as before
            cotangent_eps = torch.full(s.shape[:-1], eps(torch.bfloat16), dtype=s.dtype, device=s.device)
        else:
            cotangent_eps = _cotangent_eps(given, s.dtype)
        g_u, g_v = op.left.inner(u, gu), op.right.inner(v, gv)
        skew_u, skew_v = g_u - g_u.mT, g_v - g_v.mT
        weight, whole, common = skew_u.abs() + skew_v.abs(), g_u.abs() + g_v.abs(), (skew_u + skew_v).abs()
        d_minus, d_plus = _block_rates(s, c, "U/V", weight, whole, common, cotangent_eps)
        p_bar = 0.5 * ((skew_u + skew_v) * d_minus + (skew_u - skew_v) * d_plus) * c
        p, q = _complement_solve(op, u, s, v, gu, gv, warn=not zero_tail)  # warned of already
        return ga + mm(u, mm(p_bar, v.mT)) + mm(p, v.mT) + mm(u, q.mT)


def _cotangent_eps(cotangents: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Per matrix (...), ε of the coarsest dtype that holds every entry of the cotangents (..., rows,
    k), 0 where none coarser than theirs does: a result cast to bfloat16, float16 or (from float64)
    float32 hands back its cotangent with that dtype's rounding (autograd's cast). Tensors only, so
    that torch.func transforms keep it (a host read there had to assume the coarsest)."""
    first = cotangents[0]
    out = torch.zeros(first.shape[:-2], dtype=dtype, device=first.device)
    for coarse in (torch.float32, torch.float16, torch.bfloat16):  # the finest first: the coarsest wins
        if eps(coarse) <= eps(first.dtype):
            continue
        held = torch.ones_like(out, dtype=torch.bool)
        for g in cotangents:
            held = held & (g == g.to(coarse).to(g.dtype)).all(-1).all(-1)
        out = torch.where(held, torch.full_like(out, eps(coarse)), out)
    return out


def needs_graph(a: torch.Tensor) -> bool:
    """Whether a solve on ``a`` must run through :class:`SolveFunction`: a reverse-mode graph to
    record, a forward-mode tangent, or a torch.func transform around it. Elsewhere the solver runs
    directly: torch's ``Function.apply`` binds ``forward``'s signature on every call, and with its
    bookkeeping that cost 40–60 µs a solve (a 60×40 solve 633 µs against 673–693; 256×256 float32
    1496–1538 against 1551–1633)."""
    if (a.requires_grad and torch.is_grad_enabled()) or torch._C._are_functorch_transforms_active():
        return True  # vmap, grad, jacrev, jvp: what torch's apply checks
    try:
        return torch.autograd.forward_ad.unpack_dual(a).tangent is not None
    except RuntimeError as err:
        # inside a compiled graph's operator (below autograd) within a dual level, unpack_dual fails on
        # an internal assert of torch's _fw_primal (aot_eager and inductor; a new user's trial).
        # riemsvd.solve itself runs eagerly there (_solve.solve); the operators are still reached
        # directly (torch.ops.riemsvd.solve, a normalization's refresh_pair)
        if "_fw_primal" not in str(err):
            raise
        raise RuntimeError(
            "a riemsvd custom operator (torch.ops.riemsvd.solve, or riemsvd.nn's refresh of its stored "
            "pair) under torch.compile inside a torch.autograd.forward_ad.dual_level: PyTorch's custom "
            "operators have no forward-mode rule, so no tangent passes through it. Call riemsvd.solve "
            "(which runs eagerly under forward mode), or take the derivative outside torch.compile."
        ) from err


class SolveFunction(torch.autograd.Function):
    """(U, S, V, converged, residual, errors) = solve(A) with the exact backward and forward
    derivatives of the top-k triplets. The warm start (U0, V0) and ``info``'s per-matrix tensors pass
    through it as inputs and outputs without derivatives, so that torch.func.vmap maps them with A:
    held by the solve's closure, a warm start batched by vmap reached the solver unmapped ("your
    tensor may have escaped from inside a function being vmapped"), and ``info.residual`` read inside
    the mapped function held the whole batch's values (a new user's trial)."""

    @staticmethod
    def forward(a: torch.Tensor, u0: torch.Tensor | None, v0: torch.Tensor | None, call: SolveCall):
        u, s, v, info = call.run(a, None if u0 is None else (u0, v0))
        call.info = info
        # outputs that are views (the dense path's U[..., :k] of a 6×4 A, k = 1) made forward mode
        # fail inside autograd ("the tangent [must] have the same layout as primal"): copies
        triplets = tuple(x.clone() if x._is_view() else x for x in (u, s, v))
        return (*triplets, info.converged, info.residual, info.errors)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a = inputs[0]
        u, s, v = output[:3]
        ctx.layout = inputs[3].layout
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(a, u, s, v)
        ctx.save_for_forward(a, u, s, v)
        ctx.mark_non_differentiable(*output[3:])

    @staticmethod
    def backward(ctx, gu, gs, gv, *_info):
        if not ctx.needs_input_grad[0] or (gu is None and gs is None and gv is None):
            return None, None, None, None
        saved, layout = ctx.saved_tensors, ctx.layout
        if torch.is_grad_enabled() and getattr(layout, "dim", None) is not None:  # create_graph=True
            # the rules' collectives record no graph across processes: a Hessian-vector product of a
            # Shard(0) DTensor came out 7.3 off at a scale of 6.2 (a review)
            raise NotImplementedError(
                "riemsvd.solve: second derivatives (a backward with create_graph=True) of A split "
                "across processes are not supported; take them on a whole A (a Replicate() DTensor)."
            )
        a, u, s, v = (layout.local(x) for x in saved)
        gu, gs, gv = (g if g is None else layout.local(g, like) for g, like in zip((gu, gs, gv), saved[1:]))
        return layout.wrap(cotangent(layout, a, u, s, v, gu, gs, gv), saved[0]), None, None, None

    @staticmethod
    def jvp(ctx, da, _du0, _dv0, _call):
        saved, layout = ctx.saved_tensors, ctx.layout
        a, u, s, v = (layout.local(x) for x in saved)
        out = _tangent(layout, a, u, s, v, layout.local(da, saved[0]))
        return (*(layout.wrap(x, like) for x, like in zip(out, saved[1:])), None, None, None)

    @staticmethod
    def vmap(info, in_dims, a, u0, v0, call):
        # riemsvd.solve is batched over A's leading dimensions already: the mapped one goes first,
        # in the warm start too (one that is not mapped serves every matrix, as in a batched call)
        a_dim, u_dim, v_dim = in_dims[:3]
        if a_dim is None and u_dim is None and v_dim is None:
            return SolveFunction.apply(a, u0, v0, call), (None,) * 6
        a = a.movedim(a_dim, 0) if a_dim is not None else a.expand(info.batch_size, *a.shape)
        u0, v0 = (x if d is None else x.movedim(d, 0) for x, d in ((u0, u_dim), (v0, v_dim)))
        return SolveFunction.apply(a, u0, v0, call), (0,) * 6
