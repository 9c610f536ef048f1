"""Greedy, online gradient-based baselines: HD and greedy forward mode, as Ray Tune trainables.

Both adapt the hyperparameters *inside one training run*, instead of restarting
training for every outer step as FDS does:

* ``hd`` (:class:`HDTrainable`): hypergradient descent (Baydin et al., 2018):
  one-step hypergradients, every hyperparameter updated at every inner step
  (:mod:`fds_tune.hd`).  Its knob is the per-kind hyper-learning rate ``hyper_lr``.
* ``greedy`` (:class:`GreedyTrainable`): FDS's own engine over a short horizon.
  The run is cut into windows of ``window`` inner steps (default: one epoch).
  Each window trains with the current shared values and computes their exact
  forward-mode hypergradients over that window only (tangents start at zero
  at the window's start; the validation loss is taken at its end); FDS's outer
  rule (:mod:`fds_tune.outer`) then updates the values, and training continues
  from the window's end state.  Within a window the values are shared as in
  FDS: ``n_values[k]`` values per kind (default 1: one value per window), value
  ``i`` covering window-local steps ``floor(n i / W) ..``.  With the window
  equal to the whole run this is exactly one FDS outer step.

Both train what FDS and the black-box baselines train: the same
:class:`~fds_tune.problem.Problem` (fixed split ``problem.split(0)``, seeded
network, batch size; epoch ``e`` draws its batch order with ``draw=e``, as
:class:`~baselines.schedule_run.ScheduleRun` does) and, by default, FDS's initial
values (0), bounds and gradient clamp, taken from an FDS preset.

One ``step()`` is one epoch for HD and one window for greedy (one epoch by
default), so that ``training_iteration`` lines up with
:class:`~baselines.schedule_run.ScheduleTrainable`; every result carries the common
columns (:mod:`fds_tune.results`), ``schedule`` (the values in use now:
kind -> list), ``trajectory`` (kind -> the mean value used in each epoch so
far, for plotting beside FDS's schedules) and ``done``.  A NaN/inf ends the
trial with ``diverged_metrics`` and ``done=True``.

Configs (flat Ray Tune dicts, validated once): ``preset`` (an FDS preset name,
default ``"digits"``) supplies every default; the problem keys, ``init``,
``bounds`` and ``grad_clamp`` override it as in :func:`fds_tune.config.fds_config`;
``epochs`` is the length of the run (default: the preset's ``retrain_epochs``,
the epochs FDS's final model trains for).  HD adds ``hyper_lr``; greedy adds
``window``, ``n_values``, ``step_size``, ``outer_rule`` and ``group_size``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from ray import tune

from fds_tune import PRESETS, FDSConfig, ProblemConfig, Schedule, TrainingRun, TrainState, fds_config, hypergradients
from fds_tune import outer
from fds_tune.config import KINDS
from fds_tune.hd import HDState, hd_init, hd_train
from fds_tune.optim import resolve_optimizer
from fds_tune.trainable import RunTrainable
from fds_tune.validation import check_int, check_kinds, check_number, check_optional, fail

__all__ = [
    "HDConfig", "GreedyConfig", "HDRun", "GreedyRun", "HDTrainable", "GreedyTrainable", "GREEDY_METHODS", "SHARED_KEYS",
]

PROBLEM_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ProblemConfig))
SHARED_KEYS: tuple[str, ...] = ("preset", *PROBLEM_KEYS, "init", "bounds", "grad_clamp", "epochs")
_DIGITS = PRESETS["digits"]
# Additive HD rates per kind, in the ratio 1 : 10 : 0.1 (one-step hypergradients are
# O(|g|^2) for the learning rate, O(lr |g| |v|) and O(lr |g| |theta|) for the others).
# HD is very sensitive to them (experiments/greedy_vs_fds.py, 3 epochs from 0): on
# Fashion-MNIST/LeNet a scale of 3e-3 diverges and 1.5e-3 collapses, on digits/MLP 1e-2 is
# best.  1e-3 is the largest scale that trained on both; search the scale per problem.
DEFAULT_HYPER_LR = {"lr": 1e-3, "momentum": 1e-2, "weight_decay": 1e-4}


def _per_kind(values: Mapping[str, Any]):
    return field(default_factory=lambda: dict(values))


@dataclass(frozen=True)
class OnlineConfig:
    """What both online methods share with FDS: the problem, the start values, bounds, clamp, run length."""

    problem: ProblemConfig = _DIGITS.problem
    epochs: int = _DIGITS.retrain_epochs  # length of the one training run (FDS's final training budget)
    init: Mapping[str, float] = _per_kind(_DIGITS.init)  # FDS's start values (0)
    bounds: Mapping[str, tuple[float, float]] = _per_kind(_DIGITS.bounds)  # lr >= 0, momentum in [0, 0.99], wd >= 0
    grad_clamp: float | None = _DIGITS.grad_clamp  # FDS clamps minibatch gradients to [-3, 3]
    preset: str | None = None  # a label: the FDS preset the defaults came from (every result carries it)

    OWN_KEYS: ClassVar[tuple[str, ...]] = ()  # keys of this method alone (checked in __post_init__)
    FDS_KEYS: ClassVar[tuple[str, ...]] = ()  # FDSConfig fields this method uses as they are (checked by FDSConfig)
    FDS_DEFAULTS: ClassVar[Mapping[str, Mapping]] = {}  # per-kind defaults replacing the preset's values

    def __post_init__(self):
        if not isinstance(self.problem, ProblemConfig):
            fail("problem", self.problem, "a ProblemConfig")
        check_int("epochs", self.epochs, 1, rule="an int >= 1 (the length of the training run)")
        # init within bounds, bounds well formed, grad_clamp, preset and the FDS fields: FDS's own checks
        FDSConfig(
            **dataclasses.asdict(self.problem),
            init=dict(self.init),
            bounds={k: tuple(v) for k, v in self.bounds.items()},
            grad_clamp=self.grad_clamp,
            preset=self.preset,
            **{k: getattr(self, k) for k in self.FDS_KEYS},
        )

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]):
        """Validate a flat Ray Tune config: an FDS ``preset`` (default ``"digits"``) plus overrides."""
        allowed = SHARED_KEYS + cls.FDS_KEYS + cls.OWN_KEYS
        unknown = [k for k in config if k not in allowed]
        if unknown:
            fail("config", unknown[0], f"one of the allowed keys {list(allowed)}")
        fds_part = {k: v for k, v in config.items() if k not in cls.OWN_KEYS and k != "epochs"}
        for key, default in cls.FDS_DEFAULTS.items():
            given = fds_part.get(key, {})
            fds_part[key] = {**default, **given} if isinstance(given, Mapping) else given
        fds = fds_config(fds_part)  # validates the problem, init, bounds, grad_clamp and FDS_KEYS
        return cls(
            problem=fds.problem,
            epochs=config.get("epochs", fds.retrain_epochs),
            init=dict(fds.init),
            bounds={k: tuple(v) for k, v in fds.bounds.items()},
            grad_clamp=fds.grad_clamp,
            preset=fds.preset,
            **{k: _copy(getattr(fds, k)) for k in cls.FDS_KEYS},
            **cls._parse_own({k: config[k] for k in cls.OWN_KEYS if k in config}),
        )

    @classmethod
    def _parse_own(cls, own: Mapping[str, Any]) -> dict[str, Any]:
        return dict(own)

    def to_dict(self) -> dict[str, Any]:
        """A flat, JSON-able config that :meth:`from_dict` reads back (every key explicit)."""
        d = {**dataclasses.asdict(self.problem), "epochs": self.epochs, "grad_clamp": self.grad_clamp, "preset": self.preset}
        d["init"] = dict(self.init)
        d["bounds"] = {k: list(v) for k, v in self.bounds.items()}
        for f in dataclasses.fields(self):
            if f.name not in d and f.name != "problem":
                d[f.name] = _copy(getattr(self, f.name))
        return d


@dataclass(frozen=True)
class HDConfig(OnlineConfig):
    """HD's config: the shared part plus one hyper-learning rate per kind (0 keeps a kind fixed)."""

    hyper_lr: Mapping[str, float] = _per_kind(DEFAULT_HYPER_LR)

    OWN_KEYS: ClassVar[tuple[str, ...]] = ("hyper_lr",)

    def __post_init__(self):
        super().__post_init__()
        check_kinds("hyper_lr", self.hyper_lr, KINDS)
        for k, b in self.hyper_lr.items():
            check_number(f"hyper_lr[{k!r}]", b, low=0, rule=f"a finite number >= 0 (0: keep {k} fixed)")

    @classmethod
    def _parse_own(cls, own):
        if "hyper_lr" not in own:
            return {}
        return {"hyper_lr": {**DEFAULT_HYPER_LR, **check_kinds("hyper_lr", own["hyper_lr"], KINDS, exact=False)}}


@dataclass(frozen=True)
class GreedyConfig(OnlineConfig):
    """Greedy forward mode's config: the shared part, the window and FDS's outer-step settings."""

    window: int | None = None  # inner steps per window; None: one epoch
    n_values: Mapping[str, int] = _per_kind({k: 1 for k in KINDS})  # shared values per kind within a window
    step_size: Mapping[str, float] = _per_kind(_DIGITS.step_size)  # FDS's outer step sizes
    outer_rule: str = _DIGITS.outer_rule  # FDS's sign rule
    group_size: int | None = _DIGITS.group_size

    OWN_KEYS: ClassVar[tuple[str, ...]] = ("window",)
    FDS_KEYS: ClassVar[tuple[str, ...]] = ("n_values", "step_size", "outer_rule", "group_size")
    FDS_DEFAULTS: ClassVar[Mapping[str, Mapping]] = {"n_values": {k: 1 for k in KINDS}}  # not the preset's sharing

    def __post_init__(self):
        super().__post_init__()
        check_optional("window", self.window, check_int, 1, rule="an int >= 1 (inner steps per window) or None (one epoch)")


def _copy(value):
    return dict(value) if isinstance(value, Mapping) else value


# ---------------------------------------------------------------------------------------
# The runs (plain Python, testable without Ray)
# ---------------------------------------------------------------------------------------
class OnlineRun(TrainingRun):
    """One training run that adapts its hyperparameters as it goes; it also reports the
    epoch-mean ``trajectory`` of the values it used.

    Subclasses take the inner steps (:meth:`adapt`: the values used, steps x kinds,
    extra columns, diverged) and say which values are current (:meth:`current`).
    """

    CONFIG: ClassVar[type[OnlineConfig]]

    def __init__(self, config: Mapping[str, Any] | OnlineConfig, handover: bool = False, problem=None):
        super().__init__(config if isinstance(config, self.CONFIG) else self.CONFIG.from_dict(config), handover, problem)
        self.optimizer = resolve_optimizer("sgd", self.config.grad_clamp)
        self.traj_sum: list[list[float]] = []  # per epoch, per kind: sum of the values used
        self.traj_count: list[int] = []  # per epoch: inner steps taken

    @classmethod
    def for_handover(cls, config, epochs):
        """The same method with the same knobs, rerun on the full training set for ``epochs`` epochs
        (greedy forward mode keeps taking its hypergradients on the validation split, which a
        hand-over also trains on: its signal, never a selection)."""
        return cls({**config, "epochs": epochs}, handover=True)

    @property
    def horizon(self) -> int:
        """Inner steps of the whole run."""
        return self.config.epochs * self.steps_per_epoch

    @property
    def trajectory(self) -> dict[str, list[float]]:
        """Kind -> mean value used in each epoch so far."""
        return {k: [s[i] / c for s, c in zip(self.traj_sum, self.traj_count)] for i, k in enumerate(KINDS)}

    def advance(self, batches, n):
        first = self.state.step
        values, extra, diverged = self.adapt(batches, n)
        self._record(first, values[: self.state.step - first])
        return {"schedule": self.current(), "trajectory": self.trajectory, **extra}, diverged

    def _record(self, first: int, values: torch.Tensor) -> None:
        for t, row in enumerate(values.tolist()):
            epoch = (first + t) // self.steps_per_epoch
            while len(self.traj_count) <= epoch:
                self.traj_sum.append([0.0] * len(KINDS))
                self.traj_count.append(0)
            self.traj_sum[epoch] = [s + v for s, v in zip(self.traj_sum[epoch], row)]
            self.traj_count[epoch] += 1

    def adapt(self, batches, n: int) -> tuple[torch.Tensor, dict[str, Any], bool]:
        raise NotImplementedError

    def current(self) -> dict[str, list[float]]:
        raise NotImplementedError

    def method_state(self) -> dict[str, Any]:
        return {"traj_sum": self.traj_sum, "traj_count": self.traj_count}

    def load_method_state(self, state: Mapping[str, Any]) -> None:
        self.traj_sum = [list(map(float, s)) for s in state["traj_sum"]]
        self.traj_count = list(map(int, state["traj_count"]))


class HDRun(OnlineRun):
    """Hypergradient descent: every hyperparameter updated at every inner step; one epoch per Tune step."""

    KIND = METHOD = "hd"
    CONFIG = HDConfig

    def __init__(self, config, handover=False, problem=None):
        super().__init__(config, handover, problem)
        self.hd: HDState = hd_init(self.config.init)

    def steps_now(self) -> int:
        return self.steps_per_epoch

    def adapt(self, batches, n):
        cfg = self.config
        res = hd_train(
            self.model, self.hd, batches, hyper_lr=cfg.hyper_lr, bounds=cfg.bounds, optimizer=self.optimizer, horizon=n,
            start=self.state, loss_fn=self.problem.loss,
        )
        self.state, self.hd = res.state, res.hd
        return res.values, {}, res.diverged

    def current(self):
        return {k: [float(self.hd.hypers[k])] for k in KINDS}

    def method_state(self):
        hypers = {k: float(v) for k, v in self.hd.hypers.items()}
        return {**super().method_state(), "hypers": hypers, "direction": self.hd.direction}

    def load_method_state(self, state):
        super().load_method_state(state)
        self.hd = HDState(hd_init(state["hypers"]).hypers, state["direction"])


class GreedyRun(OnlineRun):
    """Greedy forward mode: FDS's engine over windows of one run; one window per Tune step."""

    KIND = METHOD = "greedy"
    CONFIG = GreedyConfig

    def __init__(self, config, handover=False, problem=None):
        super().__init__(config, handover, problem)
        cfg = self.config
        if cfg.window is not None and cfg.window > self.horizon:
            fail("window", cfg.window, f"at most the run's {self.horizon} inner steps ({cfg.epochs} epochs x {self.steps_per_epoch} steps)")
        init = {k: torch.full((cfg.n_values[k],), float(cfg.init[k]), dtype=torch.float64) for k in KINDS}
        self.rule = outer.get_rule(cfg.outer_rule)
        self.outer = self.rule.init(init, cfg.step_size)
        # Hypergradients use the validation loss as FDS computes it (train-mode BN on batches of batch_size).
        self.val_hyper_batches = self.problem.eval_batches(self.val_idx, cfg.problem.batch_size)

    @property
    def window(self) -> int:
        return self.config.window or self.steps_per_epoch

    def steps_now(self) -> int:
        return self.window

    def adapt(self, batches, n):
        cfg, first = self.config, self.state.step
        schedule = Schedule(self.outer.values)
        params, buffers, opt_state, _ = self.state
        # Step indices restart at 0: the window's schedule spans the window (SGD ignores the index).
        hg = hypergradients(
            self.model, schedule, batches, self.val_hyper_batches, horizon=n, start=TrainState(params, buffers, opt_state, 0),
            schedule_horizon=n, optimizer=self.optimizer, group_size=cfg.group_size, loss_fn=self.problem.loss,
        )
        raw = {k: v.detach().cpu().to(torch.float64) for k, v in hg.items()}
        diverged = hg.diverged or not outer.finite(raw)
        if not diverged:
            self.outer = self.rule.update(self.outer, outer.normalise(raw, n), cfg.bounds)
        taken = hg.run.state.step  # window-local: the steps this window took
        self.state = TrainState(hg.params, hg.buffers, hg.run.state.opt_state, first + taken)
        used = schedule.table(KINDS, range(taken), n)
        extra = {
            "schedule_used": schedule.as_lists(),
            "hypergrads": {k: v.tolist() for k, v in raw.items()},
            "window_val_loss": hg.val_loss,
        }
        return used, extra, diverged

    def current(self):
        return {k: self.outer.values[k].tolist() for k in KINDS}

    def method_state(self):
        return {**super().method_state(), "outer": outer.to_json(self.outer)}

    def load_method_state(self, state):
        super().load_method_state(state)
        self.outer = outer.from_json(self.rule, state["outer"])


# ---------------------------------------------------------------------------------------
# Ray Tune shells
# ---------------------------------------------------------------------------------------
class HDTrainable(RunTrainable):
    """Ray Tune shell around :class:`HDRun` (config: :class:`HDConfig` keys); one epoch per ``step()``."""

    RUN = HDRun


class GreedyTrainable(RunTrainable):
    """Ray Tune shell around :class:`GreedyRun` (config: :class:`GreedyConfig` keys); one window per ``step()``."""

    RUN = GreedyRun


GREEDY_METHODS: dict[str, type[tune.Trainable]] = {"hd": HDTrainable, "greedy": GreedyTrainable}
