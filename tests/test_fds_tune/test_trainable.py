"""FDSTrainable through real Ray Tune: metrics, checkpoints, failures, schedulers."""
import pytest
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler

from fds_tune import FDSTrainable
from support.faults import FaultyFDS, fault

pytestmark = pytest.mark.e2e

TINY = {"preset": "digits", "epochs": [1, 2, 2], "retrain_epochs": 2}
EVERY_METRIC = (
    "method", "val_loss", "val_acc", "test_acc", "schedule", "hypergrads", "inner_steps_total", "epochs_total",
    "step_time_s", "compute_s", "outer_step", "diverged", "converged",
)


class Iterations(tune.Callback):
    """The ``training_iteration`` of every result the driver receives, in order."""

    def __init__(self):
        self.seen = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.seen.append(result["training_iteration"])


def run(tmp_path, trainable=FDSTrainable, config=TINY, callbacks=(), **kwargs):
    loggers = [JsonLoggerCallback(), CSVLoggerCallback()]  # conftest disables the automatic ones
    return tune.run(
        trainable, config=config, storage_path=str(tmp_path), verbose=0, reuse_actors=True, callbacks=[*loggers, *callbacks], **kwargs
    )


def test_tune_run_reports_every_metric(ray_session, tmp_path):
    analysis = run(tmp_path, stop={"training_iteration": 3})
    trial = analysis.trials[0]
    df = analysis.trial_dataframes[trial.trial_id]
    assert len(df) == 3 and trial.status == "TERMINATED"
    for key in EVERY_METRIC:
        assert any(c == key or c.startswith(key + "/") for c in df.columns), key
    last = trial.last_result
    assert last["done"] and last["retrained"] and 0 <= last["retrain_test_acc"] <= 1
    assert len(last["schedule"]["lr"]) == 5 and len(last["hypergrads"]["momentum"]) == 1
    assert last["epochs_total"] == 1 + 2 + 2 + 2  # three inner runs and the retraining


# The checkpoint round trip of every run kind, FDS's included: tests/test_runs.py.


def test_failed_trial_resumes_to_the_same_schedule(ray_session, tmp_path):
    marker = tmp_path / "marker"
    config = {**TINY, "fault": fault(marker, at=1, how="raise")}
    received = Iterations()
    failed = run(tmp_path / "a", FaultyFDS, config, callbacks=[received], max_failures=2, checkpoint_freq=1)
    clean = run(tmp_path / "b", FDSTrainable, TINY, checkpoint_freq=1)
    assert marker.exists()  # the failure did happen
    (t_failed,), (t_clean,) = failed.trials, clean.trials
    assert t_failed.status == "TERMINATED" and t_failed.num_failures == 1
    assert t_failed.last_result["schedule"] == t_clean.last_result["schedule"]
    assert t_failed.last_result["retrain_test_acc"] == t_clean.last_result["retrain_test_acc"]
    # Resumed from the checkpoint: no result repeated or lost.  (What the driver received: Ray's own
    # progress.csv, re-opened after the failure, once came back without its first row on a slow machine.)
    assert received.seen == [1, 2, 3]


def test_asha_over_fds_settings_runs_to_the_end(ray_session, tmp_path):
    scheduler = ASHAScheduler(metric="val_acc", mode="max", max_t=3, grace_period=1, reduction_factor=2)
    config = {**TINY, "step_size": {"lr": tune.grid_search([0.02, 0.1, 0.3])}}
    analysis = run(tmp_path, config=config, scheduler=scheduler, checkpoint_freq=1)
    assert len(analysis.trials) == 3
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    assert max(t.last_result["training_iteration"] for t in analysis.trials) == 3


def test_tuner_api_works(ray_session, tmp_path):
    tuner = tune.Tuner(
        FDSTrainable,
        param_space={**TINY, "epochs": [1, 1]},
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0, callbacks=[JsonLoggerCallback()]),
    )
    results = tuner.fit()
    assert not results.errors
    assert results[0].metrics["retrained"]


def test_bad_config_fails_before_training(ray_session):
    with pytest.raises(ValueError, match="config: got 'lr_steps'; must be one of the allowed keys"):
        FDSTrainable(config={"preset": "digits", "lr_steps": 3})
