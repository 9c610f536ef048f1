"""Train the network with one fixed schedule, one epoch per Tune step.

:class:`ScheduleRun` is the whole trial (plain Python, testable without Ray);
:class:`ScheduleTrainable` is the thin Ray Tune shell around it.

A trial trains exactly what FDS trains: the same :class:`~fds_tune.problem.Problem`
(data, fixed split ``problem.split(0)``, seeded network, batch size) and the same
plain SGD step as :func:`fds_tune.engine.train` (equal to ``torch.optim.SGD`` step
for step).  The schedule spans the *maximum* budget, ``max_epochs`` epochs: step
``t`` uses value ``floor(n_k t / (max_epochs * steps_per_epoch))``, so a trial
stopped early by HyperBand/ASHA/BOHB has trained only the first part of it.

Epoch ``e`` draws its batch order from ``problem.train_batches(train_idx, 1, draw=e)``,
a generator seeded from ``(problem seed, e)``: no RNG state needs saving, and a
paused and resumed trial continues bit for bit.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from ray import tune

from fds_tune.checkpoint import load_json, load_tensors, save_json, save_tensors
from fds_tune.engine import train
from fds_tune.functional_model import FunctionalModel, TrainState, val_test_metrics
from fds_tune.results import EPOCHS, SECONDS, diverged_metrics
from fds_tune.optim import sgd
from fds_tune.problem import ProblemConfig, cached_problem
from fds_tune.schedule import Schedule

from .space import KINDS, is_schedule_key, schedule_from_config, schedule_keys, sizes_from_keys

__all__ = ["TrainableConfig", "ScheduleRun", "ScheduleTrainable", "base_config", "load_problem", "FORMAT_VERSION"]

FORMAT_VERSION = 1  # of the checkpoint written by ScheduleRun.save
PROBLEM_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ProblemConfig))
RUN_KEYS: tuple[str, ...] = ("max_epochs", "grad_clamp", "method")
_KIND, _TENSORS = "schedule_run", "tensors.pt"


@dataclass(frozen=True)
class TrainableConfig:
    """A trial's validated config: the problem, the budget the schedule spans, the schedule."""

    problem: ProblemConfig
    max_epochs: int  # the maximum budget; the schedule spans it
    schedule: Mapping[str, tuple[float, ...]]  # kind -> shared values
    grad_clamp: float | None = None  # elementwise clamp of minibatch gradients, as in FDS
    method: str = "schedule"  # reported in every result's ``method`` column

    def __post_init__(self):
        if not isinstance(self.problem, ProblemConfig):
            raise ValueError(f"problem: got {self.problem!r}; must be a ProblemConfig")
        if isinstance(self.max_epochs, bool) or not isinstance(self.max_epochs, int) or self.max_epochs < 1:
            raise ValueError(f"max_epochs: got {self.max_epochs!r}; must be an int >= 1")
        gc = self.grad_clamp
        if gc is not None and (isinstance(gc, bool) or not isinstance(gc, (int, float)) or not 0 < gc < math.inf):
            raise ValueError(f"grad_clamp: got {gc!r}; must be a positive finite number or None")
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"method: got {self.method!r}; must be a non-empty string")
        Schedule(self.schedule)  # kinds non-empty, values finite
        if set(self.schedule) != set(KINDS):
            raise ValueError(f"schedule: got kinds {sorted(self.schedule)}; must give exactly {list(KINDS)}")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "TrainableConfig":
        """Validate a flat Ray Tune config: problem keys, run keys and ``<kind>_<i>`` schedule keys."""
        unknown = [k for k in config if k not in PROBLEM_KEYS and k not in RUN_KEYS and not is_schedule_key(k)]
        if unknown:
            raise ValueError(
                f"config: unknown key {unknown[0]!r}; allowed keys are {list(PROBLEM_KEYS + RUN_KEYS)} "
                f"and schedule keys '<kind>_<i>' for kinds {list(KINDS)}"
            )
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
        )

    def to_dict(self) -> dict[str, Any]:
        """The flat config :meth:`from_dict` reads back."""
        flat = base_config(self.problem, max_epochs=self.max_epochs, grad_clamp=self.grad_clamp, method=self.method)
        for kind, values in self.schedule.items():
            flat.update(zip(schedule_keys({kind: len(values)}), values))
        return flat


def base_config(problem: ProblemConfig, *, max_epochs: int, grad_clamp: float | None = None, method: str = "schedule") -> dict[str, Any]:
    """The constant (non-schedule) part of a trial config."""
    return {**dataclasses.asdict(problem), "max_epochs": max_epochs, "grad_clamp": grad_clamp, "method": method}


load_problem = cached_problem  # one cache per process, shared with FDSTrainable


class ScheduleRun:
    """One trial: train one epoch per :meth:`step`, report, checkpoint, restore."""

    def __init__(self, config: Mapping[str, Any]):
        self.config = TrainableConfig.from_dict(config)
        self._canonical = self.config.to_dict()  # plain Python values: compared with a checkpoint's JSON
        self.problem = load_problem(self.config.problem)
        self.schedule = Schedule(self.config.schedule)
        self._model = self.problem.model()
        self._fm = FunctionalModel(self._model, F.cross_entropy)
        self._train_idx, val_idx = self.problem.split(0)
        self._val = self.problem.eval_batches(val_idx)
        self._test = self.problem.test_batches()
        self.steps_per_epoch = self.problem.steps_per_epoch(len(self._train_idx))
        theta, buffers = self._fm.initial_state()
        self.state = TrainState(self._fm.unflatten(theta), buffers, sgd().init(theta), 0)
        self.epoch = 0
        self.compute_s = 0.0
        self.diverged = False

    @property
    def horizon(self) -> int:
        """Inner steps the schedule spans: the full ``max_epochs`` budget."""
        return self.config.max_epochs * self.steps_per_epoch

    @property
    def done(self) -> bool:
        return self.diverged or self.epoch >= self.config.max_epochs

    def step(self) -> dict[str, Any]:
        """Train epoch ``self.epoch`` and evaluate; the result carries the common columns."""
        if self.done:
            raise RuntimeError(f"step: the trial is finished (epoch {self.epoch} of {self.config.max_epochs}, diverged={self.diverged})")
        start = time.perf_counter()
        run = train(
            self._model,
            self.schedule,
            self.problem.train_batches(self._train_idx, 1, draw=self.epoch),
            grad_clamp=self.config.grad_clamp,
            horizon=self.steps_per_epoch,
            start=self.state,
            schedule_horizon=self.horizon,
        )
        self.state, self.epoch = run.state, self.epoch + 1
        metrics = self._evaluate() if not run.diverged else None
        self.compute_s += time.perf_counter() - start
        self.diverged = metrics is None
        if self.diverged:
            metrics = diverged_metrics(self.problem.data.num_classes)
        return {
            "method": self.config.method,
            **metrics,
            EPOCHS: self.state.step / self.steps_per_epoch,
            SECONDS: self.compute_s,
            "schedule": self.schedule.as_lists(),
            "done": self.done,
        }

    def _evaluate(self) -> dict[str, Any] | None:
        """Eval-mode validation and test metrics; None when the loss is not finite."""
        return val_test_metrics(self._fm, self.state.params, self.state.buffers, self._val, self._test)

    # ---- checkpoints -------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write ``state.json`` (kind, format version, config, counters) and ``tensors.pt``, each atomically."""
        params, buffers, opt_state, step = self.state
        save_tensors(Path(directory) / _TENSORS, {"params": params, "buffers": buffers, "opt_state": list(opt_state)})
        state = {"epoch": self.epoch, "step": step, "compute_s": self.compute_s, "diverged": self.diverged}
        save_json(directory, _KIND, FORMAT_VERSION, self._canonical, state)

    def load(self, directory: str | os.PathLike) -> None:
        """Continue from a checkpoint written by :meth:`save` for the same config.

        Raises :class:`~fds_tune.checkpoint.CheckpointError` (a ``ValueError``) for
        another kind, format version or config, or a file that is not tensors only.
        """
        state = load_json(directory, _KIND, FORMAT_VERSION, self._canonical)
        tensors = load_tensors(Path(directory) / _TENSORS)
        params, buffers = ({k: v.to(self.problem.device) for k, v in tensors[part].items()} for part in ("params", "buffers"))
        opt_state = tuple(t.to(self.problem.device) for t in tensors["opt_state"])
        self.state = TrainState(params, buffers, opt_state, state["step"])
        self.epoch, self.compute_s, self.diverged = state["epoch"], state["compute_s"], state["diverged"]


class RunTrainable(tune.Trainable):
    """Thin Ray Tune shell around a plain-Python run class ``_RUN`` (one ``step()`` per result).

    ``_RUN(config)`` validates its config and holds all state; it has ``step()``,
    ``save(directory)`` and ``load(directory)``.  Subclasses only name ``_RUN``.
    """

    _RUN: ClassVar[type]

    def setup(self, config: dict) -> None:
        self._run = self._RUN(config)

    def step(self) -> dict:
        return self._run.step()

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self._run.save(checkpoint_dir)

    def load_checkpoint(self, checkpoint: str) -> None:
        self._run.load(checkpoint)

    def reset_config(self, new_config: dict) -> bool:
        self._run = self._RUN(new_config)  # the cached problem is reused unless its keys changed
        return True


class ScheduleTrainable(RunTrainable):
    """Ray Tune shell around :class:`ScheduleRun`: one epoch per ``step()``.

    Config: the :class:`~fds_tune.problem.ProblemConfig` keys, ``max_epochs``,
    ``grad_clamp``, ``method`` and the schedule keys ``<kind>_<i>``.
    """

    _RUN = ScheduleRun
