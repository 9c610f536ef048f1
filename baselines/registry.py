"""The black-box baselines behind one interface, and the Ray Tune run that uses them.

Each method is a short module exposing ``NAME`` and ``make(seed, max_epochs,
dims, **options) -> (search_alg, scheduler)``; ``dims`` is the space's dimension,
to which the model-based methods scale their random phase.  A :class:`Baseline`
turns that into a :class:`TuneSetup`: exactly what Ray Tune needs (trainable,
param space, search algorithm, scheduler, metric/mode, number of samples).  ``metric``/``mode`` are
given to ``tune.TuneConfig`` only, never to a searcher or scheduler.

Budget: every trial trains at most ``max_epochs`` epochs (the schedule spans
them; HyperBand/BOHB/ASHA use ``max_t = max_epochs``), so a run uses at most
``num_samples * max_epochs`` epochs; ``budget_epochs`` caps the total further
(:class:`EpochBudget`).  Every result carries the compute consumed so far
(``epochs_total``, ``compute_s``).

Seeds: ``seed`` seeds the search method (its suggestions); the problem's own
seed (network initialisation, split, batch order) is in ``ProblemConfig``.

Every result carries ``model_based``: whether a searcher's model, not a random
draw, proposed the trial (always False for ``random``, ``hyperband``, ``asha``).
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search import Searcher

from fds_tune import ProblemConfig
from fds_tune.results import EPOCHS, METRIC, MODE
from fds_tune.validation import check_int, check_number, fail

from . import asha, bohb, hyperband, optuna_tpe, pbt, random_search, tpe
from .pbt import PBTTrainable, member_space
from .space import SpaceConfig, check_no_quantized, param_space
from .schedule_run import ScheduleTrainable, base_config

__all__ = ["Baseline", "TuneSetup", "EpochBudget", "BASELINES", "get_baseline", "run_baseline", "check_pairing"]

BUILT_OPTIONS = ("ranges",)  # keyword arguments of ``make`` that ``build`` supplies from the space, not options


@dataclass(frozen=True)
class TuneSetup:
    """Everything one Ray Tune run of a baseline needs.

    The search algorithm and scheduler are stateful: build a new setup for every run.
    """

    method: str
    trainable: type
    param_space: Mapping[str, Any]
    search_alg: Any
    scheduler: Any
    num_samples: int
    max_epochs: int
    metric: str = METRIC
    mode: str = MODE

    def __post_init__(self):
        check_pairing(self.search_alg, self.scheduler)
        check_no_quantized(self.param_space)
        check_int("num_samples", self.num_samples, 1)
        check_int("max_epochs", self.max_epochs, 1)

    def tuner(
        self,
        *,
        storage_path: str | os.PathLike,
        name: str | None = None,
        budget_epochs: float | None = None,
        callbacks: Iterable[tune.Callback] = (),
        resources_per_trial: Mapping[str, float] | None = None,
        max_concurrent_trials: int | None = None,
        reuse_actors: bool = True,
        checkpoint_frequency: int = 0,
        max_failures: int = 0,
        verbose: int = 0,
    ) -> tune.Tuner:
        """A ``tune.Tuner`` for this setup.

        ``storage_path`` must be absolute (Ray Tune fails on relative ones).
        ``max_concurrent_trials`` applies to model-based searchers only (bohb,
        tpe, optuna): with it set to 1 their suggestions reproduce exactly,
        since results then arrive in a fixed order.  The random-sampling methods
        draw independently of results, so they reproduce at any parallelism;
        limit their parallelism with ``resources_per_trial``.
        ``checkpoint_frequency=1`` with ``max_failures > 0`` lets a trial whose
        worker died continue from its last epoch (HyperBand/BOHB checkpoint on
        every pause regardless).
        """
        if not Path(storage_path).is_absolute():
            raise ValueError(f"storage_path: got {str(storage_path)!r}; must be an absolute path (Ray Tune fails on relative ones)")
        if max_concurrent_trials is not None:
            check_int("max_concurrent_trials", max_concurrent_trials, 1)
            if not isinstance(self.search_alg, Searcher):
                raise ValueError(
                    f"max_concurrent_trials: got {max_concurrent_trials} for method {self.method!r}, whose "
                    f"{type(self.search_alg).__name__} Tune cannot limit; use resources_per_trial instead"
                )
        stop = EpochBudget(budget_epochs) if budget_epochs is not None else None
        trainable = tune.with_resources(self.trainable, dict(resources_per_trial or {"cpu": 1}))
        return tune.Tuner(
            trainable,
            param_space=dict(self.param_space),
            tune_config=tune.TuneConfig(
                metric=self.metric,
                mode=self.mode,
                search_alg=self.search_alg,
                scheduler=self.scheduler,
                num_samples=self.num_samples,
                max_concurrent_trials=max_concurrent_trials,
                reuse_actors=reuse_actors,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage_path),
                stop=stop,
                callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), *callbacks],
                checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=checkpoint_frequency),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                verbose=verbose,
            ),
        )


@dataclass(frozen=True)
class Baseline:
    """One black-box method: its name and ``make(seed, max_epochs, dims, **options) -> (search_alg, scheduler)``."""

    name: str
    make: Callable[..., tuple[Any, Any]]
    summary: str = ""
    trainable: type = ScheduleTrainable  # a trial: one fixed schedule, or a population member (PBTTrainable)
    space_of: Callable[[SpaceConfig], SpaceConfig] | None = None  # the space a trial draws from (None: the search space)
    options: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        params = inspect.signature(self.make).parameters.values()
        keyword = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
        object.__setattr__(self, "options", tuple(k for k in keyword if k not in BUILT_OPTIONS))

    def build(
        self,
        space: SpaceConfig | None = None,
        problem: ProblemConfig | None = None,
        *,
        max_epochs: int,
        num_samples: int,
        seed: int,
        grad_clamp: float | None = None,
        options: Mapping[str, Any] | None = None,
        preset: str | None = None,
    ) -> TuneSetup:
        """The :class:`TuneSetup` that searches ``space`` on ``problem``.

        ``seed`` seeds the search method; ``make`` also gets ``space.dims`` (the
        model-based methods scale their random phase to it); ``options`` go to
        this method's ``make`` (see :attr:`options` for the names it takes);
        ``preset`` is the label every trial's results carry (the FDS preset the
        problem came from).
        """
        space = SpaceConfig() if space is None else space
        problem = ProblemConfig() if problem is None else problem
        if not isinstance(space, SpaceConfig):
            fail("space", space, "a SpaceConfig")
        if not isinstance(problem, ProblemConfig):
            fail("problem", problem, "a ProblemConfig")
        check_int("max_epochs", max_epochs, 1)
        check_int("seed", seed, 0)
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            fail("options", unknown[0], f"an option of method {self.name!r}, one of {list(self.options)}")
        space = self.space_of(space) if self.space_of is not None else space
        built = {"ranges": space.ranges} if "ranges" in inspect.signature(self.make).parameters else {}
        search_alg, scheduler = self.make(seed, max_epochs, space.dims, **built, **options)
        constants = base_config(problem, max_epochs=max_epochs, grad_clamp=grad_clamp, method=self.name, preset=preset)
        return TuneSetup(
            method=self.name,
            trainable=self.trainable,
            param_space={**constants, **param_space(space)},
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=num_samples,
            max_epochs=max_epochs,
        )


class EpochBudget(tune.Stopper):
    """Stop the experiment once its trials have trained ``budget`` epochs in total.

    Counts each trial's latest ``epochs_total``.  Trials already running when the
    budget is reached finish the epoch they are in, so the total can exceed the
    budget by less than one epoch per concurrently running trial.
    """

    def __init__(self, budget: float):
        check_number("budget_epochs", budget, low=0, low_open=True, finite=False, rule="a positive number")
        self.budget = budget
        self._epochs: dict[str, float] = {}

    @property
    def used(self) -> float:
        return sum(self._epochs.values())

    def __call__(self, trial_id: str, result: dict) -> bool:
        self._epochs[trial_id] = result.get(EPOCHS, self._epochs.get(trial_id, 0.0))
        return self.used >= self.budget

    def stop_all(self) -> bool:
        return self.used >= self.budget


def check_pairing(search_alg: Any, scheduler: Any) -> None:
    """BOHB's searcher and scheduler only work together: TuneBOHB <=> HyperBandForBOHB."""
    from ray.tune.schedulers import HyperBandForBOHB
    from ray.tune.search.bohb import TuneBOHB

    searcher = getattr(search_alg, "searcher", search_alg)  # unwrap SearchGenerator / ConcurrencyLimiter
    bohb_searcher, bohb_scheduler = isinstance(searcher, TuneBOHB), isinstance(scheduler, HyperBandForBOHB)
    if bohb_searcher != bohb_scheduler:
        raise ValueError(
            f"search_alg/scheduler: got {type(searcher).__name__} with {type(scheduler).__name__}; "
            "TuneBOHB must be paired with HyperBandForBOHB, and HyperBandForBOHB with TuneBOHB"
        )


def _trial_dirname(trial) -> str:
    return str(trial)  # "ScheduleTrainable_<id>", not Tune's default of every config value


def _summary(module) -> str:
    return (module.__doc__ or "").strip().splitlines()[0]


BASELINES: dict[str, Baseline] = {
    **{m.NAME: Baseline(m.NAME, m.make, _summary(m)) for m in (random_search, hyperband, bohb, tpe, optuna_tpe, asha)},
    # the population methods: a trial is a member whose values change during training
    **{name: Baseline(name, make, _summary(pbt), PBTTrainable, member_space) for name, make in pbt.MAKERS.items()},
}


def get_baseline(name: str) -> Baseline:
    if name not in BASELINES:
        fail("method", name, f"one of {list(BASELINES)}")
    return BASELINES[name]


def run_baseline(
    method: str,
    *,
    space: SpaceConfig | None = None,
    problem: ProblemConfig | None = None,
    max_epochs: int,
    num_samples: int,
    seed: int,
    storage_path: str | os.PathLike,
    name: str | None = None,
    grad_clamp: float | None = None,
    options: Mapping[str, Any] | None = None,
    **tuner_kwargs: Any,
) -> tune.ResultGrid:
    """Build baseline ``method`` and run it through ``tune.Tuner``; returns the ``ResultGrid``.

    ``tuner_kwargs`` go to :meth:`TuneSetup.tuner` (``budget_epochs``,
    ``callbacks``, ``resources_per_trial``, ``max_concurrent_trials``,
    ``reuse_actors``, ``checkpoint_frequency``, ``max_failures``, ``verbose``).  Needs a running Ray (``ray.init``) or starts one.
    """
    setup = get_baseline(method).build(
        space, problem, max_epochs=max_epochs, num_samples=num_samples, seed=seed, grad_clamp=grad_clamp, options=options
    )
    return setup.tuner(storage_path=storage_path, name=name or method, **tuner_kwargs).fit()
