"""Examples are tests: each ``examples/*.py`` has a ``run()`` that must work and show what it claims."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> subprocess.CompletedProcess:
    """``python *args`` from the repository's root, its output captured."""
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=EXAMPLES.parent
    )


def test_every_example_has_a_run_function():
    for path in EXAMPLES.glob("*.py"):
        assert hasattr(_load(path.stem), "run"), path


def test_gradient_subspace_matches_full_svd_and_warm_start_saves():
    out = _load("gradient_subspace").run(steps=6, width=64)
    assert out["worst_relative_sigma_error"] < 1e-10
    assert sum(out["warm_products"][1:]) < sum(out["cold_products"][1:])


def test_differentiate_top_pair_descends_with_torch_gradients():
    out = _load("differentiate_top_pair").run(steps=15)
    assert out["losses"][-1] < out["losses"][0]
    assert out["gradient_relative_error"] < 1e-8


def test_spectral_norm_digits_keeps_sigma_at_one(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = _load("spectral_norm_digits").run(epochs=1, plot_path=tmp_path / "sigma.png")
    assert (tmp_path / "sigma.png").exists()
    # README promises an exact σ at every step: float32's default tol here is 2.7e-6 (128 columns),
    # measured 2.4e-7; a σ₂-for-σ₁ crossing (docs/spectral_norm.md: 9.5e-4) would fail this
    assert out["riemsvd_max_sigma_error"] < 1e-5
    assert out["riemsvd_max_sigma_error"] < out["torch_max_sigma_error"]
    assert out["riemsvd_accuracy"] > 0.5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--tol", "1e-8"], "apply to --benchmark's step only"),
        (["--benchmark", "--tol", "0"], "--tol must be in (0, 1)"),
    ],
)
def test_spectral_norm_digits_refuses_bad_options_before_training(argv, message):
    """--epochs 0 failed in max() after loading the data, --benchmark --tol 0 after the whole training,
    and --tol without --benchmark was silently unused (a new user's trial)."""
    done = _run(str(EXAMPLES / "spectral_norm_digits.py"), *argv)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_track_singular_pair_follows_sigma_at_a_fraction_of_the_solves_cost(tmp_path):
    pytest.importorskip("matplotlib")
    out = _load("track_singular_pair").run(steps=80, plot_path=tmp_path / "track.png")
    assert (tmp_path / "track.png").exists()
    assert out["pair_relative_error"][-1] < 1e-2  # 7e-4 measured: one Adam step a training step
    assert max(out["solve_relative_error"]) < 1e-10
    assert 3 * out["pair_matvecs"] < out["solve_matvecs"]


def test_penalize_sigma_lowers_sigma_below_the_unpenalized_fit():
    out = _load("penalize_sigma").run(steps=100, refine_every=25)
    assert out["sigma_exact"][-1] < 0.9 * out["sigma_unpenalized"]  # 2.56 against 3.12 measured
    tail = zip(out["sigma_exact"][-20:], out["sigma_estimate"][-20:])
    assert max(abs(a - b) / a for a, b in tail) < 1e-2  # the pair's estimate tracks the exact σ₁


@pytest.mark.parametrize(
    "args", [["-k", "0"], ["-k", "500", "-m", "400", "-n", "300"], ["--tol", "0"], ["-m", "0"]]
)
def test_the_demo_names_a_wrong_argument_without_a_traceback(args, capsys):
    """``python -m riemsvd -k 0`` printed solve's ValueError as a traceback (a new user's trial)."""
    from riemsvd.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    if args[0] == "--tol":  # in the command line's words: it had said to pass `tol=None`
        assert "leave `--tol` out" in err and "tol=None" not in err


def test_the_float32_demo_measures_s_against_float64(capsys):
    """The float32 demo printed |ΔS|/σ₁ against float32 svdvals, whose own error (1.6e-6 at
    3000×1500) it charged to riemsvd, whose error was 3.7e-8 (a new user's trial)."""
    import re

    from riemsvd.__main__ import main

    main(["-m", "600", "-n", "300", "--dtype", "float32"])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("max |ΔS| / σ₁"))
    ours, theirs = (float(x) for x in re.findall(r"(\d\.\de-\d+)", line))
    assert "against a float64 SVD of the same A" in line and ours <= 1e-6 and theirs <= 1e-5, line


@pytest.mark.parametrize("script", [*sorted(p.name for p in EXAMPLES.glob("*.py")), "mutants"])
def test_every_script_answers_help_with_its_usage(script):
    """track_singular_pair.py had taken --help for its plot's file name and trained 300 steps, three
    other examples ran whatever was asked, and tests/mutants.py --help started the whole check (a new
    user's trial)."""
    command = ["-m", "tests.mutants"] if script == "mutants" else [str(EXAMPLES / script)]
    done = _run(*command, "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage:"), done.stdout + done.stderr
