"""The unit sphere S^{d-1} with the embedded metric, as a geoopt manifold.

Adds to ``geoopt.Sphere`` the Riemannian Hessian from the Euclidean one and the projector onto the
orthogonal complement of a point, which the Newton equation and the backward use.
"""

import geoopt
import torch

__all__ = ["Sphere"]


class Sphere(geoopt.Sphere):
    """Unit sphere {x : ‖x‖ = 1} in R^d, points of shape ``(..., d)``, embedded (Euclidean) metric.

    A ``geoopt.Manifold``: ``geoopt.ManifoldParameter(x, manifold=Sphere())`` and
    ``geoopt.optim.RiemannianAdam`` work with it. The tangent space at x is {u : xᵀu = 0}.
    """

    name = "Sphere"

    def __init__(self) -> None:
        super().__init__()

    def proj_horizontal(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Project ``u`` onto the orthogonal complement of ``x``: (I − x xᵀ) u. Shapes ``(..., d)``.

        On the sphere this is also the tangent projection ``proju``.
        """
        return u - (x * u).sum(-1, keepdim=True) * x

    def ehess2rhess(
        self, x: torch.Tensor, egrad: torch.Tensor, ehess: torch.Tensor, u: torch.Tensor
    ) -> torch.Tensor:
        """Riemannian Hessian applied to the tangent vector ``u`` at ``x``.

        ``egrad`` is the Euclidean gradient at x and ``ehess`` the Euclidean Hessian applied to u, all
        of shape ``(..., d)``. For the embedded sphere Hess f(x)[u] = P_x(∇²f(x) u) − (xᵀ∇f(x)) u.
        """
        return self.proju(x, ehess) - (x * egrad).sum(-1, keepdim=True) * u
