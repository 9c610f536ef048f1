"""FDS as a Ray Tune search algorithm: ``parallel`` inner runs per outer step, side by side on a cluster.

    from ray import tune
    from fds_tune import FDSInnerRun, FDSSearcher

    searcher = FDSSearcher(preset="fashion_mnist", parallel=4)
    tuner = tune.Tuner(
        FDSInnerRun,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1),  # or at least searcher.total_trials
        run_config=tune.RunConfig(storage_path="/abs/path", failure_config=tune.FailureConfig(max_failures=2)),
    )
    results = tuner.fit()
    final = [r for r in results if r.metrics.get("retrained")][0].metrics   # retrain_test_acc, outer_history, ...

Each trial is one job of :class:`~fds_tune.parallel.ParallelFDS`: an inner run of the current
outer step (its config: the FDS config, plus, under ``fds_job``, the schedule, the outer step,
the run and its draw), or, after the last outer step, the retraining of the incumbent.  The
searcher waits (``suggest`` returns None) while an outer step's runs are out, combines their
normalised hypergradients when all are in (``combine``: ``"mean"``, the default, or
``"sign_vote"``), applies the outer rule and suggests the next step's runs; after the
retraining it returns ``Searcher.FINISHED``.  Give Tune ``num_samples=-1`` (or at least
:attr:`FDSSearcher.total_trials`): Tune stops asking for trials after ``num_samples``.

Faults.  A trial that fails is retried by Tune (``FailureConfig(max_failures=...)``); one that
fails for good is dropped and its outer step goes on with the runs that finished (the step's
entry in ``outer_history``, the retraining's ``dropped_runs`` and the searcher's state say so).
The searcher's state is saved with the experiment (``save``/``restore``), so ``Tuner.restore``
continues a killed search: finished inner runs are kept, runs that were out run again
(pass ``resume_errored=False``: a run already dropped would otherwise run again, unused).

It works under ``ConcurrencyLimiter`` (and ``max_concurrent_trials``): the runs of an outer step
then go out as slots free up.  ``FDSTrainable`` stays the way to run whole FDS runs as trials
(e.g. FDS settings competing under ASHA).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from .checkpoint import CheckpointError, atomic_write_bytes
from .config import fds_config
from .parallel import FINISHED, JOB_KEY, JOB_KINDS, FDSJob, OuterStepFailed, ParallelFDS
from .trainable import RunTrainable
from .validation import check, check_int, check_optional

__all__ = ["FDSSearcher", "FDSInnerRun"]

SEARCHER_KIND = "fds_searcher"
SEARCHER_VERSION = 1


class FDSInnerRun(RunTrainable):
    """The trials of an :class:`FDSSearcher`: one job (an inner run, or the retraining) per trial,
    in one ``step()`` (:class:`~fds_tune.parallel.FDSJob`)."""

    RUN = FDSJob


class FDSSearcher(Searcher):
    """Parallel FDS (:class:`~fds_tune.parallel.ParallelFDS`) as a Ray Tune ``Searcher``.

    ``preset``: an FDS preset (:data:`fds_tune.PRESETS`); ``config``: FDS config keys over it (e.g.
    ``{"seed": 1, "epochs": [1, 3, 3]}``, as ``FDSTrainable``'s config); ``parallel``: inner runs per
    outer step (>= 1); ``combine``: ``"mean"`` (default) or ``"sign_vote"``; ``threads``: torch
    threads per trial (None: as the worker has them, one per CPU Ray gives it unless
    ``OMP_NUM_THREADS`` says otherwise).  ``metric``/``mode`` are not used to search (FDS follows
    its hypergradients); give them to ``tune.TuneConfig`` if you want Tune's best-result helpers.
    Tune's ``param_space`` must stay empty: the searcher writes every trial's config.
    """

    def __init__(self, preset: str | None = "digits", parallel: int = 1, *, config: Mapping[str, Any] | None = None,
                 combine: str = "mean", threads: int | None = None, metric: str | None = None, mode: str | None = None):
        super().__init__(metric=metric, mode=mode)
        check("config", type(config).__name__, config is None or isinstance(config, Mapping), "a dict of FDS config keys or None")
        overrides = dict(config or {})
        if "preset" in overrides:
            check("config['preset']", overrides["preset"], overrides["preset"] == preset, f"absent or {preset!r} (FDSSearcher's preset=)")
            overrides.pop("preset")
        check_optional("threads", threads, check_int, 1, rule="an int >= 1 (torch threads per trial) or None")
        self.threads = threads
        self.fds = ParallelFDS(fds_config({"preset": preset, **overrides}), parallel, combine)
        # An error found in on_trial_result or on_trial_complete, raised at the next suggest: Tune turns an exception
        # raised in on_trial_complete into a failure of that trial (and retries it), and one raised in on_trial_result
        # into a TuneError of a traceback, but lets one raised in suggest end the run as it is.
        self._error: Exception | None = None

    @property
    def total_trials(self) -> int:
        """Trials of the whole search at most (``num_samples`` must be at least this, or -1)."""
        return self.fds.total_jobs

    # ---- Tune's protocol ---------------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        """Tune calls this only with a non-empty ``param_space``, which this searcher refuses."""
        check("param_space", sorted(config), not config,
              "empty: FDSSearcher writes every trial's config (give FDS settings as FDSSearcher(preset=..., config={...}))")
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._error is not None:
            raise self._error
        job = self.fds.next_job(trial_id)
        if job is None:
            return None  # an outer step's runs (or the retraining) are out: Tune asks again later
        if job == FINISHED:
            return Searcher.FINISHED
        if self.threads is not None:
            job = {**job, "threads": self.threads}
        return {**self.fds.config.to_dict(), JOB_KEY: job}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # FDSInnerRun reports once, done: Tune passes that to on_trial_complete.  Anything else is a wrong
        # trainable; raised here, Tune would wrap it in a TuneError of a traceback: the next suggest raises it.
        try:
            _check_inner_run(trial_id, result)
        except ValueError as err:
            self._error = self._error or err

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        try:
            if error or result is None:  # failed for good (after max_failures), or removed before it ran
                self.fds.job_failed(trial_id)
            else:
                _check_inner_run(trial_id, result)
                self.fds.job_done(trial_id, result)
        except (ValueError, OuterStepFailed) as err:  # a wrong trainable, or every run of a step failed: the search ends
            self._error = err
            if error:  # Tune's failure path lets it end the run at once
                raise

    # ---- state ---------------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"fds": self.fds.state_dict(), "threads": self.threads, "metric": self._metric, "mode": self._mode}

    def set_state(self, state: Mapping[str, Any]) -> None:
        check("threads", state.get("threads"), state.get("threads") == self.threads, f"{self.threads!r}, this searcher's")
        self.fds.load_state_dict(state["fds"])
        self._metric, self._mode = state.get("metric"), state.get("mode")

    def save(self, checkpoint_path: str) -> None:
        """The state as one JSON file, written atomically (loading it never runs code)."""
        payload = {"kind": SEARCHER_KIND, "version": SEARCHER_VERSION, "state": self.get_state()}
        atomic_write_bytes(checkpoint_path, json.dumps(payload, allow_nan=True).encode())

    def restore(self, checkpoint_path: str) -> None:
        try:
            payload = json.loads(Path(checkpoint_path).read_bytes())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"checkpoint: {checkpoint_path} is not an FDSSearcher state (JSON expected): {err}") from None
        if not isinstance(payload, dict) or payload.get("kind") != SEARCHER_KIND or payload.get("version") != SEARCHER_VERSION:
            found = (payload.get("kind"), payload.get("version")) if isinstance(payload, dict) else None
            raise CheckpointError(f"checkpoint: {checkpoint_path} is not an FDSSearcher state of version {SEARCHER_VERSION} (found {found})")
        try:
            self.set_state(payload["state"])
        except ValueError as err:
            raise CheckpointError(f"checkpoint: {checkpoint_path}: {err}") from None


def _check_inner_run(trial_id: str, result: Mapping[str, Any]) -> None:
    if result.get(JOB_KEY) not in JOB_KINDS:
        raise ValueError(
            f"trainable: got a result without {JOB_KEY!r} from trial {trial_id} (keys {sorted(result)[:8]}); must be FDSInnerRun "
            "(fds_tune.FDSInnerRun, or tune.with_parameters / tune.with_resources of it): FDSSearcher's trials are its inner runs"
        )

