"""BOHB (Falkner et al., 2018): HyperBand whose new configurations come from a KDE model.

Always ``TuneBOHB`` with ``HyperBandForBOHB`` (the registry refuses any other
pairing).

Random phase.  hpbandster fits a budget's model (a "good" and a "bad" KDE) once
it has ``min_points_in_model`` results in each set at that budget; until then,
and for a share ``random_fraction`` of suggestions afterwards, it draws at
random.  hpbandster's default, and its *minimum*, is ``dims + 1`` (the paper's
``N_min = d + 1``): it raises a smaller value to it with a warning, and neither
it nor statsmodels' KDE fits a set of ``dims`` points or fewer.  That is
``2 (dims + 1)`` results at one budget, 16 in the 7-dim digits space, whose runs
of 12-16 trials never got a model.  Here the default is half of
:func:`~baselines.space.random_phase`, ``ceil((dims + 1) / 2)`` (at least 2):
the first model comes after ``dims + 1`` results at a budget, as TPE's does
(``tpe``, ``optuna``); and a value given is used as given.  The KDE is the same
product of one-dimensional Gaussian kernels with normal-reference bandwidths
(:class:`ProductKDE`, equal to statsmodels' where both apply), which is defined
for any two or more points: fewer than ``dims + 1`` only make it cruder.
``random_fraction`` stays at hpbandster's (and the paper's) 1/3, and
``top_n_percent`` at 15 (with the few results per budget here, 15% of them is
below ``min_points_in_model``: the good set is the best ``min_points_in_model``).

Model based or not: hpbandster's own flag (``info["model_based_pick"]`` from
``get_config``), added to each suggested config as ``model_based``.

Upstream problems handled here:

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
import math

import numpy as np
from ray.tune.schedulers import HyperBandForBOHB
from ray.tune.search.bohb import BOHB, TuneBOHB

from fds_tune.validation import check, check_int, check_number, check_optional

from .hyperband import REDUCTION_FACTOR, RESUME_REFUSED, RefuseResume, check_reduction_factor, rung_milestones
from .schedule_run import labelled
from .space import random_phase

NAME = "bohb"


def make(
    seed: int,
    max_epochs: int,
    dims: int,
    *,
    reduction_factor: float = REDUCTION_FACTOR,
    min_points_in_model: int | None = None,
    random_fraction: float = 1 / 3,
):
    """:class:`SeededTuneBOHB` and :class:`BOHBHyperBand` with ``max_t = max_epochs``.

    ``min_points_in_model``: results needed in each of the good and bad sets
    at a budget before its model is fitted (default ``ceil((dims + 1) / 2)``,
    at least 2; hpbandster's is ``dims + 1``).  ``random_fraction``: share of
    suggestions drawn at random even once a model exists (hpbandster's 1/3).
    """
    check_reduction_factor(reduction_factor)
    check_optional("min_points_in_model", min_points_in_model, check_int, 2, rule="an int >= 2 or None")
    check_number("random_fraction", random_fraction, low=0, high=1, rule="a number in [0, 1]")
    if min_points_in_model is None:
        min_points_in_model = max(2, math.ceil(random_phase(dims) / 2))
    searcher = SeededTuneBOHB(
        seed, rung_milestones(max_epochs, reduction_factor), min_points_in_model=min_points_in_model, random_fraction=random_fraction
    )
    scheduler = BOHBHyperBand(time_attr="training_iteration", max_t=max_epochs, reduction_factor=reduction_factor)
    return searcher, scheduler


_BOHB_EXTRA = ", and TuneBOHB's restored state is out of step with the trials (KeyError in trial_to_params)"


class BOHBHyperBand(RefuseResume, HyperBandForBOHB):
    """``HyperBandForBOHB`` that refuses to resume (see the module docstring)."""

    resume_name = "BOHB"
    resume_extra = _BOHB_EXTRA


class ProductKDE:
    """The density hpbandster fits to a set of points in ``[0, 1]^d``, for any ``n >= 2`` points.

    A product of Gaussian kernels with normal-reference bandwidths
    ``h_j = max(1.06 sigma_j n^(-1/(4+d)), min_bandwidth)``::

        p(x) = 1/n sum_i prod_j phi((x_j - X_ij) / h_j) / h_j

    which is statsmodels' ``KDEMultivariate(var_type="c" * d, bw="normal_reference")``
    with hpbandster's bandwidth clip; statsmodels refuses ``n <= d`` points.
    ``data``, ``bw`` and ``pdf`` are what hpbandster's ``get_config`` reads.
    """

    def __init__(self, data, min_bandwidth: float):
        self.data = np.asarray(data, dtype=float)
        n, d = self.data.shape
        self.bw = np.clip(1.06 * self.data.std(axis=0) * n ** (-1.0 / (4 + d)), min_bandwidth, None)

    def pdf(self, x) -> float:
        z = (np.asarray(x, dtype=float) - self.data) / self.bw
        return float(np.mean(np.prod(np.exp(-0.5 * z**2) / (np.sqrt(2 * np.pi) * self.bw), axis=1)))


class _ConfigGenerator:
    """hpbandster's BOHB config generator ``inner``, with ``min_points_in_model`` used as given,
    remembering for each suggestion whether the KDE model made it.

    hpbandster records each result (``inner.new_result(job, update_model=False)``
    does all but the fit); :meth:`_fit` is hpbandster's fit with one change: it
    needs ``min_points_in_model`` points in each of the good and bad sets, where
    hpbandster (and statsmodels' KDE) need more than ``dims``; hence
    :class:`ProductKDE`.  With ``min_points_in_model = dims + 1`` the two fits agree.
    """

    def __init__(self, inner, min_points_in_model: int):
        check("BOHB's variable types", inner.kde_vartypes, set(inner.kde_vartypes) <= {"c"}, "continuous only ('c')")
        self.inner = inner
        inner.min_points_in_model = min_points_in_model  # hpbandster's is dims + 1, and it raises a smaller one to that
        self.model_based_picks: list[bool] = []

    def get_config(self, budget):
        config, info = self.inner.get_config(budget)
        self.model_based_picks.append(bool(info.get("model_based_pick", False)))
        return config, info

    def new_result(self, job, update_model=True):
        self.inner.new_result(job, update_model=False)
        if update_model:
            self._fit(job.kwargs["budget"])

    def _fit(self, budget):
        g = self.inner
        if max([*g.kde_models, -np.inf]) > budget:  # once a larger budget has a model, smaller ones are frozen
            return
        configs, losses = np.array(g.configs[budget]), np.array(g.losses[budget])
        m, n = g.min_points_in_model, len(losses)
        n_good = max(m, g.top_n_percent * n // 100)
        n_bad = max(m, (100 - g.top_n_percent) * n // 100)
        order = np.argsort(losses)
        sets = {"good": configs[order[:n_good]], "bad": configs[order[n_good : n_good + n_bad]]}
        if min(len(points) for points in sets.values()) < m:
            return
        g.kde_models[budget] = {name: ProductKDE(g.impute_conditional_data(points), g.min_bandwidth) for name, points in sets.items()}


class _Job:
    """What hpbandster's ``new_result`` reads: the loss (minimised), the budget, the config."""

    exception = None

    def __init__(self, loss: float, budget: int, config: dict):
        self.result = {"loss": loss}
        self.kwargs = {"budget": budget, "config": dict(config)}


class SeededTuneBOHB(TuneBOHB):
    """``TuneBOHB`` that reproduces its suggestions from ``seed``, learns from every rung result,
    and labels each suggestion ``model_based``.

    ``milestones``: the ``training_iteration`` values of the scheduler's rungs
    (:func:`~baselines.hyperband.rung_milestones`); a result there is an
    observation at that budget.  ``min_points_in_model`` and ``random_fraction``:
    see :func:`make`.  Each suggested config carries ``model_based``, True when
    hpbandster's KDE model (not a random draw) proposed it; ``model_based[trial_id]``
    holds the same label per trial.
    """

    def __init__(self, seed: int, milestones, *, min_points_in_model: int, random_fraction: float = 1 / 3, **kwargs):
        check_int("seed", seed, 0)
        if BOHB is None:  # TuneBOHB itself only asserts
            raise ImportError("the 'bohb' baseline needs hpbandster and ConfigSpace: pip install hpbandster ConfigSpace")
        self._numpy_state = np.random.RandomState(seed).get_state()
        self.milestones = frozenset(milestones)
        self.min_points_in_model = check_int("min_points_in_model", min_points_in_model, 2)
        self.model_based: dict[str, bool] = {}
        self._observed: set[tuple[str, int]] = set()
        super().__init__(seed=seed, bohb_config={"random_fraction": random_fraction}, **kwargs)

    def _setup_bohb(self):
        with self._own_numpy_rng():
            super()._setup_bohb()
        self.bohber = _ConfigGenerator(self.bohber, self.min_points_in_model)

    def suggest(self, trial_id: str):
        self._raise_if_resumed()
        picks = self.bohber.model_based_picks
        before = len(picks)
        with self._own_numpy_rng():
            config = super().suggest(trial_id)
        if config is None:
            return None
        self.model_based[trial_id] = len(picks) > before and picks[-1]
        return labelled(config, self.model_based[trial_id])

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
        with self._own_numpy_rng():
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
