"""Where the solver's tall vectors live: their inner products, norms, QR and random draws.

A vector of length m (a column of U) or n (a column of V) is held whole by this process (``Space``), or
split by rows across processes (``riemsvd._distributed.ShardedSpace``, which sums the parts with
collectives). The solver and the backward reduce over rows only through these methods.
"""

from __future__ import annotations

import torch

from riemsvd._backend import mm

__all__ = ["Space", "randn"]


def randn(shape, dtype, device, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal samples drawn on the generator's device, then moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, dtype=dtype, device=gen_device, generator=generator).to(device)


class Space:
    """Vectors of ``rows`` entries held whole by this process; tall tensors have shape (..., rows, c).

    Attributes
    ----------
    rows : int
        Length of the vectors.
    local_rows : int
        How many of their entries this process holds (all of them here).
    communicated : int
        Numbers this process has sent to collectives on behalf of this space (none here).
    distributed : bool
        Whether the vectors are split across processes (False here).
    """

    distributed = False

    def __init__(self, rows: int) -> None:
        self.rows = self.local_rows = int(rows)
        self.communicated = 0

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over processes of per-process partial sums ``t`` (here: ``t``)."""
        return t

    def inner(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """aᵀ b, shape (..., ca, cb), for a (..., rows, ca) and b (..., rows, cb)."""
        return self.reduce(mm(a.mT, b))

    def dots(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Column-wise aᵀb, shape (..., c)."""
        return self.reduce((a * b).sum(-2))

    def norms(self, x: torch.Tensor) -> torch.Tensor:
        """Column norms, shape (..., c)."""
        return torch.linalg.vector_norm(x, dim=-2)

    def gram(self, basis: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(basisᵀ x, column norms of x), computed together (one reduction where that is a collective)."""
        return self.inner(basis, x), self.norms(x)

    def project_out(self, basis: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(I − basis basisᵀ) x for orthonormal ``basis``."""
        return x - mm(basis, self.inner(basis, x))

    def qr(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduced QR of the tall x: Q with the shape of x, R (..., c, c)."""
        return torch.linalg.qr(x)

    def randn_like(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Standard normal vectors shaped like the tall x."""
        return self.randn(x.shape[:-2], x.shape[-1], x.dtype, x.device, generator)

    def randn(self, batch, cols: int, dtype, device, generator: torch.Generator | None) -> torch.Tensor:
        """Standard normal vectors, shape batch + (local_rows, cols)."""
        return randn(tuple(batch) + (self.rows, cols), dtype, device, generator)
