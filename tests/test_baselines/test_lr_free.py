"""The learning-rate-free runs (schedule-free SGD, D-Adaptation, Prodigy): the package's own optimizer in a
plain loop on the shared problem, schedule-free SGD evaluated at its averaged weights, real compute, seeds,
divergence ending cleanly, and every validation branch."""
import dataclasses
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.lr_free import (
    WARMUP_FRACTION,
    LRFreeConfig,
    LRFreeRun,
    make_optimizer,
    recompute_batchnorm,
)
from fds_tune.problem import ProblemConfig, cached_problem
from fds_tune.results import EPOCHS, LR_FREE_METHODS, SECONDS, diverged_metrics
from fds_tune.run import run_to_end

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROBLEM = dataclasses.asdict(ProblemConfig(model="mlp", device="cpu"))


def config(method, **changes):
    return {**PROBLEM, "epochs": 2, "method": method} | changes


def test_schedule_free_evaluates_its_averaged_weights():
    """The reference: schedulefree's plain loop, by hand, on the run's problem, draw and batches.  The run
    reports the loss of the weights after ``optimizer.eval()`` (x), not of the train-mode weights (y)."""
    import schedulefree

    run = LRFreeRun(config("schedulefree"))
    result = run.step()
    problem = cached_problem(run.config.problem)
    model = problem.model(0)
    optimizer = schedulefree.SGDScheduleFree(model.parameters(), lr=1.0, warmup_steps=round(WARMUP_FRACTION * run.horizon))
    model.train()
    optimizer.train()
    for x, y in problem.steps(run.train_idx, 0, run.steps_per_epoch):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    x_val, y_val = problem.train_data.x[run.val_idx], problem.train_data.y[run.val_idx]
    model.eval()
    with torch.no_grad():
        loss_at_y = float(F.cross_entropy(model(x_val), y_val))
        optimizer.eval()
        loss_at_x = float(F.cross_entropy(model(x_val), y_val))
    for name, p in model.named_parameters():
        assert torch.equal(run.state.params[name], p)  # the evaluated (and checkpointed) weights are x
    assert result["val_loss"] == pytest.approx(loss_at_x, rel=1e-6)
    assert abs(loss_at_y - loss_at_x) > 1e-3  # y would report another loss: skipping eval() fails this test


def test_batchnorm_statistics_are_recomputed_at_the_current_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    model[1].running_mean.fill_(5.0)  # stale statistics (of other weights)
    batches = [(torch.randn(8, 4), None) for _ in range(3)]
    model.eval()
    recompute_batchnorm(model, batches)
    with torch.no_grad():
        outs = [model[0](x) for x, _ in batches]
    assert torch.allclose(model[1].running_mean, torch.stack([o.mean(0) for o in outs]).mean(0), atol=1e-6)
    assert torch.allclose(model[1].running_var, torch.stack([o.var(0) for o in outs]).mean(0), atol=1e-6)
    assert model[1].momentum == 0.1 and not model.training  # its momentum and mode are restored


@pytest.mark.parametrize("method", LR_FREE_METHODS)
def test_one_run_counts_its_epochs_and_seconds_and_reproduces(method):
    results = run_to_end(LRFreeRun(config(method, epochs=3)))
    assert [r[EPOCHS] for r in results] == [1.0, 2.0, 3.0] and results[-1]["done"] and not results[0]["done"]
    assert 0 < results[0][SECONDS] < results[1][SECONDS] < results[2][SECONDS]
    assert all(r["method"] == method and not r["diverged"] and r["effective_lr"] > 0 for r in results)
    assert results[-1]["val_acc"] > 0.5  # it learns with its defaults (D-Adaptation's step grows from d0 = 1e-6 first)
    again = run_to_end(LRFreeRun(config(method, epochs=3)))
    assert [r["val_loss"] for r in again] == [r["val_loss"] for r in results]
    other_seed = run_to_end(LRFreeRun(config(method, epochs=3, seed=1)))
    assert other_seed[-1]["val_loss"] != results[-1]["val_loss"]


@pytest.mark.parametrize("method", LR_FREE_METHODS)
def test_divergence_ends_the_run_cleanly(method):
    run = LRFreeRun(config(method, lr=1e30, epochs=3))
    results = run_to_end(run)
    assert len(results) == 1 and run.done and results[0]["done"]
    assert {k: results[0][k] for k in ("val_acc", "val_loss", "test_acc", "diverged")} == diverged_metrics(10)
    assert 0 < results[0][EPOCHS] <= 1.0  # the steps it took count
    with pytest.raises(RuntimeError, match="the run is finished"):
        run.step()


def test_documented_defaults():
    params = [nn.Parameter(torch.zeros(2))]
    sf, da, pr = (make_optimizer(m, params, 1.0, 200).param_groups[0] for m in ("schedulefree", "dadapt", "prodigy"))
    assert (sf["lr"], sf["momentum"], sf["weight_decay"], sf["warmup_steps"]) == (1.0, 0.9, 0, 10)
    assert (da["lr"], da["momentum"], da["weight_decay"], da["d"]) == (1.0, 0.0, 0, 1e-6)
    assert (pr["lr"], tuple(pr["betas"]), pr["weight_decay"], pr["d"]) == (1.0, (0.9, 0.999), 0, 1e-6)


def test_hand_over_trains_the_full_training_set_from_the_retraining_draw():
    run = LRFreeRun.for_handover(config("dadapt"), 1)
    assert run.handover and run.horizon == run.problem.steps_per_epoch(run.problem.n_train)
    result = run_to_end(run)[-1]
    assert result["handover_test_acc"] == result["test_acc"] and result["val_acc"] != result["val_acc"]


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"optimizer": "adam"}, "config: got 'optimizer'; must be one of the allowed keys"),
        ({"method": "adam"}, "method: got 'adam'; must be one of"),
        ({"epochs": 0}, "epochs: got 0; must be an int >= 1"),
        ({"lr": 0.0}, "lr: got 0.0; must be a finite number > 0"),
        ({"preset": 3}, "preset: got 3; must be a preset name"),
    ],
)
def test_config_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        LRFreeConfig.from_dict(config("prodigy") | changes)


def test_config_needs_epochs_and_method_and_a_problem():
    for key in ("epochs", "method"):
        with pytest.raises(ValueError, match=f"config: missing key '{key}'"):
            LRFreeConfig.from_dict({k: v for k, v in config("prodigy").items() if k != key})
    with pytest.raises(ValueError, match="problem: got 'digits'; must be a ProblemConfig"):
        LRFreeConfig("digits", 1, "prodigy")
    flat = config("prodigy", lr=0.5, preset="digits")
    assert LRFreeConfig.from_dict(flat).to_dict() == flat
    assert list(itertools.islice(LR_FREE_METHODS, 3)) == ["schedulefree", "dadapt", "prodigy"]
