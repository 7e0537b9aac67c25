"""Adversarial matrices for the reliability checks, and the one check that catches a silent wrong answer.

Used by tests/test_reliability.py (a small hypothesis profile in CI) and by tests/fuzz_solve.py (a long
run: ``python tests/fuzz_solve.py --cases 3000``).
"""

from __future__ import annotations

import functools
import warnings

import torch

import riemsvd
from tests.matrices import make_matrix, orthonormal

# The iterative solver on purpose: on matrices this small, method="auto" would take the dense path
# (tests/test_dense.py tests that one and the choice).
solve = functools.partial(riemsvd.solve, method="iterative")

KINDS = ("gaussian", "lowrank", "decay", "cluster", "cond12", "repeated_top", "rank_deficient", "zero")


def adversarial_matrix(kind: str, m: int, n: int, gen: torch.Generator, dtype, scale: float) -> torch.Tensor:
    """An m×n matrix of ``kind`` times ``scale``: the spectrum classes plus repeated σ₁ = σ₂ = σ₃,
    exact rank deficiency (rank ⌈r/3⌉ and then half the columns set to zero) and the zero matrix."""
    r = min(m, n)
    if kind == "zero":
        return torch.zeros(m, n, dtype=dtype)
    if kind in ("repeated_top", "rank_deficient"):
        if kind == "repeated_top":
            s = torch.cat([torch.ones(min(r, 3)), torch.linspace(0.5, 0.01, max(r - 3, 0))])
        else:
            rank = max(1, (r + 2) // 3)
            s = torch.cat([torch.linspace(1.0, 0.1, rank), torch.zeros(r - rank)])
        a = (orthonormal(m, r, gen) * s.double()) @ orthonormal(n, r, gen).mT
        if kind == "rank_deficient" and n > 1:
            a[:, : n // 2] = 0.0  # zero columns too, as in a gradient matrix
        return (a * scale).to(dtype)
    return make_matrix(kind, m, n, gen, torch.float64, scale).to(dtype)


def solve_and_check(a: torch.Tensor, k: int, gen: torch.Generator, tol: float | None = None) -> str:
    """Solve (at ``tol``, the default where None) and judge: 'ok' (matches torch.linalg.svd to what
    the residual promises), 'flagged' (converged False with a ConvergenceWarning), or raise
    AssertionError for anything else: a silent wrong answer, a missing warning, or a modified input."""
    before = a.detach().clone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = solve(a, k, tol=tol, generator=gen)
    assert torch.equal(a.detach(), before), "the input was modified"
    warned = any(issubclass(w.category, riemsvd.ConvergenceWarning) for w in caught)
    converged = result.info.converged
    if not bool(converged.all()):
        assert warned, "not converged but no ConvergenceWarning"
    ref = torch.linalg.svdvals(before.double())
    s1 = ref[..., :1]
    eps = torch.finfo(a.dtype).eps
    bound = 2 * torch.clamp(result.info.residual.double(), min=result.info.tol).unsqueeze(-1) * s1
    bound = bound + 50 * eps * s1 + torch.finfo(torch.float64).tiny
    good = ((result.S.double() - ref[..., :k]).abs() <= bound).all(-1)
    bad = converged & ~good
    assert not bool(bad.any()), f"silent wrong answer: S={result.S}, reference={ref[..., :k]}"
    for x in (result.U, result.V):
        assert bool(torch.isfinite(x).all()), "non-finite vectors"
    return "ok" if bool(converged.all()) else "flagged"
