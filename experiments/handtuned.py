"""A strong hand-tuned reference: SGD, momentum 0.9, cosine-decayed lr chosen on a grid.

Used to judge FDS's learned schedules under the same epoch budget: each lr of
the grid is trained on the training set minus the validation split, the lr with
the best validation accuracy is chosen, then retrained from scratch on the full
training set (as FDS's learned schedule is) and tested.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fds_tune import Problem, Schedule, train
from fds_tune.functional_model import FunctionalModel
from fds_tune.problem import RETRAIN_DRAW  # the same initialisation and batches as every hand-over
from fds_tune.validation import check, check_int, check_number, check_optional, is_number

__all__ = ["cosine_schedule", "hand_tuned"]


def cosine_schedule(lr: float, momentum: float, weight_decay: float, horizon: int) -> Schedule:
    """One lr value per step: ``lr * (1 + cos(pi t / T)) / 2``."""
    return Schedule(
        lr=[lr * 0.5 * (1 + math.cos(math.pi * t / horizon)) for t in range(horizon)],
        momentum=[momentum],
        weight_decay=[weight_decay],
    )


def _fit(problem: Problem, schedule_for, epochs: int, idx, draw: int, grad_clamp):
    n = problem.n_train if idx is None else len(idx)
    horizon = epochs * problem.steps_per_epoch(n)
    model = problem.model(draw)  # the grid trains draw 0, the retraining RETRAIN_DRAW: the hand-over every method gets
    batches = problem.steps(idx, 0, horizon, handover=idx is None)
    run = train(model, schedule_for(horizon), batches, horizon=horizon, grad_clamp=grad_clamp)
    fm = FunctionalModel(model, torch.nn.functional.cross_entropy)
    return run, fm, fm.flatten(run.params)


def hand_tuned(
    problem: Problem,
    epochs: int,
    lrs: Sequence[float] = (0.01, 0.03, 0.1, 0.3),
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    grad_clamp: float | None = None,
) -> dict:
    """Grid-search the peak lr of a cosine schedule on validation accuracy; retrain the best; test it.

    Returns ``grid`` (``lr``, ``val_acc`` of each grid point; a diverged run scores 0), ``best_lr``,
    ``test_acc`` of the retrained best and the fixed ``momentum``, ``weight_decay`` and ``epochs``.
    """
    check("problem", problem, isinstance(problem, Problem), "a fds_tune.Problem")
    check_int("epochs", epochs, minimum=1)
    finite_positive = isinstance(lrs, (list, tuple)) and all(is_number(lr) and 0 < lr < math.inf for lr in lrs)
    check("lrs", lrs, finite_positive and len(lrs) > 0, "a non-empty list of finite numbers > 0")
    check_number("momentum", momentum, low=0, high=1, high_open=True)
    check_number("weight_decay", weight_decay, low=0)
    check_optional("grad_clamp", grad_clamp, check_number, low=0, low_open=True)
    train_idx, val_idx = problem.split(0)
    grid = []
    for lr in lrs:
        run, fm, theta = _fit(problem, lambda T: cosine_schedule(lr, momentum, weight_decay, T), epochs, train_idx, 0, grad_clamp)
        val_acc = 0.0 if run.diverged else fm.evaluate(theta, run.buffers, problem.eval_batches(val_idx))[1]
        grid.append({"lr": lr, "val_acc": val_acc})
    best = max(grid, key=lambda r: r["val_acc"])
    run, fm, theta = _fit(
        problem, lambda T: cosine_schedule(best["lr"], momentum, weight_decay, T), epochs, None, RETRAIN_DRAW, grad_clamp
    )
    test_acc = 0.0 if run.diverged else fm.evaluate(theta, run.buffers, problem.test_batches())[1]
    return {"grid": grid, "best_lr": best["lr"], "momentum": momentum, "weight_decay": weight_decay, "epochs": epochs, "test_acc": test_acc}
