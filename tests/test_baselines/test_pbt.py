"""PBT and PB2 through real Ray Tune on digits: a synchronous population whose members exploit and explore,
record the schedule they followed (inherited history included), stay within the budget and the ranges,
and whose best member's followed schedule, replayed from scratch, gives the same weights as the member."""
import json
from pathlib import Path

import pytest
import torch

from baselines import SpaceConfig, get_baseline
from baselines.pbt import (
    FOLLOWED,
    PBTRun,
    PBTTrainable,
    interval,
    member_space,
    replay_config,
)
from baselines.schedule_run import ScheduleRun, base_config
from fds_tune.checkpoint import CheckpointError
from fds_tune.problem import ProblemConfig
from fds_tune.results import EPOCHS
from fds_tune.run import run_to_end

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROBLEM = ProblemConfig(model="mlp", device="cpu")
RANGES = {"lr": (0.0, 0.5), "momentum": (0.0, 0.9), "weight_decay": (0.0, 1e-3)}
EPOCHS_PER_MEMBER, POPULATION = 4, 4
MEMBER = base_config(PROBLEM, max_epochs=3) | {"lr_0": 0.2, "momentum_0": 0.5, "weight_decay_0": 1e-4}


@pytest.fixture(scope="module", params=["pbt", "pb2"])
def population(request, ray_session, tmp_path_factory):
    """A population of 4 members, 4 epochs each, perturbed every epoch (interval_fraction 0.25)."""
    method = request.param
    space = SpaceConfig(sizes={"lr": 3, "momentum": 1, "weight_decay": 1}, ranges=RANGES)  # sizes are the member's: 1 each
    setup = get_baseline(method).build(
        space, PROBLEM, max_epochs=EPOCHS_PER_MEMBER, num_samples=POPULATION, seed=3, options={"interval_fraction": 0.25}
    )
    storage = tmp_path_factory.mktemp(f"pop_{method}")
    grid = setup.tuner(storage_path=storage, name=method, budget_epochs=POPULATION * EPOCHS_PER_MEMBER, resources_per_trial={"cpu": 1}).fit()
    return method, setup, grid


def test_members_follow_and_inherit_schedules_within_the_budget_and_ranges(population):
    method, setup, grid = population
    assert not grid.errors and len(grid) == POPULATION
    assert setup.trainable is PBTTrainable and {k for k in setup.param_space if k.endswith("_0")} == {"lr_0", "momentum_0", "weight_decay_0"}
    inherited = 0
    for r in grid:
        history = [json.loads(line) for line in (Path(r.path) / "result.json").read_text().splitlines()]  # as the comparison reads it
        assert all(h["method"] == method and not h["diverged"] for h in history)
        # synchronous: a member clones its donor's checkpoint of the same epoch, so its lineage epochs are its own.
        # (Ray may not log the result a member reported just before it was exploited: iterations can skip one.)
        iterations = [h["training_iteration"] for h in history]
        assert iterations == sorted(set(iterations)) and iterations[-1] == EPOCHS_PER_MEMBER
        assert [h[EPOCHS] for h in history] == [float(i) for i in iterations]
        followed = r.metrics[FOLLOWED]
        assert {k: len(v) for k, v in followed.items()} == {"lr": 4, "momentum": 4, "weight_decay": 4}
        for kind, values in followed.items():
            assert all(RANGES[kind][0] <= v <= RANGES[kind][1] for v in values)
            assert values[-1] == r.config[f"{kind}_0"]  # the last epoch used the member's final values
        initial = json.loads((Path(r.path) / "params.json").read_text())  # the member's own first draw
        inherited += any(values[0] != initial[f"{kind}_0"] for kind, values in followed.items())
    assert inherited >= 1  # some member's first epoch is its donor's: the history travelled with the checkpoint
    assert sum(r.metrics[EPOCHS] for r in grid) == POPULATION * EPOCHS_PER_MEMBER  # every member's epochs count


def test_the_best_members_followed_schedule_replays_to_its_weights(population, tmp_path, monkeypatch):
    """The best final member's followed schedule, replayed from scratch as a plain schedule run on the same
    batches, ends at the member's final weights, bit for bit."""
    monkeypatch.setattr("ray.tune.trainable.trainable.DEFAULT_STORAGE_PATH", str(tmp_path))
    _, _, grid = population
    best = max(grid, key=lambda r: r.metrics["val_acc"])
    member = PBTTrainable(config=best.config)
    member.restore(best.checkpoint)  # the member's own last checkpoint
    replay = ScheduleRun(replay_config(best.config, best.metrics[FOLLOWED]))
    run_to_end(replay)
    assert replay.state.step == member.run.state.step
    for name, value in member.run.state.params.items():
        assert torch.equal(replay.state.params[name], value)
    member.stop()


def test_a_member_takes_another_members_checkpoint_and_its_history(tmp_path, monkeypatch):
    monkeypatch.setattr("ray.tune.trainable.trainable.DEFAULT_STORAGE_PATH", str(tmp_path))
    donor = PBTTrainable(config=MEMBER)
    donor.train()
    saved = donor.save(str(tmp_path / "donor"))
    explored = {**MEMBER, "lr_0": 0.05, "momentum_0": 0.1}
    member = PBTTrainable(config=explored)
    member.restore(saved)
    result = member.train()
    assert result[FOLLOWED] == {"lr": [0.2, 0.05], "momentum": [0.5, 0.1], "weight_decay": [1e-4, 1e-4]}
    assert result["schedule"] == {"lr": [0.05], "momentum": [0.1], "weight_decay": [1e-4]}
    for change in ({"seed": 1}, {"max_epochs": 4}):  # anything but the member's schedule values must match
        other = PBTTrainable(config={**explored, **change})
        with pytest.raises(CheckpointError, match="written for a different config"):
            other.restore(saved)
        other.stop()
    for t in (donor, member):
        t.stop()


def test_replay_config_and_the_member_space():
    followed = {"lr": [0.1, 0.2], "momentum": [0.9, 0.5], "weight_decay": [0.0, 1e-4]}
    flat = replay_config(MEMBER, followed)
    assert flat["max_epochs"] == 2 and (flat["lr_0"], flat["lr_1"], flat["momentum_1"]) == (0.1, 0.2, 0.5)
    assert ScheduleRun(flat).schedule.sizes == {"lr": 2, "momentum": 2, "weight_decay": 2}
    with pytest.raises(ValueError, match=r"followed: got \{'lr': 2, 'momentum': 1, 'weight_decay': 2\}; must be the same number"):
        replay_config(MEMBER, {**followed, "momentum": [0.9]})
    with pytest.raises(ValueError, match="followed: got .*; must be the same number"):
        replay_config(MEMBER, {"lr": [0.1]})
    space = member_space(SpaceConfig(ranges=RANGES | {"lr": (0.0, 0.3)}))
    assert space.sizes == {"lr": 1, "momentum": 1, "weight_decay": 1} and space.ranges["lr"] == (0.0, 0.3)
    assert [interval(e) for e in (1, 3, 10, 50)] == [1, 1, 2, 10]
    with pytest.raises(ValueError, match="interval_fraction: got 0; must be a number in"):
        interval(10, 0)
    with pytest.raises(ValueError, match="quantile_fraction: got 0.7"):
        get_baseline("pbt").build(SpaceConfig(), PROBLEM, max_epochs=4, num_samples=2, seed=0, options={"quantile_fraction": 0.7})
    with pytest.raises(ValueError, match="schedule sizes: got .*; must be one value per kind"):
        PBTRun({**MEMBER, "lr_1": 0.1})
    with pytest.raises(TypeError, match="use replay_config"):
        PBTRun.for_handover(MEMBER, 1)
    assert "ranges" not in get_baseline("pb2").options and "interval_fraction" in get_baseline("pb2").options


def test_a_diverging_member_ends_cleanly_with_the_epoch_it_followed():
    member = PBTRun({**MEMBER, "lr_0": 1e4, "momentum_0": 0.9})
    results = run_to_end(member)
    assert len(results) == 1 and member.done and results[0]["diverged"] and results[0]["done"]
    assert results[0]["val_acc"] == 0.1 and results[0][EPOCHS] <= 1.0  # chance; the steps it took count
    assert results[0][FOLLOWED] == {"lr": [1e4], "momentum": [0.9], "weight_decay": [1e-4]}
