"""experiments/compare.py: the preset table, its validation, seeds, trial resources and the compute caption, and
`fds-tune compare` end to end through real Ray Tune on tiny budgets (those tests are marked e2e)."""
import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import analysis
from experiments.cli import main
from experiments.compare import COMPARE_PRESETS, CompareSpec, Progress, compare, compute_caption, seed_list, trial_resources
from fds_tune import PRESETS
from fds_tune.results import EPOCHS, LR_FREE_METHODS, METHODS, METRIC, POPULATION_METHODS

ROOT = Path(__file__).resolve().parents[2]
# dadapt and prodigy train through the same run as schedulefree, and pb2 through the same members and hand-over as
# pbt (tests/test_baselines/test_lr_free.py and test_pbt.py cover each through Ray): the shared digits run leaves them
# out to keep the suite short.
RUN_METHODS = [m for m in METHODS if m not in ("dadapt", "prodigy", "pb2")]
RUN_POPULATION = [m for m in POPULATION_METHODS if m in RUN_METHODS]
TINY = ["--set", "epochs=[1,1]", "--set", "retrain_epochs=1", "--max-epochs", "2", "--budget", "4", "--range", "lr=0,0.5"]


def test_compare_presets_are_the_fds_presets():
    assert set(COMPARE_PRESETS) <= set(PRESETS)
    assert "cifar10_paper" in COMPARE_PRESETS and "paper_cifar10" not in COMPARE_PRESETS  # one name for the paper's setup


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_epochs": 0}, r"max_epochs: got 0; must be an int >= 1"),
        ({"num_samples": 2.0}, r"num_samples: got 2.0; must be an int >= 1"),
        ({"budget_epochs": 0}, r"budget_epochs: got 0; must be a finite number > 0"),
        ({"budget_epochs": True}, r"budget_epochs: got True; must be a finite number > 0"),
        ({"budget_ratio": 0}, r"budget_ratio: got 0; must be a finite number > 0"),
        ({"budget_ratio": 5.0}, r"budget_epochs: got 1.0; must be given when budget_ratio is not \(budget_ratio=5.0\): exactly one"),
        ({"budget_epochs": None}, r"budget_epochs: got None; must be given when budget_ratio is not \(budget_ratio=None\)"),
        ({"population": 1}, r"population: got 1; must be an int >= 2 or None \(no cap\)"),
    ],
)
def test_compare_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CompareSpec(**{"max_epochs": 1, "num_samples": 1, "budget_epochs": 1.0, **kwargs})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"preset": "paper_cifar10"}, r"preset: got 'paper_cifar10'; must be one of \['digits', 'fashion_mnist_small', 'fashion_mnist_paper', 'fashion_mnist', 'cifar10_paper'\]"),
        ({"budget_ratio": -1}, r"budget_ratio: got -1; must be a finite number > 0"),
        ({"budget_ratio": 2, "budget_epochs": 3}, r"budget_ratio: got 2; must be None when budget_epochs is given"),
        ({"budget_ratio": 2, "methods": ["random"]}, r"methods: got \['random'\]; must be a list with 'fds' \(the budget is 2x FDS's compute"),
        ({"seeds": 0}, r"seeds: got 0; must be an int >= 1 \(that many seeds, from 0\) or a non-empty list of distinct ints >= 0"),
        ({"seeds": [2, 2]}, r"seeds: got \[2, 2\]; must be an int >= 1 .* or a non-empty list of distinct ints >= 0"),
        ({"seeds": [1, -1]}, r"seeds: got \[1, -1\]; must be"),
        ({"seeds": []}, r"seeds: got \[\]; must be"),
        ({"seeds": "25"}, r"seeds: got '25'; must be"),
        ({"seeds": [1.0]}, r"seeds: got \[1.0\]; must be"),
        ({"seeds": True}, r"seeds: got True; must be"),
        ({"gpus_per_trial": 0}, r"gpus_per_trial: got 0; must be a finite number > 0 and <= 1"),
        ({"gpus_per_trial": 2}, r"gpus_per_trial: got 2; must be a finite number > 0 and <= 1"),
        ({"methods": []}, r"methods: got \[\]; must be a non-empty list of distinct names from \['fds'"),
        ({"methods": ["fds", "fds"]}, r"methods: got \['fds', 'fds'\]; must be a non-empty list of distinct names"),
        ({"methods": ["grid"]}, r"methods: got \['grid'\]; must be a non-empty list of distinct names"),
        ({"budget_epochs": -1}, r"budget_epochs: got -1; must be a finite number > 0"),
        ({"max_epochs": 0}, r"max_epochs: got 0; must be an int >= 1"),
        ({"overrides": {"seed": 3}}, r"overrides\['seed'\]: got 3; must be absent \(the comparison sets it through seeds=, --seeds or --seed-list\)"),
        ({"overrides": {"preset": "fashion_mnist"}}, r"overrides\['preset'\]: got 'fashion_mnist'; must be absent"),
        ({"overrides": {"bounds": {"lr": [0, 2]}}}, r"overrides\['bounds'\]: got .*; must be absent \(the comparison sets it through ranges=, --range\)"),
    ],
)
def test_compare_rejects_bad_arguments_before_any_training(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        compare(**{"preset": "digits", "out": tmp_path / "x", **kwargs})
    assert not (tmp_path / "x").exists()


def test_the_population_spends_the_budget_up_to_its_cap():
    from experiments.compare import population_size

    assert population_size(CompareSpec(max_epochs=5, budget_epochs=52), 52) == 10  # the members 52 epochs train for 5
    assert population_size(CompareSpec(max_epochs=5, budget_epochs=52, population=4), 52) == 4
    assert population_size(CompareSpec(max_epochs=5, budget_epochs=3), 3) == 2  # at least two members
    assert population_size(CompareSpec(max_epochs=5, budget_epochs=3, num_samples=7), 3) == 7


def test_a_budget_ratio_is_that_multiple_of_fds_compute_in_plain_epochs(tmp_path):
    """fds_budget reads FDS's total compute (its last result: outer steps and retraining) and the calibration."""
    from experiments.compare import CALIBRATION_FILE, fds_budget

    trial = tmp_path / "ray" / "fds-seed0" / "FDSTrainable_x"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text("{}")
    row = {"trial_id": "x", "method": "fds", "seed": 0, "val_acc": 0.8, "val_loss": 0.5, "test_acc": 0.79, "diverged": False}
    lines = [{**row, "training_iteration": 1, "timestamp": 1.0, "compute_s": 4.0, "epochs_total": 1},
             {**row, "training_iteration": 2, "timestamp": 2.0, "compute_s": 12.0, "epochs_total": 6, "retrain_test_acc": 0.8}]
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"plain_epoch_s": 0.5}))
    printed = []
    assert fds_budget(tmp_path / "ray" / "fds-seed0", 5.0, tmp_path, printed.append) == pytest.approx(5 * 12.0 / 0.5)
    assert "12.0 s = 24.0 plain epochs; black-box budget 5x = 120 epochs" in printed[0]


def test_seeds_are_a_count_from_zero_or_the_seeds_themselves():
    assert seed_list(1) == [0]
    assert seed_list(3) == [0, 1, 2]
    assert seed_list([5, 2]) == [5, 2]  # in the order given
    assert seed_list((0,)) == [0]


@pytest.mark.parametrize(
    "cluster, share, expected",
    [
        ({"CPU": 2.0}, None, {"cpu": 1}),  # no GPU: as before, 1 CPU per trial
        ({"CPU": 16.0, "GPU": 1.0}, None, {"cpu": 1, "gpu": 1}),  # one trial per GPU
        ({"CPU": 16.0, "GPU": 2.0}, 0.25, {"cpu": 1, "gpu": 0.25}),
        ({"CPU": 16.0, "GPU": 0.0}, None, {"cpu": 1}),
    ],
)
def test_every_trial_requests_a_gpu_share_where_the_cluster_has_gpus(cluster, share, expected):
    assert trial_resources(cluster, share) == expected


@pytest.mark.parametrize(
    "cluster, share, match",
    [
        ({"CPU": 2.0}, 0.5, r"gpus_per_trial: got 0.5; must be None on a Ray cluster without GPUs"),
        ({"CPU": 2.0, "GPU": 1.0}, 1.5, r"gpus_per_trial: got 1.5; must be a finite number > 0 and <= 1"),
        ({"CPU": 2.0, "GPU": 1.0}, True, r"gpus_per_trial: got True; must be a finite number > 0 and <= 1"),
    ],
)
def test_trial_resources_reject_bad_shares(cluster, share, match):
    with pytest.raises(ValueError, match=match):
        trial_resources(cluster, share)


@pytest.mark.parametrize(
    "resources, cluster, expected",
    [
        (
            {"cpus": [1.0], "gpus": [0.0]}, {"CPU": 2.0, "GPU": 0.0},
            "Compute: device-seconds of one trial's resources (1 CPU per trial), summed over a method's trials. "
            "On 2 CPUs and 0 GPUs, up to 2 trials could run at once: a black-box method's wall clock can be as little as 1/2 "
            "of its compute; FDS runs one trial at a time.",
        ),
        (
            {"cpus": [1.0], "gpus": [0.25]}, {"CPU": 16.0, "GPU": 1.0},
            "Compute: device-seconds of one trial's resources (1 CPU + 0.25 GPU per trial), summed over a method's trials. "
            "On 16 CPUs and 1 GPU, up to 4 trials could run at once: a black-box method's wall clock can be as little as 1/4 "
            "of its compute; FDS runs one trial at a time.",
        ),
        (  # CPUs can bind before GPUs do
            {"cpus": [1.0], "gpus": [0.25]}, {"CPU": 2.0, "GPU": 1.0}, "up to 2 trials could run at once",
        ),
        (
            {"cpus": [1.0], "gpus": [1.0]}, None,
            "Compute: device-seconds of one trial's resources (1 CPU + 1 GPU per trial), summed over a method's trials.",
        ),
        ({}, {"CPU": 2.0}, "(the resources were not recorded)"),  # results from before trials recorded them
    ],
)
def test_the_caption_says_what_compute_counts_and_how_many_trials_ran_at_once(resources, cluster, expected):
    caption = compute_caption(pd.DataFrame({"method": ["fds"] * len(resources.get("cpus", [0])), **resources}), cluster)
    assert expected in caption
    if expected.startswith("Compute"):
        assert caption == expected


def table_rows(markdown: str) -> dict[str, list[str]]:
    lines = [l for l in markdown.strip().splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return header, rows


def test_progress_counts_the_trials_the_budget_stopped(capsys):
    # Tune calls no on_trial_complete for the trials a stopper's stop_all ends: the experiment's end counts them
    from ray.tune.experiment import Trial

    progress = Progress("random seed 0", None, 4.0)
    trials = [Trial("ScheduleTrainable", stub=True, trial_id=i) for i in ("a", "b", "c")]
    progress.on_trial_result(1, trials, trials[0], {EPOCHS: 2.0, METRIC: 0.5})
    progress.on_trial_result(1, trials, trials[1], {EPOCHS: 2.0, METRIC: 0.75})
    progress.on_trial_complete(1, trials, trials[0])
    progress.on_experiment_end(trials)  # b was stopped by the budget; c never started
    lines = capsys.readouterr().out.splitlines()
    assert [l.split(" | ")[:3] for l in lines] == [["[random seed 0] trials 1", "best val_acc 0.7500", "4 epochs"],
                                                   ["[random seed 0] trials 2", "best val_acc 0.7500", "4 epochs"]]
    progress.on_experiment_end(trials)  # nothing left to count
    assert capsys.readouterr().out == ""


@pytest.fixture(scope="module")
def digits_run(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "digits"
    with (out.parent / "stdout.txt").open("w") as log, pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stdout", log)
        assert main(["compare", "--preset", "digits", "--out", str(out), *TINY, "--methods", *RUN_METHODS]) == 0
    return out


@pytest.mark.e2e
def test_progress_says_where_each_method_is(digits_run):
    printed = (digits_run.parent / "stdout.txt").read_text()
    for method in RUN_METHODS:
        assert f"== {method}, seed 0" in printed
        assert re.search(rf"\[{method} seed 0\] trials \d+", printed), method  # where it ended, even when the budget stopped it
    assert re.search(r"\[random seed 0\] trials [12] \| best val_acc 0\.\d{4} \| \d+ epochs \| \d+s elapsed, ~\d+s left", printed)
    assert re.search(r"\[fds seed 0\] step 1 \| val_acc 0\.\d{4} \| 1 epochs", printed)
    assert re.search(r"\[fds seed 0\] step 2 \| val_acc 0\.\d{4} \| \d+ epochs", printed)


@pytest.mark.e2e
def test_every_method_runs_and_the_table_comes_from_the_csv(digits_run, capsys):
    out = digits_run
    markdown = (out / "table.md").read_text()
    header, rows = table_rows(markdown)
    assert sorted(rows) == sorted(RUN_METHODS)  # one row per method, every method present
    assert header[:5] == ["Method", "Runs", "Engine", "Best val. acc. (%)", "Test acc. (%)"]
    assert rows["fds"]["Engine"] == "forward" and rows["random"]["Engine"] == "—"  # FDS says which engine ran
    assert any(h.startswith("FDS speedup") for h in header) and "Device-hours" in header and "Plain-epoch equiv." in header
    csv = pd.read_csv(out / "results.csv")
    assert set(csv["method"]) == set(RUN_METHODS)
    # the table is computed from the CSV: recomputing it gives the same text, and a cell checks out by hand
    assert analysis.to_markdown(analysis.comparison_table(csv)).strip() == markdown.strip()
    fds = csv[csv["method"] == "fds"]
    assert float(rows["fds"]["Test acc. (%)"]) == pytest.approx(100 * fds["retrain_test_acc"].dropna().iloc[-1], abs=0.006)
    searched = csv[(csv["method"] == "random") & (csv["handover"] != True)]  # noqa: E712 (a hand-over is not a trial)
    assert int(rows["random"]["Trials / outer steps"]) == searched["trial"].nunique()
    for plot in ("regret.png", "schedules.png", "hypergradients.png", "greedy.png"):
        assert (out / plot).stat().st_size > 1000


@pytest.mark.e2e
def test_black_box_stays_within_its_budget(digits_run):
    csv = pd.read_csv(digits_run / "results.csv")
    for method in ("random", "hyperband", "bohb", "tpe", "optuna", "asha"):
        rows = csv[(csv["method"] == method) & (csv["handover"] != True)]  # noqa: E712 (the search, not its hand-over)
        per_trial = rows.groupby("trial")["epochs_total"].max()
        assert per_trial.max() <= 2  # --max-epochs
        # every black-box method spends the same budget, within one epoch per concurrently running trial (2 CPUs)
        assert 4 <= per_trial.sum() <= 4 + 2, method


@pytest.mark.e2e
def test_every_method_but_fds_hands_over_its_choice_by_validation(digits_run):
    """One hand-over per method: the search's best validated complete trial, retrained on the full training set for the
    preset's retraining epochs and tested once; its compute counts, and its test accuracy is the table's."""
    csv = pd.read_csv(digits_run / "results.csv")
    _, rows = table_rows((digits_run / "table.md").read_text())
    for method in [m for m in RUN_METHODS if m != "fds"]:
        runs = csv[csv["method"] == method]
        hand = runs[runs["handover"] == True]  # noqa: E712
        search = runs[runs["handover"] != True]  # noqa: E712
        assert hand["trial"].nunique() == 1 and hand["epochs_total"].max() == 1  # --set retrain_epochs=1
        assert hand["val_acc"].isna().all()  # trained on the validation split too: never chosen by validation
        chosen_from = search[search["done"] == True]  # noqa: E712 (completed trials, at their end)
        if method in POPULATION_METHODS:  # the best final member (each member's last result)
            chosen_from = search[search["iteration"] == search.groupby("trial")["iteration"].transform("max")]
        best = chosen_from[~chosen_from["diverged"]].sort_values(["val_acc", "val_loss"], ascending=[False, True], kind="stable").iloc[0]
        assert hand["trial"].iloc[0] == f"{best['trial']}-handover"
        final = hand["handover_test_acc"].dropna()
        assert len(final) == 1 and float(rows[method]["Test acc. (%)"].split()[0]) == pytest.approx(100 * final.iloc[0], abs=0.006)
        if method not in POPULATION_METHODS:  # a member's seconds are its lineage's: see test_population_methods_...
            assert runs["run_compute_s"].max() == pytest.approx(search.groupby("trial")["compute_s"].max().sum() + hand["compute_s"].max())
    calibration = json.loads((digits_run / "calibration.json").read_text())
    assert calibration["plain_epoch_s"] > 0 and (csv["plain_epoch_s"] == calibration["plain_epoch_s"]).all()


@pytest.mark.e2e
def test_population_methods_spend_the_budget_and_hand_over_the_followed_schedule(digits_run):
    """PBT and PB2: a population of budget / max_epochs = 2 members, 2 epochs each (every member's epochs count);
    the hand-over retrains the schedule the best final member followed (one value per epoch), labelled as the method."""
    csv = pd.read_csv(digits_run / "results.csv")
    for method in RUN_POPULATION:
        rows = csv[csv["method"] == method]
        search, hand = rows[rows["handover"] != True], rows[rows["handover"] == True]  # noqa: E712
        assert search["trial"].nunique() == 2 and search.groupby("trial")["epochs_total"].max().tolist() == [2.0, 2.0]
        assert search["run_epochs"].max() == 4.0  # --budget 4, spent exactly
        last = search[search["iteration"] == search.groupby("trial")["iteration"].transform("max")]
        best = last.sort_values(["val_acc", "val_loss"], ascending=[False, True], kind="stable").iloc[0]
        followed = ast.literal_eval(best["followed"])  # a dict column, as the CSV writes it
        replayed = json.loads((digits_run / "ray" / f"{method}-seed0" / "handover" / "params.json").read_text())
        assert {k: [replayed[f"{k}_{e}"] for e in range(2)] for k in followed} == followed and replayed["max_epochs"] == 2
        assert hand[["lr_0", "lr_1"]].iloc[-1].tolist() == followed["lr"]  # the hand-over's schedule: the followed one
        assert (search[[c for c in search.columns if c.startswith("lr_")]].dropna(axis=1) <= 0.5).all().all()  # --range lr=0,0.5
    learned = analysis.learned_schedules(analysis.load_results(digits_run / "ray"), ["fds", *RUN_POPULATION])
    assert set(learned["method"]) == {"fds", *RUN_POPULATION}  # the schedules plot shows them beside FDS's


@pytest.mark.e2e
def test_lr_free_methods_train_one_run_and_hand_over_the_same_optimizer(digits_run):
    csv = pd.read_csv(digits_run / "results.csv")
    for method in [m for m in LR_FREE_METHODS if m in RUN_METHODS]:
        rows = csv[csv["method"] == method]
        search, hand = rows[rows["handover"] != True], rows[rows["handover"] == True]  # noqa: E712
        assert search["trial"].nunique() == 1 and search["epochs_total"].tolist() == [1.0, 2.0]  # --max-epochs 2
        assert (search["effective_lr"] > 0).all() and (search["compute_s"] > 0).all()
        config = json.loads((digits_run / "ray" / f"{method}-seed0" / "handover" / "params.json").read_text())
        assert config["method"] == method and hand["handover_test_acc"].notna().sum() == 1


@pytest.mark.e2e
def test_hd_and_greedy_choose_their_knob_from_a_grid_and_every_value_is_bounded_like_the_search(digits_run):
    csv = pd.read_csv(digits_run / "results.csv")
    for method, size in (("hd", 3), ("greedy", 3)):
        search = csv[(csv["method"] == method) & (csv["handover"] != True)]  # noqa: E712
        assert search["trial"].nunique() == size
    fds = csv[csv["method"] == "fds"]
    assert fds[[f"lr_{i}" for i in range(5)]].max().max() <= 0.5  # --range lr=0,0.5 bounds FDS too


@pytest.mark.e2e
def test_every_result_carries_its_seed_and_preset(digits_run):
    csv = pd.read_csv(digits_run / "results.csv")
    assert set(csv["method"]) == set(RUN_METHODS)
    assert (csv["seed"] == 0).all()
    assert (csv["preset"] == "digits").all()


@pytest.mark.e2e
def test_every_result_records_its_trials_resources(digits_run):
    """The session's Ray has 2 CPUs and no GPU: every trial of every method asked for 1 CPU and no GPU."""
    csv = pd.read_csv(digits_run / "results.csv")
    assert (csv["cpus"] == 1).all() and (csv["gpus"] == 0).all()
    assert json.loads((digits_run / "cluster.json").read_text()) == {"cluster": {"CPU": 2.0, "GPU": 0}, "per_trial": {"cpu": 1}}
    caption = "Compute: device-seconds of one trial's resources (1 CPU per trial), summed over a method's trials. On 2 CPUs and 0 GPUs"
    assert caption in (digits_run.parent / "stdout.txt").read_text()
    assert r"\caption{" + caption in (digits_run / "table.tex").read_text()


@pytest.mark.e2e
def test_the_seeds_chosen_are_the_seeds_run(ray_session, tmp_path, capsys):
    out = tmp_path / "seeds"
    argv = [
        "compare", "--preset", "digits", "--out", str(out), "--methods", "fds", "random", "--seed-list", "2", "5",
        "--set", "epochs=[1]", "--set", "retrain_epochs=1", "--max-epochs", "1", "--samples", "1", "--budget", "1",
    ]
    assert main(argv) == 0
    assert sorted(p.name for p in (out / "ray").iterdir()) == ["fds-seed2", "fds-seed5", "random-seed2", "random-seed5"]
    csv = pd.read_csv(out / "results.csv")
    for method in ("fds", "random"):
        for seed in (2, 5):
            rows = csv[csv["experiment"] == f"{method}-seed{seed}"]
            assert len(rows) > 0 and (rows["seed"] == seed).all() and (rows["method"] == method).all()
    assert sorted(set(csv["seed"])) == [2, 5]
    printed = capsys.readouterr().out
    assert printed.index("== fds, seed 2") < printed.index("== random, seed 2") < printed.index("== fds, seed 5")


@pytest.mark.e2e
def test_on_a_cluster_with_a_gpu_every_method_requests_its_share(tmp_path):
    """compare(gpus_per_trial=0.5) on a Ray with one logical GPU, in its own process: FDS and black-box trials
    alike request 1 CPU and half a GPU, and the caption counts two trials at once."""
    script = ROOT / "tests" / "support" / "logical_gpu.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(script), "compare", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["resources"] == {"fds": [[1.0, 0.5]], "random": [[1.0, 0.5]]}
    assert summary["cluster"] == {"cluster": {"CPU": 2.0, "GPU": 1.0}, "per_trial": {"cpu": 1, "gpu": 0.5}}
    assert summary["seeds"] == [3]
    assert any("(1 CPU + 0.5 GPU per trial)" in line and "On 2 CPUs and 1 GPU, up to 2 trials could run at once" in line for line in summary["printed"])


@pytest.mark.e2e
def test_black_box_searches_the_ranges_given(digits_run):
    csv = pd.read_csv(digits_run / "results.csv")
    black_box = csv[csv["method"].isin(["random", "hyperband", "bohb", "tpe", "optuna", "asha"])]
    lr = black_box[[f"lr_{i}" for i in range(5)]]
    assert lr.notna().all().all() and (lr >= 0).all().all() and (lr <= 0.5).all().all()  # --range lr=0,0.5
    assert black_box["momentum_0"].max() <= 0.99  # the default range stands for the other kinds


@pytest.mark.e2e
def test_resume_keeps_finished_experiments(digits_run, capsys):
    before = pd.read_csv(digits_run / "results.csv")
    assert main(["compare", "--preset", "digits", "--out", str(digits_run), "--resume", *TINY, "--methods", *RUN_METHODS]) == 0
    printed = capsys.readouterr().out
    assert printed.count("already finished; kept") == len(RUN_METHODS)
    after = pd.read_csv(digits_run / "results.csv")
    assert len(after) == len(before)


@pytest.mark.e2e
def test_existing_results_are_not_overwritten(digits_run, capsys):
    assert main(["compare", "--preset", "digits", "--out", str(digits_run), *TINY, "--methods", *RUN_METHODS]) == 2
    assert re.fullmatch(r"fds-tune: error: out: got '.*'; must be a directory without results \(pass resume=True, --resume.*\)\n", capsys.readouterr().err)


@pytest.mark.parametrize(
    "sets, match",
    [
        (["--set", "lr_steps=3"], r"config: got 'lr_steps'; must be one of the allowed keys"),
        (["--set", "batch_size=0"], "batch_size: got 0"),
        (["--range", "lr=0.5,0.1"], r"ranges\['lr'\]: got \(0.5, 0.1\); must be .*0 <= low < high"),
        (["--range", "beta1=0,1"], r"ranges\['beta1'\]: got \(0.0, 1.0\); must be given for a known kind"),
    ],
)
def test_bad_overrides_fail_before_any_training(sets, match, capsys, tmp_path):
    assert main(["compare", "--preset", "digits", "--out", str(tmp_path / "x"), *sets]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "x" / "ray").exists() or not any((tmp_path / "x" / "ray").iterdir())


def test_a_search_whose_every_result_diverged_has_nothing_to_hand_over(tmp_path):
    from experiments.compare import incumbent

    trial = tmp_path / "exp" / "ScheduleTrainable_x"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps({"lr_0": 1e9}))
    result = {"trial_id": "x", "training_iteration": 1, "timestamp": 1.0, "method": "random", "seed": 0, "val_acc": 0.1,
              "val_loss": 1e9, "test_acc": 0.1, "diverged": True, "compute_s": 1.0, "epochs_total": 0.5}
    (trial / "result.json").write_text(json.dumps(result) + "\n")
    assert incumbent(tmp_path / "exp") is None
    (trial / "result.json").write_text(json.dumps(result) + "\n" + json.dumps({**result, "training_iteration": 2, "diverged": False, "val_acc": 0.5, "val_loss": 1.0, "done": True}) + "\n")
    assert incumbent(tmp_path / "exp") == (trial.resolve(), {"lr_0": 1e9})
    # a trial the budget stopped before its first result leaves an empty result.json beside it
    for name in ("ScheduleTrainable_0", "ScheduleTrainable_z"):
        (tmp_path / "exp" / name).mkdir()
        (tmp_path / "exp" / name / "params.json").write_text("{}")
        (tmp_path / "exp" / name / "result.json").write_text("")
    assert incumbent(tmp_path / "exp") == (trial.resolve(), {"lr_0": 1e9})
