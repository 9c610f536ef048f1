"""Shared fixtures of the analysis tests: results of real tiny Ray Tune runs, and a hand-made frame.

The module-scoped ``results`` fixture runs FDS (digits, two seeds in one
experiment), HyperBand and HD (one seed each) for real; tests recompute their
expected values from the raw ``result.json`` lines (``raw_lines``,
``raw_results``), independently of the loader.  ``hand_frame`` holds results
whose regret, speedup and aggregation are worked out by hand.
"""
import json
from pathlib import Path

import pandas as pd
import pytest
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from analysis import RUN_EPOCHS, RUN_SECONDS, load_results
from baselines import SpaceConfig, run_baseline
from baselines.greedy import HDTrainable
from fds_tune.problem import ProblemConfig
from support.faults import FaultyFDS, fault

FDS_CONFIG = {"preset": "digits", "epochs": [1, 1], "retrain_epochs": 1}
SIZES = {"lr": 5, "momentum": 1, "weight_decay": 1}  # the digits preset's shared values

def _tune_run(trainable, config, storage, name, **kwargs):
    return tune.run(
        trainable, config=config, storage_path=str(storage), name=name, verbose=0, reuse_actors=True,
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback()], **kwargs,
    )


@pytest.fixture(scope="module")
def results(ray_session, tmp_path_factory):
    """A results root with three real experiments: ``fds`` (seeds 0 and 1; the seed-1 trial failed after
    its first result and restarted from scratch, as a resumed experiment does), ``hyperband`` and ``hd`` (seed 0)."""
    root = tmp_path_factory.mktemp("results")
    # The seed-1 trial raises once at its second outer step; without checkpoints Ray restarts it from scratch.
    config = {**FDS_CONFIG, "seed": tune.grid_search([0, 1]), "fault": fault(root / "marker", at=1, seed=1)}
    _tune_run(FaultyFDS, config, root, "fds", max_failures=1)
    assert (root / "marker").exists()  # the failure did happen
    run_baseline(
        "hyperband", space=SpaceConfig(sizes=SIZES), problem=ProblemConfig(model="mlp"), max_epochs=2, num_samples=3,
        seed=0, storage_path=str(root), name="hyperband", resources_per_trial={"cpu": 2},  # one actor runs every trial
    )
    _tune_run(HDTrainable, {"preset": "digits", "epochs": 2}, root, "hd")  # no seed in the config: the default, 0
    return root


@pytest.fixture(scope="module")
def df(results):
    return load_results(results)


@pytest.fixture(scope="session")
def sizes():
    """The digits preset's shared values per kind."""
    return SIZES


def _raw_lines(experiment: Path) -> dict[str, list[dict]]:
    """trial_id -> the parsed lines of its result.json, as Ray wrote them."""
    out = {}
    for f in sorted(experiment.glob("*/result.json")):
        lines = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        out[lines[0]["trial_id"]] = lines
    return out


def _raw_results(experiment: Path) -> dict[str, list[dict]]:
    """trial_id -> its results, the last report of each iteration (an iteration re-reported after a restart counts once)."""
    return {
        trial: sorted({r["training_iteration"]: r for r in lines}.values(), key=lambda r: r["training_iteration"])
        for trial, lines in _raw_lines(experiment).items()
    }


@pytest.fixture(scope="session")
def raw_lines():
    """``raw_lines(experiment_dir)``: trial_id -> the parsed lines of its result.json, as Ray wrote them."""
    return _raw_lines


@pytest.fixture(scope="session")
def raw_results():
    """``raw_results(experiment_dir)``: trial_id -> its results, the last report of each iteration."""
    return _raw_results


# fds: two seeds; the last result retrains.  Incumbent test acc: seed 0 -> .80 then .90, seed 1 -> .84 then .94,
# so the mean curve is .82 at x=10 and .92 at x=20.
# bohb: trial a (val .80) leads until its second result drops to .65, below b's .70; b then reaches .93 (test .90).
HAND = [
    # method, run, trial, iteration, x, val_acc, val_loss, test_acc, retrain_test_acc
    ("fds", "fds/seed=0", "f0", 1, 10, 0.80, 1.0, 0.80, None),
    ("fds", "fds/seed=0", "f0", 2, 20, 0.88, 1.0, 0.85, 0.90),
    ("fds", "fds/seed=1", "f1", 1, 10, 0.82, 1.0, 0.84, None),
    ("fds", "fds/seed=1", "f1", 2, 20, 0.90, 1.0, 0.88, 0.94),
    ("bohb", "bohb/seed=0", "a", 1, 20, 0.80, 1.0, 0.79, None),
    ("bohb", "bohb/seed=0", "b", 1, 40, 0.70, 1.0, 0.71, None),
    ("bohb", "bohb/seed=0", "a", 2, 60, 0.65, 1.0, 0.66, None),
    ("bohb", "bohb/seed=0", "b", 2, 80, 0.93, 1.0, 0.90, None),
]


def _hand_frame():
    cols = ["method", "run", "trial", "iteration", RUN_SECONDS, "val_acc", "val_loss", "test_acc", "retrain_test_acc"]
    df = pd.DataFrame(HAND, columns=cols).astype({"retrain_test_acc": float})
    df["seed"] = df["run"].str[-1].astype(int)
    df[RUN_EPOCHS] = df[RUN_SECONDS] / 10
    df["outer_step"] = pd.array([1, 2, 1, 2, None, None, None, None], dtype="Int64")
    return df


@pytest.fixture(scope="session")
def hand_frame():
    """``hand_frame()``: a fresh copy of the hand-made results (see the comment above ``HAND``)."""
    return _hand_frame
