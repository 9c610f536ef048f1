"""The FDS learner without Ray: state round trips, divergence, learning from zero."""
import json

import pytest
import torch

from fds_tune.config import fds_config
from fds_tune.learner import FDSLearner
from fds_tune.problem import Problem

TINY = {"preset": "digits", "epochs": [1, 2, 2], "retrain_epochs": 2}


@pytest.fixture(scope="module")
def problem():
    return Problem(fds_config(TINY).problem)


@pytest.mark.parametrize("rule", ["sign", "adam", "rprop", "normalised"])
def test_state_dict_round_trip_continues_identically(problem, rule):
    cfg = fds_config({**TINY, "outer_rule": rule})
    a = FDSLearner(cfg, problem)
    a.step()
    saved = json.loads(json.dumps(a.state_dict()))  # exactly what a checkpoint holds
    r_a = a.step()
    b = FDSLearner(cfg, problem)
    b.load_state_dict(saved)
    r_b = b.step()
    for key in ("schedule", "hypergrads", "val_acc", "test_acc", "outer_step", "inner_steps_total", "incumbent_schedule",
                "incumbent_val_acc", "incumbent_outer_step"):
        assert r_a[key] == r_b[key], key
    timing = ("compute_s",)  # wall-clock, never equal
    assert {k: v for k, v in a.state_dict().items() if k not in timing} == {k: v for k, v in b.state_dict().items() if k not in timing}


def test_outer_step_reports_and_counts(problem):
    cfg = fds_config(TINY)
    learner = FDSLearner(cfg, problem)
    r = learner.step()
    steps = problem.steps_per_epoch(len(problem.split(0)[0]))
    assert r["inner_steps"] == steps and r["epochs_total"] == 1
    assert r["schedule_used"] == {"lr": [0.0] * 5, "momentum": [0.0], "weight_decay": [0.0]}
    # from zero, lr is the only kind with a first-order effect: the sign rule raises every lr value
    assert r["schedule"]["lr"] == [0.1] * 5
    assert all(g < 0 for g in r["hypergrads"]["lr"])
    assert r["hypergrads"]["momentum"] == [0.0]


def test_divergence_steps_back_and_run_goes_on(problem):
    cfg = fds_config({**TINY, "init": {"lr": 1e12}, "step_size": {"lr": 0.1}})
    learner = FDSLearner(cfg, problem)
    r = learner.step()
    assert r["diverged"] and r["val_acc"] == pytest.approx(0.1)
    assert r["schedule"]["lr"] == [5e11] * 5  # no update taken yet: the values shrink
    assert r["step_sizes"]["lr"] == [0.05] * 5
    r2 = learner.step()
    assert r2["outer_step"] == 2


def test_learning_from_zero_on_digits_hands_over_the_best_validated_schedule():
    """The digits preset, from lr = momentum = weight decay = 0, ends with a good retrained accuracy;
    every step reports the incumbent (the best validation accuracy so far, ties to the lower loss,
    then the earlier step), and the retraining trains it."""
    learner = FDSLearner(fds_config({"preset": "digits"}))
    results = []
    while not learner.done:
        results.append(learner.step())
    for i, r in enumerate(results):
        best = max((x for x in results[: i + 1] if not x["diverged"]), key=lambda x: (x["val_acc"], -x["val_loss"]))
        assert (r["incumbent_schedule"], r["incumbent_val_acc"], r["incumbent_outer_step"]) == (
            best["schedule_used"], best["val_acc"], best["outer_step"])
    out = learner.retrain()
    assert out["retrain_test_acc"] > 0.95 and not out["retrain_diverged"]
    assert out["retrain_attempts"] == 1 and out["retrain_schedule"] == results[-1]["incumbent_schedule"]
    assert out["retrain_final"] == "incumbent"
    assert out["retrain_is_last"] == (out["retrain_schedule"] == learner.schedule.as_lists())
    assert learner.schedule["lr"].min() > 0.05 and learner.schedule["momentum"][0] > 0.3


def test_final_last_retrains_the_last_update(problem):
    """``final="last"``: the paper's hand-over, the last update (which no inner run tried)."""
    learner = _finished(problem, final="last")
    assert learner.incumbent["schedule"] != learner.schedule.as_lists()  # from zero, the last update is untried
    out = learner.retrain()
    assert out["retrain_schedule"] == learner.schedule.as_lists() and out["retrain_is_last"]
    assert out["retrain_attempts"] == 1 and out["retrain_final"] == "last"


def test_the_incumbent_is_retrained_by_default_and_falls_back_like_the_last_update(problem):
    learner = _finished(problem)
    best = max(learner.history, key=lambda h: h["val_acc"])
    out = learner.retrain()
    assert out["retrain_schedule"] == learner.incumbent["schedule"] == best["schedule_used"] and not out["retrain_is_last"]
    assert learner.retrain_candidates()[0].as_lists() == best["schedule_used"]
    assert learner.retrain_candidates()[1].as_lists() not in ([best["schedule_used"]])  # a fallback is another schedule


def test_an_all_diverged_run_has_no_incumbent_and_retrains_the_last_update(problem):
    learner = FDSLearner(fds_config({**TINY, "epochs": [1], "init": {"lr": 1e12}}), problem)
    r = learner.step()
    assert r["diverged"] and r["incumbent_schedule"] is None and r["incumbent_val_acc"] is None
    assert [c.as_lists() for c in learner.retrain_candidates()] == [learner.schedule.as_lists()]


def _finished(problem, **overrides):
    learner = FDSLearner(fds_config({**TINY, **overrides}), problem)
    while not learner.done:
        learner.step()
    return learner


def test_retraining_a_stalled_schedule_falls_back_to_the_best_evaluated_one(problem):
    """The last update is untried: when its retraining does not learn (here lr = 0, as a
    collapsed network would), the schedule with the best validation accuracy is retrained."""
    learner = _finished(problem, final="last")
    best = max(learner.history, key=lambda h: h["val_acc"])
    learner.state = learner.state._replace(values={**learner.state.values, "lr": torch.zeros(5, dtype=torch.float64)})
    epochs_before = learner.epochs_total
    out = learner.retrain()
    assert out["retrain_attempts"] == 2 and not out["retrain_diverged"]
    assert out["retrain_schedule"] == best["schedule_used"] != learner.schedule.as_lists()
    assert out["retrain_test_acc"] > 0.8
    assert out["epochs_total"] == pytest.approx(epochs_before + 2 * TINY["retrain_epochs"])  # both attempts count


def test_retraining_without_fallbacks_reports_the_failure(problem):
    learner = _finished(problem, retrain_fallbacks=0, final="last")
    learner.state = learner.state._replace(values={**learner.state.values, "lr": torch.full((5,), 1e12, dtype=torch.float64)})
    out = learner.retrain()
    assert out["retrain_attempts"] == 1 and out["retrain_diverged"]
    assert out["retrain_test_acc"] == pytest.approx(0.1)


def test_no_retraining_when_switched_off(problem):
    learner = _finished(problem, retrain_epochs=0)
    epochs = learner.epochs_total
    assert learner.retrain() == {} and learner.epochs_total == epochs


def test_outer_steps_and_the_retraining_draw_fresh_initialisations(problem, monkeypatch):
    from fds_tune.problem import RETRAIN_DRAW

    draws, model = [], problem.model
    monkeypatch.setattr(problem, "model", lambda draw=0, **kw: draws.append(draw) or model(draw, **kw))
    learner = FDSLearner(fds_config({**TINY, "epochs": [1, 1]}), problem)
    learner.step()
    learner.step()
    learner.retrain()
    assert draws[:3] == [0, 1, RETRAIN_DRAW]  # (more only if the retraining fell back)


def test_reverse_engine_mode_gives_forward_modes_hypergradients(problem):
    """The learner's engine_mode changes how hypergradients are computed, not what they are
    (float32: equal to rounding), and reverse mode adds where in the run each kind mattered."""
    fwd = FDSLearner(fds_config({**TINY, "init": {"lr": 0.05, "momentum": 0.5}}), problem).step()
    rev = FDSLearner(fds_config({**TINY, "init": {"lr": 0.05, "momentum": 0.5}, "engine_mode": "reverse"}), problem).step()
    assert fwd["engine_mode"] == "forward" and rev["engine_mode"] == "reverse"
    for k, g in fwd["hypergrads"].items():
        torch.testing.assert_close(torch.tensor(rev["hypergrads"][k]), torch.tensor(g), rtol=1e-3, atol=1e-6)
    assert rev["schedule"] == fwd["schedule"] and "per_step_hypergrads" not in fwd
    per_step = rev["per_step_hypergrads"]
    assert rev["per_step_bin"] == 1 and len(per_step["lr"]) == rev["inner_steps"]
    # the five lr values' chunks partition the run: bin sums over each chunk give its hypergradient
    # (hypergrads are reported raw; normalisation happens in the outer rule)
    assert sum(per_step["lr"]) == pytest.approx(sum(rev["hypergrads"]["lr"]), rel=1e-6)


def test_lr_learned_per_layer(problem):
    """group_kinds=["lr"] with param_groups="layers": one row of lr values per layer of the MLP."""
    cfg = fds_config({**TINY, "param_groups": "layers", "group_kinds": ["lr"], "n_values": {"lr": 2}, "engine_mode": "auto"})
    learner = FDSLearner(cfg, problem)
    r = learner.step()
    assert len(r["schedule"]["lr"]) == 2 and all(len(row) == 2 for row in r["schedule"]["lr"])  # 2 layers x 2 values
    assert r["schedule"]["momentum"] == [0.0]  # from zero momentum has no first-order effect
    assert all(g < 0 for row in r["hypergrads"]["lr"] for g in row)  # from zero every layer's lr rises
    assert FDSLearner(cfg, problem).group_rows() == {"lr": (2,), "momentum": (), "weight_decay": ()}
    saved = json.loads(json.dumps(learner.state_dict()))
    again = FDSLearner(cfg, problem)
    again.load_state_dict(saved)
    assert again.schedule.as_lists() == learner.schedule.as_lists()


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"engine_mode": "backward"}, r"engine_mode: got 'backward'; must be one of"),
        ({"param_groups": "modules"}, r"param_groups: got 'modules'; must be None, 'layers'"),
        ({"param_groups": {"convs": []}}, r"param_groups: got .*must be None, 'layers'"),
        ({"group_kinds": ["lr"]}, r"group_kinds: got \('lr',\); must be empty unless param_groups is set"),
        ({"param_groups": "layers", "group_kinds": ["beta1"]}, r"group_kinds: got .*must be distinct kinds from"),
    ],
)
def test_engine_keys_are_validated(overrides, match):
    with pytest.raises(ValueError, match=match):
        fds_config({**TINY, **overrides})
