"""Outer update rules: exact expected values."""
import math

import pytest
import torch

from fds_tune import outer


def state(values, steps):
    return outer.init_outer({k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}, steps)


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


BOUNDS = {"lr": (0.0, math.inf), "momentum": (0.0, 0.99)}


def test_sign_rule_moves_against_sign_and_halves_on_flip():
    s = state({"lr": [0.0, 0.0], "momentum": [0.5]}, {"lr": 0.1, "momentum": 0.1})
    s = outer.sign_update(s, {"lr": t(-2.0, -1.0), "momentum": t(3.0)}, BOUNDS)
    torch.testing.assert_close(s.values["lr"], t(0.1, 0.1))
    torch.testing.assert_close(s.values["momentum"], t(0.4))
    s = outer.sign_update(s, {"lr": t(-1.0, 5.0), "momentum": t(1.0)}, BOUNDS)
    torch.testing.assert_close(s.steps["lr"], t(0.1, 0.05))  # second value flipped sign
    torch.testing.assert_close(s.values["lr"], t(0.2, 0.05))
    torch.testing.assert_close(s.values["momentum"], t(0.3))
    assert s.t == 2


def test_sign_rule_zero_gradient_does_not_move():
    s = state({"lr": [0.3]}, {"lr": 0.1})
    s = outer.sign_update(s, {"lr": t(0.0)}, BOUNDS)
    torch.testing.assert_close(s.values["lr"], t(0.3))


def test_bounds_are_applied():
    s = state({"lr": [0.05], "momentum": [0.95]}, {"lr": 0.1, "momentum": 0.1})
    s = outer.sign_update(s, {"lr": t(1.0), "momentum": t(-1.0)}, BOUNDS)
    torch.testing.assert_close(s.values["lr"], t(0.0))
    torch.testing.assert_close(s.values["momentum"], t(0.99))


def test_converged_when_every_step_below_five_percent():
    s = state({"lr": [1.0, 2.0]}, {"lr": 0.049})
    assert not outer.converged(s)  # no update yet
    s = s._replace(t=1)
    assert outer.converged(s)
    s = s._replace(steps={"lr": t(0.049, 0.11)})
    assert not outer.converged(s)


def test_adam_first_step_moves_by_its_step_size():
    s = state({"lr": [0.5, 0.5]}, {"lr": 0.01})
    s = outer.adam_update(s, {"lr": t(3.0, -0.2)}, BOUNDS)
    torch.testing.assert_close(s.values["lr"], t(0.49, 0.51))


def test_normalise_divides_by_steps_covered():
    g = outer.normalise({"lr": t(10.0, 10.0, 10.0)}, horizon=10)  # chunks of 4, 3, 3 steps
    torch.testing.assert_close(g["lr"], t(10 / 4, 10 / 3, 10 / 3))


def test_step_back_undoes_last_update_and_shrinks():
    s = state({"lr": [0.2]}, {"lr": 0.1})
    s1 = outer.sign_update(s, {"lr": t(-1.0)}, BOUNDS)
    back = outer.step_back(s1)
    torch.testing.assert_close(back.values["lr"], t(0.2))
    torch.testing.assert_close(back.steps["lr"], t(0.05))
    first = outer.step_back(s)  # nothing to undo: shrink the values
    torch.testing.assert_close(first.values["lr"], t(0.1))


def test_json_round_trip_is_exact():
    s = outer.sign_update(state({"lr": [0.1, 0.3]}, {"lr": 0.1}), {"lr": t(-1e-3, 2.0)}, BOUNDS)
    back = outer.from_json(outer.to_json(s))
    for f in ("values", "steps", "prev_sign", "prev_values", "m", "v"):
        for k in s.values:
            assert torch.equal(getattr(back, f)[k], getattr(s, f)[k])
    assert back.t == s.t
