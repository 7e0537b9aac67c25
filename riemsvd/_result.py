"""The result of :func:`riemsvd.solve`: a named tuple (U, S, V) with an ``info`` record."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass, field

import torch

__all__ = ["ConvergenceWarning", "DegenerateSpectrumWarning", "SolveInfo", "SVDResult"]


class ConvergenceWarning(UserWarning):
    """The solver stopped before the requested residual; ``info.residual`` says what it reached."""


class DegenerateSpectrumWarning(UserWarning):
    """Singular vectors asked to be differentiated are not unique (σᵢ = σⱼ, or σ_k = σ_{k+1}).

    The derivative of S stays exact; that of U and V is not defined along the degenerate directions.
    """


@dataclass
class SolveInfo:
    """How a solve went.

    Attributes
    ----------
    converged : torch.Tensor
        bool, shape ``(...)`` (A's batch shape): the residual reached ``tol``.
    iterations : int
        Outer iterations (each corrects a block of Ritz triplets).
    matvecs : int
        Products with A plus products with Aᵀ, a block of b columns counting b.
    residual : torch.Tensor
        Shape ``(...)``: the largest over the k triplets of max(‖A vᵢ − σᵢ uᵢ‖, ‖Aᵀ uᵢ − σᵢ vᵢ‖) / σ₁,
        computed from products with A of the returned vectors (fresh products at the end when the
        solver has restarted, whose stored images could have drifted by rounding).
    tol : float
        The tolerance that was asked for.
    history : list[tuple[int, float]]
        (matvecs so far, largest residual over the batch) after each iteration, from the solver's
        estimates.
    errors : torch.Tensor
        Shape ``(..., k)``, in A's units: an error bar for each σᵢ. A has a singular value within
        ``errors[..., i]`` of ``S[..., i]``: sqrt((‖A vᵢ − σᵢuᵢ‖² + ‖Aᵀuᵢ − σᵢvᵢ‖²)/2) from the final
        products, the residual of the unit vector (uᵢ, vᵢ)/√2 for the eigenvalue σᵢ of the symmetric
        [[0, A], [Aᵀ, 0]] (whose eigenvalues are ±σⱼ); residual·σ₁ for every i where only the largest
        residual was computed (a solve that never restarted). Once the k found are the top k, each
        bar holds for σᵢ itself. Computed in floating point, so not below the rounding floor of the
        products (about ε·√n·‖A‖). See docs/bounds.md.
    communicated : int
        For A sharded across processes, the numbers this process passed to collectives (all-reduce
        and all-gather payloads); 0 otherwise.
    """

    converged: torch.Tensor
    iterations: int
    matvecs: int
    residual: torch.Tensor
    tol: float
    history: list = field(default_factory=list, repr=False)
    errors: torch.Tensor | None = None
    communicated: int = 0


class SVDResult(namedtuple("SVDResult", ["U", "S", "V"])):
    """Unpacks as ``(U, S, V)`` like ``torch.svd_lowrank``; ``.info`` is a :class:`SolveInfo`."""

    def __new__(cls, U: torch.Tensor, S: torch.Tensor, V: torch.Tensor, info: SolveInfo | None = None):
        self = super().__new__(cls, U, S, V)
        self.info = info
        return self

    def __getnewargs__(self):
        return tuple(self) + (self.info,)
