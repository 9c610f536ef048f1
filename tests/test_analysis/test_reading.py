"""analysis/reading.py: the table in one paragraph, checked word for word on ``seeds_frame``
(see conftest.py for its curves, worked out by hand)."""
import pandas as pd
import pytest

from analysis import comparison_table, first_trials, format_speedup, reading

# The table's best validation accuracy is bohb's mean .90; random's seed-0 first trial, a, reaches .90 (9 h).
FIRST_TRIAL = "On its first trial, random (1/2 seeds) reached the table's best validation accuracy (90.00%); no other search did."


def test_reading_of_the_two_seed_table_by_hand(seeds_frame):
    df = seeds_frame()
    assert reading(comparison_table(df), df) == (
        "Level: 94.30% test accuracy, the best mean final accuracy (95.30%, fds) less 1 point. "
        "FDS reached it first, after 3.5 ± 0.707 device-hours. "
        "FDS's speedup at this level: > 2.25× (lower bound) against random and 2.50 ± 0.71× against bohb. "
        "Every method reached it (in at least one seed). " + FIRST_TRIAL
    )


def test_plain_epochs_where_the_table_has_them(seeds_frame):
    df = seeds_frame()
    df["plain_epoch_s"] = 900.0  # a quarter hour: FDS's 3 h and 4 h are 12 and 16 plain epochs
    assert "FDS reached it first, after 3.5 ± 0.707 device-hours (14.0 ± 2.8 plain epochs). " in reading(comparison_table(df), df)


def test_upper_bounds_seeds_that_never_reach_and_methods_that_never_do(seeds_frame):
    df = seeds_frame()
    # at best - 0.5 pt (.948): FDS seed 0 only (3 h); random never; bohb 6 h and 12 h, FDS seed 1 never: < 2.5
    assert reading(comparison_table(df, within=0.005), df) == (
        "Level: 94.80% test accuracy, the best mean final accuracy (95.30%, fds) less 0.5 points. "
        "FDS reached it first, after 3 device-hours (mean over the 1/2 seeds that reached it). "
        "FDS's speedup at this level: < 2.50× (upper bound) against bohb. "
        "Never reached it: random; FDS's speedup is > 3.00× (lower bound; 1/2 seeds) against random. " + FIRST_TRIAL
    )


def test_a_single_seed_and_no_search_reaching_the_level(seeds_frame):
    df = seeds_frame()
    df = df[df["seed"] == 0]  # FDS ends at .962: level .952, which neither search reaches (they end at .947 and .95)
    assert reading(comparison_table(df), df) == (
        "Level: 95.20% test accuracy, the best mean final accuracy (96.20%, fds) less 1 point. "
        "FDS reached it first, after 3 device-hours. "
        "No black-box search reached it: no speedup at matched accuracy for FDS. "
        "Never reached it: random and bohb; FDS's speedup is > 3.00× (lower bound) against random and > 2.00× (lower bound) against bohb. "
        "On its first trial, random reached the table's best validation accuracy (90.00%); no other search did."
    )


def test_a_table_without_fds_has_no_speedups(seeds_frame):
    df = seeds_frame()
    df = df[df["method"] != "fds"]  # best: bohb's .95, level .94; random reaches it at 9 h (seed 0), bohb at 6 h and 12 h
    text = reading(comparison_table(df), df)
    assert text.startswith("Level: 94.00% test accuracy, the best mean final accuracy (95.00%, bohb) less 1 point. ")
    assert "random reached it first, after 9 device-hours (mean over the 1/2 seeds that reached it). " in text  # ties: the table's order
    assert "The table has no FDS row: no speedups." in text and "speedup at this level" not in text
    assert text.endswith(FIRST_TRIAL)


def test_the_first_trial_is_the_first_to_report(seeds_frame):
    df = seeds_frame()
    assert first_trials(df).set_index("run")["trial"].to_dict() == {
        "fds/seed=0": "f0", "fds/seed=1": "f1", "random/seed=0": "a", "random/seed=1": "a", "bohb/seed=0": "p", "bohb/seed=1": "p",
    }
    df["timestamp"] = range(len(df))
    df.loc[(df["run"] == "bohb/seed=0") & (df["trial"] == "q"), "timestamp"] = -1.0  # q (val .90) reported first
    assert reading(comparison_table(df), df).endswith(
        "On its first trial, random (1/2 seeds) and bohb (1/2 seeds) reached the table's best validation accuracy (90.00%)."
    )
    # a hand-over is not a trial; a diverged result does not count (random seed 1: c reports first, its .99 diverged)
    df.loc[(df["run"] == "random/seed=1") & (df["trial"] == "c"), "timestamp"] = -2.0
    handover = pd.DataFrame([{"method": "random", "run": "random/seed=1", "trial": "h", "timestamp": -3.0, "val_acc": 1.0, "diverged": False}])
    df = pd.concat([df.assign(handover=False), handover.assign(handover=True)], ignore_index=True)
    first = first_trials(df).set_index("run")
    assert first.loc["random/seed=1", ["trial", "best_val_acc"]].tolist() == ["c", pytest.approx(0.88)]
    assert first.loc["bohb/seed=0", ["trial", "best_val_acc"]].tolist() == ["q", pytest.approx(0.90)]


def test_reading_needs_a_comparison_table(seeds_frame):
    with pytest.raises(ValueError, match=r"table: got 'a frame without levels'; must be a comparison_table output"):
        reading(pd.DataFrame({"runs": [1]}), seeds_frame())


def test_format_speedup_says_its_bounds_in_words():
    assert format_speedup(2.25, 0.5, ">", 2, 2) == "> 2.25×"
    assert format_speedup(2.25, 0.5, ">", 2, 2, explain=True) == "> 2.25× (lower bound)"
    assert format_speedup(2.5, float("nan"), "<", 1, 2, explain=True) == "< 2.50× (upper bound; 1/2 seeds)"
    assert format_speedup(2.5, 0.71, "", 2, 2, explain=True) == "2.50 ± 0.71×"
    assert format_speedup(float("nan"), float("nan"), "", 0, 2) == "—"
    assert format_speedup(float("nan"), float("nan"), "", 0, 2, explain=True) == "no ratio (the seeds' bounds disagree)"
    assert format_speedup(float("nan"), float("nan"), "not reached", 0, 2, explain=True) == "not reached"
