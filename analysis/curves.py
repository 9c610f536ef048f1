"""Anytime curves, final choices, compute to reach a level, regret and speedup, from the tidy frame of
:func:`~analysis.load_results`.

**Incumbent.**  What a run would hand over if stopped now.  At each result of a
run, in the frame's order (wall clock, see :mod:`analysis.loaders`), the
incumbent is the best *complete* result reported *so far by any trial of the run*,
by validation only: the highest ``val_acc``; ties: the lower ``val_loss``, then
the earlier result.  A result is complete when it ends a trial that trained its
whole horizon (``done`` true) or is an FDS outer step (``outer_step``: each is a
whole inner run): what a method hands over is a configuration, retrained for the
whole horizon, so it is judged where its run ends, not at an intermediate epoch
(a schedule that validated best at epoch 4 of 5 can collapse in its last chunk),
and a trial a scheduler or the budget stopped early is never chosen (Ray Tune's
``scope="last"`` over completed trials).  In a frame without a ``done`` column
every result is complete.  A result with ``diverged`` true, or without a
``val_acc``, never becomes the incumbent.

**Anytime curve.**  One point per result: the incumbent's ``test_acc``.  The
test set never chooses, so the curve changes only when the incumbent changes
(a result with a higher ``test_acc`` but a lower ``val_acc`` leaves it as it
is); it can fall as well as rise.

**Hand-over.**  A result carrying a ``retrain_test_acc`` (FDS's last result:
the learned schedule retrained from scratch) or a ``handover_test_acc`` (the
retraining of a black-box incumbent) is the run's final answer, whatever its
validation accuracy: from that result on, the curve reports that accuracy (a
later hand-over result replaces it; other results no longer change it).

**Final choice** of a run: its incumbent after its last result, i.e. the end of
its curve:

* FDS: its last result and ``retrain_test_acc`` (before it has retrained: its
  best outer step by validation, and that step's ``test_acc``);
* black-box search: the completed trial with the best final validation over the
  whole search, and its ``test_acc`` (its ``handover_test_acc`` where the search
  retrained it);
* greedy online methods and learning-rate-free optimizers: the completed run (of
  their grid) with the best final validation.

Curves run on a compute axis ``x``: ``run_compute_s`` (device seconds of the
whole run so far, summed over its trials) or ``run_epochs`` (training epochs,
likewise); see :mod:`analysis.loaders`.

**Compute to reach** a level ``L``, per run: the first ``x`` after which the
run's curve stays at or above ``L`` until the run's end (NaN: not reached; a
curve that touches ``L`` and falls back below it has not reached it, and a run
whose final answer is below ``L`` never reaches it).

**Common levels.**  The best method's final accuracy (the highest per-method
mean over runs of the final choice's test accuracy) minus a margin: by default
1 point and 0.5 point.  One level per margin, the same for every method.

**Speedup** of a reference method (FDS) over another at a level ``L``, per pair
of runs with the same seed::

    speedup = C_other(L) / C_reference(L)

where ``C_m(L)`` is run ``m``'s compute to reach ``L``; > 1 means the reference
gets there with less compute.  Where one run of the pair never reaches ``L``
the ratio is a bound: the other method's total compute in place of its
``C_other`` gives a lower bound (``>``), the reference's total compute in place
of ``C_reference`` an upper bound (``<``); a pair where neither reaches ``L``
gives no ratio.  The speedup is the mean (± standard deviation, ddof 1) of the
pairs' ratios; with bounds among them, their mean is itself a bound of the same
direction (see :func:`speedup_at_matched_accuracy`).

**Aggregation over runs** (seeds) of one method, for figures: on a common grid,
the union of their ``x`` values; each run's curve is a step function (its value
at ``x`` is that of its last result at or before ``x``, and its final value
after it ends); mean, standard deviation (ddof 1), min and max are taken where
every run has reported.

**Regret** of a method: the best final accuracy over methods minus this
method's accuracy; 0 for the best method, in accuracy units (0.01 = one point).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from fds_tune.results import METHODS
from fds_tune.validation import check, check_choice, check_number, fail

from .loaders import RUN_EPOCHS, RUN_SECONDS

__all__ = [
    "AXES", "HANDOVER_COLUMNS", "NOT_REACHED", "WITHIN", "anytime_curves", "aggregate_curves", "final_choice", "best_final_accuracy",
    "regret", "common_levels", "compute_to_reach", "speedup_pairs", "speedup_at_matched_accuracy", "Speedup",
    "method_order",
]

AXES = (RUN_SECONDS, RUN_EPOCHS)
HANDOVER_COLUMNS = ("retrain_test_acc", "handover_test_acc")  # a result with one of these is its run's final answer
WITHIN = (0.01, 0.005)  # the common levels: best final accuracy minus 1 point and minus 0.5 point
NOT_REACHED = "not reached"
_STATS = ("mean", "std", "min", "max", "n")


class Speedup(NamedTuple):
    """Speedup of a reference method over another at accuracy ``level`` (> 1: the reference is faster).

    ``speedup``: mean over seed pairs of ``compute_other / compute_reference``
    (NaN when there is none); ``std``: their standard deviation (ddof 1; NaN
    with one pair or with bounds); ``bound``: ``""`` (exact), ``">"`` (a lower
    bound), ``"<"`` (an upper bound) or ``"not reached"`` (neither run of any
    pair reaches ``level``); ``pairs``: the pairs it is computed from, out of
    ``seeds`` (the seeds the two methods share).
    """

    level: float
    speedup: float
    std: float
    bound: str
    pairs: int
    seeds: int


def method_order(methods) -> list[str]:
    """Methods in the order of :data:`fds_tune.results.METHODS` (FDS, greedy, black-box), unknown ones after, alphabetically."""
    methods = list(dict.fromkeys(methods))
    known = [m for m in METHODS if m in methods]
    return known + sorted(m for m in methods if m not in METHODS)


class _Incumbent(NamedTuple):
    trial: object
    iteration: object
    val_acc: float
    rank: tuple[float, float]  # (val_acc, -val_loss): higher is better
    test_acc: float
    handed_over: bool


def anytime_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Per run, one row per result (in the frame's order): the incumbent after that result.

    Columns: ``method``, ``run``, ``seed``, ``run_compute_s``, ``run_epochs``,
    ``best_val_acc`` (highest ``val_acc`` of a non-diverged result so far),
    ``incumbent_trial``, ``incumbent_iteration``, ``incumbent_val_acc``,
    ``incumbent_test_acc`` (the curve) and ``handed_over`` (the value is a
    hand-over's retrained accuracy).  Before any usable result the incumbent
    columns are missing.  See the module docstring for the definitions.
    """
    _require(df, ("method", "run", "trial", "val_acc", "test_acc", RUN_SECONDS))
    handover_columns = [c for c in HANDOVER_COLUMNS if c in df.columns]
    every_result_complete = "done" not in df.columns
    out = []
    for run, g in df.groupby("run", sort=False):
        best_val, inc = -math.inf, None
        for rec in g.to_dict("records"):
            usable = not _is_true(rec.get("diverged")) and not _missing(rec["val_acc"])
            complete = every_result_complete or _is_true(rec.get("done")) or not _missing(rec.get("outer_step"))
            handover = next((float(rec[c]) for c in handover_columns if not _missing(rec[c])), None)
            rank = (_num(rec["val_acc"], -math.inf), -_num(rec.get("val_loss"), math.inf))
            if usable:
                best_val = max(best_val, rank[0])
            if handover is not None:  # the run's final answer, whatever its validation
                inc = _Incumbent(rec["trial"], rec.get("iteration"), _num(rec["val_acc"], math.nan), rank, handover, True)
            elif usable and complete and (inc is None or (not inc.handed_over and rank > inc.rank)):  # ties keep the earlier
                inc = _Incumbent(rec["trial"], rec.get("iteration"), rank[0], rank, _num(rec["test_acc"], math.nan), False)
            out.append({
                "method": rec["method"], "run": run, "seed": rec.get("seed"),
                RUN_SECONDS: rec[RUN_SECONDS], RUN_EPOCHS: rec.get(RUN_EPOCHS, math.nan),
                "best_val_acc": best_val if best_val > -math.inf else math.nan,
                "incumbent_trial": None if inc is None else inc.trial,
                "incumbent_iteration": None if inc is None else inc.iteration,
                "incumbent_val_acc": math.nan if inc is None else inc.val_acc,
                "incumbent_test_acc": math.nan if inc is None else inc.test_acc,
                "handed_over": False if inc is None else inc.handed_over,
            })
    columns = [
        "method", "run", "seed", RUN_SECONDS, RUN_EPOCHS, "best_val_acc", "incumbent_trial", "incumbent_iteration",
        "incumbent_val_acc", "incumbent_test_acc", "handed_over",
    ]
    return pd.DataFrame(out, columns=columns)


def final_choice(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: what the run finally chose (the end of its :func:`anytime_curves` curve), and what it cost.

    Columns: ``method``, ``run``, ``seed``, ``trial`` and ``iteration`` (the
    chosen result), ``val_acc`` and ``test_acc`` of the choice,
    ``handed_over`` (``test_acc`` is a hand-over's retrained accuracy),
    ``best_val_acc`` (highest ``val_acc`` the run reported), ``compute_s`` and
    ``epochs`` (the run's total), ``trials`` (of the search: a hand-over is not one), ``outer_steps`` (FDS: the
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
        "iteration": last["incumbent_iteration"],
        "val_acc": last["incumbent_val_acc"],
        "test_acc": last["incumbent_test_acc"],
        "handed_over": last["handed_over"],
        "best_val_acc": last["best_val_acc"],
        "compute_s": last[RUN_SECONDS],
        "epochs": last[RUN_EPOCHS],
        "trials": _searched(df).groupby("run", sort=False)["trial"].nunique().reindex(last.index),
        "outer_steps": steps.reindex(last.index),
    })
    out["trials_or_steps"] = out["outer_steps"].where(out["outer_steps"].notna(), out["trials"]).astype(float)
    return out.reset_index()[["method", "run", *[c for c in out.columns if c != "method"]]]


def _searched(df: pd.DataFrame) -> pd.DataFrame:
    """The search's results: without a hand-over's (``handover`` true)."""
    return df[~df["handover"].map(_is_true)] if "handover" in df.columns else df


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


def common_levels(frame: pd.DataFrame, within: float | Sequence[float] = WITHIN) -> dict[float, float]:
    """The table's common levels, ``{margin: level}``: :func:`best_final_accuracy` of ``frame`` minus each margin.

    ``frame``: a :func:`final_choice` or :func:`aggregate_curves` frame.
    ``within``: one margin or several, in accuracy units (0.01 = 1 point).
    """
    best = best_final_accuracy(frame)
    return {m: best - m for m in _margins(within)}


def compute_to_reach(curves: pd.DataFrame, level: float, x: str = RUN_SECONDS) -> pd.DataFrame:
    """Per run of an :func:`anytime_curves` frame, the compute from which its curve stays at or above ``level``.

    One row per run, columns ``method``, ``run``, ``seed``, ``compute`` (the
    first ``x`` after which ``incumbent_test_acc`` stays >= ``level`` until the
    run's end; NaN: not reached) and ``total`` (the run's ``x`` at its end).
    """
    check_choice("x", x, AXES)
    check_number("level", level, rule="a finite accuracy (0.9 = 90%)")
    _require(curves, ("method", "run", x, "incumbent_test_acc"))
    rows = []
    for run, g in curves.groupby("run", sort=False):
        xs, ys = g[x].to_numpy(dtype=float), g["incumbent_test_acc"].to_numpy(dtype=float)
        below = np.flatnonzero(~(ys >= level))  # a missing value is below every level
        start = below[-1] + 1 if len(below) else 0
        rows.append({
            "method": g["method"].iloc[0], "run": run, "seed": g["seed"].iloc[0] if "seed" in g.columns else None,
            "compute": xs[start] if start < len(xs) else math.nan, "total": xs[-1],
        })
    return pd.DataFrame(rows, columns=["method", "run", "seed", "compute", "total"])


def speedup_pairs(
    curves: pd.DataFrame, other: str, reference: str = "fds", level: float | None = None, x: str = RUN_SECONDS
) -> pd.DataFrame:
    """Per pair of runs with the same seed, the speedup of ``reference`` over ``other`` at ``level``.

    ``curves``: an :func:`anytime_curves` frame.  ``level`` defaults to the
    best final accuracy minus 1 point.  One row per pair (runs without a seed
    pair with none), columns ``seed``, ``run_reference``, ``run_other``,
    ``compute_reference``, ``compute_other`` (compute to reach; NaN: not
    reached), ``total_reference``, ``total_other`` (the runs' total compute),
    ``speedup`` and ``bound``: ``compute_other / compute_reference`` (``""``);
    ``total_other / compute_reference`` where ``other`` never reaches the level
    (``">"``, a lower bound); ``compute_other / total_reference`` where
    ``reference`` never does (``"<"``, an upper bound); NaN and ``"not reached"``
    where neither does.
    """
    methods = set(curves["method"])
    for name, m in (("reference", reference), ("other", other)):
        check(name, m, m in methods, f"a method with a curve, one of {method_order(methods)}")
    level = _default_level(curves) if level is None else level
    reach = compute_to_reach(curves, level, x)
    reach = reach[reach["seed"].notna()]
    ref, oth = (reach[reach["method"] == m].drop(columns="method") for m in (reference, other))
    pairs = ref.merge(oth, on="seed", suffixes=("_reference", "_other"))
    ratios = [_pair_ratio(*r) for r in pairs[["compute_reference", "compute_other", "total_reference", "total_other"]].to_numpy(dtype=float)]
    pairs["speedup"] = [r for r, _ in ratios]
    pairs["bound"] = pd.Series([b for _, b in ratios], index=pairs.index, dtype=object)
    columns = ["seed", "run_reference", "run_other", "compute_reference", "compute_other", "total_reference", "total_other", "speedup", "bound"]
    return pairs[columns]


def speedup_at_matched_accuracy(
    curves: pd.DataFrame, other: str, reference: str = "fds", level: float | None = None, x: str = RUN_SECONDS
) -> Speedup:
    """Speedup of ``reference`` over ``other`` at ``level``, over the seed pairs of :func:`speedup_pairs`.

    ``curves``: an :func:`anytime_curves` frame; ``level`` defaults to the best
    final accuracy minus 1 point.  The pairs where neither run reaches
    ``level`` are left out.  If the others are all exact, ``speedup`` is
    their mean ratio (``std`` their standard deviation); if some are lower
    bounds (and none an upper bound), the mean of ratios and lower bounds is a
    lower bound (``bound=">"``; likewise ``"<"``); with bounds of both
    directions only the exact ratios count.  No pair reaching ``level``:
    ``bound="not reached"``; no seed in common: ``pairs == seeds == 0`` (NaN).
    """
    level = _default_level(curves) if level is None else level
    p = speedup_pairs(curves, other, reference, level, x)
    seeds = len(p)
    reached = p[p["bound"] != NOT_REACHED]
    if reached.empty:
        return Speedup(float(level), math.nan, math.nan, NOT_REACHED if seeds else "", 0, seeds)
    bounds = set(reached["bound"]) - {""}
    used = reached[reached["bound"] == ""] if len(bounds) > 1 else reached
    bound = bounds.pop() if len(bounds) == 1 else ""
    ratios = used["speedup"].to_numpy(dtype=float)
    mean = float(ratios.mean()) if len(ratios) else math.nan
    std = float(ratios.std(ddof=1)) if len(ratios) > 1 and not bound else math.nan
    return Speedup(float(level), mean, std, bound, len(ratios), seeds)


# ---- helpers ------------------------------------------------------------------------------


def _margins(within: float | Sequence[float]) -> tuple[float, ...]:
    """``within`` as a tuple of distinct margins, each checked (a finite number >= 0)."""
    values = (within,) if not isinstance(within, (Sequence, np.ndarray)) or isinstance(within, str) else tuple(within)
    check("within", within, len(values) > 0, "a margin or a non-empty sequence of margins (0.01 = 1 point)")
    for m in values:
        check_number("within", m, low=0, rule="a finite number >= 0 (accuracy units: 0.01 = 1 point)")
    check("within", within, len(set(values)) == len(values), "distinct margins")
    return tuple(float(m) for m in values)


def _pair_ratio(c_ref: float, c_other: float, total_ref: float, total_other: float) -> tuple[float, str]:
    if math.isnan(c_ref) and math.isnan(c_other):
        return math.nan, NOT_REACHED
    if math.isnan(c_ref):
        return _ratio(c_other, total_ref), "<"
    if math.isnan(c_other):
        return _ratio(total_other, c_ref), ">"
    return _ratio(c_other, c_ref), ""


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else (math.inf if a > 0 else math.nan)


def _default_level(curves: pd.DataFrame) -> float:
    """The best method's mean final ``incumbent_test_acc`` minus the first of :data:`WITHIN`."""
    finals = curves.groupby("run", sort=False).tail(1).rename(columns={"incumbent_test_acc": "test_acc"})
    return best_final_accuracy(finals) - WITHIN[0]


def _is_true(value) -> bool:
    return not _missing(value) and bool(value)


def _missing(value) -> bool:
    return value is None or bool(pd.isna(value))


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
    return fallback if _missing(v) else float(v)
