"""riemsvd.optim.RiemannianTrustRegion: examples as tests (the leading pair, Brockett's cost on Stiefel,
a Procrustes fit with a Euclidean part), its quadratic convergence, its Hessian, its options."""

from __future__ import annotations

import copy
import functools
import math
import warnings

import geoopt
import pytest
import torch

import riemsvd
from riemsvd.manifolds import Grassmann, Sphere
from riemsvd.optim import RiemannianTrustRegion
from tests.matrices import make_matrix, orthonormal

SPHERE = riemsvd.manifolds.Sphere()
STIEFEL = riemsvd.manifolds.Stiefel()


def _on(manifold, x: torch.Tensor) -> geoopt.ManifoldParameter:
    return geoopt.ManifoldParameter(x, manifold=manifold)


def _unit(n: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, dtype=torch.float64, generator=gen)
    return x / x.norm()


def _run(opt: RiemannianTrustRegion, closure, steps: int = 100) -> list:
    """The info of every step, until one that stops (converged, or stalled)."""
    infos = []
    for _ in range(steps):
        opt.step(closure)
        infos.append(opt.info)
        if opt.info.stop_reason:
            break
    return infos


def _quadratic_constants(infos: list, scale: float, floor: float = 1e-12) -> list[float]:
    """‖g₊‖/‖g‖² (gradient norms divided by ``scale``) over the final run of interior Newton steps
    (taken, CG stopped inside the region) from ‖g‖ < 0.05: "near the solution". A step to the
    boundary or a rejection ends the run (a saddle left behind, for instance). Pairs whose ‖g₊‖ is at
    the rounding floor (1e-12: ε·√n·‖A‖ with a margin) say nothing about the rate."""
    out = []
    for before, after in zip(infos[-2::-1], infos[::-1]):
        x, y = before.gradient_norm / scale, after.gradient_norm / scale
        if not (before.accepted and before.inner_stop not in ("negative curvature", "trust region")):
            break
        if x >= 0.05:
            break
        if y > floor:
            out.append(y / x**2)
    return out


def _leading_pair(kind: str, gen: torch.Generator, m: int = 400, n: int = 200):
    a = make_matrix(kind, m, n, gen)
    u, v = _on(SPHERE, _unit(m, gen)), _on(SPHERE, _unit(n, gen))
    return a, u, v


@pytest.mark.parametrize("kind", ["gaussian", "decay"])
def test_leading_pair_converges_quadratically_from_a_random_start(kind, gen):
    """‖g‖ ≤ 1e-10·σ₁ in at most 20 steps, ‖g₊‖ ≤ C‖g‖² near the solution (relative to σ₁).

    Measured over 20 random starts on 400×200 matrices: at most 15 steps (Gaussian, σ₁ − σ₂ ≈ 1.6%
    of σ₁) and 8 (decay), C at most 35 and 1.0; a method that is only linear (CG stopped at a fixed
    κ = 0.1, or the Hessian without its curvature term) gives ratios above 1e4 once ‖g‖ < 1e-5."""
    a, u, v = _leading_pair(kind, gen)
    s1 = float(torch.linalg.svdvals(a)[0])
    # gradient_tol a 0-dim tensor, as docs/optim.md passes it (it raised a TypeError: a new user's trial)
    opt = RiemannianTrustRegion([u, v], gradient_tol=1e-10 * torch.linalg.matrix_norm(a, 2))
    infos = _run(opt, lambda: -(u @ a @ v), steps=40)
    assert infos[-1].converged and len(infos) - 1 <= 20, [f"{i.gradient_norm / s1:.1e}" for i in infos]
    constants = _quadratic_constants(infos, s1)
    assert len(constants) >= 1 and max(constants) <= 100, constants
    uu, ss, vh = torch.linalg.svd(a, full_matrices=False)
    sign = torch.sign(u.detach() @ uu[:, 0])
    torch.testing.assert_close(u.detach() * sign, uu[:, 0], rtol=0, atol=1e-9)
    torch.testing.assert_close(v.detach() * sign, vh[0], rtol=0, atol=1e-9)
    assert abs(float((u @ a @ v).detach()) - float(ss[0])) <= 1e-13 * float(ss[0])


def test_brockett_cost_on_stiefel_gives_the_top_eigenvectors_in_order(gen):
    """max tr(XᵀAXN), N = diag(p, …, 1), on St(n, p): the top p eigenvectors of the symmetric A, in
    order, against torch.linalg.eigh; quadratic convergence (measured over 20 starts: ≤ 16 steps to
    ‖g‖ ≤ 1e-10·λ₁, C ≤ 46 above the rounding floor)."""
    n, p = 200, 4
    q = orthonormal(n, n, gen)
    lam = torch.linspace(1, 0.01, n, dtype=torch.float64) ** 2  # λ₁ − λ₂ ≈ 1%
    a = (q * lam) @ q.mT
    weights = torch.arange(p, 0, -1, dtype=torch.float64)
    x = _on(STIEFEL, orthonormal(n, p, gen))

    def brockett():
        return -((x.mT @ a @ x).diagonal() * weights).sum()

    infos = _run(RiemannianTrustRegion([x], gradient_tol=1e-10), brockett)
    assert infos[-1].converged and len(infos) - 1 <= 20, [f"{i.gradient_norm:.1e}" for i in infos]
    constants = _quadratic_constants(infos, 1.0)
    assert len(constants) >= 1 and max(constants) <= 100, constants
    values, vectors = torch.linalg.eigh(a)
    top = vectors[:, -p:].flip(-1)
    x = x.detach()
    torch.testing.assert_close(x * torch.sign((x * top).sum(0)), top, rtol=0, atol=1e-8)
    torch.testing.assert_close((x.mT @ a @ x).diagonal(), values[-p:].flip(-1), rtol=1e-13, atol=0)


def test_procrustes_with_a_learned_translation_matches_the_closed_form(gen):
    """A rotation Q ∈ St(d, d) and a translation b ∈ R^d fitted jointly: min ½‖A Q + 1bᵀ − B‖², whose
    solution is Q = U Vᵀ from the SVD of the centred ĀᵀB̄ and b = mean(B) − mean(A) Q. The
    trust-region method takes 9 steps to ‖g‖ ≤ 1e-10; geoopt's RiemannianAdam (lr 0.02) was 2e-7
    away from b after 3000."""
    rows, d = 200, 5
    a = torch.randn(rows, d, dtype=torch.float64, generator=gen)
    b_true = torch.randn(d, dtype=torch.float64, generator=gen)
    noise = 0.01 * torch.randn(rows, d, dtype=torch.float64, generator=gen)
    target = a @ orthonormal(d, d, gen) + b_true + noise
    ac, bc = a - a.mean(0), target - target.mean(0)
    left, _, right = torch.linalg.svd(ac.mT @ bc)
    q_star = left @ right
    b_star = target.mean(0) - a.mean(0) @ q_star

    start = orthonormal(d, d, gen)
    start[:, 0] *= torch.sign(torch.linalg.det(start) * torch.linalg.det(q_star))  # St(d, d) = O(d) has
    q = _on(STIEFEL, start)  # two components, and a descent method stays in the one it starts in
    b = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    opt = RiemannianTrustRegion([q, b], gradient_tol=1e-10)
    infos = _run(opt, lambda: 0.5 * (a @ q + b - target).square().sum())
    assert infos[-1].converged and len(infos) <= 20
    torch.testing.assert_close(q.detach(), q_star, rtol=0, atol=1e-10)
    torch.testing.assert_close(b.detach(), b_star, rtol=0, atol=1e-10)


def test_steps_that_keep_going_the_whole_max_radius_warn_once():
    """The Procrustes fit with a translation 1e4 from the start: the default max_radius (7.4 here) let
    each step go 7.4 of the way, 2000 steps without a word where the answer lay 1e5 away (a new user's
    trial). After 50 such steps in a row it warns, once, and names max_radius; at the scale of the
    default it converges without a warning, and a max_radius of the distance's order serves the
    large scale."""
    for scale, steps in ((1.0, 100), (1e4, 60)):
        g = torch.Generator().manual_seed(0)
        rows, d = 40, 5
        a = torch.randn(rows, d, dtype=torch.float64, generator=g)
        target = a @ orthonormal(d, d, g) + scale * torch.randn(d, dtype=torch.float64, generator=g)
        q = _on(STIEFEL, orthonormal(d, d, g))
        b = torch.zeros(d, dtype=torch.float64, requires_grad=True)
        opt = RiemannianTrustRegion([q, b])
        closure = functools.partial(lambda q, b, a, t: 0.5 * (a @ q + b - t).square().sum(), q, b, a, target)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            infos = _run(opt, closure, steps)
        told = [w for w in caught if "went the whole max_radius" in str(w.message)]
        if scale == 1.0:
            assert infos[-1].converged and not told
        else:
            assert len(told) == 1 and told[0].filename == __file__ and not infos[-1].stop_reason
            assert _run(RiemannianTrustRegion([q, b], max_radius=10 * scale), closure)[-1].converged


def test_hessian_is_the_riemannian_hessian_of_the_pair(gen):
    """For f = −uᵀAv on two spheres, Hess f[(x, y)] = (−P_u A y + (uᵀAv) x, −P_v Aᵀx + (uᵀAv) y): the
    autograd Hessian with ``ehess2rhess`` against the formula, at a point that is not critical (where
    the curvature term matters)."""
    a, u, v = _leading_pair("gaussian", gen, 30, 20)
    opt = RiemannianTrustRegion([u, v])
    _, xs, egrads, graph, _ = opt._derivatives(lambda: -(u @ a @ v))
    x = SPHERE.proju(xs[0], torch.randn(30, dtype=torch.float64, generator=gen))
    y = SPHERE.proju(xs[1], torch.randn(20, dtype=torch.float64, generator=gen))
    hx, hy = opt._hessian(xs, egrads, graph, [x, y])
    uu, vv = xs
    f = float(uu @ a @ vv)
    torch.testing.assert_close(hx, -SPHERE.proju(uu, a @ y) + f * x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hy, -SPHERE.proju(vv, a.mT @ x) + f * y, rtol=1e-12, atol=1e-12)


def test_geoopt_manifolds_get_the_hessian_of_riemsvds(gen):
    """geoopt's own Sphere and EuclideanStiefel (no ehess2rhess) have riemsvd's embedded metric and get
    its Hessian: the same iterates as on riemsvd's manifolds. A manifold with neither is approximated,
    with a warning."""
    a = make_matrix("gaussian", 60, 40, gen)
    u0, v0, x0 = _unit(60, gen), _unit(40, gen), orthonormal(60, 3, gen)
    weights = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    runs = []
    for sphere, stiefel in ((geoopt.Sphere(), geoopt.EuclideanStiefel()), (SPHERE, STIEFEL)):
        u, v, x = _on(sphere, u0.clone()), _on(sphere, v0.clone()), _on(stiefel, x0.clone())
        opt = RiemannianTrustRegion([u, v, x], gradient_tol=1e-9)
        infos = _run(
            opt, lambda u=u, v=v, x=x: -(u @ a @ v) - ((x.mT @ a @ a.mT @ x).diagonal() * weights).sum()
        )
        runs.append([i.gradient_norm for i in infos])
    assert runs[0] == pytest.approx(runs[1], rel=1e-6, abs=1e-12)
    ball = geoopt.ManifoldParameter(torch.zeros(3, dtype=torch.float64), manifold=geoopt.PoincareBall())
    with pytest.warns(UserWarning, match="parameter 0 lies on PoincareBall, which has no ehess2rhess") as rec:
        opt = RiemannianTrustRegion([ball])
    assert rec[0].filename == __file__  # the constructor's caller (it had pointed inside riemsvd)
    opt.step(lambda: (ball - 0.1).square().sum())
    assert opt.info.accepted
    canonical = geoopt.Stiefel()  # geoopt's default: its warning names the embedded metric (a trial)
    frame = geoopt.ManifoldParameter(canonical.random(5, 2, dtype=torch.float64), manifold=canonical)
    with pytest.warns(UserWarning, match=r"CanonicalStiefel, .* Use riemsvd.manifolds.Stiefel\(\)"):
        RiemannianTrustRegion([frame])


def test_preconditioner_cuts_the_inner_iterations(gen):
    """½ Σ dᵢ(wᵢ − cᵢ)² with dᵢ from 1 to 1e6: CG without a preconditioner needs many iterations a
    step; with P = diag(1/d), the exact inverse Hessian, one."""
    d = torch.logspace(0, 6, 50, dtype=torch.float64)
    c = torch.randn(50, dtype=torch.float64, generator=gen)
    totals = {}
    for name, pre in (("none", None), ("diagonal", lambda params, vs: [vs[0] / d])):
        w = torch.zeros(50, dtype=torch.float64, requires_grad=True)
        opt = RiemannianTrustRegion([w], max_radius=1e8, radius=1e8, gradient_tol=1e-8, preconditioner=pre)
        infos = _run(opt, lambda w=w: 0.5 * (d * (w - c).square()).sum())
        assert infos[-1].converged
        torch.testing.assert_close(w.detach(), c, rtol=0, atol=1e-8)
        totals[name] = sum(i.inner_iterations for i in infos)
    assert totals["diagonal"] <= 3 and totals["none"] >= 10 * totals["diagonal"], totals


def test_info_reports_each_step_and_rejections_restore_the_parameters(gen):
    a, u, v = _leading_pair("gaussian", gen, 60, 40)
    opt = RiemannianTrustRegion([u, v], radius=opt_max(u, v), gradient_tol=0.0)
    infos = []
    for _ in range(6):
        before = (u.detach().clone(), v.detach().clone())
        loss = opt.step(lambda: -(u @ a @ v))
        info = opt.info
        infos.append(info)
        assert float(loss) == info.loss and info.step == len(infos)
        assert info.inner_iterations >= 1 and info.inner_stop and info.stop_reason is None
        if not info.accepted:
            assert torch.equal(u.detach(), before[0]) and torch.equal(v.detach(), before[1])
            assert info.next_radius == info.radius * 0.25
    assert any(not i.accepted for i in infos), [i.rho for i in infos]  # a full-size first radius


def opt_max(u, v) -> float:
    """The default largest radius for two unit vectors: π·√2."""
    return RiemannianTrustRegion([u, v]).max_radius


def test_state_dict_keeps_the_radius(gen):
    a, u, v = _leading_pair("decay", gen, 60, 40)
    opt = RiemannianTrustRegion([u, v])
    for _ in range(3):
        opt.step(lambda: -(u @ a @ v))
    other = RiemannianTrustRegion([u, v])
    other.load_state_dict(opt.state_dict())
    assert other.state[u]["radius"] == opt.info.next_radius and other.state[u]["step"] == 3


def test_a_copied_optimizer_steps_as_the_original(gen):
    """copy.deepcopy and a pickle round trip (torch.save's) of an optimizer that has stepped: the copy
    takes the original's next steps, to the bit, with its own copies of the parameters. The copies
    had kept torch's state alone, and their first step raised AttributeError (a new user's trial)."""
    import pickle

    a, u, v = _leading_pair("decay", gen, 60, 40)
    opt = RiemannianTrustRegion([u, v], patience=7, radius=0.5)
    for _ in range(2):
        opt.step(lambda: -(u @ a @ v))
    copies = [copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))]
    losses = [[float(opt.step(lambda: -(u @ a @ v))) for _ in range(3)]]
    for other in copies:
        u2, v2 = other.param_groups[0]["params"]
        assert u2 is not u and other.patience == 7 and other._given == opt._given
        losses.append([float(other.step(lambda u2=u2, v2=v2: -(u2 @ a @ v2))) for _ in range(3)])
    assert losses[1] == losses[0] and losses[2] == losses[0], losses


def test_a_nan_gradient_of_a_finite_loss_is_named_as_the_gradients(gen):
    """√(x₁²) at x₁ = 0: a finite loss whose gradient is NaN had been called a non-finite loss."""
    x = _on(SPHERE, torch.tensor([0.0, 1.0], dtype=torch.float64))
    opt = RiemannianTrustRegion([x])
    with pytest.raises(ValueError, match=r"loss of 1\.0 .* non-finite gradient \(of a finite loss\)"):
        opt.step(lambda: torch.sqrt(x[0] ** 2) + x[1])


def test_arguments_are_checked_by_name(gen):
    u = _on(SPHERE, _unit(5, gen))
    for kwargs, match in [
        ({"kappa": 1.5}, "`kappa`"),
        ({"theta": 0.0}, "`theta`"),
        ({"accept": 0.5}, "`accept`"),
        ({"radius": -1.0}, "`radius`"),
        ({"radius": 2.0, "max_radius": 1.0}, "`radius`"),
        ({"max_inner": 0}, "`max_inner`"),
        ({"gradient_tol": -1.0}, "`gradient_tol`"),
    ]:
        with pytest.raises(ValueError, match=match):
            RiemannianTrustRegion([u], **kwargs)
    with pytest.raises(TypeError, match="`preconditioner`"):
        RiemannianTrustRegion([u], preconditioner=3)
    with pytest.raises(ValueError, match="`max_inner` set for one parameter group"):
        RiemannianTrustRegion([{"params": [u], "max_inner": 3}])
    for key in ("kappa", "theta", "accept", "shrink", "grow"):  # had been accepted and ignored (a trial)
        with pytest.raises(ValueError, match=f"`{key}` set for one parameter group"):
            RiemannianTrustRegion([{"params": [u], key: 0.5}])
    RiemannianTrustRegion([{"params": [u], "name": "u"}])  # a key of the caller's own is left alone
    for key in ("lr", "momentum", "weight_decay"):  # a first-order option was kept and ignored (a trial)
        with pytest.raises(ValueError, match=rf"`{key}` set for a parameter group: .* \(no learning rate"):
            RiemannianTrustRegion([{"params": [u], key: 0.1}])
    # torch's `maximize`, kept and ignored, minimized: the run reported λ_min converged (a trial)
    with pytest.raises(ValueError, match="`maximize` set for a parameter group: .* negated loss"):
        RiemannianTrustRegion([{"params": [u], "maximize": True}])
    with pytest.raises(ValueError, match="`maximize` set"):
        RiemannianTrustRegion([torch.zeros(2, requires_grad=True)]).add_param_group(
            {"params": [u], "maximize": True}
        )

    class Flat:  # not a geoopt manifold
        def proju(self, x, v):
            return v

    odd = torch.zeros(3, requires_grad=True)
    odd.manifold = Flat()
    with pytest.raises(TypeError, match="`params`: parameter 0 .* lacks egrad2rgrad, retr, inner"):
        RiemannianTrustRegion([odd])
    opt = RiemannianTrustRegion([u])
    with pytest.raises(TypeError, match="`closure` is required"):
        opt.step(None)
    with pytest.raises(ValueError, match="`closure` must return .* without grad"):
        opt.step(lambda: torch.tensor(1.0))

    def lbfgs_style():  # torch's own error named neither the closure nor the fix (a new user's trial)
        opt.zero_grad()
        loss = (u * u).sum()
        loss.backward()
        return loss

    with pytest.raises(ValueError, match=r"`closure` called backward\(\) .* without calling backward"):
        opt.step(lbfgs_style)

    # a loss linear in u saves nothing for backward: the backward() gets through the first call and
    # fails in the trial point's, under no_grad; the parameter stays where it was (a new user's trial)
    before = u.detach().clone()

    def linear_lbfgs_style():
        loss = -u[0]
        loss.backward()
        return loss

    with pytest.raises(ValueError, match=r"`closure` called backward\(\)"):
        opt.step(linear_lbfgs_style)
    assert torch.equal(u.detach(), before)


def test_loss_linear_in_a_parameter_and_unused_parameters(gen):
    """A loss with no second derivative in w (linear) and a parameter it does not use: zero Hessian
    blocks, no autograd error; the unused parameter stays where it is."""
    a = make_matrix("decay", 30, 20, gen)
    u, v = _on(SPHERE, _unit(30, gen)), _on(SPHERE, _unit(20, gen))
    unused = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = RiemannianTrustRegion([u, v, unused], gradient_tol=1e-9)
    infos = _run(opt, lambda: -(u @ a @ v))
    assert infos[-1].converged and torch.equal(unused.detach(), torch.ones(3, dtype=torch.float64))


def test_a_start_off_the_manifold_a_non_finite_loss_and_a_parameter_without_grad_are_named(gen):
    """Each was silent or blamed the closure (a new user's trial): from a point of norm 11.5 on the
    sphere every step was rejected while the radius shrank; a NaN loss left info.stop_reason None, so
    that a loop until info.converged spun forever; an integer parameter's first step said the closure
    returned a tensor without grad."""
    from riemsvd.manifolds import Sphere

    a = torch.randn(20, 20, dtype=torch.float64, generator=gen)
    a = a + a.mT
    off = geoopt.ManifoldParameter(3 * torch.randn(20, dtype=torch.float64, generator=gen), manifold=Sphere())
    with pytest.raises(ValueError, match="parameter 0 is not on its Sphere manifold"):
        RiemannianTrustRegion([off]).step(lambda: off @ a @ off)
    # a NaN start is named as such: the fix offered for a point off the manifold, projx, keeps the NaN
    nan = geoopt.ManifoldParameter(torch.full((20,), float("nan"), dtype=torch.float64), manifold=Sphere())
    with pytest.raises(ValueError, match="parameter 0 has NaN or Inf entries"):
        RiemannianTrustRegion([nan]).step(lambda: nan @ a @ nan)
    x = geoopt.ManifoldParameter(Sphere().projx(off.detach().clone()), manifold=Sphere())
    opt = RiemannianTrustRegion([x])
    with pytest.raises(ValueError, match="`closure` returned a loss of nan"):
        opt.step(lambda: x @ a @ x * float("nan"))
    opt.step(lambda: x @ a @ x)  # from a point on it, a finite loss: a step as usual
    assert opt.info is not None and opt.info.loss == opt.info.loss
    integer, frozen = torch.zeros(3, dtype=torch.long), torch.zeros(3)
    for bad, what in ((integer, "dtype torch.int64"), (frozen, "requires_grad")):
        with pytest.raises(ValueError, match=f"parameter 0 has {what}"):
            RiemannianTrustRegion([bad])


def test_a_stalled_trust_region_solve_points_to_the_iteration_not_to_options():
    """k = 8 inside σ₅ = … = σ₅₀: the trust region stalled near 1e-9 on 4 of 10 seeds and its warning
    offered `SolverOptions(max_basis=..., patience=...)`, which it does not use (a new user's trial)."""
    g = torch.Generator().manual_seed(0)
    u, v = orthonormal(80, 50, g), orthonormal(50, 50, g)
    a = (u * torch.cat([torch.ones(4), 0.5 * torch.ones(46)]).double()) @ v.mT
    stalled = 0
    for seed in range(4):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = riemsvd.solve(a, 8, method="trust-region", generator=torch.Generator().manual_seed(seed))
        if result.info.stop_reason == "stalled":
            stalled += 1
            text = " ".join(str(w.message) for w in caught)
            assert "method='iterative'" in text and "SolverOptions" not in text
    assert stalled  # the case the message is for
    assert bool(riemsvd.solve(a, 8, generator=torch.Generator().manual_seed(0)).info.converged)


def test_a_scaled_sphere_takes_the_spheres_steps():
    """geoopt.Scaled(Sphere(), 3): its retraction divides a step by 3 where its gradient and inner
    product do not, and a Rayleigh quotient took 69 steps where the sphere took 9 (a new user's
    trial). The trust region works on the base manifold: the same points, the same steps."""
    torch.manual_seed(0)
    a = torch.randn(20, 20, dtype=torch.float64)
    sym = a + a.T
    x0 = Sphere().projx(torch.randn(20, dtype=torch.float64))
    steps = {}
    for name, manifold in (("sphere", Sphere()), ("scaled", geoopt.Scaled(Sphere(), scale=3.0))):
        x = geoopt.ManifoldParameter(x0.clone(), manifold=manifold)
        opt = RiemannianTrustRegion([x], gradient_tol=1e-10)
        while not (opt.info is not None and opt.info.converged) and (opt.info is None or opt.info.step < 100):
            opt.step(lambda x=x: -(x @ sym @ x))
        assert opt.info is not None
        steps[name] = opt.info.step
        torch.testing.assert_close(
            float(x.detach() @ sym @ x.detach()), float(torch.linalg.eigvalsh(sym)[-1])
        )
    assert steps["scaled"] == steps["sphere"], steps


def test_a_parameter_passed_twice_is_refused():
    """[x, x] took 100 steps without converging where [x] took 9, and reported a gradient norm 2.1×
    the true one, with only torch's warning on duplicate parameters (a new user's trial)."""
    x = geoopt.ManifoldParameter(Sphere().projx(torch.randn(6, dtype=torch.float64)), manifold=Sphere())
    with pytest.raises(ValueError, match="parameter 1 is parameter 0 again"):
        RiemannianTrustRegion([x, x])


def test_an_added_parameter_group_joins_the_trust_region():
    """add_param_group put y in param_groups and the optimizer never moved it (a new user's trial):
    the parameters, their manifolds and the defaults derived from them were fixed at construction."""
    a = torch.diag(torch.linspace(0, 1, 6, dtype=torch.float64))
    x = _on(SPHERE, SPHERE.projx(torch.ones(6, dtype=torch.float64)))
    y = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = RiemannianTrustRegion([x], gradient_tol=1e-10)
    alone = (opt.max_radius, opt.max_inner)
    opt.add_param_group({"params": [y]})
    assert opt.max_radius > alone[0] and opt.max_inner == alone[1] + 3
    infos = _run(opt, lambda: -(x @ a @ x) + ((y - 1) ** 2).sum())
    assert infos[-1].converged
    torch.testing.assert_close(y.detach(), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(float(x.detach() @ a @ x.detach()), 1.0)
    groups = len(opt.param_groups)
    with pytest.raises(ValueError, match="`max_radius` set for one parameter group"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "max_radius": 3.0})
    # refused, the group is not kept: a later valid group is taken (it raised the same error after)
    assert len(opt.param_groups) == groups
    z = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt.add_param_group({"params": [z]})
    assert any(p is z for p in opt._params)


def test_a_trial_loss_of_minus_infinity_shrinks_the_radius():
    """A trial point where the loss is −inf gave ρ = inf: the step was rejected and the radius grown,
    0.785 → 1.57 → 3.14 → 0.785, cycling without end (a new user's trial). As for NaN, it shrinks."""
    a = torch.diag(torch.linspace(0, 1, 10, dtype=torch.float64))
    x = _on(SPHERE, SPHERE.projx(torch.ones(10, dtype=torch.float64)))
    opt = RiemannianTrustRegion([x])

    def loss():
        return -(x @ a @ x) + torch.log(torch.relu(0.95 - x[-1]))

    for _ in range(8):
        opt.step(loss)
        assert opt.info is not None
        if not opt.info.accepted:
            assert opt.info.next_radius < opt.info.radius, opt.info
    assert bool(torch.isfinite(loss().detach()))  # the parameters stayed where the loss is finite


def test_a_preconditioner_that_is_not_positive_definite_or_returns_the_wrong_kind_is_named():
    """Zeros raised a bare ZeroDivisionError in CG; NaN ran every CG iteration while the radius fell
    to 1e-24; one tensor returned for a list was zipped against the parameters and never converged
    (a new user's trial)."""
    a = torch.randn(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sym = a + a.T
    x = _on(SPHERE, SPHERE.projx(torch.ones(8, dtype=torch.float64)))
    bad = {
        "zeros": (ValueError, lambda params, vs: [torch.zeros_like(v) for v in vs]),
        "nan": (ValueError, lambda params, vs: [v * float("nan") for v in vs]),
        "tensor": (TypeError, lambda params, vs: vs[0]),
    }
    for error, pre in bad.values():
        opt = RiemannianTrustRegion([x], preconditioner=pre)
        with pytest.raises(error, match="`preconditioner`"):
            opt.step(lambda: -(x @ sym @ x))
    opt = RiemannianTrustRegion([x], preconditioner=lambda params, vs: [2 * v for v in vs])
    opt.step(lambda: -(x @ sym @ x))  # a scaled identity is positive definite: a step as usual


def test_a_parameter_frozen_after_construction_is_named_not_the_closure():
    x = _on(SPHERE, SPHERE.projx(torch.ones(5, dtype=torch.float64)))
    y = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = RiemannianTrustRegion([x, y])
    y.requires_grad_(False)
    with pytest.raises(ValueError, match="parameter 1 has requires_grad=False"):
        opt.step(lambda: -(x @ x) + (y**2).sum())


def test_a_gradient_tol_below_float32_rounding_stops_stalled_with_a_warning():
    """The docs' leading-pair loop in float32, asked for ‖g‖ ≤ 1e-10·σ₁: the gradient stops near 1e-5
    (float32's rounding of uᵀAv's gradient, σ₁ ≈ 34), every step accepted with ρ ≈ 1, and the loop ran
    without end (a new user's trial). Now the steps stop "stalled" once `patience` accepted ones in a
    row found no new low of the gradient norm or the loss, with one warning; σ is right to float32
    rounding, the result is not called converged, and a further step does not move. In float64 the
    same loop converges, no warning; with patience=None the float32 one runs on."""
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator().manual_seed(0)
        a = torch.randn(400, 200, generator=g).to(dtype)
        u, v = (_on(SPHERE, _unit(n, g).to(dtype)) for n in (400, 200))
        opt = RiemannianTrustRegion([u, v], gradient_tol=1e-10 * torch.linalg.matrix_norm(a, 2))
        closure = functools.partial(lambda u, a, v: -(u @ a @ v), u, a, v)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            while not (opt.info and opt.info.stop_reason) and (opt.info is None or opt.info.step < 200):
                opt.step(closure)
        s1 = float(torch.linalg.svdvals(a.double())[0])
        sigma = float((u @ a @ v).detach())
        stalls = [w for w in caught if issubclass(w.category, riemsvd.ConvergenceWarning)]
        if dtype == torch.float32:
            assert opt.info.stop_reason == "stalled" and not opt.info.converged, opt.info
            assert opt.info.step <= 100 and len(stalls) == 1 and "gradient_tol" in str(stalls[0].message)
            # at the caller's line, not inside the wrapper torch puts around step (a new user's trial)
            assert stalls[0].filename == __file__, stalls[0].filename
            assert abs(sigma - s1) <= 1e-6 * s1
            before = (u.detach().clone(), v.detach().clone())
            opt.step(closure)
            assert opt.info.stop_reason == "stalled" and torch.equal(u.detach(), before[0])
            endless = RiemannianTrustRegion([u, v], gradient_tol=1e-10 * s1, patience=None)
            for _ in range(30):
                endless.step(closure)
                assert endless.info.stop_reason is None
        else:
            assert opt.info.converged and not stalls and abs(sigma - s1) <= 1e-13 * s1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_default_gradient_tol_is_the_gradients_rounding(dtype):
    """With gradient_tol 0 (the old default) every run ended "stalled" with a ConvergenceWarning,
    converged or not, after `patience` steps at the gradient's rounding (a new user's trial). By
    default the rounding itself, ε·√N·‖∇f‖, ends it, "gradient norm" and no warning, at that
    rounding: the leading pair of a 400×200 Gaussian and Brockett's cost on St(50, 4) (floors at
    0.06–0.62 of it; 10–15 steps where the stalls took 25–56)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 200, generator=g, dtype=torch.float64)
    b = torch.randn(50, 50, generator=g, dtype=torch.float64)
    b, weights = b + b.mT, torch.arange(4, 0, -1, dtype=torch.float64)
    u, v = (_on(SPHERE, _unit(n, g).to(dtype)) for n in (400, 200))
    x = _on(STIEFEL, torch.linalg.qr(torch.randn(50, 4, generator=g, dtype=torch.float64))[0].to(dtype))
    problems = (
        ([u, v], lambda: -(u @ a.to(dtype) @ v), float(torch.linalg.svdvals(a)[0])),
        ([x], lambda: torch.trace(x.mT @ b.to(dtype) @ x @ torch.diag(weights).to(dtype)), None),
    )
    for params, closure, s1 in problems:
        opt = RiemannianTrustRegion(params)
        with warnings.catch_warnings():
            warnings.simplefilter("error", riemsvd.ConvergenceWarning)
            while not (opt.info and opt.info.stop_reason):
                opt.step(closure)
        assert opt.info.converged and opt.info.step <= 20, opt.info
        if s1 is not None:  # σ₁ to the float32 or float64 rounding of uᵀAv, the gradient to its own
            ud, vd = u.detach().double(), v.detach().double()
            sigma = float(ud @ a @ vd)
            assert abs(sigma - s1) <= 30 * torch.finfo(dtype).eps * s1
            gradient = torch.cat([a @ vd - sigma * ud, a.mT @ ud - sigma * vd]).norm()
            assert float(gradient) <= 2 * torch.finfo(dtype).eps * 600**0.5 * 2**0.5 * s1
        else:  # Brockett's minimum: the least eigenvalues, the largest weight on the least
            xd = x.detach().double()
            least = float((torch.linalg.eigvalsh(b)[:4] * weights).sum())
            assert abs(float(torch.trace(xd.mT @ b @ xd @ torch.diag(weights))) - least) <= 30 * torch.finfo(
                dtype
            ).eps * abs(least)


def test_parameters_of_two_dtypes_are_judged_at_the_least_precise_ones_rounding():
    """A float64 u beside a float32 v: progress, ρ's regularization and the default gradient_tol had
    taken float64's ε from the first parameter, which the float32 gradient never reaches, and the
    loop ran on, 400 steps at ‖g‖ ≈ 3e-4 (a review); now float32's ε, and it converges."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(60, 40, dtype=torch.float64, generator=g)
    u, v = _on(SPHERE, _unit(60, g)), _on(SPHERE, _unit(40, g).float())
    opt = RiemannianTrustRegion([u, v])
    with warnings.catch_warnings():
        warnings.simplefilter("error", riemsvd.ConvergenceWarning)
        while not (opt.info and opt.info.stop_reason) and (opt.info is None or opt.info.step < 100):
            opt.step(lambda: -(u @ a @ v.double()))
    s1 = float(torch.linalg.svdvals(a)[0])
    assert opt.info.converged and opt.info.step <= 30, opt.info
    assert abs(float((u @ a @ v.double()).detach()) - s1) <= 1e-6 * s1


def test_float64_parameters_with_a_float32_loss_are_judged_at_float32s_rounding():
    """float64 parameters whose loss is computed in float32 (data kept in float32): progress was judged
    at float64's rounding, which the float32 loss never reaches; a Rayleigh quotient ran 3000 steps
    without a stop or a warning, a third of them rejected, the radius down to 2e-17 (a new user's
    trial). Now float32's ε, and it converges to float32's accuracy."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 300, generator=g)
    a = a + a.T
    x = _on(SPHERE, _unit(300, g))
    opt = RiemannianTrustRegion([x])
    with warnings.catch_warnings():
        warnings.simplefilter("error", riemsvd.ConvergenceWarning)
        while not (opt.info and opt.info.stop_reason) and (opt.info is None or opt.info.step < 200):
            opt.step(lambda: -(x.float() @ a @ x.float()))
    top = float(torch.linalg.eigvalsh(a.double())[-1])
    assert opt.info.converged and opt.info.step <= 30, opt.info
    assert abs(float(x.detach() @ a.double() @ x.detach()) - top) <= 1e-5 * abs(top)


def test_a_loss_that_does_not_depend_on_the_parameters_is_named():
    """A closure whose loss comes from another tensor (a typo) had a zero gradient and "converged" at
    the first step (a new user's trial)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 20, dtype=torch.float64, generator=g)
    x = _on(SPHERE, _unit(20, g))
    typo = _unit(20, g).requires_grad_()
    opt = RiemannianTrustRegion([x])
    with pytest.raises(ValueError, match="does not depend on the optimizer's parameters"):
        opt.step(lambda: -(typo @ a @ typo))
    assert opt.info is None or not opt.info.converged


def test_the_stall_rule_leaves_slow_progress_rejections_and_a_new_closure_alone():
    """A review found the first rule (no loss decrease beyond 1e3·ε·max(1, |f|), no halving of the
    gradient, rejected steps counted) stopping runs that were getting there: an ill-conditioned
    quadratic (κ = 1e4) whose CG is cut at 5 iterations, its loss near 0, stopped at step 1765 (505
    for the loss times 1e-6) where it converges at 2562; a radius of 1e9 shrinking through rejections
    stopped at step 11 without a move; a second closure after a converged first stopped after 10 steps
    at g = 0.47. All three now run to the gradient norm."""
    lam = torch.logspace(0, -4, 200, dtype=torch.float64)
    for scale in (1.0, 1e-6):
        x = torch.ones(200, dtype=torch.float64, requires_grad=True)
        opt = RiemannianTrustRegion([x], max_inner=5, gradient_tol=1e-9 * scale)
        with warnings.catch_warnings():
            warnings.simplefilter("error", riemsvd.ConvergenceWarning)
            while not (opt.info and opt.info.stop_reason) and (opt.info is None or opt.info.step < 4000):
                opt.step(lambda x=x, scale=scale: scale * 0.5 * (lam * x * x).sum())
        assert opt.info.converged, (scale, opt.info)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 200, dtype=torch.float64, generator=g)
    u, v = _on(SPHERE, _unit(400, g)), _on(SPHERE, _unit(200, g))
    opt = RiemannianTrustRegion([u, v], radius=1e9, max_radius=1e9, gradient_tol=1e-9)
    infos = _run(opt, lambda: -(u @ a @ v))
    assert infos[-1].converged and sum(not i.accepted for i in infos) >= 10
    b = 0.5 * torch.randn(400, 200, dtype=torch.float64, generator=g)
    opt.info = None
    infos = _run(opt, lambda: -(u @ b @ v))  # the same optimizer on another matrix
    sigma = float((u @ b @ v).detach())
    assert infos[-1].converged and abs(sigma - float(torch.linalg.svdvals(b)[0])) < 1e-10


def test_a_loaded_state_brings_its_options_and_takes_a_new_group():
    """After load_state_dict, add_param_group raised KeyError('differentiable') and kept the group,
    never optimized; a gradient_tol saved with the state showed in param_groups while the
    constructor's ran on (a new user's trial)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, dtype=torch.float64, generator=g)
    x, y = (_on(SPHERE, _unit(6, g)) for _ in range(2))
    saved = RiemannianTrustRegion([x], gradient_tol=1e-3).state_dict()
    opt = RiemannianTrustRegion([x])
    opt.load_state_dict(saved)
    assert opt.gradient_tol == 1e-3
    opt.add_param_group({"params": [y]})
    _run(opt, lambda: -(x @ a @ y), 100)
    assert opt.info.stop_reason == "gradient norm" and opt.info.gradient_norm <= 1e-3
    s1 = float(torch.linalg.svdvals(a)[0])
    assert abs(float(x @ a @ y) - s1) <= 1e-5 * s1  # y moved too: σ₁, not x's best against a fixed y


def test_a_gradient_without_a_graph_that_changes_warns_that_the_hessian_is_lost():
    """A Rayleigh quotient whose backward runs in numpy has no second derivative for autograd: its
    Hessian was silently zero and 500 steps ended at ‖g‖ = 1.5e-2 (a new user's trial). A loss linear
    in its parameter, whose gradient has no graph either, stays quiet."""
    g = torch.Generator().manual_seed(1)
    m = torch.randn(50, 50, dtype=torch.float64, generator=g)
    m = m + m.T

    class Quadratic(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x @ m @ x

        @staticmethod
        def backward(ctx, out):
            (x,) = ctx.saved_tensors
            return out * torch.from_numpy(2 * m.numpy() @ x.detach().numpy())

    x = _on(SPHERE, _unit(50, g))
    opt = RiemannianTrustRegion([x])
    with pytest.warns(UserWarning, match="parameter 0 carries no graph.*Hessian is taken as zero"):
        _run(opt, lambda: Quadratic.apply(x), 5)
    c, z = torch.randn(50, dtype=torch.float64, generator=g), _on(SPHERE, _unit(50, g))
    linear = RiemannianTrustRegion([z])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run(linear, lambda: c @ z, 50)
    assert linear.info.converged and float((z.detach() + c / c.norm()).norm()) <= 1e-7


def test_a_stall_far_above_the_rounding_is_not_called_converged():
    """A float32 Rayleigh quotient on S¹⁹⁹ with CG cut at 3 iterations stalls 0.14 above its minimum,
    at ‖g‖ = 0.88 from 4096: a rule of √ε of the first norm had ended it "rounding", converged,
    without a warning (a review). It is "stalled", with one."""
    g = torch.Generator().manual_seed(0)
    d = 1e4 + torch.logspace(0, 4, 200, dtype=torch.float64)
    a = torch.diag(d).float()
    x = _on(SPHERE, _unit(200, g).float())
    opt = RiemannianTrustRegion([x], max_inner=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(opt, lambda: x @ a @ x, 3000)
    assert opt.info.stop_reason == "stalled" and not opt.info.converged, opt.info
    stalled = [w for w in caught if w.category is riemsvd.ConvergenceWarning and "stalled" in str(w.message)]
    assert len(stalled) == 1, [str(w.message) for w in caught]
    assert float(x.detach().double() @ torch.diag(d) @ x.detach().double() - d[0]) > 1e-2


def test_a_state_dict_is_checked_before_it_is_loaded_and_an_older_one_steps():
    """A dict whose max_radius the optimizer refuses had been loaded all the same, beside the
    constructor's options; and one saved before the "rounding" rule, without its first gradient,
    raised KeyError at the next step (a review)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, dtype=torch.float64, generator=g)
    x, y = (_on(SPHERE, _unit(6, g)) for _ in range(2))
    closure = functools.partial(lambda x, y: -(x @ a @ y), x, y)
    opt = RiemannianTrustRegion([x, y], radius=0.3)
    opt.step(closure)
    saved = opt.state_dict()
    bad = copy.deepcopy(saved)
    bad["param_groups"][0]["max_radius"] = math.inf
    fresh = RiemannianTrustRegion([x, y], radius=0.3)
    with pytest.raises(ValueError, match="max_radius"):
        fresh.load_state_dict(bad)
    assert fresh.param_groups[0]["max_radius"] is None and not fresh.state
    for state in saved["state"].values():
        state.pop("first_gradient", None)
    fresh.load_state_dict(saved)
    _run(fresh, closure, 100)
    assert fresh.info.converged


@pytest.mark.parametrize("option", ["radius", "max_radius"])
def test_an_infinite_radius_is_refused(option):
    """max_radius=inf was taken: every step was rejected, the radius stayed inf and no stop came
    (a new user's trial)."""
    x = _on(SPHERE, _unit(6, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match=f"`{option}` must be positive and at most 1e"):
        RiemannianTrustRegion([x], **{option: math.inf})


def test_a_euclidean_minimum_converges_at_its_rounding_by_default():
    """Orthogonal Procrustes, min ½‖XQ − B‖² over St(5, 5): the Euclidean gradient vanishes at the
    solution and the default gradient_tol with it; the fit stopped at 2.4e-14, within 7.8e-16 of the
    closed form, and ended "stalled" with a ConvergenceWarning (a new user's trial). Now "rounding",
    converged, no warning; with a gradient_tol asked for below the floor it still stalls."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 5, dtype=torch.float64, generator=g)
    q0 = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=g))[0]
    b = x @ q0 + 0.1 * torch.randn(50, 5, dtype=torch.float64, generator=g)
    u, _, vh = torch.linalg.svd(x.T @ b)
    best = u @ vh  # the closed form
    for gradient_tol in (None, 1e-20):
        q = _on(STIEFEL, torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=g))[0])
        opt = RiemannianTrustRegion([q], gradient_tol=gradient_tol)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _run(opt, functools.partial(lambda q: 0.5 * (x @ q - b).square().sum(), q), 200)
        stalls = [w for w in caught if issubclass(w.category, riemsvd.ConvergenceWarning)]
        assert float((q.detach() - best).abs().max()) <= 1e-12
        if gradient_tol is None:
            assert opt.info.stop_reason == "rounding" and opt.info.converged and not stalls, opt.info
        else:
            assert opt.info.stop_reason == "stalled" and not opt.info.converged and len(stalls) == 1


def test_a_non_smooth_loss_crawling_at_a_tiny_radius_stops_stalled_with_a_warning():
    """−xᵀAx + ‖x‖₁ on S⁹⁹ (float64): from step ~250 every step was accepted at ρ ≈ 0.45 with a radius of
    3.6e-13 that never grew, each a new low of the loss by ~3e-12, the gradient norm at 8.5, and the
    documented loop ran 5000 steps without a stop or a word (a new user's trial). Now `patience` such
    steps stop it "stalled", once, with a warning that names the loss's smoothness; the point is the
    last one, and a further step does not move. A smooth loss whose steps recover from a radius cut
    down by rejections (it grows) converges as before, with no warning."""
    g = torch.Generator().manual_seed(0)
    b = torch.randn(100, 100, dtype=torch.float64, generator=g)
    a = b @ b.T / 100
    x = _on(SPHERE, _unit(100, g))
    opt = RiemannianTrustRegion([x])
    closure = functools.partial(lambda x, a: -(x @ a @ x) + x.abs().sum(), x, a)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        infos = _run(opt, closure, steps=1000)
    stalls = [w for w in caught if issubclass(w.category, riemsvd.ConvergenceWarning)]
    assert infos[-1].stop_reason == "stalled" and not infos[-1].converged, (len(infos), infos[-1])
    assert len(infos) < 300 and len(stalls) == 1 and "smooth" in str(stalls[0].message), stalls
    crawl = [i for i in infos[-11:-1] if i.accepted]
    assert len(crawl) == 10 and all(i.radius < 1.5e-8 * opt.max_radius for i in crawl), infos[-11:]
    before = x.detach().clone()
    opt.step(closure)
    assert opt.info.stop_reason == "stalled" and torch.equal(x.detach(), before)
    # smooth, from a first radius 1e-12 of max_radius: the accepted steps double it back
    x2 = _on(SPHERE, _unit(100, torch.Generator().manual_seed(1)))
    smooth = RiemannianTrustRegion([x2], radius=1e-12 * opt.max_radius)
    with warnings.catch_warnings():
        warnings.simplefilter("error", riemsvd.ConvergenceWarning)
        done = _run(smooth, functools.partial(lambda x, a: -(x @ a @ x), x2, a), steps=300)
    lam = float(torch.linalg.eigvalsh(a)[-1])
    assert done[-1].converged and abs(-done[-1].loss - lam) <= 1e-12 * lam, (len(done), done[-1])


def test_a_stall_on_a_manifold_without_its_hessian_names_the_missing_curvature():
    """A product of spheres (geoopt's ProductManifold: no ehess2rhess) stalled at ‖g‖ ≈ 1e-5 in float64
    and the warning sent the user to the gradient's rounding and float64, which it had (a new user's
    trial); it now names the parameter whose Hessian lacks its curvature term."""
    n = 40
    g = torch.Generator().manual_seed(0)
    c = torch.randn(n, n, dtype=torch.float64, generator=g)
    both = geoopt.ProductManifold((Sphere(), n), (Sphere(), n))
    start = both.projx(torch.randn(2 * n, dtype=torch.float64, generator=g))
    z = geoopt.ManifoldParameter(start, manifold=both)
    with pytest.warns(UserWarning, match="no ehess2rhess"):
        opt = RiemannianTrustRegion([z])
    with pytest.warns(riemsvd.ConvergenceWarning, match=r"Parameter 0's manifold has no ehess2rhess") as rec:
        infos = _run(opt, lambda: -(z[:n] @ c @ z[n:]), steps=400)
    assert infos[-1].stop_reason == "stalled" and rec[0].filename == __file__


def test_a_stalled_optimizer_takes_up_a_changed_problem():
    """An optimizer that stopped "stalled" (float32 at a gradient_tol below its rounding), reused on a
    problem that changed a little (the closure's matrix drifting), stopped "stalled" again at once,
    without a step: its gradient was only 3.6 times the old low (a new user's trial). Another loss at
    the same point is now another problem, and the steps resume."""
    g = torch.Generator().manual_seed(0)
    n = 200
    a = torch.randn(n, n, generator=g)
    a = (a + a.T) / 2
    x = _on(SPHERE, _unit(n, g).float())
    opt = RiemannianTrustRegion([x], gradient_tol=1e-10)
    m = a.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", riemsvd.ConvergenceWarning)
        first = _run(opt, lambda: -(x @ m @ x))
        assert first[-1].stop_reason == "stalled"
        m = a + 1e-4 * torch.eye(n) + 2e-5 * torch.diag(torch.linspace(-1, 1, n))
        again = _run(opt, lambda: -(x @ m @ x))
    assert len(again) > 1 and any(info.accepted for info in again), again[:2]
    assert again[-1].gradient_norm < again[0].gradient_norm / 2


@pytest.mark.parametrize(("dtype", "scale"), [(torch.float64, 1e-14), (torch.float32, 1e-5)])
def test_a_loss_far_below_one_is_judged_at_its_own_size(dtype, scale):
    """ρ's regularization is relative to |f|: with manopt's max(1, |f|), a loss far below 1 had every
    decrease drowned, uphill steps accepted (7 on the float64 run below), and runs ended "stalled" at a
    gradient of 16 (float64 scaled by 1e-14, seed 3) or "converged" far from a critical point (a new
    user's trial). Scaled, the quartic on S¹⁹⁹ goes where the unscaled one goes, never uphill."""
    g = torch.Generator().manual_seed(3)
    c = torch.randn(200, dtype=dtype, generator=g)
    start = _unit(200, g).to(dtype)

    def quartic(x):
        return -((x**4).sum() + 0.3 * torch.sin(5 * (c * x).sum()))

    ends = []
    for factor in (1.0, scale):
        x = _on(SPHERE, start.clone())
        opt = RiemannianTrustRegion([x])
        losses = []
        for _ in range(100):
            opt.step(functools.partial(lambda x, f: f * quartic(x), x, factor))
            losses.append(float(quartic(x.detach())))
            if opt.info.stop_reason:
                break
        assert opt.info.converged, opt.info
        rounding = 8 * torch.finfo(dtype).eps * abs(losses[0])
        assert all(b <= a + rounding for a, b in zip(losses, losses[1:])), losses  # never uphill
        ends.append(x.detach().to(torch.float64))
    assert float((ends[0] - ends[1]).abs().max()) <= (1e-10 if dtype == torch.float64 else 1e-3)


def test_a_loss_nan_at_every_trial_point_stops_with_a_warning():
    """Rejected steps do not count towards patience, and a closure NaN at every trial point had run on
    without end, silently, the radius at 4e-181 after 300 steps (a new user's trial). Once the radius
    moves the parameters by less than their rounding the steps stop, "stalled", warned, the point kept."""
    g = torch.Generator().manual_seed(0)
    a = make_matrix("gaussian", 20, 20, g)
    a = a + a.T
    start = _unit(20, g)
    x = _on(SPHERE, start.clone())

    def closure():
        loss = x @ a @ x
        return loss if torch.is_grad_enabled() else loss * math.nan  # the trial points' losses

    opt = RiemannianTrustRegion([x])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        infos = _run(opt, closure, 100)
    stalls = [str(w.message) for w in caught if issubclass(w.category, riemsvd.ConvergenceWarning)]
    assert opt.info.stop_reason == "stalled" and not opt.info.converged and len(infos) < 40, opt.info
    assert len(stalls) == 1 and "rejected" in stalls[0] and "non-finite" in stalls[0], stalls
    assert torch.equal(x.detach(), start)
    opt.step(closure)  # stays stopped, without another warning
    assert opt.info.stop_reason == "stalled"
    b = make_matrix("gaussian", 20, 20, g)
    b = b + b.T  # another problem (a new loss at the same point) starts again from the first radius
    infos = _run(opt, functools.partial(lambda x, b: x @ b @ x, x, b), 100)
    assert opt.info.converged and any(i.accepted for i in infos), opt.info
    assert abs(float(x.detach() @ b @ x.detach()) - float(torch.linalg.eigvalsh(b)[0])) <= 1e-12


def test_a_loss_that_converges_to_zero_by_cancellation_is_judged_at_its_terms_size():
    """xᵀAx − λ_min on the sphere goes to 0 while its rounding stays ε·|λ|: ρ regularized by 1e3·ε·|f|
    alone was rounding noise near the minimum, and 3 of 4 seeds ended "stalled" at ‖g‖ ≈ 1e-8 after
    some 26 rejected steps (a review). The first step's |f₀| keeps the terms' size."""
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        a = make_matrix("gaussian", 100, 100, g)
        a = 50 * (a + a.T)
        low = torch.linalg.eigvalsh(a)[0]
        x = _on(SPHERE, _unit(100, g))
        opt = RiemannianTrustRegion([x])
        infos = _run(opt, functools.partial(lambda x, a, low: x @ a @ x - low, x, a, low), 100)
        assert opt.info.converged, (seed, opt.info)
        assert sum(not i.accepted for i in infos) <= 3, [i.rho for i in infos]
        assert float(x.detach() @ a @ x.detach() - low) <= 1e-12 * float(low.abs())


def test_lows_of_the_gradient_within_its_rounding_do_not_restart_patience():
    """An orthogonal Procrustes fit reached its closed form to 1e-14 after 6–7 steps, then its gradient
    wandered between 1.1e-14 and 3.3e-14 and each small new low restarted the count: it stopped at
    steps 20–36 (6 seeds; a new user's trial). Lows within the gradient's rounding are noise; the
    fit stops "rounding" `patience` steps after reaching it."""
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(50, 5, dtype=torch.float64, generator=g)
        q0 = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=g))[0]
        b = x @ q0 + 0.1 * torch.randn(50, 5, dtype=torch.float64, generator=g)
        u, _, vh = torch.linalg.svd(x.T @ b)
        best = u @ vh
        q = _on(STIEFEL, STIEFEL.projx(best + 0.3 * torch.randn(5, 5, dtype=torch.float64, generator=g)))
        opt = RiemannianTrustRegion([q])
        reached = None
        for _ in range(100):
            opt.step(functools.partial(lambda q, x, b: 0.5 * (x @ q - b).square().sum(), q, x, b))
            if reached is None and float((q.detach() - best).abs().max()) <= 1e-13:
                reached = opt.info.step
            if opt.info.stop_reason:
                break
        assert reached is not None and opt.info.stop_reason == "rounding", opt.info
        assert opt.info.step <= reached + opt.patience + 2, (seed, reached, opt.info.step)


def test_a_stall_returns_the_point_of_least_gradient_among_losses_equal_to_their_terms_rounding():
    """A rotation and a translation fitted to 40 points with noise 0.01 (seed 12 of 20 of a new user's
    trial): the loss, 0.0081, is small by cancellation of terms near 1. Steps 9–17 reached gradient
    norms of 8e-15–2e-14, and the stall went back to step 8's point (2.3e-8) for a loss 6e-17 lower,
    below 4·ε of the lowest loss but not of the terms' size, and returned it converged, 4.4e-10 from
    the closed form. The point returned is now the least gradient's within the terms' rounding."""
    dt, d, rows = torch.float64, 5, 40
    g = torch.Generator().manual_seed(12)
    a = torch.randn(rows, d, dtype=dt, generator=g)
    rotation = torch.linalg.qr(torch.randn(d, d, dtype=dt, generator=g))[0]
    target = (
        a @ rotation
        + torch.randn(d, dtype=dt, generator=g)
        + 0.01 * torch.randn(rows, d, dtype=dt, generator=g)
    )
    left, _, right = torch.linalg.svd((a - a.mean(0)).T @ (target - target.mean(0)))
    q_star = left @ right
    start = STIEFEL.projx(q_star + 0.3 * torch.randn(d, d, dtype=dt, generator=g))
    if torch.det(start) * torch.det(q_star) < 0:
        start[:, 0] *= -1
    q, b = _on(STIEFEL, start), torch.zeros(d, dtype=dt, requires_grad=True)
    opt = RiemannianTrustRegion([q, b])
    infos = _run(opt, lambda: 0.5 * (a @ q + b - target).square().sum(), 100)
    assert opt.info.converged and opt.info.stop_reason == "rounding", opt.info
    least = min(i.gradient_norm for i in infos)
    assert opt.info.gradient_norm <= 100 * least, (opt.info.gradient_norm, least)
    assert float((q.detach() - q_star).abs().max()) <= 1e-13


def test_the_kept_point_takes_the_terms_rounding_only_between_a_settled_gradient_and_an_unsettled_one():
    """The point a stall returns to (_keep_if_best), step by step. A loss fallen honestly from 1e4 to 1
    in float32: 1.0 at a gradient norm of 2e-4 replaces 1.003 at 1e-4, 0.3% higher (the terms' band,
    4ε·1e4, for every pair had kept 1.003; a review). A loss small by cancellation (float64, terms
    near 1): a gradient at its rounding replaces one of 2.3e-8 whose loss is 4e-17 lower, and is not
    given back to a later 1e-9 whose loss is 1e-16 lower (the Procrustes fit above)."""
    w = torch.zeros(3, requires_grad=True)
    opt = RiemannianTrustRegion([w])
    eps32, eps64 = torch.finfo(torch.float32).eps, torch.finfo(torch.float64).eps
    opt._keep_if_best(True, 1, 1.003, 1e-4, [w.detach()], 1.003, 1e4, 1e-10, eps32)
    opt._keep_if_best(False, 2, 1.0, 2e-4, [w.detach()], 1.0, 1e4, 1e-10, eps32)
    assert opt._best[0] == 2
    low = 0.0080675018923260389
    opt._keep_if_best(True, 1, low, 2.3e-8, [w.detach()], low, 1.0, 1.3e-14, eps64)
    opt._keep_if_best(False, 2, low + 4e-17, 9e-15, [w.detach()], low, 1.0, 1.3e-14, eps64)
    assert opt._best[0] == 2
    opt._keep_if_best(False, 3, low + 4e-17 - 1e-16, 1e-9, [w.detach()], low - 6e-17, 1.0, 1.3e-14, eps64)
    assert opt._best[0] == 2
    opt._keep_if_best(False, 4, low - 1e-12, 1e-9, [w.detach()], low - 1e-12, 1.0, 1.3e-14, eps64)
    assert opt._best[0] == 4  # lower beyond the terms' rounding: taken, settled or not


def test_a_degenerate_minimum_at_zero_stops_at_the_rounding_of_the_start():
    """Σxᵢ⁴ (float64), minimum 0 at 0: each Newton step takes a third of x off, the decrease the
    model predicted, and judged against ε·‖x‖ the steps went on to ‖x‖ = 1e-39, 252 of them, ended
    by the underflow of ρ (a review). Against ε times the size x had at the start they end once x is
    within that of 0."""
    x = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    start = float(x.detach().norm())
    opt = RiemannianTrustRegion([x])
    infos = _run(opt, lambda: (x**4).sum(), steps=400)
    assert infos[-1].converged, infos[-1]
    assert float(x.detach().norm()) <= 1e-15 * start, x
    assert len(infos) <= 120, len(infos)


@pytest.mark.parametrize("idle", [None, 1e9])
def test_a_loss_falling_far_below_its_first_is_not_stopped_by_the_first_ones_rounding(idle):
    """Rosenbrock's function in float32 from (−30, 30): its first loss 7.6e7 made 4·ε of it, 36, the
    rounding that each later decrease was judged against, and the steps in the valley (0.01 to 1.7 a
    step, as the model predicted) stopped "rounding", converged, at f = 34.5 with a gradient norm of
    15.4 (a review). A decrease the model predicted is progress: the steps go on to the minimum. Also
    beside a parameter of 1e9 that the loss does not move, whose size had hidden the steps (a
    review)."""
    x = torch.tensor([-30.0, 30.0], requires_grad=True)
    z = torch.full((1,), idle or 0.0, requires_grad=True)
    opt = RiemannianTrustRegion([x, z] if idle else [x])
    infos = _run(opt, lambda: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2 + 0 * z.sum(), steps=300)
    assert infos[-1].converged, infos[-1]
    assert float((x.detach() - 1).abs().max()) <= 1e-3, x


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_factorization_beside_a_plain_tensor_stops_at_its_minimum(dtype):
    """‖Y − X W‖² with X on St(60, 3) and W a plain tensor is the same at (XQ, QᵀW). At its minimum
    the steps to the boundary along those directions, straight in W, raised the loss by up to
    1.8e-13 of itself (float32: 4e-5), accepted by ρ's regularization, and swung the gradient norm
    from 1e-13 to 2e-4 (float32: 3e-5 to 3.4); each swing counted as a fresh start: 500 steps
    without a stop on 5 of 5 seeds, float32 ending 4e-5 above the minimum on 2 (a new user's trial).
    Now the loop ends "rounding", at the minimum, at a point of the least gradient norm seen there."""
    g = torch.Generator().manual_seed(3)
    y = torch.randn(60, 30, generator=g, dtype=torch.float64)
    least = float((torch.linalg.svdvals(y)[3:] ** 2).sum())
    x = _on(STIEFEL, STIEFEL.projx(torch.randn(60, 3, generator=g, dtype=dtype)))
    w = torch.randn(3, 30, generator=g, dtype=dtype).requires_grad_(True)
    yd = y.to(dtype)
    opt = RiemannianTrustRegion([x, w])
    infos = _run(opt, lambda: (yd - x @ w).square().sum(), steps=120)
    assert infos[-1].stop_reason == "rounding", infos[-1]
    loss = float((y - x.detach().double() @ w.detach().double()).square().sum())
    assert abs(loss - least) <= (1e-13 if dtype == torch.float64 else 1e-6) * least, (loss, least)
    assert infos[-1].gradient_norm <= min(info.gradient_norm for info in infos[-opt.patience :])


def test_a_closure_changed_between_steps_by_less_than_the_regularization_is_a_new_problem():
    """A float32 Rayleigh quotient whose matrix turns by 1e-2 mid-run (plus 1e-5·I) raises the loss
    by 1.4e-5 of itself, less than ρ's regularization (1.2e-4): taken for the same problem, the stall
    that followed returned the parameters to the old problem's best point, its gradient 8.2e-4 under
    the new one (a review). The trial's loss at the point, evaluated before the change, tells it:
    the steps go on to the new minimizer."""
    n = 50
    g = torch.Generator().manual_seed(1)
    r0 = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    d = torch.linspace(1, 3, n, dtype=torch.float64)
    turn = torch.eye(n, dtype=torch.float64)
    turn[:2, :2] = torch.tensor([[math.cos(1e-2), -math.sin(1e-2)], [math.sin(1e-2), math.cos(1e-2)]])
    r1 = r0 @ turn
    mats = [((r0 * d) @ r0.T).float(), ((r1 * d) @ r1.T + 1e-5 * torch.eye(n, dtype=torch.float64)).float()]
    x = _on(SPHERE, _unit(n, torch.Generator().manual_seed(0)).float())
    opt = RiemannianTrustRegion([x], gradient_tol=1e-30)
    now = [0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", riemsvd.ConvergenceWarning)
        for _ in range(200):
            if now[0] == 0 and opt.state[x].get("since_progress", 0) >= opt.patience - 3:
                now[0] = 1  # between two accepted steps, before the stall
            opt.step(lambda: x @ mats[now[0]] @ x)
            if opt.info.stop_reason:
                break
    assert now[0] == 1 and opt.info.stop_reason, opt.info
    cosine = float(x.detach().double() @ r1[:, 0])
    assert abs(cosine) >= 1 - 1e-6, cosine


def test_the_default_gradient_tol_takes_the_steps_that_still_cut_the_gradient():
    """Orthogonal Procrustes ‖X − B‖² on St(300, 32) in float32: the default stop, at the gradient's
    rounding estimate, came a step early, where the gradient norm was still falling 40-fold a step:
    ‖X − P‖ 5e-5 on two of three seeds, where P = polar(B) in float64 and a float32 SVD's polar factor
    is 3.4–3.7e-6 off (a new user's trial at St(1000, 64): 3e-5 against 2.5e-6 two steps on). A step
    that cut the gradient norm fourfold is followed by another: as close as the SVD's, or closer."""
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        b = torch.randn(300, 32, generator=g, dtype=torch.float64)
        u, _, vh = torch.linalg.svd(b, full_matrices=False)
        u32, _, vh32 = torch.linalg.svd(b.float(), full_matrices=False)
        svd_error = float(((u32 @ vh32).double() - u @ vh).norm())
        x = _on(STIEFEL, STIEFEL.projx(torch.randn(300, 32, generator=g)))
        opt = RiemannianTrustRegion([x])
        infos = _run(opt, functools.partial(lambda x, b: (x - b).square().sum(), x, b.float()))
        assert infos[-1].stop_reason == "gradient norm", infos[-1]
        assert float((x.detach().double() - u @ vh).norm()) <= svd_error, (seed, svd_error)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_parameters_are_refused_by_name(dtype):
    """A float16 or bfloat16 point on a sphere or Stiefel manifold is off it by about 1e-3: the
    optimizer's own retractions were refused mid-run as "not on its manifold", blaming the start
    (13–15 of 20 runs on a sphere, every Stiefel start; a new user's trial). Refused up front."""
    x = _on(SPHERE, SPHERE.projx(torch.randn(50)).to(dtype))
    with pytest.raises(TypeError, match=rf"parameter 0 is {dtype}.*float32 copy"):
        RiemannianTrustRegion([x])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_loss_invariant_along_some_directions_stops_at_its_rounding(dtype):
    """PCA's reconstruction error ‖Y − Y X Xᵀ‖² on St(40, 4) is the same at X and XQ. At its minimum to
    the last digit the steps went to the trust region's boundary along those directions, which left
    the loss equal to 17 digits and swung the gradient norm between 4e-15 and 1e-7 (float32: 2.6e-6
    and 2.7e-3); each swing counted as a fresh start, and the documented loop ran 200 steps without a
    stop (a new user's trial). A swing of the gradient at the same loss is no fresh start: the loop
    ends "rounding", at the top-4 subspace of YᵀY."""
    g = torch.Generator().manual_seed(0)
    scales = torch.linspace(3, 0.1, 40, dtype=torch.float64)
    y = torch.randn(400, 40, dtype=torch.float64, generator=g) * scales
    x0 = torch.randn(40, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    q = _on(STIEFEL, STIEFEL.projx(x0).to(dtype))
    yd = y.to(dtype)
    opt = RiemannianTrustRegion([q])
    while not (opt.info and opt.info.stop_reason) and (opt.info is None or opt.info.step < 60):
        opt.step(lambda: (yd - yd @ q @ q.T).square().sum() / 400)
    assert opt.info.stop_reason == "rounding", opt.info
    top = torch.linalg.eigh(y.T @ y)[1][:, -4:]
    cosines = torch.linalg.svdvals(top.T @ q.detach().double())
    assert float(cosines.min()) >= 1 - (1e-12 if dtype == torch.float64 else 1e-5), cosines


@pytest.mark.parametrize(("n", "k", "seed"), [(300, 20, 1), (500, 5, 1)])
def test_a_loss_of_the_subspace_alone_converges_quadratically_on_grassmann(n, k, seed):
    """PCA's −tr(XᵀAX), λᵢ = 1/√i (λ_k − λ_{k+1} = 0.005 at k = 20): on St(n, k), where the loss is the
    same at X and XQ, the steps stalled with the gradient norm at 2–4e-7 and the subspace 3e-7 to
    1.7e-6 off (48–75 steps, 2000–3000 CG iterations; a new user's trial and a review). On Gr(n, k)
    the same loss converges by its gradient norm in 11–16 steps, at the top-k eigenspace to rounding."""
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    a = (q / torch.arange(1, n + 1, dtype=torch.float64).sqrt()) @ q.T
    a = (a + a.T) / 2
    start = torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = geoopt.ManifoldParameter(Grassmann().projx(start), manifold=Grassmann())
    opt = RiemannianTrustRegion([x])
    while not (opt.info and opt.info.stop_reason) and (opt.info is None or opt.info.step < 40):
        opt.step(lambda: -torch.trace(x.T @ a @ x))
    assert opt.info.converged and opt.info.stop_reason == "gradient norm", opt.info
    assert opt.info.step <= 20, opt.info.step
    top = q[:, :k]
    assert float(torch.linalg.matrix_norm(x.detach() - top @ (top.T @ x.detach()), 2)) <= 1e-12


def test_the_default_largest_radius_is_the_diameter_of_grassmann():
    """Gr(d, k) is (π/2)·√k across for k ≤ d/2 (k principal angles of at most π/2), half St(d, k)'s
    π·√k bound on a column's turn: the default max_radius takes the first for a Grassmann parameter
    (it had taken the second; a review), summed in squares over the points of a batch as over
    parameters."""
    g = torch.Generator().manual_seed(0)
    x = geoopt.ManifoldParameter(Grassmann().projx(torch.randn(30, 4, generator=g)), manifold=Grassmann())
    assert RiemannianTrustRegion([x]).max_radius == pytest.approx(0.5 * math.pi * 2)
    batch = Grassmann().projx(torch.randn(3, 30, 4, generator=g))
    y = geoopt.ManifoldParameter(batch, manifold=Grassmann())
    assert RiemannianTrustRegion([y]).max_radius == pytest.approx(0.5 * math.pi * math.sqrt(12))
    z = _on(STIEFEL, STIEFEL.projx(torch.randn(30, 4, generator=g)))
    assert RiemannianTrustRegion([x, z]).max_radius == pytest.approx(math.pi * math.sqrt(1 + 4))


def test_a_stall_of_a_loss_of_the_span_on_stiefel_names_grassmann():
    """The same loss on St(100, 5) (seed 1 of 4 that stall there): the warning of the stall names
    riemsvd.manifolds.Grassmann, where it converges."""
    n, k = 100, 5
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    a = (q / torch.arange(1, n + 1, dtype=torch.float64).sqrt()) @ q.T
    a = (a + a.T) / 2
    start = torch.randn(n, k, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = _on(STIEFEL, STIEFEL.projx(start))
    opt = RiemannianTrustRegion([x])
    with pytest.warns(riemsvd.ConvergenceWarning, match=r"riemsvd\.manifolds\.Grassmann\(\)"):
        while not (opt.info and opt.info.stop_reason) and (opt.info is None or opt.info.step < 100):
            opt.step(lambda: -torch.trace(x.T @ a @ x))
    assert opt.info.stop_reason == "stalled", opt.info


def test_a_loss_that_falls_to_an_exact_zero_stops_at_its_rounding(n=200):
    """xᵀAx on the sphere with A = diag(0, …, 1)²: the loss reaches 5e-13 by step 16 and 0 exactly in
    the limit. Each of its lows counted as progress against 4·ε of the low itself, and the steps ran
    on to a loss of 5e-320 (n = 500: 242 steps, 107673 CG iterations, 35 s; a new user's trial).
    Against the first loss's rounding they stop once the gradient is at its own (n = 500: 34
    steps, 4.4 s), converged, at e₁ to float64's rounding of the gradient over λ₂."""
    a = torch.diag(torch.linspace(0, 1, n, dtype=torch.float64) ** 2)
    x = geoopt.ManifoldParameter(
        Sphere().projx(torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))),
        manifold=Sphere(),
    )
    opt = RiemannianTrustRegion([x])
    for _ in range(60):
        opt.step(lambda: x @ a @ x)
        if opt.info.stop_reason:
            break
    assert opt.info.converged, opt.info
    assert float(1 - x.detach()[0].abs()) < 1e-12


@pytest.mark.parametrize(
    ("dtype", "scale", "steps"),
    [
        (torch.float32, 1e12, 25),
        (torch.float32, 1e37, 25),
        (torch.float32, 1e-25, 25),
        (torch.float32, 1e-38, 25),
        (torch.float64, 1e150, 25),
        (torch.float64, 1e300, 25),
        (torch.float64, 1e-200, 25),
        (torch.float64, 1e-300, 60),
    ],
)
def test_a_rayleigh_quotient_scaled_far_from_one_reaches_its_minimum(dtype, scale, steps):
    """The model's inner products and CG's vectors had the loss's scale in the parameters' dtype: a
    float32 Rayleigh quotient scaled by 1e12 (‖g‖ ≈ 2e13) had ⟨d, H d⟩ overflow, ρ NaN from its second
    step, and stopped "stalled" 23–67% above its minimum, the warning blaming the loss (a new user's
    trial); by 1e-25 ‖g‖² underflowed to 0 and it stopped "converged" at its random start (float64 by
    1e-200); float64 stalled at 1e150 and raised ValueError at 1e300. Now CG runs on the model
    divided by a power of two near ‖g‖, and a sum or norm that would leave the dtype's range is taken
    again scaled: the minimum to the eigenvalue's rounding (ε·‖A‖₂, times 20), in 10–20 steps as at 1
    (36 at 1e-300, where the loss's own decreases near the minimum fall below float64's normal
    numbers)."""
    g = torch.Generator().manual_seed(3)
    b = torch.randn(40, 40, dtype=torch.float64, generator=g)
    a = (b + b.T) / 2
    lowest = float(torch.linalg.eigvalsh(a)[0])
    x = _on(SPHERE, _unit(40, g).to(dtype))
    scaled = (a * scale).to(dtype)
    infos = _run(RiemannianTrustRegion([x]), lambda: x @ scaled @ x, steps=steps)
    assert infos[-1].converged, infos[-1]
    value = float(x.detach().double() @ a @ x.detach().double())
    bound = 20 * torch.finfo(dtype).eps * float(torch.linalg.matrix_norm(a, 2))
    assert abs(value - lowest) <= bound, (value, lowest)


def test_a_gradient_whose_norm_leaves_float64_is_named_not_lost():
    """A gradient with finite entries whose norm passes float64's largest number: the norm is inf,
    and the step says the gradient is not finite, as it did before the norms were taken scaled (where
    ldexp had raised a bare OverflowError; a review)."""
    z = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="non-finite gradient"):
        RiemannianTrustRegion([z]).step(lambda: 1e308 * z.sum() + (z**2).sum())


def test_a_state_saved_for_parameters_of_other_shapes_is_refused_by_name():
    """A state saved for a point on St(100, 5) loaded into an optimizer on St(100, 6) and went on
    from its step and its radius (a new user's trial); its losses and norms are another problem's.
    Refused, naming both shapes; one saved for the same shapes loads."""
    g = torch.Generator().manual_seed(0)
    x5 = _on(STIEFEL, orthonormal(100, 5, g))
    opt = RiemannianTrustRegion([x5])
    opt.step(lambda: (x5**4).sum())
    saved = opt.state_dict()
    x6 = _on(STIEFEL, orthonormal(100, 6, g))
    with pytest.raises(ValueError, match=r"shapes \[\[100, 5\]\].*\[\[100, 6\]\]"):
        RiemannianTrustRegion([x6]).load_state_dict(saved)
    again = RiemannianTrustRegion([_on(STIEFEL, orthonormal(100, 5, g))])
    again.load_state_dict(saved)
    assert again.state_dict()["state"][0]["step"] == 1
