"""FDSSearcher's faults through real Ray: a killed driver restored without training a finished inner run again,
and a lost worker node whose inner run Tune runs again on the node left."""
import collections
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fds_tune import FDSSearcher

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "support" / "searcher_driver.py"
pytestmark = pytest.mark.e2e
CONFIG = {"epochs": [1, 3, 3, 3, 3, 3], "retrain_epochs": 1}  # over the digits preset: 12 inner runs, long enough to be killed mid-way


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AIR_NEW_OUTPUT": "0"}


def executions(storage: Path) -> list[tuple[str, str, int, int]]:
    """(start|end, trial, outer step, run) of every inner run the driver trained."""
    log = storage / "executions.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [(what, trial, int(step), int(run)) for what, trial, step, run in (line.split() for line in lines)]


def saved_finished_runs(experiment: Path) -> set[tuple[int, int]]:
    """The (outer step, run) pairs the searcher's saved state holds as finished: what Tuner.restore continues from."""
    states = list(experiment.glob("searcher-state-*.pkl"))
    if not states:
        return set()
    try:
        fds = json.loads(max(states, key=lambda p: p.stat().st_mtime).read_text())["state"]["fds"]
    except json.JSONDecodeError:  # Ray copies the experiment from its staging folder into storage in place, not atomically:
        return set()  # a file caught mid-copy is read again at the next poll
    done = {(h["outer_step"], r) for h in fds["loop"]["history"] for r in h["runs"]}
    return done | {(fds["loop"]["outer_step"] + 1, int(r)) for r in fds["step_runs"]}


def run_driver(storage: Path, *args) -> dict:
    proc = subprocess.run([sys.executable, str(DRIVER), str(storage), *args], env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def uninterrupted(config: dict) -> dict:
    """The driver's search without Ray or a kill: FDSSearcher's jobs run in turn in this process, on one torch thread
    as the driver's trials; the retraining's result, as the driver's summary holds it."""
    import torch

    from fds_tune.parallel import FINISHED, JOB_KEY, FDSJob

    searcher, threads = FDSSearcher("digits", 2, config=config), torch.get_num_threads()
    torch.set_num_threads(1)
    result, ids = None, map(str, itertools.count())
    try:
        while (job := searcher.fds.next_job(trial := next(ids))) != FINISHED:
            result = json.loads(json.dumps(FDSJob({**searcher.fds.config.to_dict(), JOB_KEY: job}).step()))
            searcher.fds.job_done(trial, result)
    finally:
        torch.set_num_threads(threads)
    return result


def test_a_killed_driver_is_restored_without_training_a_finished_inner_run_again(tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(DRIVER), str(killed), "--config", json.dumps(CONFIG)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    # Wait until the searcher's saved state (the driver writes it about once a second, after it has taken
    # in the runs' results) holds a finished inner run: how many runs have ended says nothing of it.
    finished: set = set()
    while time.time() < deadline and not finished:
        finished = saved_finished_runs(killed / "fds")
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert finished, "the searcher saved no finished inner run before the kill"
    assert len([e for e in executions(killed) if e[0] == "end"]) < 12, "the kill landed after the search (12 inner runs)"
    before = collections.Counter((step, run) for what, _, step, run in executions(killed) if what == "start")

    resumed = run_driver(killed, "--resume")
    clean = uninterrupted(CONFIG)

    after = collections.Counter((step, run) for what, _, step, run in executions(killed) if what == "start")
    for key in finished:  # a run the saved searcher held as finished never trained again
        assert after[key] == before[key] == 1, key
    ended = {(step, run) for what, _, step, run in executions(killed) if what == "end"}
    assert ended == {(step, run) for step in range(1, 7) for run in (0, 1)}  # every inner run finished
    trials_per_run = collections.defaultdict(set)
    for _, trial, step, run in executions(killed):
        trials_per_run[step, run].add(trial)
    # A run goes to a second trial only when the kill lost it: given out after Tune's last experiment checkpoint,
    # that trial is unknown to the restored Tune, and its run is given out again; a saved finished run never is.
    assert not {key for key, t in trials_per_run.items() if len(t) > 1} & finished
    assert resumed["errors"] == 0 and resumed["retrain_test_acc"] is not None
    # the draws fix every inner run, so the restored search learns what an uninterrupted one does
    assert resumed["schedule"] == clean["schedule"] and resumed["retrain_test_acc"] == clean["retrain_test_acc"]
    assert [h["runs"] for h in resumed["outer_history"]] == [[0, 1]] * 6


def test_a_lost_worker_nodes_inner_run_runs_again_on_the_node_left(tmp_path):
    script = ROOT / "tests" / "support" / "searcher_node_loss.py"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["removed"] and summary["errors"] == 0
    (lost,) = summary["lost"].values()  # one inner run was on the worker node when it went
    assert lost["started_on"][0] == summary["worker_node"]
    assert lost["started_on"][-1] == summary["head_node"] == lost["reported_from"]  # run again, and finished, elsewhere
    first = summary["outer_history"][0]
    assert first["runs"] == [0, 1] and first["dropped"] == []  # the outer step used both runs
    assert summary["inner_runs"] == 4
