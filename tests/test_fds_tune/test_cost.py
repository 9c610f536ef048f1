"""fds_tune.cost: the plain-epoch unit of compute."""
import math

import pytest

from fds_tune.cost import plain_epoch_seconds
from fds_tune.problem import Problem, ProblemConfig


@pytest.fixture(scope="module")
def problem():
    return Problem(ProblemConfig(model="mlp", device="cpu"))


def test_a_plain_epoch_takes_positive_finite_time(problem):
    seconds = plain_epoch_seconds(problem, epochs=3, warmup_epochs=0)
    assert 0 < seconds and math.isfinite(seconds)


@pytest.mark.parametrize(("kwargs", "match"), [({"epochs": 0}, "epochs: got 0"), ({"warmup_epochs": -1}, "warmup_epochs: got -1")])
def test_bad_arguments_are_refused(problem, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plain_epoch_seconds(problem, **kwargs)
