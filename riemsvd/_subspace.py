"""The solver for the leading k singular triplets: a thick-restarted Golub–Kahan–Lanczos process.

Orthonormal bases 𝒱 (n×p) and 𝒰 (m×p′) are kept with A𝒱 = 𝒰H exactly (in exact arithmetic) and
Aᵀ𝒰 = 𝒱Hᵀ + F C, where F (n×w) is an orthonormal basis of the residual directions, orthogonal to
𝒱. H (p′×p) and C (w×p′) are small matrices kept on the host in float64. A Ritz triplet
(𝒰y, σ, 𝒱z) of H = Y diag(σ) Zᵀ then has left residual 0 and right residual ‖C y‖: who has converged
is read off the small matrices, without any pass over m- or n-length vectors. Each iteration moves
b directions of F into 𝒱 (with w = b = 1, the default on the CPU, F itself: the Golub–Kahan
recurrence), applies A and Aᵀ once each, and reorthogonalizes (classical Gram–Schmidt, a second
pass only when the first lost more than a factor √2: Daniel–Gragg–Kaufman–Stewart). Ritz vectors
are formed only at a thick restart and at the end, where products check the result
(the iteration's own, kept beside the bases, or fresh ones: :func:`_vectors`).

In the manifold view (docs/algorithm.md), every direction added to 𝒱 is a Riemannian gradient
(the residual Aᵀu − σv) of uᵀAv on the product of spheres, or Stiefel manifolds for k > 1, at a
Ritz point; the search space is the span of all of them, and Rayleigh–Ritz maximizes the cost on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from scipy.linalg import get_blas_funcs
from scipy.linalg.lapack import dgesdd, dsyevr  # at import: 0.17 s, which a first solve paid before

from riemsvd._backend import STEPS, eager_under_compile, mm
from riemsvd._deferred import Deferred
from riemsvd._operator import MISMATCH_ROUNDINGS, DenseOperator, HostView, Operator, SparseRows
from riemsvd._progress import Progress
from riemsvd._space import Space, blas_for
from riemsvd._tolerance import DGKS, TINY, eps, product_floor

__all__ = ["SolverOptions", "default_basis", "empty_outcome", "orthonormalize", "subspace_svd", "verify"]

NON_FINITE_PRODUCTS = "the operator returned NaN or Inf during the iteration; check `A` (or its matvec)."

# the host arrays' epsilons: np.finfo took 2–3 µs a call inside a solve (_eps: 13 calls a warm one)
_NUMPY_EPS = {t: float(np.finfo(t).eps) for t in (np.float32, np.float64)}
_EPS64 = _NUMPY_EPS[np.float64]  # the small matrices' dtype (H, C and their decompositions)
# A checked residual at or below this many ε of the dtype is the rounding of the returned vectors
# themselves: further iterations cannot lower it. float32 at tol 1e-8 (400×200 Gaussians) checked
# 2.4e-7 to 2.8e-7 (2.0–2.3 ε), went on for 312–413 iterations, and ended no better.
_AT_ROUNDING = 4


@dataclass(frozen=True)
class SolverOptions:
    """Knobs of the solver; the defaults come from measurements (docs/algorithm.md).

    Attributes
    ----------
    block : int, optional
        Directions added to each basis per iteration (one product with A and one with Aᵀ of this many
        columns). Default 1 on the CPU, where a block of b columns costs 2–5 single products; on a
        GPU 8 up to k = 8, k + min(k, 16) above.
    max_basis : int, optional
        Columns of the right basis (search space and residual directions together) before a thick
        restart; default :func:`default_basis`, which a solve that stalls far above rounding doubles,
        up to 4 times itself, before it gives up (a value given here is kept, raised to the least the
        iteration needs, :func:`least_basis`: k + w + 2·block and 2w + block, w the start's columns,
        max(start_block, block) for a cold start).
    start_block : int
        Random columns of a cold start (and columns beside a warm start's). The residual space keeps
        this width, so that up to this many copies of a repeated singular value are found, and a start
        with a small component along v₁ is unlikely to converge to σ₂ of a close pair first.
    patience : int
        Looks at the small matrices without progress of the residual before widening the default
        basis (far above rounding) or giving up; they come every iteration for large A, every few
        for small A. A solve that gives up returns the triplets of its best check of the true
        residual.
    gap_last : bool
        With k ≥ 2, solve the k-th triplet only as far as the gap σ_{k−1} − σ_k above it needs: its
        residual need only be below max(tol, (σ_{k−1} − σ_k)/(20·σ₁)). σ_k + its error bar is then
        within a tenth of that gap (or 2·tol·σ₁) of the true σ_k, where the search space held σ_k.
        Two cases where it did not: σ_{k+1} closer to σ_k than that residual resolves (the triplet
        stands for the two together), and a warm start that lacked σ_k's vector, for which σ_{k+1}
        can come back (from the exact pairs of σ₁ and σ₃, on 2 of 20 seeds; none without
        gap_last): the probe for missed values still runs, but the rounds after it guard the first
        k − 1 only. ``info.residual`` counts the k-th triplet's residual in units of its bound (times
        tol over it), so that ``converged`` still means residual ≤ tol. A gradient through the k-th
        triplet's vectors is as exact as that residual. What
        :func:`riemsvd.nn.spectral_norm`'s solves ask (σ₁, and σ₂ as one estimate of the gap that
        lets a power step be trusted); no effect where k = 1, nor on the dense and trust-region
        paths, whose k-th triplet is as accurate as the others.
    """

    block: int | None = None
    max_basis: int | None = None
    start_block: int = 1
    patience: int = 60
    gap_last: bool = False

    def __post_init__(self) -> None:
        # at construction, where the mistake is made, not at the solve that uses them (a new user's trial)
        from riemsvd._validate import check_positive_int

        for name in ("block", "max_basis"):
            check_positive_int(getattr(self, name), f"SolverOptions({name}=...)")
        for name in ("start_block", "patience"):
            check_positive_int(getattr(self, name), f"SolverOptions({name}=...)", allow_none=False)
        if not isinstance(self.gap_last, bool):
            raise TypeError(f"`SolverOptions(gap_last=...)` must be True or False, got {self.gap_last!r}.")


# The defaults, one frozen instance for every solve (a new one each solve, its checks included, took
# 11 µs of a 384×384 solve's 600)
DEFAULT_OPTIONS = SolverOptions()


@dataclass
class Outcome:
    """What the solver returns: sorted triplets and their true residuals.

    ``errors`` (..., k): sqrt((‖A vᵢ − σᵢuᵢ‖² + ‖Aᵀuᵢ − σᵢvᵢ‖²)/2) per triplet in the operator's
    units, a distance from σᵢ within which A has a singular value. ``reason`` says why the iteration
    stopped: "converged", "maxiter", "stalled" or "whole space" (the bases span everything, so
    Rayleigh–Ritz is exact)."""

    u: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor
    converged: torch.Tensor
    residual: torch.Tensor
    iterations: int
    history: list = field(default_factory=list)
    errors: torch.Tensor | None = None
    reason: str = "converged"
    restarts: int = 0
    method: str = "iterative"  # the path that ran: "iterative", "dense" or "trust-region"


def default_basis(k: int, b: int = 1) -> int:
    """Columns of the right basis before a thick restart, for k triplets and blocks of b
    (docs/algorithm.md)."""
    return max(24, 2 * k + 16, 4 * b + min(8 * b, 64))


def least_basis(k: int, w: int, b: int) -> int:
    """The fewest columns of the right basis a solve keeps, for k triplets, a start of w columns and
    steps of b: the k accepted beside the residual space and a step's room, and the start block whole
    beside a residual block of its width (SolverOptions(start_block=18) crashed with the default
    basis of 24). A ``max_basis`` below it is raised to it."""
    return max(k + w + 2 * b, 2 * w + b)


def _default_block(k: int, device: torch.device) -> int:
    """Directions added per iteration. On the CPU a product with b columns costs 2–5 single products
    (OpenBLAS's gemm against gemv, 384×384 to 4000×2000 float64), so single directions — the
    Golub–Kahan recurrence — take the least time and the fewest products. On a GPU a pass with 16
    columns costs about what one does (measured on an H100: k = 1 on 4000×2000 Gaussian float32,
    212 ms with b = 1 against 118 ms with b = 16), and a step's torch calls, not its columns, set its
    time: 8 columns up to k = 8 (on an H200 at k = 8, against the 16 of k + min(k, 16): 0.89 of the
    time, 0.60–1.66 over 24 matrices from 384×384 to 4096×1024, and 28% fewer products;
    docs/benchmarks_gpu.md; k = 2–7, which had 8–14, not measured), k + min(k, 16) above (not
    measured)."""
    if torch.device(device).type == "cpu":
        return 1
    return 8 if k <= 8 else k + min(k, 16)


def _relative(res: np.ndarray, s1: np.ndarray) -> np.ndarray:
    """res / σ₁ per batch element, with 0/0 = 0 (a zero matrix is solved exactly) and r/0 = inf."""
    if s1.ndim == 0 and s1 > 0:  # one matrix, the usual case
        return res / float(s1)
    s1 = s1[..., None]
    if s1.min(initial=np.inf) > 0:  # a batch, without the error-state bookkeeping (15 µs)
        return res / s1
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = res / np.where(s1 > 0, s1, 1.0)
    return np.where(s1 > 0, rel, np.where(res > 0, np.inf, 0.0))


# SolverOptions.gap_last: the share of the gap σ_{k−1} − σ_k, relative to σ₁, that the k-th triplet's
# residual may reach. Its error bar is then at most that share of the gap, and σ_k + the bar within
# about twice it of σ_k: 0.035 of the gap at most over 232 warm solves of a GPT's 512×512 attention
# weights (float32, tol 5.4e-6; docs/algorithm.md), which took 72 products where 105 reached tol
# with both. A share of 1/10 took 72 too (0.068 of the gap), 1/50 took 76 (0.016)
_GAP_SHARE = 1 / 20


def _gap_units(rel: np.ndarray, s: np.ndarray, k: int, tol: float) -> np.ndarray:
    """Relative residuals rel (..., ≥ k) of triplets with values s (..., ≥ k), the k-th in units of its
    own bound under SolverOptions.gap_last: times tol / max(tol, _GAP_SHARE·(σ_{k−1} − σ_k)/σ₁), so
    that it passes where rel ≤ tol does for the others (a NaN gap leaves it as it is)."""
    if rel.shape[-1] < k or s.shape[-1] < k:
        return rel
    scaled = rel.copy()
    if s.ndim == 1:  # one matrix, in Python floats: numpy's 0-d calls took 9 µs a look, cold after steps
        first = float(s[0])
        bound = _GAP_SHARE * ((float(s[k - 2]) - float(s[k - 1])) / (first if first > 0 else 1.0))
        scaled[k - 1] *= tol / (bound if bound > tol else tol)  # np.fmax: a NaN gap leaves tol
        return scaled
    s1 = s[..., 0]
    gap = (s[..., k - 2] - s[..., k - 1]) / np.where(s1 > 0, s1, 1.0)
    scaled[..., k - 1] *= tol / np.fmax(tol, _GAP_SHARE * gap)
    return scaled


def _in_gap_units(ritz: Ritz, k: int, tol: float | None) -> Ritz:
    """A look's triplets with their residuals (and an estimate's slack) in gap units (:func:`_gap_units`)
    where ``tol`` is given (SolverOptions.gap_last), else ``ritz`` itself."""
    if tol is None:
        return ritz
    slack = ritz.slack
    if isinstance(slack, np.ndarray):
        slack = _gap_units(slack, ritz.s, k, tol)
    return Ritz(ritz.y, ritz.s, ritz.z, _gap_units(ritz.rel, ritz.s, k, tol), slack)


# ---------------------------------------------------------------------------------------------------
# Orthonormalization


def _orth(space: Space, basis, x, cols: int, generator, known=None):
    """Orthonormal ``cols`` columns q for x's component outside span(basis), with x ≈ basis·coef + q·r.

    ``known`` = (j, k): coefficients k (host, (..., d, c)) of x along basis[..., j : j + d] that the
    recurrence gives in exact arithmetic; they are subtracted first (the Golub–Kahan step's previous
    vector, a rank-d update). Then classical Gram–Schmidt against the whole basis, with a second pass
    only where the first removed more than 1 − 1/√2 of what was left (DGKS), then QR, and Q once more
    against the basis where R shows the columns cancelling among themselves. A column that
    held only rounding noise (the second pass removed as much again, or nothing was left) is replaced
    by a random direction, as is every column when fewer than x's are asked for (the basis then leaves
    only ``cols`` dimensions); r is then computed as qᵀx. Returns (q (..., rows, cols), coef (..., p, c)
    as a host array or None without a basis, r (..., cols, c) as a host array), c being x's columns.
    """
    host = space.to_host
    has_basis = basis is not None and basis.shape[-1] > 0
    if cols == 1 and isinstance(x, np.ndarray) and x.shape[-1] == 1 and x.ndim == 2:
        done = _orth_column(basis if has_basis else None, x, known)
        if done is not None:
            return done
    coef: np.ndarray | None = None
    k2 = 0.0  # ‖known part‖² per column
    if has_basis:
        if known is not None:
            j, kc = known
            x = x - mm(basis[..., j : j + kc.shape[-2]], space.from_host(kc, x))
            k2 = (kc * kc).sum(-2)
        c1 = space.inner(basis, x)
        x = x - mm(basis, c1)
        coef = host(c1)
    norms = space.norms(x)
    n1 = host(norms)
    # ‖x‖² = ‖basisᵀx‖² + ‖x − basis·basisᵀx‖²: the norms before the pass without another reduction
    before = n1 if coef is None else np.sqrt(n1 * n1 + (coef * coef).sum(-2))
    n0 = np.sqrt(before * before + k2)
    noise: bool | np.ndarray = False
    if has_basis and (n1 < DGKS * before).any():
        assert coef is not None  # has_basis
        c2 = space.inner(basis, x)
        x = x - mm(basis, c2)
        coef = coef + host(c2)
        norms = space.norms(x)
        n2 = host(norms)
        noise = ~(n2 > DGKS * n1)
        n1 = n2
    if known is not None and has_basis:
        assert coef is not None  # has_basis
        coef[..., j : j + kc.shape[-2], :] += kc
    lost = noise | ~(n1 > 4 * _eps(x) * n0)
    if x.shape[-1] == 1:
        if cols == 1 and not lost.any():
            return x / norms[..., None, :], coef, n1[..., None]
    else:
        q, r_ = space.qr(x)
        r = host(r_)
        if has_basis and (np.abs(np.diagonal(r, axis1=-2, axis2=-1)) < DGKS * n1).any():
            # x's columns cancelled among themselves: q = x R⁻¹ magnifies what rounding left of them
            # along the basis by ‖xᵢ‖/rᵢᵢ (float32, blocks of 8 on a rank-10 A: q 8.6e-6 off the basis,
            # and the relations 1e-6, so tol 1e-6 stalled). Once more for q, and x = basis·(coef + cq r)
            # + q₂ (r₂ r).
            assert coef is not None  # has_basis
            cq = space.inner(basis, q)
            q, r2 = space.qr(q - mm(basis, cq))
            coef = coef + host(cq) @ r
            r = host(r2) @ r
        lost = lost | ~(np.abs(np.diagonal(r, axis1=-2, axis2=-1)) > 4 * _eps(x) * n0)
        if cols == x.shape[-1] and not lost.any():
            return q, coef, r
    q = _random_fill(space, basis if has_basis else None, x, np.broadcast_to(lost, n1.shape), cols, generator)
    return q, coef, host(space.inner(q, x))


def _orth_column(basis: np.ndarray | None, x: np.ndarray, known=None):
    """:func:`_orth` for one column held whole in numpy (:func:`_steps.orth <_orth_py>` on a copy of
    it). None where the column is lost (the general path then refills it)."""
    xv = x.reshape(-1).copy()  # updated in place below
    j, kv = (0, _NO_KNOWN) if known is None else (known[0], np.ascontiguousarray(known[1][:, 0], np.float64))
    q = 0 if basis is None else basis.shape[-1]
    if basis is not None and (basis.dtype != x.dtype or not basis.flags.f_contiguous):
        basis = np.asfortranarray(basis, x.dtype)  # the kernel's layout: contiguous columns
    coef = np.zeros(q)
    n1 = _HALVES.orth(basis, q, xv, j, kv, coef, _eps(x))
    if not n1 > 0:
        return None
    return xv[:, None], (None if basis is None else coef[:, None]), np.array([[n1]])


_NO_KNOWN = np.zeros(0)  # no coefficient known in exact arithmetic


def _orth_py(basis: Any, q: int, x: np.ndarray, j: int, known: np.ndarray, coef, unit: float):
    """The Python twin of ``_steps.orth`` (riemsvd/_steps.c), for where that was not built: x (1-D, in
    place) less ``known`` (float64 coefficients along basis[:, j:], exact in exact arithmetic), then
    its part along basis[:, :q] by classical Gram–Schmidt with a second pass where the first removed
    more than 1 − 1/√2 of what was left (DGKS), then normalized; its coefficients, known ones
    included, go to coef[:q] (float64). In level-1/2 BLAS calls on a column-major basis and Python
    floats. Returns the norm left, or −1 where x held only rounding noise or is not finite (x is then
    spoiled)."""
    gemv, axpy, nrm2, scal, _ = blas_for(x.dtype)
    k2 = float(known @ known)
    if known.shape[0] == 1:  # as it mostly is: an axpy
        axpy(basis[:, j], x, a=-float(known[0]))
    elif known.shape[0]:
        x -= basis[:, j : j + known.shape[0]] @ known.astype(x.dtype, copy=False)
    if q == 0:
        n1 = float(nrm2(x))
        if not n1 > 4 * unit * n1:  # zero, or not finite
            return -1.0
    else:
        b = basis[:, :q]
        c = gemv(1.0, b, x, trans=1)
        gemv(-1.0, b, c, beta=1.0, y=x, overwrite_y=1)
        n1 = float(nrm2(x))
        # ‖c‖ by nrm2, which scales: c·c in float32 underflowed to 0 for a column of entries near 1e-25
        # (A's values 1e15 apart), "before" came out as n1, and rounding noise passed as a new direction
        # (𝒱ᵀ𝒱 0.99 off I after 5 steps, ‖V‖ = 24 returned; a new user's trial)
        before = math.hypot(n1, float(nrm2(c)))
        if n1 < DGKS * before:
            c2 = gemv(1.0, b, x, trans=1)
            gemv(-1.0, b, c2, beta=1.0, y=x, overwrite_y=1)
            c += c2
            n2 = float(nrm2(x))
            if not n2 > DGKS * n1:
                return -1.0
            n1 = n2
        if not n1 > 4 * unit * math.sqrt(before * before + k2):
            return -1.0
        coef[:q] = c
        coef[j : j + known.shape[0]] += known
    scal(1.0 / n1, x)
    return n1


def _gk_left_py(ubuf, avbuf, h, c, pu: int, pv: int, unit: float) -> float:
    """The Python twin of ``_steps.gk_left``: after A f was written into ubuf[:, pu], a copy of it into
    avbuf[:, pv]; then less its parts along 𝒰 = ubuf[:, :pu] (those in C's first row from its first
    nonzero on taken as known: the last one alone in the recurrence, all of them after a restart) and
    normalized; H's new row and column. Returns α, the norm left, or −1 where the product held only
    rounding noise (nothing written to H)."""
    x = ubuf[:, pu]
    avbuf[:, pv] = x
    nonzero = c[0, :pu].nonzero()[0]
    j = int(nonzero[0]) if nonzero.size else pu
    coef = np.zeros(pu)
    alpha = _orth_py(ubuf, pu, x, j, c[0, j:pu], coef, unit)
    if alpha >= 0:
        _set_h(h, pu, pv, coef, alpha)
    return alpha


def _set_h(h: np.ndarray, pu: int, pv: int, coef: np.ndarray, alpha: float) -> None:
    """H after a left half step: its new row pu zero but for α, its new column pv the coefficients of
    A f along 𝒰."""
    h[pu, :pv] = 0.0
    h[:pu, pv] = coef
    h[pu, pv] = alpha


def _gk_right_py(vbuf, atubuf, c, pu: int, pv: int, w: int, alpha: float, unit: float) -> float:
    """The Python twin of ``_steps.gk_right``: after Aᵀ of 𝒰's new column was written into
    vbuf[:, pv + w], a copy of it into atubuf[:, pu]; then less α f (f = vbuf[:, pv], known) and its
    other parts along 𝒱 and F, and normalized: F's new column (:func:`_shift_c` for C). Returns β, or
    −1 as :func:`_gk_left_py` (nothing written to C)."""
    q = pv + w
    y = vbuf[:, q]
    atubuf[:, pu] = y
    coef = np.zeros(q)
    beta = _orth_py(vbuf, q, y, pv, np.array([alpha]), coef, unit)
    if beta >= 0:
        _shift_c(c, w, pu, coef[pv + 1 :], beta)
    return beta


def _shift_c(c: np.ndarray, w: int, pu: int, fcoef: np.ndarray, beta: float) -> None:
    """C after a step that moved F's first column into 𝒱: F's other w − 1 columns move up a row, with
    their coefficients ``fcoef`` in C's new column pu, and the new last row is β at pu."""
    if w > 1:
        c[: w - 1, :pu] = c[1:w, :pu]
        c[: w - 1, pu] = fcoef
    c[w - 1, :pu] = 0.0
    c[w - 1, pu] = beta


def _reflect_py(vbuf: np.ndarray, pv: int, w: int, cbuf: np.ndarray, pu: int, d: np.ndarray) -> float:
    """The Python twin of ``_steps.reflect``: F = vbuf[:, pv : pv + w] and C = cbuf[:w, :pu] reflected
    in place (see :func:`_reflect`), in one gemv and one ger on F; returns ‖d‖ (nothing done where it
    is 0)."""
    a, tau, norm = _householder(d)
    if not norm > 0:
        return norm
    f = vbuf[:, pv : pv + w]
    gemv, ger = get_blas_funcs(("gemv", "ger"), dtype=f.dtype)
    af = a.astype(f.dtype, copy=False)
    ger(-tau, gemv(1.0, f, af), af, a=f, overwrite_a=1)
    c = cbuf[:w, :pu]
    c -= np.outer(tau * a, a @ c)
    return norm


class _Halves(NamedTuple):
    """The half steps, Gram–Schmidt and F's reflection the host solver calls: compiled, or their
    Python twins."""

    left: Any
    right: Any
    orth: Any
    reflect: Any


_PYTHON_HALVES = _Halves(_gk_left_py, _gk_right_py, _orth_py, _reflect_py)
# the C half steps, where setup.py built them
_HALVES = (
    _Halves(STEPS.gk_left, STEPS.gk_right, STEPS.orth, STEPS.reflect) if STEPS is not None else _PYTHON_HALVES
)


def _eps(x) -> float:
    """Machine epsilon of a tensor's or a numpy array's dtype."""
    if isinstance(x, np.ndarray):
        known = _NUMPY_EPS.get(x.dtype.type)
        return known if known is not None else float(np.finfo(x.dtype).eps)
    return eps(x.dtype)


def _random_fill(space: Space, basis, x, lost: np.ndarray, cols: int, generator):
    """The rare path of :func:`_orth`: x's columns (already projected out of the basis), the lost ones
    (or all, when ``cols`` is fewer than x's) replaced by random directions, orthonormalized outside
    the basis. The kept columns of x enter as they are, so that their span stays inside q's."""
    fresh = space.randn_like(x, generator)
    return _outside(space, basis, fresh[..., :cols] if cols < x.shape[-1] else space.select(lost, fresh, x))


def _outside(space: Space, basis, y):
    """y's columns made orthonormal outside span(basis) (None: no basis): projected out of it and
    orthonormalized, twice."""
    for _ in range(2):
        if basis is not None:
            y = space.project_out(basis, y)
        y, _ = space.qr(y)
    return y


def orthonormalize(x: torch.Tensor, basis, generator, space: Space | None = None) -> torch.Tensor:
    """Orthonormal columns spanning x's component outside span(basis) (random where x has none)."""
    space = space if space is not None else Space(x.shape[-2])
    return _orth(space, basis, x, x.shape[-1], generator)[0]


# ---------------------------------------------------------------------------------------------------
# The Krylov state


@dataclass
class AdjointWatch:
    """A caller's Aᵀ (a ``LinearOperator``'s rmatvec, ``linear_operator``'s ``adjoint``) tested in
    each step at no product's cost: for the unit columns x the step moves into 𝒱 and the new columns q
    of 𝒰 they gave, qᵀA x is known (the step's R factor, α in the Golub–Kahan recurrence), and
    xᵀ(Aᵀq) must be its transpose. ``gap``: the largest difference seen, relative to the largest α or
    β seen (each at most ‖A‖₂); for a correct Aᵀ at most 1e-3 of 100 times the products' rounding
    over 408 solves of a review (Gaussian, rank 3, graded, Laplacian, 3000×40 to 800×800, entries
    near 1e-200 and 1e150), the fault's size for a wrong one. ``limit``: the gap beyond which the
    solve treats Aᵀ as off (:func:`_adjoint_off`). The test costs 1.0–1.1 µs a step on the host
    (n = 384 and 1000), beside a caller's two products."""

    limit: float
    gap: float = 0.0
    size: float = 0.0

    def note(self, difference: float, size: float) -> None:
        self.size = max(self.size, size)
        if self.size > 0:
            self.gap = max(self.gap, difference / self.size)


@dataclass
class Lanczos:
    """The state of the iteration for a batch of matrices.

    ``vbuf`` (..., n, cap) holds 𝒱 in columns [0, pv) and F in [pv, pv + w); ``ubuf`` (..., m, cap′)
    holds 𝒰 in [0, pu): tensors, or numpy arrays on the CPU. On the host in float64, in buffers
    allocated once: ``h`` (..., pu, pv) = 𝒰ᵀA𝒱 and ``c`` (..., w, pu) with Aᵀ𝒰 − 𝒱Hᵀ = F C.

    ``avbuf`` (..., m, cap) and ``atubuf`` (..., n, cap′) hold the products themselves, A𝒱 and Aᵀ𝒰 as
    A returned them, rotated with the bases at a restart: the final check reads A vᵢ = (A𝒱)zᵢ and
    Aᵀuᵢ = (Aᵀ𝒰)yᵢ off them instead of making 2k fresh products (:func:`_vectors`). ``av_kept`` and
    ``atu_kept`` say whether they still are those of the bases: a restart stops rotating them once
    nothing will read them, or once rotating them costs more than the fresh products would
    (:func:`_products_read`)."""

    vbuf: torch.Tensor | np.ndarray
    ubuf: torch.Tensor | np.ndarray
    avbuf: torch.Tensor | np.ndarray
    atubuf: torch.Tensor | np.ndarray
    pv: int
    pu: int
    w: int
    hbuf: np.ndarray  # (..., cap′, cap)
    cbuf: np.ndarray  # (..., cap, cap′)
    av_kept: bool = True
    atu_kept: bool = True
    adjoint: AdjointWatch | None = None  # where a caller's Aᵀ is tested (subspace_svd)

    @classmethod
    def allocate(cls, work, batch: tuple, rows: int, columns: int, w: int, dtype, device) -> Lanczos:
        """Empty bases with room for ``columns`` right and ``rows`` left vectors, F of width w."""
        vbuf = work.right.empty(batch, columns, dtype, device)
        ubuf = work.left.empty(batch, rows, dtype, device)
        avbuf = work.left.empty(batch, columns, dtype, device)
        atubuf = work.right.empty(batch, rows, dtype, device)
        h, c = np.zeros(batch + (rows, columns)), np.zeros(batch + (columns, rows))
        return cls(vbuf, ubuf, avbuf, atubuf, 0, 0, w, h, c)

    def widened(self, work, rows: int, columns: int, dtype, device) -> Lanczos:
        """The same state in buffers with room for ``columns`` right and ``rows`` left vectors."""
        batch = tuple(self.hbuf.shape[:-2])
        wide = Lanczos.allocate(work, batch, rows, columns, self.w, dtype, device)
        old: Any = self  # tensors or numpy arrays, the same kind as the new buffers
        used = old.vbuf.shape[-1]  # 𝒱, F and a probe's columns: whatever the old buffers held
        wide.vbuf[..., :used], wide.avbuf[..., : self.pv] = old.vbuf, old.av
        wide.ubuf[..., : self.pu], wide.atubuf[..., : self.pu] = old.u, old.atu
        wide.hbuf[..., : self.pu, : self.pv] = self.h
        wide.cbuf[..., : self.w, : self.pu] = self.c
        wide.pv, wide.pu = self.pv, self.pu
        wide.av_kept, wide.atu_kept, wide.adjoint = self.av_kept, self.atu_kept, self.adjoint
        return wide

    @property
    def v(self):
        return self.vbuf[..., : self.pv]

    @property
    def u(self):
        return self.ubuf[..., : self.pu]

    @property
    def av(self):
        return self.avbuf[..., : self.pv]

    @property
    def atu(self):
        return self.atubuf[..., : self.pu]

    @property
    def f(self):
        return self.vbuf[..., self.pv : self.pv + self.w]

    @property
    def h(self) -> np.ndarray:
        return self.hbuf[..., : self.pu, : self.pv]

    @property
    def c(self) -> np.ndarray:
        return self.cbuf[..., : self.w, : self.pu]


@dataclass
class Ritz:
    """H = Y diag(s) Zᵀ (host, float64) and the relative residuals of the top t triplets."""

    y: np.ndarray
    s: np.ndarray
    z: np.ndarray | None  # None for an estimate (:func:`_estimate`) unless taken as it is (_own_triplets)
    rel: np.ndarray  # (..., t)
    slack: np.ndarray | float = 0.0  # (..., t): how far an estimate's rel may be from the exact one


def _ritz(st: Lanczos, t: int) -> Ritz:
    """The SVD of H and the residuals ‖C yᵢ‖/σ₁ of the top t triplets: O(p³) on the host, no vector.
    For one matrix in one call into C (``_steps.svd_look``: LAPACK's gesdd as scipy's wrapper calls
    it, the checks and the residuals), whose numpy calls had taken 33 µs beside gesdd's 80 in solves at
    2000×1000 (k = 1)."""
    h = st.h
    if _look_in_c(h) and STEPS is not None:
        r = min(h.shape)
        y, s, z = np.empty((h.shape[0], r), order="F"), np.empty(r), np.empty((h.shape[1], r))
        t = min(t, r)
        rel = np.empty(t)
        if not STEPS.svd_look(h, st.c, t, y, s, z, rel):
            raise ValueError(NON_FINITE_PRODUCTS)
        return Ritz(y, s, z, rel)
    if h.ndim == 2 and h.size:  # one matrix: LAPACK's gesdd without numpy's wrapper (9 µs, not 12.5, p = 9)
        y, s, zt, info = dgesdd(h, compute_uv=1, full_matrices=0)
        failed = info != 0  # NaN in H
    else:
        try:
            y, s, zt = np.linalg.svd(h, full_matrices=False)
        except np.linalg.LinAlgError:  # the LAPACK kernel refuses NaN
            failed = True
        else:
            failed = False
    if failed or not np.isfinite(s[..., :1]).all() or not np.isfinite(st.c).all():
        raise ValueError(NON_FINITE_PRODUCTS)
    return Ritz(y, s, np.swapaxes(zt, -1, -2), _residuals(st, y[..., :t], s))


def _residuals(st: Lanczos, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """‖C yᵢ‖/σ₁ for the columns of y: the relative residuals of those Ritz triplets."""
    c = st.c
    if c.ndim == 2 and c.shape[0] == 1:  # one residual direction (the Golub–Kahan recurrence)
        res = np.abs(c[0] @ y)  # the norm of one number, to the bit
    else:
        res = np.linalg.norm(c @ y, axis=-2) if st.w else np.zeros(y.shape[:-2] + y.shape[-1:])
    return _relative(res, s[..., 0])


def _estimate(st: Lanczos, t: int) -> Ritz | None:
    """The top t left Ritz vectors and residuals from the eigenvectors of H Hᵀ, for a look that may
    need nothing more. One matrix: LAPACK's MRRR for the top t + 1, and None where the exact SVD
    costs little more (t above p/12: with t + 1 vectors MRRR took 0.45 of the SVD's time at t = 1 and
    p = 24, 0.55 at t = 2, and as long at t = 6; at p = 64, 0.28, 0.33 and 0.55). A batch: numpy's
    batched eigh, all of them (256 matrices: 10.5 ms against the SVD's 18.4 at p = 24, 19 against 29
    at p = 32; a (256, 128, 128) float32 solve, k = 1, took 0.88× the time in alternated processes).

    The computed eigenpairs are exact for H Hᵀ + E with ‖E‖ ≤ c·p·ε·σ₁² (the product's rounding and
    MRRR's), so yᵢ is off by an angle of at most ‖E‖/gapᵢ, gapᵢ the distance from σᵢ² to the other
    eigenvalues, and its residual ‖C yᵢ‖ by at most √2·‖C‖ times that angle: ``slack``, with c = 4
    (the t + 1st eigenvalue is computed for the gap). Near a tight target in a cluster (1e-12, gap
    1e-3) the slack exceeds the target, and the exact SVD decides.

    For one matrix all of it is one call into C (``_steps.estimate``, LAPACK's dsyevr through scipy's
    Cython API, :func:`_c_lapack`): in solves at 2000×1000 an estimate took 29.5 µs where these
    numpy calls took 70, cold after the pass (dsyevr 34 of them)."""
    pu = st.pu
    if t >= pu or (st.h.ndim == 2 and t > pu // 12):
        return None
    if _look_in_c(st.h) and STEPS is not None:  # one call into C (_steps.c's estimate)
        y, s, rel, slack = np.empty((pu, t)), np.empty(t), np.empty(t), np.empty(t)
        return Ritz(y, s, None, rel, slack) if STEPS.estimate(st.h, st.c, t, y, s, rel, slack) else None
    hh = st.h @ np.swapaxes(st.h, -1, -2)
    if st.h.ndim == 2:
        lam, y, found, _, info = dsyevr(hh, range="I", il=pu - t, iu=pu)
        if info != 0 or found != t + 1:
            return None
        lam = lam[: t + 1]
    else:  # a batch: every eigenpair, numpy's batched eigh
        try:
            lam, y = np.linalg.eigh(hh)
        except np.linalg.LinAlgError:  # NaN: the exact SVD reports it
            return None
        lam, y = lam[..., pu - t - 1 :], y[..., pu - t - 1 :]
    if not np.isfinite(lam).all():
        return None
    lam, y = lam[..., ::-1], y[..., :0:-1]  # descending; the t + 1st value only for the gap
    gaps = lam[..., :-1] - lam[..., 1:]
    if t > 1:
        gaps[..., 1:] = np.minimum(gaps[..., 1:], gaps[..., :-1])
    s = np.sqrt(np.maximum(lam[..., :t], 0.0))
    rel = _residuals(st, y, s)
    # unit vectors are at most 2 apart: the cap keeps a zero gap (a repeated value) from making the
    # slack 0·inf = NaN where C vanishes (σ₁ = σ₂ = 1e8 on a diagonal 13×13 A crashed the solve)
    perturbation = 4 * pu * _EPS64 * lam[..., :1]
    angle = perturbation / np.maximum(gaps, 0.5 * perturbation + TINY)  # ≤ 2
    # ‖C‖_F in two numpy calls, not np.linalg.norm's layers: with _EPS64 for np.finfo and the
    # one-matrix division in _relative, a look's estimate took 67 µs where it took 80 (p = 21)
    c_norm = np.sqrt((st.c * st.c).sum(axis=(-2, -1)))[..., None]
    slack = math.sqrt(2) * c_norm * angle / np.maximum(s[..., :1], TINY)
    if not np.isfinite(slack).all():
        return None  # the exact SVD decides (and reports a non-finite C)
    return Ritz(y, s, None, rel, slack)


def _c_lapack() -> bool:
    """Whether ``_steps``'s look and check functions serve one matrix's :func:`_estimate`, :func:`_ritz`,
    :func:`_vectors` and :func:`verify`: the module built and LAPACK's dsyevr and dgesdd and BLAS's
    dgemm found through scipy's Cython API (an estimate of a 2×2 H)."""
    if STEPS is None:
        return False
    try:
        STEPS.estimate(np.eye(2), np.zeros((1, 2)), 1, np.empty((2, 1)), *(np.empty(1) for _ in range(3)))
    except RuntimeError:
        return False
    return True


_C_LAPACK = _c_lapack()
# The most rows or columns of H a look takes to C: LAPACK's C API takes int sizes (svd_look's workspace,
# about 4p², and estimate's, 26p, must be ints; a basis this wide is far beyond the defaults' 24-272)
_C_LOOK_MOST = 8192


def _look_in_c(h: np.ndarray) -> bool:
    """Whether a look at H (one matrix's, not empty, at most ``_C_LOOK_MOST`` wide) goes through C
    (:func:`_c_lapack`); numpy's LAPACK wrappers otherwise."""
    return _C_LAPACK and h.ndim == 2 and h.size > 0 and max(h.shape) <= _C_LOOK_MOST


def _own_triplets(
    st: Lanczos, estimate: Ritz, k: int, target: np.ndarray | float, gap: float | None
) -> Ritz | None:
    """The estimate's own Ritz triplets (𝒰yᵢ, σᵢ, 𝒱zᵢ), zᵢ = Hᵀyᵢ/σᵢ with σᵢ = ‖Hᵀyᵢ‖, for an estimate
    whose top k right residuals have converged to ``target`` (per batch element), where their left
    residuals have too; None otherwise. No SVD of H is needed for them:
    their right residual Aᵀ𝒰yᵢ − σᵢ𝒱zᵢ = F C yᵢ is the estimate's own (``rel``, whatever the angle
    between yᵢ and H's exact singular vector), their left one A𝒱zᵢ − σᵢ𝒰yᵢ = 𝒰(H Hᵀyᵢ − σᵢ²yᵢ)/σᵢ is
    computed here (the eigensolver's backward error, about p·ε·σ₁²/σᵢ: small for the leading values,
    not for one far below σ₁, which the exact SVD then serves). The final look of a k = 1 solve took
    an SVD of H for nothing else (a 24×24 dgesdd: 90–150 µs on a 2-core AMD EPYC, 6% of a 384×384
    solve of 18 products). With ``gap`` (the tol of SolverOptions.gap_last), the k-th in its units, as
    the estimate's are."""
    # y as an array of its own: the estimate's is a reversed view, whose negative stride torch's
    # from_numpy refuses (a sharded solve's tensors; numpy's ascontiguousarray keeps it for k = 1)
    h, y = st.h, estimate.y.copy()
    hy = np.swapaxes(h, -1, -2) @ y  # (..., pv, t)
    s = np.linalg.norm(hy, axis=-2)
    if not (s[..., :k] > 0).all():
        return None
    z = hy / s[..., None, :]
    left = np.linalg.norm(h @ z - y * s[..., None, :], axis=-2)  # ‖H Hᵀy − σ²y‖/σ
    left = _relative(left[..., :k], s[..., 0])
    if gap is not None:
        left = _gap_units(left, s, k, gap)
    if not bool((left <= _per_triplet(target)).all()):
        return None
    return Ritz(y, s, z, estimate.rel)


def _start(op: Operator, k: int, width: int, init, tol: float, generator) -> torch.Tensor:
    """The first block of the right basis, (..., n, w).

    Cold: ``width`` random columns. Warm, with one column: the sum of the warm start's V0 (its first
    k columns), from which the Golub–Kahan recurrence rebuilds span(V0) in k steps and then improves
    every column at once (from 1e-4-accurate vectors, a 1e-6 solve took 0.38–0.69 of the cold
    products, where V0 and a random column as a block took 0.53–0.90: docs/algorithm.md). A random
    part of relative size 10·tol keeps a V0 that spans an exact singular subspace from being a fixed
    point; that it is left for a leading one above, the probe sees to (_NEAR_PAIR). Warm, with more
    columns: V0 and random columns. The warm start's U is implied by A V0 and is not used."""
    m, n = op.shape
    shape, dt, dev = op.batch_shape, op.dtype, op.device
    if init is None:
        return op.right.randn(shape, min(width, n, m), dt, dev, generator)
    v0 = init[1].detach().to(dtype=dt, device=dev)
    v0 = v0.unsqueeze(-1) if v0.dim() == 1 else v0[..., :k]
    v0 = v0.expand(shape + v0.shape[-2:])
    if width == 1:
        x = v0.sum(-1, keepdim=True)
        x = x / op.right.norms(x).unsqueeze(-2).clamp_min(torch.finfo(dt).tiny)  # a global norm if split
        return x + (10 * tol / math.sqrt(n)) * op.right.randn(shape, 1, dt, dev, generator)
    w = min(max(width, v0.shape[-1] + 1), n, m)
    return torch.cat([v0, op.right.randn(shape, w - v0.shape[-1], dt, dev, generator)], dim=-1)


def _expand(op, st: Lanczos, rot: np.ndarray | None, b: int, generator) -> None:
    """Move b directions of F into 𝒱 and extend 𝒰 by the new part of their image; in place.

    ``rot`` (..., w, w) orthogonal: F is first rotated to F·rot and its first b columns are moved
    (None: the first b as they are). One product with A and one with Aᵀ, b columns each."""
    m, n = op.shape
    pv, pu, w = st.pv, st.pu, st.w
    h, c = st.hbuf, st.cbuf
    if rot is not None:
        _rotate(op.right, st, rot)
    # 𝒰 gains the new part of A x: H's new columns are 𝒰ᵀ A x, its new rows the R factor. In exact
    # arithmetic 𝒰ᵀ A x = (Aᵀ𝒰)ᵀ x = Cᵀ on x's rows of C: only the columns of 𝒰 added since the last
    # restart's first step are nonzero there (the last one, in the Golub–Kahan recurrence).
    ax = op.matmat(st.vbuf[..., pv : pv + b])
    st.avbuf[..., pv : pv + b] = ax
    bu = min(b, m - pu)
    q, coef, r = _orth(op.left, st.u, ax, bu, generator, _known(c[..., :b, :pu].swapaxes(-1, -2)))
    h[..., pu : pu + bu, :pv] = 0.0  # what an earlier, restarted basis left there
    h[..., :pu, pv : pv + b] = coef if pu else 0.0
    h[..., pu : pu + bu, pv : pv + b] = r
    st.ubuf[..., pu : pu + bu] = q
    # Aᵀ of the new 𝒰 columns: along 𝒱 it is known (0 on the old columns, rᵀ on x); its part along
    # the remaining residual directions is computed; what is left is the next residual direction.
    rest = w - b
    wn = min(bu, n - (pv + w))
    if rest:  # F's columns that stay move up; on the new columns of 𝒰, C is computed below
        c[..., :rest, :pu] = c[..., b:w, :pu]
    if bu:
        atq = op.rmatmat(q)
        st.atubuf[..., pu : pu + bu] = atq
        if st.adjoint is not None:  # xᵀ(Aᵀq) against (qᵀA x)ᵀ = rᵀ (AdjointWatch)
            difference = op.right.to_host(op.right.inner(st.vbuf[..., pv : pv + b], atq)) - r.swapaxes(-1, -2)
            st.adjoint.note(float(np.abs(difference).max()), float(np.abs(r).max()))
        # (A x)ᵀ q = rᵀ: x's coefficients are known; those on the older columns of 𝒱 are zero
        known = (pv, r.swapaxes(-1, -2))
        g, gcoef, gr = _orth(op.right, st.vbuf[..., : pv + w], atq, wn, generator, known)
        st.vbuf[..., pv + w : pv + w + wn] = g
        c[..., :rest, pu : pu + bu] = gcoef[..., pv + b :, :]
        c[..., rest : rest + wn, :pu] = 0.0
        c[..., rest : rest + wn, pu : pu + bu] = gr
    st.pv, st.pu, st.w = pv + b, pu + bu, rest + wn


def _known(k: np.ndarray):
    """(j, k[..., j:, :]) for the first row j where k (..., p, c) is nonzero in some batch element;
    None where all of it is zero."""
    if k.shape[-2] == 0:
        return None
    if k.ndim == 2 and k.shape[1] == 1:  # one column, as in the Golub–Kahan step: 0.3 µs, not 4
        nonzero = k[:, 0].nonzero()[0]
        return (int(nonzero[0]), k[nonzero[0] :]) if nonzero.size else None
    rows = cast(np.ndarray, k.any(axis=-1))  # k has two axes or more: an array, not a scalar
    if rows.ndim > 1:
        rows = cast(np.ndarray, rows.reshape(-1, rows.shape[-1]).any(axis=0))
    j = int(rows.argmax())
    return (j, k[..., j:, :]) if rows[j] else None


def _restart(op, st: Lanczos, ritz: Ritz, keep: int, restarts: int, tol: float, k: int) -> Ritz:
    """Thick restart onto the top ``keep`` Ritz vectors, in place: 𝒱 ← 𝒱Z, 𝒰 ← 𝒰Y, H ← diag(σ),
    C ← CY; F stays. A𝒱Z = 𝒰YΣ and Aᵀ𝒰Y = 𝒱ZΣ + F·CY hold as before. The kept products A𝒱 and Aᵀ𝒰
    are rotated with the bases where they will be read (:func:`_products_read`; ``restarts`` counts
    this one, ``tol`` and ``k`` are the solve's). Returns the Ritz triplets of the new H (the same
    values and residuals, with identity vectors)."""
    assert ritz.z is not None and ritz.z.shape[-1] >= keep  # the exact SVD's triplets, all of them
    y, z = ritz.y[..., :keep], ritz.z[..., :keep]
    zd, yd = op.right.from_host(z, st.vbuf), op.left.from_host(y, st.ubuf)  # in the vectors' dtype
    v, u = mm(st.v, zd), mm(st.u, yd)
    read_av, read_atu = _products_read(op, st, keep, k, restarts, tol)
    st.av_kept, st.atu_kept = st.av_kept and read_av, st.atu_kept and read_atu
    av = mm(st.av, zd) if st.av_kept else None
    atu = mm(st.atu, yd) if st.atu_kept else None
    f = op.right.copy(st.f)
    st.vbuf[..., :keep] = v
    st.vbuf[..., keep : keep + st.w] = f
    st.ubuf[..., :keep] = u
    if av is not None:
        st.avbuf[..., :keep] = av
    if atu is not None:
        st.atubuf[..., :keep] = atu
    s = ritz.s[..., :keep]
    eye = np.eye(keep)
    if s.ndim > 1:  # a batch (np.broadcast_to took 21 µs of a 384×384 restart's 117 for one matrix)
        eye = np.broadcast_to(eye, s.shape[:-1] + (keep, keep))
    st.cbuf[..., : st.w, :keep] = st.c @ y
    st.hbuf[..., :keep, :keep] = eye * s[..., None, :]
    st.pv = st.pu = keep
    return Ritz(eye, s, eye, ritz.rel[..., :keep])


def _products_read(work, st: Lanczos, keep: int, k: int, restarts: int, tol: float) -> tuple[bool, bool]:
    """Whether A𝒱 and Aᵀ𝒰 as kept beside the bases are read after ``restarts`` restarts (this one, which
    keeps ``keep`` columns, included; k triplets wanted): by the final check, where their drift allows
    it (:func:`_vectors`; the drift grows with the restarts and the buffers' widths, so a check it
    rules out now it rules out to the end) and where rotating them still costs less than the fresh
    products the check would make instead (:func:`_rotations_pay`; products left once are not
    rotated again, whatever it says later), and Aᵀ𝒰 by the pass's steps too
    (``_steps.gk_fused`` forms Aᵀu from (Aᵀ𝒰)d). Neither is read elsewhere, so a restart that would
    rotate them for nothing leaves them: a float32 solve's check is never theirs (its ε alone is a
    tenth of tol 1e-6 at p = 40), and a sparse A's steps make both products."""
    steps_read_atu = isinstance(work, HostView) and work.fused is not None
    check = _drift_allows(_drift(st, restarts), tol)
    check = check and _rotations_pay(work, st, keep, k, restarts, steps_read_atu)
    return check, check or steps_read_atu


# Costs on the host in ns, one thread, for _rotations_pay (Intel Xeon, float64, numpy's OpenBLAS): a
# rotation's product, a basis of rows×q by q×keep with its copy back into the basis, took 0.017–0.05 ns
# a flop (2·rows·q·keep) and about 2 µs a call (384 to 4000 rows, q = 16 to 40); the check's fresh
# products of k columns 0.07–0.6 ns an entry of a dense A and a column, 0.9–7.4 ns a stored entry of a
# sparse one and a column (384×384 to 4000×2000, k = 1 to 8, 1% of entries stored), about 10 µs a
# call. Taken at their middles: the rule's choice changes where the two costs are near, where either
# choice costs about the same.
_ROTATION_NS_PER_FLOP = 0.03
_ROTATION_NS_PER_CALL = 2e3
_FRESH_NS_PER_ENTRY = {"dense": 0.3, "sparse": 1.5}
_FRESH_NS_PER_CALL = 1e4


def _rotations_pay(work, st: Lanczos, keep: int, k: int, restarts: int, steps_read_atu: bool) -> bool:
    """Whether the kept products should still be rotated at this restart, the ``restarts``-th, for the
    final check to read, or be left for 2k fresh products there: rotated while the rotations so far,
    this one included (this one's cost times ``restarts``: the widths change little between
    restarts), cost no more than those products would (the rule of renting skis until the rent paid
    reaches the price: never more than twice the cheaper choice, whatever the restarts still to
    come). Costs by the model above, on the host where A is dense or sparse and its products the
    solver's own; elsewhere (a matrix-free operator, a scaled sparse A, a GPU) products are taken to
    cost more than any rotation. ``steps_read_atu``: Aᵀ𝒰 is rotated for the pass's steps anyway, so
    A𝒱's rotation alone counts.

    A sparse A's restarts rotated both for 0.90–0.97 of its solve's time against fresh products
    (384×384 to 4000×2000, k = 1 and 8, float64 tol 1e-10), 2k products more; a dense A's fresh
    products cost 8–100 rotations of A𝒱 (docs/algorithm.md, "The iteration", step 4)."""
    if not isinstance(work, HostView):
        return True
    kind = "sparse" if work.sparse is not None else "dense" if isinstance(work.op, DenseOperator) else None
    if kind is None:
        return True
    m, n = work.shape
    rows = m * st.pv if steps_read_atu else m * st.pv + n * st.pu  # A𝒱 (m×pv) by Z, Aᵀ𝒰 (n×pu) by Y
    calls = 1 if steps_read_atu else 2
    rotation = _ROTATION_NS_PER_FLOP * 2 * rows * keep + _ROTATION_NS_PER_CALL * calls
    fresh = _FRESH_NS_PER_ENTRY[kind] * work.op.entries * k + _FRESH_NS_PER_CALL
    return restarts * rotation <= fresh


def _householder(d: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(a, τ, ‖d‖) for a 1-D d: I − τaaᵀ is the reflection whose first column is ∓d/‖d‖ (any
    reflection where d = 0), a in float64 with |a₀| ≥ 1 (no cancellation)."""
    a = d.astype(np.float64)  # a copy
    norm = math.sqrt(float(a @ a))
    if norm > 0:
        a /= norm
    else:
        a[:] = 0.0
    a[0] += 1.0 if a[0] >= 0 else -1.0
    return a, 2.0 / float(a @ a), norm


def _rotation(d: np.ndarray) -> np.ndarray:
    """An orthogonal (..., w, w) whose leading columns are the leading left singular vectors of d
    (..., w, c): a Householder reflection for one column, else the SVD. Where d vanishes, any."""
    if d.shape[-1] > 1:
        return np.linalg.svd(d, full_matrices=True)[0]
    w = d.shape[-2]
    if d.ndim == 2:  # one matrix: the same reflection in a few calls (5 µs against 20)
        # plain dot products and in-place updates: between a probe's products np.linalg.norm and
        # np.eye took 16 and 20 µs, the whole reflection 47 (6 alone; 1536×384)
        a, tau, _ = _householder(d[:, 0])
        rot = np.outer(a, a)
        rot *= -tau
        rot.flat[:: w + 1] += 1.0
        return rot
    norm = np.linalg.norm(d, axis=-2, keepdims=True)
    v = np.where(norm > 0, d / np.where(norm > 0, norm, 1.0), np.eye(w, 1))
    sign = np.where(v[..., :1, :] >= 0, 1.0, -1.0)
    a = v + sign * np.eye(w, 1)
    return np.eye(w) - 2 * (a @ np.swapaxes(a, -1, -2)) / (np.swapaxes(a, -1, -2) @ a)


def _wanted_vectors(ritz: Ritz, wanted: np.ndarray) -> np.ndarray:
    """The left Ritz vectors of the wanted triplets (the others zeroed), (..., pu, t)."""
    t = wanted.shape[-1]
    return ritz.y[..., :t] * wanted[..., None, :]


def _refresh(st: Lanczos, y: np.ndarray) -> np.ndarray:
    """Left Ritz vectors of the last look, carried to the current H without an SVD: padded with zeros
    for the new columns of 𝒰, then one step of the power iteration y ← H Hᵀ y (normalized per
    column), which is the next Krylov step of the small problem."""
    y = np.concatenate([y, np.zeros(y.shape[:-2] + (st.pu - y.shape[-2], y.shape[-1]))], axis=-2)
    y = st.h @ (np.swapaxes(st.h, -1, -2) @ y)
    norm = np.linalg.norm(y, axis=-2, keepdims=True)
    return y / np.where(norm > 0, norm, 1.0)


def _next_check(history: list, target: float, cap: int) -> int:
    """Iterations until the next look at the small matrices: three quarters of those the last rate
    of convergence predicts are needed, all of them (rounded up) once that is 4 or fewer, at most
    ``cap``. ``history`` holds (iterations, products, worst residual) per look.

    Halving to the end took a look after every iteration for the last 3–5 (the rate slows there):
    looking after all predicted iterations near the end took 7% fewer looks and as many products
    (2566 against 2745 looks, 27194 against 27204 products: 144 solves, the benchmark's classes at
    384×384, 1536×384 and 300×900, k = 1, 4, 8, float64 and float32; 9 cases took one step more).
    Rounded down and halving above 4, a look fell one iteration short of the target; a look costs
    as much as 2–10 products at 384×384 (an SVD of H: 60 µs at p = 21, 250 at p = 41). Rounded up,
    three quarters: 558 against 612 looks (463 SVDs against 504) for 5546 against 5522 products
    (the benchmark's classes at 384×384, 1536×384, 384×1536 and 2000×1000, k = 1 and 8, float64 at
    1e-10); all predicted iterations, rounded up: 545 looks, 5586 products.

    A residual that did not fall since the last look (a new Ritz value among the top k, or a restart)
    is measured against the latest look with a larger one: the next look had come after one
    iteration, and over the 144 solves above it took 1062 looks against 1086 for the same products
    (at k = 16 and 32, 384×384 and 1536×384, with the wide basis's spacing of :func:`_check_cap`:
    fewer looks, 789 against 853, for 17704 products against 17656).

    Without a rate (the first look, or a residual that never fell) the next look comes after 4
    iterations where the residual is still above 10⁴ times the target, after 1 nearer it: looking
    after every iteration there took 1325 looks and 10804 products where this takes 1138 and 10774
    (128 solves: the benchmark's classes at 384×384, 1536×384, 384×1536 and 2000×1000, k = 1 and 8,
    float64 at 1e-10 and float32 at 1e-6; the same worst residual, 0.98 of tol).

    A long solve far from its target looks up to twice ``cap`` apart: once it has run
    max(4·cap, 32) iterations and the rate predicts 4·cap more at least. That took 1524 looks
    against 1620 for the same 16924 products (192 solves: the benchmark's classes at 384×384,
    1536×384, 384×1536 and 2000×1000, k = 1, 4, 8, float64 at 1e-10 and float32 at 1e-6; two took 2
    products more or fewer), and long k = 8 solves 0.90–0.96 of the time (Gaussian 384×384 to
    2000×1000, float64 and float32, `sparse` and `weight`), k = 1 0.99–1.04. From the first looks on,
    the early rates, slower than the fall that follows, put the look late in fast solves: 17178
    products (`decay` 384×384 float32, k = 8: 90 against 74); after 4·cap iterations, 16940."""
    r1 = history[-1][2] if history else math.inf
    far = min(cap, 4) if 0 < 1e4 * target < r1 < math.inf else 1  # no rate to go by
    if len(history) < 2:
        return far
    i1, _, r1 = history[-1]
    # a target of 0 (after a check that found the estimate's 0 not confirmed) has no distance to it
    if not 0 < target < r1 < math.inf:
        return far
    # the rate since the latest look with a larger residual (a faster fall just before a rise, tried
    # beside it, returned σ₂ of a cluster: docs/algorithm.md, "How often to look")
    i0, r0 = next(((i, r) for i, _, r in reversed(history[:-1]) if r > r1), (i1, r1))
    if not r1 < r0 < math.inf or i1 <= i0:  # inf: a look before k triplets existed
        return far
    needed = math.log(target / r1) / (math.log(r1 / r0) / (i1 - i0))
    most = 2 * cap if needed >= 4 * cap and i1 >= max(4 * cap, 32) else cap
    return int(max(1, min(most, math.ceil(needed) if needed <= 4 else 0.75 * needed)))


_EAGER_SUBSPACE: list = []  # subspace_svd, as traced code calls it


def subspace_svd(
    op: Operator,
    k: int,
    *,
    tol: float,
    maxiter: int,
    init,
    generator: torch.Generator | None,
    options: SolverOptions = DEFAULT_OPTIONS,
) -> Outcome:
    """Leading k singular triplets of ``op`` to relative residual ``tol``; see :func:`riemsvd.solve`.

    Convergence is judged on the residuals read off the small matrices; once every batch element
    passes, products of the Ritz vectors check the claim (:func:`_vectors`). An element whose true
    residual still exceeds ``tol`` (rounding, near the floor of the dtype) goes on with a target
    tightened by the discrepancy seen.
    ``maxiter`` is raised to the iterations that k triplets need at least (⌈k/b⌉).
    """
    if torch.compiler.is_compiling():
        # traced on its own where the caller ran eagerly after a graph break (a sparse A under
        # torch.compile): eagerly, behind one more (Dynamo warned of the C half steps at every trace)
        return eager_under_compile(_EAGER_SUBSPACE, subspace_svd)(
            op, k, tol=tol, maxiter=maxiter, init=init, generator=generator, options=options
        )
    m, n = op.shape
    batch = tuple(op.batch_shape)
    if op.batch_shape.numel() == 0:
        return empty_outcome(op, k)
    work = op.on_host() or op  # numpy arrays on the CPU, tensors elsewhere
    b = max(1, min(m, n, options.block or _default_block(k, op.device)))
    maxiter = max(maxiter, -(-k // b))
    # iterations before a cold k = 1 solve may pass (_COLD_LEAST, in directions; maxiter may cut it)
    least = min(-(-_COLD_LEAST // b), maxiter) if k == 1 and init is None else 0
    x = work.right.adopt(_start(op, k, max(options.start_block, b), init, tol, generator))
    w = x.shape[-1]
    p_max = min(n, max(options.max_basis or default_basis(k, b), least_basis(k, w, b)))
    keep = _keep(p_max, w, k, b)
    widest = p_max if options.max_basis else min(n, _WIDENED * p_max)  # see _WIDENED
    # room for the probes' directions beside the basis, in both bases (1500: 65×25, k = 4, ran out of 𝒰)
    st = Lanczos.allocate(work, batch, min(m, p_max + k), min(n, p_max + k), w, op.dtype, op.device)
    st.vbuf[..., :w] = _orth(work.right, None, x, w, generator)[0]
    if op.adjoint_source() is not None and not op.distributed and torch.device(op.device).type == "cpu":
        # off beyond tol and the rounding (see _adjoint_off); on a GPU the test would wait at each step
        st.adjoint = AdjointWatch(max(tol, MISMATCH_ROUNDINGS * product_floor(op.dtype, *op.shape)))
    # A's entries, where the solve left them unread: read by the start step's pass if it takes gk_fused
    in_pass = w == 1 and isinstance(work, HostView) and work.fused is not None and _room_for_step(work, st)
    if op.unchecked and not in_pass:
        op.check_entries()
    _step(work, st, None, None, w, generator)  # the start block: 𝒱 = span(x), 𝒰 = span(A x)
    cap = _check_cap(op, p_max, b)
    # per batch element: the residual the estimate must reach, and the least it has reached; one
    # matrix's as Python floats (see _worst)
    target, best = _per_element(batch, tol), _per_element(batch, math.inf)
    history, checks, iterations, restarts, since_best = [], 0, 1, 0, 0
    progress = Progress(op.shape, k)  # reports to the "riemsvd" logger, at INFO, once past a second
    fault_patience = min(options.patience, max(_PATIENCE_FAULT, options.patience // 8))  # _adjoint_off
    # the first look once k triplets can exist: a look before has nothing to measure (its residuals
    # are inf), and it took 60-150 µs (384×384 to 2000×1000) for the same steps after it
    due = 1 if w >= k else 1 + -(-(k - w) // b)
    # k − 1 probes for copies of a repeated value, and one for a single triplet warm-started from a
    # singular pair (see _probe_steps)
    ywant, probe, probes, extra = None, None, k - 1, 0
    kept = None  # the verified triplets of a check that failed, for an element that ends no better
    exact_start = False  # a warm start whose first look found its triplets converged (_NEAR_PAIR)
    unchecked = False  # maxiter came while a warm start's rounds could not yet tell (not converged)
    measured = False  # whether a look has seen k triplets
    # tensors (a GPU): the steps between two looks keep their coefficients on the device
    deferred = Deferred() if work is op and not op.distributed else None
    unit = eps(op.dtype)
    gap = tol if options.gap_last and k > 1 else None  # the k-th triplet in gap units (SolverOptions)
    while True:
        p_now = p_max + extra  # a probe's direction widens F without narrowing the search space
        full = p_now < n and st.pv + st.w + min(b, st.w) > p_now
        due -= 1
        if due > 0 and not full and st.w and iterations < maxiter:
            made, beyond, ywant = _onward(work, st, deferred, probe, ywant, b, min(due, maxiter - iterations),
                                          p_now, generator, refresh=True)  # fmt: skip
            iterations, due = iterations + made, due - beyond
            continue
        undone = 0 if deferred is None else deferred.pull(work.left, st)
        if undone:
            # a deferred step lost a column to rounding: undone with those after it (not counted),
            # and taken again by the general step
            _step(work, st, None, None, b, generator)
            iterations += 1 - undone
            full = p_now < n and st.pv + st.w + min(b, st.w) > p_now
        # A look at the small matrices: who has converged, and the directions to add next.
        t = min(st.pu, st.pv, max(k, b))
        # The estimate; its own triplets where they have converged; else the exact SVD where the
        # estimate leaves convergence possible, within its slack (or the vectors are needed: a
        # restart; or there is no estimate; or a probe ends, whose test compares values to
        # 10·tol·σ₁, where √λ of H Hᵀ is off by up to √(pε)·σ₁ for a value near 0: batches with k
        # above an element's rank took 2.2–2.7× the products)
        estimate = None if full or probe is not None else _estimate(st, t)
        if estimate is not None:
            estimate = _in_gap_units(estimate, k, gap)
        # A target below ε of the dtype — a tol below it, or one a failed check tightened there — is
        # reached once the estimate reaches ε: below, the estimate makes new minima of its own
        # rounding, which the returned vectors' residual does not follow, until `patience` runs out
        # (float32 at tol 1e-14, 768×384, k = 4: the estimate at 1e-10 after 46 products, then 1342
        # products at the same residual, 1.8e-7, a new user's trial; float64 at tol 1e-15, k = 4 and
        # 8, 384×384 to 1536×384, a check at 1e-15 to 1e-14 failing: 750–2488 products where 60–350
        # stall at the same residuals, the benchmark's classes, and none changed at tol 1e-14 or
        # float32's 1e-6). The look's triplets are chosen by the same threshold (by the target alone
        # a k = 1 float32 check at 1e-8 took the estimate, which has no right vectors, and crashed).
        reach = np.maximum(target, unit) if batch else max(target, unit)
        ritz = None
        if estimate is not None and _within(_worst(estimate, k, t, batch), reach):
            ritz = _own_triplets(st, estimate, k, reach, gap)  # None where a left residual fails
        if ritz is None:
            if estimate is None or _within(_worst(estimate, k, t, batch, slack=True), reach):
                ritz = _in_gap_units(_ritz(st, t), k, gap)
            else:
                ritz = estimate
        worst = _worst(ritz, k, t, batch)
        # a cold k = 1 solve's pass waits for its directions (_COLD_LEAST) unless the residual is at rounding
        soon = iterations < least and not _within(worst, _EXACT_SHARE * unit)
        history.append((iterations, op.matvecs, _largest(worst)))
        progress.look(op.matvecs, restarts, history[-1][2], _largest(target))
        if init is not None and t >= k and not measured and history[-1][2] <= _NEAR_PAIR * tol:
            # the start held singular triplets already (the first look with k of them): are they the
            # leading ones?
            probes, exact_start = max(probes, 1), True
        measured = measured or t >= k
        verified = reason = None
        if probe is not None:
            # the random direction found a value above σ_k (the small matrices' rounding, 2·p·ε: with
            # 16·p·ε, 6.3e-4 for a float32 4096×1024 at p = 33, a missed σ₈ rising 5.4–6.0e-4 passed
            # unseen on 3 of 100 seeds, 4·tol·σ₁ above the σ₉ accepted for it, where the other Ritz
            # values moved by under 1e-6 (a new user's trial); the benchmark's 128 float32 solves at
            # k = 4 and 8 took the same products with either)
            rounding = 2 * p_now * eps(op.dtype)
            if _grown(ritz, probe, k, tol, rounding):
                probe, best = None, _per_element(batch, math.inf)
            elif iterations >= probe.until or st.w == 0 or iterations >= maxiter:
                # after a cold start too: a value just above σ_k that the start barely held stands
                # half-resolved below it at the probe's end (see _unresolved_below)
                # under gap_last, whether the k-th triplet may stand for a value above σ_{k−1}: asked
                # of the one below σ_k, which σ_k's loose residual leaves unresolved, the probe ran a
                # second round, and the GPT's solves of _GAP_SHARE took 97.5 products, not 72; σ_k's
                # own guard against a value its start lacked is the price (SolverOptions.gap_last)
                wanted_k = k - 1 if gap is not None else k
                unresolved = bool(st.w) and _unresolved_below(st, ritz, probe.verified, wanted_k, rounding)
                if unresolved and iterations < maxiter and probe.steps < _ONWARD_STEPS:
                    # on from the residual of the top Ritz triplet below the accepted ones, after a
                    # restart that keeps it and makes room for another round
                    room = min(max(k + 1, min(keep, p_now - st.w - _PROBE_MAX * b)), st.pu, st.pv)
                    restarts += 1
                    ritz = _restart(work, st, ritz, room, restarts, tol, k)
                    probe.start = st.c[..., :, wanted_k : wanted_k + 1].copy()
                    steps = max(1, min(_PROBE_MAX, (p_now - room - st.w) // b))
                    probe.until, probe.steps = iterations + steps, probe.steps + steps
                elif unresolved and iterations >= maxiter:
                    # stopped before the rounds could tell: not converged, whatever the residual
                    # (a crossed value accepted, converged, with maxiter 11–41 on two of the warm
                    # fuzz's cases; a review)
                    verified, reason, unchecked = probe.verified, "maxiter", True
                else:
                    verified, reason = probe.verified, "converged"
        elif t >= k:  # progress is only measurable once k triplets exist
            faulty = _adjoint_off(st)  # a caller's Aᵀ seen off: see _PATIENCE_FAULT
            patience = fault_patience if faulty else options.patience
            since_best = 0 if _improved(worst, 0.5 * best if faulty else best) else since_best + 1
            best = np.minimum(best, worst) if batch else min(best, worst)
            if _within(worst, reach) and not soon:  # reach: the target, or ε of the dtype (above)
                verified = verify(work, *_vectors(work, st, ritz, k, restarts, tol), tol, gap is not None)
                passed = verified[3] <= tol
                if bool(passed.all()):
                    reason = "converged"
                    if probes > 0 and st.w:
                        # a block of b columns explores b directions
                        steps = -(-_probe_steps(verified[1], n, tol, exact_start) // b)
                        if p_now < n and st.pv + st.w + steps * b > p_now:
                            # room for the probe's steps (and its column), down to the k accepted: with
                            # the usual keep, 12 of the 16 steps fit (k = 4, p = 24), and 6 of 100
                            # seeds missed a third copy of σ₁ 2.7% above the rest (600×400)
                            room = min(max(k, min(keep, p_now - st.w - 1 - steps * b)), st.pu, st.pv)
                            if ritz.y.shape[-1] < room:  # the estimate's own triplets: t of them
                                ritz = _ritz(st, t)
                            restarts += 1
                            ritz = _restart(work, st, ritz, room, restarts, tol, k)
                        appended, start = _inject(work, st, generator)
                        extra += appended
                        if p_max + extra < n:  # what fits before the next restart (a block at least)
                            steps = max(1, min(steps, (p_max + extra - st.pv - st.w) // b))
                        probes, reason = probes - 1, None
                        probe = _Probe(verified, iterations + steps, start)
                elif checks == 2 or bool((verified[3][~passed] <= _AT_ROUNDING * eps(op.dtype)).all()):
                    reason = "stalled"
                else:  # demand of the estimate what the true residual lacked; go on from the same basis
                    checks += 1
                    kept = verified if kept is None else _closer(kept, verified, tol)
                    ratio = worst / np.maximum(verified[3], TINY)
                    target = np.where(passed, target, 0.5 * tol * np.minimum(ratio, 1.0))
                    best = np.where(passed, best, np.inf)
                    if not batch:
                        target, best = float(target), float(best)
            if reason is None:
                if st.w == 0:
                    reason = "whole space"  # Aᵀ𝒰 = 𝒱Hᵀ: Rayleigh–Ritz is exact
                elif iterations >= maxiter:
                    reason = "maxiter"
                elif (
                    since_best >= patience and p_max < widest and not faulty and _far_above_rounding(best, op)
                ):
                    p_max = min(widest, 2 * p_max)
                    st = st.widened(work, min(m, p_max + k), min(n, p_max + k), op.dtype, op.device)
                    keep, cap, since_best = _keep(p_max, w, k, b), _check_cap(op, p_max, b), 0
                elif since_best >= patience:
                    reason = "stalled"
        elif st.w == 0:
            reason = "whole space"
        if reason is not None:
            if verified is None:
                if ritz.z is None:
                    ritz = _ritz(st, t)
                verified = verify(work, *_vectors(work, st, ritz, k, restarts, tol), tol, gap is not None)
            if kept is not None:
                verified = _closer(kept, verified, tol)
            break
        if full and probe is None:
            restarts += 1
            ritz = _restart(work, st, ritz, min(keep, st.pu, st.pv), restarts, tol, k)
        if probe is not None:
            due = probe.until - iterations  # look again only at the probe's end
        elif t < k:
            due = -(-(k - t) // b)  # no look before k triplets can exist
        else:
            if st.w > 1 or b > 1:
                wanted = ~(ritz.rel <= _per_triplet(target))
                wanted[..., k:] = False
                ywant = _wanted_vectors(ritz, wanted)
            due = _next_check(history, _least(target), cap)
            if soon and _within(worst, reach):
                due = least - iterations  # passed too soon: look again where it may pass
        made, beyond, ywant = _onward(work, st, deferred, probe, ywant, b, min(due, maxiter - iterations),
                                      p_max + extra, generator, refresh=False)  # fmt: skip
        iterations, due = iterations + made, due - beyond
    u, s, v, residual, errors = verified
    progress.end(reason, op.matvecs, _largest(residual))
    looks = [(mv, r) for _, mv, r in history]
    s, residual, errors = (
        torch.from_numpy(np.asarray(x)).to(op.device, op.dtype) for x in (s, residual, errors)
    )
    # numpy's comparison on the CPU: 3 µs where torch's took 20–30, cold after the passes
    if residual.device.type == "cpu":
        converged = torch.from_numpy(np.asarray((residual.numpy() <= tol) & (not unchecked)))
    else:
        converged = (residual <= tol) & (not unchecked)
    return Outcome(u, s, v, converged, residual, iterations, looks, errors, reason, restarts)


def _closer(kept: tuple, verified: tuple, tol: float) -> tuple:
    """``verified`` (u, s, v, residual, errors), with an earlier check's triplets ``kept`` for each
    batch element whose residual still exceeds tol and was smaller then, unless the values found since
    lie above the kept ones by more than both error bars (the kept set missed one). Where the float32
    iteration stalled below its floor, more iterations ended worse than the first check had found
    (2000×1000 Gaussian, k = 4, tol 1e-7: checks at 3.7e-7 and 3.8e-7, then 5.0e-7 returned with the
    default patience of 60 and 1.0e-6 with 300; a new user's trial)."""
    u, s, v, residual, errors = verified
    ku, ks, kv, kres, kerr = kept
    missed = (s - ks > errors + kerr).any(-1)
    take = (kres < residual) & (residual > tol) & ~missed
    if not take.any():
        return verified
    cols = torch.from_numpy(np.asarray(take)).to(u.device)[..., None, None]
    pick = take[..., None]
    return (
        torch.where(cols, ku, u),
        np.where(pick, ks, s),
        torch.where(cols, kv, v),
        np.where(take, kres, residual),
        np.where(pick, kerr, errors),
    )


def _onward(
    work, st: Lanczos, deferred, probe, ywant, b: int, most: int, p_now: int, generator, refresh: bool
):
    """The next iteration: up to ``most`` steps, those until the next look, in one call where C takes
    them (:func:`_run_of_steps`), else one (:func:`_advance`). Returns (iterations made, how many of
    them beyond the first, which count against the look's ``due`` too; ywant)."""
    done = _run_of_steps(work, st, probe, b, most, p_now, generator)
    if done:
        return done, done - 1, ywant
    ywant, undone = _advance(work, st, deferred, probe, ywant, b, generator, refresh=refresh)
    return 1 - undone, 0, ywant


def _advance(work, st: Lanczos, deferred: Deferred | None, probe, ywant, b: int, generator, refresh: bool):
    """One iteration, deferred (:class:`riemsvd._deferred.Deferred`) where it can be; else, after the
    deferred steps are pulled to the host, :func:`_step`, with the wanted Ritz vectors carried one
    power step further where ``refresh`` (between looks). Returns those vectors and the count of
    deferred steps undone (a lost column: _step then takes the first of them again)."""
    if deferred is not None and probe is None and deferred.fits(st, b):
        deferred.step(work, st)
        return ywant, 0
    undone = 0 if deferred is None else deferred.pull(work.left, st)
    if refresh and probe is None and ywant is not None and (st.w > 1 or b > 1):
        ywant = _refresh(st, ywant)
    _step(work, st, probe, ywant, b, generator)
    return ywant, undone


def _step(work, st: Lanczos, probe, ywant, b: int, generator) -> None:
    """One iteration: choose which directions of F to move into 𝒱 — the probe's recurrence, the
    leading residual directions of the wanted Ritz triplets (``ywant``), or F itself when it is one
    column moved at a time — and expand."""
    b = min(b, st.w)
    if probe is not None and _in_one_call(work, st, probe, b):
        if _golub_kahan_steps(work, st, generator, 1, True):
            return  # as a run of the probe's steps takes it (_run_of_steps), to the bit
    if probe is not None:
        d = probe.direction(st, b)
    elif st.w > 1 or b > 1:
        d = st.c @ ywant if ywant is not None else None
    else:
        d = None
    if b == 1 and isinstance(st.vbuf, np.ndarray) and st.vbuf.ndim == 2:
        if d is not None:
            _reflect(st, d[:, 0] if d.shape[1] == 1 else np.linalg.svd(d)[0][:, 0])
        if _golub_kahan_step(work, st, generator):
            return
        d = None  # F's first column is the direction already
    _expand(work, st, None if d is None else _rotation(d), b, generator)


def _rotate(space: Space, st: Lanczos, rot: np.ndarray) -> None:
    """F ← F·rot and C ← rotᵀC, in place (rot (..., w, w) orthogonal, on the host): the relations
    still hold, and F's first columns are the directions chosen."""
    pv, w, pu = st.pv, st.w, st.pu
    f = st.f
    st.vbuf[..., pv : pv + w] = mm(f, space.from_host(rot, f))
    st.cbuf[..., :w, :pu] = rot.swapaxes(-1, -2) @ st.cbuf[..., :w, :pu]


def _reflect(st: Lanczos, d: np.ndarray) -> None:
    """:func:`_rotate` for one matrix on the host, by the reflection that takes F's first column to
    the direction F d (d (w,) the coordinates, any length; nothing where d = 0), applied as a rank-one
    update in place: F ← F − τ(F a)aᵀ and C ← C − τa(aᵀC) (``_steps.reflect``, or its twin
    :func:`_reflect_py`). A probe's step (w = 2) built the w×w reflection and multiplied F by it in 19
    µs at 384×384 and 47 at 2000×1000 (:func:`_rotation`, :func:`_rotate`); the twin's scipy calls
    took 13–14 µs, the C call 2–3."""
    _HALVES.reflect(st.vbuf, st.pv, st.w, st.cbuf, st.pu, np.ascontiguousarray(d, np.float64))


def _golub_kahan_step(op: HostView, st: Lanczos, generator) -> bool:
    """:func:`_expand` of F's first column for one matrix on the host: the same arithmetic, to the
    bit (the half steps of ``_HALVES``, whose Gram–Schmidt :func:`_orth_column` calls too), each
    product written into its basis column (:meth:`HostView.matvec`) and orthogonalized there, one call
    into C beside each product where ``riemsvd._steps`` was built. In scipy's BLAS calls a step at
    384×384 took 63–86 µs beside 31–35 of bare products, where through :func:`_orth`'s layers and
    copies it took 86–106; whole solves 0.88–0.99× (geometric mean 0.95, 7 cases to 2000×1000, k = 1
    and 8); the C half steps took 0.81–0.92 of that (docs/algorithm.md, "The C half steps"). F's
    other columns, where it has them (a probe's steps), stay in place after the moved one: a probe's
    step took 75–82 µs against 96–110 through :func:`_expand` (384×384, k = 8), 289–292 against
    375–438 (1536×384). Where the operator has a :class:`~riemsvd._operator.FusedPass` (a dense A with
    contiguous rows) both products come from one pass over A
    (``_steps.gk_fused``: A f, and Aᵀ of A f less its known part, from which Aᵀ of the new column of
    𝒰 follows; docs/algorithm.md, "One pass over A"). False, with nothing done, where a basis is about
    to be exhausted (the general path then takes the step)."""
    pv, pu, w = st.pv, st.pu, st.w
    vbuf, ubuf = cast(np.ndarray, st.vbuf), cast(np.ndarray, st.ubuf)  # the caller checked
    avbuf, atubuf = cast(np.ndarray, st.avbuf), cast(np.ndarray, st.atubuf)
    h, c = st.hbuf, st.cbuf
    if not _room_for_step(op, st):
        return False
    if op.sparse is not None:  # a run of one step, as runs take them (to the bit)
        return _golub_kahan_steps(op, st, generator, 1) > 0
    unit = _eps(vbuf)
    # 𝒰 gains A f less its parts along 𝒰; C's row holds those known in exact arithmetic (the last
    # one alone in the recurrence, all of them after a restart)
    x = ubuf[:, pu]
    fused = op.fused
    if fused is not None:  # both products in one pass over A (see HostView.fused)
        a, threads = fused
        assert STEPS is not None  # a FusedPass is made only where the module was built
        # A's entries, where the solve left them unread, are read by this pass too (max |a_ij|)
        top = np.zeros(1) if op.op.unchecked else None
        alpha, fresh = STEPS.gk_fused(a, ubuf, avbuf, vbuf, atubuf, h, c, pu, pv, w, unit, threads, top)
        op.op.matvecs += 2 + fresh
        if top is not None:
            op.op.check_entries(float(top[0]), after_products=True)
    else:
        op.matvec(vbuf[:, pv], x)
        alpha = _HALVES.left(ubuf, avbuf, h, c, pu, pv, unit)
    _finish_step(op, st, generator, alpha, fused is not None and alpha >= 0)
    return True


def _room_for_step(op: HostView, st: Lanczos) -> bool:
    """Whether one matrix's bases have room for a Golub–Kahan step: a new column of 𝒰 within m and its
    buffer, and of F within n and its buffer (else the general path takes the step)."""
    m, n = op.shape
    return st.pu < min(m, st.ubuf.shape[1]) and st.pv + st.w + 1 <= min(n, st.vbuf.shape[1])


def _finish_step(op: HostView, st: Lanczos, generator, alpha: float, have_y: bool, right_lost: bool = False):
    """The step at st.pu, st.pv on from its left half: where that lost its column to rounding (alpha
    −1), the general path's random direction; Aᵀ of the new column of 𝒰 unless the pass made it
    (``have_y``); the right half, or its general path where it lost its column (now, or in C before:
    ``right_lost``)."""
    pv, pu, w = st.pv, st.pu, st.w
    ubuf, vbuf = cast(np.ndarray, st.ubuf), cast(np.ndarray, st.vbuf)
    avbuf, atubuf = cast(np.ndarray, st.avbuf), cast(np.ndarray, st.atubuf)
    h, c = st.hbuf, st.cbuf
    x, y = ubuf[:, pu], vbuf[:, pv + w]
    if alpha < 0:  # lost to rounding: the general path draws a random direction
        nonzero = c[0, :pu].nonzero()[0]
        general = (int(nonzero[0]), c[0, nonzero[0] : pu, None]) if nonzero.size else None
        q, coef, r = _orth(op.left, ubuf[:, :pu], avbuf[:, pv : pv + 1], 1, generator, general)
        x[:], alpha = q[:, 0], float(r[0, 0])
        _set_h(h, pu, pv, coef[:, 0] if coef is not None else np.zeros(0), alpha)  # None: an empty 𝒰
    # the new column of F: Aᵀ of the new column of 𝒰 less α f (known) and its other parts along 𝒱
    # and F, whose coefficients along F's columns that stay are C's new column
    watch = st.adjoint if not have_y else None
    if not have_y:
        op.rmatvec(x, y)
    if watch is not None:  # a caller's Aᵀ: ⟨f, Aᵀx⟩ is ⟨A f, x⟩ = α (AdjointWatch)
        difference = abs(float(np.dot(vbuf[:, pv], y)) - alpha)
    beta = -1.0 if right_lost else _HALVES.right(vbuf, atubuf, c, pu, pv, w, alpha, _eps(vbuf))
    if watch is not None:
        watch.note(difference, max(alpha, beta))
    if beta < 0:
        general = (pv, np.array([[alpha]]))
        g, gcoef, gr = _orth(op.right, vbuf[:, : pv + w], atubuf[:, pu : pu + 1], 1, generator, general)
        y[:] = g[:, 0]
        _shift_c(c, w, pu, gcoef[pv + 1 :, 0], float(gr[0, 0]))
    st.pv, st.pu = pv + 1, pu + 1


def _in_one_call(work, st: Lanczos, probe, b: int) -> bool:
    """Whether the next steps can be taken by C in one call (:func:`_golub_kahan_steps`): one matrix
    with a dense A's one pass or a sparse A's compressed rows, one direction a step, and the plain
    recurrence (F's one column) or a probe's past its random start (F's first column turned into
    F C h before each step)."""
    if not (isinstance(work, HostView) and (work.fused is not None or work.sparse is not None) and b == 1):
        return False
    return st.w == 1 if probe is None else probe.start is None


def _run_length(work, st: Lanczos, probe, b: int, most: int, p_now: int) -> int:
    """How many steps the next call may take at once through :func:`_golub_kahan_steps`: up to
    ``most``, and before the basis fills (p_now columns, F's included); 0 where the steps are not
    those of :func:`_in_one_call` (they go one at a time)."""
    if not _in_one_call(work, st, probe, b):
        return 0
    n = work.shape[1]
    return max(0, min(most, p_now - st.pv - st.w) if p_now < n else most)


def _run_of_steps(work, st: Lanczos, probe, b: int, most: int, p_now: int, generator) -> int:
    """The steps that :func:`_run_length` allows, taken in one call (:func:`_golub_kahan_steps`);
    returns how many, 0 where none (the caller then steps as before)."""
    run = _run_length(work, st, probe, b, most, p_now)
    return _golub_kahan_steps(cast(HostView, work), st, generator, run, probe is not None) if run else 0


def _golub_kahan_steps(op: HostView, st: Lanczos, generator, steps: int, probe: bool = False) -> int:
    """Up to ``steps`` of :func:`_golub_kahan_step` on one matrix with a dense A's one pass, in one
    call into C (``_steps.gk_run``: gk_fused and gk_right in turn, the same arithmetic to the bit),
    or with a sparse A's compressed rows (``_steps.gk_sparse_run``: each step's two products and
    gk_left's and gk_right's work); a step whose half lost its column to rounding is finished here,
    as _golub_kahan_step does. With ``probe``, each step is a probe's past its start: F's first
    column turned first into the direction F C h, h H's newest column (:meth:`_Probe.direction`,
    :func:`_reflect`), in C too. Returns the steps taken, 0 where none fit (the general path then
    takes it). From Python each step had cost 20–40 µs beside its C calls at 2000×1000, where the
    pass leaves its objects cold, and a probe's 30–40 µs at 384×384 (k = 8, float32); a sparse
    A's step 30 µs, 10 of them beside its four C calls (1536×384, 1% stored, k = 8)."""
    assert (op.fused is not None or op.sparse is not None) and STEPS is not None  # _in_one_call's condition
    if not _room_for_step(op, st):
        return 0
    vbuf = cast(np.ndarray, st.vbuf)
    bases = (st.ubuf, st.avbuf, vbuf, st.atubuf, st.hbuf, st.cbuf, st.pu, st.pv, st.w, _eps(vbuf))
    if op.fused is not None:
        a, threads = op.fused
        done, lost, fresh, alpha = STEPS.gk_run(a, *bases, threads, steps, probe)
        op.op.matvecs += 2 * (done + (lost > 0)) + fresh
    else:
        rows = cast(SparseRows, op.sparse)
        done, lost, alpha = STEPS.gk_sparse_run(*rows, *op.shape, *bases, steps, probe)
        op.op.matvecs += 2 * done + lost  # lost: the products of the step left unfinished (1 or 2)
    st.pu, st.pv = st.pu + done, st.pv + done
    if lost:
        _finish_step(op, st, generator, alpha, have_y=lost == 2, right_lost=lost == 2)
    return done + (lost > 0)


def empty_outcome(op: Operator, k: int, method: str = "iterative") -> Outcome:
    """The result for an empty batch, whatever the path: nothing to solve, no products (the dense
    path had counted 2k of them, and a stop reason of its own; a new user's trial)."""
    z = lambda *shape: torch.zeros(tuple(op.batch_shape) + shape, dtype=op.dtype, device=op.device)  # noqa: E731
    residual = z()
    u, s, v = z(op.shape[0], k), z(k), z(op.shape[1], k)
    return Outcome(u, s, v, residual == 0, residual, 0, [], z(k), "converged", 0, method)


# Iterations of the Golub–Kahan recurrence from a fresh direction after k > 1 triplets have
# converged, before they are accepted. A Krylov space of one start vector holds one vector of each
# singular value: where σ₁ = σ₂ = σ₃ exactly, it finds one of them and then converges to lower
# values with residuals below tol (fuzz case 1: 35×28, k = 3, S = (1, 1, 0.5) for (1, 1, 1)). A
# missed copy of σ₁ shows once the probe's Krylov space has lifted the direction's component along it
# (about 1/√n) above the rest, whose top is σ_k: with λ-gap γ = σ₁²/σ_k² − 1, Lanczos needs j steps
# with T_{j−1}(1 + 2γ) ≥ c√n (Chebyshev). 4 steps served a 50% gap, but with σ_k/σ₁ = 0.9, 0.95 and
# 0.98 they missed 12, ~37 and 67 of 150 cases (10–500 × 40–500, 2–5 copies, k = 2–8); 8 steps
# missed 0, 0 and 15, 12 steps 0, 0, 0. c = 4 still missed 1 and 2 of 150 at 0.9 and 0.95, c = 16
# none up to 0.98 (1 of 150 at 0.99). So: that many steps and one more, at least _PROBE_STEPS, at
# most _PROBE_MAX (what a thick restart leaves room for anyway), each two products. The one more: the
# bound's own count missed a fifth copy over values from 0.7 down (213×132, k = 5: 5 steps, 6 found
# it) and a fourth over 0.6 (300×200, k = 4: 4 steps, 5 found it); the start is half the random
# direction, half F's leading one. A missed copy of an interior value σⱼ (j < k) races the same rest
# with γ = σⱼ²/σ_k² − 1, the slowest for the least σⱼ above σ_k (a copy of σ_k itself changes no
# value): with σ₁ in its place, σ = 2, 1, 1, 1, 1 over values below 0.95 (300×1000, k = 5, 5 steps)
# returned 0.95 for the fourth 1 on 8 of 10 seeds, converged, with bars of 1e-12; 13 steps, 0 of 10
# (and 0 of 10 in four more such spectra, 3–5 copies, 2–3% gaps; a new user's trial). A warm start
# can lack a vector of any value, not only of a copy (exact vectors of σ₁, σ₂, σ₄ for k = 3: σ₃ was
# missed on 1–9 of 10 seeds for σ₃ − σ₄ from 0.05 down to 0.001); where its first look finds it
# converged already (_NEAR_PAIR, as for k = 1 below), its probe takes _PROBE_MAX, which found it on
# all 50. Not further off: from 1e-4-perturbed vectors (k = 2, 400×200) _PROBE_MAX took the warm
# solve above the cold one's products (54 against 42), and the iteration's own steps from such a
# start lift what it lacks.
#
# Where the bound asks for more than _PROBE_MAX but at most _PROBE_STRETCH steps (gaps from about
# 1.3% at n = 400 to 1.5% at n = 4000), the probe takes them: capped at 16, 3 of 800 cases of 2–5
# copies 1.5% and 2% above the rest missed a copy, converged (`_copies_over_a_gap`, one thread; 500×400
# at k = 5 and 3, 150×300 at k = 3), 0 with the bound's steps, for 1.7% more products over the
# benchmark's k = 2–8 solves (384×384, 1536×384, 384×1536; a cap of 20 everywhere cost 6.4%). Beyond
# it (closer values, as at the top of a Gaussian spectrum) the cap stays: there the bound is out of
# any probe's reach, and README says copies within ~1% can be missed.
_PROBE_STEPS, _PROBE_MAX, _PROBE_STRETCH = 4, 16, 24
# A warm start for one triplet whose first look (after one product each way) finds a residual at
# most this many times tol was a singular pair already, up to the random part of 10·tol that _start
# adds: its Krylov space holds the other singular vectors at the size of that part, and whether the
# solve converges to the start's value or finds a larger one depends on the draw. From an exact
# (u₂, v₂) of σ₁ = 1.5, σ₂ = 1 (300×200), 7 of 20 seeds returned σ₂, converged (a new user's
# trial). Such a solve is probed as a k > 1 solve is. Not further off: from 1e-4-accurate vectors
# at tol 1e-6 (first looks below 100·tol) the probe took the warm k = 1 solves from 0.11–0.41 of the
# cold products to 0.56–2.0; what is left of the race is in docs/algorithm.md, "Warm starts".
_NEAR_PAIR = 20.0
# Directions a cold k = 1 solve explores (⌈8/b⌉ iterations of b) before its triplet may pass: a
# Krylov space of a few vectors resolves a value well above the bulk before the start's component
# along a larger one shows, and σ₂ had come back as σ₁, converged, on 83 of 3600 solves of low rank
# plus noise at tol 1e-2 to 1e-3 (docs/algorithm.md, "Warm starts"). Unless the residual is already
# below an eighth of the dtype's ε (_EXACT_SHARE): a Krylov space that invariant holds every value
# the start has a part along (a zero matrix, a scaled identity or orthogonal matrix, rank 1 or 3: 0
# to 5e-51 in float64, to 8e-9 in float32, at the first look), and those solves had taken 8–11 times
# their products with the rule alone (a review).
_COLD_LEAST, _EXACT_SHARE = 8, 0.125


def _probe_steps(s: np.ndarray, n: int, tol: float, warm: bool) -> int:
    """Probe steps for accepted values s (..., k) of an operator with n columns, asked for ``tol``
    (see above): from the least accepted value more than 10·tol·σ₁ above σ_k, σ₁ where none is.
    After a ``warm`` start that held singular triplets already, _PROBE_MAX: a value it lacks need not
    be a copy of one accepted."""
    if warm:
        return _PROBE_MAX
    if s.ndim == 1:  # one matrix, in Python floats: numpy's calls took 36 µs, cold after the products
        values = s.tolist()
        floor = 10 * tol * values[0]
        above = [x for x in values if x - values[-1] > floor]
        top = min(above) if above else values[0]
        ratio = values[-1] / (top if top > 0 else 1.0)
    else:
        sk = s[..., -1:]
        above = np.where(s - sk > 10 * tol * s[..., :1], s, np.inf).min(-1)
        top = np.where(np.isfinite(above), above, s[..., 0])
        ratio = float(np.max(s[..., -1] / np.where(top > 0, top, 1.0)))
    gamma = 1 / max(ratio, 1e-150) ** 2 - 1
    if not gamma > 0:
        return _PROBE_MAX
    steps = 2 + math.ceil(math.acosh(16 * math.sqrt(n)) / math.acosh(1 + 2 * gamma))
    return max(_PROBE_STEPS, steps) if steps <= _PROBE_STRETCH else _PROBE_MAX


@dataclass
class _Probe:
    """Triplets that passed the final check, held while a random direction is explored."""

    verified: tuple
    until: int
    start: np.ndarray | None = None  # (..., w, 1): the random direction in F's coordinates, until used
    steps: int = 0  # iterations run on past its own in rounds (_unresolved_below)

    def direction(self, st: Lanczos, b: int) -> np.ndarray:
        """The coordinates in F (..., w, b) of the recurrence from the random direction: first that
        direction, then the Krylov one, the part of AᵀA x outside 𝒱 for the newest columns x of 𝒱,
        whose coordinates in F are C h (h the newest columns of H: A x = 𝒰h, and Aᵀ𝒰 = 𝒱Hᵀ + F C).
        With F one column that is C's last column, the residual of Aᵀ times 𝒰's newest (what this
        took before); with more (a probe appends one) C's earlier columns add the part of Aᵀ𝒰 that
        leans on F's other columns, which that left out: the space's cosine with a missed v₈ then
        stalled at 0.998 and σ₉ was accepted for σ₈ = σ₉ + 4·tol·σ₁ (float64, 2 of 40 seeds of a
        1024×1024 matrix, 7 of 60 of a new user's 4096×1024; none with C h, and the same products and
        values on the benchmark's 128 solves of k = 4 and 8, where the probe finds nothing)."""
        start, self.start = self.start, None
        return start if start is not None else st.c @ st.h[..., -b:]


def _inject(work, st: Lanczos, generator) -> tuple[int, np.ndarray]:
    """The direction a probe starts from, and room for it in F; returns (columns appended to F, the
    direction's coordinates in F (..., w, 1)).

    The direction is the sum of two unit vectors outside 𝒱. One is random, for copies of a singular
    value that the Krylov space never held; its part outside F is appended to F with a zero row of C
    (the relations stay exact), nothing where 𝒱 and F span everything. The other is F's direction
    that Aᵀ𝒰 leans on most (C's leading left singular vector), where the recurrence would go next:
    rounding can put a missed copy's u in 𝒰 and its v in F, and then a recurrence that starts
    outside F never brings that v into 𝒱. With the random direction alone (orthogonal to F, or
    not), 8 of 1000 and then 1 of 5000 solves of 10–70 × 10–310 matrices with σ₁ = σ₂ = σ₃ and
    k = 4–6 returned σ₃ = 0.5 (fuzz seed 456797700, cases 388 and 1689; in one, F held 0.998 of
    the missed v); with both, 0 of 5000."""
    space = work.right
    y = space.randn_like(st.vbuf[..., :1], generator)
    appended = int(st.pv + st.w < work.shape[1])
    coords = _random_column(st, y) if appended and isinstance(y, np.ndarray) and y.ndim == 2 else None
    if coords is None:
        y = _outside(space, st.v, y)
        coords = space.to_host(space.inner(st.f, y))
        if appended:
            rest = _outside(space, st.vbuf[..., : st.pv + st.w], y)
            coords = np.concatenate([coords, space.to_host(space.inner(rest, y))], axis=-2)
            st.vbuf[..., st.pv + st.w : st.pv + st.w + 1] = rest
    if appended:
        st.cbuf[..., st.w, : st.pu] = 0.0
        st.w += 1
    if (
        st.pu and st.w - appended == 1
    ):  # F held one column (the recurrence's): C's one nonzero row leans on it
        return appended, _plus_first(coords)
    if not st.pu:
        lead = np.zeros_like(coords)
    elif st.c.ndim == 2:  # one matrix: C Cᵀ is w×w, its top eigenvector 8 µs where the SVD took 39
        lead = np.linalg.eigh(st.c @ st.c.T)[1][:, -1:]
    else:
        lead = _rotation(st.c)[..., :1]
    sign = np.where(np.sum(lead * coords, axis=-2, keepdims=True) >= 0, 1.0, -1.0)  # no cancellation
    return appended, coords + sign * lead


def _plus_first(coords: np.ndarray) -> np.ndarray:
    """coords (..., w, 1) plus ±e₀, the sign of coords[0] (+ at 0: no cancellation): :func:`_inject`'s
    coords + sign·lead where the lead is F's first column. One matrix's sign is a Python float: the
    zero lead, its dot product and numpy's sign took 27 µs there, cold after the products."""
    start = coords.copy()
    first = start[..., 0, :]
    first += np.where(first >= 0, 1.0, -1.0) if first.ndim > 1 else (1.0 if first[0] >= 0 else -1.0)
    return start


def _random_column(st: Lanczos, y: np.ndarray) -> np.ndarray | None:
    """:func:`_inject`'s random column for one matrix on the host, in one Gram–Schmidt: y (n, 1) less
    its parts along 𝒱 and F is written as F's new column q, and y's part outside 𝒱, F b + q r, is
    returned as its unit coordinates (b, r) in F and q, (w + 1, 1). None, with nothing written, where
    y held only rounding noise outside them (the general path then decides). With two projections
    and QRs against each basis, :func:`_inject` took 158 µs at 384×384 (k = 8) where it takes 121,
    and 376 where it takes 328 at 2000×1000 (medians of 30 solves, alternated in one process)."""
    pv, w = st.pv, st.w
    done = _orth_column(cast(np.ndarray, st.vbuf)[:, : pv + w], y)
    if done is None:
        return None
    q, coef, r = done
    assert coef is not None  # a basis of pv + w ≥ 1 columns
    part = np.concatenate([coef[pv:], r])
    st.vbuf[:, pv + w] = q[:, 0]
    return part / math.sqrt(float((part * part).sum()))


def _grown(ritz: Ritz, probe: _Probe, k: int, tol: float, rounding: float) -> bool:
    """Whether any of the top k Ritz values now exceeds its accepted σᵢ by more than that value's
    error bar can explain. Not σ_k alone: a found copy lifts the values below it by one place, and
    where the accepted σ_{k−1} and σ_k are equal σ_k stays (4 copies of 2 above 1, 1, k = 5:
    [2, 2, 2, 1, 1] was returned, converged, on 7 of 10 seeds).

    A Ritz value is at most the true σᵢ of its place (the small matrix is a compression of A), and
    the accepted σᵢ lies within its bar eᵢ of a true value, so a Ritz value more than 2eᵢ above it
    (plus ``rounding``, relative to σ₁: the small matrix's own) shows a value the accepted set
    missed. The margin was 10·tol·σ₁ for every value, which a missed value closer than that passed:
    near k = min(m, n) on a decaying spectrum (200×80, k = 78, tol 1e-8, σ 0.82 apart), 3 of 20 seeds
    returned σ₇₉ for σ₇₈ = 30·tol·σ₁, converged (a new user's trial). The margin never exceeds
    10·tol·σ₁."""
    if ritz.s.shape[-1] < k:
        return False
    s, errors = probe.verified[1], probe.verified[4]
    s1 = s[..., :1]
    margin = np.minimum(10 * tol * s1, 2 * errors[..., :k] + rounding * s1)
    return bool((ritz.s[..., :k] - s[..., :k] > margin).any())


# Steps that a probe runs on past its own, in rounds of _PROBE_MAX at most, while the top Ritz value
# below the accepted ones may still stand for a singular value above σ_k (:func:`_unresolved_below`):
# 8 full rounds, 256 products, about a cold solve's of the trial's 300×300 matrix below. Counted in
# steps, not rounds: with a small basis a round is a restart and the few steps that fit, and 8 of
# them gave up unresolved (max_basis=12: 5 of the warm fuzz's first 80 crossings missed, now 2;
# docs/algorithm.md, "Warm starts").
_ONWARD_STEPS = 8 * _PROBE_MAX


def _unresolved_below(st: Lanczos, ritz: Ritz, verified: tuple, k: int, rounding: float) -> bool:
    """Whether the top Ritz triplet below the accepted k (θ = ritz's σ_{k+1}, of the exact SVD of H)
    may still stand for a singular value above the accepted σ_k: its residual r reaches up to it
    (θ + r ≥ σ_k). A warm start holds the singular vectors it lacks only at the size of its error,
    and what it lacks need not be a copy of a value accepted: where values cross (σ₂ of a 300×300
    diagonal A moved from 0.8973 below σ₃ = 0.8946 and σ₄ = 0.8920; the start, the previous top 3,
    about 1e-8 off), the old (u₂, v₂) was accepted as σ₃ = 0.89 on 21 of 30 seeds after the probe's
    16 steps, which had left θ within 0.003 of it with r ≈ 1.5e-2 on every miss (a new user's
    trial). Once r is below σ_k − θ, the probe's Krylov space has resolved its top below σ_k; where
    the accepted values stand well above the rest, that holds after the first 16 steps.

    A cold start holds such a value at the size of its random part, and the iteration can converge to
    the value below it first: with σ_k − σ_{k+1} = 4·tol·σ₁ over a bulk far below (1000×600 float64,
    k = 4, tol 1e-6), σ_{k+1} came back for σ_k, converged, on 9 of 200 seeds, where the probe had
    brought v_k into the space to a cosine of 0.9994 only, its Ritz value still under the accepted
    σ_k (a new user's trial). Run on after every probe while this holds: 1 of 200, 0 of 60 at
    3072×768 (k = 16, tol 1e-8, against 4 of 60), and a third copy of σ₁ 2.2% above the rest found on
    60 of 60 seeds (1024×1024, k = 4, against 58), for 1–8% more products there and none on the
    benchmark's 112 solves at k = 4 and 8 or on Gaussian matrices.

    A θ within twice σ_k's error bar of it (plus ``rounding``, relative to σ₁, as in :func:`_grown`)
    is a copy of σ_k, which changes no value returned: counted as unresolved, the rounds ran to their
    end on every warm start of a matrix with σ_{k+1} = σ_k (an orthogonal 256×256 Q, k = 1: 290
    products where they took 34; a review)."""
    if ritz.y.shape[-1] <= k or ritz.s.shape[-1] <= k:
        return False
    s, errors = verified[1], verified[4]
    r = _residuals(st, ritz.y[..., k : k + 1], ritz.s)[..., 0] * ritz.s[..., 0]  # absolute
    if s.ndim == 1:  # one matrix, in Python floats (as _probe_steps)
        below, kth, e = float(ritz.s[k]), float(s[k - 1]), float(errors[k - 1])
        return below + float(r) >= kth and not below >= kth - (2 * e + rounding * float(s[0])) and kth > 0
    theta, sk = ritz.s[..., k], s[..., k - 1]
    copy = theta >= sk - (2 * errors[..., k - 1] + rounding * s[..., 0])
    return bool(((theta + r >= sk) & ~copy & (sk > 0)).any())


def _worst(ritz: Ritz | None, k: int, t: int, batch, slack: bool = False) -> np.ndarray | float:
    """The largest relative residual of the k wanted triplets per batch element (inf if unknown);
    with ``slack``, the least it can be given an estimate's error. For one matrix a Python float:
    its look's bookkeeping (this, the comparisons with the target and the best so far, the history)
    took eight numpy calls on 0-d arrays, 8 µs a look alone, 0.6 in floats."""
    if ritz is None or t < k:
        return _per_element(batch, math.inf)
    rel = ritz.rel[..., :k]
    if slack and isinstance(ritz.slack, np.ndarray):  # never above rel itself, even for a NaN slack
        rel = np.fmin(rel - ritz.slack[..., :k], rel)
    return rel.max(-1) if batch else float(rel.max())


def _per_element(batch: tuple, value: float) -> np.ndarray | float:
    """``value`` for every batch element: an array of the batch's shape, a Python float for one matrix
    (whose look's bookkeeping takes floats; see :func:`_worst`)."""
    return np.full(batch, value) if batch else value


def _per_triplet(x: np.ndarray | float) -> np.ndarray | float:
    """A per-element value (:func:`_per_element`) broadcast against per-triplet ones (..., t)."""
    return x[..., None] if isinstance(x, np.ndarray) else x


def _within(worst: np.ndarray | float, reach: np.ndarray | float) -> bool:
    """Whether every batch element's ``worst`` (:func:`_worst`) is at most its ``reach``."""
    return bool((worst <= reach).all()) if isinstance(worst, np.ndarray) else bool(worst <= reach)


def _improved(worst: np.ndarray | float, best: np.ndarray | float) -> bool:
    """Whether any batch element's ``worst`` is below its ``best`` so far."""
    return bool((worst < best).any()) if isinstance(worst, np.ndarray) else bool(worst < best)


def _largest(x: np.ndarray | float) -> float:
    """The largest over the batch, as a Python float (0 for an empty batch)."""
    return float(x.max(initial=0.0)) if isinstance(x, np.ndarray) else x


def _least(x: np.ndarray | float) -> float:
    """The least over the batch, as a Python float."""
    return float(x.min()) if isinstance(x, np.ndarray) else x


def _keep(p_max: int, w: int, k: int, b: int) -> int:
    """Ritz vectors a thick restart keeps: half the basis beside F, at least k + b, and room for a
    step."""
    return min(max(k + b, (p_max - w) // 2), p_max - w - b)


# A solve with the default basis that stalls far above rounding widens its basis, doubling it up to
# this many times the default, before it gives up: the search space must hold a cluster of close
# values to resolve them. 40 values 1e-6 apart at the top of a 2000×1000 spectrum (tol 1e-12) stalled
# at 1.5e-5 (k = 4, basis 24, 886 products) and 7.4e-6 (k = 8, basis 32, 1246), where a basis of 100
# converged in 1306 products (a new user's trial; PROPACK's own default is 10·k vectors).
_WIDENED = 4


# Looks without a residual below half the least one after which a solve stops, without widening its
# basis, where a caller's Aᵀ has been seen not to match A by more than tol (_adjoint_off): no basis
# then reaches tol, and the estimates only scatter. A rmatvec off by 1e-9 to 1e-1 of A's entries, or
# float64 products computed in float32, had run on to maxiter (68 of 96 solves) or a late stall,
# 247–4037 products (median 4009), before the warning that names them; with this 223–561 (median
# 327; 600×400 and 300×1000, k = 1 and 5, four seeds; the correct operator 77–185 either way). Any
# new least residual (not half) put the stall off: up to 4027 products (1 of 16 seeds). An eighth of
# SolverOptions.patience where that is larger.
_PATIENCE_FAULT = 8


def _adjoint_off(st: Lanczos) -> bool:
    """Whether a caller's Aᵀ has missed A's transpose on the solve's own vectors (:class:`AdjointWatch`)
    by more than its limit: tol, and 100 times the products' rounding. Below tol it is left to the
    stall's diagnosis: a rmatvec off by 1e-10 (4e-13 on the steps' vectors) still reached tol 1e-7 in
    a cluster of values 1e-4 apart, after 615–1061 products, as did a correct Aᵀ of centred data
    whose products cancel (a mean of 1e6: 1e-9), and both had stopped unconverged when any mismatch
    above rounding cut their patience (a review). Where the mismatch exceeds tol, the residual it
    leaves does too: 1.5–3 times it for a rmatvec with random errors, about it for products that
    cancel."""
    return st.adjoint is not None and st.adjoint.gap > st.adjoint.limit


def _far_above_rounding(best: np.ndarray | float, op: Operator) -> bool:
    """Whether a stalled solve's best estimated residual (relative, per batch element) lies far
    (10³ times) above the rounding of A's products, where a wider basis can still help; at the
    rounding floor it cannot (float32 asked for 1e-8 stalls near 2.4e-7, whatever the basis)."""
    return bool(np.max(best, initial=0.0) > 1e3 * product_floor(op.dtype, *op.shape, op.row_terms))


def _check_cap(op: Operator, p_max: int, b: int) -> int:
    """Iterations at most between two looks at the small matrices; within it, the rate of
    convergence decides (:func:`_next_check`). A look costs 25–65 µs on the host (an
    eigendecomposition of H Hᵀ, or the SVD of H), more beside large products. Up to 8 iterations
    apart below 10⁶ entries, 8·10⁶ over their count above, never fewer than 4: a look after every
    iteration above 4·10⁶ entries (every 2 above 2.7·10⁶: the rule before) took 2.7 times the looks
    for 0.1% fewer products (2135 against 785 looks, 5400 against 5406 products: the benchmark's
    classes at 2048×2048, 3000×1500 and 1024×4096, k = 1 and 8), and 1.02–1.11 times the time at
    4096×1024. On a GPU a look also costs a host sync. The entries are those a product reads (a sparse
    A's stored ones, :attr:`Operator.entries`): counted as m·n, a sparse A with 1% stored looked every
    4 iterations from 2000×1000 up, which on six seeds at 2000×1000 and 4000×2000 (k = 1 and 8, float64
    at 1e-10 and float32 at 1e-6) took 1.30–1.55 times the looks of every 8 for the same products
    (9822 against 9826 over the 48 solves) and 1.03–1.09 times the time (one thread, alternated).

    Further apart where a look costs several steps (:func:`_look_cost`): 4 times that many, so that
    the looks the cap calls for take about a fifth of the time at most (a look after at most 8
    iterations took about a third of k = 32 solves at 384×384 and 1536×384; docs/algorithm.md)."""
    # A basis of p > 64 (k > 24) makes a look cost like p³: 1536×384, k = 128 (p = 272) took 272 ms
    # with up to 8 iterations between looks, 53 looks in all; looks that far apart keep their share.
    wide = max(1.0, (p_max / 64) ** 3)
    if torch.device(op.device).type != "cpu":
        return int(min(64, 4 * wide))
    # per matrix: a batch multiplies the products and the small SVDs alike
    rule = min(64, max(4, 8e6 // max(op.entries, 1)) * wide, max(8, wide))
    return int(min(64, max(rule, 4 * _look_cost(op, p_max, b))))


def _look_cost(op: Operator, p: int, b: int) -> float:
    """What a look at a basis of p columns costs in steps of b directions, by a model of their work
    on the host (flops, plus each call's fixed cost as flops): an SVD of H with its vectors, about
    22·p³ flops and 50 µs; a step, its products (4 flops per entry of A they read, m·n or a sparse
    A's stored ones, per column, at half the cost in float32, whose entries take half the bytes) and
    two Gram–Schmidt passes against bases of up to p columns (8·(m + n)·p·b), and 30 µs. Measured
    against the model on the 2-core AMD EPYC (looks at p = 23 to 143, 100×80 to 4096×1024, k = 4 to
    64): within a factor 2, the model low by up to 2.2 where the ratio is below 1; sparse A with 1%
    of its entries stored, 384×384 to 4000×2000 at k = 16 and 32, within a factor 1.6 (counting all
    m·n entries, the model had been 5–19 times low)."""
    m, n = op.shape
    look = 22.0 * p**3 + 1e6
    step = b * (4.0 * op.entries * op.dtype.itemsize / 8 + 8.0 * (m + n) * p) + 6e5
    return look / step


class Kept(NamedTuple):
    """A v and Aᵀu of the vectors checked, from the products the iteration made (:class:`Lanczos`),
    and ``drift``: how far they may be from fresh ones beyond the products' own rounding, relative to
    σ₁ (see :func:`_vectors`)."""

    av: torch.Tensor | np.ndarray
    atu: torch.Tensor | np.ndarray
    drift: float


# The kept products stand in for fresh ones where their drift is at most this share of tol.
_KEPT_SHARE = 0.05


def _vectors(
    work, st: Lanczos, ritz: Ritz, k: int, restarts: int, tol: float
) -> tuple[Any, Any, Kept | None]:
    """The top k Ritz vectors 𝒰y and 𝒱z in the solver's kind of array, and their products
    A𝒱z and Aᵀ𝒰y from those the iteration made (a :class:`Kept`), or None where fresh ones are needed:
    (u, v, kept).

    The kept products are A times each basis vector as it was multiplied; a restart rotates both by
    the same Z, each in A's dtype, so that they part by the rounding of the two rotations: at most
    p·ε·‖𝒱‖ times σ₁ and p·ε·‖A𝒱‖ ≤ p·ε·σ₁ a column, p the rotation's length (the buffers' width
    bounds it). Over the restarts and the final combination that is ``drift`` = 2·(restarts + 1)·p·ε,
    which :func:`verify` adds to the residual and the bars, where it is at most _KEPT_SHARE of tol:
    float64 at tol 1e-10 for up to 560 restarts (p = 40), at 1e-12 for up to 4; float32 never (its
    ε alone is 0.1 of tol 1e-6 at p = 40). Saved: 2k products a check, 16 of a k = 8 solve's 64–126
    at 384×384 (docs/algorithm.md)."""
    assert ritz.z is not None  # the returned vectors come from full Ritz triplets, not estimates
    drift = _drift(st, restarts)
    kept = st.av_kept and st.atu_kept and _drift_allows(drift, tol)
    vbuf = st.vbuf
    if kept and _C_LAPACK and isinstance(vbuf, np.ndarray) and vbuf.ndim == 2 and vbuf.dtype == np.float64:
        # one matrix on the host: the four products in one call into C, by the BLAS numpy's would use
        (m, n), (pu, pv) = work.shape, (st.pu, st.pv)
        out = [np.empty((rows, k)) for rows in (m, n, m, n)]  # u, v, A v, Aᵀu
        assert STEPS is not None  # _C_LAPACK
        STEPS.kept_products(st.ubuf, st.avbuf, vbuf, st.atubuf, pu, pv, ritz.y[:, :k], ritz.z[:, :k], *out)
        return out[0], out[1], Kept(out[2], out[3], drift)
    y = work.left.from_host(ritz.y[..., :k], st.ubuf)
    z = work.right.from_host(ritz.z[..., :k], st.vbuf)
    u, v = mm(st.u, y), mm(st.v, z)
    if not kept:
        return u, v, None
    return u, v, Kept(mm(st.av, z), mm(st.atu, y), drift)


def _drift_allows(drift: float, tol: float) -> bool:
    """Whether kept products that far from fresh ones (relative to σ₁) may stand in for them at
    ``tol``: a drift of at most _KEPT_SHARE of it."""
    return drift <= _KEPT_SHARE * tol


def _drift(st: Lanczos, restarts: int) -> float:
    """How far the kept products of Ritz vectors may be from fresh ones, relative to σ₁, after
    ``restarts`` (see :func:`_vectors`)."""
    return 2 * (restarts + 1) * max(st.vbuf.shape[-1], st.ubuf.shape[-1]) * _eps(st.vbuf)


def _float64_view(work, tol: float, k: int) -> HostView | None:
    """A float64 view of A for the fresh products of :func:`verify`, where A is float32 on the host
    and sparse (scipy or torch), or dense with ``tol`` below what float32 products resolve
    (:func:`product_floor`); None otherwise (a GPU's sparse A is checked in float32, with the wider
    bars of its longest row). The float32 check's own rounding (about ε·‖A‖_F/σ₁, 8e-7 for a 1536×384
    Gaussian) rejected Ritz triplets that had reached tol = 1e-6 and ended "stalled" above it (5 of 24
    cases at k = 8, 1.1e-6 to 1.4e-6); checked in float64 the same iteration reached it, in fewer
    products (206 against 232, 102 against 122). At tol above the floor the float32 check stands, with
    its rounding added to the error bars: float64 products there cost 0.4–1.5 ms a solve at
    2000×1000 and 0.9–4.4 ms at 4000×2000 (k = 1 and 8; 1–3 and 3.5–16 ms, up to 34% of the solves
    that converge fastest, before C's pass took every column), for values 3.9·ε·σ off at most
    instead of correctly rounded, within the promised tol·σ₁ either way. But for one or two triplets
    of a dense A beyond the cache, whose float64 products by C's one pass cost less than numpy's two
    float32 ones (:func:`_one_pass_pays`), the check is float64's at any tol."""
    op = work.op if isinstance(work, HostView) else work
    # a float32 sparse A always: its kernels' sums, one term after another, can be off by far more
    # than the floor (the complete graph's 1000×1000 adjacency: σ₁ 1.2e-5 off, the float32 check's
    # residual 2.1e-7 where it was 1.2e-5, "converged" at tol 7.5e-6; a new user's trial)
    if op.dtype != torch.float32 or not (
        op.row_terms is not None or tol < product_floor(op.dtype, *op.shape) or _one_pass_pays(work, k)
    ):
        return None
    host = work if isinstance(work, HostView) else op.on_host()
    return None if host is None else host.in_float64()


# A float32 dense A of more bytes than this (beyond a core's L2) has the check of up to
# _ONE_PASS_MOST triplets made by float64 products at any tol (_one_pass_pays)
_ONE_PASS_FROM = 2 << 20
_ONE_PASS_MOST = 2


def _one_pass_pays(work, k: int) -> bool:
    """Whether a float32 dense A's check of k triplets takes float64 products at a tol that float32's
    products resolve too: C's one pass over A for both (``_steps.widened_both``) against numpy's two
    float32 products. One matrix on the host whose rows or columns are contiguous
    (:meth:`DenseOperator.checks_in_one_pass`: a transposed view too, which had kept the float32
    check and its σ 1.35 ulps off; a review), of more than _ONE_PASS_FROM bytes, k ≤
    _ONE_PASS_MOST. The pair of products took 0.74–0.96 of numpy's time
    at k = 1 and 0.40–0.48 at k = 2 (OpenBLAS's sgemm of two columns reads A once a column), from
    1536×384 to 4000×2000; 1.1–1.4 at 384×384 and 512×512, which stay in the cache, and 1.0–1.2 at
    k = 8 (one thread, Intel Xeon). The values come correctly rounded, and the residual is the
    float64 one, without the float32 check's rounding in its bars."""
    op = work.op if isinstance(work, HostView) else None
    return (
        isinstance(op, DenseOperator)
        and k <= _ONE_PASS_MOST
        and op.entries * op.dtype.itemsize > _ONE_PASS_FROM
        and op.checks_in_one_pass()
    )


def _finish_in_c(u, v, av, atu) -> bool:
    """Whether :func:`verify`'s arithmetic on these vectors and products goes to ``_steps.finish``: one
    matrix's numpy arrays in C order, the vectors float32 or float64 and the products of their dtype
    or float64 (its twenty numpy and torch calls took 70–180 µs a check, cold after the passes: 384×384
    to 2000×1000, k = 1; a float32 solve's check by float64 products took 33–37 µs more in Python at
    384×384, k = 1 and 8, and 150 µs more at 2000×1000, k = 8)."""
    arrays = (u, v, av, atu)
    kind = u.dtype
    return (
        _C_LAPACK
        and kind in (np.float32, np.float64)
        and all(isinstance(x, np.ndarray) and x.ndim == 2 and x.flags.c_contiguous for x in arrays)
        and v.dtype == kind
        and av.dtype == atu.dtype
        and av.dtype in (kind, np.float64)
    )


def _squared_norms(space, x, like) -> np.ndarray:
    """‖xᵢ‖² per column on the host, computed in the dtype of ``like`` (the products')."""
    if x.dtype != like.dtype:  # float32 vectors of a float64 check: numpy arrays
        x = x.astype(like.dtype)
    return space.to_host(space.dots(x, x))


def verify(work, u, v, kept: Kept | None, tol: float, gap: bool = False):
    """Rayleigh quotients σᵢ = uᵢᵀ A vᵢ and true relative residuals from products of ``work`` (an
    Operator with tensors u, v, or its HostView with numpy arrays): those the iteration made
    (``kept``, :func:`_vectors`; their drift added to the residual and the bars), or fresh ones where
    ``kept`` is None; fresh in float64 where :func:`_float64_view` says ``tol`` needs it.

    Returns (u, s, v, residual, errors): the vectors as tensors sorted by descending σ, and on the
    host in float64 s (..., k), the residual (...) and errors (..., k) = sqrt((‖A vᵢ − σᵢuᵢ‖² +
    ‖Aᵀuᵢ − σᵢvᵢ‖²)/2), the residual norm of the unit vector (uᵢ, vᵢ)/√2 for the eigenvalue σᵢ of
    [[0, A], [Aᵀ, 0]], whose eigenvalues are ±σⱼ, plus the products' own rounding. With ``gap``
    (SolverOptions.gap_last) the k-th triplet's residual counts in gap units (:func:`_gap_units`).
    """
    op = work.op if isinstance(work, HostView) else work
    precise = _float64_view(work, tol, u.shape[-1])
    if precise is not None:
        if not isinstance(work, HostView):  # the dense path's and the trust region's tensors
            u, v = u.detach().contiguous().numpy(), v.detach().contiguous().numpy()
        work, kept = precise, None
    left, right = work.left, work.right
    av, atu = work.both(v, u) if kept is None else (kept.av, kept.atu)
    drift = 0.0 if kept is None else kept.drift
    m, n = work.shape
    floor = 0.5 * product_floor(op.dtype if precise is None else torch.float64, m, n, op.row_terms)
    if _finish_in_c(u, v, av, atu):  # one matrix on the host
        assert STEPS is not None  # _finish_in_c
        k = u.shape[-1]
        u_out, v_out = np.empty_like(u), np.empty_like(v)
        s, errors, each = np.empty(k), np.empty(k), np.empty(k)  # each: max(‖A v − σu‖, ‖Aᵀu − σv‖)
        residual = STEPS.finish(u, v, av, atu, floor, drift, u_out, v_out, s, errors, each)
        if gap:
            residual = _gap_units(_relative(each, s[0]), s, k, tol).max() + _charged_drift(drift, s)
        return left.release(u_out), s, right.release(v_out), np.float64(residual), errors
    # x = (u, v)/√2 is a unit vector only to the vectors' rounding: float32 Ritz vectors 𝒰y came 1 −
    # 6.6e-8 long, which took 1.2 ulps off uᵀA v. So the Rayleigh quotient and residual of x as it is.
    x2 = 0.5 * (_squared_norms(left, u, av) + _squared_norms(right, v, atu))
    s = left.to_host(left.dots(u, av)) / x2
    if (s < 0).any():  # a numerically zero σ's Rayleigh quotient: (−u, −σ, v) is the same triplet
        sign = np.where(s < 0, -1.0, 1.0)[..., None, :]
        u, atu, s = u * left.from_host(sign, u), atu * right.from_host(sign, atu), np.abs(s)
    order = np.argsort(-s, axis=-1, kind="stable")
    if not (order == np.arange(s.shape[-1])).all():
        u, av = left.take_columns(u, order), left.take_columns(av, order)
        v, atu = right.take_columns(v, order), right.take_columns(atu, order)
        s, x2 = np.take_along_axis(s, order, axis=-1), np.take_along_axis(x2, order, axis=-1)
    sr = right.from_host(s[..., None, :], v)  # σ as it is returned, in the vectors' dtype
    if av.dtype != sr.dtype:  # a float64 check of float32 triplets: that σ, in the products' dtype
        sr = right.from_host(right.to_host(sr), av)
    nu = left.to_host(left.norms(av - u * sr))
    nv = right.to_host(right.norms(atu - v * sr))
    # The products' own rounding, about ε·√max(m, n)·σ₁ (half the product floor; for a sparse A at
    # least ε/2 a term of its longest row's sum), which residuals computed from them cannot see:
    # without it no σ of A lay within the bars of 67 of 200 random 5×600 float32 solves, by up to
    # 1.44× (0.39–1.0·ε·σ₁ short, 5×600 and 1536×384)
    errors = np.hypot(nu, nv) * np.sqrt(0.5 / x2) + (floor + drift) * s[..., :1]
    each = _relative(np.maximum(nu, nv), s[..., 0])
    residual = (_gap_units(each, s, s.shape[-1], tol) if gap else each).max(-1) + _charged_drift(drift, s)
    return left.release(u), s, right.release(v), residual, errors


def _charged_drift(drift: float, s: np.ndarray):
    """The kept products' drift as :func:`verify` adds it to the residual, per batch element: relative
    to σ₁, as the residual is, so none where σ₁ = 0 (a zero A's kept products are exactly 0, and its
    residual had come 1.2e-14 where the dense path's is 0; a new user's trial). ``_steps.finish``
    charges it so too."""
    return np.where(s[..., 0] > 0, drift, 0.0)
