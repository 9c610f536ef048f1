"""fds-tune: gradient-based hyperparameter optimisation over long horizons (FDS).

Core (pure, no Ray)::

    from fds_tune import Schedule, hypergradients
    hg = hypergradients(model, Schedule(lr=[...], momentum=[...], weight_decay=[...]), train_batches, val_batches)
    hg["lr"]  # exact dL_val/d(shared lr values)

Ray Tune front door::

    from ray import tune
    from fds_tune import FDSTrainable
    tune.run(FDSTrainable, config={"preset": "digits"})
"""
from .config import PRESETS, FDSConfig, fds_config
from .engine import HyperGradients, TrainResult, hypergradients, train
from .functional_model import FunctionalModel, TrainState
from .learner import FDSLearner, FDSRun
from .optim import Optimizer, adamw, clamped, sgd
from .problem import Problem, ProblemConfig
from .problems import publish_problems, register_problem
from .run import Run, TrainingRun
from .schedule import Schedule
from .spec import ProblemSpec

__all__ = [
    "FDSConfig", "FDSLearner", "FDSRun", "FDSTrainable", "FunctionalModel", "HyperGradients", "Optimizer", "PRESETS",
    "Problem", "ProblemConfig", "ProblemSpec", "Run", "RunTrainable", "Schedule", "TrainResult", "TrainState", "TrainingRun", "adamw",
    "clamped", "fds_config", "hypergradients", "publish_problems", "register_problem", "sgd", "train",
]


def __getattr__(name):  # the Ray shells import Ray: load them only when asked for
    if name in ("FDSTrainable", "RunTrainable"):
        from . import trainable

        return getattr(trainable, name)
    raise AttributeError(f"module 'fds_tune' has no attribute {name!r}")
