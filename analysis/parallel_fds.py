"""Parallel FDS's measurements (``experiments/parallel_fds.py``): pure functions of its records.

A *noise record* is one problem seed and schedule: ``seed``, ``schedule`` and ``runs``, the
normalised hypergradients (kind -> list) of M inner runs of that schedule, each with its own
draw (data order, validation split, initialisation).  :func:`noise_table` gives, per component,
their spread across draws; :func:`agreement_table` how often the sign of K runs combined agrees
with the sign of a large-K estimate: the mean of the M - K runs left out (so that the estimate
shares no run with the combination it judges).

The outer-step table reuses :mod:`analysis.outer_rules` (a "rule" there is a number of runs per
outer step here); :func:`incumbents` rebuilds the incumbent after every outer step from a search's
``outer_history``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from fds_tune.learner import better
from fds_tune.parallel import combine

__all__ = ["components", "noise_table", "agreement", "agreement_table", "incumbents", "wall_table"]


def components(run: Mapping[str, Sequence]) -> dict[str, float]:
    """A run's hypergradients flat, one entry per component: ``lr[0]``, ..., ``momentum[0]`` (rows of a kind given
    per group as ``lr[g,i]``)."""
    out = {}
    for kind, values in run.items():
        arr = np.asarray(values, dtype=float)
        for idx in np.ndindex(arr.shape):
            out[f"{kind}[{','.join(map(str, idx))}]"] = float(arr[idx])
    return out


def _matrix(record: Mapping) -> pd.DataFrame:
    """Runs x components of one noise record."""
    return pd.DataFrame([components(r) for r in record["runs"]])


def noise_table(records: Sequence[Mapping]) -> pd.DataFrame:
    """Per schedule and component, over seeds: the mean normalised hypergradient, its standard deviation across
    draws (the root of the seeds' mean variance, ddof 1), the variance, |mean| / std, and how often one run's
    sign differs from the sign of its seed's mean over every run."""
    rows = []
    for rec in records:
        m = _matrix(rec)
        for c in m.columns:
            x = m[c].to_numpy()
            rows.append({"schedule": rec["schedule"], "component": c, "seed": rec["seed"], "mean": x.mean(), "var": x.var(ddof=1),
                         "flip": float(np.mean(np.sign(x) != np.sign(x.mean())))})
    df = pd.DataFrame(rows)
    g = df.groupby(["schedule", "component"], sort=False)
    out = pd.DataFrame({"seeds": g.size(), "mean": g["mean"].mean(), "variance": g["var"].mean()})
    out["std"] = np.sqrt(out["variance"])
    out["|mean| / std"] = out["mean"].abs() / out["std"]
    out["one run's sign differs (%)"] = 100 * g["flip"].mean()
    return out.reset_index()[["schedule", "component", "seeds", "mean", "std", "variance", "|mean| / std", "one run's sign differs (%)"]]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of components whose signs are equal."""
    return float(np.mean(np.sign(a) == np.sign(b)))


def agreement_table(records: Sequence[Mapping], ks: Sequence[int] = (1, 2, 4)) -> pd.DataFrame:
    """Per K: the sign agreement (%) of K runs combined (their mean, and their sign vote) with the mean of the
    other M - K runs of the same seed and schedule, over every disjoint group of K runs, seed and schedule."""
    rows = []
    for rec in records:
        m = _matrix(rec).to_numpy()
        for k in ks:
            if len(m) - k < 1:
                continue
            for start in range(0, len(m) - k + 1, k):
                group = np.arange(start, start + k)
                reference = np.delete(m, group, axis=0).mean(0)
                runs = [{"all": torch.from_numpy(row)} for row in m[group]]
                mean, vote = (combine(name, runs)["all"].numpy() for name in ("mean", "sign_vote"))  # as FDSSearcher combines
                rows.append({"K": k, "mean": agreement(mean, reference), "vote": agreement(vote, reference),
                             "reference runs": len(m) - k})
    df = pd.DataFrame(rows)
    g = df.groupby("K")
    return pd.DataFrame({
        "groups": g.size(), "reference runs": g["reference runs"].min(),
        "sign agreement, mean of K (%)": (100 * g["mean"].mean()).round(1),
        "sign agreement, sign vote of K (%)": (100 * g["vote"].mean()).round(1),
    }).reset_index()


def incumbents(history: Sequence[Mapping]) -> list[dict | None]:
    """After each outer step of a search's ``outer_history``: its incumbent (the schedule of the best step so
    far by its runs' mean validation accuracy, ties to the lower loss, then the earlier step; diverged steps
    never count), as ``{"schedule", "outer_step"}``; None before any step counts."""
    out, best = [], None
    for h in history:
        if not h["diverged"] and better(h, best):  # FDS's own rule (fds_tune.learner.better)
            best = h
        out.append(None if best is None else {"schedule": best["schedule_used"], "outer_step": best["outer_step"]})
    return out


def wall_table(records: Sequence[Mapping]) -> pd.DataFrame:
    """Per configuration (``name``, ``parallel``, ``threads``): inner runs, compute (s, every worker's), wall clock (s)
    and wall clock per outer step."""
    df = pd.DataFrame(records)
    df["wall clock per outer step (s)"] = [w / s if s else math.nan for w, s in zip(df["wall_clock_s"], df["outer_steps"])]
    return df.rename(columns={"compute_s": "compute (s)", "wall_clock_s": "wall clock (s)"})[
        ["name", "parallel", "threads", "outer_steps", "inner_runs", "compute (s)", "wall clock (s)", "wall clock per outer step (s)"]
    ].round(2)
