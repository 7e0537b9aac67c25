"""Certified bounds on the spectral norm ‖A‖₂: a Rayleigh value below, a guaranteed bound above.

Above: deterministic from the solver's subspace, its residual and the energy outside it (‖A‖_F known),
or probabilistic from a Krylov space with a fresh random start (Kuczyński–Woźniakowski 1992).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections import namedtuple
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from riemsvd._backend import batch_elements, eager_under_compile, no_autocast, readable_any, solver_threads
from riemsvd._certificate import cholesky_excess, gram_cholesky_upper, gram_first_upper, ldexp_outward
from riemsvd._fourier import fourier_bounds
from riemsvd._linear import LinearMapOperator
from riemsvd._operator import (
    DenseOperator,
    Operator,
    ScipyOperator,
    SparseOperator,
    as_operator,
    is_scipy_sparse,
    probe_scale,
    product_fault,
    scaled_by_entries,
)
from riemsvd._result import ConvergenceWarning, callers_level
from riemsvd._solve import DEFAULT_MAXITER, Problem, _from_numpy, execute, prepare
from riemsvd._space import randn
from riemsvd._subspace import orthonormalize
from riemsvd._tolerance import HALF, TINY, default_tol, gamma, rounded_outward
from riemsvd._validate import as_number, check_bound_exists, check_bounds_args

__all__ = ["NormBounds", "norm_bounds"]

_K0 = 1  # triplets of the first solve
_K_MAX = 64  # at most this many, grown by doubling while the energy outside the subspace dominates
# for a dense A at most this many: a few triplets make the bound of a low-rank or decaying spectrum
# tight to tol² (7e-13 at tol 1e-12); beyond them the Gram–Cholesky certificate costs less
_K_DENSE = 8
# Up to this min(m, n) a dense A goes to its Gram matrix at once (see _gram_first): 384×384, 3.4 ms
# in all against 8–10 ms through a first solve on A (and 7.5 ms for torch.linalg.matrix_norm)
_GRAM_FIRST = 512
_TAIL = 0.75  # k grows while f² > _TAIL·a²: then a² − f² is small and the bound is set by f or c²/(a² − f²)
_MIN_KRYLOV = 32  # least dimension of the Krylov space of the probabilistic bound
_MAX_KRYLOV = 512
_FULL_SPACE = 256  # up to this min(m, n), a loose bound is replaced by one from a basis of the whole space
_KW = 1.648  # the constant of Kuczyński–Woźniakowski 1992, Theorem 4.2(b)


class NormBounds(namedtuple("NormBounds", ["lower", "upper"])):
    """``(lower, upper)`` for ‖A‖₂, each of shape ``(*)`` (A's batch shape), in A's dtype.

    Attributes
    ----------
    certified : torch.Tensor
        bool ``(*)``: True where ``upper`` is deterministic (holds for every outcome of the random
        start), False where it is probabilistic.
    failure_probability : torch.Tensor
        ``(*)``: 0 where certified, else δ = 1 − confidence, the probability (over the random start,
        for any fixed A) that ``upper`` < ‖A‖₂.
    matvecs : int
        Products with A and Aᵀ in all (a block of b columns counting b), the solve included.
    solve_matvecs : int
        Of which the solves took; ``matvecs − solve_matvecs`` is the cost of the bounds themselves.
    k : int
        The number of triplets of the last solve.
    method : str or tuple of str
        Which bound ``upper`` is, per matrix (a tuple in batch order for a batch): ``"gram-cholesky"``
        (a Cholesky factorization of μI − AᵀA, dense A), ``"subspace"`` (from the solver's subspace
        and ‖A‖_F), ``"norms"`` (√(‖A‖₁‖A‖_∞), sparse A), ``"whole space"`` (a basis of the whole
        space, min(m, n) ≤ 256), ``"fourier"`` (a circular convolution's frequencies), ``"fourier
        embedding"`` (a zero-padded convolution through the circular one on a larger grid) or
        ``"krylov"`` (probabilistic). docs/bounds.md
        derives each.
    """

    certified: torch.Tensor
    failure_probability: torch.Tensor
    matvecs: int
    solve_matvecs: int
    k: int
    method: str | tuple[str, ...]

    def __new__(
        cls, lower, upper, certified, failure_probability, matvecs, solve_matvecs, k, method="subspace"
    ):
        self = super().__new__(cls, lower, upper)
        self.certified = certified
        self.failure_probability = failure_probability
        self.matvecs = matvecs
        self.solve_matvecs = solve_matvecs
        self.k = k
        self.method = method
        return self

    def __getnewargs__(self):
        return tuple(self) + (
            self.certified,
            self.failure_probability,
            self.matvecs,
            self.solve_matvecs,
            self.k,
            self.method,
        )


_CERT_BYTES = 1 << 28  # a float32 dense A up to this many bytes in float64 is copied for the bounds


def _certifying(op: Operator) -> Operator:
    """The operator the bounds' own products use: the same matrix in float64 where that is cheap (a
    float32 dense A of at most 256 MiB in float64, a sparse one whose values take at most that, a
    Conv/Linear layer, another module whose tensors take at most that in float64), so that the
    rounding margins are those of float64; otherwise ``op`` itself, with margins in its dtype. (A
    300×200 float32 sparse A at density 0.05 had an upper bound 2.4e-3 above ‖A‖₂ with float32
    margins, where its dense copy had 2.2e-8; a new user's trial.)"""
    if op.dtype == torch.float64:
        return op
    cert: Operator | None = None
    if isinstance(op, DenseOperator) and op.a.numel() * 8 <= _CERT_BYTES:
        cert = DenseOperator(op.a.to(torch.float64))
    elif isinstance(op, SparseOperator) and op.a._nnz() * 8 <= _CERT_BYTES:
        cert = SparseOperator(op.a.to(torch.float64))
    elif isinstance(op, ScipyOperator) and is_scipy_sparse(op.a) and op.a.nnz * 8 <= _CERT_BYTES:
        cert = ScipyOperator(op.a.astype(np.float64), torch.float64)
    elif isinstance(op, LinearMapOperator):
        cert = op.float64(max_bytes=_CERT_BYTES)
    if cert is None:
        return op
    cert.scale = None if op.scale is None else op.scale.to(torch.float64)
    return cert


def _frobenius_sq(op: Operator, entries=None) -> torch.Tensor | None:
    """An upper bound on ‖c·A‖_F² (float64, shape of the batch) for the operator's scaled matrix, or
    None where it is not known (matrix-free operators); a sparse A's ``entries``
    (:func:`_sparse_entries`) where the caller has them."""
    m, n = op.shape
    if isinstance(op, DenseOperator):
        a = op.a
        if op.scale is not None:
            a = a.to(torch.float64) * op.scale.to(torch.float64)
        total = torch.linalg.vector_norm(a, dim=(-2, -1), dtype=torch.float64).square()
        terms = m * n
    elif (entries := entries if entries is not None else _sparse_entries(op)) is not None:
        total = entries[2].square().sum()
        terms = max(entries[2].numel(), 1)
    elif isinstance(op, LinearMapOperator):
        fro2 = op.frobenius_sq()  # of the layer itself: times the scale's square (a power of two)
        if fro2 is None or op.scale is None:
            return fro2
        return fro2 * op.scale.to(torch.float64).cpu().reshape(op.scale.shape[:-2]).square()
    else:
        return None
    # each square may underflow (at most the smallest normal number lost per entry), and the sum
    # of nonnegative terms is within γ_N of the exact one; the square root is then rounded up by callers
    return total.cpu() * (1 + gamma(terms + 2, torch.float64)) + terms * TINY


def _sparse_entries(op: Operator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """A sparse A's entries (rows, cols, w), one each, w = |c·a_ij| in float64 with c the operator's
    scale (a power of two, applied before any sum: sums near ‖c·A‖'s size neither overflow nor
    underflow, where scaled after, entries of 1e±200 gave inf·0 = NaN; a review); None for other
    operators. A scipy matrix's stored copies of one entry are added up (their squares alone fell
    short of ‖A‖_F²: ten copies of 1 at (0, 0) gave a certified 3.6 for ‖A‖₂ = 10; a review), each sum
    raised by 1 + γ of the most copies to cover its rounding."""
    if not (isinstance(op, SparseOperator) or (isinstance(op, ScipyOperator) and is_scipy_sparse(op.a))):
        return None
    m, n = op.shape
    scale = None if op.scale is None else float(op.scale.reshape(()))  # one matrix
    if isinstance(op, SparseOperator):
        # |values| added up per cell in float64, raised by 1 + γ where a cell has copies: a CSR tensor
        # that repeats a column in a row (which torch's constructor checks only when asked) converts
        # to a COO flagged coalesced with its copies apart, whose squares alone gave a certified upper
        # bound of 5.48 for ‖A‖₂ = 7, below the lower bound (a new user's trial)
        coo = op.a.to_sparse_coo()
        w = coo.values().abs().to(torch.float64)
        w = w if scale is None else w * scale
        summed = torch.sparse_coo_tensor(coo.indices(), w, coo.shape, check_invariants=False).coalesce()
        rows, cols = summed.indices()
        if summed.values().numel() < w.numel():
            flat = coo.indices()[0] * n + coo.indices()[1]
            most = int(torch.unique(flat, return_counts=True)[1].max())
            return rows, cols, summed.values() * (1 + gamma(most + 1, torch.float64))
        return rows, cols, summed.values()
    coo = op.a.tocoo()
    r, c, w = coo.row, coo.col, np.abs(np.asarray(coo.data, dtype=np.float64))
    w = w if scale is None else w * scale
    if not getattr(op.a, "has_canonical_format", False) and w.size:
        cells, where, counts = np.unique(
            np.ravel_multi_index((r, c), (m, n)), return_inverse=True, return_counts=True
        )
        r, c = np.unravel_index(cells, (m, n))
        w = np.bincount(where.ravel(), weights=w) * (1 + gamma(int(counts.max()) + 1, torch.float64))
    return torch.from_numpy(r.astype(np.int64)), torch.from_numpy(c.astype(np.int64)), torch.from_numpy(w)


def _hoelder_sq(op: Operator, entries) -> torch.Tensor:
    """An upper bound on ‖c·A‖₁·‖c·A‖_∞ (float64, 0-dim), which is at least ‖c·A‖₂² (Hölder), for a
    sparse A (torch or scipy) and its ``entries`` (:func:`_sparse_entries`): the largest column and
    row sums of the entries' absolute values. Where a few entries a row set ‖A‖₂ (a graph's
    Laplacian or adjacency matrix) it is tight where the subspace bound stays near ‖A‖_F (the path
    graph's 2000×2000 Laplacian: 4.0 against 109; a new user's trial)."""
    rows, cols, w = entries
    m, n = op.shape
    sums = [
        torch.zeros(size, dtype=torch.float64, device=w.device).index_add_(0, at, w)
        for at, size in ((rows, m), (cols, n))
    ]
    largest = [float(x.max()) if w.numel() else 0.0 for x in sums]
    # Each sum adds at most `terms` nonnegative values (the most stored in a row or column), within
    # γ_terms of the exact sum, plus the smallest normal number a value where a scaled one was
    # subnormal; their product rounds once more.
    terms = op.row_terms or max(m, n)
    grow = 1 + gamma(terms + 2, torch.float64)
    bound = (
        (largest[0] * grow + terms * TINY)
        * (largest[1] * grow + terms * TINY)
        * (1 + gamma(1, torch.float64))
    )
    return torch.tensor(bound, dtype=torch.float64)


def _svd_margin(rows: int, cols: int) -> float:
    """Relative error of the largest singular value from LAPACK's SVD in float64: backward stable,
    so within p(rows, cols)·ε·σ₁; p = 8·(rows + cols) is the margin used (docs/bounds.md)."""
    return gamma(8 * (rows + cols), torch.float64)


def _gram_defect(q64: torch.Tensor) -> torch.Tensor:
    """η ≥ ‖QᵀQ − I‖₂ for the columns of q64 (float64), rounding of the Gram matrix included."""
    n, k = q64.shape[-2:]
    g = q64.mT @ q64
    defect = torch.linalg.matrix_norm(g - torch.eye(k, dtype=g.dtype, device=g.device))
    return defect + 2 * k * gamma(n + 2, torch.float64) * (1 + defect)


def _deterministic(op: Operator, v: torch.Tensor, fro2: torch.Tensor):
    """(lower, upper, f², a²) for ‖c·A‖₂ from the orthonormal-ish columns v (…, n, k); see docs/bounds.md.

    With P the exact orthogonal projector onto span(v), ‖A‖₂² = ‖AᵀA‖₂ is at most the largest
    eigenvalue of [[a², c], [c, f²]] with a = ‖AP‖₂, c = ‖(I − P)AᵀAP‖₂ and f² = ‖A(I − P)‖_F² =
    ‖A‖_F² − ‖AP‖_F² (a block matrix's norm is at most that of the matrix of its block norms). Each
    of a, c, f is replaced by an upper bound that holds for the computed products.
    """
    m, n = op.shape
    k = v.shape[-1]
    f64 = torch.float64
    u_dt = op.dtype
    q64 = v.to(f64).cpu()
    eta = _gram_defect(q64)
    z = op.matmat(v)
    x = op.rmatmat(z)
    z64, x64 = z.to(f64).cpu(), x.to(f64).cpu()
    fro = fro2.sqrt() * (1 + 2 * torch.finfo(f64).eps)
    # ‖Ẑ − AQ‖_F ≤ γ_n ‖A‖_F ‖Q‖_F, and ‖X̂ − AᵀAQ‖_F ≤ ‖A‖_F (e_Z + γ_m ‖Ẑ‖_F)
    q_fro = torch.sqrt(k * (1 + eta))
    e_z = gamma(n, u_dt) * fro * q_fro
    z_fro = torch.linalg.matrix_norm(z64)
    e_x = fro * (e_z + gamma(m, u_dt) * z_fro * (1 + gamma(m * k, f64)))
    s_z = torch.linalg.svdvals(z64)[..., 0]
    svd = _svd_margin(m, k)
    low_eta = (1 - eta).clamp_min(0)
    a_up = (s_z * (1 + svd) + e_z) / low_eta.sqrt()
    lower = (s_z * (1 - svd) - e_z).clamp_min(0) / (1 + eta).sqrt()
    # ‖AP‖_F² ≥ ‖AQ‖_F² / (1 + η) ≥ (‖Ẑ‖_F − e_Z)² / (1 + η)
    ap_fro = (z_fro * (1 - gamma(m * k, f64)) - e_z).clamp_min(0)
    f2 = (fro2 - ap_fro.square() / (1 + eta)).clamp_min(0)
    # ‖(I − P) AᵀAQ‖ ≤ ‖X̂ − Q(QᵀX̂)‖_F + e_X, the first part computed in float64 with its own rounding
    r = x64 - q64 @ (q64.mT @ x64)
    x_fro = torch.linalg.matrix_norm(x64)
    e_r = gamma(2 * n + 2 * k, f64) * (1 + 2 * k * (1 + eta)) * x_fro
    c = (torch.linalg.matrix_norm(r) * (1 + gamma(n * k, f64)) + e_r + e_x) / low_eta.sqrt()
    a2 = a_up.square()
    lam = 0.5 * (a2 + f2) + torch.sqrt((0.5 * (a2 - f2)).square() + c.square())
    upper = torch.sqrt(lam * (1 + 16 * torch.finfo(f64).eps)) * (1 + 4 * torch.finfo(f64).eps)
    upper = torch.where(eta < 0.5, torch.minimum(upper, fro), fro)
    return lower, upper, f2, a2


def _kw_epsilon(dim: int, delta: float, size: int) -> float:
    """ε with 1.648·√N·exp(−√ε·(2k − 1)) = δ for the Krylov space of dimension ``dim`` (k = dim − 1,
    conservative in how the theorem counts its k products), or inf when no ε < 1 does it."""
    k = dim - 1
    if k < 1:
        return math.inf
    root = math.log(_KW * math.sqrt(size) / delta) / (2 * k - 1)
    return root * root if root < 1 else math.inf


def _krylov(mat, rmat, size: int, dim: int, like: torch.Tensor, generator):
    """Orthonormal basis (…, size, dim) of K_dim(MᵀM, q₀) with q₀ a fresh normal draw, and its images.

    Lanczos on MᵀM with full reorthogonalization (twice, against every column). A breakdown (an
    invariant subspace) is continued with a random column: any larger space only raises the Ritz
    value, which keeps the probabilistic bound valid."""
    batch, dt, dev = like.shape[:-2], like.dtype, like.device
    q = orthonormalize(randn(batch + (size, 1), dt, dev, generator), None, generator)
    cols, images = [q], []
    for j in range(dim):
        aq = mat(q)
        images.append(aq)
        if j == dim - 1:
            break
        basis = torch.cat(cols, dim=-1)
        q = orthonormalize(rmat(aq), basis, generator)
        cols.append(q)
    return torch.cat(cols, dim=-1), torch.cat(images, dim=-1)


def _rayleigh_upper(q: torch.Tensor, images: torch.Tensor, size: int):
    """(σ̂, margin, η, g) for the columns q (…, size, d) of a space and their computed images: σ̂ the
    largest singular value of the images, within σ̂·margin of the exact one of the computed images;
    ‖A P_q‖₂ ≤ (σ̂·(1 + margin) + g·‖A‖₂) / √(1 − η), g = γ_size·√(min(m, n)·d·(1 + η)) bounding the
    rounding of the products relative to ‖A‖₂ (‖|A|‖₂ ≤ ‖A‖_F ≤ √min(m, n)·‖A‖₂)."""
    f64 = torch.float64
    q64, z64 = q.to(f64).cpu(), images.to(f64).cpu()
    d, rows = q.shape[-1], images.shape[-2]
    eta = _gram_defect(q64)
    s = torch.linalg.svdvals(z64)[..., 0]
    g = gamma(size, q.dtype) * torch.sqrt(min(rows, size) * d * (1 + eta))
    return s, _svd_margin(rows, d), eta, g


def _probabilistic(op: Operator, basis, dim: int, delta: float, generator):
    """(lower, upper, ε) for ‖c·A‖₂ from K_dim(AᵀA, v₀) (or AAᵀ, the smaller side) and the solver's
    basis; see docs/bounds.md. With dim = min(m, n) the space is everything and ε = 0 (deterministic)."""
    m, n = op.shape
    mat: Callable[[torch.Tensor], torch.Tensor]
    rmat: Callable[[torch.Tensor], torch.Tensor]
    if n <= m:
        mat, rmat, size, own = op.matmat, op.rmatmat, n, basis[1]
    else:
        mat, rmat, size, own = op.rmatmat, op.matmat, m, basis[0]
    like = (
        own if own is not None else torch.empty(op.batch_shape + (size, 0), dtype=op.dtype, device=op.device)
    )
    q, images = _krylov(mat, rmat, size, dim, like, generator)
    full = dim >= size
    eps_kw = 0.0 if full else _kw_epsilon(dim, delta, size)
    bounds = [_rayleigh_upper(q, images, size)]
    if own is not None and own.shape[-1] > 0:  # any space containing the Krylov one only helps
        bounds.append(_rayleigh_upper(own, mat(own), size))
    upper = None
    for s, margin, eta, g in bounds:
        # ‖A‖√(1 − ε) ≤ √ξ ≤ (σ̂(1 + margin) + g‖A‖)/√(1 − η) ⇒ ‖A‖ ≤ σ̂(1 + margin)/(√((1 − ε)(1 − η)) − g)
        denom = torch.sqrt((1 - eps_kw) * (1 - eta).clamp_min(0)) - g
        b = torch.where(denom > 0, s * (1 + margin) / denom.clamp_min(1e-300), torch.full_like(s, math.inf))
        upper = b if upper is None else torch.maximum(upper, b)
    assert upper is not None  # bounds holds the Krylov space's at least
    upper = upper * (1 + 8 * torch.finfo(torch.float64).eps)
    lower = None
    for s, margin, eta, g in bounds:
        # ‖A w‖/‖w‖ ≥ (σ̂(1 − margin) − g‖A‖)/√(1 + η) for the top right singular vector w of the images
        low = (s * (1 - margin) - g * upper.nan_to_num(posinf=0.0)) / (1 + eta).sqrt()
        low = (low * (1 - 4 * torch.finfo(torch.float64).eps)).clamp_min(0)
        lower = low if lower is None else torch.maximum(lower, low)
    return lower, upper, eps_kw


def _best_probabilistic(dim: int, confidence: float, size: int) -> float:
    """1/√(1 − ε): the least upper/lower the probabilistic bound can reach with this Krylov dimension.
    Where the deterministic bound is already as tight, the Krylov space is not built."""
    if dim >= size:
        return 1.0
    eps_kw = _kw_epsilon(dim, 1 - float(confidence), size)
    return 1 / math.sqrt(1 - eps_kw) if eps_kw < 1 else math.inf


def _krylov_dim(solve_matvecs: int, batch: int, size: int) -> int:
    """The Krylov dimension: about what the solve cost per matrix (2·dim − 1 products), at least 32."""
    per = solve_matvecs // max(batch, 1)
    return int(min(size, _MAX_KRYLOV, max(_MIN_KRYLOV, math.ceil(per / 2))))


_EAGER_NORM_BOUNDS: list = []  # norm_bounds, as compiled code calls it; traced, a batch crashed dynamo


def norm_bounds(
    A,
    *,
    tol: float | None = None,
    confidence: float | None = None,
    generator: torch.Generator | None = None,
) -> NormBounds:
    r"""A lower and a guaranteed upper bound on the spectral norm ‖A‖₂.

    Power iteration, Lanczos and LOBPCG only ever underestimate ‖A‖₂; a certificate (a Lipschitz
    constant, a step size) built on an underestimate is unsound. This returns ``lower ≤ ‖A‖₂ ≤
    upper`` with ``upper`` of one of two kinds, flagged per matrix in ``certified`` (and named in
    ``method``):

    - *deterministic* (``certified`` True): proven from floating-point computations whose rounding
      is bounded (docs/bounds.md), with no probability involved. The tightest of those that apply:

      * ``"subspace"``: with V the k right singular vectors :func:`riemsvd.solve` found and P the
        projector on span(V), ‖A‖₂² ≤ λ_max([[a², c], [c, f²]]) where a = ‖AV‖₂, c = ‖(I − P)AᵀAV‖₂
        (a residual: the bound is quadratic in it) and f² = ‖A‖_F² − ‖AV‖_F² (the energy outside
        span(V)). Tight where a few values hold almost all of ‖A‖_F² (decaying, low-rank spectra);
        k starts at 1 and doubles (warm-started, up to 8 for a dense A, 64 otherwise) while f² >
        3/4·a² and the values found could capture enough of it. Needs ‖A‖_F: dense, sparse and
        scipy sparse matrices, the convolutions and Linear layers of :func:`riemsvd.linear_operator`.
      * ``"gram-cholesky"`` (dense A, where the subspace bound is looser): μ = σ̂²(1 + δ), σ̂ the
        solve's σ₁, is proven ≥ ‖A‖₂² by a Cholesky factorization of μI − AᵀA (the Gram matrix of
        the smaller side, N = min(m, n)), both roundings bounded. δ = 32·N·γ_{N+3}: upper/σ̂ − 1 is
        about 16·N²·ε/2, 3e-10 at N = 384 and 3.4e-8 at N = 4096, for any spectrum; a factorization
        that fails (σ̂ below ‖A‖₂ by more than δ/2) is retried with δ tenfold larger.
      * ``"norms"`` (a sparse A, torch or scipy): ‖A‖₂ ≤ √(‖A‖₁‖A‖_∞), from the largest column and
        row sums of the entries' absolute values. Tight where a few entries a row make ‖A‖₂ (a
        graph's Laplacian: 4.0000000000000036 for the path graph's 2000×2000 one, whose ‖A‖₂ is
        3.9999975, where the subspace bound gave 109.4); a random 500×300 matrix of density 0.05 got
        16.8 against 48.3 (‖A‖₂ = 10.3).
      * ``"whole space"`` (min(m, n) ≤ 256, not dense; or with ``confidence`` where the Krylov space
        below would hold the whole space, min(m, n) ≤ its dimension): ‖A‖₂ = ‖AQ‖₂ for a basis Q of
        the whole space, at 2·min(m, n) − 1 products.
      * ``"fourier"`` (:func:`riemsvd.linear_operator` of a stride-1 Conv1d/2d/3d layer with
        ``padding_mode="circular"`` whose output is its input's size): ‖A‖₂ = max over frequencies ω
        of ‖K̂(ω)‖₂, K̂ the kernel's DFT on the input's grid, each c_out×c_in matrix certified by
        the Gram–Cholesky certificate and the DFT's rounding bounded; no solve, and ``lower`` is
        the largest K̂(ω)'s norm less its rounding. Tight (2e-12 to 2e-9 above ‖A‖₂ in float64, 16
        to 512 channels) and about as fast as an SVD of every K̂(ω) (1.0–1.7×). Only the Conv class
        itself (or with a parametrized weight) and without forward hooks: a subclass may compute
        another map.
      * ``"fourier embedding"`` (such a layer with zero padding, any stride, too large to write out
        in 256 MiB): the same bound for the circular convolution on a grid larger by the padding,
        which the layer is a restriction of: proven, not tight (5.8e-4 to 1.7e-3 above ``lower``
        at 64 channels on 32×32, four seeds' weights; 2–4 % on 8×8 inputs), and loose for a stride
        (stride 2: 28 % above ‖A‖₂ at 32 channels on 32×32, 35 % on 8×8; the embedding's circular
        convolution reads every input the stride skips).
    - *probabilistic* (``certified`` False), when ``confidence`` is given: from the largest Ritz value
      ξ of AᵀA (or AAᵀ, the smaller side, of order N = min(m, n)) on a Krylov space K_d with a fresh
      random start v₀ uniform on the sphere, Kuczyński & Woźniakowski (1992), Theorem 4.2(b):
      P(ξ < (1 − ε)·‖A‖₂²) ≤ 1.648·√N·exp(−√ε·(2k − 1)), taken with k = d − 1. Inverted at
      δ = 1 − ``confidence``, ‖A‖₂ ≤ √(ξ / (1 − ε)) with probability at least 1 − δ. The dimension d
      is about what the solve cost (2d − 1 products, d ≥ 32, ≤ 512), so ε shrinks like 1/d².

    With ``confidence`` the smaller of the two is returned, flagged by its kind (the minimum still
    holds with probability ≥ 1 − δ); the Krylov space is skipped where the deterministic bound is
    already tighter than the probabilistic one could be (1/√(1 − ε)). Without ``confidence`` only the
    deterministic bound is computed.

    Parameters
    ----------
    A : torch.Tensor, sparse, scipy sparse, LinearOperator-like or riemsvd operator
        What :func:`riemsvd.solve` accepts, including :func:`riemsvd.linear_operator`, but a
        ``ShardedMatrix`` or a DTensor of any placement (a TypeError says what to do);
        dense tensors ``(*, m, n)`` are batched. Gradients do not flow through the bounds. bfloat16
        and float16 tensors are bounded in float32 (which holds them exactly), then ``lower`` rounded
        down and ``upper`` up to their dtype, so the bounds still hold.
    tol : float, optional
        Relative residual for the solve (default that of :func:`riemsvd.solve`). The subspace bound's
        excess over ‖A‖₂ is about c²/(2‖A‖₂(a² − f²)), i.e. quadratic in ``tol`` once a² > f²; the
        ``"norms"`` bound of a sparse A does not depend on it (below: a flat spectrum's).
    confidence : float, optional
        In (0, 1): also compute the probabilistic bound, failing with probability at most
        1 − confidence.
    generator : torch.Generator, optional
        Source of the solve's start and of the Krylov start v₀ (drawn after the solve, never the
        solve's own start). None: torch's global generator, which they then advance.

    Returns
    -------
    NormBounds
        Unpacks as ``(lower, upper)``, each ``(*)`` in A's dtype (for scipy inputs CPU tensors);
        ``.certified``, ``.failure_probability``, ``.matvecs``, ``.solve_matvecs``, ``.k``,
        ``.method`` (how the upper bound was found: see :class:`NormBounds`).
        ``lower`` is a Rayleigh value ‖A w‖/‖w‖ (= uᵀAv with unit u, v), rounded down (for
        ``"fourier"`` the largest frequency's norm less its rounding). An upper bound beyond the
        largest number of A's dtype (a float16 A of norm above 65504) is inf, with a RuntimeWarning.
        Runs eagerly under ``torch.compile``, behind a graph break; ``fullgraph=True`` refuses it:
        call it outside the compiled function.

    Raises
    ------
    TypeError, ValueError
        For the inputs :func:`riemsvd.solve` refuses, ``confidence`` outside (0, 1), a matrix-free
        operator with min(m, n) > 256 and no ``confidence`` (no deterministic bound exists for it), or
        one whose Aᵀ products (a ``LinearOperator``'s rmatvec, ``linear_operator``'s ``adjoint``) do not
        match its A products: ⟨A x, y⟩ ≠ ⟨x, Aᵀ y⟩ on random x, y beyond 100 times their rounding;
        or whose products are less precise than its dtype beyond what the certificate's rounding
        allowance covers (A(x + y) − A x − A y above 4·γ_p·p of their size, p = min(m, n): computed
        in a lower precision, or from large terms that cancel).

    Notes
    -----
    The subspace bound is tight (upper/lower − 1 of order tol² plus rounding) when the top k
    singular values hold almost all of ‖A‖_F² — low-rank or decaying spectra; for flat spectra
    (Gaussian matrices, most network weights) f ≫ ‖A‖₂ and it is close to ‖A‖_F: there a dense A
    gets the Gram–Cholesky certificate (one Gram matrix and one factorization of order N, less than
    an SVD), and a matrix-free operator the probabilistic bound, with ``confidence``. A sparse A
    gets the lower of the subspace and ``"norms"`` bounds, both loose on a flat spectrum at any
    ``tol``: a random 3000×2000 matrix of density 0.002 had ``upper`` 2.58·‖A‖₂ in 22 ms (a new
    user's trial). Where its dense float64 copy fits, ``norm_bounds(torch.from_numpy(A.toarray()))``
    certifies it by the Gram–Cholesky certificate (1 + 7e-9 there, in 556 ms); ``confidence=0.999``
    gave 1.0135 in 23 ms, probabilistic. The rounding
    model (γ_N = N·u/(1 − N·u) for sums of N terms) assumes
    products computed by classical summation in any order, as BLAS does; the probabilistic bound is
    for the exact Krylov space of the start drawn, computed with full reorthogonalization. For float32
    inputs the bounds' own products (not the solve's) run in float64 where that is cheap — a dense A
    of at most 256 MiB in float64, a sparse one whose values take at most that, the Conv and Linear
    layers of :func:`riemsvd.linear_operator`, and another module whose float64 copy (at most 256 MiB)
    is checked to be the same map — so that float32's rounding (γ_n·‖A‖_F, 0.4 % of ‖A‖₂ for a
    64-channel 32×32 convolution) does not swamp the bound; other float32 operators (functions, given
    adjoints, scipy ``LinearOperator`` objects) get float32 margins.
    Measurements: docs/bounds.md.

    Examples
    --------
    >>> import torch, riemsvd
    >>> g = torch.Generator().manual_seed(0)
    >>> A = (torch.randn(200, 8, dtype=torch.float64, generator=g)
    ...      @ torch.randn(8, 100, dtype=torch.float64, generator=g))  # rank 8
    >>> lower, upper = riemsvd.norm_bounds(A, generator=g)
    >>> exact = torch.linalg.matrix_norm(A, 2)
    >>> bool(lower <= exact <= upper), float(upper / lower - 1) < 1e-10
    (True, True)
    >>> W = torch.randn(1000, 500, dtype=torch.float64, generator=g)  # a flat spectrum
    >>> b = riemsvd.norm_bounds(W, generator=g)
    >>> b.method, bool(b.certified), float(b.upper / torch.linalg.matrix_norm(W, 2) - 1) < 1e-8
    ('gram-cholesky', True, True)
    """
    if torch.compiler.is_compiling():  # host code (numpy, LAPACK): eagerly, behind a graph break
        return eager_under_compile(_EAGER_NORM_BOUNDS, norm_bounds)(
            A, tol=tol, confidence=confidence, generator=generator
        )
    confidence = as_number(confidence)  # a one-element tensor, as tol and the optimizers' numbers take
    # an array as solve takes it: a float16 one too, as the float16 tensor (it was refused; a trial)
    A = _from_numpy(A, half=True)
    check_bounds_args(A, confidence)
    if isinstance(A, torch.Tensor):
        A = A.detach()
        if A.dtype in HALF:  # in float32, which holds A exactly
            b = norm_bounds(A.float(), tol=tol, confidence=confidence, generator=generator)
            lower, upper = (
                rounded_outward(b.lower.double(), A.dtype, up=False),
                _round_up(b.upper.double(), A.dtype),
            )
            failure = b.failure_probability.to(A.dtype)
            return NormBounds(lower, upper, b.certified, failure, b.matvecs, b.solve_matvecs, b.k, b.method)
    problem = prepare(A, 1, tol=tol, generator=generator, method="iterative")
    op = problem.operator(problem.target)
    start = op.matvecs  # an operator passed in may have been used before
    # a convolution's frequencies: exact for circular padding, and a bound for zero padding where the
    # matrix is too large to write out (where it is not, the Gram–Cholesky certificate is tighter)
    # (of the layer's own operator, in its units, where the solve's is a scaled copy)
    own = A if isinstance(A, LinearMapOperator) else op
    before = own.matvecs  # the scaled copy shares the count
    fourier = fourier_bounds(own, zero_padded=math.prod(op.shape) * 8 > _CERT_BYTES)
    if fourier is not None and fourier.exact:
        one = torch.ones((), dtype=torch.bool, device=op.device)
        return NormBounds(
            rounded_outward(torch.tensor(fourier.lower, dtype=torch.float64), op.dtype, up=False).to(
                op.device
            ),
            _round_up(torch.tensor(fourier.upper, dtype=torch.float64), op.dtype).to(op.device),
            one,
            torch.zeros((), dtype=op.dtype, device=op.device),
            own.matvecs - before,
            0,
            0,
            "fourier",
        )
    op = _near_one(probe_scale(op))  # a LinearOperator's size from one product (counted)
    # the caller's Aᵀ, where it has one, which the bounds' solves and Krylov bound use (3000×2000, Aᵀ
    # from A plus 30% noise: bounds [98.42, 98.42] around ‖A‖₂ = 98.89, unsaid)
    # products less precise than their dtype beyond what the certificate's rounding allowance
    # (about γ_p·p relative, p = min(m, n)) covers: 4 times it. Measured (the defect over γ_p·p; bounds
    # wrong on how many seeds): a float64 LinearOperator computing in float32, 8e4 (10 of 10); data
    # 1e6 above their spread centred inside the operator, 95 (3 of 5); float16 products declared
    # float32 at 60×40, 5.4 (3 of 5), bfloat16 37 (4 of 5), at 200×150 2.6 (1 of 5); valid at 0.32
    # (float16, 200×150), 0.75 and 1.25 (data 1e4 above their spread), 2.8 (a difference of two
    # operators 1e-4 apart, float64; a review)
    m, n = op.shape
    size = min(m, n)
    fault = product_fault(op, imprecise=4 * gamma(size, op.dtype) * size)
    if fault is not None:
        raise ValueError(f"riemsvd.norm_bounds: no bound for `A`, because {fault}")
    batch = op.batch_shape
    if batch.numel() == 0:  # an empty batch: nothing to bound (the Gram path had no matrix to take)
        empty = torch.zeros(batch, dtype=op.dtype, device=op.device)
        return NormBounds(empty, empty.clone(), empty.bool(), empty.clone(), 0, 0, 0, ())
    solving = functools.partial(solver_threads, op.device, m * n * batch.numel())
    # the Gram matrix and its factorizations are level-3 BLAS, worth numpy's BLAS threads at any size
    # (torch's stay at one, as in a solve): 0.61–0.62× matrix_norm's time against 0.65× over 18 cases
    # at 384×384 to 384×1536 (docs/bounds.md)
    certifying = functools.partial(solver_threads, op.device)
    # under the solve's thread limits too: torch's reduction for ‖A‖_F, the first call on its 2
    # threads after a pause, took 4.3 ms (their wake-up) of a 384×384 call's 15.6 ms
    with solving():
        cert = _certifying(op)
        entries = _sparse_entries(op)  # a sparse A's, for ‖A‖_F and the norms bound
        fro2 = _frobenius_sq(op, entries)
    cert_start = cert.matvecs
    check_bound_exists(fro2 is not None, size, _FULL_SPACE, confidence)
    tol_ = float(tol) if tol is not None else default_tol(op.dtype, m, n)
    with no_autocast(op.device), torch.no_grad():
        # a dense A, or a layer small enough to write out, has the Gram–Cholesky certificate for what
        # a few triplets leave loose; a small dense A goes to its Gram matrix at once
        dense = _explicit_ok(cert) and fro2 is not None  # the rounding of a written-out layer needs ‖A‖_F
        up_c: torch.Tensor | None = None
        run_loop = True
        if isinstance(cert, DenseOperator) and dense and size <= _GRAM_FIRST:
            assert fro2 is not None  # known for a dense A
            with certifying():
                lower, up_c, upper, basis, concentrated = _gram_first(cert, fro2, generator)
            k, solve_mv = 1, 0
            # where a few values hold the energy (decaying, low-rank spectra) a solve to tol makes the
            # subspace bound tight to tol² (7e-13 for σᵢ = 1/i at 300×150, against the
            # certificate's 4e-11); elsewhere it stays near ‖A‖_F and the certificate is the bound
            run_loop = bool((concentrated & (upper > lower * (1 + tol_))).any())
        if run_loop:
            with solving(), warnings.catch_warnings():
                # an unconverged solve only loosens the bounds; they stay valid
                warnings.simplefilter("ignore", ConvergenceWarning)
                limits = (_K_DENSE, _dense_budget(size)) if dense else (_K_MAX, DEFAULT_MAXITER)
                low_l, up_l, k, out, solve_mv = _deterministic_loop(
                    replace(problem, target=op, operator=as_operator, tol=tol_), cert, fro2, size, *limits
                )
            lower, upper = (
                (low_l, up_l) if up_c is None else (torch.maximum(lower, low_l), torch.minimum(upper, up_l))
            )
            basis = (out.u.to(cert.dtype), out.v.to(cert.dtype))
        certified = torch.ones(batch, dtype=torch.bool)
        method = np.full(tuple(batch), "subspace", dtype=object)
        if fourier is not None:  # a zero-padded convolution: the circular one on a larger grid bounds it
            up_e = torch.tensor(fourier.upper, dtype=torch.float64)
            if op.scale is not None:  # a power of two: exact, but where the result is subnormal
                up_e = ldexp_outward(
                    up_e, torch.log2(op.scale.to(torch.float64).cpu()).round().long().reshape(()), up=True
                )
            method = np.where((up_e < upper).numpy(), "fourier embedding", method)
            upper = torch.minimum(upper, up_e)
        hoelder = None if entries is None else _hoelder_sq(op, entries)
        if hoelder is not None and bool(torch.isfinite(hoelder)):
            up_h = torch.nextafter(hoelder.sqrt(), torch.tensor(math.inf, dtype=torch.float64)).to(upper)
            method = np.where((up_h < upper).numpy(), "norms", method)
            upper = torch.minimum(upper, up_h)
        if up_c is not None:
            method = np.where((up_c < upper).numpy(), "gram-cholesky", method)
            upper = torch.minimum(upper, up_c)
        elif dense and bool((upper > lower * (1 + cholesky_excess(size))).any()):
            assert fro2 is not None  # known for a dense A and a Conv/Linear layer, all that is explicit
            with certifying():
                lower, up_c = _gram_certificate(cert, out, lower, fro2)
            method = np.where((up_c < upper).numpy(), "gram-cholesky", method)
            upper = torch.minimum(upper, up_c)
        elif size <= _FULL_SPACE and bool((upper > lower * (1 + tol_)).any()):
            # small enough for a basis of the whole space: ‖A‖₂ = ‖AQ‖₂ for square orthonormal Q
            with solving():
                low_f, up_f, _ = _probabilistic(cert, basis, size, 0.0, generator)
            method = np.where((up_f < upper).numpy(), "whole space", method)
            lower, upper = torch.maximum(lower, low_f), torch.minimum(upper, up_f)
        if confidence is not None and (dense or size > _FULL_SPACE):
            dim = _krylov_dim(solve_mv, batch.numel(), size)
            if bool((upper > lower * _best_probabilistic(dim, confidence, size)).any()):
                with solving():
                    low_p, up_p, _ = _probabilistic(cert, basis, dim, 1 - float(confidence), generator)
                lower = torch.maximum(lower, low_p)
                if dim >= size:  # the Krylov space is the whole space (ε = 0): as deterministic as above
                    # (a 40×30 matrix's bound 2.7e-13 above ‖A‖₂ had come flagged probabilistic, and a
                    # zero matrix's 0; a new user's trial)
                    method = np.where((up_p < upper).numpy(), "whole space", method)
                else:
                    certified = upper <= up_p
                    method = np.where(certified.numpy(), method, "krylov")
                upper = torch.minimum(upper, up_p)
    failure = torch.where(
        certified,
        torch.zeros((), dtype=torch.float64),
        torch.tensor(1 - float(confidence or 1), dtype=torch.float64),
    )
    if op.scale is not None:  # a power of two: exact, but where the result is subnormal
        exponent = torch.log2(op.scale.to(torch.float64).cpu().reshape(op.scale.shape[:-2])).round().long()
        lower, upper = ldexp_outward(lower, -exponent, up=False), ldexp_outward(upper, -exponent, up=True)
    dtype = op.dtype
    return NormBounds(
        rounded_outward(lower, dtype, up=False).to(op.device),
        _round_up(upper, dtype).to(op.device),
        certified.to(op.device),
        failure.to(dtype).to(op.device),
        op.matvecs - start + (cert.matvecs - cert_start if cert is not op else 0),
        solve_mv,
        k,
        method.item() if method.ndim == 0 else tuple(method.reshape(-1).tolist()),
    )


def _gram_first(cert: DenseOperator, fro2: torch.Tensor, generator):
    """(lower, certificate, subspace bound, basis, concentrated) for a small dense A: Lanczos on its Gram
    matrix, the Gram–Cholesky certificate at the Ritz value, from the refined Ritz vector the Rayleigh
    lower bound, from the top Ritz vectors the subspace bound, and whether they hold all but a
    quarter of the energy (f² ≤ ¾a²: then a solve to tol makes the subspace bound the tighter)."""
    m, n = cert.shape
    a, _ = _explicit(cert, fro2)
    up_c, block, values, lower = gram_first_upper(a, generator)
    block = block.to(device=cert.device, dtype=cert.dtype)
    top = _unit_columns(block[..., :1] if n <= m else cert.rmatmat(block[..., :1]))
    # The subspace bounds of the refined top vector (tight to its residual² on a decaying spectrum)
    # and of the top Ritz vectors (k ≤ 8: for a low-rank one) count only where those may hold all
    # but a quarter of the energy: their f² is ‖A‖_F² less the sum of their Ritz values, and their a²
    # about the first. Where that is over twice the quarter, the bound stays near ‖A‖_F, the
    # certificate is the bound, and their products and rounding terms are skipped (1.4–1.9 ms of a
    # 384×384 call of 13–20 ms, after a pause); the lower bound is then the Rayleigh quotient on G.
    outside = fro2 - values.sum(-1)
    if bool((outside > 2 * _TAIL * values[..., 0]).all()):
        concentrated = torch.zeros_like(outside, dtype=torch.bool)
        up_s = fro2.sqrt() * (1 + 2 * torch.finfo(torch.float64).eps)  # ‖A‖₂ ≤ ‖A‖_F
    else:
        low_1, up_s, _, _ = _deterministic(cert, top, fro2)
        right = torch.linalg.qr(block if n <= m else cert.rmatmat(block))[0]
        low_k, up_k, f2, a2 = _deterministic(cert, right, fro2)
        lower = torch.maximum(lower, torch.maximum(low_1, low_k))
        up_s = torch.minimum(up_s, up_k)
        concentrated = f2 <= _TAIL * a2
    left = _unit_columns(cert.matmat(top))
    up_c = up_c.cpu() * (1 + 2 * torch.finfo(torch.float64).eps)
    return lower, up_c, up_s, (left, top), concentrated


def _unit_columns(x: torch.Tensor) -> torch.Tensor:
    return x / torch.linalg.vector_norm(x, dim=-2, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def _dense_budget(size: int) -> int:
    """Iterations of a dense A's first solve before the Gram–Cholesky certificate takes over. A
    decaying spectrum's subspace bound is tight by then (σᵢ = 1/i: 4e-13 at 384×384, 2e-12 at
    2000×1000); a flat one's Ritz value is refined on the Gram matrix instead, where a step costs N²
    rather than 2·m·n. Measured against N/16 (at least 32): 384×384 0.8–1.0× against 1.1–1.2× the
    time of torch.linalg.matrix_norm, 2000×1000 0.47–0.63× against 0.48–0.65×, same tightness."""
    return max(16, size // 32)


def _explicit_ok(cert: Operator) -> bool:
    """Whether ``cert`` has its matrix in float64 at hand, or a Conv/Linear layer's that is small
    enough to write out (at most 256 MiB)."""
    if isinstance(cert, DenseOperator):
        return cert.dtype == torch.float64
    return (
        isinstance(cert, LinearMapOperator)
        and cert._layer is not None
        and cert.dtype == torch.float64
        and cert.shape[0] * cert.shape[1] * 8 <= _CERT_BYTES
    )


def _explicit(cert: Operator, fro2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Â, e): the operator's scaled matrix in float64 and a bound on ‖Â − c·A‖₂. A dense A is itself
    (e = 0). A layer's matrix is written out column by column, Â e_j = fl(A e_j): each entry a dot
    product of at most n terms of which one is nonzero for a convolution or Linear layer, and in any
    case within γ_n·(|A| e_j)ᵢ of the exact one, so ‖Â − A‖₂ ≤ ‖Â − A‖_F ≤ γ_n·‖A‖_F."""
    m, n = cert.shape
    if isinstance(cert, DenseOperator):
        a = cert.a.to(torch.float64)
        a = a if cert.scale is None else a * cert.scale.to(device=a.device, dtype=torch.float64)
        return a, torch.zeros(cert.batch_shape, dtype=torch.float64)
    eye = torch.eye(n, dtype=torch.float64, device=cert.device)
    step = max(1, (1 << 22) // max(m, 1))  # 32 MiB of columns at a time
    a = torch.cat([cert.matmat(eye[:, j : j + step]) for j in range(0, n, step)], dim=-1)
    return a, gamma(n, torch.float64) * fro2.sqrt() * (1 + 2 * torch.finfo(torch.float64).eps)


def _gram_certificate(cert: Operator, first, lower: torch.Tensor, fro2: torch.Tensor):
    """(lower, upper) from the Gram matrix G of the smaller side: σ̂ = ``lower`` (the Rayleigh value
    of the first solve's vectors), certified by a Cholesky factorization of σ̂²(1 + δ)·I − G
    (riemsvd._certificate), which refines σ̂ and its vector by shift-invert Lanczos where the solve
    had not converged; the lower bound again, from the refined vector (two products)."""
    m, n = cert.shape
    a, error = _explicit(cert, fro2)
    side = (first.v if n <= m else first.u)[..., :1]
    upper, side = gram_cholesky_upper(a, lower, side, first.residual)
    assert side is not None  # a vector was given, so a vector comes back
    right = _unit_columns((side if n <= m else cert.rmatmat(side.to(cert.dtype))).to(cert.dtype))
    refined, _, _, _ = _deterministic(cert, right, fro2)
    return torch.maximum(lower, refined), (upper + error) * (1 + 2 * torch.finfo(torch.float64).eps)


def _near_one(op: Operator) -> Operator:
    """``op`` scaled by a power of two to entries of magnitude within a factor 2 of 1, where they are
    known (``op.magnitude``, read when the operator was made). The bounds square products of products
    (c² ~ σ⁴·residual²): at entries of 1e-76, inside the range the solve leaves alone, c² underflowed
    to 0 and an upper bound came out 4.7e-13 below ‖A‖₂ (tests/fuzz_bounds.py seed 71, case 454)."""
    # a Conv or Linear layer's entries are its weights too: weights of 1e-150 gave a certified upper
    # bound 8% below ‖A‖₂ (a review); a copy is scaled, the caller's operator keeps its units
    return scaled_by_entries(op, limit=2.0)


def _round_up(x: torch.Tensor, dtype) -> torch.Tensor:
    """The upper bound x (float64) in ``dtype``, never below x; inf beyond its range, with a warning
    (a float16 A of norm 134756 had upper = inf, certified, unsaid, where solve warns; a new user's
    trial)."""
    y = x.to(dtype)
    beyond = torch.isinf(y) & torch.isfinite(x)
    if readable_any(beyond, default=False):
        wider = "A.float()" if dtype in HALF else "A.double()"
        warnings.warn(
            f"riemsvd.norm_bounds: the upper bound {float(x[beyond].max()):.6g} exceeds the largest "
            f"{dtype} ({torch.finfo(dtype).max:.6g}) and is returned as inf; pass `{wider}` for a finite "
            "one." + batch_elements(beyond),
            RuntimeWarning,
            stacklevel=callers_level(),
        )
    return rounded_outward(x, dtype, up=True)


def _deterministic_loop(problem: Problem, cert: Operator, fro2, size: int, k_max: int, maxiter: int):
    """Solve ``problem`` (its target the operator, its tol set) for k triplets and bound from them,
    doubling k up to ``k_max`` while the energy outside the subspace (f²) exceeds 3/4 of the captured
    top (a²) in some matrix, the k found could capture the difference (each further value adds at
    most σ_k²), and the bound is not yet within tol. Each solve stops after ``maxiter`` iterations
    (unconverged, its bound is looser but holds).

    Returns (lower, upper, k, outcome, solve products); lower and upper are float64 on the CPU, and
    upper is inf where ‖A‖_F is not known."""
    op, tol = problem.target, problem.tol
    assert tol is not None  # the caller's, set
    k = min(size, _K0)
    k_max = min(size, k_max)
    init, best_low, best_up, solve_mv = None, None, None, 0
    while True:
        out, info, _ = execute(replace(problem, k=k, maxiter=maxiter, init=init))
        solve_mv += int(info.matvecs)
        if fro2 is None:
            low = torch.zeros(op.batch_shape, dtype=torch.float64)  # the Krylov step gives the lower one
            return low, torch.full_like(low, math.inf), k, out, solve_mv
        low, up, f2, a2 = _deterministic(cert, out.v.to(cert.dtype), fro2)
        best_low = low if best_low is None else torch.maximum(best_low, low)
        best_up = up if best_up is None else torch.minimum(best_up, up)
        # each further value found adds at most σ_k² to the captured energy
        sk2 = out.s[..., -1].to(torch.float64).cpu().square()
        excess = f2 - _TAIL * a2
        loose = (excess > 0) & (excess <= (k_max - k) * sk2) & (best_up > best_low * (1 + tol))
        if k >= k_max or not bool(loose.any()):
            return best_low, best_up, k, out, solve_mv
        init = (out.u, out.v)
        k = min(k_max, 2 * k)
