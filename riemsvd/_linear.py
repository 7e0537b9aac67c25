"""Any linear map on tensors — a bias-free convolution, a Linear layer, a function — as an operator.

The columns of a block X are reshaped into a batch of inputs, the map is applied, the outputs are
flattened back into columns; the adjoint is a transposed convolution, a given function, or a VJP.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module
from torch.nn.modules.conv import _ConvNd

from riemsvd._backend import no_autocast
from riemsvd._operator import Operator
from riemsvd._tolerance import HALF, TINY, gamma
from riemsvd._validate import check_layer_input, check_map, probe_map

__all__ = ["LinearMapOperator", "linear_operator"]

_CONV: dict[type[_ConvNd], int] = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_CONV_T: dict[type[_ConvNd], int] = {nn.ConvTranspose1d: 1, nn.ConvTranspose2d: 2, nn.ConvTranspose3d: 3}
_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _check_linear(fn, zero_image: torch.Tensor, input_shape, dtype, device, name: str = "fn") -> None:
    """A ValueError where ``fn`` is visibly not linear: a nonzero image of 0 (affine), or
    fn(x + 2y) − fn(x) − 2 fn(y) or fn(−3x) + 3 fn(x) above 1% of the outputs (3% for the second) on
    two random inputs (ReLU, tanh, ...). A check, not a proof: a map that is linear on these inputs,
    or nearly so, passes."""
    if not dtype.is_floating_point:
        return
    scale = float(zero_image.abs().max()) if zero_image.numel() else 0.0
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn((1,) + input_shape, generator=g, dtype=dtype).to(device) for _ in range(2))
    with torch.no_grad():
        fx, fy, fxy, pair, fneg = fn(x), fn(y), fn(x + 2 * y), fn(torch.cat([x, y])), fn(-3 * x)
    size = float(fx.abs().max() + 2 * fy.abs().max())
    # a batch of two, item by item: a map that ignored the batch size passed the probe of one and
    # crashed inside the solver with blocks of 4, and one that mixed the items was reported as a tol
    # too tight for rounding (a new user's trial)
    if not isinstance(pair, torch.Tensor) or pair.shape != (2,) + tuple(fx.shape[1:]):
        got = tuple(pair.shape) if isinstance(pair, torch.Tensor) else type(pair).__name__
        raise ValueError(
            f"`{name}` must return a tensor of shape (b, *output_shape) for an input (b, *input_shape): "
            f"on a batch of 2 it returned {got}, where one input gave {tuple(fx.shape)}."
        )
    mixed = float((pair - torch.cat([fx, fy])).abs().max())
    if mixed > 1e-2 * size:
        raise ValueError(
            f"`{name}` must map each item of a batch (b, *input_shape) on its own: on a batch of 2 its "
            f"outputs differ from those of each item alone by {mixed:.3g} against {size:.3g}."
        )
    defect = float((fxy - fx - 2 * fy).abs().max())
    # fn(−3x) = −3 fn(x) as well: a map linear on the positive cone (ReLU and its kin, |x|) passes the
    # sum wherever x and y share their signs, as on every entry of a (3,) input, and one linear near 0
    # (Hardtanh) where the inputs stay within its linear range (ReLU, LeakyReLU, ReLU6 on (3,),
    # Hardtanh on (2,)); norm_bounds then certified the norm of ReLU (a new user's trial). Thrice the
    # allowance: the terms are three times the size.
    odd = float((fneg + 3 * fx).abs().max())
    # Gross defects only: an activation gives one of order `size`; rounding, even where the output is
    # a difference of much larger terms (a residual branch x − f(x)), stays far below 1e-2·size.
    allowance = 1e-2 * size
    if scale > 0 or defect > allowance or odd > 3 * allowance:
        raise ValueError(
            f"`{name}` is not linear: "
            + (f"it maps 0 to a nonzero output (max {scale:.3g}); " if scale > 0 else "")
            + (
                f"fn(x + 2y) − fn(x) − 2 fn(y) is {defect:.3g} against {size:.3g}; "
                if defect > allowance
                else ""
            )
            + (f"fn(−3x) + 3 fn(x) is {odd:.3g} against {3 * size:.3g}; " if odd > 3 * allowance else "")
            + "riemsvd needs a linear map (a bias-free layer, or no activation in between)."
        )


def bias_free(layer: nn.Module) -> nn.Module:
    """A shallow copy of a layer that shares its weight but has no bias (the layer is left as it is):
    the linear part of an affine layer, whose norm is the layer's Lipschitz constant. A Sequential's
    layers each (the linear part of a chain of affine layers is the chain of theirs: two biased
    convolutions in a row had been refused as not linear; a new user's trial)."""
    if type(layer) is nn.Sequential:
        parts = [bias_free(part) for part in layer]
        return layer if all(a is b for a, b in zip(parts, layer)) else nn.Sequential(*parts)
    if getattr(layer, "bias", None) is None:
        return layer
    # a copy of the instance's attributes, not copy.copy: a parametrized module refuses to be pickled,
    # which copy.copy asks of it (a review: linear_operator of a parametrized Conv with a bias raised)
    twin = object.__new__(type(layer))
    object.__setattr__(twin, "__dict__", dict(layer.__dict__))
    object.__setattr__(twin, "_parameters", {**layer._parameters, "bias": None})
    return twin


def check_steady(module: nn.Module, name: str) -> None:
    """A ValueError where a parametrized tensor of ``module`` (or of a submodule) in training mode
    changes from one read to the next, as torch's spectral_norm's weight does (a power step at each
    read): the products would each see another matrix. A conv normalized by torch's, left in
    training mode, went from norm 16.0 to 1.75 over the products of its own operator_norm, unsaid
    (a new user's trial). The reads' side effects are undone (the module's buffers restored)."""
    from riemsvd.nn._leading import PairNormalization  # riemsvd.nn imports this module

    for sub in module.modules():
        chains = getattr(sub, "parametrizations", None)
        if not sub.training or chains is None:
            continue
        # riemsvd's own refreshes its pair at each training read, though two reads in a row can agree
        # to the bit (a certified bound then missed the layer's norm, 1e-7 off; a new user's trial)
        ours = {key for key in chains if any(isinstance(p, PairNormalization) for p in chains[key])}
        saved = [(b, b.clone()) for b in sub.buffers()]
        try:
            with torch.no_grad():
                changes = [
                    key for key in chains if key in ours or _moved(getattr(sub, key), getattr(sub, key))
                ]
        finally:
            with torch.no_grad():
                for buffer, before in saved:
                    buffer.copy_(before)
        if changes:
            raise ValueError(
                f"`{name}` is in training mode and its parametrized `{changes[0]}` changes at each read "
                "(a spectral norm's power step, torch's or riemsvd's, does): each product would apply "
                f"another matrix. Call `{name}.eval()` first (and `.train()` after)."
            )


def _moved(first: torch.Tensor, second: torch.Tensor) -> bool:
    """Whether two reads of a tensor differ at all (NaN read twice is the same read). In their last
    bits too: riemsvd's own spectral_norm of a float32 conv, left in training mode, refreshes its pair
    at each read, by about 1e-7 of σ; with 100 roundings allowed its products each saw another
    matrix, and a certified norm_bounds missed the layer's norm by up to 2e-7 on 16 of 20 seeds (a
    new user's trial; it is refused by its type now, above). A parametrization that does not change
    reads the same to the bit."""
    if first.dtype.is_floating_point:
        return bool(((first != second) & ~(first.isnan() & second.isnan())).any())
    return not torch.equal(first, second)


def _in_eval_mode(module: nn.Module):
    """``module``'s map with it and its submodules in eval mode, their modes restored after each call:
    in training mode a forward can draw (dropout, which had a conv followed by one refused as mapping
    a batch's items together) or change the module (batch norm's running statistics); a
    parametrization that changes at each read is refused before (:func:`check_steady`)."""

    def apply(x):
        modes = [(m, m.training) for m in module.modules()]
        module.train(False)
        try:
            return module(x)
        finally:
            for m, mode in modes:
                m.training = mode

    apply._riemsvd_module = module  # type: ignore[attr-defined]  # for the float64 copy (LinearMapOperator)
    return apply


class LinearMapOperator(Operator):
    """A linear map x ↦ fn(x) on tensors of ``input_shape``, as the matrix (∏ output shape, ∏ input_shape).

    Columns are flattened in C order (``x.reshape(-1)``). Products run under ``torch.no_grad``.

    Attributes
    ----------
    input_shape, output_shape : torch.Size
        The shapes of one input and one output, without the batch dimension.
    adjoint_kind : str
        How Aᵀ is applied: ``"conv_transpose"``, ``"conv"`` (for a ConvTranspose layer), ``"linear"``,
        ``"given"`` or ``"vjp"``.
    """

    def __init__(
        self,
        fn,
        input_shape,
        output_shape,
        dtype,
        device,
        adjoint,
        adjoint_kind,
        squared=None,
        layer=None,
        weight: Callable[[], torch.Tensor] | None = None,
    ) -> None:
        m, n = math.prod(output_shape), math.prod(input_shape)
        super().__init__((m, n), (), dtype, device)
        self.fn = fn
        self.input_shape = torch.Size(input_shape)
        self.output_shape = torch.Size(output_shape)
        self.adjoint = adjoint
        self.adjoint_kind = adjoint_kind
        self._squared = squared  # the same layer with its weight squared entrywise, for ‖A‖_F
        self._layer = layer  # a Conv/ConvTranspose/Linear layer, which can also run in float64
        self._weight = weight  # the weight its products use (a module's through its parametrization)
        self._vjps: dict[int, Callable] = {}

    def adjoint_source(self) -> str | None:
        return "`linear_operator(..., adjoint=...)`" if self.adjoint_kind == "given" else None

    def map_source(self) -> str | None:
        # a layer's own products (Conv, Linear: self._layer) are linear by construction
        return "the function given to `linear_operator`" if self._layer is None else None

    def _matmat(self, x):
        b = x.shape[-1]
        if b == 0:  # no columns: fn would see an empty batch, which some layers cannot reshape
            return x.new_zeros(self.shape[0], 0)
        with torch.no_grad():
            y = self.fn(x.mT.reshape((b,) + self.input_shape))
        return y.reshape(b, -1).mT.contiguous()

    def _rmatmat(self, y):
        b = y.shape[-1]
        if b == 0:
            return y.new_zeros(self.shape[1], 0)
        ys = y.mT.reshape((b,) + self.output_shape)
        with torch.no_grad():
            x = self.adjoint(ys) if self.adjoint is not None else self._vjp(b)(ys)[0]
        return x.reshape(b, -1).mT.contiguous()

    def _vjp(self, b: int):
        # The VJP of a linear map at any point is its adjoint; one graph per block width, reused.
        # Autograd's: torch.func.vjp's first call through a circular padding imported torch._dynamo,
        # 0.9 s of a first operator_norm that then takes 10 ms (a new user's trial).
        if b not in self._vjps:
            if torch.is_inference_mode_enabled():  # where no graph can be recorded
                raise RuntimeError(
                    "riemsvd applies Aᵀ as the VJP of `fn`, which autograd cannot record under "
                    "torch.inference_mode(): call it under torch.no_grad() instead, or pass the "
                    "transpose as `linear_operator(fn, input_shape, adjoint=...)`."
                )
            if not self._vjps and self._layer is None:  # a Conv or Linear layer's forward is torch's
                self._check_differentiable()
            x0 = torch.zeros((b,) + self.input_shape, dtype=self.dtype, device=self.device)
            x0.requires_grad_()
            with torch.enable_grad():
                y0 = self.fn(x0)
            if y0.requires_grad:
                self._vjps[b] = functools.partial(torch.autograd.grad, y0, x0, retain_graph=True)
            else:  # a map that does not read its input: the zero map, whose adjoint is zero too
                self._vjps[b] = lambda ys, x0=x0: (torch.zeros_like(x0),)
        return self._vjps[b]

    def _check_differentiable(self) -> None:
        """ValueError where fn's output does not reach its input through autograd (a forward under
        ``torch.no_grad``, a ``detach``, a trip through numpy): its VJP, Aᵀ here, would be zero, and the
        solve ended unconverged with a warning that blamed rounding. One product and its VJP, once,
        from a fixed seed (the global RNG is not drawn from); Aᵀr for a random r is 0 only where A is."""
        gen = torch.Generator(self.device).manual_seed(0)
        x = torch.randn((1,) + self.input_shape, dtype=self.dtype, device=self.device, generator=gen)
        with torch.enable_grad():
            x.requires_grad_()
            y = self.fn(x)
            r = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=gen)
            g = torch.autograd.grad(y, x, r, allow_unused=True)[0] if y.requires_grad else None
        if (g is None or not bool(g.ne(0).any())) and bool(y.detach().ne(0).any()):
            raise ValueError(
                "`fn` returned an output that autograd cannot trace back to its input (does it run "
                "under torch.no_grad(), detach, or go through numpy?); riemsvd applies Aᵀ as the VJP "
                "of `fn`. Let gradients flow through `fn`, or pass its transpose as "
                "`linear_operator(fn, input_shape, adjoint=...)`."
            )

    def float64(self, max_bytes: float = math.inf) -> LinearMapOperator | None:
        """The same map in float64 (the layer's weight in float64), for products whose rounding must
        be small; for another module, :meth:`_float64_copy`. None for a function, whose dtype is its
        own."""
        layer = self._layer
        if layer is None:
            return self._float64_copy(max_bytes)
        w = layer.weight.detach().double()
        if not isinstance(layer, nn.Linear):
            return conv_operator(layer, w, self.input_shape, self.output_shape)
        squared = w.square()
        return LinearMapOperator(
            lambda x: x @ w.mT,
            self.input_shape,
            self.output_shape,
            torch.float64,
            self.device,
            lambda y: y @ w,
            "linear",
            lambda x: x @ squared.mT,
            layer,
            lambda: w,
        )

    def _float64_copy(self, max_bytes: float) -> LinearMapOperator | None:
        """A float64 copy of a float32 module whose adjoint is its VJP (a Conv with circular, reflect or
        replicate padding: norm_bounds 4e-4 above ‖A‖₂ with float32 products, 2e-7 with these), where
        its tensors take at most ``max_bytes`` in float64 and the copy is seen to be the same map: one
        product in float64 and within 1e-4 of the module's own (whose float32 rounding is far less; a
        wrong map is off by O(1)), and its VJP the adjoint of that product. None otherwise:
        ``.double()`` reaches parameters and buffers only, not a tensor held as a plain attribute or a
        closure over the original, nor a forward that casts."""
        # a module in training mode runs through _in_eval_mode's wrapper: its copy runs as it does
        # (a float32 Sequential had kept float32 margins, upper/‖A‖₂ − 1 = 3.1e-4; a new user's trial)
        module = getattr(self.fn, "_riemsvd_module", self.fn)
        if not isinstance(module, nn.Module) or self.dtype != torch.float32 or self.adjoint_kind != "vjp":
            return None  # a given adjoint is the user's, in the user's dtype
        if 8 * sum(t.numel() for t in (*module.parameters(), *module.buffers())) > max_bytes:
            return None
        g = torch.Generator().manual_seed(0)
        m, n = self.shape
        x, y = (torch.randn(size, 1, generator=g, dtype=torch.float64).to(self.device) for size in (n, m))
        try:
            double = copy.deepcopy(module).double()
            twin = LinearMapOperator(
                double if module is self.fn else _in_eval_mode(double), self.input_shape, self.output_shape,
                torch.float64, self.device, None, "vjp",
            )  # fmt: skip
            ax, aty = twin._matmat(x), twin._rmatmat(y)
            own = self._matmat(x.float()).double()
        except (RuntimeError, TypeError):  # the copy mixes float64 with float32 tensors it could not reach
            return None
        if ax.dtype != torch.float64 or aty.dtype != torch.float64:
            return None
        size = float(ax.norm() * y.norm() + x.norm() * aty.norm())
        if (
            float((ax - own).norm()) > 1e-4 * float(ax.norm())
            or abs(float(y.mT @ ax - aty.mT @ x)) > 1e-10 * size
        ):
            return None
        return twin

    def entry_magnitude(self) -> torch.Tensor | None:
        """max |a_ij| of a Conv or Linear layer's matrix, whose entries are its weights (zero padding:
        each entry one weight or zero), as a float64 scalar; for a Conv with another padding, whose
        entries may sum a few weights, its largest weight, the scale of its entries; None for another
        map."""
        if self._weight is None:
            return None
        w = self._weight().detach()
        return w.abs().max().to("cpu", torch.float64) if w.numel() else torch.zeros((), dtype=torch.float64)

    def frobenius_sq(self) -> torch.Tensor | None:
        """‖A‖_F² in float64 (shape ()), rounded up by γ over its terms and by what underflow may lose,
        or None if not known, or where weights of magnitude beyond 2^±500 would under- or overflow
        their squares (weights of 1e-160 lost them to underflow; 1e155 gave inf, then NaN bounds).

        Every entry of a convolution's (or Linear's) matrix is one weight entry or zero, so the
        entrywise square of the matrix is the same layer with the weight squared, and ‖A‖_F² is the
        sum of that layer's output on an all-ones input (one forward in float64)."""
        magnitude = self.entry_magnitude()
        if self._squared is None or magnitude is None:
            return None
        if float(magnitude) == 0:  # the zero map
            return torch.zeros((), dtype=torch.float64)
        if not 2.0**-500 <= float(magnitude) <= 2.0**500:
            return None
        ones = torch.ones((1,) + self.input_shape, dtype=torch.float64, device=self.device)
        with torch.no_grad():
            total = float(self._squared(ones).sum())
        m, n = self.shape
        terms = m * n  # γ over the terms, and TINY per square and sum that underflows
        return torch.tensor(total * (1 + gamma(terms)) + 2 * terms * TINY, dtype=torch.float64)


def _conv_adjoints(weight, spec, input_shape, output_shape):
    """(adjoint, kind, squared) for a zero-padded convolution; adjoint None when the transposed
    convolution cannot restore the shape (then the VJP is used). ``weight()`` is read at each call, so
    an operator follows in-place updates of the layer; ``spec`` is (d, transposed, stride, padding,
    dilation, groups, output_padding)."""
    d, transposed, stride, padding, dilation, groups, out_pad = spec
    if not transposed:

        def squared(x):
            return _CONV_FN[d](x, weight().double().square(), None, stride, padding, dilation, groups)

        if isinstance(padding, str):
            return None, "vjp", squared
        extra = tuple(
            input_shape[1 + i]
            - ((output_shape[1 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel - 1) + 1)
            for i, kernel in enumerate(weight().shape[2:])
        )
        if not all(0 <= e < max(stride[i], dilation[i]) for i, e in enumerate(extra)):
            return None, "vjp", squared

        def adjoint(y):
            return _CONV_T_FN[d](y, weight(), None, stride, padding, extra, groups, dilation)

        return adjoint, "conv_transpose", squared

    def squared(x):
        return _CONV_T_FN[d](x, weight().double().square(), None, stride, padding, out_pad, groups, dilation)

    def adjoint(y):
        return _CONV_FN[d](y, weight(), None, stride, padding, dilation, groups)

    w = weight()
    probe = adjoint(torch.zeros((1,) + tuple(output_shape), dtype=w.dtype, device=w.device))
    if tuple(probe.shape[1:]) != tuple(input_shape):
        return None, "vjp", squared
    return adjoint, "conv", squared


def _conv_spec(layer):
    """(d, transposed, stride, padding, dilation, groups, output_padding) of a Conv/ConvTranspose layer."""
    transposed = isinstance(layer, tuple(_CONV_T))
    d = conv_dim(layer)
    out_pad = layer.output_padding if transposed else 0
    return d, transposed, layer.stride, layer.padding, layer.dilation, layer.groups, out_pad


def plain_layer(layer) -> bool:
    """A Linear or Conv/ConvTranspose layer whose forward is torch's own — its class does not
    override ``forward`` or ``_conv_forward`` (a parametrized weight's class does not), nor does the
    instance — with no forward hooks, its own or global: one whose map its weight and settings set.
    A pre-hook marked ``observes_only`` (riemsvd.nn.spectral_norm's check of the input's shape,
    which changes nothing) does not count: it had left a convolution normalized with ``input_shape``
    without a bound by ``norm_bounds`` (a new user's trial)."""
    bases: tuple[type[nn.Module], ...] = (nn.Linear, *_CONV, *_CONV_T)
    base = next((b for b in bases if isinstance(layer, b)), None)
    if base is None or "forward" in vars(layer) or "_conv_forward" in vars(layer):
        return False
    cls = type(layer)
    if cls.forward is not base.forward or getattr(cls, "_conv_forward", None) is not getattr(
        base, "_conv_forward", None
    ):
        return False
    return not (
        layer._forward_hooks
        or any(not getattr(hook, "observes_only", False) for hook in layer._forward_pre_hooks.values())
        or _module._global_forward_hooks
        or _module._global_forward_pre_hooks
    )


def conv_dim(layer) -> int | None:
    """d of a Conv or ConvTranspose layer (1d/2d/3d), None for another module."""
    return next((d for t, d in {**_CONV, **_CONV_T}.items() if isinstance(layer, t)), None)


def is_conv(layer) -> bool:
    """A Conv or ConvTranspose layer (1d/2d/3d) with zero padding: one the transposed-convolution
    adjoint and the squared-weight ‖A‖_F apply to."""
    return isinstance(layer, tuple(_CONV) + tuple(_CONV_T)) and layer.padding_mode == "zeros"


def conv_apply(layer, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``layer``'s convolution of x with ``weight`` in place of its own, without bias (differentiable)."""
    d, transposed, stride, padding, dilation, groups, out_pad = _conv_spec(layer)
    if transposed:
        return _CONV_T_FN[d](x, weight, None, stride, padding, out_pad, groups, dilation)
    return _CONV_FN[d](x, weight, None, stride, padding, dilation, groups)


def conv_operator(layer, weight: torch.Tensor, input_shape, output_shape=None) -> LinearMapOperator:
    """The operator of ``layer``'s convolution with ``weight`` in place of its own (no bias, no
    parametrization): what spectral normalization by the operator norm needs at each step.
    ``input_shape`` is checked by the callers (``check_layer_input``); ``output_shape``, where a
    previous call found it, skips the probe convolution."""
    w = weight.detach()

    def fn(x):
        return conv_apply(layer, w, x)

    input_shape = tuple(input_shape)
    if output_shape is None:
        output_shape = tuple(probe_map(fn, input_shape, w.dtype, w.device, layer).shape[1:])
    output_shape = tuple(output_shape)
    adjoint, kind, squared = _conv_adjoints(lambda: w, _conv_spec(layer), input_shape, output_shape)
    return LinearMapOperator(
        fn, input_shape, output_shape, w.dtype, w.device, adjoint, kind, squared, layer, lambda: w
    )


def linear_operator(
    fn,
    input_shape,
    *,
    adjoint: Callable | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> LinearMapOperator:
    r"""Wrap a linear map on tensors as an operator that :func:`riemsvd.solve` and
    :func:`riemsvd.norm_bounds` accept.

    The operator is the matrix A of shape ``(∏ output_shape, ∏ input_shape)`` with A x = fn(x) for x
    of ``input_shape`` flattened (C order). Its singular values are those of the map itself: the
    norm of a convolution as a linear map on inputs of ``input_shape``, which is not the norm of its
    reshaped kernel. Strides, padding, dilation and groups are part of ``fn`` and so handled by
    construction.

    Parameters
    ----------
    fn : torch.nn.Module or callable
        An ``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d`` or ``nn.Linear``, or any function (or
        module) mapping a batch ``(b, *input_shape)`` to ``(b, *output_shape)`` linearly and
        independently per batch item. A module's ``bias`` attribute is left out: the operator is the
        linear part of the affine layer, whose norm is the layer's Lipschitz constant (as in
        :func:`riemsvd.nn.operator_norm`). Linearity is probed, not proven: ``fn(0)`` must be zero
        and fn(x + 2y) − fn(x) − 2 fn(y) within 1% of the outputs on two random inputs, fn(−3x) +
        3 fn(x) within 3%, and the two as a batch of 2 must give their outputs one by one, in
        ``dtype`` (a ValueError otherwise); a map that passes that probe but is not linear gives
        meaningless results.
    input_shape : tuple of int
        The shape of one input, without the batch dimension: ``(C, H, W)`` for a Conv2d,
        ``(in_features,)`` for a Linear.
    adjoint : callable, optional
        y ↦ Aᵀ y on a batch ``(b, *output_shape)``, returning ``(b, *input_shape)``. By default: the
        transposed convolution with the same weight, stride, padding, dilation and groups (and the
        output padding that restores ``input_shape``) for a Conv layer, the convolution for a
        ConvTranspose layer, ``y @ W`` for a Linear, and otherwise the VJP of ``fn`` by
        ``torch.func.vjp`` (the VJP of a linear map is its adjoint), also used for convolutions with
        string padding or a ``padding_mode`` other than ``"zeros"``. The VJP's first use costs about
        0.3 s once per operator and block width (a first solve of a centered 4000×1000 matrix as a
        function, k = 10, took 498 ms, later ones 206, and 190 with a given adjoint). A given adjoint
        that does not match ``fn`` (⟨fn(x), y⟩ ≠ ⟨x, adjoint(y)⟩ beyond rounding) is named by the
        warning of a solve that fails and refused by :func:`riemsvd.norm_bounds`.
    dtype, device : optional
        Of the vectors, for a function without parameters; by default those of the module's first
        parameter, else ``torch.get_default_dtype()`` on the CPU. A bfloat16 or float16 module is
        applied as a float32 copy (which holds its weights exactly); the copy does not follow later
        changes of the module's weights.

    Returns
    -------
    LinearMapOperator
        ``shape`` (m, n), ``dtype``, ``device``, ``matvecs``, ``input_shape``, ``output_shape``,
        ``adjoint_kind``. A layer's weight is read at each product, so the operator follows in-place
        updates of it; a VJP adjoint keeps the graph it was built with (one per block width), so
        build a new operator after changing what a function closes over. A module in training mode
        is applied in eval mode (its modes restored after each product: dropout, batch norm).

    Raises
    ------
    TypeError
        If ``fn`` is not callable, ``adjoint`` is given and not callable, or ``dtype`` is not a real
        floating torch dtype.
    ValueError
        If ``input_shape`` is not a tuple or list of positive ints (an int n: (n,)), does not match
        a Conv layer's ``in_channels`` and dimensions or a Linear's ``in_features``, or ``fn`` fails
        on it, is found not to be linear, returns another dtype than ``dtype`` (its products would
        get that dtype's rounding margins), or does not map a batch item by item; or if a module in
        training mode has a parametrized weight that changes at each read (torch's spectral_norm).

    Examples
    --------
    >>> import torch, riemsvd
    >>> _ = torch.manual_seed(0)
    >>> conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False, dtype=torch.float64)
    >>> op = riemsvd.linear_operator(conv, (3, 8, 8))
    >>> op.shape, op.adjoint_kind
    ((64, 192), 'conv_transpose')
    >>> explicit = torch.stack([conv(e.reshape(1, 3, 8, 8)).reshape(-1) for e in torch.eye(192,
    ...     dtype=torch.float64)], dim=1)
    >>> S = riemsvd.solve(op, k=1).S
    >>> bool(torch.isclose(S[0], torch.linalg.matrix_norm(explicit, 2), rtol=1e-10))
    True
    """
    return map_operator(fn, input_shape, adjoint, dtype, device)


def map_operator(
    fn, input_shape, adjoint=None, dtype=None, device=None, name: str = "fn"
) -> LinearMapOperator:
    """:func:`linear_operator`, its errors naming ``fn`` as ``name`` (``operator_norm``'s ``layer``, which
    had been named `fn`, an argument its caller never passed; a new user's trial)."""
    check_map(fn, adjoint)
    input_shape = check_layer_input(fn, input_shape)
    if isinstance(fn, nn.Module):
        fn = bias_free(fn)  # the linear part of an affine layer (its bias shifts, never stretches)
    params = list(fn.parameters()) if isinstance(fn, nn.Module) else []
    if params and params[0].dtype in HALF:
        fn = copy.deepcopy(fn).float()  # float32 holds the half-precision weights exactly
        params = list(fn.parameters())
    if dtype is None:
        dtype = params[0].dtype if params else torch.get_default_dtype()
    elif not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):  # complex ones are not
        raise TypeError(f"`dtype` must be a real floating torch dtype (torch.float64, ...), got {dtype!r}.")
    if device is None:
        device = params[0].device if params else torch.device("cpu")
    device = torch.device(device)
    known = fn if isinstance(fn, (*_CONV, *_CONV_T, nn.Linear)) else None  # a probe's failure: input_shape's
    if isinstance(fn, nn.Module):
        check_steady(fn, name)
        if not plain_layer(fn) and any(m.training for m in fn.modules()):
            fn = _in_eval_mode(fn)
    probe = probe_map(fn, input_shape, dtype, device, known, name)
    with no_autocast(device):  # as the solver applies it (and probe_map)
        _check_linear(fn, probe, input_shape, dtype, device, name)
    output_shape = tuple(probe.shape[1:])
    kind, squared, layer = ("given" if adjoint is not None else "vjp"), None, None
    # the transposed convolution and y @ W are the adjoints of torch's own forward only, and its weight
    # the scale of its entries: a subclass with its own forward, or a hook, gets the VJP and no scale
    # (a Linear subclass scaling its output got y @ W, and its solve stalled at 0.1% of σ₁; a hook
    # undoing weights of 1e-30 drew a scale that stalled it 19% low; reviews)
    plain = plain_layer(fn)
    if is_conv(fn) and plain:
        layer = fn
        own, own_kind, squared = _conv_adjoints(
            lambda: layer.weight.detach(), _conv_spec(layer), input_shape, output_shape
        )
        if adjoint is None and own is not None:
            adjoint, kind = own, own_kind
    elif isinstance(fn, nn.Linear) and plain:
        layer = fn

        def squared(x):
            return x @ layer.weight.detach().double().square().mT

        if adjoint is None:
            adjoint, kind = (lambda y: y @ layer.weight.detach()), "linear"
    weight = functools.partial(getattr, fn, "weight") if plain else None  # read where a scale is chosen
    return LinearMapOperator(
        fn, input_shape, output_shape, dtype, device, adjoint, kind, squared, layer, weight
    )
