"""fds_tune.data: every loader on files in the genuine formats, splits and batches."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from support.datasets import write_cifar10, write_fashion_mnist, write_idx, write_mnist, write_svhn

from fds_tune import data
from fds_tune.data import (
    DATASETS,
    Dataset,
    augment_batch,
    epoch_batches,
    eval_batches,
    load_dataset,
    num_batches,
    train_val_split,
)

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Keep every test away from a real ~/.cache/fds-tune."""
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")


def expected_normalised(raw: np.ndarray, train_raw: np.ndarray) -> torch.Tensor:
    """(raw - mean) / std per channel with the population statistics of the train images."""
    train = train_raw.astype(np.float64)
    mean = train.mean(axis=(0, 2, 3), keepdims=True)
    std = train.std(axis=(0, 2, 3), keepdims=True)
    return torch.from_numpy((raw.astype(np.float64) - mean) / std).float()


def assert_matches_written(ds: Dataset, written, *, name: str, augment: bool = False) -> None:
    assert ds.name == name
    assert ds.num_classes == 10
    assert ds.augment is augment
    assert ds.input_shape == written.x_train.shape[1:]
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == getattr(written, f"x_{split}").shape
        assert torch.equal(y, torch.from_numpy(getattr(written, f"y_{split}")))
        assert 0 <= int(y.min()) and int(y.max()) < 10
        # Pixel for pixel: proves the channel and axis order as well as the normalisation.
        expected = expected_normalised(getattr(written, f"x_{split}"), written.x_train)
        torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)
    assert_normalised(ds)


def assert_normalised(ds: Dataset) -> None:
    mean = ds.x_train.double().mean(dim=(0, 2, 3))
    std = ds.x_train.double().std(dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5, rtol=0)
    torch.testing.assert_close(std, torch.ones_like(std), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- loaders


def test_digits_real():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1438, 1, 8, 8) and ds.x_test.shape == (359, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert set(ds.y_train.tolist()) == set(range(10)) and set(ds.y_test.tolist()) <= set(range(10))
    assert ds.augment is False and ds.input_shape == (1, 8, 8)
    assert_normalised(ds)
    # The documented split: the val part of train_val_split(1797, 0.2, DIGITS_SPLIT_SEED).
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train_idx, test_idx = train_val_split(1797, data.DIGITS_TEST_FRACTION, data.DIGITS_SPLIT_SEED)
    assert torch.equal(ds.y_test, torch.from_numpy(bunch.target[test_idx.numpy()]).long())
    raw = bunch.images[:, None].astype(np.float32)
    expected = expected_normalised(raw[test_idx.numpy()], raw[train_idx.numpy()])
    torch.testing.assert_close(ds.x_test, expected, rtol=1e-5, atol=1e-5)
    again = data.digits()
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("layout", ["torchvision", "flat"])
def test_mnist_idx(tmp_path, compress, layout):
    written = write_mnist(tmp_path, compress=compress, layout=layout)
    ds = load_dataset("mnist", root=tmp_path, download=False)
    assert_matches_written(ds, written, name="mnist")


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_fashion_mnist_idx_in_root(tmp_path, monkeypatch, compress, layout):
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIRS", ())
    written = write_fashion_mnist(tmp_path, compress=compress, layout=layout)
    ds = data.fashion_mnist(root=tmp_path, download=False)
    assert_matches_written(ds, written, name="fashion_mnist")


def test_fashion_mnist_system_dir_is_searched(tmp_path, monkeypatch):
    """Debian's layout (.gz files directly in the directory), found without a root."""
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    written = write_fashion_mnist(system, layout="flat")
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIRS", (system,))
    assert_matches_written(data.fashion_mnist(download=False), written, name="fashion_mnist")


@pytest.mark.skipif(
    not SYSTEM_FASHION_MNIST.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_real_debian_files():
    ds = load_dataset("fashion_mnist", download=False)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert torch.equal(torch.bincount(ds.y_train), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(ds.y_test), torch.full((10,), 1000))
    assert ds.y_test[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]  # the published first labels
    assert_normalised(ds)


def test_cifar10_fixture_is_genuine_python2_pickle(tmp_path):
    written = write_cifar10(tmp_path, n_train_per_batch=4, n_test=5)
    folder = tmp_path / "cifar-10-batches-py"
    with open(folder / "data_batch_2", "rb") as f:
        batch = pickle.load(f, encoding="bytes")  # the recipe on the CIFAR-10 web page
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (4, 3072)
    assert np.array_equal(batch[b"data"], written.x_train[4:8].reshape(4, 3072))
    assert batch[b"labels"] == written.y_train[4:8].tolist()
    with open(folder / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="bytes")[b"label_names"][0] == b"airplane"


def test_torchvision_rejects_fixture_checksums(tmp_path):
    """Why cifar10() turns off torchvision's md5 comparison for files already on disk."""
    from torchvision.datasets import CIFAR10

    write_cifar10(tmp_path)
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        CIFAR10(str(tmp_path), train=True, download=False)


@pytest.mark.parametrize("download", [False, True])
def test_cifar10(tmp_path, download):
    # With the files present, download=True must not touch the network.
    written = write_cifar10(tmp_path, n_train_per_batch=20, n_test=20)
    ds = load_dataset("cifar10", root=tmp_path, download=download)
    assert_matches_written(ds, written, name="cifar10", augment=True)


def test_svhn(tmp_path):
    written = write_svhn(tmp_path, n_train=30, n_test=20)
    from scipy.io import loadmat

    stored = loadmat(tmp_path / "train_32x32.mat")
    assert stored["X"].shape == (32, 32, 3, 30) and 10 in stored["y"] and 0 not in stored["y"]
    ds = load_dataset("svhn", root=tmp_path, download=False)
    assert_matches_written(ds, written, name="svhn")  # label 10 came back as 0
    assert 0 in ds.y_train.tolist()


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "svhn"])
def test_missing_dataset_names_every_place_looked(tmp_path, monkeypatch, name):
    system = tmp_path / "no-system-copy"
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIRS", (system,))
    root = tmp_path / "empty"
    with pytest.raises(FileNotFoundError, match="not found") as info:
        load_dataset(name, root=root, download=False)
    message = str(info.value)
    assert str(root) in message and "root=" in message and "download=False" in message
    if name == "fashion_mnist":
        assert str(system) in message and "apt-get install dataset-fashion-mnist" in message
        assert str(root / "FashionMNIST" / "raw") in message


def test_missing_without_root_names_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_SYSTEM_DIRS", ())
    with pytest.raises(FileNotFoundError) as info:
        data.mnist(download=False)
    assert str(tmp_path / "cache" / "MNIST" / "raw") in str(info.value)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"dataset: got 'imagenet'; must be one of \['digits', .*'svhn'\]"):
        load_dataset("imagenet")


def test_datasets_constant_lists_every_loader(tmp_path):
    assert DATASETS == ("digits", "fashion_mnist", "mnist", "cifar10", "svhn")
    assert set(data._LOADERS) == set(DATASETS)


def test_dataset_validates_and_moves():
    ds = load_dataset("digits")
    assert ds.to("cpu").x_train.device.type == "cpu"
    assert isinstance(ds.to(torch.device("cpu")), Dataset)
    n_test = len(ds.y_test)
    with pytest.raises(ValueError, match=r"x_train\.dtype: got torch\.float64; must be torch\.float32"):
        Dataset("bad", ds.x_train.double(), ds.y_train, ds.x_test, ds.y_test, 10, False)
    with pytest.raises(ValueError, match=rf"x_test\.shape: got \({n_test}, 64\); must be \(N, C, H, W\)"):
        Dataset("bad", ds.x_train, ds.y_train, ds.x_test.flatten(1), ds.y_test, 10, False)
    with pytest.raises(ValueError, match=r"y_train\.dtype: got torch\.int32; must be torch\.int64"):
        Dataset("bad", ds.x_train, ds.y_train.int(), ds.x_test, ds.y_test, 10, False)
    with pytest.raises(ValueError, match=rf"y_test\.shape: got \({n_test - 1},\); must be \({n_test},\): one label per image"):
        Dataset("bad", ds.x_train, ds.y_train, ds.x_test, ds.y_test[:-1], 10, False)
    with pytest.raises(ValueError, match=rf"x_test\.shape: got \({n_test}, 1, 4, 8\); must be \(N, 1, 8, 8\), as x_train"):
        Dataset("bad", ds.x_train, ds.y_train, ds.x_test[:, :, :4], ds.y_test, 10, False)
    with pytest.raises(ValueError, match="num_classes: got 1; must be an int >= 2"):
        Dataset("bad", ds.x_train, ds.y_train, ds.x_test, ds.y_test, 1, False)


def test_corrupt_idx_file_is_reported(tmp_path):
    write_mnist(tmp_path, layout="flat", compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x08\x03\x00\x01junk")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.mnist(root=tmp_path, download=False)


def test_labels_outside_the_classes_are_reported(tmp_path):
    written = write_mnist(tmp_path, layout="flat", compress=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(len(written.y_train), 12, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"mnist train label range: got \(12, 12\); must be within \[0, 10\)"):
        data.mnist(root=tmp_path, download=False)


# --------------------------------------------------------------------------- splits


def test_train_val_split_disjoint_and_covering():
    train_idx, val_idx = train_val_split(1000, 0.2, seed=3)
    assert train_idx.dtype == val_idx.dtype == torch.int64
    assert len(val_idx) == 200 and len(train_idx) == 800
    assert torch.equal(torch.cat([train_idx, val_idx]).sort().values, torch.arange(1000))


@pytest.mark.parametrize(("n", "fraction", "n_val"), [(10, 0.01, 1), (10, 0.25, 2), (7, 0.5, 4)])
def test_train_val_split_sizes(n, fraction, n_val):
    train_idx, val_idx = train_val_split(n, fraction, seed=0)
    assert len(val_idx) == n_val and len(train_idx) == n - n_val


def test_train_val_split_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    first = train_val_split(500, 0.1, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = train_val_split(500, 0.1, seed=7)
    other = train_val_split(500, 0.1, seed=8)
    assert torch.equal(first[1], again[1]) and torch.equal(first[0], again[0])
    assert not torch.equal(first[1], other[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, True, "0.2"])
def test_train_val_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"val_fraction: got .*; must be a number in \(0, 1\)"):
        train_val_split(100, fraction, seed=0)


def test_train_val_split_rejects_bad_n_and_seed():
    with pytest.raises(ValueError, match="n: got 1; must be an int >= 2"):
        train_val_split(1, 0.5, seed=0)
    with pytest.raises(ValueError, match="val_fraction: got 0.9; must be small enough to leave training samples out of n=2"):
        train_val_split(2, 0.9, seed=0)
    with pytest.raises(ValueError, match="seed: got 1.5; must be an int"):
        train_val_split(10, 0.5, seed=1.5)


# --------------------------------------------------------------------------- batches


def indexed(n: int):
    """Images whose every pixel holds the sample's index, and labels equal to it."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return x, torch.arange(n)


@pytest.mark.parametrize(
    ("n", "batch_size", "drop_last", "count"), [(10, 3, True, 3), (10, 3, False, 4), (9, 3, True, 3), (0, 4, False, 0)]
)
def test_num_batches(n, batch_size, drop_last, count):
    assert num_batches(n, batch_size, drop_last) == count


def test_numpy_integers_count_as_ints():
    assert num_batches(np.int64(10), np.int32(3)) == 3
    train_idx, val_idx = train_val_split(np.int64(10), 0.5, seed=np.int64(1))
    assert torch.equal(val_idx, train_val_split(10, 0.5, seed=1)[1]) and len(train_idx) == 5


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n": 10, "batch_size": 0}, "batch_size: got 0; must be an int >= 1"),
    ({"n": 10, "batch_size": 2.0}, "batch_size: got 2.0; must be an int >= 1"),
    ({"n": 10, "batch_size": True}, "batch_size: got True; must be an int >= 1"),
    ({"n": -1, "batch_size": 2}, "n: got -1; must be an int >= 0"),
    ({"n": np.int64(-1), "batch_size": 2}, "n: got -1; must be an int >= 0"),
])
def test_num_batches_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        num_batches(**kwargs)


@pytest.mark.parametrize("drop_last", [True, False])
def test_epoch_batches_visit_each_sample_once(drop_last):
    x, y = indexed(103)
    batches = list(epoch_batches(x, y, 10, torch.Generator().manual_seed(0), drop_last=drop_last))
    assert len(batches) == num_batches(103, 10, drop_last)
    assert all(len(yb) == 10 for _, yb in batches[:10])
    seen = torch.cat([yb for _, yb in batches])
    assert len(seen) == (100 if drop_last else 103) and len(set(seen.tolist())) == len(seen)
    for xb, yb in batches:  # images stay with their labels
        assert torch.equal(xb[:, 0, 0, 0].long(), yb)
    assert seen.tolist() != sorted(seen.tolist())  # shuffled


def test_epoch_batches_seeded_and_epochs_differ():
    x, y = indexed(50)
    order = lambda g: torch.cat([yb for _, yb in epoch_batches(x, y, 8, g)])  # noqa: E731
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    first, again = order(g1), order(g2)
    assert torch.equal(first, again)
    assert not torch.equal(order(g1), first)  # the next epoch draws a new permutation


def test_epoch_batches_without_shuffle_is_sequential():
    x, y = indexed(10)
    seen = [yb.tolist() for _, yb in epoch_batches(x, y, 4, torch.Generator(), shuffle=False, drop_last=False)]
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_epoch_batches_with_augment_is_seeded_and_keeps_shapes():
    x = torch.randn(20, 3, 8, 8)
    y = torch.arange(20)
    run = lambda seed: list(epoch_batches(x, y, 5, torch.Generator().manual_seed(seed), augment=True))  # noqa: E731
    first, again, other = run(0), run(0), run(1)
    assert all(xb.shape == (5, 3, 8, 8) for xb, _ in first)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))


def test_epoch_batches_validates_eagerly():
    x, y = indexed(10)
    g = torch.Generator()
    with pytest.raises(ValueError, match="batch_size: got 0; must be an int >= 1"):
        epoch_batches(x, y, 0, g)  # raised before iterating
    with pytest.raises(ValueError, match="batch_size: got 11; must be <= the 10 samples with drop_last=True"):
        epoch_batches(x, y, 11, g)
    with pytest.raises(ValueError, match=r"x, y shapes: got \(\(10, 1, 4, 4\), \(5,\)\); must be the same number of samples"):
        epoch_batches(x, y[:5], 2, g)
    with pytest.raises(ValueError, match="generator: got 3; must be a torch.Generator"):
        epoch_batches(x, y, 2, 3)
    with pytest.raises(ValueError, match=r"y.device: got device\(type='meta'\); must be x's device, cpu"):
        epoch_batches(x, y.to("meta"), 2, g)


def test_eval_batches_keep_the_last_partial_batch():
    x, y = indexed(10)
    batches = list(eval_batches(x, y, 4))
    assert [yb.tolist() for _, yb in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(torch.equal(xb[:, 0, 0, 0].long(), yb) for xb, yb in batches)
    with pytest.raises(ValueError, match="batch_size: got 0; must be an int >= 1"):
        eval_batches(x, y, 0)


def reference_augment(x: torch.Tensor, seed: int, padding: int) -> torch.Tensor:
    """The obvious per-image loop, drawing the same random numbers in the same order."""
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = x.shape
    dy = torch.randint(0, 2 * padding + 1, (b, 1), generator=g)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), generator=g)
    flip = torch.rand((b, 1), generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    out = []
    for i in range(b):
        crop = padded[i, :, dy[i, 0] : dy[i, 0] + h, dx[i, 0] : dx[i, 0] + w]
        out.append(crop.flip(-1) if flip[i, 0] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("padding", [4, 1])
def test_augment_batch_matches_per_image_reference(padding):
    x = torch.randn(64, 3, 12, 10)
    out = augment_batch(x, torch.Generator().manual_seed(5), padding=padding)
    assert out.shape == x.shape and out.dtype == x.dtype and out.is_contiguous()
    assert torch.equal(out, reference_augment(x, 5, padding))
    # Zero padding shows up, and some images are mirrored.
    assert (out == 0).any()


def test_augment_batch_without_padding_only_flips():
    x = torch.randn(32, 1, 5, 5)
    out = augment_batch(x, torch.Generator().manual_seed(0), padding=0)
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_augment_batch_is_seeded_and_validates():
    x = torch.randn(16, 3, 8, 8)
    a = augment_batch(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, augment_batch(x, torch.Generator().manual_seed(2)))
    assert not torch.equal(a, augment_batch(x, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="padding: got -1; must be an int >= 0"):
        augment_batch(x, torch.Generator(), padding=-1)
    with pytest.raises(ValueError, match=r"x.shape: got \(3, 8, 8\); must be a \(B, C, H, W\) batch"):
        augment_batch(x[0], torch.Generator())
