"""Two-node Ray cluster on one machine running an FDS search (FDSSearcher, 2 inner runs per outer step): the
worker node is removed while it runs an inner run; Tune must run that inner run again on the head node.

Run as a script (it needs its own Ray, apart from the test session's): prints a JSON summary on its last line.
"""
import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.update(RAY_AIR_NEW_OUTPUT="0", TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1", RAY_AUTH_MODE="disabled", RAY_CHDIR_TO_TRIAL_DIR="0",
                  OMP_NUM_THREADS="1")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.tune.logger import JsonLoggerCallback  # noqa: E402

from fds_tune import FDSInnerRun, FDSSearcher  # noqa: E402

storage = Path(sys.argv[1]).absolute()
storage.mkdir(parents=True, exist_ok=True)
STARTS = storage / "starts.jsonl"  # one line per inner run that starts training: trial, node, outer step, run
# The first outer step's runs are long (about 100 digits epochs each, several seconds), so that the node goes while one runs.
CONFIG = {"epochs": [100, 1], "retrain_epochs": 1}

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
worker = cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
head = cluster.head_node.node_id


class Located(FDSInnerRun):
    """FDSInnerRun that says where each of its jobs starts, and reports the node it ran on."""

    def step(self):
        node, job = ray.get_runtime_context().get_node_id(), self.run.job
        with STARTS.open("a") as f:
            f.write(json.dumps({"trial": self.trial_id, "node": node, "kind": job["kind"], "outer_step": job.get("outer_step", -1) + 1,
                                "run": job.get("run")}) + "\n")
        return {**super().step(), "node_id": node}


removed = threading.Event()


def remove_the_worker_once_it_trains():
    while not removed.is_set():
        lines = STARTS.read_text().splitlines() if STARTS.exists() else []
        if any(json.loads(line)["node"] == worker.node_id and json.loads(line)["kind"] == "inner" for line in lines):
            removed.set()
            cluster.remove_node(worker)
        time.sleep(0.05)


threading.Thread(target=remove_the_worker_once_it_trains, daemon=True).start()
grid = tune.Tuner(
    Located,
    tune_config=tune.TuneConfig(search_alg=FDSSearcher("digits", 2, config=CONFIG), num_samples=-1, reuse_actors=False,
                                trial_dirname_creator=str),
    run_config=tune.RunConfig(name="fds", storage_path=str(storage), verbose=0, callbacks=[JsonLoggerCallback()],
                              failure_config=tune.FailureConfig(max_failures=3)),
).fit()
removed.set()
starts = [json.loads(line) for line in STARTS.read_text().splitlines()]
lost = sorted({s["trial"] for s in starts if s["node"] == worker.node_id})
final = [r.metrics for r in grid if r.metrics.get("fds_job") == "retrain"]
print(json.dumps({
    "removed": removed.is_set(),
    "worker_node": worker.node_id,
    "head_node": head,
    "errors": len(grid.errors),
    "trials": len(grid),
    # per trial that started on the lost node: the nodes its job started on, in order, and the node its result came from
    "lost": {t: {"started_on": [s["node"] for s in starts if s["trial"] == t],
                 "reported_from": next((r.metrics.get("node_id") for r in grid if r.metrics.get("trial_id") == t), None)}
             for t in lost},
    "outer_history": final[0]["outer_history"] if final else None,
    "inner_runs": final[0]["inner_runs"] if final else None,
}))
ray.shutdown()
cluster.shutdown()
