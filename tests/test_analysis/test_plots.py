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
