"""The result of :func:`riemsvd.solve`: a named tuple (U, S, V) with an ``info`` record."""

from __future__ import annotations

import sys
import types
from collections import namedtuple
from dataclasses import dataclass, field

import torch

__all__ = ["ConvergenceWarning", "DegenerateSpectrumWarning", "ResolutionWarning", "SolveInfo", "SVDResult"]


def callers_level() -> int:
    """The ``stacklevel`` for a warning raised by this function's caller that points at the first frame
    outside riemsvd and torch: the user's line. torch wraps an optimizer's ``step`` in its hooks'
    wrapper and runs a backward from its engine, so fixed levels had pointed at
    torch/optim/optimizer.py and torch/autograd/function.py, where Python's default filter then
    showed a warning once per process however many calls it was for (new users' trials)."""
    frame: types.FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("riemsvd", "torch"):
        frame, level = frame.f_back, level + 1
    return level


class ConvergenceWarning(UserWarning):
    """The solver stopped before the requested residual; ``info.residual`` says what it reached."""


class ResolutionWarning(UserWarning):
    """Some returned σᵢ are below what the residual tolerance resolves (ε·σ₁ < σᵢ < 10·tol·σ₁).

    The residual is relative to σ₁, so such a triplet is only known to about tol·σ₁: its value may be
    off by a sizeable fraction of itself, and within a cluster of such values the ones returned need
    not be the largest, nor the value returned below tol·σ₁ the σ_k above it that it stands for
    (float32 low-rank-plus-noise matrices with k reaching into the noise). Solve in
    float64, with a smaller ``tol``, or with ``method="dense"``.
    """


class DegenerateSpectrumWarning(UserWarning):
    """Singular vectors asked to be differentiated are not unique (σᵢ = σⱼ, or σ_k = σ_{k+1}).

    The derivative of U and V is not defined along the degenerate directions: at σᵢ = σⱼ inside the k
    their common rotation is left out, and losses blind to it (of span(U), span(V), U Vᵀ) stay exact,
    U S Vᵀ does not (write it A V Vᵀ). Values inside the k tie within 64ε·σ₁, or within 16ε·σ₁ in a
    backward whose loss turns with their pair; between the two they are kept apart with this
    warning, since the rate divides rounding by their gap. The derivative of S, U diag(S̄) Vᵀ, needs
    no solve, but it is only as good as the returned vectors: where σ_k and σ_{k+1} lie closer than
    the triplets resolve, σ_k's may stand for a mix of the two pairs, and at a tie itself one of the
    tied values alone has none (only symmetric functions of them do).
    It is raised where the cotangent of U or V has a part along them, and only there: at an exact
    tie, a loss whose gradient at the returned vectors has none (Σ wᵢ uᵢ² at u = e₁ of diag(3, 3, 1),
    k = 1, as the dense path returns it) gets a zero there without it, although the loss itself jumps
    under a perturbation of A, since the cotangent cannot tell it from a loss that does not (‖u‖²).
    """


@dataclass
class SolveInfo:
    """How a solve went.

    Attributes
    ----------
    converged : torch.Tensor
        bool, shape ``(...)`` (A's batch shape): the residual reached ``tol``.
    iterations : int
        Iterations: the start block, then one per product with A and Aᵀ of ``options.block``
        columns (one column on the CPU by default); on the trust-region path (``method``
        below) the outer iterations (trust-region steps, taken or not); for a batch, see below.
    matvecs : int
        Products with A plus products with Aᵀ, a block of b columns counting b. On the dense path:
        the final check's 2k, plus, where the Gram matrix was formed (float32, and float64 on the
        CPU), min(m, n) + k for it and its images A V (the Gram matrix is Aᵀ times A's min(m, n)
        columns), and 2k more where a result short of tol was redone by a float64 SVD and checked
        again; a whole SVD counts none. A float32 A iterated in a float64 copy (a ``tol`` below
        4.8e-7, where the dense path does not serve: :func:`riemsvd.solve`'s ``method``) counts 2k
        more, its float32 triplets' check.
    residual : torch.Tensor
        Shape ``(...)``: the largest over the k triplets of max(‖A vᵢ − σᵢ uᵢ‖, ‖Aᵀ uᵢ − σᵢ vᵢ‖) / σ₁,
        computed from products with A and Aᵀ of the returned vectors: fresh ones, or the iteration's
        own (kept beside its bases, in float64 where their restarts' rounding is at most 0.05·tol,
        which is added). For a bfloat16 or float16 A, ``residual`` and ``converged`` are those of the
        float32 triplets before their cast to A's dtype: the triplets returned carry that dtype's
        rounding on top, a residual of about its unit roundoff (2⁻⁸ ≈ 3.9e-3 for bfloat16, 2⁻¹¹ ≈
        4.9e-4 for float16; 2.8e-3 and 4.6e-4 measured at 384×384, k = 4) whatever ``tol``;
        ``errors`` include the cast. With ``SolverOptions(gap_last=True)`` the k-th triplet's
        residual counts in units of its own bound, max(tol, (σ_{k−1} − σ_k)/(20·σ₁)), times tol.
    tol : float
        The tolerance the solve worked to: ``tol`` as given (read as a float64 number), or, for
        ``tol=None``, the default for A's dtype and size (:func:`riemsvd.solve`).
    history : list[tuple[int, float]]
        (matvecs so far, largest estimated residual over the batch) at each look at the small
        projected matrices: every iteration for large A, every few for small A (docs/algorithm.md);
        for ``method="trust-region"`` at the start and after each outer iteration.
    stop_reason : str
        Why the iteration stopped: ``"converged"``, ``"maxiter"``, ``"stalled"`` (no progress for
        ``options.patience`` looks, or the estimate and the fresh products disagree at the rounding
        floor), ``"whole space"`` (the search space is all of A's row space: the result is exact;
        the dense path's, always),
        or ``"out of range"``: the iteration converged in the units it solved in, but the values
        returned round beyond tol in A's dtype (σ inf, or subnormal with fewer digits than tol asks:
        in float32 σ₁ ≈ 4e-41 is, 3.7e-39 is not at tol 1e-6; ``converged`` is False and the
        ConvergenceWarning says so).
    restarts : int
        Thick restarts of the search space.
    errors : torch.Tensor
        Shape ``(..., k)``, in A's units: an error bar for each σᵢ. A has a singular value within
        ``errors[..., i]`` of ``S[..., i]``: sqrt((‖A vᵢ − σᵢuᵢ‖² + ‖Aᵀuᵢ − σᵢvᵢ‖²)/2) from the final
        products, the residual of the unit vector (uᵢ, vᵢ)/√2 for the eigenvalue σᵢ of the symmetric
        [[0, A], [Aᵀ, 0]] (whose eigenvalues are ±σⱼ). Once the k found are the top k, each
        bar holds for σᵢ itself. The products are in A's dtype (in float64 for a float32 sparse A on
        the CPU, and for a float32 dense one where tol is below 2·ε·√max(m, n)), and their rounding,
        ε·√max(m, n)·σ₁ in that dtype (for a sparse A at least ε/2 a term of its longest row), is
        added; the residual is that of S as returned, rounded to A's dtype. That allowance is for
        rounding errors that do not all share a sign: a dense float32 A whose every entry has one sign
        can exceed it by a small factor (the complete graph's 300×300 adjacency, σ₁ off by up to 1.6
        bars over 8 seeds); a tol below the product floor has such a check made in float64. For a
        bfloat16 or float16 A, the float32 solve's bars plus the cast of S to A's dtype. See
        docs/bounds.md.
    communicated : int
        For A sharded across processes, the numbers this process passed to collectives (all-reduce
        and all-gather payloads); 0 otherwise.
    method : str
        ``"iterative"``, ``"dense"`` or ``"trust-region"``: the path that ran: ``solve``'s
        ``method``, or the one ``"auto"`` chose, or ``"iterative"`` for a warm start that
        ``"trust-region"`` hands to the iteration (its triplets converged already). A dense solve has
        ``iterations`` 0, ``stop_reason`` "whole space", and counts the Gram matrix as min(m, n)
        products.

    A batch iterates in lockstep: ``converged``, ``residual`` and ``errors`` are per matrix, while
    ``iterations``, ``matvecs`` (the products with each matrix of the batch), ``history``,
    ``stop_reason`` and ``restarts`` are the batch's as a whole. A batch of mid-sized matrices on the
    CPU is iterated one matrix at a time (docs/algorithm.md, "Batches on the CPU"): then
    ``iterations``, ``matvecs`` and ``restarts`` are the most any matrix took, ``history`` is the
    looks of the matrix that took the most products, and ``stop_reason`` is the first failing
    matrix's ("converged" where all converged).

    Under ``torch.compile`` (where the solve is one custom operator), ``iterations``, ``matvecs``
    and ``restarts`` are 0-dim int64 tensors on the host, ``history`` is empty and ``stop_reason``
    and ``method`` are None.
    """

    converged: torch.Tensor
    iterations: int | torch.Tensor
    matvecs: int | torch.Tensor
    residual: torch.Tensor
    tol: float
    history: list = field(default_factory=list, repr=False)
    errors: torch.Tensor | None = None
    communicated: int = 0
    stop_reason: str | None = "converged"
    restarts: int | torch.Tensor = 0
    method: str | None = "iterative"


class SVDResult(namedtuple("SVDResult", ["U", "S", "V"])):
    """What :func:`riemsvd.solve` returns: unpacks as ``(U, S, V)`` like ``torch.svd_lowrank``.

    Attributes
    ----------
    U : torch.Tensor
        Shape ``(..., m, k)``: the left singular vectors, orthonormal columns, in A's dtype.
    S : torch.Tensor
        Shape ``(..., k)``: the singular values, descending.
    V : torch.Tensor
        Shape ``(..., n, k)``: the right singular vectors.
    info : SolveInfo or None
        How the solve went (converged, residual, error bars, products, ...: :class:`SolveInfo`);
        None only for an ``SVDResult`` made by hand (``solve`` always attaches one).
    """

    info: SolveInfo | None

    def __new__(cls, U: torch.Tensor, S: torch.Tensor, V: torch.Tensor, info: SolveInfo | None = None):
        self = super().__new__(cls, U, S, V)
        self.info = info
        return self

    def __getnewargs__(self):
        return tuple(self) + (self.info,)

    def _replace(self, **changes) -> SVDResult:
        """A copy with some of U, S, V replaced; ``info`` kept (namedtuple's own dropped it: a new
        user's trial)."""
        replaced = super()._replace(**changes)  # namedtuple's checks; its _make bypasses __new__
        replaced.info = self.info
        return replaced
