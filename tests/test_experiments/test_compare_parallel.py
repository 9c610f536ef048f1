"""`fds-tune compare --parallel K`: FDS's inner runs side by side (FDSSearcher) in the comparison, its compute
over every worker and its wall clock beside it; the Ray run is marked e2e."""
import json

import pandas as pd
import pytest

from experiments import cli
from experiments.cli import main
from experiments.compare import COMPARE_PRESETS, CompareSpec, compare, fds_compute_and_wall_clock, fds_trials
from fds_tune.config import fds_config


def test_parallel_reaches_compare(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "compare", lambda preset, **kwargs: calls.append(kwargs))
    assert cli.main(["compare", "--preset", "digits", "--parallel", "4"]) == 0
    assert calls[-1]["parallel"] == 4


def test_bad_parallel_settings_fail_before_any_training(tmp_path):
    with pytest.raises(ValueError, match=r"parallel: got 0; must be an int >= 1 \(FDS's inner runs per outer step\) or None"):
        compare("digits", out=tmp_path, parallel=0)
    with pytest.raises(ValueError, match=r"fds_parallel: got 0; must be an int >= 1"):
        CompareSpec(max_epochs=1, budget_epochs=1.0, fds_parallel=0)
    assert all(spec.fds_parallel == 1 for spec in COMPARE_PRESETS.values())  # the presets run FDS as one trial


def test_an_fds_experiment_has_one_trial_or_parallel_per_outer_step_and_a_retraining():
    fds = fds_config({"preset": "digits", "epochs": [1, 2, 2], "retrain_epochs": 1})
    assert fds_trials(fds, 1) == 1 and fds_trials(fds, 2) == 7
    assert fds_trials(fds_config({"preset": "digits", "epochs": [1, 2], "retrain_epochs": 0}), 4) == 8


def test_compute_is_every_trials_last_compute_and_the_wall_clock_spans_them(tmp_path):
    rows = {
        "a": [{"trial_id": "a", "timestamp": 100, "time_total_s": 4.0, "compute_s": 3.5}],
        "b": [{"trial_id": "b", "timestamp": 103, "time_total_s": 5.0, "compute_s": 4.0}],
        "c": [{"trial_id": "c", "timestamp": 104, "time_total_s": 1.0, "compute_s": 0.5},
              {"trial_id": "c", "timestamp": 107, "time_total_s": 4.0, "compute_s": 2.0}],  # cumulative: its last counts
    }
    for name, results in rows.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text("\n".join(json.dumps(r) for r in results) + "\n{\"cut off")
    assert fds_compute_and_wall_clock(tmp_path) == {"trials": 3, "compute_s": 3.5 + 4.0 + 2.0, "wall_clock_s": 107 - 96.0}


@pytest.mark.e2e
def test_compare_runs_fds_with_two_inner_runs_per_outer_step(ray_session, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--preset", "digits", "--out", str(out), "--methods", "fds", "--parallel", "2",
            "--set", "epochs=[1,1]", "--set", "retrain_epochs=1", "--budget", "1"]
    assert main(argv) == 0
    csv = pd.read_csv(out / "results.csv")
    fds = csv[csv["method"] == "fds"]
    assert fds["trial"].nunique() == 2 * 2 + 1 and fds["retrain_test_acc"].notna().sum() == 1
    total = fds.groupby("trial")["compute_s"].max().sum()
    assert fds["run_compute_s"].iloc[-1] == pytest.approx(total)  # compute: every worker's
    record = json.loads((out / "fds_wall_clock.json").read_text())["fds-seed0"]
    assert record["parallel"] == 2 and record["trials"] == 5 and record["compute_s"] == pytest.approx(total)
    assert 0 < record["wall_clock_s"] < 600
    assert "[fds-seed0] 2 inner run(s) per outer step: compute" in capsys.readouterr().out
    assert "| fds |" in (out / "table.md").read_text()
