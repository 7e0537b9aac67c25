"""Where the solver's tall vectors live: their inner products, norms, QR and random draws.

A vector of length m (a column of U) or n (a column of V) is held whole by this process as a torch
tensor (``Space``) or, for the solver on the CPU, as a numpy array (``HostSpace``), or split by rows
across processes (``riemsvd._distributed.ShardedSpace``, which sums the parts with collectives). The
solver and the backward reduce over rows, allocate and convert vectors only through these methods.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from scipy.linalg.blas import get_blas_funcs

from riemsvd._backend import mm

__all__ = ["HostSpace", "Space", "blas_for", "randn"]


@functools.cache
def blas_for(dtype) -> tuple:
    """scipy's (gemv, axpy, nrm2, scal) for a numpy dtype, and its machine epsilon: the level-1/2
    kernels of the solver's one-column steps on the host."""
    return (*get_blas_funcs(("gemv", "axpy", "nrm2", "scal"), dtype=dtype), float(np.finfo(dtype).eps))


def randn(shape, dtype, device, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal samples drawn on the generator's device, then moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, dtype=dtype, device=gen_device, generator=generator).to(device)


# Batches of at least this many matrices take :func:`cholesky_qr` on these devices, where torch's
# Householder QR factors each matrix in its own cuSOLVER calls. Whole iterative solves on an H200
# (float32 but for two; docs/records/bench_gpu_2026-12-04_h200_cholesky_qr_ab.txt) took 0.42–0.83 of their
# time with it for batches of 8 to 1024 (96 of 384×384, k = 1: 202 ms, now 84; 1024 of 64×64: 1387,
# now 749), the same products and residuals; a batch of 2 matrices of 2000×1000 took 1.28 of it, its
# QR two calls against Cholesky QR's dozen.
BATCHED_QR_FROM = 8
BATCHED_QR_DEVICES = ("cuda",)
# a first-pass pivot of :func:`cholesky_qr` below this fraction of its column's norm sends x to
# Householder QR: 64 times √ε, the floor of a float64 Gram matrix's pivots
_STEEP = 2.0**-20


def cholesky_qr(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Reduced QR of a batch of tall x (..., rows, c), c ≤ rows, by Cholesky QR twice in float64:
    R = Lᵀ from the Cholesky factor L of xᵀx and Q = x R⁻¹, then again on Q. Two products, two
    factorizations and two triangular solves for the whole batch, and one host read: None where a
    factorization broke down (x rank deficient, not finite, or its squares out of range) or where x
    is ill-conditioned (a pivot of the first below 2⁻²⁰ of its column's norm, about a condition number
    of 10⁶): the Gram matrix's rounding floors every pivot near √ε (about 1e-8) of its column, so a
    column that held only rounding noise would come out as a direction with a pivot of that size,
    where Householder QR's R, which the callers read (:func:`riemsvd._deferred._lost`,
    ``_subspace._orth``), shows it at ε."""
    q = x.to(torch.float64)
    gram = q.mT @ q
    lower, info = torch.linalg.cholesky_ex(gram)
    pivots = torch.diagonal(lower, dim1=-2, dim2=-1)
    steep = pivots < _STEEP * torch.diagonal(gram, dim1=-2, dim2=-1).sqrt()
    q = torch.linalg.solve_triangular(lower.mT, q, upper=True, left=False)
    lower2, info2 = torch.linalg.cholesky_ex(q.mT @ q)
    q = torch.linalg.solve_triangular(lower2.mT, q, upper=True, left=False)
    if bool(((info != 0) | (info2 != 0) | steep.any(-1)).any()):  # NaN pivots compare False: not steep
        return None
    return q.to(x.dtype), (lower2.mT @ lower.mT).to(x.dtype)


class Space:
    """Vectors of ``rows`` entries held whole by this process; tall tensors have shape (..., rows, c).

    Attributes
    ----------
    rows : int
        Length of the vectors.
    local_rows : int
        How many of their entries this process holds (all of them here).
    communicated : int
        Numbers this process has sent to collectives on behalf of this space (none here).
    distributed : bool
        Whether the vectors are split across processes (False here).
    """

    distributed = False

    def __init__(self, rows: int) -> None:
        self.rows = self.local_rows = int(rows)
        self.communicated = 0

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over processes of per-process partial sums ``t`` (here: ``t``)."""
        return t

    def inner(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """aᵀ b, shape (..., ca, cb), for a (..., rows, ca) and b (..., rows, cb)."""
        return self.reduce(mm(a.mT, b))

    def dots(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Column-wise aᵀb, shape (..., c)."""
        return self.reduce((a * b).sum(-2))

    def norms(self, x: torch.Tensor) -> torch.Tensor:
        """Column norms, shape (..., c)."""
        return torch.linalg.vector_norm(x, dim=-2)

    def project_out(self, basis: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(I − basis basisᵀ) x for orthonormal ``basis``."""
        return x - mm(basis, self.inner(basis, x))

    def qr(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduced QR of the tall x: Q with the shape of x, R (..., c, c)."""
        if x.device.type in BATCHED_QR_DEVICES and x.dim() > 2 and x.shape[:-2].numel() >= BATCHED_QR_FROM:
            done = cholesky_qr(x)
            if done is not None:
                return done
        return torch.linalg.qr(x)

    def randn_like(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Standard normal vectors shaped like the tall x."""
        return self.randn(x.shape[:-2], x.shape[-1], x.dtype, x.device, generator)

    def randn(self, batch, cols: int, dtype, device, generator: torch.Generator | None) -> torch.Tensor:
        """Standard normal vectors, shape batch + (local_rows, cols)."""
        return randn(tuple(batch) + (self.rows, cols), dtype, device, generator)

    # Plumbing for the solver, whose vectors are tensors here and numpy arrays in a HostSpace.

    def empty(self, batch, cols: int, dtype, device) -> torch.Tensor:
        """An uninitialized buffer of shape batch + (local_rows, cols)."""
        return torch.empty(tuple(batch) + (self.local_rows, cols), dtype=dtype, device=device)

    def adopt(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor from outside the solver as this space's kind of array."""
        return t

    def release(self, x) -> torch.Tensor:
        """The solver's array as a tensor (no copy where possible)."""
        return x

    def copy(self, x):
        return x.clone()

    def take_columns(self, x, order: np.ndarray):
        """x's columns in the host ``order`` (..., c) per batch element."""
        idx = torch.from_numpy(np.ascontiguousarray(order)).to(x.device)
        return torch.gather(x, -1, idx.unsqueeze(-2).expand(x.shape[:-1] + idx.shape[-1:]))

    def select(self, mask: np.ndarray, a, b):
        """Columns of ``a`` where the host mask (..., c) is True, of ``b`` elsewhere."""
        return torch.where(torch.from_numpy(np.array(mask, dtype=bool)).to(a.device).unsqueeze(-2), a, b)

    @staticmethod
    def to_host(t) -> np.ndarray:
        """A small array as float64 numpy (a view where it is one already); a device sync on a GPU."""
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        return t.numpy().astype(np.float64, copy=False)

    @staticmethod
    def from_host(a: np.ndarray, like):
        """A small host array as an array like ``like`` (dtype, device)."""
        return torch.from_numpy(np.ascontiguousarray(a)).to(like.device, like.dtype)


def _column_sums(x: np.ndarray) -> np.ndarray:
    """The sums of x's columns (over its rows, axis −2), each summed pairwise. numpy sums pairwise
    only along the axis it walks in memory order; down the columns of a row-major (m, k) array it
    adds row after row, with an error that grows like m·ε where the terms share their rounding: the
    σ₁ of a 1536×384 float32 matrix of identical rows came 2.6e-5 off at k ≥ 2 (4e-8 at k = 1, a
    column summed pairwise), its vectors accurate, and the solve stalled above tol; in float64 σ₁
    came 4e-14 off, beyond the products' own rounding, ε·√max(m, n). The (…, k, m) copy costs less
    than the row-after-row sum saved (4000×8: 28–47 µs a sum against 90–96)."""
    return np.ascontiguousarray(x.swapaxes(-1, -2)).sum(-1)


# The solver's dtypes on the host, both ways (a torch call per lookup took 3 µs, four a solve)
_NUMPY_DTYPE = {torch.float32: np.float32, torch.float64: np.float64}
_TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


class HostSpace(Space):
    """Vectors held whole by this process as numpy arrays: the CPU solver's inner loop.

    Each numpy call on a vector of a few hundred entries costs about a microsecond, a torch call
    2–3 µs plus a conversion for numpy's BLAS (measured on this project's 2-core machines); an
    iteration makes some twenty of them beside its two products."""

    def inner(self, a, b):
        return np.matmul(a.swapaxes(-1, -2), b)

    def dots(self, a, b):
        return _column_sums(a * b)

    def norms(self, x):
        return np.sqrt(_column_sums(x * x))

    def qr(self, x):
        if x.ndim == 2 and x.shape[1] == 1 and x.shape[0] > 1:  # a column: scaled, 2 µs against 28
            norm = float(blas_for(x.dtype)[2](x[:, 0]))  # BLAS's nrm2 neither overflows nor underflows
            if 0 < norm < math.inf:
                r = -norm if x[0, 0] >= 0 else norm  # R₁₁ = −sign(x₁)·‖x‖, as LAPACK's Householder QR
                return x / r, np.full((1, 1), r, dtype=x.dtype)
        return np.linalg.qr(x)

    def randn(self, batch, cols: int, dtype, device, generator):
        return super().randn(batch, cols, dtype, device, generator).numpy()

    def randn_like(self, x, generator):
        return self.randn(x.shape[:-2], x.shape[-1], _TORCH_DTYPE[x.dtype.type], "cpu", generator)

    def empty(self, batch, cols: int, dtype, device):
        # Column-major per matrix: a basis vector is contiguous, and Bᵀx, B c run 30% faster on a
        # 2000×24 basis than in a row-major buffer's column slice (numpy's OpenBLAS gemv).
        np_dtype = _NUMPY_DTYPE[dtype]
        return np.empty(tuple(batch) + (cols, self.local_rows), dtype=np_dtype).swapaxes(-1, -2)

    def adopt(self, t: torch.Tensor):
        return t.detach().numpy()

    def release(self, x) -> torch.Tensor:
        return torch.from_numpy(x)

    def copy(self, x):
        return x.copy()

    def take_columns(self, x, order: np.ndarray):
        return np.take_along_axis(x, order[..., None, :], axis=-1)

    def select(self, mask: np.ndarray, a, b):
        return np.where(mask[..., None, :], a, b)

    @staticmethod
    def to_host(t) -> np.ndarray:
        return np.asarray(t, dtype=np.float64)

    @staticmethod
    def from_host(a: np.ndarray, like):
        return a.astype(like.dtype, copy=False)
