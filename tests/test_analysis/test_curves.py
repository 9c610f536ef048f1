"""analysis/curves.py: incumbents by validation, final choices, aggregation, compute to reach, regret and speedup.

On real tiny Ray Tune runs (``results``/``df`` fixtures, see conftest.py) and on a
hand-made frame (``hand_frame``) whose answers are worked out by hand.
"""
import math

import pandas as pd
import pytest

from analysis import (
    RUN_EPOCHS, RUN_SECONDS, Speedup, aggregate_curves, anytime_curves, best_final_accuracy, common_levels, comparison_table,
    compute_to_reach, final_choice, format_table, regret, speedup_at_matched_accuracy, speedup_pairs,
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
    best = _best_by_validation([r for lines in raw.values() for r in lines if r["done"]])  # over completed trials' last results
    hb = finals.loc["hyperband/seed=0"]
    assert (hb["trial"], hb["iteration"], hb["test_acc"]) == (best["trial_id"], best["training_iteration"], best["test_acc"])
    assert hb["best_val_acc"] == max(r["val_acc"] for lines in raw.values() for r in lines)
    assert hb["compute_s"] == pytest.approx(sum(lines[-1]["compute_s"] for lines in raw.values()))
    assert hb["trials_or_steps"] == len(raw)
    ((hd_trial, lines),) = raw_results(results / "hd").items()
    best = _best_by_validation([r for r in lines if r["done"]])  # greedy: its run's end
    assert finals.loc["hd/seed=0", ["trial", "test_acc", "trials_or_steps"]].tolist() == [hd_trial, best["test_acc"], 1]


def _best_by_validation(results: list[dict]) -> dict:
    """The incumbent by hand: highest val_acc, then lower val_loss, then the earliest (wall clock, trial, iteration)."""
    usable = sorted((r for r in results if not r.get("diverged")), key=lambda r: (r["timestamp"], r["trial_id"], r["training_iteration"]))
    return max(usable, key=lambda r: (r["val_acc"], -r["val_loss"]))  # max keeps the first of equals


@pytest.mark.e2e
def test_anytime_curves_on_real_results(df):
    curves = anytime_curves(df)
    assert len(curves) == len(df)
    for run, c in curves.groupby("run"):
        rows = df[df["run"] == run]
        assert c["best_val_acc"].tolist() == rows["val_acc"].cummax().tolist()
        assert (c["incumbent_val_acc"].dropna() <= c["best_val_acc"][c["incumbent_val_acc"].notna()]).all()
        # before a hand-over the incumbent is the best complete result so far (an FDS outer step, or a trial's end)
        complete = rows["done"].fillna(False).astype(bool) | rows["outer_step"].notna()
        best_complete = rows["val_acc"].where(complete).cummax()
        chosen = ~c["handed_over"].to_numpy() & best_complete.notna().to_numpy()
        assert c["incumbent_val_acc"][chosen].tolist() == best_complete[chosen].tolist()
        assert c["handed_over"].tolist() == rows["retrain_test_acc"].notna().cummax().tolist()
    last = curves.groupby("run").tail(1).set_index("run")["incumbent_test_acc"]
    assert last.to_dict() == final_choice(df).set_index("run")["test_acc"].to_dict()
    agg = aggregate_curves(curves)
    fds = agg[agg["method"] == "fds"]
    assert (fds["n"] == 2).all() and fds["mean"].iloc[-1] == pytest.approx(final_choice(df).query("method == 'fds'")["test_acc"].mean())


def test_incumbent_is_the_best_result_so_far_by_hand(hand_frame):
    c = anytime_curves(hand_frame())
    bohb = c[c["method"] == "bohb"]
    assert bohb["incumbent_test_acc"].tolist() == [0.79, 0.79, 0.79, 0.90]  # a's first result outlives a's fall to .65
    assert bohb["incumbent_trial"].tolist() == ["a", "a", "a", "b"] and bohb["incumbent_iteration"].tolist() == [1, 1, 1, 2]
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
    curves = anytime_curves(hand_frame())
    agg = aggregate_curves(curves)
    fds = agg[agg["method"] == "fds"]
    assert fds[RUN_SECONDS].tolist() == [10, 20] and fds["mean"].tolist() == pytest.approx([0.82, 0.92])
    assert best_final_accuracy(agg) == pytest.approx(0.92)
    r = regret(agg).set_index(["method", RUN_SECONDS])["regret"]
    assert r[("fds", 20)] == pytest.approx(0.0) and r[("bohb", 60)] == pytest.approx(0.92 - 0.79)
    # level .90: fds seed 0 (the only seed bohb also ran) stays above it from 20, bohb from 80 -> FDS is 4x faster
    s = speedup_at_matched_accuracy(curves, "bohb", level=0.90)
    assert s == pytest.approx(Speedup(0.90, 4.0, math.nan, "", 1, 1), nan_ok=True)
    assert speedup_at_matched_accuracy(curves, "bohb", level=0.75).speedup == pytest.approx(20 / 10)  # .79 from 20 vs .80 from 10
    # the default level is best - 1 pt = .91: fds seed 0 ends at .90 and bohb at .90, so neither reaches it
    assert speedup_at_matched_accuracy(curves, "bohb") == pytest.approx(Speedup(0.91, math.nan, math.nan, "not reached", 0, 1), nan_ok=True)
    reach = compute_to_reach(curves, 0.91).set_index("run")
    assert reach["compute"].to_dict() == pytest.approx({"fds/seed=0": math.nan, "fds/seed=1": 20, "bohb/seed=0": math.nan}, nan_ok=True)
    assert reach["total"].to_dict() == {"fds/seed=0": 20, "fds/seed=1": 20, "bohb/seed=0": 80}
    assert compute_to_reach(curves, 0.85, x=RUN_EPOCHS).set_index("run")["compute"].to_dict() == {
        "fds/seed=0": 2.0, "fds/seed=1": 2.0, "bohb/seed=0": 8.0,  # fds seed 1's .84 at 1 epoch is below .85
    }
    with pytest.raises(ValueError, match=r"other: got 'hyperband'; must be a method with a curve, one of \['fds', 'bohb'\]"):
        speedup_at_matched_accuracy(curves, "hyperband")
    runs = regret(final_choice(hand_frame())).set_index("run")["regret"]
    assert runs.to_dict() == pytest.approx({"fds/seed=0": 0.02, "fds/seed=1": -0.02, "bohb/seed=0": 0.02})


def test_incumbent_changes_only_when_validation_improves(seeds_frame):
    c = anytime_curves(seeds_frame()).set_index("run")
    # seed 0: b's test .99 with a lower val leaves a's .95; c's higher val brings .90; a's second result .947
    assert c.loc["random/seed=0", "incumbent_test_acc"].tolist() == [0.95, 0.95, 0.90, 0.947]
    assert c.loc["random/seed=0", "incumbent_trial"].tolist() == ["a", "a", "c", "a"]
    # seed 1: c ties b (val .88, val_loss .5): the earlier b stays; the diverged val .99 never counts, not even as best val
    assert c.loc["random/seed=1", "incumbent_test_acc"].tolist() == [0.70, 0.93, 0.93, 0.93]
    assert c.loc["random/seed=1", "incumbent_trial"].tolist() == ["a", "b", "b", "b"]
    assert c.loc["random/seed=1", "best_val_acc"].tolist() == [0.70, 0.88, 0.88, 0.88]
    # a lower val_loss breaks a tie of val_acc
    df = seeds_frame()
    df.loc[(df["run"] == "random/seed=1") & (df["trial"] == "c") & ~df["diverged"], "val_loss"] = 0.4
    c = anytime_curves(df).set_index("run")
    assert c.loc["random/seed=1", "incumbent_test_acc"].tolist() == [0.70, 0.93, 0.97, 0.97]


def test_touching_a_level_is_not_reaching_it():
    """A non-monotone curve that touches best - 1 pt and falls back, ending 4 points down, never reaches it."""
    df = pd.DataFrame({
        "method": ["fds", "fds", "hyperband", "hyperband", "hyperband"],
        "run": ["fds/seed=0"] * 2 + ["hyperband/seed=0"] * 3, "seed": 0, "trial": ["f", "f", "a", "b", "c"],
        RUN_SECONDS: [10.0, 20.0, 5.0, 15.0, 25.0],
        "val_acc": [0.90, 0.92, 0.90, 0.95, 0.94], "val_loss": 1.0, "test_acc": [0.90, 0.91, 0.975, 0.93, 0.99],
        "retrain_test_acc": [math.nan, 0.97, math.nan, math.nan, math.nan],
    })
    curves = anytime_curves(df)
    assert curves["incumbent_test_acc"].tolist() == [0.90, 0.97, 0.975, 0.93, 0.93]
    finals = regret(final_choice(df)).set_index("method")
    assert finals.loc["hyperband", "regret"] == pytest.approx(0.04)
    (level,) = common_levels(finals.reset_index(), 0.01).values()
    assert level == pytest.approx(0.96)
    reach = compute_to_reach(curves, level).set_index("method")["compute"]
    assert reach["fds"] == 20 and math.isnan(reach["hyperband"])  # touched .975 at 5, fell to .93: not reached
    # hyperband never reaches .96 within its 25 s: FDS's speedup is at least 25 / 20
    pairs = speedup_pairs(curves, "hyperband", level=level)
    assert pairs[["compute_reference", "total_other", "speedup", "bound"]].values.tolist() == [[20.0, 25.0, 1.25, ">"]]
    assert speedup_at_matched_accuracy(curves, "hyperband") == pytest.approx(Speedup(level, 1.25, math.nan, ">", 1, 1), nan_ok=True)
    t = comparison_table(df, within=0.01)
    assert format_table(t).loc["hyperband", "Hours to 96.00% (best − 1 pt)"] == "not reached"
    assert format_table(t).loc["hyperband", "FDS speedup at 96.00% (best − 1 pt)"] == "> 1.25×"


def test_handover_is_the_final_answer_whatever_its_validation():
    """A result with a retraining's accuracy (FDS's retrain_test_acc, a black-box handover_test_acc) ends the curve
    there, even when it is diverged or validates worse; later results no longer change it."""
    df = pd.DataFrame({
        "method": "random", "run": "random/seed=0", "seed": 0, "trial": ["a", "b", "b", "c"], "iteration": [1, 1, 2, 1],
        RUN_SECONDS: [1.0, 2.0, 3.0, 4.0], "val_acc": [0.9, 0.8, 0.7, 0.95], "test_acc": [0.9, 0.8, 0.7, 0.96],
        "diverged": [False, False, True, False], "handover_test_acc": [math.nan, math.nan, 0.91, math.nan],
    })
    c = anytime_curves(df)
    assert c["incumbent_test_acc"].tolist() == [0.9, 0.9, 0.91, 0.91]
    assert c["handed_over"].tolist() == [False, False, True, True] and c["incumbent_trial"].tolist() == ["a", "a", "b", "b"]
    (choice,) = final_choice(df).to_dict("records")
    assert (choice["trial"], choice["iteration"], choice["test_acc"], choice["handed_over"]) == ("b", 2, 0.91, True)
    assert choice["best_val_acc"] == 0.95


def test_a_hand_over_is_not_a_trial_of_the_search():
    """The comparison's hand-over (rows with ``handover`` true) ends the curve but is not counted as a searched trial."""
    df = pd.DataFrame({
        "method": "random", "run": "random/seed=0", "seed": 0, "trial": ["a", "b", "b-handover"], "iteration": [1, 1, 1],
        RUN_SECONDS: [1.0, 2.0, 3.0], RUN_EPOCHS: [1.0, 2.0, 3.0], "val_acc": [0.9, 0.8, math.nan],
        "test_acc": [0.9, 0.8, 0.93], "diverged": False, "handover": [False, False, True],
        "handover_test_acc": [math.nan, math.nan, 0.93],
    })
    (choice,) = final_choice(df).to_dict("records")
    assert (choice["test_acc"], choice["handed_over"], choice["trials"], choice["compute_s"]) == (0.93, True, 2, 3.0)


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
        best_final_accuracy(pd.DataFrame({"method": ["fds"], "mean": [0.5]}))
    # compute to reach is per run, from anytime_curves (no longer from a seed-mean aggregate_curves frame)
    with pytest.raises(ValueError, match=r"frame columns: got \['method', 'mean', 'run_compute_s'\]; must be columns including .*'incumbent_test_acc'"):
        compute_to_reach(pd.DataFrame({"method": ["fds"], "mean": [0.5], RUN_SECONDS: [1.0]}), 0.5)
    with pytest.raises(ValueError, match=r"level: got nan; must be a finite accuracy"):
        compute_to_reach(pd.DataFrame({"method": ["fds"], "mean": [0.5], RUN_SECONDS: [1.0]}), math.nan)


def test_common_levels_validate_their_margins(hand_frame):
    finals = final_choice(hand_frame())
    assert common_levels(finals) == pytest.approx({0.01: 0.91, 0.005: 0.915})
    assert common_levels(finals, 0.02) == pytest.approx({0.02: 0.90})
    bad = ((-0.01, "a finite number >= 0"), ([], "a margin or a non-empty sequence"), ((0.01, 0.01), "distinct margins"), ("1", "a finite number"))
    for within, rule in bad:
        with pytest.raises(ValueError, match=rf"within: got .*; must be {rule}"):
            common_levels(finals, within)
