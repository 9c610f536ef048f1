"""Searcher and scheduler specifics: reproducible suggestions, random phases and model_based labels,
BOHB's KDE, HyperBand rung milestones, resume refusals."""
from types import SimpleNamespace

import numpy as np
import pytest

from baselines import SpaceConfig, get_baseline, param_space
from baselines.bohb import ProductKDE, SeededTuneBOHB
from baselines.hyperband import rung_milestones
from baselines.space import random_phase
from fds_tune.problem import ProblemConfig
from fds_tune.results import METRIC, MODE


def suggestions(searcher, n, param_space):
    searcher.set_search_properties(METRIC, MODE, dict(param_space))
    return [searcher.suggest(f"t{i}") for i in range(n)]


@pytest.mark.parametrize("method", ["bohb", "tpe", "optuna"])
def test_searchers_reproduce_their_suggestions_from_the_seed(method, build):
    space = build("random").param_space
    same = [suggestions(build(method, seed=0).search_alg, 3, space) for _ in range(2)]
    other = suggestions(build(method, seed=1).search_alg, 3, space)
    assert same[0] == same[1]
    assert other != same[0]


def test_rung_milestones_follow_ray_tunes_brackets(build):
    assert rung_milestones(3, 3) == {1, 3}
    assert rung_milestones(81, 3) == {1, 3, 9, 27, 81}
    assert rung_milestones(10, 3) == {1, 3, 9, 10}  # r = int(min(r * eta, max_t)) at each halving
    assert rung_milestones(2, 3) == {2}  # int(2 / 3) == 0: that bracket is skipped, as Ray does
    assert build("bohb").search_alg.milestones == {1, 3}


class FakeTrial:
    def __init__(self, trial_id, reported):
        self.trial_id, self.has_reported_at_least_once = trial_id, reported


@pytest.mark.parametrize("method, name", [("hyperband", "HyperBand"), ("bohb", "BOHB")])
def test_hyperband_schedulers_refuse_restored_trials_instead_of_hanging(method, name, build):
    scheduler = build(method).scheduler
    scheduler.set_search_properties(METRIC, MODE)
    scheduler.on_trial_add(None, FakeTrial("new", reported=False))  # a fresh trial joins a bracket
    scheduler.on_trial_add(None, FakeTrial("old", reported=True))  # Tune would swallow an error raised here
    with pytest.raises(RuntimeError, match=rf"cannot resume a {name} experiment: .*brackets.*\(restored trial old has results"):
        scheduler.choose_trial_to_run(None)


def test_bohb_searcher_refuses_restored_state(build):
    searcher = build("bohb").search_alg
    searcher.restore("searcher-state.pkl")
    with pytest.raises(RuntimeError, match="cannot resume a BOHB experiment: .*KeyError in trial_to_params"):
        searcher.suggest("t0")


# ---------------------------------------------------------------------------------------
# Random phase and model_based labels, driven by hand (no Ray)
# ---------------------------------------------------------------------------------------
DIGITS_SPACE = SpaceConfig(sizes={"lr": 5, "momentum": 1, "weight_decay": 1})  # 7 dims, as the digits comparison
MODEL_BASED_METHODS = ["tpe", "optuna", "bohb"]


def build7(method, seed=0, **options):
    return get_baseline(method).build(DIGITS_SPACE, ProblemConfig(device="cpu"), max_epochs=3, num_samples=16, seed=seed, options=options)


def drive(setup, n):
    """Suggest ``n`` trials one at a time, each finished (at every rung: budget 1 and 3) before the next."""
    searcher = setup.search_alg
    searcher.set_search_properties(METRIC, MODE, dict(setup.param_space))
    configs = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        acc = 1 - sum((config[f"lr_{j}"] - 0.2) ** 2 for j in range(5))  # a smooth objective with its optimum inside
        for epoch in (1, 3):
            searcher.on_trial_result(f"t{i}", {METRIC: acc, "training_iteration": epoch})
        searcher.on_trial_complete(f"t{i}", {METRIC: acc, "training_iteration": 3})
        configs.append(config)
    return configs


def values(config):
    return {k: v for k, v in config.items() if k != "model_based"}


@pytest.mark.parametrize(
    "method, default, option",
    [("tpe", 8, "n_initial_points"), ("optuna", 8, "n_startup_trials"), ("bohb", 4, "min_points_in_model")],
)
def test_random_phase_defaults_scale_with_the_dimension_and_options_override(method, default, option, build):
    # dims + 1 random results before a model: TPE's startup trials; BOHB's good and bad sets at a budget hold half each
    assert getattr(build7(method).search_alg, option) == default
    assert getattr(build(method).search_alg, option) == {"bohb": 3}.get(method, 5)  # 4 dims
    assert getattr(build7(method, **{option: 11}).search_alg, option) == 11
    assert random_phase(7) == 8 and random_phase(4) == 5
    with pytest.raises(ValueError, match="dims: got 0; must be an int >= 1"):
        random_phase(0)


def test_library_settings_are_the_chosen_ones():
    tpe = build7("tpe").search_alg
    assert tpe.algo.algo.keywords["n_startup_jobs"] == 8  # what hyperopt's tpe.suggest receives
    bohb = build7("bohb").search_alg
    bohb.set_search_properties(METRIC, MODE, dict(build7("bohb").param_space))
    assert bohb.bohber.inner.min_points_in_model == 4  # hpbandster would have raised it to 8
    assert bohb.bohber.inner.random_fraction == pytest.approx(1 / 3)


@pytest.mark.parametrize("method", MODEL_BASED_METHODS)
def test_model_based_searchers_leave_their_random_phase_after_dims_plus_one_results(method):
    setup = build7(method)
    configs = drive(setup, 14)
    labels = [c["model_based"] for c in configs]
    assert labels == [setup.search_alg.model_based[f"t{i}"] for i in range(14)]
    assert not any(labels[:8])
    if method == "bohb":  # after the model, a third of the picks stay random (random_fraction)
        assert 2 <= sum(labels[8:]) < 6
    else:
        assert all(labels[8:])


@pytest.mark.parametrize(
    "method, never",
    [("tpe", {"n_initial_points": 1000}), ("optuna", {"n_startup_trials": 1000}), ("bohb", {"random_fraction": 1.0})],
)
def test_labels_follow_the_librarys_own_switch_from_random_to_model(method, never):
    """A suggestion labelled random is the draw the same searcher makes when it never uses its model
    (same seed, same results); the first one labelled model based is not."""
    labelled_run = drive(build7(method), 12)
    random_run = drive(build7(method, **never), 12)
    assert not any(c["model_based"] for c in random_run)
    first_model = next(i for i, c in enumerate(labelled_run) if c["model_based"])
    assert [values(c) for c in labelled_run[:first_model]] == [values(c) for c in random_run[:first_model]]
    assert values(labelled_run[first_model]) != values(random_run[first_model])


def test_hyperopt_counts_pending_trials_and_optuna_only_finished_ones():
    """hyperopt's startup count includes trials without results (its ``Trials`` holds them); Optuna's does not."""
    for method, expected in [("tpe", [False] * 8 + [True] * 2), ("optuna", [False] * 10)]:
        setup = build7(method)
        searcher = setup.search_alg
        searcher.set_search_properties(METRIC, MODE, dict(setup.param_space))
        assert [searcher.suggest(f"t{i}")["model_based"] for i in range(10)] == expected, method


def test_suggestions_keep_the_searchers_own_copy_free_of_the_label(build):
    for method in MODEL_BASED_METHODS:
        setup = build(method)
        searcher = setup.search_alg
        searcher.set_search_properties(METRIC, MODE, dict(setup.param_space))
        config = searcher.suggest("t0")
        assert config["model_based"] is False and {"lr_0", "lr_1", "momentum_0", "weight_decay_0"} <= set(config)
    assert "model_based" not in searcher.trial_to_params["t0"]  # BOHB feeds this config back to hpbandster


# ---------------------------------------------------------------------------------------
# BOHB's KDE: statsmodels' where statsmodels fits one, and hpbandster's fit at its own minimum
# ---------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:After 0.17:FutureWarning")  # statsmodels, about an RNG its KDE never uses
def test_product_kde_equals_statsmodels_kde_multivariate():
    from statsmodels.nonparametric.kernel_density import KDEMultivariate

    rng = np.random.default_rng(0)
    data, points = rng.uniform(size=(12, 7)), rng.uniform(size=(5, 7))
    reference = KDEMultivariate(data=data, var_type="c" * 7, bw="normal_reference")
    reference.bw = np.clip(reference.bw, 1e-3, None)
    kde = ProductKDE(data, min_bandwidth=1e-3)
    np.testing.assert_allclose(kde.bw, reference.bw, rtol=1e-12)
    np.testing.assert_allclose([kde.pdf(x) for x in points], [reference.pdf(x) for x in points], rtol=1e-10)
    assert ProductKDE(data[:3], min_bandwidth=1e-3).pdf(points[0]) > 0  # 3 points in 7 dims: statsmodels refuses


@pytest.mark.filterwarnings("ignore:After 0.17:FutureWarning")
def test_bohb_fit_equals_hpbandsters_at_its_minimum_and_honours_a_smaller_one():
    """With min_points_in_model = dims + 1, models appear at the same result as hpbandster's own and give
    the same densities; with a smaller value, hpbandster would silently raise it."""
    from hpbandster.optimizers.config_generators.bohb import BOHB as HpBandSterBOHB

    space = param_space(SpaceConfig(sizes={"lr": 1, "momentum": 1, "weight_decay": 1}))
    searcher = SeededTuneBOHB(0, {1}, min_points_in_model=4)
    searcher.set_search_properties(METRIC, MODE, dict(space))
    rng = np.random.default_rng(1)
    configs = [dict(searcher.bohber.inner.configspace.sample_configuration()) for _ in range(12)]
    jobs = [SimpleNamespace(result={"loss": float(rng.uniform())}, kwargs={"budget": 1, "config": c}, exception=None) for c in configs]
    ours, stock = searcher.bohber, HpBandSterBOHB(searcher.bohber.inner.configspace)
    assert stock.min_points_in_model == 4  # hpbandster's default for 3 dims
    for n, job in enumerate(jobs, 1):
        ours.new_result(job)
        stock.new_result(job)
        assert (1 in ours.inner.kde_models) == (1 in stock.kde_models) == (n >= 8), n
    x = rng.uniform(size=3)
    for name in ("good", "bad"):
        assert ours.inner.kde_models[1][name].pdf(x) == pytest.approx(float(stock.kde_models[1][name].pdf(x)), rel=1e-10)

    small = SeededTuneBOHB(0, {1}, min_points_in_model=2)
    small.set_search_properties(METRIC, MODE, dict(space))
    for n, job in enumerate(jobs[:4], 1):
        small.bohber.new_result(job)
        assert (1 in small.bohber.inner.kde_models) == (n >= 4), n
