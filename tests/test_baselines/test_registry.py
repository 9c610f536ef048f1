"""The registry: every method, what a TuneSetup bundles, the BOHB pairing, option and argument checks, EpochBudget."""
import pytest
from ray import tune

from baselines import BASELINES, EpochBudget, ScheduleTrainable, get_baseline
from baselines.bohb import SeededTuneBOHB
from baselines.registry import TuneSetup
from baselines.schedule_run import base_config
from fds_tune.results import EPOCHS, METRIC, MODE

METHODS = ["random", "hyperband", "bohb", "tpe", "optuna", "asha"]


def test_registry_holds_every_method():
    assert sorted(BASELINES) == sorted(METHODS + ["pbt", "pb2"])
    assert all(b.summary for b in BASELINES.values())
    with pytest.raises(ValueError, match=r"method: got 'grid'; must be one of \['random'"):
        get_baseline("grid")


@pytest.mark.parametrize("method", ["pbt", "pb2"])
def test_a_population_method_bundles_members_with_one_value_per_kind_in_the_search_ranges(method, build, problem):
    from baselines.pbt import PBTTrainable

    setup = build(method)
    assert setup.trainable is PBTTrainable and setup.num_samples == 4
    assert set(setup.param_space) == set(base_config(problem, max_epochs=3)) | {"lr_0", "momentum_0", "weight_decay_0"}
    bounds = {k: (d.lower, d.upper) for k, d in setup.param_space.items() if k.endswith("_0")}
    assert bounds == {"lr_0": (0.0, 1.0), "momentum_0": (0.0, 0.99), "weight_decay_0": (0.0, 3e-3)}  # the black-box ranges
    assert setup.scheduler._perturbation_interval == 1 and setup.scheduler._synch  # a fifth of 3 epochs: at least 1
    if method == "pbt":
        assert {k: (d.lower, d.upper) for k, d in setup.scheduler._hyperparam_mutations.items()} == bounds
        clipped = setup.scheduler._custom_explore_fn({"lr_0": 1.2, "momentum_0": -0.1, "weight_decay_0": 1e-3})
        assert clipped == {"lr_0": 1.0, "momentum_0": 0.0, "weight_decay_0": 1e-3}  # explored values stay in range
    else:
        assert {k: tuple(v) for k, v in setup.scheduler._hyperparam_bounds.items()} == bounds


@pytest.mark.parametrize("method", METHODS)
def test_setup_bundles_what_tune_needs_with_metric_and_mode_in_one_place(method, build, problem):
    setup = build(method)
    assert setup.trainable is ScheduleTrainable and setup.num_samples == 4
    assert (setup.metric, setup.mode) == (METRIC, MODE)
    assert set(setup.param_space) == set(base_config(problem, max_epochs=3)) | {"lr_0", "lr_1", "momentum_0", "weight_decay_0"}
    assert setup.param_space["method"] == method and setup.param_space["max_epochs"] == 3
    # metric/mode go to tune.TuneConfig only: the searcher and scheduler have none of their own
    assert getattr(setup.search_alg, "metric", None) is None
    assert setup.scheduler.metric is None
    max_t = getattr(setup.scheduler, "_max_t_attr", getattr(setup.scheduler, "_max_t", None))
    assert max_t in (None, 3)  # every early-stopping scheduler spans exactly max_epochs


def test_bohb_pairing_is_enforced(build):
    from ray.tune.schedulers import HyperBandForBOHB, HyperBandScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    bohb = build("bohb")
    assert isinstance(bohb.search_alg, SeededTuneBOHB) and isinstance(bohb.scheduler, HyperBandForBOHB)
    fields = {k: getattr(bohb, k) for k in ("method", "trainable", "param_space", "num_samples", "max_epochs")}
    with pytest.raises(ValueError, match="got SeededTuneBOHB with HyperBandScheduler; TuneBOHB must be paired with HyperBandForBOHB"):
        TuneSetup(**fields, search_alg=bohb.search_alg, scheduler=HyperBandScheduler(max_t=3))
    with pytest.raises(ValueError, match="got BasicVariantGenerator with BOHBHyperBand"):
        TuneSetup(**fields, search_alg=BasicVariantGenerator(), scheduler=bohb.scheduler)


@pytest.mark.parametrize(
    "method, options, match",
    [
        ("hyperband", {"eta": 2}, r"options: got 'eta'; must be an option of method 'hyperband', one of \['reduction_factor'\]"),
        ("random", {"reduction_factor": 2}, r"options: got 'reduction_factor'; must be an option of method 'random', one of \[\]"),
        ("hyperband", {"reduction_factor": 1}, "reduction_factor: got 1; must be a number > 1"),
        ("asha", {"grace_period": 4}, r"grace_period: got 4; must be an int in \[1, max_epochs=3\]"),
        ("bohb", {"random_fraction": 2}, r"random_fraction: got 2; must be a number in \[0, 1\]"),
        ("bohb", {"min_points_in_model": 1}, r"min_points_in_model: got 1; must be an int >= 2 or None"),
        ("bohb", {"min_points_in_model": 4.0}, r"min_points_in_model: got 4.0; must be an int >= 2 or None"),
        ("tpe", {"n_initial_points": 0}, r"n_initial_points: got 0; must be an int >= 1 or None"),
        ("optuna", {"n_startup_trials": 0}, r"n_startup_trials: got 0; must be an int >= 1 or None"),
        ("optuna", {"n_startup_trials": True}, r"n_startup_trials: got True; must be an int >= 1 or None"),
    ],
)
def test_build_rejects_bad_options(method, options, match, build):
    with pytest.raises(ValueError, match=match):
        build(method, options=options)


def test_build_and_tuner_reject_bad_arguments(tmp_path, build, problem):
    with pytest.raises(ValueError, match="seed: got -1; must be an int >= 0"):
        build("random", seed=-1)
    with pytest.raises(ValueError, match="num_samples: got 0; must be an int >= 1"):
        build("random", num_samples=0)
    with pytest.raises(ValueError, match="max_epochs: got 0; must be an int >= 1"):
        build("random", max_epochs=0)
    with pytest.raises(ValueError, match="space: got .*; must be a SpaceConfig"):
        get_baseline("random").build({"lr": 7}, problem, max_epochs=3, num_samples=1, seed=0)
    with pytest.raises(ValueError, match="storage_path: got 'results'; must be an absolute path"):
        build("random").tuner(storage_path="results")
    with pytest.raises(ValueError, match="max_concurrent_trials: got 1 for method 'asha'.*use resources_per_trial"):
        build("asha").tuner(storage_path=tmp_path, max_concurrent_trials=1)
    assert isinstance(build("tpe").tuner(storage_path=tmp_path, max_concurrent_trials=1), tune.Tuner)


def test_epoch_budget_counts_each_trials_latest_total():
    stop = EpochBudget(5)
    assert not stop("a", {EPOCHS: 1.0}) and not stop("a", {EPOCHS: 2.0})  # cumulative: a has used 2, not 3
    assert not stop("b", {EPOCHS: 2.5}) and not stop.stop_all()
    assert stop("b", {EPOCHS: 3.0}) and stop.stop_all() and stop.used == 5.0
    with pytest.raises(ValueError, match="budget_epochs: got 0; must be a positive number"):
        EpochBudget(0)
