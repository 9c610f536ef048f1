"""analysis/tables.py: the comparison table and its Markdown and LaTeX renderings."""
import math

import pytest

from analysis import aggregate_curves, anytime_curves, comparison_table, final_choice, format_table, speedup_at_matched_accuracy, to_latex, to_markdown


def test_comparison_table_by_hand(hand_frame):
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
    with pytest.raises(ValueError, match=r"within: got -1; must be a finite number >= 0"):
        comparison_table(hand_frame(), within=-1)


def test_markdown_and_latex_by_hand(hand_frame):
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


@pytest.mark.e2e
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
