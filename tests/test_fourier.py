"""norm_bounds of convolutions from their frequencies (riemsvd._fourier): circular padding exactly,
zero padding bounded above, against the layers' explicit matrices and an FFT of the kernel."""

from __future__ import annotations

import copy
import math
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

import riemsvd
from riemsvd._fourier import fourier_bounds
from tests.test_bounds import _REF
from tests.test_linear_operator import explicit_matrix

F64 = torch.float64
_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _true_norm(layer, shape) -> float:
    """σ₁ of the layer's matrix written out in float64: a float32 layer's own products round where
    taps wrap onto the same input (a sum of two weights), its weights do not."""
    return float(torch.linalg.svdvals(explicit_matrix(copy.deepcopy(layer).double(), shape))[0])


@st.composite
def _circular(draw):
    """A Conv1d/2d/3d with circular padding and an output of its input's size: kernel, dilation,
    groups, 'same' or symmetric padding, float32 or float64, weights scaled far from 1."""
    d = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2]))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = draw(st.integers(1, 4))
    dilation = draw(st.integers(1, 2))
    span = dilation * (kernel - 1)
    padding = span // 2 if span % 2 == 0 and draw(st.booleans()) else "same"
    cap = {1: 9, 2: 6, 3: 4}[d]  # torch's circular padding wraps at most once: size ≥ the padding
    spatial = tuple(draw(st.integers(max(2, span), max(span, cap))) for _ in range(d))
    dtype = draw(st.sampled_from([F64, torch.float32]))
    scale = draw(st.sampled_from([1.0, 1e-30, 1e30]))
    layer = _CONVS[d](c_in, c_out, kernel, padding=padding, dilation=dilation, groups=groups,
                      padding_mode="circular", bias=False, dtype=dtype)  # fmt: skip
    return _drawn_weights(draw, layer, scale), (c_in,) + spatial


def _drawn_weights(draw, layer, scale: float = 1.0):
    """``layer`` with weights N(0, 1)·``scale`` from a drawn seed."""
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen, dtype=F64) * scale)
    return layer


@given(_circular())
@settings(max_examples=60, deadline=None)
def test_circular_convolution_is_bounded_exactly_from_its_frequencies(case):
    layer, shape = case
    true = _true_norm(layer, shape)
    bounds = riemsvd.norm_bounds(riemsvd.linear_operator(layer, shape))
    assert bounds.method == "fourier" and bool(bounds.certified)
    slack = _REF * math.prod(shape) * true  # the reference SVD's own error
    lower, upper = float(bounds.lower), float(bounds.upper)
    assert lower <= true + slack and upper >= true - slack, (lower, true, upper)
    # float64: the certificate's δ/2 and the rounding terms, 6e-13 measured; float32: the bounds
    # rounded outwards to float32 (at most one ulp, 2^-23)
    resolution = 1e-11 if layer.weight.dtype == F64 else 2.0**-23
    assert upper <= true * (1 + resolution) + slack
    assert lower >= true * (1 - resolution) - slack


@st.composite
def _zero_padded(draw):
    d = draw(st.integers(1, 2))
    c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel, dilation, stride = draw(st.integers(1, 4)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    padding = draw(st.sampled_from(["valid", "same", 0, 1, 2])) if stride == 1 else draw(st.integers(0, 2))
    span = dilation * (kernel - 1)
    spatial = tuple(draw(st.integers(span + 1, span + 6)) for _ in range(d))
    layer = _CONVS[d](c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation,
                      bias=False, dtype=F64)  # fmt: skip
    return _drawn_weights(draw, layer), (c_in,) + spatial


@given(_zero_padded())
@settings(max_examples=60, deadline=None)
def test_zero_padded_convolution_is_bounded_above_by_the_circular_one_on_a_larger_grid(case):
    layer, shape = case
    true = _true_norm(layer, shape)
    bounds = fourier_bounds(riemsvd.linear_operator(layer, shape))
    assert bounds is not None and not bounds.exact and bounds.lower == 0.0
    assert bounds.upper >= true * (1 - _REF * math.prod(shape))


def test_zero_padded_bound_is_kept_where_it_is_the_tighter():
    """16 channels on 24×24 (9216 inputs): too large to write out; the subspace bound of a flat
    spectrum stays near ‖A‖_F, the circular convolution on 25×25 bounds it within a few percent."""
    torch.manual_seed(0)
    layer = nn.Conv2d(16, 16, 3, padding=1, bias=False, dtype=F64)
    op = riemsvd.linear_operator(layer, (16, 24, 24))
    bounds = riemsvd.norm_bounds(op, generator=torch.Generator().manual_seed(0))
    assert bounds.method == "fourier embedding" and bool(bounds.certified)
    assert float(bounds.upper) <= 1.05 * float(bounds.lower)


def _fft_norm(layer, spatial) -> float:
    """max over frequencies of σ₁ of the FFT of the kernel placed on the grid (Sedghi, Gupta and Long):
    an independent route to a circular convolution's norm, for sizes whose matrix is too large."""
    w = layer.weight.detach().double()
    placed = torch.zeros(w.shape[:2] + tuple(spatial), dtype=F64)
    (da, db), (n1, n2) = layer.dilation, spatial
    for a in range(w.shape[2]):
        for b in range(w.shape[3]):
            placed[:, :, (a * da) % n1, (b * db) % n2] += w[:, :, a, b]
    blocks = torch.fft.fft2(placed).permute(2, 3, 0, 1)
    return float(torch.linalg.svdvals(blocks).max())


@pytest.mark.parametrize("channels, size", [(32, 16), (8, 40)])
def test_larger_circular_convolution_against_the_fft_of_its_kernel(channels, size):
    torch.manual_seed(0)
    layer = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="circular", bias=False, dtype=F64)
    bounds = riemsvd.norm_bounds(riemsvd.linear_operator(layer, (channels, size, size)))
    true = _fft_norm(layer, (size, size))
    assert bounds.method == "fourier" and bool(bounds.certified)
    assert float(bounds.lower) <= true * (1 + 1e-13) and float(bounds.upper) >= true * (1 - 1e-13)
    assert float(bounds.upper) <= true * (1 + 1e-11)


class _Doubled(nn.Conv2d):
    def forward(self, x):
        return 2 * super().forward(x)


class _Nearly(nn.Conv2d):
    """Its own _conv_forward, forward inherited, a map 5e-5 off: the check of one product passed it,
    and the bound came out 5e-5 below its norm (a review); subclasses are refused."""

    def _conv_forward(self, x, weight, bias):
        return super()._conv_forward(x, weight * (1 + 5e-5), bias)


class _Scaled(nn.Module):
    def forward(self, w):
        return 3 * w


def _make(kind):
    layer = (_Doubled if kind == "subclass" else _Nearly if kind == "own conv" else nn.Conv2d)(
        2, 3, 3, padding=1, padding_mode="circular", bias=False, dtype=F64
    )
    if kind == "hook":
        layer.register_forward_hook(lambda module, args, out: out * (1 + 5e-5))
    if kind == "stride":
        layer.stride = (2, 2)
    if kind == "instance forward":  # replaced on the instance, not the class (a review)
        layer.forward = types.MethodType(lambda self, x: nn.Conv2d.forward(self, x) * (1 + 1e-5), layer)
    return layer


@pytest.mark.parametrize(
    "kind", ["subclass", "own conv", "hook", "global hook", "stride", "instance forward"]
)
def test_a_layer_that_is_not_the_circulant_is_not_bounded_from_its_frequencies(kind):
    torch.manual_seed(0)
    layer = _make(kind)
    shape = (2, 6, 6)
    handle = None
    if kind == "global hook":
        handle = nn.modules.module.register_module_forward_hook(lambda module, args, out: out * (1 + 5e-5))
    try:
        op = riemsvd.linear_operator(layer, shape)
        assert fourier_bounds(op) is None
        bounds = riemsvd.norm_bounds(op)  # the general bounds instead, for the layer as it is
        true = _true_norm(layer, shape)
    finally:
        if handle is not None:
            handle.remove()
    assert bounds.method != "fourier"
    assert float(bounds.lower) <= true * (1 + 1e-10) and float(bounds.upper) >= true * (1 - 1e-10)


@pytest.mark.parametrize("rows", [(1e155, 1e155), (1e200, 1.0), (1e300, 1e-300)])
def test_huge_and_mixed_weights_are_bounded_or_left_to_the_general_path(rows):
    """Weights near 1e155 overflowed ‖S‖_F and came back (0, inf) as certified (a review); mixed
    1e300 and 1e-300 raised from the eigensolver. Scaled by a power of two first, or refused."""
    layer = nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular", bias=False, dtype=F64)
    with torch.no_grad():
        w = torch.randn(layer.weight.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
        layer.weight.copy_(w * torch.tensor(rows, dtype=F64)[:, None, None, None])
    shape = (2, 5, 5)
    bounds = riemsvd.norm_bounds(riemsvd.linear_operator(layer, shape))
    true = _true_norm(layer, shape)
    assert bool(bounds.certified) and math.isfinite(float(bounds.upper))
    assert float(bounds.lower) <= true * (1 + 1e-10) and true * (1 - 1e-10) <= float(bounds.upper)
    assert float(bounds.upper) <= true * (1 + 1e-9)


def test_circular_subnormal_weights_are_bounded_outwards():
    """Bounds computed near 1 and scaled back into the subnormal range were rounded to nearest: 55 of
    100 uppers below ‖A‖₂, 45 lowers above it (a review). Compared after an exact scaling by 2^1014."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        layer = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular", bias=False, dtype=F64)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(layer.weight.shape, dtype=F64, generator=gen) * 1e-316)
        shape = (2, 5, 5)
        bounds = riemsvd.norm_bounds(riemsvd.linear_operator(layer, shape))
        true = float(torch.linalg.svdvals(torch.ldexp(explicit_matrix(layer, shape), torch.tensor(1014)))[0])
        assert bounds.method == "fourier"
        assert math.ldexp(float(bounds.upper), 1014) >= true * (1 - 1e-13)
        assert math.ldexp(float(bounds.lower), 1014) <= true * (1 + 1e-13)


def test_settings_given_as_ints_and_groups_as_blocks():
    """A stride or dilation set to an int crashed (a review); a depthwise layer's groups are bounded
    block by block."""
    torch.manual_seed(0)
    layer = nn.Conv2d(
        4, 4, 3, padding=2, dilation=2, groups=4, padding_mode="circular", bias=False, dtype=F64
    )
    layer.dilation, layer.stride = 2, 1
    shape = (4, 7, 6)
    bounds = riemsvd.norm_bounds(riemsvd.linear_operator(layer, shape))
    true = _true_norm(layer, shape)
    assert bounds.method == "fourier"
    assert float(bounds.lower) <= true * (1 + 1e-13) and true <= float(bounds.upper) <= true * (1 + 1e-11)


def test_a_parametrized_weight_is_the_one_bounded():
    """With a bias too: the bias-free copy of a parametrized layer raised (copy.copy pickles it, which
    parametrized modules refuse; a review)."""
    torch.manual_seed(0)
    layer = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular", dtype=F64)
    parametrize.register_parametrization(layer, "weight", _Scaled())
    shape = (2, 6, 6)
    bounds = riemsvd.norm_bounds(riemsvd.linear_operator(layer, shape))
    true = _true_norm(riemsvd.linear_operator(layer, shape).fn, shape)
    assert layer.bias is not None  # the layer keeps its bias
    assert bounds.method == "fourier"
    assert float(bounds.lower) <= true * (1 + 1e-13) and true <= float(bounds.upper) <= true * (1 + 1e-11)
