"""The Stiefel manifold St(d, k) of orthonormal d×k frames, embedded metric, as a geoopt manifold.

Adds to ``geoopt.EuclideanStiefel`` the Riemannian Hessian and the projector onto the complement of
span(X), the space where the Newton (Jacobi–Davidson) corrections and the backward's solves live.
"""

import geoopt
import torch

__all__ = ["Stiefel"]


def _sym(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + a.mT)


def refuse_wide(x: torch.Tensor, space: str) -> None:
    """ValueError for ``x`` (..., d, k) with k > d, which no point of ``space`` (St(d, k), Gr(d, k)) has:
    k orthonormal columns of length d need k <= d."""
    if x.dim() >= 2 and x.shape[-1] > x.shape[-2]:
        raise ValueError(
            f"`x` has shape {tuple(x.shape)}: a point of {space} has k = {x.shape[-1]} orthonormal "
            f"columns of length d = {x.shape[-2]}, which needs k <= d; pass the transpose "
            "(`x.mT`) for a frame of rows."
        )


class Stiefel(geoopt.EuclideanStiefel):
    """St(d, k) = {X ∈ R^{d×k} : XᵀX = I}, points of shape ``(..., d, k)``, embedded metric.

    A ``geoopt.Manifold``: ``geoopt.ManifoldParameter(X, manifold=Stiefel())`` and
    ``geoopt.optim.RiemannianAdam`` work with it. The tangent space at X is {Z : XᵀZ + ZᵀX = 0}.
    """

    name = "Stiefel"

    def __new__(cls, canonical: bool = False) -> "Stiefel":
        # geoopt's Stiefel.__new__ dispatches on a flag; this class is always the Euclidean one.
        return object.__new__(cls)

    def __init__(self, canonical: bool = False) -> None:
        """``canonical``: geoopt's ``Stiefel`` flag, taken so that code written for it runs; only the
        embedded metric (``False``, geoopt's ``EuclideanStiefel``) has the Hessian added here."""
        if canonical:
            raise ValueError(
                "`canonical=True`: riemsvd's Stiefel has the embedded metric (geoopt's "
                "`Stiefel(canonical=False)`), whose Riemannian Hessian it adds; for the canonical metric "
                "use `geoopt.CanonicalStiefel()`, which has none."
            )
        super().__init__()

    def projx(self, x: torch.Tensor) -> torch.Tensor:
        """The nearest point of St(d, k) to ``x`` (..., d, k), its polar factor (geoopt's). ValueError
        for k > d, where no d×k frame is orthonormal: geoopt's projx returned a matrix off the manifold
        without a word (a new user's trial)."""
        refuse_wide(x, "St(d, k)")
        return super().projx(x)

    def proj_horizontal(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Project ``u`` onto the orthogonal complement of span(x): (I − x xᵀ) u.

        ``x`` has shape ``(..., d, k)``, ``u`` shape ``(..., d, j)`` for any j. This is the horizontal
        space of the Grassmann quotient, where the corrections of the Newton step lie once the
        rotation within span(x) is taken care of by Rayleigh–Ritz.
        """
        return u - x @ (x.mT @ u)

    def ehess2rhess(
        self, x: torch.Tensor, egrad: torch.Tensor, ehess: torch.Tensor, u: torch.Tensor
    ) -> torch.Tensor:
        """Riemannian Hessian applied to the tangent vector ``u`` at ``x``.

        ``egrad`` is the Euclidean gradient at x and ``ehess`` the Euclidean Hessian applied to u, all
        of shape ``(..., d, k)``: Hess f(X)[U] = P_X(∇²f(X)[U] − U sym(Xᵀ∇f(X))).
        """
        return self.proju(x, ehess - u @ _sym(x.mT @ egrad))
