"""The typed records of the benchmarks: one solver on one matrix (``Record``) with its tuning attempts
(``Attempt``), and the rows of the warm-start, batched and forward + backward experiments.

Their fields, in order, are the columns of the CSV files (docs/benchmarks.md, The columns), less those
marked ``JSON_ONLY``; results.json holds them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = [
    "Attempt",
    "BackwardRecord",
    "BatchedRecord",
    "CaseRecord",
    "JSON_ONLY",
    "Record",
    "WarmRecord",
    "csv_columns",
]

JSON_ONLY = {"json_only": True}  # field metadata: lists, written to results.json but not to a CSV


def csv_columns(record_type: type) -> list[str]:
    """The CSV columns of a record type: its fields in order, less the JSON-only ones."""
    return [f.name for f in fields(record_type) if not f.metadata.get("json_only")]


@dataclass
class Attempt:
    """One untimed solve at one setting while a peer's setting is chosen: the figures of its result
    against the target tol, or (``status`` "failed: …") why it raised."""

    setting: str
    residual: float | None = None
    sigma_err: float | None = None
    orth_err: float | None = None
    reached_tol: bool = False
    status: str = ""


@dataclass
class CaseRecord:
    """What every record of one case starts with: the matrix class, its size and k."""

    cls: str
    m: int
    n: int
    k: int

    @property
    def case(self) -> tuple[int, int, int, str]:
        """(m, n, k, class): the records of one case are compared with each other."""
        return (self.m, self.n, self.k, self.cls)


@dataclass
class Record(CaseRecord):
    """One solver on one matrix and k: a line of the table and a row of results.csv."""

    solver: str
    setting: str | None
    dtype: str
    device: str
    threads: int
    tol: float
    status: str = ""
    reached_tol: bool = False
    time_s: float | None = None  # the median over the repetitions
    time_min_s: float | None = None
    time_reps: list[float] = field(default_factory=list, metadata=JSON_ONLY)
    reps: int = 0
    riemsvd_over: float | None = None  # riemsvd's time / this solver's, where both solved the case
    products: int | None = None
    residual: float | None = None
    sigma_err: float | None = None
    orth_err: float | None = None
    mem_bytes: int | None = None
    mem_note: str = "n/a"  # "peak" (measured on CUDA), "estimate" (riemsvd's bases on the CPU) or "n/a"
    iterations: int | None = None
    settings_tried: int = 0
    tuning: list[Attempt] = field(default_factory=list, metadata=JSON_ONLY)
    history: list[list[float]] = field(default_factory=list, metadata=JSON_ONLY)  # [products, residual]
    # the median time at each thread count tried (harness.thread_counts); ``threads`` is the fastest
    time_by_threads: dict[int, float] = field(default_factory=dict, metadata=JSON_ONLY)

    @property
    def solved(self) -> bool:
        """Whether the record counts: status "ok" (reached tol, top k, orthonormal) and timed."""
        return self.status == "ok" and bool(self.time_s)

    def take_figures(self, attempt: Attempt) -> None:
        """The residual, σ error, orthonormality error and status of ``attempt``, the timed solve's."""
        self.residual, self.sigma_err, self.orth_err = attempt.residual, attempt.sigma_err, attempt.orth_err
        self.reached_tol, self.status = attempt.reached_tol, attempt.status


@dataclass
class WarmRecord(CaseRecord):
    """riemsvd on a perturbed matrix from a random start (cold) and from the unperturbed one's (U, V)."""

    dtype: str
    tol: float
    products_cold: int
    products_warm: int
    products_ratio: float
    time_cold_s: float
    time_warm_s: float
    converged_cold: bool
    converged_warm: bool


@dataclass
class BatchedRecord:
    """riemsvd (k = 1) or torch.linalg.svdvals on a batch; products, residual, tol and reached_tol are
    riemsvd's only (None for svdvals)."""

    solver: str
    shape: str
    k: int
    dtype: str
    device: str
    time_s: float
    reps: int
    products: int | None
    residual: float | None
    tol: float | None
    reached_tol: bool | None
    sigma_err: float


@dataclass
class BackwardRecord(CaseRecord):
    """Forward + backward of one loss through riemsvd.solve and through torch.linalg.svd on one case."""

    dtype: str
    device: str
    tol: float
    reps: int
    riemsvd_fwd_s: float
    riemsvd_bwd_s: float
    torch_fwd_s: float
    torch_bwd_s: float
    ratio: float  # (riemsvd fwd + bwd) / (torch fwd + bwd)
    grad_rel_err: float
    residual: float
    sigma_err: float
    products: int
    gap_rel: float | None
    meets_ratio: bool
    meets_grad: bool
    status: str
    riemsvd_reps: list[list[float]] = field(metadata=JSON_ONLY)  # [fwd, bwd] seconds per repetition
    torch_reps: list[list[float]] = field(metadata=JSON_ONLY)
