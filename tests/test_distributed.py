"""riemsvd.solve, its gradient and spectral_norm on matrices sharded across 2 and 4 processes (gloo on
this machine), against torch.linalg.svd and the one-process solve.

Each world size is spawned once (tests/distributed_cases.py runs every case in every process); the
tests below check what the processes saved. A process that raises fails the run with its traceback; a
run that does not end within its deadline is killed, so a hang cannot outlive the test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import riemsvd
from riemsvd._subspace import default_basis
from tests.distributed_cases import KINDS, K, loss, problem, split_sizes, worker

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is needed"
)

DEADLINE = 240.0  # seconds for one spawned run; measured: about 10 s for 4 processes on 2 cores


def spawn(world: int, tmp_path) -> list[dict]:
    """Run ``worker`` in ``world`` processes; return what each saved. Kills them all past DEADLINE."""
    context = mp.start_processes(
        worker,
        args=(world, str(tmp_path / "store"), str(tmp_path)),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + DEADLINE
    try:
        while not context.join(timeout=max(0.5, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                pytest.fail(f"the {world}-process run did not finish within {DEADLINE:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module", params=[2, 4], ids=lambda w: f"{w}procs")
def ranks(request, tmp_path_factory) -> list[dict]:
    return spawn(request.param, tmp_path_factory.mktemp(f"world{request.param}"))


def reference(kind: str, m: int = 120, n: int = 80):
    """torch.linalg.svd's top K triplets and the gradient of ``loss`` through them."""
    a, weights = problem(kind, m, n)
    leaf = a.clone().requires_grad_(True)
    u, s, vh = torch.linalg.svd(leaf, full_matrices=False)
    loss(weights, u[:, :K], s[:K], vh[:K].mT).backward()
    return a, u[:, :K].detach(), s[:K].detach(), vh[:K].mT.detach(), leaf.grad


def assemble(ranks, key, name, dim_of_split):
    """The whole tensor from the blocks the processes hold (concatenated along the split)."""
    return torch.cat([r[key][name] for r in ranks], dim=dim_of_split)


def assert_same_triplets(a, u, s, v, ref_u, ref_s, tol):
    """S within tol·σ₁ of the reference, U and V spanning the same lines, and a residual ≤ tol."""
    s1 = ref_s[0]
    assert bool(((s - ref_s).abs() <= tol * s1 + 1e-13 * s1).all()), (s, ref_s)
    cosines = (u.mT @ ref_u).diagonal().abs()
    torch.testing.assert_close(cosines, torch.ones(K, dtype=a.dtype), atol=1e-8, rtol=0)
    res = torch.maximum((a @ v - u * s).norm(dim=0), (a.mT @ u - v * s).norm(dim=0)).max() / s1
    assert float(res) <= 2 * tol


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dim", [0, 1])
def test_sharded_matrix_gives_the_triplets_and_gradient_of_the_whole_matrix(ranks, kind, dim):
    a, ref_u, ref_s, ref_v, ref_grad = reference(kind)
    key = ("sharded", kind, dim)
    first = ranks[0][key]
    assert first["sizes"] == split_sizes(a.shape[dim], len(ranks))
    u = assemble(ranks, key, "u", 0) if dim == 0 else first["u"]
    v = first["v"] if dim == 0 else assemble(ranks, key, "v", 0)
    assert bool(first["converged"]) and float(first["residual"]) <= first["tol"]
    assert_same_triplets(a, u, first["s"], v, ref_u, ref_s, first["tol"])
    grad = assemble(ranks, key, "grad", dim)
    assert float((grad - ref_grad).norm() / ref_grad.norm()) <= 1e-8


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dim", [0, 1])
def test_dtensor_gives_the_triplets_and_gradient_of_the_whole_matrix(ranks, kind, dim):
    a, ref_u, ref_s, ref_v, ref_grad = reference(kind)
    out = ranks[0][("dtensor", kind, dim)]
    split, whole = "(Shard(dim=0),)", "(Replicate(),)"
    assert out["placements"] == ((split, whole, whole) if dim == 0 else (whole, whole, split))
    assert out["grad_placements"] == f"(Shard(dim={dim}),)"
    assert_same_triplets(a, out["u"], out["s"], out["v"], ref_u, ref_s, out["tol"])
    assert float((out["grad"] - ref_grad).norm() / ref_grad.norm()) <= 1e-8


def test_a_bfloat16_dtensor_is_solved_in_float32_and_returned_in_bfloat16(ranks):
    """It crashed after solving ("aten.add.Tensor got mixed torch.Tensor and DTensor"; a new user's
    trial). S is a replicated bfloat16 DTensor, each value within its bar of the matrix's own σ."""
    out = ranks[0][("dtensor", "bfloat16")]
    assert out["error"] is None
    assert out["s"].dtype == torch.bfloat16 and out["placements"] == "(Replicate(),)"
    exact = torch.linalg.svdvals(out["a"].double())[:2]
    assert out["converged"]
    assert bool(((out["s"].double() - exact).abs() <= out["errors"].double()).all())


def test_sharded_solve_agrees_with_one_process(ranks):
    for kind in KINDS:
        a, _ = problem(kind, 120, 80)
        single = riemsvd.solve(a, K, generator=torch.Generator().manual_seed(0))
        for dim in (0, 1):
            s = ranks[0][("sharded", kind, dim)]["s"]
            assert float((s - single.S).abs().max()) <= 2 * single.info.tol * float(single.S[0])


def test_whole_results_are_bitwise_the_same_on_every_process(ranks):
    for key in [("sharded", kind, dim) for kind in KINDS for dim in (0, 1)]:
        whole = ["s", "v"] if key[2] == 0 else ["s", "u"]
        for name in whole:
            for r in ranks[1:]:
                assert torch.equal(r[key][name], ranks[0][key][name]), (key, name)


def test_communication_per_product_is_bounded_by_the_replicated_length_not_m_times_n(ranks):
    # Per product column: one all-reduce of the replicated side's length (n for rows split, m for
    # columns split) plus inner products with the bases (at most 4·p numbers): never A's m·n.
    for kind in KINDS:
        for dim, whole in ((0, 80), (1, 120)):
            out = ranks[0][("sharded", kind, dim)]
            p = default_basis(K)
            bound = out["matvecs"] * (whole + 4 * p) + 4 * p * p
            assert 0 < out["communicated"] <= bound, (out["communicated"], bound)
            # the same from a spy on torch.distributed's collectives, not the library's own counter:
            # no single message approaches A's 120·80 numbers, and all of them together stay in bound
            spied = out["spied"]
            assert spied and max(spied) <= whole + 4 * p * p, max(spied)
            assert sum(spied) <= bound, (sum(spied), bound)


@pytest.mark.parametrize("dim", [0, 1])
def test_forward_mode_derivative_is_the_one_of_the_whole_matrix(ranks, dim):
    import torch.autograd.forward_ad as fwad

    a, _ = problem("decay", 120, 80)
    da = torch.randn(a.shape, dtype=a.dtype, generator=torch.Generator().manual_seed(3))
    with fwad.dual_level():
        u, s, v = riemsvd.solve(fwad.make_dual(a, da), K)
        ref_u, ref_ds = fwad.unpack_dual(u).primal, fwad.unpack_dual(s).tangent
        ref_du, ref_dv = fwad.unpack_dual(u).tangent, fwad.unpack_dual(v).tangent
    key = ("forward mode", dim)
    out = ranks[0][key]
    torch.testing.assert_close(out["ds"], ref_ds, rtol=1e-8, atol=1e-10)
    whole_u = assemble(ranks, key, "u", 0) if dim == 0 else out["u"]
    du = assemble(ranks, key, "du", 0) if dim == 0 else out["du"]
    dv = out["dv"] if dim == 0 else assemble(ranks, key, "dv", 0)
    signs = torch.sign((whole_u * ref_u).sum(0))  # the pairs (u_i, v_i) are defined up to a joint sign
    torch.testing.assert_close(du * signs, ref_du, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(dv * signs, ref_dv, rtol=1e-7, atol=1e-9)
    # and against central differences of torch.linalg.svd, independent of riemsvd's derivative: the
    # spectrum 1/(i+1) has relative gaps ≥ 1/4, so with h = 1e-6 the truncation error is ~h² and the
    # rounding ~ε/h = 2e-10
    h = 1e-6
    plus, minus = (torch.linalg.svd(a + t * da, full_matrices=False) for t in (h, -h))
    torch.testing.assert_close(out["ds"], (plus.S[:K] - minus.S[:K]) / (2 * h), rtol=1e-7, atol=1e-8)
    aligned = []
    for svd in (plus, minus):  # each pair's sign that of riemsvd's U, V following its U
        sign = torch.sign((svd.U[:, :K] * whole_u).sum(0))
        aligned.append((svd.U[:, :K] * sign, svd.Vh[:K].mT * sign))
    torch.testing.assert_close(du, (aligned[0][0] - aligned[1][0]) / (2 * h), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(dv, (aligned[0][1] - aligned[1][1]) / (2 * h), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dim", [0, 1])
def test_warm_start_from_the_previous_blocks_is_right_and_saves_products(ranks, dim):
    out = ranks[0][("warm", dim)]
    torch.testing.assert_close(out["s"], torch.linalg.svdvals(out["b"])[:K], rtol=1e-10, atol=0)
    assert out["warm"] < out["cold"]


def test_a_sharded_solve_inside_a_compiled_function_runs_eagerly(ranks):
    out = ranks[0]["compiled"]
    torch.testing.assert_close(out["s"], torch.linalg.svdvals(out["a"])[:K], rtol=1e-10, atol=0)


def test_empty_shards_are_solved(ranks):
    if len(ranks) == 4:
        assert ranks[0][("sharded", "gaussian", 0)]["sizes"][0] == 0
        assert ranks[0][("sharded", "gaussian", 0)]["u"].shape == (0, K)
    out = [r[("dtensor", "few rows")] for r in ranks]
    assert [o["local_rows"] for o in out] == ([2, 1] if len(ranks) == 2 else [1, 1, 1, 0])
    ref = torch.linalg.svdvals(out[0]["a"])[:2]
    torch.testing.assert_close(out[0]["s"], ref, rtol=1e-10, atol=0)


@pytest.mark.parametrize("dim", [0, 1])
def test_spectral_norm_of_a_sharded_weight_is_exact_with_its_gradient(ranks, dim):
    out = ranks[0][("dtensor", "spectral_norm")][dim]
    assert out["buffer_types"] == "DTensor"
    w0 = out["w0"].clone().requires_grad_(True)
    normalized = w0 / torch.linalg.matrix_norm(w0, 2)
    (normalized * out["upstream"]).sum().backward()
    torch.testing.assert_close(out["normalized"], normalized.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(out["grad"], w0.grad, rtol=1e-8, atol=1e-12)
    assert out["projection_sigma"] == pytest.approx(float(torch.linalg.matrix_norm(out["w0"], 2)), rel=1e-12)
    assert float(torch.linalg.matrix_norm(out["projected"], 2)) == pytest.approx(0.5, rel=1e-12)
    stepped = out["stepped"]
    expected = stepped / torch.linalg.matrix_norm(stepped, 2)
    torch.testing.assert_close(out["normalized_after_step"], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "case, message",
    [
        ("norm_bounds", r"TypeError: `A` is split across processes .*norm_bounds takes a matrix held whole"),
        ("columns", r"same number of columns; got blocks .*rank 0: \(\d+, 30\)"),
        ("k", r"`k` must be the same on every process"),
        ("nan", r"on rank 0: `A` has NaN or Inf"),
        ("dtype", r"`A`'s dtype must be the same on every process"),
        ("k too large", r"`k` must be at most min\(m, n\) = 30"),
        ("init rows", r"`init` U0 on rank 1 must have shape \(\d+, j\)"),
        (
            "init columns",
            r"`init` must have the same number of columns on every process, got rank 0: 1, rank 1: 2",
        ),
        (
            "init whole side",
            r"`init` V0 \(held whole .* split by rows\) must be the same on every process.* rank 1\.",
        ),
        ("init dtype", r"`init` V0 \(held whole .*dtype included; it differs from rank 0's on rank 1\."),
        ("dim", r"`dim` \(the dimension `A` is split along.*must be the same on every process"),
        ("options", r"`options` must be the same on every process.*rank 1: SolverOptions\(block=2"),
        ("method", r"on rank 1: `method='dense'` needs A as a dense torch.Tensor or numpy array, got a"),
        ("partial", r"placed Partial\(.*\); riemsvd.solve takes a 2-D DTensor placed Shard\(0\)"),
        ("requires grad", r"whether `A` requires grad .*must be the same on every process, got rank 0: True"),
    ],
)
def test_a_problem_wrong_on_one_process_raises_on_every_process(ranks, case, message):
    for rank, r in enumerate(ranks):
        found = r[("error", case)]
        assert found is not None, f"rank {rank} did not raise for {case!r}"
        assert re.search(message, f"{found[0]}: {found[1]}" if message.startswith("TypeError") else found[1])
        assert found[0] == ("TypeError" if message.startswith("TypeError") else "ValueError")
    ref = torch.linalg.svdvals(problem("gaussian", 40, 30)[0])[:2]
    torch.testing.assert_close(ranks[0][("error", "after")], ref, rtol=1e-10, atol=0)
    assert all(r[("error", "same options")] is None for r in ranks)  # None is SolverOptions()
    assert all(r[("error", "same k")] is None for r in ranks)  # np.int64(2) is 2, np.float64 a float
    assert ranks[0][("error", "not a member")] is None  # the group [0]'s own process solves its block
    for r in ranks[1:]:
        assert re.search(r"global rank \d+\) is not in the ShardedMatrix's `group` \(ranks \[0\]\)",
                         r[("error", "not a member")][1])  # fmt: skip
    for r in ranks:  # second derivatives of a split A are refused: they had come out wrong (a review)
        assert r[("error", "create graph")][0] == "NotImplementedError"
        assert (
            "create_graph=True) of A split across processes are not supported"
            in r[("error", "create graph")][1]
        )


def test_sharded_matrix_arguments_are_checked():
    with pytest.raises(TypeError, match=r"`block` must be a torch.Tensor"):
        riemsvd.ShardedMatrix([[1.0]], 0)
    # torch's "vmap: ... calling .item() on a Tensor" had come from the solve (a new user's trial)
    for mapped in (
        torch.func.vmap(lambda b: riemsvd.ShardedMatrix(b, 0)),
        torch.func.vmap(torch.func.grad(lambda b: riemsvd.ShardedMatrix(b, 0) and b.sum())),  # under grad's
    ):
        with pytest.raises(ValueError, match=r"`block` is mapped over by torch.func.vmap"):
            mapped(torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match=r"`dim` must be 0 \(split by rows\) or 1"):
        riemsvd.ShardedMatrix(torch.ones(2, 2), 2)
    # torch's raw NotImplementedError had come from the solve
    for sparse in (torch.eye(3).to_sparse(), torch.eye(3).to_sparse_csr()):
        with pytest.raises(TypeError, match=r"`block` must be a dense tensor, .* Pass `block.to_dense\(\)`"):
            riemsvd.ShardedMatrix(sparse, 0)
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match=r"call torch.distributed.init_process_group first"):
            riemsvd.ShardedMatrix(torch.ones(2, 2), 0)


def test_sharded_benchmark_runs_and_agrees_with_one_process(tmp_path):
    out = tmp_path / "rows.json"
    command = [sys.executable, "-m", "riemsvd.bench_sharded", "--size", "90x60", "--processes", "2"]
    command += ["--k", "2", "--classes", "decay", "--reps", "1", "--json", str(out)]
    pipe = subprocess.PIPE
    process = subprocess.Popen(command, stdout=pipe, stderr=pipe, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the benchmark and the processes it spawned
        pytest.fail(f"the sharded benchmark did not finish within {DEADLINE:.0f} s")
    assert process.returncode == 0, stderr.decode()[-2000:]
    rows = json.loads(out.read_text())
    assert [(r["processes"], r["split"]) for r in rows] == [(2, "rows"), (2, "columns")]
    for row in rows:
        assert row["sigma_difference"] <= 1e-9
        whole = 60 if row["split"] == "rows" else 90  # the length of the side that is not split
        assert 0 < row["fraction_of_mn"] < 1 and row["per_product"] <= whole + 4 * default_basis(2)
    assert "| decay | 2 | 2 | rows |" in stdout.decode()
