"""The benchmark suite ``riemsvd.bench``: a tiny run end to end, and its residual against the reference."""

import csv
import json

import pytest
import torch

from riemsvd import bench


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """``riemsvd-bench`` on 60×40, k = 1 and 2, one repetition, every class and solver, both extras."""
    out = tmp_path_factory.mktemp("bench-out")
    argv = "--sizes 60x40 --k 1 2 --reps 1 --no-plots --quiet --warm --batched".split()
    config = bench.parse_args(argv + ["--out", str(out)])
    config.batched_shape = (4, 20, 20)  # the default (256, 128, 128) takes seconds
    config.min_rep_s = 0.0  # one call per repetition: the figures, not the times, are under test
    records = bench.run(config)
    summary = bench.summarize(records)
    warm = bench.run_warm(config)
    batched = bench.run_batched(config)
    paths = bench.write_outputs(str(out), config, records, summary, warm, batched)
    return out, records, paths


def test_main_writes_csv_and_json(tmp_path, capsys):
    out = tmp_path / "run"
    argv = "--sizes 30x20 --k 1 --reps 1 --classes decay --solvers riemsvd,arpack --no-plots --quiet".split()
    assert bench.main(argv + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "time riemsvd / ARPACK" in printed and "products riemsvd / PROPACK" in printed
    assert (out / "results.csv").is_file() and (out / "results.json").is_file()


def test_every_requested_solver_and_class_is_reported(tiny_run):
    out, records, _ = tiny_run
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    doc = json.loads((out / "results.json").read_text())
    expected = {(c, k, s) for c in bench.CLASSES for k in (1, 2) for s in bench.SOLVERS}
    assert {(r["cls"], int(r["k"]), r["solver"]) for r in rows} == expected
    assert {(r["cls"], r["k"], r["solver"]) for r in doc["records"]} == expected
    assert all(r["status"] for r in rows)  # "ok", "missed tol", … or "failed: …", never blank
    assert len(doc["warm"]) == len(bench.CLASSES) * 2 and len(doc["batched"]) == 2


def test_riemsvd_reaches_tol_and_finds_the_top_k(tiny_run):
    _, records, _ = tiny_run
    ours = [r for r in records if r["solver"] == "riemsvd"]
    assert ours and all(r["status"] == "ok" and r["reached_tol"] for r in ours)
    assert all(r["residual"] <= r["tol"] and r["sigma_err"] <= 1e-12 for r in ours)


def test_arpack_ratio_is_one_for_arpack(tiny_run):
    _, records, _ = tiny_run
    assert all(r["ratio_arpack"] == pytest.approx(1.0) for r in records if r["solver"] == "arpack")


def test_residual_of_exact_triplets_is_rounding_and_of_perturbed_ones_is_the_perturbation(gen):
    a = torch.randn(50, 30, generator=gen, dtype=torch.float64)
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    k, s1 = 3, float(s[0])
    assert bench.relative_residual(a, u[:, :k], s[:k], vh[:k].mT, s1) < 1e-14
    # σᵢ off by δ: A vᵢ − (σᵢ + δ) uᵢ = −δ uᵢ and Aᵀuᵢ − (σᵢ + δ) vᵢ = −δ vᵢ, so the residual is δ/σ₁
    delta = 1e-6 * s1
    res = bench.relative_residual(a, u[:, :k], s[:k] + delta, vh[:k].mT, s1)
    assert res == pytest.approx(1e-6, rel=1e-6)
    assert bench.sigma_error(s[:k] + delta, s) == pytest.approx(1e-6, rel=1e-6)


def test_matrix_classes_have_their_spectra(gen):
    s = torch.linalg.svdvals(bench.make_matrix("cond1e12", 40, 30, torch.float64, gen))
    assert float(s[0] / s[-1]) == pytest.approx(1e12, rel=1e-2)
    s = torch.linalg.svdvals(bench.make_matrix("cluster", 40, 30, torch.float64, gen))
    assert torch.allclose(s[:10], 1 - 1e-3 * torch.arange(10, dtype=torch.float64), atol=1e-13)
    a = bench.make_matrix("sparse", 400, 300, torch.float64, gen)
    assert a.format == "csr" and a.nnz == round(0.01 * 400 * 300)


def test_plots_are_written(tiny_run, tmp_path):
    pytest.importorskip("matplotlib")
    _, records, _ = tiny_run
    paths = bench.plot([r for r in records if r["k"] == 1], str(tmp_path))
    assert sorted(p.split("/")[-1] for p in paths) == ["convergence_60x40_k1.png", "time_60x40_k1.png"]
    assert all((tmp_path / p.split("/")[-1]).stat().st_size > 1000 for p in paths)


def test_backward_matches_torch_svd_gradient(tmp_path, capsys):
    """``--backward`` on 60×40: riemsvd's Ā matches torch.linalg.svd's, and the records are written."""
    out = tmp_path / "bw"
    argv = "--backward --sizes 60x40 --k 1 2 --reps 1 --classes gaussian decay --quiet --no-plots".split()
    assert bench.main(argv + ["--out", str(out)]) == 0
    assert "(riemsvd fwd+bwd) / (torch fwd+bwd)" in capsys.readouterr().out
    with open(out / "backward.csv") as f:
        rows = list(csv.DictReader(f))
    doc = json.loads((out / "results.json").read_text())
    expected = {(c, k) for c in ("gaussian", "decay") for k in (1, 2)}
    assert {(r["cls"], int(r["k"])) for r in rows} == expected
    assert {(r["cls"], r["k"]) for r in doc["backward"]} == expected
    for r in doc["backward"]:
        assert r["grad_rel_err"] < 1e-7
        assert all(r[key] > 0 for key in ("riemsvd_fwd_s", "riemsvd_bwd_s", "torch_fwd_s", "torch_bwd_s"))
        assert r["ratio"] == pytest.approx(
            (r["riemsvd_fwd_s"] + r["riemsvd_bwd_s"]) / (r["torch_fwd_s"] + r["torch_bwd_s"])
        )
