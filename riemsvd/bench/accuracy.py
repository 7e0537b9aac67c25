"""The accuracy of a result, computed here alike for every solver in float64 on the CPU: the relative
residual, the error in σ, the orthonormality error, and the status they give against the target tol.
"""

from __future__ import annotations

import math

import torch

from riemsvd.bench.matrices import Problem
from riemsvd.bench.records import Attempt
from riemsvd.bench.runners import Outcome

__all__ = ["assess", "orthonormality_error", "relative_residual", "sigma_error"]


def relative_residual(a64: torch.Tensor, u, s, v, s1: float) -> float:
    """max over i of max(‖A vᵢ − σᵢ uᵢ‖, ‖Aᵀ uᵢ − σᵢ vᵢ‖) / σ₁, in float64 on the CPU.

    ``a64`` (*, m, n); u (*, m, k), s (*, k), v (*, n, k); the maximum is also over the batch.
    """
    u, s, v = (torch.as_tensor(x).detach().to("cpu", torch.float64) for x in (u, s, v))
    sd = s.unsqueeze(-2)
    ru = torch.linalg.vector_norm(a64 @ v - u * sd, dim=-2)
    rv = torch.linalg.vector_norm(a64.mT @ u - v * sd, dim=-2)
    return _over(float(torch.maximum(ru, rv).max()), s1)


def _over(x: float, s1: float) -> float:
    """x / σ₁, with 0/0 = 0 (a zero matrix solved exactly) and x/0 = inf: the ``sparse`` class at 8×6
    is all zeros, and every solver had failed with ZeroDivisionError (a new user's trial)."""
    return x / s1 if s1 > 0 else (0.0 if x == 0 else math.inf)


def sigma_error(s, s_ref: torch.Tensor) -> float:
    """max over i of |σᵢ − σᵢ^ref| / σ₁^ref, with σ sorted descending."""
    s = torch.sort(torch.as_tensor(s).detach().to("cpu", torch.float64), dim=-1, descending=True).values
    k = s.shape[-1]
    return _over(float((s - s_ref[..., :k]).abs().max()), float(s_ref[..., :1].min()))


def orthonormality_error(u, v) -> float:
    """max |UᵀU − I|, |VᵀV − I| (entrywise): the residual means nothing for vectors off the unit sphere."""
    err = 0.0
    for x in (u, v):
        x = torch.as_tensor(x).detach().to("cpu", torch.float64)
        eye = torch.eye(x.shape[-1], dtype=torch.float64)
        err = max(err, float((x.mT @ x - eye).abs().max()))
    return err


def assess(p: Problem, out: Outcome, tol: float, eps: float, setting: str) -> Attempt:
    """The figures of the outcome ``out`` of a solve on ``p`` at ``setting``, against the target ``tol``
    in a dtype of machine epsilon ``eps``.

    The status is "ok" (the result counts), "not orthonormal", "missed tol" or "not top-k" (a residual
    ≤ tol reached at other triplets than the leading k).
    """
    residual = relative_residual(p.a64, out.U, out.S, out.V, float(p.s_ref[0]))
    sigma_err = sigma_error(out.S, p.s_ref)
    orth_err = orthonormality_error(out.U, out.V)
    reached_tol = bool(residual <= tol)
    if not (orth_err <= math.sqrt(eps)):
        status = "not orthonormal"
    elif not reached_tol:
        status = "missed tol"
    elif not (sigma_err <= 2 * tol + 100 * eps):
        status = "not top-k"
    else:
        status = "ok"
    return Attempt(setting, residual, sigma_err, orth_err, reached_tol, status)
