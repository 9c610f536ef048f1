"""The FDS learner: outer steps of full inner runs, then retraining.

Library code with no Ray in it; :class:`~fds_tune.trainable.FDSTrainable` only
wraps it.  Each outer step draws a fresh network initialisation from ``(seed, outer
step)`` (the final retraining from ``(seed, RETRAIN_DRAW)``), trains it
for that step's horizon on the training set minus a validation split drawn
again for that step, computes exact hypergradients with forward mode, and
updates the shared values with the configured outer rule.  Like every other
method, it keeps an incumbent: the schedule an inner run used with the best
validation accuracy so far (ties: the lower validation loss, then the earlier
step), which the final retraining trains by default (``final="incumbent"``;
``final="last"`` trains the last update, as the paper).  All randomness is
derived from ``(seed, outer step)``, so the learner's whole state is the small,
JSON-serialisable :meth:`FDSLearner.state_dict`.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch

from . import outer
from .config import FDSConfig, fds_config
from .engine import hypergradients, train
from .functional_model import val_test_metrics
from .groups import param_groups
from .optim import resolve_optimizer
from .problem import RETRAIN_DRAW, Problem, problem_for
from .results import finite_or
from .schedule import Schedule
from .spec import ProblemSpec

__all__ = [
    "FDSLearner", "FDSRun", "OuterLoop", "InnerOutcome", "run_inner", "retrain_schedule", "retrain_first", "retrain_columns",
    "better", "group_rows", "initial_values", "binned", "nan_list", "PER_STEP_POINTS",
]

PER_STEP_POINTS = 200  # per-step hypergradients are reported as means over at most this many bins of steps


def retrain_schedule(problem: Problem, schedule: Schedule, epochs: int, optimizer, groups=None) -> dict[str, Any]:
    """One hand-over: train ``problem``'s retraining initialisation on the full training set (the
    batches every method's hand-over gets) for ``epochs`` epochs with ``schedule`` (``groups``: the
    parameter groups of a kind given per group).

    Returns ``test_acc`` (chance when the run failed), ``failed`` (diverged or stalled: see
    :attr:`~fds_tune.engine.TrainResult.stalled`) and ``epochs`` (the epochs actually trained).
    """
    steps_per_epoch = problem.steps_per_epoch(problem.n_train)
    model, horizon = problem.model(RETRAIN_DRAW), epochs * steps_per_epoch
    batches = problem.steps(None, 0, horizon, handover=True)  # the hand-over every method gets
    run = train(model, schedule, batches, horizon=horizon, optimizer=optimizer, loss_fn=problem.loss, groups=groups)
    failed = run.diverged or run.stalled
    test_acc = problem.diverged_metrics()["test_acc"]
    if not failed:
        fm = problem.functional(model)
        _, test_acc = fm.evaluate(fm.flatten(run.params), run.buffers, problem.test_batches())
    return {"test_acc": test_acc, "failed": failed, "epochs": len(run.train_losses) / steps_per_epoch}


def retrain_first(problem: Problem, candidates: Sequence[Schedule], epochs: int, optimizer, groups=None) -> dict[str, Any]:
    """Retrain ``candidates`` in turn (:func:`retrain_schedule`) until one trains (neither diverges nor stalls).

    Returns ``test_acc`` and ``failed`` of the last attempt (``failed``: every candidate failed),
    ``schedule`` (the last one retrained), ``attempts`` and ``epochs`` (a list: the epochs each
    attempt trained; every attempt counts towards the compute reported).
    """
    trained = []
    for attempt, schedule in enumerate(candidates, start=1):
        out = retrain_schedule(problem, schedule, epochs, optimizer, groups)
        trained.append(out["epochs"])
        if not out["failed"]:
            break
    return {"test_acc": out["test_acc"], "failed": out["failed"], "schedule": schedule, "attempts": attempt, "epochs": trained}


def retrain_columns(out: Mapping[str, Any], final: str, last: Schedule, epochs: int) -> dict[str, Any]:
    """The ``retrain_*`` result columns of a :func:`retrain_first` outcome (``last``: the last outer update)."""
    return {
        "retrain_test_acc": out["test_acc"],
        "retrain_diverged": out["failed"],
        "retrain_schedule": out["schedule"].as_lists(),
        "retrain_attempts": out["attempts"],
        "retrain_final": final,
        "retrain_is_last": out["schedule"].as_lists() == last.as_lists(),  # the last update, as the paper retrains
        "retrain_epochs": epochs,
    }


def nan_list(x: torch.Tensor) -> list:
    """A tensor as a JSON-safe (nested) list, non-finite entries as NaN."""
    x = x.detach().to(torch.float64).cpu()
    return torch.where(torch.isfinite(x), x, float("nan")).tolist()


def binned(per_step: torch.Tensor, width: int) -> list:
    """Means of consecutive ``width``-step bins of per-step hypergradients (the last bin may be
    shorter), as :func:`nan_list` (a list of rows, for a kind learned per group)."""
    return nan_list(torch.stack([per_step[i : i + width].mean(0) for i in range(0, len(per_step), width)]))


class InnerOutcome(NamedTuple):
    """What one inner run gives its outer step (:func:`run_inner`)."""

    metrics: dict[str, Any]  # val_acc, val_loss, test_acc, diverged (a diverged run: the problem's diverged metrics)
    hypergrads: dict[str, torch.Tensor]  # raw dL_val/d(shared values), float64 on CPU (NaN/inf where the run diverged)
    normalised: dict[str, torch.Tensor] | None  # per inner step (outer.normalise); None when the run diverged
    hypergrad_val_loss: float  # the validation loss the hypergradients differentiate (NaN when not finite)
    steps: int  # inner steps run
    epochs: float  # inner steps run, in epochs of the run's training split
    horizon: int  # inner steps planned
    mode: str  # the engine that ran ("forward" or "reverse")
    per_step: dict[str, list] | None  # reverse mode: per-step hypergradients, binned (:func:`binned`)
    per_step_bin: int | None  # the bins' width in steps


def run_inner(problem: Problem, config: FDSConfig, schedule: Schedule, draw: int, epochs: int, optimizer) -> InnerOutcome:
    """One inner run: train ``problem``'s initialisation ``draw`` for ``epochs`` epochs on the training
    split of ``draw`` (its batch order from ``draw`` too) with ``schedule``, carrying the tangents of
    the shared values (``config.engine_mode``), and return its hypergradients and metrics.

    A run diverges when training, the hypergradients or the validation loss are not finite; it then
    reports the problem's diverged metrics and no normalised hypergradients.
    """
    train_idx, val_idx = problem.split(draw)
    horizon = epochs * problem.steps_per_epoch(len(train_idx))
    model = problem.model(draw)  # a fresh initialisation per draw

    def source(first: int, n: int):  # replayable: reverse mode replays segments of the run
        return itertools.islice(problem.train_batches(train_idx, epochs, draw), first, first + n)

    hg = hypergradients(
        model,
        schedule,
        source,
        problem.eval_batches(val_idx, config.batch_size),
        horizon=horizon,
        optimizer=optimizer,
        group_size=config.group_size,
        loss_fn=problem.loss,
        mode=config.engine_mode,
        groups=config.param_groups,
    )
    fm = problem.functional(model)
    raw = {k: v.detach().cpu().to(torch.float64) for k, v in hg.items()}
    metrics = None
    if not hg.diverged and outer.finite(raw):
        metrics = val_test_metrics(fm, hg.params, hg.buffers, problem.eval_batches(val_idx), problem.test_batches())
    normalised = None if metrics is None else outer.normalise(raw, horizon)
    if metrics is None:  # NaN/inf in training, the hypergradients or the validation loss
        metrics = problem.diverged_metrics()
    steps = len(hg.run.train_losses)
    per_step, width = None, None
    if hg.per_step is not None:  # reverse mode: where in the run each kind mattered
        width = max(1, -(-horizon // PER_STEP_POINTS))
        per_step = {k: binned(v, width) for k, v in hg.per_step.items()}
    return InnerOutcome(
        metrics, raw, normalised, finite_or(hg.val_loss, float("nan")), steps, steps / problem.steps_per_epoch(len(train_idx)),
        horizon, hg.mode, per_step, width,
    )


def group_rows(config: FDSConfig, problem: Problem | None) -> dict[str, tuple[int, ...]]:
    """Per kind, ``()`` for one row of values, or ``(groups,)`` for a kind learned per parameter group
    (``problem``'s network names the groups; it is only read when ``config.group_kinds`` is set)."""
    if not config.group_kinds:
        return {k: () for k in config.n_values}
    fm = problem.functional(problem.model(0))
    names, _ = param_groups(fm.names, fm.numels, config.param_groups)
    return {k: (len(names),) if k in config.group_kinds else () for k in config.n_values}


def initial_values(config: FDSConfig, rows: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The shared values FDS starts from: ``config.init`` of each kind, ``rows[kind] + (n_values,)`` of them."""
    return {k: torch.full(tuple(rows[k]) + (config.n_values[k],), float(config.init[k]), dtype=torch.float64) for k in config.n_values}


class OuterLoop:
    """FDS's outer loop without its inner runs: the shared values under the outer rule, the outer
    steps taken, the training and compute spent, the history and the incumbent.

    :class:`FDSLearner` runs one inner run per outer step on top of it; the parallel
    search (:class:`~fds_tune.parallel.ParallelFDS`) combines several.  ``rows``: see :func:`group_rows`.
    """

    def __init__(self, config: FDSConfig, rows: Mapping[str, tuple[int, ...]]):
        self.config = config
        self.rule = outer.get_rule(config.outer_rule)
        self.state = self.rule.init(initial_values(config, rows), config.step_size)
        self.outer_step = 0  # outer steps taken
        self.inner_steps_total = 0
        self.epochs_total = 0.0
        self.compute_s = 0.0
        self.history: list[dict[str, Any]] = []
        self.converged = False
        self.incumbent: dict[str, Any] | None = None  # {"schedule", "val_acc", "val_loss", "outer_step"} of the best inner run

    # ---- state -----------------------------------------------------------------------
    @property
    def schedule(self) -> Schedule:
        return Schedule(self.state.values)

    @property
    def done(self) -> bool:
        return self.converged or self.outer_step >= self.config.outer_steps

    def state_dict(self) -> dict[str, Any]:
        return {
            "outer": outer.to_json(self.state),
            "outer_step": self.outer_step,
            "inner_steps_total": self.inner_steps_total,
            "epochs_total": self.epochs_total,
            "compute_s": self.compute_s,
            "converged": self.converged,
            "history": self.history,
            "incumbent": self.incumbent,
        }

    def load_state_dict(self, data: dict[str, Any]) -> None:
        self.state = outer.from_json(self.rule, data["outer"])
        self.outer_step = int(data["outer_step"])
        self.inner_steps_total = int(data["inner_steps_total"])
        self.epochs_total = float(data["epochs_total"])
        self.compute_s = float(data["compute_s"])
        self.converged = bool(data["converged"])
        self.history = list(data["history"])
        self.incumbent = data.get("incumbent")  # absent from a checkpoint written before incumbents

    # ---- one outer step, from what its inner run(s) gave ------------------------------
    def take(self, schedule_used: Schedule, grads: Mapping[str, torch.Tensor] | None, metrics: Mapping[str, Any], steps: int,
             epochs: float) -> None:
        """Take one outer step: the outer rule's update with ``grads`` (normalised hypergradients), or,
        given None (an inner run diverged), a step back; then count the step, keep ``schedule_used`` as
        the incumbent if its ``metrics`` (``val_acc``, ``val_loss``, ``diverged``) beat it, and add the
        training done (``steps`` inner steps, ``epochs``).  The seconds spent are the caller's to add."""
        if grads is None:
            self.state = self.rule.step_back(self.state)
        else:
            self.state = self.rule.update(self.state, dict(grads), self.config.bounds)
            self.converged = self.rule.converged(self.state)
        self.outer_step += 1
        if not metrics["diverged"] and better(metrics, self.incumbent):
            self.incumbent = {"schedule": schedule_used.as_lists(), "val_acc": metrics["val_acc"], "val_loss": metrics["val_loss"],
                              "outer_step": self.outer_step}
        self.inner_steps_total += steps
        self.epochs_total += epochs

    def retrain_candidates(self) -> list[Schedule]:
        """The handed-over schedule (the incumbent, or the last update: see :meth:`FDSLearner.retrain`), then up to
        ``retrain_fallbacks`` other distinct schedules that inner runs tried without diverging, highest
        validation accuracy first."""
        tried = sorted((h for h in self.history if not h["diverged"]), key=lambda h: -h["val_acc"])
        first = self.schedule
        if self.config.final == "incumbent" and self.incumbent is not None:
            first = Schedule(self.incumbent["schedule"])
        out, seen = [first], [first.as_lists()]
        for h in tried:
            if len(out) > self.config.retrain_fallbacks:
                break
            if h["schedule_used"] not in seen:
                seen.append(h["schedule_used"])
                out.append(Schedule(h["schedule_used"]))
        return out


class FDSLearner(OuterLoop):
    """Learns shared schedules of lr, momentum and weight decay for one problem."""

    def __init__(self, config: FDSConfig, problem: Problem | None = None):
        self.config = config
        self.problem = problem if problem is not None else Problem(config.problem)
        self.problem.check_forward_mode()
        super().__init__(config, self.group_rows())
        self.optimizer = resolve_optimizer("sgd", config.grad_clamp)  # the paper's clamped SGD

    def group_rows(self) -> dict[str, tuple[int, ...]]:
        """Per kind, ``()`` for one row of values, or ``(groups,)`` for a kind learned per parameter group."""
        return group_rows(self.config, self.problem)

    # ---- one outer step -------------------------------------------------------------
    def step(self) -> dict[str, Any]:
        """One outer step: an inner run with tangents, then a hyperparameter update."""
        if self.done:
            raise RuntimeError("FDS learner: the run is already done (converged or outer-step budget spent)")
        cfg, draw = self.config, self.outer_step
        t0 = time.perf_counter()
        schedule = self.schedule
        run = run_inner(self.problem, cfg, schedule, draw, cfg.epochs[draw], self.optimizer)
        self.take(schedule, run.normalised, run.metrics, run.steps, run.epochs)
        step_time = time.perf_counter() - t0
        self.compute_s += step_time
        result = {
            **run.metrics,
            "hypergrad_val_loss": run.hypergrad_val_loss,
            "schedule_used": schedule.as_lists(),
            "schedule": self.schedule.as_lists(),
            "hypergrads": {k: nan_list(v) for k, v in run.hypergrads.items()},
            "step_sizes": {k: v.tolist() for k, v in self.state.steps.items()},
            "outer_step": self.outer_step,
            "inner_steps": run.steps,
            "inner_steps_total": self.inner_steps_total,
            "epochs_total": self.epochs_total,
            "compute_s": self.compute_s,
            "step_time_s": step_time,
            "converged": self.converged,
            "incumbent_schedule": None if self.incumbent is None else self.incumbent["schedule"],
            "incumbent_val_acc": None if self.incumbent is None else self.incumbent["val_acc"],
            "incumbent_outer_step": None if self.incumbent is None else self.incumbent["outer_step"],
            "engine_mode": run.mode,
        }
        if run.per_step is not None:  # reverse mode: where in the run each kind mattered
            result["per_step_hypergrads"] = run.per_step
            result["per_step_bin"] = run.per_step_bin
        self.history.append({k: result[k] for k in ("outer_step", "val_acc", "test_acc", "diverged", "schedule_used", "hypergrads")})
        return result

    # ---- final retraining -----------------------------------------------------------
    def retrain(self) -> dict[str, Any]:
        """Train from scratch on the full training set with the handed-over schedule, stretched
        to ``retrain_epochs``, and evaluate on the test set.

        The handed-over schedule is the incumbent (``final="incumbent"``: the schedule of
        the inner run with the best validation accuracy), or the last outer update
        (``final="last"``, or no inner run finished), which no inner run has tried.
        If its retraining diverges (NaN/inf) or stalls (the train loss never
        drops, see :attr:`~fds_tune.engine.TrainResult.stalled`), up to
        ``retrain_fallbacks`` schedules that inner runs did try are retrained instead,
        highest validation accuracy first (:func:`retrain_first`).  The decision uses training
        losses only, never the test set; every attempt counts towards the compute reported.
        """
        cfg, problem = self.config, self.problem
        t0 = time.perf_counter()
        epochs = cfg.retrain_epochs
        if epochs == 0:  # retraining switched off: the last inner run's test accuracy stands
            return {}
        out = retrain_first(problem, self.retrain_candidates(), epochs, self.optimizer, cfg.param_groups)
        for trained in out["epochs"]:
            self.epochs_total += trained
        self.compute_s += time.perf_counter() - t0
        return {**retrain_columns(out, cfg.final, self.schedule, epochs), "epochs_total": self.epochs_total, "compute_s": self.compute_s}


class FDSRun:
    """FDS as a :class:`~fds_tune.run.Run`: one outer step per :meth:`step`; the step that
    finishes the run (converged or outer-step budget spent) also retrains."""

    KIND = "fds"

    def __init__(self, config: Mapping[str, Any] | FDSConfig, problem: Problem | ProblemSpec | None = None):
        self.config = config if isinstance(config, FDSConfig) else fds_config(config)
        self.learner = FDSLearner(self.config, problem_for(self.config.problem, problem))

    @property
    def done(self) -> bool:
        return self.learner.done

    def step(self) -> dict[str, Any]:
        result = {"method": "fds", "seed": self.config.seed, "preset": self.config.preset, **self.learner.step()}
        if self.learner.done:
            result.update(self.learner.retrain())
            result["done"] = True
        result["retrained"] = "retrain_test_acc" in result
        return result

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def state_dict(self) -> dict[str, Any]:
        return self.learner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.learner.load_state_dict(state)


def better(metrics: Mapping[str, Any], incumbent: Mapping[str, Any] | None) -> bool:
    """A finished inner run (or outer step) beats the incumbent: higher validation accuracy, or as high with a lower loss."""
    if incumbent is None:
        return True
    return (metrics["val_acc"], -metrics["val_loss"]) > (incumbent["val_acc"], -incumbent["val_loss"])
