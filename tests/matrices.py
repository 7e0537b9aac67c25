"""Test matrices with known spectra, and the one check every solve result must pass."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

SPECTRA = ("gaussian", "lowrank", "decay", "cluster", "cond12")

# (m, n) for property tests: vectors, squares, tall and wide matrices
SHAPES = st.one_of(
    st.tuples(st.just(1), st.integers(1, 40)),
    st.tuples(st.integers(1, 40), st.just(1)),
    st.integers(2, 60).map(lambda n: (n, n)),
    st.tuples(st.integers(2, 120), st.integers(2, 60)),
    st.tuples(st.integers(2, 60), st.integers(2, 120)),
)


def orthonormal(rows: int, cols: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def spectrum(kind: str, r: int, gen: torch.Generator) -> torch.Tensor:
    """r singular values, descending, with max 1, of the named class."""
    i = torch.arange(r, dtype=torch.float64)
    if kind == "lowrank":  # a few big values over a noise floor
        big = min(r, 5)
        s = torch.cat([torch.linspace(1.0, 0.5, big, dtype=torch.float64), torch.full((r - big,), 1e-3)])
    elif kind == "decay":
        s = 1.0 / (i + 1.0)
    elif kind == "cluster":  # top values 1e-3 apart, the rest well below
        top = min(r, 6)
        rest = 0.5 * torch.rand(r - top, generator=gen, dtype=torch.float64)
        s = torch.cat([1.0 - 1e-3 * torch.arange(top, dtype=torch.float64), rest])
    elif kind == "cond12":
        s = torch.logspace(0, -12, r, dtype=torch.float64)
    else:
        raise ValueError(kind)
    return torch.sort(s, descending=True).values


def make_matrix(kind: str, m: int, n: int, gen: torch.Generator, dtype=torch.float64, scale: float = 1.0):
    """An m×n matrix of the spectrum class ``kind`` ('gaussian' is i.i.d. normal entries)."""
    if kind == "gaussian":
        return (scale * torch.randn(m, n, generator=gen, dtype=torch.float64)).to(dtype)
    r = min(m, n)
    u, v = orthonormal(m, r, gen), orthonormal(n, r, gen)
    return (scale * (u * spectrum(kind, r, gen)) @ v.mT).to(dtype)


def check_svd(a: torch.Tensor, result, k: int, tol: float, *, sigma_rtol: float | None = None) -> None:
    """Shapes, orthonormality, residual ≤ tol, and σ against torch.linalg.svd (float64 reference).

    A Ritz triplet with relative residual r lies within r·σ₁ of a singular value (Weyl's bound for
    the augmented symmetric matrix), so once the k found are the top k, |σ̂ᵢ − σᵢ| ≤ tol·σ₁ plus the
    reference's own rounding.
    """
    u, s, v = result
    batch, (m, n) = a.shape[:-2], a.shape[-2:]
    assert u.shape == batch + (m, k) and s.shape == batch + (k,) and v.shape == batch + (n, k)
    assert u.dtype == s.dtype == v.dtype == a.dtype
    assert bool(result.info.converged.all())
    assert float(result.info.residual.max()) <= tol
    eye = torch.eye(k, dtype=torch.float64)
    fin = torch.finfo(a.dtype).eps
    assert torch.allclose(u.double().mT @ u.double(), eye.expand(batch + (k, k)), atol=50 * fin * k)
    assert torch.allclose(v.double().mT @ v.double(), eye.expand(batch + (k, k)), atol=50 * fin * k)
    assert bool((s[..., :-1] >= s[..., 1:]).all())
    ref = torch.linalg.svdvals(a.double())
    s1 = ref[..., :1]
    bound = (sigma_rtol if sigma_rtol is not None else tol) * s1 + 10 * fin * s1
    assert bool(((s.double() - ref[..., :k]).abs() <= bound).all()), (s, ref[..., :k])
    # The residual the solver reports is the residual of what it returns: recomputed in float64, it
    # may differ only by the rounding of the products in A's dtype (ε·√max(m, n) relative to σ₁).
    ad, ud, vd, sd = a.double(), u.double(), v.double(), s.double().unsqueeze(-2)
    res = torch.maximum(
        torch.linalg.vector_norm(ad @ vd - ud * sd, dim=-2),
        torch.linalg.vector_norm(ad.mT @ ud - vd * sd, dim=-2),
    ).amax(-1) / s1.squeeze(-1).clamp_min(torch.finfo(torch.float64).tiny)
    floor = 4 * fin * max(m, n) ** 0.5
    reported = result.info.residual.double()
    assert bool((res <= reported * (1 + 1e-3) + floor).all()), (res, reported)
    assert bool((res <= tol + floor).all()), res


def counting_operator(a: torch.Tensor):
    """(op, calls): ``a`` (float64, 2-D) as a scipy ``LinearOperator`` whose products add their columns
    to ``calls["n"]``, an independent count of what a solve's ``info.matvecs`` should report."""
    import numpy as np
    import scipy.sparse.linalg as sla

    calls = {"n": 0}
    dense = a.numpy()

    class Counting(sla.LinearOperator):
        def __init__(self):
            super().__init__(np.float64, dense.shape)

        def _matmat(self, x):
            calls["n"] += x.shape[1]
            return dense @ x

        def _rmatmat(self, y):
            calls["n"] += y.shape[1]
            return dense.T @ y

    return Counting(), calls
