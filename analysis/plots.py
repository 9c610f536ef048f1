"""Figures of the comparison, saved as PNG; each function returns the path it wrote.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never
through ``pyplot``: no global backend switch, no open-figure state, and they
work headless.  A figure with nothing to show (e.g. no greedy method in the
results) is still written, with a note saying what is missing.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, NullLocator

from fds_tune.results import GREEDY_METHODS, POPULATION_METHODS

from .curves import WITHIN, aggregate_curves, anytime_curves, best_final_accuracy, method_order, regret
from .loaders import RUN_EPOCHS, RUN_SECONDS, long_form

__all__ = [
    "plot_regret", "plot_schedules", "learned_schedules", "plot_hypergradients", "plot_per_step_hypergradients",
    "plot_greedy_trajectories", "plot_horizon",
]

_AXIS_LABELS = {RUN_SECONDS: "compute (device seconds, summed over trials)", RUN_EPOCHS: "compute (training epochs, summed over trials)"}


def plot_regret(df: pd.DataFrame, path: str | os.PathLike, x: str = RUN_SECONDS) -> Path:
    """Regret of the incumbent's test accuracy (chosen by validation) against compute, log-scaled.

    One line per method: the regret of the mean over seeds of the runs' anytime
    curves; its band spans the seeds' min to max (each run's own regret), so a
    single seed has no band.  Dotted lines mark the table's common levels (best
    final accuracy minus 1 and 0.5 point).  See :mod:`analysis.curves`.
    """
    agg = aggregate_curves(anytime_curves(df), x=x)
    best = best_final_accuracy(agg)
    curves = regret(agg, best)
    fig, ax = _figure(1)
    ax = ax[0]
    for method in method_order(curves["method"].unique()):
        c = curves[curves["method"] == method]
        xs, r = c[x].to_numpy(float), 100 * c["regret"].to_numpy(float)
        n = int(c["n"].iloc[0])
        (line,) = ax.step(xs, r, where="post", label=_runs_label(method, n))
        if n > 1:  # regret is best - accuracy: the best seed is the band's bottom
            low, high = 100 * (best - c["max"].to_numpy(float)), 100 * (best - c["min"].to_numpy(float))
            ax.fill_between(xs, low, high, step="post", alpha=0.2, color=line.get_color(), linewidth=0)
    for margin, style in zip(WITHIN, (":", "-.")):
        ax.axhline(100 * margin, color="0.4", linewidth=0.8, linestyle=style, label=f"common level: best − {100 * margin:g} pt")
    ax.set_xscale("log")
    ax.set_xlabel(_AXIS_LABELS[x])
    ax.set_ylabel("regret (test accuracy points below the best method)")
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.legend(fontsize="small")
    ax.set_title("Regret against compute (mean over seeds; band: min–max)")
    return _save(fig, path)


def plot_schedules(df: pd.DataFrame, path: str | os.PathLike, method: str = "fds", beside: Iterable[str] = POPULATION_METHODS) -> Path:
    """The schedule ``method`` learned, across outer steps: one panel per kind, one line per
    shared value and run; step 0 is the initial schedule (``schedule_used`` of step 1).

    Where the results hold a method of ``beside`` (PBT, PB2), a second row shows the learned
    schedules over training (:func:`learned_schedules`): ``method``'s and theirs, one line per
    method and run, against the fraction of the training run.
    """
    rows = _rows(df, [method])
    long = long_form(rows, "schedule").assign(step=_outer_step)
    if "schedule_used" in rows.columns and len(rows):
        first = rows[rows["iteration"] == rows.groupby("run")["iteration"].transform("min")]
        initial = long_form(first, "schedule_used").assign(step=lambda d: _outer_step(d) - 1)
        long = pd.concat([initial, long], ignore_index=True)
    title = f"Schedule learned by {method}"
    if not len(_rows(df, list(beside))):
        return _plot_kinds(long, path, "step", "outer step", title, "value")
    learned = learned_schedules(df, [method, *beside])
    kinds = list(dict.fromkeys([*long["kind"], *learned["kind"]]))
    fig, axes = _figure(len(kinds), rows=2)
    _draw_kinds(axes[: len(kinds)], kinds, long, "step", "outer step", "value")
    _draw_kinds(axes[len(kinds):], kinds, learned, "fraction", "fraction of the training run", "value", color_by="method", steps=True)
    fig.suptitle(f"{title} (top); learned schedules over training: {', '.join(method_order(learned['method'].unique()))} (bottom)")
    return _save(fig, path)


def learned_schedules(df: pd.DataFrame, methods: Iterable[str]) -> pd.DataFrame:
    """Each run's learned schedule as it is retrained, in long form (``method, run, trial, kind, index, value``)
    with ``fraction``: value ``i`` of ``n`` covers the fraction ``[i/n, (i+1)/n)`` of the run (its last
    value is repeated at 1, for a step plot; ``index`` is 0: one line per run and kind).

    FDS: the ``retrain_schedule`` of its last result (else its last ``schedule``); any other method:
    the ``schedule`` of its hand-over (the result with ``handover`` true), e.g. PBT's followed schedule.
    """
    rows = _rows(df, list(methods))
    handover = rows["handover"].map(_is_true).astype(bool) if "handover" in rows.columns else pd.Series(False, index=rows.index)
    retrained = rows["retrain_schedule"].map(lambda v: isinstance(v, Mapping)) if "retrain_schedule" in rows.columns else handover & False
    chosen = rows[handover | retrained]
    chosen = chosen.groupby("run", sort=False).tail(1)
    frames = []
    for column, part in (("retrain_schedule", chosen[retrained.loc[chosen.index]]), ("schedule", chosen[~retrained.loc[chosen.index]])):
        if len(part):
            frames.append(long_form(part, column))
    long = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["method", "run", "trial", "kind", "index", "value"])
    if not len(long):
        return long.assign(fraction=pd.Series(dtype=float))
    n = long.groupby(["run", "trial", "kind"])["index"].transform("size")
    long = long.assign(fraction=long["index"].astype(float) / n)
    ends = long[long["index"] == n - 1].assign(fraction=1.0)
    return pd.concat([long, ends], ignore_index=True).assign(index=0)


def plot_hypergradients(df: pd.DataFrame, path: str | os.PathLike, method: str = "fds") -> Path:
    """The hypergradients ``method`` computed at each outer step: one panel per kind, one line per shared value and run."""
    long = long_form(_rows(df, [method]), "hypergrads").assign(step=_outer_step)
    return _plot_kinds(long, path, "step", "outer step", f"Hypergradients of {method}", "d val. loss / d value")


def plot_per_step_hypergradients(df: pd.DataFrame, path: str | os.PathLike, method: str = "fds") -> Path:
    """Where in training each kind matters: the hypergradient of each inner step's value (reverse
    mode's ``per_step_hypergrads``, means over bins of ``per_step_bin`` steps) against the inner
    step, one panel per kind, one line per outer step (darker: later), of the method's first run."""
    rows = _rows(df, [method])
    if "per_step_hypergrads" in rows.columns:
        rows = rows[rows["per_step_hypergrads"].map(lambda v: isinstance(v, Mapping))]
    else:
        rows = rows.iloc[:0]
    if len(rows):
        rows = rows[rows["run"] == rows["run"].iloc[0]]
    long = long_form(rows, "per_step_hypergrads")
    kinds = list(dict.fromkeys(long["kind"])) if len(long) else []
    fig, axes = _figure(max(len(kinds), 1))
    title = f"Per-step hypergradients of {method}"
    if not kinds:
        axes[0].text(0.5, 0.5, "no data: per-step hypergradients come from engine_mode='reverse'", ha="center", va="center",
                     transform=axes[0].transAxes, fontsize="small")
        axes[0].set_axis_off()
        return _save(fig, path)
    width = rows.set_index("outer_step")["per_step_bin"].astype(float)
    long["step"] = (long["index"] + 0.5) * long["outer_step"].map(width)
    steps = sorted(long["outer_step"].unique())
    cmap = matplotlib.colormaps["viridis_r"]
    for ax, kind in zip(axes, kinds):
        k = long[long["kind"] == kind]
        for n, (outer, line) in enumerate(k.groupby("outer_step", sort=True)):
            ax.plot(line["step"], line["value"], color=cmap(n / max(len(steps) - 1, 1)), lw=1, label=f"outer step {int(outer)}")
        ax.axhline(0.0, color="0.6", lw=0.5)
        ax.set_title(kind)
        ax.set_xlabel("inner step")
        ax.set_ylabel("d val. loss / d value at that step")
    axes[-1].legend(fontsize="x-small")
    fig.suptitle(f"{title} (run {rows['run'].iloc[0]})")
    return _save(fig, path)


def plot_greedy_trajectories(df: pd.DataFrame, path: str | os.PathLike, methods: Iterable[str] = GREEDY_METHODS) -> Path:
    """The hyperparameter trajectories of the greedy online methods, one panel per kind, one colour per method.

    From each trial's ``trajectory`` (kind -> mean value used in each epoch) at
    its latest result, against the epoch; for rows without one, each reported
    ``schedule`` value against the epochs trained so far.
    """
    rows = _rows(df, list(methods))
    has_traj = np.array([isinstance(v, Mapping) for v in rows.get("trajectory", pd.Series(None, index=rows.index))], dtype=bool)
    traj = long_form(rows.loc[has_traj].groupby(["run", "trial"], sort=False).tail(1), "trajectory")
    traj["epoch"] = traj["index"].astype(float) + 1
    traj["index"] = 0
    sched = long_form(rows.loc[~has_traj], "schedule")
    sched["epoch"] = sched["epochs_total" if "epochs_total" in sched.columns else "iteration"].astype(float)
    long = pd.concat([traj, sched], ignore_index=True) if len(sched) else traj
    return _plot_kinds(long, path, "epoch", "epoch", "Greedy methods' hyperparameters", "value", color_by="method")


_BOUND_MARKERS = {"": "o", ">": "^", "<": "v"}  # exact, lower bound, upper bound


def plot_horizon(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """FDS's speedup at matched accuracy against the horizon, both axes log-scaled: one line per
    method of a :func:`~analysis.horizon_frame`, with error bars (± std over seed pairs; on the
    log axis the lower bar stops short of 0), lower bounds as upward triangles, upper bounds as
    downward ones, and a line at 1 (no speedup).  Horizons where neither run of any seed pair
    reaches the level have no point."""
    missing = [c for c in ("steps", "method", "within", "speedup", "speedup_std", "speedup_bound") if c not in frame.columns]
    if missing:
        raise ValueError(f"frame columns: got {list(frame.columns)}; must be the columns of horizon_frame (missing: {missing})")
    fig, (ax,) = _figure(1)
    fig.set_size_inches(9.5, 4.5)  # room for the legend beside the axes
    drawn = False
    for n, method in enumerate(method_order(frame["method"].unique())):
        rows = frame[frame["method"] == method].sort_values("steps", kind="stable")
        xs, ys = rows["steps"].to_numpy(float), rows["speedup"].to_numpy(float)
        std = np.nan_to_num(rows["speedup_std"].to_numpy(float), nan=0.0)
        bounds = rows["speedup_bound"].map(lambda b: b if isinstance(b, str) else "").to_numpy()
        ok = np.isfinite(ys) & (ys > 0)
        if not ok.any():
            continue
        drawn = True
        color = f"C{n % 10}"
        ax.plot(xs[ok], ys[ok], "-", color=color, linewidth=1.2, label=method)
        for bound, marker in _BOUND_MARKERS.items():
            pick = ok & (bounds == bound)
            if pick.any():
                low = np.minimum(std[pick], 0.9 * ys[pick])  # a bar through 0 has no place on a log axis
                ax.errorbar(xs[pick], ys[pick], yerr=[low, std[pick]], fmt=marker, color=color, markersize=7, capsize=3, linestyle="none")
    ax.axhline(1.0, color="0.4", linewidth=0.8, linestyle="--")
    if not drawn:
        ax.text(0.5, 0.5, "no data: no method's speedup reached the level at any horizon", ha="center", va="center", transform=ax.transAxes)
    ax.set_xscale("log")
    ax.set_yscale("log")
    steps = sorted(frame["steps"].unique())
    ax.set_xticks([float(s) for s in steps], labels=[f"{int(s):,}" for s in steps])
    ax.xaxis.set_minor_locator(NullLocator())
    times = FuncFormatter(lambda v, _: f"{v:g}×")
    low, high = ax.get_ylim()
    ax.yaxis.set_major_formatter(times)
    ax.yaxis.set_minor_formatter(times if np.log10(high / low) < 1.5 else NullFormatter())  # label 2×, 3×, ... on a short axis
    ax.set_xlabel("horizon (inner steps per training run)")
    ax.set_ylabel("FDS speedup at matched accuracy (×, device-hours)")
    handles, _ = ax.get_legend_handles_labels()
    keys = [
        Line2D([], [], color="0.3", marker="o", linestyle="none", label="exact (mean ± std over seed pairs)"),
        Line2D([], [], color="0.3", marker="^", linestyle="none", label="> lower bound (the method misses the level in some seed)"),
        Line2D([], [], color="0.3", marker="v", linestyle="none", label="< upper bound (FDS misses the level in some seed)"),
        Line2D([], [], color="0.4", linestyle="--", label="1× (no speedup)"),
    ]
    ax.legend(handles=[*handles, *keys], fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    within = ", ".join(f"{w:g}" for w in sorted(frame["within"].unique())) if len(frame) else "1"
    ax.set_title(f"FDS speedup against the horizon (level = best − {within} pt)")
    return _save(fig, path)

# ---- helpers ------------------------------------------------------------------------------


def _is_true(v) -> bool:
    return isinstance(v, (bool, np.bool_)) and bool(v)


def _outer_step(long: pd.DataFrame) -> pd.Series:
    """FDS's ``outer_step``; Ray's ``training_iteration`` for a method without one."""
    return long["outer_step" if "outer_step" in long.columns else "iteration"].astype(float)


def _runs_label(method: str, n: int) -> str:
    return f"{method} ({n} run{'' if n == 1 else 's'})"


def _rows(df: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    return df[df["method"].isin(methods)] if "method" in df.columns else df.iloc[:0]


def _plot_kinds(long: pd.DataFrame, path, x: str, xlabel: str, title: str, ylabel: str, color_by: str = "index") -> Path:
    """One panel per kind; one line per (method, run, trial, index) of a :func:`long_form` frame,
    coloured by ``color_by`` (``index``: the shared value; ``method``), styled by run."""
    kinds = list(dict.fromkeys(long["kind"])) if len(long) else []
    fig, axes = _figure(max(len(kinds), 1))
    if not kinds:
        axes[0].text(0.5, 0.5, f"no data: {title.lower()}", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_axis_off()
    _draw_kinds(axes, kinds, long, x, xlabel, ylabel, color_by)
    runs = long["run"].nunique() if len(long) else 0
    fig.suptitle(title + (f" ({runs} runs, one line style per run)" if runs > 1 else ""))
    return _save(fig, path)


def _draw_kinds(axes, kinds, long: pd.DataFrame, x: str, xlabel: str, ylabel: str, color_by: str = "index", steps: bool = False) -> None:
    for ax, kind in zip(axes, kinds):
        k = long[long["kind"] == kind].sort_values(x, kind="stable")
        colors = {c: f"C{n % 10}" for n, c in enumerate(sorted(k[color_by].unique()))}
        styles = {r: s for r, s in zip(k["run"].unique(), ["-", "--", ":", "-."] * 100)}
        labelled = set()
        for (method, run, _, index), line in k.groupby(["method", "run", "trial", "index"], sort=False):
            key = index if color_by == "index" else method
            label = (f"{kind}[{index}]" if color_by == "index" else method) if key not in labelled else None
            labelled.add(key)
            ax.plot(line[x].astype(float), line["value"], styles[run], color=colors[key], marker="" if steps else ".", label=label,
                    drawstyle="steps-post" if steps else "default")
        ax.set_title(kind)
        if not steps:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if len(colors) > 1 or color_by == "method":
            ax.legend(fontsize="x-small")


def _figure(panels: int, rows: int = 1):
    fig = Figure(figsize=(4.5 * panels + 1.5, 4.0 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(rows, panels, i + 1) for i in range(rows * panels)]


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    return path
