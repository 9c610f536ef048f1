"""Anytime curves, final choices, regret and speedup, from the tidy frame of :func:`~analysis.load_results`.

The answer of a run at any moment (its *incumbent*): among the latest results
of its trials so far, the one with the highest ``val_acc`` (ties: lower
``val_loss``, then the trial seen first).  A trial's latest result is what it
would hand over if stopped there: an earlier, better epoch of the same trial is
gone.  The incumbent's test accuracy is its ``test_acc``, or its
``retrain_test_acc`` where it has one (FDS's last result: the learned schedule
retrained from scratch).  At the end of a run the incumbent is the run's
*final choice*:

* black-box search: the trial with the best ``val_acc`` at its last result,
  and that result's ``test_acc``;
* FDS: its last result, and ``retrain_test_acc`` (``test_acc`` while a run
  has not retrained yet);
* greedy online methods (one trial): the final ``test_acc``.

Curves run on a compute axis ``x``: ``run_compute_s`` (device seconds of the
whole run so far, summed over its trials) or ``run_epochs`` (training epochs,
likewise); see :mod:`analysis.loaders`.

Seeds (runs) of one method are aggregated on a common grid, the union of their
``x`` values: each run's curve is a step function (its value at ``x`` is that
of its last result at or before ``x``, and its final value after it ends), and
the mean, standard deviation (ddof 1), min and max are taken where every run
has reported.

**Speedup at matched accuracy** of a reference method (FDS) over another::

    speedup(level) = C_other(level) / C_reference(level)

where ``C_m(level)`` is the compute at which the seed-mean incumbent test
accuracy curve of method ``m`` first reaches ``level``.  ``speedup > 1`` means
the reference (FDS) reaches that accuracy with less compute.  By default
``level`` is the highest accuracy both curves reach: the lower of their maxima.

**Regret** of a method: the best final accuracy over methods (the highest
seed-mean final test accuracy) minus this method's accuracy; 0 for the best
method, in accuracy units (0.01 = one point).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from fds_tune.results import METHODS
from fds_tune.validation import check, check_choice, fail

from .loaders import RUN_EPOCHS, RUN_SECONDS

__all__ = [
    "AXES", "anytime_curves", "aggregate_curves", "final_choice", "best_final_accuracy", "regret", "compute_to_reach",
    "speedup_at_matched_accuracy", "Speedup", "method_order",
]

AXES = (RUN_SECONDS, RUN_EPOCHS)
_STATS = ("mean", "std", "min", "max", "n")


class Speedup(NamedTuple):
    """``speedup = compute_other / compute_reference`` at accuracy ``level`` (> 1: the reference is faster)."""

    level: float
    compute_reference: float
    compute_other: float
    speedup: float


def method_order(methods) -> list[str]:
    """Methods in the order of :data:`fds_tune.results.METHODS` (FDS, greedy, black-box), unknown ones after, alphabetically."""
    methods = list(dict.fromkeys(methods))
    known = [m for m in METHODS if m in methods]
    return known + sorted(m for m in methods if m not in METHODS)


def anytime_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Per run, one row per result: the best-so-far values after that result.

    Columns: ``method``, ``run``, ``seed``, ``run_compute_s``, ``run_epochs``,
    ``best_val_acc`` (highest ``val_acc`` reported so far by any trial),
    ``incumbent_trial``, ``incumbent_val_acc`` and ``incumbent_test_acc``
    (see the module docstring).  A result with ``diverged`` true never becomes
    the incumbent or the best validation accuracy.
    """
    _require(df, ("method", "run", "trial", "val_acc", "test_acc", RUN_SECONDS))
    out = []
    for run, g in df.groupby("run", sort=False):
        latest: dict[str, tuple[float, float, float]] = {}  # trial -> (val_acc, -val_loss, answer test acc)
        best_val = -math.inf
        for rec in g.to_dict("records"):
            # a diverged result never becomes best, whatever it reported
            val = -math.inf if _is_true(rec.get("diverged")) else _num(rec["val_acc"], -math.inf)
            answer = rec.get("retrain_test_acc")
            answer = rec["test_acc"] if answer is None or pd.isna(answer) else answer
            latest[rec["trial"]] = (val, -_num(rec.get("val_loss"), math.inf), _num(answer, math.nan))
            best_val = max(best_val, val)
            candidates = [t for t in latest if latest[t][0] > -math.inf]
            if candidates:
                trial = max(candidates, key=lambda t: latest[t][:2])  # the first trial among equals
                inc_val, _, inc_test = latest[trial]
            else:  # nothing usable yet (e.g. only diverged results)
                trial, inc_val, inc_test = None, -math.inf, math.nan
            out.append({
                "method": rec["method"], "run": run, "seed": rec.get("seed"),
                RUN_SECONDS: rec[RUN_SECONDS], RUN_EPOCHS: rec.get(RUN_EPOCHS, math.nan),
                "best_val_acc": best_val if best_val > -math.inf else math.nan,
                "incumbent_trial": trial,
                "incumbent_val_acc": inc_val if inc_val > -math.inf else math.nan,
                "incumbent_test_acc": inc_test,
            })
    return pd.DataFrame(out)


def final_choice(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: what the run finally chose, and what it cost.

    Columns: ``method``, ``run``, ``seed``, ``trial`` (the chosen trial),
    ``val_acc`` and ``test_acc`` of the choice (see the module docstring),
    ``best_val_acc`` (highest ``val_acc`` the run reported), ``compute_s`` and
    ``epochs`` (the run's total), ``trials``, ``outer_steps`` (FDS: the
    highest ``outer_step``; NaN for methods without outer steps) and
    ``trials_or_steps`` (outer steps where there are some, else trials).
    """
    curves = anytime_curves(df)
    last = curves.groupby("run", sort=False).tail(1).set_index("run")
    runs = df.groupby("run", sort=False)
    steps = runs["outer_step"].max().astype(float) if "outer_step" in df.columns else pd.Series(np.nan, index=last.index)
    out = pd.DataFrame({
        "method": last["method"],
        "seed": last["seed"],
        "trial": last["incumbent_trial"],
        "val_acc": last["incumbent_val_acc"],
        "test_acc": last["incumbent_test_acc"],
        "best_val_acc": last["best_val_acc"],
        "compute_s": last[RUN_SECONDS],
        "epochs": last[RUN_EPOCHS],
        "trials": runs["trial"].nunique().reindex(last.index),
        "outer_steps": steps.reindex(last.index),
    })
    out["trials_or_steps"] = out["outer_steps"].where(out["outer_steps"].notna(), out["trials"]).astype(float)
    return out.reset_index()[["method", "run", *[c for c in out.columns if c != "method"]]]


def aggregate_curves(
    curves: pd.DataFrame, value: str = "incumbent_test_acc", x: str = RUN_SECONDS, grid: np.ndarray | None = None
) -> pd.DataFrame:
    """Aggregate the per-run curves of :func:`anytime_curves` over runs (seeds), per method.

    Returns columns ``method``, ``x`` (named as given), ``mean``, ``std``,
    ``min``, ``max``, ``n`` (runs).  ``grid``: the ``x`` values to evaluate
    at (default: the union of the method's runs' ``x`` values); grid points
    before some run's first result are dropped.
    """
    check_choice("x", x, AXES)
    _require(curves, ("method", "run", x, value))
    frames = []
    for method in method_order(curves["method"].unique()):
        g = curves[curves["method"] == method]
        points = np.unique(g[x].to_numpy(dtype=float)) if grid is None else np.asarray(grid, dtype=float)
        stacked = np.vstack([_step_values(r[x].to_numpy(dtype=float), r[value].to_numpy(dtype=float), points) for _, r in g.groupby("run", sort=False)])
        started = ~np.isnan(stacked).any(axis=0)
        stacked, points = stacked[:, started], points[started]
        n = stacked.shape[0]
        frames.append(pd.DataFrame({
            "method": method, x: points, "mean": stacked.mean(axis=0),
            "std": stacked.std(axis=0, ddof=1) if n > 1 else np.full(len(points), np.nan),
            "min": stacked.min(axis=0), "max": stacked.max(axis=0), "n": n,
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", x, *_STATS])


def best_final_accuracy(frame: pd.DataFrame) -> float:
    """The best method's final accuracy: the highest per-method mean of ``test_acc``
    (a :func:`final_choice` frame) or the highest final ``mean`` (an :func:`aggregate_curves` frame)."""
    return float(_final_by_method(frame).max())


def regret(frame: pd.DataFrame, reference: float | None = None) -> pd.DataFrame:
    """Add a ``regret`` column: ``reference`` minus the accuracy.

    ``frame``: an :func:`aggregate_curves` frame (regret of the ``mean`` curve
    at each compute) or a :func:`final_choice` frame (regret of each run's
    ``test_acc``).  ``reference`` defaults to :func:`best_final_accuracy`.
    """
    accuracy = _accuracy_column(frame)
    reference = best_final_accuracy(frame) if reference is None else float(reference)
    out = frame.copy()
    out["regret"] = reference - out[accuracy]
    return out


def compute_to_reach(curves: pd.DataFrame, level: float) -> pd.Series:
    """Per method, the first ``x`` at which the ``mean`` of an :func:`aggregate_curves` frame reaches ``level`` (NaN: never)."""
    x = _axis(curves)
    reached = curves[curves["mean"] >= level]
    first = reached.groupby("method", sort=False)[x].min()
    return first.reindex(method_order(curves["method"].unique())).rename(x)


def speedup_at_matched_accuracy(
    curves: pd.DataFrame, other: str, reference: str = "fds", level: float | None = None
) -> Speedup:
    """Speedup of ``reference`` over ``other`` at matched accuracy: ``C_other(level) / C_reference(level)``.

    ``curves``: an :func:`aggregate_curves` frame of ``incumbent_test_acc``.
    ``C_m(level)`` is the compute at which method ``m``'s mean curve first
    reaches ``level``; > 1 means ``reference`` gets there with less compute.
    ``level`` defaults to the highest accuracy both reach (the lower of the two
    curves' maxima).  ``speedup`` is NaN when either never reaches ``level``.
    """
    methods = set(curves["method"])
    for name, m in (("reference", reference), ("other", other)):
        check(name, m, m in methods, f"a method with a curve, one of {method_order(methods)}")
    if level is None:
        level = float(min(curves.loc[curves["method"] == m, "mean"].max() for m in (reference, other)))
    reach = compute_to_reach(curves, level)
    c_ref, c_other = float(reach[reference]), float(reach[other])
    speedup = c_other / c_ref if c_ref > 0 and not (math.isnan(c_ref) or math.isnan(c_other)) else math.nan
    return Speedup(float(level), c_ref, c_other, speedup)


# ---- helpers ------------------------------------------------------------------------------


def _is_true(value) -> bool:
    return value is not None and not pd.isna(value) and bool(value)


def _step_values(xs: np.ndarray, ys: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Value of the step function through ``(xs, ys)`` (xs sorted) at ``points``: NaN before the first x."""
    idx = np.searchsorted(xs, points, side="right") - 1
    return np.where(idx >= 0, ys[np.clip(idx, 0, None)], np.nan)


def _final_by_method(frame: pd.DataFrame) -> pd.Series:
    if "mean" in frame.columns:
        x = _axis(frame)
        return frame.sort_values(x, kind="stable").groupby("method", sort=False)["mean"].last()
    _require(frame, ("method", "test_acc"))
    return frame.groupby("method", sort=False)["test_acc"].mean()


def _accuracy_column(frame: pd.DataFrame) -> str:
    if "mean" in frame.columns:
        return "mean"
    if "test_acc" in frame.columns:
        return "test_acc"
    fail("frame columns", list(frame.columns), "columns of an aggregate_curves frame (with 'mean') or of a final_choice frame (with 'test_acc')")


def _axis(curves: pd.DataFrame) -> str:
    axes = [a for a in AXES if a in curves.columns]
    check("curves columns", list(curves.columns), len(axes) == 1, f"columns with exactly one compute axis among {list(AXES)}")
    return axes[0]


def _require(df: pd.DataFrame, columns) -> None:
    missing = [c for c in columns if c not in df.columns]
    check("frame columns", list(df.columns), not missing, f"columns including {list(columns)} (missing: {missing})")


def _num(v, fallback: float) -> float:
    return fallback if v is None or pd.isna(v) else float(v)
