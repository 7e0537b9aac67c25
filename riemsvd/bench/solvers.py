"""The solvers of the benchmark's table (``SOLVERS``): each a runner and the ladder of settings it is tried
at, loosest first, to find the loosest that reaches the residual riemsvd is asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from riemsvd.bench.matrices import Problem
from riemsvd.bench.runners import (
    Outcome,
    run_full_svd,
    run_lowrank,
    run_power,
    run_primme,
    run_riemsvd,
    run_torch_lobpcg,
    svds_runner,
)

__all__ = [
    "SOLVERS",
    "SOLVER_ALIASES",
    "Solver",
    "at_target",
    "lowrank_niters",
    "needs_module",
    "no_setting",
    "resolve_solvers",
    "svds_tol_ladder",
    "tol_ladder",
]

LOWRANK_NITERS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # svd_lowrank's niter, tried smallest first


def _decades(x: float, hi: int, lo: int) -> list[float]:
    return [float(f"{x * 10.0**j:.3g}") for j in range(hi, lo - 1, -1)]


def tol_ladder(target: float) -> list[float]:
    """target·10ʲ, j = 4, 3, …, −4, loosest first: for a solver whose ``tol`` bounds a residual like
    ours directly (PRIMME's is ‖(Av − σu, Aᵀu − σv)‖ ≤ tol·‖A‖; torch.lobpcg's is relative too)."""
    return [t for t in _decades(target, 4, -4) if t < 1]


def svds_tol_ladder(target: float) -> list[float]:
    """√target·10ʲ (j = 2, …, −2) and target·10ʲ (j = 4, …, −4), merged, loosest first.

    scipy's svds solves the eigenproblem of AᵀA and hands ``tol²`` to ARPACK, PROPACK and LOBPCG, so
    its residual is near target already at tol ≈ √target (1e-5 for 1e-10); the second range covers the
    solvers' own criteria being off from ours by orders of magnitude either way.
    """
    both = set(_decades(math.sqrt(target), 2, -2)) | set(_decades(target, 4, -4))
    return sorted((t for t in both if t < 1), reverse=True)


def at_target(target: float) -> list[float]:
    """The one setting tol = target: for riemsvd, and for the power iteration, which stops on our own
    residual (so that is already its loosest setting)."""
    return [target]


def no_setting(target: float) -> list[None]:
    return [None]


def lowrank_niters(target: float) -> list[int]:
    """svd_lowrank's niter, smallest (loosest) first."""
    return list(LOWRANK_NITERS)


def needs_module(module: str) -> Callable[[], str | None]:
    """A ``Solver.unavailable`` that says "skipped: ``module`` not installed" where it does not import."""

    def unavailable() -> str | None:
        try:
            __import__(module)
        except ImportError:
            return f"skipped: {module} not installed"
        return None

    return unavailable


@dataclass(frozen=True)
class Solver:
    """One column of the benchmark: how to run it and at which settings.

    ``run(p, k, value, seed)`` does one solve with the setting ``value`` and returns (its own seconds,
    its ``Outcome``). ``settings(target)`` lists the values to try, loosest first; the run uses the first
    whose result reaches the target (a single value: run as it is). ``key`` names the setting in the
    records (``"tol=1e-05"``, ``"niter=4"``; None: no setting). ``unavailable()`` says why the solver
    cannot run here (an optional package missing), or None.
    """

    run: Callable[[Problem, int, Any, int], tuple[float, Outcome]]
    settings: Callable[[float], list]
    key: str | None = "tol"
    on_host: bool = False  # scipy and PRIMME take numpy input: they run on the CPU whatever --device
    unavailable: Callable[[], str | None] = lambda: None

    def label(self, value) -> str:
        if self.key is None:
            return "-"
        return f"{self.key}={value:.3g}" if isinstance(value, float) else f"{self.key}={value}"


SOLVERS: dict[str, Solver] = {
    "riemsvd": Solver(run_riemsvd, at_target),
    "svd": Solver(run_full_svd, no_setting, key=None),
    "lowrank": Solver(run_lowrank, lowrank_niters, key="niter"),
    "torch-lobpcg": Solver(run_torch_lobpcg, tol_ladder),
    "arpack": Solver(svds_runner("arpack"), svds_tol_ladder, on_host=True),
    "propack": Solver(svds_runner("propack"), svds_tol_ladder, on_host=True),
    "primme": Solver(run_primme, tol_ladder, on_host=True, unavailable=needs_module("primme")),
    "scipy-lobpcg": Solver(svds_runner("lobpcg"), svds_tol_ladder, on_host=True),
    "power": Solver(run_power, at_target),
}
# Former names: svd_lowrank at a fixed niter, now one solver at the smallest niter that reaches tol.
SOLVER_ALIASES = {"lowrank2": "lowrank", "lowrank10": "lowrank"}


def resolve_solvers(names: list[str]) -> list[str]:
    """``names`` with the former aliases mapped and duplicates dropped; ValueError for unknown ones."""
    out = list(dict.fromkeys(SOLVER_ALIASES.get(x, x) for x in names))
    unknown = [x for x in out if x not in SOLVERS]
    if unknown:
        raise ValueError(f"`solvers`: unknown {unknown}; choose from {list(SOLVERS)}")
    return out
