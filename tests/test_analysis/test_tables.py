"""analysis/tables.py: the comparison table and its Markdown and LaTeX renderings.

Cells are checked against hand computations on ``hand_frame`` and ``seeds_frame``
(see conftest.py for the worked-out curves).
"""
import math
import re

import pandas as pd
import pytest

from analysis import (
    RUN_SECONDS, anytime_curves, comparison_table, compute_to_reach, final_choice, format_table, speedup_at_matched_accuracy,
    to_latex, to_markdown,
)

HOUR = 3600.0


def test_comparison_table_by_hand(hand_frame):
    t = comparison_table(hand_frame())
    assert t.index.tolist() == ["fds", "bohb"]
    assert t.loc["fds", ["runs", "test_acc", "test_acc_std", "regret"]].tolist() == pytest.approx([2, 0.92, 0.02 * math.sqrt(2), 0.0])
    assert t.loc["bohb", ["test_acc", "regret", "best_val_acc", "trials_or_steps"]].tolist() == pytest.approx([0.90, 0.02, 0.93, 2])
    # common levels .91 and .915: only fds seed 1 (.94 from 20 s) reaches them; bohb ends at .90
    assert list(t.attrs["levels"]) == ["1pt", "0.5pt"]
    assert list(t.attrs["levels"].values()) == [pytest.approx((0.01, 0.91)), pytest.approx((0.005, 0.915))]
    assert t.loc["fds", ["hours_to_1pt", "hours_to_1pt_reached"]].tolist() == pytest.approx([20 / HOUR, 1])
    assert math.isnan(t.loc["bohb", "hours_to_1pt"]) and t.loc["bohb", "hours_to_1pt_reached"] == 0
    assert t.loc["bohb", "speedup_1pt_bound"] == "not reached" and math.isnan(t.loc["fds", "speedup_1pt"])  # seed 0: neither
    assert t.loc["bohb", "device_hours"] == pytest.approx(80 / HOUR) and t.loc["bohb", "epochs"] == pytest.approx(8.0)
    assert t.loc["bohb", "budget"] == pytest.approx(4.0)  # 80 s against FDS's mean 20 s
    text = format_table(t)
    assert text.loc["fds", "Test acc. (%)"] == "92.00 ± 2.83"
    assert text.loc["fds", "Hours to 91.00% (best − 1 pt)"] == "0.00556 (1/2 reached)"
    assert text.loc["bohb", "FDS speedup at 91.00% (best − 1 pt)"] == "not reached"
    assert text.loc["bohb", "Hours to 91.50% (best − 0.5 pt)"] == "not reached"
    assert text.loc["fds", "FDS speedup at 91.50% (best − 0.5 pt)"] == "—"
    assert "Model-based suggestions" not in text.columns and "Retrain attempts" not in text.columns  # no such columns in the results
    # at a level both reach (.90 via within=.02), the speedup of the one seed pair: 80 / 20
    assert comparison_table(hand_frame(), within=0.02).loc["bohb", "speedup_2pt"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match=r"within: got -1; must be a finite number >= 0"):
        comparison_table(hand_frame(), within=-1)


def test_markdown_and_latex_by_hand(hand_frame):
    t = comparison_table(hand_frame())
    md = to_markdown(t).splitlines()
    assert md[0].startswith("| Method | Runs | Best val. acc. (%) | Test acc. (%) | Regret (points) |")
    assert md[1].startswith("|:---|---:|") and len(md) == 7  # header, rule, two rows, blank line, "Notes:", one note
    assert md[2].startswith("| fds | 2 | 89.00 ± 1.41 | 92.00 ± 2.83 | 0.00 ± 2.83 |")
    note = "(k/n reached): only k of the method's n seeds stay at or above the level until the end; mean ± std over those k."
    assert md[4:] == ["", "Notes:", f"- {note}"]
    tex = to_latex(t, caption="Digits: 50% of runs", label="tab:digits")
    assert r"\begin{tabular}{l" + "r" * 12 + "}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"fds & 2 & 89.00 $\pm$ 1.41 & 92.00 $\pm$ 2.83" in tex
    assert r"\caption{Digits: 50\% of runs}" in tex and r"\label{tab:digits}" in tex
    assert r"Test acc. (\%)" in tex and r"Hours to 91.00\% (best $-$ 1 pt)" in tex and r"4.00$\times$" in tex
    assert r"\multicolumn{13}{l}{\footnotesize (k/n reached): only k" in tex


def test_common_levels_are_the_same_for_every_row(seeds_frame):
    """Read each level back from its column header, then check every row's cell against compute to reach by hand."""
    df = seeds_frame()
    text = format_table(comparison_table(df))
    headers = [h for h in text.columns if h.startswith("Hours to ")]
    levels = {h: float(re.match(r"Hours to (\d+\.\d+)% \(best − ([\d.]+) pt\)", h).group(1)) / 100 for h in headers}
    # FDS is best with a mean final .953 (.962 and .944): levels .943 and .948
    assert list(levels.values()) == pytest.approx([0.943, 0.948])
    by_hand = {  # hours from which each seed's curve stays at or above the level (None: never)
        0.943: {"fds": [3, 4], "random": [9, None], "bohb": [6, 12]},
        0.948: {"fds": [3, None], "random": [None, None], "bohb": [6, 12]},
    }
    curves = anytime_curves(df)
    for header, level in levels.items():
        hand = by_hand[round(level, 3)]
        reach = compute_to_reach(curves, level).groupby("method")["compute"].apply(list)
        for method, hours in hand.items():
            assert reach[method] == pytest.approx([math.nan if h is None else h * HOUR for h in hours], nan_ok=True)
    assert text[headers[0]].to_dict() == {"fds": "3.5 ± 0.707", "random": "9 (1/2 reached)", "bohb": "9 ± 4.24"}
    assert text[headers[1]].to_dict() == {"fds": "3 (1/2 reached)", "random": "not reached", "bohb": "9 ± 4.24"}


def test_mean_and_std_over_seeds_by_hand(seeds_frame):
    t = comparison_table(seeds_frame())
    sd = math.sqrt(2) / 2  # the std (ddof 1) of two values one apart
    assert t.loc["fds", ["test_acc", "test_acc_std"]].tolist() == pytest.approx([0.953, 0.018 * sd])
    assert t.loc["random", ["test_acc", "test_acc_std", "regret"]].tolist() == pytest.approx([0.9385, 0.017 * sd, 0.953 - 0.9385])
    assert t.loc["random", ["device_hours", "device_hours_std"]].tolist() == pytest.approx([7.5, 3 * sd])  # 9 h and 6 h
    assert t.loc["random", ["budget", "budget_std"]].tolist() == pytest.approx([7.5 / 3.5, 3 / 3.5 * sd])  # over FDS's mean 3.5 h
    assert t.loc["fds", ["hours_to_1pt", "hours_to_1pt_std"]].tolist() == pytest.approx([3.5, sd])
    assert t.loc["bohb", ["trials_or_steps", "trials_or_steps_std"]].tolist() == pytest.approx([2.5, sd])
    text = format_table(t)
    assert text.loc["fds"].tolist()[:6] == ["2", "85.50 ± 0.71", "95.30 ± 1.27", "0.00 ± 1.27", "3.5 ± 0.707", "7.0 ± 1.4"]
    assert text.loc["random", "Test acc. (%)"] == "93.85 ± 1.20" and text.loc["random", "Regret (points)"] == "1.45 ± 1.20"
    assert text.loc["bohb", "Budget (× FDS compute)"] == "2.57 ± 1.21×"  # 6/3.5 and 12/3.5


def test_speedups_and_their_bounds_by_hand(seeds_frame):
    t = comparison_table(seeds_frame())
    # bohb at .943: seed 0 6 h / 3 h = 2, seed 1 12 h / 4 h = 3: 2.5 ± .71
    assert t.loc["bohb", ["speedup_1pt", "speedup_1pt_std", "speedup_1pt_pairs"]].tolist() == pytest.approx([2.5, math.sqrt(2) / 2, 2])
    # random at .943: seed 0 9 h / 3 h = 3; seed 1 never reaches it within its 6 h: at least 6 h / 4 h = 1.5 -> > 2.25
    assert (t.loc["random", "speedup_1pt"], t.loc["random", "speedup_1pt_bound"]) == (pytest.approx(2.25), ">")
    # random at .948: seed 0 at least 9 h / 3 h; in seed 1 neither reaches it -> > 3 from 1 of 2 seeds
    assert t.loc["random", ["speedup_0.5pt", "speedup_0.5pt_pairs", "speedup_0.5pt_seeds"]].tolist() == [3.0, 1, 2]
    # bohb at .948: seed 0 6 h / 3 h = 2; FDS seed 1 never reaches it in its 4 h: at most 12 h / 4 h = 3 -> < 2.5
    assert (t.loc["bohb", "speedup_0.5pt"], t.loc["bohb", "speedup_0.5pt_bound"]) == (pytest.approx(2.5), "<")
    text = format_table(t)
    assert text.loc["random"].filter(like="speedup").tolist() == ["> 2.25×", "> 3.00× (1/2 seeds)"]
    assert text.loc["bohb"].filter(like="speedup").tolist() == ["2.50 ± 0.71×", "< 2.50×"]
    assert text.loc["fds"].filter(like="speedup").tolist() == ["—", "—"]
    notes = t.attrs["notes"]
    assert [n.split(":")[0] for n in notes] == ["(k/n reached)", "> s×", "< s×", "(k/n seeds)"]
    one = comparison_table(seeds_frame(), speedup_against=["bohb"])
    assert math.isnan(one.loc["random", "speedup_1pt"]) and format_table(one).loc["random"].filter(like="speedup").tolist() == ["—", "—"]
    assert one.loc["bohb", "speedup_1pt"] == pytest.approx(2.5)
    s = speedup_at_matched_accuracy(anytime_curves(seeds_frame()), "random")  # the default level: best - 1 pt
    assert (s.level, s.speedup, s.bound, s.pairs, s.seeds) == (pytest.approx(0.943), pytest.approx(2.25), ">", 2, 2)


def test_model_based_suggestions_are_counted_by_hand(seeds_frame):
    t = comparison_table(seeds_frame())
    # bohb: trial q in seed 0; q and r in seed 1 (p never): 1 and 2 -> 1.5 ± .71; no model_based reported by fds or random
    assert t.loc["bohb", ["model_based", "model_based_std"]].tolist() == pytest.approx([1.5, math.sqrt(2) / 2])
    assert t[["model_based"]].isna().loc[["fds", "random"]].all().all()
    assert format_table(t)["Model-based suggestions"].tolist() == ["—", "—", "1.5 ± 0.7"]
    df = seeds_frame()
    df.loc[df["trial"] == "p", "model_based"] = [False, True]  # seed 1's p (one result) becomes model-based too
    assert comparison_table(df).loc["bohb", "model_based"] == pytest.approx((1 + 3) / 2)
    assert "model_based" not in comparison_table(seeds_frame().drop(columns="model_based")).columns


def test_the_engine_column_says_which_engine_each_runs_used(seeds_frame):
    assert "engine" not in comparison_table(seeds_frame()).columns  # no run reports one
    df = seeds_frame()
    df["engine_mode"] = None
    df.loc[df["method"] == "fds", "engine_mode"] = "reverse"
    text = format_table(comparison_table(df))
    assert text.columns[1] == "Engine"
    assert text["Engine"].to_dict() == {"fds": "reverse", "random": "—", "bohb": "—"}
    df.loc[df["run"] == "fds/seed=1", "engine_mode"] = "forward"  # seeds that differ are both shown
    assert format_table(comparison_table(df)).loc["fds", "Engine"] == "forward, reverse"


def test_plain_epoch_equivalents_where_the_results_report_them(seeds_frame):
    df = seeds_frame()
    assert format_table(comparison_table(df)).columns[5] == "Epochs"  # the run's epochs: 2 per hour here
    df["plain_epoch_s"] = 900.0  # one plain epoch: a quarter hour
    df.loc[df["run"] == "bohb/seed=1", "plain_epoch_s"] = [math.nan, 1800.0, 1800.0]  # a run's last reported value counts
    t = comparison_table(df)
    assert t.attrs["epochs"] == "plain"
    assert t.loc["fds", ["epochs", "epochs_std"]].tolist() == pytest.approx([14.0, 4 * math.sqrt(2) / 2])  # 3 h and 4 h
    assert t.loc["bohb", "epochs"] == pytest.approx((24 + 24) / 2)  # 6 h / 0.25 h and 12 h / 0.5 h
    assert format_table(t).columns[5] == "Plain-epoch equiv."


def test_retrain_fallbacks_and_failures_are_never_silent(seeds_frame):
    df = seeds_frame()
    df["retrain_attempts"] = pd.array([None, 1, None, 2] + [None] * (len(df) - 4), dtype="Int64")
    t = comparison_table(df)
    assert t.loc["fds", ["retrain_attempts", "retrain_attempts_std"]].tolist() == pytest.approx([1.5, math.sqrt(2) / 2])
    assert t.attrs["notes"][-1] == (
        "fds/seed=1: the learned schedule's retraining failed; the answer is a fallback schedule's retraining (retrain attempts: 2)."
    )
    md = to_markdown(t)
    assert "| Retrain attempts |" in md.splitlines()[0] and "- fds/seed=1: the learned schedule's retraining failed" in md
    assert r"\footnotesize fds/seed=1: the learned" in to_latex(t)
    df["retrain_attempts"] = pd.array([None, 1, None, 1] + [None] * (len(df) - 4), dtype="Int64")  # no fallback: no column, no note
    assert "retrain_attempts" not in comparison_table(df).columns
    df["retrain_fallback"] = [None, True] + [None] * (len(df) - 2)
    df["retrain_diverged"] = [None, True] + [None] * (len(df) - 2)
    notes = comparison_table(df).attrs["notes"]
    assert notes[-1] == (
        "fds/seed=0: the learned schedule's retraining failed; the answer is a fallback schedule's retraining (retrain attempts: 1); "
        "every retraining attempt failed (diverged or stalled): its test accuracy is a failed run's."
    )


def test_an_incumbent_handed_over_instead_of_the_last_update_is_noted(seeds_frame):
    df = seeds_frame()
    n = len(df)
    df["retrain_final"] = [None, "incumbent", None, "incumbent"] + [None] * (n - 4)
    df["retrain_is_last"] = [None, False, None, True] + [None] * (n - 4)
    df["incumbent_outer_step"] = pd.array([2, 3, 1, 1] + [None] * (n - 4), dtype="Int64")
    markers = comparison_table(seeds_frame()).attrs["notes"]  # the markers' notes, the same without the columns
    notes = comparison_table(df).attrs["notes"]
    assert notes == markers + [
        'fds/seed=0: FDS retrained its incumbent (the best validated schedule, from outer step 3), not its last update '
        '(the paper\'s choice, final="last").',
    ]
    df["retrain_final"] = [None, "last", None, "last"] + [None] * (n - 4)  # the paper's choice: nothing to say
    assert comparison_table(df).attrs["notes"] == markers


@pytest.mark.e2e
def test_comparison_table_on_real_results(df):
    t = comparison_table(df)
    finals = final_choice(df)
    assert t.index.tolist() == ["fds", "hd", "hyperband"] and t["runs"].tolist() == [2, 1, 1]
    assert t.loc["fds", "test_acc"] == pytest.approx(finals.query("method == 'fds'")["test_acc"].mean())
    assert t["regret"].min() == pytest.approx(0.0)
    best = finals.groupby("method")["test_acc"].mean().max()
    assert list(t.attrs["levels"].values()) == [pytest.approx((0.01, best - 0.01)), pytest.approx((0.005, best - 0.005))]
    curves = anytime_curves(df)
    s = speedup_at_matched_accuracy(curves, "hyperband", level=best - 0.01)
    assert t.loc["hyperband", "speedup_1pt"] == pytest.approx(s.speedup, nan_ok=True) and t.loc["hyperband", "speedup_1pt_bound"] == s.bound
    reach = compute_to_reach(curves, best - 0.01).groupby("method")["compute"]
    assert t["hours_to_1pt_reached"].to_dict() == reach.count().to_dict()
    assert t["hours_to_1pt"].to_dict() == pytest.approx((reach.mean() / HOUR).to_dict(), nan_ok=True)
    assert t.loc["fds", "epochs"] == pytest.approx(3.0)  # two one-epoch outer steps and a one-epoch retraining
    compute = finals.groupby("method")["compute_s"].mean()
    assert t.loc["hyperband", "budget"] == pytest.approx(compute["hyperband"] / compute["fds"])
    md = to_markdown(t)
    assert "| fds | 2 |" in md and "| hd | 1 |" in md and "| hyperband | 1 |" in md and "±" in md.splitlines()[2]
    assert RUN_SECONDS in curves.columns
