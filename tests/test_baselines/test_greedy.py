"""The online baselines (baselines/greedy.py): greedy forward mode against one FDS outer step,
both runs against plain training on the same data, checkpoints, configs, and Ray Tune."""
import dataclasses
import math

import pytest
import torch

from baselines.greedy import GREEDY_METHODS, GreedyConfig, GreedyRun, GreedyTrainable, HDConfig, HDRun, HDTrainable
from fds_tune.config import fds_config
from fds_tune.engine import train
from fds_tune.learner import FDSLearner
from fds_tune.results import COMMON_COLUMNS, DIVERGED_LOSS

KINDS = ("lr", "momentum", "weight_decay")
INIT = {"lr": 0.1, "momentum": 0.5, "weight_decay": 1e-3}  # non-zero: every kind gets a hypergradient


def batches_of(run, epochs):
    """The batches of the first ``epochs`` epochs as a run draws them (epoch e: draw=e)."""
    return [b for e in range(epochs) for b in run.problem.train_batches(run.train_idx, 1, draw=e)]


@pytest.mark.parametrize("n_values, init", [({}, None), ({"lr": 3, "momentum": 2}, INIT)])
def test_one_window_over_the_whole_run_is_one_fds_outer_step(n_values, init):
    extra = {} if init is None else {"init": init}
    run = GreedyRun({"epochs": 1, "n_values": n_values, **extra})
    assert run.window == run.horizon  # one epoch: the window is the whole run
    fds = FDSLearner(fds_config({"epochs": [1], "n_values": {**dict.fromkeys(KINDS, 1), **n_values}, **extra}), run.problem)
    got, expected = run.step(), fds.step()
    assert got["done"] and got["method"] == "greedy"
    for k in KINDS:
        assert got["hypergrads"][k] == expected["hypergrads"][k]
        assert got["schedule"][k] == expected["schedule"][k]  # the values after the update
        assert got["schedule_used"][k] == expected["schedule_used"][k]
    assert got["window_val_loss"] == expected["hypergrad_val_loss"]
    assert (got["val_acc"], got["test_acc"]) == (expected["val_acc"], expected["test_acc"])
    if init is not None:
        assert all(got["schedule"][k] != got["schedule_used"][k] for k in KINDS)  # every kind moved


def test_greedy_windows_continue_one_run_on_the_shared_data():
    """Two one-epoch windows = plain training of the piecewise-constant schedule they used, on
    the batches the black-box baselines use (epoch e: draw=e) and FDS's split(0)."""
    run = GreedyRun({"epochs": 2, "init": INIT})
    results = [run.step(), run.step()]
    assert run.done and [r["epochs_total"] for r in results] == [1.0, 2.0]
    used = {k: [r["schedule_used"][k][0] for r in results] for k in KINDS}
    assert used["lr"][0] != used["lr"][1]
    assert results[-1]["trajectory"] == {k: pytest.approx(v, rel=1e-12) for k, v in used.items()}  # one value per epoch
    plain = train(run.problem.model(), used, batches_of(run, 2), grad_clamp=run.config.grad_clamp)
    for n, p in plain.params.items():
        torch.testing.assert_close(run.state.params[n], p, rtol=1e-6, atol=1e-7)


def test_hd_with_zero_hyper_learning_rates_is_plain_training():
    run = HDRun({"epochs": 2, "init": INIT, "hyper_lr": dict.fromkeys(KINDS, 0.0)})
    results = [run.step(), run.step()]
    assert results[-1]["done"] and results[-1]["trajectory"] == {k: pytest.approx([v, v], rel=1e-12) for k, v in INIT.items()}
    assert results[-1]["schedule"] == {k: [v] for k, v in INIT.items()}
    plain = train(run.problem.model(), {k: [v] for k, v in INIT.items()}, batches_of(run, 2), grad_clamp=run.config.grad_clamp)
    for n, p in plain.params.items():
        torch.testing.assert_close(run.state.params[n], p, rtol=1e-6, atol=1e-7)


def test_hd_from_zero_learns_and_reports_epoch_means():
    run = HDRun({"epochs": 2, "hyper_lr": {"lr": 1e-2, "momentum": 0.1}})
    first, second = run.step(), run.step()
    for r in (first, second):
        assert set(COMMON_COLUMNS) <= set(r) and r["method"] == "hd" and not r["diverged"]
    lr = second["trajectory"]["lr"]
    assert len(lr) == 2 and 0 < lr[0] < lr[1] <= second["schedule"]["lr"][0]
    assert second["test_acc"] > 0.5  # from lr = 0, HD alone found a learning rate that trains


# Pause/resume, checkpoints and their refusals: tests/test_runs.py (every run kind).


@pytest.mark.parametrize("cls", [HDRun, GreedyRun])
def test_divergence_ends_the_trial_cleanly(cls):
    run = cls({"epochs": 3, "init": {"lr": 1e30}})
    result = run.step()
    assert result["diverged"] and result["done"] and run.done
    assert result["val_loss"] == DIVERGED_LOSS and result["val_acc"] == pytest.approx(0.1)
    assert all(math.isfinite(v) for vs in result["trajectory"].values() for v in vs)
    with pytest.raises(RuntimeError, match="finished"):
        run.step()


def test_configs_take_fds_presets_and_round_trip():
    hd = HDConfig.from_dict({"preset": "fashion_mnist"})
    fds = fds_config({"preset": "fashion_mnist"})
    assert hd.problem == fds.problem and hd.epochs == fds.retrain_epochs
    assert hd.init == dict.fromkeys(KINDS, 0.0) and hd.grad_clamp == fds.grad_clamp and hd.bounds == fds.bounds
    greedy = GreedyConfig.from_dict({"preset": "fashion_mnist", "n_values": {"lr": 2}, "window": 100})
    assert greedy.n_values == {"lr": 2, "momentum": 1, "weight_decay": 1} and greedy.step_size == fds.step_size
    for cfg in (hd, greedy, HDConfig.from_dict({"hyper_lr": {"momentum": 0.0}, "seed": 3})):
        assert type(cfg).from_dict(cfg.to_dict()) == cfg
    assert dataclasses.replace(hd, epochs=7).epochs == 7


@pytest.mark.parametrize(
    "cls, config, match",
    [
        (HDConfig, {"window": 5}, r"config: got 'window'; must be one of the allowed keys \[.*'hyper_lr'"),
        (GreedyConfig, {"hyper_lr": {"lr": 1.0}}, r"config: got 'hyper_lr'; must be one of the allowed keys \[.*'window'"),
        (HDConfig, {"retrain_epochs": 3}, "config: got 'retrain_epochs'"),
        (HDConfig, {"epochs": 0}, r"epochs: got 0; must be an int >= 1"),
        (HDConfig, {"epochs": [1, 2]}, r"epochs: got \[1, 2\]"),
        (HDConfig, {"hyper_lr": {"lr": -1.0}}, r"hyper_lr\['lr'\]: got -1.0; must be a finite number >= 0"),
        (HDConfig, {"hyper_lr": {"lr": math.inf}}, r"hyper_lr\['lr'\]: got inf"),
        (HDConfig, {"hyper_lr": {"beta1": 1.0}}, r"hyper_lr\['beta1'\]: got 1.0; must be given for a known kind"),
        (HDConfig, {"hyper_lr": 0.1}, "hyper_lr: got 0.1; must be a dict"),
        (GreedyConfig, {"window": 0}, r"window: got 0; must be an int >= 1"),
        (GreedyConfig, {"window": 2.5}, r"window: got 2.5"),
        (GreedyConfig, {"n_values": {"lr": 0}}, r"n_values\['lr'\]: got 0"),
        (GreedyConfig, {"n_values": 3}, "n_values: got 3"),
        (GreedyConfig, {"outer_rule": "newton"}, "outer_rule: got 'newton'"),
        (GreedyConfig, {"step_size": {"lr": -0.1}}, r"step_size\['lr'\]: got -0.1"),
        (HDConfig, {"init": {"momentum": 1.5}}, r"init\['momentum'\]: got 1.5; must be a finite number within bounds"),
        (HDConfig, {"preset": "imagenet"}, "preset: got 'imagenet'"),
        (HDConfig, {"dataset": "mnist2"}, "dataset: got 'mnist2'"),
        (HDConfig, {"grad_clamp": -3.0}, "grad_clamp: got -3.0"),
    ],
)
def test_bad_configs_raise(cls, config, match):
    with pytest.raises(ValueError, match=match):
        cls.from_dict(config)


def test_window_longer_than_the_run_is_refused():
    with pytest.raises(ValueError, match=r"window: got 1000; must be at most the run's 10 inner steps \(1 epochs x 10 steps\)"):
        GreedyRun({"epochs": 1, "window": 1000})


def test_both_run_through_ray_tune_and_search_their_knobs(ray_session, tmp_path):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.schedulers import HyperBandScheduler

    assert GREEDY_METHODS == {"hd": HDTrainable, "greedy": GreedyTrainable}
    spaces = {
        "hd": {"epochs": 3, "hyper_lr": {"lr": tune.grid_search([1e-2, 3e-2]), "momentum": 0.1}},
        "greedy": {"epochs": 3, "step_size": {"lr": tune.grid_search([0.05, 0.2])}},
    }

    class Saves(tune.Callback):
        count = 0

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
            Saves.count += 1

    for method, space in spaces.items():
        # HyperBand pauses trials (one at a time here), so they go through save/load_checkpoint.
        scheduler = HyperBandScheduler(time_attr="training_iteration", max_t=3, reduction_factor=2)
        tuner = tune.Tuner(
            GREEDY_METHODS[method],
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="val_acc", mode="max", scheduler=scheduler, reuse_actors=True, max_concurrent_trials=1
            ),
            run_config=tune.RunConfig(
                storage_path=str(tmp_path), name=method, verbose=0, callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), Saves()]
            ),
        )
        grid = tuner.fit()
        assert not grid.errors
        for result in grid:
            m = result.metrics
            assert set(COMMON_COLUMNS) <= set(m) and m["method"] == method and not m["diverged"]
            assert m["epochs_total"] == m["training_iteration"] <= 3
            assert set(m["schedule"]) == set(m["trajectory"]) == set(KINDS)
            assert len(m["trajectory"]["lr"]) == m["training_iteration"]
        assert max(r.metrics["test_acc"] for r in grid) > 0.5
    assert Saves.count > 0  # some trials were paused and resumed from their checkpoints
