"""Outer update rules: exact expected values."""
import json
import math

import pytest
import torch

from fds_tune import outer


SIGN, ADAM, RPROP, NORM = outer.sign_rule(), outer.adam_rule(), outer.rprop_rule(), outer.normalised_rule()


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


@pytest.mark.parametrize("rule", [SIGN, ADAM, RPROP, NORM], ids=["sign", "adam", "rprop", "normalised"])
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
    assert [outer.get_rule(n).name for n in ("sign", "adam", "rprop", "normalised")] == ["sign", "adam", "rprop", "normalised"]
    with pytest.raises(ValueError, match=r"outer_rule: got 'newton'; must be one of \['sign', 'adam', 'rprop', 'normalised'\]"):
        outer.get_rule("newton")


# ---- iRprop- -------------------------------------------------------------------------------


def test_rprop_grows_while_the_sign_repeats_and_is_bounded_above():
    rule = outer.rprop_rule(eta_plus=2.0, max_factor=4.0)
    s = state({"lr": [0.0]}, {"lr": 0.1}, rule)
    values, steps = [], []
    for _ in range(4):
        s = rule.update(s, {"lr": t(-1.0)}, BOUNDS)
        values.append(round(float(s.values["lr"]), 12))
        steps.append(round(float(s.steps["lr"]), 12))
    # first update: no previous sign, the initial step; then x2 each time, capped at 4 x 0.1
    assert steps == [0.1, 0.2, 0.4, 0.4]
    assert values == [0.1, 0.3, 0.7, 1.1]


def test_rprop_shrinks_on_a_flip_skips_that_move_and_then_moves_again():
    s = state({"lr": [0.0, 0.0]}, {"lr": 0.1}, RPROP)
    s = RPROP.update(s, {"lr": t(-1.0, -1.0)}, BOUNDS)
    s = RPROP.update(s, {"lr": t(-1.0, -1.0)}, BOUNDS)  # steps 0.15, values 0.25
    s = RPROP.update(s, {"lr": t(-3.0, 2.0)}, BOUNDS)  # second value flips
    torch.testing.assert_close(s.steps["lr"], t(0.225, 0.075))
    torch.testing.assert_close(s.values["lr"], t(0.475, 0.25))  # the flipped value does not move
    torch.testing.assert_close(s.prev_sign["lr"], t(-1.0, 0.0))
    s = RPROP.update(s, {"lr": t(-1.0, 2.0)}, BOUNDS)  # after the reset: neither grows nor shrinks, moves
    torch.testing.assert_close(s.steps["lr"], t(0.3375, 0.075))
    torch.testing.assert_close(s.values["lr"], t(0.8125, 0.175))


def test_rprop_step_is_bounded_below_and_values_by_bounds():
    rule = outer.rprop_rule(eta_minus=0.1, min_factor=0.05)
    s = state({"momentum": [0.95]}, {"momentum": 0.1}, rule)
    s = rule.update(s, {"momentum": t(-1.0)}, BOUNDS)
    torch.testing.assert_close(s.values["momentum"], t(0.99))  # clipped at the bound
    for g in (1.0, -1.0, 1.0, -1.0):
        s = rule.update(s, {"momentum": t(g)}, BOUNDS)
    assert float(s.steps["momentum"]) == pytest.approx(0.005)  # 0.05 x 0.1, not 1e-4


def test_rprop_converges_when_steps_shrink_below_five_percent():
    s = state({"lr": [1.0]}, {"lr": 0.2}, RPROP)
    assert not RPROP.converged(s)
    signs = [-1.0, 1.0, 0.0, 1.0, -1.0, 0.0, -1.0, 1.0]  # flips shrink: 0.2 -> 0.1 -> 0.05 -> 0.025
    for g in signs:
        s = RPROP.update(s, {"lr": t(g)}, BOUNDS)
    torch.testing.assert_close(s.steps["lr"], t(0.025))
    assert RPROP.converged(s) and float(s.values["lr"]) > 0.5


def test_rprop_step_back_resets_the_sign_memory():
    s = state({"lr": [0.2]}, {"lr": 0.1}, RPROP)
    s1 = RPROP.update(RPROP.update(s, {"lr": t(-1.0)}, BOUNDS), {"lr": t(-1.0)}, BOUNDS)
    back = RPROP.step_back(s1)
    torch.testing.assert_close(back.values["lr"], s1.prev_values["lr"])
    torch.testing.assert_close(back.steps["lr"], t(0.075))
    torch.testing.assert_close(back.prev_sign["lr"], t(0.0))


# ---- normalised hypergradients ---------------------------------------------------------------


def test_normalised_moves_in_proportion_to_the_hypergradient_within_a_kind():
    s = state({"lr": [0.0, 0.0, 0.0], "momentum": [0.0]}, {"lr": 0.1, "momentum": 0.1}, NORM)
    s = NORM.update(s, {"lr": t(-4.0, -1.0, 2.0), "momentum": t(-1e-6)}, BOUNDS)
    torch.testing.assert_close(s.values["lr"], t(0.1, 0.025, 0.0))  # the third is clipped at 0
    torch.testing.assert_close(s.values["momentum"], t(0.1))  # a lone value moves by its whole step


def test_normalised_step_grows_on_agreement_shrinks_on_disagreement():
    s = state({"lr": [1.0, 1.0]}, {"lr": 0.1}, NORM)
    s = NORM.update(s, {"lr": t(-2.0, -1.0)}, BOUNDS)
    s = NORM.update(s, {"lr": t(-1.0, 1.0)}, BOUNDS)  # directions (-1, -0.5) then (-1, 1): inner product 0.5 > 0, grow
    torch.testing.assert_close(s.steps["lr"], t(0.15, 0.15))
    torch.testing.assert_close(s.values["lr"], t(1.25, 0.9))
    s = NORM.update(s, {"lr": t(1.0, -0.5)}, BOUNDS)  # opposite direction: shrink, and still move
    torch.testing.assert_close(s.steps["lr"], t(0.075, 0.075))
    torch.testing.assert_close(s.values["lr"], t(1.175, 0.9375))


def test_normalised_steps_bounded_and_convergence():
    rule = outer.normalised_rule(eta_plus=3.0, max_factor=5.0)
    s = state({"lr": [0.0]}, {"lr": 0.1}, rule)
    for _ in range(4):
        s = rule.update(s, {"lr": t(-1.0)}, BOUNDS)
    torch.testing.assert_close(s.steps["lr"], t(0.5))
    assert not rule.converged(s)
    for g in (1.0, -1.0, 1.0, -1.0, 1.0):  # 0.5 -> 0.015625 < 5% of the value
        s = rule.update(s, {"lr": t(g)}, BOUNDS)
    assert rule.converged(s)


def test_normalised_zero_hypergradient_does_not_move():
    s = state({"lr": [0.3, 0.2]}, {"lr": 0.1}, NORM)
    s = NORM.update(s, {"lr": t(0.0, 0.0)}, BOUNDS)
    torch.testing.assert_close(s.values["lr"], t(0.3, 0.2))
    torch.testing.assert_close(s.steps["lr"], t(0.1, 0.1))


def test_normalised_step_back_undoes_shrinks_and_forgets_the_direction():
    s = state({"lr": [0.2, 0.4]}, {"lr": 0.1}, NORM)
    s1 = NORM.update(s, {"lr": t(-1.0, -0.5)}, BOUNDS)
    back = NORM.step_back(s1)
    torch.testing.assert_close(back.values["lr"], t(0.2, 0.4))
    torch.testing.assert_close(back.steps["lr"], t(0.05, 0.05))
    torch.testing.assert_close(back.prev_dir["lr"], t(0.0, 0.0))
    s2 = NORM.update(back, {"lr": t(1.0, 1.0)}, BOUNDS)  # no direction to compare with: the step stays
    torch.testing.assert_close(s2.steps["lr"], t(0.05, 0.05))


@pytest.mark.parametrize("make", [outer.rprop_rule, outer.normalised_rule], ids=["rprop", "normalised"])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eta_plus": 0.9}, "eta_plus: got 0.9; must be a finite number >= 1"),
        ({"eta_minus": 1.0}, "eta_minus: got 1.0; must be a finite number > 0 and < 1"),
        ({"eta_minus": 0}, "eta_minus: got 0; must be a finite number > 0 and < 1"),
        ({"min_factor": 0.0}, "min_factor: got 0.0; must be a finite number > 0 and <= 1"),
        ({"max_factor": 0.5}, "max_factor: got 0.5; must be a finite number >= 1"),
    ],
)
def test_adaptation_parameters_are_validated(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)
