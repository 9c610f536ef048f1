"""experiments/cli.py: every error is one line on stderr, ``fds-tune: error: ...``, with exit status 2."""
import re
import subprocess
import sys

import pytest

from experiments import cli
from experiments.cli import main

ONE_LINE_ERROR = re.compile(r"fds-tune: error: [^\n]+\n")


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--preset", "imagenet"], "invalid choice: 'imagenet'"),
        (["--preset", "digits", "--methods", "gridsearch"], "invalid choice: 'gridsearch'"),
        (["--preset", "digits", "--seeds", "0"], "argument --seeds: got 0; must be an int >= 1"),
        (["--preset", "digits", "--seeds", "two"], "argument --seeds: got 'two'; must be an int >= 1"),
        (["--preset", "digits", "--seed-list", "-1"], "argument --seed-list: got -1; must be an int >= 0"),
        (["--preset", "digits", "--seed-list", "2", "x"], "argument --seed-list: got 'x'; must be an int >= 0"),
        (["--preset", "digits", "--seed-list"], "argument --seed-list: expected at least one argument"),
        (["--preset", "digits", "--seeds", "2", "--seed-list", "5"], "argument --seed-list: not allowed with argument --seeds"),
        (["--preset", "digits", "--gpus-per-trial", "0"], r"argument --gpus-per-trial: got 0.0; must be a finite number > 0 and <= 1"),
        (["--preset", "digits", "--gpus-per-trial", "2"], r"argument --gpus-per-trial: got 2.0; must be a finite number > 0 and <= 1"),
        (["--preset", "digits", "--budget", "-3"], r"argument --budget: got -3.0; must be a finite number > 0"),
        (["--preset", "digits", "--budget", "inf"], r"argument --budget: got inf; must be a finite number > 0"),
        (["--preset", "digits", "--set", "epochs"], "argument --set: got 'epochs'; must be KEY=VALUE"),
        (["--preset", "digits", "--range", "lr=0.3"], "argument --range: got 'lr=0.3'; must be KIND=LOW,HIGH"),
        (["--preset", "digits", "--range", "lr=a,b"], "argument --range: got 'lr=a,b'; must be KIND=LOW,HIGH"),
        (["--preset", "digits", "--bogus"], "unrecognized arguments: --bogus"),
        (["--preset", "digits", "--parallel", "0"], "argument --parallel: got 0; must be an int >= 1"),
    ],
)
def test_bad_arguments_exit_with_a_clear_message(argv, match, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert ONE_LINE_ERROR.fullmatch(err), err
    assert re.search(match, err)
    assert re.search(r" \(see 'fds-tune( compare)? --help'\)$", err.rstrip())  # unknown options: the top parser's


def test_arguments_reach_compare_as_values(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "compare", lambda preset, **kwargs: calls.append((preset, kwargs)))
    argv = ["compare", "--preset", "digits", "--seeds", "2", "--budget", "4", "--methods", "fds", "hd", "--set", "epochs=[1,2]",
            "--set", "data_root=/data", "--range", "lr=0,0.3", "--out", "o"]
    assert cli.main(argv) == 0
    ((preset, kwargs),) = calls
    assert preset == "digits"
    assert kwargs == {
        "out": "o", "seeds": 2, "methods": ["fds", "hd"], "budget_epochs": 4.0, "max_epochs": None, "num_samples": None,
        "overrides": {"epochs": [1, 2], "data_root": "/data"}, "ranges": {"lr": (0.0, 0.3)}, "resume": False, "address": None,
        "num_cpus": None, "gpus_per_trial": None, "problem": None, "budget_ratio": None, "parallel": None,
    }
    assert cli.main([*argv, "--problem", "mypkg.module:make_problem"]) == 0
    assert calls[-1][1]["problem"] == "mypkg.module:make_problem"


def test_a_seed_list_and_a_gpu_share_reach_compare(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "compare", lambda preset, **kwargs: calls.append(kwargs))
    assert cli.main(["compare", "--preset", "digits", "--seed-list", "2", "5", "--gpus-per-trial", "0.5"]) == 0
    (kwargs,) = calls
    assert kwargs["seeds"] == [2, 5] and kwargs["gpus_per_trial"] == 0.5
    assert cli.main(["compare", "--preset", "digits"]) == 0
    assert calls[-1]["seeds"] == 1 and calls[-1]["gpus_per_trial"] is None  # seed 0 only, as before


def test_repeated_seeds_fail_before_anything_runs(tmp_path, capsys):
    assert main(["compare", "--preset", "digits", "--out", str(tmp_path / "x"), "--seed-list", "2", "2"]) == 2
    err = capsys.readouterr().err
    assert ONE_LINE_ERROR.fullmatch(err), err
    assert "seeds: got [2, 2]; must be an int >= 1 (that many seeds, from 0) or a non-empty list of distinct ints >= 0" in err
    assert not (tmp_path / "x").exists()


def test_seed_overrides_point_at_the_seed_options(tmp_path, capsys):
    assert main(["compare", "--preset", "digits", "--out", str(tmp_path / "x"), "--set", "seed=3"]) == 2
    assert "overrides['seed']: got 3; must be absent (the comparison sets it through seeds=, --seeds or --seed-list)" in capsys.readouterr().err


def _report_error(out, capsys) -> str:
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert ONE_LINE_ERROR.fullmatch(err), err
    return err


def test_report_on_a_missing_directory_says_how_to_get_results(tmp_path, capsys):
    out = tmp_path / "nowhere"
    err = _report_error(out, capsys)
    assert err == (
        f"fds-tune: error: out: got '{out}'; must be a comparison directory holding results in {out / 'ray'} "
        f"(from 'fds-tune compare --out {out}') or their results.csv; run a comparison first\n"
    )


def test_report_on_an_empty_directory_says_how_to_get_results(tmp_path, capsys):
    err = _report_error(tmp_path, capsys)
    assert f"must be a comparison directory holding results in {tmp_path / 'ray'}" in err and "run a comparison first" in err


def test_report_on_a_comparison_without_results_yet(tmp_path, capsys):
    (tmp_path / "ray" / "fds-seed0").mkdir(parents=True)  # killed before any trial reported
    assert "paths: got " in (err := _report_error(tmp_path, capsys)) and "must be directories holding trial results" in err


def test_the_command_prints_one_line_and_exits_2(tmp_path):
    """As a process (``python -m experiments.cli``, what the ``fds-tune`` script runs): no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cli", "report", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert ONE_LINE_ERROR.fullmatch(proc.stderr), proc.stderr
