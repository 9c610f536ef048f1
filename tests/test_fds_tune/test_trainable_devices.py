"""fds_tune.trainable on devices: a Ray trial given no GPU trains on CPU, a trial given one sees it (Ray's
logical resources, no real GPU needed), and every result under Tune carries the trial's request."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch

from fds_tune import FDSTrainable
from fds_tune.trainable import cpu_unless_given_a_gpu

ROOT = Path(__file__).resolve().parents[2]
TINY = {"preset": "digits", "epochs": [1], "retrain_epochs": 0}
SENTINEL = "sentinel"  # CUDA_VISIBLE_DEVICES before a test: monkeypatch restores the real value afterwards


@pytest.fixture
def visible(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", SENTINEL)
    return monkeypatch


@pytest.mark.parametrize(
    "config, gpu_ids",
    [
        ({"device": "auto"}, None),  # outside a Ray actor (a driver, a unit test): this process is not a trial's
        ({"device": "auto"}, [0]),  # given a GPU: Ray set CUDA_VISIBLE_DEVICES itself
        ({"device": "auto"}, ["3"]),
        ({"device": "cpu"}, []),  # an explicit device is the config's choice
        ({"device": "cuda"}, []),
    ],
)
def test_nothing_changes_unless_an_auto_trial_was_given_no_gpu(visible, config, gpu_ids):
    assert cpu_unless_given_a_gpu(config, gpu_ids) is False
    assert os.environ["CUDA_VISIBLE_DEVICES"] == SENTINEL


@pytest.mark.parametrize("config", [{"device": "auto"}, {"preset": "digits"}])  # "auto" is the default
def test_a_trial_given_no_gpu_hides_the_gpus_before_cuda_starts(visible, config):
    visible.setattr(torch.cuda, "is_available", lambda: os.environ.get("CUDA_VISIBLE_DEVICES") != "")  # CUDA not started yet
    assert cpu_unless_given_a_gpu(config, []) is False  # hiding was enough: "auto" resolves to CPU
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_a_trial_given_no_gpu_is_told_cpu_when_cuda_had_started(visible):
    visible.setattr(torch.cuda, "is_available", lambda: True)  # CUDA started before: the empty variable comes too late
    assert cpu_unless_given_a_gpu({"device": "auto"}, []) is True
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


@pytest.fixture
def no_ray_results(tmp_path, monkeypatch):
    # Without Ray, a Trainable makes a log dir under ~/ray_results; keep it in tmp_path.
    monkeypatch.setattr("ray.tune.trainable.trainable.DEFAULT_STORAGE_PATH", str(tmp_path))


def test_the_shell_trains_on_cpu_and_keeps_the_asked_config_in_checkpoints(visible, no_ray_results, tmp_path, one_torch_thread):
    """A trial in an actor given no GPU, in a process where CUDA had started: the run trains on CPU, and its
    checkpoints belong to the config asked for ("auto"), so a trial elsewhere (here: this process) resumes them."""
    with pytest.MonkeyPatch.context() as trial:
        trial.setattr(FDSTrainable, "is_actor", lambda self: True)
        trial.setattr(ray, "get_gpu_ids", lambda: [])
        trial.setattr(torch.cuda, "is_available", lambda: True)
        forced = FDSTrainable(config=TINY)
    assert forced.run.learner.problem.device.type == "cpu"
    assert forced.run.config.problem.device == "cpu" and forced.checkpoint_config["device"] == "auto"
    forced.save_checkpoint(str(tmp_path / "ckpt"))
    assert json.loads((tmp_path / "ckpt" / "state.json").read_text())["config"]["device"] == "auto"
    plain = FDSTrainable(config=TINY)
    assert plain.checkpoint_config == plain.run.config_dict() == forced.checkpoint_config
    plain.load_checkpoint(str(tmp_path / "ckpt"))
    assert "cpus" not in plain.train() and plain.resources == {}  # outside Tune: no request to record
    for t in (forced, plain):
        t.stop()


@pytest.mark.e2e
def test_trials_on_a_logical_gpu_see_only_what_they_were_given(tmp_path):
    """Through real Ray Tune with one logical GPU: the trial given it sees GPU 0, the trial given none sees no
    GPU and trains on CPU; each reports the resources it requested."""
    script = ROOT / "tests" / "support" / "logical_gpu.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script), "trials", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["errors"] == []
    cpu, gpu = summary["trials"]["cpu"], summary["trials"]["gpu"]
    assert cpu == {"cuda_visible_devices": "", "gpu_ids": [], "cuda_available": False, "device": "cpu", "cpus": 1, "gpus": 0}
    assert gpu["cuda_visible_devices"] == "0" and gpu["gpu_ids"] == ["0"] and (gpu["cpus"], gpu["gpus"]) == (1, 1)
    assert gpu["device"] == ("cuda" if gpu["cuda_available"] else "cpu")  # a real GPU where there is one
