"""Writers of tiny datasets in their genuine on-disk formats, for tests.

Each ``write_*`` function creates the files a real download would leave (same names,
layout and encoding, far fewer images) under ``root`` and returns a :class:`Written`
holding what was written, as uint8 ``(N, C, H, W)`` images and int64 labels in
``[0, 10)``, so that a test can compare a loader's output with the truth.

Import from a test module with ``from support.datasets import write_cifar10`` (pytest puts
``tests/`` on ``sys.path``). The formats:

* CIFAR-10 ``cifar-10-batches-py/``: ``data_batch_1..5``, ``test_batch`` and
  ``batches.meta``, each a protocol-2 pickle written as Python 2 wrote the originals
  (text as Python 2 ``str``), so ``pickle.load(f, encoding="bytes")`` yields
  ``{b'data': uint8 (N, 3072) channel-major rows, b'labels': [...], ...}`` and
  ``encoding="latin1"`` (torchvision) yields the same with ``str`` keys.
* MNIST / Fashion-MNIST: IDX files (magic ``0 0 0x08 ndim``, big-endian int32 dims,
  uint8 data), gzip-compressed or raw.
* SVHN: ``train_32x32.mat`` / ``test_32x32.mat`` (MATLAB v5) with ``X`` uint8
  ``(32, 32, 3, N)`` and ``y`` uint8 ``(N, 1)`` in 1..10, 10 standing for digit 0.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "CIFAR10_CLASSES",
    "Written",
    "write_cifar10",
    "write_fashion_mnist",
    "write_idx",
    "write_mnist",
    "write_svhn",
]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]


class Written(NamedTuple):
    """What a writer put on disk: uint8 (N, C, H, W) images, int64 labels in [0, 10)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _images_and_labels(rng: np.random.Generator, n: int, shape: tuple[int, ...]):
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = rng.permutation(np.arange(n) % 10).astype(np.int64)  # every class when n >= 10
    return x, y


# --------------------------------------------------------------------------- IDX


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file; gzip it when ``path`` ends in ``.gz``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
    return path


def _write_idx_dataset(directory: Path, n_train: int, n_test: int, seed: int, compress: bool) -> Written:
    rng = np.random.default_rng(seed)
    x_train, y_train = _images_and_labels(rng, n_train, (28, 28))
    x_test, y_test = _images_and_labels(rng, n_test, (28, 28))
    suffix = ".gz" if compress else ""
    for prefix, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", x)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", y.astype(np.uint8))
    return Written(x_train[:, None], y_train, x_test[:, None], y_test)


def write_mnist(
    root: str | os.PathLike, n_train: int = 60, n_test: int = 20, *, seed: int = 0,
    compress: bool = True, layout: str = "torchvision",
) -> Written:
    """MNIST IDX files in ``root/MNIST/raw`` (``layout="torchvision"``) or ``root`` ("flat")."""
    return _write_idx_dataset(_idx_dir(root, "MNIST", layout), n_train, n_test, seed, compress)


def write_fashion_mnist(
    root: str | os.PathLike, n_train: int = 60, n_test: int = 20, *, seed: int = 0,
    compress: bool = True, layout: str = "flat",
) -> Written:
    """Fashion-MNIST IDX files in ``root`` ("flat", as Debian's package installs them)
    or ``root/FashionMNIST/raw`` ("torchvision")."""
    return _write_idx_dataset(_idx_dir(root, "FashionMNIST", layout), n_train, n_test, seed, compress)


def _idx_dir(root: str | os.PathLike, torchvision_name: str, layout: str) -> Path:
    if layout == "torchvision":
        return Path(root) / torchvision_name / "raw"
    if layout == "flat":
        return Path(root)
    raise ValueError(f"layout={layout!r} must be 'torchvision' or 'flat'")


# --------------------------------------------------------------------------- CIFAR-10


class _Python2Pickler(pickle._Pickler):
    """Pickles ``str`` and ``bytes`` as Python 2 ``str`` (BINSTRING), as the CIFAR-10
    files were written; everything else as Python 3 does at protocol 2."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def _dump_py2(obj, path: Path) -> None:
    with open(path, "wb") as f:
        _Python2Pickler(f, protocol=2).dump(obj)


def write_cifar10(
    root: str | os.PathLike, n_train_per_batch: int = 20, n_test: int = 20, *, seed: int = 0
) -> Written:
    """``root/cifar-10-batches-py`` with five training batches, a test batch and
    ``batches.meta``. md5 sums differ from the real files'."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x_train, y_train = _images_and_labels(rng, 5 * n_train_per_batch, (3, 32, 32))
    x_test, y_test = _images_and_labels(rng, n_test, (3, 32, 32))
    batches = [
        (f"data_batch_{i + 1}", f"training batch {i + 1} of 5",
         slice(i * n_train_per_batch, (i + 1) * n_train_per_batch), x_train, y_train)
        for i in range(5)
    ] + [("test_batch", "testing batch 1 of 1", slice(None), x_test, y_test)]
    for filename, label, rows, x, y in batches:
        _dump_py2(
            {
                "batch_label": label,
                "labels": [int(v) for v in y[rows]],
                # channel-major rows: 1024 red, then 1024 green, then 1024 blue values
                "data": np.ascontiguousarray(x[rows].reshape(-1, 3072)),
                "filenames": [f"image_{filename}_{i}.png" for i in range(len(y[rows]))],
            },
            folder / filename,
        )
    _dump_py2(
        {"num_cases_per_batch": n_train_per_batch, "label_names": CIFAR10_CLASSES, "num_vis": 3072},
        folder / "batches.meta",
    )
    return Written(x_train, y_train, x_test, y_test)


# --------------------------------------------------------------------------- SVHN


def write_svhn(root: str | os.PathLike, n_train: int = 20, n_test: int = 20, *, seed: int = 0) -> Written:
    """``root/train_32x32.mat`` and ``root/test_32x32.mat`` (``extra`` is not written)."""
    from scipy.io import savemat

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x_train, y_train = _images_and_labels(rng, n_train, (3, 32, 32))
    x_test, y_test = _images_and_labels(rng, n_test, (3, 32, 32))
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        savemat(
            root / f"{split}_32x32.mat",
            {
                "X": np.ascontiguousarray(x.transpose(2, 3, 1, 0)),  # (H, W, C, N)
                "y": np.where(y == 0, 10, y).astype(np.uint8)[:, None],  # digit 0 is label 10
            },
        )
    return Written(x_train, y_train, x_test, y_test)
