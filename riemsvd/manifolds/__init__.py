"""geoopt-compatible manifolds with the Riemannian Hessian that Newton's method needs.

``Sphere`` holds the leading pair for k = 1 and ``Stiefel`` a block of k > 1 pairs; ``Grassmann`` holds
a subspace, for losses of span(X) alone.
"""

import warnings

with warnings.catch_warnings():  # geoopt 0.5 decorates with torch.jit.script, deprecated in torch 2.10+
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
    import geoopt  # noqa: F401

from riemsvd.manifolds.grassmann import Grassmann
from riemsvd.manifolds.sphere import Sphere
from riemsvd.manifolds.stiefel import Stiefel

__all__ = ["Grassmann", "Sphere", "Stiefel"]
