"""A local Ray with 2 CPUs and one *logical* GPU (no real GPU needed), apart from the test session's Ray.

Run as a script; it prints one JSON summary on its last stdout line::

    python tests/support/logical_gpu.py trials DIR    # two FDS trials, one given the GPU, one given none
    python tests/support/logical_gpu.py compare DIR   # fds and random through compare(gpus_per_trial=0.5)

``trials``: what each trial saw from inside (``CUDA_VISIBLE_DEVICES``, ``ray.get_gpu_ids()``,
whether torch sees CUDA, the device its problem trains on) and what it requested.
``compare``: each method's recorded ``cpus``/``gpus``, the cluster file and the caption.
"""
import json
import os
import shutil
import sys
import tempfile

os.environ.update(
    RAY_AIR_NEW_OUTPUT="0", TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1", RAY_AUTH_MODE="disabled", RAY_CHDIR_TO_TRIAL_DIR="0",
    OMP_NUM_THREADS="1", RAY_DEDUP_LOGS="0",
)
os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # the logical GPU is id 0, whatever this machine has

import ray  # noqa: E402
import torch  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.logger import JsonLoggerCallback  # noqa: E402

from fds_tune import FDSTrainable  # noqa: E402

TINY = {"preset": "digits", "epochs": [1], "retrain_epochs": 0}


class DeviceReport(FDSTrainable):
    """FDSTrainable that also reports, from inside its trial, which GPUs it was given and where it trains."""

    def setup(self, config):
        super().setup({k: v for k, v in config.items() if k != "gpu"})

    def step(self):
        return {
            **super().step(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
            "cuda_available": torch.cuda.is_available(),
            "device": self.run.learner.problem.device.type,
        }


def trials(storage: str) -> dict:
    trainable = tune.with_resources(DeviceReport, lambda config: {"cpu": 1, "gpu": 1} if config["gpu"] else {"cpu": 1})
    tuner = tune.Tuner(
        trainable,
        param_space={**TINY, "gpu": tune.grid_search([0, 1])},
        run_config=tune.RunConfig(storage_path=storage, verbose=0, callbacks=[JsonLoggerCallback()]),
    )
    grid = tuner.fit()
    keys = ("cuda_visible_devices", "gpu_ids", "cuda_available", "device", "cpus", "gpus")
    return {
        "errors": [str(e).splitlines()[0] for e in grid.errors],
        "trials": {("gpu" if r.config["gpu"] else "cpu"): {k: r.metrics.get(k) for k in keys} for r in grid},
    }


def compare(out: str) -> dict:
    import pandas as pd

    from experiments.compare import CLUSTER_FILE, compare

    printed = []
    compare(
        "digits", out=out, seeds=[3], methods=["fds", "random"], overrides={"epochs": [1], "retrain_epochs": 1},
        max_epochs=1, num_samples=2, budget_epochs=2, gpus_per_trial=0.5, log=printed.append,
    )
    csv = pd.read_csv(os.path.join(out, "results.csv"))
    return {
        "resources": {m: sorted({(c, g) for c, g in zip(rows["cpus"], rows["gpus"])}) for m, rows in csv.groupby("method")},
        "seeds": sorted(set(csv["seed"])),
        "cluster": json.loads(open(os.path.join(out, CLUSTER_FILE)).read()),
        "printed": printed,
    }


if __name__ == "__main__":
    mode, where = sys.argv[1], os.path.abspath(sys.argv[2])
    temp_dir = tempfile.mkdtemp(prefix="ray_", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, logging_level="WARNING", _temp_dir=temp_dir)
    try:
        summary = {"trials": trials, "compare": compare}[mode](where)
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    print(json.dumps(summary, default=str))
