"""fds_tune.problem: ProblemConfig's checks and resolve_device."""
import pytest
import torch

from fds_tune.problem import ProblemConfig, resolve_device


def test_defaults_are_valid():
    assert ProblemConfig() == ProblemConfig(dataset="digits", model="lenet", batch_size=128, val_fraction=0.05, seed=0)


@pytest.mark.parametrize(("change", "match"), [
    ({"dataset": "imagenet"}, r"dataset: got 'imagenet'; must be one of \['digits', 'fashion_mnist', 'mnist', 'cifar10', 'svhn'\]"),
    ({"model": "resnet50"}, r"model: got 'resnet50'; must be one of \['mlp', 'lenet', 'wrn-16-1'\]"),
    ({"batch_size": 0}, "batch_size: got 0; must be an int >= 1"),
    ({"batch_size": True}, "batch_size: got True; must be an int >= 1"),
    ({"batch_size": 64.0}, "batch_size: got 64.0; must be an int >= 1"),
    ({"seed": -1}, "seed: got -1; must be an int >= 0"),
    ({"val_fraction": 0}, r"val_fraction: got 0; must be a number in \(0, 1\)"),
    ({"val_fraction": 1.0}, r"val_fraction: got 1.0; must be a number in \(0, 1\)"),
    ({"val_fraction": float("nan")}, r"val_fraction: got nan; must be a number in \(0, 1\)"),
    ({"val_fraction": True}, r"val_fraction: got True; must be a number in \(0, 1\)"),
    ({"device": 0}, "device: got 0; must be a string such as 'auto', 'cpu' or 'cuda'"),
    ({"device": "tpu"}, "device: got 'tpu'; must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
])
def test_bad_values_name_key_value_and_rule(change, match):
    with pytest.raises(ValueError, match=match):
        ProblemConfig(**change)


def test_data_root_must_be_a_string():
    with pytest.raises(TypeError, match=r"data_root: got 3; must be a path string or None"):
        ProblemConfig(data_root=3)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: got 'cuda:1'; must be 'auto' or 'cpu': no CUDA device is visible"):
            resolve_device("cuda:1")


def test_each_draw_has_its_own_initialisation_reproducible_from_the_seed():
    from fds_tune.problem import Problem

    p = Problem(ProblemConfig(model="mlp", device="cpu"))
    q = Problem(ProblemConfig(model="mlp", device="cpu", seed=1))
    weights = lambda net: torch.cat([w.detach().reshape(-1) for w in net.parameters()])  # noqa: E731
    assert torch.equal(weights(p.model(0)), weights(p.model(0)))  # the same draw: the same initialisation
    assert torch.equal(weights(p.model()), weights(p.model(0)))  # the default is draw 0
    for other in (p.model(1), p.model(-1), q.model(0)):
        assert not torch.equal(weights(other), weights(p.model(0)))
