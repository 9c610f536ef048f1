"""Black-box baselines: the schedule space, the ScheduleTrainable (against torch.optim.SGD
and across pause/resume), the registry's guarantees, and one shared contract that every
baseline passes end to end through real Ray Tune on digits."""
import json
import math
import os
import signal

import pytest
import torch
from ray import tune

from baselines import BASELINES, EpochBudget, ScheduleRun, ScheduleTrainable, SpaceConfig, TrainableConfig, get_baseline
from baselines.bohb import SeededTuneBOHB
from baselines.hyperband import rung_milestones
from baselines.registry import TuneSetup
from baselines.space import check_no_quantized, param_space, schedule_from_config, schedule_keys, sizes_from_keys
from baselines.schedule_run import base_config
from fds_tune.checkpoint import CheckpointError
from fds_tune.results import COMMON_COLUMNS, EPOCHS, METRIC, MODE, SECONDS
from fds_tune.problem import ProblemConfig

PROBLEM = ProblemConfig(device="cpu")
SMALL = SpaceConfig(sizes={"lr": 2, "momentum": 1, "weight_decay": 1})
METHODS = ["random", "hyperband", "bohb", "tpe", "optuna", "asha"]
FULL_BUDGET = {"random", "tpe", "optuna"}  # FIFO: every trial trains max_epochs
BRACKETED = {"hyperband", "bohb"}  # their brackets always stop some trial at the first rung


@pytest.fixture(autouse=True)
def one_torch_thread():
    """This process trains too (the Ray-free tests): one thread, as the Ray workers use (see conftest)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(max_epochs=2, **schedule):
    values = {"lr_0": 0.3, "momentum_0": 0.9, "weight_decay_0": 1e-4, **schedule}
    return base_config(PROBLEM, max_epochs=max_epochs) | values


# ---------------------------------------------------------------------------------------
# The search space
# ---------------------------------------------------------------------------------------
def test_space_defaults_are_the_papers_wide_ranges():
    space = SpaceConfig()
    assert dict(space.sizes) == {"lr": 7, "momentum": 1, "weight_decay": 1}
    assert dict(space.ranges) == {"lr": (0.0, 1.0), "momentum": (0.0, 0.99), "weight_decay": (0.0, 3e-3)}
    assert space.dims == 9


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sizes": {"lr": 2, "momentum": 1}}, r"sizes: got kinds \['lr', 'momentum'\]; must give exactly"),
        ({"sizes": {"lr": 0, "momentum": 1, "weight_decay": 1}}, r"sizes\['lr'\]: got 0; must be an int >= 1"),
        ({"sizes": {"lr": True, "momentum": 1, "weight_decay": 1}}, r"sizes\['lr'\]: got True"),
        ({"sizes": [7, 1, 1]}, r"sizes: got \[7, 1, 1\]; must be a mapping"),
        ({"ranges": {"lr": (0, 1), "momentum": (0, 0.99), "weight_decay": (0, 1), "beta": (0, 1)}}, "ranges: got kinds"),
        ({"ranges": {"lr": (1, 1), "momentum": (0, 0.99), "weight_decay": (0, 1)}}, r"ranges\['lr'\]: got \(1.0, 1.0\); must satisfy 0 <= low < high"),
        ({"ranges": {"lr": (-1, 1), "momentum": (0, 0.99), "weight_decay": (0, 1)}}, r"ranges\['lr'\]: got \(-1.0, 1.0\)"),
        ({"ranges": {"lr": (0, math.inf), "momentum": (0, 0.99), "weight_decay": (0, 1)}}, r"both finite"),
        ({"ranges": {"lr": 1.0, "momentum": (0, 0.99), "weight_decay": (0, 1)}}, r"ranges\['lr'\]: got 1.0; must be a pair"),
    ],
)
def test_space_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpaceConfig(**kwargs)


def test_param_space_is_one_uniform_domain_per_shared_value():
    space = param_space(SpaceConfig())
    assert list(space) == [f"lr_{i}" for i in range(7)] + ["momentum_0", "weight_decay_0"]
    for key, domain in space.items():
        kind = key.rsplit("_", 1)[0]
        assert isinstance(domain, tune.search.sample.Float)
        assert isinstance(domain.get_sampler(), tune.search.sample.Uniform)
        assert (domain.lower, domain.upper) == SpaceConfig().ranges[kind]
    check_no_quantized(space)  # passes


def test_quantized_domains_are_refused():
    with pytest.raises(ValueError, match="lr_0: got a quantized domain.*ConfigSpace 1.x dropped quantization"):
        check_no_quantized({"lr_0": tune.quniform(0, 1, 0.1)})


def test_schedule_from_config_and_sizes_from_keys():
    flat = {"lr_0": 0.5, "lr_1": 0.25, "momentum_0": 0.9, "weight_decay_0": 0.0, "seed": 3}
    sizes = sizes_from_keys(flat)
    assert sizes == {"lr": 2, "momentum": 1, "weight_decay": 1}
    assert schedule_keys(sizes) == ["lr_0", "lr_1", "momentum_0", "weight_decay_0"]
    assert schedule_from_config(flat, sizes).as_lists() == {"lr": [0.5, 0.25], "momentum": [0.9], "weight_decay": [0.0]}
    with pytest.raises(ValueError, match=r"kind 'lr' has keys for indices \[0, 2\]; missing \['lr_1'\]"):
        sizes_from_keys({"lr_0": 1, "lr_2": 1, "momentum_0": 0, "weight_decay_0": 0})
    with pytest.raises(ValueError, match="no key for kind 'weight_decay'"):
        sizes_from_keys({"lr_0": 1, "momentum_0": 0})
    with pytest.raises(ValueError, match="config has no key 'lr_2'"):
        schedule_from_config(flat, {"lr": 3, "momentum": 1, "weight_decay": 1})
    with pytest.raises(ValueError, match="lr_0: got nan; must be a finite number"):
        schedule_from_config(flat | {"lr_0": float("nan")}, sizes)


# ---------------------------------------------------------------------------------------
# The trainable's config
# ---------------------------------------------------------------------------------------
def test_trainable_config_round_trips():
    cfg = TrainableConfig.from_dict(config(lr_1=0.1))
    assert cfg.problem == PROBLEM and cfg.max_epochs == 2 and cfg.grad_clamp is None and cfg.method == "schedule"
    assert cfg.schedule == {"lr": (0.3, 0.1), "momentum": (0.9,), "weight_decay": (1e-4,)}
    assert TrainableConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"learning_rate": 0.1}, ValueError, r"config: unknown key 'learning_rate'; allowed keys are \['dataset', .*'method'\] and schedule keys"),
        ({"max_epochs": None}, ValueError, r"max_epochs: got None; must be an int >= 1"),
        ({"max_epochs": 0}, ValueError, r"max_epochs: got 0"),
        ({"grad_clamp": -1.0}, ValueError, r"grad_clamp: got -1.0; must be a positive finite number or None"),
        ({"method": ""}, ValueError, r"method: got ''"),
        ({"batch_size": 0}, ValueError, r"batch_size: got 0"),
        ({"momentum_0": "high"}, ValueError, r"momentum_0: got 'high'; must be a finite number"),
    ],
)
def test_trainable_config_rejects_bad_values(change, error, match):
    with pytest.raises(error, match=match):
        TrainableConfig.from_dict(config() | change)


def test_trainable_config_requires_max_epochs():
    flat = config()
    del flat["max_epochs"]
    with pytest.raises(ValueError, match="missing key 'max_epochs'"):
        TrainableConfig.from_dict(flat)


# ---------------------------------------------------------------------------------------
# ScheduleRun / ScheduleTrainable
# ---------------------------------------------------------------------------------------
def sgd_reference(cfg, epochs):
    """torch.optim.SGD on the module itself, lr/momentum/weight decay set per step from the schedule."""
    run = ScheduleRun(cfg)  # only for the problem, batches and horizon
    problem, horizon = run.problem, run.horizon
    model = problem.model()
    train_idx, val_idx = problem.split(0)
    sched = run.schedule
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.5, weight_decay=0.0)  # momentum > 0: keep a buffer
    t = 0
    model.train()
    for epoch in range(epochs):
        for x, y in problem.train_batches(train_idx, 1, draw=epoch):
            values = {k: float(v) for k, v in sched.at(t, horizon).items()}
            for group in opt.param_groups:
                group.update(lr=values["lr"], momentum=values["momentum"], weight_decay=values["weight_decay"])
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            t += 1
    model.eval()
    with torch.no_grad():
        xs, ys = zip(*problem.eval_batches(val_idx))
        val_loss = torch.nn.functional.cross_entropy(model(torch.cat(xs)), torch.cat(ys)).item()
    return dict(model.named_parameters()), val_loss


def test_schedule_run_equals_torch_sgd_with_the_schedule_spanning_max_epochs():
    cfg = config(max_epochs=3, lr_0=0.3, lr_1=0.05, lr_2=0.1, momentum_0=0.8, momentum_1=0.5)
    run = ScheduleRun(cfg)
    for _ in range(2):  # stopped early: 2 of 3 epochs, i.e. lr_0, lr_1 and momentum_0, part of momentum_1
        result = run.step()
    ref_params, ref_val_loss = sgd_reference(cfg, epochs=2)
    for name, p in run.state.params.items():
        torch.testing.assert_close(p, ref_params[name].detach(), rtol=1e-5, atol=1e-6)
    assert result["val_loss"] == pytest.approx(ref_val_loss, rel=1e-5)


def test_early_stopped_trial_trained_the_first_part_of_the_schedule():
    long = ScheduleRun(config(max_epochs=2, lr_0=0.3, lr_1=0.9))
    short = ScheduleRun(config(max_epochs=1, lr_0=0.3))
    assert long.step()["val_loss"] == short.step()["val_loss"]
    for name, p in long.state.params.items():
        assert torch.equal(p, short.state.params[name])


def test_result_carries_the_common_columns_and_stops_at_max_epochs():
    run = ScheduleRun(config(max_epochs=2) | {"method": "demo"})
    first, second = run.step(), run.step()
    for r in (first, second):
        assert set(COMMON_COLUMNS) | {"schedule", "done"} <= set(r)
        assert r["method"] == "demo" and r["diverged"] is False
        assert r["schedule"] == {"lr": [0.3], "momentum": [0.9], "weight_decay": [1e-4]}
    assert (first[EPOCHS], second[EPOCHS]) == (1.0, 2.0)
    assert 0 < first[SECONDS] < second[SECONDS]
    assert (first["done"], second["done"]) == (False, True)
    with pytest.raises(RuntimeError, match="the trial is finished"):
        run.step()


def test_divergence_reports_chance_metrics_and_stops():
    run = ScheduleRun(config(lr_0=1e4, momentum_0=0.99))
    result = run.step()
    assert result["diverged"] is True and result["done"] is True
    assert result["val_acc"] == result["test_acc"] == pytest.approx(0.1)
    assert math.isfinite(result["val_loss"]) and result["val_loss"] >= 1e9
    assert 0 < result[EPOCHS] < 1  # the engine stopped mid-epoch; only the steps taken count


def test_pause_and_resume_continue_identically(tmp_path):
    cfg = config(max_epochs=3, lr_1=0.1)
    straight = ScheduleRun(cfg)
    expected = [straight.step() for _ in range(3)]

    paused = ScheduleRun(cfg)
    first = paused.step()
    paused.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["state.json", "tensors.pt"]  # no tmp file left
    resumed = ScheduleRun(cfg)
    resumed.load(tmp_path / "ckpt")
    rest = [resumed.step(), resumed.step()]

    for got, want in zip([first, *rest], expected):
        assert {k: v for k, v in got.items() if k != SECONDS} == {k: v for k, v in want.items() if k != SECONDS}
    assert rest[0][SECONDS] > first[SECONDS]  # compute_s carries over
    for name, p in resumed.state.params.items():
        assert torch.equal(p, straight.state.params[name])
    for a, b in zip(resumed.state.opt_state, straight.state.opt_state):
        assert torch.equal(a, b)


def test_schedule_trainable_save_restore_and_reset(tmp_path, monkeypatch):
    # Without Ray, a Trainable makes a log dir under ~/ray_results; keep it in tmp_path.
    monkeypatch.setattr("ray.tune.trainable.trainable.DEFAULT_STORAGE_PATH", str(tmp_path))
    cfg = config(max_epochs=3)
    a = ScheduleTrainable(config=cfg)
    a.train()
    saved = a.save(str(tmp_path / "ckpt"))
    second = a.train()
    b = ScheduleTrainable(config=cfg)
    b.restore(saved)
    again = b.train()
    assert again["val_loss"] == second["val_loss"] and again[EPOCHS] == second[EPOCHS] == 2.0
    assert b.reset_config(config(max_epochs=3, lr_0=0.1)) is True
    assert b.train()[EPOCHS] == 1.0  # a fresh trial
    for t in (a, b):
        t.stop()


def test_checkpoint_refuses_another_config_or_format(tmp_path):
    run = ScheduleRun(config())
    run.step()
    run.save(tmp_path)
    with pytest.raises(CheckpointError, match=r"written for a different config \(keys differ: \['lr_0'\]\)"):
        ScheduleRun(config(lr_0=0.2)).load(tmp_path)
    state = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / "state.json").write_text(json.dumps(state | {"version": 99}))
    with pytest.raises(CheckpointError, match="format version 99; this fds-tune reads version 1 only"):
        ScheduleRun(config()).load(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps(state | {"kind": "fds"}))
    with pytest.raises(CheckpointError, match="is not a schedule_run checkpoint"):
        ScheduleRun(config()).load(tmp_path)


# ---------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------
def build(method, seed=0, **kwargs):
    kwargs = {"max_epochs": 3, "num_samples": 4} | kwargs
    return get_baseline(method).build(SMALL, PROBLEM, seed=seed, **kwargs)


def test_registry_holds_every_method():
    assert sorted(BASELINES) == sorted(METHODS)
    assert all(b.summary for b in BASELINES.values())
    with pytest.raises(ValueError, match=r"method: got 'grid'; allowed values are \['random'"):
        get_baseline("grid")


@pytest.mark.parametrize("method", METHODS)
def test_setup_bundles_what_tune_needs_with_metric_and_mode_in_one_place(method):
    setup = build(method)
    assert setup.trainable is ScheduleTrainable and setup.num_samples == 4
    assert (setup.metric, setup.mode) == (METRIC, MODE)
    assert set(setup.param_space) == set(base_config(PROBLEM, max_epochs=3)) | {"lr_0", "lr_1", "momentum_0", "weight_decay_0"}
    assert setup.param_space["method"] == method and setup.param_space["max_epochs"] == 3
    # metric/mode go to tune.TuneConfig only: the searcher and scheduler have none of their own
    assert getattr(setup.search_alg, "metric", None) is None
    assert setup.scheduler.metric is None
    max_t = getattr(setup.scheduler, "_max_t_attr", getattr(setup.scheduler, "_max_t", None))
    assert max_t in (None, 3)  # every early-stopping scheduler spans exactly max_epochs


def test_bohb_pairing_is_enforced():
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
        ("hyperband", {"eta": 2}, r"unknown option 'eta' for method 'hyperband'; allowed options are \['reduction_factor'\]"),
        ("random", {"reduction_factor": 2}, r"unknown option 'reduction_factor' for method 'random'; allowed options are \[\]"),
        ("hyperband", {"reduction_factor": 1}, "reduction_factor: got 1; must be a number > 1"),
        ("asha", {"grace_period": 4}, r"grace_period: got 4; must be an int in \[1, max_epochs=3\]"),
        ("bohb", {"random_fraction": 2}, r"random_fraction: got 2; must be a number in \[0, 1\]"),
        ("bohb", {"min_points_in_model": 0}, "min_points_in_model: got 0; must be an int >= 1 or None"),
        ("tpe", {"n_initial_points": 0}, "n_initial_points: got 0; must be an int >= 1"),
        ("optuna", {"n_startup_trials": -1}, "n_startup_trials: got -1; must be an int >= 0"),
    ],
)
def test_build_rejects_bad_options(method, options, match):
    with pytest.raises(ValueError, match=match):
        build(method, options=options)


def test_build_and_tuner_reject_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="seed: got -1; must be an int >= 0"):
        build("random", seed=-1)
    with pytest.raises(ValueError, match="num_samples: got 0; must be an int >= 1"):
        build("random", num_samples=0)
    with pytest.raises(ValueError, match="max_epochs: got 0; must be an int >= 1"):
        build("random", max_epochs=0)
    with pytest.raises(ValueError, match="space: got .*; must be a SpaceConfig"):
        get_baseline("random").build({"lr": 7}, PROBLEM, max_epochs=3, num_samples=1, seed=0)
    with pytest.raises(ValueError, match="storage_path: got 'results'; must be an absolute path"):
        build("random").tuner(storage_path="results")
    with pytest.raises(ValueError, match="max_concurrent_trials: got 1 for method 'asha'.*use resources_per_trial"):
        build("asha").tuner(storage_path=tmp_path, max_concurrent_trials=1)
    assert isinstance(build("tpe").tuner(storage_path=tmp_path, max_concurrent_trials=1), tune.Tuner)


def suggestions(searcher, n):
    searcher.set_search_properties(METRIC, MODE, dict(build("random").param_space))
    return [searcher.suggest(f"t{i}") for i in range(n)]


@pytest.mark.parametrize("method", ["bohb", "tpe", "optuna"])
def test_searchers_reproduce_their_suggestions_from_the_seed(method):
    same = [suggestions(build(method, seed=0).search_alg, 3) for _ in range(2)]
    other = suggestions(build(method, seed=1).search_alg, 3)
    assert same[0] == same[1]
    assert other != same[0]


def test_rung_milestones_follow_ray_tunes_brackets():
    assert rung_milestones(3, 3) == {1, 3}
    assert rung_milestones(81, 3) == {1, 3, 9, 27, 81}
    assert rung_milestones(10, 3) == {1, 3, 9, 10}  # r = int(min(r * eta, max_t)) at each halving
    assert rung_milestones(2, 3) == {2}  # int(2 / 3) == 0: that bracket is skipped, as Ray does
    assert build("bohb").search_alg.milestones == {1, 3}


class FakeTrial:
    def __init__(self, trial_id, reported):
        self.trial_id, self.has_reported_at_least_once = trial_id, reported


@pytest.mark.parametrize("method, name", [("hyperband", "HyperBand"), ("bohb", "BOHB")])
def test_hyperband_schedulers_refuse_restored_trials_instead_of_hanging(method, name):
    scheduler = build(method).scheduler
    scheduler.set_search_properties(METRIC, MODE)
    scheduler.on_trial_add(None, FakeTrial("new", reported=False))  # a fresh trial joins a bracket
    scheduler.on_trial_add(None, FakeTrial("old", reported=True))  # Tune would swallow an error raised here
    with pytest.raises(RuntimeError, match=rf"cannot resume a {name} experiment: .*brackets.*\(restored trial old has results"):
        scheduler.choose_trial_to_run(None)


def test_bohb_searcher_refuses_restored_state():
    searcher = build("bohb").search_alg
    searcher.restore("searcher-state.pkl")
    with pytest.raises(RuntimeError, match="cannot resume a BOHB experiment: .*KeyError in trial_to_params"):
        searcher.suggest("t0")


def test_epoch_budget_counts_each_trials_latest_total():
    stop = EpochBudget(5)
    assert not stop("a", {EPOCHS: 1.0}) and not stop("a", {EPOCHS: 2.0})  # cumulative: a has used 2, not 3
    assert not stop("b", {EPOCHS: 2.5}) and not stop.stop_all()
    assert stop("b", {EPOCHS: 3.0}) and stop.stop_all() and stop.used == 5.0
    with pytest.raises(ValueError, match="budget_epochs: got 0; must be a positive number"):
        EpochBudget(0)


# ---------------------------------------------------------------------------------------
# End to end through Ray Tune: one contract for every baseline
# ---------------------------------------------------------------------------------------
MAX_EPOCHS, NUM_SAMPLES = 3, 4
BUDGET = 10  # total epochs, below NUM_SAMPLES * MAX_EPOCHS: the budget binds for the full-budget methods


def creation_order(result_grid):
    """Results in the order the trials were created (Tune's experiment_tag starts with the trial counter)."""
    results = [r for r in result_grid if r.metrics]
    return sorted(results, key=lambda r: int(r.metrics["experiment_tag"].split("_", 1)[0]))


def schedule_config(result):
    return {k: v for k, v in result.config.items() if k in ("lr_0", "lr_1", "momentum_0", "weight_decay_0")}


@pytest.fixture(scope="module", params=METHODS)
def contract_runs(request, ray_session, tmp_path_factory):
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
def bohb_runs(ray_session, tmp_path_factory):
    storage = tmp_path_factory.mktemp("tune_bohb_model")
    runs = []
    for name in ("first", "again"):
        setup = get_baseline("bohb").build(TINY, PROBLEM, max_epochs=3, num_samples=BOHB_SAMPLES, seed=7)
        # One trial at a time: results then reach the model in a fixed order (2 CPUs: one actor).
        grid = setup.tuner(storage_path=storage, name=name, max_concurrent_trials=1, resources_per_trial={"cpu": 2}).fit()
        runs.append((setup.search_alg, grid))
    return storage, runs


def test_bohb_makes_model_based_suggestions_reproducibly(bohb_runs):
    _, [(searcher, grid), (searcher_again, grid_again)] = bohb_runs
    assert not grid.errors and len(grid) == BOHB_SAMPLES
    picks = [searcher.model_based[r.metrics["trial_id"]] for r in creation_order(grid)]
    assert not any(picks[:8]) and any(picks)  # random until the KDE had enough results, then model based
    assert [searcher_again.model_based[r.metrics["trial_id"]] for r in creation_order(grid_again)] == picks
    assert [r.config for r in creation_order(grid)] == [r.config for r in creation_order(grid_again)]
    assert sum(r.metrics[EPOCHS] for r in grid) <= BOHB_SAMPLES * 3


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


def test_resuming_an_interrupted_bohb_experiment_raises_a_clear_error(ray_session, tmp_path):
    setup = get_baseline("bohb").build(TINY, PROBLEM, max_epochs=3, num_samples=6, seed=0)
    grid = setup.tuner(storage_path=tmp_path, name="cut", callbacks=[InterruptOnce("bohb", 2)], resources_per_trial={"cpu": 2}).fit()
    assert sum(r.metrics.get(EPOCHS, 0) for r in grid) < 6  # interrupted early
    with pytest.raises(RuntimeError, match="cannot resume a BOHB experiment: Ray Tune does not checkpoint"):
        tune.Tuner.restore(str(tmp_path / "cut"), trainable=ScheduleTrainable).fit()
    assert len(tune.ExperimentAnalysis(str(tmp_path / "cut")).trials) >= 1  # its results stay readable
