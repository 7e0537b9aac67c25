"""Where the solver's matrix products run on the CPU, and the thread setting around a solve.

Measured on the 2-core AMD EPYC machines this project runs on (docs/benchmarks.md): numpy's BLAS
(OpenBLAS, shipped with numpy) computes the tall-skinny products the solver is made of (A @ X with a
few columns, a basis times a small matrix) 2–5× faster than torch's MKL, and torch's idle OpenMP
threads, spinning after each parallel region, slow every BLAS call that follows by up to 2×. So on the
CPU the products go through numpy, and torch's own (small) operations run on one thread for the
duration of a solve. ``RIEMSVD_CPU_BLAS=torch`` keeps everything in torch.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

__all__ = ["mm", "readable_any", "solver_threads"]

NUMPY_BLAS = os.environ.get("RIEMSVD_CPU_BLAS", "numpy").lower() != "torch"


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched ``a @ b``; by numpy's BLAS for plain CPU tensors that do not require grad (and for
    numpy arrays, the CPU solver's vectors)."""
    if isinstance(a, np.ndarray):
        return np.matmul(a, b)
    if (
        NUMPY_BLAS
        and a.device.type == "cpu"
        and b.device.type == "cpu"
        and a.dtype == b.dtype
        and not (a.requires_grad or b.requires_grad)
    ):
        try:
            return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))
        except (RuntimeError, TypeError):  # tensors wrapped by torch.func transforms have no numpy view
            pass
    return a @ b


_CONTROLLER = None


def _blas_threads(limit: int):
    """numpy's BLAS limited to ``limit`` threads (threadpoolctl; its controller is built once)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=limit, user_api="blas")


# Up to this many entries of A, numpy's BLAS runs on one thread during a solve (see solver_threads).
ONE_BLAS_THREAD_UP_TO = 1_500_000


@contextlib.contextmanager
def solver_threads(device: torch.device, entries: int = 0, *, distributed: bool = False):
    """Run torch single-threaded on the CPU during a solve, and numpy's BLAS too for small A.

    Both thread pools spin for a while after each parallel call. torch's threads slowed the OpenBLAS
    calls that followed them 2×, so torch runs on one thread here. OpenBLAS's threads, left spinning
    after a solve, slowed the torch training step that followed it 2× (a spectrally normalized
    1024×1024 Linear: 50 ms a step, 22.6 ms with one BLAS thread); but for larger A two BLAS threads
    are worth it (2000×1000 Gaussian, k = 1: 110 ms against 171 ms with one). So OpenBLAS gets one
    thread up to ``ONE_BLAS_THREAD_UP_TO`` entries of A (``entries``, batch included).

    A process of a ``distributed`` solve (A split across processes) gives its BLAS the threads torch
    has in it: the budget the user (or torchrun, which sets one per process) gave each process. Two
    processes on 2 cores, each with OpenBLAS's default 2 threads, took 3165 ms for a 4000×2000
    Gaussian matrix (k = 1) against 1863 ms with one thread each.
    """
    if not (NUMPY_BLAS and torch.device(device).type == "cpu"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if distributed:
            with _blas_threads(threads):
                yield
        elif entries and entries <= ONE_BLAS_THREAD_UP_TO:
            with _blas_threads(1):
                yield
        else:
            yield
    finally:
        torch.set_num_threads(threads)


def readable_any(t: torch.Tensor, default: bool) -> bool:
    """``bool(t.any())``, or ``default`` where the value cannot be read on the host: inside
    ``torch.func.vmap`` (as ``jacfwd`` uses), where data-dependent branching is not allowed."""
    try:
        return bool(t.any())
    except RuntimeError:
        return default
