"""Outer rules from zero: how many outer steps (and how much compute) until FDS's incumbent is good.

Each rule of :data:`fds_tune.outer.OUTER_RULES` runs FDS from zero, with the paper's step
sizes, on each problem for several seeds.  After every outer step the incumbent (the best
validated schedule so far) is retrained as a hand-over and tested, for this report only: the
learner never sees it and none of it counts as FDS compute.  The table gives, per problem and
rule: outer steps and compute until the incumbent's hand-over stays within 1 point of the best
mean final accuracy in the table (compute: the outer steps' ``compute_s`` in plain epochs, plus
the one hand-over); the final accuracy of the incumbent (``final="incumbent"``) and of the last
update (``final="last"``, retrained alone, no fallback), and collapses (retrainings that
diverge or stall).  Writes ``<out>/runs/*.json`` (one per run; ``--resume`` keeps them),
``<out>/outer_rules.csv`` (a row per run) and ``<out>/outer_rules.md``.

Fashion-MNIST uses a cheaper preset: the first 6,000 training images of a fixed permutation
(the full 10,000 test images), 8 outer steps of 1 then 3 epochs, retraining 3 epochs.  The
question is how fast a rule climbs from zero, which the subset keeps at ~1/10 of the cost.

    python experiments/outer_rules.py --out runs/outer_rules [--resume]   # ~8 min on 2 quiet cores (6 min without adam)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pandas as pd
import torch

from analysis.outer_rules import rule_table, runs_frame, write_table
from fds_tune import Problem, Schedule, fds_config
from fds_tune.cost import plain_epoch_seconds
from fds_tune.spec import ProblemSpec, TensorData, builtin_problem
from fds_tune.learner import FDSLearner, retrain_schedule
from fds_tune.outer import OUTER_RULES

# problem name -> (FDS config overrides, training images kept (None: all))
PROBLEMS = {
    "digits": ({"preset": "digits"}, None),
    "fashion_mnist": ({"preset": "fashion_mnist", "epochs": [1] + [3] * 7, "retrain_epochs": 3}, 6000),
}


def load(overrides: dict, keep: int | None) -> ProblemSpec:
    """The problem of the FDS config ``overrides``, its training set cut to ``keep`` images of a fixed permutation."""
    spec = builtin_problem(fds_config(overrides).problem)
    if keep is None:
        return spec
    idx = torch.randperm(len(spec.train), generator=torch.Generator().manual_seed(0))[:keep]
    return dataclasses.replace(spec, train=TensorData("train", spec.train.x[idx], spec.train.y[idx]))


def run_one(config: dict, data: ProblemSpec, plain_epoch_s: float) -> dict:
    """One FDS run; after each outer step its incumbent's hand-over (cached per schedule, reporting only)."""
    cfg = fds_config(config)
    problem = Problem(cfg.problem, data)
    learner, handovers, steps = FDSLearner(cfg, problem), {}, []
    while not learner.done:
        r = learner.step()
        key = json.dumps(r["incumbent_schedule"])
        if key not in handovers:
            handovers[key] = (
                {"test_acc": 1 / data.num_classes, "failed": True} if r["incumbent_schedule"] is None
                else retrain_schedule(problem, Schedule(r["incumbent_schedule"]), cfg.retrain_epochs, learner.optimizer)
            )
        steps.append({"outer_step": r["outer_step"], "plain_epochs": learner.compute_s / plain_epoch_s,
                      "epochs_total": r["epochs_total"], "val_acc": r["val_acc"], "incumbent_val_acc": r["incumbent_val_acc"],
                      "handover_test_acc": handovers[key]["test_acc"], "handover_failed": handovers[key]["failed"]})
    last = retrain_schedule(problem, learner.schedule, cfg.retrain_epochs, learner.optimizer)
    return {"steps": steps, "retrain_epochs": cfg.retrain_epochs, "incumbent": learner.incumbent,
            "last_schedule": learner.schedule.as_lists(), "last_test_acc": last["test_acc"], "last_failed": last["failed"]}


def main(out: str, problems=PROBLEMS, rules=tuple(OUTER_RULES), seeds=(0, 1, 2), resume: bool = False) -> pd.DataFrame:
    """Run (or, with ``resume``, keep) every run, then write the CSV and the table; returns the per-run frame."""
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    records = []
    for name, (overrides, keep) in problems.items():
        data, calib = load(overrides, keep), out / f"plain_epoch_s_{name}.json"
        if not (resume and calib.exists()):  # compute in plain epochs: one calibration per problem, kept on resume
            calib.write_text(json.dumps(plain_epoch_seconds(Problem(fds_config(overrides).problem, data))))
        plain_epoch_s = json.loads(calib.read_text())
        for rule in rules:
            for seed in seeds:
                path = out / "runs" / f"{name}_{rule}_{seed}.json"
                if not (resume and path.exists()):
                    rec = run_one({**overrides, "outer_rule": rule, "seed": seed}, data, plain_epoch_s)
                    path.write_text(json.dumps({"problem": name, "rule": rule, "seed": seed, **rec}))
                    print(f"{name} {rule} seed {seed}: final {rec['steps'][-1]['handover_test_acc']:.4f}", flush=True)
                records.append(json.loads(path.read_text()))
    df = runs_frame(records)
    write_table(df, rule_table(df), out, "outer_rules")
    return df


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/outer_rules")
    p.add_argument("--rules", nargs="+", default=list(OUTER_RULES), choices=list(OUTER_RULES))
    p.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--resume", action="store_true", help="keep the runs already written under --out")
    a = p.parse_args()
    main(a.out, {k: PROBLEMS[k] for k in a.problems}, a.rules, tuple(range(a.seeds)), a.resume)
