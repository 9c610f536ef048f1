"""TrainableConfig, ScheduleRun and ScheduleTrainable: against torch.optim.SGD and across pause/resume."""
import math

import pytest
import torch

from baselines import ScheduleRun, TrainableConfig
from baselines.schedule_run import base_config
from fds_tune.results import COMMON_COLUMNS, EPOCHS, SECONDS
from fds_tune.problem import ProblemConfig
from fds_tune.run import run_to_end

PROBLEM = ProblemConfig(device="cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # this process trains, as a Ray worker does


def config(max_epochs=2, **schedule):
    values = {"lr_0": 0.3, "momentum_0": 0.9, "weight_decay_0": 1e-4, **schedule}
    return base_config(PROBLEM, max_epochs=max_epochs) | values


# ---------------------------------------------------------------------------------------
# The trainable's config
# ---------------------------------------------------------------------------------------
def test_trainable_config_round_trips():
    cfg = TrainableConfig.from_dict(config(lr_1=0.1))
    assert cfg.problem == PROBLEM and cfg.max_epochs == 2 and cfg.grad_clamp is None and cfg.method == "schedule"
    assert cfg.schedule == {"lr": (0.3, 0.1), "momentum": (0.9,), "weight_decay": (1e-4,)}
    assert cfg.model_based is False  # a config no searcher labelled is a random draw
    assert TrainableConfig.from_dict(cfg.to_dict()) == cfg
    labelled = TrainableConfig.from_dict(config() | {"model_based": True})
    assert labelled.model_based is True and TrainableConfig.from_dict(labelled.to_dict()) == labelled


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"learning_rate": 0.1}, ValueError, r"config: got 'learning_rate'; must be one of the allowed keys \['dataset', .*'preset', 'model_based'\] or a schedule key"),
        ({"max_epochs": None}, ValueError, r"max_epochs: got None; must be an int >= 1"),
        ({"max_epochs": 0}, ValueError, r"max_epochs: got 0"),
        ({"grad_clamp": -1.0}, ValueError, r"grad_clamp: got -1.0; must be a finite number > 0 or None"),
        ({"method": ""}, ValueError, r"method: got ''"),
        ({"model_based": 1}, ValueError, r"model_based: got 1; must be a bool"),
        ({"model_based": None}, ValueError, r"model_based: got None; must be a bool"),
        ({"batch_size": 0}, ValueError, r"batch_size: got 0"),
        ({"momentum_0": "high"}, ValueError, r"momentum_0: got 'high'; must be a finite number"),
    ],
)
def test_trainable_config_rejects_bad_values(change, error, match):
    with pytest.raises(error, match=match):
        TrainableConfig.from_dict(config() | change)


def test_trainable_config_requires_max_epochs():
    flat = config()
    del flat["max_epochs"]
    with pytest.raises(ValueError, match="missing key 'max_epochs'"):
        TrainableConfig.from_dict(flat)


# ---------------------------------------------------------------------------------------
# ScheduleRun / ScheduleTrainable
# ---------------------------------------------------------------------------------------
def sgd_reference(cfg, epochs):
    """torch.optim.SGD on the module itself, lr/momentum/weight decay set per step from the schedule."""
    run = ScheduleRun(cfg)  # only for the problem, batches and horizon
    problem, horizon = run.problem, run.horizon
    model = problem.model()
    train_idx, val_idx = problem.split(0)
    sched = run.schedule
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.5, weight_decay=0.0)  # momentum > 0: keep a buffer
    t = 0
    model.train()
    for epoch in range(epochs):
        for x, y in problem.train_batches(train_idx, 1, draw=epoch):
            values = {k: float(v) for k, v in sched.at(t, horizon).items()}
            for group in opt.param_groups:
                group.update(lr=values["lr"], momentum=values["momentum"], weight_decay=values["weight_decay"])
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            t += 1
    model.eval()
    with torch.no_grad():
        xs, ys = zip(*problem.eval_batches(val_idx))
        val_loss = torch.nn.functional.cross_entropy(model(torch.cat(xs)), torch.cat(ys)).item()
    return dict(model.named_parameters()), val_loss


def test_schedule_run_equals_torch_sgd_with_the_schedule_spanning_max_epochs():
    cfg = config(max_epochs=3, lr_0=0.3, lr_1=0.05, lr_2=0.1, momentum_0=0.8, momentum_1=0.5)
    run = ScheduleRun(cfg)
    for _ in range(2):  # stopped early: 2 of 3 epochs, i.e. lr_0, lr_1 and momentum_0, part of momentum_1
        result = run.step()
    ref_params, ref_val_loss = sgd_reference(cfg, epochs=2)
    for name, p in run.state.params.items():
        torch.testing.assert_close(p, ref_params[name].detach(), rtol=1e-5, atol=1e-6)
    assert result["val_loss"] == pytest.approx(ref_val_loss, rel=1e-5)


def test_early_stopped_trial_trained_the_first_part_of_the_schedule():
    long = ScheduleRun(config(max_epochs=2, lr_0=0.3, lr_1=0.9))
    short = ScheduleRun(config(max_epochs=1, lr_0=0.3))
    assert long.step()["val_loss"] == short.step()["val_loss"]
    for name, p in long.state.params.items():
        assert torch.equal(p, short.state.params[name])


def test_result_carries_the_common_columns_and_stops_at_max_epochs():
    run = ScheduleRun(config(max_epochs=2) | {"method": "demo", "model_based": True})
    first, second = run.step(), run.step()
    for r in (first, second):
        assert set(COMMON_COLUMNS) | {"schedule", "done", "model_based"} <= set(r)
        assert r["method"] == "demo" and r["diverged"] is False and r["model_based"] is True
        assert r["schedule"] == {"lr": [0.3], "momentum": [0.9], "weight_decay": [1e-4]}
    assert (first[EPOCHS], second[EPOCHS]) == (1.0, 2.0)
    assert 0 < first[SECONDS] < second[SECONDS]
    assert (first["done"], second["done"]) == (False, True)
    with pytest.raises(RuntimeError, match="the run is finished"):
        run.step()


def test_divergence_reports_chance_metrics_and_stops():
    run = ScheduleRun(config(lr_0=1e4, momentum_0=0.99))
    result = run.step()
    assert result["diverged"] is True and result["done"] is True and result["model_based"] is False
    assert result["val_acc"] == result["test_acc"] == pytest.approx(0.1)
    assert math.isfinite(result["val_loss"]) and result["val_loss"] >= 1e9
    assert 0 < result[EPOCHS] < 1  # the engine stopped mid-epoch; only the steps taken count


# Pause/resume, checkpoints through the shell and their refusals: tests/test_runs.py (every run kind).


def test_a_plain_run_trains_a_loss_forward_mode_cannot_differentiate():
    """Only the methods that differentiate through training (FDS, HD, greedy) need forward mode: a
    black-box trial trains F.mse_loss, which torch.func.jvp of its gradient refuses."""
    from tests.test_fds_tune.test_problem_user import mse_spec

    spec = mse_spec()
    run = ScheduleRun(base_config(ProblemConfig(device="cpu", batch_size=4), max_epochs=2) | {"lr_0": 0.05, "momentum_0": 0.0, "weight_decay_0": 0.0}, problem=spec)
    first = run.step()
    last = run_to_end(run)[-1]
    assert not last["diverged"] and math.isfinite(last["val_loss"]) and last["val_loss"] < first["val_loss"] + 1e-12
    with pytest.raises(ValueError, match=r"loss: got 'mse_loss'; must be a loss forward mode can differentiate"):
        run.problem.check_forward_mode()
