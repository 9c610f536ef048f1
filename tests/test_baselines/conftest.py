"""Shared fixtures for the baseline tests: the problem on CPU and a small ``build``."""
import pytest

from baselines import SpaceConfig, get_baseline
from fds_tune.problem import ProblemConfig


@pytest.fixture(scope="session")
def problem():
    return ProblemConfig(device="cpu")


@pytest.fixture(scope="session")
def build(problem):
    """``build(method, seed=0, **kwargs)``: a method's TuneSetup on a 4-dim space (2 learning rates)."""
    small = SpaceConfig(sizes={"lr": 2, "momentum": 1, "weight_decay": 1})

    def build(method, seed=0, **kwargs):
        kwargs = {"max_epochs": 3, "num_samples": 4} | kwargs
        return get_baseline(method).build(small, problem, seed=seed, **kwargs)

    return build
