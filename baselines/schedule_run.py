"""Train the network with one fixed schedule, one epoch per Tune step: the black-box baselines' trial.

:class:`ScheduleRun` is the whole trial (a :class:`~fds_tune.run.TrainingRun`:
plain Python, testable without Ray); :class:`ScheduleTrainable` is the one Ray
Tune shell (:class:`~fds_tune.trainable.RunTrainable`) around it.

A trial trains exactly what FDS trains: the same :class:`~fds_tune.problem.Problem`
(data, fixed split ``problem.split(0)``, seeded network, batch size) and the same
plain SGD step as :func:`fds_tune.engine.train` (equal to ``torch.optim.SGD`` step
for step).  The schedule spans the *maximum* budget, ``max_epochs`` epochs: step
``t`` uses value ``floor(n_k t / (max_epochs * steps_per_epoch))``, so a trial
stopped early by HyperBand/ASHA/BOHB has trained only the first part of it.

Epoch ``e`` draws its batch order with ``draw=e`` (see :class:`~fds_tune.run.TrainingRun`),
so a paused and resumed trial continues bit for bit.

Every result carries ``model_based``: True when a searcher's model (not a random
draw) proposed the trial's schedule.  The model-based searchers (``tpe``,
``optuna``, ``bohb``) add it to each config they suggest (:func:`labelled`); a
config without it (random search, HyperBand, ASHA) is a random draw.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fds_tune import ProblemConfig, Schedule, TrainingRun, train
from fds_tune.optim import resolve_optimizer
from fds_tune.trainable import RunTrainable
from fds_tune.validation import check, check_int, check_kinds, check_number, check_optional, fail

from .space import KINDS, is_schedule_key, schedule_from_config, schedule_keys, sizes_from_keys

__all__ = ["TrainableConfig", "ScheduleRun", "ScheduleTrainable", "base_config", "MODEL_BASED", "labelled"]

PROBLEM_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ProblemConfig))
MODEL_BASED = "model_based"  # the run key (and result column) that says who proposed the schedule
RUN_KEYS: tuple[str, ...] = ("max_epochs", "grad_clamp", "method", "preset", MODEL_BASED)


@dataclass(frozen=True)
class TrainableConfig:
    """A trial's validated config: the problem, the budget the schedule spans, the schedule."""

    problem: ProblemConfig
    max_epochs: int  # the maximum budget; the schedule spans it
    schedule: Mapping[str, tuple[float, ...]]  # kind -> shared values
    grad_clamp: float | None = None  # elementwise clamp of minibatch gradients, as in FDS
    method: str = "schedule"  # reported in every result's ``method`` column
    preset: str | None = None  # a label: the preset the problem came from (every result carries it)
    model_based: bool = False  # a label: a searcher's model, not a random draw, proposed the schedule

    def __post_init__(self):
        check("problem", self.problem, isinstance(self.problem, ProblemConfig), "a ProblemConfig")
        check_int("max_epochs", self.max_epochs, 1)
        check_optional("grad_clamp", self.grad_clamp, check_number, low=0, low_open=True, rule="a finite number > 0 or None")
        check("method", self.method, isinstance(self.method, str) and bool(self.method), "a non-empty string")
        check("preset", self.preset, self.preset is None or isinstance(self.preset, str), "a preset name (a label) or None")
        check(MODEL_BASED, self.model_based, isinstance(self.model_based, bool), "a bool")
        Schedule(self.schedule)  # kinds non-empty, values finite
        check_kinds("schedule", self.schedule, KINDS)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "TrainableConfig":
        """Validate a flat Ray Tune config: problem keys, run keys and ``<kind>_<i>`` schedule keys."""
        unknown = [k for k in config if k not in PROBLEM_KEYS and k not in RUN_KEYS and not is_schedule_key(k)]
        if unknown:
            fail("config", unknown[0], f"one of the allowed keys {list(PROBLEM_KEYS + RUN_KEYS)} or a schedule key '<kind>_<i>' for kinds {list(KINDS)}")
        if "max_epochs" not in config:
            raise ValueError("config: missing key 'max_epochs' (the budget, in epochs, that the schedule spans)")
        sizes = sizes_from_keys(config)
        schedule = schedule_from_config(config, sizes)
        return cls(
            problem=ProblemConfig(**{k: config[k] for k in PROBLEM_KEYS if k in config}),
            max_epochs=config["max_epochs"],
            schedule={k: tuple(v.tolist()) for k, v in schedule.items()},
            grad_clamp=config.get("grad_clamp"),
            method=config.get("method", "schedule"),
            preset=config.get("preset"),
            model_based=config.get(MODEL_BASED, False),
        )

    def to_dict(self) -> dict[str, Any]:
        """The flat config :meth:`from_dict` reads back."""
        flat = base_config(self.problem, max_epochs=self.max_epochs, grad_clamp=self.grad_clamp, method=self.method, preset=self.preset)
        flat[MODEL_BASED] = self.model_based
        for kind, values in self.schedule.items():
            flat.update(zip(schedule_keys({kind: len(values)}), values))
        return flat


def base_config(
    problem: ProblemConfig, *, max_epochs: int, grad_clamp: float | None = None, method: str = "schedule", preset: str | None = None
) -> dict[str, Any]:
    """The constant (non-schedule) part of a trial config."""
    return {**dataclasses.asdict(problem), "max_epochs": max_epochs, "grad_clamp": grad_clamp, "method": method, "preset": preset}


def labelled(config: Any, model_based: bool) -> Any:
    """A searcher's suggestion with the ``model_based`` run key added.

    Returns a new dict, so the searcher's own copy (which it maps results back
    to) stays as it made it; ``None`` and ``Searcher.FINISHED`` pass through.
    """
    return {**config, MODEL_BASED: bool(model_based)} if isinstance(config, dict) else config


class ScheduleRun(TrainingRun):
    """One trial: train one epoch per :meth:`step` with a fixed schedule spanning ``max_epochs``."""

    KIND = "schedule_run"
    METHOD = "schedule"
    FORWARD_MODE = False  # plain training: backward passes only

    def __init__(self, config: Mapping[str, Any] | TrainableConfig, handover: bool = False, problem=None):
        super().__init__(config if isinstance(config, TrainableConfig) else TrainableConfig.from_dict(config), handover, problem)
        self.schedule = Schedule(self.config.schedule)
        self.optimizer = resolve_optimizer("sgd", self.config.grad_clamp)

    @classmethod
    def for_handover(cls, config, epochs):
        """The trial's schedule stretched over ``epochs`` epochs of the full training set, as a hand-over."""
        return cls({**config, "max_epochs": epochs}, handover=True)

    @property
    def horizon(self) -> int:
        """Inner steps the schedule spans: the full ``max_epochs`` budget."""
        return self.config.max_epochs * self.steps_per_epoch

    def steps_now(self) -> int:
        return self.steps_per_epoch

    def advance(self, batches, n):
        run = train(
            self.model, self.schedule, batches, optimizer=self.optimizer, horizon=n, start=self.state, schedule_horizon=self.horizon,
            loss_fn=self.problem.loss,
        )
        self.state = run.state
        return {"schedule": self.schedule.as_lists(), MODEL_BASED: self.config.model_based}, run.diverged


class ScheduleTrainable(RunTrainable):
    """Ray Tune shell around :class:`ScheduleRun`: one epoch per ``step()``.

    Config: the :class:`~fds_tune.problem.ProblemConfig` keys, ``max_epochs``,
    ``grad_clamp``, ``method``, ``preset``, ``model_based`` and the schedule keys ``<kind>_<i>``.
    """

    RUN = ScheduleRun
