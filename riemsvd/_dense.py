"""The dense path of ``riemsvd.solve``: the k leading triplets from a whole decomposition.

Where A is small, or k a sizeable fraction of min(m, n), one LAPACK call beats any iteration; the cost
model that decides is :func:`prefer_dense`, calibrated in docs/algorithm.md. The results have the
iterative path's meaning: sorted triplets, and residuals from fresh products with A (``verify``).

float32: the top eigenvectors of the smaller Gram matrix, formed and decomposed in float64. Its
errors are those of float64 on the squared singular values: σᵢ² to about ε₆₄·σ₁², so the residual
of a triplet is about ε₆₄·σ₁²/σᵢ relative to σ₁ and the loss of orthogonality between the vectors
computed as A vᵢ/σᵢ about ε₆₄·σ₁²/(σᵢσⱼ) — far below float32's resolution unless σ_k < 1e-4·σ₁. The
orthogonality is checked on the result (it is the larger of the two errors); where it falls short, and
for float64 (whose tolerances are close to ε₆₄ itself), a LAPACK SVD (gesdd) of A in its own dtype.
Either way ``verify`` then reports the residual.
"""

from __future__ import annotations

import functools
import glob
import math
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.linalg.blas import dsyrk

from riemsvd._backend import mm_t, numpy_view, readable_any
from riemsvd._certificate import _top_eigenpairs
from riemsvd._operator import DenseOperator
from riemsvd._space import HostSpace, Space
from riemsvd._subspace import Outcome, orthonormalize, verify
from riemsvd._tolerance import FLOAT32_CAST_LEAST, FLOAT32_COPY_BELOW, TINY, default_tol, eps, product_floor

__all__ = ["dense_svd", "prefer_dense", "prefer_dense_to_copy"]


def prefer_dense(shape, batch: int, k: int, dtype: torch.dtype, device, tol: float) -> bool:
    """Whether the dense path is expected to take less time than the iteration, by a cost model
    fitted to measured times (docs/algorithm.md, "The dense path"): the CPU's, or on a CUDA device
    :func:`_prefer_dense_on_gpu`'s; on other devices (not measured) the iteration. In float32 on the
    CPU below ``FLOAT32_COPY_BELOW``, where a float64 copy of A is iterated, the copy's price decides
    first (:func:`prefer_dense_to_copy`); where no copy could be made, the dense path also serves up
    to the sizes where it was measured (1024 wide, 2²² entries).

    A warm start does not enter: it made the model take the iteration where a cold start took the
    dense path, and in 21 of 22 such cases the warm iteration took 1.2–3.1× the dense path's time
    (k = 1 to 8, 32×32 to 256×192 and batches of them, A perturbed by 1e-3 or 1e-5; a new user's
    trial: a batch (4, 100, 60), k = 3, warm 11.3 ms against 3.9 cold). Warm starts save least
    where the dense path wins: at k > 1 (0.73–0.88 of the cold products there), and where the start
    is a singular pair already, which the probe for a larger value then costs 8–32 products
    (docs/algorithm.md, "Warm starts")."""
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda"):
        return False
    m, n = shape
    p = min(m, n)
    # Products grow with k and with the digits asked for (Lanczos converges linearly in log tol).
    digits = max(0.3, math.log(tol) / math.log(default_tol(dtype, m, n)))
    if kind == "cuda":
        return _prefer_dense_on_gpu(m, n, batch, k, dtype, digits)
    if _narrow(m, n, batch):
        return True
    if dtype == torch.float32 and tol < FLOAT32_COPY_BELOW:
        # reached where no float64 copy is iterated (riemsvd._solve._iterates_in_float64 declined it):
        # where the copy's price chose the dense path, the dense path; where torch.func's transforms,
        # torch.compile or more than 2²⁷ entries ruled the copy out, float32's own iteration would
        # stall, so the dense path up to the sizes measured too (a review: under torch.func.vmap and
        # grad the copy's price had chosen an iteration that ran in float32 and stalled at 2.6e-7 at
        # tol 1e-7, 400×300, k = 4)
        return prefer_dense_to_copy(shape, batch, k, tol) or (
            p <= _PRECISION_DENSE_UP_TO and batch * m * n <= _PRECISION_DENSE_ENTRIES
        )
    c = _COSTS[dtype]
    return _dense_cost(c, m, n, batch) < _iterative_cost(c, m, n, batch, k, digits, dtype.itemsize)


def _dense_cost(c: _Costs, m: int, n: int, batch: int) -> float:
    """The model's time for the dense path on a batch of m×n matrices (its Gram matrix or SVD)."""
    p = min(m, n)
    return batch * (c.gram * m * n * p + c.eigen * p**3) + c.fixed


def _iterative_cost(c: _Costs, m: int, n: int, batch: int, k: int, digits: float, itemsize: int) -> float:
    """The model's time for the iteration on a batch of m×n matrices whose entries take ``itemsize``
    bytes, for k triplets and ``digits`` times the default tol's products."""
    products = (c.products + c.products_per_k * k) * digits
    per_entry = c.product * _memory_factor(batch * m * n * itemsize)
    return products * (per_entry * batch * m * n + c.per_product + _PER_BATCH_PRODUCT * (batch - 1))


def _prefer_dense_on_gpu(m: int, n: int, batch: int, k: int, dtype: torch.dtype, digits: float) -> bool:
    """The cost model of :func:`prefer_dense` on a GPU, where both paths cost what their launches and
    the solver library's calls cost more than their arithmetic (one H200, float32 and float64, 47
    cases each from 128×128 to 4000×2000 and batches of 8 to 64 matrices, k = 1 to 128; record
    docs/records/bench_gpu_2026-12-04_h200_dense_vs_iterative.csv). The dense path's time barely depends on
    k or on the longer side: 2.9–28 ms in float32 (the float64 Gram matrix's eigh) and 4.7–336 ms in
    float64 (the SVD), as p = min(m, n) goes from 128 to 2000. The iteration's barely depends on the
    matrix: about 6 ms in float32 and 11–28 in float64 at k = 1, 12–22 at k = 4, then 60–550 ms at
    k = 16 to 32 and up to 4.9 s at k = 128 (its blocks of 8 and restarts, 3424 products for k = 128
    of a 4000×2000 matrix in float32, beside 12 ms for the dense path). Always taking the iteration,
    as before, took 6.95× (float32) and 2.76× (float64) the better path's time in geometric mean;
    this model's choice takes 1.03× and 1.12× on those cases, 2.1× and 2.3× at worst (k = 1 of 64
    matrices of 64×64 in float32, k = 16 of 4096×1024 in float64), and 1.024× and 1.051× on 24
    held-out cases each (2.57× at worst, where it kept the iteration).

    Outside the range measured (sides up to 4096, batches up to 64, 2²³ entries in all) the iteration
    stays, as before: the dense path copies a float32 A to float64 and forms its Gram matrix, work
    and memory that grow with m·n·p, which the fit did not see (a 10⁷×512 float32 A, 20 GB, would have
    gone dense; a review). Two rules measured later come first: a batch whose dense problem is at
    most 32 wide goes dense (cuSOLVER's batched Jacobi: 1.5–5.7 ms for 2 to 256 matrices, against
    6.6–97 ms for the iteration, 80 cases with sides up to 128; taken up to sides of 4096 and 2²⁴
    entries, where the dense path's float64 copy and Gram matrix stay small: not measured there;
    docs/records/bench_gpu_2026-12-04_h200_small_batches_jacobi.csv),
    and batches of more than 64 matrices, whose iteration the batch term underprices (it priced (256,
    128, 128) at k = 1 at 66 ms, which took 0.9–1.0 s), have their own
    (:func:`_prefer_dense_for_gpu_batch`). Nor was a GPU of lesser float64 throughput measured."""
    p = min(m, n)
    if max(m, n) > 4096:
        return False
    jacobi = (p if dtype == torch.float32 else max(m, n)) <= _GPU_JACOBI_UP_TO
    if batch > 1 and jacobi and batch * m * n <= 1 << 24:
        return True
    if batch > 64:
        return _prefer_dense_for_gpu_batch(m, n, batch, k, dtype)
    if batch * m * n > 1 << 23:
        return False
    c = _GPU_COSTS[dtype]
    dense = batch**c.batch * (c.fixed + c.square * p * p)
    iterative = digits * c.first * (1 + c.per_k * (k - 1)) ** c.growth * (1 + c.per_matrix * (batch - 1))
    return dense < iterative


# One matrix on the CPU at most this wide (and of at most 2²² entries, whose float64 copy and Gram
# matrix stay small) goes dense whatever tol asks: the fit's products, scaled down for a loose tol,
# had it iterate where the iteration's own fixed cost, not its products, sets the time. At tol 1e-4,
# on the 20 cases where the model took the iteration (10×2 to 4000×24, k = 1 to 4, float32 and
# float64; medians of 15, 2 threads), the dense path took 0.19–1.37 ms against 0.39–2.12, and was
# slower on 2 (float64, k = 1: 128×32, 0.46 against 0.42 ms; 4000×24, 1.28 against 1.01). Exact, it
# does not return σ₂ for σ₁ as a one-column Krylov space can at a loose tol (a new user's trial: at
# tol 1e-4, σ₂ = (1 − 3e-4)·σ₁ came back converged on 20 of 200 seeds of a 10×2 matrix).
_CPU_DENSE_UP_TO = 32


def _narrow(m: int, n: int, batch: int) -> bool:
    """One m×n matrix at most ``_CPU_DENSE_UP_TO`` wide and of at most 2²² entries: dense on the CPU
    whatever tol asks (:func:`prefer_dense`, :func:`prefer_dense_to_copy`)."""
    return batch == 1 and min(m, n) <= _CPU_DENSE_UP_TO and m * n <= 1 << 22


def prefer_dense_to_copy(shape, batch: int, k: int, tol: float) -> bool:
    """For a float32 A on the CPU at a tol below ``FLOAT32_COPY_BELOW``, which float32's own
    iteration cannot reach (its vectors stalled at 3.3–4.8e-7 on trained-like weights at tol 1e-7; a
    new user's trial), whether the dense path (its float64 Gram matrix) is expected to beat the
    iteration in a float64 copy of A (riemsvd._solve._iterates_in_float64, which asks, where the
    copy can be made), solved to a quarter of max(tol, FLOAT32_CAST_LEAST): both priced by the
    model's constants, float64's for the copy's products; the narrowest matrices dense, as at any
    tol (``_CPU_DENSE_UP_TO``).

    The dense path had served there whatever it cost, up to the sizes measured (1024 wide, 2²²
    entries), from before the copy iterated below 4·ε: on 126 cases (384×384 to 1024×4096, Gaussian
    and decaying, tol 1e-7, 3e-7 and 6e-7, k = 1, 8, 32; two threads, 2-core AMD EPYC) it took 1.85×
    the time of the faster path in geometric mean, 13.8× at worst (1024×1024 at k = 1: 175 ms against
    13), a new user's trial 4.2–5.6× (4000×800, k = 1, tol 1e-8). Priced so, at 1.056× (1.92× at worst,
    4000×800 Gaussian at k = 8, tol 1e-7: the iteration 370 ms against 193); every iteration there
    reached tol, as did every dense solve. On one thread the iteration took up to 3.6× the dense
    path's time where this chose it (4000×800 at k = 8, tol 1e-7; a review)."""
    m, n = shape
    if _narrow(m, n, batch):
        return True
    copy_tol = 0.25 * max(tol, FLOAT32_CAST_LEAST)  # as riemsvd._solve._solve_in_float64 asks
    digits = max(0.3, math.log(copy_tol) / math.log(default_tol(torch.float64, m, n)))
    copy = _iterative_cost(_COSTS[torch.float64], m, n, batch, k, digits, 8)
    return _dense_cost(_COSTS[torch.float32], m, n, batch) < copy


# The float32 A that the dense path serves below FLOAT32_COPY_BELOW where no float64 copy is made
# (prefer_dense): its cost measured up to these sizes (2048² took 819 ms against the iteration's 69,
# 4096² 6.1 s against 0.45; a review)
_PRECISION_DENSE_UP_TO, _PRECISION_DENSE_ENTRIES = 1024, 1 << 22

# A batch of matrices whose dense problem is at most this size (float32: the Gram matrix's side;
# float64: both sides, the SVD's) is solved by the GPU's batched Jacobi kernels (cuSOLVER's
# syevjBatched and gesvdjBatched, which torch calls up to 32), all of it in a few launches.
_GPU_JACOBI_UP_TO = 32


def _prefer_dense_for_gpu_batch(m: int, n: int, batch: int, k: int, dtype: torch.dtype) -> bool:
    """:func:`_prefer_dense_on_gpu` for batches of more than 64 matrices, beyond its fit (one H200;
    records docs/records/bench_gpu_2026-12-04_h200_large_batches*.csv: 96 to 1024 matrices from 32×32 to
    512×256, k = 1, 4, 8). The dense path runs cuSOLVER once per matrix above 32 (0.4–1.0 ms a
    matrix in float32, 1.4–19 in float64), the iteration in calls shared by the batch (its blocks
    orthonormalized by :func:`riemsvd._space.cholesky_qr`): in float32 the iteration took 0.20–0.85
    of the dense path's time at k = 1 and 1.16–2.0 of it at k = 4 and 8 for sides up to 256 (0.67–0.88
    at 384×384); in float64 it was faster everywhere but at k = 8 of 128-wide matrices (1.26–1.32).
    So float32 at k ≥ 4 with p ≤ 256 goes dense; the rest iterates. Beyond 2²⁴ entries, or sides
    above 512, not measured: the iteration, as before."""
    if max(m, n) > 512 or batch * m * n > 1 << 24:
        return False
    return dtype == torch.float32 and k >= 4 and min(m, n) <= 256


def _memory_factor(nbytes: int) -> float:
    """How much more a product costs per entry of A where A no longer fits in the last-level cache: 1
    up to half of it, rising to ``_BEYOND_CACHE`` at its size and beyond. The fit's shapes (up to
    4096×1024) mostly fit the 32 MiB L3 of the machine it was made on; above it the iteration's time
    per product came 1.5–3.7× the model's (float64 10000×784, 784×10000, 8192×1024 and 6000×3000;
    float32 1.2–3.4×), and the model took the iteration where the dense path was up to 3.1× faster
    (float64 10000×784, k = 32). With a ceiling of 2, on 48 such cases per dtype (k = 1 to 128,
    Gaussian and gradient-like, docs/algorithm.md) the choice took 1.036× the better path's time in
    geometric mean, 2.02× at worst, where it took 1.120× and 3.10× (float64; float32 1.035× against
    1.055×). The refit of 2026-12-05 gave a product within the cache 0.82× (float32) and 0.60×
    (float64) the cost an entry it had, and beyond it the cost stayed about what it was (the pass is
    memory-bound): the ceiling, measured again, is 3 (below)."""
    half = _last_level_cache() / 2
    return 1.0 + (_BEYOND_CACHE - 1.0) * min(1.0, max(0.0, (nbytes - half) / half))


# The cost per entry of a product beyond the last-level cache against the model's within it: on 16
# cases per dtype at 10000×784 and 8192×1024 (k = 16 to 128, Gaussian and gradient-like, remeasured
# with the refit's code) the time per product called for 1.4–3.2× in float64 (2.0 in the median)
# and 1.0–2.0× in float32; with 3 the choice took 1.073× (float64) and 1.000× (float32) the better
# path's time in geometric mean, with 2 1.159× and 1.043×, and the fit's and the held-out cases,
# whose matrices fit in half the cache, did not move (docs/algorithm.md, "The dense path").
_BEYOND_CACHE = 3.0


@functools.cache
def _last_level_cache() -> int:
    """Bytes of the CPU's largest cache (Linux's sysfs), 32 MiB where it cannot be read (or reads 0)."""
    sizes = []
    for entry in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            with open(entry) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
        digits = text.rstrip("KkMmGg")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=0) or 32 << 20


class _Costs(NamedTuple):
    """Seconds on the 2-core CPU the project is measured on; only their ratios matter."""

    gram: float  # dense: per m·n·p (the Gram matrix in float64, or an SVD's bidiagonalization)
    eigen: float  # dense: per p³ (eigh or the SVD's iterations)
    fixed: float  # dense: per call
    product: float  # iterative: per entry of A per product
    per_product: float  # iterative: the loop's own work per product
    products: float  # iterative: products for k = 0 at the default tol ...
    products_per_k: float  # ... and per triplet


# Least-squares fits to 128 cases per dtype (`python -m riemsvd.bench_dense`: 13 shapes from 32×32 to
# 4096×1024, k = 1 to 128, Gaussian and gradient-like spectra; a product's cost from the matrices
# within half the cache), refitted on 2026-12-05 (docs/algorithm.md, "The dense path"): the loop had
# come to cost 12 µs a product where the fit of 2026-12-02 said 30, and the model took the dense path
# where the iteration was up to 8× faster. The choice took 1.013× (float32) and 1.007× (float64) the
# time of the better path in geometric mean, at worst 1.34× and 1.27×; on 252 held-out cases per
# dtype (7 shapes from 384×384 to 2048×512, six spectra, k = 4 to 128) 1.046× and 1.014×, where the
# constants before took 1.125× and 1.258×. float64's refitted on 2026-12-07 (a 2-core AMD EPYC), once
# its dense path took the Gram matrix's triplets (dense_svd): within 1.015× of the better path (1.73×
# at worst) on the same command's cases, where the constants fitted to the SVD took 1.213× (4.3×).
_COSTS = {
    torch.float32: _Costs(3.05e-11, 7.64e-11, 3.87e-4, 5.25e-11, 1.16e-5, 30, 8),
    torch.float64: _Costs(5.61e-11, 1.16e-10, 6.83e-4, 1.51e-10, 2.33e-5, 30, 15),
}
# The batched iteration's own work per product grows with the batch, which the fits above (single
# matrices) did not see: 86–102 µs a product for one 64×64 matrix, about 6 µs more for each further
# one (520 µs at 64, 2026-12-02). Without this term the model took the iteration for 6 (float32) and 5
# (float64) of 15 batches where the dense path was faster, up to 2.0× (a new user's trial: (64, 64,
# 64), k = 2, 47.8 ms against 23.7). Refitted with the constants above on 14 batches per dtype
# measured again (4–256 matrices from 32×32 to 1024×512, k = 1 to 8; the 25 of them faster either way
# by more than 10%: tests/test_dense.py): the values that choose the faster path in all 25 lie from
# 4.8e-6 (a batch (8, 256, 128), k = 2, float32, whose dense path took 8.9 ms against 12.2, goes
# dense above it) to 5.0e-6 (a batch (256, 128, 128), k = 1, float32, whose iteration took 133 ms
# against 278, stays iterative below it), in the model's units.
_PER_BATCH_PRODUCT = 4.9e-6


class _GpuCosts(NamedTuple):
    """Milliseconds on one H200 (torch 2.11, CUDA 13), least-squares fits of log time
    (:func:`_prefer_dense_on_gpu`)."""

    fixed: float  # dense: one matrix at p = 0
    square: float  # dense: per p² (the eigh or SVD of the p×p problem)
    batch: float  # dense: a batch of b matrices costs b**batch times one
    first: float  # iterative: k = 1 at the default tol ...
    per_k: float  # ... times (1 + per_k·(k − 1))**growth for k triplets ...
    growth: float
    per_matrix: float  # ... and (1 + per_matrix·(b − 1)) for a batch of b


_GPU_COSTS = {
    torch.float32: _GpuCosts(3.77, 7.66e-6, 0.672, 8.8, 0.34, 1.25, 0.0256),
    torch.float64: _GpuCosts(3.35, 1.0e-4, 0.851, 18.5, 0.153, 1.3, 0.0263),
}


def dense_svd(op: DenseOperator, k: int, tol: float) -> Outcome:
    """The k leading triplets of the dense operator ``op`` (batched), from a whole decomposition.

    Returns an :class:`Outcome` like the iteration's, with ``iterations`` 0 and ``reason``
    "whole space" (the search space is all of A's row space: from an SVD the result is exact to
    rounding, from the Gram matrix to about ε·σ₁/σ_k in float64, which the check holds to tol).

    One small matrix on the CPU (``_HOST_WORK``) is decomposed and checked in numpy (its
    :class:`HostView`), as the iteration's loop is: a torch call on small arrays costs 2–5 µs against
    numpy's 1, and the path makes some sixty of them (an 8×8 float32 solve took 293 µs, a 10×256
    one 307, where LAPACK's SVD took 15 and 64; docs/algorithm.md, "The dense path")."""
    a = op.a.detach() if op.scale is None else op.a.detach() * op.scale
    m, n = op.shape
    host = op.on_host() if a.dim() == 2 and m * n * k <= _HOST_WORK else None
    matrix = a if host is None else a.numpy()  # one CPU matrix: its numpy view (on_host found one)
    work = op if host is None else host
    u = v = None
    # The Gram matrix first: for a float32 A formed in float64, whose rounding is far below any tol
    # float32 can ask; for a float64 A on the CPU in its own dtype, its triplets by Rayleigh–Ritz
    # (_float64_gram_triplets), checked like any. LAPACK's SVD had taken 1.2–5.6× its time (two
    # threads, best of 3: 384×384 44–64 ms against 12–27, 4096×1024 1.1–1.6 s against 0.27–0.38,
    # k = 1 to 32); where σ_k lies beyond its reach the SVD follows, at 1.08–1.28× its time alone
    # (σ from 1 to 1e-12, k = 32 of 200000×50 and 256×64). Not measured on a GPU: the SVD stays.
    gram = op.dtype == torch.float32 or (op.dtype == torch.float64 and a.device.type == "cpu")
    if gram:
        route = _gram_triplets if op.dtype == torch.float32 else _float64_gram_triplets
        u, v = route(matrix, k, tol)
        # the Gram matrix, then A V (or Aᵀ U), which the float64 route does not form where its
        # eigenvalues send the solve to the SVD (it had counted them: 212 products for 208)
        images = u is not None or op.dtype == torch.float32
        op.matvecs += min(op.shape) + (k if images else 0)
    # A float32 A's triplets from its Gram matrix are its exact ones rounded, beyond which no SVD
    # goes: below FLOAT32_CAST_LEAST one in float64 had taken 1.5 s more to come to the same
    # residual (3000×1000, k = 5, tol 1e-8: 3.59e-8 either way; a new user's trial). A float64 A's
    # SVD, where it served, is the one a redo would repeat (1500×1000, σ₅ = 1e-6·σ₁, tol 1e-15: 2.1
    # s against 0.87 for the same residual; a review).
    if op.dtype == torch.float32:
        svd_may_help = not (u is not None and tol < FLOAT32_CAST_LEAST)
    else:
        svd_may_help = gram and u is not None
    if u is None:
        u, v = (side.adopt(x) for side, x in zip((work.left, work.right), _svd_triplets(a, k)))
    assert u is not None and v is not None  # a pair, from the Gram matrix or the SVD
    u, s, v, residual, errors = verify(work, _contiguous(u), _contiguous(v), None, tol)
    short = np.asarray(~(residual <= tol))  # per matrix of a batch; 0-dim for one matrix
    if svd_may_help and short.any():
        # The Gram matrix's rounding short of tol (or float32's own: a 1536×384 matrix of identical
        # rows (rank one) came out of float32's SVD with residual 2.1e-5 and UᵀU 8.5e-6 off I, at k =
        # 2 and 8, default tol 9.3e-6). The SVD in float64 of the matrices short of it, a float32 A's
        # vectors rounded to float32 (7.8e-8 at tol 1e-7, below float32's product floor, where verify
        # checks in float64); the check again, for all.
        redo = torch.from_numpy(short).to(a.device)  # a 0-dim mask makes a[redo] a batch of one
        u2, v2 = _svd_triplets(a[redo].to(torch.float64), k)
        u[redo], v[redo] = u2.to(op.dtype), v2.to(op.dtype)
        u_, v_ = work.left.adopt(u), work.right.adopt(v)
        u, s, v, residual, errors = verify(work, _contiguous(u_), _contiguous(v_), None, tol)
    s, residual, errors = (torch.as_tensor(x).to(op.device, op.dtype) for x in (s, residual, errors))
    return Outcome(u, s, v, residual <= tol, residual, 0, [], errors, "whole space", 0, "dense")


# Up to this many m·n·k a single CPU matrix's dense path runs in numpy (dense_svd): its products and
# checks on one BLAS thread, where torch's run on its threads. Alternated in one process (float32,
# decaying spectra): numpy's took 0.67 of torch's time at 256×64, k = 1, and 0.94 at 512×256, k = 8
# (1.0e6); 0.99–1.03 from 1024×256, k = 8 (2.1e6) to 1024×1024, and 1.07–1.16 at 1536×384 and
# 384×1536, k = 8 to 128 (a GaLore projector, k = 128: 18.7 ms against 16.1).
_HOST_WORK = 1 << 20


def _contiguous(x):
    """A tensor or numpy array with its columns' entries adjacent (as the products and checks take them)."""
    return np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x.contiguous()


def _svd_triplets(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, V) of the k leading triplets from LAPACK's SVD of a, in a's dtype; of Aᵀ for a wide A
    (m < n), whose own SVD took 1.3–5.2× the time (torch 2.13 on the CPU, a row-major A, one run each:
    784×10000 float64 3.64 s against 0.70, float32 2.00 against 0.39; 1000×3000 1.05 s against 0.50;
    384×1536 70 ms against 56)."""
    if a.shape[-2] < a.shape[-1]:
        uu, _, vh = torch.linalg.svd(a.mT, full_matrices=False)  # Aᵀ = U S Vᴴ: A's U is V, its V is U
        return vh[..., :k, :].mT, uu[..., :k]
    uu, _, vh = torch.linalg.svd(a, full_matrices=False)
    return uu[..., :k], vh[..., :k, :].mT


def _top_right_vectors(blocks, k: int, tall: bool) -> tuple[Any, Any]:
    """The k leading eigenvalues and eigenvectors, descending, of the smaller Gram matrix of a
    float64 matrix A64 (..., m, n) given as ``blocks`` along its longer side (rows where ``tall``,
    else columns; the whole matrix as one block): A64ᵀA64 where ``tall``, else A64A64ᵀ, summed over
    the blocks. For one matrix on the CPU (numpy, or its view), BLAS's syrk, which forms the upper
    triangle alone, and LAPACK's MRRR for the k alone (:func:`_top_eigenpairs`, which reads that
    triangle); else torch's product and eigh, all of them. On one BLAS thread (the dense path's)
    against torch's two, 3.8 ms against 8.0 at 1024×256 and k = 8, 12.2 against 23.2 at 1536×384,
    156 against 265 at 4096×1024 (2-core AMD EPYC). Numpy blocks give numpy arrays, tensors
    tensors."""
    upper = gram = None
    on_host = False
    for block in blocks:
        on_host = isinstance(block, np.ndarray)
        rows = block if on_host else numpy_view(block) if block.dim() == 2 else None
        if rows is not None:  # Aᵀ is Fortran-ordered for a row-major A: syrk takes it as it is
            more: dict[str, Any] = {} if upper is None else {"beta": 1.0, "c": upper, "overwrite_c": 1}
            upper = dsyrk(1.0, rows.T, trans=0 if tall else 1, **more)
        else:
            part = block.mT @ block if tall else block @ block.mT
            gram = part if gram is None else gram + part
        # nothing of this block kept past it: a view's objects left between the blocks' copies had
        # grown the heap (glibc's allocator; 300000×300 float32 cast in blocks: 262 MiB more at the
        # peak in two runs, 93–166 without)
        del block, rows
    if upper is not None:
        values, top = _top_eigenpairs(upper, k)
        if on_host:
            return values, top
        return torch.from_numpy(values.copy()), torch.from_numpy(top.copy())  # descending: reversed views
    assert gram is not None  # one block at least
    values, vectors = torch.linalg.eigh(gram)  # ascending
    return values[..., -k:].flip(-1), vectors[..., -k:].flip(-1)


# A float32 matrix whose float64 copy would take more than this is cast in blocks of its longer side
# instead (_float64_blocks, for the Gram matrix and again for the images): the whole copy had held
# 2.2 times A's bytes beside it (a 300×300000 A of 343 MiB: 743 MiB more at the peak, the iteration
# 122; a new user's trial).
_WHOLE_COPY_BYTES = 64 << 20
_BLOCK_BYTES = 16 << 20  # a block's float64 copy


def _float64_blocks(a: torch.Tensor, tall: bool):
    """The blocks of one matrix a (m, n) along its longer side, its rows where ``tall``, else its
    columns, each cast to float64 (a contiguous copy of about _BLOCK_BYTES)."""
    long_side, short_side = (a.shape[0], a.shape[1]) if tall else (a.shape[1], a.shape[0])
    step = max(1, _BLOCK_BYTES // (8 * short_side))
    for start in range(0, long_side, step):
        part = slice(start, min(start + step, long_side))
        yield (a[part] if tall else a[:, part]).to(torch.float64)


def _images_by_blocks(a: torch.Tensor, top: torch.Tensor, tall: bool) -> torch.Tensor:
    """A64 V (``tall``) or A64ᵀ U of one matrix, cast a block at a time (:func:`_float64_blocks`),
    written into one array made first: the blocks' images kept between their copies, as for a
    torch.cat, had grown the heap by a block each (663 MiB more at 300×300000, glibc's allocator)."""
    image = torch.empty(
        a.shape[0] if tall else a.shape[1], top.shape[-1], dtype=torch.float64, device=a.device
    )
    start = 0
    for block in _float64_blocks(a, tall):
        rows = block.shape[0] if tall else block.shape[1]
        image[start : start + rows] = mm_t(block.mT if tall else block, top)
        start += rows
    return image


def _gram_triplets(a, k: int, tol: float):
    """(U, V) in a's dtype from the eigendecomposition of the smaller Gram matrix in float64, or
    (None, None) where rounding leaves them short of ``tol`` (σ_k too small beside σ₁, or zero).
    ``a``: a float32 tensor (..., m, n), or one matrix on the host as a numpy array (then numpy
    arrays)."""
    on_host = isinstance(a, np.ndarray)
    tall = a.shape[-2] >= a.shape[-1]
    image: Any  # numpy arrays for a host matrix, tensors otherwise
    if not on_host and a.dim() == 2 and 8 * a.numel() > _WHOLE_COPY_BYTES:  # cast a block at a time
        top = _top_right_vectors(_float64_blocks(a, tall), k, tall)[1]
        image = _images_by_blocks(a, top, tall)
    else:
        a64 = a.astype(np.float64) if on_host else a.to(torch.float64)
        top = _top_right_vectors([a64], k, tall)[1]
        image = mm_t(a64.swapaxes(-1, -2) if tall else a64, top)
    space = (HostSpace if on_host else Space)(image.shape[-2])
    norms = space.norms(image)[..., None, :]  # σᵢ, descending
    # a zero σ's column stays zero (0/0 had drawn numpy's warning, a trial): refused by the check
    # below unless completed
    other = image / norms.clip(min=TINY)
    # As orthonormal as float32's own SVD would leave them (its rounding at this size, as in
    # default_tol), whatever tol asks; both sides, though MRRR's eigenvectors are orthonormal to
    # rounding. Under a torch.func transform nothing can be read: then the SVD.
    floor = min(tol, product_floor(torch.float32, *a.shape[-2:]))  # the path of a float32 A
    # Columns whose σ the Gram matrix cannot resolve (their loss of orthogonality, ε₆₄·σ₁²/σᵢ², above
    # the floor) and which are zero at tol (k beyond A's numerical rank) are orthonormalized against
    # the others (_completed); the check below then decides as for any. A GaLore projector of a
    # rank-100 512×256 gradient, k = 128, had fallen back to the SVD after the Gram matrix's eigh:
    # 13.4 ms against torch.linalg.svd's 6.8 (a new user's trial). Where one of them lies above
    # tol·σ₁ (σ from 1 to 1e-12), the SVD serves, as before.
    resolved = norms * norms * floor >= eps(torch.float64) * norms[..., :1] ** 2
    zero = norms <= tol * norms[..., :1]
    if readable_any(~resolved, default=False) and not readable_any(~resolved & ~zero, default=True):
        other = _completed(other, resolved, space)
    lost = ~(_off_identity(other) <= floor) | ~(_off_identity(top) <= floor)
    if readable_any(lost, default=True):
        return None, None  # also a zero σ's column, not completed (its QᵀQ 1 off)
    other, top = (x.astype(a.dtype) if on_host else x.to(a.dtype) for x in (other, top))
    return (other, top) if tall else (top, other)


def _float64_gram_triplets(a, k: int, tol: float):
    """(U, V) of a float64 A (a tensor (..., m, n), or one matrix on the host as a numpy array: then
    numpy arrays) from its Gram matrix's top k eigenvectors, in float64 itself, by Rayleigh–Ritz in
    span(A V): A V = Q R, R = Y Σ Zᵀ, so A (V Z) = (Q Y) Σ; or (None, None) where its eigenvalues say
    the SVD must serve (below). The Gram matrix's rounding, ε·σ₁², leaves the images' directions
    ε·σ₁²/(σᵢσⱼ) off orthogonal, far above what an SVD leaves wherever σᵢ is small beside σ₁ (1e-10
    at σᵢ = 1e-3·σ₁); Q is orthonormal to rounding whatever σᵢ, and the residual, about ε·σ₁/σᵢ
    relative to σ₁, is left to the check (on a 4096×1024 gradient-like A, σ from 1 down to a noise of
    1e-2, k = 32, the images' columns made the check fail and the SVD serve, at about 1.4× its time
    alone)."""
    tall = a.shape[-2] >= a.shape[-1]
    values, top = _top_right_vectors([a], k, tall)
    # Its triplets have residuals of about ε·σ₁/σ_k (relative to σ₁): where that is far above tol the
    # SVD serves, before the images and their check (200000×50, σ from 1 to 1e-12, k = 32: 1.5–1.8×
    # the SVD's time alone with them). And where σ_k² lies within 1000·√max(m, n) roundings of σ₁²
    # the k-th eigenvector is the rounding's, and the check cannot tell: at a loose tol any direction
    # in A's noise has a residual within it (rank 3 plus noise of 1e-9, 600×300, k = 4, tol 1e-6: σ₄
    # came 40% low, converged, its bar short; a review). There the SVD serves too, as it did before.
    unit = eps(torch.float64)
    least = max((unit / (10 * tol)) ** 2, 1e3 * math.sqrt(max(a.shape[-2:])) * unit)
    if readable_any(values[..., -1:] < least * values[..., :1], default=True):
        return None, None
    image = mm_t(a.swapaxes(-1, -2) if tall else a, top)
    q, r = (HostSpace if isinstance(a, np.ndarray) else Space)(image.shape[-2]).qr(image)
    y, _, zt = np.linalg.svd(r) if isinstance(r, np.ndarray) else torch.linalg.svd(r)
    u, v = q @ y, top @ zt.swapaxes(-1, -2)
    return (u, v) if tall else (v, u)


def _completed(q, keep, space: Space):
    """q (..., rows, k), in place, with its columns where ``keep`` (..., 1, k) is False (the last ones:
    σ in descending order) orthonormalized against the others and among themselves
    (:func:`~riemsvd._subspace.orthonormalize`, in ``space``: numpy arrays or tensors), matrix by
    matrix. A column that held nothing (σ = 0) or only rounding takes a random direction from a
    fixed seed. The others keep what they had: σ₅₁ to σ₆₄ of a float32 gradient of rank 50 plus
    noise, 3.7e-6·σ₁ and below, came back 17–560× too small from random columns, their U 1–2% in
    the true subspace, with no warning (a new user's trial)."""
    device = "cpu" if isinstance(q, np.ndarray) else q.device
    for index in np.ndindex(*q.shape[:-2]):  # one index, (), for one matrix
        one, kept = q[index], int(keep[index].sum())
        gen = torch.Generator(device=device).manual_seed(0)
        one[:, kept:] = orthonormalize(one[:, kept:], one[:, :kept] if kept else None, gen, space)
    return q


def _off_identity(q):
    """max |QᵀQ − I| per matrix (...) of a numpy array or tensor q (..., rows, k). By ``@``, not
    Space.inner: that takes a tensor's product to numpy's BLAS, on the dense path's one thread, where
    torch's has its own (a GaLore projector, 1536×384 at k = 128, took 1 ms longer)."""
    g = q.swapaxes(-1, -2) @ q
    if isinstance(g, np.ndarray):
        return np.abs(g - np.eye(g.shape[-1])).max(axis=(-2, -1))
    return (g - torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)).abs().amax((-2, -1))
