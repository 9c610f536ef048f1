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
from collections.abc import Mapping
from typing import Any

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

__all__ = ["FDSLearner", "FDSRun", "retrain_schedule", "binned", "nan_list", "PER_STEP_POINTS"]

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


def nan_list(x: torch.Tensor) -> list:
    """A tensor as a JSON-safe (nested) list, non-finite entries as NaN."""
    x = x.detach().to(torch.float64).cpu()
    return torch.where(torch.isfinite(x), x, float("nan")).tolist()


def binned(per_step: torch.Tensor, width: int) -> list:
    """Means of consecutive ``width``-step bins of per-step hypergradients (the last bin may be
    shorter), as :func:`nan_list` (a list of rows, for a kind learned per group)."""
    return nan_list(torch.stack([per_step[i : i + width].mean(0) for i in range(0, len(per_step), width)]))


class FDSLearner:
    """Learns shared schedules of lr, momentum and weight decay for one problem."""

    def __init__(self, config: FDSConfig, problem: Problem | None = None):
        self.config = config
        self.problem = problem if problem is not None else Problem(config.problem)
        rows = self.group_rows()
        init = {k: torch.full(rows[k] + (config.n_values[k],), float(config.init[k]), dtype=torch.float64) for k in config.n_values}
        self.rule = outer.get_rule(config.outer_rule)
        self.optimizer = resolve_optimizer("sgd", config.grad_clamp)  # the paper's clamped SGD
        self.state = self.rule.init(init, config.step_size)
        self.outer_step = 0  # outer steps taken
        self.inner_steps_total = 0
        self.epochs_total = 0.0
        self.compute_s = 0.0
        self.history: list[dict[str, Any]] = []
        self.converged = False
        self.incumbent: dict[str, Any] | None = None  # {"schedule", "val_acc", "val_loss", "outer_step"} of the best inner run

    def group_rows(self) -> dict[str, tuple[int, ...]]:
        """Per kind, ``()`` for one row of values, or ``(groups,)`` for a kind learned per parameter group."""
        cfg = self.config
        if not cfg.group_kinds:
            return {k: () for k in cfg.n_values}
        fm = self.problem.functional(self.problem.model(0))
        names, _ = param_groups(fm.names, fm.numels, cfg.param_groups)
        return {k: (len(names),) if k in cfg.group_kinds else () for k in cfg.n_values}

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

    # ---- one outer step -------------------------------------------------------------
    def step(self) -> dict[str, Any]:
        """One outer step: an inner run with tangents, then a hyperparameter update."""
        if self.done:
            raise RuntimeError("FDS learner: the run is already done (converged or outer-step budget spent)")
        cfg, problem, draw = self.config, self.problem, self.outer_step
        t0 = time.perf_counter()
        train_idx, val_idx = problem.split(draw)
        epochs = cfg.epochs[draw]
        horizon = epochs * problem.steps_per_epoch(len(train_idx))
        model = problem.model(draw)  # a fresh initialisation per outer step
        schedule = self.schedule
        def source(first: int, n: int):  # replayable: reverse mode replays segments of the run
            return itertools.islice(problem.train_batches(train_idx, epochs, draw), first, first + n)

        hg = hypergradients(
            model,
            schedule,
            source,
            problem.eval_batches(val_idx, cfg.batch_size),
            horizon=horizon,
            optimizer=self.optimizer,
            group_size=cfg.group_size,
            loss_fn=problem.loss,
            mode=cfg.engine_mode,
            groups=cfg.param_groups,
        )
        fm = problem.functional(model)
        raw = {k: v.detach().cpu().to(torch.float64) for k, v in hg.items()}
        metrics = None
        if not hg.diverged and outer.finite(raw):
            metrics = val_test_metrics(fm, hg.params, hg.buffers, problem.eval_batches(val_idx), problem.test_batches())
        if metrics is None:  # NaN/inf in training, the hypergradients or the validation loss
            metrics = problem.diverged_metrics()
            self.state = self.rule.step_back(self.state)
        else:
            self.state = self.rule.update(self.state, outer.normalise(raw, horizon), cfg.bounds)
            self.converged = self.rule.converged(self.state)
        steps_run = len(hg.run.train_losses)
        self.outer_step += 1
        if not metrics["diverged"] and _better(metrics, self.incumbent):
            self.incumbent = {"schedule": schedule.as_lists(), "val_acc": metrics["val_acc"], "val_loss": metrics["val_loss"],
                              "outer_step": self.outer_step}
        self.inner_steps_total += steps_run
        self.epochs_total += steps_run / problem.steps_per_epoch(len(train_idx))
        step_time = time.perf_counter() - t0
        self.compute_s += step_time
        result = {
            **metrics,
            "hypergrad_val_loss": finite_or(hg.val_loss, float("nan")),
            "schedule_used": schedule.as_lists(),
            "schedule": self.schedule.as_lists(),
            "hypergrads": {k: nan_list(v) for k, v in raw.items()},
            "step_sizes": {k: v.tolist() for k, v in self.state.steps.items()},
            "outer_step": self.outer_step,
            "inner_steps": steps_run,
            "inner_steps_total": self.inner_steps_total,
            "epochs_total": self.epochs_total,
            "compute_s": self.compute_s,
            "step_time_s": step_time,
            "converged": self.converged,
            "incumbent_schedule": None if self.incumbent is None else self.incumbent["schedule"],
            "incumbent_val_acc": None if self.incumbent is None else self.incumbent["val_acc"],
            "incumbent_outer_step": None if self.incumbent is None else self.incumbent["outer_step"],
            "engine_mode": hg.mode,
        }
        if hg.per_step is not None:  # reverse mode: where in the run each kind mattered
            width = max(1, -(-horizon // PER_STEP_POINTS))
            result["per_step_hypergrads"] = {k: binned(v, width) for k, v in hg.per_step.items()}
            result["per_step_bin"] = width
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
        highest validation accuracy first.  The decision uses training losses only,
        never the test set; every attempt counts towards the compute reported.
        """
        cfg, problem = self.config, self.problem
        t0 = time.perf_counter()
        epochs = cfg.retrain_epochs
        if epochs == 0:  # retraining switched off: the last inner run's test accuracy stands
            return {}
        for attempt, schedule in enumerate(self.retrain_candidates(), start=1):
            out = retrain_schedule(problem, schedule, epochs, self.optimizer, cfg.param_groups)
            self.epochs_total += out["epochs"]
            failed, test_acc = out["failed"], out["test_acc"]
            if not failed:
                break
        self.compute_s += time.perf_counter() - t0
        return {
            "retrain_test_acc": test_acc,
            "retrain_diverged": failed,
            "retrain_schedule": schedule.as_lists(),
            "retrain_attempts": attempt,
            "retrain_final": cfg.final,
            "retrain_is_last": schedule.as_lists() == self.schedule.as_lists(),  # the last update, as the paper retrains
            "retrain_epochs": epochs,
            "epochs_total": self.epochs_total,
            "compute_s": self.compute_s,
        }

    def retrain_candidates(self) -> list[Schedule]:
        """The handed-over schedule (the incumbent, or the last update: see :meth:`retrain`), then up to
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


def _better(metrics: Mapping[str, Any], incumbent: Mapping[str, Any] | None) -> bool:
    """A finished inner run beats the incumbent: higher validation accuracy, or as high with a lower loss."""
    if incumbent is None:
        return True
    return (metrics["val_acc"], -metrics["val_loss"]) > (incumbent["val_acc"], -incumbent["val_loss"])
