"""FDS config: presets, overrides and every validation branch."""
import math

import pytest

from fds_tune.config import PRESETS, FDSConfig, fds_config


def test_preset_as_it_stands_and_overrides():
    assert fds_config({"preset": "digits"}) == PRESETS["digits"]
    cfg = fds_config({"preset": "cifar10_paper", "seed": 3, "n_values": {"lr": 3}, "epochs": [1, 2]})
    assert cfg.model == "wrn-16-1" and cfg.seed == 3 and cfg.epochs == (1, 2)
    assert cfg.n_values == {"lr": 3, "momentum": 1, "weight_decay": 1}
    assert cfg.batch_size == 256 and cfg.grad_clamp == 3.0 and cfg.retrain_epochs == 50
    assert fds_config({}) == PRESETS["digits"]


def test_paper_preset_matches_the_paper():
    p = PRESETS["cifar10_paper"]
    assert (p.dataset, p.model, p.batch_size) == ("cifar10", "wrn-16-1", 256)
    assert p.n_values == {"lr": 7, "momentum": 1, "weight_decay": 1}
    assert p.epochs == (1,) + (10,) * 9
    assert p.step_size == {"lr": 0.1, "momentum": 0.1, "weight_decay": 3e-4}
    assert p.init == {"lr": 0.0, "momentum": 0.0, "weight_decay": 0.0}
    assert p.val_fraction == 0.05 and p.retrain_epochs == 50


@pytest.mark.parametrize(
    "override, match",
    [
        ({"learning_rate": 0.1}, "'learning_rate'.*allowed keys"),
        ({"preset": "imagenet"}, "preset: got 'imagenet'"),
        ({"dataset": "cifar100"}, "dataset: got 'cifar100'"),
        ({"model": "resnet50"}, "model: got 'resnet50'"),
        ({"batch_size": 0}, "batch_size: got 0"),
        ({"val_fraction": 1.5}, "val_fraction: got 1.5"),
        ({"seed": -1}, "seed: got -1"),
        ({"device": "tpu"}, "device: got 'tpu'"),
        ({"n_values": {"lr": 0}}, r"n_values\['lr'\]: got 0"),
        ({"n_values": {"beta1": 2}}, r"n_values\['beta1'\]: got 2; must be given for a known kind"),
        ({"n_values": 5}, "n_values: got 5"),
        ({"step_size": {"lr": -0.1}}, r"step_size\['lr'\]: got -0.1"),
        ({"bounds": {"momentum": [1.0, 0.0]}}, r"bounds\['momentum'\]"),
        ({"init": {"momentum": 1.5}}, r"init\['momentum'\]: got 1.5"),
        ({"outer_rule": "rmsprop"}, "outer_rule: got 'rmsprop'"),
        ({"epochs": []}, "epochs: got"),
        ({"epochs": [1, 0]}, "epochs: got"),
        ({"retrain_epochs": -1}, "retrain_epochs: got -1"),
        ({"retrain_fallbacks": -1}, "retrain_fallbacks: got -1"),
        ({"final": "best"}, r"final: got 'best'; must be one of \['incumbent', 'last'\]"),
        ({"grad_clamp": 0}, "grad_clamp: got 0"),
        ({"group_size": 0}, "group_size: got 0"),
    ],
)
def test_bad_values_name_key_value_and_rule(override, match):
    with pytest.raises(ValueError, match=match):
        fds_config(override)


def test_data_root_must_be_a_string():
    with pytest.raises(TypeError, match="data_root"):
        fds_config({"data_root": 3})


def test_to_dict_round_trips():
    cfg = PRESETS["fashion_mnist"]
    d = cfg.to_dict()
    assert fds_config(d) == cfg
    assert d["bounds"]["lr"] == [0.0, math.inf]
    assert d["preset"] == "fashion_mnist"  # every preset carries its name, and results report it
    by_hand = FDSConfig(model="mlp", seed=2)
    assert by_hand.preset is None and fds_config(by_hand.to_dict()) == by_hand


def test_the_cpu_benchmark_presets_are_the_papers_regime_on_a_cheap_problem():
    """fashion_mnist_paper: 2,000-step runs, 7+1+1 values; fashion_mnist_small (make run): the same problem, 600 steps."""
    from fds_tune.data import train_val_split

    for name, steps, lr_values in (("fashion_mnist_paper", 2000, 7), ("fashion_mnist_small", 600, 5)):
        cfg = PRESETS[name]
        n = cfg.problem.train_size
        val = len(train_val_split(n, cfg.val_fraction, 0)[1])
        assert val >= 500  # a validation split that can separate the methods
        assert (n - val) // cfg.batch_size * cfg.epochs[-1] == steps
        assert cfg.n_values == {"lr": lr_values, "momentum": 1, "weight_decay": 1}
        assert (cfg.dataset, cfg.model, cfg.image_size, cfg.engine_mode) == ("fashion_mnist", "mlp-small", 14, "auto")
        assert cfg.init == {"lr": 0.0, "momentum": 0.0, "weight_decay": 0.0}  # from zero, as the paper
