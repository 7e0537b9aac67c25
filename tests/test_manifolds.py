"""The manifolds: geoopt-compatible, points stay on them, and ehess2rhess is the Riemannian Hessian."""

import geoopt
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from riemsvd.manifolds import Sphere, Stiefel


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
