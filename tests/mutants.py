"""Deliberately wrong versions of ``riemsvd.solve``, and the check that the suite notices each.

A test earns its place by failing when the answer is wrong. Each mutant here wraps the real ``solve``
at the public boundary and breaks one promise by a small amount, the size of error a subtle bug
would make:

- ``residual``: stops at 1.9× the tolerance and reports its residual divided by 1.9;
- ``sigma``: returns S off by 1e-7·σ₁;
- ``vectors``: returns U off by 1e-6 (a random perturbation of that norm per column);
- ``gradient``: U's and V's derivatives, backward and forward, off by a relative 1e-5;
- ``give_up``: stops after two iterations, as a solver that gives up would;
- ``bars``: reports error bars a quarter of the true ones (16 tests of the solve, bounds, dense and
  half-precision files fail on it, among them the check of every σ against its bar);
- ``upper``: ``norm_bounds``'s upper bound, certified or not, 1e-6 of itself too low (under ‖A‖₂
  wherever the bound is tighter than that, as the default call's is on dense float64 A);
- ``early``: ``RiemannianTrustRegion``'s estimate of the gradient's rounding (its default
  ``gradient_tol``, and what a stall at "rounding" is judged by) 1000 times too large;
- ``trust``: ``riemsvd.nn``'s forward keeps a power step whose residual is below √tol·σ, unchecked
  (its σ error, about r²/(2·gap), then exceeds tol wherever the top two values lie within √tol/2 of
  each other), where the Kato–Temple, Weyl, complement and rival tests decide.

``python -m tests.mutants`` runs the solve, reliability, bounds, pair and autograd tests once per
mutant of ``solve`` (the bounds, optim and nn tests for ``upper``, ``early`` and ``trust``;
``RIEMSVD_MUTANT=<name>``, installed by tests/conftest.py before any test module imports
``riemsvd.solve``), stops at the first failure, and exits non-zero if some mutant passes them all.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time

import torch

FILES = ("test_solve.py", "test_reliability.py", "test_bounds.py", "test_pair.py", "test_autograd.py")
# the other mutants' files: what they break is tested there
OTHER_FILES = {"upper": ("test_bounds.py",), "early": ("test_optim.py",), "trust": ("test_nn.py",)}


class _OffByFactor(torch.autograd.Function):
    """Identity forward; the derivative multiplied by (1 + ``factor``), in both modes."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, factor):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.factor = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        return grad * (1 + ctx.factor), None

    @staticmethod
    def jvp(ctx, tangent, _):
        return tangent * (1 + ctx.factor)


def _rebuild(result, u, s, v, info=None):
    from riemsvd._result import SVDResult

    return SVDResult(u, s, v, result.info if info is None else info)


def _residual(real, a, k=1, **kw):
    from riemsvd._tolerance import default_tol

    tol = kw.pop("tol", None)
    if tol is None:  # what solve would have used (the mutants see dense tensors in these tests)
        tol = default_tol(a.dtype, *a.shape[-2:]) if isinstance(a, torch.Tensor) else 1e-12
    result = real(a, k, tol=1.9 * tol, **kw)
    info = result.info
    info.residual = info.residual / 1.9
    info.converged = info.residual <= tol
    info.tol = tol
    return _rebuild(result, *result, info)


def _sigma(real, a, k=1, **kw):
    u, s, v = result = real(a, k, **kw)
    return _rebuild(result, u, s + 1e-7 * s[..., :1].detach(), v)


def _vectors(real, a, k=1, **kw):
    u, s, v = result = real(a, k, **kw)
    noise = torch.randn(u.shape, dtype=u.dtype, device=u.device, generator=torch.Generator().manual_seed(0))
    noise = noise / torch.linalg.vector_norm(noise, dim=-2, keepdim=True)
    return _rebuild(result, u + 1e-6 * noise, s, v)


def _gradient(real, a, k=1, **kw):
    u, s, v = result = real(a, k, **kw)
    return _rebuild(result, _OffByFactor.apply(u, 1e-5), s, _OffByFactor.apply(v, 1e-5))


def _bars(real, a, k=1, **kw):
    result = real(a, k, **kw)
    info = result.info
    info.errors = info.errors / 4
    return _rebuild(result, *result, info)


def _give_up(real, a, k=1, **kw):
    kw["maxiter"] = 2
    return real(a, k, **kw)


MUTANTS = {
    "residual": _residual,
    "sigma": _sigma,
    "vectors": _vectors,
    "gradient": _gradient,
    "give_up": _give_up,
    "bars": _bars,
}


def _upper(real, a, **kw):
    bounds = real(a, **kw)
    lower, upper, *rest = bounds.__getnewargs__()  # certified, method, the counts as they were
    return type(bounds)(lower, upper * (1 - 1e-6), *rest)


BOUNDS_MUTANTS = {"upper": _upper}


def _rounding_too_large(real, xs, norm, eps):
    return 1e3 * real(xs, norm, eps)


OPTIM_MUTANTS = {"early": _rounding_too_large}


def _trust_loosely(step, tol, tracker, products) -> bool:
    """The ``trust`` mutant of ``riemsvd.nn._leading.trusted``: a residual below √tol·σ suffices."""
    return step.r <= tol**0.5 * step.s0


NN_MUTANTS = {"trust": _trust_loosely}


def install(name: str) -> None:
    """Replace ``solve`` by the mutant everywhere riemsvd holds a reference to it (``riemsvd.nn``'s
    test of a power step, for its mutants)."""
    import riemsvd
    import riemsvd._pair
    import riemsvd._solve

    if name in NN_MUTANTS:
        import riemsvd.nn._leading

        riemsvd.nn._leading.trusted = NN_MUTANTS[name]
        return
    if name in OPTIM_MUTANTS:
        import riemsvd.optim.trust_region as trust_region

        real_rounding = trust_region._gradient_rounding
        trust_region._gradient_rounding = functools.partial(OPTIM_MUTANTS[name], real_rounding)
        return
    if name in BOUNDS_MUTANTS:
        import riemsvd._bounds

        real_bounds = riemsvd._bounds.norm_bounds
        bounds = functools.wraps(real_bounds)(functools.partial(BOUNDS_MUTANTS[name], real_bounds))
        riemsvd.norm_bounds = riemsvd._bounds.norm_bounds = bounds
        return
    real = riemsvd._solve.solve
    mutant = functools.wraps(real)(functools.partial(MUTANTS[name], real))
    for module in (riemsvd, riemsvd._solve, riemsvd._pair):
        module.solve = mutant


def main() -> int:
    # --help had started the whole check, minutes long (a new user's trial)
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    missed = []
    for name in [*MUTANTS, *BOUNDS_MUTANTS, *OPTIM_MUTANTS, *NN_MUTANTS]:
        files = [os.path.join(here, f) for f in OTHER_FILES.get(name, FILES)]
        start = time.perf_counter()
        env = dict(os.environ, RIEMSVD_MUTANT=name)
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-W", "ignore", *files],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED")]
        # a wrong answer must fail an assertion; an exception from the mutant itself proves nothing
        asserted = "AssertionError" in run.stdout or "\nE       assert " in run.stdout
        caught = run.returncode == 1 and bool(failed) and asserted
        where = failed[0][7:].split(" - ")[0] if failed else ""
        verdict = f"caught by {where}" if caught else f"NOT caught (pytest exit {run.returncode})"
        print(f"mutant {name:9s} {verdict}  [{time.perf_counter() - start:.1f} s]", flush=True)
        if not caught:
            missed.append(name)
            print(run.stdout[-3000:])
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
