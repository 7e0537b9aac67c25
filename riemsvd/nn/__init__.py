"""Spectral normalization and spectral-norm projection of neural-network weights with ``riemsvd.solve``.

``spectral_norm`` is a drop-in for ``torch.nn.utils.parametrizations.spectral_norm`` whose σ is exact
(each training step a power step whose σ error is bounded, or a warm-started solve where it is not),
optionally the norm of a convolution as a linear map (``input_shape``, with ``operator_norm``);
``project_spectral_`` and ``register_projection_hook`` clip or rescale weights after an optimizer step.

One module per feature: ``_spectral`` (the parametrization), ``_operator_norm`` (a layer's norm as a
linear map), ``_projection`` (projection after an optimizer step), all on ``_leading`` (the leading
pair, warm-started).
"""

from riemsvd.nn._operator_norm import OperatorNorm, operator_norm
from riemsvd.nn._projection import SpectralProjection, project_spectral_, register_projection_hook
from riemsvd.nn._spectral import SpectralNorm, spectral_norm

# the parametrization classes, for isinstance checks that find the normalized layers (the docs name
# them; a new user's trial found them only in private modules)
__all__ = [
    "OperatorNorm",
    "SpectralNorm",
    "SpectralProjection",
    "operator_norm",
    "project_spectral_",
    "register_projection_hook",
    "spectral_norm",
]
