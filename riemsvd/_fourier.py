"""The spectral norm of a convolution from its frequencies: exact for circular padding, an upper bound
for zero padding.

A stride-1 convolution whose padding wraps around (``padding_mode="circular"``, output the size of
its input N₁×…×N_d) is block circulant. The DFT over the grid turns it into one c_out×c_in matrix per
frequency ω, K̂(ω) = Σ_a W_a·exp(2πi·Σ_j ω_j s_aj/N_j), s_a the offset a tap reads at (a·dilation −
padding before); its singular values are those of all K̂(ω) together (Sedghi, Gupta and Long, ICLR
2019) and ‖A‖₂ = max_ω ‖K̂(ω)‖₂. A real kernel has K̂(−ω) = conj K̂(ω), so half the frequencies
suffice, and with groups each K̂(ω) is block diagonal, one block per group.

A zero-padded convolution (any stride) on an input of size H padded by p₋ before and p₊ after reads
its input at indices −p₋ … H + p₊ − 1: on a torus of N′ ≥ H + max(p₋, p₊) points (and at least as many
as its stride-1 outputs), with the input embedded and zeros elsewhere, no tap wraps onto the input,
so the layer is that torus's circular convolution restricted to its outputs and subsampled by its
stride: its norm is at most the torus's max_ω ‖K̂(ω)‖₂ — a proven upper bound, not a tight one.

K̂ is formed in float64 with its rounding bounded (:func:`_symbol`), and every frequency's block is
certified at once by the Gram–Cholesky certificate (:func:`riemsvd._certificate.batch_norm_bounds`).
The bound is of the map the kernel and the layer's settings describe, computed by torch's own
convolution: only a Conv1d/2d/3d itself (or one whose weight is parametrized) with no forward hook,
its own or global, takes this path; a subclass, which may compute another map, does not. Their one
product of a random input is then checked against the symbol's, which catches a misreading of the
settings (a different map is off by O(1)), not a map that differs slightly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.utils import parametrize

from riemsvd._certificate import batch_norm_bounds, ldexp, ldexp_outward
from riemsvd._linear import _CONV, LinearMapOperator, plain_layer
from riemsvd._tolerance import TINY, UNIT_ROUNDOFF, gamma

__all__ = ["FourierBounds", "fourier_bounds"]

_MAX_BYTES = 1 << 28  # the frequencies' real blocks and phases, at most this many bytes in float64
# Error of numpy's float64 cos and sin, in units of the last place: glibc's are within 1; numpy's own
# SIMD routines are documented within 4
_TRIG_ULPS = 4
_U = UNIT_ROUNDOFF


@dataclass(frozen=True)
class _Grid:
    """A convolution seen as a circular one: its kernel (g, c_out/g, c_in/g, k₁, …, k_d) per group in
    float64 on the host, the grid N it is circular on, each tap's offset along each axis, and the
    stride-1 outputs its own outputs are (``kept``: a slice per axis)."""

    kernel: torch.Tensor
    grid: tuple[int, ...]
    offsets: tuple[np.ndarray, ...]
    kept: tuple[slice, ...]
    exact: bool  # circular padding: the map itself; zero padding: a restriction of it


@dataclass(frozen=True)
class FourierBounds:
    """``lower`` ≤ ‖A‖₂ ≤ ``upper`` (float64); ``lower`` is 0 where only the upper bound is proven
    (``exact`` False: zero padding)."""

    lower: float
    upper: float
    exact: bool


def fourier_bounds(op, zero_padded: bool = True) -> FourierBounds | None:
    """The bounds of a convolution from its frequencies (see the module), or None where ``op`` is not
    the operator of a Conv1d/2d/3d layer itself (:func:`riemsvd.linear_operator` of the layer) with
    circular padding — or zero padding, if ``zero_padded`` — or its product disagrees with the
    symbol's, its frequencies would take more than 256 MiB, or a bound overflows."""
    spec = _grid(op, zero_padded)
    if spec is None:
        return None
    groups, c_out, c_in = spec.kernel.shape[:3]
    freqs = math.prod(spec.grid[:-1]) * (spec.grid[-1] // 2 + 1)
    taps = math.prod(spec.kernel.shape[3:])
    if 8 * freqs * (4 * groups * c_out * c_in + 4 * taps) > _MAX_BYTES:
        return None
    top = float(spec.kernel.abs().max())
    if top == 0.0:  # the zero map (a kernel that is zero, and nothing else computed)
        return (
            FourierBounds(0.0, 0.0, spec.exact)
            if _same_map(op, spec, *_symbol(spec, spec.kernel)[:2])
            else None
        )
    # the bounds of 2^e·A (a power of two, exact where no entry is subnormal before or after), its
    # entries near 1: neither the symbol nor the Gram matrices under- or overflow
    e = -math.frexp(top)[1]
    scaled = ldexp(spec.kernel, e)
    if not torch.equal(ldexp(scaled, -e), spec.kernel):
        scaled, e = spec.kernel, 0
    real, imag, error = _symbol(spec, scaled)
    if not _same_map(op, spec, ldexp(real, -e), ldexp(imag, -e)):
        return None
    blocks = torch.cat([torch.cat([real, -imag], -1), torch.cat([imag, real], -1)], -2)  # K̂ as real maps
    low, up = batch_norm_bounds(blocks.reshape((-1,) + blocks.shape[-2:]))
    if not (math.isfinite(up) and math.isfinite(error)):
        return None
    # the computed K̂ is within `error` of the exact one in ‖·‖₂ at every frequency (Weyl)
    lower = max(low - error, 0.0) * (1 - 2 * _U) if spec.exact else 0.0
    bounds = torch.tensor([lower, (up + error) * (1 + 2 * _U)], dtype=torch.float64)
    return FourierBounds(
        float(ldexp_outward(bounds[0], -e, up=False)),
        float(ldexp_outward(bounds[1], -e, up=True)),
        spec.exact,
    )


def _conv_class(layer) -> int | None:
    """d of a Conv1d/2d/3d of torch's own class (or the class a parametrized weight makes) that
    :func:`riemsvd._linear.plain_layer` accepts; None for any other module, a subclass included."""
    if not plain_layer(layer):
        return None
    cls = type(layer)
    return _CONV.get(cls.__bases__[0] if parametrize.is_parametrized(layer) else cls)


def _per_axis(value, d: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * d


def _grid(op, zero_padded: bool) -> _Grid | None:
    if not isinstance(op, LinearMapOperator) or op.scale is not None:
        return None
    layer = op.fn
    d = _conv_class(layer)
    modes = ("circular", "zeros") if zero_padded else ("circular",)
    if d is None or layer.padding_mode not in modes or len(op.input_shape) != d + 1:
        return None
    weight = layer.weight.detach()
    if not weight.is_floating_point():  # complex weights: a map this module does not describe
        return None
    spatial = tuple(op.input_shape[1:])
    sizes, stride, dilation = (_per_axis(v, d) for v in (layer.kernel_size, layer.stride, layer.dilation))
    spans = [dil * (k - 1) for dil, k in zip(dilation, sizes)]
    if layer.padding_mode == "circular":  # what forward pads by, last axis first
        rev = layer._reversed_padding_repeated_twice
        pads = [(rev[2 * (d - 1 - j)], rev[2 * (d - 1 - j) + 1]) for j in range(d)]
    elif layer.padding == "valid":
        pads = [(0, 0)] * d
    elif layer.padding == "same":  # torch's split: the smaller half before
        pads = [(t // 2, t - t // 2) for t in spans]
    else:
        pads = [(p, p) for p in _per_axis(layer.padding, d)]
    # the stride-1 outputs along each axis: H + before + after − span of them
    outputs = [h + before + after - t for h, (before, after), t in zip(spatial, pads, spans)]
    exact = layer.padding_mode == "circular"
    if exact:  # the circulant itself only where the output is the input's size
        if any(s != 1 for s in stride) or list(spatial) != outputs:
            return None
        grid = spatial
    else:
        grid = tuple(max(h + max(pad), out) for h, pad, out in zip(spatial, pads, outputs))
    kept = tuple(slice(0, out, s) for out, s in zip(outputs, stride))
    offsets = tuple(np.arange(k) * dil - pad[0] for k, dil, pad in zip(sizes, dilation, pads))
    g = layer.groups
    kernel = weight.to("cpu", torch.float64).reshape((g, weight.shape[0] // g) + tuple(weight.shape[1:]))
    return _Grid(kernel, grid, offsets, kept, exact)


def _symbol(spec: _Grid, kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(Re K̂, Im K̂, e) for ``kernel`` (the layer's, or it times a power of two) on ``spec``'s grid:
    K̂(ω) for ω over half the grid (the last axis from 0 to N_d/2), each of shape (F, g, c_out/g,
    c_in/g), one block per group, and e ≥ ‖K̂_computed(ω) − K̂(ω)‖₂ at every ω.

    The phase of tap a at ω is 2π·Σ_j r_j/N_j with r_j = ω_j·s_aj mod N_j reduced in integers: each
    quotient rounded once, d of them summed, times fl(2π), so the angle (below 2πd) is within
    2πd·γ_{d+2}, and cos and sin add _TRIG_ULPS·u each: τ in all. An entry Σ_a W_a·cos θ_a of T taps
    is then within (τ + γ_T(1 + τ))·Σ_a |W_a| of the exact one (Higham 3.5), the same for the
    imaginary part, so ‖ΔK̂‖₂ ≤ ‖ΔK̂‖_F ≤ √2·(τ + γ_T(1 + τ))·‖S‖_F with S_oi = Σ_a |W_oia|, plus
    what underflow may lose (TINY per operation)."""
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
    flat = kernel.reshape(kernel.shape[:3] + (taps,))
    real = torch.einsum("goit,ft->fgoi", flat, torch.from_numpy(np.cos(theta)))
    imag = torch.einsum("goit,ft->fgoi", flat, torch.from_numpy(np.sin(theta)))
    tau = 2 * np.pi * d * gamma(d + 2) + _TRIG_ULPS * _U
    s = flat.abs().sum(-1)
    top = float(s.max())  # ‖S‖_F through S/max S: no overflow
    norm = top * float(torch.linalg.vector_norm(s / top)) if top > 0 else 0.0
    error = math.sqrt(2) * (tau + gamma(taps) * (1 + tau)) * norm
    underflow = 2 * taps * math.sqrt(2 * s.numel()) * TINY  # each product and sum may lose TINY
    return real.contiguous(), imag.contiguous(), (error + underflow) * (1 + gamma(taps + s.numel() + 4))


def _same_map(op: LinearMapOperator, spec: _Grid, real: torch.Tensor, imag: torch.Tensor) -> bool:
    """Whether the layer's own product of one random input (one product, counted) is the symbol's —
    the input embedded in the grid, transformed, multiplied by K̂ at each frequency, transformed
    back, its outputs kept — to 1e-4: float32's rounding is far below that, and a misread setting
    (padding, dilation, an offset) is off by O(1). A check of this module's reading of the layer, not
    a proof that the layer computes that map (see the module)."""
    d = len(spec.grid)
    x = torch.randn(op.shape[1], 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    own = op.matmat(x.to(device=op.device, dtype=op.dtype)).to("cpu", torch.float64).reshape(-1)
    image = x.reshape(op.input_shape)
    dims = tuple(range(1, d + 1))
    groups, c_out, c_in = real.shape[1:]
    spectrum = torch.fft.rfftn(image, s=spec.grid, dim=dims).reshape(groups, c_in, -1)
    product = torch.einsum("fgoi,gif->gof", torch.complex(real, imag), spectrum)
    product = product.reshape((groups * c_out,) + tuple(spec.grid[:-1]) + (spec.grid[-1] // 2 + 1,))
    y = torch.fft.irfftn(product, s=spec.grid, dim=dims)[(slice(None),) + spec.kept].reshape(-1)
    # Σ|W|·‖x‖ ≥ ‖A‖₂‖x‖ sizes the FFT's rounding where the output itself is (nearly) zero
    floor = 1e-10 * float(spec.kernel.abs().sum()) * float(x.norm())
    return y.shape == own.shape and float((y - own).norm()) <= 1e-4 * float(own.norm()) + floor
