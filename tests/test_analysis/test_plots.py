"""analysis/plots.py: every figure is written as a PNG, also when it has nothing to show."""
from pathlib import Path

import pytest

from analysis import RUN_EPOCHS, plot_greedy_trajectories, plot_hypergradients, plot_regret, plot_schedules


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


@pytest.mark.e2e
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


def test_regret_plot_of_several_seeds_by_hand(seeds_frame, tmp_path):
    assert _is_png(plot_regret(seeds_frame(), tmp_path / "regret.png"))  # mean lines, min-max bands, the common levels


def test_per_step_hypergradients_plot_from_a_reverse_mode_run(tmp_path):
    """A real FDS run in reverse mode reports binned per-step hypergradients; the plot draws them,
    and says so when there are none (forward mode)."""
    import pandas as pd

    from analysis import long_form, plot_per_step_hypergradients
    from fds_tune import FDSLearner, fds_config

    learner = FDSLearner(fds_config({"preset": "digits", "epochs": [1, 2], "retrain_epochs": 0, "engine_mode": "reverse"}))
    rows = [{**learner.step(), "method": "fds", "run": "fds/seed=0", "trial": "a", "iteration": i + 1} for i in range(2)]
    df = pd.DataFrame(rows)
    long = long_form(df, "per_step_hypergrads")
    for r in rows:  # one value per inner step (bins of 1 step at this horizon), for each kind
        assert r["per_step_bin"] == 1 and long[long["outer_step"] == r["outer_step"]].groupby("kind").size().eq(r["inner_steps"]).all()
    assert _is_png(plot_per_step_hypergradients(df, tmp_path / "per_step.png"))
    empty = plot_per_step_hypergradients(df.drop(columns=["per_step_hypergrads", "per_step_bin"]), tmp_path / "none.png")
    assert empty.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and empty.stat().st_size < (tmp_path / "per_step.png").stat().st_size


def test_a_kind_learned_per_group_is_one_kind_per_group_in_long_form():
    import pandas as pd

    from analysis import long_form

    df = pd.DataFrame([{"method": "fds", "run": "r", "trial": "t", "schedule": {"lr": [[0.1, 0.2], [0.3, 0.4]], "momentum": [0.9]}}])
    long = long_form(df, "schedule")
    assert list(zip(long["kind"], long["index"], long["value"])) == [
        ("lr/0", 0, 0.1), ("lr/0", 1, 0.2), ("lr/1", 0, 0.3), ("lr/1", 1, 0.4), ("momentum", 0, 0.9),
    ]


def test_learned_schedules_put_pbts_followed_schedule_beside_fds(tmp_path):
    """FDS's retrained schedule and PBT's hand-over schedule, as step functions over the fraction of training."""
    import pandas as pd

    from analysis import learned_schedules

    fds_last = {"method": "fds", "run": "fds-seed0/seed=0", "trial": "f", "iteration": 2, "handover": None,
                "schedule": {"lr": [0.3, 0.2]}, "retrain_schedule": {"lr": [0.1, 0.05]}}
    fds_first = {**fds_last, "iteration": 1, "retrain_schedule": None}
    pbt_search = {"method": "pbt", "run": "pbt-seed0/seed=0", "trial": "p", "iteration": 3, "handover": None,
                  "schedule": {"lr": [0.4]}, "retrain_schedule": None}
    pbt_hand = {**pbt_search, "trial": "p-handover", "iteration": 1, "handover": True, "schedule": {"lr": [0.2, 0.2, 0.1]}}
    df = pd.DataFrame([fds_first, fds_last, pbt_search, pbt_hand])
    learned = learned_schedules(df, ["fds", "pbt"])
    by_method = {m: list(zip(g["fraction"], g["value"])) for m, g in learned.groupby("method")}
    assert by_method["fds"] == [(0.0, 0.1), (0.5, 0.05), (1.0, 0.05)]
    assert by_method["pbt"] == [(0.0, 0.2), (1 / 3, 0.2), (2 / 3, 0.1), (1.0, 0.1)]
    two_rows = plot_schedules(df.assign(outer_step=df["iteration"]), tmp_path / "beside.png")
    one_row = plot_schedules(df[df["method"] == "fds"], tmp_path / "fds_only.png")
    assert _is_png(two_rows) and _is_png(one_row) and two_rows.stat().st_size > one_row.stat().st_size
