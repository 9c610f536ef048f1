"""End to end through real Ray Tune on digits: one contract for every baseline, the model-based
searchers leaving their random phase (labelled ``model_based`` in every result), BOHB's model-based
suggestions reproduced, and the refusal to resume an interrupted BOHB experiment."""
import os
import signal

import pytest
from ray import tune

from baselines import ScheduleTrainable, SpaceConfig, get_baseline
from fds_tune.problem import ProblemConfig
from fds_tune.results import COMMON_COLUMNS, EPOCHS, SECONDS

pytestmark = pytest.mark.e2e

METHODS = ["random", "hyperband", "bohb", "tpe", "optuna", "asha"]
FULL_BUDGET = {"random", "tpe", "optuna"}  # FIFO: every trial trains max_epochs
BRACKETED = {"hyperband", "bohb"}  # their brackets always stop some trial at the first rung
MAX_EPOCHS, NUM_SAMPLES = 3, 4
BUDGET = 10  # total epochs, below NUM_SAMPLES * MAX_EPOCHS: the budget binds for the full-budget methods


def creation_order(result_grid):
    """Results in the order the trials were created (Tune's experiment_tag starts with the trial counter)."""
    results = [r for r in result_grid if r.metrics]
    return sorted(results, key=lambda r: int(r.metrics["experiment_tag"].split("_", 1)[0]))


def schedule_config(result):
    return {k: v for k, v in result.config.items() if k in ("lr_0", "lr_1", "momentum_0", "weight_decay_0")}


@pytest.fixture(scope="module", params=METHODS)
def contract_runs(request, ray_session, tmp_path_factory, build):
    """Each baseline run twice with the same seed on digits, with a tiny budget of BUDGET epochs."""
    method = request.param
    storage = tmp_path_factory.mktemp(f"tune_{method}")
    runs = []
    for name in ("first", "again"):
        setup = build(method, seed=0, max_epochs=MAX_EPOCHS, num_samples=NUM_SAMPLES)
        # 2 CPUs per trial: one trial at a time (so the budget stop is exact) on one actor, reused
        # by every trial (starting an actor costs most of the run).
        grid = setup.tuner(storage_path=storage, name=name, budget_epochs=BUDGET, resources_per_trial={"cpu": 2}).fit()
        runs.append(grid)
    return method, storage, runs


def test_contract_results_carry_the_common_columns(contract_runs):
    method, _, (grid, _) = contract_runs
    assert not grid.errors
    results = creation_order(grid)
    assert len(results) == NUM_SAMPLES
    for r in results:
        history = r.metrics_dataframe
        assert set(COMMON_COLUMNS) <= set(history.columns)
        assert (history["method"] == method).all() and not history["diverged"].any()
        assert not history["model_based"].any()  # 4 trials in 4 dims: every method is still drawing at random
        assert history[EPOCHS].tolist() == history["training_iteration"].astype(float).tolist()  # one epoch per step
        assert (history[SECONDS].diff().dropna() > 0).all() and (history[SECONDS] > 0).all()
        assert r.metrics["schedule"] == {
            "lr": [r.config["lr_0"], r.config["lr_1"]], "momentum": [r.config["momentum_0"]], "weight_decay": [r.config["weight_decay_0"]],
        }


def test_contract_stays_within_the_budget(contract_runs):
    method, _, (grid, _) = contract_runs
    epochs = [r.metrics[EPOCHS] for r in creation_order(grid)]
    assert all(1 <= e <= MAX_EPOCHS for e in epochs)
    assert sum(epochs) <= BUDGET
    if method in FULL_BUDGET:  # full budget per trial, until the experiment's budget ran out
        assert epochs == [MAX_EPOCHS, MAX_EPOCHS, MAX_EPOCHS, BUDGET - 3 * MAX_EPOCHS]
    if method in BRACKETED:
        assert min(epochs) < MAX_EPOCHS  # an early-stopped trial trained only the first part of its schedule


def test_contract_reproduces_with_the_same_seed(contract_runs):
    _, _, (grid, again) = contract_runs
    first, second = creation_order(grid), creation_order(again)
    assert [schedule_config(r) for r in first] == [schedule_config(r) for r in second]
    assert len({tuple(schedule_config(r).values()) for r in first}) == NUM_SAMPLES  # distinct suggestions


# ---------------------------------------------------------------------------------------
# BOHB: model-based suggestions, reproducible
# ---------------------------------------------------------------------------------------
TINY = SpaceConfig(sizes={"lr": 1, "momentum": 1, "weight_decay": 1})  # 3 dims: a KDE needs 2*(3+1) results per budget
BOHB_SAMPLES = 12


@pytest.fixture(scope="module")
def bohb_runs(ray_session, tmp_path_factory, problem):
    storage = tmp_path_factory.mktemp("tune_bohb_model")
    runs = []
    for name in ("first", "again"):
        setup = get_baseline("bohb").build(TINY, problem, max_epochs=3, num_samples=BOHB_SAMPLES, seed=7)
        # One trial at a time: results then reach the model in a fixed order (2 CPUs: one actor).
        grid = setup.tuner(storage_path=storage, name=name, max_concurrent_trials=1, resources_per_trial={"cpu": 2}).fit()
        runs.append((setup.search_alg, grid))
    return storage, runs


def test_bohb_makes_model_based_suggestions_reproducibly(bohb_runs):
    _, [(searcher, grid), (searcher_again, grid_again)] = bohb_runs
    assert not grid.errors and len(grid) == BOHB_SAMPLES
    picks = [searcher.model_based[r.metrics["trial_id"]] for r in creation_order(grid)]
    assert not any(picks[:4]) and any(picks)  # random until dims + 1 = 4 results at a budget, then model based
    assert [r.metrics["model_based"] for r in creation_order(grid)] == picks
    assert [searcher_again.model_based[r.metrics["trial_id"]] for r in creation_order(grid_again)] == picks
    assert [r.config for r in creation_order(grid)] == [r.config for r in creation_order(grid_again)]
    assert sum(r.metrics[EPOCHS] for r in grid) <= BOHB_SAMPLES * 3


# ---------------------------------------------------------------------------------------
# The model-based searchers leave their random phase on the 7-dim digits space
# ---------------------------------------------------------------------------------------
DIGITS_SPACE = SpaceConfig(sizes={"lr": 5, "momentum": 1, "weight_decay": 1})  # 7 dims, as the digits comparison
MODEL_BASED = {"tpe", "optuna", "bohb"}
PHASE_SAMPLES = {"tpe": 11, "optuna": 11, "bohb": 14, "random": 4, "hyperband": 5, "asha": 4}


@pytest.fixture(scope="module", params=METHODS)
def digits_run(request, ray_session, tmp_path_factory):
    """Each method once on the 7-dim space, MLP on digits, 3 epochs per trial at most."""
    method = request.param
    setup = get_baseline(method).build(
        DIGITS_SPACE, ProblemConfig(model="mlp", device="cpu"), max_epochs=3, num_samples=PHASE_SAMPLES[method], seed=0
    )
    # One trial at a time (2 CPUs each); a model-based searcher then sees every earlier result before it suggests.
    limit = {"max_concurrent_trials": 1} if method in MODEL_BASED else {}
    grid = setup.tuner(storage_path=tmp_path_factory.mktemp(f"phase_{method}"), name=method, resources_per_trial={"cpu": 2}, **limit).fit()
    return method, grid


def test_results_say_whether_a_model_proposed_the_trial(digits_run):
    method, grid = digits_run
    assert not grid.errors
    results = creation_order(grid)
    assert len(results) == PHASE_SAMPLES[method]
    labels = [r.metrics["model_based"] for r in results]
    for r, label in zip(results, labels):
        assert (r.metrics_dataframe["model_based"] == label).all()  # every result of the trial carries it
        assert r.config.get("model_based", False) == label
    print(f"\n{method}: model-based trials {''.join('M' if x else '.' for x in labels)} ({sum(labels)} of {len(labels)})")
    if method in MODEL_BASED:  # dims + 1 = 8 random results first, then the model
        assert not any(labels[:8]) and any(labels[8:])
        if method != "bohb":  # BOHB keeps drawing a third at random
            assert all(labels[8:])
    else:
        assert not any(labels)


class InterruptOnce(tune.Callback):
    """Interrupt the Tune run (as Ctrl+C would, via Tune's SIGUSR1 handler) after ``n`` results, once per process."""

    done: set = set()  # a class attribute: a restored (unpickled) copy must not interrupt again

    def __init__(self, key, n):
        self.key, self.n, self.seen = key, n, 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.seen += 1
        if self.seen >= self.n and self.key not in InterruptOnce.done:
            assert callable(signal.getsignal(signal.SIGUSR1)), "Tune's SIGUSR1 handler is not installed"
            InterruptOnce.done.add(self.key)
            os.kill(os.getpid(), signal.SIGUSR1)


def test_resuming_an_interrupted_bohb_experiment_raises_a_clear_error(ray_session, tmp_path, problem):
    setup = get_baseline("bohb").build(TINY, problem, max_epochs=3, num_samples=6, seed=0)
    grid = setup.tuner(storage_path=tmp_path, name="cut", callbacks=[InterruptOnce("bohb", 2)], resources_per_trial={"cpu": 2}).fit()
    assert sum(r.metrics.get(EPOCHS, 0) for r in grid) < 6  # interrupted early
    with pytest.raises(RuntimeError, match="cannot resume a BOHB experiment: Ray Tune does not checkpoint"):
        tune.Tuner.restore(str(tmp_path / "cut"), trainable=ScheduleTrainable).fit()
    assert len(tune.ExperimentAnalysis(str(tmp_path / "cut")).trials) >= 1  # its results stay readable
