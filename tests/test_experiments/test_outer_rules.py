"""experiments/outer_rules.py: a tiny real run on digits (the table's arithmetic: tests/test_analysis/test_outer_rules.py)."""
import json

import pandas as pd

from experiments.outer_rules import main
from fds_tune import FDSLearner, fds_config

TINY = {"preset": "digits", "epochs": [1, 2], "retrain_epochs": 2}


def test_a_tiny_run_writes_csv_table_and_resumes(tmp_path):
    problems = {"digits": (TINY, None)}
    df = main(str(tmp_path), problems, rules=("sign", "rprop"), seeds=(0,))
    assert df[["rule", "seed", "outer_steps"]].values.tolist() == [["sign", 0, 2], ["rprop", 0, 2]]
    csv = pd.read_csv(tmp_path / "outer_rules.csv")
    assert csv["final_test_acc"].tolist() == df["final_test_acc"].tolist()
    md = (tmp_path / "outer_rules.md").read_text().splitlines()
    assert md[0].startswith("| problem | rule | seeds |") and len(md) == 4
    # the reporting hand-overs never steer the run: the same learner alone ends with the same schedule,
    # and its own final retraining (final="incumbent") is the last reported hand-over
    learner = FDSLearner(fds_config({**TINY, "outer_rule": "sign", "seed": 0}))
    while not learner.done:
        learner.step()
    rec = json.loads((tmp_path / "runs" / "digits_sign_0.json").read_text())
    assert rec["last_schedule"] == learner.schedule.as_lists() and rec["incumbent"] == learner.incumbent
    assert rec["steps"][-1]["handover_test_acc"] == learner.retrain()["retrain_test_acc"]
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    main(str(tmp_path), problems, rules=("sign", "rprop"), seeds=(0,), resume=True)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()} == written
