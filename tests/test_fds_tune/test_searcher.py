"""FDSSearcher and FDSInnerRun: the searcher's protocol without Ray running, then real Ray Tune runs (marked e2e)
with parallel=2 on digits: each update is the outer rule on the mean of the two runs' normalised hypergradients,
parallel=1 is FDSTrainable's run, ConcurrencyLimiter, retried and dropped runs, and clear errors for bad settings.

The combination functions and the job protocol are tested without Ray in test_parallel.py."""
import json
import sys
from pathlib import Path

import pytest
import ray
import torch
from ray import tune
from ray.tune.logger import JsonLoggerCallback
from ray.tune.search import ConcurrencyLimiter, Searcher
from support.faults import FaultyInnerRun, inner_fault

from fds_tune import FDSInnerRun, FDSSearcher, FDSTrainable, outer
from fds_tune.checkpoint import CheckpointError
from fds_tune.config import fds_config
from fds_tune.parallel import JOB_KEY, RUN_STRIDE, OuterStepFailed

TINY = {"epochs": [1, 1], "retrain_epochs": 1}  # over the digits preset
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def searcher(parallel=2, **kwargs):
    return FDSSearcher("digits", parallel, config={**TINY, **kwargs.pop("config", {})}, **kwargs)


def inner_result(config, lr=(-1.0,) * 5, diverged=False):
    job = config[JOB_KEY]
    return {JOB_KEY: "inner", "draw": job["draw"], "horizon": 10, "diverged": diverged, "val_acc": 0.5, "val_loss": 0.5, "test_acc": 0.5,
            "epochs_total": 1.0, "compute_s": 0.1, "inner_steps": 10,
            "hypergrads/lr": list(lr), "hypergrads/momentum": [1.0], "hypergrads/weight_decay": [1.0]}  # flattened, as Tune gives it


# ---- without Ray running ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("digits", 0), {}, r"parallel: got 0; must be an int >= 1"),
        (("digits", -2), {}, r"parallel: got -2; must be an int >= 1"),
        (("fashion",), {}, r"preset: got 'fashion'; must be one of \['digits', 'fashion_mnist'"),
        (("digits",), {"config": {"lr_steps": 3}}, r"config: got 'lr_steps'; must be one of the allowed keys"),
        (("digits",), {"config": {"preset": "fashion_mnist"}}, r"config\['preset'\]: got 'fashion_mnist'; must be absent or 'digits'"),
        (("digits",), {"combine": "median"}, r"combine: got 'median'; must be one of \['mean', 'sign_vote'\]"),
        (("digits",), {"threads": 0}, r"threads: got 0; must be an int >= 1 \(torch threads per trial\) or None"),
        (("digits",), {"config": [("seed", 1)]}, r"config: got 'list'; must be a dict of FDS config keys or None"),
    ],
)
def test_bad_settings_are_refused(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FDSSearcher(*args, **kwargs)


def test_each_suggestion_is_the_whole_fds_config_and_one_job():
    s = searcher(threads=1)
    assert s.total_trials == 2 * 2 + 1
    a = s.suggest("a")
    assert {k: v for k, v in a.items() if k != JOB_KEY} == fds_config({"preset": "digits", **TINY}).to_dict()
    assert a[JOB_KEY] == {"kind": "inner", "outer_step": 0, "run": 0, "draw": 0, "parallel": 2,
                          "schedule": {"lr": [0.0] * 5, "momentum": [0.0], "weight_decay": [0.0]}, "threads": 1}
    assert s.suggest("b")[JOB_KEY]["draw"] == RUN_STRIDE
    assert s.suggest("c") is None  # the outer step's runs are out


def test_the_search_ends_with_the_retraining_then_finished():
    s = searcher(parallel=1)
    for trial in ("a", "b"):
        s.on_trial_complete(trial, inner_result(s.suggest(trial)))
    retrain = s.suggest("r")
    assert retrain[JOB_KEY]["kind"] == "retrain" and s.suggest("x") is None
    s.on_trial_complete("r", {JOB_KEY: "retrain", "retrain_test_acc": 0.9})
    assert s.suggest("y") == Searcher.FINISHED


def test_a_param_space_is_refused():
    with pytest.raises(ValueError, match=r"param_space: got \['seed'\]; must be empty: FDSSearcher writes every trial's config"):
        searcher().set_search_properties("val_acc", "max", {"seed": 1})


def test_a_result_without_the_inner_run_marker_is_a_clear_error():
    s = searcher()
    s.suggest("a")
    keys = r"\(keys \['training_iteration', 'val_acc'\]\)"
    s.on_trial_result("a", {"val_acc": 0.5, "training_iteration": 1})  # Tune would wrap a raise here in a TuneError
    with pytest.raises(ValueError, match=rf"trainable: got a result without 'fds_job' from trial a {keys}; must be FDSInnerRun"):
        s.suggest("b")  # the next suggest raises it as it is
    t = searcher()
    t.suggest("a")
    t.on_trial_complete("a", {"val_acc": 0.5})  # Tune would turn a raise here into a trial failure: the next suggest raises
    with pytest.raises(ValueError, match=r"trainable: got a result without 'fds_job' from trial a \(keys \['val_acc'\]\); must be FDSInnerRun"):
        t.suggest("b")


def test_every_run_of_a_step_failing_for_good_ends_the_search_with_a_clear_error():
    s = searcher()
    s.suggest("a"), s.suggest("b")
    s.on_trial_complete("a", error=True)
    with pytest.raises(OuterStepFailed, match=r"every inner run of outer step 1 failed for good.*FDSInnerRun"):
        s.on_trial_complete("b", error=True)


def test_save_and_restore_continue_the_search(tmp_path):
    s = searcher()
    a, b = s.suggest("a"), s.suggest("b")
    s.on_trial_complete("a", inner_result(a, lr=(-1.0, 2.0, -3.0, 4.0, -5.0)))
    s.save(str(tmp_path / "state.pkl"))
    restored = searcher()
    restored.restore(str(tmp_path / "state.pkl"))
    for x in (s, restored):
        x.on_trial_complete("b", inner_result(b))
    assert restored.get_state() == s.get_state()
    assert restored.suggest("c") == s.suggest("c")


def test_a_state_of_another_search_or_no_state_is_refused(tmp_path):
    path = tmp_path / "state.pkl"
    searcher(config={"seed": 1}).save(str(path))
    with pytest.raises(CheckpointError, match=r"state config: got 'another FDS config'; must be this searcher's config"):
        searcher().restore(str(path))
    path.write_bytes(b"\x80\x04not json")
    with pytest.raises(CheckpointError, match=r"is not an FDSSearcher state \(JSON expected\)"):
        searcher().restore(str(path))
    path.write_text(json.dumps({"kind": "fds_searcher", "version": 99, "state": {}}))
    with pytest.raises(CheckpointError, match=r"is not an FDSSearcher state of version 1 \(found \('fds_searcher', 99\)\)"):
        searcher().restore(str(path))


def test_under_a_concurrency_limiter_the_runs_of_a_step_go_out_as_slots_free_up():
    s = ConcurrencyLimiter(searcher(), max_concurrent=1)
    a = s.suggest("a")
    assert s.suggest("b") is None  # the limiter holds it back
    s.on_trial_complete("a", inner_result(a))
    b = s.suggest("b")
    assert (b[JOB_KEY]["outer_step"], b[JOB_KEY]["run"]) == (0, 1)
    s.on_trial_complete("b", inner_result(b))
    assert s.suggest("c")[JOB_KEY]["outer_step"] == 1


# ---- through real Ray Tune -----------------------------------------------------------------------------------


def fit(path, search_alg, trainable=FDSInnerRun, callbacks=(), max_failures=0, param_space=None):
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=search_alg, num_samples=-1, reuse_actors=True),
        run_config=tune.RunConfig(name="fds", storage_path=str(path), verbose=0, callbacks=[JsonLoggerCallback(), *callbacks],
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    )
    return tuner.fit()


def rows(path) -> list[dict]:
    """Every result of the experiment under ``path``, as the trials wrote them (result.json)."""
    out = []
    for f in sorted(Path(path).glob("fds/*/result.json")):
        out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


def inner(results, step):
    return sorted((r for r in results if r[JOB_KEY] == "inner" and r["outer_step"] == step), key=lambda r: r["run"])


def retraining(results):
    (r,) = [r for r in results if r[JOB_KEY] == "retrain"]
    return r


def replay(results, combine_runs, steps=2):
    """The schedules FDS takes (after each of the first ``steps`` outer steps), recomputed from the runs' reported raw
    hypergradients: normalised (fds_tune.outer.normalise), combined by ``combine_runs`` and fed to the digits preset's rule."""
    cfg = fds_config({"preset": "digits", **TINY})
    rule = outer.get_rule(cfg.outer_rule)
    state = rule.init({k: torch.full((n,), float(cfg.init[k]), dtype=torch.float64) for k, n in cfg.n_values.items()}, cfg.step_size)
    schedules = []
    for step in range(1, steps + 1):
        runs = inner(results, step)
        assert all(r["schedule_used"] == {k: v.tolist() for k, v in state.values.items()} for r in runs), step
        normalised = [outer.normalise({k: torch.tensor(v, dtype=torch.float64) for k, v in r["hypergrads"].items()}, r["horizon"])
                      for r in runs]
        state = rule.update(state, combine_runs(normalised), cfg.bounds)
        schedules.append({k: v.tolist() for k, v in state.values.items()})
    return schedules


def mean_of_two(normalised):
    a, b = normalised
    return {k: (a[k] + b[k]) / 2 for k in a}


@pytest.fixture(scope="module")
def parallel_run(ray_session, tmp_path_factory):
    path = tmp_path_factory.mktemp("parallel")
    grid = fit(path, searcher())
    return grid, rows(path)


@pytest.mark.e2e
def test_each_update_is_the_rule_on_the_mean_of_the_two_runs_normalised_hypergradients(parallel_run):
    grid, results = parallel_run
    assert not grid.errors and len(results) == 2 * 2 + 1  # four inner runs and one retraining, each reported once
    for step in (1, 2):
        runs = inner(results, step)
        assert [r["run"] for r in runs] == [0, 1] and runs[0]["draw"] != runs[1]["draw"]
        assert runs[0]["hypergrads"] != runs[1]["hypergrads"]  # another draw, other hypergradients
    schedules = replay(results, mean_of_two)
    assert inner(results, 2)[0]["schedule_used"] == schedules[0]  # the second step's runs used the first update
    final = retraining(results)
    assert final["schedule"] == schedules[-1]  # the last update
    assert [h["schedule"] for h in final["outer_history"]] == schedules
    assert final["retrained"] and 0 <= final["retrain_test_acc"] <= 1 and final["inner_runs"] == 4 and final["inner_runs_dropped"] == 0
    assert final["search_compute_s"] == pytest.approx(sum(r["compute_s"] for r in results))  # compute over every worker


@pytest.mark.e2e
def test_one_run_per_step_is_fds_trainables_run(ray_session, tmp_path):
    config = {"preset": "digits", "epochs": [1, 1, 1], "retrain_epochs": 1}
    fit(tmp_path / "searched", FDSSearcher("digits", 1, config=config))
    searched = rows(tmp_path / "searched")
    tune.run(FDSTrainable, config=config, storage_path=str(tmp_path / "trainable"), name="fds", verbose=0, callbacks=[JsonLoggerCallback()])
    steps = sorted(rows(tmp_path / "trainable"), key=lambda r: r["training_iteration"])
    for step, expected in enumerate(steps, start=1):
        (run,) = inner(searched, step)
        assert (run["schedule_used"], run["hypergrads"], run["val_acc"]) == (expected["schedule_used"], expected["hypergrads"], expected["val_acc"])
    final = retraining(searched)
    assert final["schedule"] == steps[-1]["schedule"] and final["retrain_test_acc"] == steps[-1]["retrain_test_acc"]


class CountLive(tune.Callback):
    """The most trials running at once."""

    def __init__(self):
        self.now = self.most = 0

    def on_trial_start(self, iteration, trials, trial, **info):
        self.now += 1
        self.most = max(self.most, self.now)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.now -= 1

    def on_trial_error(self, iteration, trials, trial, **info):
        self.now -= 1


@pytest.mark.e2e
@pytest.mark.parametrize("batch", [False, True])
def test_under_a_concurrency_limiter_one_run_at_a_time_gives_the_same_search(parallel_run, tmp_path, batch):
    live = CountLive()
    grid = fit(tmp_path, ConcurrencyLimiter(searcher(), max_concurrent=1, batch=batch), callbacks=[live])
    results = rows(tmp_path)
    assert not grid.errors and len(results) == 5 and live.most == 1
    assert retraining(results)["schedule"] == retraining(parallel_run[1])["schedule"]  # the same draws, the same updates


@pytest.mark.e2e
def test_a_failed_run_is_retried_by_tune_and_the_search_is_unchanged(parallel_run, tmp_path):
    marker = tmp_path / "marker"
    trainable = tune.with_parameters(FaultyInnerRun, fault=inner_fault(outer_step=1, run=1, marker=marker))
    grid = fit(tmp_path, searcher(), trainable=trainable, max_failures=2)
    results = rows(tmp_path)
    assert marker.exists() and not grid.errors  # it failed once, and Tune ran it again
    assert retraining(results)["schedule"] == retraining(parallel_run[1])["schedule"]
    assert retraining(results)["outer_history"][0]["runs"] == [0, 1]


@pytest.mark.e2e
def test_a_run_that_fails_for_good_is_dropped_and_its_step_goes_on_with_the_other(ray_session, tmp_path):
    trainable = tune.with_parameters(FaultyInnerRun, fault=inner_fault(outer_step=1, run=1))  # no marker: fails every time
    grid = fit(tmp_path, searcher(), trainable=trainable, max_failures=1)
    results = rows(tmp_path)
    assert len(grid.errors) == 1
    assert [r["run"] for r in inner(results, 1)] == [0] and [r["run"] for r in inner(results, 2)] == [0, 1]
    final = retraining(results)
    first = final["outer_history"][0]
    assert (first["runs"], first["dropped"]) == ([0], [1])  # the result says so
    assert final["inner_runs"] == 3 and final["inner_runs_dropped"] == 1 and final["dropped_runs"][0]["run"] == 1
    alone = replay(results, lambda normalised: normalised[0], steps=1)
    assert first["schedule"] == alone[0] == inner(results, 2)[0]["schedule_used"]  # the rule on run 0's hypergradients alone


def not_an_inner_run(config):
    tune.report({"val_acc": 0.5})


@pytest.mark.e2e
def test_a_trainable_that_is_not_an_inner_run_is_a_clear_error(ray_session, tmp_path):
    with pytest.raises(ValueError, match=r"trainable: got .*without 'fds_job'.*; must be FDSInnerRun"):
        fit(tmp_path / "function", searcher(), trainable=not_an_inner_run)
    with pytest.raises(OuterStepFailed, match=r"every inner run of outer step 1 failed for good.*must be FDSInnerRun"):
        fit(tmp_path / "fds_trainable", searcher(), trainable=FDSTrainable)  # FDSTrainable refuses the job key


@pytest.mark.e2e
def test_a_param_space_given_to_tune_is_refused(ray_session, tmp_path):
    with pytest.raises(ValueError, match=r"param_space: got \['seed'\]; must be empty"):
        fit(tmp_path, searcher(), param_space={"seed": 1})
