"""The runners: one function per solver that does one solve at one setting, timing only the solver's own
call, and returns (seconds, ``Outcome``) with the triplets and the products it counted.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse.linalg
import torch

import riemsvd
from riemsvd.bench.matrices import Problem

__all__ = [
    "CountingOperator",
    "Outcome",
    "clock",
    "run_full_svd",
    "run_lowrank",
    "run_power",
    "run_primme",
    "run_riemsvd",
    "run_torch_lobpcg",
    "subspace_iteration",
    "svds_runner",
]

OVERSAMPLING = 10  # q = k + 10 columns for svd_lowrank and the power iteration
POWER_MAXITER = 1000  # iteration cap of the block power iteration
SCIPY_LOBPCG_MAXITER = 200  # svds(solver="lobpcg") defaults to lobpcg's 20 iterations
TORCH_LOBPCG_NITER = 1000  # torch.lobpcg's own default


@dataclass
class Outcome:
    """What one solve returned: the k triplets, sorted by σ descending (U (m, k), S (k,), V (n, k)), its
    products with A and Aᵀ (None where they cannot be counted), and where the solver reports them its
    iterations and residual history ([products, residual] pairs)."""

    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor
    products: int | None = None
    iterations: int | None = None
    history: list[list[float]] = field(default_factory=list)


def clock(device: torch.device) -> float:
    """time.perf_counter, after the device's queued work has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _sorted(u, s, v):
    order = torch.argsort(s, descending=True)
    return u[:, order], s[order], v[:, order]


def run_riemsvd(p: Problem, k: int, tol: float, seed: int) -> tuple[float, Outcome]:
    """riemsvd.solve on the dense tensor (or the scipy matrix); products from ``info.matvecs``, None
    where the solve took the dense path (an SVD, or a Gram matrix counted as min(m, n) products: not
    comparable with a Krylov method's; at 200×100 the ratio to PROPACK's read 0.04; a new user's
    trial)."""
    a = p.riemsvd_input()
    gen = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", riemsvd.ConvergenceWarning)
        t0 = clock(p.device)
        r = riemsvd.solve(a, k, tol=tol, generator=gen)
        t = clock(p.device) - t0
    info = r.info
    assert info is not None  # solve always attaches one
    history = [list(h) for h in info.history]
    products = None if info.method == "dense" else int(info.matvecs)
    return t, Outcome(r.U, r.S, r.V, products, int(info.iterations), history)


def run_full_svd(p: Problem, k: int, setting: None, seed: int) -> tuple[float, Outcome]:
    """The thin torch.linalg.svd of the dense matrix (for ``sparse``: of its dense copy)."""
    t0 = clock(p.device)
    u, s, vh = torch.linalg.svd(p.a, full_matrices=False)
    t = clock(p.device) - t0
    return t, Outcome(u[:, :k], s[:k], vh[:k].mT)


def run_lowrank(p: Problem, k: int, niter: int, seed: int) -> tuple[float, Outcome]:
    """torch.svd_lowrank(A, q=k+10, niter=niter) (torch sparse COO for ``sparse``)."""
    m, n = p.shape
    q = min(k + OVERSAMPLING, m, n)
    a = p.a_sparse if p.a_sparse is not None else p.a  # is_sparse
    torch.manual_seed(seed)  # svd_lowrank draws from the global generator
    t0 = clock(p.device)
    u, s, v = torch.svd_lowrank(a, q=q, niter=niter)
    t = clock(p.device) - t0
    # torch._lowrank's algorithm: A R, niter times (Aᵀ Q, A Q), then Qᵀ A: blocks of q columns.
    return t, Outcome(u[:, :k], s[:k], v[:, :k], products=q * (2 * niter + 2))


def run_torch_lobpcg(p: Problem, k: int, tol: float, seed: int) -> tuple[float, Outcome]:
    """torch.lobpcg on the explicit Gram matrix of the smaller side, formed inside the timed call.

    torch.lobpcg takes a tensor, not a function, so AᵀA (or AAᵀ) is formed from the dense matrix (for
    ``sparse``: its dense copy); its products are not counted ("n/a").
    """
    m, n = p.shape
    a = p.a
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(min(m, n), k, generator=gen, dtype=a.dtype).to(p.device)
    steps = [0]

    def tracker(worker):
        steps[0] = worker.ivars["istep"]

    t0 = clock(p.device)
    g = a.mT @ a if m >= n else a @ a.mT
    # torch annotates ``tracker`` as None, though it calls the function it is given
    e, x = torch.lobpcg(g, k=k, X=x0, tol=tol, niter=TORCH_LOBPCG_NITER, largest=True, tracker=tracker)  # type: ignore[arg-type]
    s = e.clamp_min(0).sqrt()
    other = (a @ x if m >= n else a.mT @ x) / s.clamp_min(torch.finfo(a.dtype).tiny)
    u, v = (other, x) if m >= n else (x, other)
    t = clock(p.device) - t0
    u, s, v = _sorted(u, s, v)
    return t, Outcome(u, s, v, iterations=steps[0])


class CountingOperator(scipy.sparse.linalg.LinearOperator):
    """A numpy array or scipy sparse matrix as a LinearOperator that counts its products with A and Aᵀ."""

    def __init__(self, a) -> None:
        super().__init__(dtype=a.dtype, shape=a.shape)
        self.a, self.at, self.products = a, a.T, 0

    def _matvec(self, x):
        self.products += 1
        return self.a @ x

    def _rmatvec(self, x):
        self.products += 1
        return self.at @ x

    def _matmat(self, x):
        self.products += x.shape[1]
        return self.a @ x

    def _rmatmat(self, x):
        self.products += x.shape[1]
        return self.at @ x


def _host_triplets(u, s, vh):
    return _sorted(torch.from_numpy(u.copy()), torch.from_numpy(s.copy()), torch.from_numpy(vh.T.copy()))


def svds_runner(solver: str) -> Callable[[Problem, int, float, int], tuple[float, Outcome]]:
    """The runner of scipy.sparse.linalg.svds(solver=``solver``): "arpack", "propack" or "lobpcg"."""

    def run_svds(p: Problem, k: int, tol: float, seed: int) -> tuple[float, Outcome]:
        op = CountingOperator(p.host)
        extra = {}
        if solver == "propack":  # its maxiter is the Lanczos basis size (no restarts); 10k fails often
            extra["maxiter"] = min(p.shape)
        elif solver == "lobpcg":
            extra["maxiter"] = SCIPY_LOBPCG_MAXITER
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lobpcg warns when it stops short; the record says so
            t0 = time.perf_counter()
            u, s, vh = scipy.sparse.linalg.svds(op, k=k, tol=tol, solver=solver, random_state=seed, **extra)
            t = time.perf_counter() - t0
        u, s, v = _host_triplets(u, s, vh)
        return t, Outcome(u, s, v, products=op.products)

    run_svds.__doc__ = f'scipy.sparse.linalg.svds(solver="{solver}") on a counting LinearOperator.'
    return run_svds


def run_primme(p: Problem, k: int, tol: float, seed: int) -> tuple[float, Outcome]:
    """primme.svds(op, k, tol=tol, which="LM") on a counting LinearOperator (PRIMME's own defaults
    otherwise; its random start comes from its fixed default seed)."""
    import primme

    op = CountingOperator(p.host)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        u, s, vh = primme.svds(op, k, tol=tol, which="LM")
        t = time.perf_counter() - t0
    u, s, v = _host_triplets(np.asarray(u), np.asarray(s), np.asarray(vh))
    return t, Outcome(u, s, v, products=op.products)


def subspace_iteration(matmat, rmatmat, n: int, k: int, q: int, tol: float, maxiter: int, x0):
    """Block power (subspace) iteration on AᵀA with Rayleigh–Ritz, q ≥ k columns.

    Each step: W = A V = Ũ Σ Zᵀ (thin SVD), Ritz triplets (Ũ, Σ, V Z), for which A v − σ u = 0, so
    the residual is ‖Aᵀ Ũ − V Z Σ‖ (the same definition as riemsvd's); then V = orth(Aᵀ Ũ).
    Returns (U, S, V, history, iterations).
    """
    v = torch.linalg.qr(x0).Q
    history, products = [], 0
    for it in range(1, maxiter + 1):
        w = matmat(v)
        uu, s, zt = torch.linalg.svd(w, full_matrices=False)
        x = rmatmat(uu)
        products += 2 * v.shape[-1]
        vr = v @ zt.mT
        res = float(torch.linalg.vector_norm(x[:, :k] - vr[:, :k] * s[:k], dim=0).max() / s[0])
        history.append([products, res])
        if res <= tol or it == maxiter:
            break
        v = torch.linalg.qr(x).Q
    return uu[:, :k], s[:k], vr[:, :k], history, it


def run_power(p: Problem, k: int, tol: float, seed: int) -> tuple[float, Outcome]:
    """Block power iteration (q = k + 10) on torch tensors: the dense matrix, or torch sparse CSR."""
    m, n = p.shape
    q = min(k + OVERSAMPLING, m, n)
    if p.is_sparse:
        assert p.a_sparse is not None  # is_sparse
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            a, at = p.a_sparse.to_sparse_csr(), p.a_sparse.t().to_sparse_csr()
    else:
        a, at = p.a, p.a.mT
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, q, generator=gen, dtype=p.a.dtype).to(p.device)
    t0 = clock(p.device)
    u, s, v, history, its = subspace_iteration(a.__matmul__, at.__matmul__, n, k, q, tol, POWER_MAXITER, x0)
    t = clock(p.device) - t0
    return t, Outcome(u, s, v, products=int(history[-1][0]), iterations=its, history=history)
