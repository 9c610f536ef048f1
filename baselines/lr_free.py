"""Learning-rate-free optimizers, one run each: ``schedulefree``, ``dadapt`` and ``prodigy``.

* ``schedulefree``: schedule-free SGD (Defazio et al., 2024; PyPI ``schedulefree``,
  ``SGDScheduleFree``), momentum 0.9 (its default).  Its docs advise a learning rate
  "10x-50x larger than classical rates" for SGD and recommend a warmup: we use its
  default ``lr=1.0`` (10x the classical 0.1 of SGD with momentum 0.9 on these networks)
  and a linear warmup over the first 5% of the run's steps (:data:`WARMUP_FRACTION`).
* ``dadapt``: D-Adaptation SGD (Defazio & Mishchenko, 2023; PyPI ``dadaptation``,
  ``DAdaptSGD``) with its defaults (``lr=1.0``, no momentum, no weight decay).
* ``prodigy``: Prodigy (Mishchenko & Defazio, 2023; PyPI ``prodigyopt``, ``Prodigy``)
  with its defaults (``lr=1.0``, Adam's betas, no weight decay).

They are not differentiable through FDS's engine and need not be: a run
(:class:`LRFreeRun`) trains the problem's ``nn.Module`` with the package's own
``torch.optim`` object in a plain loop, on the same :class:`~fds_tune.problem.Problem`
as every other method (split ``problem.split(0)``, initialisation draw 0, the batches
of :meth:`~fds_tune.problem.Problem.steps`, the device), one epoch per step, no gradient
clamp (each optimizer as its authors documented it).  Each result reports the step size in
use (``effective_lr``, also as ``schedule``: ``{"lr": [value]}``).  It speaks the run protocol;
its state dict holds the optimizer's ``state_dict`` (JSON-safe).  A NaN/inf loss or
weight ends the run with ``diverged_metrics``.  Its compute is real: every step's
epochs and seconds.

Schedule-free SGD evaluates (and checkpoints) the averaged weights ``x``, not the
weights ``y`` its gradients are taken at: after each epoch the run calls
``optimizer.eval()`` (the weights become ``x``), recomputes the BatchNorm running
statistics at ``x`` (train-mode forward passes without gradient over the epoch's first
:data:`BN_BATCHES` batches, a cumulative average, as its docs advise), evaluates, and
calls ``optimizer.train()`` before the next epoch.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from fds_tune import ProblemConfig, TrainingRun, TrainState
from fds_tune.results import LR_FREE_METHODS
from fds_tune.trainable import RunTrainable
from fds_tune.validation import check, check_choice, check_int, check_number, fail

__all__ = ["LRFreeConfig", "LRFreeRun", "LRFreeTrainable", "make_optimizer", "recompute_batchnorm", "WARMUP_FRACTION", "BN_BATCHES"]

PROBLEM_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ProblemConfig))
OWN_KEYS: tuple[str, ...] = ("epochs", "method", "lr", "preset")
WARMUP_FRACTION = 0.05  # schedule-free SGD's recommended warmup: the first 5% of the run's steps
BN_BATCHES = 50  # training batches for schedule-free SGD's BatchNorm statistics at x (its docs' example uses 50)
OPTIMIZER_STATE = "optimizer"


@dataclass(frozen=True)
class LRFreeConfig:
    """One run of a learning-rate-free optimizer: the problem, the run's epochs, which optimizer, its ``lr`` factor."""

    problem: ProblemConfig
    epochs: int
    method: str  # one of LR_FREE_METHODS
    lr: float = 1.0  # every package's default (a multiplier of the adapted step for dadapt and prodigy)
    preset: str | None = None  # a label: the FDS preset the problem came from

    def __post_init__(self):
        check("problem", self.problem, isinstance(self.problem, ProblemConfig), "a ProblemConfig")
        check_int("epochs", self.epochs, 1, rule="an int >= 1 (the length of the training run)")
        check_choice("method", self.method, LR_FREE_METHODS)
        check_number("lr", self.lr, low=0, low_open=True, rule="a finite number > 0")
        check("preset", self.preset, self.preset is None or isinstance(self.preset, str), "a preset name (a label) or None")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "LRFreeConfig":
        """Validate a flat Ray Tune config: the problem keys, ``epochs``, ``method``, ``lr`` and ``preset``."""
        unknown = [k for k in config if k not in PROBLEM_KEYS + OWN_KEYS]
        if unknown:
            fail("config", unknown[0], f"one of the allowed keys {list(PROBLEM_KEYS + OWN_KEYS)}")
        for key in ("epochs", "method"):
            if key not in config:
                raise ValueError(f"config: missing key {key!r} (the run's {'length in epochs' if key == 'epochs' else 'optimizer'})")
        problem = ProblemConfig(**{k: config[k] for k in PROBLEM_KEYS if k in config})
        return cls(problem, config["epochs"], config["method"], config.get("lr", 1.0), config.get("preset"))

    def to_dict(self) -> dict[str, Any]:
        """The flat config :meth:`from_dict` reads back."""
        return {**dataclasses.asdict(self.problem), "epochs": self.epochs, "method": self.method, "lr": self.lr, "preset": self.preset}


def make_optimizer(method: str, params, lr: float, steps: int) -> torch.optim.Optimizer:
    """The package's optimizer for ``method`` over ``params``, with its documented defaults and ``lr``
    (``steps``: the run's length, for schedule-free SGD's warmup).  Imported lazily: a missing package
    fails with the name to install."""
    check_choice("method", method, LR_FREE_METHODS)
    package = {"schedulefree": "schedulefree", "dadapt": "dadaptation", "prodigy": "prodigyopt"}[method]
    try:
        module = __import__(package)
    except ImportError:
        raise ImportError(f"method {method!r} needs the package {package!r}: pip install {package}") from None
    if method == "schedulefree":
        return module.SGDScheduleFree(params, lr=lr, warmup_steps=round(WARMUP_FRACTION * steps))
    return (module.DAdaptSGD if method == "dadapt" else module.Prodigy)(params, lr=lr)


def recompute_batchnorm(model: nn.Module, batches) -> None:
    """BatchNorm running statistics recomputed at the model's current weights: a cumulative average over
    ``batches`` of train-mode forward passes without gradient.  A model without BatchNorm is left as it is."""
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None: a cumulative average over the batches
    was_training = model.training
    model.train()
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


class LRFreeRun(TrainingRun):
    """One run of ``schedulefree``, ``dadapt`` or ``prodigy``: one epoch per :meth:`step`."""

    KIND = "lr_free_run"
    METHOD = "lr_free"
    FORWARD_MODE = False  # plain training: backward passes only

    def __init__(self, config: Mapping[str, Any] | LRFreeConfig, handover: bool = False, problem=None):
        config = config if isinstance(config, LRFreeConfig) else LRFreeConfig.from_dict(config)
        super().__init__(config, handover, problem)  # problem: a user's, as for every run (None: the one config names)
        self.optimizer = make_optimizer(self.config.method, self.model.parameters(), self.config.lr, self.horizon)
        self.schedule_free = self.config.method == "schedulefree"

    @classmethod
    def for_handover(cls, config, epochs):
        """The same optimizer, from scratch, for ``epochs`` epochs of the full training set, as a hand-over."""
        return cls({**config, "epochs": epochs}, handover=True)

    @property
    def horizon(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    def steps_now(self) -> int:
        return self.steps_per_epoch

    def advance(self, batches, n):
        first = self.state.step
        self.model.train()
        if self.schedule_free:
            self.optimizer.train()  # the weights become y, where gradients are taken
        taken, diverged = 0, False
        for x, y in batches:
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.problem.loss(self.model(x), y)
            taken += 1
            if not math.isfinite(loss.item()):
                diverged = True
                break
            loss.backward()
            self.optimizer.step()
        if self.schedule_free:
            self.optimizer.eval()  # the weights become x, the ones evaluated and checkpointed
            recompute_batchnorm(self.model, self.problem.steps(self.train_idx, first, min(BN_BATCHES, taken), self.handover))
        self.state = TrainState(self._copy(self.model.named_parameters()), self._copy(self.model.named_buffers()), (), first + taken)
        diverged = diverged or not all(bool(torch.isfinite(p).all()) for p in self.state.params.values())
        lr = self.effective_lr()
        return {"effective_lr": lr, "schedule": {"lr": [lr]}}, diverged  # the step size in use, as the result contract's schedule

    def effective_lr(self) -> float:
        """The step size in use: ``d * lr`` for D-Adaptation and Prodigy, the warmed-up ``lr`` for schedule-free SGD."""
        group = self.optimizer.param_groups[0]
        return float(group["scheduled_lr"] if self.schedule_free else group["d"] * group["lr"])

    def method_state(self) -> dict[str, Any]:
        saved = self.optimizer.state_dict()  # its per-parameter state is keyed by int: a list of pairs in JSON
        return {OPTIMIZER_STATE: {"state": [[k, v] for k, v in saved["state"].items()], "param_groups": saved["param_groups"]}}

    def load_method_state(self, state: Mapping[str, Any]) -> None:
        with torch.no_grad():  # the model holds the checkpointed weights (x for schedule-free SGD, in eval mode)
            for name, p in self.model.named_parameters():
                p.copy_(self.state.params[name])
            for name, b in self.model.named_buffers():
                b.copy_(self.state.buffers[name])
        saved = state[OPTIMIZER_STATE]
        self.optimizer.load_state_dict({"state": {int(k): v for k, v in saved["state"]}, "param_groups": saved["param_groups"]})

    @staticmethod
    def _copy(named) -> dict[str, torch.Tensor]:
        return {name: t.detach().clone() for name, t in named}


class LRFreeTrainable(RunTrainable):
    """Ray Tune shell around :class:`LRFreeRun`.  Config: the problem keys, ``epochs``, ``method``, ``lr``, ``preset``."""

    RUN = LRFreeRun
