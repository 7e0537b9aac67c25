"""riemsvd.bench_optim on tiny settings: every solver reaches the common stopping rule, pymanopt where
it is installed, and the table reports each time against pymanopt's. Nothing is timed here."""

import importlib.util

import pytest

from riemsvd import bench_optim

HAS_PYMANOPT = importlib.util.find_spec("pymanopt") is not None


def test_every_solver_reaches_the_same_gradient_norm():
    rows = bench_optim.run_pair("decay", (60, 40), gtol=1e-9, reps=1)
    rows += bench_optim.run_brockett(30, 3, gtol=1e-9, reps=1)
    solvers = {(r.case, r.solver) for r in rows}
    expected = {"solve", "optim", "default"} | ({"pymanopt"} if HAS_PYMANOPT else set())
    assert {s for c, s in solvers if c.startswith("pair")} == expected
    assert {s for c, s in solvers if c.startswith("brockett")} == expected - {"solve", "default"}
    for r in rows:
        # the rule is ‖g‖ ≤ gtol·σ₁, recomputed here; σ (λ) then within ‖g‖²/gap of the truth
        assert r.seconds > 0 and r.gradient_norm <= 1e-9 and r.value_error <= 1e-12, r
    assert all(r.products > 0 for r in rows if r.solver in ("solve", "default"))


@pytest.mark.skipif(not HAS_PYMANOPT, reason="pymanopt is an optional peer")
def test_table_gives_each_time_against_pymanopts(capsys):
    assert bench_optim.main("--shape 40x30 --brockett 20x2 --reps 1 --gtol 1e-8".split()) == 0
    out = capsys.readouterr().out
    assert "pymanopt not installed" not in out and "| pair gaussian 40×30 | pymanopt |" in out
    lines = [line for line in out.splitlines() if "| pymanopt |" in line]
    assert len(lines) == 3 and all("| 1.00× |" in line for line in lines)
