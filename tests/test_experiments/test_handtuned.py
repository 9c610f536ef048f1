"""experiments/handtuned.py: the hand-tuned reference picks the grid's best lr on validation, then tests it."""
import math

import pytest

from experiments.handtuned import cosine_schedule, hand_tuned
from fds_tune import Problem, fds_config


@pytest.fixture(scope="module")
def digits():
    return Problem(fds_config({"preset": "digits"}).problem)


def test_cosine_schedule_decays_from_the_peak_to_zero():
    s = cosine_schedule(0.2, 0.9, 1e-4, horizon=4)
    assert s.as_lists()["lr"] == pytest.approx([0.2, 0.2 * (1 + math.cos(math.pi / 4)) / 2, 0.1, 0.2 * (1 + math.cos(3 * math.pi / 4)) / 2])


def test_the_chosen_lr_is_the_grid_argmax_of_val_acc(digits):
    result = hand_tuned(digits, epochs=1, lrs=[0.001, 0.1])
    assert [g["lr"] for g in result["grid"]] == [0.001, 0.1]
    assert result["best_lr"] == max(result["grid"], key=lambda g: g["val_acc"])["lr"]
    assert all(0.0 <= g["val_acc"] <= 1.0 for g in result["grid"])
    assert 0.0 <= result["test_acc"] <= 1.0
    assert (result["momentum"], result["weight_decay"], result["epochs"]) == (0.9, 5e-4, 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"problem": "digits"}, r"problem: got 'digits'; must be a fds_tune.Problem"),
        ({"epochs": 0}, r"epochs: got 0; must be an int >= 1"),
        ({"epochs": True}, r"epochs: got True; must be an int >= 1"),
        ({"lrs": []}, r"lrs: got \[\]; must be a non-empty list of finite numbers > 0"),
        ({"lrs": [0.1, -0.1]}, r"lrs: got \[0.1, -0.1\]; must be a non-empty list of finite numbers > 0"),
        ({"lrs": [math.nan]}, r"lrs: got \[nan\]; must be a non-empty list"),
        ({"momentum": 1.0}, r"momentum: got 1.0; must be a finite number >= 0 and < 1"),
        ({"weight_decay": -1e-4}, r"weight_decay: got -0.0001; must be a finite number >= 0"),
        ({"grad_clamp": 0}, r"grad_clamp: got 0; must be a finite number > 0"),
    ],
)
def test_bad_inputs_are_rejected_before_any_training(digits, kwargs, match):
    args = {"problem": digits, "epochs": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        hand_tuned(**args)
