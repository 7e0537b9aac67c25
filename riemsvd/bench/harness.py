"""How the solvers are measured: the same thread limits for all, each peer's loosest setting that reaches
the target, repetitions interleaved across solvers, and riemsvd's time ratio over the cases both solved.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import warnings
from typing import Any, Callable, TypeVar

import torch

from riemsvd.bench.accuracy import assess
from riemsvd.bench.config import MIN_REP_S, Config
from riemsvd.bench.matrices import Problem, make_problem
from riemsvd.bench.records import Attempt, Record
from riemsvd.bench.runners import Outcome
from riemsvd.bench.solvers import SOLVERS

__all__ = [
    "failure_status",
    "fill_ratios",
    "one_repetition",
    "repeat",
    "run_case",
    "settle",
    "thread_limits",
    "tune",
]

SLOW_S = 10.0  # a solve slower than this is not repeated
MAX_CALLS = 50  # at most this many calls of a fast solve in one repetition

# Before a repetition, the wait (at most SETTLE_MAX_S) for this process's other threads to go idle
# (settle): a sleep of _SETTLE_WINDOW_S in which the process spent less than _SETTLE_BUSY of it on
# the CPU. The window spans a few scheduler ticks, at which the kernel counts the CPU time of threads
# on other cores: over 2 ms a spinning BLAS worker read as 0.02 or 1.9 cores, over 10 ms 0.8–1.2.
# numpy's and scipy's OpenBLAS workers spin for 0.1–0.2 s after their call, and torch's
# products, on OpenMP threads that meet at a barrier, wait for a core they hold: a 1536×384 float64
# solve (k = 1) took 100 ms right after an ARPACK solve and 18 ms alone, a 2000×1000 one 124 and 66
# (one process, 2 threads, 2 cores), and a repetition right after a peer timed that.
SETTLE_MAX_S = 0.5
_SETTLE_WINDOW_S = 0.01
_SETTLE_BUSY = 0.25
_SETTLE_WARNED = False

T = TypeVar("T")

_CONTROLLER = None


def threadpool_controller(refresh: bool = False):
    """threadpoolctl's controller of the loaded BLAS libraries, built once (``refresh``: again, after
    an optional peer loaded its own)."""
    global _CONTROLLER
    if _CONTROLLER is None or refresh:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def threads_text(threads: int) -> str:
    """ "1 thread", "2 threads": the benchmarks' headers said "1 threads" (a new user's trial)."""
    return f"{threads} thread{'' if threads == 1 else 's'}"


@contextlib.contextmanager
def thread_limits(threads: int):
    """torch's intra-op threads and numpy's (and scipy's) BLAS threads both set to ``threads``.

    Every solver's calls run inside this, so none gets more cores than another. A solver may use fewer
    inside (riemsvd runs torch on one thread during a solve, and its BLAS too for small A).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_controller().limit(limits=threads, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def settle(max_s: float = SETTLE_MAX_S) -> float:
    """Wait until no other thread of this process is busy (a thread pool's workers spinning after the
    previous solver's call), at most ``max_s`` seconds; returns the seconds waited. Each solver is then
    timed as a loop of its own calls finds the machine, whichever solver ran before it. A thread busy
    for all of ``max_s`` (one of the caller's own) is warned of, once: the times are taken beside it."""
    global _SETTLE_WARNED
    start = time.perf_counter()
    while True:
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(_SETTLE_WINDOW_S)
        now = time.perf_counter()
        if time.process_time() - cpu < _SETTLE_BUSY * (now - wall):
            return now - start
        if now - start >= max_s:
            if not _SETTLE_WARNED:
                _SETTLE_WARNED = True
                warnings.warn(
                    f"riemsvd-bench: another thread of this process stayed busy for {max_s:g} s before a "
                    "repetition; the solvers are timed beside it.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return now - start


def one_repetition(call: Callable[[], tuple[float, T]], min_s: float = MIN_REP_S) -> tuple[float, T, float]:
    """One repetition of ``call``, which returns (its own seconds, its output): (seconds, the last output,
    total seconds). It starts once the process is idle (:func:`settle`). A fast call is repeated until
    ``min_s`` have passed (at most MAX_CALLS calls) and its mean taken, so that millisecond solves are not
    timed by one scheduler tick."""
    settle()
    seconds, out = call()
    total, calls = seconds, 1
    while total < min_s and calls < MAX_CALLS:
        seconds, out = call()
        total, calls = total + seconds, calls + 1
    return total / calls, out, total


def repeat(call: Callable[[], tuple[float, T]], reps: int, min_s: float = MIN_REP_S) -> tuple[list[float], T]:
    """``reps`` (≥ 1) repetitions of ``call`` in a row; (times, last output). A call slower than SLOW_S
    is not repeated. (The solver table interleaves its solvers instead: see run_case.)"""
    times: list[float] = []
    for _ in range(max(reps, 1)):
        t, out, total = one_repetition(call, min_s)
        times.append(t)
        if total > SLOW_S:
            break
    return times, out


def tune(settings: list, attempt: Callable[[Any], Attempt]) -> tuple[int | None, list[Attempt]]:
    """Try ``settings`` loosest first until ``attempt(value)`` has status "ok".

    Returns (the index of that setting, or None when none passed; the attempts).
    """
    log = []
    for i, value in enumerate(settings):
        log.append(attempt(value))
        if log[-1].status == "ok":
            return i, log
    return None, log


def failure_status(err: Exception) -> str:
    """The status of a solve that raised ``err``: "failed: <type>: <first line>"."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"failed: {type(err).__name__}: {msg}"[:120]


def _riemsvd_basis_bytes(m: int, n: int, k: int, itemsize: int) -> int:
    # An estimate from the solver's defaults on the CPU (block b = k): bases U, AV (m×p) and V, AᵀU
    # (n×p), p the basis cap.
    from riemsvd._subspace import default_basis

    p = max(default_basis(k), 4 * k)
    return 2 * (m + n) * p * itemsize


def run_case(
    p: Problem, k: int, names: list[str], config: Config, threads: int | None = None
) -> list[Record]:
    """The solvers ``names`` on one matrix and k: one Record each, in the order of ``names``.

    1. Settings: each solver runs, untimed, at its settings loosest first (``Solver.settings``) until
       one reaches the target tol with the right triplets (status "ok"); that one is timed. Where none
       does, the tightest that ran is timed and the record says "missed tol" (or why else it does not
       count). Every solver has thus run at least once on this matrix before it is timed.
    2. Times: repetition r of every solver at every thread count of :func:`thread_counts`, then
       repetition r + 1 of each, … (every solver at one count, then at the next; the order rotated
       by one each round), so that a noisy stretch on a shared machine hits all alike. Each
       solver's record takes the count with the least median among those whose result counts
       (status "ok"; any where none does), the same rule for riemsvd and its peers (``threads``;
       ``time_by_threads`` holds every count's median). A solver timed on the GPU runs at the budget
       alone. Tuning runs under ``thread_limits(threads)``, each timed call under its count's; a
       solver that raises at one count keeps the other's times.
    """
    threads = threads or config.thread_count
    target, eps = config.tolerance, torch.finfo(config.torch_dtype).eps
    m, n = p.shape
    recs = {
        name: Record(
            p.kind,
            m,
            n,
            k,
            solver=name,
            setting=None,
            dtype=config.dtype,
            device=str(p.device),
            threads=threads,
            tol=target,
        )
        for name in names
    }
    chosen: dict[str, Any] = {}
    for name in names:
        solver, rec = SOLVERS[name], recs[name]
        reason = solver.unavailable()
        if reason:
            rec.status = reason
            continue

        def attempt(value, solver=solver) -> Attempt:
            try:
                with thread_limits(threads):
                    _, out = solver.run(p, k, value, config.seed)
                return assess(p, out, target, eps, solver.label(value))
            except Exception as err:  # e.g. PROPACK's LinAlgError at a loose tol: the next one may work
                return Attempt(solver.label(value), status=failure_status(err))

        settings = solver.settings(target)
        i, log = tune(settings, attempt)
        rec.tuning, rec.settings_tried = log, len(log)
        if i is None:  # none reached it: time the tightest that ran, to show how close it got
            ran = [j for j, a in enumerate(log) if not a.status.startswith("failed")]
            if not ran:
                rec.status = log[-1].status
                continue
            i = ran[-1]
        chosen[name] = settings[i]
        rec.setting = solver.label(settings[i])

    def on_cuda(name: str) -> bool:  # timed on the GPU: its host threads hardly matter
        return p.device.type == "cuda" and not (SOLVERS[name].on_host or (name == "riemsvd" and p.is_sparse))

    # by count first, so that a solver's two counts are not timed back to back, its data warm
    runs = [
        (name, count)
        for count in thread_counts(threads)
        for name in chosen
        if count == threads or not on_cuda(name)
    ]
    failed: dict[tuple[str, int], str] = {}
    slow: set[tuple[str, int]] = set()
    times: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
    outs: dict[tuple[str, int], Outcome] = {}
    for rep in range(config.reps):
        shift = rep % len(runs) if runs else 0
        for name, count in runs[shift:] + runs[:shift]:
            if (name, count) in failed or (name, count) in slow:
                continue
            solver, rec, cuda = SOLVERS[name], recs[name], on_cuda(name)
            try:
                if cuda:
                    torch.cuda.synchronize(p.device)
                    torch.cuda.reset_peak_memory_stats(p.device)
                    base = torch.cuda.memory_allocated(p.device)
                with thread_limits(count):
                    t, outs[name, count], total = one_repetition(
                        # mypy cannot infer a lambda with default arguments as a Callable[[], ...]
                        lambda solver=solver, name=name: solver.run(p, k, chosen[name], config.seed),  # type: ignore[misc]
                        config.min_rep_s,
                    )
                if cuda:
                    peak = torch.cuda.max_memory_allocated(p.device) - base
                    rec.mem_bytes, rec.mem_note = max(rec.mem_bytes or 0, peak), "peak"
            except Exception as err:  # a peer that raises is reported, not dropped
                failed[name, count] = failure_status(err)
                continue
            times[name, count].append(t)
            if total > SLOW_S:
                slow.add((name, count))

    for name in chosen:
        rec, label = recs[name], SOLVERS[name].label(chosen[name])
        counts = [c for n, c in runs if n == name and times[n, c] and (n, c) not in failed]
        medians = {c: statistics.median(times[name, c]) for c in counts}
        if not medians:  # raised at every count (or was never timed: reps=0)
            why = next((why for (n, _), why in failed.items() if n == name), None)
            if why:
                rec.status, rec.reached_tol = why, False
            continue
        # the faster count among those whose result counts: tuned at the budget, a peer's setting
        # can fall just short of tol on one thread, whose sums run in another order (ARPACK,
        # cond1e12 4000×2000 float32, k = 8: 1.13e-6 for tol 1e-6 on one thread, ok on two; a review)
        figures = {c: assess(p, outs[name, c], target, eps, label) for c in medians}
        counting = [c for c in medians if figures[c].status == "ok"] or list(medians)
        count = min(counting, key=medians.__getitem__)
        out = outs[name, count]
        rec.threads, rec.time_by_threads = count, medians
        rec.time_reps = times[name, count]
        rec.reps = len(rec.time_reps)
        rec.time_s = medians[count]
        rec.time_min_s = min(rec.time_reps)
        rec.products, rec.iterations, rec.history = out.products, out.iterations, out.history
        rec.take_figures(figures[count])
        # riemsvd's products are None where method="auto" took the dense path: no search bases then
        if name == "riemsvd" and rec.mem_note != "peak" and out.products is not None:
            rec.mem_bytes = _riemsvd_basis_bytes(m, n, k, torch.finfo(config.torch_dtype).bits // 8)
            rec.mem_note = "estimate"
    return [recs[name] for name in names]


def thread_counts(threads: int) -> list[int]:
    """The thread counts each solver is timed at, within a budget of ``threads``: one, and the whole
    budget. Each solver is reported at its faster count: on the 2-core AMD EPYC, ARPACK took 23 ms on
    one thread and 39 on two (`decay` 2000×1000, k = 8; `weight`: 45 against 126), where PROPACK and
    riemsvd took half the time on two; timed at the budget alone, the peers that lose threads to
    their pools' spinning had looked slower than they are (a new user's trial)."""
    return sorted({1, threads})


def warm_up(config: Config, names: list[str], threads: int) -> None:
    """One untimed solve of every solver on a small matrix: imports, thread pools, lazy kernels."""
    p = make_problem("gaussian", 60, 40, config.torch_dtype, config.device, config.seed)
    with thread_limits(threads):
        for name in names:
            try:
                solver = SOLVERS[name]
                solver.run(p, 1, solver.settings(config.tolerance)[0], config.seed)
            except Exception:
                pass


def fill_ratios(records: list[Record]) -> None:
    """Set ``riemsvd_over`` of every other solver's record: time(riemsvd) / time(it) on the same case
    (above 1: riemsvd slower), where both solved it; None otherwise."""
    ours = {r.case: r for r in records if r.solver == "riemsvd"}
    for r in records:
        o = ours.get(r.case)
        r.riemsvd_over = None
        if r.solver != "riemsvd" and o is not None and o.solved and r.solved:
            assert o.time_s and r.time_s  # solved: timed
            r.riemsvd_over = o.time_s / r.time_s
