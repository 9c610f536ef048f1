"""Float32 against float64: how often the signs of FDS's normalised hypergradients agree, by horizon.

For each schedule, seed and horizon ``T``, the hypergradients of one inner run (LeNet on
Fashion-MNIST, the training split of outer step 0, its initialisation, its first ``T`` batches)
are computed twice, in float32 and in float64 (network, batches, tangents and validation loss),
and normalised as the outer rules see them (:func:`fds_tune.outer.normalise`).  A component
agrees when both signs are equal.  With ``--orders 2`` each run is repeated with a second data
order and the two normalised hypergradients averaged: the remedy whose agreement the table
gives beside the plain one; ``order agreement`` is how often float32's signs of the two orders
agree (the data order's own effect, for scale).  Writes ``<out>/runs/*.json`` (``--resume``
keeps them), ``<out>/sign_agreement.csv`` and ``<out>/sign_agreement.md``.

    python experiments/sign_agreement.py --out runs/sign_agreement        # ~8 min on 2 quiet cores
    python experiments/sign_agreement.py --horizons 100 1000             # ~2 min
    python experiments/sign_agreement.py --orders 2                       # the remedy: twice the time

The hypergradients come from reverse mode (exact; one Hessian-vector product per step whatever
the number of shared values).
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import pandas as pd
import torch

from analysis.outer_rules import write_table
from fds_tune import Problem, Schedule, fds_config, hypergradients
from fds_tune.optim import resolve_optimizer
from fds_tune.outer import normalise
from fds_tune.validation import check_int

# a schedule like those FDS learns on Fashion-MNIST (decaying lr, high momentum), and a flat one
SCHEDULES = {
    "decaying": {"lr": [0.2, 0.2, 0.15, 0.1, 0.05], "momentum": [0.9], "weight_decay": [5e-4]},
    "flat": {"lr": [0.1] * 5, "momentum": [0.5], "weight_decay": [3e-4]},
}
ORDER_DRAW = 10_000  # data order k > 0 shuffles with draw ORDER_DRAW + k (order 0: the run's own)


def normalised_hypergradients(problem: Problem, schedule: Schedule, horizon: int, dtype: torch.dtype, order: int = 0) -> dict:
    """The normalised hypergradients of outer step 0's inner run over its first ``horizon`` batches, in ``dtype``."""
    cfg = fds_config({"preset": "fashion_mnist"})
    train_idx, val_idx = problem.split(0)
    epochs = -(-horizon // problem.steps_per_epoch(len(train_idx)))
    draw = 0 if order == 0 else ORDER_DRAW + order

    def source(first: int, n: int):  # replayable: reverse mode sweeps back through segments of the run
        batches = problem.train_batches(train_idx, epochs, draw)
        return ((x.to(dtype), y) for x, y in itertools.islice(batches, first, first + n))

    hg = hypergradients(  # reverse mode: the same numbers as forward mode, in about half its time here
        problem.model(0, dtype=dtype), schedule, source, [(x.to(dtype), y) for x, y in problem.eval_batches(val_idx)],
        horizon=horizon, optimizer=resolve_optimizer("sgd", cfg.grad_clamp), mode="reverse",
    )
    return normalise(hg, horizon)


def agreement(a: dict, b: dict) -> float:
    """The fraction of components whose signs agree (over every kind)."""
    sa, sb = (torch.cat([torch.sign(x[k]) for k in sorted(x)]) for x in (a, b))
    return float((sa == sb).double().mean())


def measure(problem: Problem, schedule: Schedule, horizon: int, orders: int) -> dict:
    """Agreement of float32 and float64 with one data order and, for ``orders`` 2, with the two averaged."""
    runs = {(d, o): normalised_hypergradients(problem, schedule, horizon, d, o) for d in (torch.float32, torch.float64) for o in range(orders)}
    out = {"components": sum(len(v) for v in runs[torch.float32, 0].values()),
           "agreement": agreement(runs[torch.float32, 0], runs[torch.float64, 0])}
    if orders == 2:
        mean = {d: {k: (runs[d, 0][k] + runs[d, 1][k]) / 2 for k in runs[d, 0]} for d in (torch.float32, torch.float64)}
        out["agreement_two_orders"] = agreement(mean[torch.float32], mean[torch.float64])
        out["order_agreement"] = agreement(runs[torch.float32, 0], runs[torch.float32, 1])
    out["hypergrads"] = {f"{d}".split(".")[-1] + f"_order{o}": {k: v.tolist() for k, v in g.items()} for (d, o), g in runs.items()}
    return out


def table(df: pd.DataFrame) -> pd.DataFrame:
    """By horizon: agreement (%) over every schedule and seed (mean, and components counted)."""
    cols = [c for c in ("agreement", "agreement_two_orders", "order_agreement") if c in df.columns]
    g = df.groupby("horizon")
    out = pd.DataFrame({"runs": g.size(), "components": g["components"].sum()})
    for c in cols:  # weighted by components: the fraction over every component measured
        out[f"{c} (%)"] = (df[c] * df["components"]).groupby(df["horizon"]).sum() / out["components"] * 100
    return out.round(1).reset_index()


def main(out: str, horizons=(100, 1000, 5000), schedules=("decaying",), seeds=(0,), orders: int = 1, resume: bool = False,
         device: str = "cpu") -> pd.DataFrame:
    """Measure (or, with ``resume``, keep) every schedule x seed x horizon; write the CSV and the table."""
    for h in horizons:  # a shared value that covers no inner step has no hypergradient
        n = max(len(SCHEDULES[s]["lr"]) for s in schedules)
        check_int("horizons", h, n, rule=f"an int >= {n} (one inner step per shared lr value)")
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if device.startswith("cuda"):  # float32 means float32: no TF32 in convolutions or matmuls
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for seed in seeds:
        problem = Problem(fds_config({"preset": "fashion_mnist", "seed": seed, "device": device}).problem)
        for name, horizon in itertools.product(schedules, horizons):
            path = out / "runs" / f"{name}_{seed}_{horizon}_{orders}.json"
            if not (resume and path.exists()):
                rec = {"schedule": name, "seed": seed, "horizon": horizon, "orders": orders,
                       **measure(problem, Schedule(SCHEDULES[name]), horizon, orders)}
                path.write_text(json.dumps(rec))
                print(f"{name} seed {seed} T={horizon}: agreement {rec['agreement']:.3f}", flush=True)
            rows.append({k: v for k, v in json.loads(path.read_text()).items() if k != "hypergrads"})
    df = pd.DataFrame(rows)
    write_table(df, table(df), out, "sign_agreement")
    return df


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/sign_agreement")
    p.add_argument("--horizons", type=int, nargs="+", default=[100, 1000, 5000])
    p.add_argument("--schedules", nargs="+", default=["decaying"], choices=list(SCHEDULES))
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--orders", type=int, default=1, choices=[1, 2], help="2: also the remedy, two data orders averaged")
    p.add_argument("--device", default="cpu")
    p.add_argument("--resume", action="store_true", help="keep the measurements already written under --out")
    a = p.parse_args()
    main(a.out, tuple(a.horizons), tuple(a.schedules), tuple(range(a.seeds)), a.orders, a.resume, a.device)
