"""The comparison: FDS against black-box and greedy HPO, under one budget, on one problem.

:func:`compare` runs every method through Ray Tune on the same data, network and
schedule search space, then writes

* ``ray/<method>-seed<k>/``: the Ray Tune experiments (one per method and seed);
* ``results.csv``: every reported result, tidy (:func:`analysis.load_results`);
* ``table.md`` / ``table.tex``: the comparison table (:func:`analysis.comparison_table`);
* ``reading.md``: the table in one paragraph (:func:`analysis.reading`), also printed under it;
* ``regret.png``, ``schedules.png``, ``hypergradients.png``, ``greedy.png``: the plots.
* ``cluster.json``: the Ray cluster's CPUs and GPUs and what each trial requested (the caption's concurrency).

:func:`write_report` rebuilds all but the Ray directories, from ``ray/`` or, where it is gone,
from ``results.csv`` alone; :func:`write_horizon_report` reads one comparison per horizon
(``h<steps>/``) into the horizon study's ``horizon.csv``, ``horizon.md`` and ``horizon.png``.

Compute is counted on the same axes for every method (``epochs_total`` and
``compute_s``, see :mod:`fds_tune.results`).  ``compute_s`` is device-seconds of
one trial's resources, summed over a method's trials: every trial of every
method requests the same resources, 1 CPU, plus, on a Ray cluster with GPUs, a
GPU share (``gpus_per_trial``, default a whole GPU), and each result records its
trial's request (``cpus``, ``gpus``).  A trial given no GPU trains on CPU (see
:mod:`fds_tune.trainable`), so black-box trials never share a GPU they did not
ask for.  Black-box trials run concurrently (up to cluster CPUs, or GPUs, over
the per-trial request), FDS, HD and greedy as one trial: summed compute is not
wall clock, and the report's caption says how many trials could run at once.

``seeds`` is a number K (seeds 0..K-1) or the seeds themselves (e.g. ``[2, 5]``);
each method and seed is one experiment, ``ray/<method>-seed<k>/``.

FDS's own budget is its preset's
(outer steps x epochs, plus retraining); each black-box method gets
``budget_epochs`` training epochs in total, ``max_epochs`` per trial; HD and
greedy forward mode train one run of ``max_epochs`` epochs.  A preset (or a
call) may give ``budget_ratio`` instead: FDS then runs first for each seed, and
the budget is that multiple of FDS's total compute in plain epochs
(:func:`fds_budget`; a black-box epoch costs at least a plain one, so the
black-box compute is at least that multiple).

FDS with ``parallel=K`` (``--parallel K``, or a spec's ``fds_parallel``) runs K inner runs per
outer step side by side (:class:`~fds_tune.FDSSearcher`): each inner run, and the final
retraining, is one trial with a trial's resources, so up to K run at once.  Its compute is the
sum over those trials (every worker's), as for a black-box search; its wall clock (first trial's
first step to last result) is logged and written beside it, ``fds_wall_clock.json``.

``resume=True`` continues a killed comparison: finished experiments are kept,
unfinished ones are restored with ``Tuner.restore`` (running trials continue
from their checkpoints).  BOHB cannot be restored (TuneBOHB fails after
``Tuner.restore``, a known upstream problem): an unfinished BOHB experiment is
said so and run again from scratch.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import ray
import torch
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

import analysis
from baselines import SpaceConfig, get_baseline
from baselines.greedy import GREEDY_METHODS as GREEDY_TRAINABLES
from baselines.greedy import SHARED_KEYS
from baselines.lr_free import LRFreeRun, LRFreeTrainable
from baselines.pbt import FOLLOWED, replay_config
from baselines.schedule_run import ScheduleRun
from fds_tune import PRESETS, FDSConfig, FDSInnerRun, FDSSearcher, FDSTrainable, ProblemConfig, fds_config
from fds_tune.cost import plain_epoch_seconds
from fds_tune.problem import cached_problem
from fds_tune.problems import resolve_problem
from fds_tune.results import (
    BLACK_BOX_METHODS, EPOCHS, GREEDY_METHODS, LR_FREE_METHODS, METHODS, METRIC, MODE, POPULATION_METHODS, SECONDS,
)
from fds_tune.run import run_to_end
from fds_tune.trainable import cpu_unless_given_a_gpu
from fds_tune.validation import check, check_choice, check_int, check_number, check_optional, fail, is_int

__all__ = [
    "COMPARE_PRESETS", "CompareSpec", "compare", "write_report", "search_space", "Progress", "trial_resources", "seed_list",
    "compute_caption", "population_size", "final_member", "write_horizon_report", "fds_compute_and_wall_clock", "trials_at_once",
]

DONE_MARKER = ".fds_tune_done"
CLUSTER_FILE = "cluster.json"  # the Ray cluster's CPUs and GPUs and each trial's request, for the report's caption
READING_FILE = "reading.md"  # the table in one paragraph (analysis.reading)
# Methods Ray Tune cannot restore after a killed driver (see baselines/hyperband.py, baselines/bohb.py).
NOT_RESUMABLE = {
    "bohb": "BOHB cannot be resumed: TuneBOHB fails after Tuner.restore (a known upstream problem).",
    "hyperband": "HyperBand cannot be resumed: Ray Tune does not checkpoint the HyperBand scheduler's brackets, "
    "so its paused trials would never resume after Tuner.restore.",
    **{
        m: f"{m.upper()} cannot be resumed: Ray Tune does not checkpoint the population's scheduler state "
        "(scores, perturbation times), so its synchronous population would not resume after Tuner.restore."
        for m in POPULATION_METHODS
    },
}
QUIET_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # we add the JSON/CSV loggers ourselves
    "RAY_AUTH_MODE": "disabled",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    "TUNE_GLOBAL_CHECKPOINT_S": "1",  # a killed driver resumes from a fresh experiment state
    "RAY_DEDUP_LOGS": "0",
}


@dataclass(frozen=True)
class CompareSpec:
    """What one comparison preset runs, besides its FDS preset (the key it has in :data:`COMPARE_PRESETS`)."""

    max_epochs: int  # epochs of one black-box trial (and of an HD / greedy run)
    # black-box training epochs per method, all trials together: every black-box method spends it;
    # None: ``budget_ratio`` times FDS's total compute of the same seed, in plain epochs
    budget_epochs: float | None = None
    budget_ratio: float | None = None  # the budget as a multiple of FDS's measured compute (FDS runs first)
    num_samples: int | None = None  # a cap on black-box trials per method (None: the budget alone ends the search)
    population: int | None = None  # a cap on PBT's and PB2's population (None: the members the budget trains)
    fds_overrides: Mapping[str, Any] = field(default_factory=dict)  # keys of the FDS preset changed for every method
    # black-box search range per kind, over the defaults of baselines.SpaceConfig (the paper's wide ranges)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    fds_parallel: int = 1  # FDS's inner runs per outer step (> 1: side by side, FDSSearcher; 1: one FDSTrainable trial)

    def __post_init__(self):
        check_int("max_epochs", self.max_epochs, minimum=1)
        check_int("fds_parallel", self.fds_parallel, minimum=1)
        check_optional("num_samples", self.num_samples, check_int, minimum=1, rule="an int >= 1 or None (no cap)")
        check_optional("population", self.population, check_int, minimum=2, rule="an int >= 2 or None (no cap)")
        check_optional("budget_epochs", self.budget_epochs, check_number, low=0, low_open=True)
        check_optional("budget_ratio", self.budget_ratio, check_number, low=0, low_open=True)
        check(
            "budget_epochs", self.budget_epochs, (self.budget_epochs is None) != (self.budget_ratio is None),
            f"given when budget_ratio is not (budget_ratio={self.budget_ratio}): exactly one of them sets the black-box budget",
        )


# Keyed by the FDS presets (fds_tune.config.PRESETS): a comparison preset is an FDS preset plus
# the black-box budget and ranges.
COMPARE_PRESETS: dict[str, CompareSpec] = {
    # The embedded default: every method in a few minutes on 2 CPU cores (`make run`).
    "digits": CompareSpec(max_epochs=10, budget_epochs=120),
    # The main job (`make run`): a 600-step horizon on 12,800 Fashion-MNIST images (14x14, a
    # 64-unit MLP), where the schedule matters: a constant lr of 0.01 ends ~7 points below a
    # cosine schedule.  Every method in 2-3 minutes on 2 cores (make run: 4-6 with setup); black-box budgets
    # of 0.5x FDS's compute in epochs (0.6-1x in device-seconds), PBT 4 members.
    "fashion_mnist_small": CompareSpec(max_epochs=3, budget_ratio=0.5, population=4),
    # The CPU benchmark in the paper's regime: 2,000-step runs, 7+1+1 values, the paper's wide
    # ranges (SpaceConfig's defaults) for every method, black-box budgets of 5x FDS's compute.
    # PBT's population is capped at 16 members (the budget would buy ~190; Ray's pause and
    # restore of a synchronous population that size costs more than its training here).
    "fashion_mnist_paper": CompareSpec(max_epochs=5, budget_ratio=5.0, population=16),
    # The CPU benchmark: about an hour on 2 cores.  LeNet has no BatchNorm: in the paper's wide
    # ranges (lr up to 1, momentum up to 0.99) nearly every black-box trial collapses, so the
    # black-box methods search lr in [0, 0.3] and momentum in [0, 0.9] (a hand-tuned lr of 0.3
    # with momentum 0.9 already diverges).  FDS learns from zero without a range.
    "fashion_mnist": CompareSpec(max_epochs=3, budget_epochs=48, ranges={"lr": (0.0, 0.3), "momentum": (0.0, 0.9)}),
    # The paper's CIFAR-10 / WRN-16-1 setup, for a GPU machine.
    "cifar10_paper": CompareSpec(max_epochs=50, budget_epochs=1600),
}
check("COMPARE_PRESETS", sorted(COMPARE_PRESETS), set(COMPARE_PRESETS) <= set(PRESETS), f"FDS preset names, from {sorted(PRESETS)}")
UNCAPPED = 100_000  # Tune's num_samples when only the budget ends a search (trials are drawn lazily)
# HD and greedy forward mode choose their own knob on validation from a small grid (every grid
# run's compute counts): HD's hyper-learning rates as scale x (1, 10, 0.1) for (lr, momentum,
# weight decay) around its default 1e-3 scale; greedy's outer step sizes as FDS's times a factor.
HD_SCALES = (3e-4, 1e-3, 3e-3)
GREEDY_FACTORS = (0.5, 1.0, 2.0)
GRID_SIZES = {"hd": len(HD_SCALES), "greedy": len(GREEDY_FACTORS)}
CALIBRATION_FILE = "calibration.json"  # seconds of one plain PyTorch training epoch, measured once per comparison
HANDOVER_DIR = "handover"  # the hand-over's results, one more trial of a method's experiment
FDS_WALL_CLOCK_FILE = "fds_wall_clock.json"  # per FDS experiment: inner runs per outer step, compute over every worker, wall clock


class Progress(tune.Callback):
    """Prints one line per finished trial: method, trials done, best so far, elapsed and remaining time
    (and, for a method that runs one long trial, one line per reported result); the trials a stopper
    ended, which Tune does not report as complete, in one line at the experiment's end.

    Replaces Ray's log wall.  It prints to whatever ``sys.stdout`` is at the time (it is
    pickled with the experiment state, so it holds no file object).
    """

    def __init__(self, label: str, expected_trials: int | None, budget_epochs: float | None, started: float | None = None):
        self.label, self.expected, self.budget = label, expected_trials, budget_epochs
        self.started = started or time.time()
        self.epochs: dict[str, float] = {}
        self.finished: set[str] = set()
        self.best = -math.inf

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.epochs[trial.trial_id] = float(result.get(EPOCHS, 0.0))
        if not result.get("diverged", False) and math.isfinite(result.get(METRIC, -math.inf)):
            self.best = max(self.best, result[METRIC])
        if self.expected == 1:  # one long trial (FDS, HD, greedy): a line per result, not only at its end
            value = result.get(METRIC, math.nan)
            print(
                f"[{self.label}] step {result.get('training_iteration', '?')} | {METRIC} {value:.4f}"
                f"{' (diverged)' if result.get('diverged', False) else ''} | {self.epochs[trial.trial_id]:.0f} epochs | "
                f"{time.time() - self.started:.0f}s elapsed",
                flush=True,
            )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finished(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finished(trial.trial_id, error=True)

    def on_experiment_end(self, trials, **info):
        # Tune calls no on_trial_complete for the trials the budget's stop_all ends
        ended = [t.trial_id for t in trials if t.trial_id in self.epochs and t.trial_id not in self.finished]
        if ended:
            self._finished(*ended)

    def _finished(self, *trial_ids: str, error: bool = False) -> None:
        self.finished.update(trial_ids)
        elapsed = time.time() - self.started
        used = sum(self.epochs.values())
        frac = min(1.0, max(len(self.finished) / self.expected if self.expected else 0.0, used / self.budget if self.budget else 0.0))
        eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
        best = f"{self.best:.4f}" if math.isfinite(self.best) else "-"
        print(
            f"[{self.label}] trials {len(self.finished)}{f'/{self.expected}' if self.expected else ''}{' (error)' if error else ''} | "
            f"best {METRIC} {best} | {used:.0f} epochs | {elapsed:.0f}s elapsed, ~{eta:.0f}s left",
            flush=True,
        )


def _experiment(
    method: str, seed: int, preset: str, spec: CompareSpec, budget: float, storage: Path, progress: Progress, resources: Mapping[str, float]
):
    """(trainable, tuner factory) for one method and seed.

    The FDS preset is resolved once, here (:func:`resolved_config`): every method's trials get
    explicit values (FDS its whole config, HD and greedy the keys they share with it and their
    knob's grid, black-box the problem and clamp), and each result carries ``seed`` and ``preset``.
    """
    fds = resolved_config(preset, spec, seed)
    name = f"{method}-seed{seed}"
    if method in BLACK_BOX_METHODS or method in POPULATION_METHODS:
        setup = get_baseline(method).build(
            search_space(fds, spec),
            fds.problem,
            max_epochs=spec.max_epochs,
            num_samples=population_size(spec, budget) if method in POPULATION_METHODS else spec.num_samples or UNCAPPED,
            seed=seed,
            grad_clamp=fds.grad_clamp,
            preset=preset,
        )
        trainable = tune.with_resources(setup.trainable, dict(resources))
        return trainable, lambda: setup.tuner(
            storage_path=storage, name=name, budget_epochs=budget, callbacks=[progress], resources_per_trial=dict(resources),
            checkpoint_frequency=1, max_failures=2,
        )
    if method in GREEDY_METHODS:
        trainable = GREEDY_TRAINABLES[method]
        space = {**{k: v for k, v in fds.to_dict().items() if k in SHARED_KEYS}, "epochs": spec.max_epochs, **knob_grid(method, fds)}
    elif method in LR_FREE_METHODS:  # one run of max_epochs epochs, as HD and greedy
        trainable = LRFreeTrainable
        space = {**dataclasses.asdict(fds.problem), "epochs": spec.max_epochs, "method": method, "preset": preset}
    elif spec.fds_parallel > 1:  # FDS, its inner runs side by side
        return _parallel_fds(fds, spec.fds_parallel, name, storage, progress, resources)
    else:  # FDS
        trainable, space = FDSTrainable, fds.to_dict()
    trainable = tune.with_resources(trainable, dict(resources))
    run_config = tune.RunConfig(
        name=name,
        storage_path=str(storage),
        verbose=0,
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), progress],
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1),
        failure_config=tune.FailureConfig(max_failures=2),
    )
    return trainable, lambda: tune.Tuner(
        trainable, param_space=space, tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, num_samples=1, reuse_actors=True),
        run_config=run_config,
    )


def _parallel_fds(fds: FDSConfig, parallel: int, name: str, storage: Path, progress: Progress, resources: Mapping[str, float]):
    """(trainable, tuner factory) of FDS with ``parallel`` inner runs per outer step: every inner run, and the
    retraining, is one trial of :class:`~fds_tune.FDSInnerRun` with a trial's resources."""
    trainable = tune.with_resources(FDSInnerRun, dict(resources))

    def make_tuner():
        searcher = FDSSearcher(fds.preset, parallel, config=fds.to_dict())
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=searcher, num_samples=searcher.total_trials,
                                        reuse_actors=True, trial_dirname_creator=str),
            run_config=tune.RunConfig(
                name=name, storage_path=str(storage), verbose=0, callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), progress],
                checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1),  # a finished run's result, kept for a restore
                failure_config=tune.FailureConfig(max_failures=2),
            ),
        )

    return trainable, make_tuner


def fds_trials(fds: FDSConfig, parallel: int) -> int:
    """Trials of an FDS experiment: one run of all outer steps, or ``parallel`` per outer step plus the retraining."""
    return 1 if parallel == 1 else fds.outer_steps * parallel + (1 if fds.retrain_epochs > 0 else 0)


def fds_compute_and_wall_clock(path: Path) -> dict[str, float]:
    """An FDS experiment's trials, its compute (the sum over its trials of each one's last ``compute_s``: every
    worker's) and its wall clock (the first trial's first step to the last result, from Ray's timestamps, to the
    second), read from the trials' ``result.json`` under ``path``."""
    last, starts, ends = {}, [], []
    for f in sorted(path.glob("*/result.json")):
        for line in f.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # an empty or cut-off line
            last[r["trial_id"]] = r
            starts.append(r["timestamp"] - r.get("time_total_s", 0.0))
            ends.append(r["timestamp"])
    compute = math.fsum(float(r.get(SECONDS) or 0.0) for r in last.values())
    return {"trials": len(last), "compute_s": compute, "wall_clock_s": max(ends) - min(starts) if ends else math.nan}


def _record_fds_wall_clock(out: Path, path: Path, parallel: int, log: Callable[[str], None]) -> None:
    rec = {"parallel": parallel, **fds_compute_and_wall_clock(path)}
    file = out / FDS_WALL_CLOCK_FILE
    records = json.loads(file.read_text()) if file.exists() else {}
    file.write_text(json.dumps({**records, path.name: rec}, indent=1) + "\n")
    log(f"[{path.name}] {parallel} inner run(s) per outer step: compute {rec['compute_s']:.1f} s over {rec['trials']} trial(s), "
        f"wall clock {rec['wall_clock_s']:.0f} s")


def population_size(spec: CompareSpec, budget: float) -> int:
    """PBT's and PB2's population: the members that ``budget`` epochs train for ``max_epochs`` each
    (at least 2; ``num_samples``, where given, instead), so that they spend the black-box budget,
    at most ``population`` where the spec caps it."""
    size = spec.num_samples or max(2, math.floor(budget / spec.max_epochs))
    return size if spec.population is None else min(size, spec.population)


def resolved_config(preset: str, spec: CompareSpec, seed: int) -> FDSConfig:
    """The FDS config every method of one seed starts from: the preset, the spec's overrides, and
    the black-box search ranges as FDS's value bounds (FDS, HD and greedy search the same ranges)."""
    base = fds_config({"preset": preset, **spec.fds_overrides, "seed": seed})
    ranges = search_space(base, spec).ranges
    return dataclasses.replace(base, bounds={k: tuple(ranges[k]) for k in base.bounds})


def knob_grid(method: str, fds: FDSConfig) -> dict[str, Any]:
    """The grid an online method chooses its knob from on validation (all its runs' compute counts)."""
    if method == "hd":
        rates = [{"lr": s, "momentum": 10 * s, "weight_decay": s / 10} for s in HD_SCALES]
        return {"hyper_lr": tune.grid_search(rates)}
    return {"step_size": tune.grid_search([{k: f * v for k, v in fds.step_size.items()} for f in GREEDY_FACTORS])}


def search_space(fds: FDSConfig, spec: CompareSpec) -> SpaceConfig:
    """The black-box search space: FDS's number of shared values per kind, the spec's ranges over the defaults."""
    return SpaceConfig(sizes=dict(fds.n_values), ranges={**SpaceConfig().ranges, **spec.ranges})


def trial_resources(cluster: Mapping[str, float], gpus_per_trial: float | None = None) -> dict[str, float]:
    """What every trial requests on a Ray cluster with ``cluster`` resources (``ray.cluster_resources()``):
    1 CPU, plus, where the cluster has GPUs, ``gpus_per_trial`` of one (default: a whole GPU per trial)."""
    check_optional("gpus_per_trial", gpus_per_trial, check_number, low=0, high=1, low_open=True)
    if cluster.get("GPU", 0) > 0:
        return {"cpu": 1, "gpu": 1 if gpus_per_trial is None else gpus_per_trial}
    check("gpus_per_trial", gpus_per_trial, gpus_per_trial is None, "None on a Ray cluster without GPUs (it has none to share)")
    return {"cpu": 1}


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """The seeds to run: ``K`` -> ``0..K-1``; a sequence of distinct ints >= 0 -> those seeds, in its order."""
    if is_int(seeds) and seeds >= 1:
        return list(range(seeds))
    ok = isinstance(seeds, Sequence) and not isinstance(seeds, str) and len(seeds) > 0
    ok = ok and all(is_int(s) and s >= 0 for s in seeds) and len(set(seeds)) == len(seeds)
    check("seeds", seeds, ok, "an int >= 1 (that many seeds, from 0) or a non-empty list of distinct ints >= 0")
    return list(seeds)


def _ensure_ray(address: str | None, num_cpus: int | None) -> None:
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    for name in ("ray", "ray.tune", "ray.train", "optuna"):  # progress comes from our callback, not log lines
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)


def _run_one(
    method: str, path: Path, make_trainable_and_tuner, resume: bool, log: Callable[[str], None], resume_errored: bool = True
) -> None:
    """Run (or, with ``resume``, restore) one experiment.  ``resume_errored=False``: a restored experiment leaves its
    failed trials failed (FDS's parallel search has dropped them; run again, they would only cost)."""
    trainable, make_tuner = make_trainable_and_tuner
    if (path / DONE_MARKER).exists():
        log(f"[{path.name}] already finished; kept")
        return
    if path.exists() and resume and method in NOT_RESUMABLE:
        log(f"[{path.name}] {NOT_RESUMABLE[method]} Running it again from scratch.")
        shutil.rmtree(path)
    if path.exists() and resume and tune.Tuner.can_restore(str(path)):
        log(f"[{path.name}] resuming from {path}")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=resume_errored)
    else:
        if path.exists():
            shutil.rmtree(path)  # a partial run without restorable state
        tuner = make_tuner()
    try:
        results = tuner.fit()
    except RuntimeError as err:
        # Ray 2.60 builds its result grid from every trial after the run, a trial that the epoch
        # budget stopped before it ever started (it has no directory) included, and raises there.
        # The run itself is over and its results are on disk, which is what the comparison reads.
        if "trial_dir_name" not in str(err):
            raise
        log(f"[{path.name}] a trial was stopped before it started (Ray could not list it); the results on disk stand")
        results = None
    errors = [str(e).splitlines()[0] for e in results.errors] if results is not None else []
    if errors:
        log(f"[{path.name}] {len(errors)} trial(s) failed: {errors[0]}")
    (path / DONE_MARKER).write_text("done\n")


def compare(
    preset: str,
    *,
    out: str | os.PathLike,
    seeds: int | Sequence[int] = 1,
    methods: Sequence[str] = METHODS,
    budget_epochs: float | None = None,
    budget_ratio: float | None = None,
    max_epochs: int | None = None,
    num_samples: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    resume: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    gpus_per_trial: float | None = None,
    problem: str | None = None,
    parallel: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the comparison and write results, table and plots under ``out``; returns their paths and the table.

    ``overrides`` change the FDS preset's keys (problem, shared values, horizons: see
    :class:`~fds_tune.config.FDSConfig`) for every method; ``max_epochs`` and
    ``num_samples`` change the black-box trials' epochs and number; ``ranges``
    (kind -> (low, high)) change the black-box search ranges.  ``seeds``: a number K
    (seeds 0..K-1) or the seeds to run.  ``gpus_per_trial``: each trial's GPU share in
    (0, 1] on a cluster with GPUs (default 1: one trial per GPU); it must be None on
    a cluster without GPUs, where trials request 1 CPU only.  ``compute_s`` in the
    results is device-seconds of one trial's resources (see the module docstring).
    ``problem``: a user's problem, ``"module:function"`` (a factory returning a
    :class:`~fds_tune.ProblemSpec`, importable on every node), trained by every method instead of
    the preset's dataset and network; the preset still gives FDS's settings and the budgets.
    ``parallel``: FDS's inner runs per outer step (default: the preset's ``fds_parallel``, 1); K > 1 runs
    them side by side (see the module docstring).
    """
    check_choice("preset", preset, COMPARE_PRESETS)
    check_optional("parallel", parallel, check_int, minimum=1, rule="an int >= 1 (FDS's inner runs per outer step) or None")
    overrides = dict(overrides or {})
    if problem is not None:
        check("problem", problem, isinstance(problem, str) and ":" in problem, "'module:function' (a factory returning a ProblemSpec)")
        resolve_problem(problem)  # imports and checks it here, before any training
        overrides["user_problem"] = problem
    # the comparison sets them: an override would be lost
    for key, how in (("preset", "preset=, --preset"), ("seed", "seeds=, --seeds or --seed-list"), ("bounds", "ranges=, --range")):
        check(f"overrides[{key!r}]", overrides.get(key), key not in overrides, f"absent (the comparison sets it through {how})")
    spec = COMPARE_PRESETS[preset]
    spec = dataclasses.replace(
        spec,
        fds_overrides={**spec.fds_overrides, **overrides},
        max_epochs=spec.max_epochs if max_epochs is None else max_epochs,
        num_samples=spec.num_samples if num_samples is None else num_samples,
        ranges={**spec.ranges, **dict(ranges or {})},
        fds_parallel=spec.fds_parallel if parallel is None else parallel,
    )
    seeds = seed_list(seeds)
    check_optional("gpus_per_trial", gpus_per_trial, check_number, low=0, high=1, low_open=True)
    methods = list(methods)
    check(
        "methods", methods, bool(methods) and set(methods) <= set(METHODS) and len(set(methods)) == len(methods),
        f"a non-empty list of distinct names from {list(METHODS)}",
    )
    check_optional("budget_epochs", budget_epochs, check_number, low=0, low_open=True)
    check_optional("budget_ratio", budget_ratio, check_number, low=0, low_open=True)
    check("budget_ratio", budget_ratio, budget_ratio is None or budget_epochs is None, "None when budget_epochs is given (one of them sets the budget)")
    if budget_epochs is not None or budget_ratio is not None:
        spec = dataclasses.replace(spec, budget_epochs=budget_epochs, budget_ratio=budget_ratio)
    if spec.budget_ratio is not None:  # FDS runs first: its compute sets the others' budget
        check("methods", methods, "fds" in methods, f"a list with 'fds' (the budget is {spec.budget_ratio:g}x FDS's compute; or give budget_epochs, --budget)")
        methods = ["fds"] + [m for m in methods if m != "fds"]
    out = Path(out).absolute()
    storage = out / "ray"
    if storage.exists() and any(storage.iterdir()) and not resume:
        fail("out", str(out), "a directory without results (pass resume=True, --resume, to continue them, or choose another --out)")
    search_space(fds_config({"preset": preset, **spec.fds_overrides}), spec)  # validate before any training
    _ensure_ray(address, num_cpus)
    cluster = ray.cluster_resources()
    resources = trial_resources(cluster, gpus_per_trial)
    # Tune keeps up to 200 trials (each with a placement group) pending for random search and
    # HyperBand/ASHA (1 for other searchers): on 2 CPUs that cost random search ~8 s of its 16.
    # As many pending as can run at once (unless the environment says otherwise).
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(1, trials_at_once(cluster, resources) or 1)))
    storage.mkdir(parents=True, exist_ok=True)
    (out / CLUSTER_FILE).write_text(json.dumps({"cluster": {k: cluster.get(k, 0) for k in ("CPU", "GPU")}, "per_trial": resources}) + "\n")
    process = TrialProcess(resources)
    try:
        _run_all(out, preset, spec, seeds, methods, process, resume, log)
    finally:
        process.close()
    return write_report(out, log=log)


def _run_all(
    out: Path, preset: str, spec: CompareSpec, seeds: list[int], methods: list[str], process: TrialProcess, resume: bool,
    log: Callable[[str], None],
) -> None:
    storage, resources = out / "ray", process.resources
    calibrate(out, resolved_config(preset, spec, seeds[0]).problem, process, log)
    started = time.time()
    for seed in seeds:
        budget = spec.budget_epochs
        for method in methods:
            if budget is None and method != "fds":
                budget = fds_budget(storage / f"fds-seed{seed}", spec.budget_ratio, out, log)
            searches = method in BLACK_BOX_METHODS or method in POPULATION_METHODS  # trials until the budget is spent
            expected = population_size(spec, budget) if method in POPULATION_METHODS else spec.num_samples if searches else GRID_SIZES.get(method, 1)
            if method == "fds":
                expected = fds_trials(resolved_config(preset, spec, seed), spec.fds_parallel)
            progress = Progress(f"{method} seed {seed}", expected, budget if searches else None)
            log(f"== {method}, seed {seed} ({time.time() - started:.0f}s elapsed)")
            path = storage / f"{method}-seed{seed}"
            experiment = _experiment(method, seed, preset, spec, budget, storage, progress, resources)
            _run_one(method, path, experiment, resume, log, resume_errored=not (method == "fds" and spec.fds_parallel > 1))
            if method == "fds":  # FDS retrains its learned schedule itself, by the same protocol
                _record_fds_wall_clock(out, path, spec.fds_parallel, log)
            else:
                hand_over(path, method, resolved_config(preset, spec, seed).retrain_epochs, process, log)


def fds_budget(path: Path, ratio: float, out: Path, log: Callable[[str], None] = print) -> float:
    """The black-box budget, in training epochs, of ``ratio`` times the total compute of the FDS run in
    ``path`` (its outer steps and retraining) in plain epochs (``out``'s calibration)."""
    plain = json.loads((out / CALIBRATION_FILE).read_text())["plain_epoch_s"]
    compute = float(analysis.final_choice(analysis.load_results(path))["compute_s"].iloc[0])
    budget = ratio * compute / plain
    log(f"== FDS's compute: {compute:.1f} s = {compute / plain:.1f} plain epochs; black-box budget {ratio:g}x = {budget:.0f} epochs")
    return budget


def calibrate(out: Path, problem: ProblemConfig, process: TrialProcess, log: Callable[[str], None] = print) -> float:
    """Seconds of one plain PyTorch training epoch on ``problem``, measured once per comparison where
    trials' hand-overs run (:class:`TrialProcess`: a trial's resources and device), kept in
    ``out/calibration.json`` (a resumed comparison reuses it)."""
    path = out / CALIBRATION_FILE
    if path.exists():
        return json.loads(path.read_text())["plain_epoch_s"]
    seconds = process(_plain_epoch_task, problem)
    path.write_text(json.dumps({"plain_epoch_s": seconds, "problem": dataclasses.asdict(problem), "resources": process.resources}) + "\n")
    log(f"== one plain PyTorch training epoch (nn.Module + torch.optim.SGD): {seconds:.3f} s, the unit of compute")
    return seconds


class TrialProcess:
    """Where the comparison's calibration and hand-overs run: as a trial runs (its resources, its
    device), one at a time, between the methods' experiments (no trial runs beside them).

    On a cluster without GPUs: one Ray actor for the whole comparison, which reserves no CPU (the
    experiments' trials keep every CPU) and trains with a trial's CPU threads, so that the dataset
    loads once, not once per method: a fresh worker process costs ~5 s of imports and loading on
    2 cores, as much as a method's whole search in the main job.  Trials given a GPU share: one Ray
    task per call, with that share (an actor would hold it through every experiment).
    """

    def __init__(self, resources: Mapping[str, float]):
        self.resources = dict(resources)
        self._actor = None if resources.get("gpu", 0) else _Process.options(num_cpus=0, num_gpus=0).remote(int(resources.get("cpu", 1)))

    def __call__(self, fn: Callable, *args: Any) -> Any:
        if self._actor is None:
            return ray.get(_as_trial(fn, self.resources).remote(*args))
        return ray.get(self._actor.run.remote(fn, *args))

    def close(self) -> None:
        if self._actor is not None:
            ray.kill(self._actor)
            self._actor = None


@ray.remote
class _Process:
    """A process set up as a trial's: ``threads`` CPU threads for torch, no GPU (see :class:`TrialProcess`)."""

    def __init__(self, threads: int):
        torch.set_num_threads(threads)

    def run(self, fn: Callable, *args: Any) -> Any:
        return fn(*args)


def _as_trial(fn: Callable, resources: Mapping[str, float]):
    """``fn`` as a Ray task with a trial's resources (measured like a trial, on the device a trial gets)."""
    return ray.remote(fn).options(num_cpus=resources.get("cpu", 1), num_gpus=resources.get("gpu", 0))


def _plain_epoch_task(problem: ProblemConfig) -> float:
    if cpu_unless_given_a_gpu(dataclasses.asdict(problem), ray.get_gpu_ids()):
        problem = dataclasses.replace(problem, device="cpu")
    return plain_epoch_seconds(cached_problem(problem))


def hand_over(path: Path, method: str, epochs: int, process: TrialProcess, log: Callable[[str], None] = print) -> None:
    """The hand-over every method gets: its choice by validation (the best validated result of the
    search in ``path``) retrained from scratch on the full training set for ``epochs`` epochs and
    tested once (:meth:`~fds_tune.run.TrainingRun.for_handover`), where a trial would run it
    (``process``, :class:`TrialProcess`).  Its results are written as one more trial of the experiment (``handover/``), so
    that its compute counts towards the method's and its test accuracy is the method's answer.
    PBT's and PB2's choice is the best final member's followed schedule (:func:`final_member`),
    replayed as a schedule (:func:`baselines.pbt.replay_config`)."""
    target = path / HANDOVER_DIR
    if (target / DONE_MARKER).exists():
        return
    chosen = final_member(path) if method in POPULATION_METHODS else incumbent(path)
    if chosen is None:
        log(f"[{path.name}] nothing to hand over: no trial of the search completed its run without diverging (the method's answer is chance)")
        return
    trial_dir, config = chosen
    run_type = _run_type(method)
    results = process(_hand_over_task, run_type, config, epochs)
    resources = process.resources
    trial_id = f"{json.loads((trial_dir / 'result.json').read_text().splitlines()[0])['trial_id']}-handover"
    lines = [
        json.dumps({**r, "trial_id": trial_id, "training_iteration": i + 1, "timestamp": time.time(), "time_total_s": r[SECONDS],
                    "cpus": resources.get("cpu", 1), "gpus": resources.get("gpu", 0), "config": config, "handover_of": trial_dir.name})
        for i, r in enumerate(results)
    ]
    if target.exists():
        shutil.rmtree(target)  # a hand-over cut short: run again
    tmp = path / f".{HANDOVER_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / "params.json").write_text(json.dumps(config))
    (tmp / "result.json").write_text("\n".join(lines) + "\n")
    (tmp / DONE_MARKER).write_text("done\n")
    tmp.rename(target)
    log(f"[{path.name}] hand-over of {trial_dir.name}: test accuracy {results[-1].get('handover_test_acc', float('nan')):.4f}")


def _run_type(method: str) -> type:
    """The run class that hands over ``method``'s choice."""
    if method in GREEDY_METHODS:
        return GREEDY_TRAINABLES[method].RUN
    if method in LR_FREE_METHODS:
        return LRFreeRun
    return ScheduleRun  # a black-box trial's schedule, or PBT's followed schedule


def _hand_over_task(run_type: type, config: Mapping[str, Any], epochs: int) -> list[dict[str, Any]]:
    to_cpu = cpu_unless_given_a_gpu(config, ray.get_gpu_ids())
    return run_to_end(run_type.for_handover({**config, "device": "cpu"} if to_cpu else dict(config), epochs))


def incumbent(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """The trial directory and config of a search's choice by validation: its completed trial whose last
    result validated best (:func:`analysis.final_choice`; diverged results and trials stopped early never
    count).  None when no trial completed its run without diverging."""
    trials = [d for d in analysis.find_trial_dirs(path) if d.name != HANDOVER_DIR]
    choice = analysis.final_choice(analysis.load_results(trials)).iloc[0]
    if choice["trial"] is None or pd.isna(choice["trial"]):
        return None
    for d in trials:
        if _trial_id(d) == choice["trial"]:
            return d, json.loads((d / "params.json").read_text())
    fail("path", str(path), f"an experiment holding the chosen trial {choice['trial']!r}")


def _trial_id(trial_dir: Path) -> str | None:
    """The trial id of a trial directory's results (None: a trial stopped before its first result)."""
    lines = (trial_dir / "result.json").read_text().splitlines()
    return json.loads(lines[0])["trial_id"] if lines else None


def final_member(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """PBT's (PB2's) choice: the trial directory of the best final member by validation (each member's
    last result; diverged ones never count) and the replay config of the schedule it followed
    (:func:`baselines.pbt.replay_config`).  None when every member diverged."""
    trials = [d for d in analysis.find_trial_dirs(path) if d.name != HANDOVER_DIR]
    df = analysis.load_results(trials)
    last = df[df["iteration"] == df.groupby("trial")["iteration"].transform("max")]
    last = last[~last["diverged"] & last[METRIC].notna()]
    if last.empty:
        return None
    best = last.loc[last[METRIC].idxmax()]  # ties: the first in the frame's order (by run, wall clock)
    for d in trials:
        if _trial_id(d) == best["trial"]:
            return d, replay_config(json.loads((d / "params.json").read_text()), best[FOLLOWED])
    fail("path", str(path), f"an experiment holding the chosen member {best['trial']!r}")


def write_report(out: str | os.PathLike, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Results CSV, table, reading and plots of a comparison directory (no Ray needed).

    From the experiments under ``out/ray`` where they exist (``results.csv`` is rewritten from
    them); else from ``out/results.csv`` alone (a committed CSV: the Ray directories are too big
    to commit; ``out/results.csv.gz`` is read alike, and left as it is).  The table, its reading
    (``reading.md``, :func:`analysis.reading`) and the plots are the same either way; the caption
    counts concurrency from ``out/cluster.json`` if present.
    """
    out = Path(out)
    csv = results_csv(out)
    check(
        "out", str(out), (out / "ray").is_dir() or csv.is_file(),
        f"a comparison directory holding results in {out / 'ray'} (from 'fds-tune compare --out {out}') or their {csv.name}; "
        "run a comparison first",
    )
    if (out / "ray").is_dir():
        df = analysis.load_results(out / "ray")
        if (out / CALIBRATION_FILE).exists():  # compute in plain-epoch equivalents: compute_s / plain_epoch_s
            df["plain_epoch_s"] = json.loads((out / CALIBRATION_FILE).read_text())["plain_epoch_s"]
        df.to_csv(csv, index=False)
    else:
        df = analysis.read_results_csv(csv)  # what the plots read from the Ray directories: dict columns parsed back
    frame = pd.read_csv(csv)
    table = analysis.comparison_table(frame)  # the table comes from the CSV, nothing else
    reading = analysis.reading(table, frame)
    cluster = json.loads((out / CLUSTER_FILE).read_text())["cluster"] if (out / CLUSTER_FILE).exists() else None
    caption = compute_caption(df, cluster)
    (out / "table.md").write_text(analysis.to_markdown(table) + "\n")
    (out / "table.tex").write_text(analysis.to_latex(table, caption=caption) + "\n")
    (out / READING_FILE).write_text(reading + "\n")
    plots = {"regret": analysis.plot_regret(df, out / "regret.png")}
    if "fds" in set(df["method"]) or set(POPULATION_METHODS) & set(df["method"]):
        plots["schedules"] = analysis.plot_schedules(df, out / "schedules.png")
    if "fds" in set(df["method"]):
        plots["hypergradients"] = analysis.plot_hypergradients(df, out / "hypergradients.png")
        if "per_step_hypergrads" in df.columns:  # FDS ran reverse mode
            plots["per_step"] = analysis.plot_per_step_hypergradients(df, out / "per_step_hypergradients.png")
    if set(GREEDY_METHODS) & set(df["method"]):
        plots["greedy"] = analysis.plot_greedy_trajectories(df, out / "greedy.png")
    log("\n" + analysis.to_markdown(table))
    log(caption)
    log("\n" + reading)
    log(
        f"\nresults: {csv}\ntable:   {out / 'table.md'}\nreading: {out / READING_FILE}\nplots:   "
        + ", ".join(str(p) for p in plots.values())
    )
    return {"csv": csv, "table": table, "reading": reading, "plots": plots, "out": out}


def write_horizon_report(
    dir: str | os.PathLike, points: Mapping[int, str | os.PathLike] | None = None, seeds: Sequence[int] | None = None,
    log: Callable[[str], None] = print, methods: Sequence[str] = analysis.HORIZON_METHODS,
) -> dict[str, Any]:
    """The horizon study's report: FDS's speedup against ``methods`` at each horizon (:func:`analysis.horizon_frame`).

    Horizons: every ``dir/h<steps>/`` (its ``results.csv``, else its ``ray/``), plus ``points``,
    ``{steps: comparison directory}`` (its ``results.csv``, else its ``ray/``; e.g. the wide
    comparison as the 2,000-step point).  ``seeds``: the seeds used at every horizon (default:
    those with runs of FDS and every method at every horizon).  Writes ``dir/horizon.csv``,
    ``dir/horizon.md`` and ``dir/horizon.png`` and prints the Markdown.
    """
    root = Path(dir)
    check("dir", str(root), root.is_dir(), "an existing directory of horizon comparisons (h<steps>/ each holding results.csv or ray/)")
    found: dict[int, Path] = {}
    for sub in sorted(root.iterdir(), key=lambda p: p.name):
        match = re.fullmatch(r"h(\d+)", sub.name)
        if match and sub.is_dir():
            if _has_results(sub):
                found[int(match.group(1))] = sub
            else:
                log(f"{sub}: no results.csv or ray/ yet; left out")
    for steps, path in (points or {}).items():
        check_int("points", steps, minimum=1, rule="keyed by horizons, ints >= 1 (inner steps per training run)")
        check(f"points[{steps}]", str(path), steps not in found, f"a horizon not already in {root} (h{steps}/ holds it)")
        check(f"points[{steps}]", str(path), _has_results(Path(path)), "a comparison directory holding results.csv or ray/")
        found[steps] = Path(path)
    check("dir", str(root), bool(found), "a directory holding h<steps>/results.csv (one comparison per horizon), or points given")
    frames = {steps: _comparison_results(path) for steps, path in sorted(found.items())}
    seeds = analysis.horizon_seeds(frames, methods) if seeds is None else list(seeds)
    frame = analysis.horizon_frame(frames, methods=methods, seeds=seeds)
    markdown = analysis.horizon_to_markdown(frame)
    csv, md = root / "horizon.csv", root / "horizon.md"
    frame.to_csv(csv, index=False)
    md.write_text(markdown)
    plot = analysis.plot_horizon(frame, root / "horizon.png")
    log("\n" + markdown)
    log("horizons: " + ", ".join(f"{steps} ({path})" for steps, path in sorted(found.items())))
    log(f"\nresults: {csv}\ntable:   {md}\nplot:    {plot}")
    return {"frame": frame, "csv": csv, "markdown": markdown, "plot": plot, "seeds": list(seeds), "points": dict(sorted(found.items()))}


def results_csv(out: Path) -> Path:
    """A comparison directory's results CSV: ``results.csv``, or a committed ``results.csv.gz`` where only it exists."""
    gz = out / "results.csv.gz"
    return gz if gz.is_file() and not (out / "results.csv").is_file() and not (out / "ray").is_dir() else out / "results.csv"


def _has_results(path: Path) -> bool:
    return results_csv(path).is_file() or (path / "ray").is_dir()


def _comparison_results(path: Path) -> pd.DataFrame:
    """A comparison directory's results: its ``results.csv`` (or ``.csv.gz``), else its Ray experiments."""
    csv = results_csv(path)
    return pd.read_csv(csv) if csv.is_file() else analysis.load_results(path / "ray")


def compute_caption(df: pd.DataFrame, cluster: Mapping[str, float] | None = None) -> str:
    """The table's caption on compute: what a device-second is (the trials' ``cpus``/``gpus`` in ``df``)
    and, given the cluster's ``CPU``/``GPU`` totals, how many trials could run at once."""
    shares = sorted({(c, g) for c, g in zip(df.get("cpus", []), df.get("gpus", [])) if pd.notna(c) and pd.notna(g)})
    if not shares:
        return "Compute: device-seconds of one trial's resources, summed over a method's trials (the resources were not recorded)."
    each = " or ".join(f"{c:g} CPU" + (f" + {g:g} GPU" if g else "") for c, g in shares)
    text = f"Compute: device-seconds of one trial's resources ({each} per trial), summed over a method's trials."
    if cluster is None:
        return text
    at_once = trials_at_once(cluster, {"cpu": max(c for c, _ in shares), "gpu": max(g for _, g in shares)})
    if at_once is None:
        return text
    return (
        f"{text} On {_count(cluster.get('CPU', 0), 'CPU')} and {_count(cluster.get('GPU', 0), 'GPU')}, "
        f"up to {at_once} trials could run at once: "
        f"a black-box method's wall clock can be as little as 1/{at_once} of its compute; FDS runs one trial at a time."
    )


def trials_at_once(cluster: Mapping[str, float], per_trial: Mapping[str, float]) -> int | None:
    """How many trials requesting ``per_trial`` (``cpu``, ``gpu``) fit at once on ``cluster`` (``CPU``,
    ``GPU`` totals); None when a trial requests nothing."""
    needs = {"CPU": per_trial.get("cpu", 0), "GPU": per_trial.get("gpu", 0)}
    return min((math.floor(cluster.get(k, 0) / need) for k, need in needs.items() if need > 0), default=None)


def _count(n: float, unit: str) -> str:
    return f"{n:g} {unit}{'' if n == 1 else 's'}"
