"""analysis/loaders.py: Ray Tune experiment directories -> one tidy frame.

On real tiny Ray Tune runs (``results``/``df`` fixtures, see conftest.py), expected
values are recomputed from the raw ``result.json`` lines; hand-written trial
directories check where ``seed`` and ``preset`` come from.
"""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from analysis import RUN_EPOCHS, RUN_SECONDS, comparison_table, load_results, long_form, read_results_csv, to_markdown
from analysis.loaders import COMPUTE_COLUMNS, ID_COLUMNS, METRIC_COLUMNS


@pytest.mark.e2e
def test_load_results_has_one_row_per_result_with_the_tidy_columns(results, df, raw_results):
    raw = {name: lines for exp in ("fds", "hyperband", "hd") for name, lines in raw_results(results / exp).items()}
    assert len(df) == sum(len(lines) for lines in raw.values())
    assert list(df.columns[: len(ID_COLUMNS) + len(COMPUTE_COLUMNS) + len(METRIC_COLUMNS)]) == [
        *ID_COLUMNS, *COMPUTE_COLUMNS, *METRIC_COLUMNS
    ]
    assert not df.duplicated(["experiment", "trial", "iteration"]).any()
    assert set(df["method"]) == {"fds", "hyperband", "hd"}
    assert sorted(df.loc[df["method"] == "fds", "run"].unique()) == ["fds/seed=0", "fds/seed=1"]
    assert set(df.loc[df["method"] == "hyperband", "run"]) == {"hyperband/seed=0"}
    assert set(df.loc[df["method"] == "hd", "run"]) == {"hd/seed=0"}  # no seed in its config: the seed its results report
    assert set(df.loc[df["method"].isin(["fds", "hd"]), "preset"]) == {"digits"}
    for trial, lines in raw.items():
        rows = df[df["trial"] == trial].sort_values("iteration")
        assert rows["iteration"].tolist() == [r["training_iteration"] for r in lines]
        assert rows["val_acc"].tolist() == [r["val_acc"] for r in lines]
        assert rows["compute_s"].tolist() == [r["compute_s"] for r in lines]
        # every result carries its seed and preset (the config's where a result does not)
        assert rows["seed"].tolist() == [r.get("seed", r["config"].get("seed")) for r in lines]
        assert rows["preset"].tolist() == [r.get("preset", r["config"].get("preset")) for r in lines]
        for kind, values in lines[-1]["schedule"].items():  # the schedule, expanded
            assert [rows[f"{kind}_{i}"].iloc[-1] for i in range(len(values))] == values
        assert rows["schedule"].iloc[-1] == lines[-1]["schedule"]


@pytest.mark.e2e
def test_run_compute_sums_the_latest_compute_of_every_trial(results, df, raw_results):
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


@pytest.mark.e2e
def test_fds_rows_carry_hypergradients_and_the_retrained_accuracy(results, df, raw_results):
    raw = raw_results(results / "fds")
    fds = df[df["method"] == "fds"]
    for trial, lines in raw.items():
        rows = fds[fds["trial"] == trial]
        assert rows["outer_step"].tolist() == [1, 2]
        assert rows["retrain_test_acc"].iloc[-1] == lines[-1]["retrain_test_acc"]
        assert rows["retrain_test_acc"].iloc[:-1].isna().all()
        assert rows["hypergrads"].tolist() == [r["hypergrads"] for r in lines]
    assert df.loc[df["method"] == "hyperband", "retrain_test_acc"].isna().all()  # missing for black-box: NaN


@pytest.mark.e2e
def test_long_form_has_one_row_per_value(df, sizes):
    fds = df[df["method"] == "fds"]
    long = long_form(fds, "hypergrads")
    assert len(long) == len(fds) * sum(sizes.values())
    first = fds.iloc[0]
    got = long[(long["trial"] == first["trial"]) & (long["iteration"] == first["iteration"]) & (long["kind"] == "lr")]
    assert got.sort_values("index")["value"].tolist() == first["hypergrads"]["lr"]
    assert long_form(df, "no_such_column").empty  # degrades to an empty frame


@pytest.mark.e2e
def test_restarted_trial_loads_without_duplicates(results, df, raw_lines):
    (lines,) = [lines for lines in raw_lines(results / "fds").values() if lines[0]["config"]["seed"] == 1]
    assert [r["training_iteration"] for r in lines] == [1, 1, 2]  # Ray appended the re-run after the failure
    rows = df[df["run"] == "fds/seed=1"]
    assert rows["iteration"].tolist() == [1, 2]
    assert rows["compute_s"].tolist() == [lines[1]["compute_s"], lines[2]["compute_s"]]  # the last report wins
    assert rows[RUN_SECONDS].tolist() == [lines[1]["compute_s"], lines[2]["compute_s"]]  # the failed attempt is superseded


@pytest.mark.e2e
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


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_paths_read_once_and_method_relabels(results, df):
    again = load_results([results, results / "fds", next(p for p in (results / "fds").iterdir() if (p / "result.json").exists())])
    assert len(again) == len(df)
    relabelled = load_results(results / "fds", method="fds-sign")
    assert set(relabelled["method"]) == {"fds-sign"}


def test_load_results_rejects_missing_and_empty_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"paths: got '.*nowhere'; must be an existing results, experiment or trial directory"):
        load_results(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"paths: got \['.*'\]; must be directories holding trial results"):
        load_results(tmp_path)
    with pytest.raises(ValueError, match=r"paths: got \[\]; must be at least one results, experiment or trial directory"):
        load_results([])


def _trial(experiment, name, results, config):
    """A hand-written trial directory: ``result.json`` (one line per result, each with ``config``) and ``params.json``."""
    d = experiment / name
    d.mkdir(parents=True)
    lines = [{"trial_id": name, "training_iteration": i + 1, "timestamp": i, "val_acc": 0.5, "test_acc": 0.5, "compute_s": 1.0 + i,
              "epochs_total": 1 + i, "config": config, **r} for i, r in enumerate(results)]
    (d / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (d / "params.json").write_text(json.dumps(config))


def test_seed_and_preset_come_from_the_results_else_the_config(tmp_path):
    exp = tmp_path / "exp"
    _trial(exp, "reported", [{"seed": 3, "preset": "digits"}] * 2, {"seed": 7, "preset": "fashion_mnist"})  # results win
    _trial(exp, "configured", [{}], {"seed": 5, "preset": "fashion_mnist"})
    _trial(exp, "neither", [{}], {"lr_0": 0.1})  # no guess from presets or defaults
    df = load_results(exp).set_index("trial")
    assert df.loc["reported", "seed"].tolist() == [3, 3] and df.loc["reported", "preset"].tolist() == ["digits", "digits"]
    assert (df.loc["configured", "seed"], df.loc["configured", "preset"]) == (5, "fashion_mnist")
    assert df.loc["neither", "seed"] is pd.NA and df.loc["neither", "preset"] is None
    assert df.loc["neither", "run"] == "exp/seed=?"
    assert str(df["seed"].dtype) == "Int64"


def test_a_results_csv_reads_back_with_its_dict_columns(seeds_frame, tmp_path):
    """What ``fds-tune report`` reads when the Ray directories are gone: the CSV ``df.to_csv`` wrote, dicts parsed back."""
    df = seeds_frame()
    df["schedule"] = [{"lr": [0.1, float("nan")], "momentum": [float("inf"), -float("inf")]}] + [{"lr": [0.1 * i]} for i in range(1, len(df))]
    df["hypergrads"] = [None] * (len(df) - 1) + [{"lr": [np.float64(-2.5)]}]  # NumPy's text of a float: np.float64(-2.5)
    df["note"] = ["{not a dict"] + ["x"] * (len(df) - 1)  # text that is not a dict stays text
    df.to_csv(tmp_path / "results.csv", index=False)
    back = read_results_csv(tmp_path / "results.csv")
    first = back["schedule"].iloc[0]
    assert first["lr"][0] == 0.1 and np.isnan(first["lr"][1]) and first["momentum"] == [float("inf"), -float("inf")]
    assert back["schedule"].iloc[1:].tolist() == df["schedule"].iloc[1:].tolist()
    assert back["hypergrads"].iloc[:-1].isna().all() and back["hypergrads"].iloc[-1] == {"lr": [-2.5]}
    assert back["note"].tolist() == df["note"].tolist() and str(back["seed"].dtype) == "Int64"
    assert len(long_form(back, "schedule")) == len(long_form(df, "schedule"))
    assert to_markdown(comparison_table(back)) == to_markdown(comparison_table(df))
    with pytest.raises(FileNotFoundError, match=r"path: got '.*nowhere.csv'; must be an existing results.csv"):
        read_results_csv(tmp_path / "nowhere.csv")
