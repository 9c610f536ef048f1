"""A plain reading of a comparison table: one paragraph for a human, printed under the table.

``reading(table, df)`` says, at the table's first common level (best − 1 pt by default):

* the level, and the best method's mean final accuracy it comes from;
* which method reached it first (the least mean compute to reach, over the seeds that reach it;
  ``k/n seeds`` when not all do), in device-hours and, where the table has them, plain epochs;
* the reference's (FDS's) speedup at that level against each black-box search that reached it,
  its bounds in words (``> s× (lower bound)``, ``< s× (upper bound)``); or that the table has
  no reference row, hence no speedups;
* which methods never reached it;
* whether a search reached the table's best validation accuracy on its *first* trial (the trial
  whose first result comes first: the earliest ``timestamp``, else the frame's order), which says
  the search itself bought nothing on that problem.

The numbers are printed as the table prints them (:func:`~analysis.tables.format_mean_std`,
:func:`~analysis.tables.format_speedup`); the definitions are those of :mod:`analysis.curves`.
"""
from __future__ import annotations

import math

import pandas as pd

from fds_tune.results import BLACK_BOX_METHODS, POPULATION_METHODS
from fds_tune.validation import check

from .curves import anytime_curves, compute_to_reach
from .tables import format_mean_std, format_speedup

__all__ = ["reading", "SEARCH_METHODS", "first_trials"]

# Methods that search over trials (a black-box search or a population): the speedups the reading
# quotes, and the first-trial check.
SEARCH_METHODS: tuple[str, ...] = BLACK_BOX_METHODS + POPULATION_METHODS
_TIE = 1e-9  # accuracies equal up to float noise (a mean over seeds of the same value)


def reading(table: pd.DataFrame, df: pd.DataFrame) -> str:
    """One paragraph reading ``table`` (a :func:`~analysis.comparison_table` of ``df``) at its first
    common level (``"1pt"``, best − 1 point, where the table has it); see the module docstring.

    ``df``: the results the table was built from (for the compute to reach in plain epochs and the
    first trials).  Returns the text only.
    """
    levels = table.attrs.get("levels") or {}
    check("table", "a frame without levels", bool(levels), "a comparison_table output (its attrs hold the common levels)")
    key = "1pt" if "1pt" in levels else next(iter(levels))
    margin, level = levels[key]
    reference = str(table.attrs.get("reference", "fds"))
    hours, hours_std = table[f"hours_to_{key}"], table[f"hours_to_{key}_std"]
    reached, runs = table[f"hours_to_{key}_reached"].astype(int), table["runs"].astype(int)
    plain = _plain_epochs_to_reach(df, level) if table.attrs.get("epochs") == "plain" and "plain_epoch_s" in df.columns else None

    def reach_text(method: str) -> str:
        notes = []
        if plain is not None and method in plain.index and not math.isnan(plain.at[method, "mean"]):
            notes.append(format_mean_std(plain.at[method, "mean"], plain.at[method, "std"], "epochs") + " plain epochs")
        if reached[method] < runs[method]:
            notes.append(f"mean over the {reached[method]}/{runs[method]} seeds that reached it")
        text = format_mean_std(hours[method], hours_std[method], "hours") + " device-hours"
        return text + (f" ({'; '.join(notes)})" if notes else "")

    points = 100 * margin
    best = table["test_acc"].dropna()
    source = f" ({_pct(best.max())}%, {best.idxmax()})" if len(best) else ""
    sentences = [f"Level: {_pct(level)}% test accuracy, the best mean final accuracy{source} less {points:g} point{'' if points == 1 else 's'}."]
    got_there = [m for m in table.index if reached[m] > 0]
    if got_there:
        first = min(got_there, key=lambda m: hours[m])  # ties: the table's order
        sentences.append(f"{_name(first, reference)} reached it first, after {reach_text(first)}.")
        if reference in got_there and reference != first:
            sentences.append(f"{_name(reference, reference)} reached it after {reach_text(reference)}.")
    else:
        sentences.append("No method reached it.")

    searches = [m for m in table.index if m in SEARCH_METHODS]
    if reference not in table.index:
        sentences.append(f"The table has no {_name(reference, reference)} row: no speedups.")
    elif searches:
        quoted = [m for m in searches if reached[m] > 0]
        if quoted:
            parts = [f"{_speedup(table, key, m)} against {m}" for m in quoted]
            sentences.append(f"{_name(reference, reference)}'s speedup at this level: {_join(parts)}.")
        else:
            sentences.append(f"No black-box search reached it: no speedup at matched accuracy for {_name(reference, reference)}.")

    never = [m for m in table.index if reached[m] == 0]
    if never:
        bounded = [f"{_speedup(table, key, m)} against {m}" for m in never if m in searches and _bound(table, key, m) == ">"]
        known = f"; {_name(reference, reference)}'s speedup is {_join(bounded)}" if bounded and reference in table.index else ""
        sentences.append(f"Never reached it: {_join(never)}{known}.")
    else:
        sentences.append("Every method reached it (in at least one seed).")

    if searches:
        sentences.append(_first_trial_sentence(table, df, searches))
    return " ".join(sentences)


def first_trials(df: pd.DataFrame) -> pd.DataFrame:
    """Per run, its first trial: the trial whose first result comes first (the earliest ``timestamp``
    where the frame has one, else the frame's order; a hand-over is not a trial).

    One row per run, columns ``method``, ``run``, ``trial`` and ``best_val_acc`` (the trial's
    highest ``val_acc``, diverged results left out; NaN when it has none).
    """
    rows = df[~df["handover"].map(_true)] if "handover" in df.columns else df
    out = []
    for run, g in rows.groupby("run", sort=False):
        order = g["timestamp"] if "timestamp" in g.columns and g["timestamp"].notna().any() else pd.Series(range(len(g)), index=g.index)
        starts = order.groupby(g["trial"], sort=False).min()  # NaN timestamps last; ties: the frame's order
        trial = starts.index[starts.fillna(math.inf).to_numpy().argmin()]
        t = g[g["trial"] == trial]
        usable = t[~t["diverged"].map(_true)] if "diverged" in t.columns else t
        out.append({"method": g["method"].iloc[0], "run": run, "trial": trial, "best_val_acc": float(usable["val_acc"].max())})
    return pd.DataFrame(out, columns=["method", "run", "trial", "best_val_acc"])


# ---- sentences ---------------------------------------------------------------------------------


def _first_trial_sentence(table: pd.DataFrame, df: pd.DataFrame, searches: list[str]) -> str:
    best = float(table["best_val_acc"].max())
    first = first_trials(df[df["method"].isin(searches)])
    hit = first.assign(hit=first["best_val_acc"] >= best - _TIE).groupby("method", sort=False)["hit"].agg(["sum", "size"])
    lucky = [m for m in searches if m in hit.index and hit.at[m, "sum"] > 0]
    what = f"the table's best validation accuracy ({_pct(best)}%)"
    if not lucky:
        return f"No search reached {what} on its first trial."
    parts = [m + (f" ({int(hit.at[m, 'sum'])}/{int(hit.at[m, 'size'])} seeds)" if hit.at[m, "size"] > 1 else "") for m in lucky]
    rest = "" if len(lucky) == len(searches) else "; no other search did"
    return f"On its first trial, {_join(parts)} reached {what}{rest}."


def _speedup(table: pd.DataFrame, key: str, method: str) -> str:
    col = f"speedup_{key}"
    get = {s: table.at[method, col + s] for s in ("", "_std", "_bound", "_pairs", "_seeds")}
    return format_speedup(get[""], get["_std"], get["_bound"], get["_pairs"], get["_seeds"], explain=True)


def _bound(table: pd.DataFrame, key: str, method: str):
    return table.at[method, f"speedup_{key}_bound"]


def _plain_epochs_to_reach(df: pd.DataFrame, level: float) -> pd.DataFrame:
    """Per method, mean and std (ddof 1) over its runs that reach ``level`` of the compute to reach it in plain
    epochs: each run's device-seconds to reach over its last reported ``plain_epoch_s``."""
    reach = compute_to_reach(anytime_curves(df), level)
    plain = df.groupby("run", sort=False)["plain_epoch_s"].agg(lambda s: s.dropna().iloc[-1] if s.notna().any() else math.nan)
    epochs = reach["compute"] / reach["run"].map(plain).astype(float)
    return epochs.groupby(reach["method"], sort=False).agg(["mean", "std"])  # NaN (not reached) left out; std: ddof 1


def _name(method: str, reference: str) -> str:
    return method.upper() if method == reference else method


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _pct(value: float) -> str:
    return format_mean_std(value, None, "pct")


def _true(value) -> bool:
    return value is not None and not pd.isna(value) and bool(value)
