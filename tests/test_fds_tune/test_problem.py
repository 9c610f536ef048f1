"""fds_tune.problem: ProblemConfig's checks and resolve_device."""
import pytest
import torch

from fds_tune.problem import ProblemConfig, resolve_device


def test_defaults_are_valid():
    assert ProblemConfig() == ProblemConfig(dataset="digits", model="lenet", batch_size=128, val_fraction=0.05, seed=0)


@pytest.mark.parametrize(("change", "match"), [
    ({"dataset": "imagenet"}, r"dataset: got 'imagenet'; must be one of \['digits', 'fashion_mnist', 'mnist', 'cifar10', 'svhn'\]"),
    ({"model": "resnet50"}, r"model: got 'resnet50'; must be one of \['mlp', 'mlp-small', 'lenet', 'wrn-16-1'\]"),
    ({"train_size": 1}, r"train_size: got 1; must be an int >= 2 \(training images kept\) or None \(all\)"),
    ({"train_size": 10.0}, r"train_size: got 10.0; must be an int >= 2"),
    ({"image_size": 0}, r"image_size: got 0; must be an int >= 1 \(pooled side\) or None \(as loaded\)"),
    ({"image_size": 4, "user_problem": "mine"}, r"user_problem: got 'mine'; must be None when train_size or image_size is set"),
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


def test_train_size_keeps_one_fixed_subset_and_image_size_pools_train_and_test(tmp_path):
    """The cut a CPU benchmark trains: the same images for every seed, pooled by averaging 2x2 blocks."""
    import torch.nn.functional as F

    from fds_tune.data import load_dataset
    from fds_tune.problem import Problem
    from support.datasets import write_fashion_mnist

    write_fashion_mnist(tmp_path, n_train=50, n_test=12)
    full = load_dataset("fashion_mnist", str(tmp_path), download=False)
    config = dict(dataset="fashion_mnist", data_root=str(tmp_path), model="mlp-small", device="cpu", batch_size=4)
    cut = [Problem(ProblemConfig(**config, train_size=20, image_size=14, seed=s)) for s in (0, 1)]
    a, b = (p.train_data for p in cut)
    assert a.x.shape == (20, 1, 14, 14) and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)  # one subset, whatever the seed
    # each kept image is a training image, pooled: its 2x2 block means, by hand
    pooled = full.x_train.reshape(50, 1, 14, 2, 14, 2).mean(dim=(3, 5))
    rows = [next(i for i in range(50) if torch.allclose(pooled[i], x)) for x in a.x]
    assert len(set(rows)) == 20 and torch.equal(a.y, full.y_train[rows])
    assert cut[0].test_data.x.shape == (12, 1, 14, 14)  # the test set is kept whole, pooled alike
    assert torch.allclose(cut[0].test_data.x, F.avg_pool2d(full.x_test, 2))
    assert cut[0].model(0)(a.x[:2]).shape == (2, 10)  # the network is built for the pooled input
    with pytest.raises(ValueError, match=r"train_size: got 51; must be an int <= 50, the training images of fashion_mnist"):
        Problem(ProblemConfig(**config, train_size=51))
    with pytest.raises(ValueError, match=r"image_size: got 29; must be an int <= 28"):
        Problem(ProblemConfig(**config, image_size=29))
