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
import contextlib
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

import riemsvd

if TYPE_CHECKING:
    from typing_extensions import TypeGuard  # typing's own from Python 3.10

__all__ = [
    "CLASSES",
    "SOLVERS",
    "Config",
    "Solver",
    "make_matrix",
    "relative_residual",
    "run",
    "run_case",
    "run_backward",
    "run_batched",
    "run_warm",
    "summarize",
    "main",
]

CLASSES = ("gaussian", "lowrank", "decay", "cluster", "cond1e12", "sparse", "weight", "gradient")

# A record is one solver on one matrix: a flat dict of the figures in the table, the CSV and the JSON
# (see docs/benchmarks.md for the keys); a runner returns the raw outcome of one solve.
Record = dict[str, Any]

SPARSE_DENSITY = 0.01
WEIGHT_RANK, WEIGHT_SCALE, WEIGHT_DECAY = 32, 3.0, 0.7  # ``weight``: σᵢ = 3·edge / i^0.7, i ≤ 32
GRADIENT_RANK, GRADIENT_NOISE = 8, 1e-2  # ``gradient``: rank 8, σ 1 → 0.1, noise ‖E‖₂ ≈ 1e-2
OVERSAMPLING = 10  # q = k + 10 columns for svd_lowrank and the power iteration
LOWRANK_NITERS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # svd_lowrank's niter, tried smallest first
POWER_MAXITER = 1000  # iteration cap of the block power iteration
SCIPY_LOBPCG_MAXITER = 200  # svds(solver="lobpcg") defaults to lobpcg's 20 iterations
TORCH_LOBPCG_NITER = 1000  # torch.lobpcg's own default
SLOW_S = 10.0  # a solve slower than this is not repeated
MIN_REP_S, MAX_CALLS = 0.05, 50  # one repetition: calls of a fast solve until 50 ms, its mean


# ---------------------------------------------------------------------------------------------------
# Matrices


def _orthonormal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _spectrum(kind: str, r: int, gen: torch.Generator) -> torch.Tensor:
    i = torch.arange(r, dtype=torch.float64)
    if kind == "decay":
        s = 1.0 / (i + 1.0)
    elif kind == "cluster":  # the top 10 values 1e-3 apart, the rest in [0, 0.5)
        top = min(r, 10)
        rest = 0.5 * torch.rand(r - top, generator=gen, dtype=torch.float64)
        s = torch.cat([1.0 - 1e-3 * i[:top], rest])
    elif kind == "cond1e12":
        s = torch.logspace(0, -12, r, dtype=torch.float64)
    else:
        raise ValueError(f"`kind` must be one of {CLASSES}, got {kind!r}")
    return torch.sort(s, descending=True).values


def make_matrix(kind: str, m: int, n: int, dtype: torch.dtype, gen: torch.Generator):
    """An m×n test matrix of the class ``kind``, on the CPU.

    ``gaussian``: i.i.d. N(0, 1) entries. ``lowrank``: rank 10 with σ from 1 to 0.5, plus Gaussian
    noise of spectral norm about 1e-3. ``decay``: σᵢ = 1/i. ``cluster``: the top 10 σ 1e-3 apart
    (1, 0.999, …), the rest below 0.5. ``cond1e12``: σ logarithmically spaced from 1 to 1e-12. These
    four have Haar-random singular vectors. ``sparse``: a scipy CSR matrix with 1 % of its entries
    N(0, 1), the only class not returned as a dense torch tensor of ``dtype``. ``weight``: like a
    trained layer's weight, a Gaussian init with N(0, 1/n) entries (a flat bulk up to the edge
    e = 1 + √(m/n)) plus r = 32 learned directions with σᵢ = 3e / i^0.7 (Haar-random vectors), so the
    top values stand out of the bulk and the later ones sink into it. ``gradient``: like an LLM
    gradient, rank 8 with σ from 1 down to 0.1 (geometric), plus Gaussian noise of spectral norm
    about 1e-2.
    """
    if kind == "sparse":
        rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,), generator=gen)))
        a = scipy.sparse.random(
            m,
            n,
            density=SPARSE_DENSITY,
            format="csr",
            dtype=np.float64,
            random_state=rng,
            data_rvs=rng.standard_normal,
        )
        return a.astype(_np_dtype(dtype))
    if kind == "gaussian":
        a = torch.randn(m, n, generator=gen, dtype=torch.float64)
    elif kind == "lowrank":
        r = min(10, m, n)
        u, v = _orthonormal(m, r, gen), _orthonormal(n, r, gen)
        noise = torch.randn(m, n, generator=gen, dtype=torch.float64) * (1e-3 / (m**0.5 + n**0.5))
        a = (u * torch.linspace(1.0, 0.5, r, dtype=torch.float64)) @ v.mT + noise
    elif kind == "weight":
        r = min(WEIGHT_RANK, m, n)
        edge = 1.0 + (m / n) ** 0.5  # ‖G‖₂ of G with N(0, 1/n) entries, for large m, n
        s = WEIGHT_SCALE * edge / torch.arange(1, r + 1, dtype=torch.float64) ** WEIGHT_DECAY
        bulk = torch.randn(m, n, generator=gen, dtype=torch.float64) / n**0.5
        a = bulk + (_orthonormal(m, r, gen) * s) @ _orthonormal(n, r, gen).mT
    elif kind == "gradient":
        r = min(GRADIENT_RANK, m, n)
        s = torch.logspace(0, -1, r, dtype=torch.float64)
        noise = torch.randn(m, n, generator=gen, dtype=torch.float64) * (GRADIENT_NOISE / (m**0.5 + n**0.5))
        a = (_orthonormal(m, r, gen) * s) @ _orthonormal(n, r, gen).mT + noise
    else:
        r = min(m, n)
        s = _spectrum(kind, r, gen)
        a = (_orthonormal(m, r, gen) * s) @ _orthonormal(n, r, gen).mT
    return a.to(dtype)


def _np_dtype(dtype: torch.dtype):
    return np.float32 if dtype == torch.float32 else np.float64


def _to_torch_sparse(a, device) -> torch.Tensor:
    coo = a.tocoo()
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    with torch.sparse.check_sparse_tensor_invariants():  # opting in explicitly also silences a warning
        t = torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data), coo.shape).coalesce()
    return t.to(device)


@dataclass
class Problem:
    """One test matrix in the forms the solvers take, and its float64 reference.

    ``a`` is dense on the device (for ``sparse`` a dense copy, for the peers that need one), ``host``
    the numpy array or scipy CSR matrix the scipy solvers get, ``a_sparse`` a torch sparse COO copy
    (``sparse`` only), ``a64`` the same matrix in float64 on the CPU and ``s_ref`` its singular values.
    """

    kind: str
    a: torch.Tensor
    host: Any
    a_sparse: torch.Tensor | None
    a64: torch.Tensor
    s_ref: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return (self.a64.shape[0], self.a64.shape[1])

    @property
    def is_sparse(self) -> bool:
        return self.a_sparse is not None

    @property
    def device(self) -> torch.device:
        return self.a.device

    def riemsvd_input(self):
        """What riemsvd.solve gets: the scipy CSR matrix for ``sparse``, else the dense tensor."""
        return self.host if self.is_sparse else self.a


def make_problem(kind: str, m: int, n: int, dtype: torch.dtype, device: str, seed: int) -> Problem:
    gen = torch.Generator().manual_seed(seed + zlib.crc32(f"{kind}:{m}x{n}".encode()))
    a = make_matrix(kind, m, n, dtype, gen)
    if kind == "sparse":
        host = a
        dense = torch.from_numpy(a.toarray())
        a_sparse = _to_torch_sparse(a, device)
    else:
        host, dense, a_sparse = a.numpy(), a, None
    a64 = dense.double()
    s_ref = torch.linalg.svdvals(a64)
    return Problem(kind, dense.to(device), host, a_sparse, a64, s_ref)


# ---------------------------------------------------------------------------------------------------
# The figures, computed alike for every solver


def relative_residual(a64: torch.Tensor, u, s, v, s1: float) -> float:
    """max over i of max(‖A vᵢ − σᵢ uᵢ‖, ‖Aᵀ uᵢ − σᵢ vᵢ‖) / σ₁, in float64 on the CPU.

    ``a64`` (*, m, n); u (*, m, k), s (*, k), v (*, n, k); the maximum is also over the batch.
    """
    u, s, v = (torch.as_tensor(x).detach().to("cpu", torch.float64) for x in (u, s, v))
    sd = s.unsqueeze(-2)
    ru = torch.linalg.vector_norm(a64 @ v - u * sd, dim=-2)
    rv = torch.linalg.vector_norm(a64.mT @ u - v * sd, dim=-2)
    return float(torch.maximum(ru, rv).max()) / s1


def sigma_error(s, s_ref: torch.Tensor) -> float:
    """max over i of |σᵢ − σᵢ^ref| / σ₁^ref, with σ sorted descending."""
    s = torch.sort(torch.as_tensor(s).detach().to("cpu", torch.float64), dim=-1, descending=True).values
    k = s.shape[-1]
    return float(((s - s_ref[..., :k]).abs() / s_ref[..., :1]).max())


def orthonormality_error(u, v) -> float:
    """max |UᵀU − I|, |VᵀV − I| (entrywise): the residual means nothing for vectors off the unit sphere."""
    err = 0.0
    for x in (u, v):
        x = torch.as_tensor(x).detach().to("cpu", torch.float64)
        eye = torch.eye(x.shape[-1], dtype=torch.float64)
        err = max(err, float((x.mT @ x - eye).abs().max()))
    return err


def figures(p: Problem, out: dict, tol: float, eps: float) -> dict:
    """The figures of one solve's outcome ``out`` (U, S, V) on ``p`` against the target ``tol``:
    residual, σ error, orthonormality error, whether it reached tol, and its status."""
    f: dict[str, Any] = dict(
        residual=relative_residual(p.a64, out["U"], out["S"], out["V"], float(p.s_ref[0])),
        sigma_err=sigma_error(out["S"], p.s_ref),
        orth_err=orthonormality_error(out["U"], out["V"]),
    )
    f["reached_tol"] = bool(f["residual"] <= tol)
    f["status"] = status(f, tol, eps)
    return f


def status(f: dict, tol: float, eps: float) -> str:
    """ "ok" (the result counts), "not orthonormal", "missed tol" or "not top-k" (a residual ≤ tol
    reached at other triplets than the leading k)."""
    if not (f["orth_err"] <= math.sqrt(eps)):
        return "not orthonormal"
    if not f["reached_tol"]:
        return "missed tol"
    if not (f["sigma_err"] <= 2 * tol + 100 * eps):
        return "not top-k"
    return "ok"


# ---------------------------------------------------------------------------------------------------
# Runners: one solve each at one setting, timing only the solver's own call; they return the raw outcome


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _sorted(u, s, v):
    order = torch.argsort(s, descending=True)
    return u[:, order], s[order], v[:, order]


def run_riemsvd(p: Problem, k: int, tol: float, seed: int) -> dict:
    """riemsvd.solve on the dense tensor (or the scipy matrix); products from ``info.matvecs``."""
    a = p.riemsvd_input()
    gen = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", riemsvd.ConvergenceWarning)
        t0 = _clock(p.device)
        r = riemsvd.solve(a, k, tol=tol, generator=gen)
        t = _clock(p.device) - t0
    info = r.info
    assert info is not None  # solve always attaches one
    return dict(
        time=t,
        U=r.U,
        S=r.S,
        V=r.V,
        products=info.matvecs,
        history=[list(h) for h in info.history],
        iterations=info.iterations,
    )


def run_full_svd(p: Problem, k: int, setting: None, seed: int) -> dict:
    """The thin torch.linalg.svd of the dense matrix (for ``sparse``: of its dense copy)."""
    t0 = _clock(p.device)
    u, s, vh = torch.linalg.svd(p.a, full_matrices=False)
    t = _clock(p.device) - t0
    return dict(time=t, U=u[:, :k], S=s[:k], V=vh[:k].mT, products=None)


def run_lowrank(p: Problem, k: int, niter: int, seed: int) -> dict:
    """torch.svd_lowrank(A, q=k+10, niter=niter) (torch sparse COO for ``sparse``)."""
    m, n = p.shape
    q = min(k + OVERSAMPLING, m, n)
    a = p.a_sparse if p.a_sparse is not None else p.a  # is_sparse
    torch.manual_seed(seed)  # svd_lowrank draws from the global generator
    t0 = _clock(p.device)
    u, s, v = torch.svd_lowrank(a, q=q, niter=niter)
    t = _clock(p.device) - t0
    # torch._lowrank's algorithm: A R, niter times (Aᵀ Q, A Q), then Qᵀ A: blocks of q columns.
    return dict(time=t, U=u[:, :k], S=s[:k], V=v[:, :k], products=q * (2 * niter + 2))


def run_torch_lobpcg(p: Problem, k: int, tol: float, seed: int) -> dict:
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

    t0 = _clock(p.device)
    g = a.mT @ a if m >= n else a @ a.mT
    # torch annotates ``tracker`` as None, though it calls the function it is given
    e, x = torch.lobpcg(g, k=k, X=x0, tol=tol, niter=TORCH_LOBPCG_NITER, largest=True, tracker=tracker)  # type: ignore[arg-type]
    s = e.clamp_min(0).sqrt()
    other = (a @ x if m >= n else a.mT @ x) / s.clamp_min(torch.finfo(a.dtype).tiny)
    u, v = (other, x) if m >= n else (x, other)
    t = _clock(p.device) - t0
    u, s, v = _sorted(u, s, v)
    return dict(time=t, U=u, S=s, V=v, products=None, iterations=steps[0])


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


def _svds_runner(solver: str) -> Callable:
    def run_svds(p: Problem, k: int, tol: float, seed: int) -> dict:
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
        return dict(time=t, U=u, S=s, V=v, products=op.products)

    run_svds.__doc__ = f'scipy.sparse.linalg.svds(solver="{solver}") on a counting LinearOperator.'
    return run_svds


def run_primme(p: Problem, k: int, tol: float, seed: int) -> dict:
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
    return dict(time=t, U=u, S=s, V=v, products=op.products)


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


def run_power(p: Problem, k: int, tol: float, seed: int) -> dict:
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
    t0 = _clock(p.device)
    u, s, v, history, its = subspace_iteration(a.__matmul__, at.__matmul__, n, k, q, tol, POWER_MAXITER, x0)
    t = _clock(p.device) - t0
    return dict(time=t, U=u, S=s, V=v, products=history[-1][0], history=history, iterations=its)


# ---------------------------------------------------------------------------------------------------
# The solvers and the settings each is tried at


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


def _missing(module: str) -> Callable[[], str | None]:
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

    ``run(p, k, value, seed)`` does one solve with the setting ``value`` and returns its raw outcome (its
    own ``time``, U, S, V, ``products``, …). ``settings(target)`` lists the values to try, loosest
    first; the run uses the first whose result reaches the target (a single value: run as it is).
    ``key`` names the setting in the records (``"tol=1e-05"``, ``"niter=4"``; None: no setting).
    ``unavailable()`` says why the solver cannot run here (an optional package missing), or None.
    """

    run: Callable[[Problem, int, Any, int], dict]
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
    "arpack": Solver(_svds_runner("arpack"), svds_tol_ladder, on_host=True),
    "propack": Solver(_svds_runner("propack"), svds_tol_ladder, on_host=True),
    "primme": Solver(run_primme, tol_ladder, on_host=True, unavailable=_missing("primme")),
    "scipy-lobpcg": Solver(_svds_runner("lobpcg"), svds_tol_ladder, on_host=True),
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


_THREADPOOLS = None


def _threadpools(refresh: bool = False):
    """threadpoolctl's controller of the loaded BLAS libraries, built once (``refresh``: again, after
    an optional peer loaded its own)."""
    global _THREADPOOLS
    if _THREADPOOLS is None or refresh:
        from threadpoolctl import ThreadpoolController

        _THREADPOOLS = ThreadpoolController()
    return _THREADPOOLS


@contextlib.contextmanager
def thread_limits(threads: int):
    """torch's intra-op threads and numpy's (and scipy's) BLAS threads both set to ``threads``.

    Every solver's calls run inside this, so none gets more cores than another. A solver may use fewer
    inside (riemsvd runs torch on one thread during a solve, and its BLAS too for small A).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with _threadpools().limit(limits=threads, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------
# The run


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


class Progress:
    """A one-line progress bar on stderr, redrawn with \\r."""

    def __init__(self, total: int, enabled: bool = True, width: int = 30) -> None:
        # Only on a terminal: carriage returns would clutter a log file.
        enabled = enabled and sys.stderr.isatty()
        self.total, self.done, self.enabled, self.width = max(total, 1), 0, enabled, width
        self.t0 = time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        filled = int(self.width * min(self.done, self.total) / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"\r[{bar}] {self.done}/{self.total} {time.perf_counter() - self.t0:5.0f}s  {label}"
        sys.stderr.write(line[:110].ljust(110))
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 110 + "\r")
            sys.stderr.flush()


def _riemsvd_basis_bytes(m: int, n: int, k: int, itemsize: int) -> int:
    # An estimate from the solver's defaults on the CPU (block b = k): bases U, AV (m×p) and V, AᵀU
    # (n×p), p the basis cap.
    from riemsvd._subspace import default_basis

    p = max(default_basis(k), 4 * k)
    return 2 * (m + n) * p * itemsize


def one_repetition(call: Callable[[], dict], min_s: float = MIN_REP_S) -> tuple[float, dict, float]:
    """One repetition of ``call`` (which returns a dict with its own ``time``): (time, last output,
    total seconds). A fast call is repeated until ``min_s`` have passed (at most MAX_CALLS calls) and
    its mean taken, so that millisecond solves are not timed by one scheduler tick."""
    total, calls, out = 0.0, 0, {}
    while calls == 0 or (total < min_s and calls < MAX_CALLS):
        out = call()
        total, calls = total + out["time"], calls + 1
    return total / calls, out, total


def repeat(call: Callable[[], dict], reps: int, min_s: float = MIN_REP_S) -> tuple[list[float], dict]:
    """``reps`` repetitions of ``call`` in a row; (times, last output). A call slower than SLOW_S is
    not repeated. (The solver table interleaves its solvers instead: see run_case.)"""
    times: list[float] = []
    out: dict = {}
    for _ in range(reps):
        t, out, total = one_repetition(call, min_s)
        times.append(t)
        if total > SLOW_S:
            break
    return times, out


def tune(settings: list, attempt: Callable[[Any], dict]) -> tuple[int | None, list[dict]]:
    """Try ``settings`` loosest first until ``attempt(value)`` returns figures with status "ok".

    Returns (the index of that setting, or None when none passed; the log of the attempts, each the
    figures it returned, or {"status": "failed: …"} where it raised).
    """
    log = []
    for i, value in enumerate(settings):
        try:
            f = attempt(value)
        except Exception as err:  # e.g. PROPACK's LinAlgError at a loose tol: the next one may work
            f = dict(status=_failure(err))
        log.append(f)
        if f["status"] == "ok":
            return i, log
    return None, log


def _failure(err: Exception) -> str:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"failed: {type(err).__name__}: {msg}"[:120]


def _new_record(name: str, p: Problem, k: int, config: Config, threads: int) -> Record:
    m, n = p.shape
    return dict(
        cls=p.kind,
        m=m,
        n=n,
        k=k,
        solver=name,
        setting=None,
        dtype=config.dtype,
        device=str(p.device),
        threads=threads,
        tol=config.tolerance,
        status="",
        reached_tol=False,
        time_s=None,
        time_min_s=None,
        time_reps=[],
        reps=0,
        riemsvd_over=None,
        products=None,
        residual=None,
        sigma_err=None,
        orth_err=None,
        mem_bytes=None,
        mem_note="n/a",
        iterations=None,
        settings_tried=0,
        tuning=[],
        history=[],
    )


def run_case(
    p: Problem, k: int, names: list[str], config: Config, threads: int | None = None
) -> list[Record]:
    """The solvers ``names`` on one matrix and k: one Record each, in the order of ``names``.

    1. Settings: each solver runs, untimed, at its settings loosest first (``Solver.settings``) until
       one reaches the target tol with the right triplets (status "ok"); that one is timed. Where none
       does, the tightest that ran is timed and the record says "missed tol" (or why else it does not
       count). Every solver has thus run at least once on this matrix before it is timed.
    2. Times: repetition r of every solver, then repetition r + 1 of every solver, … (the order
       rotated by one each round), so that a noisy stretch on a shared machine hits all alike; the
       median is reported. Every call runs under ``thread_limits(threads)``.
    """
    threads = threads or config.thread_count
    target, eps = config.tolerance, torch.finfo(config.torch_dtype).eps
    recs = {name: _new_record(name, p, k, config, threads) for name in names}
    chosen: dict[str, Any] = {}
    for name in names:
        solver, rec = SOLVERS[name], recs[name]
        reason = solver.unavailable()
        if reason:
            rec["status"] = reason
            continue

        def attempt(value, solver=solver):
            with thread_limits(threads):
                out = solver.run(p, k, value, config.seed)
            return dict(setting=solver.label(value), **figures(p, out, target, eps))

        settings = solver.settings(target)
        i, log = tune(settings, attempt)
        rec["tuning"], rec["settings_tried"] = log, len(log)
        if i is None:  # none reached it: time the tightest that ran, to show how close it got
            ran = [j for j, f in enumerate(log) if not f["status"].startswith("failed")]
            if not ran:
                rec["status"] = log[-1]["status"]
                continue
            i = ran[-1]
        chosen[name] = settings[i]
        rec["setting"] = solver.label(settings[i])

    active, stopped = list(chosen), set()
    times: dict[str, list[float]] = {name: [] for name in active}
    outs: dict[str, dict] = {}
    for rep in range(config.reps):
        shift = rep % len(active) if active else 0
        for name in active[shift:] + active[:shift]:
            if name in stopped:
                continue
            solver, rec = SOLVERS[name], recs[name]
            cuda = p.device.type == "cuda" and not (solver.on_host or (name == "riemsvd" and p.is_sparse))
            try:
                if cuda:
                    torch.cuda.synchronize(p.device)
                    torch.cuda.reset_peak_memory_stats(p.device)
                    base = torch.cuda.memory_allocated(p.device)
                with thread_limits(threads):
                    t, outs[name], total = one_repetition(
                        # mypy cannot infer a lambda with default arguments as a Callable[[], dict]
                        lambda solver=solver, name=name: solver.run(p, k, chosen[name], config.seed),  # type: ignore[misc]
                        config.min_rep_s,
                    )
                if cuda:
                    peak = torch.cuda.max_memory_allocated(p.device) - base
                    rec["mem_bytes"], rec["mem_note"] = max(rec["mem_bytes"] or 0, peak), "peak"
            except Exception as err:  # a peer that raises is reported, not dropped
                rec["status"], rec["reached_tol"] = _failure(err), False
                stopped.add(name)
                outs.pop(name, None)
                continue
            times[name].append(t)
            if total > SLOW_S:
                stopped.add(name)

    for name in outs:
        rec, out = recs[name], outs[name]
        rec["time_reps"] = times[name]
        rec["reps"] = len(times[name])
        rec["time_s"] = statistics.median(times[name])
        rec["time_min_s"] = min(times[name])
        rec["products"] = out.get("products")
        rec["iterations"] = out.get("iterations")
        rec["history"] = out.get("history", [])
        rec.update(figures(p, out, target, eps))
        if name == "riemsvd" and rec["mem_note"] != "peak":
            m, n = p.shape
            rec["mem_bytes"] = _riemsvd_basis_bytes(m, n, k, torch.finfo(config.torch_dtype).bits // 8)
            rec["mem_note"] = "estimate"
    return [recs[name] for name in names]


def _warm_up(config: Config, names: list[str], threads: int) -> None:
    """One untimed solve of every solver on a small matrix: imports, thread pools, lazy kernels."""
    p = make_problem("gaussian", 60, 40, config.torch_dtype, config.device, config.seed)
    with thread_limits(threads):
        for name in names:
            try:
                solver = SOLVERS[name]
                solver.run(p, 1, solver.settings(config.tolerance)[0], config.seed)
            except Exception:
                pass


def _check_classes(classes: list[str]) -> None:
    unknown = set(classes) - set(CLASSES)
    if unknown:
        raise ValueError(f"`classes`: unknown {sorted(unknown)}; choose from {list(CLASSES)}")


def run(config: Config) -> list[Record]:
    """Every solver on every (size, class, k) of ``config`` (see run_case): one Record each, with
    ``riemsvd_over`` filled in."""
    names = resolve_solvers(config.solvers)
    _check_classes(config.classes)
    threads = config.thread_count
    available = [name for name in names if SOLVERS[name].unavailable() is None]  # imports them
    _threadpools(refresh=True)  # after the imports: an optional peer may bring its own BLAS
    _warm_up(config, available, threads)
    records: list[Record] = []
    for p, k, _ in _grid(config, ""):
        records += run_case(p, k, names, config, threads)
    fill_ratios(records)
    return records


def solved(rec: Record | None) -> TypeGuard[Record]:
    """Whether a record counts: status "ok" (reached tol, top k, orthonormal) and timed."""
    return bool(rec and rec["status"] == "ok" and rec["time_s"])


def _case(r: Record) -> tuple:
    return (r["m"], r["n"], r["k"], r["cls"])


def fill_ratios(records: list[Record]) -> None:
    """Set ``riemsvd_over`` of every other solver's record: time(riemsvd) / time(it) on the same case
    (above 1: riemsvd slower), where both solved it (``solved``); None otherwise."""
    ours = {_case(r): r for r in records if r["solver"] == "riemsvd"}
    for r in records:
        o = ours.get(_case(r))
        r["riemsvd_over"] = (
            o["time_s"] / r["time_s"] if r["solver"] != "riemsvd" and solved(o) and solved(r) else None
        )


# ---------------------------------------------------------------------------------------------------
# Experiments: warm start, batched


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


def _grid(config: Config, label: str, solvers=(None,)):
    """(problem, k, solver) over sizes × classes × k × solvers, one matrix per (size, class), with
    the progress bar."""
    total = len(config.sizes) * len(config.classes) * len(config.ks) * len(solvers)
    progress = Progress(total, config.progress)
    try:
        for m, n in config.sizes:
            for kind in config.classes:
                p = make_problem(kind, m, n, config.torch_dtype, config.device, config.seed)
                for k in config.ks:
                    for name in solvers:
                        progress.step(f"{label}{m}x{n} {kind} k={k}" + (f" {name}" if name else ""))
                        yield p, k, name
    finally:
        progress.close()


def run_warm(config: Config) -> list[Record]:
    """riemsvd on A + E (‖E‖₂ = 1e-3‖A‖₂) from a random start and from A's (U, V): products, times."""
    tol = config.tolerance
    records, perturbed = [], {}
    with thread_limits(config.thread_count):
        for p, k, _ in _grid(config, "warm "):
            if id(p) not in perturbed:  # one perturbation per matrix, shared by its k
                perturbed = {id(p): perturb(p, 1e-3, config.seed)}
            records.append(_warm_one(p, perturbed[id(p)], k, tol, config))
    return records


def _warm_one(p: Problem, a1, k: int, tol: float, config: Config) -> Record:
    m, n = p.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", riemsvd.ConvergenceWarning)
        prev = riemsvd.solve(p.riemsvd_input(), k, tol=tol, generator=torch.Generator().manual_seed(0))
        out = {}
        for mode, init in (("cold", None), ("warm", (prev.U, prev.V))):

            def call(init=init):
                gen = torch.Generator().manual_seed(config.seed)
                t0 = _clock(p.device)
                r = riemsvd.solve(a1, k, tol=tol, init=init, generator=gen)
                return dict(time=_clock(p.device) - t0, result=r)

            times, last = repeat(call, config.reps, config.min_rep_s)
            out[mode] = (last["result"], statistics.median(times))
    (cold, t_cold), (warm, t_warm) = out["cold"], out["warm"]
    return dict(
        cls=p.kind,
        m=m,
        n=n,
        k=k,
        dtype=config.dtype,
        tol=tol,
        products_cold=cold.info.matvecs,
        products_warm=warm.info.matvecs,
        products_ratio=warm.info.matvecs / cold.info.matvecs,
        time_cold_s=t_cold,
        time_warm_s=t_warm,
        converged_cold=bool(cold.info.converged.all()),
        converged_warm=bool(warm.info.converged.all()),
    )


def run_batched(config: Config) -> list[Record]:
    """riemsvd.solve (k = 1) on a float32 batch against torch.linalg.svdvals on the batch."""
    shape = tuple(config.batched_shape)
    gen = torch.Generator().manual_seed(config.seed + 11)
    a = torch.randn(shape, generator=gen, dtype=torch.float32)
    a64 = a.double()
    s_ref = torch.linalg.svdvals(a64)
    a = a.to(config.device)
    dev = a.device
    records = []

    def solve():
        t0 = _clock(dev)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", riemsvd.ConvergenceWarning)
            r = riemsvd.solve(a, 1, generator=torch.Generator().manual_seed(config.seed))
        return dict(time=_clock(dev) - t0, result=r)

    def svdvals():
        t0 = _clock(dev)
        s = torch.linalg.svdvals(a)
        return dict(time=_clock(dev) - t0, result=s)

    for name, call in (("riemsvd", solve), ("svdvals", svdvals)):
        with thread_limits(config.thread_count):
            times, out = repeat(call, config.reps, config.min_rep_s)
        r = s = out["result"]
        rec = dict(
            solver=name,
            shape="x".join(map(str, shape)),
            k=1,
            dtype="float32",
            device=str(dev),
            time_s=statistics.median(times),
            reps=len(times),
        )
        if name == "riemsvd":
            # residual per batch element relative to its own σ₁, then the worst element
            res = max(
                relative_residual(a64[i], r.U[i], r.S[i], r.V[i], float(s_ref[i, 0])) for i in range(shape[0])
            )
            rec.update(
                products=r.info.matvecs,
                residual=res,
                tol=r.info.tol,
                reached_tol=bool(r.info.converged.all()),
                sigma_err=sigma_error(r.S, s_ref),
            )
        else:
            rec.update(products=None, residual=None, sigma_err=sigma_error(s[..., :1], s_ref))
        records.append(rec)
    return records


# ---------------------------------------------------------------------------------------------------
# Forward + backward against torch.linalg.svd

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
    """(forward seconds, backward seconds, Ā, the forward's output) for one call of ``solve``."""
    x = a.detach().clone().requires_grad_(True)
    t0 = _clock(a.device)
    u, s, v, extra = solve(x)
    t1 = _clock(a.device)
    backward_loss(u, s, v, *weights).backward()
    t2 = _clock(a.device)
    assert x.grad is not None  # backward reached the leaf x
    return t1 - t0, t2 - t1, x.grad, (u.detach(), s.detach(), v.detach(), extra)


def backward_one(p: Problem, k: int, config: Config) -> Record:
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
    err = float(torch.linalg.norm(g_ours - g_ref) / torch.linalg.norm(g_ref))
    u, s, v, info = outs["riemsvd"]
    s_ref = p.s_ref
    gap = float((s_ref[k - 1] - s_ref[k]) / s_ref[k - 1]) if k < len(s_ref) else None
    ratio = sum(med["riemsvd"]) / sum(med["torch"])
    degenerate = any(issubclass(w.category, riemsvd.DegenerateSpectrumWarning) for w in caught)
    ok_ratio, ok_grad = ratio <= BACKWARD_RATIO_TARGET, err <= BACKWARD_GRAD_TARGET
    return dict(
        cls=p.kind,
        m=m,
        n=n,
        k=k,
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
        status=("ok" if ok_ratio and ok_grad else "missed target") + (" (degenerate)" if degenerate else ""),
        riemsvd_reps=[list(t) for t in times["riemsvd"]],
        torch_reps=[list(t) for t in times["torch"]],
    )


def run_backward(config: Config) -> list[Record]:
    """Forward + backward of riemsvd.solve against torch.linalg.svd on every (size, class, k).

    Dense input only: ``sparse`` is run on its dense copy (riemsvd's backward is for dense tensors).
    """
    _check_classes(config.classes)
    warm = make_problem("gaussian", 60, 40, config.torch_dtype, config.device, config.seed)
    with thread_limits(config.thread_count):
        backward_one(warm, 1, Config(**{**asdict(config), "reps": 1}))  # imports, thread pools, untimed
        return [backward_one(p, k, config) for p, k, _ in _grid(config, "backward ")]


def summarize_backward(records: list[Record]) -> dict:
    """Per (size, k): geometric mean of the time ratio, worst gradient error, classes meeting targets."""
    out = {}
    for m, n, k in sorted({(r["m"], r["n"], r["k"]) for r in records}):
        rs = [r for r in records if (r["m"], r["n"], r["k"]) == (m, n, k)]
        out[f"{m}x{n} k={k}"] = {
            "ratio": {r["cls"]: r["ratio"] for r in rs},
            "ratio_geomean": _geomean([r["ratio"] for r in rs]),
            "grad_rel_err_max": max(r["grad_rel_err"] for r in rs),
            "meet_ratio": [r["cls"] for r in rs if r["meets_ratio"]],
            "meet_grad": [r["cls"] for r in rs if r["meets_grad"]],
        }
    return out


def format_backward(records: list[Record], summary: dict | None = None) -> str:
    """The fwd+bwd table (times in ms) and one summary line per (size, k)."""
    summary = summarize_backward(records) if summary is None else summary
    lines = [
        "",
        "Forward + backward of Σ wᵢ(cᵀuᵢ)(dᵀvᵢ) + Σ wᵢσᵢ: riemsvd.solve against torch.linalg.svd "
        f"(median times in ms; targets: ratio ≤ {BACKWARD_RATIO_TARGET}, "
        f"grad err ≤ {BACKWARD_GRAD_TARGET:.0e})",
        f"{'size':<10} {'k':>2} {'class':<9} {'ours fwd':>9} {'ours bwd':>9} {'torch fwd':>9} "
        f"{'torch bwd':>9} {'ratio':>6} {'grad err':>8} {'gap':>7} {'residual':>8}  status",
    ]
    for r in records:
        lines.append(
            f"{r['m']}x{r['n']:<5} {r['k']:>2} {r['cls']:<9} {r['riemsvd_fwd_s'] * 1e3:>9.1f} "
            f"{r['riemsvd_bwd_s'] * 1e3:>9.1f} {r['torch_fwd_s'] * 1e3:>9.1f} {r['torch_bwd_s'] * 1e3:>9.1f} "
            f"{r['ratio']:>6.3f} {r['grad_rel_err']:>8.1e} {_fmt(r['gap_rel'], '7.1e')} "
            f"{r['residual']:>8.1e}  {r['status']}"
        )
    for key, s in summary.items():
        n_cls = len(s["ratio"])
        lines.append(
            f"  {key}: (riemsvd fwd+bwd) / (torch fwd+bwd) = {_fmt(s['ratio_geomean'], '.3f')} geomean, "
            f"max grad err {s['grad_rel_err_max']:.1e}; ratio ≤ {BACKWARD_RATIO_TARGET} on "
            f"{len(s['meet_ratio'])}/{n_cls}, grad err ≤ {BACKWARD_GRAD_TARGET:.0e} on "
            f"{len(s['meet_grad'])}/{n_cls}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Output


def _fmt(x, spec: str, none: str = "n/a") -> str:
    return none if x is None else format(x, spec)


def _mem(rec: Record) -> str:
    if rec["mem_bytes"] is None:
        return "n/a"
    return f"{rec['mem_bytes'] / 2**20:.1f}" + ("*" if rec["mem_note"] == "estimate" else "")


def format_table(records: list[Record]) -> str:
    """The terminal table: one block per (size, k), one line per class and solver."""
    head = (
        f"{'class':<9} {'solver':<13} {'setting':<12} {'time ms':>9} {'ours/it':>7} {'products':>8} "
        f"{'residual':>9} {'σ err':>8} {'MB':>6}  status"
    )
    lines = []
    groups = sorted({(r["m"], r["n"], r["k"]) for r in records})
    for m, n, k in groups:
        rs = [r for r in records if (r["m"], r["n"], r["k"]) == (m, n, k)]
        r0 = rs[0]
        lines.append(
            f"\n{m}×{n}, k = {k}, {r0['dtype']}, tol {r0['tol']:.0e}, {r0['device']}, {r0['threads']} threads"
        )
        lines.append(head)
        lines.append("-" * len(head))
        for r in rs:
            if r["time_s"] is None:
                setting = r["setting"] or "-"
                lines.append(f"{r['cls']:<9} {r['solver']:<13} {setting:<12} {r['status']}")
                continue
            ratio, products = _fmt(r["riemsvd_over"], "7.2f", "-"), _fmt(r["products"], "d")
            lines.append(
                f"{r['cls']:<9} {r['solver']:<13} {r['setting']:<12} {r['time_s'] * 1e3:>9.1f} {ratio:>7} "
                f"{products:>8} {r['residual']:>9.1e} {r['sigma_err']:>8.1e} {_mem(r):>6}  {r['status']}"
            )
    lines.append(
        "\nsetting: the loosest that reached tol (or, where none did, the tightest tried); "
        "ours/it: riemsvd's time / its, where both are ok"
    )
    if any(r["mem_note"] == "estimate" for r in records):
        lines.append("MB: * riemsvd's search bases, estimated (not measured on the CPU)")
    return "\n".join(lines)


def _geomean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


# The peers of the summary's ratios, with their names there.
RATIO_PEERS = {"arpack": "ARPACK", "propack": "PROPACK", "lowrank": "svd_lowrank", "primme": "PRIMME"}


def _case_label(case: tuple, short: bool) -> str:
    m, n, k, cls = case
    return cls if short else f"{cls} {m}x{n} k={k}"


def _cases(records: list[Record]) -> list[tuple]:
    order = {c: i for i, c in enumerate(CLASSES)}
    return sorted({_case(r) for r in records}, key=lambda c: (c[0], c[1], c[2], order.get(c[3], 99)))


def riemsvd_ratio(records: list[Record], peer: str, key: str = "time_s", short: bool = False) -> dict:
    """riemsvd's ``key`` (time_s or products) over ``peer``'s, on the cases where both solved them.

    Returns {"geomean", "n" (cases included), "cases" {case: ratio}, "excluded" {case: why}}; a case
    without both records is neither.
    """
    by = {(_case(r), r["solver"]): r for r in records}
    ratios, excluded = {}, {}
    for case in _cases(records):
        ours, theirs = by.get((case, "riemsvd")), by.get((case, peer))
        if ours is None or theirs is None:
            continue
        label = _case_label(case, short)
        why = [f"{r['solver']} {r['status'] or 'not run'}" for r in (ours, theirs) if not solved(r)]
        if not why and (ours[key] is None or theirs[key] is None):
            why = [f"{key} n/a"]
        if why:
            excluded[label] = "; ".join(why)
        else:
            ratios[label] = ours[key] / theirs[key]
    return dict(geomean=_geomean(list(ratios.values())), n=len(ratios), cases=ratios, excluded=excluded)


def fastest_peers(records: list[Record], short: bool = False) -> dict:
    """Per case: the fastest peer that solved it (the full SVD included, riemsvd not) and riemsvd's
    time over its (None where riemsvd did not solve the case); {"solver": None} where no peer did."""
    out: dict[str, dict[str, Any]] = {}
    for case in _cases(records):
        rs = [r for r in records if _case(r) == case]
        ours = next((r for r in rs if r["solver"] == "riemsvd"), None)
        peers = [r for r in rs if r["solver"] != "riemsvd" and solved(r)]
        label = _case_label(case, short)
        if not peers:
            out[label] = dict(solver=None)
            continue
        best = min(peers, key=lambda r: r["time_s"])
        rel = ours["time_s"] / best["time_s"] if solved(ours) else None
        out[label] = dict(
            solver=best["solver"],
            setting=best["setting"],
            time_s=best["time_s"],
            riemsvd_over=rel,
            riemsvd_status=ours["status"] if ours else "not run",
        )
    return out


def _ratios(records: list[Record], short: bool) -> dict:
    present = {r["solver"] for r in records}
    by_peer = {
        peer: riemsvd_ratio(records, peer, "time_s", short)
        for peer in RATIO_PEERS
        if peer in present and "riemsvd" in present
    }
    products = riemsvd_ratio(records, "propack", "products", short) if "propack" in by_peer else None
    return dict(time=by_peer, products_propack=products)


def summarize(records: list[Record]) -> dict:
    """The headline figures: riemsvd's time over ARPACK's, PROPACK's, svd_lowrank's and PRIMME's, and
    its products over PROPACK's, as geometric means over the cases both solved (with the count and the
    cases left out), per (size, k) and over all cases; and the fastest peer on each case."""
    groups = {}
    for m, n, k in sorted({(r["m"], r["n"], r["k"]) for r in records}):
        rs = [r for r in records if (r["m"], r["n"], r["k"]) == (m, n, k)]
        groups[f"{m}x{n} k={k}"] = dict(**_ratios(rs, short=True), fastest_peer=fastest_peers(rs, short=True))
    skipped = {r["solver"]: r["status"] for r in records if r["status"].startswith("skipped")}
    return dict(by_size_k=groups, all=_ratios(records, short=False), skipped=skipped)


def _ratio_line(what: str, stats: dict | None, listed: bool) -> str:
    if stats is None:
        return ""
    line = f"{what} = {_fmt(stats['geomean'], '.2f')} over {stats['n']} case{'s' * (stats['n'] != 1)}"
    if listed and stats["cases"]:
        line += " (" + ", ".join(f"{c} {v:.2f}" for c, v in stats["cases"].items()) + ")"
    if stats["excluded"]:
        line += f"; {len(stats['excluded'])} left out" + (
            ": " + ", ".join(f"{c} ({why})" for c, why in stats["excluded"].items()) if listed else ""
        )
    return line


def _ratio_lines(prefix: str, ratios: dict, skipped: dict, listed: bool) -> list[str]:
    lines = []
    for peer, name in RATIO_PEERS.items():
        if peer in skipped:
            lines.append(f"{prefix}time riemsvd / {name}: {skipped[peer]}")
        elif peer in ratios["time"]:
            lines.append(prefix + _ratio_line(f"time riemsvd / {name}", ratios["time"][peer], listed))
    if ratios["products_propack"] is not None:
        lines.append(prefix + _ratio_line("products riemsvd / PROPACK", ratios["products_propack"], listed))
    return lines


def format_summary(summary: dict) -> str:
    lines = [
        "",
        "Summary: riemsvd's time (or products) ÷ the peer's, geometric means over the cases where both "
        "reached tol with the right triplets (> 1: riemsvd slower)",
    ]
    skipped = summary.get("skipped", {})
    for key, s in summary["by_size_k"].items():
        lines += _ratio_lines(f"  {key}: ", s, skipped, listed=True)
        per = []
        for c, f in s["fastest_peer"].items():
            if f["solver"] is None:
                per.append(f"{c} none")
            else:
                ours = (
                    f"riemsvd ×{f['riemsvd_over']:.2f}"
                    if f["riemsvd_over"] is not None
                    else f"riemsvd {f['riemsvd_status']}"
                )
                per.append(f"{c} {f['solver']} {f['setting']} {f['time_s'] * 1e3:.1f} ms ({ours})")
        lines.append(f"  {key}: fastest peer: " + ", ".join(per))
    lines.append("  all cases:")
    lines += _ratio_lines("    ", summary["all"], skipped, listed=False)
    return "\n".join(lines)


def format_warm(records: list[Record]) -> str:
    lines = [
        "",
        "Warm start: riemsvd on A + E, ‖E‖₂ = 1e-3‖A‖₂, from A's (U, V) against a random start",
        f"{'size':<10} {'k':>3} {'class':<9} {'products cold':>13} {'warm':>6} {'ratio':>6} "
        f"{'ms cold':>8} {'ms warm':>8}",
    ]
    for r in records:
        lines.append(
            f"{r['m']}x{r['n']:<5} {r['k']:>3} {r['cls']:<9} {r['products_cold']:>13} "
            f"{r['products_warm']:>6} {r['products_ratio']:>6.2f} "
            f"{r['time_cold_s'] * 1e3:>8.1f} {r['time_warm_s'] * 1e3:>8.1f}"
            + ("" if r["converged_cold"] and r["converged_warm"] else "  (missed tol)")
        )
    g = _geomean([r["products_ratio"] for r in records])
    lines.append(f"  products warm / cold, geometric mean: {_fmt(g, '.2f')}")
    return "\n".join(lines)


def format_batched(records: list[Record]) -> str:
    lines = [f"\nBatched: {records[0]['shape']} float32, k = 1, {records[0]['device']}"]
    for r in records:
        extra = (
            f", products {r['products']}, residual {r['residual']:.1e} (tol {r['tol']:.1e}), "
            f"σ err {r['sigma_err']:.1e}"
            if r["solver"] == "riemsvd"
            else f", σ err {r['sigma_err']:.1e}"
        )
        lines.append(f"  {r['solver']:<8} {r['time_s'] * 1e3:9.1f} ms{extra}")
    t = {r["solver"]: r["time_s"] for r in records}
    lines.append(f"  time riemsvd / svdvals = {t['riemsvd'] / t['svdvals']:.2f}")
    return "\n".join(lines)


_CSV_SKIP = ("history", "time_reps", "tuning", "riemsvd_reps", "torch_reps")


def _machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return dict(
        cpu=cpu,
        cores=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        numpy=np.__version__,
        scipy=scipy.__version__,
        riemsvd=riemsvd.__version__,
        cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    )


def write_outputs(
    out: str, config: Config, records, summary, warm=None, batched=None, backward=None
) -> list[str]:
    """results.csv (one row per record), results.json (everything, with histories), warm.csv and
    backward.csv where those ran; returns the paths."""
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, "results.json")]
    if records or not backward:  # a --backward run has no solver table
        paths.insert(0, os.path.join(out, "results.csv"))
        with open(paths[0], "w", newline="") as f:
            keys = [k for k in records[0] if k not in _CSV_SKIP] if records else []
            w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(records)
    if backward:
        paths.append(os.path.join(out, "backward.csv"))
        with open(paths[-1], "w", newline="") as f:
            w = csv.DictWriter(
                f, fieldnames=[k for k in backward[0] if k not in _CSV_SKIP], extrasaction="ignore"
            )
            w.writeheader()
            w.writerows(backward)
    if warm:
        paths.append(os.path.join(out, "warm.csv"))
        with open(paths[-1], "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(warm[0]))
            w.writeheader()
            w.writerows(warm)
    doc = dict(
        config=asdict(config),
        machine=_machine(),
        records=records,
        summary=summary,
        warm=warm,
        batched=batched,
        backward=backward,
        backward_summary=summarize_backward(backward) if backward else None,
    )
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(doc, f, indent=1, default=str)
    return paths


def plot(records: list[Record], out: str) -> list[str]:
    """PNG plots per (size, k): residual against products per class, and time per class and solver.

    Returns the paths written; an empty list (with a message) when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is not installed (pip install 'riemsvd[bench]'): no plots", file=sys.stderr)
        return []
    os.makedirs(out, exist_ok=True)
    paths = []
    solvers = list(dict.fromkeys(r["solver"] for r in records))
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(solvers)}
    for m, n, k in sorted({(r["m"], r["n"], r["k"]) for r in records}):
        rs = [r for r in records if (r["m"], r["n"], r["k"]) == (m, n, k)]
        classes = list(dict.fromkeys(r["cls"] for r in rs))
        tol = rs[0]["tol"]
        # residual against products
        cols = min(3, len(classes))
        rows = math.ceil(len(classes) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
        for ax, c in zip(axes.flat, classes):
            for r in (r for r in rs if r["cls"] == c and r["products"] and r["residual"] is not None):
                col = colors[r["solver"]]
                if r["history"]:
                    h = np.array(r["history"], dtype=float)
                    ax.plot(h[:, 0], np.maximum(h[:, 1], 1e-17), color=col, lw=1.2, label=r["solver"])
                    ax.plot([r["products"]], [max(r["residual"], 1e-17)], "o", color=col, ms=4)
                else:
                    ax.plot(
                        [r["products"]], [max(r["residual"], 1e-17)], "s", color=col, ms=5, label=r["solver"]
                    )
            ax.axhline(tol, color="gray", ls="--", lw=0.8)
            ax.set(xscale="log", yscale="log", title=c, xlabel="products with A and Aᵀ")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_ylabel("relative residual")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(classes) :]:
            ax.axis("off")
        handles: dict[str, Any] = {}
        for ax in axes.flat:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        fig.legend(
            handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6), fontsize=8
        )
        fig.suptitle(
            f"{m}×{n}, k = {k}: residual against products (line: history, marker: final residual; "
            "solvers without a product count are not shown)"
        )
        fig.tight_layout(rect=(0, 0.07, 1, 0.96))
        paths.append(os.path.join(out, f"convergence_{m}x{n}_k{k}.png"))
        fig.savefig(paths[-1], dpi=70)
        plt.close(fig)
        # time per solver per class
        fig, ax = plt.subplots(figsize=(11, 4))
        width = 0.8 / len(solvers)
        labelled = set()
        for j, s in enumerate(solvers):
            for i, c in enumerate(classes):
                rec = next((r for r in rs if r["cls"] == c and r["solver"] == s), None)
                if rec is None or rec["time_s"] is None:
                    continue
                ok = rec["status"] == "ok"
                ax.bar(
                    i + (j - (len(solvers) - 1) / 2) * width,
                    rec["time_s"] * 1e3,
                    width,
                    color=colors[s],
                    alpha=1.0 if ok else 0.35,
                    hatch=None if ok else "//",
                    edgecolor="k",
                    lw=0.3,
                    label=None if s in labelled else s,
                )
                labelled.add(s)
        ax.set_xticks(range(len(classes)), classes)
        ax.set(yscale="log", ylabel="median time (ms)")
        ax.set_title(f"{m}×{n}, k = {k}: time (hatched: did not reach tol, or failed to find the top k)")
        ax.legend(fontsize=8, ncol=len(solvers), loc="upper center", bbox_to_anchor=(0.5, -0.08))
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        paths.append(os.path.join(out, f"time_{m}x{n}_k{k}.png"))
        fig.savefig(paths[-1], dpi=70)
        plt.close(fig)
    return paths


# ---------------------------------------------------------------------------------------------------
# The command line


def _list(values: list[str]) -> list[str]:
    return [x for v in values for x in v.split(",") if x]


def _size(text: str) -> tuple[int, int]:
    try:
        m, n = text.lower().split("x")
        return int(m), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`--sizes`: expected MxN like 2000x1000, got {text!r}") from None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` with each option's default, and the module docstring as written."""


def parse_args(argv: list[str] | None = None) -> Config:
    d = Config()
    ap = argparse.ArgumentParser(prog="riemsvd-bench", description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["1000x500"], help="MxN sizes")
    ap.add_argument("--k", nargs="+", default=["1", "8"], help="numbers of triplets")
    ap.add_argument("--dtype", choices=["float64", "float32"], default=d.dtype, help="A's dtype")
    ap.add_argument(
        "--tol",
        type=float,
        default=None,
        help="the relative residual riemsvd is asked for and every peer must reach "
        "(None: 1e-10, float32 1e-5)",
    )
    ap.add_argument("--device", default=d.device, help="cpu or cuda")
    ap.add_argument("--reps", type=int, default=d.reps, help="repetitions; the median time is reported")
    ap.add_argument("--classes", nargs="+", default=list(CLASSES), help="matrix classes")
    ap.add_argument("--solvers", nargs="+", default=list(SOLVERS), help="solvers to run")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"torch and BLAS threads for every solver alike (None: torch.get_num_threads(), "
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
    sizes = [_size(s) for s in _list(a.sizes)]
    try:
        solvers = resolve_solvers(_list(a.solvers))
        _check_classes(_list(a.classes))
    except ValueError as err:
        ap.error(str(err))
    return Config(
        sizes=sizes,
        ks=[int(k) for k in _list(a.k)],
        dtype=a.dtype,
        tol=a.tol,
        device=a.device,
        reps=max(1, a.reps),
        classes=_list(a.classes),
        solvers=solvers,
        threads=a.threads if a.threads is None else max(1, a.threads),
        out=a.out,
        warm=a.warm,
        batched=a.batched,
        backward=a.backward,
        plots=not a.no_plots,
        progress=not a.quiet,
        seed=a.seed,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark of the command line, print the table and the summary, write the files."""
    config = parse_args(argv)
    config.threads = config.thread_count  # fixed at the start, and written into results.json
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
    warm = batched = None
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


if __name__ == "__main__":
    raise SystemExit(main())
