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
from .functional_model import TrainState
from .learner import FDSLearner
from .optim import Optimizer, adamw, sgd
from .problem import Problem, ProblemConfig
from .schedule import Schedule

__all__ = [
    "FDSConfig", "FDSLearner", "FDSTrainable", "HyperGradients", "Optimizer", "PRESETS", "Problem", "ProblemConfig",
    "Schedule", "TrainResult", "TrainState", "adamw", "fds_config", "hypergradients", "sgd", "train",
]


def __getattr__(name):  # FDSTrainable imports Ray: load it only when asked for
    if name == "FDSTrainable":
        from .trainable import FDSTrainable

        return FDSTrainable
    raise AttributeError(f"module 'fds_tune' has no attribute {name!r}")
