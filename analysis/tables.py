"""The comparison table, one row per method, and its Markdown and LaTeX renderings.

``comparison_table(load_results(dirs))`` is the one path from results to the
table; ``fds-tune compare`` writes ``to_markdown``/``to_latex`` of it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fds_tune.validation import check_number

from .curves import (
    aggregate_curves, anytime_curves, best_final_accuracy, compute_to_reach, final_choice, method_order, regret,
    speedup_at_matched_accuracy,
)
from .loaders import RUN_EPOCHS, RUN_SECONDS

__all__ = ["comparison_table", "format_table", "to_markdown", "to_latex", "TABLE_COLUMNS"]

# column -> (header, how to print it); "_std" columns print as "mean ± std" next to their mean
TABLE_COLUMNS: dict[str, tuple[str, str]] = {
    "runs": ("Runs", "int"),
    "best_val_acc": ("Best val. acc. (%)", "pct"),
    "test_acc": ("Test acc. (%)", "pct"),
    "regret": ("Regret (points)", "pct"),
    "device_hours": ("Device-hours", "hours"),
    "epochs": ("Epochs", "epochs"),
    "hours_to_target": ("Hours to target", "hours"),
    "epochs_to_target": ("Epochs to target", "epochs"),
    "fds_speedup": ("FDS speedup", "speedup"),
    "trials_or_steps": ("Trials / outer steps", "count"),
}
_MEAN_STD = ("best_val_acc", "test_acc", "regret", "device_hours", "epochs", "trials_or_steps")


def comparison_table(
    df: pd.DataFrame, *, reference: str = "fds", within: float = 0.01, speedup_against: list[str] | None = None
) -> pd.DataFrame:
    """One row per method (index ``method``), means over runs (seeds) with ``<column>_std`` beside them.

    Columns:

    * ``runs``: number of runs (seeds);
    * ``best_val_acc``: highest validation accuracy the run reported;
    * ``test_acc``: test accuracy of the run's final choice (FDS:
      ``retrain_test_acc``; black-box: the trial with the best ``val_acc`` at its
      last result; greedy: final ``test_acc``; see :mod:`analysis.curves`);
    * ``regret``: best method's mean ``test_acc`` minus this run's;
    * ``device_hours`` and ``epochs``: the run's total compute;
    * ``hours_to_target``, ``epochs_to_target``: compute at which the
      seed-mean incumbent test accuracy first comes within ``within`` (0.01 =
      1 point) of the best final accuracy (NaN: never);
    * ``fds_speedup``: speedup of ``reference`` over this method at matched
      accuracy (:func:`~analysis.speedup_at_matched_accuracy`, on device
      seconds); NaN on the reference's row, on methods not in
      ``speedup_against`` (default: every other method), and where there is no
      ``reference`` run;
    * ``trials_or_steps``: outer steps (FDS) or trials per run.

    ``_std`` columns are standard deviations over runs (ddof 1; NaN with one run).
    ``table.attrs`` keeps ``within``, ``target`` (the accuracy of the
    ``*_to_target`` columns) and ``reference``, for :func:`format_table`'s headers.
    """
    check_number("within", within, low=0, rule="a finite number >= 0 (accuracy units: 0.01 = 1 point)")
    finals = regret(final_choice(df))
    finals["device_hours"] = finals["compute_s"] / 3600.0
    runs = finals.groupby("method", sort=False)
    table = pd.DataFrame({"runs": runs.size()})
    for col in _MEAN_STD:
        table[col] = runs[col].mean()
        table[f"{col}_std"] = runs[col].std(ddof=1)
    curves = anytime_curves(df)
    by_seconds = aggregate_curves(curves, x=RUN_SECONDS)
    target = best_final_accuracy(finals) - within
    table["hours_to_target"] = compute_to_reach(by_seconds, target) / 3600.0
    table["epochs_to_target"] = compute_to_reach(aggregate_curves(curves, x=RUN_EPOCHS), target)
    others = [m for m in table.index if m != reference] if speedup_against is None else list(speedup_against)
    table["fds_speedup"] = np.nan
    if reference in table.index:
        for m in others:
            if m in table.index and m != reference:
                table.loc[m, "fds_speedup"] = speedup_at_matched_accuracy(by_seconds, m, reference=reference).speedup
    table = table.reindex(method_order(table.index))
    table.index.name = "method"
    ordered = [c for name in TABLE_COLUMNS for c in (name, f"{name}_std") if c in table.columns]
    table = table[ordered].copy()
    table.attrs.update(within=within, target=target, reference=reference)
    return table


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as strings, headed as in :data:`TABLE_COLUMNS`: ``mean ± std`` where there is a spread,
    accuracies and regret in percent (points), ``—`` for a missing value."""
    out = pd.DataFrame(index=table.index)
    for col, (header, kind) in TABLE_COLUMNS.items():
        if col not in table.columns:
            continue
        std = table[f"{col}_std"] if f"{col}_std" in table.columns else pd.Series(np.nan, index=table.index)
        if col.endswith("_to_target") and "within" in table.attrs:
            header = header.replace("target", f"within {100 * table.attrs['within']:g} pt")
        elif col == "fds_speedup" and "reference" in table.attrs:
            header = f"{table.attrs['reference'].upper()} speedup"
        out[header] = [_cell(m, s, kind) for m, s in zip(table[col], std)]
    out.index = [str(m) for m in table.index]
    out.index.name = "Method"
    return out


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of :func:`comparison_table` output."""
    text = format_table(table)
    header = ["Method", *text.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * len(text.columns)) + "|"]
    lines += ["| " + " | ".join([m, *row]) + " |" for m, row in zip(text.index, text.to_numpy().tolist())]
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    """A booktabs ``tabular`` of :func:`comparison_table` output (in a ``table`` float when ``caption`` or ``label`` is given)."""
    text = format_table(table)
    header = ["Method", *text.columns]
    body = [
        r"\begin{tabular}{l" + "r" * len(text.columns) + "}",
        r"\toprule",
        " & ".join(_latex_escape(h) for h in header) + r" \\",
        r"\midrule",
        *(" & ".join(_latex_escape(c) for c in [m, *row]) + r" \\" for m, row in zip(text.index, text.to_numpy().tolist())),
        r"\bottomrule",
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


def _cell(mean, std, kind: str) -> str:
    if mean is None or pd.isna(mean):
        return "—"
    fmt = {
        "int": lambda v: f"{int(round(v))}",
        "pct": lambda v: f"{100 * v:.2f}",
        "hours": lambda v: f"{v:.3g}",
        "epochs": lambda v: f"{v:.1f}",
        "speedup": lambda v: f"{v:.2f}×",
        "count": lambda v: f"{v:.1f}" if v != round(v) else f"{int(v)}",
    }[kind]
    text = _no_negative_zero(fmt(float(mean)))
    if std is not None and not pd.isna(std):
        text += f" ± {fmt(float(std)).rstrip('×')}"
    return text


def _no_negative_zero(text: str) -> str:
    return text[1:] if text.startswith("-") and not any(c in "123456789" for c in text.split("e")[0]) else text


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "×": r"$\times$", "—": "--",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
