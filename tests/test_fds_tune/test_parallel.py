"""Parallel FDS without Ray: combining the runs of an outer step, the job protocol, its state, and its
jobs run in this process against FDSLearner (fds_tune/parallel.py)."""
import json
import math
import pickle

import pytest
import torch

from fds_tune import outer
from fds_tune.config import fds_config
from fds_tune.learner import FDSLearner
from fds_tune.parallel import (
    FINISHED, JOB_KEY, RUN_STRIDE, FDSJob, OuterStepFailed, ParallelFDS, combine, mean_of, nested, run_draw, sign_vote,
)
from fds_tune.problem import Problem

TINY = {"preset": "digits", "epochs": [1, 1], "retrain_epochs": 1}


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


# ---- combining ---------------------------------------------------------------------------------


def test_mean_is_the_componentwise_mean_of_the_runs():
    a = {"lr": t(1.0, -2.0, 0.5), "momentum": t(3.0)}
    b = {"lr": t(3.0, 1.0, -0.5), "momentum": t(-1.0)}
    got = mean_of([a, b])
    assert got["lr"].tolist() == [2.0, -0.5, 0.0] and got["momentum"].tolist() == [1.0]
    assert got["lr"].dtype == torch.float64


def test_sign_vote_is_the_majority_sign_and_zero_on_a_tie():
    runs = [{"lr": t(1.0, -2.0, 5.0, 0.0)}, {"lr": t(2.0, 3.0, -1.0, 0.0)}, {"lr": t(-9.0, -1.0, 1.0, 4.0)}]
    assert sign_vote(runs)["lr"].tolist() == [1.0, -1.0, 1.0, 1.0]  # a large value does not outvote two small ones
    assert sign_vote(runs[:2])["lr"].tolist() == [1.0, 0.0, 0.0, 0.0]  # two runs that disagree (or are 0): a tie


def test_one_run_combines_to_itself():
    g = {"lr": t(0.25, -1e-30), "weight_decay": t(7.0)}
    assert {k: v.tolist() for k, v in mean_of([g]).items()} == {k: v.tolist() for k, v in g.items()}
    assert sign_vote([g])["lr"].tolist() == [1.0, -1.0]


def test_kinds_given_per_group_combine_alike():
    a, b = {"lr": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}, {"lr": torch.tensor([[3.0, 2.0], [1.0, -8.0]])}
    assert mean_of([a, b])["lr"].tolist() == [[2.0, 2.0], [2.0, -2.0]]


@pytest.mark.parametrize(
    "runs, match",
    [
        ([], r"grads: got \[\]; must be a non-empty list"),
        ([{"lr": t(1.0)}, {"momentum": t(1.0)}], r"grads: .*; must be runs with the same kinds and shapes"),
        ([{"lr": t(1.0)}, {"lr": t(1.0, 2.0)}], r"grads: .*; must be runs with the same kinds and shapes"),
    ],
)
def test_bad_runs_are_refused(runs, match):
    with pytest.raises(ValueError, match=match):
        mean_of(runs)


def test_unknown_combination_is_refused():
    with pytest.raises(ValueError, match=r"combine: got 'median'; must be one of \['mean', 'sign_vote'\]"):
        combine("median", [{"lr": t(1.0)}])


def test_draws_are_distinct_and_run_zero_draws_as_fds_learner():
    assert [run_draw(k, 0) for k in range(4)] == [0, 1, 2, 3]
    draws = {run_draw(k, r) for k in range(RUN_STRIDE) for r in range(8)}
    assert len(draws) == RUN_STRIDE * 8


def test_nested_reads_nested_and_flattened_results():
    assert nested({"hypergrads": {"lr": [1.0]}}, "hypergrads") == {"lr": [1.0]}
    assert nested({"hypergrads/lr": [1.0], "hypergrads/momentum": [2.0], "hypergrad_val_loss": 3.0}, "hypergrads") == {
        "lr": [1.0], "momentum": [2.0]}


# ---- the job protocol, with made-up results ----------------------------------------------------------


def fake_result(job, lr, momentum=0.5, weight_decay=-0.5, diverged=False, val_acc=0.5, flat=False):
    grads = {"lr": list(lr), "momentum": [momentum], "weight_decay": [weight_decay]}
    result = {
        JOB_KEY: "inner", "draw": job["draw"], "horizon": 10, "diverged": diverged, "val_acc": val_acc, "val_loss": 1.0 - val_acc,
        "test_acc": val_acc, "epochs_total": 1.0, "compute_s": 0.5, "inner_steps": 10,
    }
    if flat:
        return {**result, **{f"hypergrads/{k}": v for k, v in grads.items()}}
    return {**result, "hypergrads": grads}


def reference_update(state, runs, cfg, how=mean_of):
    """The sign rule on the runs' combined normalised hypergradients, recomputed here (horizon 10, 5 lr values: 2 steps each)."""
    normalised = [{k: torch.tensor(v, dtype=torch.float64) / torch.tensor([10.0 / len(v)] * len(v), dtype=torch.float64)
                   for k, v in r.items()} for r in runs]
    return outer.sign_rule().update(state, how(normalised), cfg.bounds)


def test_an_outer_step_waits_for_its_runs_then_updates_with_their_mean():
    cfg = fds_config(TINY)
    fds = ParallelFDS(cfg, parallel=2)
    a, b = fds.next_job("a"), fds.next_job("b")
    assert (a["kind"], a["outer_step"], a["run"], a["draw"]) == ("inner", 0, 0, 0)
    assert (b["run"], b["draw"]) == (1, RUN_STRIDE) and a["schedule"] == b["schedule"] == fds.loop.schedule.as_lists()
    assert fds.next_job("c") is None  # both runs of the outer step are out
    ra = fake_result(a, [-1.0, -2.0, 4.0, 0.5, -0.1], momentum=1.0)
    rb = fake_result(b, [-3.0, 1.0, -2.0, 0.5, 0.3], momentum=-3.0, flat=True)  # Tune hands searchers flattened results
    fds.job_done("a", ra)
    assert fds.loop.outer_step == 0 and fds.next_job("c") is None  # still waiting for run 1
    fds.job_done("b", rb)
    expected = reference_update(outer.sign_rule().init({k: torch.zeros(n, dtype=torch.float64) for k, n in cfg.n_values.items()},
                                                       cfg.step_size), [ra["hypergrads"], nested(rb, "hypergrads")], cfg)
    assert fds.loop.outer_step == 1
    assert fds.loop.schedule.as_lists() == {k: v.tolist() for k, v in expected.values.items()}
    step = fds.loop.history[0]
    assert step["runs"] == [0, 1] and step["dropped"] == [] and step["draws"] == [0, RUN_STRIDE]
    assert step["combined"]["lr"] == pytest.approx([-1.0, -0.25, 0.5, 0.25, 0.05])  # the mean of the normalised: (a + b) / 2 / 2 steps
    assert fds.loop.compute_s == 1.0 and fds.loop.epochs_total == 2.0 and fds.inner_runs == 2
    c = fds.next_job("c")
    assert (c["outer_step"], c["run"], c["draw"]) == (1, 0, 1) and c["schedule"] == fds.loop.schedule.as_lists()


def test_sign_vote_combines_by_majority():
    cfg = fds_config(TINY)
    fds = ParallelFDS(cfg, parallel=3, combine="sign_vote")
    jobs = [fds.next_job(str(i)) for i in range(3)]
    lrs = [[-1.0, 2.0, 1.0, 1.0, 1.0], [-1.0, -1.0, 1.0, 1.0, 1.0], [5.0, -1.0, 1.0, 1.0, 1.0]]
    for i, (job, lr) in enumerate(zip(jobs, lrs)):
        fds.job_done(str(i), fake_result(job, lr))
    assert fds.loop.history[0]["combined"]["lr"] == [-1.0, -1.0, 1.0, 1.0, 1.0]
    assert fds.loop.schedule["lr"].tolist() == pytest.approx([0.1, 0.1, 0.0, 0.0, 0.0])  # from zero, clipped at the bound 0


def test_a_run_that_failed_for_good_is_dropped_and_the_step_goes_on():
    cfg = fds_config(TINY)
    fds = ParallelFDS(cfg, parallel=2)
    a, b = fds.next_job("a"), fds.next_job("b")
    fds.job_failed("b")
    assert fds.loop.outer_step == 0  # run 0 still out
    ra = fake_result(a, [-1.0, -2.0, 4.0, 0.5, -0.1])
    fds.job_done("a", ra)
    alone = reference_update(outer.sign_rule().init({k: torch.zeros(n, dtype=torch.float64) for k, n in cfg.n_values.items()},
                                                    cfg.step_size), [ra["hypergrads"]], cfg)
    assert fds.loop.schedule["lr"].tolist() == alone.values["lr"].tolist()
    assert fds.loop.history[0]["runs"] == [0] and fds.loop.history[0]["dropped"] == [1]
    assert fds.summary()["dropped"] == [{"outer_step": 1, "run": 1, "draw": b["draw"], "job_id": "b"}]
    fds.job_done("b", fake_result(b, [1.0] * 5))  # a late answer for the dropped run is ignored
    assert fds.loop.outer_step == 1 and fds.inner_runs == 1


def test_every_run_failing_is_a_clear_error():
    fds = ParallelFDS(fds_config(TINY), parallel=2)
    fds.next_job("a"), fds.next_job("b")
    fds.job_failed("a")
    with pytest.raises(OuterStepFailed, match=r"every inner run of outer step 1 failed for good \(runs \[0, 1\]\).*FDSInnerRun"):
        fds.job_failed("b")


def test_a_diverged_run_makes_the_step_a_step_back_and_never_the_incumbent():
    cfg = fds_config({**TINY, "init": {"lr": 0.4}})
    fds = ParallelFDS(cfg, parallel=2)
    a, b = fds.next_job("a"), fds.next_job("b")
    fds.job_done("a", fake_result(a, [-1.0] * 5, val_acc=0.9))
    fds.job_done("b", fake_result(b, [float("nan")] * 5, diverged=True, val_acc=0.1))
    assert fds.loop.schedule["lr"].tolist() == [0.2] * 5  # before any update, a step back shrinks the values
    assert fds.loop.history[0]["diverged_runs"] == [1] and fds.loop.history[0]["combined"] is None
    assert fds.loop.incumbent is None


def test_the_incumbent_is_the_step_whose_runs_validate_best_on_average():
    cfg = fds_config(TINY)
    fds = ParallelFDS(cfg, parallel=2)
    for step, accs in enumerate([(0.6, 0.8), (0.9, 0.4)]):  # means 0.7, then 0.65
        jobs = [fds.next_job(f"{step}{r}") for r in range(2)]
        for r, (job, acc) in enumerate(zip(jobs, accs)):
            fds.job_done(f"{step}{r}", fake_result(job, [-1.0] * 5, val_acc=acc))
    inc = fds.incumbent()
    assert inc["outer_step"] == 1 and inc["val_acc"] == pytest.approx(0.7) and inc["test_acc"] == pytest.approx(0.7)
    assert inc["schedule"] == fds.loop.history[0]["schedule_used"]


def run_to_end_with_fakes(fds, answer=None):
    """Drive ``fds`` with made-up results (and the retraining's) until FINISHED; the jobs given out."""
    jobs, n = [], 0
    while True:
        pending = []
        while (job := fds.next_job(str(n))) not in (None, FINISHED):
            jobs.append(job)
            pending.append((str(n), job))
            n += 1
        if job == FINISHED:
            return jobs
        for job_id, job in pending:
            if answer is not None and answer(job_id, job):
                continue
            fds.job_done(job_id, fake_result(job, [-1.0] * 5) if job["kind"] == "inner" else {JOB_KEY: "retrain", "retrain_test_acc": 0.9})


def test_after_the_last_outer_step_one_retraining_then_finished():
    fds = ParallelFDS(fds_config(TINY), parallel=2)
    jobs = run_to_end_with_fakes(fds)
    assert [j["kind"] for j in jobs] == ["inner"] * 4 + ["retrain"]
    assert fds.total_jobs == 5 and fds.finished and fds.next_job("x") == FINISHED
    retrain = jobs[-1]
    assert retrain["candidates"][0] == fds.loop.incumbent["schedule"]  # the incumbent first, then fallbacks
    assert retrain["last_schedule"] == fds.loop.schedule.as_lists()
    assert retrain["search"]["outer_steps"] == 2 and retrain["search"]["inner_runs"] == 4 and len(retrain["search"]["history"]) == 2


def test_without_retraining_the_search_ends_after_its_last_outer_step():
    fds = ParallelFDS(fds_config({**TINY, "retrain_epochs": 0}), parallel=1)
    assert [j["kind"] for j in run_to_end_with_fakes(fds)] == ["inner", "inner"] and fds.total_jobs == 2


def test_a_retraining_that_failed_for_good_ends_the_search():
    fds = ParallelFDS(fds_config(TINY), parallel=1)

    def fail_retraining(job_id, job):
        if job["kind"] == "retrain":
            fds.job_failed(job_id)
            return True
        return False

    run_to_end_with_fakes(fds, fail_retraining)
    assert fds.retrain == "failed" and fds.finished


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"parallel": 0}, r"parallel: got 0; must be an int >= 1"),
        ({"parallel": 2.0}, r"parallel: got 2.0; must be an int >= 1"),
        ({"combine": "median"}, r"combine: got 'median'; must be one of \['mean', 'sign_vote'\]"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ParallelFDS(fds_config(TINY), **kwargs)


def test_a_config_dict_is_refused():
    with pytest.raises(ValueError, match=r"config: got 'dict'; must be an FDSConfig"):
        ParallelFDS(TINY)


def test_state_round_trips_mid_step_through_json_and_pickle():
    cfg = fds_config(TINY)
    straight, paused = ParallelFDS(cfg, parallel=2), ParallelFDS(cfg, parallel=2)
    for fds in (straight, paused):
        a, _ = fds.next_job("a"), fds.next_job("b")
        fds.job_done("a", fake_result(a, [-1.0, -2.0, 4.0, 0.5, -0.1]))
    resumed = ParallelFDS(cfg, parallel=2)
    resumed.load_state_dict(json.loads(json.dumps(paused.state_dict())))  # exactly what a saved searcher holds
    unpickled = pickle.loads(pickle.dumps(paused))
    b = straight.jobs["b"]
    for fds in (straight, resumed, unpickled):
        fds.job_done("b", fake_result(b, [-3.0, 1.0, -2.0, 0.5, 0.3]))
    assert resumed.state_dict() == straight.state_dict() == unpickled.state_dict()
    assert resumed.next_job("c") == straight.next_job("c")


@pytest.mark.parametrize(
    "other, match",
    [
        ({"parallel": 3}, r"state parallel: got 2; must be 3, this searcher's"),
        ({"combine": "sign_vote"}, r"state combine: got 'mean'; must be 'sign_vote', this searcher's"),
        ({"config": fds_config({**TINY, "seed": 1})}, r"state config: got 'another FDS config'; must be this searcher's config"),
    ],
)
def test_a_state_is_refused_by_another_search(other, match):
    state = ParallelFDS(fds_config(TINY), parallel=2).state_dict()
    kwargs = {"config": fds_config(TINY), "parallel": 2, **other}
    with pytest.raises(ValueError, match=match):
        ParallelFDS(**kwargs).load_state_dict(state)


# ---- the jobs, run in this process ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def problem():
    return Problem(fds_config(TINY).problem)


def run_search(fds, problem):
    """Run every job of ``fds`` here, one outer step at a time; the jobs' results in order."""
    results, n = [], 0
    while True:
        pending = []
        while (job := fds.next_job(str(n))) not in (None, FINISHED):
            pending.append((str(n), job))
            n += 1
        if job == FINISHED:
            return results
        for job_id, job in pending:
            result = FDSJob({**fds.config.to_dict(), JOB_KEY: job}, problem).step()
            results.append(result)
            fds.job_done(job_id, json.loads(json.dumps(result)))  # as it travels


@pytest.mark.usefixtures("one_torch_thread")
def test_one_run_per_step_is_fds_learner_step_for_step(problem):
    cfg = fds_config({**TINY, "epochs": [1, 1, 1]})
    learner = FDSLearner(cfg, problem)
    expected = [learner.step() for _ in range(3)]
    expected_retrain = learner.retrain()
    results = run_search(ParallelFDS(cfg, parallel=1), problem)
    inner, retrain = results[:-1], results[-1]
    for r, e in zip(inner, expected):
        assert r["schedule_used"] == e["schedule_used"] and r["hypergrads"] == e["hypergrads"] and r["val_acc"] == e["val_acc"]
    assert retrain["schedule"] == expected[-1]["schedule"]  # the last update
    for key in ("retrain_test_acc", "retrain_schedule", "retrain_attempts", "retrain_is_last"):
        assert retrain[key] == expected_retrain[key], key
    assert retrain["incumbent_outer_step"] == expected[-1]["incumbent_outer_step"]
    assert retrain["search_epochs_total"] == pytest.approx(expected_retrain["epochs_total"])


@pytest.mark.usefixtures("one_torch_thread")
def test_two_runs_per_step_update_with_the_mean_of_their_normalised_hypergradients(problem):
    cfg = fds_config(TINY)
    results = run_search(ParallelFDS(cfg, parallel=2), problem)
    assert [(r.get("outer_step"), r.get("run"), r[JOB_KEY]) for r in results] == [(1, 0, "inner"), (1, 1, "inner"), (2, 0, "inner"),
                                                                                  (2, 1, "inner"), (2, None, "retrain")]
    rule = outer.get_rule(cfg.outer_rule)
    state = rule.init({k: torch.full((n,), float(cfg.init[k]), dtype=torch.float64) for k, n in cfg.n_values.items()}, cfg.step_size)
    for step in range(2):
        runs = [r for r in results if r[JOB_KEY] == "inner" and r["outer_step"] == step + 1]
        assert runs[0]["schedule_used"] == runs[1]["schedule_used"] == {k: v.tolist() for k, v in state.values.items()}
        assert runs[0]["draw"] != runs[1]["draw"] and runs[0]["hypergrads"] != runs[1]["hypergrads"]  # other draws, other numbers
        normalised = [outer.normalise({k: torch.tensor(v, dtype=torch.float64) for k, v in r["hypergrads"].items()}, r["horizon"])
                      for r in runs]
        state = rule.update(state, {k: (normalised[0][k] + normalised[1][k]) / 2 for k in normalised[0]}, cfg.bounds)
    retrain = results[-1]
    assert retrain["schedule"] == {k: v.tolist() for k, v in state.values.items()}
    assert retrain["inner_runs"] == 4 and retrain["inner_runs_dropped"] == 0
    assert retrain["search_compute_s"] == pytest.approx(math.fsum(r["compute_s"] for r in results))
    assert 0 <= retrain["retrain_test_acc"] <= 1 and retrain["retrained"]


@pytest.mark.usefixtures("one_torch_thread")
def test_a_restored_job_reports_its_result_again_without_training(problem):
    fds = ParallelFDS(fds_config(TINY), parallel=1)
    config = {**fds.config.to_dict(), JOB_KEY: fds.next_job("a")}
    job = FDSJob(config, problem)
    first = job.step()
    assert job.done and not first["replayed"]
    with pytest.raises(RuntimeError, match="the inner job is done"):
        job.step()
    restored = FDSJob(config, problem)
    restored.load_state_dict(json.loads(json.dumps(job.state_dict())))
    again = restored.step()
    assert again["replayed"] and {k: v for k, v in again.items() if k != "replayed"} == {k: v for k, v in first.items() if k != "replayed"}


@pytest.mark.parametrize(
    "job, match",
    [
        (None, r"fds_job: got None; must be the job an FDSSearcher suggests .*use FDSTrainable"),
        ({"kind": "grid"}, r"fds_job: got \{'kind': 'grid'\}; must be the job an FDSSearcher suggests"),
        ({"kind": "inner", "outer_step": 0, "run": 0, "draw": 0}, r"fds_job: .*; must be the job an FDSSearcher suggests"),
        ({"kind": "inner", "outer_step": 2, "run": 0, "draw": 0, "parallel": 1, "schedule": {"lr": [0.1]}},
         r"fds_job\['outer_step'\]: got 2; must be an int >= 0 and <= 1"),
        ({"kind": "retrain", "candidates": [], "last_schedule": {}, "search": {}}, r"fds_job: .*; must be the job an FDSSearcher"),
        ({"kind": "inner", "outer_step": 0, "run": 0, "draw": 0, "parallel": 1, "schedule": {"lr": [0.1]}, "threads": 0},
         r"fds_job\['threads'\]: got 0; must be an int >= 1 \(torch threads\) or None"),
    ],
)
def test_a_trial_config_without_a_proper_job_is_refused(job, match, problem):
    config = fds_config(TINY).to_dict() | ({} if job is None else {JOB_KEY: job})
    with pytest.raises(ValueError, match=match):
        FDSJob(config, problem)
