"""The schedule space: SpaceConfig, its Ray Tune domains and the flat schedule keys."""
import math

import pytest
from ray import tune

from baselines import SpaceConfig
from baselines.space import check_no_quantized, param_space, schedule_from_config, schedule_keys, sizes_from_keys


def test_space_defaults_are_the_papers_wide_ranges():
    space = SpaceConfig()
    assert dict(space.sizes) == {"lr": 7, "momentum": 1, "weight_decay": 1}
    assert dict(space.ranges) == {"lr": (0.0, 1.0), "momentum": (0.0, 0.99), "weight_decay": (0.0, 3e-3)}
    assert space.dims == 9


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sizes": {"lr": 2, "momentum": 1}}, r"sizes: got \{'lr': 2, 'momentum': 1\}; must be a dict with a value for each of \['lr', 'momentum', 'weight_decay'\]"),
        ({"sizes": {"lr": 0, "momentum": 1, "weight_decay": 1}}, r"sizes\['lr'\]: got 0; must be an int >= 1"),
        ({"sizes": {"lr": True, "momentum": 1, "weight_decay": 1}}, r"sizes\['lr'\]: got True; must be an int >= 1"),
        ({"sizes": [7, 1, 1]}, r"sizes: got \[7, 1, 1\]; must be a dict keyed by kinds"),
        ({"ranges": {"lr": (0, 1), "momentum": (0, 0.99), "weight_decay": (0, 1), "beta": (0, 1)}}, r"ranges\['beta'\]: got \(0, 1\); must be given for a known kind"),
        ({"ranges": {"lr": (1, 1), "momentum": (0, 0.99), "weight_decay": (0, 1)}}, r"ranges\['lr'\]: got \(1, 1\); must be a pair \[low, high\] of numbers with 0 <= low < high"),
        ({"ranges": {"lr": (-1, 1), "momentum": (0, 0.99), "weight_decay": (0, 1)}}, r"ranges\['lr'\]: got \(-1, 1\); must be a pair \[low, high\] of numbers with 0 <= low"),
        ({"ranges": {"lr": (0, math.inf), "momentum": (0, 0.99), "weight_decay": (0, 1)}}, r"ranges\['lr'\]: got \(0, inf\); must be a pair of finite numbers"),
        ({"ranges": {"lr": 1.0, "momentum": (0, 0.99), "weight_decay": (0, 1)}}, r"ranges\['lr'\]: got 1.0; must be a pair"),
    ],
)
def test_space_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpaceConfig(**kwargs)


def test_param_space_is_one_uniform_domain_per_shared_value():
    space = param_space(SpaceConfig())
    assert list(space) == [f"lr_{i}" for i in range(7)] + ["momentum_0", "weight_decay_0"]
    for key, domain in space.items():
        kind = key.rsplit("_", 1)[0]
        assert isinstance(domain, tune.search.sample.Float)
        assert isinstance(domain.get_sampler(), tune.search.sample.Uniform)
        assert (domain.lower, domain.upper) == SpaceConfig().ranges[kind]
    check_no_quantized(space)  # passes


def test_quantized_domains_are_refused():
    with pytest.raises(ValueError, match="lr_0: got .*Float object.*; must be an unquantized domain: ConfigSpace 1.x dropped quantization"):
        check_no_quantized({"lr_0": tune.quniform(0, 1, 0.1)})


def test_schedule_from_config_and_sizes_from_keys():
    flat = {"lr_0": 0.5, "lr_1": 0.25, "momentum_0": 0.9, "weight_decay_0": 0.0, "seed": 3}
    sizes = sizes_from_keys(flat)
    assert sizes == {"lr": 2, "momentum": 1, "weight_decay": 1}
    assert schedule_keys(sizes) == ["lr_0", "lr_1", "momentum_0", "weight_decay_0"]
    assert schedule_from_config(flat, sizes).as_lists() == {"lr": [0.5, 0.25], "momentum": [0.9], "weight_decay": [0.0]}
    with pytest.raises(ValueError, match=r"schedule keys of kind 'lr': got \['lr_0', 'lr_2'\]; must be consecutive from lr_0; missing \['lr_1'\]"):
        sizes_from_keys({"lr_0": 1, "lr_2": 1, "momentum_0": 0, "weight_decay_0": 0})
    with pytest.raises(ValueError, match=r"schedule keys of kind 'weight_decay': got \[\]; must be consecutive from weight_decay_0; missing \['weight_decay_0'\]"):
        sizes_from_keys({"lr_0": 1, "momentum_0": 0})
    with pytest.raises(ValueError, match=r"schedule keys: got \['lr_0', 'lr_1', 'momentum_0', 'weight_decay_0'\]; must be keys for sizes .*; missing \['lr_2'\]"):
        schedule_from_config(flat, {"lr": 3, "momentum": 1, "weight_decay": 1})
    with pytest.raises(ValueError, match="lr_0: got nan; must be a finite number"):
        schedule_from_config(flat | {"lr_0": float("nan")}, sizes)
