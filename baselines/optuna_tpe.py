"""Optuna's TPE sampler through ``OptunaSearch``; every trial gets the full budget."""
from __future__ import annotations

from fds_tune.validation import check_int

NAME = "optuna"


def make(seed: int, max_epochs: int, *, n_startup_trials: int = 10):
    """``OptunaSearch`` with ``TPESampler(seed=seed)``; the first ``n_startup_trials`` (Optuna's default 10) are random."""
    try:
        import optuna
    except ImportError as err:
        raise ImportError("the 'optuna' baseline needs optuna: pip install optuna") from err
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    check_int("n_startup_trials", n_startup_trials, 0)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    return OptunaSearch(sampler=sampler), FIFOScheduler()
