"""Analysis of fds-tune results: Ray Tune experiment directories -> tidy frame -> curves, tables, figures.

    df = load_results("results/digits")          # every method and seed under the directory
    table = comparison_table(df)                 # one row per method
    print(to_markdown(table))
    plot_regret(df, "figures/regret.png")

See :mod:`analysis.loaders` for the frame's columns and the compute axis, and
:mod:`analysis.curves` for the definitions: the incumbent by validation, the final choice,
compute to reach a level, the table's common levels, speedup and regret.
"""
from .curves import (
    Speedup, aggregate_curves, anytime_curves, best_final_accuracy, common_levels, compute_to_reach, final_choice, regret,
    speedup_at_matched_accuracy, speedup_pairs,
)
from .loaders import RUN_EPOCHS, RUN_SECONDS, find_trial_dirs, load_results, long_form
from .plots import learned_schedules, plot_greedy_trajectories, plot_hypergradients, plot_per_step_hypergradients, plot_regret, plot_schedules
from .tables import comparison_table, format_table, to_latex, to_markdown

__all__ = [
    "RUN_EPOCHS", "RUN_SECONDS", "Speedup", "aggregate_curves", "anytime_curves", "best_final_accuracy",
    "common_levels", "comparison_table", "compute_to_reach", "final_choice", "find_trial_dirs", "format_table", "load_results", "long_form",
    "learned_schedules", "plot_greedy_trajectories", "plot_hypergradients", "plot_per_step_hypergradients", "plot_regret", "plot_schedules", "regret",
    "speedup_at_matched_accuracy", "speedup_pairs", "to_latex", "to_markdown",
]
