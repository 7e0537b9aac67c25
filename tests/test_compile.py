"""``torch.compile`` of riemsvd.solve and of spectral-normalized models: one opaque operator, no graph
break, no recompile as values change, the same numbers as eager mode."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
import torch._dynamo as dynamo

import riemsvd
import riemsvd.nn
from tests.matrices import gapped_matrix

# Inductor writes C++ for the CPU; without a compiler only the eager and aot_eager backends run.
INDUCTOR = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler"
)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Every test compiles from scratch and fails on any recompile. (dynamo's config module makes its
    attributes on demand, which pytest's monkeypatch of recent versions does not see: its own patch.)"""
    dynamo.reset()
    with dynamo.config.patch(error_on_recompile=True):
        yield
    dynamo.reset()


def test_solve_is_one_graph_without_breaks():
    a = torch.randn(50, 30, dtype=torch.float64)
    explained = dynamo.explain(lambda x: riemsvd.solve(x, 2).S)(a)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


@pytest.mark.parametrize("method", ["auto", "iterative"])
def test_compiled_solve_and_its_gradient_match_the_full_svd_without_recompiles(method):
    g = torch.Generator().manual_seed(0)
    c, d = (
        torch.randn(60, dtype=torch.float64, generator=g),
        torch.randn(40, dtype=torch.float64, generator=g),
    )

    def loss(u, s, v):  # S and sign-invariant terms of U and V (their gradients need the linear solves)
        return s[:3].sum() + (u[:, 0] @ c) ** 2 + (v[:, 1] @ d) ** 2

    def solved(a):
        r = riemsvd.solve(a, 3, tol=1e-12, method=method)
        return loss(r.U, r.S, r.V)

    compiled = torch.compile(solved, fullgraph=True, backend="aot_eager")
    for _ in range(3):  # new values, same shapes: error_on_recompile holds
        a = torch.randn(60, 40, dtype=torch.float64, generator=g, requires_grad=True)
        value = compiled(a)
        (grad,) = torch.autograd.grad(value, a)
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        ref = loss(u, s, vh.mT)
        (ref_grad,) = torch.autograd.grad(ref, a)
        # gaps of a 60×40 Gaussian's top singular values are O(1): errors of tol over a gap
        torch.testing.assert_close(value, ref, rtol=1e-10, atol=0)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-7, atol=1e-8)


def test_compiled_gradient_of_s_alone_runs_no_linear_solve(monkeypatch):
    """AOTAutograd hands zeros for the unused Ū, V̄ where eager autograd hands None."""
    import riemsvd._autograd

    monkeypatch.setattr(riemsvd._autograd, "_complement_solve", None)  # a call would raise
    a = torch.randn(50, 40, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(lambda x: riemsvd.solve(x, 2, method="iterative").S.sum(), fullgraph=True,
                             backend="aot_eager")  # fmt: skip
    (grad,) = torch.autograd.grad(compiled(a), a)
    u, _, vh = torch.linalg.svd(a.detach(), full_matrices=False)
    torch.testing.assert_close(grad, u[:, :2] @ vh[:2], rtol=1e-9, atol=1e-10)


def test_a_compiled_solve_takes_every_solver_option():
    """The operator rebuilds SolverOptions from its fields: gap_last had been left out, and a compiled
    gap_last solve took the products of σ₂ to tol (182 where the eager one took 76; a review). σ₂ 1e-3
    above σ₃ and the rest close below, tol 1e-6: 58 products eagerly against 118."""
    a = gapped_matrix(300, 200, [0.1, 1e-3], 0, bulk=0.89)
    gap_last = riemsvd.SolverOptions(gap_last=True)
    gap = torch.compile(lambda x: riemsvd.solve(x, 2, tol=1e-6, options=gap_last).info.matvecs,
                        fullgraph=True, backend="aot_eager")  # fmt: skip
    both = torch.compile(lambda x: riemsvd.solve(x, 2, tol=1e-6).info.matvecs,
                         fullgraph=True, backend="aot_eager")  # fmt: skip
    assert int(gap(a)) <= 0.7 * int(both(a))


def test_compiled_info_has_tensors_and_says_what_it_cannot_know():
    compiled = torch.compile(
        lambda a: riemsvd.solve(a, 2, method="iterative"), fullgraph=True, backend="aot_eager"
    )
    a = torch.randn(80, 60, dtype=torch.float64)
    out = compiled(a)
    assert out.info is not None
    assert bool(out.info.converged) and float(out.info.residual) <= out.info.tol == 1e-12
    assert int(out.info.iterations) > 0 and int(out.info.matvecs) >= 2 * int(out.info.iterations)
    assert out.info.stop_reason is None and out.info.method is None and out.info.history == []
    torch.testing.assert_close(out.S, torch.linalg.svdvals(a)[:2], rtol=1e-11, atol=0)


def test_compiled_half_precision_solve_is_solved_in_float32():
    a = torch.randn(40, 30).to(torch.bfloat16)
    s = torch.compile(lambda x: riemsvd.solve(x, 2).S, fullgraph=True, backend="aot_eager")(a)
    assert s.dtype == torch.bfloat16
    torch.testing.assert_close(
        s.float(), torch.linalg.svdvals(a.float())[:2].bfloat16().float(), rtol=0, atol=0
    )


def test_vmap_over_the_operator_matches_the_batched_solve():
    a = torch.randn(3, 30, 20, dtype=torch.float64)
    s = torch.vmap(
        lambda x: torch.ops.riemsvd.solve(x, 2, None, None, None, None, "auto", None, None, 1, 60)[1]
    )(a)
    torch.testing.assert_close(s, torch.linalg.svdvals(a)[:, :2], rtol=1e-11, atol=0)


def test_what_a_compiled_graph_cannot_take_is_named():
    with pytest.raises(Exception, match="generator"):
        torch.compile(
            lambda x: riemsvd.solve(x, 1, generator=torch.Generator()).S, fullgraph=True, backend="eager"
        )(torch.randn(5, 4))


def test_a_previous_result_warm_starts_a_full_graph():
    """A new user's trial: `init=` a previous call's SVDResult was refused under fullgraph=True (the
    compiled path's check wanted a pair), where eager mode takes it. It is taken as its (U, V)."""
    a = torch.randn(40, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    previous = riemsvd.solve(a, 3)
    compiled = torch.compile(lambda x, r: riemsvd.solve(x, 3, init=r).S, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(a, previous), torch.linalg.svdvals(a)[:3], rtol=1e-11, atol=0)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_forward_mode_inside_a_compiled_function_matches_eager(backend):
    """The custom operator has no forward-mode rule: torch.func.jvp and jacfwd inside a compiled
    function returned zero tangents without an error, and a forward_ad dual level failed on an
    internal assert of torch's (two new users' trials). Under forward mode the solve now runs eagerly
    behind a graph break, where the autograd.Function's rule serves, as in eager mode."""
    import torch.autograd.forward_ad as fwad

    dynamo.config.error_on_recompile = False  # a graph break compiles the pieces around it
    gen = torch.Generator().manual_seed(0)
    a, da = (torch.randn(30, 20, dtype=torch.float64, generator=gen) for _ in range(2))

    def loss(x):
        u, s, v = riemsvd.solve(x, 2)
        return s.sum() + (u[:3] * v[:3]).sum() ** 2  # the vectors' tangents too, a sign-free product

    def jvp(x, dx):
        return torch.func.jvp(loss, (x,), (dx,))[1]

    def dual(x, dx):
        with fwad.dual_level():
            return fwad.unpack_dual(riemsvd.solve(fwad.make_dual(x, dx), 2).S).tangent

    def jacobian(x):
        return torch.func.jacfwd(lambda y: riemsvd.solve(y, 1).S)(x)

    for fn, args in ((jvp, (a, da)), (dual, (a, da)), (jacobian, (a,))):
        expected = fn(*args)
        assert float(expected.abs().max()) > 0.1  # a zero tangent would be caught
        torch.testing.assert_close(torch.compile(fn, backend=backend)(*args), expected, rtol=1e-9, atol=1e-12)
    # the operator itself, called directly, has no rule: refused with what to do, not a torch assert
    values = torch.compile(
        lambda x: torch.ops.riemsvd.solve(x, 2, None, None, None, None, "auto", None, None, 1, 60)[1]
    )
    with (
        fwad.dual_level(),
        pytest.raises(RuntimeError, match="Call riemsvd.solve .*runs eagerly under forward"),
    ):
        values(fwad.make_dual(a, da))


def test_reverse_mode_transforms_inside_a_compiled_function_match_eager():
    """PyTorch refuses a custom operator's autograd rule under torch.func.grad, jacrev and vjp
    ("it must override the setup_context staticmethod", pytorch/pytorch#170834): compiled, each of
    them failed where eager mode and torch.linalg's own compile (a new user's trial). There the
    solve now runs eagerly behind a graph break; vmap alone keeps the operator (its own rule)."""
    dynamo.config.error_on_recompile = False  # a graph break compiles the pieces around it
    gen = torch.Generator().manual_seed(0)
    b = torch.randn(3, 20, 10, dtype=torch.float64, generator=gen)
    top = lambda x: riemsvd.solve(x, 2).S[..., 0].sum()  # noqa: E731
    exact = lambda x: torch.linalg.svdvals(x)[..., 0].sum()  # noqa: E731
    over_rows = lambda f: lambda x: torch.func.vmap(f)(x).sum()  # noqa: E731
    for transform, x in (
        (torch.func.grad, b[0]),
        (torch.func.jacrev, b[0]),
        (lambda f: torch.func.vmap(torch.func.grad(f)), b),
        (lambda f: torch.func.grad(over_rows(f)), b),
    ):
        dynamo.reset()
        expected = transform(exact)(x)
        torch.testing.assert_close(torch.compile(transform(top), backend="aot_eager")(x), expected)
    dynamo.reset()
    explained = dynamo.explain(torch.func.vmap(lambda x: riemsvd.solve(x, 2).S))(b)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)


def test_sparse_and_scipy_inputs_run_eagerly_inside_a_compiled_function():
    """Without fullgraph, what the graph cannot hold runs eagerly behind a graph break; dynamo once
    traced into the solver's scipy BLAS handles and crashed (InternalTorchDynamoError). No warning
    either: the host code's disabled copy, made on first need, was once a functools.cache'd function,
    of which dynamo warned at every trace (an error under warnings as errors)."""
    import warnings

    import scipy.sparse as sp

    dynamo.config.error_on_recompile = False  # a graph break compiles the pieces around it
    s = sp.random(30, 20, density=0.3, random_state=0, format="csr")
    a = torch.from_numpy(s.toarray())
    ref = torch.linalg.svdvals(a)[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for make in (lambda: a.to_sparse(), lambda: a.to_sparse_csr()):
            dynamo.reset()
            out = torch.compile(lambda x: riemsvd.solve(x, 2).S, backend="eager")(make())
            torch.testing.assert_close(out, ref, rtol=1e-10, atol=0)
        dynamo.reset()
        out = torch.compile(lambda: riemsvd.solve(s, 2).S, backend="eager")()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=0)


def test_norm_bounds_run_eagerly_inside_a_compiled_function():
    """norm_bounds is host code (numpy, LAPACK): under torch.compile it runs eagerly behind a graph
    break, and gives sound bounds for one matrix and a batch (traced, a batch crashed dynamo with
    'Invalid NaN comparison'; one matrix drew a warning at each data-dependent branch)."""
    import warnings

    dynamo.config.error_on_recompile = False

    def bounds(y):
        b = riemsvd.norm_bounds(y)
        return b.lower, b.upper, b.certified

    g = torch.Generator().manual_seed(0)
    for a in (
        torch.randn(40, 30, dtype=torch.float64, generator=g),
        torch.randn(2, 40, 30, dtype=torch.float64, generator=g),
    ):
        dynamo.reset()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            lower, upper, certified = torch.compile(bounds, backend="eager")(a)
        true = torch.linalg.matrix_norm(a, 2)
        assert bool(certified.all()) and bool((lower <= true).all()) and bool((true <= upper).all())
        assert bool((upper / true - 1 <= 1e-6).all())


def test_import_does_not_load_dynamo():
    """``import riemsvd`` (and a solve) leave torch._dynamo unloaded: its import took 1.1 s of the
    1.4 s that ``import riemsvd`` cost beyond torch, when the host code was torch.compiler.disable'd
    at import; compiled code makes that copy when it first needs it (the tests above). So does a
    layer whose adjoint is its VJP: torch.func.vjp's first call through a circular padding imported
    it, 0.9 s of a first operator_norm that then takes 10 ms (a new user's trial)."""
    import subprocess
    import sys

    code = (
        "import sys, torch, riemsvd, riemsvd.nn, riemsvd.optim, riemsvd.manifolds\n"
        "riemsvd.solve(torch.randn(30, 20, dtype=torch.float64), 2)\n"
        "riemsvd.norm_bounds(torch.randn(30, 20, dtype=torch.float64))\n"
        "conv = torch.nn.Conv2d(4, 6, 3, padding=1, padding_mode='circular', bias=False)\n"
        "riemsvd.nn.operator_norm(conv, (4, 8, 8))\n"
        "print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def _mlp(dtype, width=48):
    return torch.nn.Sequential(
        riemsvd.nn.spectral_norm(torch.nn.Linear(16, width, dtype=dtype)),
        torch.nn.ReLU(),
        riemsvd.nn.spectral_norm(torch.nn.Linear(width, width, dtype=dtype)),
        torch.nn.ReLU(),
        riemsvd.nn.spectral_norm(torch.nn.Linear(width, 4, dtype=dtype)),
    )


def _train_both(eager, backend, dtype, steps=20):
    """Train ``eager`` and a compiled deep copy on the same data; the largest difference of losses and
    parameters over the steps, and the compiled model."""
    model = copy.deepcopy(eager)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    opt_e = torch.optim.SGD(eager.parameters(), lr=0.5)
    opt_c = torch.optim.SGD(model.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for _ in range(steps):
        x, y = torch.randn(32, 16, dtype=dtype, generator=g), torch.randint(4, (32,), generator=g)
        losses = []
        for net, opt in ((eager, opt_e), (compiled, opt_c)):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        params = max(float((p - q).abs().max()) for p, q in zip(eager.parameters(), model.parameters()))
        worst = max(worst, float((losses[0] - losses[1]).abs()), params)
    return worst, model


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=INDUCTOR)])
@pytest.mark.parametrize("width", [48, 384])
def test_spectral_normalized_mlp_trains_compiled_as_in_eager(backend, width):
    """width 384: a 384×384 weight, whose eager backward is written out (nn._spectral.divided_by_sigma);
    compiled, autograd's graph (Dynamo refused the Function's jvp, "Unsupported custom jvp", and
    fullgraph=True raised)."""
    torch.manual_seed(0)
    eager = _mlp(torch.float32, width)
    worst, model = _train_both(eager, backend, torch.float32)
    # float32 at tol 1e-6; the two runs round differently, and σ is known to tol either way
    assert worst <= 1e-5
    explained = dynamo.explain(model)(torch.randn(8, 16))
    assert explained.graph_break_count == 0
    # each compiled normalization is exact: ‖W/σ‖₂ = 1 to the solve's tol
    for layer in (model[0], model[2], model[4]):
        assert abs(float(torch.linalg.matrix_norm(layer.weight.detach().double(), 2)) - 1) < 1e-5


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=INDUCTOR)])
def test_a_normalized_layer_called_twice_before_one_backward_trains_compiled(backend):
    """A tied or shared layer (two views through one encoder) calls the normalization twice before one
    backward. Under inductor the refresh had mutated the stored pair in place, and the graph read it
    from the buffers without the forward's copies, so that the second call's refresh rewrote the pair
    the first call's gradient read: "modified by an inplace operation" (a new user's trial). The
    gradient now is eager's, to the rounding of the two runs."""
    torch.manual_seed(0)
    eager = riemsvd.nn.spectral_norm(torch.nn.Linear(64, 32, bias=False))
    model = copy.deepcopy(eager)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    for net in (eager, compiled):
        (net(x).sum() + net(2 * x).pow(2).sum()).backward()
    grads = [layer.parametrizations.weight.original.grad for layer in (eager, model)]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-5 * float(grads[0].abs().max()))


def test_a_copy_of_a_normalization_refreshes_its_own_pair():
    """The compiled refresh finds its module by a key; a deep copy must not share the original's (its
    tracker would be the original's, and a deleted original would leave no module to find)."""
    layer = riemsvd.nn.spectral_norm(torch.nn.Linear(6, 5, dtype=torch.float64))
    copied = copy.deepcopy(layer)
    norms = (layer.parametrizations.weight[0], copied.parametrizations.weight[0])
    assert int(norms[0]._owner) != int(norms[1]._owner)
    del layer
    with torch.no_grad():
        copied.parametrizations.weight.original.mul_(3.0)
    compiled = torch.compile(copied, fullgraph=True, backend="aot_eager")
    compiled(torch.randn(2, 6, dtype=torch.float64))
    assert abs(float(torch.linalg.matrix_norm(copied.weight.detach(), 2)) - 1) < 1e-10


def test_deep_copies_of_a_normalized_model_share_one_compiled_forward():
    """Ten copies (EMA models, trials) through the same compiled code: the refresh's key is a graph
    input, not a guarded int (the ninth copy once hit the recompile limit under fullgraph=True)."""
    base = torch.nn.Sequential(riemsvd.nn.spectral_norm(torch.nn.Linear(6, 5, dtype=torch.float64)))
    for _ in range(10):  # error_on_recompile is on
        model = copy.deepcopy(base)
        with torch.no_grad():
            model[0].parametrizations.weight.original.mul_(2.0)
        torch.compile(model, fullgraph=True, backend="aot_eager")(torch.randn(2, 6, dtype=torch.float64))
        assert abs(float(torch.linalg.matrix_norm(model[0].weight.detach(), 2)) - 1) < 1e-10


def test_compiled_operator_norm_parametrization_matches_eager():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1, bias=False, dtype=torch.float64)
    eager = riemsvd.nn.spectral_norm(conv, input_shape=(2, 5, 5))
    model = copy.deepcopy(eager)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    for _ in range(3):
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-10, atol=1e-12)
        with torch.no_grad():
            for net in (eager, model):
                net.parametrizations.weight.original.add_(0.05)
