# The C half steps of riemsvd/_steps.c (see there and their Python twins in riemsvd/_subspace.py).
import numpy as np

def gk_left(
    ubuf: np.ndarray, avbuf: np.ndarray, h: np.ndarray, c: np.ndarray, pu: int, pv: int, eps: float, /
) -> float: ...
def gk_right(
    vbuf: np.ndarray, atubuf: np.ndarray, c: np.ndarray, pu: int, pv: int, w: int, alpha: float, eps: float, /
) -> float: ...
def orth(
    basis: np.ndarray | None,
    q: int,
    x: np.ndarray,
    j: int,
    known: np.ndarray,
    coef: np.ndarray,
    eps: float,
    /,
) -> float: ...
def gk_fused(
    a: np.ndarray,
    ubuf: np.ndarray,
    avbuf: np.ndarray,
    vbuf: np.ndarray,
    atubuf: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    pu: int,
    pv: int,
    w: int,
    eps: float,
    threads: int,
    top: np.ndarray | None = None,
    /,
) -> tuple[float, int]: ...
def gk_run(
    a: np.ndarray,
    ubuf: np.ndarray,
    avbuf: np.ndarray,
    vbuf: np.ndarray,
    atubuf: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    pu: int,
    pv: int,
    w: int,
    eps: float,
    threads: int,
    steps: int,
    probe: bool,
    /,
) -> tuple[int, int, int, float]: ...
def gk_sparse_run(
    ptr: np.ndarray,
    ind: np.ndarray,
    data: np.ndarray,
    by_rows: bool,
    m: int,
    n: int,
    ubuf: np.ndarray,
    avbuf: np.ndarray,
    vbuf: np.ndarray,
    atubuf: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    pu: int,
    pv: int,
    w: int,
    eps: float,
    steps: int,
    probe: bool,
    /,
) -> tuple[int, int, float]: ...
def estimate(
    h: np.ndarray,
    c: np.ndarray,
    t: int,
    y: np.ndarray,
    s: np.ndarray,
    rel: np.ndarray,
    slack: np.ndarray,
    /,
) -> bool: ...
def svd_look(
    h: np.ndarray,
    c: np.ndarray,
    t: int,
    y: np.ndarray,
    s: np.ndarray,
    z: np.ndarray,
    rel: np.ndarray,
    /,
) -> bool: ...
def kept_products(
    ubuf: np.ndarray,
    avbuf: np.ndarray,
    vbuf: np.ndarray,
    atubuf: np.ndarray,
    pu: int,
    pv: int,
    y: np.ndarray,
    z: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    av: np.ndarray,
    atu: np.ndarray,
    /,
) -> None: ...
def finish(
    u: np.ndarray,
    v: np.ndarray,
    av: np.ndarray,
    atu: np.ndarray,
    floor: float,
    drift: float,
    u_out: np.ndarray,
    v_out: np.ndarray,
    s: np.ndarray,
    errors: np.ndarray,
    each: np.ndarray,
    /,
) -> float: ...
def reflect(vbuf: np.ndarray, pv: int, w: int, c: np.ndarray, pu: int, d: np.ndarray, /) -> float: ...
def max_abs(x: np.ndarray, threads: int, /) -> float: ...
def wake(threads: int, /) -> None: ...
def widened_both(
    a: np.ndarray, x: np.ndarray, y: np.ndarray, ax: np.ndarray, aty: np.ndarray, threads: int, /
) -> None: ...
