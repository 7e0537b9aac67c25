"""Second-order Riemannian optimization for geoopt and torch parameters.

``RiemannianTrustRegion``, a ``torch.optim.Optimizer``, and ``TrustRegionInfo``, what its last step did.
"""

import warnings

with warnings.catch_warnings():  # geoopt 0.5 decorates with torch.jit.script, deprecated in torch 2.10+
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
    import geoopt  # noqa: F401

from riemsvd.optim.trust_region import RiemannianTrustRegion, TrustRegionInfo

__all__ = ["RiemannianTrustRegion", "TrustRegionInfo"]
