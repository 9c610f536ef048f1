"""experiments/reproduce.py: its constants agree with the preset, the horizons' overrides, and the shared runs
(the comparisons themselves are compare's, tested in test_compare.py)."""
from fds_tune import PRESETS
from fds_tune.data import train_val_split

from experiments import reproduce


def test_the_steps_per_epoch_and_horizon_are_the_presets():
    cfg = PRESETS[reproduce.PRESET]
    n = cfg.train_size
    assert (n - len(train_val_split(n, cfg.val_fraction, 0)[1])) // cfg.batch_size == reproduce.STEPS_PER_EPOCH
    assert cfg.epochs[-1] == reproduce.EPOCHS and reproduce.EPOCHS * reproduce.STEPS_PER_EPOCH == 2000
    assert all(e != reproduce.EPOCHS for e in reproduce.HORIZON_EPOCHS)  # the 2,000-step point is the wide part's


def test_a_horizon_changes_every_run_length_and_nothing_else():
    over = reproduce.horizon_overrides(15)
    assert over == {"epochs": [1, 15, 15, 15, 15, 15], "retrain_epochs": 15}
    assert len(over["epochs"]) == len(PRESETS[reproduce.PRESET].epochs)  # as many outer steps as the preset


def test_only_finished_runs_are_shared_and_none_is_overwritten(tmp_path):
    src, dst = tmp_path / "wide", tmp_path / "narrow"
    for name, done in (("prodigy-seed0", True), ("prodigy-seed1", False), ("dadapt-seed0", True)):
        run = src / "ray" / name
        run.mkdir(parents=True)
        (run / "result.json").write_text(name)
        if done:
            (run / ".fds_tune_done").write_text("done\n")
    (dst / "ray" / "dadapt-seed0").mkdir(parents=True)
    reproduce.share_runs(src, dst, ["prodigy", "dadapt"], [0, 1])
    assert (dst / "ray" / "prodigy-seed0" / "result.json").read_text() == "prodigy-seed0"
    assert not (dst / "ray" / "prodigy-seed1").exists()  # unfinished: the narrow part runs it itself
    assert not (dst / "ray" / "dadapt-seed0" / "result.json").exists()  # already there: kept as it is
