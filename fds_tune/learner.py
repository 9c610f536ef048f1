"""The FDS learner: outer steps of full inner runs, then retraining.

Library code with no Ray in it; :class:`~fds_tune.trainable.FDSTrainable` only
wraps it.  Each outer step draws a fresh network initialisation from ``(seed, outer
step)`` (the final retraining from ``(seed, RETRAIN_DRAW)``), trains it
for that step's horizon on the training set minus a validation split drawn
again for that step, computes exact hypergradients with forward mode, and
updates the shared values with the configured outer rule.  All randomness is
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
from .functional_model import FunctionalModel, val_test_metrics
from .groups import param_groups
from .optim import resolve_optimizer
from .problem import RETRAIN_DRAW, Problem, cached_problem
from .results import diverged_metrics, finite_or
from .schedule import Schedule

__all__ = ["FDSLearner", "FDSRun", "binned", "PER_STEP_POINTS"]

PER_STEP_POINTS = 200  # per-step hypergradients are reported as means over at most this many bins of steps


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

    def group_rows(self) -> dict[str, tuple[int, ...]]:
        """Per kind, ``()`` for one row of values, or ``(groups,)`` for a kind learned per parameter group."""
        cfg = self.config
        if not cfg.group_kinds:
            return {k: () for k in cfg.n_values}
        fm = FunctionalModel(self.problem.model(0), torch.nn.functional.cross_entropy)
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
        }

    def load_state_dict(self, data: dict[str, Any]) -> None:
        self.state = outer.from_json(self.rule, data["outer"])
        self.outer_step = int(data["outer_step"])
        self.inner_steps_total = int(data["inner_steps_total"])
        self.epochs_total = float(data["epochs_total"])
        self.compute_s = float(data["compute_s"])
        self.converged = bool(data["converged"])
        self.history = list(data["history"])

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
            mode=cfg.engine_mode,
            groups=cfg.param_groups,
        )
        fm = FunctionalModel(model, torch.nn.functional.cross_entropy)
        raw = {k: v.detach().cpu().to(torch.float64) for k, v in hg.items()}
        metrics = None
        if not hg.diverged and outer.finite(raw):
            metrics = val_test_metrics(fm, hg.params, hg.buffers, problem.eval_batches(val_idx), problem.test_batches())
        if metrics is None:  # NaN/inf in training, the hypergradients or the validation loss
            metrics = diverged_metrics(problem.data.num_classes)
            self.state = self.rule.step_back(self.state)
        else:
            self.state = self.rule.update(self.state, outer.normalise(raw, horizon), cfg.bounds)
            self.converged = self.rule.converged(self.state)
        steps_run = len(hg.run.train_losses)
        self.outer_step += 1
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
        """Train from scratch on the full training set with the learned schedule, stretched
        to ``retrain_epochs``, and evaluate on the test set.

        The learned schedule comes from the last outer update, which no inner run has
        tried.  If its retraining diverges (NaN/inf) or stalls (the train loss never
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
        steps_per_epoch = problem.steps_per_epoch(problem.n_train)
        candidates = self.retrain_candidates()
        for attempt, schedule in enumerate(candidates, start=1):
            model = problem.model(RETRAIN_DRAW)
            horizon = epochs * steps_per_epoch
            batches = problem.steps(None, 0, horizon, handover=True)  # the hand-over every method gets
            run = train(model, schedule, batches, horizon=horizon, optimizer=self.optimizer, groups=cfg.param_groups)
            self.epochs_total += len(run.train_losses) / steps_per_epoch
            failed = run.diverged or run.stalled
            if not failed:
                break
        if failed:
            test_acc = diverged_metrics(problem.data.num_classes)["test_acc"]
        else:
            fm = FunctionalModel(model, torch.nn.functional.cross_entropy)
            _, test_acc = fm.evaluate(fm.flatten(run.params), run.buffers, problem.test_batches())
        self.compute_s += time.perf_counter() - t0
        return {
            "retrain_test_acc": test_acc,
            "retrain_diverged": failed,
            "retrain_schedule": schedule.as_lists(),
            "retrain_attempts": attempt,
            "retrain_epochs": epochs,
            "epochs_total": self.epochs_total,
            "compute_s": self.compute_s,
        }

    def retrain_candidates(self) -> list[Schedule]:
        """The learned schedule, then up to ``retrain_fallbacks`` distinct schedules that
        inner runs tried without diverging, highest validation accuracy first."""
        tried = sorted((h for h in self.history if not h["diverged"]), key=lambda h: -h["val_acc"])
        out, seen = [self.schedule], [self.schedule.as_lists()]
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

    def __init__(self, config: Mapping[str, Any] | FDSConfig, problem: Problem | None = None):
        self.config = config if isinstance(config, FDSConfig) else fds_config(config)
        self.learner = FDSLearner(self.config, problem if problem is not None else cached_problem(self.config.problem))

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
