"""The benchmark of ``riemsvd.solve`` against its peers (``riemsvd-bench``, ``python -m riemsvd.bench``),
and the test matrices it shares with the other benchmarks and the test suite.

Its modules, measuring apart from reporting: ``matrices`` (the matrix classes, ``Problem``), ``runners``
(one solve of each solver), ``solvers`` (``SOLVERS``: each runner with its ladder of settings),
``accuracy`` (residual, σ error, status), ``harness`` (thread limits, the choice of each peer's setting,
interleaved timing: ``run_case``), ``experiments`` (the solver table, warm start, batched), ``backward``
(forward + backward), ``records`` (the typed records), ``summary``, ``tables``, ``output`` (CSV, JSON),
``plots``, ``progress`` and ``cli`` (``main``). See docs/benchmarks.md.
"""

from riemsvd.bench.accuracy import relative_residual, sigma_error
from riemsvd.bench.backward import run_backward
from riemsvd.bench.cli import HelpFormatter, main, parse_args, positive_int, shape_arg
from riemsvd.bench.config import Config
from riemsvd.bench.experiments import run, run_batched, run_warm
from riemsvd.bench.harness import fill_ratios, run_case, thread_limits, threads_text
from riemsvd.bench.matrices import CLASSES, Problem, make_matrix, make_problem
from riemsvd.bench.output import write_outputs
from riemsvd.bench.plots import plot
from riemsvd.bench.records import Attempt, BackwardRecord, BatchedRecord, Record, WarmRecord
from riemsvd.bench.runners import Outcome
from riemsvd.bench.solvers import SOLVERS, Solver, at_target, lowrank_niters, svds_tol_ladder, tol_ladder
from riemsvd.bench.summary import summarize, summarize_backward
from riemsvd.bench.tables import format_backward, format_batched, format_summary, format_table, format_warm

__all__ = [
    "CLASSES",
    "SOLVERS",
    "Attempt",
    "BackwardRecord",
    "BatchedRecord",
    "Config",
    "HelpFormatter",
    "Outcome",
    "Problem",
    "Record",
    "Solver",
    "WarmRecord",
    "at_target",
    "fill_ratios",
    "format_backward",
    "format_batched",
    "format_summary",
    "format_table",
    "format_warm",
    "lowrank_niters",
    "main",
    "make_matrix",
    "make_problem",
    "parse_args",
    "plot",
    "positive_int",
    "relative_residual",
    "run",
    "run_backward",
    "run_batched",
    "run_case",
    "run_warm",
    "shape_arg",
    "sigma_error",
    "summarize",
    "summarize_backward",
    "svds_tol_ladder",
    "thread_limits",
    "threads_text",
    "tol_ladder",
    "write_outputs",
]
