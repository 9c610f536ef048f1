"""Faults through real Ray: divergence, killed workers, a killed driver, a lost node, bad checkpoints."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
from ray import tune
from ray.tune.logger import JsonLoggerCallback

import analysis
from baselines import ScheduleTrainable
from fds_tune import FDSTrainable
from fds_tune.checkpoint import CheckpointError
from support.faults import FaultyFDS, fault

ROOT = Path(__file__).resolve().parents[2]
TINY = {"preset": "digits", "epochs": [1, 2, 2], "retrain_epochs": 1}
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.e2e


def run(tmp_path, trainable, config, **kwargs):
    return tune.run(trainable, config=config, storage_path=str(tmp_path), verbose=0, callbacks=[JsonLoggerCallback()], **kwargs)


def test_forced_divergence_inside_fds_ends_cleanly_and_never_wins(ray_session, tmp_path):
    config = {**TINY, "init": {"lr": tune.grid_search([0.0, 1e12])}}
    result = run(tmp_path, FDSTrainable, config, raise_on_failed_trial=False)
    assert all(t.status == "TERMINATED" for t in result.trials)  # the experiment completed
    diverged = next(t for t in result.trials if t.config["init"]["lr"] == 1e12)
    df = result.trial_dataframes[diverged.trial_id]
    assert df["diverged"].iloc[0]
    assert df["val_acc"].iloc[0] == pytest.approx(0.1)  # chance, for ranking
    assert df["schedule/lr"].iloc[0] == [5e11] * 5  # stepped back: values shrink, not NaN
    best = result.get_best_trial("val_acc", "max", scope="all")
    assert best.config["init"]["lr"] == 0.0


def test_forced_divergence_inside_a_baseline_and_the_search_goes_on(ray_session, tmp_path):
    base = {"dataset": "digits", "model": "mlp", "max_epochs": 2, "method": "random", "momentum_0": 0.9, "weight_decay_0": 0.0}
    config = {**base, "lr_0": tune.grid_search([1e9, 0.1])}
    result = run(tmp_path, ScheduleTrainable, config, raise_on_failed_trial=False)
    assert all(t.status == "TERMINATED" for t in result.trials)
    bad = next(t for t in result.trials if t.config["lr_0"] == 1e9)
    assert bad.last_result["diverged"] and bad.last_result["val_acc"] == pytest.approx(0.1)
    good = next(t for t in result.trials if t.config["lr_0"] == 0.1)
    frame = analysis.load_results(tmp_path)
    (choice,) = analysis.final_choice(frame).to_dict("records")
    assert choice["trial"] == good.trial_id  # nothing diverged becomes "best"
    curves = analysis.anytime_curves(frame)
    bad_id = next(t.trial_id for t in result.trials if t.config["lr_0"] == 1e9)
    assert not (curves["incumbent_trial"] == bad_id).any()


def test_killed_worker_resumes_to_the_same_final_result(ray_session, tmp_path):
    marker = tmp_path / "marker"
    died = run(tmp_path / "a", FaultyFDS, {**TINY, "fault": fault(marker, at=1, how="exit")}, checkpoint_freq=1, max_failures=2)
    clean = run(tmp_path / "b", FDSTrainable, TINY, checkpoint_freq=1)
    assert marker.exists()
    (t_died,), (t_clean,) = died.trials, clean.trials
    assert t_died.status == "TERMINATED" and t_died.num_failures == 1
    assert t_died.last_result["schedule"] == t_clean.last_result["schedule"]
    assert t_died.last_result["retrain_test_acc"] == t_clean.last_result["retrain_test_acc"]


def test_malicious_checkpoint_is_refused_through_the_trainable(ray_session, tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "state.json").write_bytes(pickle.dumps(Boom()))
    trainable = FDSTrainable(config=TINY)
    with pytest.raises(CheckpointError, match="JSON expected"):
        trainable.load_checkpoint(str(ckpt))
    assert not (tmp_path / "pwned").exists()
    trainable.stop()


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AIR_NEW_OUTPUT": "0"}


def test_driver_killed_mid_experiment_then_resumed(tmp_path):
    """SIGKILL the `fds-tune compare` driver mid-run; --resume finishes with no duplicate or lost rows."""
    out = tmp_path / "cmp"
    outer_steps = 20  # long enough that the kill lands mid-run, results processed in a burst or not (an outer step takes well under a second)
    epochs = json.dumps([1] + [2] * (outer_steps - 1)).replace(" ", "")
    cli = [sys.executable, "-m", "experiments.cli", "compare", "--preset", "digits", "--out", str(out), "--methods", "fds", "random",
           "--set", f"epochs={epochs}", "--set", "retrain_epochs=1", "--max-epochs", "3", "--samples", "3", "--budget", "9", "--cpus", "2"]
    proc = subprocess.Popen(cli, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    fds_results = out / "ray" / "fds-seed0"
    # Wait until FDS has checkpointed a few outer steps.  The trial writes its checkpoints itself, as it
    # takes them; the driver writes result.json, and may do so in a burst, after the run is over.
    while time.time() < deadline:
        checkpoints = len(list(fds_results.glob("*/checkpoint_*"))) if fds_results.exists() else 0
        if checkpoints >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoints >= 3, "the driver never got going"
    assert not (fds_results / ".fds_tune_done").exists()  # killed mid-experiment
    resumed = subprocess.run([*cli, "--resume"], env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    frame = analysis.load_results(out / "ray")
    raw = []
    for path in (out / "ray").glob("*/*/result.json"):
        raw += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    fds = frame[frame["method"] == "fds"]
    assert sorted(fds["iteration"]) == list(range(1, outer_steps + 1))  # every outer step once: nothing lost, nothing doubled
    assert not frame.duplicated(["trial", "iteration"]).any()
    assert fds["retrain_test_acc"].notna().any()


def test_two_node_cluster_survives_losing_a_node(tmp_path):
    script = ROOT / "tests" / "support" / "cluster_node_loss.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["removed"]
    assert summary["nodes_before_removal"] == 2  # trials spread over both nodes
    assert summary["statuses"] == ["TERMINATED", "TERMINATED"]
    assert summary["iterations"] == [5, 5] and all(summary["retrained"])
    assert sum(summary["failures"]) >= 1
    (moved,) = summary["moved"]  # the trial on the lost node continued from its checkpoint, not from scratch
    assert 2 <= moved["first_after"] <= moved["on_lost_node"][-1] + 1
