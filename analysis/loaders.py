"""Ray Tune experiment directories -> one tidy pandas DataFrame.

:func:`load_results` reads the per-trial logs that Ray Tune writes
(``result.json``, one JSON object per reported result; ``progress.csv`` when
there is no ``result.json``) directly from disk: it needs no running Ray and
no pickles, and it reads experiments that are still running, were killed
half-way, or were resumed.

One row per reported result.  Columns, in this order:

====================  ==========================================================
``method``            ``fds``, ``random``, ``hyperband``, ... (the result's
                      ``method``; see ``method=`` to relabel)
``experiment``        the experiment's name (its directory name; the path
                      relative to the common parent when two names clash)
``run``               ``"<experiment>/seed=<seed>"``: one search or one FDS run,
                      the unit that curves and final choices are computed for
``trial``             Ray's ``trial_id``
``seed``              the seed the trial reported in its results, else its
                      config's ``seed``, else missing (nullable Int64)
``preset``            the FDS preset the trial reported (or its config names),
                      else None
``iteration``         Ray's ``training_iteration`` (1-based)
``timestamp``         wall clock of the result (Unix seconds, as Ray logs it)
``compute_s``         seconds of training work of this trial so far
``epochs_total``      training epochs of this trial so far
``run_compute_s``     seconds of training work of the whole run so far
``run_epochs``        training epochs of the whole run so far
``val_acc`` ...       ``val_acc``, ``val_loss``, ``test_acc``, ``diverged``,
                      ``retrain_test_acc`` (NaN except on FDS's last result),
                      ``done``, ``time_total_s``
(other scalars)       every other scalar the trainable reported
                      (``outer_step``, ``converged``, ... for FDS)
(dict columns)        ``schedule``; for FDS ``schedule_used``, ``hypergrads``,
                      ``step_sizes`` and, on its last result, ``retrain_schedule`` (the
                      schedule retrained); for greedy methods ``trajectory``:
                      kind -> list, as reported
``lr_0`` ...          the ``schedule`` expanded: ``<kind>_<i>`` is value ``i``
                      of kind ``kind`` (for FDS: the schedule *after* that
                      outer step's update, i.e. the one it would retrain;
                      ``schedule_used`` produced the row's metrics)
====================  ==========================================================

Compute axis of a run.  ``run_compute_s`` at a result is the sum, over every
trial of the run, of that trial's ``compute_s`` at its latest result reported
no later than this one; results are ordered by wall clock (``timestamp``, then
trial and iteration).  It is the device time the whole search had spent when
it reported this result, counting trials that ran in parallel one after the
other.  ``run_epochs`` is the same sum of ``epochs_total``.

Resumed and half-finished experiments.  A resumed or restarted trial appends
to the same ``result.json``; when a trial reports an iteration it has reported
before, its earlier results from that iteration on are superseded (dropped),
so each ``(trial, iteration)`` appears once, holding the last report.  A last
line that was cut off mid-write is skipped.  A trial directory reached twice
(through two of the given paths) is read once.
"""
from __future__ import annotations

import ast
import csv
import io
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fds_tune.validation import check, is_int

__all__ = [
    "load_results", "read_results_csv", "long_form", "find_trial_dirs", "ID_COLUMNS", "COMPUTE_COLUMNS", "METRIC_COLUMNS",
    "DICT_COLUMNS", "RUN_SECONDS", "RUN_EPOCHS",
]

RUN_SECONDS = "run_compute_s"
RUN_EPOCHS = "run_epochs"
ID_COLUMNS = ("method", "experiment", "run", "trial", "seed", "preset", "iteration", "timestamp")
COMPUTE_COLUMNS = ("compute_s", "epochs_total", RUN_SECONDS, RUN_EPOCHS)
METRIC_COLUMNS = ("val_acc", "val_loss", "test_acc", "diverged", "retrain_test_acc", "done", "time_total_s")
DICT_COLUMNS = ("schedule", "schedule_used", "retrain_schedule", "hypergrads", "step_sizes", "trajectory")  # kind -> list, kept as reported

_CORE = {*ID_COLUMNS, *COMPUTE_COLUMNS, *METRIC_COLUMNS}
_RESULT_FILE, _PROGRESS_FILE = "result.json", "progress.csv"
# Ray bookkeeping that says nothing about the method (or is renamed/parsed above)
_DROP = {
    "config", "trial_id", "training_iteration", "date", "pid", "hostname", "node_ip", "time_this_iter_s",
    "time_since_restore", "iterations_since_restore", "timesteps_total", "timesteps_since_restore",
    "episodes_total", "checkpoint_dir_name", "should_checkpoint", "experiment_tag", "warmup_time",
}


def load_results(paths: str | os.PathLike | Iterable[str | os.PathLike], method: str | None = None) -> pd.DataFrame:
    """Load Ray Tune experiments into one tidy frame (columns: see the module docstring).

    ``paths``: one path or several; each may be a results root holding several
    experiments, one experiment directory, or one trial directory.  Several
    methods and seeds load into the same frame.  ``method``: label every row
    with this name instead of the reported ``method`` (e.g. to tell two FDS
    variants apart); rows that report no method get their experiment's name.

    Raises ``FileNotFoundError`` for a path that does not exist and
    ``ValueError`` when no trial results are found under any path.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    check("paths", paths, bool(paths), "at least one results, experiment or trial directory")
    trial_dirs = list(dict.fromkeys(d for p in paths for d in find_trial_dirs(p)))  # each trial once
    names = _experiment_names(sorted({d.parent for d in trial_dirs}))
    rows = [row for d in trial_dirs for row in _trial_rows(d, names[d.parent], method)]
    check("paths", [str(p) for p in paths], bool(rows), f"directories holding trial results ({_RESULT_FILE} or {_PROGRESS_FILE} with results)")
    raw = pd.DataFrame.from_records(rows)
    for col in _int_keys(rows) - _CORE:  # ints that only some rows report would otherwise become floats
        raw[col] = pd.array([r.get(col) for r in rows], dtype="Int64")
    return _tidy(raw)


def read_results_csv(path: str | os.PathLike) -> pd.DataFrame:
    """The frame of :func:`load_results` read back from the ``results.csv`` that ``fds-tune compare``
    writes (``df.to_csv``), for a comparison whose Ray directories are gone.

    ``pandas.read_csv``, then: the dict columns (``schedule``, ``hypergrads``, ...; the CSV holds
    their Python text, ``nan`` and ``inf`` included) parsed back into dicts, so that the plots see
    what they see from the Ray directories; ``seed`` as nullable ints.  Every other column as
    ``pandas.read_csv`` reads it.  Raises ``FileNotFoundError`` for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: got {str(path)!r}; must be an existing results.csv (from 'fds-tune compare')")
    df = pd.read_csv(path)
    for col in df.columns:
        if not pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            parsed = _dicts(df[col])
            if parsed is not None:
                df[col] = parsed
    if "seed" in df.columns:
        df["seed"] = pd.array(df["seed"], dtype="Int64")
    return df

def find_trial_dirs(path: str | os.PathLike) -> list[Path]:
    """Trial directories (holding ``result.json`` or ``progress.csv``) at or under ``path``, resolved and sorted."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"paths: got {str(path)!r}; must be an existing results, experiment or trial directory")
    found = []
    for root, dirs, files in os.walk(path):
        if _RESULT_FILE in files or _PROGRESS_FILE in files:
            found.append(Path(root).resolve())
            dirs.clear()  # a trial directory holds checkpoints, not trials
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return sorted(found)


def long_form(df: pd.DataFrame, column: str = "schedule") -> pd.DataFrame:
    """One row per value of a dict column (``schedule``, ``hypergrads``, ...); a kind given per
    parameter group shows as one kind ``"<kind>/<group>"`` per group.

    Columns: the id and compute columns of ``df``, then ``kind``, ``index``
    (position in the kind's list) and ``value``.  Rows whose ``column`` is
    missing are skipped; a frame without ``column`` gives an empty result.
    """
    keep = [c for c in (*ID_COLUMNS, *COMPUTE_COLUMNS, "outer_step") if c in df.columns]
    out = []
    if column in df.columns:
        for rec, d in zip(df[keep].to_dict("records"), df[column]):
            if isinstance(d, Mapping):
                for kind, values in _rows_of(d):
                    for i, v in enumerate(values):
                        out.append({**rec, "kind": kind, "index": i, "value": _float(v)})
    return pd.DataFrame(out, columns=[*keep, "kind", "index", "value"])


# ---- reading one trial ------------------------------------------------------------------


def _trial_rows(trial_dir: Path, experiment: str, method: str | None) -> list[dict[str, Any]]:
    results = _read_result_json(trial_dir / _RESULT_FILE) if (trial_dir / _RESULT_FILE).exists() else _read_progress_csv(trial_dir / _PROGRESS_FILE)
    params = _read_params(trial_dir)
    lineage: list[dict[str, Any]] = []
    for r in results:
        it = r.get("training_iteration")
        if it is None:
            continue
        if lineage and it <= lineage[-1]["training_iteration"]:  # re-reported: supersedes what followed it
            lineage = [x for x in lineage if x["training_iteration"] < it]
        lineage.append(r)
    if not lineage:
        return []
    config = lineage[-1].get("config") if isinstance(lineage[-1].get("config"), Mapping) else params
    fixed = {"experiment": experiment, "seed": _reported("seed", lineage, config), "preset": _reported("preset", lineage, config)}
    rows = []
    for r in lineage:
        row = {k: v for k, v in r.items() if k not in _DROP}
        row.update(fixed)
        row["method"] = method or r.get("method") or config.get("method") or experiment
        row["trial"] = str(r.get("trial_id") or trial_dir.name)
        row["iteration"] = int(r["training_iteration"])
        rows.append(row)
    return rows


def _read_result_json(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    out = []
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if n != len(lines) - 1:  # a cut-off last line is an interrupted write; anything else is worth a word
                warnings.warn(f"{path}: line {n + 1} is not valid JSON; skipped", stacklevel=3)
    return out


def _read_progress_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of ``progress.csv``, with Ray's flattened ``a/b`` columns nested back into dicts."""
    text = path.read_text()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a cut-off last line is an interrupted write
    out = []
    for flat in csv.DictReader(io.StringIO(text, newline="")):
        row: dict[str, Any] = {}
        for key, text in flat.items():
            if key is None or text is None:
                continue
            *parents, leaf = key.split("/")
            node = row
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = _parse_cell(text)
        out.append(row)
    return out


def _parse_cell(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    if "_" in text:  # int()/float() accept "62776_00000" (digit grouping): that is a trial id, not a number
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    if text[:1] in "[{(":
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            pass
    return text


def _dicts(column: pd.Series) -> pd.Series | None:
    """A column of dicts written as text, parsed back (None where missing); None when some value is not such a dict."""
    values = []
    for v in column:
        if _missing_value(v):
            values.append(None)
            continue
        if not isinstance(v, str) or not v.startswith("{"):
            return None
        try:
            parsed = _literal(v)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
        if not isinstance(parsed, dict):
            return None
        values.append(parsed)
    return pd.Series(values, index=column.index, dtype=object) if any(v is not None for v in values) else None


class _PlainLiterals(ast.NodeTransformer):
    """``nan``/``inf`` (Python's text of non-finite floats) as float constants; ``np.float64(x)`` (NumPy's) as ``x``."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(ast.Constant(float(node.id)), node) if node.id in ("nan", "inf") else node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in ("np", "numpy") and len(node.args) == 1:
            return self.visit(node.args[0])
        return self.generic_visit(node)


def _literal(text: str) -> Any:
    return ast.literal_eval(_PlainLiterals().visit(ast.parse(text, mode="eval")))


def _missing_value(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA

def _read_params(trial_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((trial_dir / "params.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _reported(key: str, results: list[dict[str, Any]], config: Mapping[str, Any]) -> Any:
    """The trial's ``key`` (``seed``, ``preset``): as its results report it (the last that does), else as its config gives it."""
    reported = [r[key] for r in results if r.get(key) is not None]
    return reported[-1] if reported else config.get(key)


def _experiment_names(experiment_dirs: list[Path]) -> dict[Path, str]:
    """Directory name of each experiment; the path relative to their common parent where names clash."""
    names = {d: d.name for d in experiment_dirs}
    if len(set(names.values())) < len(names):
        common = Path(os.path.commonpath([str(d) for d in experiment_dirs]))
        names = {d: (d.relative_to(common).as_posix() if d != common else d.name) for d in experiment_dirs}
    return names


# ---- the tidy frame ------------------------------------------------------------------------


def _tidy(raw: pd.DataFrame) -> pd.DataFrame:
    df = raw.copy()
    for col in ("val_acc", "val_loss", "test_acc", "retrain_test_acc", "compute_s", "epochs_total", "time_total_s", "timestamp"):
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else np.nan
    if df["compute_s"].isna().all():  # a trainable outside the result contract: fall back on Ray's wall clock
        df["compute_s"] = df["time_total_s"]
    for col in ("diverged", "done"):
        df[col] = df[col].map(lambda v: bool(v) if isinstance(v, (bool, np.bool_, int, float)) and not _isnan(v) else False) if col in df.columns else False
    df["seed"] = pd.array(df["seed"], dtype="Int64")
    df["preset"] = pd.Series([p if isinstance(p, str) else None for p in df["preset"]], index=df.index, dtype=object)  # None, not NaN
    for col in df.columns:
        if col not in _CORE and df[col].dtype == object:
            df[col] = _nullable(df[col])
    df["run"] = [f"{e}/seed={'?' if pd.isna(s) else int(s)}" for e, s in zip(df["experiment"], df["seed"])]
    df = df.sort_values(["run", "timestamp", "trial", "iteration"], kind="stable", na_position="first").reset_index(drop=True)
    df[RUN_SECONDS] = _cumulative_over_trials(df, "compute_s")
    df[RUN_EPOCHS] = _cumulative_over_trials(df, "epochs_total")
    df = _expand_schedule(df)
    first = [*ID_COLUMNS, *COMPUTE_COLUMNS, *METRIC_COLUMNS]
    dicts = [c for c in DICT_COLUMNS if c in df.columns] + [
        c for c in df.columns if c not in first and c not in DICT_COLUMNS and _is_dict_column(df[c])
    ]
    expanded = df.attrs.pop("schedule_columns", [])
    scalars = [c for c in df.columns if c not in first and c not in dicts and c not in expanded]
    return df[[*first, *scalars, *dicts, *expanded]]


def _cumulative_over_trials(df: pd.DataFrame, column: str) -> np.ndarray:
    """Per run, in row order: the sum over trials of each trial's latest value of ``column``."""
    latest = df.groupby(["run", "trial"], sort=False)[column].transform(lambda s: s.ffill().fillna(0.0))
    increments = (latest - latest.groupby([df["run"], df["trial"]], sort=False).shift(fill_value=0.0)).clip(lower=0.0)
    return increments.groupby(df["run"], sort=False).cumsum().to_numpy(dtype=float)


def _expand_schedule(df: pd.DataFrame) -> pd.DataFrame:
    if "schedule" not in df.columns:
        return df
    wide = [
        {f"{kind}_{i}": _float(v) for kind, values in _rows_of(d) for i, v in enumerate(values)}
        if isinstance(d, Mapping) else {}
        for d in df["schedule"]
    ]
    expanded = pd.DataFrame(wide, index=df.index)
    expanded = expanded[[c for c in expanded.columns if c not in df.columns]]
    out = pd.concat([df, expanded], axis=1)
    out.attrs["schedule_columns"] = list(expanded.columns)
    return out


def _int_keys(rows: list[dict[str, Any]]) -> set[str]:
    kinds: dict[str, bool] = {}
    for r in rows:
        for k, v in r.items():
            if v is not None:
                kinds[k] = kinds.get(k, True) and is_int(v)
    return {k for k, is_int in kinds.items() if is_int}


def _nullable(s: pd.Series) -> pd.Series:
    """Bools with gaps (a column that only some methods report) as the nullable ``boolean`` dtype."""
    present = s.dropna()
    if len(present) and present.map(lambda v: isinstance(v, (bool, np.bool_))).all():
        return s.astype("boolean")
    return s


def _is_dict_column(s: pd.Series) -> bool:
    return s.map(lambda v: isinstance(v, Mapping)).any()


def _rows_of(d: Mapping) -> list[tuple[str, list]]:
    """``(kind, values)`` per kind; a kind given per parameter group (a list of rows) gives one
    ``("kind/g", row)`` per group ``g``."""
    out = []
    for kind, values in d.items():
        values = _as_list(values)
        if values and all(isinstance(v, (list, tuple, np.ndarray)) for v in values):
            out += [(f"{kind}/{g}", list(row)) for g, row in enumerate(values)]
        else:
            out.append((kind, values))
    return out


def _as_list(values: Any) -> list:
    return list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values]


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)
