"""analysis/parallel_fds.py: the noise, sign-agreement, incumbent and wall-clock tables, checked by hand."""
import math

import numpy as np
import pytest

from analysis.parallel_fds import agreement_table, components, incumbents, noise_table, wall_table


def test_components_are_named_by_kind_and_index():
    assert components({"lr": [1.0, 2.0], "momentum": [3.0]}) == {"lr[0]": 1.0, "lr[1]": 2.0, "momentum[0]": 3.0}
    assert components({"lr": [[1.0], [2.0]]}) == {"lr[0,0]": 1.0, "lr[1,0]": 2.0}


def test_noise_is_the_spread_across_draws_averaged_over_seeds():
    records = [
        {"seed": 0, "schedule": "s", "runs": [{"lr": [1.0]}, {"lr": [3.0]}, {"lr": [-1.0]}]},  # mean 1, var 4, one flip of 3
        {"seed": 1, "schedule": "s", "runs": [{"lr": [2.0]}, {"lr": [2.0]}, {"lr": [2.0]}]},  # mean 2, var 0
    ]
    (row,) = noise_table(records).to_dict("records")
    assert row["component"] == "lr[0]" and row["seeds"] == 2
    assert row["mean"] == pytest.approx(1.5) and row["variance"] == pytest.approx(2.0) and row["std"] == pytest.approx(math.sqrt(2))
    assert row["|mean| / std"] == pytest.approx(1.5 / math.sqrt(2))
    assert row["one run's sign differs (%)"] == pytest.approx(100 * (1 / 3 + 0) / 2)


def test_agreement_of_k_runs_with_the_runs_left_out():
    runs = [{"lr": [1.0, -1.0]}, {"lr": [1.0, 1.0]}, {"lr": [1.0, -3.0]}, {"lr": [-5.0, -1.0]}]
    table = agreement_table([{"seed": 0, "schedule": "s", "runs": runs}], ks=(1, 2)).set_index("K")
    # K=1, run i against the mean of the other three: [-1, -1] (1 of 2), [-1, -5/3] (0), [-1, -1/3] (1 of 2), [1, -1] (1 of 2)
    assert table.loc[1, "groups"] == 4 and table.loc[1, "sign agreement, mean of K (%)"] == 37.5
    # K=2: runs 0+1 mean [1, 0] vs [-2, -2]: 0 of 2; runs 2+3 mean [-2, -2] vs [1, 0]: 0 of 2
    assert table.loc[2, "groups"] == 2 and table.loc[2, "sign agreement, mean of K (%)"] == 0.0
    # sign votes of runs 0+1: [1, 0]; of runs 2+3: [0, -1] vs [1, 0]: 0 of 2 agree
    assert table.loc[2, "sign agreement, sign vote of K (%)"] == 0.0 and table.loc[2, "reference runs"] == 2


def test_the_incumbent_after_each_step_is_the_best_validated_step_so_far():
    history = [
        {"outer_step": 1, "val_acc": 0.5, "val_loss": 1.0, "diverged": False, "schedule_used": "a"},
        {"outer_step": 2, "val_acc": 0.9, "val_loss": 0.1, "diverged": True, "schedule_used": "b"},  # diverged: never
        {"outer_step": 3, "val_acc": 0.5, "val_loss": 0.9, "diverged": False, "schedule_used": "c"},  # a tie, lower loss
        {"outer_step": 4, "val_acc": 0.5, "val_loss": 0.9, "diverged": False, "schedule_used": "d"},  # a full tie: the earlier
    ]
    assert [i["schedule"] for i in incumbents(history)] == ["a", "a", "c", "c"]
    assert incumbents([{**history[1]}]) == [None]


def test_wall_table_divides_by_outer_steps():
    table = wall_table([{"name": "K=2", "parallel": 2, "threads": 1, "outer_steps": 4, "inner_runs": 8, "compute_s": 10.0, "wall_clock_s": 6.0}])
    assert table["wall clock per outer step (s)"].tolist() == [1.5] and np.isclose(table["compute (s)"].iloc[0], 10.0)
