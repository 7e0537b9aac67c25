"""The experiments over a run's grid of cases (sizes × classes × k): the solver table (``run``), riemsvd's
warm start (``run_warm``) and a batch against torch.linalg.svdvals (``run_batched``).
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Iterator

import numpy as np
import torch

import riemsvd
from riemsvd.bench.accuracy import relative_residual, sigma_error
from riemsvd.bench.config import Config
from riemsvd.bench.harness import fill_ratios, repeat, run_case, thread_limits, threadpool_controller, warm_up
from riemsvd.bench.matrices import Problem, check_classes, make_problem
from riemsvd.bench.progress import progress_bar
from riemsvd.bench.records import BatchedRecord, Record, WarmRecord
from riemsvd.bench.runners import clock, subspace_iteration
from riemsvd.bench.solvers import SOLVERS, resolve_solvers

__all__ = ["grid", "perturb", "run", "run_batched", "run_warm"]


def grid(config: Config, label: str) -> Iterator[tuple[Problem, int]]:
    """(problem, k) over sizes × classes × k, one matrix per (size, class), with the progress bar
    named ``label``."""
    bar = progress_bar(len(config.sizes) * len(config.classes) * len(config.ks), label, config.progress)
    try:
        for m, n in config.sizes:
            for kind in config.classes:
                p = make_problem(kind, m, n, config.torch_dtype, config.device, config.seed)
                for k in config.ks:
                    bar.set_postfix_str(f"{m}x{n} {kind} k={k}")
                    yield p, k
                    bar.update()
    finally:
        bar.close()


def run(config: Config) -> list[Record]:
    """Every solver on every (size, class, k) of ``config`` (see run_case): one Record each, with
    ``riemsvd_over`` filled in."""
    names = resolve_solvers(config.solvers)
    check_classes(config.classes)
    threads = config.thread_count
    available = [name for name in names if SOLVERS[name].unavailable() is None]  # imports them
    threadpool_controller(refresh=True)  # after the imports: an optional peer may bring its own BLAS
    warm_up(config, available, threads)
    records = [rec for p, k in grid(config, "solvers") for rec in run_case(p, k, names, config, threads)]
    fill_ratios(records)
    return records


def _spectral_norm(matmat, rmatmat, n: int, dtype, device) -> float:
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(n, 4, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    _, s, _, _, _ = subspace_iteration(matmat, rmatmat, n, 1, 4, 1e-6, 200, x0)
    return float(s[0])


def perturb(p: Problem, rel: float, seed: int):
    """A + E with ‖E‖₂ = rel·‖A‖₂, E Gaussian (for ``sparse``: on A's sparsity pattern)."""
    gen = torch.Generator().manual_seed(seed + 7)
    s1 = float(p.s_ref[0])
    if p.is_sparse:
        e = p.host.copy()
        e.data = torch.randn(e.nnz, generator=gen, dtype=torch.float64).numpy().astype(e.dtype)
        to = lambda x: torch.from_numpy(np.asarray(x))  # noqa: E731
        norm = _spectral_norm(
            lambda x: to(e @ x.numpy()), lambda y: to(e.T @ y.numpy()), p.shape[1], torch.float64, "cpu"
        )
        return (p.host + e * (rel * s1 / norm)).tocsr()
    e = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype=p.a.dtype, device=p.device)
    norm = _spectral_norm(e.__matmul__, e.mT.__matmul__, p.shape[1], p.a.dtype, p.device)
    return p.a + e * (rel * s1 / norm)


def run_warm(config: Config) -> list[WarmRecord]:
    """riemsvd on A + E (‖E‖₂ = 1e-3‖A‖₂) from a random start and from A's (U, V): products, times.
    The iteration on both (method="iterative"): where ``auto`` took the dense path for both, the
    table compared it with itself (200×100, k = 4: "products cold 8 warm 8", in the geometric mean; a
    new user's trial)."""
    records, perturbed = [], {}
    with thread_limits(config.thread_count):
        for p, k in grid(config, "warm"):
            if id(p) not in perturbed:  # one perturbation per matrix, shared by its k
                perturbed = {id(p): perturb(p, 1e-3, config.seed)}
            records.append(_warm_one(p, perturbed[id(p)], k, config))
    return records


def _warm_one(p: Problem, a1, k: int, config: Config) -> WarmRecord:
    tol = config.tolerance
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", riemsvd.ConvergenceWarning)
        prev = riemsvd.solve(
            p.riemsvd_input(), k, tol=tol, method="iterative", generator=torch.Generator().manual_seed(0)
        )
        out = {}
        for mode, init in (("cold", None), ("warm", (prev.U, prev.V))):

            def call(init=init):
                gen = torch.Generator().manual_seed(config.seed)
                t0 = clock(p.device)
                r = riemsvd.solve(a1, k, tol=tol, init=init, method="iterative", generator=gen)
                return clock(p.device) - t0, r

            times, result = repeat(call, config.reps, config.min_rep_s)
            out[mode] = (result.info, statistics.median(times))
    (cold, t_cold), (warm, t_warm) = out["cold"], out["warm"]
    m, n = p.shape
    return WarmRecord(
        p.kind,
        m,
        n,
        k,
        dtype=config.dtype,
        tol=tol,
        products_cold=cold.matvecs,
        products_warm=warm.matvecs,
        products_ratio=warm.matvecs / cold.matvecs,
        time_cold_s=t_cold,
        time_warm_s=t_warm,
        converged_cold=bool(cold.converged.all()),
        converged_warm=bool(warm.converged.all()),
    )


def run_batched(config: Config) -> list[BatchedRecord]:
    """riemsvd.solve (k = 1) on a float32 batch against torch.linalg.svdvals on the batch."""
    shape = tuple(config.batched_shape)
    gen = torch.Generator().manual_seed(config.seed + 11)
    a = torch.randn(shape, generator=gen, dtype=torch.float32)
    a64 = a.double()
    s_ref = torch.linalg.svdvals(a64)
    a = a.to(config.device)
    dev = a.device

    def solve():
        t0 = clock(dev)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", riemsvd.ConvergenceWarning)
            r = riemsvd.solve(a, 1, generator=torch.Generator().manual_seed(config.seed))
        return clock(dev) - t0, r

    def svdvals():
        t0 = clock(dev)
        s = torch.linalg.svdvals(a)
        return clock(dev) - t0, s

    def timed(call):
        with thread_limits(config.thread_count):
            times, out = repeat(call, config.reps, config.min_rep_s)
        return statistics.median(times), len(times), out

    where = ("x".join(map(str, shape)), 1, "float32", str(dev))  # shape, k, dtype, device
    time_s, reps, r = timed(solve)
    # residual per batch element relative to its own σ₁, then the worst element
    residual = max(
        relative_residual(a64[i], r.U[i], r.S[i], r.V[i], float(s_ref[i, 0])) for i in range(shape[0])
    )
    ours = BatchedRecord(
        "riemsvd",
        *where,
        time_s,
        reps,
        products=r.info.matvecs,
        residual=residual,
        tol=r.info.tol,
        reached_tol=bool(r.info.converged.all()),
        sigma_err=sigma_error(r.S, s_ref),
    )
    time_s, reps, s = timed(svdvals)
    theirs = BatchedRecord(
        "svdvals", *where, time_s, reps, None, None, None, None, sigma_err=sigma_error(s[..., :1], s_ref)
    )
    return [ours, theirs]
