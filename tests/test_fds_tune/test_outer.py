"""Outer update rules: exact expected values."""
import json
import math

import pytest
import torch

from fds_tune import outer


SIGN, ADAM = outer.sign_rule(), outer.adam_rule()


def state(values, steps, rule=SIGN):
    return rule.init({k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}, steps)


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


BOUNDS = {"lr": (0.0, math.inf), "momentum": (0.0, 0.99)}


def test_sign_rule_moves_against_sign_and_halves_on_flip():
    s = state({"lr": [0.0, 0.0], "momentum": [0.5]}, {"lr": 0.1, "momentum": 0.1})
    s = SIGN.update(s, {"lr": t(-2.0, -1.0), "momentum": t(3.0)}, BOUNDS)
    torch.testing.assert_close(s.values["lr"], t(0.1, 0.1))
    torch.testing.assert_close(s.values["momentum"], t(0.4))
    s = SIGN.update(s, {"lr": t(-1.0, 5.0), "momentum": t(1.0)}, BOUNDS)
    torch.testing.assert_close(s.steps["lr"], t(0.1, 0.05))  # second value flipped sign
    torch.testing.assert_close(s.values["lr"], t(0.2, 0.05))
    torch.testing.assert_close(s.values["momentum"], t(0.3))
    assert s.t == 2


def test_sign_rule_zero_gradient_does_not_move():
    s = state({"lr": [0.3]}, {"lr": 0.1})
    s = SIGN.update(s, {"lr": t(0.0)}, BOUNDS)
    torch.testing.assert_close(s.values["lr"], t(0.3))


def test_bounds_are_applied():
    s = state({"lr": [0.05], "momentum": [0.95]}, {"lr": 0.1, "momentum": 0.1})
    s = SIGN.update(s, {"lr": t(1.0), "momentum": t(-1.0)}, BOUNDS)
    torch.testing.assert_close(s.values["lr"], t(0.0))
    torch.testing.assert_close(s.values["momentum"], t(0.99))


def test_converged_when_every_step_below_five_percent():
    s = state({"lr": [1.0, 2.0]}, {"lr": 0.049})
    assert not SIGN.converged(s)  # no update yet
    s = s._replace(t=1)
    assert SIGN.converged(s)
    s = s._replace(steps={"lr": t(0.049, 0.11)})
    assert not SIGN.converged(s)


def test_adam_first_step_moves_by_its_step_size():
    s = state({"lr": [0.5, 0.5]}, {"lr": 0.01}, ADAM)
    s = ADAM.update(s, {"lr": t(3.0, -0.2)}, BOUNDS)
    torch.testing.assert_close(s.values["lr"], t(0.49, 0.51))
    assert not ADAM.converged(s)  # Adam never declares convergence


def test_normalise_divides_by_steps_covered():
    g = outer.normalise({"lr": t(10.0, 10.0, 10.0)}, horizon=10)  # chunks of 4, 3, 3 steps
    torch.testing.assert_close(g["lr"], t(10 / 4, 10 / 3, 10 / 3))


def test_step_back_undoes_last_update_and_shrinks():
    s = state({"lr": [0.2]}, {"lr": 0.1})
    s1 = SIGN.update(s, {"lr": t(-1.0)}, BOUNDS)
    back = SIGN.step_back(s1)
    torch.testing.assert_close(back.values["lr"], t(0.2))
    torch.testing.assert_close(back.steps["lr"], t(0.05))
    first = SIGN.step_back(s)  # nothing to undo: shrink the values
    torch.testing.assert_close(first.values["lr"], t(0.1))


@pytest.mark.parametrize("rule", [SIGN, ADAM], ids=["sign", "adam"])
def test_json_round_trip_is_exact(rule):
    s = rule.update(state({"lr": [0.1, 0.3]}, {"lr": 0.1}, rule), {"lr": t(-1e-3, 2.0)}, BOUNDS)
    back = outer.from_json(rule, json.loads(json.dumps(outer.to_json(s))))
    assert type(back) is type(s)
    for f in s._fields:
        if f != "t":
            for k in s.values:
                assert torch.equal(getattr(back, f)[k], getattr(s, f)[k])
    assert back.t == s.t


def test_adam_step_back_undoes_and_shrinks_its_learning_rate():
    s = state({"lr": [0.2]}, {"lr": 0.1}, ADAM)
    back = ADAM.step_back(ADAM.update(s, {"lr": t(-1.0)}, BOUNDS))
    torch.testing.assert_close(back.values["lr"], t(0.2))
    torch.testing.assert_close(back.steps["lr"], t(0.05))


def test_rules_by_name():
    assert outer.get_rule("sign").name == "sign" and outer.get_rule("adam").name == "adam"
    with pytest.raises(ValueError, match=r"outer_rule: got 'newton'; must be one of \['sign', 'adam'\]"):
        outer.get_rule("newton")
