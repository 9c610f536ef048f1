"""Parallel FDS (FDSSearcher): the noise in one inner run's hypergradients, what K runs per outer step buy, and their wall clock.

Three parts (``--parts``, default all) on one preset (default ``fashion_mnist_small``, the main job's problem;
``--preset digits`` for a quick look), everything kept under ``--out`` (``--resume`` keeps what is there):

* ``noise``: per seed and schedule (:func:`schedules`), ``--runs`` M inner runs of outer step 1 (its horizon,
  M draws): the variance of each normalised hypergradient across draws (``noise.md``), and the sign
  agreement of K = 1, 2, 4 runs combined with the mean of the other M - K runs (``agreement.md``).
* ``steps``: FDSSearcher with K = 1, 2, 4 runs per outer step x ``--seeds`` seeds, through Ray Tune (1 CPU
  and 1 thread per inner run).  After every outer step the incumbent is retrained as a hand-over, for this
  table only (as ``experiments/outer_rules.py``): outer steps and compute (every inner run's, in plain
  epochs) until it stays within 1 point of the best mean final accuracy (``steps.md``).
* ``wall``: seed 0, alone on the machine: K = 2 with one thread per run (two 1-CPU trials at once) against
  K = 1 with two threads (one 2-CPU trial), and K = 1 with one thread (``wall.md``).

    python experiments/parallel_fds.py --out runs/parallel_fds [--resume]
    python experiments/parallel_fds.py --preset digits --seeds 1 --runs 8 --out /tmp/parallel_fds   # a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from experiments.compare import QUIET_ENV  # Ray's settings every comparison runs with

for _k, _v in {**QUIET_ENV, "OMP_NUM_THREADS": "1"}.items():
    os.environ.setdefault(_k, _v)

import pandas as pd  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.logger import JsonLoggerCallback  # noqa: E402

from analysis.outer_rules import rule_table, runs_frame, write_table  # noqa: E402
from analysis.parallel_fds import agreement_table, incumbents, noise_table, wall_table  # noqa: E402
from fds_tune import FDSInnerRun, FDSSearcher, Schedule, fds_config  # noqa: E402
from fds_tune.cost import plain_epoch_seconds  # noqa: E402
from fds_tune.learner import retrain_schedule, run_inner  # noqa: E402
from fds_tune.optim import resolve_optimizer  # noqa: E402
from fds_tune.parallel import JOB_KEY, run_draw  # noqa: E402
from fds_tune.problem import cached_problem  # noqa: E402

KS = (1, 2, 4)
WALL = {"K=2, 1 thread per run": (2, 1), "K=1, 2 threads": (1, 2), "K=1, 1 thread": (1, 1)}  # name -> (parallel, threads)


def schedules(cfg) -> dict[str, dict]:
    """A decaying schedule with high momentum (like those FDS learns) and a flat one, in the preset's shape."""
    n, one = cfg.n_values["lr"], lambda kind, v: [v] * cfg.n_values[kind]
    return {"decaying": {"lr": [0.2 - 0.15 * i / max(1, n - 1) for i in range(n)], "momentum": one("momentum", 0.9),
                         "weight_decay": one("weight_decay", 5e-4)},
            "flat": {"lr": [0.1] * n, "momentum": one("momentum", 0.5), "weight_decay": one("weight_decay", 3e-4)}}


@ray.remote(num_cpus=1)
def inner_task(config: dict, schedule: dict, draw: int) -> dict | None:
    """One inner run of outer step 1 with ``draw``: its normalised hypergradients (None: it diverged)."""
    cfg = fds_config(config)
    run = run_inner(cached_problem(cfg.problem), cfg, Schedule(schedule), draw, cfg.epochs[1], resolve_optimizer("sgd", cfg.grad_clamp))
    return None if run.normalised is None else {k: v.tolist() for k, v in run.normalised.items()}


@ray.remote(num_cpus=1)
def retrain_task(config: dict, schedule: dict | None) -> dict:
    """A hand-over of ``schedule`` (None: no incumbent yet, which reaches no level)."""
    cfg = fds_config(config)
    if schedule is None:
        return {"test_acc": 0.0, "failed": True}
    out = retrain_schedule(cached_problem(cfg.problem), Schedule(schedule), cfg.retrain_epochs, resolve_optimizer("sgd", cfg.grad_clamp),
                           cfg.param_groups)
    return {"test_acc": out["test_acc"], "failed": out["failed"]}


def noise(out: Path, config: dict, seeds, m: int, resume: bool) -> None:
    records = []
    for seed in seeds:
        for name, schedule in schedules(fds_config(config)).items():
            path = out / "noise" / f"{name}_seed{seed}.json"
            if not (resume and path.exists()):
                runs = ray.get([inner_task.remote({**config, "seed": seed}, schedule, run_draw(1, r)) for r in range(m)])
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"seed": seed, "schedule": name, "runs": [r for r in runs if r], "diverged": runs.count(None)}))
            records.append(json.loads(path.read_text()))
    table, agreeing = noise_table(records), agreement_table(records, KS)
    write_table(table, table.round(6), out, "noise")
    write_table(agreeing, agreeing, out, "agreement")


def search(out: Path, name: str, config: dict, parallel: int, threads: int, resume: bool) -> tuple[list[dict], float]:
    """One FDS search (kept, restored or run); its results and wall clock (s; of this session's part when restored)."""
    path, done = out / "ray" / name, out / "ray" / f"{name}.json"
    trainable = tune.with_resources(FDSInnerRun, {"cpu": threads})
    if not (resume and done.exists()):
        t0, restored = time.perf_counter(), resume and tune.Tuner.can_restore(str(path))
        if restored:
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=False)
        else:
            shutil.rmtree(path, ignore_errors=True)
            searcher = FDSSearcher(config["preset"], parallel, config=config, threads=threads)
            tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=searcher.total_trials,
                                                                     reuse_actors=True, trial_dirname_creator=str),
                               run_config=tune.RunConfig(name=name, storage_path=str(out / "ray"), verbose=0, callbacks=[JsonLoggerCallback()],
                                                         checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1),
                                                         failure_config=tune.FailureConfig(max_failures=2)))
        tuner.fit()
        done.write_text(json.dumps({"wall_clock_s": time.perf_counter() - t0, "restored": restored}))
    results = [json.loads(line) for f in sorted(path.glob("*/result.json")) for line in f.read_text().splitlines() if line.strip()]
    return results, json.loads(done.read_text())["wall_clock_s"]


def final_result(results: list[dict]) -> dict:
    return next(r for r in results if r[JOB_KEY] == "retrain")


def steps(out: Path, config: dict, seeds, plain_epoch_s: float, resume: bool) -> None:
    records = []
    for k in KS:
        for seed in seeds:
            path = out / "steps" / f"K{k}_seed{seed}.json"
            if not (resume and path.exists()):
                c = {**config, "seed": seed}
                final = final_result(search(out, f"K{k}-seed{seed}", c, k, 1, resume)[0])
                history = final["outer_history"]
                chosen = [None if i is None else i["schedule"] for i in incumbents(history)]  # the incumbent after each step
                distinct = {json.dumps(s): s for s in chosen}
                handovers = dict(zip(distinct, ray.get([retrain_task.remote(c, s) for s in distinct.values()])))
                last = ray.get(retrain_task.remote(c, final["schedule"]))
                step_rows = [{"outer_step": h["outer_step"], "plain_epochs": h["compute_s"] / plain_epoch_s,
                              "handover_test_acc": handovers[json.dumps(s)]["test_acc"], "handover_failed": handovers[json.dumps(s)]["failed"]}
                             for h, s in zip(history, chosen)]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"problem": config["preset"], "rule": f"K={k}", "seed": seed, "steps": step_rows,
                                            "retrain_epochs": fds_config(c).retrain_epochs, "last_test_acc": last["test_acc"],
                                            "last_failed": last["failed"], "retrain_test_acc": final["retrain_test_acc"],
                                            "inner_runs": final["inner_runs"], "dropped": final["inner_runs_dropped"]}))
            records.append(json.loads(path.read_text()))
    df = runs_frame(records)
    write_table(df, rule_table(df).rename(columns={"rule": "runs per outer step"}), out, "steps")


def wall(out: Path, config: dict, resume: bool) -> None:
    records = []
    for name, (k, threads) in WALL.items():
        results, seconds = search(out, f"wall-K{k}-threads{threads}", {**config, "seed": 0}, k, threads, resume)
        final = final_result(results)
        records.append({"name": name, "parallel": k, "threads": threads, "outer_steps": final["outer_step"], "inner_runs": final["inner_runs"],
                        "compute_s": final["search_compute_s"], "wall_clock_s": seconds})
    write_table(pd.DataFrame(records), wall_table(records), out, "wall")


def main(out: str, preset: str, seeds, m: int, parts, cpus: int, resume: bool) -> None:
    out, config = Path(out).absolute(), {"preset": preset}
    out.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    calibration = out / "plain_epoch_s.json"  # compute in plain epochs: one calibration, kept on resume
    if not (resume and calibration.exists()):
        problem = fds_config(config).problem
        calibration.write_text(json.dumps(ray.get(ray.remote(num_cpus=1)(lambda: plain_epoch_seconds(cached_problem(problem))).remote())))
    if "noise" in parts:
        noise(out, config, seeds, m, resume)
    if "steps" in parts:
        steps(out, config, seeds, json.loads(calibration.read_text()), resume)
    if "wall" in parts:
        wall(out, config, resume)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/parallel_fds")
    p.add_argument("--preset", default="fashion_mnist_small")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--runs", type=int, default=16, help="M: inner runs per seed and schedule in the noise part (>= 5 for K = 4)")
    p.add_argument("--parts", nargs="+", default=["noise", "steps", "wall"], choices=["noise", "steps", "wall"])
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="keep the measurements and searches already under --out")
    a = p.parse_args()
    main(a.out, a.preset, tuple(range(a.seeds)), a.runs, a.parts, a.cpus, a.resume)
