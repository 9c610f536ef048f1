"""Optuna's TPE sampler through ``OptunaSearch``; every trial gets the full budget.

Random phase.  ``TPESampler`` samples at random while the study holds fewer than
``n_startup_trials`` finished trials (states COMPLETE or PRUNED; trials still
running do not count), and from its model from then on (with Optuna 5.0's
defaults, the multivariate TPE, with the constant liar for running trials).
Optuna's default is 10, whatever the dimension: 2-6 model-based trials in runs of
12-16.  Here ``n_startup_trials`` defaults to :func:`~baselines.space.random_phase`,
``dims + 1`` (8 for the 7-dim digits space), as for ``tpe`` and ``bohb``;
``random_phase`` says why.  It must be at least 1: with 0 the first trial would
come from TPE's prior alone.

Model based or not.  :class:`LabelledOptunaSearch` applies Optuna's test
(:func:`tpe_uses_model`) to the study just before ``OptunaSearch`` asks it for
the trial (nothing finishes in between), and adds ``model_based`` to the config
it suggests (a new dict: ``OptunaSearch`` maps results back by Tune's trial id).
"""
from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch

from fds_tune.validation import check_int, check_optional

from .schedule_run import labelled
from .space import random_phase

NAME = "optuna"


def make(seed: int, max_epochs: int, dims: int, *, n_startup_trials: int | None = None):
    """:class:`LabelledOptunaSearch` with ``TPESampler(seed=seed)``, and FIFO scheduling.

    The first ``n_startup_trials`` finished trials are random (default ``dims + 1``; Optuna's is 10).
    """
    try:
        import optuna
    except ImportError as err:
        raise ImportError("the 'optuna' baseline needs optuna: pip install optuna") from err
    from ray.tune.schedulers import FIFOScheduler

    check_optional("n_startup_trials", n_startup_trials, check_int, 1, rule="an int >= 1 or None")
    n = random_phase(dims) if n_startup_trials is None else n_startup_trials
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n)
    return LabelledOptunaSearch(sampler=sampler, n_startup_trials=n), FIFOScheduler()


def tpe_uses_model(study, n_startup_trials: int) -> bool:
    """``TPESampler``'s test: its model proposes once ``n_startup_trials`` trials of ``study`` are COMPLETE or PRUNED."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))) >= n_startup_trials


class LabelledOptunaSearch(OptunaSearch):
    """``OptunaSearch`` whose suggestions carry ``model_based``: whether the TPE sampler's model made them.

    ``n_startup_trials`` must be the sampler's.  ``model_based[trial_id]`` holds the same label per trial.
    """

    def __init__(self, *, sampler, n_startup_trials: int):
        super().__init__(sampler=sampler)
        self.n_startup_trials = n_startup_trials
        self.model_based: dict[str, bool] = {}

    def suggest(self, trial_id: str):
        # OptunaSearch asks the study for a trial on the first suggest for trial_id only.
        first = trial_id not in self.model_based and self._ot_study is not None
        model_based = tpe_uses_model(self._ot_study, self.n_startup_trials) if first else None
        config = super().suggest(trial_id)
        if first:
            self.model_based[trial_id] = model_based
        return labelled(config, self.model_based.get(trial_id, False))
