"""experiments/estimate.py: the expected hours of a comparison, against numbers worked out by hand."""
import pytest

from experiments.compare import COMPARE_PRESETS, CompareSpec
from experiments.estimate import StepCosts, black_box_budget, estimate_table, expected_hours, steps_per_epoch
from fds_tune import fds_config
from fds_tune.results import BLACK_BOX_METHODS, LR_FREE_METHODS, METHODS, POPULATION_METHODS

CIFAR = fds_config({"preset": "cifar10_paper"})  # batch 256, epochs 1 + 9 x 10, 50 retraining epochs
SPEC = COMPARE_PRESETS["cifar10_paper"]  # 50 epochs per trial, 1600 black-box epochs
COSTS = StepCosts(plain_s=0.01, fds_s=0.08, greedy_s=0.05)
N = 50_000  # CIFAR-10's training images: 2,500 for validation, 47,500 // 256 = 185 steps; 50,000 // 256 = 195 in a hand-over
HANDOVER = 50 * 195 * 0.01  # 97.5 s: 50 epochs of 195 plain steps
BY_HAND = {  # seconds of one seed
    "fds": 91 * 185 * 0.08 + HANDOVER,  # 91 epochs at the FDS step, then retraining
    "hd": 3 * 50 * 185 * 0.01 + HANDOVER,  # a 3-point grid of 50-epoch runs at plain cost
    "greedy": 3 * 50 * 185 * 0.05 + HANDOVER,  # the same grid at the greedy step
    **{m: 1600 * 185 * 0.01 + HANDOVER for m in BLACK_BOX_METHODS},
    **{m: 32 * 50 * 185 * 0.01 + HANDOVER for m in POPULATION_METHODS},  # 1600 / 50 = 32 members
    **{m: 50 * 185 * 0.01 + HANDOVER for m in LR_FREE_METHODS},
}


def test_an_epoch_is_the_images_after_the_validation_split_in_batches():
    assert steps_per_epoch(CIFAR, N) == (185, 195)
    assert steps_per_epoch(fds_config({"preset": "cifar10_paper", "batch_size": 8}), 40) == (4, 5)  # 40 - 2 = 38 images


def test_device_hours_count_what_the_comparison_runs():
    e = expected_hours(CIFAR, SPEC, COSTS, N, seeds=3)
    assert set(e["methods"]) == set(METHODS)
    for method, seconds in BY_HAND.items():
        assert e["methods"][method]["device_hours"] == pytest.approx(3 * seconds / 3600), method
        assert e["methods"][method]["wall_hours"] == pytest.approx(3 * seconds / 3600), method  # one trial at a time
    assert e["device_hours"] == pytest.approx(3 * 28_334.3 / 3600)  # 1444.3 + 375 + 1485 + 8 x 3057.5 + 3 x 190
    assert e["wall_hours"] == pytest.approx(e["device_hours"])
    assert (e["steps_per_epoch"], e["handover_steps_per_epoch"], e["budget_epochs"]) == (185, 195, 1600)
    assert e["methods"]["fds"]["search_epochs"] == 91 and e["methods"]["pbt"]["runs"] == 32


def test_trials_at_once_shorten_the_wall_clock_of_searches_and_grids_only():
    e = expected_hours(CIFAR, SPEC, COSTS, N, concurrent=4, methods=["fds", "random", "pbt", "hd", "greedy", "prodigy"])
    wall = {m: r["wall_hours"] * 3600 for m, r in e["methods"].items()}
    assert wall["fds"] == pytest.approx(BY_HAND["fds"])  # one trial
    assert wall["random"] == pytest.approx(1600 / 4 * 1.85 + HANDOVER)  # the budget spent 4 trials at a time
    assert wall["pbt"] == pytest.approx(32 / 4 * 50 * 1.85 + HANDOVER)
    assert wall["hd"] == pytest.approx(50 * 1.85 + HANDOVER)  # the 3 grid runs at once
    assert wall["greedy"] == pytest.approx(50 * 9.25 + HANDOVER)
    assert wall["prodigy"] == pytest.approx(BY_HAND["prodigy"])
    assert e["device_hours"] == pytest.approx(sum(BY_HAND[m] for m in e["methods"]) / 3600)  # device-hours do not change
    two = expected_hours(CIFAR, SPEC, COSTS, N, concurrent=2, methods=["hd"])
    assert two["wall_hours"] * 3600 == pytest.approx(2 * 50 * 1.85 + HANDOVER)  # 3 runs, 2 at a time: two rounds


def test_a_budget_ratio_is_that_multiple_of_fds_compute_in_plain_epochs():
    spec = CompareSpec(max_epochs=50, budget_ratio=2.0)
    assert black_box_budget(CIFAR, spec, COSTS, N) == pytest.approx(2 * BY_HAND["fds"] / 1.85)
    e = expected_hours(CIFAR, spec, COSTS, N, methods=["random"])
    assert e["methods"]["random"]["device_hours"] * 3600 == pytest.approx(2 * BY_HAND["fds"] + HANDOVER)


def test_a_cap_on_trials_caps_the_search():
    e = expected_hours(CIFAR, CompareSpec(max_epochs=50, budget_epochs=1600, num_samples=10), COSTS, N, methods=["random", "pbt"])
    assert e["methods"]["random"]["search_epochs"] == 500 and e["methods"]["pbt"]["search_epochs"] == 500


def test_the_table_has_a_row_per_method_and_the_totals():
    e = expected_hours(CIFAR, SPEC, COSTS, N, methods=["fds", "random"])
    table = estimate_table(e)
    assert "| fds | 1 x 91 epochs | 80.0 | 50 epochs |" in table and "| random | 32 x 50 epochs | 10.0 |" in table
    assert f"**{e['device_hours']:.2f}**" in table and "An estimate:" in table


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: StepCosts(plain_s=0, fds_s=1, greedy_s=1), r"plain_s: got 0; must be a finite number > 0"),
        (lambda: StepCosts(plain_s=1, fds_s=float("nan"), greedy_s=1), r"fds_s: got nan; must be a finite number > 0"),
        (lambda: expected_hours(CIFAR, SPEC, COSTS, N, seeds=0), r"seeds: got 0; must be an int >= 1"),
        (lambda: expected_hours(CIFAR, SPEC, COSTS, N, concurrent=1.5), r"concurrent: got 1.5; must be an int >= 1"),
        (lambda: expected_hours(CIFAR, SPEC, COSTS, N, methods=["grid"]), r"methods: got \['grid'\]; must be a non-empty list of names"),
        (lambda: expected_hours(CIFAR, SPEC, COSTS, 1), r"n_train: got 1; must be an int >= 2"),
    ],
)
def test_bad_inputs_name_key_value_and_rule(call, match):
    with pytest.raises(ValueError, match=match):
        call()
