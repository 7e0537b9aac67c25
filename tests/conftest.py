"""Shared fixtures and the hypothesis profiles (``ci`` is the default; ``fuzz`` runs far more)."""

import os
import random

import pytest
import torch
from hypothesis import HealthCheck, settings

# New examples on every run, reproducibly: the seed is drawn (or taken from HYPOTHESIS_SEED or
# --hypothesis-seed), and printed at the end of the run with the command that replays it.
settings.register_profile("ci", max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "fuzz", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

if os.environ.get("RIEMSVD_MUTANT"):  # a deliberately wrong solve, before any test module imports it
    from tests.mutants import install

    install(os.environ["RIEMSVD_MUTANT"])


@pytest.hookimpl(tryfirst=True)  # before hypothesis's own plugin reads the option
def pytest_configure(config):
    if config.getoption("hypothesis_seed", None) is None:
        seed = os.environ.get("HYPOTHESIS_SEED") or str(random.SystemRandom().randrange(2**32))
        config.option.hypothesis_seed = seed


def pytest_terminal_summary(terminalreporter, config):
    seed = config.getoption("hypothesis_seed", None)
    replay = f"python -m pytest --hypothesis-seed={seed}"
    terminalreporter.write_line(f"hypothesis seed {seed}: replay with `{replay}`")


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator: every test draws its random numbers from it."""
    return torch.Generator().manual_seed(1234)
