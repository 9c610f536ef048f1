"""analysis/outer_rules.py: the outer-rule table's arithmetic on hand-made runs."""
import math

import pytest

from analysis.outer_rules import markdown, rule_table, runs_frame


def record(rule, seed, accs, failed_last=False, last_acc=0.5, last_failed=False):
    steps = [{"outer_step": i + 1, "plain_epochs": float(i + 1), "handover_test_acc": a, "handover_failed": False}
             for i, a in enumerate(accs)]
    steps[-1]["handover_failed"] = failed_last
    return {"problem": "p", "rule": rule, "seed": seed, "steps": steps, "retrain_epochs": 1,
            "last_test_acc": last_acc, "last_failed": last_failed}


RECORDS = [
    record("a", 0, [0.5, 0.9, 0.952]),  # below the level (.96 - .01) at step 2: stays from step 3
    record("a", 1, [0.955, 0.96, 0.968], last_acc=0.1, last_failed=True),  # stays from step 1
    record("b", 0, [0.96, 0.955, 0.94], failed_last=True),  # ends below: never reaches
]


def test_steps_and_compute_until_the_handover_stays_within_one_point_of_the_best():
    df = runs_frame(RECORDS)
    assert df["level"].tolist() == pytest.approx([0.95] * 3)  # best mean final: rule a, (.952 + .968) / 2
    assert df["steps_to_reach"].tolist()[:2] == [3, 1] and math.isnan(df["steps_to_reach"][2])
    assert df["compute_to_reach"].tolist()[:2] == [4.0, 2.0]  # the outer steps' plain epochs + one hand-over
    assert df["plain_epochs"].tolist() == [4.0, 4.0, 4.0]
    table = rule_table(df).set_index("rule")
    sd = math.sqrt(2)  # the std (ddof 1) of 3 and 1, and of 4 and 2
    assert table.loc["a", "outer steps to within 1 pt"] == f"2.0 ± {sd:.1f}"
    assert table.loc["a", "plain epochs to within 1 pt"] == f"3.0 ± {sd:.1f}"
    assert table.loc["b", "outer steps to within 1 pt"] == "– (0/1 reached)"
    assert table.loc["a", "final acc. incumbent (%)"] == f"96.00 ± {100 * 0.016 / math.sqrt(2):.2f}"
    assert table.loc["a", "final acc. last update (%)"] == f"30.00 ± {100 * 0.4 / math.sqrt(2):.2f}"
    assert table["collapses incumbent"].tolist() == [0, 1] and table["collapses last"].tolist() == [1, 0]
    lines = markdown(rule_table(df)).splitlines()
    assert lines[0] == "| " + " | ".join(rule_table(df).columns) + " |" and lines[1].startswith("| --- |") and len(lines) == 4
    assert lines[2].startswith("| p | a | 2 | 2.0 ± 1.4 |")
