"""experiments/gpu_reproduce.py: its one-line errors before any work, its estimate, and the whole script end to
end on CPU on CIFAR-10 files in the real format (through real Ray Tune: marked e2e)."""
import json
import re

import pandas as pd
import pytest
import torch

from experiments.gpu_reproduce import main
from fds_tune.results import METHODS
from support.datasets import write_cifar10

# One method of each kind of cost: FDS, a black-box search, HD's and greedy's grids, a lr-free run.
RUN_METHODS = ["fds", "random", "hd", "greedy", "schedulefree"]
# A tiny cifar10_paper (WRN-16-1 on 32x32 images, as on a GPU): 40 training images (38 after the validation
# split: 4 steps of 8 an epoch), two 1-epoch outer steps, 1-epoch trials and hand-overs, 2 black-box epochs.
TINY = ["--set", "train_size=40", "--set", "batch_size=8", "--set", "epochs=[1,1]", "--set", "retrain_epochs=1",
        "--max-epochs", "1", "--budget", "2", "--steps", "7", "--rounds", "1"]
ONE_LINE_ERROR = re.compile(r"gpu_reproduce: error: [^\n]+\n")


@pytest.mark.parametrize(
    "argv, match",
    [
        ([], r"--data-root: got None; must be given \(only --estimate-only runs without the data\)"),
        (["--data-root", "/nonexistent/cifar"], r"--data-root: got '/nonexistent/cifar'; must be an existing directory"),
        (["--data-root", "{empty}"], r"--data-root: got '.*'; must be a directory holding cifar10 without a download: DIR/cifar-10-batches-py/"),
        (["--estimate-only", "--set", "seed=2"], r"--set seed: got 2; must be absent \(set through --seeds\)"),
        (["--estimate-only", "--set", "data_root=/x"], r"--set data_root: got '/x'; must be absent \(set through --data-root\)"),
        (["--estimate-only", "--set", "bogus=1"], r"config: got 'bogus'; must be one of the allowed keys"),
        (["--estimate-only", "--set", "batch_size=0"], r"batch_size: got 0; must be an int >= 1"),
        (["--seeds", "0"], r"argument --seeds: got 0; must be an int >= 1"),
        (["--gpus-per-trial", "2"], r"argument --gpus-per-trial: got 2.0; must be a finite number > 0 and <= 1"),
        (["--methods", "grid"], r"argument --methods: invalid choice: 'grid'"),
    ],
)
def test_bad_arguments_fail_in_one_line_before_any_work(argv, match, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{empty}", str(tmp_path / "empty")) for a in argv]
    with pytest.raises(SystemExit) as exc:  # argparse's errors exit; the script's return 2
        raise SystemExit(main([*argv, "--out", str(tmp_path / "out")]))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert ONE_LINE_ERROR.fullmatch(err) and re.search(match, err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU can be shared")
def test_a_gpu_share_is_refused_without_a_gpu(tmp_path, capsys):
    assert main(["--estimate-only", "--gpus-per-trial", "0.5", "--out", str(tmp_path / "out")]) == 2
    assert "--gpus-per-trial: got 0.5; must be absent on a machine without a GPU" in capsys.readouterr().err


def test_an_estimate_alone_measures_and_writes_without_ray(tmp_path, capsys, one_torch_thread):
    write_cifar10(tmp_path / "data", n_train_per_batch=20, n_test=32)
    out = tmp_path / "est"
    assert main(["--data-root", str(tmp_path / "data"), "--out", str(out), "--estimate-only", "--seeds", "2", *TINY]) == 0
    e = json.loads((out / "estimate.json").read_text())
    assert (e["n_train"], e["steps_per_epoch"], e["handover_steps_per_epoch"], e["seeds"]) == (40, 4, 5, 2)
    assert set(e["methods"]) == set(METHODS) and not (out / "ray").exists()
    assert "device-hours" in capsys.readouterr().out


@pytest.mark.e2e
def test_the_script_runs_the_paper_preset_end_to_end_on_cifar_format_data(ray_session, tmp_path, capsys):
    write_cifar10(tmp_path / "data", n_train_per_batch=20, n_test=32)  # 100 training images, 32 test images
    out = tmp_path / "cifar"
    argv = ["--data-root", str(tmp_path / "data"), "--out", str(out), "--seeds", "1", "--methods", *RUN_METHODS, *TINY]
    assert main(argv) == 0
    e = json.loads((out / "estimate.json").read_text())
    assert e["preset"] == "cifar10_paper" and e["device_type"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert e["fds_mode"] == "forward" and (e["steps"], e["rounds"]) == (7, 1)
    assert (e["n_train"], e["steps_per_epoch"], e["handover_steps_per_epoch"]) == (40, 4, 5)
    assert (e["budget_epochs"], e["max_epochs"], e["seeds"], e["concurrent"]) == (2, 1, 1, 1)
    assert all(e["step_costs"][k] > 0 for k in ("plain_s", "fds_s", "greedy_s"))
    assert list(e["methods"]) == RUN_METHODS
    assert e["methods"]["fds"]["search_epochs"] == 2 and e["methods"]["random"]["search_epochs"] == 2
    assert e["methods"]["hd"]["runs"] == 3 and e["methods"]["greedy"]["step"] == "greedy_s"
    assert e["device_hours"] == pytest.approx(sum(r["device_hours"] for r in e["methods"].values())) and e["device_hours"] > 0
    assert e["overrides"]["data_root"] == str(tmp_path / "data") and e["overrides"]["train_size"] == 40
    assert (out / "estimate.md").is_file() and (out / "table.md").is_file()
    csv = pd.read_csv(out / "results.csv")
    assert set(csv["method"]) == set(RUN_METHODS)
    assert (csv[csv["method"] == "fds"]["lr_6"].notna()).all()  # 7 lr values, as in the paper
    table = (out / "table.md").read_text()
    assert all(re.search(rf"^\|\s*{m}\b", table, re.MULTILINE) for m in RUN_METHODS), table
    printed = capsys.readouterr().out
    assert "device-hours" in printed and f"fds-tune report {out}" in printed
