"""The result contract: the columns and method names every method reports, so that their curves line up.

Every run (FDS, black-box trials, greedy methods) reports, in each result: the
metrics below, the compute consumed so far on the same two axes
(``epochs_total`` training epochs and ``compute_s`` seconds of training work),
the method name (one of :data:`METHODS`), the problem's ``seed`` and the
``preset`` it came from (None for a hand-made config), and the schedule it used
(``schedule``: kind -> list).

A diverged run (NaN/inf) reports ``diverged=True`` with chance accuracy and
:data:`DIVERGED_LOSS`, so that it never ranks as best and searchers still get
a finite score.
"""
from __future__ import annotations

import math

__all__ = [
    "METRIC", "MODE", "EPOCHS", "SECONDS", "COMMON_COLUMNS", "DIVERGED_LOSS", "diverged_metrics", "finite_or",
    "METHODS", "FDS_METHODS", "GREEDY_METHODS", "BLACK_BOX_METHODS", "POPULATION_METHODS", "LR_FREE_METHODS",
]

METRIC = "val_acc"  # what every search maximises
MODE = "max"
EPOCHS = "epochs_total"  # cumulative training epochs (one epoch = one pass over train-minus-val)
SECONDS = "compute_s"  # cumulative seconds of training/evaluation work in the trial
DIVERGED_LOSS = 1e9  # finite stand-in for a NaN/inf loss
COMMON_COLUMNS = ("method", "seed", "preset", "val_acc", "val_loss", "test_acc", EPOCHS, SECONDS, "diverged")

# The one list of method names, in the order tables and plots show them: FDS, the greedy
# gradient-based methods, then the black-box searches.  The comparison, the curves and the
# plots all read it.
FDS_METHODS: tuple[str, ...] = ("fds",)
GREEDY_METHODS: tuple[str, ...] = ("hd", "greedy")
BLACK_BOX_METHODS: tuple[str, ...] = ("random", "hyperband", "bohb", "tpe", "optuna", "asha")
# Population-based training (Ray Tune's PBT and PB2): a population of runs whose hyperparameters
# change during training; the learned schedule is what the best final member followed.
POPULATION_METHODS: tuple[str, ...] = ("pbt", "pb2")
# Learning-rate-free optimizers, one run each: schedule-free SGD, D-Adaptation SGD, Prodigy.
LR_FREE_METHODS: tuple[str, ...] = ("schedulefree", "dadapt", "prodigy")
METHODS: tuple[str, ...] = FDS_METHODS + GREEDY_METHODS + BLACK_BOX_METHODS + POPULATION_METHODS + LR_FREE_METHODS


def diverged_metrics(num_classes: int) -> dict[str, float | bool]:
    """Metrics of a diverged run: chance accuracy, a huge finite loss."""
    chance = 1.0 / num_classes
    return {"val_acc": chance, "val_loss": DIVERGED_LOSS, "test_acc": chance, "diverged": True}


def finite_or(value: float, fallback: float) -> float:
    return value if math.isfinite(value) else fallback
