"""The benchmark suite ``riemsvd.bench``: a tiny run end to end; on fake solvers, the ratios (which way
round, over which cases), the choice of each peer's setting, the interleaving and the thread limits;
and its residual against the reference."""

import csv
import dataclasses
import json
import math
import sys
import types
import warnings

import pytest
import torch

from riemsvd import bench
from riemsvd.bench import cli, experiments, harness, solvers


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


def test_the_summary_has_a_ratio_for_the_full_svd_alone(tmp_path, capsys):
    """With the full SVD as the only peer the summary printed "all cases:" and nothing after it (a new
    user's trial)."""
    argv = "--sizes 30x20 --k 1 --reps 1 --classes decay --solvers riemsvd svd --no-plots --quiet"
    assert bench.main(argv.split() + ["--out", str(tmp_path / "run"), "--threads", "1"]) == 0
    assert "time riemsvd / full SVD" in capsys.readouterr().out


@pytest.mark.parametrize("tol, warned", [(1e-20, True), (1e-10, False)])
def test_a_tol_below_the_products_rounding_is_said_to_be_unreachable(tmp_path, capsys, tol, warned):
    """--tol 1e-20 ran, and every case read "missed tol" without a word why (a new user's trial)."""
    argv = "--sizes 30x20 --k 1 --reps 1 --classes decay --solvers riemsvd --no-plots --quiet --threads 1"
    assert bench.main(argv.split() + ["--tol", str(tol), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert ("--tol 1e-20 lies below what a residual of float64 triplets of a 30x20 matrix" in err) == warned
    # float32 at 1e-6 is checked in float64: reachable at 4000x2000, where float32 products' own rounding
    # (1.5e-5) is not (the first form of this warning said otherwise)
    float32 = bench.Config(sizes=[(4000, 2000)], dtype="float32", tol=1e-6)
    assert cli.unreachable_tol(float32) is None
    tiny = bench.Config(sizes=[(30, 20)], dtype="float32", tol=1e-8)
    assert "float32 triplets" in (cli.unreachable_tol(tiny) or "")
    assert cli.unreachable_tol(bench.Config(sizes=[], tol=1e-20)) is None  # `--sizes ,` had crashed


def test_main_writes_csv_and_json(tmp_path, capsys):
    out = tmp_path / "run"
    argv = "--sizes 30x20 --k 1 --reps 1 --classes decay --solvers riemsvd,arpack lowrank2 --no-plots --quiet"
    assert bench.main(argv.split() + ["--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "time riemsvd / ARPACK" in printed and "time riemsvd / svd_lowrank" in printed
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["solver"] for r in rows] == ["riemsvd", "arpack", "lowrank"]  # lowrank2: the old name
    assert all(r["setting"] and r["threads"] == "1" for r in rows)
    assert json.loads((out / "results.json").read_text())["config"]["threads"] == 1


def test_command_line_takes_the_sizes_and_threads():
    sizes = "384x384 1536x384 384x1536 2000x1000 4096x1024 4000x2000"
    argv = ["--sizes", *sizes.split(), "--threads", "3", "--classes", "weight", "gradient"]
    config = bench.parse_args(argv)
    assert config.sizes == [(384, 384), (1536, 384), (384, 1536), (2000, 1000), (4096, 1024), (4000, 2000)]
    assert config.threads == 3 and config.classes == ["weight", "gradient"]
    assert bench.parse_args([]).thread_count == torch.get_num_threads()
    with pytest.raises(SystemExit):
        bench.parse_args(["--solvers", "nonesuch"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sizes", "200by100"], "--sizes: expected MxN"),
        (["--sizes", "0x5"], "--sizes: both dimensions"),
        (["--k", "abc"], "--k: expected whole numbers"),
        (["--k", "0"], "--k: must be at least 1"),
        (["--sizes", "200x100", "--k", "300"], "--k 300 exceeds min"),
        (["--reps", "0"], "--reps must be at least 1"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--tol", "2"], "--tol must be in"),
        (["--device", "gpu"], "--device: expected cpu or cuda"),
        (["--out", __file__], "is a file; give a directory"),
    ]
    + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "this torch has no CUDA device")]),
)
def test_a_bad_command_line_value_is_a_usage_error_naming_its_option(argv, message, capsys):
    """A new user's trial: --sizes 200by100 and --k abc ended in tracebacks; --k 300 on 200x100,
    --sizes 0x5, --reps 0 and --threads 0 ran (every case 'failed', or silently one thread)."""
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        ("bench_training", ["--steps", "0"], "argument --steps: must be at least 1, got 0"),
        ("bench_bounds", ["--reps", "0"], "argument --reps: must be at least 1, got 0"),
        ("bench_bounds", ["--sizes", "3x"], "argument --sizes: expected MxN like 2000x1000, got '3x'"),
        ("bench_sharded", ["--processes", "0"], "argument --processes: must be at least 1"),
        ("bench_sharded", ["--size", "40x0"], "argument --size: both dimensions must be at least 1"),
        ("bench_sharded", ["--k", "50", "--size", "40x20"], "--k: 50 triplets of a 40x20 matrix; at most 20"),
        ("bench_sharded", ["--classes", "sparse"], "argument --classes: invalid choice: 'sparse'"),
        ("bench_optim", ["--shape", "3x"], "argument --shape: expected MxN"),
        ("bench_optim", ["--brockett", "10"], "argument --brockett: expected MxN"),
    ],
)
def test_the_other_benchmarks_refuse_a_bad_value_naming_its_option(module, argv, message, capsys):
    """They ended in tracebacks (a StatisticsError for --steps 0 and --reps 0, a missing results
    file for --processes 0, a ValueError from inside the solve for --size 40x0; a new user's trial)."""
    import importlib

    mod = importlib.import_module(f"riemsvd.{module}")
    with pytest.raises(SystemExit) as exit_:
        (mod.parse_args if module == "bench_sharded" else mod.main)(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_run_whose_every_solver_is_missing_is_refused(monkeypatch, capsys):
    """--solvers primme without primme ran, every row "skipped", a summary of riemsvd over no one,
    exit 0 (a new user's trial). The default --k that does not fit a size says it is the default."""
    gone = "skipped: primme not installed"
    missing = dataclasses.replace(solvers.SOLVERS["primme"], unavailable=lambda: gone)
    monkeypatch.setitem(solvers.SOLVERS, "primme", missing)
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(["--sizes", "20x10", "--k", "1", "--solvers", "primme"])
    assert exit_.value.code == 2
    assert "--solvers: nothing to run (skipped: primme not installed)" in capsys.readouterr().err
    bench.parse_args(["--sizes", "20x10", "--k", "1", "--solvers", "primme", "riemsvd"])  # one runs
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "5x4"])
    assert "(the default --k" in capsys.readouterr().err


def test_a_zero_matrix_is_solved_not_failed(tmp_path):
    """The ``sparse`` class at 8×6 is all zeros: dividing by σ₁ = 0 listed riemsvd and the full SVD as
    "failed: ZeroDivisionError" (a new user's trial). A zero residual over a zero σ₁ is 0."""
    config = bench.parse_args(f"--sizes 8x6 --k 1 --reps 1 --classes sparse --solvers riemsvd svd --quiet "
                              f"--no-plots --out {tmp_path}".split())  # fmt: skip
    config.min_rep_s = 0.0
    records = bench.run(config)
    assert records and all(r.status == "ok" for r in records), [(r.solver, r.status) for r in records]


def test_sizes_as_the_tables_print_them_are_accepted():
    assert bench.parse_args(["--sizes", "200×100"]).sizes == [(200, 100)]


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
    ours = [r for r in records if r.solver == "riemsvd"]
    assert ours and all(r.status == "ok" and r.reached_tol for r in ours)
    assert all(r.residual <= r.tol and r.sigma_err <= 1e-12 for r in ours)


# Fake solvers for the harness's own logic: exact leading triplets with σ moved by residual·σ₁, so that
# the bench's relative residual of the result is that residual (see the test below), and a set time.


@pytest.fixture(scope="module")
def problems():
    return [bench.make_problem(c, 30, 20, torch.float64, "cpu", 0) for c in ("decay", "lowrank")]


def fake_solver(seconds, residual_of=lambda value: 0.0, settings=bench.at_target, key="tol", calls=None):
    """A Solver whose run takes ``seconds`` (as reported) and whose result has residual
    ``residual_of(setting)``; ``calls`` collects (setting, torch threads, BLAS threads) per call."""

    def run(p, k, value, seed):
        if calls is not None:
            pools = harness.threadpool_controller().info()
            blas = [x["num_threads"] for x in pools if x["user_api"] == "blas"]
            calls.append((value, torch.get_num_threads(), blas))
        u, s, vh = torch.linalg.svd(p.a64, full_matrices=False)
        res = residual_of(value)
        s = s[:k] + res * s[0]
        return seconds, bench.Outcome(u[:, :k], s, vh[:k].mT, products=round(100 * seconds))

    return bench.Solver(run, settings, key=key)


def fake_by_threads(seconds, residual=None, raises=(), calls=None):
    """A Solver whose run takes ``seconds[t]`` (as reported) under t torch threads, with residual
    ``residual[t]`` (0 by default), raising under the counts in ``raises``; ``calls`` collects (torch
    threads, BLAS threads) per call."""

    def run(p, k, value, seed):
        threads = torch.get_num_threads()
        if calls is not None:
            pools = harness.threadpool_controller().info()
            calls.append((threads, {x["num_threads"] for x in pools if x["user_api"] == "blas"}))
        if threads in raises:
            raise RuntimeError("no workers")
        res = 0.0 if residual is None else residual[threads]
        return seconds[threads], fake_solver(0.0, lambda v: res).run(p, k, value, seed)[1]

    return bench.Solver(run, bench.at_target)


def _config(**kw):
    return bench.Config(**{"reps": 3, "min_rep_s": 0.0, "tol": 1e-10, "threads": 1, **kw})


def _run(problems, names, config=None, k=1):
    config = config or _config()
    records = [r for p in problems for r in bench.run_case(p, k, names, config)]
    bench.fill_ratios(records)
    return records


def test_ratio_is_riemsvd_time_over_that_peers_time(monkeypatch, problems):
    for name, seconds in (("riemsvd", 2.0), ("arpack", 4.0), ("propack", 1.0), ("svd", 8.0)):
        monkeypatch.setitem(bench.SOLVERS, name, fake_solver(seconds))
    records = _run(problems[:1], ["riemsvd", "arpack", "propack", "svd"])
    by = {r.solver: r for r in records}
    assert by["arpack"].riemsvd_over == pytest.approx(2.0 / 4.0)  # inverted would be 2.0
    assert by["propack"].riemsvd_over == pytest.approx(2.0 / 1.0)
    assert by["riemsvd"].riemsvd_over is None
    s = bench.summarize(records)["by_size_k"]["30x20 k=1"]
    assert s["time"]["arpack"]["cases"] == {"decay": pytest.approx(0.5)}
    assert s["time"]["propack"]["cases"] == {"decay": pytest.approx(2.0)}
    assert s["products_propack"]["cases"] == {"decay": pytest.approx(200 / 100)}
    fastest = s["fastest_peer"]["decay"]
    assert fastest["solver"] == "propack" and fastest["riemsvd_over"] == pytest.approx(2.0)


def test_a_dense_path_solve_has_no_products_to_compare(problems):
    """A 30×20 float64 case at k = 2 takes the dense path (an SVD): its products (the final check's 2k)
    are not a Krylov count, and the products ratio to PROPACK leaves it out (it read 0.04 at 200×100;
    a new user's trial)."""
    records = _run(problems[:1], ["riemsvd", "propack"], k=2)
    ours = next(r for r in records if r.solver == "riemsvd")
    assert ours.status == "ok" and ours.products is None
    products = bench.summarize(records)["by_size_k"]["30x20 k=2"]["products_propack"]
    assert products["n"] == 0 and products["excluded"] == {"decay": "products n/a"}
    # the table says so: "dense" in its products column, no search bases' memory, and a legend line
    # (it read "n/a" and "0.1*", the bases' estimate; a new user's trial)
    table = bench.format_table(records)
    row = next(line for line in table.splitlines() if line.startswith("decay") and " riemsvd " in line)
    assert " dense " in row and "*" not in row and ours.mem_note == "n/a"
    assert "products 'dense': riemsvd's method='auto' took its dense path" in table


def test_a_case_either_side_missed_is_left_out_of_the_geometric_mean(monkeypatch, problems):
    missed_on_lowrank = {}

    def arpack_run(p, k, value, seed):
        out = fake_solver(4.0).run(p, k, value, seed)
        if p.kind == "lowrank":  # far off at every tol: never reaches 1e-10
            out = fake_solver(0.001, lambda v: 1e-3).run(p, k, value, seed)
            missed_on_lowrank["yes"] = True
        return out

    monkeypatch.setitem(bench.SOLVERS, "riemsvd", fake_solver(2.0))
    monkeypatch.setitem(bench.SOLVERS, "arpack", bench.Solver(arpack_run, bench.svds_tol_ladder))
    lowrank = fake_solver(1.0, lambda v: 1e-12, bench.lowrank_niters, "niter")
    monkeypatch.setitem(bench.SOLVERS, "lowrank", lowrank)
    records = _run(problems, ["riemsvd", "arpack", "lowrank"])
    by = {(r.cls, r.solver): r for r in records}
    assert by["lowrank", "arpack"].status == "missed tol" and missed_on_lowrank
    assert by["lowrank", "arpack"].riemsvd_over is None  # its 1 ms would have made the mean 0.02
    s = bench.summarize(records)["all"]["time"]
    assert s["arpack"]["n"] == 1 and s["arpack"]["geomean"] == pytest.approx(0.5)
    assert list(s["arpack"]["excluded"]) == ["lowrank 30x20 k=1"]
    assert s["lowrank"]["n"] == 2 and s["lowrank"]["geomean"] == pytest.approx(2.0)
    fastest = bench.summarize(records)["by_size_k"]["30x20 k=1"]["fastest_peer"]
    assert fastest["lowrank"]["solver"] == "lowrank"  # not ARPACK's faster miss


def test_when_riemsvd_misses_no_ratio_is_taken(monkeypatch, problems):
    monkeypatch.setitem(bench.SOLVERS, "riemsvd", fake_solver(1.0, lambda v: 1e-6))
    monkeypatch.setitem(bench.SOLVERS, "arpack", fake_solver(4.0))
    records = _run(problems[:1], ["riemsvd", "arpack"])
    assert records[0].status == "missed tol" and records[1].riemsvd_over is None
    s = bench.summarize(records)["all"]["time"]["arpack"]
    assert s["n"] == 0 and s["geomean"] is None and s["excluded"] == {"decay 30x20 k=1": "riemsvd missed tol"}


def test_tuning_keeps_the_loosest_tol_that_reaches_the_target(monkeypatch, problems):
    calls = []
    # like svds, which squares tol: residual ≈ tol², so 1e-5 is the loosest that reaches 1e-10
    arpack = fake_solver(1.0, lambda tol: 0.5 * tol**2, bench.svds_tol_ladder, calls=calls)
    monkeypatch.setitem(bench.SOLVERS, "arpack", arpack)
    # like PRIMME, whose tol bounds the residual: residual = tol, so tol = target
    monkeypatch.setitem(bench.SOLVERS, "primme", fake_solver(1.0, lambda tol: tol, bench.tol_ladder))
    arpack, primme = _run(problems[:1], ["arpack", "primme"], _config(reps=2))
    assert arpack.setting == "tol=1e-05" and arpack.status == "ok"
    assert [f.setting for f in arpack.tuning] == ["tol=0.001", "tol=0.0001", "tol=1e-05"]
    assert [f.status for f in arpack.tuning] == ["missed tol", "missed tol", "ok"]
    assert [c[0] for c in calls] == [1e-3, 1e-4, 1e-5, 1e-5, 1e-5]  # tuning (untimed), then 2 reps
    assert arpack.reps == 2 and arpack.residual == pytest.approx(0.5e-10, rel=1e-3)
    assert primme.setting == "tol=1e-10" and primme.status == "ok"
    assert primme.settings_tried == bench.tol_ladder(1e-10).index(1e-10) + 1


def test_tuning_that_never_reaches_the_target_says_so(monkeypatch, problems):
    monkeypatch.setitem(bench.SOLVERS, "propack", fake_solver(1.0, lambda tol: 1e-9, bench.svds_tol_ladder))
    (rec,) = _run(problems[:1], ["propack"])
    ladder = bench.svds_tol_ladder(1e-10)
    assert rec.status == "missed tol" and rec.settings_tried == len(ladder)
    assert rec.setting == f"tol={ladder[-1]:.3g}" and rec.time_s == 1.0  # the tightest, still timed


def test_lowrank_uses_the_smallest_niter_that_reaches_the_target(monkeypatch, problems):
    calls = []
    fake = fake_solver(1.0, lambda niter: 2.0**-niter, bench.lowrank_niters, "niter", calls=calls)
    monkeypatch.setitem(bench.SOLVERS, "lowrank", fake)
    (rec,) = _run(problems[:1], ["lowrank"], _config(tol=1e-3, reps=1))
    assert rec.setting == "niter=12" and rec.status == "ok"  # 2^-8 > 1e-3 ≥ 2^-12
    assert [c[0] for c in calls] == [0, 1, 2, 3, 4, 6, 8, 12, 12]
    assert bench.SOLVERS["riemsvd"].settings(1e-3) == [1e-3]


def test_repetitions_alternate_between_solvers_under_one_thread_limit(monkeypatch, problems):
    calls = {}
    for name, seconds in (("riemsvd", 1.0), ("arpack", 2.0), ("svd", 3.0)):
        calls[name] = []
        monkeypatch.setitem(bench.SOLVERS, name, fake_solver(seconds, calls=calls[name]))
    timed, real = [], harness.one_repetition

    def logged(call, min_s):
        t, out, total = real(call, min_s)
        timed.append(t)
        return t, out, total

    monkeypatch.setattr(harness, "one_repetition", logged)
    records = _run(problems[:1], ["riemsvd", "arpack", "svd"], _config(reps=3, threads=1))
    # repetition r of every solver (the order rotated by one each round), not 3 of one, then the next
    assert timed == [1.0, 2.0, 3.0, 2.0, 3.0, 1.0, 3.0, 1.0, 2.0]
    assert [r.reps for r in records] == [3, 3, 3]
    for name in calls:  # tuning and timed calls alike: torch and the BLAS on the one thread asked for
        assert len(calls[name]) == 4 and all(c[1] == 1 and c[2] and set(c[2]) == {1} for c in calls[name])


def test_each_solver_is_timed_at_one_thread_and_the_budget_and_reported_at_its_faster(monkeypatch, problems):
    """With a budget of 2 threads, every solver alike runs at 1 and at 2 (torch's and the BLAS's) in
    alternated repetitions, and its record takes its faster count: a peer slower on 2 threads (ARPACK's
    pools spinning: 23 ms on one thread, 39 on two, `decay` 2000×1000, k = 8) had been timed at 2 only,
    which flattered riemsvd (a new user's trial)."""
    calls = {"riemsvd": [], "arpack": []}
    faster_on_two, faster_on_one = {1: 2.0, 2: 1.0}, {1: 3.0, 2: 5.0}
    monkeypatch.setitem(bench.SOLVERS, "riemsvd", fake_by_threads(faster_on_two, calls=calls["riemsvd"]))
    monkeypatch.setitem(bench.SOLVERS, "arpack", fake_by_threads(faster_on_one, calls=calls["arpack"]))
    ours, arpack = _run(problems[:1], ["riemsvd", "arpack"], _config(reps=3, threads=2))
    assert (ours.threads, ours.time_s, ours.reps) == (2, 1.0, 3)
    assert (arpack.threads, arpack.time_s, arpack.reps) == (1, 3.0, 3)
    assert ours.time_by_threads == {1: 2.0, 2: 1.0} and arpack.time_by_threads == {1: 3.0, 2: 5.0}
    assert arpack.riemsvd_over == pytest.approx(1.0 / 3.0)  # at 2 threads alone it read 1.0 / 5.0
    for seen in calls.values():  # 1 tuning call on the budget, then 3 timed at each count, BLAS alike
        assert sorted(t for t, _ in seen) == [1, 1, 1, 2, 2, 2, 2]
        assert all(blas == {t} for t, blas in seen)
    table = bench.format_table([ours, arpack])
    assert "timed at 1 and 2 threads" in table
    row = next(line for line in table.splitlines() if " arpack " in line)
    assert row.split()[3] == "1"  # the thr column


def test_a_count_whose_result_missed_tol_or_raised_is_not_the_one_reported(monkeypatch, problems):
    """The setting is tuned on the budget; on one thread a peer's sums run in another order and can
    fall just short of tol (ARPACK, cond1e12 4000×2000 float32, k = 8: 1.13e-6 for 1e-6 on one thread,
    ok on two, and the faster one thread had been reported, "missed tol"; a review). A count that
    raised leaves the other's times."""
    monkeypatch.setitem(bench.SOLVERS, "arpack", fake_by_threads({1: 1.0, 2: 2.0}, {1: 1.1e-10, 2: 0.0}))
    monkeypatch.setitem(bench.SOLVERS, "propack", fake_by_threads({1: 1.0, 2: 3.0}, raises=(1,)))
    monkeypatch.setitem(bench.SOLVERS, "primme", fake_by_threads({1: 1.0, 2: 3.0}, raises=(1, 2)))
    arpack, propack, primme = _run(problems[:1], ["arpack", "propack", "primme"], _config(threads=2))
    assert (arpack.status, arpack.threads, arpack.time_s) == ("ok", 2, 2.0)
    assert arpack.time_by_threads == {1: 1.0, 2: 2.0}
    assert (propack.status, propack.threads, propack.time_s) == ("ok", 2, 3.0)
    assert primme.status == "failed: RuntimeError: no workers" and primme.time_s is None


def test_no_solver_is_timed_twice_in_a_row_across_thread_counts(monkeypatch, problems):
    """The rounds time every solver at one count, then every solver at the next: grouped by solver,
    a solver's second count had followed its first, its data warm, on 8 of 9 rounds (a review)."""
    order = []

    def solver(name):
        def run(p, k, value, seed):
            order.append((name, torch.get_num_threads()))
            return 1.0, fake_solver(0.0).run(p, k, value, seed)[1]

        return bench.Solver(run, bench.at_target)

    for name in ("riemsvd", "arpack", "svd"):
        monkeypatch.setitem(bench.SOLVERS, name, solver(name))
    _run(problems[:1], ["riemsvd", "arpack", "svd"], _config(reps=3, threads=2))
    timed = order[3:]  # after one tuning call each
    every = [(n, c) for n in ("arpack", "riemsvd", "svd") for c in (1, 2)]
    assert len(timed) == 18 and sorted(set(timed)) == every
    assert all(a[0] != b[0] for a, b in zip(timed, timed[1:]))


def test_a_repetition_starts_once_no_other_thread_of_the_process_is_busy(monkeypatch):
    """A thread pool's workers spinning after the previous solver's call hold the start of the next
    repetition, up to settle's limit (warned of once where a thread stays busy throughout); an idle
    process starts at once. On a clock where another thread uses a whole core for 0.2 s, then none."""
    now = {"wall": 0.0, "cpu": 0.0}
    busy_until = {"t": 0.2}

    def sleep(seconds):
        busy = max(0.0, min(seconds, busy_until["t"] - now["wall"]))
        now["wall"] += seconds
        now["cpu"] += busy

    clock = types.SimpleNamespace(
        perf_counter=lambda: now["wall"], process_time=lambda: now["cpu"], sleep=sleep
    )
    monkeypatch.setattr(harness, "time", clock)
    monkeypatch.setattr(harness, "_SETTLE_WARNED", False)
    held = harness.settle(0.5)
    assert 0.2 <= held <= 0.2 + 2 * harness._SETTLE_WINDOW_S, held
    assert harness.settle(0.5) == pytest.approx(harness._SETTLE_WINDOW_S)  # idle: one window
    busy_until["t"] = math.inf
    with pytest.warns(RuntimeWarning, match="stayed busy"):
        assert harness.settle(0.5) >= 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        harness.settle(0.5)  # once
    monkeypatch.undo()
    assert harness.settle(2.0) < 0.5  # this process, idle
    events = []
    monkeypatch.setattr(harness, "settle", lambda: events.append("settle"))
    harness.one_repetition(lambda: (events.append("call") or 0.0, None), min_s=0.0)
    assert events == ["settle", "call"]


def test_a_peer_whose_package_is_missing_is_skipped_not_failed(monkeypatch, problems):
    missing = dataclasses.replace(bench.SOLVERS["primme"], unavailable=solvers.needs_module("no_such_primme"))
    monkeypatch.setitem(bench.SOLVERS, "primme", missing)
    records = _run(problems[:1], ["riemsvd", "primme"], _config(reps=1))
    assert records[1].status == "skipped: no_such_primme not installed" and records[1].time_s is None
    assert records[0].status == "ok"
    printed = bench.format_table(records) + bench.format_summary(bench.summarize(records))
    assert "time riemsvd / PRIMME: skipped: no_such_primme not installed" in printed


def test_wide_matrices_run(problems):
    p = bench.make_problem("weight", 20, 36, torch.float64, "cpu", 0)
    names = ["riemsvd", "svd", "lowrank", "arpack", "power"]
    records = bench.run_case(p, 2, names, _config(reps=1))
    assert [r.solver for r in records] == names
    assert all(r.status in ("ok", "missed tol") and r.time_s for r in records)
    assert records[0].status == "ok" and records[1].status == "ok"


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
    # weight: 32 spikes σᵢ = 3e/i^0.7 over a bulk of edge e = 1 + √(m/n); the top ones stand out
    s = torch.linalg.svdvals(bench.make_matrix("weight", 400, 200, torch.float64, gen))
    edge = 1 + 2**0.5
    # (the bulk pushes each spike up a little)
    assert float(s[0]) == pytest.approx(3 * edge, rel=0.1)
    assert float(s[1]) == pytest.approx(3 * edge / 2**0.7, rel=0.1)
    assert float(s[60]) < 1.1 * edge
    # gradient: rank 8, σ from 1 to 0.1, then noise of norm ≈ 1e-2
    s = torch.linalg.svdvals(bench.make_matrix("gradient", 400, 200, torch.float64, gen))
    assert torch.allclose(s[:8], torch.logspace(0, -1, 8, dtype=torch.float64), rtol=0.02)
    assert 0.5e-2 < float(s[8]) < 1.2e-2


def test_plots_are_written(tiny_run, tmp_path):
    pytest.importorskip("matplotlib")
    _, records, _ = tiny_run
    paths = bench.plot([r for r in records if r.k == 1], str(tmp_path))
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


def test_backward_without_a_finite_torch_reference_is_not_counted_against_riemsvd(tmp_path, capsys):
    """The `sparse` class at 200×100 has 19 zero singular values, where torch.linalg.svd's backward is
    NaN: its rows read "missed target" and the summary counted them as riemsvd's misses (a new user's
    trial). They say there is no reference, and the count leaves them out."""
    out = tmp_path / "bw"
    argv = "--backward --sizes 200x100 --k 1 --reps 1 --classes sparse gaussian --quiet --no-plots".split()
    assert bench.main(argv + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "grad err ≤ 1e-07 on 1/1 (no finite torch reference: 1)" in printed
    doc = json.loads((out / "results.json").read_text())
    rows = {r["cls"]: r for r in doc["backward"]}
    assert rows["sparse"]["status"].startswith("no reference") and rows["gaussian"]["grad_rel_err"] < 1e-7


# ---------------------------------------------------------------------------------------------------
# riemsvd.bench_training and riemsvd.bench_dense, on tiny settings


def test_training_bench_reports_ratios_and_sigma_errors_within_tol():
    from torch import nn

    from riemsvd import bench_training

    galore = bench_training.run_galore(ks=(4,), shape=(60, 40), reps=1)
    batch = bench_training.run_batch(shape=(3, 12, 10), reps=1)
    tiny = {"Linear(12, 8)": lambda: (nn.Sequential(nn.Linear(12, 8)), (4, 12))}
    steps = bench_training.run_steps(steps=3, warmup=1, models=tiny)
    for row in [*galore, batch, *steps]:
        assert row["ratio"] == pytest.approx(row["riemsvd_s"] / row["alternative_s"])
    assert galore[0]["residual"] <= 1e-5 and batch["residual"] <= 1e-5
    assert steps[0]["sigma_error_over_tol"] <= 1.0
    table = bench_training._table(steps, "torch", [("÷ tol", "sigma_error_over_tol", "{:.2f}")])
    assert table.splitlines()[2].startswith("| Linear(12, 8) |")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_training_bench_refuses_a_cuda_device_it_cannot_see(capsys):
    from riemsvd import bench_training

    with pytest.raises(SystemExit):
        bench_training.main(["--device", "cuda", "--sections", "batch"])
    assert "--device cuda: torch sees no CUDA device here; use --device cpu" in capsys.readouterr().err
    for wrong in ("xyz", "meta"):  # a raw RuntimeError, and a device whose work the timing cannot wait for
        with pytest.raises(SystemExit):
            bench_training.main(["--device", wrong, "--sections", "batch"])
        assert f"{wrong!r} is not a device this bench times: use cpu or cuda" in capsys.readouterr().err


def test_training_bench_measures_sigma_errors_on_the_timed_steps_only():
    """The σ errors are those of the steps timed: in the warmup torch's one power step a forward
    has not converged (the worst error read 2e-2 to 1e-1 for torch's layers where the timed steps'
    was 2e-6 to 1e-4, when the warmup's were counted)."""
    from torch import nn

    from riemsvd import bench_training

    model = nn.Linear(6, 4)
    seen = []
    times = bench_training._adam_steps(
        {"a": model}, {"a": model}, (2, 6), steps=3, warmup=2, untimed=lambda key, m: seen.append(key)
    )
    assert len(times["a"]) == 3 and seen == ["a"] * 3


def test_dense_bench_measures_fits_and_plots(tmp_path):
    from riemsvd import bench_dense

    rows = bench_dense.measure(torch.float64, shapes=[(30, 20)], ks=(1, 4, 16), progress=False)
    assert [(r["k"], r["kind"]) for r in rows] == [
        (1, "gaussian"),
        (4, "gaussian"),
        (1, "gradient"),
        (4, "gradient"),
    ]
    assert all(r["dense"] > 0 and r["iterative"] > 0 and r["products"] > 0 for r in rows)
    fit = bench_dense.fit(rows, 8)
    assert len(fit["constants"]) == 7 and 1.0 <= fit["geometric_mean_loss"] <= fit["worst_loss"]
    bench_dense.plot({"float64": rows}, str(tmp_path / "crossover.png"))
    assert (tmp_path / "crossover.png").stat().st_size > 0


def test_bounds_benchmark_reports_each_bound_against_the_true_norm():
    from riemsvd import bench_bounds

    rows = bench_bounds.run(
        sizes=[(40, 30)], classes=("flat", "decay"), reps=1, gram_steps=(3,), progress=None, pause=0.0
    )
    assert [r["case"] for r in rows] == ["40×30 flat", "40×30 decay"]
    for row in rows:
        assert row["matrix_norm"]["time_ratio"] == 1.0 and abs(row["matrix_norm"]["excess"]) < 1e-14
        assert row["riemsvd"]["certified"] and 0 <= row["riemsvd"]["excess"] <= 1e-6
        assert row["riemsvd"]["time_ratio"] > 0
    assert rows[0]["gram 3"]["excess"] > 1e-2  # three squarings leave a flat spectrum's bound loose


def test_conv_bounds_benchmark_reports_each_bound_against_the_layers_norm():
    from riemsvd import bench_bounds

    rows = bench_bounds.run_convs(
        cases=[(4, 6, "circular"), (2, 5, "zeros")], reps=1, gram_steps=(2, 12), progress=None, pause=0.0
    )
    assert [(r["case"], r["method"]) for r in rows] == [
        ("Conv2d 4, 6×6, circular", "fourier"),
        ("Conv2d 2, 5×5, zeros", "gram-cholesky"),
    ]
    for row in rows:
        assert row["riemsvd"]["certified"] and 0 <= row["riemsvd"]["excess"] <= 1e-6
    circular, zeros = rows
    assert circular["fft svd"]["excess"] == 0.0  # the circular layer's own norm
    assert circular["gram 2"]["excess"] > 1e-3 and abs(circular["gram 12"]["excess"]) < 1e-12
    # the circular layer on the same grid is not a bound for the zero-padded one: here it is below
    assert zeros["fft svd"]["excess"] < 0 and zeros["gram 12"]["excess"] < 0


def test_gram_iteration_is_exact_on_a_diagonal_and_above_the_norm_elsewhere():
    from riemsvd.bench_bounds import gram_iteration

    assert gram_iteration(torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)), 4) == pytest.approx(
        3.0 * (1 + (1 / 3) ** 32 + (1 / 6) ** 32) ** (1 / 32), rel=1e-15
    )
    a = torch.randn(30, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    true = float(torch.linalg.matrix_norm(a, 2))
    assert [gram_iteration(a, t) >= true * (1 - 1e-14) for t in (1, 3, 6)] == [True] * 3


@pytest.mark.parametrize("tqdm_installed", [True, False])
def test_progress_is_drawn_on_stderr_only_on_a_terminal_and_without_tqdm_is_left_out(
    monkeypatch, capsys, tqdm_installed
):
    if tqdm_installed:
        pytest.importorskip("tqdm")
    else:
        monkeypatch.setitem(sys.modules, "tqdm", None)  # ``import tqdm`` raises ImportError
    config = _config(sizes=[(30, 20)], classes=["decay"], ks=[1, 2])
    assert [k for _, k in experiments.grid(config, "cases")] == [1, 2]
    assert capsys.readouterr() == ("", "")  # stderr is not a terminal here: no bar, no message
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert [k for _, k in experiments.grid(config, "cases")] == [1, 2]
    out, err = capsys.readouterr()
    assert out == ""  # stdout's tables stay clean
    assert ("30x20 decay k=2" in err) if tqdm_installed else ("tqdm is not installed" in err)


def test_a_run_of_riemsvd_alone_says_there_is_nothing_to_compare(problems):
    """With --solvers riemsvd the summary read "fastest peer: gaussian none" and an empty "all cases:"
    block (a new user's trial)."""
    text = bench.format_summary(bench.summarize(_run(problems[:1], ["riemsvd"])))
    assert "no peer ran beside riemsvd" in text and "fastest peer" not in text
    text = bench.format_summary(bench.summarize(_run(problems[:1], ["riemsvd", "svd"])))
    assert "fastest peer" in text and "no peer" not in text
    # where the peers ran and riemsvd missed tol as well, the summary had sent the user to add peers
    # (a new user's trial): it names them, riemsvd's own misses and, per peer, why each case is out
    text = bench.format_summary(bench.summarize(_run(problems[:1], ["riemsvd", "svd"], _config(tol=1e-20))))
    assert "no peer (svd) solved a case" in text and "add peers" not in text
    assert "riemsvd did not solve 1 of its 1 case(s) either" in text
    assert "(riemsvd missed tol; svd missed tol)" in text
