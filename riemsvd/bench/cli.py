"""Benchmarks of ``riemsvd.solve`` against its peers: ``python -m riemsvd.bench`` or ``riemsvd-bench``.

Every solver runs on the same matrices in one process, under the same thread limits; a table, a CSV, a
JSON and plots report time, products with A and Aᵀ, the residual reached (computed here, alike for all)
and the error in σ. Each peer that takes a tolerance (or, for ``torch.svd_lowrank``, a number of power
iterations) runs at the loosest setting whose result reaches the residual riemsvd is asked for, found by
untimed trial runs; its repetitions are interleaved with the other solvers'; and riemsvd's time ratio
to a peer is taken only over the cases both solved. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from riemsvd._tolerance import product_floor
from riemsvd.bench.backward import run_backward
from riemsvd.bench.config import Config
from riemsvd.bench.experiments import run, run_batched, run_warm
from riemsvd.bench.matrices import CLASSES, check_classes
from riemsvd.bench.output import write_outputs
from riemsvd.bench.plots import plot
from riemsvd.bench.records import BatchedRecord, WarmRecord
from riemsvd.bench.solvers import SOLVERS, resolve_solvers
from riemsvd.bench.summary import summarize
from riemsvd.bench.tables import format_backward, format_batched, format_summary, format_table, format_warm

__all__ = ["HelpFormatter", "main", "parse_args", "positive_int", "shape_arg"]


def _list(values: list[str]) -> list[str]:
    return [x for v in values for x in v.split(",") if x]


def shape_arg(text: str) -> tuple[int, int]:
    """An ``argparse`` type for an MxN (``2000x1000``, or ``2000×1000`` as the tables print it): this
    benchmark's ``--sizes`` and the other benchmarks' shapes (a bad one had ended in a traceback from
    deep inside; a new user's trial)."""
    try:
        m, n = (int(x) for x in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MxN like 2000x1000, got {text!r}") from None
    if m < 1 or n < 1:
        raise argparse.ArgumentTypeError(f"both dimensions must be at least 1, got {text!r}")
    return m, n


def positive_int(text: str) -> int:
    """An ``argparse`` type for a count of at least 1 (k, steps, repetitions, processes): 0 had ended
    in a StatisticsError or a missing results file (a new user's trial)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers like 1 8, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parsed(option: str, parse, text: str):
    """``parse(text)`` for an option read from a comma list, its error as a ValueError naming it."""
    try:
        return parse(text)
    except argparse.ArgumentTypeError as err:
        raise ValueError(f"{option}: {err}") from None


def _check_device(text: str) -> None:
    """--device's value names a device that exists here (it ended in torch's AssertionError or
    RuntimeError, a new user's trial)."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"--device: expected cpu or cuda (or cuda:N), got {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {text}: this torch has no CUDA device; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device: the benchmark runs on cpu or cuda, got {text!r}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` with each option's default, and the module docstring as written."""


def parse_args(argv: list[str] | None = None) -> Config:
    """The ``Config`` of a command line (``argv``; None: sys.argv's)."""
    d = Config()
    ap = argparse.ArgumentParser(prog="riemsvd-bench", description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["1000x500"], help="MxN sizes (commas or spaces)")
    ap.add_argument("--k", nargs="+", default=["1", "8"], help="numbers of triplets (commas or spaces)")
    ap.add_argument("--dtype", choices=["float64", "float32"], default=d.dtype, help="A's dtype")
    ap.add_argument(
        "--tol",
        type=float,
        default=None,
        help="the relative residual riemsvd is asked for and every peer must reach "
        "(%(default)s: 1e-10 in float64, 1e-5 in float32)",
    )
    ap.add_argument("--device", default=d.device, help="cpu or cuda")
    ap.add_argument("--reps", type=int, default=d.reps, help="repetitions; the median time is reported")
    ap.add_argument("--classes", nargs="+", default=list(CLASSES), help="matrix classes")
    ap.add_argument("--solvers", nargs="+", default=list(SOLVERS), help="solvers to run")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="the threads (torch's and the BLAS's) every solver may use: in the solver table each is "
        "timed on one thread and on this many, and reported at its faster count (a solver timed on the "
        f"GPU at this many alone; %(default)s: torch.get_num_threads(), "
        f"{torch.get_num_threads()} here)",
    )
    ap.add_argument("--out", default=d.out, help="directory for the CSV, the JSON and the plots")
    ap.add_argument("--warm", action="store_true", help="also the warm-start experiment")
    ap.add_argument("--batched", action="store_true", help="also float32 (256,128,128), k = 1, vs svdvals")
    ap.add_argument(
        "--backward",
        action="store_true",
        help="instead of the solver table: forward + backward of riemsvd.solve against torch.linalg.svd",
    )
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--seed", type=int, default=d.seed, help="seed of the matrices and starts")
    a = ap.parse_args(argv)
    try:  # every value's problem as a usage error naming its option, not a traceback
        sizes = [_parsed("--sizes", shape_arg, s) for s in _list(a.sizes)]
        ks = [_parsed("--k", positive_int, k) for k in _list(a.k)]
        too_large = [(k, m, n) for k in ks for m, n in sizes if k > min(m, n)]
        if too_large:
            k, m, n = too_large[0]
            given = "" if a.k != ap.get_default("k") else " (the default --k; pass --k 1 or another)"
            raise ValueError(f"--k {k} exceeds min(m, n) = {min(m, n)} of the size {m}x{n}{given}")
        for name, value in (("--reps", a.reps), ("--threads", a.threads)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if a.tol is not None and not 0 < a.tol < 1:
            raise ValueError(f"--tol must be in (0, 1), got {a.tol}")
        solvers = resolve_solvers(_list(a.solvers))
        # every solver asked for skipped: a run of "skipped" rows, exit 0 (a new user's trial)
        missing = [SOLVERS[x].unavailable() for x in solvers]
        if all(missing):
            raise ValueError(f"--solvers: nothing to run ({'; '.join(str(x) for x in missing)})")
        check_classes(_list(a.classes))
        _check_device(a.device)
        if os.path.exists(a.out) and not os.path.isdir(a.out):
            raise ValueError(f"--out {a.out!r} is a file; give a directory (made if missing)")
    except ValueError as err:
        ap.error(str(err))
    return Config(
        sizes=sizes,
        ks=ks,
        dtype=a.dtype,
        tol=a.tol,
        device=a.device,
        reps=a.reps,
        classes=_list(a.classes),
        solvers=solvers,
        threads=a.threads,
        out=a.out,
        warm=a.warm,
        batched=a.batched,
        backward=a.backward,
        plots=not a.no_plots,
        progress=not a.quiet,
        seed=a.seed,
    )


def unreachable_tol(config: Config) -> str | None:
    """Why the run's tol lies beyond what its residuals can be trusted to, or None. They are computed
    in float64 from triplets in the run's dtype: below the rounding of either a residual says little,
    and --tol 1e-20 ran, every case "missed tol", without a word why (a new user's trial)."""
    if not config.sizes:
        return None
    m, n = max(config.sizes, key=max)
    floor = max(product_floor(torch.float64, m, n), torch.finfo(config.torch_dtype).eps)
    if config.tolerance >= floor:
        return None
    return (
        f"--tol {config.tolerance:g} lies below what a residual of {config.dtype} triplets of a {m}x{n} "
        f"matrix can be trusted to ({floor:.1e}: float64 products' rounding, or the triplets' own); "
        "cases may read 'missed tol' for that alone"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark of the command line, print the table and the summary, write the files."""
    config = parse_args(argv)
    config.threads = config.thread_count  # fixed at the start, and written into results.json
    unreachable = unreachable_tol(config)
    if unreachable:
        print(f"riemsvd-bench: {unreachable}", file=sys.stderr)
    t0 = time.perf_counter()
    if config.backward:
        backward = run_backward(config)
        print(format_backward(backward))
        paths = write_outputs(config.out, config, [], {}, backward=backward)
        print(f"\nwrote {', '.join(paths)}  ({time.perf_counter() - t0:.0f} s)")
        return 0
    records = run(config)
    summary = summarize(records)
    print(format_table(records))
    print(format_summary(summary))
    warm: list[WarmRecord] | None = None
    batched: list[BatchedRecord] | None = None
    if config.warm:
        warm = run_warm(config)
        print(format_warm(warm))
    if config.batched:
        batched = run_batched(config)
        print(format_batched(batched))
    paths = write_outputs(config.out, config, records, summary, warm, batched)
    if config.plots:
        paths += plot(records, config.out)
    print(f"\nwrote {', '.join(paths)}  ({time.perf_counter() - t0:.0f} s)")
    return 0
