"""riemsvd.linear_operator and the operator norm of layers against their explicit matrices."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import riemsvd
import riemsvd.nn

F64 = torch.float64

# (layer, input shape): strides, padding, dilation, groups, output padding, 1d/2d/3d
CONVS = [
    (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2, bias=False, dtype=F64), (4, 11)),
    (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=2, groups=2, bias=False, dtype=F64), (4, 7, 6)),
    (
        lambda: nn.Conv2d(
            3, 5, (2, 3), stride=(1, 2), padding=(0, 1), dilation=(2, 1), bias=False, dtype=F64
        ),
        (3, 6, 7),
    ),
    (lambda: nn.Conv2d(2, 3, 3, padding="same", bias=False, dtype=F64), (2, 5, 5)),
    (lambda: nn.Conv3d(2, 3, 2, stride=1, padding=1, bias=False, dtype=F64), (2, 3, 4, 3)),
    (
        lambda: nn.ConvTranspose2d(
            4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, bias=False, dtype=F64
        ),
        (4, 4, 5),
    ),
    (lambda: nn.ConvTranspose1d(3, 2, 4, stride=3, padding=1, dilation=2, bias=False, dtype=F64), (3, 6)),
    (lambda: nn.ConvTranspose3d(2, 2, 2, stride=2, bias=False, dtype=F64), (2, 2, 3, 2)),
]
IDS = ["conv1d", "conv2d-groups", "conv2d-rect", "conv2d-same", "conv3d", "convT2d", "convT1d", "convT3d"]


def explicit_matrix(fn, input_shape) -> torch.Tensor:
    """The matrix of a linear map, column by column: fn applied to each basis vector."""
    n = torch.Size(input_shape).numel()
    with torch.no_grad():
        cols = [fn(e.reshape((1,) + tuple(input_shape))).reshape(-1) for e in torch.eye(n, dtype=F64)]
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize(("make", "shape"), CONVS, ids=IDS)
def test_conv_operator_norm_is_sigma1_of_its_explicit_matrix(make, shape):
    torch.manual_seed(0)
    layer = make()
    matrix = explicit_matrix(layer, shape)
    ref = torch.linalg.matrix_norm(matrix, 2)
    op = riemsvd.linear_operator(layer, shape)
    assert op.shape == matrix.shape
    assert torch.isclose(riemsvd.solve(op, 1).S[0], ref, rtol=1e-10)
    assert torch.isclose(riemsvd.nn.operator_norm(layer, shape), ref, rtol=1e-10)
    # ‖A‖_F from the squared-weight layer: the bound is certified and tight
    assert float(op.frobenius_sq()) >= float(matrix.square().sum())
    bounds = riemsvd.norm_bounds(op)
    assert bool(bounds.certified)
    assert float(bounds.lower) <= float(ref) * (1 + 1e-14) and float(bounds.upper) >= float(ref)
    assert float(bounds.upper / bounds.lower) - 1 <= 1e-8


@pytest.mark.parametrize(("make", "shape"), CONVS, ids=IDS)
def test_adjoint_satisfies_the_inner_product_identity_by_both_routes(make, shape):
    torch.manual_seed(1)
    layer = make()
    own = riemsvd.linear_operator(layer, shape)
    vjp = riemsvd.linear_operator(lambda x: layer(x), shape, dtype=F64)
    assert vjp.adjoint_kind == "vjp"
    expected = (
        "vjp"
        if isinstance(layer.padding, str)
        else ("conv" if "Transpose" in type(layer).__name__ else "conv_transpose")
    )
    assert own.adjoint_kind == expected
    m, n = own.shape
    x, y = torch.randn(n, 3, dtype=F64), torch.randn(m, 3, dtype=F64)
    for op in (own, vjp):
        lhs = (op.matmat(x) * y).sum(0)
        rhs = (x * op.rmatmat(y)).sum(0)
        assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12)
    assert torch.allclose(own.rmatmat(y), vjp.rmatmat(y), rtol=1e-12, atol=1e-12)


def test_a_map_autograd_cannot_trace_is_named_not_solved_with_a_zero_adjoint():
    """A forward under torch.no_grad has a zero VJP: Aᵀ was 0, and the solve ended unconverged with a
    warning that blamed rounding. The error names the cause and the way out (``adjoint=``), which
    then solves it; a zero map is still a map."""
    w = torch.randn(30, 20, dtype=F64, generator=torch.Generator().manual_seed(0))

    def frozen(x):
        with torch.no_grad():
            return x @ w.mT

    with pytest.raises(ValueError, match=r"torch\.no_grad.*adjoint="):
        riemsvd.solve(riemsvd.linear_operator(frozen, (20,), dtype=F64), 1)
    # a detach inside a map with parameters: the output requires grad through them, not through x
    layer = nn.Linear(20, 30, bias=False, dtype=F64)
    with pytest.raises(ValueError, match=r"detach"):
        riemsvd.solve(riemsvd.linear_operator(lambda x: layer(x.detach()), (20,), dtype=F64), 1)
    # the check draws from its own seed: a solve given a generator leaves the global RNG alone
    state = torch.get_rng_state()
    traced = riemsvd.linear_operator(lambda x: layer(x), (20,), dtype=F64)
    riemsvd.solve(traced, 1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)
    given = riemsvd.linear_operator(frozen, (20,), adjoint=lambda y: y @ w, dtype=F64)
    result = riemsvd.solve(given, 1)
    torch.testing.assert_close(result.S[0], torch.linalg.matrix_norm(w, 2), rtol=1e-10, atol=0)
    zero = riemsvd.linear_operator(lambda x: torch.zeros(x.shape[0], 30, dtype=F64), (20,), dtype=F64)
    assert float(riemsvd.solve(zero, 1).S[0]) == 0.0


@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate"])
@pytest.mark.parametrize("sequential", [False, True])
def test_bounds_of_a_float32_layer_with_other_padding_are_float64_tight(mode, sequential):
    """A float32 Conv2d with circular, reflect or replicate padding has no transposed-convolution
    adjoint; its bounds' own products ran in float32, 3.9e-4 (circular) and 4.6e-4 (reflect) above
    ‖A‖₂ (a new user's trial). A float64 copy of the layer holds its weights exactly: within float32's
    resolution of the solve's vectors (about ε·√n = 1e-6 at n = 72), 1.3e-7 and 2.3e-7 measured. So
    too inside an nn.Sequential in training mode, which runs through an eval-mode wrapper: its copy
    had been left out, and float32 margins gave 3.1e-4 (a new user's trial)."""
    torch.manual_seed(0)
    layer = nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode, bias=False)
    ref = torch.linalg.matrix_norm(explicit_matrix(copy.deepcopy(layer).double(), (2, 6, 6)), 2)
    module = nn.Sequential(layer, nn.Dropout(0.5)) if sequential else layer
    bounds = riemsvd.norm_bounds(riemsvd.linear_operator(module, (2, 6, 6)))
    assert bool(bounds.certified) and float(bounds.upper) >= float(ref)
    assert float(bounds.upper / ref) - 1 <= 2e-6
    assert layer.weight.dtype == torch.float32  # the copy, not the layer, went to float64


class _HeldKernel(nn.Module):
    """A fixed kernel held as a plain attribute, which ``.double()`` does not convert."""

    def __init__(self, cast: bool = False) -> None:
        super().__init__()
        self.w, self.cast = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(0)), cast

    def forward(self, x):
        x = x.float() if self.cast else x
        return nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode="circular"), self.w)


@pytest.mark.parametrize("cast", [False, True])
def test_bounds_of_a_module_whose_float64_copy_is_not_the_same_map(cast):
    """A float32 module whose float64 copy does not run in float64 (a kernel held as a plain attribute;
    a forward that casts to float32): the copy crashed norm_bounds ("expected scalar type Double but
    found Float"; a review). It is checked on one product and left out, and the bounds use float32
    products, as before the copy."""
    module = _HeldKernel(cast)
    ref = torch.linalg.matrix_norm(explicit_matrix(lambda x: module(x.float()).double(), (2, 6, 6)), 2)
    op = riemsvd.linear_operator(module, (2, 6, 6))
    assert op.float64() is None
    # a given adjoint is the user's, in the user's dtype: no copy either (a numpy forward crashed)
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular", bias=False)
    given = riemsvd.linear_operator(conv, (2, 6, 6), adjoint=lambda y: y.new_zeros(y.shape[0], 2, 6, 6))
    assert given.float64() is None
    bounds = riemsvd.norm_bounds(op)
    assert bool(bounds.certified) and float(bounds.lower) <= float(ref) * (1 + 1e-6) <= float(
        bounds.upper
    ) * (1 + 1e-6)


def test_linear_layer_and_plain_function_are_their_matrices(gen):
    lin = nn.Linear(7, 5, bias=False, dtype=F64)
    op = riemsvd.linear_operator(lin, (7,))
    assert op.adjoint_kind == "linear" and op.shape == (5, 7)
    assert torch.isclose(
        riemsvd.solve(op, 1).S[0], torch.linalg.matrix_norm(lin.weight.detach(), 2), rtol=1e-10
    )
    a = torch.randn(2, 3, 4, 5, dtype=F64, generator=gen)  # a map (4, 5) → (2, 3) as a tensor contraction

    def fn(x):
        return torch.einsum("ijkl,bkl->bij", a, x)

    op = riemsvd.linear_operator(fn, (4, 5), dtype=F64)
    matrix = a.reshape(6, 20)
    assert op.shape == (6, 20)
    assert torch.allclose(op.matmat(torch.eye(20, dtype=F64)), matrix)
    s = riemsvd.solve(op, 3, generator=gen).S
    assert torch.allclose(s, torch.linalg.svdvals(matrix)[:3], rtol=1e-10)
    given = riemsvd.linear_operator(
        fn, (4, 5), adjoint=lambda y: torch.einsum("ijkl,bij->bkl", a, y), dtype=F64
    )
    assert given.adjoint_kind == "given"
    assert torch.allclose(given.rmatmat(torch.eye(6, dtype=F64)), matrix.mT)


def test_spectral_norm_by_operator_norm_gives_norm_one_and_the_exact_gradient():
    torch.manual_seed(2)
    shape = (2, 6, 6)
    layer = riemsvd.nn.spectral_norm(nn.Conv2d(2, 3, 3, stride=2, padding=1, dtype=F64), input_shape=shape)
    keys = [k for k in layer.state_dict() if k.startswith("parametrizations")]
    assert keys == [
        "parametrizations.weight.original",
        "parametrizations.weight.0._u",
        "parametrizations.weight.0._v",
    ]
    assert layer.parametrizations.weight[0]._v.shape == (72,)

    def conv(w):
        return lambda x: nn.functional.conv2d(x, w, None, 2, 1)

    normalized = layer.weight.detach()
    assert torch.isclose(
        torch.linalg.matrix_norm(explicit_matrix(conv(normalized), shape), 2),
        torch.tensor(1.0, dtype=F64),
        rtol=1e-10,
    )
    x = torch.randn(4, *shape, dtype=F64)
    layer(x).square().sum().backward()
    grad = layer.parametrizations.weight.original.grad
    # reference: autograd through torch.linalg.matrix_norm of the explicit matrix (built differentiably)
    w = layer.parametrizations.weight.original.detach().clone().requires_grad_()
    n = torch.Size(shape).numel()
    matrix = torch.stack(
        [
            nn.functional.conv2d(e.reshape(1, *shape), w, None, 2, 1).reshape(-1)
            for e in torch.eye(n, dtype=F64)
        ],
        1,
    )
    out = nn.functional.conv2d(x, w / torch.linalg.matrix_norm(matrix, 2), layer.bias.detach(), 2, 1)
    ref = torch.autograd.grad(out.square().sum(), w)[0]
    assert torch.allclose(grad, ref, rtol=1e-8, atol=1e-10)


def test_operator_norm_refreshes_an_assigned_kernel_without_the_global_rng():
    """Assignment refreshes (u, v) by a cold solve (the old pair may be a lower pair of the new
    kernel), from a fixed seed: exact in eval mode, and the global RNG is not drawn from."""
    shape = (2, 6, 6)
    layer = riemsvd.nn.spectral_norm(nn.Conv2d(2, 3, 3, stride=2, padding=1, dtype=F64), input_shape=shape)
    kernel = 5 * torch.randn(3, 2, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    state = torch.get_rng_state()
    layer.weight = kernel
    assert torch.equal(torch.get_rng_state(), state)
    layer.eval()
    normalized = layer.weight.detach()
    matrix = explicit_matrix(lambda x: nn.functional.conv2d(x, normalized, None, 2, 1), shape)
    assert abs(float(torch.linalg.matrix_norm(matrix, 2)) - 1) <= 1e-10


def test_spectral_norm_by_operator_norm_warns_once_of_inputs_of_another_shape():
    """Normalized on 3×4×4 inputs, a Conv2d applied to 3×32×32 ones has norm 1.19 there, not 1, and
    nothing said so (a new user's trial). A UserWarning names both shapes, once; inputs of the shape
    given, batched or not, pass, and so does everything once the normalization is removed."""
    torch.manual_seed(0)
    layer = riemsvd.nn.spectral_norm(nn.Conv2d(3, 8, 3, padding=1, bias=False), input_shape=(3, 4, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(torch.randn(2, 3, 4, 4))
        layer(torch.randn(3, 4, 4))
    with pytest.warns(
        UserWarning, match=r"inputs of shape \(3, 4, 4\).*inputs of shape \(3, 32, 32\)"
    ) as rec:
        layer(torch.randn(2, 3, 32, 32))
    assert rec[0].filename == __file__  # the forward's caller: it had pointed into torch's module call
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(torch.randn(2, 3, 32, 32))  # once
        torch.nn.utils.parametrize.remove_parametrizations(layer, "weight")
        fresh = riemsvd.nn.spectral_norm(nn.Conv2d(3, 8, 3, padding=1), input_shape=(3, 4, 4))
        torch.nn.utils.parametrize.remove_parametrizations(fresh, "weight")
        fresh(torch.randn(2, 3, 32, 32))


def test_spectral_norm_by_operator_norm_says_nothing_of_inputs_with_other_channels():
    """Other channels than the layer's: torch's convolution raises, and the warning first said the
    layer is not 1-Lipschitz on those inputs (a new user's trial)."""
    layer = riemsvd.nn.spectral_norm(nn.Conv2d(3, 8, 3, padding=1, bias=False), input_shape=(3, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match="channels"):
            layer(torch.randn(2, 4, 8, 8))


def test_a_layer_normalized_on_an_input_shape_is_certified_by_norm_bounds():
    """spectral_norm(input_shape=...) adds a pre-hook that checks the input's shape and changes
    nothing; ``linear_operator`` had taken it for a layer whose map its weight does not set, and
    ``norm_bounds`` found no deterministic bound (min(m, n) = 512 > 256 and ‖A‖_F unknown; a new
    user's trial). The bound brackets the explicit matrix's norm."""
    torch.manual_seed(0)
    layer = riemsvd.nn.spectral_norm(
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False, dtype=F64), input_shape=(16, 8, 8)
    )
    layer(torch.randn(2, 16, 8, 8, dtype=F64))
    layer.eval()
    bounds = riemsvd.norm_bounds(riemsvd.linear_operator(layer, (16, 8, 8)))
    weight = layer.weight.detach()
    true = torch.linalg.matrix_norm(
        explicit_matrix(lambda x: nn.functional.conv2d(x, weight, None, 2, 1), (16, 8, 8)), 2
    )
    assert float(bounds.lower) <= float(true) <= float(bounds.upper) <= float(true) * (1 + 1e-6)


def test_spectral_norm_without_input_shape_is_unchanged():
    conv = riemsvd.nn.spectral_norm(nn.Conv2d(2, 3, 3, dtype=F64))
    assert type(conv.parametrizations.weight[0]).__name__ == "SpectralNorm"
    assert conv.parametrizations.weight[0]._v.shape == (18,)


def test_operator_norm_ignores_the_bias_and_leaves_the_layer_alone():
    torch.manual_seed(3)
    conv = nn.Conv1d(2, 2, 3, padding=1, dtype=F64)
    bias = conv.bias
    ref = torch.linalg.matrix_norm(
        explicit_matrix(lambda x: nn.functional.conv1d(x, conv.weight, None, 1, 1), (2, 8)), 2
    )
    assert torch.isclose(riemsvd.nn.operator_norm(conv, (2, 8)), ref, rtol=1e-10)
    assert conv.bias is bias


def test_linear_operator_of_a_layer_with_a_bias_is_its_linear_part():
    torch.manual_seed(4)
    conv = nn.Conv2d(2, 3, 3, padding=1, dtype=F64)
    op = riemsvd.linear_operator(conv, (2, 5, 5))
    ref = explicit_matrix(lambda x: nn.functional.conv2d(x, conv.weight, None, 1, 1), (2, 5, 5))
    x = torch.randn(50, 2, dtype=F64)
    torch.testing.assert_close(op.matmat(x), ref @ x)
    assert conv.bias is not None  # the layer is left as it is
    torch.testing.assert_close(
        riemsvd.nn.operator_norm(conv, (2, 5, 5)), riemsvd.solve(op, 1, tol=1e-12).S[0], rtol=1e-10, atol=0
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: riemsvd.nn.operator_norm(nn.Linear(10, 5), (7,)), r"in_features = 10.*got \(7,\)"),
        (
            lambda: riemsvd.nn.operator_norm(nn.Conv2d(16, 8, 3), (3, 24, 24)),
            r"in_channels = 16.*\(3, 24, 24\)",
        ),
        (lambda: riemsvd.nn.operator_norm(nn.Conv2d(3, 8, 3), (3, 24)), r"\(C, \*, \*\)"),
        (lambda: riemsvd.nn.operator_norm(nn.Conv2d(3, 8, 5), (3, 2, 2)), "does not fit this Conv2d"),
        (lambda: riemsvd.nn.spectral_norm(nn.Conv2d(3, 4, 3), input_shape=(5, 8, 8)), "in_channels = 3"),
        (lambda: riemsvd.linear_operator(nn.ConvTranspose1d(4, 2, 3), (2, 9)), "in_channels = 4"),
        (  # the message had said "got Conv2d.weight", what the user passed, without padding_mode
            lambda: riemsvd.nn.spectral_norm(
                nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), input_shape=(3, 6, 6)
            ),
            r"zero-padded.*padding_mode='circular'.*operator_norm",
        ),
    ],
)
def test_input_shapes_that_do_not_fit_the_layer_raise_value_error_naming_it(call, match):
    with pytest.raises(ValueError, match="`input_shape`.*" + match):
        call()


def test_invalid_arguments_are_named():
    with pytest.raises(TypeError, match="`fn`"):
        riemsvd.linear_operator(3, (1,))
    with pytest.raises(TypeError, match="`adjoint`"):
        riemsvd.linear_operator(lambda x: x, (3,), adjoint=1)
    with pytest.raises(ValueError, match="`input_shape`"):
        riemsvd.linear_operator(lambda x: x, (0, 3))
    with pytest.raises(ValueError, match="`fn` failed"):
        riemsvd.linear_operator(lambda x: x.reshape(2, 9), (3, 5, 5))
    with pytest.raises(ValueError, match="`input_shape`"):
        riemsvd.nn.spectral_norm(nn.Linear(3, 2), input_shape=(3,))
    with pytest.raises(ValueError, match="`input_shape`"):
        riemsvd.nn.operator_norm(nn.Conv1d(1, 1, 3), (1, -4))


@pytest.mark.parametrize(
    "fn, match",
    [
        (nn.ReLU(), "fn\\(x \\+ 2y\\)"),
        (nn.Sequential(nn.Linear(4, 4, bias=False), nn.GELU()), "fn\\(x \\+ 2y\\)"),
        (lambda x: x + 1, "maps 0 to a nonzero output"),
    ],
)
def test_a_map_that_is_not_linear_raises_value_error(fn, match):
    # without the check these gave a norm (once a negative one) with no warning
    with pytest.raises(ValueError, match="`fn` is not linear: .*" + match):
        riemsvd.linear_operator(fn, (4,))
    if isinstance(fn, nn.Module):
        with pytest.raises(ValueError, match="`layer` is not linear"):
            riemsvd.nn.operator_norm(fn, (4,))


def test_a_map_nonlinear_below_the_probes_one_percent_is_named_by_the_solve_and_the_bounds():
    """A convolution plus 1e-2·x² passes :func:`riemsvd.linear_operator`'s own probe (below 1%), and
    the stall's diagnosis skipped a map whose Aᵀ is riemsvd's VJP: the solve ran to maxiter with no
    cause given and `norm_bounds` returned a Krylov bound (a new user's trial). Both now name the map."""
    stencil = torch.tensor([[0.0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=torch.float64).view(1, 1, 3, 3)

    def fn(x):
        return torch.nn.functional.conv2d(x, stencil, padding=1) + 1e-2 * x**2

    op = riemsvd.linear_operator(fn, (1, 12, 12), dtype=torch.float64)
    with pytest.warns(
        riemsvd.ConvergenceWarning, match="not linear.*the function given to `linear_operator`"
    ):
        riemsvd.solve(op, 1, maxiter=30, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="not linear.*the function given to `linear_operator`"):
        riemsvd.norm_bounds(op, confidence=0.99)
    linear = riemsvd.linear_operator(
        lambda x: torch.nn.functional.conv2d(x, stencil, padding=1), (1, 12, 12), dtype=torch.float64
    )
    assert bool(riemsvd.solve(linear, 1).info.converged)  # a linear map still solves, and is bounded
    riemsvd.norm_bounds(linear, confidence=0.99)


@pytest.mark.parametrize(
    "fn, shape",
    [(nn.ReLU(), (3,)), (nn.LeakyReLU(), (3,)), (nn.ReLU6(), (3,)), (nn.Hardtanh(), (2,)), (torch.abs, (3,))],
)
def test_a_map_linear_on_the_probes_inputs_alone_is_still_refused(fn, shape):
    """On inputs this small the sum fn(x + 2y) = fn(x) + 2 fn(y) held for these maps on the probe's
    two inputs (the same signs on every entry; Hardtanh's inputs within its linear range), and
    norm_bounds certified a norm for each (ReLU on (3,): 0.936, certified; a new user's trial). The
    probe asks fn(−3x) = −3 fn(x) too."""
    with pytest.raises(ValueError, match=r"`fn` is not linear: .*fn\(−3x\) \+ 3 fn\(x\)"):
        riemsvd.norm_bounds(riemsvd.linear_operator(fn, shape), confidence=0.99)
    # linear maps in every dtype the probe sees still pass it
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        w = torch.randn(5, shape[0], generator=torch.Generator().manual_seed(0)).to(dtype)
        riemsvd.linear_operator(lambda x, w=w: x @ w.T, shape, dtype=dtype)


def test_a_map_in_another_dtype_or_not_item_by_item_is_refused_by_name():
    """A new user's trial: a float32 Linear behind x.float(), declared float64, got float64's
    rounding margins, and norm_bounds certified an upper bound below ‖A‖₂ (2 of 4 seeds, the lower
    one above it on the others); a map that ignored the batch size crashed inside the solver with
    blocks of 4; one that mixed a batch's items was reported as a tol below rounding."""
    layer = nn.Linear(40, 60, bias=False)
    with pytest.raises(ValueError, match="returned torch.float32 for a torch.float64 input"):
        riemsvd.linear_operator(lambda x: layer(x.float()), (40,), dtype=torch.float64)
    op = riemsvd.linear_operator(lambda x: layer(x.float()), (40,), dtype=torch.float32)
    bounds = riemsvd.norm_bounds(op)
    true = float(torch.linalg.matrix_norm(layer.weight.detach().double(), 2))
    assert bool(bounds.certified) and float(bounds.lower) <= true <= float(bounds.upper)
    w = torch.randn(50, 30, dtype=torch.float64)
    with pytest.raises(ValueError, match="on a batch of 2 it returned \\(1, 50\\)"):
        riemsvd.linear_operator(lambda x: (x @ w.T)[:1], (30,), dtype=torch.float64)
    with pytest.raises(ValueError, match="each item of a batch"):
        riemsvd.linear_operator(lambda x: x.flip(0) @ w.T, (30,), dtype=torch.float64)
    with pytest.raises(ValueError, match="real linear maps"):
        riemsvd.linear_operator(lambda x: (x @ w.T).to(torch.complex128), (30,), dtype=torch.float64)
    for bad in (torch.int64, "float64"):
        with pytest.raises(TypeError, match="`dtype` must be a real floating torch dtype"):
            riemsvd.linear_operator(lambda x: x @ w.T, (30,), dtype=bad)


def test_linear_maps_with_cancellation_are_accepted():
    # a residual branch x − f(x) with f close to the identity: the output is 1e-3 of its terms
    torch.manual_seed(0)
    near = nn.Linear(64, 64, bias=False, dtype=F64)
    with torch.no_grad():
        near.weight.copy_(torch.eye(64, dtype=F64) + 1e-3 * torch.randn(64, 64, dtype=F64))
    op = riemsvd.linear_operator(lambda x: x - near(x), (64,), dtype=F64)
    ref = torch.linalg.matrix_norm(torch.eye(64, dtype=F64) - near.weight.detach(), 2)
    torch.testing.assert_close(riemsvd.solve(op, 1).S[0], ref, rtol=1e-10, atol=0)
    near32 = near.float()
    assert riemsvd.linear_operator(lambda x: x - near32(x), (64,), dtype=torch.float32).shape == (64, 64)


@pytest.mark.parametrize("scale", [1e-150, 1e-160, 1e155])
def test_bounds_of_layers_with_weights_far_from_one(scale):
    """A review: weights of 1e-150 gave a certified upper bound 8% below ‖A‖₂ (the bounds square
    products of products, which underflowed; the layer was not scaled as a dense A is); 1e155 and
    1e-160 gave NaN (squares of the weights over- and underflowed in ‖A‖_F²)."""
    torch.manual_seed(0)
    layer = nn.Conv2d(2, 1, (5, 3), stride=2, padding=3, dilation=3, bias=False, dtype=F64)
    with torch.no_grad():
        layer.weight.mul_(scale)
    shape = (2, 7, 5)
    ref = float(torch.linalg.matrix_norm(explicit_matrix(layer, shape), 2))
    op = riemsvd.linear_operator(layer, shape)
    bounds = riemsvd.norm_bounds(op)
    assert bool(bounds.certified)
    assert float(bounds.lower) <= ref * (1 + 1e-12) and ref * (1 - 1e-12) <= float(bounds.upper) <= ref * (
        1 + 1e-6
    )
    assert op.scale is None  # the caller's operator keeps its units


def test_bounds_of_zero_layers_and_of_float32_weights_near_its_largest():
    """A review: a zero layer above 256 inputs raised for want of ‖A‖_F (its weights' magnitude, 0, fell
    outside the range of squares that neither under- nor overflow); a float32 weight of 3e38 asked
    for the scale 2^−127, subnormal in float32, and the products broke down."""
    zero = nn.Linear(300, 280, bias=False, dtype=F64)
    with torch.no_grad():
        zero.weight.zero_()
    bounds = riemsvd.norm_bounds(riemsvd.linear_operator(zero, (300,)))
    assert float(bounds.lower) == 0.0 and 0.0 <= float(bounds.upper) <= 1e-300
    big = nn.Linear(50, 40, bias=False)
    with torch.no_grad():
        big.weight[0, 0] = 3e38
    bounds = riemsvd.norm_bounds(riemsvd.linear_operator(big, (50,)))
    ref = float(torch.linalg.matrix_norm(big.weight.detach().double(), 2))
    assert float(bounds.lower) <= ref * (1 + 1e-6) and ref * (1 - 1e-6) <= float(bounds.upper) <= ref * (
        1 + 1e-6
    )


@pytest.mark.parametrize(
    ("dtype", "scale", "mode"),
    [(torch.float32, 1e30, "zeros"), (torch.float32, 1e30, "circular"), (F64, 1e200, "zeros")],
)
def test_solve_of_a_layer_with_weights_far_from_one(dtype, scale, mode):
    """A review: a float32 Conv with weights of 1e30 (float64: 1e200) stalled 30–40% below its σ₁,
    the solver's squares of norms overflowing; a dense A is scaled by a power of two first, and now a
    layer is too, in a copy."""
    torch.manual_seed(0)
    layer = nn.Conv2d(4, 6, 3, padding=1, groups=2, padding_mode=mode, bias=False, dtype=dtype)
    with torch.no_grad():
        layer.weight.mul_(scale)
    shape = (4, 6, 6)
    ref = float(torch.linalg.matrix_norm(explicit_matrix(copy.deepcopy(layer).double(), shape), 2))
    op = riemsvd.linear_operator(layer, shape)
    result = riemsvd.solve(op, 1, generator=torch.Generator().manual_seed(3))
    rtol = 1e-6 if dtype == torch.float32 else 1e-12
    assert bool(result.info.converged) and abs(float(result.S[0]) / ref - 1) <= rtol
    assert abs(float(riemsvd.nn.operator_norm(layer, shape)) / ref - 1) <= rtol
    assert op.scale is None


def test_scaled_copies_count_on_the_callers_operator_and_follow_only_plain_layers():
    """A third review: the scaled copy's products went uncounted on the caller's operator (0 after a
    solve at weights of 1e30, 106 at 1); a Linear whose hook undid its weights' 1e-30 drew a scale
    from those weights and stalled 19% low; an empty block crashed a float32 Linear with weights of
    1e32 beside 0.1 (a zero-width product)."""
    torch.manual_seed(0)
    counts = []
    for scale in (1.0, 1e30):
        conv = nn.Conv2d(3, 4, 3, bias=False)
        with torch.no_grad():
            conv.weight.mul_(scale)
        op = riemsvd.linear_operator(conv, (3, 8, 8))
        info = riemsvd.solve(op, 1, generator=torch.Generator().manual_seed(0)).info
        counts.append((op.matvecs, int(info.matvecs)))
    assert counts[0][0] == counts[0][1] > 0 and counts[1][0] == counts[1][1] > 0
    lin = nn.Linear(60, 40, bias=False, dtype=F64)
    with torch.no_grad():
        lin.weight.mul_(1e-30)
    lin.register_forward_hook(lambda module, args, out: out * 1e30)
    w = lin.weight.detach() * 1e30
    hooked = riemsvd.linear_operator(lin, (60,), adjoint=lambda y: y @ w)
    result = riemsvd.solve(hooked, 1, generator=torch.Generator().manual_seed(0))
    assert bool(result.info.converged)
    torch.testing.assert_close(result.S[0], torch.linalg.matrix_norm(w, 2), rtol=1e-10, atol=0)
    mixed = nn.Linear(17, 11, bias=False)
    with torch.no_grad():
        mixed.weight[:, :8] *= 1e32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mixed magnitudes beyond float32's reach: unconverged, flagged
        riemsvd.solve(riemsvd.linear_operator(mixed, (17,)), 3, generator=torch.Generator().manual_seed(0))


class _Louder(nn.Linear):
    def forward(self, x):
        return 3 * super().forward(x)


def test_a_layer_subclass_with_its_own_forward_gets_the_vjp_adjoint():
    """A review: a Linear subclass with its own forward got the adjoint y @ W of torch's Linear, not
    of its map, and its solve stalled far below σ₁; one that only inherits (as
    MultiheadAttention's out_proj class does) keeps the fast adjoint."""
    torch.manual_seed(0)
    loud = _Louder(30, 20, bias=False, dtype=F64)
    op = riemsvd.linear_operator(loud, (30,))
    result = riemsvd.solve(op, 1, generator=torch.Generator().manual_seed(0))
    assert op.adjoint_kind == "vjp" and bool(result.info.converged)
    torch.testing.assert_close(
        result.S[0], 3 * torch.linalg.matrix_norm(loud.weight.detach(), 2), rtol=1e-10, atol=0
    )
    inherited = nn.modules.linear.NonDynamicallyQuantizableLinear(30, 20, bias=False, dtype=F64)
    assert riemsvd.linear_operator(inherited, (30,)).adjoint_kind == "linear"


def _explicit_norm(layer, input_shape) -> float:
    """‖layer‖₂ from its matrix, built column by column (bias-free layers)."""
    size = int(torch.tensor(input_shape).prod())
    eye = torch.eye(size, dtype=torch.float64).reshape(size, *input_shape)
    with torch.no_grad():
        return float(torch.linalg.matrix_norm(layer(eye).reshape(size, -1).mT, 2))


def test_a_layer_in_training_mode_is_applied_in_eval_mode_or_refused():
    """A conv normalized by torch's spectral_norm and left in training mode changed at each read of its
    weight (a power step): over the products of its own operator_norm its norm went from 16.0 to
    1.75, unsaid, and norm_bounds refused it as mapping a batch's items together (a new user's
    trial). Such a layer is refused now, by name, and left as it was; in eval mode its bound holds.
    A module whose training mode only draws (dropout) is applied in eval mode, its modes restored."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False, dtype=torch.float64)
    normalized = torch.nn.utils.parametrizations.spectral_norm(conv)
    before = [b.clone() for b in normalized.buffers()]
    with pytest.raises(ValueError, match=r"`layer` is in training mode .* Call `layer.eval\(\)` first"):
        riemsvd.nn.operator_norm(normalized, (3, 6, 6))
    with pytest.raises(ValueError, match=r"`fn` is in training mode and its parametrized `weight` changes"):
        riemsvd.linear_operator(normalized, (3, 6, 6))
    assert all(torch.equal(a, b) for a, b in zip(before, normalized.buffers()))
    normalized.eval()
    exact = _explicit_norm(normalized, (3, 6, 6))
    bounds = riemsvd.norm_bounds(riemsvd.linear_operator(normalized, (3, 6, 6)))
    assert float(bounds.lower) <= exact * (1 + 1e-12) and exact <= float(bounds.upper) * (1 + 1e-12)

    dropped = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False, dtype=torch.float64), nn.Dropout(0.5))
    dropped.train()
    sigma = float(riemsvd.nn.operator_norm(dropped, (3, 6, 6)))
    assert abs(sigma - _explicit_norm(dropped[0], (3, 6, 6))) <= 1e-10 * sigma
    assert dropped.training and dropped[1].training


def test_riemsvds_own_normalized_conv_in_training_mode_is_refused():
    """riemsvd.nn.spectral_norm of a float32 conv, left in training mode, refreshes its pair at each
    read of its weight, often by about 1e-7 of σ (two reads in a row can agree to the bit): its
    products each saw another matrix, and a certified norm_bounds missed the layer's norm by up to
    2e-7 on 16 of 20 seeds (a new user's trial). It is refused, as torch's is; in eval mode the
    certified bounds hold its exact norm."""
    shape = (4, 8, 8)
    for seed in range(6):
        torch.manual_seed(seed)
        conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        riemsvd.nn.spectral_norm(conv, input_shape=shape)
        conv(torch.randn((1,) + shape))  # a training forward
        with pytest.raises(ValueError, match=r"`fn` is in training mode .* Call `fn.eval\(\)` first"):
            riemsvd.linear_operator(conv, shape)
        conv.eval()
        bounds = riemsvd.norm_bounds(riemsvd.linear_operator(conv, shape))
        plain = nn.Conv2d(4, 4, 3, padding=1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            plain.weight.copy_(conv.weight)  # the eval-mode weight, exactly, in float64
        exact = _explicit_norm(plain, shape)
        assert bounds.certified and float(bounds.lower) <= exact <= float(bounds.upper), (seed, bounds, exact)


def test_a_chain_of_biased_layers_is_bounded_by_its_linear_part():
    """Two biased convolutions in a row were refused as not linear, where a single biased layer has its
    bias dropped (a new user's trial): a Sequential's layers are taken bias-free each, the chain's
    linear part, whose norm is its Lipschitz constant; its biases stay in the module. A ReLU between
    them is still refused."""
    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, dtype=torch.float64), nn.Conv2d(4, 2, 3, stride=2, dtype=torch.float64)
    )
    linear = copy.deepcopy(seq)
    for layer in linear:
        layer.bias = None
    exact = _explicit_norm(linear, (3, 7, 7))
    assert abs(float(riemsvd.nn.operator_norm(seq, (3, 7, 7))) - exact) <= 1e-12 * exact
    bounds = riemsvd.norm_bounds(riemsvd.linear_operator(seq, (3, 7, 7)))
    assert float(bounds.lower) <= exact * (1 + 1e-12) and exact <= float(bounds.upper) * (1 + 1e-12)
    assert all(layer.bias is not None for layer in seq)
    with pytest.raises(ValueError, match="is not linear"):
        riemsvd.nn.operator_norm(nn.Sequential(seq[0], nn.ReLU(), seq[1]), (3, 7, 7))


def test_a_vjp_adjoint_is_exact_and_names_inference_mode():
    """Aᵀ as fn's VJP, autograd's (tests/test_compile.py: no dynamo import). Under
    torch.inference_mode(), where no graph is recorded, it had failed with a ValueError that blamed
    `fn` for detaching its output; it names inference mode and the remedy now."""
    conv = nn.Conv2d(4, 6, 3, padding=1, padding_mode="circular", bias=False, dtype=torch.float64)
    exact = _explicit_norm(conv, (4, 8, 8))
    with torch.no_grad():
        assert abs(float(riemsvd.nn.operator_norm(conv, (4, 8, 8))) - exact) <= 1e-12 * exact
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"inference_mode\(\).*torch.no_grad\(\)"):
        riemsvd.nn.operator_norm(conv, (4, 8, 8))
    # a map that does not read its input: the zero map, whose VJP is zero (autograd has no graph there)
    zero = riemsvd.linear_operator(lambda x: x.new_zeros(x.shape[0], 5), (3,), dtype=torch.float64)
    assert float(riemsvd.norm_bounds(zero).upper) == 0.0
