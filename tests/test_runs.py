"""The run protocol, one suite for every run kind (FDS, black-box schedule runs, HD, greedy forward mode,
population members of PBT/PB2, the learning-rate-free optimizers):
pause and resume through the JSON-safe state dict, and checkpoints through the one Ray shell."""
import dataclasses
import json

import pytest
import torch

from baselines import ScheduleTrainable
from baselines.greedy import GreedyTrainable, HDTrainable
from baselines.lr_free import LRFreeTrainable
from baselines.pbt import PBTTrainable
from baselines.schedule_run import base_config
from fds_tune import FDSTrainable, ProblemConfig, Run
from fds_tune.checkpoint import FORMAT_VERSION, CheckpointError
from fds_tune.results import COMMON_COLUMNS, SECONDS

SCHEDULE = {"lr_0": 0.3, "lr_1": 0.1, "momentum_0": 0.9, "weight_decay_0": 1e-4}
MEMBER = {"lr_0": 0.1, "momentum_0": 0.9, "weight_decay_0": 1e-4}  # a population member: one value per kind
# kind -> (shell, config of a run that takes at least 3 steps, a change that makes another config)
RUNS = {
    "fds": (FDSTrainable, {"preset": "digits", "epochs": [1, 1, 1], "retrain_epochs": 1}, {"seed": 1}),
    "schedule": (ScheduleTrainable, base_config(ProblemConfig(device="cpu"), max_epochs=3) | SCHEDULE, {"lr_0": 0.2}),
    "hd": (HDTrainable, {"epochs": 3}, {"hyper_lr": {"lr": 0.5}}),
    "greedy": (GreedyTrainable, {"epochs": 2, "window": 7}, {"window": 5}),  # 10 steps per epoch: windows cross epochs
    # a member takes another member's checkpoint (other schedule values): another config is another problem
    "pbt": (PBTTrainable, base_config(ProblemConfig(device="cpu"), max_epochs=3, method="pbt") | MEMBER, {"seed": 1}),
    **{
        m: (LRFreeTrainable, dataclasses.asdict(ProblemConfig(device="cpu")) | {"epochs": 3, "method": m}, {"lr": 0.5})
        for m in ("schedulefree", "dadapt", "prodigy")
    },
}
UNTIMED = (SECONDS, "step_time_s")  # wall-clock columns differ between two runs of the same work


def same_work(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in UNTIMED} == {k: v for k, v in b.items() if k not in UNTIMED}


def same_results(a: dict, b: dict) -> bool:
    """Two Ray results hold the same work (Ray adds its own timing, host and counter columns)."""
    keys = (set(COMMON_COLUMNS) | {"schedule"}) - set(UNTIMED)
    return {k: a[k] for k in keys} == {k: b[k] for k in keys}


def weights(run) -> dict:
    return run.learner.history[-1] if hasattr(run, "learner") else run.state.params


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # this process trains, as a Ray worker does


@pytest.mark.parametrize("kind", RUNS)
def test_pause_and_resume_through_the_state_dict_continue_identically(kind):
    shell, config, _ = RUNS[kind]
    straight = shell.RUN(config)
    assert isinstance(straight, Run)
    expected = [straight.step() for _ in range(3)]
    paused = shell.RUN(config)
    got = [paused.step()]
    state = json.loads(json.dumps(paused.state_dict(), allow_nan=True))  # exactly what a checkpoint holds
    resumed = shell.RUN(config)
    resumed.load_state_dict(state)
    got += [resumed.step() for _ in range(2)]
    for a, b in zip(got, expected):
        assert set(COMMON_COLUMNS) <= set(a) and same_work(a, b)
    assert got[1][SECONDS] > got[0][SECONDS]  # compute_s carries over
    assert resumed.done == straight.done
    w_resumed, w_straight = weights(resumed), weights(straight)
    for name, value in w_straight.items():
        assert torch.equal(w_resumed[name], value) if isinstance(value, torch.Tensor) else w_resumed[name] == value


@pytest.mark.parametrize("kind", RUNS)
def test_checkpoints_through_the_shell(kind, tmp_path, monkeypatch):
    # Without Ray, a Trainable makes a log dir under ~/ray_results; keep it in tmp_path.
    monkeypatch.setattr("ray.tune.trainable.trainable.DEFAULT_STORAGE_PATH", str(tmp_path))
    shell, config, change = RUNS[kind]
    a = shell(config=config)
    first = a.train()
    a.save_checkpoint(str(tmp_path / "plain"))
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["state.json"]  # one JSON file, no tmp file left
    saved = a.save(str(tmp_path / "ckpt"))
    second = a.train()
    b = shell(config=config)
    b.restore(saved)
    assert same_results(b.train(), second)

    c = shell(config={**config, **change})
    with pytest.raises(CheckpointError, match="written for a different config"):
        c.restore(saved)
    state = json.loads((tmp_path / "plain" / "state.json").read_text())
    (tmp_path / "plain" / "state.json").write_text(json.dumps(state | {"version": 99}))
    with pytest.raises(CheckpointError, match=f"format version 99; this fds-tune reads version {FORMAT_VERSION} only"):
        b.load_checkpoint(str(tmp_path / "plain"))
    (tmp_path / "plain" / "state.json").write_text(json.dumps(state | {"kind": "other"}))
    with pytest.raises(CheckpointError, match=f"is not a {b.run.KIND} checkpoint"):
        b.load_checkpoint(str(tmp_path / "plain"))

    assert b.reset_config(config) is True
    assert same_results(b.train(), first)  # a fresh trial
    for t in (a, b, c):
        t.stop()


def test_every_hand_over_follows_one_protocol_fds_retraining_included():
    """A black-box trial's hand-over of a schedule and FDS's retraining of the same schedule are the same run:
    initialisation RETRAIN_DRAW, the full training set, the hand-over batches, the same clamped SGD."""
    from baselines.greedy import HDRun
    from baselines.schedule_run import ScheduleRun
    from fds_tune import FDSLearner, fds_config
    from fds_tune.problem import cached_problem
    from fds_tune.run import run_to_end

    values = {"lr": 0.1, "momentum": 0.5, "weight_decay": 1e-4}
    fds = fds_config({"preset": "digits", "retrain_epochs": 2, "retrain_fallbacks": 0, "n_values": {"lr": 1}, "init": values})
    retrained = FDSLearner(fds, cached_problem(fds.problem)).retrain()
    trial = base_config(fds.problem, max_epochs=7, grad_clamp=fds.grad_clamp) | {f"{k}_0": v for k, v in values.items()}
    results = run_to_end(ScheduleRun.for_handover(trial, 2))
    assert [r["epochs_total"] for r in results] == [1.0, 2.0] and all(r["handover"] for r in results)
    assert all(r["val_acc"] != r["val_acc"] for r in results)  # NaN: a hand-over also trained on the validation split
    assert "handover_test_acc" not in results[0] and results[-1]["handover_test_acc"] == retrained["retrain_test_acc"]

    hd = HDRun.for_handover({"epochs": 5}, 1)
    assert hd.horizon == hd.problem.steps_per_epoch(hd.problem.n_train)  # one epoch of the full training set
