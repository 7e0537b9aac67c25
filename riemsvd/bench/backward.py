"""The forward + backward experiment (``--backward``): one loss through riemsvd.solve and through the thin
torch.linalg.svd on every case of the grid, their times and the agreement of their gradients.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from typing import Any, Callable

import torch

import riemsvd
from riemsvd.bench.accuracy import relative_residual, sigma_error
from riemsvd.bench.config import Config
from riemsvd.bench.experiments import grid
from riemsvd.bench.harness import settle, thread_limits
from riemsvd.bench.matrices import Problem, check_classes, make_problem
from riemsvd.bench.records import BackwardRecord
from riemsvd.bench.runners import clock

__all__ = ["BACKWARD_GRAD_TARGET", "BACKWARD_RATIO_TARGET", "backward_loss", "backward_one", "run_backward"]

BACKWARD_RATIO_TARGET, BACKWARD_GRAD_TARGET = 0.1, 1e-7


def _backward_loss_weights(m: int, n: int, k: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed + 29)
    w = torch.rand(k, generator=gen, dtype=torch.float64) + 0.5
    c = torch.randn(m, generator=gen, dtype=torch.float64)
    d = torch.randn(n, generator=gen, dtype=torch.float64)
    return w, c, d


def backward_loss(u, s, v, w, c, d) -> torch.Tensor:
    """Σᵢ wᵢ (cᵀuᵢ)(dᵀvᵢ) + Σᵢ wᵢ σᵢ: unchanged under (uᵢ, vᵢ) → (−uᵢ, −vᵢ), so its gradient is defined."""
    return (w * (c @ u) * (d @ v)).sum() + (w * s).sum()


def _fwd_bwd(solve: Callable, a: torch.Tensor, weights) -> tuple[float, float, torch.Tensor, Any]:
    """(forward seconds, backward seconds, Ā, the forward's output) for one call of ``solve``, started
    once the process is idle (:func:`riemsvd.bench.harness.settle`)."""
    x = a.detach().clone().requires_grad_(True)
    settle()
    t0 = clock(a.device)
    u, s, v, extra = solve(x)
    t1 = clock(a.device)
    backward_loss(u, s, v, *weights).backward()
    t2 = clock(a.device)
    assert x.grad is not None  # backward reached the leaf x
    return t1 - t0, t2 - t1, x.grad, (u.detach(), s.detach(), v.detach(), extra)


def backward_one(p: Problem, k: int, config: Config) -> BackwardRecord:
    """riemsvd.solve(A, k) and the thin torch.linalg.svd, each forward + backward of the same loss."""
    m, n = p.shape
    weights = tuple(
        t.to(dtype=p.a.dtype, device=p.device) for t in _backward_loss_weights(m, n, k, config.seed)
    )
    tol = config.tol  # None: riemsvd's own default (1e-12 in float64)

    def ours(x):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", riemsvd.ConvergenceWarning)
            r = riemsvd.solve(x, k, tol=tol, generator=torch.Generator().manual_seed(config.seed))
        return r.U, r.S, r.V, r.info

    def full(x):
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        return u[:, :k], s[:k], vh[:k].mT, None

    times: dict[str, list[tuple[float, float]]] = {"riemsvd": [], "torch": []}
    grads, outs = {}, {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", riemsvd.DegenerateSpectrumWarning)
        for _ in range(config.reps):
            for name, fn in (("riemsvd", ours), ("torch", full)):
                tf, tb, grads[name], outs[name] = _fwd_bwd(fn, p.a, weights)
                times[name].append((tf, tb))
    med = {
        name: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts))
        for name, ts in times.items()
    }
    g_ours, g_ref = (grads[x].detach().to("cpu", torch.float64) for x in ("riemsvd", "torch"))
    # torch's own gradient is undefined (NaN) where values repeat or vanish (the `sparse` class at
    # 200×100 has 19 zero σ): no reference, which had counted as riemsvd missing the target (a new
    # user's trial)
    referenced = bool(torch.isfinite(g_ref).all())
    err = float(torch.linalg.norm(g_ours - g_ref) / torch.linalg.norm(g_ref)) if referenced else math.nan
    u, s, v, info = outs["riemsvd"]
    s_ref = p.s_ref
    gap = float((s_ref[k - 1] - s_ref[k]) / s_ref[k - 1]) if k < len(s_ref) else None
    ratio = sum(med["riemsvd"]) / sum(med["torch"])
    degenerate = any(issubclass(w.category, riemsvd.DegenerateSpectrumWarning) for w in caught)
    ok_ratio, ok_grad = ratio <= BACKWARD_RATIO_TARGET, err <= BACKWARD_GRAD_TARGET
    return BackwardRecord(
        p.kind,
        m,
        n,
        k,
        dtype=config.dtype,
        device=str(p.device),
        tol=info.tol,
        reps=config.reps,
        riemsvd_fwd_s=med["riemsvd"][0],
        riemsvd_bwd_s=med["riemsvd"][1],
        torch_fwd_s=med["torch"][0],
        torch_bwd_s=med["torch"][1],
        ratio=ratio,
        grad_rel_err=err,
        residual=relative_residual(p.a64, u, s, v, float(s_ref[0])),
        sigma_err=sigma_error(s, s_ref),
        products=info.matvecs,
        gap_rel=gap,
        meets_ratio=ok_ratio,
        meets_grad=ok_grad,
        status=_status(referenced, ok_ratio and ok_grad) + (" (degenerate)" if degenerate else ""),
        riemsvd_reps=[list(t) for t in times["riemsvd"]],
        torch_reps=[list(t) for t in times["torch"]],
    )


def _status(referenced: bool, ok: bool) -> str:
    return "no reference (torch's NaN)" if not referenced else "ok" if ok else "missed target"


def run_backward(config: Config) -> list[BackwardRecord]:
    """Forward + backward of riemsvd.solve against torch.linalg.svd on every (size, class, k).

    Dense input only: ``sparse`` is run on its dense copy (riemsvd's backward is for dense tensors).
    """
    check_classes(config.classes)
    warm = make_problem("gaussian", 60, 40, config.torch_dtype, config.device, config.seed)
    with thread_limits(config.thread_count):
        backward_one(warm, 1, dataclasses.replace(config, reps=1))  # imports, thread pools, untimed
        return [backward_one(p, k, config) for p, k in grid(config, "backward")]
