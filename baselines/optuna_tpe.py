"""Optuna's TPE sampler through ``OptunaSearch``; every trial gets the full budget."""
from __future__ import annotations

NAME = "optuna"


def make(seed: int, max_epochs: int, *, n_startup_trials: int = 10):
    """``OptunaSearch`` with ``TPESampler(seed=seed)``; the first ``n_startup_trials`` (Optuna's default 10) are random."""
    try:
        import optuna
    except ImportError as err:
        raise ImportError("the 'optuna' baseline needs optuna: pip install optuna") from err
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    if isinstance(n_startup_trials, bool) or not isinstance(n_startup_trials, int) or n_startup_trials < 0:
        raise ValueError(f"n_startup_trials: got {n_startup_trials!r}; must be an int >= 0")
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    return OptunaSearch(sampler=sampler), FIFOScheduler()
