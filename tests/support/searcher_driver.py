"""An FDS search (FDSSearcher, 2 inner runs per outer step, digits) through Ray Tune, in its own process.

    python tests/support/searcher_driver.py STORAGE --config JSON   # a new search in STORAGE/fds (JSON: FDSSearcher's config)
    python tests/support/searcher_driver.py STORAGE --resume        # Tuner.restore it (after its driver was killed)

Every inner run that trains (not one that reports a result again from its checkpoint) writes
``start`` and ``end`` lines, ``<trial id> <outer step> <run>``, to ``STORAGE/executions.log``.
Prints a JSON summary on its last line.
"""
import json
import os
import sys
from pathlib import Path

os.environ.update(RAY_AIR_NEW_OUTPUT="0", TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1", RAY_AUTH_MODE="disabled", RAY_CHDIR_TO_TRIAL_DIR="0",
                  TUNE_GLOBAL_CHECKPOINT_S="1", OMP_NUM_THREADS="1")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.logger import JsonLoggerCallback  # noqa: E402

from fds_tune import FDSInnerRun, FDSSearcher  # noqa: E402

storage = Path(sys.argv[1]).absolute()
resume = "--resume" in sys.argv[2:]
CONFIG = None if resume else json.loads(sys.argv[sys.argv.index("--config") + 1])
LOG = storage / "executions.log"


class Counted(FDSInnerRun):
    """FDSInnerRun that logs every inner run it trains."""

    def step(self):
        job, trains = self.run.job, self.run.result is None
        tag = f"{self.trial_id} {job.get('outer_step', -1) + 1} {job.get('run', -1)}\n"
        if trains and job["kind"] == "inner":
            with LOG.open("a") as f:
                f.write("start " + tag)
        result = super().step()
        if trains and job["kind"] == "inner":
            with LOG.open("a") as f:
                f.write("end " + tag)
        return result


storage.mkdir(parents=True, exist_ok=True)
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
if resume:
    tuner = tune.Tuner.restore(str(storage / "fds"), trainable=Counted, resume_unfinished=True, resume_errored=False)
else:
    tuner = tune.Tuner(
        Counted,
        tune_config=tune.TuneConfig(search_alg=FDSSearcher("digits", 2, config=CONFIG), num_samples=-1, reuse_actors=True,
                                    trial_dirname_creator=str),
        run_config=tune.RunConfig(name="fds", storage_path=str(storage), verbose=0, callbacks=[JsonLoggerCallback()],
                                  checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1),
                                  failure_config=tune.FailureConfig(max_failures=2)),
    )
grid = tuner.fit()
final = [r.metrics for r in grid if r.metrics.get("fds_job") == "retrain"]
print(json.dumps({
    "errors": len(grid.errors),
    "trials": len(grid),
    "retrain_test_acc": final[0]["retrain_test_acc"] if final else None,
    "schedule": final[0]["schedule"] if final else None,
    "outer_history": final[0]["outer_history"] if final else None,
}))
ray.shutdown()
