"""One run protocol for every method, and the base of the single-training-run methods.

A *run* is one trial's work, advanced one result at a time, with no Ray in it::

    run = SomeRun(config)            # validates the config once
    while not run.done:
        result = run.step()          # one result (the columns of fds_tune.results)
    state = run.state_dict()         # JSON-safe: continues bit for bit after
    run.load_state_dict(state)       #   SomeRun(config).load_state_dict(state)

FDS (:class:`~fds_tune.learner.FDSRun`), the black-box schedule runs, HD and
greedy forward mode are runs; one Ray Tune shell
(:class:`~fds_tune.trainable.RunTrainable`) wraps any of them.

:class:`TrainingRun` is what the single-training-run methods share: the
problem's data, fixed split ``problem.split(0)``, seeded network, starting
state, evaluation, the result's common columns, and the state dict.  A subclass
says how many inner steps one result takes (:meth:`TrainingRun.steps_now`) and
how to take them (:meth:`TrainingRun.advance`).
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from .checkpoint import decode_tensors, encode_tensors
from .functional_model import TrainState, val_test_metrics
from .optim import sgd
from .problem import RETRAIN_DRAW, Problem, ProblemConfig, problem_for
from .results import EPOCHS, SECONDS
from .spec import ProblemSpec

__all__ = ["Run", "RunConfig", "TrainingRun", "run_to_end"]


@runtime_checkable
class Run(Protocol):
    """What every method's run speaks.

    ``KIND`` names its checkpoints; ``config_dict()`` is its validated config as
    JSON (a checkpoint written for another config is refused).
    """

    KIND: ClassVar[str]

    def step(self) -> dict[str, Any]: ...

    @property
    def done(self) -> bool: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def config_dict(self) -> dict[str, Any]: ...


class RunConfig(Protocol):
    """What :class:`TrainingRun` reads from a validated config."""

    problem: ProblemConfig
    preset: str | None

    def to_dict(self) -> dict[str, Any]: ...


class TrainingRun:
    """One training run on the shared problem, advanced ``steps_now()`` inner steps per :meth:`step`.

    Epoch ``e`` draws its batch order from ``(problem seed, e)`` (:meth:`~fds_tune.problem.Problem.steps`):
    no RNG state needs saving, and a paused and resumed run continues bit for bit.

    ``handover=True`` makes the run a *hand-over*, the final retraining every method's
    choice gets: initialisation ``RETRAIN_DRAW``, the full training set, the hand-over's
    batch order, and ``handover_test_acc`` (the test accuracy, read once at the end).
    """

    KIND: ClassVar[str]
    METHOD: ClassVar[str]  # the result's ``method`` unless the config says otherwise
    # True: the run differentiates through training with torch.func (HD, greedy): its problem's loss
    # is checked for forward mode at construction (:meth:`~fds_tune.problem.Problem.check_forward_mode`)
    FORWARD_MODE: ClassVar[bool] = True

    def __init__(self, config: RunConfig, handover: bool = False, problem: Problem | ProblemSpec | None = None):
        self.config = config
        self.handover = handover
        self.problem = problem_for(config.problem, problem)  # None: the problem config.problem names
        if self.FORWARD_MODE:
            self.problem.check_forward_mode()
        self.model = self.problem.model(RETRAIN_DRAW if handover else 0)
        self.fm = self.problem.functional(self.model)
        split_train, self.val_idx = self.problem.split(0)
        self.train_idx = None if handover else split_train  # a hand-over trains on the full training set
        self.val_batches = [] if handover else self.problem.eval_batches(self.val_idx)  # a hand-over reports no validation
        self.test_batches = self.problem.test_batches()
        self.steps_per_epoch = self.problem.steps_per_epoch(self.problem.n_train if handover else len(split_train))
        self.state: TrainState = self.fm.start_state(sgd().init)
        self.compute_s = 0.0
        self.diverged = False

    # ---- what a method says ----------------------------------------------------------
    @classmethod
    def for_handover(cls, config: Mapping[str, Any], epochs: int) -> "TrainingRun":
        """The hand-over of a trial's ``config``: the same method and settings, run for ``epochs``
        epochs as a hand-over (see the class docstring)."""
        raise NotImplementedError

    @property
    def horizon(self) -> int:
        """Inner steps of the whole run."""
        raise NotImplementedError

    def steps_now(self) -> int:
        """Inner steps the next :meth:`step` takes (at most what is left)."""
        raise NotImplementedError

    def advance(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], n: int) -> tuple[dict[str, Any], bool]:
        """Take ``n`` inner steps from ``self.state`` (updating it); return (extra result columns, diverged)."""
        raise NotImplementedError

    def method_state(self) -> dict[str, Any]:
        """The method's own part of the state dict (tensors allowed)."""
        return {}

    def load_method_state(self, state: Mapping[str, Any]) -> None:
        pass

    # ---- the protocol ----------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.diverged or self.state.step >= self.horizon

    def step(self) -> dict[str, Any]:
        """Take this step's inner steps, evaluate, and report the common columns."""
        if self.done:
            raise RuntimeError(f"step: the run is finished (step {self.state.step} of {self.horizon}, diverged={self.diverged})")
        t0 = time.perf_counter()
        first = self.state.step
        n = min(self.steps_now(), self.horizon - first)
        extra, diverged = self.advance(self.problem.steps(self.train_idx, first, n, self.handover), n)
        metrics = None if diverged else self.evaluate()
        self.compute_s += time.perf_counter() - t0
        self.diverged = metrics is None
        result = {
            "method": getattr(self.config, "method", self.METHOD),
            "seed": self.config.problem.seed,
            "preset": self.config.preset,
            **(metrics or self.problem.diverged_metrics()),
            EPOCHS: self.state.step / self.steps_per_epoch,
            SECONDS: self.compute_s,
            **extra,
            "done": self.done,
        }
        if self.handover:
            result["handover"] = True
            if self.done:  # the hand-over's answer: evaluated once on the test set, at the end
                result["handover_test_acc"] = result["test_acc"]
        return result

    def evaluate(self) -> dict[str, Any] | None:
        """Eval-mode metrics; None when the loss is not finite.  A hand-over trained on the validation
        split too, so it reports no validation metrics (NaN): it is never chosen by validation."""
        if not self.handover:
            return val_test_metrics(self.fm, self.state.params, self.state.buffers, self.val_batches, self.test_batches)
        loss, acc = self.fm.evaluate(self.fm.flatten(self.state.params), self.state.buffers, self.test_batches)
        return {"val_acc": math.nan, "val_loss": math.nan, "test_acc": acc, "diverged": False} if math.isfinite(loss) else None

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def state_dict(self) -> dict[str, Any]:
        params, buffers, opt_state, step = self.state
        tensors = {"params": dict(params), "buffers": dict(buffers), "opt_state": list(opt_state)}
        return encode_tensors({"step": step, "compute_s": self.compute_s, "diverged": self.diverged, **tensors, **self.method_state()})

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        state = decode_tensors(state, self.problem.device)
        self.state = TrainState(state["params"], state["buffers"], tuple(state["opt_state"]), int(state["step"]))
        self.compute_s, self.diverged = float(state["compute_s"]), bool(state["diverged"])
        self.load_method_state(state)


def run_to_end(run: Run) -> list[dict[str, Any]]:
    """Step ``run`` until it is done; its results, in order."""
    results = []
    while not run.done:
        results.append(run.step())
    return results
