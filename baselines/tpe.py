"""TPE (Bergstra et al., 2011) through hyperopt's ``HyperOptSearch``; every trial gets the full budget."""
from __future__ import annotations

from fds_tune.validation import check_int

NAME = "tpe"


def make(seed: int, max_epochs: int, *, n_initial_points: int = 20):
    """``HyperOptSearch(random_state_seed=seed)``; the first ``n_initial_points`` (hyperopt's default 20) are random."""
    try:
        import hyperopt  # noqa: F401  (HyperOptSearch only asserts that it imported)
    except ImportError as err:
        raise ImportError("the 'tpe' baseline needs hyperopt: pip install hyperopt") from err
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.hyperopt import HyperOptSearch

    check_int("n_initial_points", n_initial_points, 1)
    return HyperOptSearch(random_state_seed=seed, n_initial_points=n_initial_points), FIFOScheduler()
