"""What a benchmark run does (``Config``): sizes, classes, k, solvers, dtype, tolerance, threads and outputs.

The defaults are the default run of ``riemsvd-bench``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from riemsvd.bench.matrices import CLASSES
from riemsvd.bench.solvers import SOLVERS

__all__ = ["Config", "MIN_REP_S"]

MIN_REP_S = 0.05  # one repetition: calls of a fast solve until 50 ms, and their mean


@dataclass
class Config:
    """What to run; the defaults are the default run."""

    sizes: list = field(default_factory=lambda: [(1000, 500)])
    ks: list = field(default_factory=lambda: [1, 8])
    dtype: str = "float64"
    tol: float | None = None  # None: 1e-10 in float64, 1e-5 in float32
    device: str = "cpu"
    reps: int = 3
    classes: list = field(default_factory=lambda: list(CLASSES))
    solvers: list = field(default_factory=lambda: list(SOLVERS))
    threads: int | None = None  # None: torch.get_num_threads() when the run starts
    out: str = "bench-out"
    warm: bool = False
    batched: bool = False
    batched_shape: tuple = (256, 128, 128)
    backward: bool = False  # the forward + backward benchmark instead of the solver table
    min_rep_s: float = MIN_REP_S  # 0: one call per repetition
    plots: bool = True
    progress: bool = True
    seed: int = 0

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def tolerance(self) -> float:
        if self.tol is not None:
            return float(self.tol)
        return 1e-10 if self.dtype == "float64" else 1e-5

    @property
    def thread_count(self) -> int:
        return int(self.threads) if self.threads else torch.get_num_threads()
