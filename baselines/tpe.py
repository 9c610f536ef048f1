"""TPE (Bergstra et al., 2011) through hyperopt's ``HyperOptSearch``; every trial gets the full budget.

Random phase.  hyperopt's ``tpe.suggest(..., n_startup_jobs)`` draws at random
while it knows fewer than ``n_startup_jobs`` trials, counting every trial it
suggested that has not failed (``Trials.trials``: new, running or done, one per
``tid``), whether or not its result is in.  hyperopt's default is 20 (Ray's
``HyperOptSearch(n_initial_points=20)``): runs of 12-17 trials never left it.
Here ``n_initial_points`` defaults to :func:`~baselines.space.random_phase`,
``dims + 1`` (8 for the 7-dim digits space, leaving 4-8 of 12-16 trials, and
8-16 of fashion_mnist's 16-24, to the model), as for ``optuna`` and ``bohb``;
``random_phase`` says why.  As hyperopt counts trials still running, with
trials in parallel its model may start before ``dims + 1`` results are in.

Model based or not.  :class:`LabelledHyperOptSearch` applies hyperopt's own test
(:func:`tpe_uses_model`) to the very ``Trials`` that ``tpe.suggest`` receives,
when it receives them, and adds ``model_based`` to each config it suggests
(:func:`~baselines.schedule_run.labelled`: a new dict; hyperopt's trial document
and its mapping from Tune's trial ids are untouched).
"""
from __future__ import annotations

from ray.tune.search.hyperopt import HyperOptSearch

from fds_tune.validation import check_int, check_optional

from .schedule_run import labelled
from .space import random_phase

NAME = "tpe"


def make(seed: int, max_epochs: int, dims: int, *, n_initial_points: int | None = None):
    """:class:`LabelledHyperOptSearch` seeded with ``seed``, and FIFO scheduling.

    The first ``n_initial_points`` trials are random (default ``dims + 1``; hyperopt's is 20).
    """
    try:
        import hyperopt  # noqa: F401  (HyperOptSearch only asserts that it imported)
    except ImportError as err:
        raise ImportError("the 'tpe' baseline needs hyperopt: pip install hyperopt") from err
    from ray.tune.schedulers import FIFOScheduler

    check_optional("n_initial_points", n_initial_points, check_int, 1, rule="an int >= 1 or None")
    n = random_phase(dims) if n_initial_points is None else n_initial_points
    return LabelledHyperOptSearch(random_state_seed=seed, n_initial_points=n), FIFOScheduler()


def tpe_uses_model(trials, n_startup_jobs: int) -> bool:
    """hyperopt's test in ``tpe.suggest``: the model proposes once ``n_startup_jobs`` trials are known.

    Known: in ``trials.trials`` (hyperopt drops failed trials from it), counted
    once per ``misc["from_tid"]``, else ``tid``, finished or not.
    """
    return len({doc["misc"].get("from_tid", doc["tid"]) for doc in trials.trials}) >= n_startup_jobs


class _NotingPhase:
    """hyperopt's ``tpe.suggest`` (as ``HyperOptSearch.algo``), noting whether each call used the model."""

    def __init__(self, algo, n_startup_jobs: int):
        self.algo, self.n_startup_jobs = algo, n_startup_jobs
        self.model_based: bool | None = None

    def __call__(self, new_ids, domain, trials, seed):
        self.model_based = tpe_uses_model(trials, self.n_startup_jobs)
        return self.algo(new_ids, domain, trials, seed)


class LabelledHyperOptSearch(HyperOptSearch):
    """``HyperOptSearch`` whose suggestions carry ``model_based``: whether TPE's model (not a random draw) made them.

    ``model_based[trial_id]`` holds the same label per trial.
    """

    def __init__(self, *, random_state_seed: int, n_initial_points: int):
        super().__init__(random_state_seed=random_state_seed, n_initial_points=n_initial_points)
        self.n_initial_points = n_initial_points
        self.algo = _NotingPhase(self.algo, n_initial_points)
        self.model_based: dict[str, bool] = {}

    def suggest(self, trial_id: str):
        self.algo.model_based = False  # stays False for a point to evaluate (given, not drawn)
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            self.model_based[trial_id] = self.algo.model_based
        return labelled(config, self.algo.model_based)
