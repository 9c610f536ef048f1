"""analysis/: loaders, curves, tables, plots and the notebook, on results of real tiny Ray Tune runs.

The module fixture runs FDS (digits, two seeds in one experiment) and HyperBand
(one seed) for real; expected values are recomputed here from the raw
``result.json`` lines, independently of the loader.  Hand-made frames check
regret, speedup and aggregation against values worked out by hand.
"""
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from analysis import (
    RUN_EPOCHS, RUN_SECONDS, aggregate_curves, anytime_curves, best_final_accuracy, comparison_table, compute_to_reach,
    final_choice, format_table, load_results, long_form, plot_greedy_trajectories, plot_hypergradients, plot_regret,
    plot_schedules, regret, speedup_at_matched_accuracy, to_latex, to_markdown,
)
from analysis.loaders import COMPUTE_COLUMNS, ID_COLUMNS, METRIC_COLUMNS
from baselines import SpaceConfig, run_baseline
from baselines.greedy import HDTrainable
from fds_tune import FDSTrainable
from fds_tune.problem import ProblemConfig

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "analysis" / "notebooks" / "comparison.ipynb"
FDS_CONFIG = {"preset": "digits", "epochs": [1, 1], "retrain_epochs": 1}
SIZES = {"lr": 5, "momentum": 1, "weight_decay": 1}  # the digits preset's shared values

# Ray workers cannot import this test module: ship its classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class FailOnceFromScratch(FDSTrainable):
    """FDS whose seed-1 trial raises once at its second outer step; without checkpoints Ray restarts it from scratch."""

    def step(self):
        marker = Path(self.config["marker"])
        if self.fds.seed == 1 and self.learner.outer_step == 1 and not marker.exists():
            marker.write_text("failed once")
            raise RuntimeError("injected failure")
        return super().step()

    def _build(self, config):
        super()._build({k: v for k, v in config.items() if k != "marker"})


def _tune_run(trainable, config, storage, name, **kwargs):
    return tune.run(
        trainable, config=config, storage_path=str(storage), name=name, verbose=0, reuse_actors=True,
        callbacks=[JsonLoggerCallback(), CSVLoggerCallback()], **kwargs,
    )


@pytest.fixture(scope="module")
def results(ray_session, tmp_path_factory):
    """A results root with three real experiments: ``fds`` (seeds 0 and 1; the seed-1 trial failed after
    its first result and restarted from scratch, as a resumed experiment does), ``hyperband`` and ``hd`` (seed 0)."""
    root = tmp_path_factory.mktemp("results")
    config = {**FDS_CONFIG, "seed": tune.grid_search([0, 1]), "marker": str(root / "marker")}
    _tune_run(FailOnceFromScratch, config, root, "fds", max_failures=1)
    assert (root / "marker").exists()  # the failure did happen
    run_baseline(
        "hyperband", space=SpaceConfig(sizes=SIZES), problem=ProblemConfig(model="mlp"), max_epochs=2, num_samples=3,
        seed=0, storage_path=str(root), name="hyperband", resources_per_trial={"cpu": 2},  # one actor runs every trial
    )
    _tune_run(HDTrainable, {"preset": "digits", "epochs": 2}, root, "hd")  # no seed in the config: the default, 0
    return root


@pytest.fixture(scope="module")
def df(results):
    return load_results(results)


def raw_lines(experiment: Path) -> dict[str, list[dict]]:
    """trial_id -> the parsed lines of its result.json, as Ray wrote them."""
    out = {}
    for f in sorted(experiment.glob("*/result.json")):
        lines = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        out[lines[0]["trial_id"]] = lines
    return out


def raw_results(experiment: Path) -> dict[str, list[dict]]:
    """trial_id -> its results, the last report of each iteration (an iteration re-reported after a restart counts once)."""
    return {
        trial: sorted({r["training_iteration"]: r for r in lines}.values(), key=lambda r: r["training_iteration"])
        for trial, lines in raw_lines(experiment).items()
    }


# ---- loaders --------------------------------------------------------------------------------


def test_load_results_has_one_row_per_result_with_the_tidy_columns(results, df):
    raw = {name: lines for exp in ("fds", "hyperband", "hd") for name, lines in raw_results(results / exp).items()}
    assert len(df) == sum(len(lines) for lines in raw.values())
    assert list(df.columns[: len(ID_COLUMNS) + len(COMPUTE_COLUMNS) + len(METRIC_COLUMNS)]) == [
        *ID_COLUMNS, *COMPUTE_COLUMNS, *METRIC_COLUMNS
    ]
    assert not df.duplicated(["experiment", "trial", "iteration"]).any()
    assert set(df["method"]) == {"fds", "hyperband", "hd"}
    assert sorted(df.loc[df["method"] == "fds", "run"].unique()) == ["fds/seed=0", "fds/seed=1"]
    assert set(df.loc[df["method"] == "hyperband", "run"]) == {"hyperband/seed=0"}
    for trial, lines in raw.items():
        rows = df[df["trial"] == trial].sort_values("iteration")
        assert rows["iteration"].tolist() == [r["training_iteration"] for r in lines]
        assert rows["val_acc"].tolist() == [r["val_acc"] for r in lines]
        assert rows["compute_s"].tolist() == [r["compute_s"] for r in lines]
        assert rows["seed"].tolist() == [r["config"].get("seed", 0) for r in lines]
        for kind, values in lines[-1]["schedule"].items():  # the schedule, expanded
            assert [rows[f"{kind}_{i}"].iloc[-1] for i in range(len(values))] == values
        assert rows["schedule"].iloc[-1] == lines[-1]["schedule"]


def test_run_compute_sums_the_latest_compute_of_every_trial(results, df):
    raw = raw_results(results / "hyperband")
    hb = df[df["run"] == "hyperband/seed=0"]
    assert (np.diff(hb[RUN_SECONDS]) >= 0).all() and (np.diff(hb[RUN_EPOCHS]) >= 0).all()
    assert hb[RUN_SECONDS].iloc[-1] == pytest.approx(sum(lines[-1]["compute_s"] for lines in raw.values()))
    assert hb[RUN_EPOCHS].iloc[-1] == pytest.approx(sum(lines[-1]["epochs_total"] for lines in raw.values()))
    # ordered by wall clock, the run's compute never counts a trial's future
    for i in range(len(hb)):
        seen = hb.iloc[: i + 1].groupby("trial")["compute_s"].last().sum()
        assert hb[RUN_SECONDS].iloc[i] == pytest.approx(seen)
    assert hb["timestamp"].is_monotonic_increasing


def test_fds_rows_carry_hypergradients_and_the_retrained_accuracy(results, df):
    raw = raw_results(results / "fds")
    fds = df[df["method"] == "fds"]
    for trial, lines in raw.items():
        rows = fds[fds["trial"] == trial]
        assert rows["outer_step"].tolist() == [1, 2]
        assert rows["retrain_test_acc"].iloc[-1] == lines[-1]["retrain_test_acc"]
        assert rows["retrain_test_acc"].iloc[:-1].isna().all()
        assert rows["hypergrads"].tolist() == [r["hypergrads"] for r in lines]
    assert df.loc[df["method"] == "hyperband", "retrain_test_acc"].isna().all()  # missing for black-box: NaN


def test_long_form_has_one_row_per_value(df):
    fds = df[df["method"] == "fds"]
    long = long_form(fds, "hypergrads")
    assert len(long) == len(fds) * sum(SIZES.values())
    first = fds.iloc[0]
    got = long[(long["trial"] == first["trial"]) & (long["iteration"] == first["iteration"]) & (long["kind"] == "lr")]
    assert got.sort_values("index")["value"].tolist() == first["hypergrads"]["lr"]
    assert long_form(df, "no_such_column").empty  # degrades to an empty frame


def test_restarted_trial_loads_without_duplicates(results, df):
    (lines,) = [lines for lines in raw_lines(results / "fds").values() if lines[0]["config"]["seed"] == 1]
    assert [r["training_iteration"] for r in lines] == [1, 1, 2]  # Ray appended the re-run after the failure
    rows = df[df["run"] == "fds/seed=1"]
    assert rows["iteration"].tolist() == [1, 2]
    assert rows["compute_s"].tolist() == [lines[1]["compute_s"], lines[2]["compute_s"]]  # the last report wins
    assert rows[RUN_SECONDS].tolist() == [lines[1]["compute_s"], lines[2]["compute_s"]]  # the failed attempt is superseded


def test_half_written_and_rereported_results_load(results, tmp_path):
    exp = tmp_path / "fds"
    shutil.copytree(results / "fds", exp)
    f = sorted(exp.glob("*seed=0*/result.json"))[0]
    first, second = f.read_text().splitlines()[:2]
    f.write_text(first + "\n" + second[: len(second) // 2])  # killed while writing its second result
    g = sorted(exp.glob("*seed=1*/result.json"))[0]
    g.write_text(g.read_text() + g.read_text())  # a resumed trial that re-reported everything
    df = load_results(exp)
    assert df.groupby("run")["iteration"].apply(list).to_dict() == {"fds/seed=0": [1], "fds/seed=1": [1, 2]}


def test_progress_csv_is_read_when_result_json_is_missing(results, df, tmp_path):
    exp = tmp_path / "hyperband"
    shutil.copytree(results / "hyperband", exp)
    for f in exp.glob("*/result.json"):
        f.unlink()
    from_csv = load_results(exp)
    ref = df[df["method"] == "hyperband"].reset_index(drop=True)
    for col in ("trial", "iteration", "seed"):
        assert from_csv[col].tolist() == ref[col].tolist(), col
    for col in ("val_acc", "test_acc", "compute_s", RUN_SECONDS, "lr_0", "momentum_0"):
        assert from_csv[col].tolist() == pytest.approx(ref[col].tolist()), col
    assert from_csv["schedule"].tolist() == ref["schedule"].tolist()
    f = sorted(exp.glob("*/progress.csv"))[0]
    f.write_text(f.read_text()[:-20])  # killed while writing its last row
    assert len(load_results(exp)) == len(ref) - 1


def test_paths_read_once_and_method_relabels(results, df):
    again = load_results([results, results / "fds", next(p for p in (results / "fds").iterdir() if (p / "result.json").exists())])
    assert len(again) == len(df)
    relabelled = load_results(results / "fds", method="fds-sign")
    assert set(relabelled["method"]) == {"fds-sign"}


def test_load_results_rejects_missing_and_empty_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no trial results"):
        load_results(tmp_path)
    with pytest.raises(ValueError, match="empty list"):
        load_results([])


# ---- curves on real results -----------------------------------------------------------------


def test_final_choice_on_real_results(results, df):
    finals = final_choice(df).set_index("run")
    for trial, lines in raw_results(results / "fds").items():
        run = f"fds/seed={lines[-1]['config']['seed']}"
        assert finals.loc[run, "test_acc"] == lines[-1]["retrain_test_acc"]  # FDS: the retrained schedule
        assert finals.loc[run, "trials_or_steps"] == 2
    raw = raw_results(results / "hyperband")
    best = max(raw, key=lambda t: (raw[t][-1]["val_acc"], -raw[t][-1]["val_loss"]))  # best val_acc at its last result
    hb = finals.loc["hyperband/seed=0"]
    assert (hb["trial"], hb["test_acc"]) == (best, raw[best][-1]["test_acc"])
    assert hb["best_val_acc"] == max(r["val_acc"] for lines in raw.values() for r in lines)
    assert hb["compute_s"] == pytest.approx(sum(lines[-1]["compute_s"] for lines in raw.values()))
    assert hb["trials_or_steps"] == len(raw)
    ((hd_trial, lines),) = raw_results(results / "hd").items()
    assert finals.loc["hd/seed=0", ["trial", "test_acc", "trials_or_steps"]].tolist() == [hd_trial, lines[-1]["test_acc"], 1]


def test_anytime_curves_on_real_results(df):
    curves = anytime_curves(df)
    assert len(curves) == len(df)
    for run, c in curves.groupby("run"):
        rows = df[df["run"] == run]
        assert c["best_val_acc"].tolist() == rows["val_acc"].cummax().tolist()
        assert (c["incumbent_val_acc"] <= c["best_val_acc"]).all()
    last = curves.groupby("run").tail(1).set_index("run")["incumbent_test_acc"]
    assert last.to_dict() == final_choice(df).set_index("run")["test_acc"].to_dict()
    agg = aggregate_curves(curves)
    fds = agg[agg["method"] == "fds"]
    assert (fds["n"] == 2).all() and fds["mean"].iloc[-1] == pytest.approx(final_choice(df).query("method == 'fds'")["test_acc"].mean())


# ---- hand-made frames with answers worked out by hand -----------------------------------------

# fds: two seeds; the last result retrains.  Incumbent test acc: seed 0 -> .80 then .90, seed 1 -> .84 then .94,
# so the mean curve is .82 at x=10 and .92 at x=20.
# bohb: trial a (val .80) leads until its second result drops to .65, below b's .70; b then reaches .93 (test .90).
HAND = [
    # method, run, trial, iteration, x, val_acc, val_loss, test_acc, retrain_test_acc
    ("fds", "fds/seed=0", "f0", 1, 10, 0.80, 1.0, 0.80, None),
    ("fds", "fds/seed=0", "f0", 2, 20, 0.88, 1.0, 0.85, 0.90),
    ("fds", "fds/seed=1", "f1", 1, 10, 0.82, 1.0, 0.84, None),
    ("fds", "fds/seed=1", "f1", 2, 20, 0.90, 1.0, 0.88, 0.94),
    ("bohb", "bohb/seed=0", "a", 1, 20, 0.80, 1.0, 0.79, None),
    ("bohb", "bohb/seed=0", "b", 1, 40, 0.70, 1.0, 0.71, None),
    ("bohb", "bohb/seed=0", "a", 2, 60, 0.65, 1.0, 0.66, None),
    ("bohb", "bohb/seed=0", "b", 2, 80, 0.93, 1.0, 0.90, None),
]


def hand_frame():
    cols = ["method", "run", "trial", "iteration", RUN_SECONDS, "val_acc", "val_loss", "test_acc", "retrain_test_acc"]
    df = pd.DataFrame(HAND, columns=cols).astype({"retrain_test_acc": float})
    df["seed"] = df["run"].str[-1].astype(int)
    df[RUN_EPOCHS] = df[RUN_SECONDS] / 10
    df["outer_step"] = pd.array([1, 2, 1, 2, None, None, None, None], dtype="Int64")
    return df


def test_incumbent_is_the_best_latest_result_by_hand():
    c = anytime_curves(hand_frame())
    bohb = c[c["method"] == "bohb"]
    assert bohb["incumbent_test_acc"].tolist() == [0.79, 0.79, 0.71, 0.90]
    assert bohb["best_val_acc"].tolist() == [0.80, 0.80, 0.80, 0.93]
    assert c[c["run"] == "fds/seed=0"]["incumbent_test_acc"].tolist() == [0.80, 0.90]
    finals = final_choice(hand_frame()).set_index("run")
    assert finals.loc["bohb/seed=0", ["trial", "test_acc", "trials_or_steps"]].tolist() == ["b", 0.90, 2]
    assert finals.loc["fds/seed=1", ["test_acc", "trials_or_steps"]].tolist() == [0.94, 2]


def test_aggregate_curves_is_exact_on_step_functions():
    curves = pd.DataFrame({
        "method": "m", "run": ["A", "A", "B"], RUN_SECONDS: [1.0, 3.0, 2.0], "incumbent_test_acc": [0.5, 0.7, 0.6],
    })
    agg = aggregate_curves(curves)
    assert agg[RUN_SECONDS].tolist() == [2.0, 3.0]  # x=1: run B has not reported yet
    assert agg["mean"].tolist() == pytest.approx([0.55, 0.65])
    assert agg["std"].tolist() == pytest.approx([0.1 / math.sqrt(2)] * 2)
    assert agg["min"].tolist() == [0.5, 0.6] and agg["n"].tolist() == [2, 2]
    with pytest.raises(ValueError, match="x: got 'wall'"):
        aggregate_curves(curves, x="wall")


def test_regret_and_speedup_by_hand():
    agg = aggregate_curves(anytime_curves(hand_frame()))
    fds = agg[agg["method"] == "fds"]
    assert fds[RUN_SECONDS].tolist() == [10, 20] and fds["mean"].tolist() == pytest.approx([0.82, 0.92])
    assert best_final_accuracy(agg) == pytest.approx(0.92)
    r = regret(agg).set_index(["method", RUN_SECONDS])["regret"]
    assert r[("fds", 20)] == pytest.approx(0.0) and r[("bohb", 60)] == pytest.approx(0.92 - 0.71)
    # matched accuracy .90 (bohb's best): fds reaches it at 20, bohb at 80 -> FDS is 4x faster
    s = speedup_at_matched_accuracy(agg, "bohb")
    assert (s.level, s.compute_reference, s.compute_other, s.speedup) == pytest.approx((0.90, 20, 80, 4.0))
    assert speedup_at_matched_accuracy(agg, "bohb", level=0.75).speedup == pytest.approx(20 / 10)  # .79 at 20 vs .82 at 10
    assert math.isnan(speedup_at_matched_accuracy(agg, "bohb", level=0.95).speedup)  # neither gets there
    assert compute_to_reach(agg, 0.91).to_dict() == pytest.approx({"fds": 20, "bohb": math.nan}, nan_ok=True)
    with pytest.raises(ValueError, match="other: method 'hyperband' has no curve"):
        speedup_at_matched_accuracy(agg, "hyperband")
    runs = regret(final_choice(hand_frame())).set_index("run")["regret"]
    assert runs.to_dict() == pytest.approx({"fds/seed=0": 0.02, "fds/seed=1": -0.02, "bohb/seed=0": 0.02})


def test_comparison_table_by_hand():
    t = comparison_table(hand_frame())
    assert t.index.tolist() == ["fds", "bohb"]
    assert t.loc["fds", ["runs", "test_acc", "test_acc_std", "regret"]].tolist() == pytest.approx([2, 0.92, 0.02 * math.sqrt(2), 0.0])
    assert t.loc["bohb", ["test_acc", "regret", "best_val_acc", "trials_or_steps"]].tolist() == pytest.approx([0.90, 0.02, 0.93, 2])
    assert t.loc["bohb", "fds_speedup"] == pytest.approx(4.0) and math.isnan(t.loc["fds", "fds_speedup"])
    assert t.loc["fds", "hours_to_target"] == pytest.approx(20 / 3600) and math.isnan(t.loc["bohb", "hours_to_target"])
    assert t.loc["fds", "epochs_to_target"] == pytest.approx(2.0)
    assert t.loc["bohb", "device_hours"] == pytest.approx(80 / 3600) and t.loc["bohb", "epochs"] == pytest.approx(8.0)
    text = format_table(t)
    assert text.loc["fds", "Test acc. (%)"] == "92.00 ± 2.83"
    assert text.loc["bohb", "FDS speedup"] == "4.00×" and text.loc["bohb", "Hours to within 1 pt"] == "—"
    with pytest.raises(ValueError, match="within: got -1"):
        comparison_table(hand_frame(), within=-1)


def test_markdown_and_latex_by_hand():
    t = comparison_table(hand_frame())
    md = to_markdown(t).splitlines()
    assert md[0].startswith("| Method | Runs | Best val. acc. (%) | Test acc. (%) | Regret (points) |")
    assert md[1].startswith("|:---|---:|") and len(md) == 4
    assert md[2].startswith("| fds | 2 | 89.00 ± 1.41 | 92.00 ± 2.83 | 0.00 ± 2.83 |")
    tex = to_latex(t, caption="Digits: 50% of runs", label="tab:digits")
    assert r"\begin{tabular}{lrrrrrrrrrr}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"fds & 2 & 89.00 $\pm$ 1.41 & 92.00 $\pm$ 2.83" in tex
    assert r"\caption{Digits: 50\% of runs}" in tex and r"\label{tab:digits}" in tex
    assert r"Test acc. (\%)" in tex and r"4.00$\times$" in tex


def test_missing_columns_degrade_gracefully():
    df = hand_frame().drop(columns=["retrain_test_acc", "outer_step", "val_loss"])
    finals = final_choice(df).set_index("run")
    assert finals.loc["fds/seed=0", "test_acc"] == 0.85  # no retraining reported: the last test_acc
    assert finals.loc["bohb/seed=0", "trials_or_steps"] == 2
    assert comparison_table(df).loc["fds", "runs"] == 2
    with pytest.raises(ValueError, match=r"missing column\(s\) \['val_acc'\]"):
        anytime_curves(df.drop(columns=["val_acc"]))


# ---- tables and plots on real results ---------------------------------------------------------


def test_comparison_table_on_real_results(df):
    t = comparison_table(df)
    finals = final_choice(df)
    assert t.index.tolist() == ["fds", "hd", "hyperband"] and t["runs"].tolist() == [2, 1, 1]
    assert t.loc["fds", "test_acc"] == pytest.approx(finals.query("method == 'fds'")["test_acc"].mean())
    assert t["regret"].min() == pytest.approx(0.0)
    agg = aggregate_curves(anytime_curves(df))
    assert t.loc["hyperband", "fds_speedup"] == pytest.approx(speedup_at_matched_accuracy(agg, "hyperband").speedup, nan_ok=True)
    assert t.loc["fds", "epochs"] == pytest.approx(3.0)  # two one-epoch outer steps and a one-epoch retraining
    md = to_markdown(t)
    assert "| fds | 2 |" in md and "| hd | 1 |" in md and "| hyperband | 1 |" in md and "±" in md.splitlines()[2]


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_plots_on_real_results(df, tmp_path):
    paths = [
        plot_regret(df, tmp_path / "regret.png"),
        plot_regret(df, tmp_path / "regret_epochs.png", x=RUN_EPOCHS),
        plot_schedules(df, tmp_path / "figs" / "schedules.png"),
        plot_hypergradients(df, tmp_path / "hypergrads.png"),
        plot_greedy_trajectories(df, tmp_path / "greedy.png"),  # HD's `trajectory`
        plot_greedy_trajectories(df, tmp_path / "greedy_hb.png", methods=["hyperband"]),  # no trajectory: `schedule`
        plot_greedy_trajectories(df, tmp_path / "greedy_none.png", methods=["bohb"]),  # no such runs: a figure saying so
    ]
    assert all(isinstance(p, Path) and _is_png(p) for p in paths)
    assert paths[-1].stat().st_size < paths[-3].stat().st_size  # the empty figure is just a note


# ---- the notebook ---------------------------------------------------------------------------


def test_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert "FDS_TUNE_RESULTS" in code[0].source and "parameters" in code[0].metadata.get("tags", [])


def test_notebook_runs_headless_on_real_results(results, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("FDS_TUNE_RESULTS", str(results))
    monkeypatch.setenv("FDS_TUNE_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "| fds | 2 |" in text and r"\\begin{tabular}" in text and "image/png" in text
    names = {p.name for p in (tmp_path / "figures").iterdir()}
    assert names == {"regret.png", "fds_schedules.png", "fds_hypergradients.png", "greedy_trajectories.png"}
