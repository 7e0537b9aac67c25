"""The Newton operator: symmetric, with eigenvalues σ₁ ∓ σⱼ at the top pair, and tCG solves it."""

import torch

from riemsvd._newton import NewtonOperator, tcg
from riemsvd._operator import as_operator
from riemsvd.manifolds import Sphere, Stiefel
from tests.matrices import make_matrix


def _explicit(newton, m, n):
    """The matrix of K restricted to the complements, in an orthonormal basis of them."""
    cols = []
    for j in range(m + n):
        e = torch.zeros(m + n, dtype=torch.float64)
        e[j] = 1.0
        x, y = e[:m].reshape(m, 1), e[m:].reshape(n, 1)
        x, y = newton.project(x, y)
        kx, ky = newton(x, y)
        kx, ky = newton.project(kx, ky)
        cols.append(torch.cat([kx[:, 0], ky[:, 0]]))
    return torch.stack(cols, dim=1)


def test_newton_operator_at_top_pair_has_eigenvalues_sigma1_minus_and_plus_sigma_j(gen):
    m, n = 9, 6
    a = make_matrix("gaussian", m, n, gen)
    u, s, vh = torch.linalg.svd(a)
    newton = NewtonOperator(as_operator(a), u[:, :1], vh[:1].mT, s[:1])
    k = _explicit(newton, m, n)
    torch.testing.assert_close(k, k.mT, rtol=0, atol=1e-12)
    # restricted to the complement (dimension m + n − 2), the spectrum is σ₁ ∓ σⱼ (j ≥ 2) and σ₁
    # for the m − n left directions that A does not reach; the two projected-out directions give 0.
    expected = torch.cat(
        [s[0] - s[1:], s[0] + s[1:], s[0].repeat(m - n), torch.zeros(2, dtype=torch.float64)]
    )
    torch.testing.assert_close(torch.linalg.eigvalsh(k), torch.sort(expected).values, rtol=1e-10, atol=1e-10)


def test_projection_is_the_horizontal_projection_of_the_sphere_and_stiefel_manifolds(gen):
    a = make_matrix("decay", 8, 5, gen)
    u, s, vh = torch.linalg.svd(a)
    x, y = (
        torch.randn(8, 2, generator=gen, dtype=torch.float64),
        torch.randn(5, 2, generator=gen, dtype=torch.float64),
    )
    for b in (1, 3):
        px, py = NewtonOperator(as_operator(a), u[:, :b], vh[:b].mT, s[:b]).project(x, y)
        torch.testing.assert_close(px, Stiefel().proj_horizontal(u[:, :b], x))
        torch.testing.assert_close(py, Stiefel().proj_horizontal(vh[:b].mT, y))
    px, py = NewtonOperator(as_operator(a), u[:, :1], vh[:1].mT, s[:1]).project(x[:, :1], y[:, :1])
    torch.testing.assert_close(px[:, 0], Sphere().proj_horizontal(u[:, 0], x[:, 0]))
    torch.testing.assert_close(py[:, 0], Sphere().proj_horizontal(vh[0], y[:, 0]))


def test_tcg_solves_the_newton_equation_for_a_block(gen):
    m, n, b = 40, 25, 3
    a = make_matrix("decay", m, n, gen)
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    newton = NewtonOperator(as_operator(a), u[:, :b], vh[:b].mT, s[:b])
    rhs = newton.project(
        torch.randn(m, b, generator=gen, dtype=torch.float64),
        torch.randn(n, b, generator=gen, dtype=torch.float64),
    )
    (x, y), stats = tcg(newton, rhs, maxiter=200, rtol=1e-12)
    kx, ky = newton(x, y)
    err = torch.linalg.vector_norm(torch.cat([kx - rhs[0], ky - rhs[1]]), dim=0)
    ref = torch.linalg.vector_norm(torch.cat(rhs), dim=0)
    assert bool((err <= 1e-10 * ref).all())
    assert not bool(stats["negative_curvature"].any())
    # the solution stays in the complements
    assert float((u[:, :b].mT @ x).abs().max()) < 1e-12 and float((vh[:b] @ y).abs().max()) < 1e-12


def test_tcg_stops_at_negative_curvature_and_at_the_trust_region(gen):
    a = make_matrix("gaussian", 30, 20, gen)
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    # at the third triplet, K is indefinite (σ₃ − σ₁ < 0)
    newton = NewtonOperator(as_operator(a), u[:, 2:3], vh[2:3].mT, s[2:3])
    # along (u₁, v₁) the curvature is σ₃ − σ₁ < 0: the step goes to the boundary and stops there
    rhs = newton.project(u[:, :1], vh[:1].mT)
    (x, y), stats = tcg(newton, rhs, maxiter=100, rtol=1e-14, radius=0.5)
    assert bool(stats["negative_curvature"].all())
    torch.testing.assert_close(
        torch.sqrt((x * x).sum() + (y * y).sum()), torch.tensor(0.5, dtype=torch.float64)
    )
    # a positive-curvature step longer than the radius is cut at the boundary too
    newton1 = NewtonOperator(as_operator(a), u[:, :1], vh[:1].mT, s[:1])
    rhs = newton1.project(100 * u[:, 1:2], 100 * vh[1:2].mT)
    (x, y), stats = tcg(newton1, rhs, maxiter=100, rtol=1e-14, radius=0.5)
    assert not bool(stats["negative_curvature"].any())
    torch.testing.assert_close(
        torch.sqrt((x * x).sum() + (y * y).sum()), torch.tensor(0.5, dtype=torch.float64)
    )
