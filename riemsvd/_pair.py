"""``SingularPair``: k singular pairs (U, V) of a matrix held as geoopt manifold parameters.

Trained jointly with a model by a Riemannian optimizer, and refined to full accuracy by ``riemsvd.solve``.
"""

from __future__ import annotations

import geoopt
import torch

from riemsvd._result import SVDResult
from riemsvd._solve import solve
from riemsvd._validate import check_pair_input, check_pair_shape
from riemsvd.manifolds import Stiefel

__all__ = ["SingularPair"]


def _orthonormal(x, like: torch.Tensor) -> bool:
    """Whether ``x``, a frame loaded for ``like``, has orthonormal columns to 100·ε·√d of its dtype;
    True for what torch's loading judges itself (a missing key, another shape or type)."""
    if not isinstance(x, torch.Tensor) or x.shape != like.shape or not x.is_floating_point():
        return True
    tol = 100 * torch.finfo(x.dtype).eps * x.shape[-2] ** 0.5
    return bool(Stiefel().check_point_on_manifold(x.detach().to(torch.float64), atol=tol, rtol=0.0))


def _random_frame(d: int, k: int, dtype, device, generator) -> torch.Tensor:
    # Drawn on the generator's device (the CPU without one), so one seed gives one frame on any device.
    x = torch.randn(d, k, dtype=dtype, generator=generator, device=generator.device if generator else None)
    return torch.linalg.qr(x).Q.to(device)


class SingularPair(torch.nn.Module):
    r"""Estimates of the k leading singular pairs of an m×n matrix, as Riemannian parameters.

    ``U`` (m×k) and ``V`` (n×k) are ``geoopt.ManifoldParameter``\ s on :class:`riemsvd.manifolds.Stiefel`
    (St(m, 1) is the unit sphere, so k = 1 is the pair of unit vectors (u, v)), starting from random
    orthonormal frames. Any ``geoopt.optim`` optimizer (``RiemannianAdam``, ``RiemannianSGD``) keeps
    them orthonormal while it maximizes :meth:`brockett` (or, for k = 1, ``pair(A)``) alongside the
    rest of a model; :meth:`refine` then finishes them with :func:`riemsvd.solve`.

    Parameters
    ----------
    m, n : int
        Shape of the matrices the pair is for.
    k : int
        Number of pairs, ``1 <= k <= min(m, n)``.
    dtype, device : optional
        Of the parameters (default ``torch.get_default_dtype()`` and the CPU).
    generator : torch.Generator, optional
        Source of the random start, for reproducible results.

    Attributes
    ----------
    U : geoopt.ManifoldParameter
        Shape ``(m, k)``, orthonormal columns: the left singular vector estimates.
    V : geoopt.ManifoldParameter
        Shape ``(n, k)``, orthonormal columns: the right singular vector estimates.

    Notes
    -----
    For k = 1, u ᵀA v ≤ σ₁ on the sphere pair with equality exactly at ±(u₁, v₁), so maximizing
    ``pair(A)`` finds the top pair. For k > 1, Σᵢ uᵢᵀ A vᵢ = tr(Uᵀ A V) is maximized by any rotation
    of the top-k frames; the weighted Brockett cost tr(Uᵀ A V N) with N = diag(k, k−1, …, 1) has
    its maximum only at the ordered singular pairs (σᵢ distinct), which is what :meth:`brockett`
    returns. After :meth:`refine`, reset the optimizer's state if the jump matters to it.

    Examples
    --------
    >>> import torch, geoopt
    >>> from riemsvd import SingularPair
    >>> g = torch.Generator().manual_seed(0)
    >>> A = torch.randn(30, 20, dtype=torch.float64, generator=g)
    >>> pair = SingularPair(30, 20, k=2, dtype=torch.float64, generator=g)
    >>> opt = geoopt.optim.RiemannianAdam(pair.parameters(), lr=0.05)
    >>> for _ in range(20):
    ...     opt.zero_grad()
    ...     (-pair.brockett(A)).backward()
    ...     opt.step()
    >>> _ = pair.refine(A)  # the solver finishes the pairs and stores them in place
    >>> torch.allclose(pair(A), torch.linalg.svdvals(A)[:2], rtol=1e-10)
    True
    """

    def __init__(
        self,
        m: int,
        n: int,
        k: int = 1,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_pair_shape(m, n, k, dtype, generator)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        self.U = geoopt.ManifoldParameter(_random_frame(m, k, dtype, device, generator), manifold=Stiefel())
        self.V = geoopt.ManifoldParameter(_random_frame(n, k, dtype, device, generator), manifold=Stiefel())

    @staticmethod
    def _plain(x: torch.Tensor) -> torch.Tensor:
        return x.detach().as_subclass(torch.Tensor)

    @property
    def k(self) -> int:
        """Number of pairs."""
        return self.U.shape[-1]

    def extra_repr(self) -> str:
        """``SingularPair(m=…, n=…, k=…, dtype=…)`` in ``repr``, as torch's modules show their sizes."""
        return f"m={self.U.shape[-2]}, n={self.V.shape[-2]}, k={self.k}, dtype={self.U.dtype}"

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        """torch's loading, where U and V of the loaded state both have orthonormal columns (to
        100·ε·√d in their dtype, checked in float64: a float32 frame of 10⁷ rows is orthonormal to
        about 1e-4): frames without them had loaded silently, ``forward`` no longer the values'
        estimates (a new user's trial). Otherwise neither is loaded, and the error is torch's."""
        keys = {name: prefix + name for name in ("U", "V")}
        bad = [n for n, key in keys.items() if not _orthonormal(state_dict.get(key), getattr(self, n))]
        if bad:
            for name in bad:
                errors.append(
                    f"`{keys[name]}` does not have orthonormal columns; load a SingularPair's own state, "
                    f"or the Q of `torch.linalg.qr` of it in its place (neither U nor V was loaded)."
                )
            state_dict = {key: x for key, x in state_dict.items() if key not in keys.values()}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)
        if bad:  # not missing: refused
            missing[:] = [key for key in missing if key not in keys.values()]

    def forward(self, A: torch.Tensor) -> torch.Tensor:
        """The current estimates diag(Uᵀ A V) of the k leading singular values.

        Parameters
        ----------
        A : torch.Tensor
            Shape ``(*, m, n)``.

        Returns
        -------
        torch.Tensor
            Shape ``(*, k)``; differentiable in ``U``, ``V`` and ``A``.
        """
        check_pair_input(A, self.U, self.V)
        return ((self.U.mT @ A) * self.V.mT).sum(-1)

    def brockett(self, A: torch.Tensor) -> torch.Tensor:
        """The weighted Brockett cost tr(Uᵀ A V N) = Σᵢ Nᵢ (Uᵀ A V)ᵢᵢ, N = diag(k, k−1, …, 1), to maximize.

        Parameters
        ----------
        A : torch.Tensor
            Shape ``(*, m, n)``.

        Returns
        -------
        torch.Tensor
            Shape ``(*)``; minimize ``-pair.brockett(A)`` to move (U, V) towards the ordered top-k pairs.
        """
        weights = torch.arange(self.k, 0, -1, dtype=self.U.dtype, device=self.U.device)
        return (self(A) * weights).sum(-1)

    def refine(self, A: torch.Tensor, tol: float | None = None, *, generator=None) -> SVDResult:
        """Finish the pairs with :func:`riemsvd.solve` warm-started at (U, V), and store them in place.

        Parameters
        ----------
        A : torch.Tensor
            Shape ``(m, n)``, of the parameters' dtype and device; it is detached.
        tol : float, optional
            Relative residual to reach, as in :func:`riemsvd.solve`.
        generator : torch.Generator, optional
            For the solver's one random start column.

        Returns
        -------
        SVDResult
            The solve's ``(U, S, V)`` with ``.info``; ``U`` and ``V`` now hold its U and V.
        """
        check_pair_input(A, self.U, self.V, refine=True)
        result = solve(
            A.detach(), self.k, tol=tol, init=(self._plain(self.U), self._plain(self.V)), generator=generator
        )
        with torch.no_grad():
            self.U.copy_(result.U)
            self.V.copy_(result.V)
        return result
