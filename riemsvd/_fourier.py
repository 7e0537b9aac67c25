"""The spectral norm of a convolution from its frequencies: exact for circular padding, an upper bound
for zero padding.

A stride-1 convolution whose padding wraps around (``padding_mode="circular"``, output the size of
its input N₁×…×N_d) is block circulant. The DFT over the grid turns it into one c_out×c_in matrix per
frequency ω, K̂(ω) = Σ_a W_a·exp(2πi·Σ_j ω_j s_aj/N_j), s_a the offset a tap reads at (a·dilation −
left padding); its singular values are those of all K̂(ω) together (Sedghi, Gupta and Long, ICLR 2019)
and ‖A‖₂ = max_ω ‖K̂(ω)‖₂. A real kernel has K̂(−ω) = conj K̂(ω), so half the frequencies suffice.

A zero-padded convolution (any stride) on an input of size H reads its input at H + max(left, right)
points at most, so it is the circular convolution on that larger grid (the input embedded with
zeros, which wrap onto zeros only) restricted to its outputs and subsampled by its stride: its norm
is at most the larger grid's max_ω ‖K̂(ω)‖₂ — a proven upper bound, not a tight one.

K̂ is formed in float64 with its rounding bounded (:func:`_symbol`), and every frequency's matrix is
certified at once by the Gram–Cholesky certificate (:func:`riemsvd._certificate.batch_norm_bounds`).
Before either is trusted, the symbol's product (by FFT) is checked against the layer's own on a
random input: a subclass with its own forward, a hook or a parametrization the weight does not show
is refused there, not bounded wrongly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from riemsvd._certificate import batch_norm_bounds
from riemsvd._linear import LinearMapOperator
from riemsvd._tolerance import gamma

__all__ = ["FourierBounds", "fourier_bounds"]

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_MODES = ("circular", "zeros")
_MAX_BYTES = 1 << 28  # the frequencies' real matrices, at most this many bytes in float64
_U = float(np.finfo(np.float64).eps) / 2
_TINY = float(np.finfo(np.float64).tiny)
# Error of numpy's float64 cos and sin, in units of the last place: glibc's are within 1; numpy's own
# SIMD routines are documented within 4
_TRIG_ULPS = 4


@dataclass(frozen=True)
class _Grid:
    """A convolution seen as a circular one: its dense kernel (c_out, c_in, k₁, …, k_d) in float64 on
    the host (groups written out as zero blocks), the grid N it is circular on, each tap's offset
    along each axis, and the stride-1 outputs its own outputs are (``kept``: a slice per axis)."""

    kernel: torch.Tensor
    grid: tuple[int, ...]
    offsets: tuple[np.ndarray, ...]
    kept: tuple[slice, ...]
    exact: bool  # circular padding: the map itself; zero padding: a restriction of it


@dataclass(frozen=True)
class FourierBounds:
    """``lower`` ≤ ‖A‖₂ ≤ ``upper`` (float64); ``lower`` is 0 where only the upper bound is proven
    (``exact`` False: zero padding), ``matvecs`` the products of the check."""

    lower: float
    upper: float
    exact: bool
    matvecs: int


def fourier_bounds(op) -> FourierBounds | None:
    """The bounds of a convolution from its frequencies (see the module), or None where ``op`` is not
    the operator of a Conv1d/2d/3d layer itself (:func:`riemsvd.linear_operator` of the layer) with
    circular or zero padding — or the layer's own product disagrees with the symbol's, or its
    frequencies' matrices would take more than 256 MiB."""
    spec = _grid(op)
    if spec is None:
        return None
    c_out, c_in = spec.kernel.shape[:2]
    freqs = math.prod(spec.grid[:-1]) * (spec.grid[-1] // 2 + 1)
    if 4 * c_out * c_in * freqs * 8 > _MAX_BYTES:
        return None
    real, imag, error = _symbol(spec)
    if not _same_map(op, spec, real, imag):
        return None
    # the bounds of 2^e·K̂ (a power of two: exact), its entries near 1, so that neither the Gram
    # matrices nor their rounding terms under- or overflow; e = 0 where that would round an entry
    blocks = torch.cat([torch.cat([real, -imag], -1), torch.cat([imag, real], -1)], -2)  # K̂ as a real map
    top = float(spec.kernel.abs().max())
    e = -math.frexp(top)[1] if top > 0 else 0
    scaled = torch.ldexp(blocks, torch.tensor(e))
    if not torch.equal(torch.ldexp(scaled, torch.tensor(-e)), blocks):  # an entry would round: as it is
        scaled, e = blocks, 0
    low, up = batch_norm_bounds(scaled)
    low, up = math.ldexp(low, -e), math.ldexp(up, -e)
    # the computed K̂ is within `error` of the exact one in ‖·‖₂ at every frequency (Weyl)
    lower = max(low - error, 0.0) * (1 - 2 * _U) if spec.exact else 0.0
    return FourierBounds(lower, (up + error) * (1 + 2 * _U), spec.exact, 1)


def _grid(op) -> _Grid | None:
    if not isinstance(op, LinearMapOperator) or op.scale is not None:
        return None
    layer = op.fn
    d = next((d for d, t in _CONVS.items() if isinstance(layer, t)), None)
    if d is None or type(layer).forward is not _CONVS[d].forward or layer.padding_mode not in _MODES:
        return None
    if layer._forward_hooks or layer._forward_pre_hooks or len(op.input_shape) != d + 1:
        return None
    spatial = tuple(op.input_shape[1:])
    sizes = tuple(layer.kernel_size)
    spans = [dil * (k - 1) for dil, k in zip(layer.dilation, sizes)]
    if layer.padding == "valid":
        pads = [(0, 0)] * d
    elif layer.padding == "same":  # torch's split: the smaller half before
        pads = [(t // 2, t - t // 2) for t in spans]
    else:
        pads = [(p, p) for p in layer.padding]
    # the stride-1 outputs along each axis: H + before + after − span of them
    outputs = [h + before + after - t for h, (before, after), t in zip(spatial, pads, spans)]
    circular = layer.padding_mode == "circular"
    if circular:  # exact only where the output is the input's size
        if any(s != 1 for s in layer.stride) or list(spatial) != outputs:
            return None
        grid = spatial
    else:
        # large enough that no tap wraps onto the input, and for every stride-1 output (those past
        # H + max(before, after) read padding only: zero rows)
        grid = tuple(max(h + max(pad), out) for h, pad, out in zip(spatial, pads, outputs))
    kept = tuple(slice(0, out, s) for out, s in zip(outputs, layer.stride))
    offsets = tuple(np.arange(k) * dil - pad[0] for k, dil, pad in zip(sizes, layer.dilation, pads))
    weight = layer.weight.detach().to("cpu", torch.float64)
    g = layer.groups
    out_g, in_g = weight.shape[0] // g, weight.shape[1]
    kernel = torch.zeros((weight.shape[0], in_g * g) + sizes, dtype=torch.float64)
    for j in range(g):
        kernel[j * out_g : (j + 1) * out_g, j * in_g : (j + 1) * in_g] = weight[j * out_g : (j + 1) * out_g]
    return _Grid(kernel, grid, offsets, kept, circular)


def _symbol(spec: _Grid) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(Re K̂, Im K̂, e): K̂(ω) for ω over half the grid (the last axis from 0 to N_d/2), each of shape
    (F, c_out, c_in), and e ≥ ‖K̂_computed(ω) − K̂(ω)‖₂ at every ω.

    The phase of tap a at ω is 2π·Σ_j r_j/N_j with r_j = ω_j·s_aj mod N_j reduced in integers: each
    quotient rounded once, d of them summed, times fl(2π), so the angle (below 2πd) is within
    2πd·γ_{d+2}, and cos and sin add _TRIG_ULPS·u each: τ in all. An entry Σ_a W_a·cos θ_a of T taps
    is then within (τ + γ_T(1 + τ))·Σ_a |W_a| of the exact one (Higham 3.5), the same for the
    imaginary part, so ‖ΔK̂‖₂ ≤ ‖ΔK̂‖_F ≤ √2·(τ + γ_T(1 + τ))·‖S‖_F with S_oi = Σ_a |W_oia|, plus
    what underflow may lose (_TINY per operation)."""
    d = len(spec.grid)
    axes = [np.arange(n) for n in spec.grid[:-1]] + [np.arange(spec.grid[-1] // 2 + 1)]
    phase = np.zeros([len(a) for a in axes] + [len(s) for s in spec.offsets])
    for j, (omega, shift, n) in enumerate(zip(axes, spec.offsets, spec.grid)):
        r = np.mod(np.multiply.outer(omega, shift), n) / n  # (F_j, k_j): exact integers, one rounding
        shape = [1] * (2 * d)
        shape[j], shape[d + j] = r.shape
        phase = phase + r.reshape(shape)
    theta = (2 * np.pi) * phase.reshape(-1, math.prod(phase.shape[d:]))  # (F, T)
    taps = theta.shape[1]
    flat = spec.kernel.reshape(spec.kernel.shape[0], spec.kernel.shape[1], taps)
    real = torch.einsum("oit,ft->foi", flat, torch.from_numpy(np.cos(theta)))
    imag = torch.einsum("oit,ft->foi", flat, torch.from_numpy(np.sin(theta)))
    tau = 2 * np.pi * d * gamma(d + 2) + _TRIG_ULPS * _U
    s = flat.abs().sum(-1)
    error = math.sqrt(2) * (tau + gamma(taps) * (1 + tau)) * float(torch.linalg.vector_norm(s))
    underflow = 2 * taps * math.sqrt(2 * s.numel()) * _TINY  # each product and sum may lose _TINY
    return real.contiguous(), imag.contiguous(), (error + underflow) * (1 + gamma(taps + s.numel() + 4))


def _same_map(op: LinearMapOperator, spec: _Grid, real: torch.Tensor, imag: torch.Tensor) -> bool:
    """Whether the layer's own product of one random input (one product, counted) is the symbol's —
    the input embedded in the grid, transformed, multiplied by K̂ at each frequency, transformed
    back, its outputs kept — to 1e-4 (float32's rounding is far less, a different map off by O(1))."""
    d = len(spec.grid)
    x = torch.randn(op.shape[1], 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    own = op.matmat(x.to(device=op.device, dtype=op.dtype)).to("cpu", torch.float64).reshape(-1)
    image = x.reshape(op.input_shape)
    dims = tuple(range(1, d + 1))
    spectrum = torch.fft.rfftn(image, s=spec.grid, dim=dims).reshape(image.shape[0], -1)
    k = torch.complex(real, imag)  # (F, c_out, c_in)
    product = torch.einsum("foi,if->of", k, spectrum)
    product = product.reshape((k.shape[1],) + tuple(spec.grid[:-1]) + (spec.grid[-1] // 2 + 1,))
    y = torch.fft.irfftn(product, s=spec.grid, dim=dims)[(slice(None),) + spec.kept].reshape(-1)
    # Σ|W|·‖x‖ ≥ ‖A‖₂‖x‖ sizes the FFT's rounding where the output itself is (nearly) zero
    floor = 1e-10 * float(spec.kernel.abs().sum()) * float(x.norm())
    return y.shape == own.shape and float((y - own).norm()) <= 1e-4 * float(own.norm()) + floor
