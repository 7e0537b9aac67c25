"""SingularPair: Riemannian optimizers find the top pairs, refine finishes them, state survives a round trip.

Measured on the 60×40 matrix below (σ = 1, 0.8, 0.6, 0.4, then ≤ 0.2), float64, seed 0: RiemannianAdam
reaches |⟨u, u₁⟩| ≥ 0.999 in 51 steps (lr 0.05, k = 1) and ‖U Uᵀ − U₁U₁ᵀ‖₂ ≤ 0.045 in 130 steps
(lr 0.1, k = 3), with σ errors 5e-3 and 4e-4 of σ₁; ``refine`` then brings them to ≤ 1e-15.
"""

import geoopt
import pytest
import scipy.sparse
import torch

from riemsvd._pair import SingularPair


def _gapped_matrix(seed: int = 0, m: int = 60, n: int = 40, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tail = 0.2 * torch.rand(n - 4, generator=g, dtype=dtype)
    s = torch.cat([torch.tensor([1.0, 0.8, 0.6, 0.4], dtype=dtype), tail]).sort(descending=True).values
    u = torch.linalg.qr(torch.randn(m, n, generator=g, dtype=dtype)).Q
    v = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=dtype)).Q
    return u @ torch.diag(s) @ v.T


def _train(pair: SingularPair, a: torch.Tensor, steps: int, lr: float) -> None:
    opt = geoopt.optim.RiemannianAdam(pair.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = -pair(a).sum() if pair.k == 1 else -pair.brockett(a)
        loss.backward()
        opt.step()


def _on_stiefel(x: torch.Tensor) -> bool:
    return bool(torch.allclose(x.mT @ x, torch.eye(x.shape[-1], dtype=x.dtype), atol=1e-10))


def test_riemannian_adam_finds_the_top_pair():
    a = _gapped_matrix()
    u1, s1, v1h = torch.linalg.svd(a)
    pair = SingularPair(60, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _train(pair, a, steps=100, lr=0.05)
    assert abs(float(pair.U.detach()[:, 0] @ u1[:, 0])) >= 0.999
    assert abs(float(pair.V.detach()[:, 0] @ v1h[0])) >= 0.999
    assert _on_stiefel(pair.U.detach()) and _on_stiefel(pair.V.detach())
    assert abs(float(pair(a).detach()[0]) - float(s1[0])) < 1e-2


def test_riemannian_adam_on_brockett_finds_the_top3_subspace_in_order():
    a = _gapped_matrix()
    u1, s1, v1h = torch.linalg.svd(a)
    pair = SingularPair(60, 40, k=3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _train(pair, a, steps=300, lr=0.1)
    u, v = pair.U.detach(), pair.V.detach()
    assert float(torch.linalg.matrix_norm(u @ u.T - u1[:, :3] @ u1[:, :3].T, 2)) < 0.05
    assert float(torch.linalg.matrix_norm(v @ v.T - v1h[:3].T @ v1h[:3], 2)) < 0.05
    assert _on_stiefel(u) and _on_stiefel(v)
    torch.testing.assert_close(pair(a).detach(), s1[:3], rtol=0, atol=5e-3)  # ordered as σ₁ > σ₂ > σ₃


@pytest.mark.parametrize("k", [1, 3])
def test_refine_reaches_sigma_to_1e12_and_stores_the_vectors(k):
    a = _gapped_matrix(seed=1)
    pair = SingularPair(60, 40, k=k, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _train(pair, a, steps=30, lr=0.1)
    result = pair.refine(a)
    ref = torch.linalg.svdvals(a)[:k]
    assert bool(result.info.converged)
    torch.testing.assert_close(result.S, ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(pair(a).detach(), ref, rtol=1e-12, atol=0)
    assert isinstance(pair.U, geoopt.ManifoldParameter) and _on_stiefel(pair.U.detach())


def test_refine_from_a_random_start_converges_too():
    a = _gapped_matrix(seed=2)
    pair = SingularPair(60, 40, k=2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    pair.refine(a)
    torch.testing.assert_close(pair(a).detach(), torch.linalg.svdvals(a)[:2], rtol=1e-12, atol=0)


def test_state_dict_round_trip():
    a = _gapped_matrix()
    pair = SingularPair(60, 40, k=2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _train(pair, a, steps=5, lr=0.1)
    other = SingularPair(60, 40, k=2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    other.load_state_dict(pair.state_dict())
    assert set(pair.state_dict()) == {"U", "V"}
    torch.testing.assert_close(other.U.detach(), pair.U.detach(), rtol=0, atol=0)
    torch.testing.assert_close(other.V.detach(), pair.V.detach(), rtol=0, atol=0)
    assert isinstance(other.U, geoopt.ManifoldParameter) and isinstance(
        other.U.manifold, type(pair.U.manifold)
    )
    torch.testing.assert_close(other(a), pair(a), rtol=0, atol=0)


def test_repr_gives_the_sizes():
    """It was ``SingularPair()`` whatever the sizes (a new user's trial)."""
    pair = SingularPair(30, 20, 2, dtype=torch.float64)
    assert repr(pair) == "SingularPair(m=30, n=20, k=2, dtype=torch.float64)"


def test_gradients_flow_to_a_through_forward():
    a = _gapped_matrix().requires_grad_()
    pair = SingularPair(60, 40, k=2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w = torch.tensor([2.0, 1.0], dtype=torch.float64)
    (pair(a) * w).sum().backward()
    u, v = pair.U.detach(), pair.V.detach()
    torch.testing.assert_close(a.grad, u @ torch.diag(w) @ v.T)  # d/dA Σ wᵢ uᵢᵀ A vᵢ = U W Vᵀ
    assert pair.U.grad is not None and pair.V.grad is not None


def test_forward_is_batched():
    a = torch.stack([_gapped_matrix(seed=s) for s in range(3)])
    pair = SingularPair(60, 40, k=2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = pair(a)
    assert out.shape == (3, 2) and pair.brockett(a).shape == (3,)
    torch.testing.assert_close(out[1], torch.diagonal(pair.U.mT @ a[1] @ pair.V))


def test_k1_frames_lie_on_the_sphere_and_bad_arguments_raise():
    pair = SingularPair(5, 4, generator=torch.Generator().manual_seed(0))
    assert pair.U.shape == (5, 1) and pair.V.shape == (4, 1)
    torch.testing.assert_close(pair.U.norm(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="`k`"):
        SingularPair(5, 4, k=5)
    with pytest.raises(ValueError, match="`A`"):
        pair.refine(torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"`A` must have shape \(\*, 5, 4\)"):
        pair(torch.randn(4, 5))
    with pytest.raises(TypeError, match="`A` is torch.float64.*pair.to"):
        pair(torch.randn(5, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="`A` must be a torch.Tensor"):
        pair.brockett([[1.0]])
    # a scipy matrix or operator is told the fix, not only what it is not (a new user's trial)
    with pytest.raises(TypeError, match=r"sparse_csr_tensor.*riemsvd.solve\(A, k, init=\(pair.U, pair.V\)\)"):
        pair.refine(scipy.sparse.random(5, 4, density=0.5, format="csr", dtype="float32"))


def test_a_state_whose_frames_are_not_orthonormal_is_refused_on_loading():
    """Non-orthonormal U or V had loaded silently (a new user's trial); torch's load_state_dict now
    reports them by name and loads neither frame (a good V beside a bad U had loaded, a mixed pair;
    with assign=True the restored frame had been written into the caller's tensor: a review). A
    float32 frame within its dtype's rounding for its size loads (geoopt's fixed 1e-5 had refused a
    pair's own state of 10⁷ rows)."""
    pair = SingularPair(30, 20, k=3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    before = {name: x.clone() for name, x in pair.state_dict().items()}
    other = SingularPair(30, 20, k=3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for name in ("U", "V"):
        for assign in (False, True):
            state = {key: x.clone() for key, x in other.state_dict().items()}
            state[name] = 2 * state[name]
            given = state[name].clone()
            with pytest.raises(RuntimeError, match=rf"`{name}` does not have orthonormal columns"):
                pair.load_state_dict(state, assign=assign)
            assert torch.equal(state[name], given)  # the caller's tensors untouched
            for key, x in pair.state_dict().items():
                assert torch.equal(x, before[key]), (name, assign, key)
            assert all(isinstance(x, geoopt.ManifoldParameter) for x in (pair.U, pair.V))
    pair.load_state_dict(other.state_dict())  # a pair's own state loads
    assert torch.equal(pair.U, other.U)
    single = SingularPair(200, 20, k=2, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    state = single.state_dict()
    state["U"] = state["U"] * torch.tensor([1 + 5e-5, 1.0])  # within 100·ε·√200 of float32: 1.7e-4
    single.load_state_dict(state)


def test_refine_names_the_shape_it_takes():
    """``refine`` takes one matrix: a wrong shape's message had offered (*, m, n), and the batch it
    invited was then refused (a new user's trial)."""
    pair = SingularPair(40, 30)
    with pytest.raises(ValueError, match=r"shape \(40, 30\) for this pair, got \(30, 40\)"):
        pair.refine(torch.randn(30, 40))
    with pytest.raises(ValueError, match=r"shape \(\*, 40, 30\) for this pair"):
        pair(torch.randn(30, 40))
