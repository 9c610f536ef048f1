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
