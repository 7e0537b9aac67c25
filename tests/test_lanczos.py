"""The solver's internal invariants: the orthonormalization's contract and the Golub–Kahan relations
A𝒱 = 𝒰H, Aᵀ𝒰 = 𝒱Hᵀ + F C after every iteration, restarts and random refills included.

These are what the residuals read off the small matrices rest on; a refill that dropped part of a
column once left Aᵀ𝒰 − 𝒱Hᵀ − FC at 4e-2 and stalled a warm-started solve (norm_bounds, cond12)."""

from __future__ import annotations

import math
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import riemsvd
from riemsvd import _backend, _deferred, _operator, _subspace
from riemsvd._space import HostSpace, Space, cholesky_qr
from tests.matrices import check_svd, make_matrix, orthonormal


def _basis_and_block(kinds, n, p, seed):
    """An orthonormal basis (n, p) and a block whose columns are of the given kinds."""
    gen = torch.Generator().manual_seed(seed)
    basis = orthonormal(n, p, gen)
    cols = []
    for kind in kinds:
        if kind == "random":
            cols.append(torch.randn(n, generator=gen, dtype=torch.float64))
        elif kind == "in_span":
            cols.append(basis @ torch.randn(p, generator=gen, dtype=torch.float64))
        elif kind == "nearly_in_span":  # new content 1e-9 of the column: kept, not noise
            v = basis @ torch.randn(p, generator=gen, dtype=torch.float64)
            cols.append(v + 1e-9 * torch.randn(n, generator=gen, dtype=torch.float64))
        elif kind == "duplicate" and cols:
            cols.append(cols[0].clone())
        else:
            cols.append(torch.zeros(n, dtype=torch.float64))
    return basis, torch.stack(cols, dim=1)


@given(
    kinds=st.lists(
        st.sampled_from(["random", "in_span", "nearly_in_span", "duplicate", "zero"]), min_size=1, max_size=4
    ),
    p=st.integers(0, 6),
    host=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=60)
def test_orthonormalization_keeps_every_column_in_the_span(kinds, p, host, seed):
    n = 30
    basis, x = _basis_and_block(kinds, n, p, seed)
    space = HostSpace(n) if host else Space(n)
    b = basis.numpy() if host else basis
    xs = x.numpy() if host else x
    q, coef, r = _subspace._orth(space, b if p else None, xs, x.shape[1], torch.Generator().manual_seed(seed))
    q = torch.as_tensor(np.asarray(q)) if host else q
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    assert torch.allclose(q.mT @ q, eye, atol=1e-13)
    if p:
        assert float((basis.mT @ q).abs().max()) <= 1e-13
    recon = q @ torch.as_tensor(r)
    if p:
        recon = recon + basis @ torch.as_tensor(coef)
    scale = float(torch.linalg.vector_norm(x, dim=0).max()) + 1e-300
    assert float((recon - x).abs().max()) <= 1e-13 * scale


def _host_state(n: int, pv: int, w: int, pu: int, dtype, seed: int) -> _subspace.Lanczos:
    """A Lanczos state on the host with orthonormal 𝒱 and F (pv and w columns, room for one more) and
    a random C (w, pu); 𝒰, H and the products are left empty (the F-side updates do not read them)."""
    gen = torch.Generator().manual_seed(seed)
    space = HostSpace(n)
    vbuf = space.empty((), pv + w + 1, dtype, "cpu")
    vbuf[:, : pv + w] = orthonormal(n, pv + w, gen).to(dtype).numpy()
    cbuf = np.zeros((pv + w + 1, pu + 1))
    cbuf[:w, :pu] = torch.randn(w, pu, generator=gen, dtype=torch.float64).numpy()
    empty = np.zeros((n, 0))
    return _subspace.Lanczos(vbuf, empty, empty, empty, pv, pu, w, np.zeros((pu + 1, pv + w + 1)), cbuf)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("w,columns", [(2, 1), (3, 1), (4, 3), (1, 1)])
def test_a_reflection_of_f_moves_the_chosen_direction_first_and_keeps_f_c(
    monkeypatch, compiled, dtype, w, columns
):
    """_reflect: F's first column becomes F d/‖d‖ (d's leading left singular vector for several
    columns, as :func:`_step` passes it), F stays orthonormal and F·C, the relation's term, is
    unchanged; by ``_steps.reflect`` and by its Python twin."""
    if compiled and _subspace.STEPS is None:
        pytest.skip("the C half steps (setup.py) were not built")
    if not compiled:
        monkeypatch.setattr(_subspace, "_HALVES", _subspace._PYTHON_HALVES)
    st = _host_state(50, 6, w, 5, dtype, seed=w + columns)
    gen = torch.Generator().manual_seed(7)
    d = torch.randn(w, columns, generator=gen, dtype=torch.float64).numpy()
    f0, fc0 = st.f.astype(np.float64), st.f.astype(np.float64) @ st.c
    lead = d[:, 0] if columns == 1 else np.linalg.svd(d)[0][:, 0]
    _subspace._reflect(st, lead)
    f1 = st.f.astype(np.float64)
    tol = 50 * float(torch.finfo(dtype).eps)
    target = f0 @ lead / np.linalg.norm(lead)
    assert min(np.abs(f1[:, 0] - target).max(), np.abs(f1[:, 0] + target).max()) <= tol
    assert np.abs(f1.T @ f1 - np.eye(w)).max() <= tol
    assert np.abs(f1 @ st.c - fc0).max() <= tol * np.abs(fc0).max()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_probes_random_column_gives_the_coordinates_of_its_part_outside_v(dtype):
    """_random_column: F's new column q is orthonormal to 𝒱 and F, and [F, q]·coords is the unit
    vector along the random y's part outside 𝒱 (the direction the probe starts from)."""
    n, pv, w = 60, 8, 2
    st = _host_state(n, pv, w, 4, dtype, seed=3)
    y = torch.randn(n, 1, generator=torch.Generator().manual_seed(4), dtype=dtype).numpy()
    v = st.v.astype(np.float64)
    outside = y[:, 0].astype(np.float64) - v @ (v.T @ y[:, 0].astype(np.float64))
    coords = _subspace._random_column(st, y)
    assert coords is not None and coords.shape == (w + 1, 1)
    fq = st.vbuf[:, pv : pv + w + 1].astype(np.float64)
    tol = 50 * float(torch.finfo(dtype).eps)
    assert np.abs(fq.T @ fq - np.eye(w + 1)).max() <= tol
    assert np.abs(v.T @ fq).max() <= tol
    assert np.abs(fq @ coords[:, 0] - outside / np.linalg.norm(outside)).max() <= tol


_COMPILED = _subspace._HALVES if _subspace.STEPS is not None else None
needs_compiled = pytest.mark.skipif(_COMPILED is None, reason="the C half steps (setup.py) were not built")


def _column(kind: str, basis: np.ndarray, gen: np.random.Generator, known=None) -> np.ndarray:
    """A vector to orthogonalize against the basis's columns: of a kind that keeps a part outside
    them or one that holds only rounding noise there (or NaN). ``known``: the part along the basis
    that the half step is told of (its coefficients in exact arithmetic), for the kinds built on it."""
    rows, q = basis.shape
    unit = float(np.finfo(basis.dtype).eps)
    inside = basis.astype(np.float64) @ gen.standard_normal(q) if q else np.zeros(rows)
    outside = gen.standard_normal(rows)
    if q:
        outside -= basis.astype(np.float64) @ (basis.astype(np.float64).T @ outside)
    size = np.linalg.norm(outside)
    outside = outside / size if size > 0 else outside  # none where the basis spans every row
    if kind == "random":
        return gen.standard_normal(rows)
    if kind == "tiny":  # a sum of squares that underflows in float64: the norm is taken scaled
        return (1e-300 if basis.dtype == np.float64 else 1e-30) * gen.standard_normal(rows)
    if kind == "in_span":
        return inside
    if kind == "nearly_in_span":  # 1e-3 of it outside: one Gram–Schmidt pass leaves 1e3·ε along the basis
        return inside + 1e-3 * np.linalg.norm(inside) * outside
    if kind == "barely_outside":  # 30·ε of it outside: kept, against a threshold of 4·ε
        # of both the column and the known part (the threshold counts it): of the column alone, a
        # float32 one 30·ε·0.05 outside beside a known part of norm 2 lay under the threshold, where
        # either verdict is right, and the C and Python twins gave one each (1 hypothesis seed in 40)
        part = 0.0 if known is None else np.linalg.norm(known)
        return inside + 30 * unit * (np.linalg.norm(inside) + part) * outside
    if kind == "known_dominant":  # 2·ε of the known part outside: lost (the threshold counts that part)
        part = np.zeros(rows) if known is None else known
        return part + 2 * unit * np.linalg.norm(part) * outside
    if kind == "nan":
        x = gen.standard_normal(rows)
        x[rows // 2] = np.nan
        return x
    return np.zeros(rows)


def _unit(column: np.ndarray, what: str) -> None:
    """A kept column is normalized to the rounding of its dtype."""
    norm = float(np.linalg.norm(column.astype(np.float64)))
    assert abs(norm - 1) <= 4 * float(np.finfo(column.dtype).eps) * math.sqrt(column.shape[0]), (what, norm)


def _orthogonal(column: np.ndarray, basis: np.ndarray, what: str) -> None:
    """The new unit column is orthogonal to the basis to a few ε (a second Gram–Schmidt pass where the
    first kept under 1/√2 of the column; with one, 1e3·ε for the nearly-in-span kind)."""
    if basis.shape[1]:
        unit = float(np.finfo(column.dtype).eps)
        along = np.abs(basis.astype(np.float64).T @ column.astype(np.float64)).max()
        assert along <= 20 * unit, (what, along)


def _agree(
    compiled, twin, x0: np.ndarray, norm: float, what: str, unit_column: bool = False, known: float = 0.0
) -> None:
    """Results of the two implementations for the column x0, whose part outside the basis had norm
    ``norm``, less a known part of norm ``known``: coefficients within 100·ε·(‖x0‖ + known)
    (classical Gram–Schmidt's rounding, a few ε per basis column, and the known part's subtraction;
    the C code sums in float64, BLAS in the vectors' dtype), the normalized column within that over
    ``norm`` (its rounding grows as the part outside shrinks). Without the known part's share, a
    column of norm 0.005 less a known 1.64 (5e-6 of it outside) differed by 1e-10 from the exact one
    in both twins, against a bound of 2e-13 (1 hypothesis seed in about 50)."""
    top = float(np.abs(x0.astype(np.float64)).max(initial=0.0))
    size = top * float(np.linalg.norm(x0 / top)) if top > 0 else 0.0  # scaled: the tiny kind's underflow
    bound = 100 * float(np.finfo(x0.dtype).eps) * (size + known)
    if unit_column:
        bound /= norm
    np.testing.assert_allclose(compiled, twin, rtol=0, atol=bound, err_msg=what)


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(
    rows=st.integers(1, 70),
    pu=st.integers(0, 9),
    pv=st.integers(0, 9),
    w=st.integers(1, 3),
    known=st.sampled_from(["recurrence", "restart", "none"]),
    kind=st.sampled_from(
        [
            "random",
            "random",
            "tiny",
            "in_span",
            "nearly_in_span",
            "barely_outside",
            "known_dominant",
            "zero",
            "nan",
        ]
    ),
    seed=st.integers(0, 2**31 - 1),
)
@example(rows=40, pu=6, pv=5, w=1, known="recurrence", kind="known_dominant", seed=1)  # the threshold's
@example(rows=40, pu=6, pv=5, w=2, known="restart", kind="known_dominant", seed=2)  # known part
@example(rows=40, pu=6, pv=5, w=1, known="restart", kind="barely_outside", seed=3)
@settings(max_examples=150, deadline=None)
def test_the_c_half_steps_do_what_their_python_twins_do(dtype, rows, pu, pv, w, known, kind, seed):
    """``_steps.gk_left``, ``gk_right`` and ``orth`` against ``_gk_left_py``, ``_gk_right_py`` and
    ``_orth_py`` on the same state: the same verdict (a norm, or −1 where the column held only
    rounding noise or NaN), the products copied bit for bit, and the new column, H and C within
    rounding; with no known coefficient, the recurrence's one and a restart's full row."""
    gen = np.random.default_rng(seed)
    unit = float(np.finfo(dtype).eps)
    pu, pv = min(pu, rows), min(pv, max(0, rows - w))
    # the left half: 𝒰 (rows, pu) orthonormal, A f in column pu
    ubuf = np.zeros((rows, pu + 1), dtype, order="F")
    if pu:
        ubuf[:, :pu] = np.linalg.qr(gen.standard_normal((rows, pu)))[0]
    c = np.zeros((w + 1, pu + 2))
    if pu and known == "recurrence":
        c[0, pu - 1] = gen.standard_normal()
    elif pu and known == "restart":
        c[0, :pu] = gen.standard_normal(pu)
    ubuf[:, pu] = _column(kind, ubuf[:, :pu], gen, ubuf[:, :pu].astype(np.float64) @ c[0, :pu])
    h0 = gen.standard_normal((pu + 1, pv + 1))  # what H held before: its new row and column are rewritten
    states = [(ubuf.copy(order="F"), np.zeros((rows, pv + 1), dtype, order="F"), h0.copy()) for _ in range(2)]
    lefts = (_COMPILED.left, _subspace._gk_left_py)
    alphas = [left(u, av, h, c, pu, pv, unit) for left, (u, av, h) in zip(lefts, states)]
    assert (alphas[0] >= 0) == (alphas[1] >= 0), alphas
    for got in states:
        np.testing.assert_array_equal(got[1][:, pv], ubuf[:, pu])  # the product, as it came
    if alphas[1] >= 0:
        x0, alpha, part = ubuf[:, pu], alphas[1], float(np.linalg.norm(c[0, :pu]))  # 𝒰 is orthonormal
        _agree(alphas[0], alpha, x0, alpha, "α", known=part)
        new_u = "the new column of 𝒰"
        _agree(states[0][0][:, pu], states[1][0][:, pu], x0, alpha, new_u, unit_column=True, known=part)
        for state in states:  # both twins: the Python one serves where the C one was not built
            _orthogonal(state[0][:, pu], ubuf[:, :pu], "the new column of 𝒰")
        _unit(states[0][0][:, pu], "the new column of 𝒰")
        _agree(states[0][2], states[1][2], x0, alpha, "H", known=part)
    else:
        np.testing.assert_array_equal(states[0][2], h0)  # untouched where the column was lost
    # the right half: 𝒱 and F (rows, pv + w) orthonormal, Aᵀ of 𝒰's new column in column pv + w
    q = pv + w
    if q >= rows:
        return
    vbuf = np.zeros((rows, q + 1), dtype, order="F")
    vbuf[:, :q] = np.linalg.qr(gen.standard_normal((rows, q)))[0]
    alpha = abs(gen.standard_normal())
    known_part = alpha * vbuf[:, pv].astype(np.float64)
    vbuf[:, q] = _column(kind, vbuf[:, :q], gen, known_part) + (known_part if kind == "random" else 0.0)
    cs = [c.copy() for _ in range(2)]
    cs[0][:w, :pu] = cs[1][:w, :pu] = gen.standard_normal((w, pu))
    vs = [vbuf.copy(order="F") for _ in range(2)]
    atus = [np.zeros((rows, pu + 1), dtype, order="F") for _ in range(2)]
    rights = (_COMPILED.right, _subspace._gk_right_py)
    betas = [right(v, atu, cc, pu, pv, w, alpha, unit) for right, v, atu, cc in zip(rights, vs, atus, cs)]
    assert (betas[0] >= 0) == (betas[1] >= 0), betas
    for atu in atus:
        np.testing.assert_array_equal(atu[:, pu], vbuf[:, q])
    if betas[1] >= 0:
        y0, beta = vbuf[:, q], betas[1]
        _agree(betas[0], beta, y0, beta, "β", known=alpha)
        _agree(vs[0][:, q], vs[1][:, q], y0, beta, "F's new column", unit_column=True, known=alpha)
        for v in vs:
            _orthogonal(v[:, q], vbuf[:, :q], "F's new column")
        _unit(vs[0][:, q], "F's new column")
        _agree(cs[0], cs[1], y0, beta, "C", known=alpha)
    else:
        np.testing.assert_array_equal(cs[0], cs[1])  # untouched where the column was lost
    # orth on a vector of its own, without a basis and against 𝒱 and F
    for basis, qq in ((None, 0), (vs[0], q)):
        x0 = _column(kind, vbuf[:, :qq], gen).astype(dtype)
        xs, coefs = [x0.copy() for _ in range(2)], [np.zeros(qq) for _ in range(2)]
        orths = (_COMPILED.orth, _subspace._orth_py)
        norms = [orth(basis, qq, x, 0, np.zeros(0), cf, unit) for orth, x, cf in zip(orths, xs, coefs)]
        assert (norms[0] >= 0) == (norms[1] >= 0), norms
        if norms[1] >= 0:
            _agree(xs[0], xs[1], x0, norms[1], "orth's column", unit_column=True)
            for x in xs:
                _orthogonal(x, vbuf[:, :qq], "orth's column")
            _unit(xs[0], "orth's column")
            _agree(coefs[0], coefs[1], x0, norms[1], "orth's coefficients")


@needs_compiled
def test_the_c_half_steps_refuse_what_they_cannot_read():
    """Wrong dtypes, layouts and indices are errors, not reads outside the buffers."""
    u = np.zeros((10, 4), order="F")
    h, c = np.zeros((5, 5)), np.zeros((5, 5))
    with pytest.raises(TypeError, match="ubuf"):
        _COMPILED.left(np.zeros((10, 4)), u, h, c, 1, 1, 1e-16)  # row-major: columns not contiguous
    with pytest.raises(TypeError, match="avbuf"):
        _COMPILED.left(u, u.astype(np.float32, order="F"), h, c, 1, 1, 1e-16)
    with pytest.raises(TypeError, match="h"):
        _COMPILED.left(u, u.copy(order="F"), np.zeros((5, 5), order="F"), c, 1, 1, 1e-16)
    with pytest.raises(ValueError, match="range"):
        _COMPILED.left(u, u.copy(order="F"), h, c, 4, 1, 1e-16)
    with pytest.raises(ValueError, match="range"):
        _COMPILED.right(u, u.copy(order="F"), c, 1, 2, 2, 1.0, 1e-16)  # column pv + w = 4 is past the end
    with pytest.raises(ValueError, match="q = 0"):
        _COMPILED.orth(None, 2, np.zeros(10), 0, np.zeros(0), np.zeros(2), 1e-16)
    with pytest.raises(TypeError, match="float"):
        _COMPILED.orth(None, 0, np.zeros(10, np.int64), 0, np.zeros(0), np.zeros(0), 1e-16)
    # indices whose sums overflow, and vectors that are not contiguous (a review crashed the process
    # with both: heap corruption past the coefficients, writes past a reversed view)
    big = sys.maxsize
    with pytest.raises(ValueError, match="range"):
        _COMPILED.right(u, u.copy(order="F"), c, 0, big - 1, 2, 1.0, 1e-16)
    with pytest.raises(ValueError, match="range"):
        _COMPILED.orth(u, 3, np.zeros(10), big, np.ones(1), np.zeros(3), 1e-16)
    for coef in (np.zeros(8).reshape(8, 1)[::-1], np.zeros(8)[::-1], np.full((4, 2), 7.0)[:, :1]):
        with pytest.raises(TypeError, match="coef"):
            _COMPILED.orth(u, 3, np.zeros(10), 0, np.zeros(0), coef, 1e-16)
    for x in (np.zeros((10, 1)), np.ones(20)[::2]):  # a review: SystemError, no exception set
        with pytest.raises(TypeError, match="x must be"):
            _COMPILED.orth(u, 3, x, 0, np.zeros(0), np.zeros(3), 1e-16)
    # what orth only reads may be read-only, as for its Python twin
    basis = np.asfortranarray(np.linalg.qr(np.random.default_rng(0).standard_normal((10, 3)))[0])
    basis.flags.writeable = False
    known = np.ones(1)
    known.flags.writeable = False
    xs, coefs = [np.arange(10.0) for _ in range(2)], [np.zeros(3) for _ in range(2)]
    norms = [
        orth(basis, 3, x, 1, known, cf, 2.2e-16)
        for orth, x, cf in zip((_COMPILED.orth, _subspace._orth_py), xs, coefs)
    ]
    np.testing.assert_allclose(norms[0], norms[1], rtol=1e-12)
    np.testing.assert_allclose(xs[0], xs[1], atol=1e-12)


def test_the_c_half_steps_are_built_where_a_c_compiler_is():
    """setup.py builds them as an optional extension: a failed build installs the Python twins
    silently, at about 1.2× the time of a 384×384 solve. Where the compiler the interpreter was built
    with is on this machine, the build must have worked."""
    import os
    import shutil
    import sysconfig

    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) here")
    if not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        pytest.skip("no Python headers here (a distribution's python3-dev)")
    assert _COMPILED is not None, "riemsvd._steps was not built: `pip install -e .` again, and read its log"
    # an editable install in a checkout keeps the module it built: one older than its sources runs old
    # code (installed from a wheel, the files' times are the wheel's)
    from riemsvd import _steps

    package = os.path.dirname(_steps.__file__)
    if not os.path.isdir(os.path.join(package, os.pardir, ".git")):
        return
    built = os.path.getmtime(_steps.__file__)
    for source in ("_steps.c", "_steps_impl.h"):
        path = os.path.join(package, source)
        if os.path.exists(path):
            assert os.path.getmtime(path) <= built, (
                f"{source} is newer than {_steps.__file__}: `pip install -e .`"
            )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_solves_through_the_python_twins_reach_the_svd(dtype, monkeypatch):
    """Where the C half steps were not built, solves take the Python twins (through restarts, a
    probe for copies and a rank-deficient A): the same values as torch.linalg.svd's, converged."""
    monkeypatch.setattr(_subspace, "_HALVES", _subspace._PYTHON_HALVES)
    gen = torch.Generator().manual_seed(3)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    for kind, shape, k, options in [
        ("gaussian", (120, 80), 1, riemsvd.SolverOptions(max_basis=12)),
        ("decay", (90, 150), 4, riemsvd.SolverOptions()),
        ("rank_deficient", (60, 40), 3, riemsvd.SolverOptions()),
    ]:
        a = make_matrix("decay" if kind == "rank_deficient" else kind, *shape, gen, dtype)
        if kind == "rank_deficient":
            a[:, ::2] = 0.0
        r = riemsvd.solve(a, k, tol=tol, generator=gen, options=options, method="iterative")
        assert bool(r.info.converged.all()), kind
        ref = torch.linalg.svdvals(a.double())[:k]
        torch.testing.assert_close(r.S.double(), ref, rtol=10 * tol, atol=10 * tol * float(ref[0]))


def _checked_steps(monkeypatch, a: torch.Tensor, worst: list):
    """Wrap the solver's iteration (the general expansion and the Golub–Kahan step alike, and the runs
    of steps made in one call into C) so that every state it leaves is checked against A: the bases
    orthonormal, the relations, and the products the final check reads (A𝒱 and Aᵀ𝒰 as A returned
    them, rotated with the bases at restarts)."""
    original, run = _subspace._step, _subspace._golub_kahan_steps

    def step(op, state, probe, ywant, b, generator):
        original(op, state, probe, ywant, b, generator)
        worst.append(_relation_error(a, state))

    def steps(op, state, generator, count, probe=False):
        done = run(op, state, generator, count, probe)
        worst.append(_relation_error(a, state))
        return done

    monkeypatch.setattr(_subspace, "_step", step)
    monkeypatch.setattr(_subspace, "_golub_kahan_steps", steps)


def _relation_error(a: torch.Tensor, state) -> float:
    """The largest departure of a solver state from its contract, relative to ‖A‖₂: 𝒰 and [𝒱 F]
    orthonormal, A𝒱 = 𝒰H, Aᵀ𝒰 = 𝒱Hᵀ + F C, and the kept products A𝒱 and Aᵀ𝒰 those of the bases
    where the state says it keeps them (``av_kept``, ``atu_kept``)."""
    a64 = a.double()
    as_t = lambda x: torch.as_tensor(np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x)).double()  # noqa: E731
    u, v, f = as_t(state.u), as_t(state.v), as_t(state.f)
    av, atu = as_t(state.av), as_t(state.atu)
    h, c = torch.as_tensor(state.h), torch.as_tensor(state.c)
    scale = float(torch.linalg.matrix_norm(a64, 2))
    w = torch.cat([v, f], dim=-1)
    errors = [
        float((u.mT @ u - torch.eye(u.shape[-1], dtype=torch.float64)).abs().max()),
        float((w.mT @ w - torch.eye(w.shape[-1], dtype=torch.float64)).abs().max()),
        float((a64 @ v - u @ h).abs().max()) / scale,
        float((a64.mT @ u - v @ h.mT - f @ c).abs().max()) / scale,
        float((a64 @ v - av).abs().max()) / scale if state.av_kept else 0.0,
        float((a64.mT @ u - atu).abs().max()) / scale if state.atu_kept else 0.0,
    ]
    return max(errors)


@pytest.mark.parametrize(
    "kind,shape,k,options,warm",
    [
        ("gaussian", (120, 80), 1, riemsvd.SolverOptions(max_basis=12), False),  # many restarts
        ("cond12", (300, 150), 2, riemsvd.SolverOptions(), True),  # the refill that dropped a part
        ("decay", (90, 60), 3, riemsvd.SolverOptions(start_block=3, max_basis=16), False),
        ("decay", (90, 60), 2, riemsvd.SolverOptions(block=2, max_basis=16), True),
        ("rank_deficient", (50, 40), 4, riemsvd.SolverOptions(), False),
        ("cluster", (40, 12), 5, riemsvd.SolverOptions(), False),  # the whole space is reached
        ("gaussian", (520, 400), 2, riemsvd.SolverOptions(), False),  # 1.6 MiB: products measured
        # start blocks wider than half the basis asked for, which once had no room beside their residual
        ("decay", (300, 200), 2, riemsvd.SolverOptions(start_block=18), False),
        ("gaussian", (300, 200), 3, riemsvd.SolverOptions(start_block=30, max_basis=16), True),
    ],
)
@pytest.mark.parametrize("fused", [False, True])
def test_golub_kahan_relations_hold_after_every_iteration(
    monkeypatch, kind, shape, k, options, warm, fused, gen
):
    """Also with every step's products made in one pass over A (riemsvd._steps.gk_fused, which A of
    more than FUSED_ABOVE bytes take): a rank-deficient A exhausts its Krylov space, and a step there
    (α = 1e-14) had put Aᵀ𝒰 1.9e-6·‖A‖ off where the Gram–Schmidt's coefficients were recovered from
    their sum with the known ones."""
    passes = _fused_passes(monkeypatch, fused)
    if kind == "rank_deficient":
        a = make_matrix("decay", *shape, gen)
        a[:, ::2] = 0.0
    else:
        a = make_matrix(kind, *shape, gen)
    init = None
    if warm:
        previous = riemsvd.solve(a, k, generator=gen, method="iterative")
        init = (previous.U, previous.V)
        a = a + 1e-6 * torch.randn(a.shape, generator=gen, dtype=a.dtype)
    worst: list = []
    _checked_steps(monkeypatch, a, worst)
    result = riemsvd.solve(a, k, init=init, generator=gen, options=options, method="iterative")
    assert worst and max(worst) <= 1e-12, max(worst)
    assert bool(result.info.converged)
    torch.testing.assert_close(result.S, torch.linalg.svdvals(a)[:k], rtol=1e-10, atol=1e-13)
    assert (len(passes) > 0) == fused


@pytest.mark.parametrize(
    "dtype,tol,fused,kept",
    [
        (torch.float32, 1e-5, True, (False, True)),  # the pass's steps read Aᵀ𝒰, the check neither
        (torch.float32, 1e-5, False, (False, False)),  # two products a step: nothing reads them
        (torch.float64, 1e-10, False, (True, True)),  # the check reads both (drift ≪ 0.05·tol)
    ],
)
def test_restarts_rotate_the_kept_products_only_where_they_are_read(
    monkeypatch, dtype, tol, fused, kept, gen
):
    """A restart rotates A𝒱 and Aᵀ𝒰 with the bases only where something reads them later: the final
    check, where their drift allows (never in float32, whose check makes fresh products), and for Aᵀ𝒰
    the pass's steps. The relations the steps use still hold after every iteration, the check's
    residual is the true one, and the values are the SVD's. (Whether rotating them costs less than
    fresh products is the subject of the next test: here it always does.)"""
    _fused_passes(monkeypatch, fused)
    monkeypatch.setattr(_subspace, "_rotations_pay", lambda *args: True)
    flags = _kept_flags(monkeypatch)
    a = make_matrix("gaussian", 160, 120, gen, dtype)
    worst: list = []
    _checked_steps(monkeypatch, a, worst)
    options = riemsvd.SolverOptions(max_basis=14)  # many restarts
    result = riemsvd.solve(a, 3, tol=tol, generator=gen, options=options, method="iterative")
    assert len(flags) >= 3 and set(flags) == {kept}, flags
    assert max(worst) <= (1e-12 if dtype == torch.float64 else 1e-5), max(worst)
    assert bool(result.info.converged)
    a64, u, s, v = a.double(), result.U.double(), result.S.double(), result.V.double()
    true = max(float((a64 @ v - u * s).norm(dim=0).max()), float((a64.mT @ u - v * s).norm(dim=0).max()))
    assert true / float(s[0]) <= tol
    torch.testing.assert_close(s, torch.linalg.svdvals(a64)[:3], rtol=10 * tol, atol=0.0)


def _kept_flags(monkeypatch) -> list:
    """The list that every restart appends its state's (av_kept, atu_kept) to, as it leaves them."""
    flags: list = []
    restart = _subspace._restart

    def recorded(op, st, *args):
        out = restart(op, st, *args)
        flags.append((st.av_kept, st.atu_kept))
        return out

    monkeypatch.setattr(_subspace, "_restart", recorded)
    return flags


@pytest.mark.parametrize("sparse", [True, False])
def test_restarts_leave_the_kept_products_once_rotating_them_costs_more_than_fresh_ones(
    monkeypatch, sparse, gen
):
    """The kept products are rotated at a restart only while the rotations so far cost no more than
    the 2k fresh products the check would make instead. A sparse A's products are cheap beside a
    rotation of both buffers: they are left at the first or second restart, and the check makes
    fresh ones (2k products more than with them kept). A dense A's products cost tens of rotations:
    they are kept through the restarts of the solve. Either way the check's residual is the true one
    and the values are the SVD's."""
    flags = _kept_flags(monkeypatch)
    if sparse:
        a = scipy.sparse.random(1536, 384, density=0.01, format="csr", random_state=np.random.default_rng(0))
        a64 = torch.from_numpy(a.toarray())
    else:
        a = a64 = make_matrix("gaussian", 1000, 600, gen)  # 4.8 MB, products on the fused pass
    k = 8
    result = riemsvd.solve(a, k, tol=1e-10, generator=torch.Generator().manual_seed(0), method="iterative")
    assert len(flags) >= 3, flags
    if sparse:
        assert flags[0] in ((True, True), (False, False)) and set(flags[2:]) == {(False, False)}, flags
    else:
        assert set(flags) == {(True, True)}, flags
    assert bool(result.info.converged)
    u, s, v = result.U.double(), result.S.double(), result.V.double()
    true = max(float((a64 @ v - u * s).norm(dim=0).max()), float((a64.mT @ u - v * s).norm(dim=0).max()))
    assert true / float(s[0]) <= 1e-10
    torch.testing.assert_close(s, torch.linalg.svdvals(a64)[:k], rtol=1e-10, atol=0.0)


@pytest.mark.skipif(_backend.STEPS is None, reason="riemsvd._steps was not built")
def test_a_solve_on_the_pass_wakes_its_workers_before_its_first_step(monkeypatch):
    """Claiming the one pass wakes its workers (asleep between solves) for the threads it takes, once,
    before the first step; the wake is a round with nothing to do, which returns at once on any
    count of threads."""
    real, events = _backend.STEPS, []

    class Steps:
        def __getattr__(self, name):
            if name in ("gk_fused", "gk_run"):
                events.append(name)
            return getattr(real, name)

        def wake(self, threads):
            events.append(("wake", threads))
            real.wake(threads)

    monkeypatch.setattr(_operator, "STEPS", Steps())
    monkeypatch.setattr(_subspace, "STEPS", Steps())
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = make_matrix("decay", 300, 200, torch.Generator().manual_seed(0))  # 480 KB: two shares
        assert bool(riemsvd.solve(a, 1, tol=1e-10, method="iterative").info.converged)
    finally:
        torch.set_num_threads(threads)
    assert events[0] == ("wake", 2) and events.count(("wake", 2)) == 1 and "gk_fused" in events, events[:3]
    for count in (0, 1, 2):
        assert real.wake(count) is None


class _CountedSteps:
    """riemsvd._steps with its one-pass calls counted (the C module's own attributes are read-only):
    (threads asked for, Aᵀ's products made afresh) per gk_fused call and per run of gk_run."""

    def __init__(self, steps, calls: list) -> None:
        self._steps, self._calls = steps, calls

    def __getattr__(self, name):
        return getattr(self._steps, name)

    def gk_fused(self, *args):
        alpha, fresh = self._steps.gk_fused(*args)
        self._calls.append((args[11], fresh))  # (a, 6 buffers, pu, pv, w, eps, threads, top)
        return alpha, fresh

    def gk_run(self, *args):
        out = self._steps.gk_run(*args)  # (done, lost, fresh, alpha)
        self._calls.append((args[11], out[2]))  # (a, 6 buffers, pu, pv, w, eps, threads, steps, probe)
        return out


def _fused_passes(monkeypatch, fused: bool) -> list:
    """Every dense A's steps on the fused pass (``fused``) or on two products; returns the list that
    the fused passes append (threads, fresh) to."""
    if fused and _backend.STEPS is None:
        pytest.skip("riemsvd._steps was not built")
    monkeypatch.setattr(_operator, "FUSED_ABOVE", -1 if fused else math.inf)
    calls: list = []
    if _backend.STEPS is not None:
        monkeypatch.setattr(_subspace, "STEPS", _CountedSteps(_backend.STEPS, calls))
    return calls


@pytest.mark.skipif(_backend.STEPS is None, reason="riemsvd._steps was not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_fused_pass_finds_what_two_products_find(monkeypatch, dtype, gen):
    """An A of more than FUSED_ABOVE bytes with contiguous rows has its steps' products made in one
    pass over it, on the threads torch has (two here, the calling thread and a worker); each spectrum
    gives the two-product path's values to the dtype's rounding, with as many products, and the
    same on one thread; a transposed view keeps the two products, and an A smaller than a thread's
    least share (FUSED_SHARE) takes one thread."""
    tol = 1e-6 if dtype == torch.float32 else 1e-11
    threads = torch.get_num_threads()
    try:
        for kind in ("decay", "cond12", "cluster", "lowrank"):
            a = make_matrix(kind, 700, 400, gen).to(dtype)
            assert a.numel() * a.element_size() > _operator.FUSED_ABOVE
            results = {}
            for fused, count in ((False, 2), (True, 2), (True, 1)):
                torch.set_num_threads(count)
                passes = _fused_passes(monkeypatch, fused)
                seed = torch.Generator().manual_seed(0)
                r = riemsvd.solve(a, 4, tol=tol, generator=seed, method="iterative")
                assert bool(r.info.converged) and float(r.info.residual) <= tol, (kind, fused, count)
                assert ({t for t, _ in passes} == {count}) if fused else not passes
                assert torch.get_num_threads() == count  # restored after the solve
                results[fused, count] = r
            ref = torch.linalg.svdvals(a.double())[:4]
            for r in results.values():
                torch.testing.assert_close(r.S.double(), ref, rtol=10 * tol, atol=0)
            two = results[False, 2].info.matvecs
            assert abs(results[True, 2].info.matvecs - two) <= 0.2 * two, kind
        passes = _fused_passes(monkeypatch, True)
        wide = make_matrix("decay", 400, 700, gen).to(dtype).mT  # 700×400, column-major
        riemsvd.solve(wide, 2, tol=tol, generator=gen, method="iterative")
        assert not passes
        torch.set_num_threads(2)
        small = make_matrix("decay", 60, 50, gen).to(dtype)  # under FUSED_SHARE bytes: one share
        assert small.numel() * small.element_size() < _operator.FUSED_SHARE
        r = riemsvd.solve(small, 2, tol=tol, generator=gen, method="iterative")
        assert bool(r.info.converged) and passes and {t for t, _ in passes} == {1}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(_backend.STEPS is None, reason="riemsvd._steps was not built")
def test_the_fused_pass_makes_the_product_afresh_where_its_own_would_carry_rounding(monkeypatch, gen):
    """Beyond a rank-2 A's rank the steps' columns are rounding noise with parts along 𝒰 as large as
    what is left (|d| > α): Aᵀ of the new u from the pass's Aᵀw less (Aᵀ𝒰)d, divided by α, would carry
    |d|/α times Aᵀ𝒰's rounding, and the pass makes the product afresh there. The values beyond the
    rank come out as rounding, and the relations hold."""
    passes = _fused_passes(monkeypatch, True)
    x, y = (torch.randn(rows, 2, dtype=torch.float64, generator=gen) for rows in (700, 400))
    a = x @ y.T
    worst: list = []
    _checked_steps(monkeypatch, a, worst)
    result = riemsvd.solve(a, 5, generator=gen, method="iterative")
    assert any(fresh for _, fresh in passes)
    assert max(worst) <= 1e-12, max(worst)
    check_svd(a, result, 5, result.info.tol)


def _tensor_solver(monkeypatch, checked: torch.Tensor | None = None) -> tuple[list, list]:
    """Make CPU solves keep their vectors as tensors, as on a GPU (the deferred steps), and record
    what each pull of deferred steps did, (steps pulled, steps undone), and where ``checked`` is the
    A solved, the state's :func:`_relation_error` after it. Returns the two lists."""
    monkeypatch.setattr(riemsvd._operator, "NUMPY_BLAS", False)
    pulls: list = []
    worst: list = []
    original = _deferred.Deferred.pull

    def pull(self, space, state):
        steps = len(self.records)
        undone = original(self, space, state)
        pulls.append((steps, undone))
        if checked is not None:
            worst.append(_relation_error(checked, state))
        return undone

    monkeypatch.setattr(_deferred.Deferred, "pull", pull)
    return pulls, worst


@pytest.mark.parametrize(
    "kind,shape,k,block,dtype",
    [
        ("gaussian", (200, 120), 1, 4, torch.float64),
        ("decay", (300, 200), 3, 8, torch.float64),
        ("cluster", (150, 100), 4, 8, torch.float64),
        ("rank_deficient", (120, 90), 2, 8, torch.float64),  # columns lost: steps undone
        ("cluster", (40, 30), 5, 8, torch.float64),  # the whole space is reached
        ("gaussian", (300, 200), 2, 8, torch.float32),
    ],
)
def test_deferred_steps_leave_the_golub_kahan_relations(monkeypatch, kind, shape, k, block, dtype, gen):
    """Where the vectors are tensors (a GPU), the steps between looks keep their coefficients on the
    device and :meth:`riemsvd._deferred.Deferred.pull` fills H and C from them at the look: after each
    pull the state is what the general step would have left, and the solve reaches the SVD. A step
    that lost a column (A of rank below the basis) is undone and taken again by the general step."""
    if kind == "rank_deficient":
        a = make_matrix("decay", *shape, gen)
        a[:, 12:] = 0.0
    else:
        a = make_matrix(kind, *shape, gen)
    a = a.to(dtype)
    pulls, worst = _tensor_solver(monkeypatch, checked=a)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    options = riemsvd.SolverOptions(block=block)
    result = riemsvd.solve(a, k, tol=tol, generator=gen, options=options, method="iterative")
    deferred = sum(n for n, _ in pulls)
    assert deferred >= 1, pulls  # the deferred steps ran
    if kind == "rank_deficient":
        assert any(undone for _, undone in pulls), pulls
    rounding = 1e-12 if dtype == torch.float64 else 5e-5
    assert worst and max(worst) <= rounding, max(worst)
    assert bool(result.info.converged), result.info
    ref = torch.linalg.svdvals(a.double())[:k]
    torch.testing.assert_close(result.S.double(), ref, rtol=10 * tol, atol=10 * tol * float(ref[0]))


@pytest.mark.parametrize("block", [1, 8])
def test_a_batch_element_that_loses_columns_stops_the_deferred_steps(block, monkeypatch):
    """A zero matrix beside a Gaussian loses a column at every step; undoing every element's deferred
    steps at each look for it took 914–1792 products where the host path took 164–416 (300×200,
    k = 4; a review), and with maxiter=300 the tensor path ended not converged. After the first
    loss the steps are the general ones: 156 and 416 products against the host path's 150 and 352."""
    gen = torch.Generator().manual_seed(0)
    a = make_matrix("gaussian", 300, 200, gen)
    batch = torch.stack([a, torch.zeros_like(a)])
    options = riemsvd.SolverOptions(block=block)

    def solve():
        return riemsvd.solve(
            batch, 4, tol=1e-8, maxiter=300, options=options, method="iterative",
            generator=torch.Generator().manual_seed(1),
        )  # fmt: skip

    host = solve()
    pulls, _ = _tensor_solver(monkeypatch)
    tensor = solve()
    assert any(undone for _, undone in pulls), pulls  # the zero element lost a column
    assert bool(tensor.info.converged.all()), tensor.info
    assert tensor.info.matvecs <= 1.25 * host.info.matvecs, (tensor.info.matvecs, host.info.matvecs)
    torch.testing.assert_close(tensor.S[0], torch.linalg.svdvals(a)[:4], rtol=1e-8, atol=0)
    assert bool((tensor.S[1] == 0).all())


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(["gaussian", "decay", "cluster", "lowrank", "cond12"]),
    m=st.integers(10, 150),
    n=st.integers(10, 150),
    k=st.integers(1, 4),
    block=st.sampled_from([1, 2, 3, 8]),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    scale=st.sampled_from([1.0, 1e-20, 1e20]),
    seed=st.integers(0, 2**16),
)
def test_solves_through_deferred_steps_reach_the_svd(kind, m, n, k, block, dtype, scale, seed):
    """Solves whose vectors are tensors (as on a GPU), over shapes, blocks, spectra, scales and dtypes:
    each pull of deferred steps leaves the Golub–Kahan relations, and the triplets are the SVD's, to
    tol. Blocks near a basis that fills the whole space (10 rows, blocks of 8) take the general step
    where the deferred one does not fit."""
    gen = torch.Generator().manual_seed(seed)
    a = make_matrix(kind, m, n, gen, dtype, scale)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    with pytest.MonkeyPatch.context() as mp:
        # a scaled A's state is of A times a power of two (Operator.rescale): its relations unchecked
        pulls, worst = _tensor_solver(mp, checked=a if scale == 1.0 else None)
        result = riemsvd.solve(
            a, k, tol=tol, generator=gen, options=riemsvd.SolverOptions(block=block), method="iterative"
        )
    rounding = 1e-12 if dtype == torch.float64 else 5e-5
    assert not worst or max(worst) <= rounding, (max(worst), pulls)
    check_svd(a, result, k, tol)


@pytest.mark.parametrize(
    "k,options,dtype,tol,kept",
    [
        (1, riemsvd.SolverOptions(max_basis=12), torch.float64, 1e-10, True),
        (4, riemsvd.SolverOptions(), torch.float64, 1e-10, True),
        (3, riemsvd.SolverOptions(block=2), torch.float64, 1e-10, True),
        # the rotations' drift allowed for a restart or more at tol 1e-13 exceeds 0.05·tol: fresh products
        (1, riemsvd.SolverOptions(max_basis=12), torch.float64, 1e-13, False),
        (2, riemsvd.SolverOptions(), torch.float32, 1e-5, False),  # float32's ε: fresh products always
    ],
)
def test_the_final_check_reads_the_iterations_products_where_their_drift_is_small(
    k, options, dtype, tol, kept, gen
):
    """The check of the returned triplets reads A vᵢ and Aᵀuᵢ off the products the iteration made
    (2k fewer products a check: 16 of a k = 8 solve's 64–126 at 384×384), where the rounding of the
    restarts' rotations that parts them from fresh ones is at most 0.05·tol; its residual is then
    the fresh one plus that allowance."""
    a = make_matrix("gaussian", 200, 120, gen).to(dtype)
    r = riemsvd.solve(a, k, tol=tol, generator=gen, options=options, method="iterative")
    b = options.block or 1
    assert r.info.restarts >= 1 and bool(r.info.converged)
    assert r.info.matvecs == 2 * b * r.info.iterations + (0 if kept else 2 * k)
    a64, u, s, v = a.double(), r.U.double(), r.S.double(), r.V.double()
    fresh = torch.maximum((a64 @ v - u * s).norm(dim=0), (a64.mT @ u - v * s).norm(dim=0)).max() / s[0]
    rounding = 1e-14 if dtype == torch.float64 else 3e-6  # float32's products, ε·√200·σ₁ at most
    assert float(fresh) <= float(r.info.residual) + rounding
    assert float(r.info.residual) <= float(fresh) + (0.05 * tol if kept else 0.0) + rounding


# Small solves through the host steps' hard places: restarts, lost columns (a rank-deficient and a
# zero matrix), the whole space, one row and one column
_STEP_CASES = [
    ("gaussian", (120, 80), 1, riemsvd.SolverOptions(max_basis=12)),  # many restarts
    ("rank_deficient", (50, 40), 4, riemsvd.SolverOptions()),
    ("cluster", (40, 12), 5, riemsvd.SolverOptions()),  # the whole space is reached
    ("zero", (30, 20), 2, riemsvd.SolverOptions()),
    ("gaussian", (1, 7), 1, riemsvd.SolverOptions()),
    ("gaussian", (7, 1), 1, riemsvd.SolverOptions()),
]


def _step_case(kind: str, shape: tuple, dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(11)
    if kind == "zero":
        return torch.zeros(shape, dtype=dtype)
    a = make_matrix("decay" if kind == "rank_deficient" else kind, *shape, gen, dtype)
    if kind == "rank_deficient":
        a[:, ::2] = 0.0
    return a


@pytest.mark.skipif(_backend.STEPS is None, reason="riemsvd._steps was not built")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_one_pass_solves_the_small_hard_cases(dtype, monkeypatch):
    """Every dense A takes the one pass: the small solves of _STEP_CASES through it converge to the
    values of torch.linalg.svdvals (to 10·tol·σ₁), with it taken."""
    passes = _fused_passes(monkeypatch, True)
    for kind, shape, k, options in _STEP_CASES:
        a = _step_case(kind, shape, dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = riemsvd.solve(a, k, generator=torch.Generator().manual_seed(5), options=options,
                                method="iterative")  # fmt: skip
        reference = torch.linalg.svdvals(a.double())[:k]
        top = float(reference[0]) if kind != "zero" else 1.0
        assert bool(out.info.converged), (kind, shape)
        torch.testing.assert_close(out.S.double(), reference, rtol=0, atol=10 * out.info.tol * top)
    assert len(passes) > 10


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_one_column_step_gives_the_general_paths_bits(dtype, monkeypatch):
    """``_golub_kahan_step`` is ``_expand`` for one column on the host, to the bit: the same U, S, V
    and products with it and without it, through _STEP_CASES; and it is taken. On two products: the
    one pass over A sums in its own order."""
    _two_products(monkeypatch)
    fused = _subspace._golub_kahan_step
    taken = []

    def counting(*args):
        done = fused(*args)
        taken.append(done)
        return done

    for kind, shape, k, options in _STEP_CASES:
        a = _step_case(kind, shape, dtype)
        results = []
        for step in (counting, lambda *args: False):
            monkeypatch.setattr(_subspace, "_golub_kahan_step", step)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = riemsvd.solve(a, k, generator=torch.Generator().manual_seed(5), options=options,
                                    method="iterative")  # fmt: skip
            results.append((b"".join(t.numpy().tobytes() for t in out[:3]), int(out.info.matvecs)))
        assert results[0] == results[1], (kind, shape)
    assert sum(taken) > 20  # 49 (float32) and 90 (float64) steps of 6 solves


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_sparse_matrix_steps_through_scipys_kernels_to_the_bit(fmt, dtype, monkeypatch):
    """Where C's runs do not take a scipy CSR or CSC matrix's steps (riemsvd._steps not built, a scaled
    A: no ``sparse_rows``), its one-column products are scipy's own kernels writing into the basis:
    the same U, S, V and products as through ``a @ x``, and they are taken; a matrix of integers (not
    the solver's dtype) and a COO matrix go through ``a @ x``."""
    import scipy.sparse as sp

    from riemsvd import _operator

    monkeypatch.setattr(_operator, "sparse_rows", lambda *args: None)
    a = sp.random(90, 70, density=0.1, format=fmt, dtype=dtype, random_state=3)
    kernel, calls = _operator._sparse_column_products, []

    def counting(*args):
        products = kernel(*args)
        if products is None:
            return None
        return tuple(lambda x, out, f=f: (calls.append(1), f(x, out)) for f in products)

    results = []
    for columns in (counting, lambda *args: None):
        monkeypatch.setattr(_operator, "_sparse_column_products", columns)
        out = riemsvd.solve(a, 3, generator=torch.Generator().manual_seed(5))
        results.append((b"".join(t.numpy().tobytes() for t in out[:3]), int(out.info.matvecs)))
    assert results[0] == results[1]
    assert len(calls) > 20
    reference = np.linalg.svd(a.toarray().astype(np.float64), compute_uv=False)[:3]
    np.testing.assert_allclose(out.S.numpy(), reference, rtol=1e-4 if dtype == np.float32 else 1e-10)
    assert kernel(sp.random(9, 7, density=0.5, format="coo", random_state=1), np.float64) is None
    integers = (sp.random(9, 7, density=0.5, format=fmt, random_state=1) * 9).astype(int)
    assert kernel(integers, np.float64) is None

    class Logged(sp.csr_matrix):  # a subclass's own products are its own
        pass

    assert kernel(Logged(sp.random(9, 7, density=0.5, random_state=1)), np.float64) is None
    assert kernel(sp.csr_array(sp.random(9, 7, density=0.5, random_state=1)), np.float64) is not None


def _two_products(monkeypatch) -> None:
    """The host steps on two products, as for a column-major A, a scaled one, or where riemsvd._steps
    was not built: the products' choice below is theirs."""
    monkeypatch.setattr(_operator, "FUSED_ABOVE", math.inf)


def _products_measured(monkeypatch, torch_is_faster: bool) -> None:
    """torch_products' measurement replaced by a fixed answer, with an empty cache."""
    monkeypatch.setattr(_backend, "_FASTER", {})
    monkeypatch.setattr(_backend, "_torch_faster", lambda *args: torch_is_faster)


@pytest.mark.skipif(not _backend.NUMPY_BLAS, reason="RIEMSVD_CPU_BLAS=torch: every product is torch's")
def test_mid_size_products_run_where_measured_faster(monkeypatch, gen):
    """A dense A of 1.5 MiB or more has its products made by torch on torch's threads where torch's
    products were measured faster, and by numpy's BLAS where they were not: on one thread up to
    ONE_BLAS_THREAD_UP_TO entries, on its threads above. Both give the same triplets. With torch
    limited to one thread by its user, numpy's BLAS makes them, unmeasured."""
    from riemsvd._operator import DenseOperator

    _two_products(monkeypatch)
    a = make_matrix("decay", 700, 400, gen)
    assert a.numel() * a.element_size() >= _backend.TORCH_PRODUCTS_FROM
    calls, limits, threads = [], [], torch.get_num_threads()
    mv, blas_threads = torch.mv, _backend._blas_threads

    def spy(*args, **kwargs):
        calls.append(torch.get_num_threads())
        return mv(*args, **kwargs)

    def spy_limit(limit):
        limits.append(limit)
        return blas_threads(limit)

    monkeypatch.setattr(torch, "mv", spy)
    monkeypatch.setattr(_backend, "_blas_threads", spy_limit)
    try:
        torch.set_num_threads(2)
        _products_measured(monkeypatch, True)
        assert DenseOperator(a).torch_products()
        result = riemsvd.solve(a, 3, tol=1e-12, generator=gen, method="iterative")
        assert calls and set(calls) == {2}, calls  # every step's two products, on two threads
        assert torch.get_num_threads() == 2
        torch.testing.assert_close(result.S, torch.linalg.svdvals(a)[:3], rtol=1e-11, atol=0)
        assert float(result.info.residual) <= 1e-12
        big = make_matrix("decay", 1300, 1200, gen)
        assert big.numel() > _backend.ONE_BLAS_THREAD_UP_TO
        for slower, numpy_threads in ((a, [1]), (big, [])):  # [1]: one thread; []: its own
            calls.clear(), limits.clear()
            _products_measured(monkeypatch, False)
            assert not DenseOperator(slower).torch_products()
            again = riemsvd.solve(slower, 3, tol=1e-12, generator=gen, method="iterative")
            assert not calls and limits == numpy_threads, (calls, limits)
            torch.testing.assert_close(again.S, torch.linalg.svdvals(slower)[:3], rtol=1e-11, atol=0)
        calls.clear()
        torch.set_num_threads(1)
        _products_measured(monkeypatch, True)
        assert not DenseOperator(a).torch_products()
        assert not _backend._FASTER  # not measured
        again = riemsvd.solve(a, 3, tol=1e-12, generator=gen, method="iterative")
        assert not calls
        torch.testing.assert_close(again.S, result.S, rtol=1e-12, atol=0)
    finally:
        torch.set_num_threads(threads)
    small = make_matrix("decay", 300, 200, gen)  # 0.46 MiB: numpy's BLAS on one thread, unmeasured
    assert not DenseOperator(small).torch_products() and not _backend._FASTER


@pytest.mark.skipif(not _backend.NUMPY_BLAS, reason="RIEMSVD_CPU_BLAS=torch: every product is torch's")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_block_products_match_numpy(monkeypatch, gen, dtype):
    """On torch's products, a block of fewer than _TORCH_BLOCKS_FROM columns is given to torch as its
    transpose (Xᵀ Aᵀ); blocks of every width and either memory order give numpy's A X and Aᵀ Y to the
    dtype's rounding, and a block solve finds the values."""
    from riemsvd._operator import _TORCH_BLOCKS_FROM, DenseOperator

    a = make_matrix("decay", 1000, 500, gen).to(dtype)
    _products_measured(monkeypatch, True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        op = DenseOperator(a)
        assert op.torch_products()
        host = op.on_host()
        assert host is not None
        view, eps = a.numpy(), torch.finfo(dtype).eps
        for b in (1, 2, 5, _TORCH_BLOCKS_FROM - 1, _TORCH_BLOCKS_FROM, 16):
            for order in ("C", "F"):
                rng = np.random.default_rng(b)
                x = np.asarray(rng.standard_normal((500, b)), view.dtype, order=order)
                y = np.asarray(rng.standard_normal((1000, b)), view.dtype, order=order)
                ax, aty = host.matmat(x), host.rmatmat(y)
                assert ax.shape == (1000, b) and aty.shape == (500, b) and ax.dtype == view.dtype
                np.testing.assert_allclose(ax, view @ x, rtol=0, atol=100 * eps * np.abs(view @ x).max())
                np.testing.assert_allclose(aty, view.T @ y, rtol=0, atol=100 * eps * np.abs(view.T @ y).max())
        a64, options = a.double(), riemsvd.SolverOptions(block=3)
        result = riemsvd.solve(a64, 4, tol=1e-12, generator=gen, method="iterative", options=options)
        torch.testing.assert_close(result.S, torch.linalg.svdvals(a64)[:4], rtol=1e-11, atol=0)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not _backend.NUMPY_BLAS, reason="RIEMSVD_CPU_BLAS=torch: every product is torch's")
def test_numpy_blas_keeps_to_the_threads_torch_was_given():
    """Above ONE_BLAS_THREAD_UP_TO entries numpy's BLAS keeps its threads, but no more than torch has:
    torch.set_num_threads(1) had left it on 2 (a new user's trial: a 2000×1000 k = 8 solve beside a
    busy neighbour, 3.0 s against 0.24 s on one thread); a BLAS the user set lower stays lower; both
    are restored after."""
    from riemsvd._backend import ONE_BLAS_THREAD_UP_TO, _numpy_blas_threads, solver_threads

    numpys = [lib for lib in _backend._blas_libraries() if _backend._is_numpys(lib)]
    if not numpys or numpys[0].get_num_threads() is None:
        pytest.skip("threadpoolctl cannot read numpy's BLAS here")
    threads, before = torch.get_num_threads(), numpys[0].get_num_threads()
    big = ONE_BLAS_THREAD_UP_TO + 1
    try:
        torch.set_num_threads(1)
        with solver_threads(torch.device("cpu"), big):
            assert _numpy_blas_threads() == 1
        assert _numpy_blas_threads() == before
        torch.set_num_threads(max(2, before))
        with solver_threads(torch.device("cpu"), big):
            assert _numpy_blas_threads() == before  # its own, where torch's budget is as large
        numpys[0].set_num_threads(1)
        with solver_threads(torch.device("cpu"), big):
            assert _numpy_blas_threads() == 1  # the user's lower setting stays
    finally:
        numpys[0].set_num_threads(before)
        torch.set_num_threads(threads)


@pytest.mark.skipif(not _backend.NUMPY_BLAS, reason="RIEMSVD_CPU_BLAS=torch: every product is torch's")
def test_a_numpy_callers_large_products_are_numpys(monkeypatch, gen):
    """Above ONE_BLAS_THREAD_UP_TO entries, an A passed as a numpy array has its products made by numpy's
    BLAS, unmeasured: the caller's own numpy work leaves numpy's threads spinning, beside which torch's
    products ran up to 4× slower. A tensor's are measured, with torch's preference (torch is faster
    here); both find the values."""
    _two_products(monkeypatch)
    measured = []
    monkeypatch.setattr(_backend, "_FASTER", {})
    monkeypatch.setattr(_backend, "_torch_faster", lambda t, view, one: not measured.append(one))
    calls, mv = [], torch.mv
    monkeypatch.setattr(torch, "mv", lambda *args, **kwargs: calls.append(1) or mv(*args, **kwargs))
    big = make_matrix("decay", 1300, 1200, gen)
    assert big.numel() > _backend.ONE_BLAS_THREAD_UP_TO
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    from riemsvd._operator import as_operator  # a batch's matrices, each on its own (one_matrix), alike

    stacked = torch.stack([big, big])
    try:
        results, torch_calls = [], []
        for x in (big.numpy(), big):
            results.append(riemsvd.solve(x, 2, tol=1e-12, method="iterative"))
            torch_calls.append(len(calls))
        # still on two threads: torch limited to one by its user (OMP_NUM_THREADS=1) takes numpy's
        # BLAS, and these had failed under that setting (a new user's trial)
        assert not as_operator(stacked, from_numpy=True).one_matrix((0,)).torch_products()
        assert as_operator(stacked).one_matrix((0,)).torch_products()  # measured: torch's here
    finally:
        torch.set_num_threads(threads)
    assert measured == [False]  # the tensor's alone, against numpy's BLAS on its threads
    assert torch_calls[0] == 0 < torch_calls[1]  # the array's products by numpy's BLAS, the tensor's by torch
    for result in results:
        torch.testing.assert_close(result.S, torch.linalg.svdvals(big)[:2], rtol=1e-11, atol=0)


@pytest.mark.skipif(not _backend.NUMPY_BLAS, reason="RIEMSVD_CPU_BLAS=torch: every product is torch's")
def test_products_are_measured_once_per_shape_and_layout(monkeypatch):
    """torch_products measures each shape, dtype and layout once in a process, against numpy's BLAS on
    one thread up to ONE_BLAS_THREAD_UP_TO entries and on its threads above, and chooses torch only
    where its pair of products beat numpy's (the fastest of each) by that comparison's margin."""
    measured, torch_faster = [], _backend._torch_faster
    monkeypatch.setattr(_backend, "_FASTER", {})
    monkeypatch.setattr(_backend, "_torch_faster", lambda t, _, one: measured.append((t.shape, one)) or True)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a = torch.zeros(800, 400, dtype=torch.float64)
        assert _backend.torch_products(a) and _backend.torch_products(a.clone())
        assert _backend.torch_products(a.mT.contiguous().mT)  # another layout: measured again
        assert _backend.torch_products(a.float().repeat(2, 1))  # another dtype
        assert _backend.torch_products(torch.zeros(1300, 1200))  # above 1.5M entries
        assert _backend.torch_products(torch.zeros(2100, 1000))  # above 2M: its first 2000 rows
        assert _backend.torch_products(torch.zeros(1000, 2100).mT)  # column-major: its first columns
        assert not _backend.torch_products(torch.zeros(1300, 1200), from_numpy=True)  # unmeasured
        assert _backend.torch_products(a, from_numpy=True)  # one thread: as a tensor, not again
        shapes = [(800, 400), (800, 400), (1600, 400), (1300, 1200), (2000, 1000), (2100, 952)]
        assert measured == list(zip(shapes, [True, True, True, False, False, False]))
    finally:
        torch.set_num_threads(threads)
    # the choice itself, on a clock that makes each product pair take the times given
    a = torch.zeros(8, 8, dtype=torch.float64)
    cases = ((0.5, True, True), (0.9, True, False), (0.9, False, True), (1.2, False, True))
    limits, blas_threads = [], _backend._blas_threads
    monkeypatch.setattr(_backend, "_blas_threads", lambda limit: limits.append(limit) or blas_threads(limit))
    for torch_s, one, chosen in cases + ((1.3, False, False),):  # numpy's pair takes 1
        ticks = iter(np.cumsum([0.0, torch_s, 0.0, 1.0] * 3 + [0.0, 3.0]).tolist())
        monkeypatch.setattr(_backend, "time", SimpleNamespace(perf_counter=ticks.__next__))
        limits.clear()
        assert torch_faster(a, a.numpy(), one, rounds=3) is chosen, (torch_s, one)
        assert limits == ([1] if one else []), limits  # numpy's pair timed as the solve would run it


@given(
    p=st.integers(12, 48),
    t=st.integers(1, 4),
    w=st.integers(1, 3),
    gap=st.sampled_from([1.0, 1e-3, 1e-8]),
    restarted=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=80)
def test_a_looks_estimate_is_within_its_slack_of_the_exact_ritz_triplets(p, t, w, gap, restarted, seed):
    """The estimate from H Hᵀ (``_estimate``) gives the exact SVD's values and each residual within its
    own ``slack``, on H as the recurrence makes it: upper bidiagonal, or after a thick restart a diagonal
    block with a spike column before the bidiagonal part; the top values a ``gap`` apart. For one
    matrix (LAPACK's MRRR, t up to p/12) and for a batch of three (numpy's batched eigh, any t < p)."""
    rng = np.random.default_rng(seed)
    for batch in ((), (3,)):
        pairs = [_look_matrices(rng, p, t, w, gap, restarted) for _ in range(int(np.prod(batch)))]
        h = np.stack([a for a, _ in pairs]).reshape(batch + (p, p))
        c = np.stack([b for _, b in pairs]).reshape(batch + (w, p))
        st_ = _subspace.Lanczos(*[np.zeros((1, 1))] * 4, p, p, w, h, c)
        estimate, exact = _subspace._estimate(st_, t), _subspace._ritz(st_, t)
        if not batch and t > p // 12:
            assert estimate is None
            continue
        assert estimate is not None
        np.testing.assert_allclose(estimate.s, exact.s[..., :t], rtol=1e-13, atol=0)
        error = np.abs(estimate.rel - exact.rel)
        assert (error <= estimate.slack).all(), (error, estimate.slack)


def _in_c_and_in_python(look, st_, t: int) -> tuple:
    """A look's function (``_estimate`` or ``_ritz``) of one matrix's state, through C and through its
    Python twin."""
    out = []
    for in_c in (True, False):
        _subspace._C_LAPACK = in_c
        try:
            out.append(look(st_, t))
        finally:
            _subspace._C_LAPACK = True
    return tuple(out)


@pytest.mark.skipif(not _subspace._C_LAPACK, reason="riemsvd._steps was not built or has no LAPACK")
@given(
    p=st.integers(12, 60),
    t=st.integers(1, 5),
    w=st.integers(0, 3),
    gap=st.sampled_from([1.0, 1e-3, 1e-8]),
    restarted=st.booleans(),
    scale=st.sampled_from([1e-200, 1.0, 1e150]),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=60)
def test_the_c_estimate_is_the_python_one(p, t, w, gap, restarted, scale, seed):
    """For one matrix ``_estimate`` is one call into C (``_steps.estimate``: H Hᵀ, LAPACK's dsyevr as
    scipy's wrapper calls it, the residuals and the slack): the Python twin's values, vectors (up to
    sign), residuals and slack to rounding, on H as the recurrence makes it, at any scale, with C of 0
    to 3 rows; None where H holds a NaN, for both."""
    t = min(t, p // 12)
    rng = np.random.default_rng(seed)
    h, c = _look_matrices(rng, p, t, max(w, 1), gap, restarted)
    h, c = scale * h, scale * c[:w]
    mine, theirs = _in_c_and_in_python(
        _subspace._estimate, _subspace.Lanczos(*[np.zeros((1, 1))] * 4, p, p, w, h, c), t
    )
    assert mine is not None and theirs is not None and mine.z is None
    np.testing.assert_allclose(mine.s, theirs.s, rtol=1e-13, atol=0)
    # each vector to rounding over its own gap in H Hᵀ (p·ε·σ₁² against its eigenvalue's distance
    # to the nearest other; about 2·gap for the top ones, 1e-7 at gap 1e-8): not ``gap`` for all, as
    # it was, since at gap 1.0 the second of the top values is 0 and the second vector the bulk's
    # largest, whose distance to the next is what the uniform draw leaves (p = 36, t = 2: off by
    # 1.1e-13 against the 3.2e-14 that gap allowed)
    squares = np.linalg.svd(h / scale, compute_uv=False) ** 2  # unscaled: 1e-200² underflows
    distance = np.abs(squares[:t, None] - squares[None, :])
    distance[np.arange(t), np.arange(t)] = np.inf
    off = 4 * p * _subspace._EPS64 * squares[0] / distance.min(axis=1)  # per vector (t,)
    sign = np.sign((mine.y * theirs.y).sum(axis=0))
    assert (np.abs(mine.y * sign - theirs.y) <= off).all(), (np.abs(mine.y * sign - theirs.y).max(0), off)
    c_size = np.linalg.norm(c) / theirs.s[0] if theirs.s[0] > 0 else 0.0
    with np.errstate(invalid="ignore"):  # inf where both are
        apart = np.where(mine.rel == theirs.rel, 0.0, np.abs(mine.rel - theirs.rel))
    assert (apart <= 1e-9 * np.abs(theirs.rel) + off * c_size).all(), (mine.rel, theirs.rel, off * c_size)
    # the slack divides by the gap of H Hᵀ's eigenvalues at each value, whose rounding (about p·ε·λ₁,
    # its product's by the BLAS threads at hand included) is relative to that gap: p = 60 with a gap of
    # 1.7e-3·λ₁ came 1.3e-12 apart on two threads, equal on one
    lam = np.linalg.eigvalsh(h @ h.T)[::-1][: t + 1]
    gaps = np.minimum(lam[:-1] - lam[1:], np.concatenate([[np.inf], lam[:-2] - lam[1:-1]]))
    rounding = 4 * p * _subspace._EPS64 * lam[0] / np.maximum(gaps, _subspace.TINY)
    np.testing.assert_array_less(
        np.abs(mine.slack - theirs.slack),
        np.maximum(1e-12, np.maximum(10 * off, rounding)) * theirs.slack + _subspace.TINY,
    )
    h[1, 1] = np.nan
    st_ = _subspace.Lanczos(*[np.zeros((1, 1))] * 4, p, p, w, h, c)
    assert _subspace._estimate(st_, t) is None


@pytest.mark.skipif(not _subspace._C_LAPACK, reason="riemsvd._steps was not built or has no LAPACK")
@given(
    pu=st.integers(1, 50),
    more=st.integers(-2, 2),
    t=st.integers(0, 9),
    w=st.integers(0, 2),
    scale=st.sampled_from([1e-100, 1.0, 1e100]),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=60)
def test_the_c_svd_of_a_look_is_the_python_one(pu, more, t, w, scale, seed):
    """For one matrix ``_ritz`` is one call into C (``_steps.svd_look``: LAPACK's gesdd as scipy's
    wrapper calls it, the checks and the residuals of the top t): the Python twin's triplets and
    residuals to rounding, for H of pu × (pu ± 2) at any scale and C of 0 to 2 rows; both raise where
    H or C holds a NaN."""
    rng = np.random.default_rng(seed)
    pv = max(1, pu + more)
    t = min(t, pu, pv)
    h, c = scale * rng.standard_normal((pu, pv)), rng.standard_normal((w, pu))
    mine, theirs = _in_c_and_in_python(
        _subspace._ritz, _subspace.Lanczos(*[np.zeros((1, 1))] * 4, pv, pu, w, h, c), t
    )
    np.testing.assert_allclose(mine.s, theirs.s, rtol=1e-13, atol=1e-14 * theirs.s[0])
    # the vectors of values well apart (LAPACK's own rounding may differ with its arrays' alignment)
    apart = np.concatenate([[np.inf], np.diff(-theirs.s)])
    apart = np.minimum(apart, np.concatenate([apart[1:], [np.inf]])) > 1e-6 * theirs.s[0]
    for x, y in ((mine.y, theirs.y), (mine.z, theirs.z)):
        np.testing.assert_allclose(x[:, apart], y[:, apart], rtol=0, atol=1e-9)
    np.testing.assert_allclose(mine.rel, theirs.rel, rtol=1e-9, atol=1e-12 * np.abs(c).sum())
    for where in (h, c) if w else (h,):
        where.flat[0] = np.nan
        with pytest.raises(ValueError, match="NaN or Inf"):
            _subspace._ritz(_subspace.Lanczos(*[np.zeros((1, 1))] * 4, pv, pu, w, h, c), t)
        where.flat[0] = 0.0


@pytest.mark.skipif(not _subspace._C_LAPACK, reason="riemsvd._steps was not built or has no LAPACK")
def test_the_c_check_is_the_python_one(monkeypatch):
    """For one matrix on the host a check of the top k Ritz triplets is two calls into C: the kept
    products (``_steps.kept_products``, float64) and ``verify``'s arithmetic (``_steps.finish``, float32
    and float64, and float32 vectors with float64 products). At every check of solves of 1×2 to 1536×384,
    k = 1 to 8, with restarts, σ = 0 beyond a rank of 1 (Rayleigh quotients of either sign, an order to
    restore), the estimate's own triplets, fresh products in float32 and in float64 (float32 at a tol
    below its products' floor) and the dense path's check: the Python twins' vectors and products to
    rounding, each triplet one of Python's (sign included, among values within rounding), and values,
    residuals and bars within 4 rounding units of σ₁ (both sums pairwise, in the vectors' dtype)."""
    vectors, verify, seen = _subspace._vectors, _subspace.verify, []

    def python(f, *args):
        monkeypatch.setattr(_subspace, "_C_LAPACK", False)
        try:
            return f(*args)
        finally:
            monkeypatch.setattr(_subspace, "_C_LAPACK", True)

    def both_vectors(work, st_, ritz, k, restarts, tol):
        mine = vectors(work, st_, ritz, k, restarts, tol)
        theirs = python(vectors, work, st_, ritz, k, restarts, tol)
        for x, y in [(mine[0], theirs[0]), (mine[1], theirs[1])] + (
            [(mine[2].av, theirs[2].av), (mine[2].atu, theirs[2].atu)] if mine[2] is not None else []
        ):
            np.testing.assert_allclose(x, y, rtol=0, atol=8 * np.finfo(x.dtype).eps * np.abs(y).max())
        return mine

    def both_verify(work, u, v, kept, tol, gap=False):
        mine, theirs = verify(work, u, v, kept, tol, gap), python(verify, work, u, v, kept, tol, gap)
        u_, s, v_, residual, errors = mine
        # float64 products: their arithmetic
        wide = _subspace._float64_view(work, tol, u.shape[-1]) is not None
        unit = float(np.finfo(u.dtype if isinstance(u, np.ndarray) and not wide else np.float64).eps)
        k = s.shape[-1]
        # each triplet one of Python's among those of values within rounding of its own, its sign
        # included but for a value at rounding's size, whose Rayleigh quotient's sign is rounding's
        near = np.abs(s[:, None] - theirs[1][None, :]) <= 100 * unit * theirs[1][0]
        for j in range(k):
            signs = (1, -1) if s[j] <= 100 * unit * theirs[1][0] else (1,)
            assert any(
                torch.equal(v_[:, j], theirs[2][:, i])
                and any(torch.equal(u_[:, j], c * theirs[0][:, i]) for c in signs)
                for i in np.flatnonzero(near[j])
            ), j
        assert (np.diff(s) <= 0).all()  # in descending order
        # the same arithmetic but for the sums' grouping: each to a few rounding units of σ₁ (the
        # residual is relative to σ₁ already; 2.5, 0.8 and 0.4 units at most over 108 solves)
        np.testing.assert_allclose(s, theirs[1], rtol=0, atol=4 * unit * theirs[1][0])
        assert abs(residual - theirs[3]) <= 4 * unit
        np.testing.assert_allclose(errors, theirs[4], rtol=0, atol=4 * unit * theirs[1][0])
        seen.append((k, u.dtype if isinstance(u, np.ndarray) else None, wide, gap))
        return mine

    widened = []  # per call into finish: float32 vectors with float64 products
    steps = _subspace.STEPS

    class Spy:
        def __getattr__(self, name):
            return getattr(steps, name)

        def finish(self, u, v, av, atu, *rest):
            widened.append(u.dtype == np.float32 and av.dtype == np.float64)
            return steps.finish(u, v, av, atu, *rest)

    monkeypatch.setattr(_subspace, "STEPS", Spy())
    monkeypatch.setattr(_subspace, "_vectors", both_vectors)
    monkeypatch.setattr(_subspace, "verify", both_verify)
    monkeypatch.setattr(riemsvd._dense, "verify", both_verify)
    g = torch.Generator().manual_seed(0)
    row = torch.randn(1, 384, dtype=torch.float64, generator=g)
    cases = [
        (torch.tensor([[0.3, -0.7]], dtype=torch.float64), 1, "iterative"),
        (torch.randn(7, 1, dtype=torch.float64, generator=g), 1, "iterative"),
        (make_matrix("gaussian", 300, 200, g), 8, "iterative"),
        (make_matrix("gaussian", 300, 200, g).float(), 8, "iterative"),
        (make_matrix("cluster", 200, 300, g), 4, "iterative"),
        (make_matrix("weight", 384, 384, g).float(), 1, "iterative"),
        (row.expand(1536, 384).contiguous(), 8, "iterative"),
        (torch.randn(400, 50, dtype=torch.float64, generator=g) @ torch.randn(50, 300, dtype=torch.float64,
                                                                               generator=g), 3, "iterative"),
        (make_matrix("decay", 120, 80, g).float(), 6, "dense"),
    ]  # fmt: skip
    for a, k, method in cases:
        riemsvd.solve(a, k, method=method, generator=g)
    # float32 triplets checked by float64 products (tol below float32's products' floor)
    for cls, m, n, k in [("gaussian", 384, 384, 8), ("cluster", 200, 300, 1)]:
        riemsvd.solve(make_matrix(cls, m, n, g).float(), k, tol=1e-6, generator=g)
    # σ₂ for the gap only: its residual in gap units, from C's residuals of each triplet
    gap_last = riemsvd.SolverOptions(gap_last=True)
    riemsvd.solve(make_matrix("gaussian", 300, 200, g), 2, generator=g, options=gap_last)
    assert {k for k, _, _, _ in seen} == {1, 2, 3, 4, 6, 8}
    assert {d for _, d, _, _ in seen} == {np.dtype("float32"), np.dtype("float64")}
    assert (np.dtype("float32"), True) in {(d, wide) for _, d, wide, _ in seen}
    assert any(gap for _, _, _, gap in seen)
    assert any(widened) and not all(widened)  # C checked them, as it checks the others


@pytest.mark.skipif(not _subspace._C_LAPACK, reason="riemsvd._steps was not built or has no LAPACK")
def test_the_c_check_orders_the_triplets_and_makes_each_rayleigh_quotient_nonnegative():
    """``_steps.kept_products`` and ``_steps.finish`` on bases of A = diag(1, 2, 3, 4) (𝒰 = 𝒱 = I, the
    kept products A𝒱 and Aᵀ𝒰) with Ritz vectors given in ascending order, the first (−e₁, e₁) of
    Rayleigh quotient −1: the triplets come back in descending order, (e₂, 2, e₂) then (e₁, 1, e₁),
    exact, and the bars and the residual 0 beyond ``floor`` and ``drift``."""
    a = np.diag([1.0, 2.0, 3.0, 4.0])
    eye = np.asfortranarray(np.eye(4))
    y = np.array([[-1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]], order="F")
    z = np.abs(y)
    u, v, s, errors, each = np.empty((4, 2)), np.empty((4, 2)), np.empty(2), np.empty(2), np.full(2, np.nan)
    bases = (eye, np.asfortranarray(a @ eye), eye, np.asfortranarray(a.T @ eye))
    products = [np.empty((4, 2)) for _ in range(4)]
    _subspace.STEPS.kept_products(*bases, 4, 4, y, z, *products)
    residual = _subspace.STEPS.finish(*products, 1e-16, 1e-15, u, v, s, errors, each)
    np.testing.assert_array_equal(s, [2.0, 1.0])
    np.testing.assert_array_equal(each, [0.0, 0.0])
    np.testing.assert_array_equal(u, [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(v, [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(errors, [2 * (1e-16 + 1e-15)] * 2, rtol=1e-15)
    assert residual == 1e-15


@pytest.mark.skipif(_subspace.STEPS is None, reason="riemsvd._steps was not built")
def test_the_c_check_writes_each_triplets_residual_in_the_triplets_order():
    """``_steps.finish``'s ``each`` (max(‖A vᵢ − σᵢuᵢ‖, ‖Aᵀuᵢ − σᵢvᵢ‖), which SolverOptions.gap_last reads
    per triplet) follows the triplets as returned, sorted: two unit vectors of A = diag(1, 2, 3, 4)
    given in ascending order, each leaning a little towards another axis (their residuals 0.1 and
    0.2 apart from each other), against numpy's."""
    a = np.diag([1.0, 2.0, 3.0, 4.0])
    u_in = np.array([[1.0, 0.0], [0.0, 1.0], [0.1, 0.0], [0.0, 0.3]])
    u_in /= np.linalg.norm(u_in, axis=0)
    v_in = u_in.copy()
    av, atu = a @ v_in, a.T @ u_in
    u, v, s, errors, each = np.empty((4, 2)), np.empty((4, 2)), np.empty(2), np.empty(2), np.full(2, np.nan)
    _subspace.STEPS.finish(u_in, v_in, av, atu, 0.0, 0.0, u, v, s, errors, each)
    q = np.einsum("ij,ij->j", u_in, av)
    expected = np.maximum(np.linalg.norm(av - u_in * q, axis=0), np.linalg.norm(atu - v_in * q, axis=0))
    assert s[0] > s[1] and q[1] > q[0]  # the order turned
    np.testing.assert_allclose(each, expected[::-1], rtol=1e-14)
    assert expected[0] != expected[1]


def test_a_batch_with_k_above_an_elements_rank_takes_the_iterations_of_its_slowest_element():
    """A probe's end is judged on exact Ritz values: a batch's estimate (√λ of H Hᵀ) is off by up to
    √(pε)·σ₁ for a value near 0, and with it a rank-4 element at k = 8 'grew' at every probe's end
    (111 iterations and 350 products where each element alone took at most 62)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 100, 80, dtype=torch.float64, generator=g)
    a[0] = torch.randn(100, 4, dtype=torch.float64, generator=g) @ torch.randn(
        4, 80, dtype=torch.float64, generator=g
    )
    out = riemsvd.solve(a, 8, method="iterative", generator=torch.Generator().manual_seed(3))
    alone = [
        riemsvd.solve(a[i], 8, method="iterative", generator=torch.Generator().manual_seed(3))
        for i in range(3)
    ]
    assert out.info.iterations <= 1.2 * max(r.info.iterations for r in alone), out.info.iterations
    assert bool(out.info.converged.all())
    torch.testing.assert_close(out.S, torch.linalg.svdvals(a)[..., :8], rtol=1e-10, atol=1e-12)


@given(
    p=st.integers(24, 48),
    t=st.integers(1, 2),
    gap=st.sampled_from([1.0, 1e-3]),
    restarted=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=60)
def test_a_looks_own_triplets_are_accepted_only_where_both_residuals_pass(p, t, gap, restarted, seed):
    """``_own_triplets`` serves the estimate's triplets (𝒰y, σ, 𝒱z), z = Hᵀy/σ, where the top k have
    converged on both sides: the right residual ‖C y‖ (the estimate's), the left ‖H z − σ y‖, here
    recomputed from H and C. On H as the recurrence makes it, with C scaled to pass tol or not; and
    where C vanishes (an invariant space) and σ₂ lies 1e-7·σ₁ below, where the eigensolver's y₂ is off
    by about ε/(σ₂/σ₁)²: σ₁'s triplet passes, σ₂'s fails on its left residual (from a fixed seed:
    the error varies, and hypothesis found one, 25835 after the draws above, where y₂ was off by 1e-3
    only and its left residual 8.5e-11 passed; accepted then, rightly)."""
    rng = np.random.default_rng(seed)
    tol = 1e-10
    h, c = _look_matrices(rng, p, t, 1, gap, restarted)
    exact_s = np.linalg.svd(h, compute_uv=False)
    for scale in (1e-14, 1e-9):
        st_ = _subspace.Lanczos(*[np.zeros((1, 1))] * 4, p, p, 1, h, scale * c)
        estimate = _subspace._estimate(st_, t)
        assert estimate is not None
        right = np.linalg.norm(scale * c @ estimate.y, axis=0) / exact_s[0]
        if (right[:t] > tol).any():
            continue  # not converged: the look takes the exact SVD, or goes on
        own = _subspace._own_triplets(st_, estimate, t, np.array(tol), None)
        assert own is not None and own.z is not None
        np.testing.assert_allclose(np.linalg.norm(own.z, axis=0), 1.0, rtol=1e-14)
        np.testing.assert_allclose(own.s[:t], exact_s[:t], rtol=1e-13, atol=0)
        left = np.linalg.norm(h @ own.z - own.y * own.s, axis=0) / exact_s[0]
        assert (left[:t] <= tol).all() and (own.rel[:t] <= tol).all()
    for source in (rng, np.random.default_rng(7)):  # hypothesis's draws, and a seed where y₂ fails
        q1, q2 = (np.linalg.qr(source.standard_normal((p, p)))[0] for _ in range(2))
        h = (q1 * np.concatenate([[1.0], 1e-7 * 0.9 ** np.arange(p - 1)])) @ q2.T
        st_ = _subspace.Lanczos(*[np.zeros((1, 1))] * 4, p, p, 1, h, np.zeros((1, p)))
        estimate = _subspace._estimate(st_, 2)
        assert estimate is not None and (estimate.rel == 0).all()
        assert _subspace._own_triplets(st_, estimate, 1, np.array(tol), None) is not None
        own = _subspace._own_triplets(st_, estimate, 2, np.array(tol), None)
        if own is not None:  # accepted only where σ₂'s left residual passes too
            assert source is rng and (np.linalg.norm(h @ own.z - own.y * own.s, axis=0) <= tol).all()


def _look_matrices(rng, p: int, t: int, w: int, gap: float, restarted: bool):
    """(H, C) as the recurrence makes them (see the test above)."""
    top = 1.0 - gap * np.arange(t + 1)
    h = np.diag(np.concatenate([top, rng.uniform(0.1, 0.9, p - t - 1)]))
    h[np.arange(p - 1), np.arange(1, p)] = rng.uniform(0.0, 0.3, p - 1)  # bidiagonal
    if restarted:
        keep = p // 2
        h[:keep, :keep] = np.diag(np.diag(h)[:keep])
        h[:keep, keep] = rng.uniform(-0.3, 0.3, keep)  # the spike: 𝒰ᵀ A f after the restart
    c = np.zeros((w, p))
    c[:, -1] = rng.uniform(0.0, 1.0, w)  # the recurrence's residual: on 𝒰's newest column
    if w > 1:
        c[1:, : p // 2] = rng.uniform(-1e-3, 1e-3, (w - 1, p // 2))
    return h, c


@pytest.mark.parametrize("host", [True, False])
@pytest.mark.parametrize("block", [4, 8, 16])
def test_float32_blocks_reach_tol_on_a_low_rank_matrix(block, host, monkeypatch):
    """Blocks of columns in float32 on rank 10 plus noise 1e-3 (a GPU's default blocks are 8–16): once
    the block space holds the rank-10 part, the new block's columns cancel among themselves, and their
    QR magnified what rounding left along the basis (8.6e-6 off it; the relations at 1e-6): k = 8 at
    tol 1e-6 stalled at 3e-6 to 7e-6 after 2784 products. Now 80–208 products. The same with the
    vectors as tensors (``host`` False), whose deferred steps project q out of the basis again."""
    if not host:
        _tensor_solver(monkeypatch)
    g = torch.Generator().manual_seed(1)
    m, n = 384, 384
    u = torch.linalg.qr(torch.randn(m, 10, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(n, 10, generator=g, dtype=torch.float64))[0]
    noise = 1e-3 / (m**0.5 + n**0.5) * torch.randn(m, n, generator=g, dtype=torch.float64)
    a = ((u * torch.linspace(1, 0.5, 10, dtype=torch.float64)) @ v.T + noise).float()
    with warnings.catch_warnings():
        warnings.simplefilter("error", riemsvd.ConvergenceWarning)
        result = riemsvd.solve(a, 8, tol=1e-6, options=riemsvd.SolverOptions(block=block), generator=g,
                               method="iterative")  # fmt: skip
    assert result.info.stop_reason == "converged" and float(result.info.residual) <= 1e-6
    assert result.info.matvecs <= 300, result.info.matvecs
    s = torch.linalg.svdvals(a.double())[:8]
    assert float((result.S.double() - s).abs().max()) <= 1e-6 * float(s[0])  # σ within the residual


@pytest.mark.parametrize("seed", range(4))
def test_a_stalled_float32_solve_returns_its_best_checked_triplets(seed, monkeypatch):
    """float32 at tol 1e-8, below what its products resolve: the first check of the true residual
    found 2.4e-7 to 2.8e-7, the iteration went on with a tighter target and stalled, and the last
    triplets came back at 3.5e-7 to 4.1e-7 (every seed; with a larger patience, worse still). Now the
    returned triplets are the best checked ones, and their residual, recomputed here in float64 from
    the returned U, S, V, is the one reported (to float32's rounding of them)."""
    checked = []
    verify = _subspace.verify

    def recording(*args, **kwargs):
        out = verify(*args, **kwargs)
        checked.append(float(out[3].max()))
        return out

    monkeypatch.setattr(_subspace, "verify", recording)
    monkeypatch.setattr(_subspace, "_AT_ROUNDING", 0)  # no stop at the first check (the test below)
    # the float32 iteration itself, which a sparse or operator A still takes there (a dense tensor is
    # iterated in a float64 copy at any tol below 4·ε since 2026-12-07)
    monkeypatch.setattr(riemsvd._solve, "FLOAT32_COPY_BELOW", 0.0)
    a = torch.randn(400, 200, generator=torch.Generator().manual_seed(seed))
    with pytest.warns(riemsvd.ConvergenceWarning):
        out = riemsvd.solve(a, 2, tol=1e-8, method="iterative", generator=torch.Generator().manual_seed(0))
    assert out.info.stop_reason == "stalled" and len(checked) >= 2, (out.info.stop_reason, checked)
    reported = float(out.info.residual.max())
    assert reported == pytest.approx(min(checked), rel=1e-6), (reported, checked)  # float32 of it
    a64, u, s, v = a.double(), out.U.double(), out.S.double(), out.V.double()
    left = torch.linalg.vector_norm(a64 @ v - u * s, dim=0)
    right = torch.linalg.vector_norm(a64.T @ u - v * s, dim=0)
    recomputed = float(torch.maximum(left, right).max() / s[0])
    assert abs(recomputed - reported) <= 0.2 * reported, (recomputed, reported)


def test_closer_takes_an_earlier_check_only_for_a_failing_element_whose_values_it_did_not_miss():
    """Per batch element: the final triplets where they pass tol; the earlier ones where they were
    closer and their values agree within both bars; the final ones where the earlier set lies below
    them by more than that (a value it missed), however small its residual."""
    tol = 1e-8
    u, v = torch.zeros(3, 5, 2), torch.zeros(3, 4, 2)
    final = (u, np.array([[3.0, 1.0]] * 3), v, np.array([5e-9, 4e-7, 4e-7]), np.full((3, 2), 1e-6))
    kept_s = np.array([[3.0, 1.0], [3.0, 1.0], [3.0, 0.5]])  # the third missed the value 1.0
    kept = (u + 1, kept_s, v + 1, np.array([1e-9, 2e-7, 2e-7]), np.full((3, 2), 1e-6))
    cu, cs, cv, cres, cerr = _subspace._closer(kept, final, tol)
    assert [bool(cu[i].eq(1).all()) for i in range(3)] == [False, True, False]
    assert [bool(cv[i].eq(1).all()) for i in range(3)] == [False, True, False]
    np.testing.assert_array_equal(cres, [5e-9, 2e-7, 4e-7])
    np.testing.assert_array_equal(cs, [[3.0, 1.0], [3.0, 1.0], [3.0, 1.0]])


@pytest.mark.parametrize("seed", range(2))
def test_a_check_at_the_rounding_of_the_vectors_ends_the_solve(seed):
    """float32 at tol 1e-8 (below the 2.4e-7 that rounding 400×200 Gaussians' vectors to float32
    leaves): the first check found 2.4e-7, and the iteration went on for 312–413 iterations and 632–834
    products before it stalled, no better. A check at 4ε or below ends it there: the same triplets."""
    a = torch.randn(400, 200, generator=torch.Generator().manual_seed(seed))
    with pytest.warns(riemsvd.ConvergenceWarning, match="below what rounding"):
        out = riemsvd.solve(a, 2, tol=1e-8, method="iterative", generator=torch.Generator().manual_seed(0))
    assert out.info.stop_reason == "stalled" and out.info.matvecs <= 150, out.info.matvecs
    assert float(out.info.residual.max()) <= 4 * torch.finfo(torch.float32).eps
    reference = torch.linalg.svdvals(a.double())[:2]
    errors = out.info.errors.double()
    assert ((out.S.double() - reference).abs() <= errors).all(), (out.S, reference, errors)


def test_a_wide_basis_is_looked_at_seldom():
    """k = 32 at 384×384 (a basis of 80): an SVD of H costs about 7 steps there, and with looks at
    most 8 iterations apart they took about 0.3 of the solve's time (24 looks in 180 iterations, 360
    products). The model of a look's cost lets them lie up to 4 times its ratio to a step apart: 12
    looks, the same products."""
    a = make_matrix("gaussian", 384, 384, torch.Generator().manual_seed(0))
    out = riemsvd.solve(a, 32, tol=1e-10, method="iterative", generator=torch.Generator().manual_seed(0))
    looks, info = len(out.info.history), out.info
    assert bool(info.converged.all()) and info.iterations >= 10 * looks, (info.iterations, looks)
    reference = torch.linalg.svdvals(a)[:32]
    assert ((out.S - reference).abs() <= info.errors + 1e-14 * reference[0]).all()


@pytest.mark.parametrize("block", [1, 2])
def test_the_first_look_comes_once_k_triplets_can_exist(block):
    """No look before the bases hold k columns: one would find k triplets lacking (residuals inf) and
    measure nothing. With blocks of b (and a start block of b), the first look comes after
    1 + ⌈(k − b)/b⌉ iterations, with those iterations' products, and every look has k triplets."""
    a = make_matrix("decay", 200, 150, torch.Generator().manual_seed(0))
    k, options = 5, riemsvd.SolverOptions(block=block)
    out = riemsvd.solve(
        a, k, tol=1e-10, method="iterative", options=options, generator=torch.Generator().manual_seed(0)
    )
    looks = out.info.history
    assert bool(out.info.converged) and looks and all(math.isfinite(r) for _, r in looks), looks
    assert looks[0][0] == 2 * block + 2 * block * -(-(k - block) // block), looks


def test_a_residual_that_rose_is_measured_against_the_latest_larger_one():
    """The worst residual rose between the last two looks (a new Ritz value among the top k): the next
    look follows the rate since the latest look with a larger residual, three quarters of the
    iterations it predicts, not the 4 (or 1) of a look without a rate."""
    history = [(0, 0, 1e-1), (10, 20, 1e-6), (20, 40, 5e-7), (21, 42, 1e-5)]
    rate = np.log(1e-5 / 1e-1) / 21
    assert _subspace._next_check(history, 1e-10, 64) == int(0.75 * np.log(1e-10 / 1e-5) / rate)
    assert _subspace._next_check(history[2:], 1e-10, 64) == 4  # no larger one: no rate
    assert _subspace._next_check(history, 0.0, 64) == 1  # a target of 0: no distance to it
    # a look before k triplets existed (inf) gives no rate (it crashed with a math domain error)
    assert _subspace._next_check([(0, 0, math.inf), (4, 8, 1e-2)], 1e-10, 64) == 4


def test_a_long_solve_far_from_its_target_looks_up_to_twice_the_cap_apart():
    """After max(4·cap, 32) iterations, with 4·cap or more predicted: looks up to 2·cap apart; before
    that run, or nearer the target, at most the cap (early rates put the look late in fast solves)."""
    far = [(0, 0, 1e-1), (40, 80, 1e-2)]  # 240 more predicted (three quarters of 320)
    assert _subspace._next_check(far, 1e-10, 4) == 8
    assert _subspace._next_check(far, 1e-10, 64) == 64  # within the cap: the cap alone
    early = [(0, 0, 1e-1), (20, 40, 1e-2)]  # 120 more predicted, after 20 iterations
    assert _subspace._next_check(early, 1e-10, 4) == 4
    near = [(0, 0, 1e-1), (40, 80, 1e-2), (60, 120, 1e-8)]  # 5 more predicted (6.7 needed)
    assert _subspace._next_check(near, 1e-10, 4) == 4


@pytest.mark.parametrize("k, spacing", [(32, 10), (8, 8)])
def test_a_sparse_matrix_is_looked_at_by_what_its_products_read(k, spacing):
    """A sparse A's products read its stored entries, not m·n: counted as dense, a 2000×1000 A with 1%
    stored had its steps priced 5 times too high against a look at k = 32 (37 looks in 259
    iterations, 518 products); priced by its stored entries, 21 looks, the same products. And the
    spacing the cap allows by A's size went by m·n, every 4 iterations from 2·10⁶ entries up: at
    k = 8, 21 looks in 131 iterations; by the stored entries, 14, the same 262 products."""
    a = scipy.sparse.random(2000, 1000, density=0.01, format="csr", random_state=np.random.default_rng(0))
    out = riemsvd.solve(a, k, tol=1e-10, method="iterative", generator=torch.Generator().manual_seed(0))
    looks, info = len(out.info.history), out.info
    assert bool(info.converged.all()) and info.iterations >= spacing * looks, (info.iterations, looks)


@pytest.mark.parametrize("dtype, spread", [(torch.float32, 1e-4), (torch.float64, 1e-5)])
def test_cholesky_qr_of_a_batch(dtype, spread):
    # the GPU's QR of a batch's blocks (riemsvd._space.Space.qr), here on the CPU: singular values
    # over ``spread`` (float32: beyond 1/√ε, where float32 Gram matrices break down; float64: where
    # Cholesky QR twice in float64 is orthonormal to the dtype's rounding, and once is not); a zero
    # column, or a direction at rounding's size, gives None, for Householder QR
    gen = torch.Generator().manual_seed(0)
    values = torch.logspace(0, math.log10(spread), 8, dtype=torch.float64)
    left = torch.linalg.qr(torch.randn(6, 300, 8, generator=gen, dtype=torch.float64))[0]
    right = torch.linalg.qr(torch.randn(6, 8, 8, generator=gen, dtype=torch.float64))[0]
    x = (left * values @ right).to(dtype)
    done = cholesky_qr(x)
    assert done is not None
    q, r = done
    eps = torch.finfo(dtype).eps
    assert q.dtype == r.dtype == dtype and q.shape == x.shape and r.shape == (6, 8, 8)
    assert torch.equal(r, r.triu()) and bool((torch.diagonal(r, dim1=-2, dim2=-1) > 0).all())
    assert float((q.mT.double() @ q.double() - torch.eye(8, dtype=torch.float64)).abs().max()) <= 10 * eps
    error = torch.linalg.matrix_norm((q @ r - x).double()) / torch.linalg.matrix_norm(x.double())
    assert float(error.max()) <= 10 * eps
    x[2, :, 5] = 0
    assert cholesky_qr(x) is None
    # a direction at 1e-12 of the rest, which float64's Gram matrix does not resolve: its pivots came
    # out 3e-8 to 1e-7 (the rounding's), and with this draw no factorization broke down
    gen = torch.Generator().manual_seed(9)
    left = torch.linalg.qr(torch.randn(6, 300, 8, generator=gen, dtype=torch.float64))[0]
    right = torch.linalg.qr(torch.randn(6, 8, 8, generator=gen, dtype=torch.float64))[0]
    tiny = torch.ones(8, dtype=torch.float64)
    tiny[-1] = 1e-12
    assert cholesky_qr((left * tiny @ right).to(dtype)) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_batch_iterates_with_cholesky_qr(monkeypatch, dtype, gen):
    # the GPU's batched iteration (tensors, deferred steps, blocks of 8, Cholesky QR of the batch's
    # blocks) on the CPU: the SVD reached, Cholesky QR taken; a zero matrix in the batch breaks its
    # factorizations down, and Householder QR takes over
    _tensor_solver(monkeypatch)
    monkeypatch.setattr(riemsvd._space, "BATCHED_QR_DEVICES", ("cpu",))
    calls: list = []
    inner = riemsvd._space.cholesky_qr

    def spy(x):
        done = inner(x)
        calls.append(done is not None)
        return done

    monkeypatch.setattr(riemsvd._space, "cholesky_qr", spy)
    kinds = ("decay", "cluster", "gaussian", "lowrank") * 2
    a = torch.stack([make_matrix(kind, 120, 80, gen) for kind in kinds]).to(dtype)
    options = riemsvd.SolverOptions(block=8)
    result = riemsvd.solve(a, 3, generator=gen, options=options, method="iterative")
    check_svd(a, result, 3, result.info.tol)
    assert True in calls
    a[3] = 0.0
    calls.clear()
    result = riemsvd.solve(a, 3, generator=gen, options=options, method="iterative")
    check_svd(a, result, 3, result.info.tol)
    assert False in calls


def _gk_state(a: np.ndarray, pu: int, w: int, cols: int, rng) -> tuple:
    """Bases for one matrix a (m×n) as the solver lays them out, with pu orthonormal columns of 𝒰 and
    pu + w of 𝒱 (the last w F's), A𝒱, Aᵀ𝒰, H = 𝒰ᵀA𝒱 and C = FᵀAᵀ𝒰 filled in: the state a step
    starts from."""
    m, n = a.shape
    ubuf, avbuf = np.zeros((m, cols), order="F"), np.zeros((m, cols), order="F")
    vbuf, atubuf = np.zeros((n, cols + w), order="F"), np.zeros((n, cols), order="F")
    ubuf[:, :pu] = np.linalg.qr(rng.standard_normal((m, pu)))[0] if pu else ubuf[:, :0]
    vbuf[:, : pu + w] = np.linalg.qr(rng.standard_normal((n, pu + w)))[0]
    avbuf[:, :pu], atubuf[:, :pu] = a @ vbuf[:, :pu], a.T @ ubuf[:, :pu]
    h, c = np.zeros((cols, cols + w)), np.zeros((cols + w, cols))
    h[:pu, :pu] = ubuf[:, :pu].T @ avbuf[:, :pu]
    c[:w, :pu] = vbuf[:, pu : pu + w].T @ atubuf[:, :pu]
    return ubuf, avbuf, vbuf, atubuf, h, c


@pytest.mark.skipif(_backend.STEPS is None, reason="riemsvd._steps was not built")
def test_the_c_run_of_steps_is_gk_fused_then_gk_right_to_the_bit():
    """gk_run takes the steps gk_fused and gk_right take one call each, writing the same numbers to the
    bit into every buffer, on one thread and two; it stops at a left half that loses its column
    (A = 0: lost 1, alpha −1, the step's pass made) and at a right half that does (Aᵀu in the span of
    𝒱 and F: lost 2, with the step's alpha), and where the bases (or A's columns) have no room for
    more steps."""
    rng = np.random.default_rng(0)
    steps = _backend.STEPS
    gaussian = rng.standard_normal((40, 30))
    narrow = np.zeros((40, 30))
    narrow[:, :3] = rng.standard_normal((40, 3))  # Aᵀu lies in the first 3 coordinates
    cases = [(gaussian, 2, 1, 12, 6, None), (gaussian, 0, 1, 12, 20, None), (gaussian, 0, 1, 40, 40, None)]
    cases += [(np.zeros((40, 30)), 2, 1, 8, 3, 1)]  # room for 12 steps in the buffers, for 29 in A's n
    for a, pu, w, cols, asked, lost in cases:
        for threads in (1, 2):
            state = _gk_state(a, pu, w, cols, np.random.default_rng(1))
            mine = [x.copy(order="K") for x in state]
            done, got_lost, fresh, alpha = steps.gk_run(a, *mine, pu, pu, w, 2e-16, threads, asked, False)
            theirs = [x.copy(order="K") for x in state]
            count, their_lost, their_fresh, their_alpha = 0, 0, 0, 0.0
            while count < min(asked, cols - pu, 30 - pu - w):
                their_alpha, again = steps.gk_fused(a, *theirs, pu + count, pu + count, w, 2e-16, threads)
                their_fresh += again
                if their_alpha < 0:
                    their_lost = 1
                    break
                at = pu + count
                if steps.gk_right(theirs[2], theirs[3], theirs[5], at, at, w, their_alpha, 2e-16) < 0:
                    their_lost = 2
                    break
                count += 1
            assert (done, got_lost, fresh) == (count, their_lost, their_fresh), (done, got_lost, count)
            assert got_lost == (lost or 0) and (not got_lost or alpha == their_alpha)
            for x, y in zip(mine, theirs):
                assert np.array_equal(x, y)
    # the right half loses its column: 𝒱 and F hold the first 3 coordinates, where Aᵀu lies
    ubuf, avbuf, vbuf, atubuf, h, c = _gk_state(narrow, 2, 1, 6, rng)
    vbuf[:, :3] = np.eye(30)[:, :3]
    avbuf[:, :2], atubuf[:, :2] = narrow @ vbuf[:, :2], narrow.T @ ubuf[:, :2]
    h[:2, :2], c[:1, :2] = ubuf[:, :2].T @ avbuf[:, :2], vbuf[:, 2:3].T @ atubuf[:, :2]
    done, lost, _, alpha = steps.gk_run(narrow, ubuf, avbuf, vbuf, atubuf, h, c, 2, 2, 1, 2e-16, 1, 4, False)
    assert (done, lost) == (0, 2) and alpha > 0


@pytest.mark.skipif(_backend.STEPS is None, reason="riemsvd._steps was not built")
def test_a_run_of_probe_steps_turns_f_to_c_h_before_each_step():
    """gk_run's probe steps are reflect's reflection of F's first column onto F C h (h H's newest
    column), then gk_fused and gk_right, step after step, to rounding (its sums of C h are its own), on
    one thread and two; the plain run's steps are other steps."""
    rng = np.random.default_rng(2)
    steps = _backend.STEPS
    a = rng.standard_normal((50, 40))
    pu, w, asked = 3, 2, 6
    for threads in (1, 2):
        state = _gk_state(a, pu, w, 12, np.random.default_rng(3))
        mine = [x.copy(order="K") for x in state]
        assert steps.gk_run(a, *mine, pu, pu, w, 2e-16, threads, asked, True)[:2] == (asked, 0)
        theirs = [x.copy(order="K") for x in state]
        ubuf, avbuf, vbuf, atubuf, h, c = theirs
        for at in range(pu, pu + asked):
            steps.reflect(vbuf, at, w, c, at, c[:w, :at] @ h[:at, at - 1])
            alpha, _ = steps.gk_fused(a, *theirs, at, at, w, 2e-16, threads)
            assert alpha > 0 and steps.gk_right(vbuf, atubuf, c, at, at, w, alpha, 2e-16) > 0
        for x, y in zip(mine, theirs):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-12 * np.abs(y).max())
        plain = [x.copy(order="K") for x in state]
        steps.gk_run(a, *plain, pu, pu, w, 2e-16, threads, asked, False)
        assert not np.allclose(plain[2], theirs[2])


@pytest.mark.skipif(_backend.STEPS is None, reason="riemsvd._steps was not built")
@pytest.mark.parametrize(
    "kind, shape, k", [("gaussian", (700, 400), 1), ("decay", (400, 700), 8), ("rank 2", (2000, 300), 5)]
)
def test_runs_of_steps_solve_as_single_steps_do(monkeypatch, kind, shape, k):
    """The steps between two looks in one call into C (_golub_kahan_steps) give the solve of single
    steps to the bit: triplets, products counted, looks and iterations, float64 and float32, a rank-2
    A whose left half loses its column inside a run (finished in Python) included; a probe's steps
    (k > 1) go in runs too."""
    gen = torch.Generator().manual_seed(1 if kind == "rank 2" else 0)  # a seed whose run loses a column
    if kind == "rank 2":
        u = torch.linalg.qr(torch.randn(shape[0], 2, generator=gen, dtype=torch.float64))[0]
        v = torch.linalg.qr(torch.randn(shape[1], 2, generator=gen, dtype=torch.float64))[0]
        a = (u * torch.tensor([3.0, 1.0], dtype=torch.float64)) @ v.T
    else:
        a = make_matrix(kind, *shape, gen)
    calls: list = []  # (steps asked, steps done, lost) of each run
    real, plain = _subspace.STEPS, _subspace._run_length

    class Runs:
        def __getattr__(self, name):
            return getattr(real, name)

        def gk_run(self, *args):
            out = real.gk_run(*args)
            calls.append((args[13], out[0], out[1]))  # (a probe's steps, done, lost)
            return out

    monkeypatch.setattr(_subspace, "STEPS", Runs())
    for dtype in (torch.float64, torch.float32):
        results = []
        for single in (True, False):
            monkeypatch.setattr(_subspace, "_run_length", (lambda *x: 0) if single else plain)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", riemsvd.ConvergenceWarning)
                r = riemsvd.solve(a.to(dtype), k, generator=torch.Generator().manual_seed(0))
            results.append((r.U, r.S, r.V, r.info.matvecs, r.info.iterations, r.info.history))
        (u1, s1, v1, *rest1), (u2, s2, v2, *rest2) = results
        assert torch.equal(u1, u2) and torch.equal(s1, s2) and torch.equal(v1, v2) and rest1 == rest2
    assert calls and max(done for _, done, _ in calls) > 1
    assert (kind == "rank 2") == any(lost for *_, lost in calls), calls
    assert (k > 1) == any(probe and done > 1 for probe, done, _ in calls), calls  # a probe's run


def _sparse_a(m: int, n: int, seed: int, rank: int | None = None, density: float = 0.05):
    """A random m×n CSR matrix with about ``density`` of its entries stored; with ``rank``, only that
    many of its rows hold entries (of rank ``rank`` at most: a left half loses its column once the
    Krylov space has exhausted them)."""
    a = scipy.sparse.random(m, n, density=density, format="lil", random_state=seed)
    if rank is not None:
        a[rank:] = 0.0
    return scipy.sparse.csr_matrix(a)


@pytest.mark.skipif(_backend.STEPS is None, reason="riemsvd._steps was not built")
def test_the_sparse_run_of_steps_is_the_products_then_the_half_steps():
    """gk_sparse_run's steps are A f, gk_left, Aᵀ of the new column and gk_right, step after step, to
    rounding (its sums are its own), from a CSR A's rows and from a CSC A's columns, with 32- and
    64-bit indices, in float64 and float32; it stops at a left half that loses its column (A = 0: lost
    1, A f alone made) and at a right half that does (Aᵀu in the span of 𝒱 and F: lost 2), and where the
    bases have no room for more steps."""
    steps = _backend.STEPS
    a = _sparse_a(40, 30, 0, density=0.3)
    narrow = scipy.sparse.csr_matrix((40, 30))
    narrow[:, :3] = np.random.default_rng(1).standard_normal((40, 3))  # Aᵀu lies in 3 coordinates
    cases = [(a, 2, 1, 12, 6), (a, 0, 1, 12, 20), (scipy.sparse.csr_matrix((40, 30)), 2, 1, 8, 3)]
    for matrix, pu, w, cols, asked in cases:
        dense = matrix.toarray()
        forms = [("csr", np.float64, np.int32), ("csc", np.float64, np.int64), ("csr", np.float32, np.int64)]
        for form, dtype, index in forms:
            stored = matrix.asformat(form).astype(dtype)
            rows = (stored.indptr.astype(index), stored.indices.astype(index), stored.data, form == "csr")
            state = [x.astype(dtype, order="K") if x.ndim == 2 and x.shape[0] in (40, 30) else x
                     for x in _gk_state(dense, pu, w, cols, np.random.default_rng(2))]  # fmt: skip
            mine = [x.copy(order="K") for x in state]
            eps = float(np.finfo(dtype).eps)
            done, lost, alpha = steps.gk_sparse_run(*rows, 40, 30, *mine, pu, pu, w, eps, asked, False)
            ubuf, avbuf, vbuf, atubuf, h, c = theirs = [x.copy(order="K") for x in state]
            count, their_lost = 0, 0
            while count < min(asked, cols - pu, 30 - pu - w):
                at = pu + count
                ubuf[:, at] = dense.astype(dtype) @ vbuf[:, at]
                their_alpha = steps.gk_left(ubuf, avbuf, h, c, at, at, eps)
                if their_alpha < 0:
                    their_lost = 1
                    break
                vbuf[:, at + w] = dense.astype(dtype).T @ ubuf[:, at]
                if steps.gk_right(vbuf, atubuf, c, at, at, w, their_alpha, eps) < 0:
                    their_lost = 2
                    break
                count += 1
            assert (done, lost) == (count, their_lost), (form, done, lost, count, their_lost)
            assert matrix.nnz or (lost == 1 and alpha == -1.0)
            for x, y in zip(mine, theirs):
                # the recurrence's rounding grows step by step: 1e-13 apart after 8 steps in float64
                np.testing.assert_allclose(x, y, rtol=0, atol=2000 * eps * max(1.0, np.abs(y).max()))
    # the right half loses its column: 𝒱 and F hold the first 3 coordinates, where Aᵀu lies
    ubuf, avbuf, vbuf, atubuf, h, c = _gk_state(narrow.toarray(), 2, 1, 6, np.random.default_rng(3))
    vbuf[:, :3] = np.eye(30)[:, :3]
    avbuf[:, :2], atubuf[:, :2] = narrow @ vbuf[:, :2], narrow.T @ ubuf[:, :2]
    h[:2, :2], c[:1, :2] = ubuf[:, :2].T @ avbuf[:, :2], vbuf[:, 2:3].T @ atubuf[:, :2]
    rows = (narrow.indptr, narrow.indices, narrow.data, True)
    bases = (ubuf, avbuf, vbuf, atubuf, h, c)
    done, lost, alpha = steps.gk_sparse_run(*rows, 40, 30, *bases, 2, 2, 1, 2e-16, 4, False)
    assert (done, lost) == (0, 2) and alpha > 0


def test_sparse_rows_are_only_arrays_that_c_can_read():
    """The solver's runs take a sparse A's arrays unchecked in C: sparse_rows hands them over only where
    the row pointers rise from 0 to at most the entries stored, every index used lies within the other
    side, the indices share one integer type and the values have the solver's dtype."""
    a = _sparse_a(20, 10, 0)
    ptr, ind, data = a.indptr, a.indices, a.data

    def rows(p=ptr, i=ind, d=data, shape=(20, 10), dtype=np.float64):
        return _operator.sparse_rows(p, i, d, True, shape, dtype)

    if _backend.STEPS is None:
        assert rows() is None
        return
    assert rows() is not None and rows(shape=(10, 20)) is None  # ptr's length is A's rows + 1
    _operator.sparse_rows(ptr, ind, data, False, (10, 20), np.float64)  # a CSC A's arrays, 10×20
    assert _operator.sparse_rows(ptr, ind, data, False, (10, 20), np.float64) is not None
    bad = ind.copy()
    bad[3] = 10  # beyond A's 10 columns
    assert rows(i=bad) is None
    bad[3] = -1
    assert rows(i=bad) is None
    falling = ptr.copy()
    falling[5] = falling[6] + 1
    assert rows(p=falling) is None
    assert rows(p=ptr + 1) is None  # not from 0
    assert rows(p=np.append(ptr[:-1], len(ind) + 1).astype(ptr.dtype)) is None  # beyond the entries
    assert rows(i=ind.astype(np.int64)) is None  # one integer type
    assert rows(dtype=np.float32) is None and rows(d=data.astype(np.float32), dtype=np.float32) is not None
    unused = np.append(ind, [99]).astype(ind.dtype), np.append(data, [1.0])  # entries past ptr[-1]
    assert rows(i=unused[0], d=unused[1]) is not None


@pytest.mark.skipif(_backend.STEPS is None, reason="riemsvd._steps was not built")
@pytest.mark.parametrize("form", ["csr", "csc", "torch"])
@pytest.mark.parametrize("k, rank", [(1, None), (6, None), (3, 12)])
def test_sparse_runs_of_steps_solve_as_single_steps_and_products_from_python_do(monkeypatch, form, k, rank):
    """A sparse A's steps between two looks in one call into C (gk_sparse_run) give the solve of
    single steps to the bit (single steps are runs of one), and that of the products from Python
    (scipy's kernels, gk_left and gk_right) to rounding, with the same products counted: a CSR A, a
    CSC A and a torch CSR tensor; a probe's steps (k > 1) and an A whose left half loses its column
    inside a run (rank 12, k = 3: finished in Python) included."""
    a = _sparse_a(300, 200, 4, rank)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        target = a.asformat(form) if form != "torch" else torch.from_numpy(a.toarray()).to_sparse_csr()
    calls: list = []  # (probe, steps done, lost) of each run
    real, plain, rows = _subspace.STEPS, _subspace._run_length, _operator.sparse_rows

    class Runs:
        def __getattr__(self, name):
            return getattr(real, name)

        def gk_sparse_run(self, *args):
            out = real.gk_sparse_run(*args)
            calls.append((args[17], out[0], out[1]))
            return out

    monkeypatch.setattr(_subspace, "STEPS", Runs())
    results = []
    for way in ("runs", "single", "python"):
        monkeypatch.setattr(_subspace, "_run_length", (lambda *x: 0) if way == "single" else plain)
        monkeypatch.setattr(_operator, "sparse_rows", (lambda *x: None) if way == "python" else rows)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", riemsvd.ConvergenceWarning)
            r = riemsvd.solve(target, k, generator=torch.Generator().manual_seed(0))
        results.append(r)
    runs, single, python = results
    for x, y in zip((runs.U, runs.S, runs.V), (single.U, single.S, single.V)):
        assert torch.equal(x, y)
    assert runs.info.matvecs == single.info.matvecs == python.info.matvecs
    assert runs.info.iterations == python.info.iterations
    np.testing.assert_allclose(runs.S, python.S, rtol=0, atol=1e-12 * float(python.S[0]))
    check_svd(torch.from_numpy(a.toarray()), runs, k, runs.info.tol)
    assert max(done for _, done, _ in calls) > 1
    assert (rank is not None) == any(lost for *_, lost in calls), calls
    # a probe's run (the rank-12 A's space is exhausted before its probe)
    assert (k > 1 and rank is None) == any(probe and done > 1 for probe, done, _ in calls), calls


@pytest.mark.skipif(_backend.STEPS is None or sys.platform == "win32", reason="needs fork and riemsvd._steps")
def test_the_fused_pass_runs_in_a_forked_child():
    """fork copies none of the pass's worker threads: a child whose parent had them makes its own
    (waiting on the parent's, it would never return: DataLoader workers and DDP start this way)."""
    import os
    import time

    rng = np.random.default_rng(0)
    a = rng.standard_normal((600, 300))

    def one_pass() -> tuple[float, np.ndarray]:
        ubuf, avbuf = np.zeros((600, 2), order="F"), np.zeros((600, 2), order="F")
        vbuf, atubuf = np.zeros((300, 3), order="F"), np.zeros((300, 2), order="F")
        vbuf[:, 0] = 1 / math.sqrt(300)
        h, c = np.zeros((2, 2)), np.zeros((2, 2))
        alpha, _ = _backend.STEPS.gk_fused(a, ubuf, avbuf, vbuf, atubuf, h, c, 0, 0, 1, 2e-16, 2)
        return alpha, vbuf[:, 1].copy()

    alpha, aty = one_pass()  # the parent's worker made
    np.testing.assert_allclose(alpha, np.linalg.norm(a @ np.full(300, 1 / math.sqrt(300))), rtol=1e-14)
    np.testing.assert_allclose(aty, a.T @ (a @ np.full(300, 1 / math.sqrt(300))) / alpha, rtol=1e-12)
    with warnings.catch_warnings():  # Python 3.12's: fork in a process with threads (ours, parked)
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: exit 0 where its pass gives the parent's numbers
        try:
            again = one_pass()
            os._exit(0 if again[0] == alpha and np.array_equal(again[1], aty) else 1)
        except BaseException:
            os._exit(2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's pass never returned")
