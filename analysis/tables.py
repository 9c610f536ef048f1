"""The comparison table, one row per method, and its Markdown and LaTeX renderings.

``comparison_table(load_results(dirs))`` is the one path from results to the
table; ``fds-tune compare`` writes ``to_markdown``/``to_latex`` of it.  The
definitions (incumbent by validation, final choice, compute to reach, common
levels, speedup) are in :mod:`analysis.curves`.

Reading a cell: ``mean ± std`` over runs (seeds; standard deviation with
ddof 1, no ``±`` with one run).  Compute to reach a level: ``not reached``
when no run of the method stays at or above it; ``… (k/n reached)`` when only
``k`` of its ``n`` runs do, the mean and spread then being those of these
``k`` runs.  Speedup: ``> s×`` a lower bound (the method never reaches the
level; its total compute counts instead), ``< s×`` an upper bound (FDS never
does), ``(k/n seeds)`` when only ``k`` of the ``n`` seeds both methods ran
give a ratio.  Each marker that occurs, and every run whose retraining needed a
fallback or failed, is explained in notes under the table.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .curves import (
    NOT_REACHED, WITHIN, anytime_curves, best_final_accuracy, common_levels, compute_to_reach, final_choice, method_order,
    regret, speedup_at_matched_accuracy,
)

__all__ = ["comparison_table", "format_table", "to_markdown", "to_latex", "TABLE_COLUMNS", "format_mean_std", "format_speedup"]

# column -> (header, how to print it).  "{reference}" is the reference method's name, "{level}" the column's common
# level: "hours_to" and "speedup" give one column per level, named "<column>_<k>pt" (best − k points).
# Companion columns print inside their column's cells: "_std" (spread), "_reached" (runs that reach the level),
# "_bound", "_pairs" and "_seeds" (of a speedup).
TABLE_COLUMNS: dict[str, tuple[str, str]] = {
    "runs": ("Runs", "int"),
    "engine": ("Engine", "text"),
    "best_val_acc": ("Best val. acc. (%)", "pct"),
    "test_acc": ("Test acc. (%)", "pct"),
    "regret": ("Regret (points)", "pct"),
    "device_hours": ("Device-hours", "hours"),
    "epochs": ("Epochs", "epochs"),
    "budget": ("Budget (× {reference} compute)", "ratio"),
    "hours_to": ("Hours to {level}", "hours"),
    "speedup": ("{reference} speedup at {level}", "speedup"),
    "trials_or_steps": ("Trials / outer steps", "count"),
    "model_based": ("Model-based suggestions", "count"),
    "retrain_attempts": ("Retrain attempts", "count"),
}
_PER_LEVEL = ("hours_to", "speedup")
_COMPANIONS = ("_std", "_reached", "_bound", "_pairs", "_seeds")
_PLAIN_EPOCHS_HEADER = "Plain-epoch equiv."
_NOTES = {
    "reached": "(k/n reached): only k of the method's n seeds stay at or above the level until the end; mean ± std over those k.",
    ">": "> s×: the method never reaches the level (in some seeds); s is a lower bound, with its total compute in place of its compute to reach.",
    "<": "< s×: {reference} never reaches the level (in some seeds); s is an upper bound, with its total compute in place of its compute to reach.",
    "seeds": "(k/n seeds): the speedup comes from k of the n seeds both methods ran (neither reaches the level in the others, or their bounds disagree).",
}


def comparison_table(
    df: pd.DataFrame, *, reference: str = "fds", within: float | Sequence[float] = WITHIN,
    speedup_against: list[str] | None = None,
) -> pd.DataFrame:
    """One row per method (index ``method``), means over runs (seeds) with ``<column>_std`` beside them.

    Columns:

    * ``runs``: number of runs (seeds);
    * ``engine`` (only when some run reports ``engine_mode``): the hypergradient engine the
      method's runs used (``forward`` or ``reverse``; several, comma-separated, if they differ);
    * ``best_val_acc``: highest validation accuracy the run reported;
    * ``test_acc``: test accuracy of the run's final choice (see
      :mod:`analysis.curves`: the best result by validation, or the
      retrained hand-over, e.g. FDS's ``retrain_test_acc``);
    * ``regret``: best method's mean ``test_acc`` minus this run's;
    * ``device_hours``: the run's total compute; ``epochs``: the same in
      plain-epoch equivalents, ``compute_s / plain_epoch_s``, where the results
      report ``plain_epoch_s`` (seconds of one plain training epoch; the run's
      last reported value), else the run's training epochs;
    * ``budget``: the run's compute over ``reference``'s mean compute (only
      with a ``reference`` run);
    * ``hours_to_<k>pt``, one per margin of ``within`` (default 1 and 0.5
      point; the level is the best method's mean final ``test_acc`` minus the
      margin, the same for every row): per run, the device-hours from which
      its curve stays at or above the level; mean and ``_std`` over the runs
      that reach it, ``_reached`` how many do;
    * ``speedup_<k>pt``: speedup of ``reference`` over this method at that level,
      over the seed pairs (:func:`~analysis.speedup_at_matched_accuracy`, on
      device seconds), with ``_std``, ``_bound`` (``""``, ``">"``, ``"<"`` or
      ``"not reached"``), ``_pairs`` and ``_seeds``; NaN on the reference's
      row, on methods not in ``speedup_against`` (default: every other method)
      and where there is no ``reference`` run;
    * ``trials_or_steps``: outer steps (FDS) or trials per run;
    * ``model_based`` (only when the results have a ``model_based`` column):
      trials per run with a result whose ``model_based`` is true (NaN for runs
      that never report it);
    * ``retrain_attempts`` (only when some run's retraining fell back to
      another schedule or failed): the run's last ``retrain_attempts``.

    ``_std`` columns are standard deviations over runs (ddof 1; NaN with one run).
    ``table.attrs`` keeps ``reference``, ``within`` (the margins), ``best``,
    ``levels`` (``{"<k>pt": (margin, level)}``), ``epochs`` (``"plain"`` or
    ``"run"``) and ``notes`` (lines to print under the table), for
    :func:`format_table`, :func:`to_markdown` and :func:`to_latex`.
    """
    finals = regret(final_choice(df))
    levels = common_levels(finals, within)
    finals["device_hours"] = finals["compute_s"] / 3600.0
    plain = "plain_epoch_s" in df.columns
    if plain:
        finals["epochs"] = finals["compute_s"] / finals["run"].map(_last_reported(df, "plain_epoch_s")).astype(float)
    if reference in set(finals["method"]):
        finals["budget"] = finals["compute_s"] / finals.loc[finals["method"] == reference, "compute_s"].mean()
    if "model_based" in df.columns:
        finals["model_based"] = finals["run"].map(_model_based_trials(df))
    retrain_notes = _retrain_notes(df)
    if retrain_notes and "retrain_attempts" in df.columns:
        finals["retrain_attempts"] = finals["run"].map(_last_reported(df, "retrain_attempts")).astype(float)

    runs = finals.groupby("method", sort=False)
    table = pd.DataFrame({"runs": runs.size()})
    if "engine_mode" in df.columns:
        modes = df.dropna(subset=["engine_mode"]).groupby("method", sort=False)["engine_mode"].unique()
        table["engine"] = pd.Series({m: ", ".join(sorted(map(str, v))) for m, v in modes.items()}, dtype=object)
    for col in ("best_val_acc", "test_acc", "regret", "device_hours", "epochs", "budget", "trials_or_steps", "model_based", "retrain_attempts"):
        if col in finals.columns:
            table[col] = runs[col].mean()
            table[f"{col}_std"] = runs[col].std(ddof=1)

    curves = anytime_curves(df)
    others = [m for m in table.index if m != reference] if speedup_against is None else list(speedup_against)
    keys = {margin: _level_key(margin) for margin in levels}
    for margin, level in levels.items():
        key = keys[margin]
        reach = compute_to_reach(curves, level).groupby("method", sort=False)["compute"]
        table[f"hours_to_{key}"] = reach.mean() / 3600.0  # over the runs that reach it
        table[f"hours_to_{key}_std"] = reach.std(ddof=1) / 3600.0
        table[f"hours_to_{key}_reached"] = reach.count()
        speedups = {
            m: speedup_at_matched_accuracy(curves, m, reference=reference, level=level)
            for m in table.index if reference in table.index and m != reference and m in others
        }
        for field, suffix in (("speedup", ""), ("std", "_std"), ("bound", "_bound"), ("pairs", "_pairs"), ("seeds", "_seeds")):
            values = [getattr(speedups[m], field) if m in speedups else None for m in table.index]
            table[f"speedup_{key}{suffix}"] = pd.Series(values, index=table.index, dtype=object if field == "bound" else float)

    table = table.reindex(method_order(table.index))
    table.index.name = "method"
    ordered = [
        c for name in TABLE_COLUMNS for col in _expand(name, keys.values()) for c in (col, *(col + s for s in _COMPANIONS))
        if c in table.columns
    ]
    table = table[ordered].copy()
    table.attrs.update(
        reference=reference, within=tuple(levels), best=best_final_accuracy(finals),
        levels={keys[m]: (m, lvl) for m, lvl in levels.items()}, epochs="plain" if plain else "run",
        notes=_marker_notes(table, reference) + retrain_notes + _handover_notes(df),
    )
    return table


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as strings, headed as in :data:`TABLE_COLUMNS`: ``mean ± std`` where there is a spread,
    accuracies and regret in percent (points), ``—`` for a missing value, the markers of the module docstring."""
    out = pd.DataFrame(index=table.index)
    for col in table.columns:
        if col.endswith(_COMPANIONS):
            continue
        header, kind = _header(table, col)
        out[header] = [_cell(table, method, col, kind) for method in table.index]
    out.index = [str(m) for m in table.index]
    out.index.name = "Method"
    return out


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of :func:`comparison_table` output, then its notes (if any) as a list."""
    text = format_table(table)
    header = ["Method", *text.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * len(text.columns)) + "|"]
    lines += ["| " + " | ".join([m, *row]) + " |" for m, row in zip(text.index, text.to_numpy().tolist())]
    notes = table.attrs.get("notes", [])
    if notes:
        lines += ["", "Notes:", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    """A booktabs ``tabular`` of :func:`comparison_table` output, its notes in rows under the rule
    (in a ``table`` float when ``caption`` or ``label`` is given)."""
    text = format_table(table)
    header = ["Method", *text.columns]
    notes = [r"\multicolumn{" + str(len(header)) + r"}{l}{\footnotesize " + _latex_escape(n) + r"} \\" for n in table.attrs.get("notes", [])]
    body = [
        r"\begin{tabular}{l" + "r" * len(text.columns) + "}",
        r"\toprule",
        " & ".join(_latex_escape(h) for h in header) + r" \\",
        r"\midrule",
        *(" & ".join(_latex_escape(c) for c in [m, *row]) + r" \\" for m, row in zip(text.index, text.to_numpy().tolist())),
        r"\bottomrule",
        *notes,
        r"\end{tabular}",
    ]
    if caption is None and label is None:
        return "\n".join(body) + "\n"
    wrapped = [r"\begin{table}[t]", r"\centering"]
    if caption is not None:
        wrapped.append(r"\caption{" + _latex_escape(caption) + "}")
    if label is not None:
        wrapped.append(r"\label{" + label + "}")
    return "\n".join([*wrapped, *body, r"\end{table}"]) + "\n"


# ---- columns and headers ------------------------------------------------------------------


def _level_key(margin: float) -> str:
    return f"{100 * margin:g}pt"


def _expand(name: str, keys) -> list[str]:
    return [f"{name}_{k}" for k in keys] if name in _PER_LEVEL else [name]


def _header(table: pd.DataFrame, col: str) -> tuple[str, str]:
    name, key = next(((n, col[len(n) + 1:]) for n in _PER_LEVEL if col.startswith(n + "_")), (col, None))
    header, kind = TABLE_COLUMNS.get(name, (col, "count"))
    reference = str(table.attrs.get("reference", "fds")).upper()
    if key is not None:
        margin, level = table.attrs.get("levels", {}).get(key, (None, None))
        best = f"best − {key[:-2]} pt"
        header = header.format(reference=reference, level=f"{100 * level:.2f}% ({best})" if level is not None else best)
    elif name == "epochs" and table.attrs.get("epochs") == "plain":
        header = _PLAIN_EPOCHS_HEADER
    else:
        header = header.format(reference=reference)
    return header, kind


# ---- per-run columns ------------------------------------------------------------------------


def _last_reported(df: pd.DataFrame, column: str) -> pd.Series:
    """Per run, the last non-missing value of ``column`` (NaN where there is none)."""
    return df.groupby("run", sort=False)[column].agg(lambda s: s.dropna().iloc[-1] if s.notna().any() else np.nan)


def _model_based_trials(df: pd.DataFrame) -> pd.Series:
    """Per run, trials with a result whose ``model_based`` is true (NaN for runs that never report ``model_based``)."""
    flags = df["model_based"].map(lambda v: not pd.isna(v) and bool(v))
    reported = df["model_based"].notna().groupby(df["run"], sort=False).any()
    counts = df.loc[flags, "trial"].groupby(df.loc[flags, "run"], sort=False).nunique()
    return counts.reindex(reported.index, fill_value=0).astype(float).where(reported)


def _retrain_notes(df: pd.DataFrame) -> list[str]:
    """One note per run whose retraining fell back to another schedule (``retrain_attempts`` > 1 or
    ``retrain_fallback``) or failed in every attempt (``retrain_diverged``)."""
    present = [c for c in ("retrain_attempts", "retrain_fallback", "retrain_diverged") if c in df.columns]
    if not present:
        return []
    last = pd.DataFrame({c: _last_reported(df, c) for c in present})
    notes = []
    for run, r in last.iterrows():
        attempts = r.get("retrain_attempts", np.nan)
        fell_back = (not pd.isna(attempts) and attempts > 1) or _true(r.get("retrain_fallback"))
        parts = []
        if fell_back:
            parts.append(
                "the learned schedule's retraining failed; the answer is a fallback schedule's retraining"
                + ("" if pd.isna(attempts) else f" (retrain attempts: {int(attempts)})")
            )
        if _true(r.get("retrain_diverged")):
            parts.append("every retraining attempt failed (diverged or stalled): its test accuracy is a failed run's")
        if parts:
            notes.append(f"{run}: " + "; ".join(parts) + ".")
    return notes


def _handover_notes(df: pd.DataFrame) -> list[str]:
    """One note per FDS run that handed over its incumbent where it differs from its last update
    (``retrain_is_last`` false on its first retraining attempt, ``retrain_final`` "incumbent"), so
    that the paper's choice (``final="last"``) and this one are never confused."""
    if not {"retrain_is_last", "retrain_final", "incumbent_outer_step"} <= set(df.columns):
        return []
    notes = []
    columns = [c for c in ("retrain_is_last", "retrain_final", "incumbent_outer_step", "retrain_attempts") if c in df.columns]
    for run, r in pd.DataFrame({c: _last_reported(df, c) for c in columns}).iterrows():
        attempts = r.get("retrain_attempts", np.nan)
        first_attempt = pd.isna(attempts) or attempts == 1  # a fallback has its own note
        if r["retrain_final"] == "incumbent" and not _missing(r["retrain_is_last"]) and not bool(r["retrain_is_last"]) and first_attempt:
            notes.append(
                f"{run}: FDS retrained its incumbent (the best validated schedule, from outer step {int(r['incumbent_outer_step'])}), "
                "not its last update (the paper's choice, final=\"last\")."
            )
    return notes


def _true(value) -> bool:
    return value is not None and not pd.isna(value) and bool(value)


def _marker_notes(table: pd.DataFrame, reference: str) -> list[str]:
    """The explanations of the markers the formatted table will show."""
    shown = set()
    for col in table.columns:
        if col.startswith("hours_to_") and col.endswith("_reached"):
            reached = table[col]
            shown |= {"reached"} if ((reached > 0) & (reached < table["runs"])).any() else set()
        elif col.startswith("speedup_") and col.endswith("_bound"):
            shown |= set(table[col].dropna()) & {">", "<"}
            base = col[: -len("_bound")]
            partial = table[f"{base}_pairs"].notna() & (table[f"{base}_pairs"] > 0) & (table[f"{base}_pairs"] < table[f"{base}_seeds"])
            shown |= {"seeds"} if partial.any() else set()
    return [_NOTES[k].format(reference=reference.upper()) for k in _NOTES if k in shown]


# ---- cells -----------------------------------------------------------------------------------

_BOUND_WORDS = {">": "lower bound", "<": "upper bound"}
_FORMATS = {
    "int": lambda v: f"{int(round(v))}",
    "pct": lambda v: f"{100 * v:.2f}",
    "hours": lambda v: f"{v:.3g}",
    "epochs": lambda v: f"{v:.1f}",
    "ratio": lambda v: f"{v:.2f}",
    "speedup": lambda v: f"{v:.2f}",
    "count": lambda v: f"{v:.1f}" if v != round(v) else f"{int(v)}",
}


def _cell(table: pd.DataFrame, method, col: str, kind: str) -> str:
    def get(suffix):
        return table.at[method, col + suffix] if col + suffix in table.columns else None

    mean, std = table.at[method, col], get("_std")
    if kind == "text":
        return "—" if _missing(mean) else str(mean)
    if kind == "speedup":
        return format_speedup(mean, std, get("_bound"), get("_pairs"), get("_seeds"))
    reached = get("_reached")
    if reached is not None:
        runs = int(table.at[method, "runs"])
        if reached == 0:
            return NOT_REACHED
        return format_mean_std(mean, std, kind) + (f" ({int(reached)}/{runs} reached)" if reached < runs else "")
    if _missing(mean):
        return "—"
    return format_mean_std(mean, std, kind) + ("×" if kind == "ratio" else "")


def format_mean_std(mean, std, kind: str) -> str:
    """``mean ± std`` as the table prints a cell of ``kind`` (``"pct"``: accuracy in percent, ``"hours"``, ``"epochs"``,
    ``"ratio"``, ``"speedup"``, ``"count"``, ``"int"``); no ``±`` where ``std`` is None or NaN."""
    fmt = _FORMATS[kind]
    text = _no_negative_zero(fmt(float(mean)))
    if not _missing(std):
        text += f" ± {fmt(float(std))}"
    return text


def format_speedup(speedup, std, bound: str | None, pairs, seeds, explain: bool = False) -> str:
    """A speedup as the table prints it: ``2.50 ± 0.71×``, ``> 2.25×`` (a lower bound, no spread), ``< 2.50×``
    (an upper bound), then ``(k/n seeds)`` when only ``pairs`` of the ``seeds`` give a ratio; ``not reached``;
    ``—`` when there is none.  ``explain``: the markers in words too, ``> 2.25× (lower bound; 1/2 seeds)``, and
    ``no ratio (the seeds' bounds disagree)`` for a speedup of no pair out of some seeds."""
    if bound == NOT_REACHED:
        return NOT_REACHED
    if _missing(speedup):
        both_ways = explain and not _missing(pairs) and not _missing(seeds) and pairs == 0 and seeds > 0
        return "no ratio (the seeds' bounds disagree)" if both_ways else "—"
    text = (f"{bound} " if bound else "") + format_mean_std(speedup, None if bound else std, "speedup") + "×"
    partial = not _missing(pairs) and not _missing(seeds) and pairs < seeds
    notes = [_BOUND_WORDS[bound]] if explain and bound in _BOUND_WORDS else []
    notes += [f"{int(pairs)}/{int(seeds)} seeds"] if partial else []
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _missing(value) -> bool:
    return value is None or pd.isna(value)


def _no_negative_zero(text: str) -> str:
    return text[1:] if text.startswith("-") and not any(c in "123456789" for c in text.split("e")[0]) else text


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "×": r"$\times$", "—": "--", "−": "$-$",
    ">": r"$>$", "<": r"$<$",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
