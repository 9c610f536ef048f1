"""HyperBand (Li et al., 2018): random configurations, successive halving over brackets.

Resuming: Ray Tune does not checkpoint a scheduler, and HyperBand's brackets
live only in its memory.  After ``Tuner.restore`` the restored trials join
fresh brackets that never unpause them, and the run hangs.  The schedulers here
(:class:`HyperBand`, and ``bohb``'s) refuse restored trials with a clear error.
"""
from __future__ import annotations

import math

from ray.tune.schedulers import HyperBandScheduler

from fds_tune.validation import check_number

NAME = "hyperband"
REDUCTION_FACTOR = 3  # eta: keep the best 1/3 at each rung, HyperBand's own default

RESUME_REFUSED = (
    "cannot resume a {name} experiment: Ray Tune does not checkpoint "
    "the HyperBand scheduler's brackets, so after Tuner.restore its paused trials are never resumed and "
    "the run hangs{extra}. Start a new experiment; the interrupted one's results stay readable with "
    "ray.tune.ExperimentAnalysis(path)."
)


def make(seed: int, max_epochs: int, dims: int, *, reduction_factor: float = REDUCTION_FACTOR):
    """``BasicVariantGenerator`` seeded with ``seed``; :class:`HyperBand` with ``max_t = max_epochs``.

    Every trial is a random draw (``model_based`` False); ``dims`` is not needed.
    """
    from ray.tune.search.basic_variant import BasicVariantGenerator

    check_reduction_factor(reduction_factor)
    scheduler = HyperBand(time_attr="training_iteration", max_t=max_epochs, reduction_factor=reduction_factor)
    return BasicVariantGenerator(random_state=seed), scheduler


def rung_milestones(max_t: int, eta: float) -> frozenset[int]:
    """Every value of ``training_iteration`` at which one of HyperBand's brackets compares trials.

    Ray Tune's brackets: ``s_max + 1 = round(log(max_t) / log(eta)) + 1`` brackets;
    bracket ``s`` starts at ``r = int(max_t eta^-s)`` (skipped when 0) and halves
    ``s`` times, each time ``r = int(min(r eta, max_t))``.
    """
    rungs = set()
    for s in range(int(round(math.log(max_t) / math.log(eta))) + 1):
        r = int(max_t * eta**-s)
        if r == 0:
            continue
        rungs.add(r)
        for _ in range(s):
            r = int(min(r * eta, max_t))
            rungs.add(r)
    return frozenset(rungs)


def check_reduction_factor(value) -> float:
    """HyperBand's ``eta``, shared by ``hyperband``, ``bohb`` and ``asha``."""
    return check_number("reduction_factor", value, low=1, low_open=True, finite=False, rule="a number > 1")


class RefuseResume:
    """Scheduler mixin: a clear error instead of a hang when ``Tuner.restore`` re-adds trials that already ran.

    Tune logs and swallows errors raised while it restores an experiment (and
    then carries on half restored), so the refusal is recorded there and raised
    at the next scheduling call, which propagates out of ``Tuner.fit``.
    """

    resume_name = "HyperBand"
    resume_extra = ""
    _resume_refused: str | None = None

    def on_trial_add(self, tune_controller, trial):
        if trial.has_reported_at_least_once:
            refused = RESUME_REFUSED.format(name=self.resume_name, extra=self.resume_extra)
            self._resume_refused = f"{refused} (restored trial {trial.trial_id} has results already)"
            return
        super().on_trial_add(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller, *args, **kwargs):
        if self._resume_refused:
            raise RuntimeError(self._resume_refused)
        return super().choose_trial_to_run(tune_controller, *args, **kwargs)


class HyperBand(RefuseResume, HyperBandScheduler):
    """``HyperBandScheduler`` that refuses to resume (see the module docstring)."""
