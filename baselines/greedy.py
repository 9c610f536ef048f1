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
import itertools
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from ray import tune

from fds_tune import outer
from fds_tune.checkpoint import load_json, load_tensors, save_json, save_tensors
from fds_tune.config import KINDS, PRESETS, FDSConfig, fds_config
from fds_tune.engine import hypergradients
from fds_tune.functional_model import FunctionalModel, TrainState, val_test_metrics
from fds_tune.hd import HDState, hd_init, hd_train
from fds_tune.results import EPOCHS, SECONDS, diverged_metrics
from fds_tune.optim import sgd
from fds_tune.problem import ProblemConfig
from fds_tune.schedule import Schedule

from .schedule_run import RunTrainable, load_problem

__all__ = [
    "HDConfig", "GreedyConfig", "HDRun", "GreedyRun", "HDTrainable", "GreedyTrainable", "GREEDY_METHODS",
    "FORMAT_VERSION",
]

FORMAT_VERSION = 1  # of the checkpoints written by HDRun/GreedyRun.save
PROBLEM_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ProblemConfig))
SHARED_KEYS: tuple[str, ...] = ("preset", *PROBLEM_KEYS, "init", "bounds", "grad_clamp", "epochs")
_DIGITS = PRESETS["digits"]
_TENSORS = "tensors.pt"
# Additive HD rates per kind, in the ratio 1 : 10 : 0.1 (one-step hypergradients are
# O(|g|^2) for the learning rate, O(lr |g| |v|) and O(lr |g| |theta|) for the others).
# HD is very sensitive to them (experiments/greedy_vs_fds.py, 3 epochs from 0): on
# Fashion-MNIST/LeNet a scale of 3e-3 diverges and 1.5e-3 collapses, on digits/MLP 1e-2 is
# best.  1e-3 is the largest scale that trained on both; search the scale per problem.
DEFAULT_HYPER_LR = {"lr": 1e-3, "momentum": 1e-2, "weight_decay": 1e-4}


def _per_kind(values: Mapping[str, Any]):
    return field(default_factory=lambda: dict(values))


@dataclass(frozen=True)
class _RunConfig:
    """What both online methods share with FDS: the problem, the start values, bounds, clamp, run length."""

    problem: ProblemConfig = _DIGITS.problem
    epochs: int = _DIGITS.retrain_epochs  # length of the one training run (FDS's final training budget)
    init: Mapping[str, float] = _per_kind(_DIGITS.init)  # FDS's start values (0)
    bounds: Mapping[str, tuple[float, float]] = _per_kind(_DIGITS.bounds)  # lr >= 0, momentum in [0, 0.99], wd >= 0
    grad_clamp: float | None = _DIGITS.grad_clamp  # FDS clamps minibatch gradients to [-3, 3]

    OWN_KEYS: ClassVar[tuple[str, ...]] = ()  # keys of this method alone (checked in __post_init__)
    FDS_KEYS: ClassVar[tuple[str, ...]] = ()  # FDSConfig fields this method uses as they are (checked by FDSConfig)
    FDS_DEFAULTS: ClassVar[Mapping[str, Mapping]] = {}  # per-kind defaults replacing the preset's values

    def __post_init__(self):
        if not isinstance(self.problem, ProblemConfig):
            raise ValueError(f"problem: got {self.problem!r}; must be a ProblemConfig")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs: got {self.epochs!r}; must be an int >= 1 (the length of the training run)")
        # init within bounds, bounds well formed, grad_clamp and the FDS fields: FDS's own checks
        FDSConfig(
            **dataclasses.asdict(self.problem),
            init=dict(self.init),
            bounds={k: tuple(v) for k, v in self.bounds.items()},
            grad_clamp=self.grad_clamp,
            **{k: getattr(self, k) for k in self.FDS_KEYS},
        )

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]):
        """Validate a flat Ray Tune config: an FDS ``preset`` (default ``"digits"``) plus overrides."""
        allowed = SHARED_KEYS + cls.FDS_KEYS + cls.OWN_KEYS
        unknown = [k for k in config if k not in allowed]
        if unknown:
            raise ValueError(f"config: unknown key {unknown[0]!r} (value {config[unknown[0]]!r}); allowed keys are {list(allowed)}")
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
            **{k: _copy(getattr(fds, k)) for k in cls.FDS_KEYS},
            **cls._parse_own({k: config[k] for k in cls.OWN_KEYS if k in config}),
        )

    @classmethod
    def _parse_own(cls, own: Mapping[str, Any]) -> dict[str, Any]:
        return dict(own)

    def to_dict(self) -> dict[str, Any]:
        """A flat, JSON-able config that :meth:`from_dict` reads back (every key explicit)."""
        d = {**dataclasses.asdict(self.problem), "epochs": self.epochs, "grad_clamp": self.grad_clamp}
        d["init"] = dict(self.init)
        d["bounds"] = {k: list(v) for k, v in self.bounds.items()}
        for f in dataclasses.fields(self):
            if f.name not in d and f.name != "problem":
                d[f.name] = _copy(getattr(self, f.name))
        return d


@dataclass(frozen=True)
class HDConfig(_RunConfig):
    """HD's config: the shared part plus one hyper-learning rate per kind (0 keeps a kind fixed)."""

    hyper_lr: Mapping[str, float] = _per_kind(DEFAULT_HYPER_LR)

    OWN_KEYS: ClassVar[tuple[str, ...]] = ("hyper_lr",)

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.hyper_lr, Mapping) or set(self.hyper_lr) != set(KINDS):
            raise ValueError(f"hyper_lr: got {self.hyper_lr!r}; must give a value for each of {list(KINDS)}")
        for k, b in self.hyper_lr.items():
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < math.inf:
                raise ValueError(f"hyper_lr[{k!r}]: got {b!r}; must be a finite number >= 0 (0: keep {k} fixed)")

    @classmethod
    def _parse_own(cls, own):
        if "hyper_lr" not in own:
            return {}
        given = own["hyper_lr"]
        if not isinstance(given, Mapping):
            raise ValueError(f"hyper_lr: got {given!r}; must be a dict keyed by kinds {list(KINDS)}")
        bad = sorted(set(given) - set(KINDS))
        if bad:
            raise ValueError(f"hyper_lr: kind {bad[0]!r} is not known; allowed kinds are {list(KINDS)}")
        return {"hyper_lr": {**DEFAULT_HYPER_LR, **given}}


@dataclass(frozen=True)
class GreedyConfig(_RunConfig):
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
        w = self.window
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ValueError(f"window: got {w!r}; must be an int >= 1 (inner steps per window) or None (one epoch)")


def _copy(value):
    return dict(value) if isinstance(value, Mapping) else value


# ---------------------------------------------------------------------------------------
# The runs (plain Python, testable without Ray)
# ---------------------------------------------------------------------------------------
class _OnlineRun:
    """One training run on the shared problem, advanced one Tune step at a time.

    Subclasses say how many inner steps a Tune step takes (:meth:`_steps_now`)
    and how to take them (:meth:`_advance`); this class holds the data, the
    state, the evaluation, the epoch-mean trajectory and the checkpoints.
    """

    METHOD: ClassVar[str]
    CONFIG: ClassVar[type[_RunConfig]]

    def __init__(self, config: Mapping[str, Any] | _RunConfig):
        self.config = config if isinstance(config, self.CONFIG) else self.CONFIG.from_dict(config)
        self.problem = load_problem(self.config.problem)
        self._model = self.problem.model()
        self._fm = FunctionalModel(self._model, F.cross_entropy)
        self._train_idx, self._val_idx = self.problem.split(0)
        self._val = self.problem.eval_batches(self._val_idx)
        self._test = self.problem.test_batches()
        self.steps_per_epoch = self.problem.steps_per_epoch(len(self._train_idx))
        theta, buffers = self._fm.initial_state()
        self.state = TrainState(self._fm.unflatten(theta), buffers, sgd().init(theta), 0)
        self.compute_s = 0.0
        self.diverged = False
        self._traj_sum: list[list[float]] = []  # per epoch, per kind: sum of the values used
        self._traj_count: list[int] = []  # per epoch: inner steps taken

    @property
    def horizon(self) -> int:
        """Inner steps of the whole run."""
        return self.config.epochs * self.steps_per_epoch

    @property
    def done(self) -> bool:
        return self.diverged or self.state.step >= self.horizon

    @property
    def trajectory(self) -> dict[str, list[float]]:
        """Kind -> mean value used in each epoch so far."""
        return {k: [s[i] / c for s, c in zip(self._traj_sum, self._traj_count)] for i, k in enumerate(KINDS)}

    def step(self) -> dict[str, Any]:
        """Take this Tune step's inner steps, evaluate, and report the common columns."""
        if self.done:
            raise RuntimeError(f"step: the run is finished (step {self.state.step} of {self.horizon}, diverged={self.diverged})")
        t0 = time.perf_counter()
        first = self.state.step
        n = min(self._steps_now(), self.horizon - first)
        values, extra, diverged = self._advance(self._batches(first, n), n)
        self._record(first, values[: self.state.step - first])
        metrics = None if diverged else self._evaluate()
        self.compute_s += time.perf_counter() - t0
        self.diverged = metrics is None
        if self.diverged:
            metrics = diverged_metrics(self.problem.data.num_classes)
        return {
            "method": self.METHOD,
            **metrics,
            EPOCHS: self.state.step / self.steps_per_epoch,
            SECONDS: self.compute_s,
            "schedule": self._current(),
            "trajectory": self.trajectory,
            **extra,
            "done": self.done,
        }

    def _batches(self, first: int, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of global steps ``first .. first + n - 1``; epoch ``e`` is drawn with ``draw=e``."""
        epoch, skip = divmod(first, self.steps_per_epoch)
        while n > 0:
            take = min(n, self.steps_per_epoch - skip)
            yield from itertools.islice(self.problem.train_batches(self._train_idx, 1, draw=epoch), skip, skip + take)
            epoch, skip, n = epoch + 1, 0, n - take

    def _record(self, first: int, values: torch.Tensor) -> None:
        for t, row in enumerate(values.tolist()):
            epoch = (first + t) // self.steps_per_epoch
            while len(self._traj_count) <= epoch:
                self._traj_sum.append([0.0] * len(KINDS))
                self._traj_count.append(0)
            self._traj_sum[epoch] = [s + v for s, v in zip(self._traj_sum[epoch], row)]
            self._traj_count[epoch] += 1

    def _evaluate(self) -> dict[str, Any] | None:
        """Eval-mode validation and test metrics; None when the loss is not finite."""
        return val_test_metrics(self._fm, self.state.params, self.state.buffers, self._val, self._test)

    # ---- the method -------------------------------------------------------------------
    def _steps_now(self) -> int:
        raise NotImplementedError

    def _advance(self, batches, n: int) -> tuple[torch.Tensor, dict[str, Any], bool]:
        """Take ``n`` inner steps from ``self.state``; return the values used (steps x kinds), extra result columns, diverged."""
        raise NotImplementedError

    def _current(self) -> dict[str, list[float]]:
        raise NotImplementedError

    def _method_state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(JSON-able state, tensors) of the method, for checkpoints."""
        raise NotImplementedError

    def _load_method_state(self, data: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        raise NotImplementedError

    # ---- checkpoints -------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``tensors.pt`` (weights, buffers, optimizer and method tensors) and ``state.json``, atomically."""
        params, buffers, opt_state, step = self.state
        data, tensors = self._method_state()
        save_tensors(Path(directory) / _TENSORS, {"params": dict(params), "buffers": dict(buffers), "opt_state": list(opt_state), **tensors})
        state = {
            "step": step, "compute_s": self.compute_s, "diverged": self.diverged,
            "traj_sum": self._traj_sum, "traj_count": self._traj_count, **data,
        }
        save_json(directory, self.METHOD, FORMAT_VERSION, self.config.to_dict(), state)

    def load(self, directory: str | Path) -> None:
        """Continue from a checkpoint written by :meth:`save` for the same config."""
        data = load_json(directory, self.METHOD, FORMAT_VERSION, self.config.to_dict())
        dev = self.problem.device
        tensors = {k: _to(v, dev) for k, v in load_tensors(Path(directory) / _TENSORS).items()}
        self.state = TrainState(tensors.pop("params"), tensors.pop("buffers"), tuple(tensors.pop("opt_state")), int(data["step"]))
        self.compute_s, self.diverged = float(data["compute_s"]), bool(data["diverged"])
        self._traj_sum, self._traj_count = [list(map(float, s)) for s in data["traj_sum"]], list(map(int, data["traj_count"]))
        self._load_method_state(data, tensors)


def _to(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to(v, device) for v in x]
    return x


class HDRun(_OnlineRun):
    """Hypergradient descent: every hyperparameter updated at every inner step; one epoch per Tune step."""

    METHOD = "hd"
    CONFIG = HDConfig

    def __init__(self, config):
        super().__init__(config)
        self.hd: HDState = hd_init(self.config.init)

    def _steps_now(self) -> int:
        return self.steps_per_epoch

    def _advance(self, batches, n):
        cfg = self.config
        res = hd_train(
            self._model, self.hd, batches, hyper_lr=cfg.hyper_lr, bounds=cfg.bounds,
            grad_clamp=cfg.grad_clamp, horizon=n, start=self.state,
        )
        self.state, self.hd = res.state, res.hd
        return res.values, {}, res.diverged

    def _current(self):
        return {k: [float(self.hd.hypers[k])] for k in KINDS}

    def _method_state(self):
        tensors = {} if self.hd.direction is None else {"direction": self.hd.direction}
        return {"hypers": {k: float(v) for k, v in self.hd.hypers.items()}}, tensors

    def _load_method_state(self, data, tensors):
        self.hd = HDState(hd_init(data["hypers"]).hypers, tensors.get("direction"))


class GreedyRun(_OnlineRun):
    """Greedy forward mode: FDS's engine over windows of one run; one window per Tune step."""

    METHOD = "greedy"
    CONFIG = GreedyConfig

    def __init__(self, config):
        super().__init__(config)
        cfg = self.config
        if cfg.window is not None and cfg.window > self.horizon:
            raise ValueError(
                f"window: got {cfg.window}; must be at most the run's {self.horizon} inner steps "
                f"({cfg.epochs} epochs x {self.steps_per_epoch} steps)"
            )
        init = {k: torch.full((cfg.n_values[k],), float(cfg.init[k]), dtype=torch.float64) for k in KINDS}
        self.outer = outer.init_outer(init, cfg.step_size)
        # Hypergradients use the validation loss as FDS computes it (train-mode BN on batches of batch_size).
        self._val_hyper = self.problem.eval_batches(self._val_idx, cfg.problem.batch_size)

    @property
    def window(self) -> int:
        return self.config.window or self.steps_per_epoch

    def _steps_now(self) -> int:
        return self.window

    def _advance(self, batches, n):
        cfg, first = self.config, self.state.step
        schedule = Schedule(self.outer.values)
        params, buffers, opt_state, _ = self.state
        # Step indices restart at 0: the window's schedule spans the window (SGD ignores the index).
        hg = hypergradients(
            self._model, schedule, batches, self._val_hyper, horizon=n, start=TrainState(params, buffers, opt_state, 0),
            schedule_horizon=n, grad_clamp=cfg.grad_clamp, group_size=cfg.group_size,
        )
        raw = {k: v.detach().cpu().to(torch.float64) for k, v in hg.items()}
        diverged = hg.diverged or not outer.finite(raw)
        if not diverged:
            self.outer = outer.outer_update(cfg.outer_rule, self.outer, outer.normalise(raw, n), cfg.bounds)
        taken = hg.run.state.step  # window-local: the steps this window took
        self.state = TrainState(hg.params, hg.buffers, hg.run.state.opt_state, first + taken)
        used = schedule.table(KINDS, range(taken), n)
        extra = {
            "schedule_used": schedule.as_lists(),
            "hypergrads": {k: v.tolist() for k, v in raw.items()},
            "window_val_loss": hg.val_loss,
        }
        return used, extra, diverged

    def _current(self):
        return {k: self.outer.values[k].tolist() for k in KINDS}

    def _method_state(self):
        return {"outer": outer.to_json(self.outer)}, {}

    def _load_method_state(self, data, tensors):
        self.outer = outer.from_json(data["outer"])


# ---------------------------------------------------------------------------------------
# Ray Tune shells
# ---------------------------------------------------------------------------------------
class HDTrainable(RunTrainable):
    """Ray Tune shell around :class:`HDRun` (config: :class:`HDConfig` keys); one epoch per ``step()``."""

    _RUN = HDRun


class GreedyTrainable(RunTrainable):
    """Ray Tune shell around :class:`GreedyRun` (config: :class:`GreedyConfig` keys); one window per ``step()``."""

    _RUN = GreedyRun


GREEDY_METHODS: dict[str, type[tune.Trainable]] = {"hd": HDTrainable, "greedy": GreedyTrainable}
