"""fds-tune: gradient-based hyperparameter optimisation over long horizons (FDS)."""
from .engine import HyperGradients, TrainResult, hypergradients, train
from .functional import TrainState
from .optim import Optimizer, adamw, sgd
from .schedule import Schedule

__all__ = ["HyperGradients", "Optimizer", "Schedule", "TrainResult", "TrainState", "adamw", "hypergradients", "sgd", "train"]
