"""Searcher and scheduler specifics: reproducible suggestions, HyperBand rung milestones, resume refusals."""
import pytest

from baselines.hyperband import rung_milestones
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
