"""analysis/curves.py: incumbents, final choices, aggregation, regret and speedup.

On real tiny Ray Tune runs (``results``/``df`` fixtures, see conftest.py) and on a
hand-made frame (``hand_frame``) whose answers are worked out by hand.
"""
import math

import pandas as pd
import pytest

from analysis import (
    RUN_SECONDS, aggregate_curves, anytime_curves, best_final_accuracy, comparison_table, compute_to_reach, final_choice,
    regret, speedup_at_matched_accuracy,
)
from analysis.curves import method_order
from fds_tune.results import METHODS


@pytest.mark.e2e
def test_final_choice_on_real_results(results, df, raw_results):
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


@pytest.mark.e2e
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


def test_incumbent_is_the_best_latest_result_by_hand(hand_frame):
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
    with pytest.raises(ValueError, match=r"x: got 'wall'; must be one of \['run_compute_s', 'run_epochs'\]"):
        aggregate_curves(curves, x="wall")


def test_regret_and_speedup_by_hand(hand_frame):
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
    with pytest.raises(ValueError, match=r"other: got 'hyperband'; must be a method with a curve, one of \['fds', 'bohb'\]"):
        speedup_at_matched_accuracy(agg, "hyperband")
    runs = regret(final_choice(hand_frame())).set_index("run")["regret"]
    assert runs.to_dict() == pytest.approx({"fds/seed=0": 0.02, "fds/seed=1": -0.02, "bohb/seed=0": 0.02})


def test_missing_columns_degrade_gracefully(hand_frame):
    df = hand_frame().drop(columns=["retrain_test_acc", "outer_step", "val_loss"])
    finals = final_choice(df).set_index("run")
    assert finals.loc["fds/seed=0", "test_acc"] == 0.85  # no retraining reported: the last test_acc
    assert finals.loc["bohb/seed=0", "trials_or_steps"] == 2
    assert comparison_table(df).loc["fds", "runs"] == 2
    with pytest.raises(ValueError, match=r"frame columns: got \[.*\]; must be columns including .* \(missing: \['val_acc'\]\)"):
        anytime_curves(df.drop(columns=["val_acc"]))


def test_methods_are_ordered_as_the_one_method_list():
    assert method_order(reversed(METHODS)) == list(METHODS)
    assert method_order(["zeta", "asha", "alpha", "fds"]) == ["fds", "asha", "alpha", "zeta"]  # unknown ones last, alphabetically
    assert aggregate_curves(pd.DataFrame({
        "method": ["asha", "fds"], "run": ["a", "f"], RUN_SECONDS: [1.0, 1.0], "incumbent_test_acc": [0.5, 0.6],
    }))["method"].tolist() == ["fds", "asha"]


def test_regret_and_axis_need_known_frames():
    with pytest.raises(ValueError, match=r"frame columns: got \['method'\]; must be columns of an aggregate_curves frame"):
        regret(pd.DataFrame({"method": ["fds"]}))
    with pytest.raises(ValueError, match=r"curves columns: got \['method', 'mean'\]; must be columns with exactly one compute axis"):
        compute_to_reach(pd.DataFrame({"method": ["fds"], "mean": [0.5]}), 0.5)
