"""Shared fixtures of the analysis tests: results of real tiny Ray Tune runs, and a hand-made frame.

The session-scoped ``results`` fixture (run once for every analysis test module; tests that
change files copy them first) runs FDS (digits, two seeds in one
experiment), HyperBand and HD (one seed each) for real; tests recompute their
expected values from the raw ``result.json`` lines (``raw_lines``,
``raw_results``), independently of the loader.  ``hand_frame`` and ``seeds_frame``
hold results whose curves, regret, speedups and table cells are worked out by hand.
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


@pytest.fixture(scope="session")
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
# bohb: a's first result (val .80, test .79) stays the incumbent through b's .70 and a's own later .65 (every result
# counts, not only a trial's latest), until b reaches val .93 (test .90): the curve is .79, .79, .79, .90.
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


# Several seeds per method, compute in hours (x3600 in the frame).  Worked out by hand:
# fds: final (retrained) .962 and .944 -> mean .953, the best method: common levels .943 (best - 1 pt), .948 (- 0.5 pt).
#   curves: seed 0 .80 (1h), .962 (3h); seed 1 .83 (1h), .944 (4h).
# random: seed 0: a .95 (2h); b has a higher test (.99) but a lower val: no change; c (val .86) drops the curve to .90
#   (6h); a's second result (val .90) .947 (9h): touches .943 at 2h but stays above it only from 9h.
#   seed 1: .70 (1.5h), b .93 (3h); c ties b's val and val_loss: b stays (4.5h); a diverged result with val .99 never
#   becomes the incumbent (6h).  Finals .947, .93 (mean .9385).
# bohb: seed 0: .80 (2h), q .95 (6h); seed 1: .80 (2h), .85 (6h), r .95 (12h).  model_based: q in seed 0; q, r in seed 1.
SEEDS = [
    # method, seed, trial, hours, val_acc, val_loss, test_acc, retrain_test_acc, diverged, model_based
    ("fds", 0, "f0", 1.0, 0.80, 1.0, 0.80, None, False, None),
    ("fds", 0, "f0", 3.0, 0.85, 1.0, 0.86, 0.962, False, None),
    ("fds", 1, "f1", 1.0, 0.82, 1.0, 0.83, None, False, None),
    ("fds", 1, "f1", 4.0, 0.86, 1.0, 0.87, 0.944, False, None),
    ("random", 0, "a", 2.0, 0.84, 1.0, 0.95, None, False, None),
    ("random", 0, "b", 4.0, 0.83, 1.0, 0.99, None, False, None),
    ("random", 0, "c", 6.0, 0.86, 1.0, 0.90, None, False, None),
    ("random", 0, "a", 9.0, 0.90, 1.0, 0.947, None, False, None),
    ("random", 1, "a", 1.5, 0.70, 1.0, 0.70, None, False, None),
    ("random", 1, "b", 3.0, 0.88, 0.5, 0.93, None, False, None),
    ("random", 1, "c", 4.5, 0.88, 0.5, 0.97, None, False, None),
    ("random", 1, "c", 6.0, 0.99, 0.1, 0.99, None, True, None),
    ("bohb", 0, "p", 2.0, 0.80, 1.0, 0.80, None, False, False),
    ("bohb", 0, "q", 6.0, 0.90, 1.0, 0.95, None, False, True),
    ("bohb", 1, "p", 2.0, 0.80, 1.0, 0.80, None, False, False),
    ("bohb", 1, "q", 6.0, 0.85, 1.0, 0.85, None, False, True),
    ("bohb", 1, "r", 12.0, 0.90, 1.0, 0.95, None, False, True),
]


def _seeds_frame():
    cols = ["method", "seed", "trial", "hours", "val_acc", "val_loss", "test_acc", "retrain_test_acc", "diverged", "model_based"]
    df = pd.DataFrame(SEEDS, columns=cols).astype({"retrain_test_acc": float})
    df["run"] = df["method"] + "/seed=" + df["seed"].astype(str)
    df["iteration"] = df.groupby(["run", "trial"]).cumcount() + 1
    df[RUN_SECONDS] = df.pop("hours") * 3600.0
    df[RUN_EPOCHS] = df[RUN_SECONDS] / 1800.0
    df["outer_step"] = pd.array([1, 2, 1, 2] + [None] * (len(df) - 4), dtype="Int64")
    return df


@pytest.fixture(scope="session")
def seeds_frame():
    """``seeds_frame()``: a fresh copy of the hand-made several-seed results (see the comment above ``SEEDS``)."""
    return _seeds_frame
