"""fds-tune: gradient-based hyperparameter optimisation over long horizons (FDS).

Core (pure, no Ray)::

    from fds_tune import Schedule, hypergradients
    hg = hypergradients(model, Schedule(lr=[...], momentum=[...], weight_decay=[...]), train_batches, val_batches)
    hg["lr"]  # exact dL_val/d(shared lr values)

Ray Tune front door::

    from ray import tune
    from fds_tune import FDSTrainable
    tune.run(FDSTrainable, config={"preset": "digits"})

Parallel FDS, several inner runs per outer step, as a Ray Tune search algorithm::

    from fds_tune import FDSInnerRun, FDSSearcher
    tune.Tuner(FDSInnerRun, tune_config=tune.TuneConfig(search_alg=FDSSearcher(preset="digits", parallel=2), num_samples=-1)).fit()
"""
from .config import PRESETS, FDSConfig, fds_config
from .engine import HyperGradients, TrainResult, hypergradients, train
from .functional_model import FunctionalModel, TrainState
from .learner import FDSLearner, FDSRun
from .optim import Optimizer, adamw, clamped, sgd
from .parallel import FDSJob, ParallelFDS
from .problem import Problem, ProblemConfig
from .problems import publish_problems, register_problem
from .run import Run, TrainingRun
from .schedule import Schedule
from .spec import ProblemSpec

__all__ = [
    "FDSConfig", "FDSInnerRun", "FDSJob", "FDSLearner", "FDSRun", "FDSSearcher", "FDSTrainable", "FunctionalModel", "HyperGradients",
    "Optimizer", "PRESETS", "ParallelFDS", "Problem", "ProblemConfig", "ProblemSpec", "Run", "RunTrainable", "Schedule", "TrainResult",
    "TrainState", "TrainingRun", "adamw", "clamped", "fds_config", "hypergradients", "publish_problems", "register_problem", "sgd", "train",
]


def __getattr__(name):  # the Ray shells import Ray: load them only when asked for
    if name in ("FDSTrainable", "RunTrainable"):
        from . import trainable

        return getattr(trainable, name)
    if name in ("FDSSearcher", "FDSInnerRun"):
        from . import searcher

        return getattr(searcher, name)
    raise AttributeError(f"module 'fds_tune' has no attribute {name!r}")
