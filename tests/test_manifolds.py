"""The manifolds: geoopt-compatible, points stay on them, and ehess2rhess is the Riemannian Hessian."""

import geoopt
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from riemsvd.manifolds import Grassmann, Sphere, Stiefel


def _sym(b):
    return 0.5 * (b + b.mT)


@pytest.fixture(params=["sphere", "stiefel"])
def problem(request):
    """A manifold, a point, and f(x) = ½⟨x, B x N⟩ + ⟨C, x⟩ with its Euclidean gradient and Hessian."""
    g = torch.Generator().manual_seed(3)
    d = 7
    b = _sym(torch.randn(d, d, generator=g, dtype=torch.float64))
    if request.param == "sphere":
        man, shape, n = Sphere(), (d,), torch.ones(())
        egrad = lambda x: x @ b + c  # noqa: E731
        ehess = lambda x, u: u @ b  # noqa: E731
    else:
        man, shape, n = Stiefel(), (d, 3), torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
        egrad = lambda x: b @ x @ n + c  # noqa: E731
        ehess = lambda x, u: b @ u @ n  # noqa: E731
    c = torch.randn(shape, generator=g, dtype=torch.float64)
    x = man.projx(torch.randn(shape, generator=g, dtype=torch.float64))
    u = man.proju(x, torch.randn(shape, generator=g, dtype=torch.float64))
    return man, x, u, egrad, ehess


def test_manifolds_are_geoopt_manifolds():
    assert isinstance(Sphere(), geoopt.Manifold) and isinstance(Stiefel(), geoopt.Manifold)
    assert isinstance(Stiefel(), geoopt.EuclideanStiefel)


def test_ehess2rhess_matches_finite_difference_of_riemannian_gradient(problem):
    man, x, u, egrad, ehess = problem
    rhess = man.ehess2rhess(x, egrad(x), ehess(x, u), u)
    t = 1e-5

    def rgrad_at(s):
        y = man.retr(x, s * u)
        return man.proju(x, man.egrad2rgrad(y, egrad(y)))  # bring back to T_x

    fd = (rgrad_at(t) - rgrad_at(-t)) / (2 * t)
    torch.testing.assert_close(rhess, fd, rtol=1e-7, atol=1e-8)
    assert man.check_vector_on_tangent(x, rhess, atol=1e-10, rtol=1e-10)


def test_ehess2rhess_is_symmetric_on_the_tangent_space(problem):
    man, x, u, egrad, ehess = problem
    w = man.proju(x, torch.randn_like(u))
    hu = man.ehess2rhess(x, egrad(x), ehess(x, u), u)
    hw = man.ehess2rhess(x, egrad(x), ehess(x, w), w)
    torch.testing.assert_close(man.inner(x, hu, w), man.inner(x, u, hw), rtol=1e-10, atol=1e-12)


@given(
    d=st.integers(2, 12),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_points_stay_on_manifold_and_proju_is_idempotent(d, k, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    k = min(k, d)
    for man, shape in ((Sphere(), (3, d)), (Stiefel(), (3, d, k))):
        x = man.projx(torch.randn(shape, generator=g, dtype=dtype))
        assert man.check_point_on_manifold(x, atol=1e-5, rtol=1e-5)
        z = torch.randn(shape, generator=g, dtype=dtype)
        u = man.proju(x, z)
        torch.testing.assert_close(man.proju(x, u), u)
        assert man.check_point_on_manifold(man.retr(x, u), atol=1e-5, rtol=1e-5)
        w = man.proj_horizontal(x, z)
        torch.testing.assert_close(man.proj_horizontal(x, w), w)
        overlap = (x * w).sum(-1) if isinstance(man, Sphere) else x.mT @ w
        assert float(overlap.abs().max()) <= 100 * torch.finfo(dtype).eps * float(z.abs().max()) * d


def test_riemannian_adam_keeps_points_on_the_manifold():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 10, generator=g, dtype=torch.float64)
    u = geoopt.ManifoldParameter(
        Stiefel().projx(torch.randn(20, 3, generator=g, dtype=torch.float64)), manifold=Stiefel()
    )
    v = geoopt.ManifoldParameter(
        Sphere().projx(torch.randn(10, generator=g, dtype=torch.float64)), manifold=Sphere()
    )
    opt = geoopt.optim.RiemannianAdam([u, v], lr=0.05)
    for _ in range(50):
        opt.zero_grad()
        loss = -((u.mT @ a @ v) ** 2).sum()
        loss.backward()
        opt.step()
    assert u.manifold.check_point_on_manifold(u.detach(), atol=1e-8, rtol=1e-8)
    assert v.manifold.check_point_on_manifold(v.detach(), atol=1e-8, rtol=1e-8)


def test_stiefel_takes_geoopts_metric_flag():
    """Code written for geoopt's `Stiefel(canonical=False)` had met a TypeError (a new user's trial):
    the embedded metric is this class's own; the canonical one, whose Hessian it lacks, is refused
    with the geoopt class that has it. Copies and pickles keep working."""
    import copy
    import pickle

    embedded = Stiefel(canonical=False)
    assert isinstance(embedded, Stiefel) and isinstance(embedded, geoopt.EuclideanStiefel)
    with pytest.raises(ValueError, match=r"canonical=True.*geoopt\.CanonicalStiefel"):
        Stiefel(canonical=True)
    for other in (copy.deepcopy(embedded), pickle.loads(pickle.dumps(embedded))):
        assert isinstance(other, Stiefel)


def test_stiefel_projx_refuses_more_columns_than_rows():
    """St(d, k) needs k ≤ d: geoopt's projx of a 3×5 matrix returned a matrix off the manifold, silently
    (a new user's trial). Its transpose is projected as usual."""
    x = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="needs k <= d"):
        Stiefel().projx(x)
    q = Stiefel().projx(x.mT)
    torch.testing.assert_close(q.mT @ q, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-14)


def _subspace_loss(d: int, seed: int):
    """A loss of span(X) alone, f(X) = −tr(XᵀAX) + ‖XᵀBX‖²/10 (the same at X and XQ), with its Euclidean
    gradient and Hessian from torch.func."""
    g = torch.Generator().manual_seed(seed)
    a, b = (_sym(torch.randn(d, d, generator=g, dtype=torch.float64)) for _ in range(2))

    def f(x):
        return -torch.trace(x.mT @ a @ x) + 0.1 * ((x.mT @ b @ x) ** 2).sum()

    egrad = torch.func.grad(f)
    return f, egrad, lambda x, u: torch.func.jvp(egrad, (x,), (u,))[1], g


@pytest.mark.parametrize("k", [1, 3, 7])
def test_grassmann_gradient_and_hessian_pass_the_second_order_taylor_test(k):
    """Along Gr(d, k)'s geodesic t ↦ Exp_X(tU), f = f(X) + t⟨grad, U⟩ + t²⟨Hess U, U⟩/2 + O(t³): the
    remainder falls at least 8-fold when t halves (16-fold where the cubic term happens to be small;
    a wrong Hessian leaves O(t²), 4-fold). span(X + tU) is a second-order retraction on Gr(d, k):
    this does not single out the geodesic."""
    man = Grassmann()
    f, egrad, ehess, g = _subspace_loss(9, k)
    x = man.projx(torch.randn(9, k, generator=g, dtype=torch.float64))
    u = man.proju(x, torch.randn(9, k, generator=g, dtype=torch.float64))
    u = u / u.norm()
    grad = man.egrad2rgrad(x, egrad(x))
    hess = man.ehess2rhess(x, egrad(x), ehess(x, u), u)
    slope, curve = float(man.inner(x, grad, u)), float(man.inner(x, hess, u))

    def remainder(t):
        return abs(float(f(man.expmap(x, t * u)) - f(x)) - t * slope - 0.5 * t * t * curve)

    ratios = [remainder(t) / remainder(t / 2) for t in (4e-2, 2e-2, 1e-2)]
    assert all(r > 7.0 for r in ratios), ratios


def test_grassmann_hessian_is_symmetric_and_horizontal():
    man = Grassmann()
    f, egrad, ehess, g = _subspace_loss(8, 0)
    x = man.projx(torch.randn(8, 3, generator=g, dtype=torch.float64))
    u, w = (man.proju(x, torch.randn(8, 3, generator=g, dtype=torch.float64)) for _ in range(2))
    hu = man.ehess2rhess(x, egrad(x), ehess(x, u), u)
    hw = man.ehess2rhess(x, egrad(x), ehess(x, w), w)
    torch.testing.assert_close(man.inner(x, hu, w), man.inner(x, u, hw), rtol=1e-12, atol=1e-12)
    assert float((x.mT @ hu).abs().max()) <= 1e-13


def test_grassmann_points_and_tangent_vectors():
    """Points are orthonormal bases (projx, retr and expmap keep them so), tangent vectors horizontal
    (xᵀu = 0: a rotation within the span, x Ω, is not one), and k > d is refused as Stiefel's is."""
    man = Grassmann()
    g = torch.Generator().manual_seed(1)
    assert isinstance(man, geoopt.Manifold) and not isinstance(man, Stiefel)
    x = man.projx(torch.randn(4, 10, 3, generator=g, dtype=torch.float64))  # a batch
    assert man.check_point_on_manifold(x, atol=1e-12, rtol=1e-12)
    u = man.proju(x, torch.randn(4, 10, 3, generator=g, dtype=torch.float64))
    torch.testing.assert_close(man.proju(x, u), u)
    assert float((x.mT @ u).abs().max()) <= 1e-14
    assert man.check_vector_on_tangent(x, u, atol=1e-12, rtol=1e-12)
    omega = torch.randn(4, 3, 3, generator=g, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x\^T u != 0"):
        man.assert_check_vector_on_tangent(x, x @ (omega - omega.mT), atol=1e-12, rtol=1e-12)
    for y in (man.retr(x, u), man.expmap(x, u)):
        assert man.check_point_on_manifold(y, atol=1e-12, rtol=1e-12)
        moved = man.transp(x, y, u)
        assert float((y.mT @ moved).abs().max()) <= 1e-14
    # the basis moves with the step, to first order x + t u, as the transport by projection needs (a
    # QR that flipped a column's sign had made expmap_transp another vector; a review)
    for step in (man.retr, man.expmap):
        torch.testing.assert_close(step(x, 0 * u), x, rtol=0, atol=1e-14)
        t = 1e-6
        assert float((step(x, t * u) - x - t * u).abs().max()) <= (t * float(u.norm())) ** 2 + 1e-14
    with pytest.raises(ValueError, match="needs k <= d"):
        man.projx(torch.randn(3, 5, generator=g, dtype=torch.float64))
