"""FDS's speedup at matched accuracy as the horizon grows.

The horizon study runs FDS and a few black-box searches at several horizons (inner steps per
training run), one comparison per horizon.  :func:`horizon_frame` reads each comparison's
results at its own level, *that horizon's* best mean final test accuracy (over FDS and the
methods, on the seeds used) minus ``within`` points, with the definitions of
:mod:`analysis.curves` (:func:`~analysis.common_levels`, :func:`~analysis.anytime_curves`,
:func:`~analysis.speedup_at_matched_accuracy`); :func:`horizon_to_markdown` prints it and
:func:`~analysis.plot_horizon` draws it.

    frame = horizon_frame({800: load_results("h800/ray"), 2000: pd.read_csv("wide/results.csv")}, seeds=[0, 1])
    print(horizon_to_markdown(frame))
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from fds_tune.validation import check, check_int, check_number

from .curves import NOT_REACHED, anytime_curves, common_levels, compute_to_reach, final_choice, speedup_at_matched_accuracy
from .tables import format_mean_std, format_speedup

__all__ = ["HORIZON_METHODS", "HORIZON_COLUMNS", "horizon_frame", "horizon_seeds", "horizon_to_markdown"]

REFERENCE = "fds"
HORIZON_METHODS: tuple[str, ...] = ("bohb", "hyperband", "random")
HORIZON_COLUMNS = [
    "steps", "method", "within", "level", "speedup", "speedup_std", "speedup_bound", "speedup_pairs", "speedup_seeds",
    "fds_hours_to", "fds_hours_to_std", "fds_reached", "fds_runs", "hours_to", "hours_to_std", "reached", "runs",
    "fds_test_acc", "fds_test_acc_std", "test_acc", "test_acc_std",
]


def horizon_frame(
    points: Mapping[int, pd.DataFrame], methods: Sequence[str] = HORIZON_METHODS, within: float = 1.0,
    seeds: Sequence[int] | None = None,
) -> pd.DataFrame:
    """One row per (horizon, method): FDS's speedup over the method at that horizon's level.

    ``points``: ``{inner steps: results}``, each a frame of :func:`~analysis.load_results` (or
    the ``results.csv`` written from one) holding FDS and every method of ``methods``.
    ``within``: the margin, in accuracy points (1.0 = one point).  ``seeds``: the seeds used at
    every horizon (default :func:`horizon_seeds`: those with a run of FDS and of every method at
    every horizon).  Each frame is restricted to FDS, ``methods`` and ``seeds`` before anything
    is computed.

    Columns (rows sorted by ``steps``, then in the order of ``methods``):

    * ``steps``, ``method``; ``within`` (points) and ``level`` (the horizon's best mean final
      ``test_acc`` minus ``within`` points, as :func:`~analysis.common_levels`);
    * ``speedup``, ``speedup_std``, ``speedup_bound`` (``""``, ``">"``, ``"<"``, ``"not reached"``),
      ``speedup_pairs``, ``speedup_seeds``: :func:`~analysis.speedup_at_matched_accuracy` of FDS
      over the method at ``level`` (on device seconds);
    * ``fds_hours_to`` / ``hours_to`` (with ``_std``): device-hours FDS / the method needed to
      reach ``level``, mean over its runs that reach it; ``fds_reached`` / ``reached`` how many
      do, out of ``fds_runs`` / ``runs``;
    * ``fds_test_acc`` / ``test_acc`` (with ``_std``): mean final test accuracy (the final choice's).

    Every horizon must hold a run of FDS and of every method in every seed used (a ``ValueError``
    names what is missing).

    ``frame.attrs`` keeps ``seeds`` (the seeds used) and ``within``.
    """
    check("points", points, isinstance(points, Mapping) and len(points) > 0, "a non-empty mapping {inner steps: results frame}")
    for steps in points:
        check_int("points", steps, minimum=1, rule="keyed by horizons, ints >= 1 (inner steps per training run)")
    methods = _methods(methods)
    check_number("within", within, low=0, rule="a finite number >= 0 (accuracy points: 1.0 = one point)")
    seeds = horizon_seeds(points, methods) if seeds is None else _seeds(seeds)
    rows = []
    for steps in sorted(points):
        df = _restricted(points[steps], steps, methods, seeds)
        finals = final_choice(df)
        (level,) = common_levels(finals, within / 100).values()
        curves = anytime_curves(df)
        reach = compute_to_reach(curves, level).groupby("method", sort=False)["compute"]
        hours, hours_std, reached = reach.mean() / 3600.0, reach.std(ddof=1) / 3600.0, reach.count()
        test = finals.groupby("method", sort=False)["test_acc"]
        acc, acc_std, runs = test.mean(), test.std(ddof=1), test.size()
        for m in methods:
            s = speedup_at_matched_accuracy(curves, m, reference=REFERENCE, level=level)
            rows.append({
                "steps": steps, "method": m, "within": float(within), "level": level,
                "speedup": s.speedup, "speedup_std": s.std, "speedup_bound": s.bound, "speedup_pairs": s.pairs, "speedup_seeds": s.seeds,
                "fds_hours_to": hours[REFERENCE], "fds_hours_to_std": hours_std[REFERENCE], "fds_reached": int(reached[REFERENCE]),
                "fds_runs": int(runs[REFERENCE]), "hours_to": hours[m], "hours_to_std": hours_std[m], "reached": int(reached[m]),
                "runs": int(runs[m]), "fds_test_acc": acc[REFERENCE], "fds_test_acc_std": acc_std[REFERENCE],
                "test_acc": acc[m], "test_acc_std": acc_std[m],
            })
    frame = pd.DataFrame(rows, columns=HORIZON_COLUMNS)
    frame.attrs.update(seeds=list(seeds), within=float(within))
    return frame


def horizon_seeds(points: Mapping[int, pd.DataFrame], methods: Sequence[str] = HORIZON_METHODS) -> list[int]:
    """The seeds with a run of FDS and of every method of ``methods`` at every horizon of ``points``, sorted."""
    methods = _methods(methods)
    common = None
    for steps in sorted(points):
        df = points[steps]
        _check_frame(df, steps)
        rows = df[df["seed"].notna()]
        by_method = [{int(s) for s in rows.loc[rows["method"] == m, "seed"]} for m in (REFERENCE, *methods)]
        here = set.intersection(*by_method)
        common = here if common is None else common & here
    found = sorted(common or [])
    check(
        "seeds", found, bool(found),
        f"at least one seed with runs of {REFERENCE} and every method of {list(methods)} at every horizon {sorted(points)}",
    )
    return found


def horizon_to_markdown(frame: pd.DataFrame) -> str:
    """A Markdown table of :func:`horizon_frame` output, one row per (horizon, method), then notes:
    the level, the seeds, and the markers that occur (as in :func:`~analysis.to_markdown`)."""
    missing = [c for c in HORIZON_COLUMNS if c not in frame.columns]
    check("frame columns", list(frame.columns), not missing, f"the columns of horizon_frame (missing: {missing})")
    header = [
        "Inner steps", "Method", "Level (%)", "FDS speedup", "FDS hours to level", "Hours to level", "FDS test acc. (%)", "Test acc. (%)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---:", ":---"] + ["---:"] * (len(header) - 2)) + "|"]
    for r in frame.to_dict("records"):
        cells = [
            f"{int(r['steps']):,}", str(r["method"]), format_mean_std(r["level"], None, "pct"),
            format_speedup(r["speedup"], r["speedup_std"], _text(r["speedup_bound"]), r["speedup_pairs"], r["speedup_seeds"]),
            _reach(r["fds_hours_to"], r["fds_hours_to_std"], r["fds_reached"], r["fds_runs"]),
            _reach(r["hours_to"], r["hours_to_std"], r["reached"], r["runs"]),
            format_mean_std(r["fds_test_acc"], r["fds_test_acc_std"], "pct"), format_mean_std(r["test_acc"], r["test_acc_std"], "pct"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    within = frame["within"].iloc[0] if len(frame) else frame.attrs.get("within", 1.0)
    level = (
        f"Level: each horizon's best mean final test accuracy (FDS and these methods) less {within:g} point"
        f"{'' if within == 1 else 's'}; speedup: FDS's at matched accuracy, mean ± std over seed pairs (device-hours)."
    )
    notes = [level]
    if frame.attrs.get("seeds"):
        notes.append(f"Seeds: {', '.join(str(s) for s in frame.attrs['seeds'])}.")
    bounds = set(frame["speedup_bound"].map(_text))
    if ">" in bounds:
        notes.append("> s×: the method never reaches the level (in some seeds); s is a lower bound, with its total compute.")
    if "<" in bounds:
        notes.append("< s×: FDS never reaches the level (in some seeds); s is an upper bound, with its total compute.")
    if (frame["speedup"].isna() & (frame["speedup_pairs"] == 0) & (frame["speedup_seeds"] > 0) & (frame["speedup_bound"].map(_text) == "")).any():
        notes.append("—: no seed pair gives a ratio (each method reaches the level in a seed where the other does not: bounds of both directions).")
    if ((frame["speedup_pairs"] > 0) & (frame["speedup_pairs"] < frame["speedup_seeds"])).any():
        notes.append("(k/n seeds): the speedup comes from k of the n seeds both methods ran.")
    reached, runs = frame[["reached", "fds_reached"]].to_numpy(), frame[["runs", "fds_runs"]].to_numpy()
    if ((reached > 0) & (reached < runs)).any():
        notes.append("(k/n reached): only k of the n seeds reach the level; mean ± std over those k.")
    return "\n".join([*lines, "", "Notes:", *(f"- {n}" for n in notes)]) + "\n"


# ---- helpers ------------------------------------------------------------------------------


def _methods(methods: Sequence[str]) -> tuple[str, ...]:
    values = (methods,) if isinstance(methods, str) else tuple(methods)
    ok = len(values) > 0 and all(isinstance(m, str) for m in values) and len(set(values)) == len(values) and REFERENCE not in values
    check("methods", methods, ok, f"distinct method names other than {REFERENCE!r} (at least one)")
    return values


def _seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    values = tuple(seeds) if isinstance(seeds, Sequence) and not isinstance(seeds, str) else None
    check("seeds", seeds, values is not None and len(values) > 0, "a non-empty sequence of seeds (ints >= 0)")
    for s in values:
        check_int("seeds", s, minimum=0, rule="a sequence of ints >= 0")
    check("seeds", seeds, len(set(values)) == len(values), "distinct seeds")
    return values


def _check_frame(df, steps: int) -> None:
    ok = isinstance(df, pd.DataFrame) and {"method", "seed"} <= set(df.columns)
    check(f"points[{steps}]", type(df).__name__, ok, "a results frame (load_results, or its results.csv) with 'method' and 'seed' columns")


def _restricted(df: pd.DataFrame, steps: int, methods: tuple[str, ...], seeds: Sequence[int]) -> pd.DataFrame:
    _check_frame(df, steps)
    rows = df[df["method"].isin((REFERENCE, *methods)) & df["seed"].isin(list(seeds))]
    have = {m: {int(s) for s in rows.loc[rows["method"] == m, "seed"]} for m in (REFERENCE, *methods)}
    missing = [f"{m} seed {s}" for m in have for s in seeds if s not in have[m]]
    check(
        f"points[{steps}]", {m: sorted(v) for m, v in have.items()}, not missing,
        f"results with a run of {REFERENCE} and of every method of {list(methods)} in every seed of {list(seeds)} (missing: {', '.join(missing)})",
    )
    return rows.reset_index(drop=True)


def _reach(hours: float, std: float, reached: int, runs: int) -> str:
    if reached == 0:
        return NOT_REACHED
    return format_mean_std(hours, std, "hours") + (f" ({int(reached)}/{int(runs)} reached)" if reached < runs else "")


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
