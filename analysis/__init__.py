"""Analysis of fds-tune results: Ray Tune experiment directories -> tidy frame -> curves, tables, figures.

    df = load_results("results/digits")          # every method and seed under the directory
    table = comparison_table(df)                 # one row per method
    print(to_markdown(table))
    print(reading(table, df))                    # the table in one paragraph
    plot_regret(df, "figures/regret.png")

A comparison whose Ray directories are gone reloads from its CSV (``read_results_csv``); the
horizon study (one comparison per horizon) is :mod:`analysis.horizon` (``horizon_frame``,
``plot_horizon``).  See :mod:`analysis.loaders` for the frame's columns and the compute axis, and
:mod:`analysis.curves` for the definitions: the incumbent by validation, the final choice,
compute to reach a level, the table's common levels, speedup and regret.
"""
from .curves import (
    Speedup, aggregate_curves, anytime_curves, best_final_accuracy, common_levels, compute_to_reach, final_choice, regret,
    speedup_at_matched_accuracy, speedup_pairs,
)
from .horizon import HORIZON_METHODS, horizon_frame, horizon_seeds, horizon_to_markdown
from .loaders import RUN_EPOCHS, RUN_SECONDS, find_trial_dirs, load_results, long_form, read_results_csv
from .plots import (
    learned_schedules, plot_greedy_trajectories, plot_horizon, plot_hypergradients, plot_per_step_hypergradients, plot_regret, plot_schedules,
)
from .reading import first_trials, reading
from .tables import comparison_table, format_mean_std, format_speedup, format_table, to_latex, to_markdown

__all__ = [
    "HORIZON_METHODS", "RUN_EPOCHS", "RUN_SECONDS", "Speedup", "aggregate_curves", "anytime_curves", "best_final_accuracy",
    "common_levels", "comparison_table", "compute_to_reach", "final_choice", "find_trial_dirs", "first_trials", "format_mean_std",
    "format_speedup", "format_table", "horizon_frame", "horizon_seeds", "horizon_to_markdown", "load_results", "long_form",
    "learned_schedules", "plot_greedy_trajectories", "plot_horizon", "plot_hypergradients", "plot_per_step_hypergradients", "plot_regret",
    "plot_schedules", "read_results_csv", "reading", "regret", "speedup_at_matched_accuracy", "speedup_pairs", "to_latex", "to_markdown",
]
