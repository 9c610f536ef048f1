"""The outer-rule comparison's table (``experiments/outer_rules.py``): pure functions of its run records.

A record is one FDS run: ``problem``, ``rule``, ``seed``, ``retrain_epochs``, ``last_test_acc``,
``last_failed`` and ``steps``, a list (one per outer step) of ``plain_epochs`` (the run's compute so
far in plain epochs), ``handover_test_acc`` and ``handover_failed`` (the retrained incumbent).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["WITHIN", "markdown", "rule_table", "runs_frame", "write_table"]

WITHIN = 0.01  # "within 1 point" of the best mean final accuracy


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """A row per run: finals, and outer steps / compute until its hand-over stays within ``WITHIN`` of the
    best mean final accuracy of its problem (NaN: never)."""
    rows = []
    for rec in records:
        s = pd.DataFrame(rec["steps"])
        rows.append({"problem": rec["problem"], "rule": rec["rule"], "seed": rec["seed"],
                     "final_test_acc": s["handover_test_acc"].iloc[-1], "final_collapsed": bool(s["handover_failed"].iloc[-1]),
                     "last_test_acc": rec["last_test_acc"], "last_collapsed": rec["last_failed"],
                     "outer_steps": len(s), "plain_epochs": s["plain_epochs"].iloc[-1] + rec["retrain_epochs"],
                     "_accs": s["handover_test_acc"].to_numpy(), "_compute": s["plain_epochs"].to_numpy() + rec["retrain_epochs"]})
    df = pd.DataFrame(rows)
    best = df.groupby(["problem", "rule"])["final_test_acc"].mean().groupby("problem").max()
    df["level"] = df["problem"].map(best) - WITHIN
    reach = [_stays_from(r["_accs"], r["level"]) for _, r in df.iterrows()]
    df["steps_to_reach"] = [np.nan if i is None else i + 1 for i in reach]
    df["compute_to_reach"] = [np.nan if i is None else r["_compute"][i] for i, (_, r) in zip(reach, df.iterrows())]
    return df.drop(columns=["_accs", "_compute"])


def _stays_from(accs: np.ndarray, level: float) -> int | None:
    """The first index from which every value is at or above ``level`` (None: the last one is below)."""
    below = np.flatnonzero(accs < level)
    first = 0 if len(below) == 0 else int(below[-1]) + 1
    return first if first < len(accs) else None


def rule_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per problem and rule: mean ± std over seeds (reach columns over the seeds that reach, with k/n)."""
    def ms(x, scale=1.0, fmt="{:.2f}"):
        x = x.dropna() * scale
        return "–" if x.empty else fmt.format(x.mean()) + ("" if len(x) < 2 else " ± " + fmt.format(x.std()))

    out = []
    for (problem, rule), g in df.groupby(["problem", "rule"], sort=False):
        reached = f" ({g['steps_to_reach'].notna().sum()}/{len(g)} reached)" if g["steps_to_reach"].isna().any() else ""
        out.append({"problem": problem, "rule": rule, "seeds": len(g),
                     "outer steps to within 1 pt": ms(g["steps_to_reach"], fmt="{:.1f}") + reached,
                     "plain epochs to within 1 pt": ms(g["compute_to_reach"], fmt="{:.1f}") + reached,
                     "final acc. incumbent (%)": ms(g["final_test_acc"], 100), "collapses incumbent": int(g["final_collapsed"].sum()),
                     "final acc. last update (%)": ms(g["last_test_acc"], 100), "collapses last": int(g["last_collapsed"].sum()),
                     "total plain epochs": ms(g["plain_epochs"], fmt="{:.1f}")})
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame) -> str:
    """A pipe table (pandas' own needs tabulate)."""
    lines = [list(table.columns), ["---"] * len(table.columns)] + [list(row) for row in table.itertuples(index=False)]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)


def write_table(rows: pd.DataFrame, table: pd.DataFrame, out, stem: str) -> None:
    """``<out>/<stem>.csv`` (the rows) and ``<out>/<stem>.md`` (the table as :func:`markdown`); prints the table."""
    rows.to_csv(out / f"{stem}.csv", index=False)
    (out / f"{stem}.md").write_text(markdown(table) + "\n")
    print(markdown(table))
