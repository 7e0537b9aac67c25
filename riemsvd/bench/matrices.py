"""The test matrices, one generator per class, shared by the benchmarks and the test suite
(tests/matrices.py), and a matrix in the forms the benchmark's solvers take (``Problem``).

Each class draws its float64 matrix from the generator in a fixed order, so that a seed always gives the same
matrix: the recorded benchmark figures and the test suite's replayed seeds depend on it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.sparse
import torch

__all__ = ["CLASSES", "GENERATORS", "Problem", "check_classes", "make_matrix", "make_problem", "orthonormal"]

SPARSE_DENSITY = 0.01
WEIGHT_RANK, WEIGHT_SCALE, WEIGHT_DECAY = 32, 3.0, 0.7  # ``weight``: σᵢ = 3·edge / i^0.7, i ≤ 32
GRADIENT_RANK, GRADIENT_NOISE = 8, 1e-2  # ``gradient``: rank 8, σ 1 → 0.1, noise ‖E‖₂ ≈ 1e-2


def orthonormal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """Haar-random orthonormal columns, float64 (the QR factor with the signs of R's diagonal taken out)."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _with_singular_values(u: torch.Tensor, s: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    # ``scale`` multiplies the factor before the product, as the test suite always has: the matrices its
    # recorded seeds replay are these to the last bit.
    return (scale * (u * s)) @ v.mT


def _haar_vectors(m: int, n: int, s: torch.Tensor, gen: torch.Generator, scale: float) -> torch.Tensor:
    """U diag(s) Vᵀ with Haar-random U, V drawn after ``s``."""
    u, v = orthonormal(m, len(s), gen), orthonormal(n, len(s), gen)
    return _with_singular_values(u, s, v, scale)


def _clustered(r: int, top: int, gen: torch.Generator) -> torch.Tensor:
    """The top ``top`` values 1, 1 − 1e-3, 1 − 2e-3, …; the rest uniform in [0, 0.5); descending."""
    top = min(r, top)
    rest = 0.5 * torch.rand(r - top, generator=gen, dtype=torch.float64)
    s = torch.cat([1.0 - 1e-3 * torch.arange(top, dtype=torch.float64), rest])
    return torch.sort(s, descending=True).values


def gaussian(m: int, n: int, gen: torch.Generator, scale: float) -> torch.Tensor:
    """i.i.d. N(0, 1) entries."""
    return scale * torch.randn(m, n, generator=gen, dtype=torch.float64)


def lowrank(m: int, n: int, gen: torch.Generator, scale: float) -> torch.Tensor:
    """Rank 10 with σ from 1 to 0.5, plus Gaussian noise of spectral norm about 1e-3."""
    r = min(10, m, n)
    u, v = orthonormal(m, r, gen), orthonormal(n, r, gen)
    noise = torch.randn(m, n, generator=gen, dtype=torch.float64) * (1e-3 / (m**0.5 + n**0.5))
    return scale * ((u * torch.linspace(1.0, 0.5, r, dtype=torch.float64)) @ v.mT + noise)


def decay(m: int, n: int, gen: torch.Generator, scale: float) -> torch.Tensor:
    """σᵢ = 1/i."""
    return _haar_vectors(m, n, 1.0 / torch.arange(1, min(m, n) + 1, dtype=torch.float64), gen, scale)


def cluster(m: int, n: int, gen: torch.Generator, scale: float) -> torch.Tensor:
    """The top 10 σ 1e-3 apart (1, 0.999, …), the rest below 0.5."""
    return _haar_vectors(m, n, _clustered(min(m, n), 10, gen), gen, scale)


def cond1e12(m: int, n: int, gen: torch.Generator, scale: float) -> torch.Tensor:
    """σ logarithmically spaced from 1 to 1e-12."""
    return _haar_vectors(m, n, torch.logspace(0, -12, min(m, n), dtype=torch.float64), gen, scale)


def sparse(m: int, n: int, gen: torch.Generator, scale: float) -> scipy.sparse.csr_matrix:
    """A scipy CSR matrix with 1 % of its entries N(0, 1)."""
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
    return scale * a


def weight(m: int, n: int, gen: torch.Generator, scale: float) -> torch.Tensor:
    """Like a trained layer's weight: a Gaussian init with N(0, 1/n) entries (a flat bulk up to the edge
    e = 1 + √(m/n)) plus r = 32 learned directions with σᵢ = 3e / i^0.7 (Haar-random vectors), so the
    top values stand out of the bulk and the later ones sink into it."""
    r = min(WEIGHT_RANK, m, n)
    edge = 1.0 + (m / n) ** 0.5  # ‖G‖₂ of G with N(0, 1/n) entries, for large m, n
    s = WEIGHT_SCALE * edge / torch.arange(1, r + 1, dtype=torch.float64) ** WEIGHT_DECAY
    bulk = torch.randn(m, n, generator=gen, dtype=torch.float64) / n**0.5
    return scale * (bulk + _haar_vectors(m, n, s, gen, 1.0))


def gradient(m: int, n: int, gen: torch.Generator, scale: float) -> torch.Tensor:
    """Like an LLM gradient: rank 8 with σ from 1 down to 0.1 (geometric), plus Gaussian noise of
    spectral norm about 1e-2."""
    r = min(GRADIENT_RANK, m, n)
    s = torch.logspace(0, -1, r, dtype=torch.float64)
    noise = torch.randn(m, n, generator=gen, dtype=torch.float64) * (GRADIENT_NOISE / (m**0.5 + n**0.5))
    return scale * (_haar_vectors(m, n, s, gen, 1.0) + noise)


def floor(m: int, n: int, gen: torch.Generator, scale: float) -> torch.Tensor:
    """Five σ from 1 to 0.5 over a floor of 1e-3 (the test suite's ``lowrank``)."""
    r = min(m, n)
    u, v = orthonormal(m, r, gen), orthonormal(n, r, gen)
    big = min(r, 5)
    # The floor is float32's 1e-3 (torch.full's default dtype), as the test suite has always drawn it.
    s = torch.cat([torch.linspace(1.0, 0.5, big, dtype=torch.float64), torch.full((r - big,), 1e-3)])
    return _with_singular_values(u, s, v, scale)


def cluster6(m: int, n: int, gen: torch.Generator, scale: float) -> torch.Tensor:
    """The top 6 σ 1e-3 apart, the rest below 0.5 (the test suite's ``cluster``; unlike ``cluster``, the
    singular values are drawn after the vectors)."""
    r = min(m, n)
    u, v = orthonormal(m, r, gen), orthonormal(n, r, gen)
    return _with_singular_values(u, _clustered(r, 6, gen), v, scale)


# Every class by name; the benchmark's own are CLASSES, ``floor`` and ``cluster6`` the test suite's.
GENERATORS: dict[str, Callable[[int, int, torch.Generator, float], Any]] = {
    f.__name__: f
    for f in (gaussian, lowrank, decay, cluster, cond1e12, sparse, weight, gradient, floor, cluster6)
}
CLASSES = ("gaussian", "lowrank", "decay", "cluster", "cond1e12", "sparse", "weight", "gradient")


def check_classes(classes: list[str]) -> None:
    """ValueError naming the classes of ``classes`` that are not the benchmark's."""
    unknown = set(classes) - set(CLASSES)
    if unknown:
        raise ValueError(f"`classes`: unknown {sorted(unknown)}; choose from {list(CLASSES)}")


def make_matrix(kind: str, m: int, n: int, dtype: torch.dtype, gen: torch.Generator, scale: float = 1.0):
    """An m×n test matrix of the class ``kind`` times ``scale``, on the CPU.

    Generated in float64 and rounded to ``dtype``. ``sparse`` is returned as a scipy CSR matrix (of
    float32 or float64), every other class as a dense torch tensor. The benchmark's classes are CLASSES:
    ``gaussian``, ``lowrank``, ``decay``, ``cluster``, ``cond1e12`` (these with Haar-random singular
    vectors except ``gaussian`` and the noise of ``lowrank``), ``sparse``, ``weight`` and ``gradient``;
    see each generator's docstring. ``floor`` and ``cluster6`` are the test suite's.

    Examples
    --------
    >>> a = make_matrix("cond1e12", 40, 30, torch.float64, torch.Generator().manual_seed(0))
    >>> s = torch.linalg.svdvals(a)
    >>> round(float(s[0] / s[-1]) / 1e12, 2)
    1.0
    """
    if kind not in GENERATORS:
        raise ValueError(f"`kind` must be one of {list(GENERATORS)}, got {kind!r}")
    a = GENERATORS[kind](m, n, gen, scale)
    if kind == "sparse":
        return a.astype(np.float32 if dtype == torch.float32 else np.float64)
    return a.to(dtype)


def _to_torch_sparse(a: scipy.sparse.csr_matrix, device: str) -> torch.Tensor:
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
    """The matrix of class ``kind`` and size m×n for ``seed``: the same for every run and every solver."""
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
