"""The Grassmann manifold Gr(d, k) of k-dimensional subspaces of R^d, as a geoopt manifold.

A subspace is held by an orthonormal basis X (a point of St(d, k)); X and XQ (Q orthogonal) are the
same point. For a loss of the subspace alone — tr(XᵀAX), ‖Y − Y X Xᵀ‖², anything unchanged by X → XQ —
the Riemannian Hessian on Stiefel is singular along the rotations within span(X) and indefinite beside
them by the gradient's size, and Newton's steps wander along them: on Gr(d, k) the same loss has a
Hessian that is definite at a strict minimum.
"""

import geoopt
import torch

from riemsvd.manifolds.stiefel import refuse_wide

__all__ = ["Grassmann"]


class Grassmann(geoopt.EuclideanStiefel):
    """Gr(d, k): the span of X ∈ St(d, k), points of shape ``(..., d, k)`` with orthonormal columns.

    Tangent vectors are the horizontal ones, {U : XᵀU = 0}, with the metric tr(UᵀV) (the quotient
    metric of the embedded Stiefel manifold). Only losses that are functions of span(X) are functions
    on Gr(d, k): for any other the gradient computed here is not the loss's.

    A ``geoopt.Manifold``: ``geoopt.ManifoldParameter(X, manifold=Grassmann())`` works with geoopt's
    optimizers and :class:`riemsvd.optim.RiemannianTrustRegion`. ``projx``, ``retr`` (the Q factor of
    X + U), ``inner`` and ``random`` are geoopt's Stiefel ones.
    """

    name = "Grassmann"

    def __new__(cls) -> "Grassmann":
        # geoopt's Stiefel.__new__ dispatches on its `canonical` flag; this class has one metric.
        return object.__new__(cls)

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        """An orthonormal basis of span(``x``) (..., d, k): its polar factor (geoopt's). ValueError for
        k > d, where d×k columns cannot be orthonormal."""
        refuse_wide(x, "Gr(d, k)")
        return super().projx(x)

    def proju(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The horizontal part of ``u`` (..., d, k) at ``x``: (I − x xᵀ) u."""
        return self.proj_horizontal(x, u)

    def egrad2rgrad(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The Riemannian gradient from the Euclidean one ``u``: (I − x xᵀ) u."""
        return self.proju(x, u)

    def proj_horizontal(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """(I − x xᵀ) u for ``u`` of shape ``(..., d, j)``, any j: the tangent projection."""
        return u - x @ (x.mT @ u)

    def transp(self, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``v`` at ``x`` carried to ``y`` by projection: (I − y yᵀ) v."""
        return self.proju(y, v)

    def expmap(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The geodesic from span(x) along ``u`` at time 1: with u = W diag(θ) Vᵀ (thin SVD),
        x V cos(θ) Vᵀ + W sin(θ) Vᵀ, orthonormal as it is, and the basis x carried along the geodesic
        (x itself at u = 0): geoopt's ``expmap_transp`` transports by projection onto it, which a basis
        re-orthonormalized by QR, its columns' signs flipped, had turned into another tangent vector
        (momentum SGD on exact geodesics stalled 0.06 off the subspace; a review)."""
        w, theta, vt = torch.linalg.svd(u, full_matrices=False)
        return ((x @ vt.mT) * torch.cos(theta)[..., None, :] + w * torch.sin(theta)[..., None, :]) @ vt

    def ehess2rhess(
        self, x: torch.Tensor, egrad: torch.Tensor, ehess: torch.Tensor, u: torch.Tensor
    ) -> torch.Tensor:
        """Riemannian Hessian applied to the tangent vector ``u`` at ``x``: (I − x xᵀ) ∇²f(x)[u] −
        u (xᵀ∇f(x)), from the Euclidean gradient ``egrad`` and Hessian ``ehess`` applied to u, all of
        shape ``(..., d, k)`` (Absil, Mahony and Sepulchre 2008, §5.5: the Stiefel one for a loss
        invariant under x → xQ, where xᵀ∇f(x) is symmetric, taken on the horizontal space)."""
        return self.proju(x, ehess) - u @ (x.mT @ egrad)

    def _check_vector_on_tangent(self, x: torch.Tensor, u: torch.Tensor, *, atol=1e-5, rtol=1e-5):
        """geoopt's check of a tangent vector: xᵀu = 0 (horizontal), not Stiefel's xᵀu + uᵀx = 0."""
        gap = x.mT @ u
        if torch.allclose(gap, torch.zeros_like(gap), atol=atol, rtol=rtol):
            return True, None
        worst = gap.abs().max().item()
        return False, f"`x^T u != 0` with atol={atol}, rtol={rtol} (max |x^T u| = {worst:.3g})"
