"""FDS with several inner runs per outer step, as jobs: the Ray-free core of :class:`~fds_tune.searcher.FDSSearcher`.

An outer step of *parallel FDS* runs ``parallel`` inner runs of the same schedule, each
with its own draw (:func:`run_draw`: its network initialisation, validation split and
batch order), possibly at the same time on different workers.  When every run of the
step is in, their normalised hypergradients are combined (:data:`COMBINERS`) and the
outer rule takes one step with the result, exactly as :class:`~fds_tune.learner.FDSLearner`
does with a single run's; then the next outer step's runs are given out.  After the last
outer step, one more job retrains the incumbent (as ``FDSTrainable``'s last step does).

Combining (``combine``):

* ``"mean"`` (the default) -- the mean of the runs' normalised hypergradients.  It keeps
  the magnitudes (which :func:`~fds_tune.outer.normalised_rule` and
  :func:`~fds_tune.outer.adam_rule` use) and its sign is that of the run-averaged
  estimate, the one whose noise shrinks as 1/sqrt(parallel).
* ``"sign_vote"`` -- per component, the sign most runs agree on (0 on a tie): robust to one
  run with an outsized hypergradient, but it throws the magnitudes away (for the sign and
  rprop rules only the sign counts anyway) and a tie stops that value for one step.

With ``parallel=1`` both give the single run's own hypergradients, and run 0 of outer step
``k`` draws as ``FDSLearner``'s outer step ``k`` does: the search is then ``FDSLearner``'s run.

An outer step's runs that fail for good (after Ray Tune's ``max_failures``) are dropped;
the step goes on with the runs that finished (at least one: when every run fails, it
raises :class:`OuterStepFailed`), and its history entry says which runs were used and which
dropped.  A run that diverged (NaN/inf) makes its step a step back (``rule.step_back``), as a
diverged run does in ``FDSLearner``: a schedule that diverges for one draw in ``parallel`` is
not safe.

:class:`ParallelFDS` only hands out jobs and takes their results (``next_job`` /
``job_done`` / ``job_failed``, keyed by a job id such as Tune's trial id); its whole state is
the JSON-safe :meth:`ParallelFDS.state_dict`.  :class:`FDSJob` runs one job (a
:class:`~fds_tune.run.Run`, wrapped for Ray by :class:`~fds_tune.searcher.FDSInnerRun`).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from . import outer
from .config import FDSConfig, fds_config
from .learner import OuterLoop, group_rows, nan_list, retrain_columns, retrain_first, run_inner
from .optim import resolve_optimizer
from .problem import Problem, cached_problem, problem_for
from .schedule import Schedule
from .spec import ProblemSpec
from .validation import check, check_choice, check_int, check_optional, fail, is_int

__all__ = [
    "JOB_KEY", "JOB_KINDS", "RUN_STRIDE", "FINISHED", "run_draw", "mean_of", "sign_vote", "COMBINERS", "combine",
    "nested", "json_round_trip", "ParallelFDS", "OuterStepFailed", "FDSJob",
]

JOB_KEY = "fds_job"  # the trial config's key that holds its job, and the key of the result that says which job ran
JOB_KINDS = ("inner", "retrain")  # an inner run of an outer step; the final retraining
RUN_STRIDE = 1000  # run r of outer step k draws k + RUN_STRIDE * r: distinct for up to RUN_STRIDE outer steps
FINISHED = "FINISHED"  # what next_job returns once the search is over (the value of Ray Tune's Searcher.FINISHED)
STATE_VERSION = 1  # of ParallelFDS.state_dict


def run_draw(outer_step: int, run: int) -> int:
    """The draw of inner run ``run`` of outer step ``outer_step`` (both 0-based): its network
    initialisation, validation split and batch order (:class:`~fds_tune.problem.Problem`).  Run 0
    draws ``outer_step``, as :class:`~fds_tune.learner.FDSLearner` does."""
    return outer_step + RUN_STRIDE * run


# ---- combining the runs of one outer step --------------------------------------------------------


def _checked_runs(grads: Sequence[Mapping[str, torch.Tensor]]) -> list[Mapping[str, torch.Tensor]]:
    grads = list(grads)
    check("grads", grads, len(grads) > 0, "a non-empty list of runs' hypergradients (kind -> tensor)")
    kinds = list(grads[0])
    same = all(list(g) == kinds and all(g[k].shape == grads[0][k].shape for k in kinds) for g in grads)
    check("grads", [{k: tuple(v.shape) for k, v in g.items()} for g in grads], same, "runs with the same kinds and shapes")
    return grads


def mean_of(grads: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per kind, the mean over runs: ``g = (1/K) sum_i g_i`` (float64)."""
    grads = _checked_runs(grads)
    return {k: torch.stack([g[k].to(torch.float64) for g in grads]).mean(0) for k in grads[0]}


def sign_vote(grads: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per component, the majority sign over runs: ``g = sign(sum_i sign(g_i))`` (0 on a tie; float64)."""
    grads = _checked_runs(grads)
    return {k: torch.sign(torch.stack([torch.sign(g[k].to(torch.float64)) for g in grads]).sum(0)) for k in grads[0]}


COMBINERS: dict[str, Callable[[Sequence[Mapping[str, torch.Tensor]]], dict[str, torch.Tensor]]] = {
    "mean": mean_of, "sign_vote": sign_vote,
}


def combine(name: str, grads: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The runs' normalised hypergradients combined by :data:`COMBINERS` ``[name]``."""
    return COMBINERS[check_choice("combine", name, COMBINERS)](grads)


def nested(result: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``result[key]`` as a dict, whether the result is nested (``{"hypergrads": {"lr": ...}}``) or
    flattened as Ray Tune hands it to searchers (``{"hypergrads/lr": ...}``)."""
    if isinstance(result.get(key), Mapping):
        return dict(result[key])
    prefix = key + "/"
    return {k[len(prefix):]: v for k, v in result.items() if k.startswith(prefix)}


# ---- the search: jobs out, results in ------------------------------------------------------------


class OuterStepFailed(RuntimeError):
    """Every inner run of an outer step failed for good: nothing to update the schedule from."""


class ParallelFDS:
    """Parallel FDS as a stream of jobs (see the module docstring).

    ``next_job(job_id)`` gives a job (a JSON-safe dict), None (wait: every run of this outer step is
    out, or the retraining is), or :data:`FINISHED`; each job given out is answered once, by
    ``job_done(job_id, result)`` (the result :class:`FDSJob` reported, nested or flattened) or
    ``job_failed(job_id)``.  An answer for a job id not given out (or already answered) is ignored.
    ``rows``: per kind, the rows of values (:func:`~fds_tune.learner.group_rows`; by default from
    ``problem``, loaded only for a config with ``group_kinds``).
    """

    def __init__(self, config: FDSConfig, parallel: int = 1, combine: str = "mean", problem: Problem | None = None,
                 rows: Mapping[str, Sequence[int]] | None = None):
        check("config", type(config).__name__, isinstance(config, FDSConfig), "an FDSConfig (fds_tune.fds_config)")
        check_int("parallel", parallel, 1)
        check_choice("combine", combine, COMBINERS)
        check("epochs", list(config.epochs), config.outer_steps <= RUN_STRIDE, f"at most {RUN_STRIDE} outer steps (each run draws apart)")
        if rows is None:
            rows = group_rows(config, problem if problem is not None or not config.group_kinds else cached_problem(config.problem))
        self.config, self.parallel, self.combine = config, parallel, combine
        self.rows = {k: tuple(v) for k, v in rows.items()}
        self.loop = OuterLoop(config, self.rows)
        self.jobs: dict[str, dict[str, Any]] = {}  # job id -> job, for the jobs given out and not yet answered
        self.issued: list[int] = []  # runs of this outer step given out
        self.step_runs: dict[int, dict[str, Any]] = {}  # run -> what it reported (this outer step)
        self.step_dropped: list[int] = []  # runs of this outer step that failed for good
        self.dropped: list[dict[str, Any]] = []  # every dropped job: {"outer_step", "run", "draw", "job_id"}
        self.retrain: str | None = None  # None (not given out), "issued", "done" or "failed"
        self.retrain_result: dict[str, Any] | None = None

    # ---- the protocol ---------------------------------------------------------------------------
    @property
    def total_jobs(self) -> int:
        """Jobs of the whole search at most: ``parallel`` per outer step, plus the retraining."""
        return self.config.outer_steps * self.parallel + (1 if self.config.retrain_epochs > 0 else 0)

    @property
    def inner_runs(self) -> int:
        """Inner runs finished and used, over the outer steps taken."""
        return sum(len(h["runs"]) for h in self.loop.history)

    @property
    def finished(self) -> bool:
        return self.loop.done and (self.config.retrain_epochs == 0 or self.retrain in ("done", "failed"))

    def next_job(self, job_id: str) -> dict[str, Any] | str | None:
        """The next job, registered under ``job_id``; None to wait; :data:`FINISHED` when the search is over."""
        if self.finished:
            return FINISHED
        if not self.loop.done:
            free = [r for r in range(self.parallel) if r not in self.issued]
            if not free:
                return None
            k, run = self.loop.outer_step, free[0]
            job = {"kind": "inner", "outer_step": k, "run": run, "draw": run_draw(k, run), "parallel": self.parallel,
                   "schedule": self.loop.schedule.as_lists()}
            self.issued.append(run)
        elif self.retrain is None:
            job = {"kind": "retrain", "candidates": [s.as_lists() for s in self.loop.retrain_candidates()],
                   "last_schedule": self.loop.schedule.as_lists(), "search": self.summary()}
            self.retrain = "issued"
        else:
            return None  # the retraining is out
        self.jobs[str(job_id)] = job
        return job

    def job_done(self, job_id: str, result: Mapping[str, Any]) -> None:
        """Take a job's result; the outer step is taken once every run of it is in."""
        job = self.jobs.pop(str(job_id), None)
        if job is None:
            return  # not a live job: a late answer for a job already dropped, or an answer given twice
        check(f"result of job {job_id}: {JOB_KEY}", result.get(JOB_KEY), result.get(JOB_KEY) == job["kind"], f"{job['kind']!r} (the job given out)")
        if job["kind"] == "retrain":
            self.retrain = "done"
            kept = ("retrain_test_acc", "retrain_diverged", "retrain_attempts", "compute_s", "epochs_total")
            self.retrain_result = {k: result.get(k) for k in kept}
            return
        check(f"result of job {job_id}: draw", result.get("draw"), result.get("draw") == job["draw"], f"{job['draw']} (the job's draw)")
        self.step_runs[job["run"]] = {
            "draw": job["draw"],
            "hypergrads": nested(result, "hypergrads"),
            "horizon": int(result["horizon"]),
            "diverged": bool(result["diverged"]),
            **{k: float(result[k]) for k in ("val_acc", "val_loss", "test_acc", "epochs_total", "compute_s")},
            "inner_steps": int(result["inner_steps"]),
        }
        self._close_step_if_complete()

    def job_failed(self, job_id: str) -> None:
        """A job failed for good: a run is dropped from its outer step; a failed retraining ends the search."""
        job = self.jobs.pop(str(job_id), None)
        if job is None:
            return
        if job["kind"] == "retrain":
            self.retrain = "failed"
            return
        self.step_dropped.append(job["run"])
        self.dropped.append({"outer_step": job["outer_step"] + 1, "run": job["run"], "draw": job["draw"], "job_id": str(job_id)})
        self._close_step_if_complete()

    # ---- one outer step -------------------------------------------------------------------------
    def _close_step_if_complete(self) -> None:
        if len(self.step_runs) + len(self.step_dropped) < self.parallel:
            return
        k = self.loop.outer_step + 1
        if not self.step_runs:
            raise OuterStepFailed(
                f"FDSSearcher: every inner run of outer step {k} failed for good (runs {sorted(self.step_dropped)}); nothing to "
                "update the schedule from. See the trials' errors; the trainable must be FDSInnerRun (fds_tune.FDSInnerRun, "
                "or tune.with_parameters / tune.with_resources of it)"
            )
        runs = sorted(self.step_runs)
        recs = [self.step_runs[r] for r in runs]
        schedule_used = self.loop.schedule
        diverged = [r for r, rec in zip(runs, recs) if rec["diverged"]]
        grads = None
        if not diverged:
            normalised = [outer.normalise({kind: torch.tensor(v, dtype=torch.float64) for kind, v in rec["hypergrads"].items()}, rec["horizon"])
                          for rec in recs]
            grads = combine(self.combine, normalised)
        metrics = {m: math.fsum(rec[m] for rec in recs) / len(recs) for m in ("val_acc", "val_loss", "test_acc")}
        metrics["diverged"] = bool(diverged)
        self.loop.take(schedule_used, grads, metrics, sum(rec["inner_steps"] for rec in recs), math.fsum(rec["epochs_total"] for rec in recs))
        self.loop.compute_s += math.fsum(rec["compute_s"] for rec in recs)
        self.loop.history.append({
            "outer_step": self.loop.outer_step,
            **metrics,
            "schedule_used": schedule_used.as_lists(),
            "combined": None if grads is None else {kind: nan_list(g) for kind, g in grads.items()},
            "schedule": self.loop.schedule.as_lists(),
            "step_sizes": {kind: v.tolist() for kind, v in self.loop.state.steps.items()},
            "runs": runs,
            "draws": [rec["draw"] for rec in recs],
            "dropped": sorted(self.step_dropped),
            "diverged_runs": diverged,
            "compute_s": self.loop.compute_s,
            "epochs_total": self.loop.epochs_total,
            "converged": self.loop.converged,
        })
        self.issued, self.step_runs, self.step_dropped = [], {}, []

    # ---- what the search says -----------------------------------------------------------------
    def incumbent(self) -> dict[str, Any] | None:
        """The incumbent (the schedule whose outer step validated best, its runs' mean metrics), with its ``test_acc``."""
        inc = self.loop.incumbent
        if inc is None:
            return None
        step = next(h for h in self.loop.history if h["outer_step"] == inc["outer_step"])
        return {**inc, "test_acc": step["test_acc"]}

    def summary(self) -> dict[str, Any]:
        """The search so far: outer steps, inner runs used and dropped, compute, the incumbent and the history."""
        return {
            "outer_steps": self.loop.outer_step,
            "converged": self.loop.converged,
            "parallel": self.parallel,
            "combine": self.combine,
            "inner_runs": self.inner_runs,
            "dropped": list(self.dropped),
            "compute_s": self.loop.compute_s,
            "epochs_total": self.loop.epochs_total,
            "inner_steps_total": self.loop.inner_steps_total,
            "incumbent": self.incumbent(),
            "history": list(self.loop.history),
        }

    # ---- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue, JSON-safe (float64 values round-trip exactly)."""
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "parallel": self.parallel,
            "combine": self.combine,
            "rows": {k: list(v) for k, v in self.rows.items()},
            "loop": self.loop.state_dict(),
            "jobs": dict(self.jobs),
            "issued": list(self.issued),
            "step_runs": {str(r): rec for r, rec in self.step_runs.items()},
            "step_dropped": list(self.step_dropped),
            "dropped": list(self.dropped),
            "retrain": self.retrain,
            "retrain_result": self.retrain_result,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`; refused for another version, config, ``parallel`` or ``combine``."""
        check("state version", state.get("version"), state.get("version") == STATE_VERSION, f"{STATE_VERSION} (this fds-tune's)")
        same = json_round_trip(state.get("config")) == json_round_trip(self.config.to_dict())
        check("state config", "another FDS config", same, "this searcher's config (the state belongs to another search)")
        for key in ("parallel", "combine"):
            check(f"state {key}", state.get(key), state.get(key) == getattr(self, key), f"{getattr(self, key)!r}, this searcher's")
        self.loop.load_state_dict(dict(state["loop"]))
        self.jobs = {str(k): dict(v) for k, v in state["jobs"].items()}
        self.issued = [int(r) for r in state["issued"]]
        self.step_runs = {int(r): dict(rec) for r, rec in state["step_runs"].items()}
        self.step_dropped = [int(r) for r in state["step_dropped"]]
        self.dropped = list(state["dropped"])
        self.retrain, self.retrain_result = state["retrain"], state["retrain_result"]

    def __getstate__(self) -> dict[str, Any]:  # pickled (Ray Tune's tuner.pkl) as its JSON-safe state
        return self.state_dict()

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.__init__(fds_config(state["config"]), state["parallel"], state["combine"], rows=state["rows"])
        self.load_state_dict(state)


def json_round_trip(x: Any) -> Any:
    """``x`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(x, allow_nan=True))


# ---- one job: a Run --------------------------------------------------------------------------------


def _check_job(job: Any, config: FDSConfig) -> dict[str, Any]:
    """The job of a trial config, checked."""
    rule = "the job an FDSSearcher suggests (FDSInnerRun runs FDSSearcher's trials; for one whole FDS run per trial use FDSTrainable)"
    check(JOB_KEY, job, isinstance(job, Mapping) and job.get("kind") in JOB_KINDS, rule)
    job = dict(job)
    check_optional(f"{JOB_KEY}['threads']", job.get("threads"), check_int, 1, rule="an int >= 1 (torch threads) or None")
    if job["kind"] == "inner":
        ok = all(is_int(job.get(k)) for k in ("outer_step", "run", "draw", "parallel")) and isinstance(job.get("schedule"), Mapping)
        check(JOB_KEY, job, ok, rule)
        check_int(f"{JOB_KEY}['outer_step']", job["outer_step"], 0, config.outer_steps - 1)
    else:
        ok = isinstance(job.get("candidates"), list) and bool(job["candidates"]) and isinstance(job.get("search"), Mapping)
        check(JOB_KEY, job, ok and isinstance(job.get("last_schedule"), Mapping), rule)
    return job


class FDSJob:
    """One trial of the parallel search as a :class:`~fds_tune.run.Run`: one ``step()`` runs its job.

    The config is an FDS config (:meth:`~fds_tune.config.FDSConfig.to_dict`) plus the job under
    :data:`JOB_KEY`.  An ``"inner"`` job runs one inner run of an outer step (:func:`~fds_tune.learner.run_inner`)
    and reports its metrics, raw ``hypergrads`` and ``horizon`` (the searcher normalises and combines them);
    a ``"retrain"`` job retrains the incumbent (with fallbacks, :func:`~fds_tune.learner.retrain_first`)
    and reports ``retrain_test_acc`` and the search's summary.  ``compute_s`` and ``epochs_total``
    are this job's own (a method's compute is the sum over its trials).  The state is the result once
    it exists: a trial restored from its checkpoint reports it again without training (``replayed``).
    """

    KIND = "fds_job"

    def __init__(self, config: Mapping[str, Any], problem: Problem | ProblemSpec | None = None):
        config = dict(config)
        job = config.pop(JOB_KEY, None)
        self.config = fds_config(config)
        self.job = _check_job(job, self.config)
        self.problem = problem_for(self.config.problem, problem)
        self.problem.check_forward_mode()  # before any compute is counted, as FDSLearner
        self.optimizer = resolve_optimizer("sgd", self.config.grad_clamp)  # the paper's clamped SGD, as FDSLearner
        self.result: dict[str, Any] | None = None
        self.reported = False

    @property
    def done(self) -> bool:
        return self.reported

    def step(self) -> dict[str, Any]:
        if self.reported:
            raise RuntimeError(f"FDSJob: the {self.job['kind']} job is done")
        replayed = self.result is not None
        if not replayed:
            if self.job.get("threads"):
                torch.set_num_threads(self.job["threads"])
            self.result = self._inner() if self.job["kind"] == "inner" else self._retrain()
        self.reported = True
        return {**self.result, "replayed": replayed, "done": True}

    def _common(self) -> dict[str, Any]:
        cfg = self.config
        return {"method": "fds", "seed": cfg.seed, "preset": cfg.preset, JOB_KEY: self.job["kind"], "parallel": self.job.get("parallel")}

    def _inner(self) -> dict[str, Any]:
        job, cfg = self.job, self.config
        t0 = time.perf_counter()
        run = run_inner(self.problem, cfg, Schedule(job["schedule"]), job["draw"], cfg.epochs[job["outer_step"]], self.optimizer)
        seconds = time.perf_counter() - t0
        result = {
            **self._common(),
            **run.metrics,
            "hypergrad_val_loss": run.hypergrad_val_loss,
            # no "schedule": FDS's results give there the schedule after the outer step, which is the searcher's to make
            "schedule_used": job["schedule"],
            "hypergrads": {k: nan_list(v) for k, v in run.hypergrads.items()},
            "horizon": run.horizon,
            "outer_step": job["outer_step"] + 1,
            "run": job["run"],
            "draw": job["draw"],
            "inner_steps": run.steps,
            "epochs_total": run.epochs,
            "compute_s": seconds,
            "step_time_s": seconds,
            "engine_mode": run.mode,
            "retrained": False,
        }
        if run.per_step is not None and job["run"] == 0:  # one line per outer step in the per-step plot
            result["per_step_hypergrads"], result["per_step_bin"] = run.per_step, run.per_step_bin
        return result

    def _retrain(self) -> dict[str, Any]:
        job, cfg, search = self.job, self.config, self.job["search"]
        t0 = time.perf_counter()
        out = retrain_first(self.problem, [Schedule(c) for c in job["candidates"]], cfg.retrain_epochs, self.optimizer, cfg.param_groups)
        seconds = time.perf_counter() - t0
        epochs = math.fsum(out["epochs"])
        inc = search["incumbent"]
        metrics = ({"val_acc": inc["val_acc"], "val_loss": inc["val_loss"], "test_acc": inc["test_acc"], "diverged": False}
                   if inc is not None else self.problem.diverged_metrics())
        return {
            **self._common(),
            "parallel": search["parallel"],
            **metrics,  # the incumbent's outer step: its runs' means
            "schedule": job["last_schedule"],
            **retrain_columns(out, cfg.final, Schedule(job["last_schedule"]), cfg.retrain_epochs),
            "epochs_total": epochs,
            "compute_s": seconds,
            "outer_step": search["outer_steps"],
            "converged": search["converged"],
            "combine": search["combine"],
            "incumbent_schedule": None if inc is None else inc["schedule"],
            "incumbent_val_acc": None if inc is None else inc["val_acc"],
            "incumbent_outer_step": None if inc is None else inc["outer_step"],
            "inner_runs": search["inner_runs"],
            "inner_runs_dropped": len(search["dropped"]),
            "dropped_runs": search["dropped"],
            "search_compute_s": search["compute_s"] + seconds,
            "search_epochs_total": search["epochs_total"] + epochs,
            "outer_history": search["history"],
            "retrained": True,
        }

    def config_dict(self) -> dict[str, Any]:
        return {**self.config.to_dict(), JOB_KEY: self.job}

    def state_dict(self) -> dict[str, Any]:
        return {"result": self.result}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        result = state.get("result")
        if result is not None and not isinstance(result, Mapping):
            fail("state['result']", result, "a job's result (a dict) or None")
        self.result = None if result is None else dict(result)
        self.reported = False
