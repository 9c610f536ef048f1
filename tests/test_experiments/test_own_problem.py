"""A user's own problem in the comparison and the docs: `fds-tune compare --problem module:function` trains the network
that tests/test_fds_tune/test_problem_user.py defines with FDS, random search and HD; the README's example runs as written;
experiments/own_problem.py's factory builds its problem."""
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from experiments.cli import main
from fds_tune import Problem, ProblemConfig

ROOT = Path(__file__).resolve().parents[2]
FACTORY = "tests.test_fds_tune.test_problem_user:make_problem"  # importable from the repository root, as Ray workers are
TINY = ["--set", "epochs=[1]", "--set", "retrain_epochs=1", "--set", "batch_size=16", "--max-epochs", "1", "--budget", "1", "--samples", "1"]


@pytest.mark.e2e
def test_compare_trains_the_users_problem_with_every_method_asked(ray_session, tmp_path, capsys):
    out = tmp_path / "own"
    argv = ["compare", "--preset", "digits", "--problem", FACTORY, "--methods", "fds", "random", "hd", "--out", str(out), *TINY]
    assert main(argv) == 0, capsys.readouterr().err
    csv = pd.read_csv(out / "results.csv")
    assert set(csv["method"]) == {"fds", "random", "hd"}
    for experiment in ("fds-seed0", "random-seed0", "hd-seed0"):
        params = [json.loads(p.read_text()) for p in (out / "ray" / experiment).glob("*/params.json")]
        assert params and all(p["user_problem"] == FACTORY for p in params)  # every trial, the hand-overs too
    assert json.loads((out / "calibration.json").read_text())["problem"]["user_problem"] == FACTORY
    # the user's problem has 3 classes and 48 test images: every test accuracy is a multiple of 1/48
    assert all(abs(a * 48 - round(a * 48)) < 1e-9 for a in csv["test_acc"].dropna())
    assert csv.loc[csv["method"] == "fds", "retrain_test_acc"].notna().any()


@pytest.mark.parametrize(
    "problem, match",
    [
        ("no_colon", r"problem: got 'no_colon'; must be 'module:function'"),
        ("fds_tune.nowhere:make", r"user_problem: got 'fds_tune.nowhere:make'; must be 'module:function' importable here"),
    ],
)
def test_a_bad_problem_fails_in_one_line_before_any_training(problem, match, tmp_path, capsys):
    assert main(["compare", "--preset", "digits", "--problem", problem, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"fds-tune: error: .*\n", err) and re.search(match, err)
    assert not (tmp_path / "x").exists()


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Your own problem") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.e2e
def test_the_readme_example_runs_and_prints_a_learned_schedule(ray_session, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_example"}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    schedule = eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(schedule) == {"lr", "momentum", "weight_decay"} and len(schedule["lr"]) == 2
    assert schedule["lr"][0] > 0  # learned from 0: FDS moved it


def test_the_example_scripts_problem_builds():
    problem = Problem(ProblemConfig(device="cpu", user_problem="experiments.own_problem:make_problem"))
    assert problem.n_train == 512 and problem.num_classes == 4
