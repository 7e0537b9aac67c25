"""The operator A, seen only through block products X ↦ A X and Y ↦ Aᵀ Y.

Dense (batched) tensors, 2-D torch sparse tensors, scipy sparse matrices and objects shaped like
``scipy.sparse.linalg.LinearOperator`` are wrapped into one small interface that counts its products.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from riemsvd._backend import (
    NUMPY_BLAS,
    STEPS,
    mm,
    mm_t,
    numpy_view,
    readable_any,
    readable_number,
    torch_products,
)
from riemsvd._space import HostSpace, Space
from riemsvd._tolerance import product_floor

__all__ = ["Operator", "as_operator"]

_NUMPY_TO_TORCH = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


class Operator:
    """A (..., m, n) linear operator given by its block products.

    Attributes
    ----------
    shape : tuple[int, int]
        (m, n).
    batch_shape : torch.Size
        Leading batch dimensions; empty for sparse and matrix-free operators.
    dtype, device
        Of every vector the solver makes.
    matvecs : int
        Products with A plus products with Aᵀ so far, a block of b columns counting b.
    scale : torch.Tensor or None
        Powers of two, shape (..., 1, 1), by which every product is multiplied (exactly): the
        operator is c·A. Set where A's entries are so large or small that squares of norms would
        overflow or underflow; None otherwise.
    magnitude : torch.Tensor or None
        max |a_ij| per matrix, shape (...), where :meth:`rescale` was given it (dense, sparse and
        scipy sparse A; for a ``LinearOperator``, max |(A x)ᵢ| of one product, :func:`probe_scale`;
        a layer's scaled copy, :func:`scaled_by_entries`); None for another matrix-free operator.
    left, right : Space
        Where vectors of length m (columns of U, images A x) and of length n (columns of V, images
        Aᵀ y) live; both held whole by this process unless A is sharded across processes.
    """

    def __init__(
        self, shape, batch_shape, dtype, device, left: Space | None = None, right: Space | None = None
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.batch_shape = torch.Size(batch_shape)
        self.dtype = dtype
        self.device = device
        # the product count, shared with the copies ``rescaled`` makes: a caller's operator counts theirs
        self._count = [0]
        self.scale = None
        self.magnitude: torch.Tensor | None = None
        self.left = left if left is not None else Space(self.shape[0])
        self.right = right if right is not None else Space(self.shape[1])

    @property
    def scale(self) -> torch.Tensor | None:
        """c, a power of two per matrix (shape (..., 1, 1)) by which the products are scaled, or None."""
        return self._scale

    @scale.setter
    def scale(self, value: torch.Tensor | None) -> None:
        # c = 2^e applied in two halves, 2^⌊e/2⌋ to x before the product and the rest to A x after it:
        # the same bits wherever x·c, x·2^⌊e/2⌋ and the products' terms stay normal numbers, and within
        # range where x·c is not. Whole, c = 2^1023 (A's entries subnormal) took a trust-region CG
        # direction of norm above 2 to inf and its product to NaN (1326 RuntimeWarnings, a solve
        # stalled 2.4% off; a new user's trial). A float32 A of 1e35 (c = 2^−116) now keeps entries of x
        # below 2^−10 normal, which c whole made subnormal: σ moved by 7–9e-8 (a review). A c of 0 (a
        # σ₁ of inf in the backward's unit) multiplies by 0 then 1, as x·0 did, not 0 then 0/0.
        self._scale = value
        self._halves: tuple[torch.Tensor, torch.Tensor] | None = None
        if value is not None:
            before = torch.exp2(torch.floor(0.5 * torch.log2(value)))
            self._halves = before, torch.where(before > 0, value / before, torch.ones_like(value))

    def _scaled(self, product, x: torch.Tensor) -> torch.Tensor:
        """c·product(x), c split as :attr:`scale`'s setter says."""
        if self._halves is None:
            return product(x)
        before, after = self._halves
        return product(x * before) * after

    @property
    def matvecs(self) -> int:
        return self._count[0]

    @matvecs.setter
    def matvecs(self, value: int) -> None:
        self._count[0] = value

    @property
    def distributed(self) -> bool:
        """Whether A is split across processes (then a product and some reductions are collectives)."""
        return self.left.distributed or self.right.distributed

    @property
    def communicated(self) -> int:
        """Numbers this process has sent to collectives so far (0 unless A is sharded)."""
        return self.left.communicated + self.right.communicated

    def matmat(self, x: torch.Tensor) -> torch.Tensor:
        """c·A @ x for x of shape (..., n, b); returns (..., m, b)."""
        self.matvecs += x.shape[-1]
        return self._scaled(self._matmat, x)

    def rmatmat(self, y: torch.Tensor) -> torch.Tensor:
        """c·Aᵀ @ y for y of shape (..., m, b); returns (..., n, b)."""
        self.matvecs += y.shape[-1]
        return self._scaled(self._rmatmat, y)

    def both(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c·A x, c·Aᵀ y), as :meth:`matmat` and :meth:`rmatmat`."""
        return self.matmat(x), self.rmatmat(y)

    # whether A's entries are still to be read and checked (a dense A: DenseOperator.check_entries)
    unchecked = False

    def check_entries(
        self, magnitude: torch.Tensor | float | None = None, after_products: bool = False
    ) -> None:
        """Read and check entries the argument checks left unread: a dense A's
        (:meth:`DenseOperator.check_entries`); nothing for other operators, whose are checked before."""

    def entry_magnitude(self) -> torch.Tensor | None:
        """max |a_ij| where an operator knows it without a product (a Conv or Linear layer's weights);
        None by default."""
        return None

    def rescale(self, magnitude: torch.Tensor, limit: float | None = None) -> Operator:
        """Scale by the power of two nearest 1/magnitude (shape (...)) where the magnitude is outside
        2^±(max exponent / 4) (or [1/limit, limit]); exact, and leaves the singular vectors as they
        are."""
        self.magnitude = magnitude.to(self.dtype)
        scale = self._scale_for(self.magnitude, limit)
        if scale is not None:
            self.scale = scale
        return self

    def _scale_for(self, magnitude: torch.Tensor, limit: float | None) -> torch.Tensor | None:
        """The scale :meth:`rescale` sets for ``magnitude`` (in this operator's dtype), or None."""
        fin = torch.finfo(self.dtype)
        limit = self._entry_limit() if limit is None else limit
        if self._in_range(readable_number(magnitude), limit):
            return None  # the usual case, decided on a number
        if not readable_any((magnitude > limit) | ((magnitude < 1 / limit) & (magnitude > 0)), default=False):
            return None
        exponent = torch.floor(torch.log2(torch.where(magnitude > 0, magnitude, 1.0)))
        # entries all subnormal: 2^−exponent itself would overflow (1e-310 wants 2^1030), and the
        # Gram matrix, the SVD and the bounds then saw inf·0 = NaN; the largest scale that exists
        # leaves them near 2^−52 (float64) or 2^−23 (float32) at the least, within range
        exponent = exponent.clamp_min(1 - int(math.log2(fin.max)))
        # and 2^−exponent normal: float32 weights of 3e38 wanted 2^−127, subnormal, and the
        # products of a scaled input broke down (a review); 2^−126 leaves them below 4
        exponent = exponent.clamp_max(-math.log2(fin.tiny))
        return torch.exp2(-exponent).reshape(magnitude.shape + (1, 1)).to(self.device)

    def _entry_limit(self) -> float:
        """2^(max exponent / 4) of this operator's dtype: entries up to it, and down to its inverse,
        need no scale (:meth:`rescale`)."""
        return 2.0 ** (math.log2(torch.finfo(self.dtype).max) // 4)

    @staticmethod
    def _in_range(value: float | None, limit: float) -> bool:
        """Whether a magnitude that is a number (None: not one) needs no scale: 0, or within
        [1/limit, limit]."""
        return value is not None and (value == 0 or 1 / limit <= value <= limit)

    def adjoint_source(self) -> str | None:
        """Where Aᵀ's products come from when the caller supplied them (the argument to name where they
        do not match A's); None where they are riemsvd's own (a transpose, a transposed convolution, a
        VJP), which match by construction."""
        return None

    def map_source(self) -> str | None:
        """Where A's products come from when they are a caller's map with riemsvd's own Aᵀ (a VJP),
        whose linearity nothing else checks (:func:`product_fault`); None otherwise."""
        return None

    def _matmat(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _rmatmat(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def on_host(self) -> HostView | None:
        """This operator on numpy arrays, for the solver's loop on the CPU; None where its vectors must
        stay tensors (another device, A split across processes, ``RIEMSVD_CPU_BLAS=torch``, or a tensor
        inside a torch.func transform, which has no numpy view)."""
        if torch.device(self.device).type != "cpu" or self.distributed or not NUMPY_BLAS:
            return None
        products = self._numpy_products()
        if products is None:
            return None
        matmat, rmatmat = products
        return HostView(self, matmat, rmatmat, columns=self._column_products(), fused=self._fused_pass(),
                        sparse=self._sparse_rows())  # fmt: skip

    def _column_products(self):
        """((x, out) ↦ out ← A x, (y, out) ↦ out ← Aᵀ y) for one matrix and one column, without the
        scale, written into ``out`` (a dense A, a scipy CSR or CSC matrix); None where the operator has
        no such products."""
        return None

    def _fused_pass(self) -> FusedPass | None:
        """A's numpy view for the solver's step that makes both products in one pass over A
        (:class:`FusedPass`), or None where the operator has no such pass."""
        return None

    def _sparse_rows(self) -> SparseRows | None:
        """A sparse A's compressed rows for the solver's runs of steps in C (:class:`SparseRows`), or
        None where the operator has none."""
        return None

    def torch_products(self) -> bool:
        """Whether a CPU solve's products go through torch on torch's threads (a dense A of 1.5 MiB or
        more whose products a measurement favours over numpy's BLAS by a margin:
        :func:`riemsvd._backend.torch_products`); :func:`riemsvd._backend.solver_threads` then keeps
        torch's threads."""
        return False

    def _float64_products(self):
        """(x ↦ A x, y ↦ Aᵀ y) computed and returned in float64 for numpy x and y of either float dtype,
        or None (only a dense A and a sparse matrix on the CPU have them)."""
        return None

    @property
    def entries(self) -> int:
        """Entries of one matrix that a product reads: m·n, or a sparse A's stored ones (what the
        solver's model of a step's cost counts, :func:`riemsvd._subspace._look_cost`)."""
        return self.shape[0] * self.shape[1]

    @property
    def row_terms(self) -> int | None:
        """For a sparse A, the most stored entries in one row of A or of Aᵀ: the terms that its
        products' kernels add one after another into one entry, whose rounding grows like their
        count where they share a sign (a graph's adjacency matrix) rather than like its square root
        as for a dense A's blocked BLAS sums. None for other operators. Sparse operators compute it
        once (a pass over the indices)."""
        return None

    def _numpy_products(self):
        """(x ↦ A x, y ↦ Aᵀ y) on numpy arrays without the scale, or None; through torch by default."""

        def matmat(x):
            return self._matmat(torch.from_numpy(x)).detach().numpy()

        def rmatmat(y):
            return self._rmatmat(torch.from_numpy(y)).detach().numpy()

        return matmat, rmatmat


class FusedPass(NamedTuple):
    """A dense A (2-D numpy view with contiguous rows) for ``riemsvd._steps.gk_fused``, the host step
    that reads A once for its two products, and the threads that pass runs on."""

    a: np.ndarray
    threads: int


class SparseRows(NamedTuple):
    """A sparse A's compressed rows for ``riemsvd._steps.gk_sparse_run``, the host steps that take a
    run of steps in one call: ``ptr``, ``ind`` and ``data`` of A (a CSR A: ``by_rows``) or of Aᵀ (a
    CSC A's own arrays), the indices checked by :func:`sparse_rows`."""

    ptr: np.ndarray
    ind: np.ndarray
    data: np.ndarray
    by_rows: bool


def sparse_rows(ptr, ind, data, by_rows: bool, shape: tuple[int, ...], dtype) -> SparseRows | None:
    """:class:`SparseRows` of these arrays where C's steps can read them: the C module built, ``data``
    of the solver's ``dtype``, integer indices of one type, ``ptr`` rising from 0 to at most
    len(``ind``) and every index used within the other side's length (C reads them unchecked: one
    pass over the indices, as a product's). None otherwise: the steps then take each product from
    Python (:meth:`Operator._column_products`), as scipy's own kernels check nothing either."""
    ptr, ind, data = np.asarray(ptr), np.asarray(ind), np.asarray(data)
    rows, cols = shape if by_rows else shape[::-1]
    if (
        STEPS is None
        or data.dtype != dtype
        or ptr.dtype != ind.dtype
        or ptr.dtype not in (np.int32, np.int64)
        or ptr.shape != (rows + 1,)
        or ind.ndim != 1
        or data.shape != ind.shape
        or min(rows, cols) < 1
    ):
        return None
    used = int(ptr[-1])
    if ptr[0] != 0 or used > len(ind) or (np.diff(ptr) < 0).any():
        return None
    if used and (int(ind[:used].min()) < 0 or int(ind[:used].max()) >= cols):
        return None
    ptr, ind, data = (np.ascontiguousarray(x) for x in (ptr, ind, data))
    return SparseRows(ptr, ind, data, by_rows)


class HostView:
    """An :class:`Operator` seen through numpy arrays: the same products, counted in the operator's
    ``matvecs``, and ``HostSpace`` vectors. ``fused``: the operator's :class:`FusedPass`; ``sparse``:
    its :class:`SparseRows` (each kept without a scale only, as ``columns`` is)."""

    def __init__(
        self, op: Operator, matmat, rmatmat, both=None, columns=None, fused=None, sparse=None
    ) -> None:
        self.op, self._mm, self._rmm, self._both = op, matmat, rmatmat, both
        self.shape = op.shape
        self.left, self.right = HostSpace(op.shape[0]), HostSpace(op.shape[1])
        self._scale = None if op.scale is None else op.scale.numpy()
        self._columns = columns if self._scale is None else None
        self.fused: FusedPass | None = fused if self._scale is None else None
        self.sparse: SparseRows | None = sparse if self._scale is None else None

    def in_float64(self) -> HostView | None:
        """This view with float64 products, for a float32 dense A (each product reads A in row blocks
        cast to float64, so that no float64 copy of A is kept), scipy sparse matrix (scipy casts the
        values in each product) or torch sparse one on the CPU (a float64 copy while the check runs);
        None for any other operator."""
        products = self.op._float64_products() if self.op.dtype == torch.float32 else None
        return None if products is None else HostView(self.op, *products)

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        return x if self._scale is None else x * self._scale

    def matmat(self, x: np.ndarray) -> np.ndarray:
        self.op.matvecs += x.shape[-1]
        return self._mm(self._scaled(x))

    def rmatmat(self, y: np.ndarray) -> np.ndarray:
        self.op.matvecs += y.shape[-1]
        return self._rmm(self._scaled(y))

    def matvec(self, x: np.ndarray, out: np.ndarray) -> None:
        """out ← c·A x for one matrix and one column, x (n,) and out (m,): :meth:`matmat`'s product, to
        the bit, written in place; on a dense A a gemv straight into ``out``, without a general
        product's layers, 2-D shapes and copies (the solver's step writes into its basis)."""
        if self._columns is None:
            out[:] = self.matmat(x[:, None])[:, 0]
        else:
            self.op.matvecs += 1
            self._columns[0](x, out)

    def rmatvec(self, y: np.ndarray, out: np.ndarray) -> None:
        """out ← c·Aᵀ y, as :meth:`matvec`."""
        if self._columns is None:
            out[:] = self.rmatmat(y[:, None])[:, 0]
        else:
            self.op.matvecs += 1
            self._columns[1](y, out)

    def both(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(c·A x, c·Aᵀ y), c the operator's scale, as :meth:`matmat` and :meth:`rmatmat`: in one pass
        over A where the operator has such a product, else two."""
        if self._both is None:
            return self.matmat(x), self.rmatmat(y)
        self.op.matvecs += x.shape[-1] + y.shape[-1]
        return self._both(self._scaled(x), self._scaled(y))


# Entries of a float32 matrix cast to float64 at a time by the float64 products (512 KiB, which
# stays in a core's L2 between the cast and the products): one pass of both products took 0.43–0.74×
# the time of 8 MiB blocks (2000×1000 to 4000×2000 and 384×1536, k = 1 and 8, one core); whole
# float32 solves at tol 1e-6 0.78–0.95× (geometric mean 0.87, 7 cases), results bit for bit the same.
_CAST_BLOCK = 1 << 16

# Up to this many columns the float64 check's products go through C's single pass over a float32 A
# (riemsvd/_steps.c's widened_both, on the threads the solve began with), beyond it through the cast
# blocks and BLAS: the pass took 0.30-0.45 of the blocks' time at one and two columns, 0.35-0.65 at four to
# sixteen, 0.5-0.8 at 32 and 64, 0.7-1.6 at 128 (384x384 to 4000x2000, Intel Xeon, 2 threads).
_WIDENED_COLUMNS = 64


# Above this many bytes a dense A's host steps make both products in one pass over A
# (riemsvd._steps.gk_fused, gk_run); at and below, the two products. With single steps from Python the
# pass took 1.00-1.08 of the time at 384x384 and 512x512 float32, and A took it above 1 MiB only
# (docs/algorithm.md, "One pass over A"). With the steps between two looks in one call (gk_run) the
# Python around each step is gone, and whole solves below 1 MiB took 0.82-0.97 of the two products'
# time (384x384 float32, 256x256, 128x128, 300x200, 100x1000, 2000x50, 50x2000 and 512x256 float64,
# 512x512 float32; k = 1, 4, 8; alternated in one process, Intel Xeon, 2 threads; 1.03 on an
# 18-product solve, noise), and on one thread no less (0.85-0.94). So every size takes it.
FUSED_ABOVE = 0

# Bytes of A that each thread of that pass takes at least. Above 1 MiB, where A took the pass before,
# its shares on up to 16 threads (the pool's most) were never smaller, and a smaller A gets no smaller
# ones: each round wakes or spins its workers (a sleeping one took about 50 µs to wake; _steps.c's
# MAX_ABS_SHARE). On this 2-core machine the rule changes A below 128 KiB only, and one thread against
# two below 512 KiB took 0.92-1.03 of the time (128x128 to 300x300): it guards machines with many
# cores, where it was not measured.
FUSED_SHARE = 1 << 16

# Where torch's products serve a dense A's single columns (torch_products), a block of fewer columns
# than this is given to torch as its transpose, Xᵀ Aᵀ (the host loop's blocks are column-major, so
# Xᵀ is row-major and no copy is made): on an Intel Xeon (2 cores, MKL on two threads) the pair
# (Xᵀ Aᵀ)ᵀ, (Yᵀ A)ᵀ of 2–8 float64 columns took 0.72–1.07 ms at 2000×1000 and 2.8–4.4 at 4000×2000,
# where A X, Aᵀ Y took 1.0–1.03 and 4.4–4.5, and numpy's BLAS on its one thread (what these blocks
# had taken, measured on an AMD EPYC against torch's A X) 2.3–2.7 and 10.9–13.2; float32 alike.
# From 12 columns on the two forms of A X were within 15%, and A X is kept; Aᵀ Y is (Yᵀ A)ᵀ at any
# width (riemsvd._backend.mm_t: 32 float64 columns of a 4096×1024 A took 12.0 ms as Aᵀ Y and 5.1 so,
# torch 2.13 on the 2-core AMD EPYC).
_TORCH_BLOCKS_FROM = 12


class DenseOperator(Operator):
    """A dense tensor of shape (..., m, n); Aᵀ products use the transposed view, never a copy.
    ``from_numpy``: the caller passed A as a numpy array, whose products on the CPU then prefer numpy's
    BLAS (:func:`riemsvd._backend.torch_products`)."""

    def __init__(self, a: torch.Tensor, from_numpy: bool = False) -> None:
        super().__init__(a.shape[-2:], a.shape[:-2], a.dtype, a.device)
        self.a = blas_ready(a)
        self.from_numpy = from_numpy
        # the threads torch has as the solve begins, before solver_threads limits them: riemsvd._steps's
        # own pass over A takes up to them (claim_fused_pass), and the float64 check's beside it
        # (_check_threads)
        self.threads = torch.get_num_threads()
        self._on_torch: bool | None = None
        self._fused: FusedPass | None = None  # see claim_fused_pass

    def check_entries(
        self, magnitude: torch.Tensor | float | None = None, after_products: bool = False
    ) -> None:
        """For an A whose entries :func:`riemsvd.solve` left unread (``unchecked``: see
        :func:`reads_entries_in_pass`): max |a_ij| read now (or ``magnitude``, what the solve's first
        pass read, a number), checked finite (ValueError, as the argument checks say it), and the scale
        set (:meth:`rescale`). Raises :class:`Rescaled` where the scale is set ``after_products``, which
        were made without it. Nothing where the entries were checked."""
        if not self.unchecked:
            return
        if isinstance(magnitude, float) and self._in_range(magnitude, self._entry_limit()):
            # the usual case, decided on the number: the tensor's checks took 45 µs, cold after the pass
            self.magnitude, self.unchecked = torch.tensor(magnitude, dtype=self.dtype), False
            return
        from riemsvd._validate import check_magnitude  # which imports this module

        magnitude = max_abs(self.a) if magnitude is None else torch.as_tensor(magnitude, dtype=self.dtype)
        check_magnitude(magnitude)
        self.unchecked = False
        self.rescale(magnitude)
        if after_products and self.scale is not None:
            raise Rescaled

    def _matmat(self, x):
        return mm(self.a, x)

    def _rmatmat(self, y):
        return mm(self.a.mT, y)

    def one_matrix(self, index: tuple) -> DenseOperator:
        """The matrix at ``index`` of the batch as an operator of its own (a view), in this operator's
        units (its scale), counting its own products."""
        one = DenseOperator(self.a[index], self.from_numpy)
        if self.scale is not None:
            one.scale = self.scale[index]
        return one

    def torch_products(self) -> bool:
        if self._on_torch is None:  # decided at the first call, before the solve sets its threads
            on_cpu = torch.device(self.device).type == "cpu"
            self._on_torch = on_cpu and self.a.dim() == 2 and torch_products(self.a, self.from_numpy)
        return self._on_torch

    def _column_products(self):
        a = numpy_view(self.a)
        if a is None or a.ndim != 2:
            return None
        if self.torch_products():
            t = self.a.detach()
            return (
                lambda x, out: torch.mv(t, torch.from_numpy(x), out=torch.from_numpy(out)),
                lambda y, out: torch.mv(t.mT, torch.from_numpy(y), out=torch.from_numpy(out)),
            )
        return (lambda x, out: np.matmul(a, x, out=out)), (lambda y, out: np.matmul(a.T, y, out=out))

    def claim_fused_pass(self) -> bool:
        """Whether this solve's host steps make both products in one pass over A (a 2-D A of more than
        ``FUSED_ABOVE`` bytes, which is any, with contiguous rows, where riemsvd._steps was built), on
        up to ``threads``, one per ``FUSED_SHARE`` bytes of A (its workers woken now, for the first
        step): then :func:`riemsvd._backend.solver_threads` limits torch's and numpy's (its
        ``own_pass``). Its products then need no measurement (:meth:`torch_products`): numpy's."""
        a = one_pass_view(self.a)
        self._fused = None
        # a scaled A's steps take its scaled products (HostView)
        if a is None or STEPS is None or self.scale is not None or a.nbytes <= FUSED_ABOVE:
            return False
        self._fused, self._on_torch = FusedPass(a, max(1, min(self.threads, a.nbytes // FUSED_SHARE))), False
        STEPS.wake(self._fused.threads)  # the workers, asleep between solves, awake for the first pass
        return True

    def _fused_pass(self) -> FusedPass | None:
        return self._fused

    def _numpy_products(self):
        a = numpy_view(self.a)
        if a is None:
            return None
        at = a.swapaxes(-1, -2)
        if self.torch_products():  # measured on one column; blocks of a few as their transposes
            t = self.a.detach()

            def matmat(x):
                if 1 < x.shape[-1] < _TORCH_BLOCKS_FROM:
                    return mm_t(t.mT, torch.from_numpy(x)).numpy()
                return (t @ torch.from_numpy(x)).numpy()

            def rmatmat(y):  # Aᵀ Y as (Yᵀ A)ᵀ at any width (below)
                if y.shape[-1] > 1:
                    return mm_t(t, torch.from_numpy(y)).numpy()
                return (t.mT @ torch.from_numpy(y)).numpy()

            return matmat, rmatmat
        return (lambda x: np.matmul(a, x)), (lambda y: np.matmul(at, y))

    def checks_in_one_pass(self) -> bool:
        """Whether this float32 A's float64 products (:meth:`_float64_products`) take C's one pass
        over A for both: one matrix on the host whose rows, or columns, are contiguous (a transposed
        view's products are its transpose's, their roles swapped)."""
        a = numpy_view(self.a)
        return (
            STEPS is not None
            and a is not None
            and a.ndim == 2
            and a.dtype == np.float32
            and (a.strides[-1] == a.itemsize or _by_columns_view(a))
        )

    def _float64_products(self):
        a = numpy_view(self.a)
        if a is None:
            return None
        if _by_columns_view(a):
            # a transposed view (W.T, or a batch's .mT): its row blocks would be strided reads, cast
            # 2–14× slower (384×384 to 4096×1024, one column); they are Aᵀ's rows, the products'
            # roles swapped
            matmat, rmatmat, both = _widened_products(a.swapaxes(-1, -2), self._check_threads())
            return rmatmat, matmat, lambda x, y: both(y, x)[::-1]
        return _widened_products(a, self._check_threads())

    def _check_threads(self) -> int:
        """The threads of the float64 check's C pass: those torch had as the solve began, where its
        steps are its own pass over A (torch and numpy then run on one, solver_threads; the check
        takes its own shares, by rows, whatever the steps' pass takes); one beside the products of
        torch or numpy, whose pools keep their threads and spin after each call (the steps' pass
        beside them took 2–4× its time; in solves of a transposed view, 1536×384 to 4000×2000, k = 1
        and 8, the check on two threads took 0.96–0.99 of the solve's time on one: a review's
        caution, kept)."""
        return self.threads if self._fused is not None else 1


def _by_columns_view(a: np.ndarray) -> bool:
    """Whether A's columns, not its rows, are contiguous (a transposed view): its float64 products
    read Aᵀ's rows instead (:meth:`DenseOperator._float64_products`)."""
    return a.strides[-1] != a.itemsize and a.strides[-2] == a.itemsize


def _widened_products(a: np.ndarray, threads: int):
    """(matmat, rmatmat, both): float64 products of a float32 dense A (a numpy array (..., m, n)) that
    read it in row blocks cast to float64, so that no float64 copy of A is kept; ``both`` takes
    A x and Aᵀ y in one pass over A, C's on up to ``threads`` threads where it can."""
    m, n = a.shape[-2:]
    rows = max(1, _CAST_BLOCK // max(1, n))  # rows of one matrix cast at a time
    blocks = [slice(i, i + rows) for i in range(0, m, rows)]

    def cast_blocks(one):
        """(rows, the block of one matrix's rows cast to float64) in turn, each into the same
        buffer: a fresh block per cast also paid for its pages."""
        buf = np.empty((min(rows, m), n))
        for b in blocks:
            block = buf[: min(b.stop, m) - b.start]
            np.copyto(block, one[b])
            yield b, block

    def one_matmat(one, x):
        return np.concatenate([block @ x for _, block in cast_blocks(one)])

    def one_rmatmat(one, y):
        return sum(block.T @ y[b] for b, block in cast_blocks(one))

    def both(x, y):
        if a.ndim != 2 or x.ndim != 2 or y.ndim != 2:  # a batch: a pass for each
            return _per_matrix(a, x, one_matmat), _per_matrix(a, y, one_rmatmat)
        x, y = x.astype(np.float64, copy=False), y.astype(np.float64, copy=False)
        k = x.shape[-1]
        if (
            k == y.shape[-1] <= _WIDENED_COLUMNS
            and STEPS is not None
            and (a.strides[1] == a.itemsize or n <= 1)
        ):
            # C's one pass, which casts each entry where it is used (docs/algorithm.md)
            ax, aty = np.empty((k, m)), np.empty((k, n))
            STEPS.widened_both(a, np.ascontiguousarray(x.T), np.ascontiguousarray(y.T), ax, aty, threads)
            # in C order, as the other products and the check's C arithmetic (_steps.finish) take them
            return np.ascontiguousarray(ax.T), np.ascontiguousarray(aty.T)
        # each block cast once serves both products: 0.59–0.69× the time of two passes that cast
        # fresh blocks (384×384 to 4096×1024; 0.97× at 1536×384 with k = 8)
        ax, aty = np.empty((m, k)), np.zeros((n, y.shape[-1]))
        for b, block in cast_blocks(a):
            np.matmul(block, x, out=ax[b])
            aty += block.T @ y[b]
        return ax, aty

    return (lambda x: _per_matrix(a, x, one_matmat)), (lambda y: _per_matrix(a, y, one_rmatmat)), both


def blas_ready(a):
    """A dense tensor ``a`` (..., m, n) as it is where each matrix has its rows or its columns
    contiguous, as BLAS reads a matrix (a transposed view, a slice of rows or of columns), else as one
    contiguous copy: for a view strided both ways (A[:, ::2]) every product made its own copy or ran
    numpy's plain loops, and the checks read it strided (2000×1000: 6–13× the solve's time, k = 1
    and 8); one too where its entries lie at addresses that are no multiple of their size. The copy
    is differentiable: gradients reach the view. Anything else is returned as it is."""
    if not isinstance(a, torch.Tensor) or a.layout != torch.strided or a.is_nested or a.dim() < 2:
        return a  # a nested tensor too: the checks name what it is
    m, n = a.shape[-2:]
    try:
        rs, cs = a.stride()[-2:]
    except RuntimeError:  # a tensor inside a torch.func transform has no strides to read
        return a
    readable = m <= 1 or n <= 1 or (cs == 1 and rs >= n) or (rs == 1 and cs >= m)
    # entries at an address that is no multiple of their size (torch.frombuffer at an odd offset):
    # the C kernels refuse to read them as floats (a TypeError from inside, a new user's trial)
    try:
        aligned = a.data_ptr() % a.element_size() == 0
    except (RuntimeError, NotImplementedError):  # no storage to read (a fake tensor under torch.compile)
        aligned = True
    return a if readable and aligned else a.clone(memory_format=torch.contiguous_format)


def _per_matrix(a: np.ndarray, x: np.ndarray, product) -> np.ndarray:
    """``product(a_i, x_i)`` for each matrix of a batch (..., m, n) and its x, stacked; one call for
    a single matrix."""
    if a.ndim == 2 and x.ndim == 2:
        return product(a, x)
    batch = np.broadcast_shapes(a.shape[:-2], x.shape[:-2])
    a, x = np.broadcast_to(a, batch + a.shape[-2:]), np.broadcast_to(x, batch + x.shape[-2:])  # views
    out = np.stack([product(a[i], x[i]) for i in np.ndindex(batch)])
    return out.reshape(batch + out.shape[-2:])


class Rescaled(Exception):
    """The solve's first pass found A's entries beyond the range its products keep (see
    :meth:`Operator.rescale`): the operator is scaled now, and the solve starts again."""


# From this many bytes a dense A's entries are read by the solve's first pass over A, not before it
# (:func:`reads_entries_in_pass`): max |a_ij|'s own read had taken 3-7% of solves that converge fast
# (0.38 of 5.2 ms at 2000×1000, 0.10 of 1.34 at 1536×384, 0.76 of 12.6 on a 4096×1024 gradient;
# float64, k = 1), where the pass takes each block's maximum while the block is in the cache.
READ_IN_PASS_ABOVE = 1 << 18


def one_pass_view(a: torch.Tensor) -> np.ndarray | None:
    """A dense A's numpy view where riemsvd._steps's one pass can read it (built, on the CPU, 2-D with
    contiguous, aligned rows of float32 or float64); None otherwise."""
    view = numpy_view(a) if STEPS is not None and torch.device(a.device).type == "cpu" else None
    if view is None or view.ndim != 2 or view.strides[-1] != view.itemsize or not view.flags.aligned:
        return None
    return view


def reads_entries_in_pass(a, method: str) -> bool:
    """Whether :func:`riemsvd.solve` leaves a dense A's entries to its first pass over A
    (``riemsvd._steps.gk_fused``'s max |a_ij|), unread by the argument checks: a tensor of more than
    ``READ_IN_PASS_ABOVE`` bytes that the one pass reads (:func:`one_pass_view`), solved by the
    iteration. Where the solve then takes another path, it reads them before
    (:meth:`DenseOperator.check_entries`)."""
    if not (
        method in ("auto", "iterative")
        and isinstance(a, torch.Tensor)
        and a.layout == torch.strided
        and a.numel() * a.element_size() > READ_IN_PASS_ABOVE
    ):
        return False
    return one_pass_view(a) is not None


class SparseOperator(Operator):
    """A 2-D torch sparse matrix (COO, CSR or CSC), kept in CSR together with its CSR transpose.

    Sparse-times-dense kernels are fast for CSR only; the transpose costs one more copy of the
    nonzeros, the usual price (scipy's ``svds`` pays it too).
    """

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__(a.shape, (), a.dtype, a.device)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            a = a.coalesce() if a.layout == torch.sparse_coo else a
            self.a = a.to_sparse_csr()
            self.at = a.t().to_sparse_csr()

    def _matmat(self, x):
        return self.a @ x

    def _rmatmat(self, y):
        return self.at @ y

    def _sparse_rows(self) -> SparseRows | None:
        if self.device.type != "cpu":
            return None
        a = self.a.detach()
        dtype = np.float32 if self.dtype == torch.float32 else np.float64
        arrays = (a.crow_indices().numpy(), a.col_indices().numpy(), a.values().numpy())
        return sparse_rows(*arrays, True, tuple(self.shape), dtype)

    @functools.cached_property
    def row_terms(self) -> int:  # type: ignore[override]
        return max(_most_per_row(self.a.crow_indices()), _most_per_row(self.at.crow_indices()))

    @property
    def entries(self) -> int:
        return int(self.a.values().numel())

    def _float64_products(self):
        if self.device.type != "cpu":
            return None
        a, at = self.a.to(torch.float64), self.at.to(torch.float64)  # for the check alone: freed after it

        def product(mat):
            return lambda x: (mat @ torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()

        return product(a), product(at)


class AdjointError(ValueError):
    """A LinearOperator-like A without Aᵀ products: its message is whole (not one of a product's
    wrong length, which ScipyOperator._apply wraps)."""


def _adjoint(rmatmat):
    """A LinearOperator-like A's Aᵀ products, with the failure of one defined without them (scipy's
    ``LinearOperator(shape, matvec=f)``: 'NoneType' object is not callable, deep in scipy) said plainly."""

    def apply(y):
        try:
            return rmatmat(y)
        except (NotImplementedError, TypeError) as err:
            raise AdjointError(
                f"`A`'s product with Aᵀ (rmatvec/rmatmat) failed ({type(err).__name__}: {err}); riemsvd "
                "needs it: give the LinearOperator an rmatvec (or rmatmat)."
            ) from err

    return apply


class ScipyOperator(Operator):
    """A scipy sparse matrix or a ``LinearOperator``-like object, applied on the host in numpy.

    Vectors are CPU torch tensors; each product converts to numpy and back (no copy for contiguous
    float arrays).
    """

    def __init__(self, a, dtype: torch.dtype) -> None:
        super().__init__(a.shape, (), dtype, torch.device("cpu"))
        self.a = a
        self._np_dtype = np.float32 if dtype == torch.float32 else np.float64
        self._at = None
        # the products a column at a time, each as a 1-D vector (as scipy's svds hands them), for a
        # LinearOperator whose matvec or rmatvec fails on the 2-D columns its matmat passes on: one
        # written for (m,) vectors, X.T @ y − μ·y.sum() for a centered X, broadcast them to (n, n),
        # and the solve failed where svds had run (a new user's trial). Taken for the rest of the
        # solve once a product needed it (_product); products by matvec cost 2.5 ms more in a 384×384
        # solve of 207 products than by matmat, where that works. (A x's, Aᵀ y's), not a dict keyed
        # by the callables: a dataclass's is unhashable (a review)
        self._by_vectors: tuple | None = None
        self._one_at_a_time = False
        # the caller's floating-point error handling, for its own products: the iteration ignores
        # numpy's invalid and overflow warnings in its own arithmetic (riemsvd._solve.execute), which
        # had hidden a caller's matvec's own "overflow encountered in exp" (a review)
        self._caller_errors = np.geterr()
        if hasattr(a, "matmat") and hasattr(a, "rmatmat"):
            self._mm, self._rmm = a.matmat, _adjoint(a.rmatmat)
            if hasattr(a, "matvec") and hasattr(a, "rmatvec"):
                self._by_vectors = _by_columns(a)
        elif is_scipy_sparse(a) or (hasattr(a, "T") and hasattr(a, "__matmul__")):
            # scipy sparse arrays and matrices, whose `T` makes a new object each time (19 µs, 384×384)
            self._at = a.T
            self._mm, self._rmm = a.__matmul__, self._at.__matmul__
        else:
            self._mm, self._rmm = _by_columns(a)

    def _apply(self, fn, x: np.ndarray, rows: int) -> np.ndarray:
        # a product of the wrong length raised numpy's "cannot reshape array of size 40 into shape
        # (50,1)", here or inside scipy's LinearOperator, without naming A's products (a new user's trial)
        if self._at is None:
            # a caller's own products get a copy: one that scaled its input in place (x *= 2, then
            # M @ x / 2) changed the solver's basis vector, and the solve raised "NaN or Inf" where
            # scipy's svds had converged (a new user's trial); the copy is n numbers beside a Python call
            x = x.copy()
        try:
            if self._at is None:
                with np.errstate(**self._caller_errors):
                    out = self._product(fn, x, rows)
            else:  # scipy's sparse kernels, in C: no floating-point warnings to restore
                out = self._product(fn, x, rows)
        except AdjointError:
            raise  # its own message says all (wrapped, it read twice, with a word on lengths)
        except ValueError as err:
            raise ValueError(self._wrong_product(fn, rows, f"failed ({err})")) from err
        if out.size != rows * x.shape[-1]:
            raise ValueError(
                self._wrong_product(fn, rows, f"returned {out.size} entries for {x.shape[-1]} column(s)")
            )
        return np.ascontiguousarray(out.reshape(rows, x.shape[-1]))

    def _product(self, fn, x: np.ndarray, rows: int) -> np.ndarray:
        """fn(x) as an array of A's dtype; a 1-D column at a time where fn fails on the 2-D block,
        whatever it raises (a TypeError, an assertion on x.ndim), or returns the wrong number of
        entries (see ``_by_vectors``). Where that fails too, its error has fn's as its context."""
        if self._by_vectors is None:
            return np.asarray(fn(x), dtype=self._np_dtype)
        vector = self._by_vectors[0 if fn is self._mm else 1]
        if self._one_at_a_time:
            return np.asarray(vector(x), dtype=self._np_dtype)
        try:
            out = np.asarray(fn(x), dtype=self._np_dtype)
            if out.size != rows * x.shape[-1]:
                raise ValueError(f"returned {out.size} entries for {x.shape[-1]} column(s)")
        except Exception:
            out = np.asarray(vector(x), dtype=self._np_dtype)
            self._one_at_a_time = True
        return out

    def _wrong_product(self, fn, rows: int, what: str) -> str:
        product = "A x" if fn is self._mm else "Aᵀ y"
        return (
            f"`A`'s product {product} {what}: A of shape {tuple(self.shape)} gives {rows} entries a column; "
            "check its matvec/rmatvec (which riemsvd hands a column as a 1-D array, as scipy's svds does) "
            "or matmat/rmatmat (a 2-D block of columns)."
        )

    def adjoint_source(self) -> str | None:
        return None if self._at is not None else "`A`'s rmatvec (or rmatmat)"

    def _matmat(self, x):
        return torch.from_numpy(self._apply(self._mm, x.detach().numpy(), self.shape[0]))

    def _rmatmat(self, y):
        return torch.from_numpy(self._apply(self._rmm, y.detach().numpy(), self.shape[1]))

    def _numpy_products(self):
        m, n = self.shape
        return functools.partial(self._apply, self._mm, rows=m), functools.partial(
            self._apply, self._rmm, rows=n
        )

    def _column_products(self):
        return _sparse_column_products(self.a, self._np_dtype, self._at) if self._at is not None else None

    def _sparse_rows(self) -> SparseRows | None:
        a = self.a
        if not _compressed_by_scipy(a):
            return None
        return sparse_rows(a.indptr, a.indices, a.data, a.format == "csr", tuple(self.shape), self._np_dtype)

    @property
    def entries(self) -> int:
        return int(self.a.nnz) if is_scipy_sparse(self.a) else super().entries

    @functools.cached_property
    def row_terms(self) -> int | None:  # type: ignore[override]
        if not is_scipy_sparse(self.a):
            return None
        if self.a.format in ("csr", "csc"):
            return max(_most_per_row(self.a.indptr), int(np.bincount(self.a.indices).max(initial=0)))
        coo = self.a.tocoo()
        return int(max(np.bincount(coo.row).max(initial=0), np.bincount(coo.col).max(initial=0)))

    def _float64_products(self):
        if not is_scipy_sparse(self.a):  # a LinearOperator's products are its own
            return None
        return (lambda x: self.a @ x.astype(np.float64)), (lambda y: self._at @ y.astype(np.float64))


def _compressed_by_scipy(a) -> bool:
    """Whether ``a`` is a CSR or CSC matrix of scipy's own classes, whose products its arrays give: a
    subclass may compute its products otherwise."""
    import scipy.sparse as sp

    return type(a) in (sp.csr_matrix, sp.csc_matrix, sp.csr_array, sp.csc_array)


def _sparse_column_products(a, dtype, at=None):
    """:meth:`Operator._column_products` of a scipy CSR or CSC matrix whose values are of the solver's
    dtype: scipy's own kernels (``csr_matvec``, ``csc_matvec``: what ``a @ x`` runs for a 1-D x, to the
    bit) adding into ``out``. A sparse 384×384 solve (k = 1, 86 products) took 2.5 ms against 3.0
    through ``a @ x[:, None]`` and its layers, where the kernel itself is 2–3 µs a product. None for
    other formats and dtypes, or where scipy no longer has the kernels (then the general products).
    ``at``: A's transpose, where the caller has made it (each ``a.T`` is a new object)."""
    try:
        from scipy.sparse import _sparsetools
    except ImportError:  # pragma: no cover - a private module of scipy's, present since 0.14
        return None
    if not _compressed_by_scipy(a) or a.dtype != dtype:
        return None

    def product(mat):
        kernel = getattr(_sparsetools, f"{mat.format}_matvec", None)
        rows, cols = mat.shape

        def apply(x: np.ndarray, out: np.ndarray) -> None:
            out.fill(0.0)  # the kernel adds A x to out
            try:
                kernel(rows, cols, mat.indptr, mat.indices, mat.data, x, out)
            except (TypeError, ValueError):  # pragma: no cover - a scipy whose kernel changed its call
                out[:] = mat @ x

        return None if kernel is None else apply

    # a CSR matrix's transpose is CSC on the same arrays
    products = product(a), product(a.T if at is None else at)
    return None if None in products else products


def _most_per_row(indptr) -> int:
    """The most entries in one row of a compressed matrix with these row (or column) pointers."""
    counts = indptr[1:] - indptr[:-1]  # numpy or torch
    return int(counts.max()) if len(counts) else 0


def _by_columns(a) -> tuple:
    """A's products (A x, Aᵀ y) a column at a time, each as a 1-D vector through its matvec and
    rmatvec, as scipy's svds hands them."""
    return _columnwise(a.matvec), _adjoint(_columnwise(a.rmatvec))


def _columnwise(matvec):
    # each column copied as it comes: a matvec that returns one output buffer, refilled at each call
    # (np.dot(A, x, out=self.buffer)), had every column of the block alias the last, and the solve
    # returned S = (4.13, 0, 0) for (6.69, 4.20, 4.13), with a warning that called the products not
    # linear (a new user's trial)
    def matmat(x: np.ndarray) -> np.ndarray:
        return np.stack([np.array(matvec(x[:, j])).reshape(-1) for j in range(x.shape[1])], axis=1)

    return matmat


def stored_values(a) -> np.ndarray:
    """A scipy sparse matrix's stored values, duplicates unsummed (as a COO copy holds them): the
    ``data`` array itself for the formats that keep every value there, without tocoo()'s copy (46 µs
    at 384×384 with 1% of entries); through COO for the others (DIA's ``data`` holds padding). Fit
    for a NaN check and a maximum, not for sums of squares: copies of one entry are not added up."""
    return a.data if getattr(a, "format", None) in ("csr", "csc", "coo", "bsr") else a.tocoo().data


def is_scipy_sparse(a) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a dependency
        return False
    return sp.issparse(a)


def is_linear_operator_like(a) -> bool:
    return (
        hasattr(a, "shape")
        and len(getattr(a, "shape", ())) == 2
        and (
            (hasattr(a, "matvec") and hasattr(a, "rmatvec"))
            or (hasattr(a, "matmat") and hasattr(a, "rmatmat"))
        )
    )


def max_abs(a: torch.Tensor) -> torch.Tensor:
    """max |a_ij| per matrix, shape (...): without the copy that |a| would make. NaN where a matrix
    holds one, Inf where it holds an infinity and no NaN."""
    if a.device.type == "cpu" and a.dim() == 2:
        # one pass over A, in the memory order: C's vectorized maxima (riemsvd/_steps.c) at numpy's
        # max's speed, where torch's aminmax took 3.9× their time at 384×384 float64, 1.6× at
        # 2000×1000 and 2.0× at 4000×2000 (1.6–4.3× in float32), and numpy's max and min are two
        # passes (inside solves 3.38 ms against aminmax's 1.54 at 2000×1000). On a transposed view
        # aminmax took 15× as long: the memory order is read.
        t = a.detach()
        if not t.is_contiguous() and t.mT.is_contiguous():
            t = t.mT
        if t.is_contiguous():
            top = _max_abs_host(t)
            if top is not None:
                return top
            # torch's on one thread: beside the OpenBLAS threads that a numpy product left spinning,
            # its 2-thread reductions took 3 ms and then 12 ms at 2000×1000 (the OpenMP barrier waits
            # for a descheduled thread)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                low, high = torch.aminmax(t)  # NaN propagates, Inf stays
            finally:
                torch.set_num_threads(threads)
            return torch.maximum(high, -low)
    if a.device.type == "cpu":
        try:
            x = a.detach().numpy()
            return torch.from_numpy(np.asarray(np.maximum(x.max(axis=(-2, -1)), -x.min(axis=(-2, -1)))))
        except (RuntimeError, TypeError):
            pass
    return torch.maximum(a.amax((-2, -1)), -a.amin((-2, -1)))


def _max_abs_host(t: torch.Tensor) -> torch.Tensor | None:
    """max |t_ij| of a contiguous float32 or float64 CPU tensor by riemsvd._steps, as a 0-d tensor of
    t's dtype; None where that module was not built, or t has no numpy view (other dtypes, a tensor
    inside a torch.func transform)."""
    if STEPS is None or t.dtype not in (torch.float32, torch.float64):
        return None
    x = numpy_view(t)
    if x is None:
        return None
    # on the threads torch has (riemsvd._steps's pool); on t's device, not the default one
    return torch.tensor(STEPS.max_abs(x, torch.get_num_threads()), dtype=t.dtype, device=t.device)


def adjoint_mismatch(op: Operator) -> tuple[float, float]:
    """(mismatch, defect) of ``op``'s products on fixed random inputs X = (x₁, x₂, x₁ + x₂) (n×3) and
    Y = (y₁, y₂, y₁ + y₂) (m×3) in the operator's dtype (six products, counted).

    ``mismatch``: how far the Aᵀ products are from the transpose of the A products, ‖Yᵀ(A X) −
    (Aᵀ Y)ᵀ X‖_F relative to the larger of the two. Every entry of Yᵀ A X is a random inner product of
    mean square ‖A‖²_F, so this estimates ‖A − Bᵀ‖_F/‖A‖_F for an Aᵀ that is really B, at any size;
    rounding leaves about ε·√max(m, n). 0 where both sides vanish, 1 where one does.

    ``defect``: how far the products are from additive, ‖A(x₁ + x₂) − A x₁ − A x₂‖ relative to the
    largest of those images (and the same for Aᵀ, the larger of the two): the products' own rounding,
    about ε·√n for a linear map, and of order 1 where they are nothing but rounding (an operator that
    is zero up to it: a data matrix of identical rows centred, X − 1μᵀ, whose products had been
    blamed on its rmatvec; a new user's trial). A scale (:meth:`Operator.rescale`) multiplies both
    sides alike."""
    m, n = op.shape
    gen = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(tuple(op.batch_shape) + (rows, 2), generator=gen, dtype=torch.float64) for rows in (n, m)
    )
    x, y = (torch.cat([z, z.sum(-1, keepdim=True)], dim=-1) for z in (x, y))
    ax = op.matmat(x.to(op.device, op.dtype)).double().cpu()
    aty = op.rmatmat(y.to(op.device, op.dtype)).double().cpu()
    left, right = y.mT @ ax, aty.mT @ x
    size = torch.maximum(torch.linalg.matrix_norm(left), torch.linalg.matrix_norm(right))
    gap = torch.linalg.matrix_norm(left - right)
    ratio = torch.where(size > 0, gap / torch.where(size > 0, size, 1.0), 0.0)
    mismatch = float(ratio.max()) if ratio.numel() else 0.0
    return mismatch, max(_additivity_defect(ax), _additivity_defect(aty))


def _additivity_defect(images: torch.Tensor) -> float:
    """‖z₃ − z₁ − z₂‖ over the largest ‖zᵢ‖ for the columns (z₁, z₂, z₃) of ``images`` (..., rows, 3),
    the worst of a batch; 0 where all vanish."""
    norms = torch.linalg.vector_norm(images, dim=-2)  # (..., 3)
    size = norms.amax(-1)
    defect = torch.linalg.vector_norm(images[..., 2] - images[..., 0] - images[..., 1], dim=-1)
    ratio = torch.where(size > 0, defect / torch.where(size > 0, size, 1.0), 0.0)
    return float(ratio.max()) if ratio.numel() else 0.0


# An additivity defect (:func:`adjoint_mismatch`) above this says the products are rounding noise, or
# not linear: a linear map's is its rounding, about ε·√n, far below it even where its outputs are
# differences of much larger terms (X − 1μᵀ for data 1e4 away from their mean: 1e-12 in float64)
_NOT_LINEAR = 1e-2
# An additivity defect this many times the dtype's product floor says the products are less precise
# than the dtype, for the solve's warning (where its residual stalls at about that defect): a float64
# LinearOperator computing in float32 shows 3e7 times. norm_bounds asks less (``imprecise``): what its
# certificate's rounding allowance covers.
_IMPRECISE = 100
# A caller's Aᵀ that misses A's transpose by this many times the products' rounding does not match
# it: product_fault's test on random vectors, and the solver's on its own (riemsvd._subspace's
# AdjointWatch)
MISMATCH_ROUNDINGS = 100


def product_fault(op: Operator, imprecise: float | None = None) -> str | None:
    """What is wrong with a caller's products, said for an error or a warning: not linear to their
    rounding (:func:`adjoint_mismatch`'s defect above 1%), or Aᵀ's missing A's transpose by more than
    100 times the products' rounding (:func:`product_floor`, or the defect where that is larger), or
    the products less precise than their dtype (the defect above ``imprecise``, by default
    ``_IMPRECISE`` times that floor); None where A is split across processes, or nothing is found.

    A caller's map whose Aᵀ is riemsvd's VJP (:meth:`Operator.map_source`) is asked the defect alone:
    a VJP is the adjoint of the map's Jacobian, so Aᵀ matches whatever the map is. A convolution plus
    1e-3·x² (the map's own check at :func:`riemsvd.linear_operator` passes below 1%) had stalled
    after 3000 products with a warning that blamed a cluster of close values, and ran to maxiter at
    1e-2 (a new user's trial). Nothing is asked where both products are riemsvd's own."""
    adjoint = op.adjoint_source()
    source = adjoint or op.map_source()
    if source is None or op.distributed:
        return None
    mismatch, defect = adjoint_mismatch(op)
    floor = product_floor(op.dtype, *op.shape)
    imprecise = _IMPRECISE * floor if imprecise is None else imprecise
    if adjoint is None:  # a map with the VJP for Aᵀ
        if not defect > imprecise:
            return None
        return (
            f"its products are not linear to their rounding: A(x + y) differs from A x + A y by {defect:.2g} "
            f"of their size on random x, y, {defect / floor:.2g} times what rounding in {op.dtype} leaves. "
            f"Check {source}: a map that is not linear has no singular values (its Aᵀ, a vector-Jacobian "
            "product, is the adjoint of its Jacobian alone), and one computed in a lower precision than "
            "its dtype is known only to that accuracy."
        )
    if defect > _NOT_LINEAR:
        return (
            f"its products are not linear to their rounding: A(x + y) differs from A x + A y by "
            f"{defect:.2g} of their size on random x, y. Either A is zero up to the rounding of its "
            "products (a centred data matrix whose rows are all alike), which leaves its singular "
            "values undefined beyond that rounding, or the products are not a linear map (check `A`'s "
            f"products and {source}; a matvec that returns the same array on every call makes scipy's "
            "LinearOperator.matmat, which stacks its results, repeat its last column)."
        )
    level = max(floor, defect)
    if mismatch > MISMATCH_ROUNDINGS * level:
        return (
            f"Aᵀ's products do not match A's: ⟨A x, y⟩ and ⟨x, Aᵀ y⟩ differ by {mismatch:.2g} of "
            f"their size on random x, y, where rounding in {op.dtype} leaves about {level:.1g}. Check "
            f"{source}: it must return Aᵀ y for the A that the products apply, in the same precision."
        )
    if defect > imprecise:
        return (
            f"its products carry errors of {defect:.2g} of their size (A(x + y) against A x + A y on "
            f"random x, y), {defect / floor:.2g} times what rounding in {op.dtype} leaves: they are "
            "computed in a lower precision than the dtype A declares (declare the dtype they are "
            "computed in, or compute them in the one declared), or subtract large terms that cancel "
            "(a mean far above the data's spread: subtract it from the data first). Results are known "
            "only to that accuracy."
        )
    return None


def probe_scale(op: Operator) -> Operator:
    """``op`` rescaled from one product where it is a ``LinearOperator``-like object, whose entries are
    not known: max |(A x)ᵢ| for a fixed random x of unit norm stands for the dense A's max |a_ij| in
    :meth:`Operator.rescale` (a power of two, where that lies beyond 2^±(max exponent / 4)). The
    product is counted. Without it, an operator with entries near 1e-200 had its residual's squares
    underflow to 0 (``converged=True`` after 3 iterations, σ off by up to 66%), and one near 1e155
    overflowed (a ``norm_bounds`` upper bound at 0.88 of ‖A‖₂). Left as it is where A x is 0 or not
    finite (the solve then reports what it meets). Nothing to do where the magnitude is known (scipy
    sparse, or probed already: norm_bounds' own solves run on its probed operator)."""
    if not isinstance(op, ScipyOperator) or op.magnitude is not None:
        return op
    n = op.shape[1]
    x = torch.randn((n, 1), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = op.matmat((x / math.sqrt(n)).to(op.dtype))
    size = float(y.abs().max()) if y.numel() else 0.0
    if not 0 < size < math.inf:
        return op
    return op.rescale(torch.tensor(size, dtype=torch.float64))


def rescaled(op: Operator, magnitude: torch.Tensor, limit: float | None = None) -> Operator:
    """``op`` where :meth:`Operator.rescale` leaves it as it is, else a scaled copy of it: a caller's
    operator keeps its units, and counts the copy's products (they share ``matvecs``)."""
    magnitude = magnitude.to(op.dtype)
    scale = op._scale_for(magnitude, limit)
    if scale is None:
        return op
    twin = copy.copy(op)
    twin.magnitude, twin.scale = magnitude, scale
    return twin


def scaled_by_entries(op: Operator, limit: float | None = None) -> Operator:
    """``op``, or a copy of it scaled by a power of two (:func:`rescaled`), where the magnitude of its
    entries is known — ``op.magnitude``, or :meth:`Operator.entry_magnitude` — and outside
    2^±(max exponent / 4) (or [1/limit, limit]); ``op`` itself where it is scaled already."""
    if op.scale is not None:
        return op
    magnitude = op.magnitude if op.magnitude is not None else op.entry_magnitude()
    return op if magnitude is None else rescaled(op, magnitude, limit)


def as_operator(
    a, magnitude: torch.Tensor | None = None, from_numpy: bool = False, unchecked: bool = False
) -> Operator:
    """Wrap ``a`` (already validated) as an :class:`Operator`; ``magnitude`` is max |a_ij| per matrix
    of a dense ``a`` when the caller has it already; ``from_numpy``: a dense ``a`` is the tensor view
    of the caller's numpy array (:class:`DenseOperator`); ``unchecked``: a dense ``a`` whose entries
    were left unread (:func:`reads_entries_in_pass`), unscaled until they are read
    (:meth:`DenseOperator.check_entries`). An operator passed in is used as it is, or as a scaled copy
    where its entries are known and far from 1 (a Conv layer with float32 weights of 1e30 stalled 30%
    below its σ₁, products of squares overflowing; a review)."""
    if isinstance(a, Operator):
        return scaled_by_entries(a)
    if isinstance(a, torch.Tensor):
        if a.layout == torch.strided:
            if unchecked:
                dense = DenseOperator(a, from_numpy)
                dense.unchecked = True
                return dense
            if magnitude is None or magnitude.shape != a.shape[:-2]:
                magnitude = max_abs(a)
            return DenseOperator(a, from_numpy).rescale(magnitude)
        op = SparseOperator(a)
        values = op.a.values()
        return op.rescale(values.abs().max() if values.numel() else torch.zeros(()))
    if is_scipy_sparse(a):
        data = stored_values(a)
        sop = ScipyOperator(a, _NUMPY_TO_TORCH[np.dtype(a.dtype)])
        return sop.rescale(torch.tensor(float(np.abs(data).max()) if data.size else 0.0, dtype=torch.float64))
    if is_linear_operator_like(a):
        return ScipyOperator(a, _NUMPY_TO_TORCH[np.dtype(a.dtype)])
    raise TypeError(f"cannot wrap {type(a).__name__} as an operator")
