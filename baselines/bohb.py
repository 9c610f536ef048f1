"""BOHB (Falkner et al., 2018): HyperBand whose new configurations come from a KDE model.

Always ``TuneBOHB`` with ``HyperBandForBOHB`` (the registry refuses any other
pairing).  Three upstream problems are handled here:

* ``TuneBOHB(seed=...)`` seeds only the ConfigSpace; hpbandster draws from
  numpy's *global* RNG (whether to pick at random, KDE samples).
  :class:`SeededTuneBOHB` runs every call into hpbandster with numpy's global
  state swapped for its own, seeded from ``seed`` and restored afterwards, so
  suggestions reproduce and nobody else's numpy RNG is touched.
* ConfigSpace 1.x dropped quantized domains; the schedule space has none
  (:func:`baselines.space.check_no_quantized`).
* Ray Tune 2.60 tells the searcher nothing about a result on which the
  scheduler decides STOP, nor about a trial's final result (``done``): stock
  ``TuneBOHB`` never learns from trials stopped at a rung or trained to
  ``max_t``.  :class:`SeededTuneBOHB` records every result at a rung milestone
  itself, from ``on_trial_result`` and ``on_trial_complete``, once per trial and rung.
* ``TuneBOHB`` fails after ``Tuner.restore`` (its saved state is out of step
  with the restored trials: ``KeyError`` in ``trial_to_params``), and the
  HyperBand brackets are not checkpointed at all.  Resuming a BOHB experiment
  raises a ``RuntimeError`` that says so, from the searcher's ``restore`` and
  from the scheduler (:class:`BOHBHyperBand`).
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
from ray.tune.schedulers import HyperBandForBOHB
from ray.tune.search.bohb import BOHB, TuneBOHB

from fds_tune.validation import check_int, check_number, check_optional

from .hyperband import REDUCTION_FACTOR, RESUME_REFUSED, RefuseResume, check_reduction_factor, rung_milestones

NAME = "bohb"


def make(
    seed: int,
    max_epochs: int,
    *,
    reduction_factor: float = REDUCTION_FACTOR,
    min_points_in_model: int | None = None,
    random_fraction: float = 1 / 3,
):
    """:class:`SeededTuneBOHB` and :class:`BOHBHyperBand` with ``max_t = max_epochs``.

    ``min_points_in_model`` (default: dimensions + 1) and ``random_fraction``
    (share of suggestions drawn at random even once a model exists) are
    hpbandster's BOHB options, with its defaults.
    """
    check_reduction_factor(reduction_factor)
    check_optional("min_points_in_model", min_points_in_model, check_int, 1, rule="an int >= 1 or None")
    check_number("random_fraction", random_fraction, low=0, high=1, rule="a number in [0, 1]")
    bohb_config = {"min_points_in_model": min_points_in_model, "random_fraction": random_fraction}
    searcher = SeededTuneBOHB(seed, rung_milestones(max_epochs, reduction_factor), bohb_config=bohb_config)
    scheduler = BOHBHyperBand(time_attr="training_iteration", max_t=max_epochs, reduction_factor=reduction_factor)
    return searcher, scheduler


_BOHB_EXTRA = ", and TuneBOHB's restored state is out of step with the trials (KeyError in trial_to_params)"


class BOHBHyperBand(RefuseResume, HyperBandForBOHB):
    """``HyperBandForBOHB`` that refuses to resume (see the module docstring)."""

    resume_name = "BOHB"
    resume_extra = _BOHB_EXTRA


class _LoggedConfigGenerator:
    """hpbandster's BOHB config generator, remembering for each suggestion whether the KDE model made it."""

    def __init__(self, inner):
        self.inner = inner
        self.model_based_picks: list[bool] = []

    def get_config(self, budget):
        config, info = self.inner.get_config(budget)
        self.model_based_picks.append(bool(info.get("model_based_pick", False)))
        return config, info

    def new_result(self, job, update_model=True):
        return self.inner.new_result(job, update_model=update_model)


class _Job:
    """What hpbandster's ``new_result`` reads: the loss (minimised), the budget, the config."""

    exception = None

    def __init__(self, loss: float, budget: int, config: dict):
        self.result = {"loss": loss}
        self.kwargs = {"budget": budget, "config": dict(config)}


class SeededTuneBOHB(TuneBOHB):
    """``TuneBOHB`` that reproduces its suggestions from ``seed``, learns from every rung result,
    and logs which suggestions were model based.

    ``milestones``: the ``training_iteration`` values of the scheduler's rungs
    (:func:`~baselines.hyperband.rung_milestones`); a result there is an
    observation at that budget.  ``model_based[trial_id]`` is True when
    hpbandster's KDE model (not a random draw) proposed that trial's config.
    """

    def __init__(self, seed: int, milestones, **kwargs):
        check_int("seed", seed, 0)
        if BOHB is None:  # TuneBOHB itself only asserts
            raise ImportError("the 'bohb' baseline needs hpbandster and ConfigSpace: pip install hpbandster ConfigSpace")
        self._numpy_state = np.random.RandomState(seed).get_state()
        self.milestones = frozenset(milestones)
        self.model_based: dict[str, bool] = {}
        self._observed: set[tuple[str, int]] = set()
        super().__init__(seed=seed, **kwargs)

    def _setup_bohb(self):
        with self._own_numpy_rng():
            super()._setup_bohb()
        self.bohber = _LoggedConfigGenerator(self.bohber)

    def suggest(self, trial_id: str):
        self._raise_if_resumed()
        picks = self.bohber.model_based_picks
        before = len(picks)
        with self._own_numpy_rng():
            config = super().suggest(trial_id)
        if config is not None:
            self.model_based[trial_id] = len(picks) > before and picks[-1]
        return config

    def on_trial_result(self, trial_id: str, result: dict):
        self._raise_if_resumed()
        if trial_id not in self.paused:  # TuneBOHB's bookkeeping, without its hyperband_info path
            self.running.add(trial_id)
        self._observe(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if result is not None and not error:
            self._observe(trial_id, result)
        super().on_trial_complete(trial_id, result=result, error=error)

    def _observe(self, trial_id: str, result: dict) -> None:
        budget = result.get("training_iteration")
        key = (trial_id, budget)
        if budget not in self.milestones or key in self._observed or trial_id not in self.trial_to_params:
            return
        self._observed.add(key)
        job = _Job(self._metric_op * result[self.metric], budget, self.trial_to_params[trial_id])
        with self._own_numpy_rng(), warnings.catch_warnings():
            # statsmodels' KDEMultivariate warns that its default RNG will change; hpbandster's
            # KDEs (normal_reference bandwidths, not "efficient") never draw from it.
            warnings.filterwarnings("ignore", message="After 0.17 or January 2028", category=FutureWarning)
            self.bohber.new_result(job)

    def restore(self, checkpoint_path: str):
        """Called by ``Tuner.restore(...).fit()`` only: refuse, at the next call (Tune swallows errors raised here)."""
        self._resume_refused = RESUME_REFUSED.format(name="BOHB", extra=_BOHB_EXTRA)

    def _raise_if_resumed(self):
        if getattr(self, "_resume_refused", None):
            raise RuntimeError(self._resume_refused)

    @contextlib.contextmanager
    def _own_numpy_rng(self):
        outer = np.random.get_state()
        np.random.set_state(self._numpy_state)
        try:
            yield
        finally:
            self._numpy_state = np.random.get_state()
            np.random.set_state(outer)
