"""Where the solver's matrix products run on the CPU, and the thread setting around a solve.

Measured on the 2-core machines this project runs on (docs/benchmarks.md): numpy's BLAS (OpenBLAS,
shipped with numpy) computes the tall-skinny products the solver is made of (A @ X with a few
columns, a basis times a small matrix) 2–5× faster than torch's MKL, and torch's idle OpenMP
threads, spinning after each parallel region, slow every BLAS call that follows by up to 2×. So on the
CPU the solver's small products go through numpy, and torch's own (small) operations run on one
thread for the duration of a solve; a dense A of 1.5 MiB or more may be the exception, whose products
torch makes on its own threads where a measurement favours them by the margins of
:func:`torch_products`, numpy's BLAS then on one.
``RIEMSVD_CPU_BLAS=torch`` keeps everything in torch.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import types

import numpy as np
import torch

__all__ = [
    "batch_elements",
    "dense_threads",
    "eager_under_compile",
    "mm",
    "no_autocast",
    "readable_any",
    "readable_number",
    "solver_threads",
]

NUMPY_BLAS = os.environ.get("RIEMSVD_CPU_BLAS", "numpy").lower() != "torch"

# the C kernels (riemsvd/_steps.c), built by setup.py where a C compiler was found
STEPS: types.ModuleType | None
try:
    from riemsvd import _steps as STEPS
except ImportError:  # their Python twins and torch's calls serve
    STEPS = None


def numpy_view(t: torch.Tensor) -> np.ndarray | None:
    """A CPU tensor's numpy view (no copy), or None where it has none: another device, a dtype numpy
    lacks, or a tensor wrapped by a torch.func transform."""
    if t.device.type != "cpu":
        return None
    try:
        return t.detach().numpy()
    except (RuntimeError, TypeError):
        return None


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


def mm_t(a, y):
    """aᵀ y for a (..., m, n) and y (..., m, k): numpy's product of the transposed view, and for tensors
    (yᵀ a)ᵀ, contiguous (A y too, as mm_t(A.mT, y)). torch's CPU product of a transposed view with a
    few columns took 2–10 times as long: 10.7 ms against 1.2 for 4096×1024 float32 and k = 8, 125
    against 3.6 in float64 (k = 8, a GaLore projector's warm start; a new user's trial), 2.0 against
    0.7 for a 300×6990 block of the dense path, 5.7 against 1.9 for a batch (16, 256, 1024); A y of
    2000×1000 float32, k = 8, 2.3 against 0.6 (a review; 2-core AMD EPYC, torch 2.13)."""
    if isinstance(a, np.ndarray):
        return a.swapaxes(-1, -2) @ y
    return (y.mT @ a).mT.contiguous()


_CONTROLLER = None


def _controller():
    """threadpoolctl's view of the loaded thread pools, built once (after scipy's LAPACK is loaded)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def _is_numpys(lib) -> bool:
    """Whether a threadpoolctl library controller is numpy's own BLAS (numpy's wheels ship it)."""
    return f"{os.sep}numpy" in lib.filepath


def _blas_libraries() -> list:
    """threadpoolctl's controllers of the loaded BLAS libraries."""
    return [lib for lib in _controller().lib_controllers if lib.user_api == "blas"]


@contextlib.contextmanager
def _limited(libs: list, limit: int, lower_only: bool = False):
    """``libs`` limited to ``limit`` threads (with ``lower_only``, those that have fewer keep them),
    restored after: their own get/set calls, which cost 6 µs where threadpoolctl's ``limit`` context,
    which re-reads every library's state, took 18."""
    before = [lib.get_num_threads() for lib in libs]
    try:
        for lib, threads in zip(libs, before):
            if threads is not None and not (lower_only and threads <= limit):
                lib.set_num_threads(limit)
        yield
    finally:
        for lib, threads in zip(libs, before):
            if threads is not None:  # a library that could not say keeps what it has
                lib.set_num_threads(threads)


def _blas_threads(limit: int):
    """Every BLAS library limited to ``limit`` threads."""
    return _limited(_blas_libraries(), limit)


def _other_blas_single():
    """BLAS libraries other than numpy's limited to one thread: scipy's wheels ship their own
    OpenBLAS, which serves the solver's small LAPACK calls (dsyevr on p×p). Its threads, spinning
    beside numpy's after a product, made those calls 5× slower on 2 cores (a 4096×1024 float32
    gradient, k = 32: 618 ms against 166 ms with scipy's on one thread; docs/algorithm.md)."""
    libs = _blas_libraries()
    others = [lib for lib in libs if not _is_numpys(lib)]
    if len(libs) < 2 or not others:
        return contextlib.nullcontext()  # one BLAS for both: its own threads never compete
    return _limited(others, 1)


# Up to this many entries of A, numpy's BLAS runs on one thread during a solve (see solver_threads).
ONE_BLAS_THREAD_UP_TO = 1_500_000
# From this many bytes a dense A's products may go through torch, where torch makes them faster (see
# torch_products).
TORCH_PRODUCTS_FROM = 3 << 19  # 1.5 MiB
# torch's pair of products is chosen where it takes less than this fraction of numpy's on one
# BLAS thread (up to ONE_BLAS_THREAD_UP_TO entries), or of numpy's on its threads (above). Below, a
# preference for numpy: torch's threads, spinning after each product, slow the solver's next
# OpenBLAS calls (the Gram–Schmidt passes), which a pair timed alone does not show. Above, a
# preference for torch: numpy's threads spin for about 0.1 s after the solve, beside the torch work
# that follows it, where torch's own threads serve that work. (An A passed as a numpy array is not
# measured above: see torch_products.)
_TORCH_MARGIN = {"one thread": 0.8, "its threads": 1.25}
_FASTER: dict[tuple, bool] = {}  # torch_products' measurements, per shape, dtype, layout and threads
# Entries of A (its first rows, or columns if column-major) that torch_products times, above
# ONE_BLAS_THREAD_UP_TO so that numpy's threads work as on A: the whole 4000×2000 float64 matrix took
# 92 ms to measure, 2M entries 16 ms. The ratio torch / numpy on them was 1.46–2.06 where the whole
# matrix gave 1.25–1.73 (row-major float64, 4000×2000, 4096×1024, 8000×1000 and 1000×8000): the same
# choice at this machine's margins, though a ratio near a margin can fall on either side of it.
_MEASURED_ENTRIES = 2_000_000


def torch_products(a: torch.Tensor, from_numpy: bool = False) -> bool:
    """Whether a CPU solve of one dense matrix ``a`` (m, n) computes its products with torch (MKL, on
    torch's threads) rather than numpy's BLAS (on one thread up to ``ONE_BLAS_THREAD_UP_TO`` entries,
    on its threads above: :func:`solver_threads`): from 1.5 MiB up, where A no longer fits beside the
    bases in one core's cache, and where torch's pair A x, Aᵀ y is measured faster by the margin of
    ``_TORCH_MARGIN``, once per shape, dtype, layout and thread counts in a process, on A's first 2M
    entries at most (:func:`_torch_faster`; 2–26 ms on first use, 1536×384 to 4000×2000). Above
    ``ONE_BLAS_THREAD_UP_TO`` entries an A the caller passed as a numpy array (``from_numpy``) takes
    numpy's BLAS on its threads, unmeasured: the caller's own numpy work leaves those threads spinning,
    beside which torch's products ran 1.0–4.2× slower (whole solves, k = 1, 2000×1000 to 4000×2000,
    float32 and float64, 2 cores; after one numpy product a 2000×1000 float64 solve took 58 ms this way
    and 144–156 before, float32 26 against 94–119), and on a quiet machine numpy's took 0.83–1.03 of
    torch's time, where the pair alone measured torch's faster by up to a fifth, and the measured
    choice fell either way between processes (torch's threads, spinning after each product, slow the
    solve's own BLAS calls). Below 1.5 MiB one numpy thread is as fast (37 against 29 µs at 384×384
    float64, 15 against 22 in float32) with less overhead a call. Torch limited to one thread by its
    user: numpy's BLAS.

    Which is faster depends on the machine. On the 2-core machine of the earlier measurements (its CPU
    was not recorded) torch's pair took 0.43–0.74 of numpy's on one thread (45 µs against 105 at
    512×512 float64, 177 against 390 at 1536×384, 263 against 355 at 384×1536, 95 against 140 at
    1536×384 float32), and numpy's on two threads was about as fast as torch's. On an AMD EPYC 2-core
    machine MKL's gemv ran on one thread and took 1.1–1.6 of numpy's on one thread (float64: 276 µs
    against 208 at 1536×384; float32: 528 µs against 342 at 2000×1000) and 1.3–2.6 of numpy's on two
    (float64: 1.37 ms against 1.04 at 2000×1000, 6.2 against 3.0 at 4096×1024). There whole solves
    on numpy's products took 0.43–0.90× the time of torch's (docs/algorithm.md, "CPU threads"); the
    cost is the torch work right after a solve above 1.5M entries, which numpy's spinning threads
    slowed by about 60 ms (10 products of 1024×1024 by 1024×256: 119 ms against 59 alone, 67 after a
    0.1 s pause).

    The choice moves the products' rounding, so that the same seed can give results that differ in
    the last bits between processes or machines (2.2e-13 in σ at 800×400 float64, k = 4)."""
    if not NUMPY_BLAS:  # RIEMSVD_CPU_BLAS=torch: torch's products, unmeasured
        return True
    if not (TORCH_PRODUCTS_FROM <= a.numel() * a.element_size() and torch.get_num_threads() > 1):
        return False
    one = a.numel() <= ONE_BLAS_THREAD_UP_TO
    if from_numpy and not one:
        return False
    key = (tuple(a.shape), a.dtype, a.stride(), torch.get_num_threads(), one or _numpy_blas_threads())
    if key not in _FASTER:
        t, view = a.detach(), numpy_view(a)
        if view is None:  # inside a torch.func transform: torch's products alone
            return True
        # its first rows stand for it, or its first columns where those are contiguous (column-major)
        across = int(view.strides[0] < view.strides[1])
        part = (slice(None),) * across + (slice(max(1, _MEASURED_ENTRIES // max(1, view.shape[1 - across]))),)
        _FASTER[key] = _torch_faster(t[part], view[part], one)
    return _FASTER[key]


def _numpy_blas_threads() -> int | None:
    """The threads of numpy's BLAS, as threadpoolctl reads them (None where it cannot)."""
    libs = [lib for lib in _blas_libraries() if _is_numpys(lib)]
    return libs[0].get_num_threads() if libs else None


def _torch_faster(t: torch.Tensor, view: np.ndarray, one: bool, rounds: int = 3) -> bool:
    """Whether torch's products A x and Aᵀ y (on torch's threads) take less than ``_TORCH_MARGIN`` of
    numpy's (on one BLAS thread where ``one``, else on its threads), for A as a tensor ``t`` and its
    numpy ``view``, each the fastest of ``rounds`` alternated pairs: 3 rounds cost about 12 products,
    once per shape."""
    m, n = view.shape
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(n, dtype=view.dtype), rng.standard_normal(m, dtype=view.dtype)
    ax, aty = np.empty(m, view.dtype), np.empty(n, view.dtype)
    xt, yt, axt, atyt = (torch.from_numpy(v) for v in (x, y, ax, aty))
    best = {"torch": math.inf, "numpy": math.inf}
    with _blas_threads(1) if one else _other_blas_single():
        for _ in range(rounds):
            start = time.perf_counter()
            torch.mv(t, xt, out=axt)
            torch.mv(t.mT, yt, out=atyt)
            best["torch"] = min(best["torch"], time.perf_counter() - start)
            start = time.perf_counter()
            np.matmul(view, x, out=ax)
            np.matmul(view.T, y, out=aty)
            best["numpy"] = min(best["numpy"], time.perf_counter() - start)
    margin = _TORCH_MARGIN["one thread" if one else "its threads"]
    return best["torch"] < margin * best["numpy"]


@contextlib.contextmanager
def solver_threads(
    device: torch.device,
    entries: int = 0,
    *,
    distributed: bool = False,
    on_torch: bool = False,
    own_pass: bool = False,
):
    """Run torch single-threaded on the CPU during a solve, and numpy's BLAS too for small A; with
    ``on_torch`` (the products go through torch: :func:`torch_products`), torch keeps its threads and
    numpy's BLAS runs on one. With ``own_pass`` (the steps' products are the solver's own pass over A
    on its own threads: riemsvd._operator.FusedPass) both run on one thread: beside either pool's
    threads, spinning after a call, that pass took 2–4× its time.

    Both thread pools spin for a while after each parallel call. torch's threads slowed the OpenBLAS
    calls that followed them 2×, so torch runs on one thread here. OpenBLAS's threads, left spinning
    after a solve, slowed the torch training step that followed it 2× (a spectrally normalized
    1024×1024 Linear: 50 ms a step, 22.6 ms with one BLAS thread); but for larger A two BLAS threads
    are worth it (2000×1000 Gaussian, k = 1: 110 ms against 171 ms with one). So OpenBLAS gets one
    thread up to ``ONE_BLAS_THREAD_UP_TO`` entries of A (``entries``, batch included); above, where the
    products are not torch's, it keeps its threads, at most the threads torch has: the budget the user
    set (``torch.set_num_threads(1)`` had left numpy's BLAS on its 2 threads for a 2000×1000 A, whose
    spinning threads beside a busy neighbour took a k = 8 solve from 0.24 s to 3.0 s; a new user's
    trial).

    A process of a ``distributed`` solve (A split across processes) gives its BLAS the threads torch
    has in it: the budget the user (or torchrun, which sets one per process) gave each process. Two
    processes on 2 cores, each with OpenBLAS's default 2 threads, took 3165 ms for a 4000×2000
    Gaussian matrix (k = 1) against 1863 ms with one thread each.
    """
    if not (NUMPY_BLAS and torch.device(device).type == "cpu"):
        yield
        return
    threads = torch.get_num_threads()
    if own_pass or not on_torch:
        torch.set_num_threads(1)
    try:
        if on_torch or own_pass or (not distributed and entries and entries <= ONE_BLAS_THREAD_UP_TO):
            with _blas_threads(1):
                yield
        elif distributed:
            with _blas_threads(threads):
                yield
        else:
            numpys = [lib for lib in _blas_libraries() if _is_numpys(lib)]
            with _other_blas_single(), _limited(numpys, threads, lower_only=True):
                yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def dense_threads(device: torch.device):
    """Threads for the dense path, whose work is a few large torch LAPACK calls: torch keeps its
    threads, numpy's BLAS (the residual check's products) gets one, so that neither pool spins beside
    the other (1536×384 float32, k = 32: 27.7 ms, 13.0 ms with one BLAS thread; torch.linalg.svd 20.5)."""
    if not (NUMPY_BLAS and torch.device(device).type == "cpu"):
        yield
        return
    with _blas_threads(1):
        yield


def eager_under_compile(holder: list, fn):
    """``fn`` as compiled code must call host code (numpy, scipy, LAPACK): torch.compiler.disable'd,
    so that it runs eagerly behind a graph break. Made on first need and kept in ``holder`` (the
    caller's module-level list): made at import, it imported torch._dynamo, 1.1 s of the 1.4 s that
    ``import riemsvd`` cost beyond torch; kept by functools.cache, it drew a dynamo warning at every
    trace."""
    if not holder:
        holder.append(torch.compiler.disable(fn))
    return holder[0]


def no_autocast(device):
    """Autocast off on ``device``: under it, products would come back in float16 or bfloat16 beside
    float32 bases (and QR has no float16 kernel), and σ would be computed in half precision. Nothing
    where it is off already: entering ``torch.autocast(enabled=False)`` cost 7 µs of a spectral-norm
    layer's 57 µs eval-mode forward, against torch's 38 (a new user's trial)."""
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda") or not _autocast_on(kind):
        return contextlib.nullcontext()
    return torch.autocast(kind, enabled=False)


def _autocast_on(kind: str) -> bool:
    """Whether autocast is on for the device type ``kind`` ("cpu" or "cuda")."""
    try:
        return torch.is_autocast_enabled(kind)
    except TypeError:  # torch before 2.4 takes no device type
        return torch.is_autocast_cpu_enabled() if kind == "cpu" else torch.is_autocast_enabled()


def readable_number(t: torch.Tensor) -> float | None:
    """A one-element CPU tensor's value as a Python number (2 µs, where a few tensor tests on it cost
    15–20); None for any other tensor, or where it cannot be read (inside a torch.func transform)."""
    if t.numel() != 1 or t.device.type != "cpu":
        return None
    try:
        return t.item()
    except RuntimeError:
        return None


def readable_any(t, default: bool) -> bool:
    """``bool(t.any())`` of a tensor (or numpy array), or ``default`` where the value cannot be read on
    the host: inside ``torch.func.vmap`` (as ``jacfwd`` uses), where data-dependent branching is not
    allowed."""
    try:
        return bool(t.any())
    except RuntimeError:
        return default


def any_in_batch(t: torch.Tensor) -> bool:
    """``bool(t.any())`` over every matrix of a batch, torch.func.vmap's included: the values under
    torch.func's wrappers (vmap's batching, grad's tracking) are read whole, for a loop whose control
    is the same for every matrix, as an eager batch's is. True where they cannot be read at all.
    CG's loop stops with it once no column is active: under vmap ``t.any()`` cannot be read, and CG
    ran to its cap (1400 iterations where 95 served: ``vmap(grad)`` of a loss of U, a (4, 200, 150)
    A at k = 4, took 63 times the eager backward's time; a new user's trial)."""
    functorch = torch._C._functorch
    try:
        while functorch.is_functorch_wrapped_tensor(t):
            t = functorch.get_unwrapped(t)
    except (RuntimeError, AttributeError):  # a torch without these, or a wrapper that will not unwrap
        pass
    return readable_any(t, default=True)


def batch_elements(bad: torch.Tensor) -> str:
    """ " Batch element 3." or " Batch elements 0, 5 and 2 more." for a boolean tensor of a batch's
    shape (...) that marks the matrices a message is about (the first five), to follow it: one NaN in
    a batch of 64 was not found from the message (a new user's trial), nor the element a batched
    backward's warning was about (another). "" for one matrix (0 dimensions), where none is marked,
    or where the values cannot be read (inside a torch.func transform)."""
    if bad.dim() == 0:
        return ""
    try:
        marked = bad.nonzero().tolist()
    except RuntimeError:
        return ""
    if not marked:
        return ""
    shown = ", ".join(str(tuple(i)) if len(i) > 1 else str(i[0]) for i in marked[:5])
    more = f" and {len(marked) - 5} more" if len(marked) > 5 else ""
    return f" Batch element{'s' if len(marked) > 1 else ''} {shown}{more}."
