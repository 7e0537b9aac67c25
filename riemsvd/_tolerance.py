"""Tolerances and small epsilons per dtype, in one place."""

from __future__ import annotations

import math

import torch

__all__ = [
    "DGKS",
    "HALF",
    "TINY",
    "UNIT_ROUNDOFF",
    "default_tol",
    "eps",
    "gamma",
    "product_floor",
    "rounded_outward",
    "solver_dtype",
]

# A second Gram–Schmidt pass when a column kept less than this fraction of its norm in the first
# (Daniel, Gragg, Kaufman, Stewart 1976); after the second, a column that lost as much again held
# only rounding noise. One pass leaves an error of about ε·‖x‖/‖x − projection‖ along the basis, and
# in the recurrence it compounds: with a threshold of 1/16 instead, the right basis lost
# orthogonality by ×1.2 an iteration (Gaussian 300×200: 1e-15 to 1e-3 in 150 iterations) and the
# solve stalled at 1e-3.
DGKS = 1 / math.sqrt(2)

# bfloat16 and float16 are solved in float32, which holds their values exactly.
HALF = (torch.bfloat16, torch.float16)

_BASE_TOL = {torch.float64: 1e-12, torch.float32: 1e-6}

# float64's unit roundoff u = ε/2, and its smallest normal number: an underflow allowance per
# operation, in the rounding bounds of riemsvd._certificate and riemsvd._fourier
UNIT_ROUNDOFF = torch.finfo(torch.float64).eps / 2
TINY = torch.finfo(torch.float64).tiny


def solver_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a solve runs in: float32 for bfloat16 and float16, the dtype itself otherwise."""
    return torch.float32 if dtype in HALF else dtype


def eps(dtype: torch.dtype) -> float:
    """Machine epsilon of ``dtype``."""
    return torch.finfo(dtype).eps


# The least residual (relative to σ₁) measured of exact triplets rounded to float32: 3e-8 to 1e-7 on
# trained-like weights and Gaussians (docs/algorithm.md, "The dense path"). Below it float32 triplets
# are not to be had but where float32 holds the exact ones (a diagonal A's, or those of identical
# rows: residual 0 on the dense path; a review).
FLOAT32_CAST_LEAST = 0.25 * eps(torch.float32)

# Below this tol a float32 A on the CPU is iterated in a float64 copy (riemsvd._solve's
# _iterates_in_float64, where the measurements are), whose cost the dense path's model then prices
# (riemsvd._dense.prefer_dense_to_copy).
FLOAT32_COPY_BELOW = 4 * eps(torch.float32)


def default_tol(dtype: torch.dtype, m: int, n: int) -> float:
    """The default relative residual of :func:`riemsvd.solve`: close to machine precision.

    1e-12 in float64 and 1e-6 in float32, raised to 2·ε·√max(m, n) where that is larger: the products
    A v, Aᵀ u themselves carry rounding errors of about ε·√n relative to σ₁ (measured: 2.5e-7 for
    exact singular vectors of a 128×128 float32 matrix, 1.0e-6 at 4000×2000), so no residual
    computed from them can be trusted below that.
    """
    return max(_BASE_TOL[dtype], product_floor(dtype, m, n))


def product_floor(dtype: torch.dtype, m: int, n: int, terms: int | None = None) -> float:
    """2·ε·√max(m, n): about the rounding, relative to σ₁, of the products A v and Aᵀ u of an m×n
    matrix in ``dtype``, below which a residual computed from them cannot be trusted. A sparse A's
    kernels add the ``terms`` of an entry one after another, whose rounding grows like ε/2 per term
    where they share a sign: at least ε·terms then (the complete graph's 300×300 adjacency in float64
    put σ₁ 1.3e-12 off, 1.02 times 2·ε·√300·σ₁; float32 at 1000×1000, 1.2e-5·σ₁ off)."""
    floor = 2 * eps(dtype) * math.sqrt(max(m, n))
    return floor if terms is None else max(floor, eps(dtype) * terms)


def gamma(terms: int, dtype: torch.dtype = torch.float64) -> float:
    """γ_N = N·u / (1 − N·u), u = ε/2: the relative error bound of a sum or dot product of N terms
    (Higham); inf where N·u reaches 1/2."""
    nu = terms * eps(dtype) / 2
    return nu / (1 - nu) if nu < 0.5 else math.inf


def rounded_outward(x: torch.Tensor, dtype: torch.dtype, up: bool) -> torch.Tensor:
    """A float64 bound x in ``dtype``, rounded ``up`` (never below x) or down (never above it): a bound
    rounded to nearest can land on the wrong side of what it bounds."""
    y = x.to(dtype)
    wrong = y.to(torch.float64) < x if up else y.to(torch.float64) > x
    return torch.where(wrong, torch.nextafter(y, torch.full_like(y, math.inf if up else -math.inf)), y)
