"""A spectrally normalized MLP on scikit-learn's digits: riemsvd.nn.spectral_norm beside torch's.

``run()`` trains the same 64-128-128-10 MLP (every layer ‖W‖₂ = 1, so the network is 1-Lipschitz) with
each and records every layer's true σ over training; ``benchmark()`` times a training step of a
float32 1024×1024 Linear with each. ``python examples/spectral_norm_digits.py --help``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import riemsvd.nn

VARIANTS = {"riemsvd": riemsvd.nn.spectral_norm, "torch": parametrizations.spectral_norm}
TEMPERATURE = 10.0  # logits of a 1-Lipschitz net are small; the loss sees them ×10, argmax does not care


def load_digits_tensors(seed: int = 0):
    """(x_train, y_train, x_test, y_test): 8×8 digits as 64 features in [0, 1], a 75/25 split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this example needs scikit-learn for its bundled digits data: `pip install scikit-learn`."
        ) from err
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = (3 * len(y)) // 4
    return x[perm[:cut]], y[perm[:cut]], x[perm[cut:]], y[perm[cut:]]


def make_mlp(variant: str, seed: int = 0, sizes=(64, 128, 128, 10)) -> nn.Sequential:
    """An MLP with ReLUs whose Linear weights are spectrally normalized by ``variant``."""
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(VARIANTS[variant](nn.Linear(a, b)))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model if isinstance(m, nn.Linear)]


def train(variant: str, data, *, epochs: int, lr: float = 3e-3, batch: int = 64, seed: int = 0) -> dict:
    """Train one variant; σ of each layer's normalized weight is recorded at every step, as used."""
    x_train, y_train, x_test, y_test = data
    model = make_mlp(variant, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    sigmas = []
    for _ in range(epochs):
        perm = torch.randperm(len(y_train), generator=g)
        for start in range(0, len(perm), batch):
            idx = perm[start : start + batch]
            opt.zero_grad()
            with parametrize.cached():  # one normalization per step, and the weights it produced
                loss = nn.functional.cross_entropy(TEMPERATURE * model(x_train[idx]), y_train[idx])
                weights = [layer.weight.detach() for layer in _linears(model)]
            sigmas.append([float(torch.linalg.matrix_norm(w.double(), 2)) for w in weights])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(-1) == y_test).float().mean())
    sigmas = torch.tensor(sigmas, dtype=torch.float64)
    return {"accuracy": accuracy, "sigmas": sigmas, "max_sigma_error": float((sigmas - 1).abs().max())}


def plot_sigmas(results: dict, path: str | os.PathLike) -> None:
    """|σ − 1| of each layer over training steps, one panel per variant, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(9, 3.2), sharey=True, dpi=90)
    for ax, (variant, res) in zip(axes, results.items()):
        err = (res["sigmas"] - 1).abs().clamp_min(1e-9)
        for j in range(err.shape[1]):
            ax.semilogy(err[:, j], lw=0.8, label=f"layer {j + 1}")
        ax.set_title(f"{variant}: accuracy {res['accuracy']:.3f}")
        ax.set_xlabel("training step")
    axes[0].set_ylabel("|‖W/σ‖₂ − 1|")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(epochs: int = 3, plot_path: str | os.PathLike | None = None, lr: float = 3e-3) -> dict:
    """Train the MLP with each spectral norm; return final test accuracies and max |σ − 1|.

    Returns a dict with, per variant ("riemsvd", "torch"), ``<variant>_accuracy`` and
    ``<variant>_max_sigma_error`` (over all layers and steps, σ by a full SVD of the normalized
    weight each step used). Writes a PNG of |σ − 1| over training to ``plot_path`` if given.
    """
    data = load_digits_tensors()
    results = {variant: train(variant, data, epochs=epochs, lr=lr) for variant in VARIANTS}
    if plot_path is not None:
        plot_sigmas(results, plot_path)
    out = {}
    for variant, res in results.items():
        out[f"{variant}_accuracy"] = res["accuracy"]
        out[f"{variant}_max_sigma_error"] = res["max_sigma_error"]
    return out


def benchmark(
    n: int = 1024,
    batch: int = 256,
    steps: int = 60,
    lr: float = 1e-3,
    device: str = "cpu",
    tol: float | None = None,
    seed: int = 0,
) -> dict:
    """Median training-step time (forward, backward, Adam step) of a spectrally normalized float32
    n×n Linear on a regression, riemsvd's (solving to ``tol``) against torch's, and each one's
    largest |σ − 1|.

    σ errors come from the normalized weights of every 5th step after the first third (warm-up),
    cloned during the run and measured by a full SVD after the timed loop.
    """
    out = {}
    wraps = {"riemsvd": lambda m: riemsvd.nn.spectral_norm(m, tol=tol), "torch": VARIANTS["torch"]}
    for variant, wrap in wraps.items():
        torch.manual_seed(seed)
        layer = wrap(nn.Linear(n, n)).to(device)
        opt = torch.optim.Adam(layer.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randn(batch, n, generator=g).to(device), torch.randn(batch, n, generator=g).to(device)
        times, kept = [], []
        for i in range(steps):
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            opt.zero_grad()
            with parametrize.cached():
                loss = nn.functional.mse_loss(layer(x), y)
                w = layer.weight
            loss.backward()
            opt.step()
            if device != "cpu":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            if i >= steps // 3 and i % 5 == 0:
                kept.append(w.detach().clone())
        steady = sorted(times[steps // 3 :])
        out[f"{variant}_step_ms"] = 1e3 * steady[len(steady) // 2]
        errors = [abs(float(torch.linalg.matrix_norm(w.double(), 2)) - 1) for w in kept]
        out[f"{variant}_max_sigma_error"] = max(errors)
    out["ratio"] = out["riemsvd_step_ms"] / out["torch_step_ms"]
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30, help="training epochs on digits (default 30)")
    p.add_argument("--plot", default=None, help="write |σ − 1| over training to this PNG")
    p.add_argument("--benchmark", action="store_true", help="also time a 1024×1024 Linear training step")
    p.add_argument("--device", default=None, help="with --benchmark: its device (default cpu)")
    p.add_argument("--tol", type=float, default=None, help="with --benchmark: riemsvd's tol")
    args = p.parse_args()
    # checked before the training, not after it (a new user's trial: --epochs 0 failed in max(),
    # --tol 0 after the whole training, and both options were silently unused without --benchmark)
    if args.epochs < 1:
        p.error(f"--epochs must be at least 1, got {args.epochs}")
    # None by default, so that an explicit --device cpu without --benchmark is refused too (a trial)
    if not args.benchmark and (args.device is not None or args.tol is not None):
        p.error("--device and --tol apply to --benchmark's step only: add --benchmark")
    args.device = args.device or "cpu"
    if args.tol is not None and not 0 < args.tol < 1:
        p.error(f"--tol must be in (0, 1), got {args.tol}")
    if args.benchmark and args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: this torch has no CUDA device; use --device cpu")
    print("digits MLP (σ error: |σ − 1| of the normalized weights, by a full SVD):")
    for key, value in run(args.epochs, args.plot).items():
        print(f"  {key:28s} {value:.3g}")
    if args.benchmark:
        # the same keys as above, of another model: under their own heading (a new user's trial)
        print("1024×1024 Linear training step (ratio: riemsvd's step time over torch's):")
        for key, value in benchmark(device=args.device, tol=args.tol).items():
            print(f"  {key:28s} {value:.3g}")
