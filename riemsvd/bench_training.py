"""What a training loop sees of riemsvd, against the obvious alternative in the same process.

``python -m riemsvd.bench_training`` prints, each figure a ratio of medians over interleaved
repetitions (riemsvd, then the alternative, in turn), on the CPU or with ``--device cuda`` on a GPU
(each timer read after the device's queued work, as the solver benchmark's ``clock``):

- ``import``: ``import riemsvd`` beyond ``import torch``, and the first ``solve`` in a fresh process
  beyond the second (subprocesses);
- ``galore``: the top-32 and top-128 triplets of a 1536×384 float32 gradient-like matrix against
  ``torch.linalg.svd`` of the whole matrix (a GaLore projector);
- ``batch``: k = 1 of a (256, 128, 128) float32 batch against ``torch.linalg.svdvals``;
- ``steps``: training steps (forward, backward, Adam at lr 1e-3; 10 warm-up steps, then ``--steps``)
  of models spectrally normalized by ``riemsvd.nn.spectral_norm`` against
  ``torch.nn.utils.parametrizations.spectral_norm``, with both models' largest |‖W/σ‖₂ − 1| over
  every step and layer, riemsvd's also as a multiple of its tolerance;
- ``compiled``: the same riemsvd-normalized models and an MLP, ``torch.compile(model, fullgraph=True)``
  (inductor) against eager, step by step from the same start (compilation in the warm-up), with the
  graph breaks, the largest parameter difference after the steps, and the same ratio for the model
  without normalization (what inductor gains or loses on the model itself).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
from collections.abc import Callable

import torch
from torch import nn

import riemsvd
import riemsvd.nn as rnn
from riemsvd._tolerance import default_tol
from riemsvd.bench import HelpFormatter, make_matrix, positive_int, thread_limits, threads_text
from riemsvd.bench.runners import clock

__all__ = ["main", "run_batch", "run_compiled", "run_galore", "run_import", "run_steps"]

SECTIONS = ("import", "galore", "batch", "steps", "compiled")


def _interleaved(calls: dict, reps: int, device: torch.device = torch.device("cpu")) -> dict:
    """Median seconds per call of each of ``calls`` (name → zero-argument function), run in turn."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():  # warm-up: first-call costs are the import section's business
        call()
    for _ in range(reps):
        for name, call in calls.items():
            start = clock(device)
            call()
            times[name].append(clock(device) - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _python(code: str) -> float:
    """Seconds that ``code`` reports, run in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run_import(reps: int = 5) -> dict:
    """Seconds of ``import riemsvd`` beyond ``import torch``, and of the first solve beyond the second
    (a 200×100 float64 matrix, k = 1), medians over fresh processes."""
    timed = "import time; t = time.perf_counter(); "  # the code before the import it times
    torch_only = timed + "import torch; print(time.perf_counter() - t)"
    both = timed + "import torch, riemsvd; print(time.perf_counter() - t)"
    calls = (
        "import time, torch, riemsvd; a = torch.randn(200, 100, dtype=torch.float64); d = []\n"
        "for _ in range(2):\n"
        "    t = time.perf_counter(); riemsvd.solve(a, 1); d.append(time.perf_counter() - t)\n"
        "print(d[0] - d[1])"
    )
    rows = [(_python(torch_only), _python(both), _python(calls)) for _ in range(reps)]
    return {
        "import_beyond_torch_s": statistics.median(b - a for a, b, _ in rows),
        "first_call_beyond_second_s": statistics.median(c for *_, c in rows),
    }


def run_galore(ks=(32, 128), shape: tuple[int, int] = (1536, 384), reps: int = 7, device="cpu") -> list[dict]:
    """riemsvd.solve (method "auto") of a float32 gradient-like matrix against torch.linalg.svd."""
    device = torch.device(device)
    a = make_matrix("gradient", *shape, torch.float32, torch.Generator().manual_seed(0)).to(device)
    out = []
    for k in ks:
        t = _interleaved(
            {
                "riemsvd": lambda k=k: riemsvd.solve(a, k),
                "svd": lambda: torch.linalg.svd(a, full_matrices=False),
            },
            reps,
            device,
        )
        out.append(_row(f"{shape[0]}×{shape[1]} float32, k = {k}", t, "svd", riemsvd.solve(a, k)))
    return out


def run_batch(shape=(256, 128, 128), reps: int = 5, device="cpu") -> dict:
    """riemsvd.solve (k = 1) of a float32 batch against torch.linalg.svdvals of the batch."""
    device = torch.device(device)
    a = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    calls = {"riemsvd": lambda: riemsvd.solve(a, 1), "svdvals": lambda: torch.linalg.svdvals(a)}
    t = _interleaved(calls, reps, device)
    return _row(f"{shape} float32, k = 1", t, "svdvals", riemsvd.solve(a, 1))


def _row(case: str, times: dict, alternative: str, result) -> dict:
    """A table row: riemsvd's median time against the alternative's, and what the solve reported."""
    return {
        "case": case,
        "riemsvd_s": times["riemsvd"],
        "alternative_s": times[alternative],
        "ratio": times["riemsvd"] / times[alternative],
        "method": result.info.method,
        "residual": float(result.info.residual.max()),
    }


def _linear():
    return nn.Sequential(nn.Linear(256, 256)), (64, 256)


def _conv():
    return nn.Sequential(nn.Conv2d(16, 32, 3, padding=1)), (16, 16, 16, 16)


def _sngan():
    """A small SNGAN-style discriminator for 32×32 RGB images."""
    layers, channels = [], [3, 32, 64, 64, 128, 128]
    for i, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
        stride = 2 if i % 2 else 1
        layers += [nn.Conv2d(c_in, c_out, 4 if stride == 2 else 3, stride, 1), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 8 * 8, 1)), (16, 3, 32, 32)


def _block_mlp():
    """A transformer block's MLP (width 128, batch of 128 tokens): under Adam at lr 1e-3 its fresh
    weights' tops move and cluster, and nearly every forward solves."""
    return nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 128)), (128, 128)


MODELS = {
    "Linear(256, 256)": _linear,
    "Conv2d(16, 32, 3) on 16×16": _conv,
    "SNGAN discriminator": _sngan,
    "transformer MLP 128-512-128": _block_mlp,
}


def _mlp():
    widths = (64, 512, 512, 10)
    layers = [layer for a, b in zip(widths, widths[1:]) for layer in (nn.Linear(a, b), nn.ReLU())]
    return nn.Sequential(*layers[:-1]), (128, 64)


def _normalized(model: nn.Module, wrap) -> nn.Module:
    for layer in model.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            wrap(layer)
    return model


def _sigma_errors(model: nn.Module) -> list[tuple[float, float]]:
    """(|‖W/σ‖₂ − 1|, riemsvd's tolerance for the layer) per normalized layer, in eval mode: the
    normalized weight of the step that just ran (its buffers, no update)."""
    model.eval()
    out = []
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                w = layer.weight.detach().flatten(1)
                norm = float(torch.linalg.matrix_norm(w.double(), 2))
                out.append((abs(norm - 1), default_tol(w.dtype, *w.shape)))
    model.train()
    return out


def _adam_steps(
    calls: dict, models: dict, input_shape, steps: int, warmup: int, untimed=None, device="cpu"
) -> dict:
    """Seconds of each training step (Adam at lr 1e-3 on ``models[key]``'s parameters, the forward by
    ``calls[key]``) per key, interleaved step by step on the same inputs (made on ``device``), after
    ``warmup`` steps; ``untimed(key, model)`` runs between the backward and the optimizer's step of
    each timed step, outside the timing (in the warmup, torch's one power step a forward has not
    converged yet)."""
    device = torch.device(device)
    optimizers = {key: torch.optim.Adam(m.parameters(), lr=1e-3) for key, m in models.items()}
    times: dict[str, list[float]] = {key: [] for key in calls}
    g = torch.Generator().manual_seed(1)
    for step in range(warmup + steps):
        x = torch.randn(input_shape, generator=g).to(device)
        for key, call in calls.items():
            start = clock(device)
            optimizers[key].zero_grad(set_to_none=True)
            (call(x) - 1).square().mean().backward()
            elapsed = clock(device) - start
            if untimed is not None and step >= warmup:
                untimed(key, models[key])
            start = clock(device)
            optimizers[key].step()
            if step >= warmup:
                times[key].append(elapsed + clock(device) - start)
    return times


def run_steps(steps: int = 100, warmup: int = 10, models=None, device="cpu") -> list[dict]:
    """Median step time of each model normalized by riemsvd and by torch, interleaved step by step."""
    out = []
    for name, make in (models or MODELS).items():
        torch.manual_seed(0)
        base, input_shape = make()
        base = base.to(device)
        pair = {
            "riemsvd": _normalized(copy.deepcopy(base), rnn.spectral_norm),
            "torch": _normalized(copy.deepcopy(base), nn.utils.parametrizations.spectral_norm),
        }
        worst = {key: 0.0 for key in pair} | {"riemsvd over tol": 0.0}

        def record_errors(key: str, model: nn.Module, worst=worst) -> None:
            errors = _sigma_errors(model)
            worst[key] = max(worst[key], max(e for e, _ in errors))
            if key == "riemsvd":
                worst["riemsvd over tol"] = max(worst["riemsvd over tol"], max(e / tol for e, tol in errors))

        times = _adam_steps(pair, pair, input_shape, steps, warmup, record_errors, device)
        r, t = statistics.median(times["riemsvd"]), statistics.median(times["torch"])
        out.append(
            {
                "case": name,
                "riemsvd_s": r,
                "alternative_s": t,
                "ratio": r / t,
                "sigma_error_riemsvd": worst["riemsvd"],
                "sigma_error_over_tol": worst["riemsvd over tol"],
                "sigma_error_torch": worst["torch"],
            }
        )
    return out


def run_compiled(steps: int = 30, warmup: int = 5, models=None, device="cpu") -> list[dict]:
    """Median step time of each riemsvd-normalized model compiled (inductor, ``fullgraph=True``)
    against the same model in eager mode, interleaved step by step from the same parameters."""
    import torch._dynamo as dynamo

    out = []
    for name, make in (models or {"MLP 64-512-512-10": _mlp, **MODELS}).items():
        torch.manual_seed(0)
        base, input_shape = make()
        base = base.to(device)
        plain = copy.deepcopy(base)  # the model without normalization: what inductor does to it alone
        plain_compiled = copy.deepcopy(base)
        eager = _normalized(base, rnn.spectral_norm)
        model = copy.deepcopy(eager)
        calls: dict[str, Callable] = {
            "riemsvd": torch.compile(model, fullgraph=True),
            "eager": eager,
            "plain compiled": torch.compile(plain_compiled, fullgraph=True),
            "plain": plain,
        }
        models_ = {"riemsvd": model, "eager": eager, "plain compiled": plain_compiled, "plain": plain}
        times = _adam_steps(calls, models_, input_shape, steps, warmup, device=device)
        plain_ratio = statistics.median(times["plain compiled"]) / statistics.median(times["plain"])
        with torch.no_grad():  # float32: Adam's steps of ±lr magnify the two runs' different rounding
            pairs = zip(model.parameters(), eager.parameters())
            difference = max(float((p - q).abs().max()) for p, q in pairs)
        breaks = dynamo.explain(model)(torch.randn(input_shape, device=device)).graph_break_count
        r, e = statistics.median(times["riemsvd"]), statistics.median(times["eager"])
        row = {"case": name, "riemsvd_s": r, "alternative_s": e, "ratio": r / e}
        out.append(
            row | {"graph_breaks": breaks, "parameter_difference": difference, "plain_ratio": plain_ratio}
        )
    return out


def _table(rows: list[dict], alternative: str, extra=()) -> str:
    head = f"| case | riemsvd | {alternative} | ratio |" + "".join(f" {label} |" for label, _, _ in extra)
    lines = [head, "|" + " --- |" * (4 + len(extra))]
    for r in rows:
        cells = [
            r["case"],
            f"{r['riemsvd_s'] * 1e3:.2f} ms",
            f"{r['alternative_s'] * 1e3:.2f} ms",
            f"{r['ratio']:.2f}×",
        ]
        cells += [fmt.format(r[key]) for _, key, fmt in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _device(text: str) -> torch.device:
    """``--device``'s value: a CPU or CUDA device (the timing synchronizes those two alone)."""
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device this bench times: use cpu or cuda")
    return device


def main(argv: list[str] | None = None) -> int:
    about = __doc__.split("\n\n")[0]
    ap = argparse.ArgumentParser(
        prog="python -m riemsvd.bench_training", description=about, formatter_class=HelpFormatter
    )
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS, help="what to measure")
    ap.add_argument("--steps", type=positive_int, default=100, help="timed training steps per model")
    ap.add_argument("--threads", type=int, default=None, help="torch and BLAS threads (None: torch's)")
    ap.add_argument(
        "--device",
        default="cpu",
        type=_device,
        help="where the matrices and models live: cpu, or cuda (cuda:N); the import section runs on the CPU",
    )
    args = ap.parse_args(argv)
    device = args.device
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {device}: torch sees no CUDA device here; use --device cpu")
    threads = args.threads or torch.get_num_threads()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"riemsvd {riemsvd.__version__}, torch {torch.__version__}, {threads_text(threads)}, {where}")
    with thread_limits(threads):
        if "import" in args.sections:
            r = run_import()
            print(f"\nimport riemsvd beyond torch: {r['import_beyond_torch_s']:.3f} s")
            print(f"first solve beyond the second: {r['first_call_beyond_second_s'] * 1e3:.1f} ms")
        if "galore" in args.sections:
            print("\nGaLore projector, against torch.linalg.svd of the whole matrix")
            print(_table(run_galore(device=device), "torch.linalg.svd", [("method", "method", "{}")]))
        if "batch" in args.sections:
            print("\nA batch, against torch.linalg.svdvals")
            print(_table([run_batch(device=device)], "svdvals", [("method", "method", "{}")]))
        if "steps" in args.sections:
            print("\nSpectral-norm training steps, against torch's parametrization (Adam, lr 1e-3)")
            extra = [
                ("max σ error riemsvd", "sigma_error_riemsvd", "{:.1e}"),
                ("÷ tol", "sigma_error_over_tol", "{:.2f}"),
                ("max σ error torch", "sigma_error_torch", "{:.1e}"),
            ]
            print(_table(run_steps(args.steps, device=device), "torch", extra))
        if "compiled" in args.sections:
            print("\nSpectral-norm training steps compiled (fullgraph=True, inductor) against eager (Adam)")
            extra = [
                ("graph breaks", "graph_breaks", "{}"),
                ("max |Δ parameter|", "parameter_difference", "{:.1e}"),
                ("unnormalized model compiled/eager", "plain_ratio", "{:.2f}×"),
            ]
            table = _table(run_compiled(device=device), "eager", extra)
            print(table.replace("| riemsvd |", "| compiled |", 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
