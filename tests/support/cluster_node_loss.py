"""Two-node Ray cluster on one machine; the worker node is removed mid-run; trials must finish.

Run as a script (it needs its own Ray, apart from the test session's): prints a JSON summary.
"""
import json
import os
import sys
import threading

os.environ.update(RAY_AIR_NEW_OUTPUT="0", TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1", RAY_AUTH_MODE="disabled", RAY_CHDIR_TO_TRIAL_DIR="0")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.tune.logger import JsonLoggerCallback  # noqa: E402

from fds_tune import FDSTrainable  # noqa: E402

storage = sys.argv[1]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
worker = cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)

nodes_seen = {}
history = {}
removed = threading.Event()


class Located(FDSTrainable):
    """FDSTrainable that also reports the Ray node it runs on."""

    def step(self):
        return {**super().step(), "node_id": ray.get_runtime_context().get_node_id()}


class Watch(tune.Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        nodes_seen.setdefault(trial.trial_id, []).append(result["node_id"])
        history.setdefault(trial.trial_id, []).append((result["node_id"], result["training_iteration"]))
        on_worker = [t for t, ids in nodes_seen.items() if ids.count(worker.node_id) >= 2]
        # remove the worker node once both trials run, one of them on that node with two results (and checkpoints)
        if len(nodes_seen) == 2 and on_worker and not removed.is_set():
            removed.set()
            threading.Thread(target=cluster.remove_node, args=(worker,), daemon=True).start()


analysis = tune.run(
    Located,
    config={"preset": "digits", "epochs": [1, 2, 2, 2, 2], "retrain_epochs": 1, "seed": tune.grid_search([0, 1])},
    resources_per_trial={"cpu": 1},
    storage_path=storage,
    checkpoint_freq=1,
    max_failures=3,
    verbose=0,
    callbacks=[JsonLoggerCallback(), Watch()],
    raise_on_failed_trial=False,
)
summary = {
    "statuses": [t.status for t in analysis.trials],
    "iterations": [t.last_result.get("training_iteration") for t in analysis.trials],
    "failures": [t.num_failures for t in analysis.trials],
    "removed": removed.is_set(),
    "nodes_before_removal": len({ids[0] for ids in nodes_seen.values()}),
    "worker_node": worker.node_id,
    "nodes_per_trial": {k: sorted(set(v)) for k, v in nodes_seen.items()},
    # for the trial that lost its node: iterations reported there, then the first one reported elsewhere
    "moved": [
        {"on_lost_node": [i for n, i in h if n == worker.node_id], "first_after": next(i for n, i in h if n != worker.node_id)}
        for h in history.values()
        if h[0][0] == worker.node_id
    ],
    "retrained": [bool(t.last_result.get("retrained")) for t in analysis.trials],
}
print(json.dumps(summary))
ray.shutdown()
cluster.shutdown()
