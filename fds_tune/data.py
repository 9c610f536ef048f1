"""Datasets held in memory as tensors, and batch iterators over them.

Every dataset is loaded once into a :class:`Dataset`: float32 images ``(N, C, H, W)``
normalised per channel with the mean and standard deviation of its *training* set,
and int64 labels. Training then slices batches out of these tensors directly
(:func:`epoch_batches`), so an epoch costs what the forward and backward passes cost:
there is no per-sample Python work, no ``DataLoader`` and no PIL.

Where the files come from (``root`` defaults to nothing; downloads go to ``root`` or,
without one, to :data:`CACHE_DIR`):

=============  ===========================================================================
digits         bundled with scikit-learn (``sklearn.datasets.load_digits``)
fashion_mnist  IDX files (``.gz`` or raw) in ``root`` or ``root/FashionMNIST/raw``, then
               ``/usr/share/datasets/fashion-mnist`` (Debian ``dataset-fashion-mnist``),
               then the cache, then a torchvision download
mnist          IDX files in ``root/MNIST/raw`` (or ``root``), then a torchvision download
cifar10        ``root/cifar-10-batches-py`` (python pickle batches) via torchvision
svhn           ``root/{train,test}_32x32.mat`` via torchvision (needs scipy)
=============  ===========================================================================

torchvision's CIFAR-10 and SVHN classes verify the md5 sums of the official files before
reading them. Files already on disk are read through torchvision's own loading code with
that checksum comparison switched off (existence is still checked), so that subsets,
re-packed copies and test fixtures in the same format load; a download still goes through
the stock torchvision classes, checksums included.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import math
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .validation import check, check_choice, check_int, check_number

__all__ = [
    "CACHE_DIR",
    "DATASETS",
    "Dataset",
    "augment_batch",
    "cifar10",
    "digits",
    "epoch_batches",
    "eval_batches",
    "fashion_mnist",
    "load_dataset",
    "mnist",
    "num_batches",
    "svhn",
    "train_val_split",
]

DATASETS: tuple[str, ...] = ("digits", "fashion_mnist", "mnist", "cifar10", "svhn")

#: Where downloads go when no ``root`` is given.
CACHE_DIR = Path("~/.cache/fds-tune").expanduser()

#: Directories searched for Fashion-MNIST after ``root``; Debian's
#: ``dataset-fashion-mnist`` package installs the IDX .gz files in the first one.
FASHION_MNIST_SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

# scikit-learn's digits have no official test set: a fixed 20% of the images, drawn
# with this seed, is held out. Changing either changes every reported digits number.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0

_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset held in memory.

    ``x_*`` are float32 ``(N, C, H, W)`` images normalised per channel with the
    statistics of ``x_train``; ``y_*`` are int64 labels in ``[0, num_classes)``.
    ``augment`` says whether training should use :func:`augment_batch` (random crop
    with 4-pixel padding and horizontal flip); it is True for CIFAR-10 only.
    Equality is identity (``eq=False``): comparing tensors field by field is ambiguous.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    augment: bool

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            check(f"x_{split}.dtype", x.dtype, x.dtype == torch.float32, "torch.float32")
            check(f"x_{split}.shape", tuple(x.shape), x.dim() == 4, "(N, C, H, W)")
            check(f"y_{split}.dtype", y.dtype, y.dtype == torch.int64, "torch.int64")
            check(f"y_{split}.shape", tuple(y.shape), tuple(y.shape) == (len(x),), f"({len(x)},): one label per image")
        image = ", ".join(map(str, self.x_train.shape[1:]))
        check("x_test.shape", tuple(self.x_test.shape), self.x_test.shape[1:] == self.x_train.shape[1:], f"(N, {image}), as x_train")
        check_int("num_classes", self.num_classes, 2)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one image, ``(C, H, W)``."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with every tensor on ``device`` (no copy for tensors already there)."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )


# --------------------------------------------------------------------------- loading


def load_dataset(
    name: str, root: str | os.PathLike | None = None, download: bool = True
) -> Dataset:
    """Load dataset ``name`` (one of :data:`DATASETS`).

    ``root`` is where to look for (and download to) the files; ``download=False``
    never touches the network. ``digits`` is bundled with scikit-learn and ignores both.
    A dataset that cannot be found raises :class:`FileNotFoundError` listing every
    place searched and how to obtain the files.
    """
    return _LOADERS[check_choice("dataset", name, DATASETS)](root, download)


def digits() -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes).

    The test set is a fixed random 20% of the images (:data:`DIGITS_TEST_FRACTION`),
    drawn with :data:`DIGITS_SPLIT_SEED`; it is not stratified.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32)).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = train_val_split(len(x), DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    return _make_dataset(
        "digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx], num_classes=10
    )


def fashion_mnist(root: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """Fashion-MNIST (60,000 + 10,000 grey 28x28 images, 10 classes).

    Searches, in order: ``root``, ``root/FashionMNIST/raw``, the directories in
    :data:`FASHION_MNIST_SYSTEM_DIRS` (Debian's ``dataset-fashion-mnist``), and
    ``CACHE_DIR/FashionMNIST/raw`` when no ``root`` is given; then, if ``download``,
    downloads with torchvision into ``root`` (or :data:`CACHE_DIR`). The IDX files are
    parsed here, so Debian's recompressed ``.gz`` files (whose md5 sums differ from
    torchvision's) are read as they are.
    """
    return _load_idx_dataset(
        "fashion_mnist",
        "FashionMNIST",
        root,
        download,
        system_dirs=FASHION_MNIST_SYSTEM_DIRS,
        how_to_get="install Debian's package (`apt-get install dataset-fashion-mnist`)",
    )


def mnist(root: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """MNIST (60,000 + 10,000 grey 28x28 images, 10 classes).

    Reads IDX files (``.gz`` or raw) from ``root/MNIST/raw`` (torchvision's layout) or
    ``root``; otherwise, if ``download``, downloads with torchvision.
    """
    return _load_idx_dataset("mnist", "MNIST", root, download, system_dirs=(), how_to_get="")


def cifar10(root: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """CIFAR-10 (50,000 + 10,000 colour 32x32 images, 10 classes), ``augment=True``.

    Reads ``root/cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``,
    ``batches.meta``) through ``torchvision.datasets.CIFAR10``; see the module docstring
    about md5 sums. Downloads with torchvision when the files are missing and
    ``download`` is True.
    """
    from torchvision.datasets import CIFAR10

    base = _base_dir(root)
    folder = base / CIFAR10.base_folder
    names = [n for n, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
    expected = [f"{CIFAR10.base_folder}/{n}" for n in names]
    if all((folder / n).is_file() for n in names):
        cls = _unchecked_cifar10()
    elif download:
        cls = CIFAR10
    else:
        raise _not_found("cifar10", [folder], expected, download, None, how_to_get="")
    try:
        splits = [cls(str(base), train=train, download=download) for train in (True, False)]
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise _not_found("cifar10", [folder], expected, download, err, how_to_get="") from err

    def images(split) -> Tensor:  # torchvision holds (N, H, W, C) uint8
        return torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous()

    def labels(split) -> Tensor:
        return torch.as_tensor(split.targets, dtype=torch.int64)

    train, test = splits
    return _make_dataset(
        "cifar10", images(train), labels(train), images(test), labels(test),
        num_classes=10, augment=True,
    )


def svhn(root: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """SVHN cropped digits (73,257 + 26,032 colour 32x32 images, 10 classes).

    Reads ``root/train_32x32.mat`` and ``root/test_32x32.mat`` through
    ``torchvision.datasets.SVHN`` (which maps label 10 to digit 0; needs scipy); see
    the module docstring about md5 sums. The ``extra`` split is not used.
    """
    from torchvision.datasets import SVHN

    base = _base_dir(root)
    names = [SVHN.split_list[s][1] for s in ("train", "test")]
    if all((base / n).is_file() for n in names):
        cls = _unchecked_svhn()
    elif download:
        cls = SVHN
    else:
        raise _not_found("svhn", [base], names, download, None, how_to_get="")
    try:
        train, test = (cls(str(base), split=s, download=download) for s in ("train", "test"))
    except (OSError, RuntimeError) as err:
        raise _not_found("svhn", [base], names, download, err, how_to_get="") from err
    return _make_dataset(
        "svhn",
        torch.from_numpy(np.ascontiguousarray(train.data)),
        torch.from_numpy(train.labels.astype(np.int64)),
        torch.from_numpy(np.ascontiguousarray(test.data)),
        torch.from_numpy(test.labels.astype(np.int64)),
        num_classes=10,
    )


def _make_dataset(
    name: str, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
    *, num_classes: int, augment: bool = False,
) -> Dataset:
    """Normalise raw images with the per-channel statistics of ``x_train``."""
    # Statistics in float64, one channel at a time (a float64 copy of all of SVHN is 1.8 GB).
    stats = []
    for c in range(x_train.shape[1]):
        channel = x_train[:, c].to(torch.float64)
        stats.append((channel.mean(), channel.std(correction=0)))
    mean, std = (torch.stack(s) for s in zip(*stats))
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel stays constant
    mean, std = (s.to(torch.float32).view(1, -1, 1, 1) for s in (mean, std))

    def normalise(x: Tensor) -> Tensor:
        return x.to(torch.float32, copy=True).sub_(mean).div_(std).contiguous()

    for split, y in (("train", y_train), ("test", y_test)):
        span = (int(y.min()), int(y.max())) if len(y) else (0, 0)
        check(f"{name} {split} label range", span, 0 <= span[0] and span[1] < num_classes, f"within [0, {num_classes})")
    return Dataset(
        name=name,
        x_train=normalise(x_train),
        y_train=y_train.to(torch.int64).contiguous(),
        x_test=normalise(x_test),
        y_test=y_test.to(torch.int64).contiguous(),
        num_classes=num_classes,
        augment=augment,
    )


def _base_dir(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else CACHE_DIR


def _load_idx_dataset(
    name: str,
    torchvision_name: str,
    root: str | os.PathLike | None,
    download: bool,
    *,
    system_dirs: tuple[Path, ...],
    how_to_get: str,
) -> Dataset:
    base = _base_dir(root)
    raw_dir = base / torchvision_name / "raw"  # where torchvision keeps (and downloads) them
    if root is not None:
        candidates = [base, raw_dir, *system_dirs]
    else:  # the system copy first, then an earlier download
        candidates = [*system_dirs, raw_dir]
    files = _find_idx_files(candidates)
    error = None
    if files is None and download:
        import torchvision.datasets

        try:
            getattr(torchvision.datasets, torchvision_name)(str(base), train=True, download=True)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            error = err
        files = _find_idx_files([raw_dir])
    if files is None:
        expected = [f"{stem}[.gz]" for stem in _IDX_FILES.values()]
        raise _not_found(name, candidates, expected, download, error, how_to_get)
    arrays = {key: _read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"{name}: {split} IDX files hold images of shape {x.shape} and labels of "
                f"shape {y.shape}; expected (N, H, W) and (N,)"
            )
    tensors = {key: torch.from_numpy(a) for key, a in arrays.items()}
    return _make_dataset(
        name,
        tensors["x_train"].unsqueeze(1),
        tensors["y_train"].to(torch.int64),
        tensors["x_test"].unsqueeze(1),
        tensors["y_test"].to(torch.int64),
        num_classes=10,
    )


def _find_idx_files(directories: list[Path]) -> dict[str, Path] | None:
    """The first directory holding all four IDX files (each raw or ``.gz``)."""
    for directory in directories:
        found = {}
        for key, stem in _IDX_FILES.items():
            for path in (directory / stem, directory / f"{stem}.gz"):
                if path.is_file():
                    found[key] = path
                    break
        if len(found) == len(_IDX_FILES):
            return found
    return None


def _read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file of unsigned bytes: magic ``0 0 0x08 ndim``, big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise ValueError(f"{path}: IDX data type 0x{dtype_code:02x} is not unsigned byte (0x08)")
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        raise ValueError(
            f"{path}: header declares dims {dims} ({math.prod(dims)} bytes) but "
            f"{len(raw) - header} bytes follow"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _not_found(
    name: str,
    searched: list[Path],
    expected: list[str],
    download: bool,
    error: BaseException | None,
    how_to_get: str,
) -> FileNotFoundError:
    places = "\n".join(f"  - {p}" for p in searched)
    if not download:
        tried = "download=False, so nothing was downloaded."
    else:
        tried = f"Downloading with torchvision failed: {error}"
    ways = [how_to_get] if how_to_get else []
    ways += [
        f"pass root=DIR with DIR holding {', '.join(expected)}",
        "or run with download=True on a machine with internet access",
    ]
    return FileNotFoundError(
        f"dataset {name!r} not found. Looked in:\n{places}\n{tried}\n"
        f"To get it: {'; '.join(ways)}."
    )


@functools.cache
def _unchecked_cifar10():
    """torchvision's CIFAR10 with the md5 comparison off (files must still exist)."""
    from torchvision.datasets import CIFAR10

    class _UncheckedCIFAR10(CIFAR10):
        train_list = [[n, None] for n, _ in CIFAR10.train_list]
        test_list = [[n, None] for n, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return _UncheckedCIFAR10


@functools.cache
def _unchecked_svhn():
    """torchvision's SVHN with the md5 comparison off (files must still exist)."""
    from torchvision.datasets import SVHN

    class _UncheckedSVHN(SVHN):
        split_list = {k: [url, fname, None] for k, (url, fname, _) in SVHN.split_list.items()}

    return _UncheckedSVHN


_LOADERS: dict[str, Callable[[str | os.PathLike | None, bool], Dataset]] = {
    "digits": lambda root, download: digits(),
    "fashion_mnist": fashion_mnist,
    "mnist": mnist,
    "cifar10": cifar10,
    "svhn": svhn,
}


# --------------------------------------------------------------------------- splits and batches


def train_val_split(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split ``range(n)`` at random into sorted, disjoint ``(train_idx, val_idx)``.

    ``len(val_idx) = max(1, round(n * val_fraction))``; the permutation comes from a
    ``torch.Generator`` seeded with ``seed``, so the global RNG is neither used nor
    changed. Both index tensors are int64.
    """
    n = check_int("n", _plain(n), 2)
    check_number("val_fraction", val_fraction, low=0, high=1, low_open=True, high_open=True, rule="a number in (0, 1)")
    seed = check_int("seed", _plain(seed))
    n_val = max(1, round(n * val_fraction))
    check("val_fraction", val_fraction, n_val < n, f"small enough to leave training samples out of n={n}")
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def num_batches(n: int, batch_size: int, drop_last: bool = True) -> int:
    """Number of batches :func:`epoch_batches` yields for ``n`` samples."""
    n = check_int("n", _plain(n), 0)
    batch_size = check_int("batch_size", _plain(batch_size), 1)
    return n // batch_size if drop_last else -(-n // batch_size)


def epoch_batches(
    x: Tensor,
    y: Tensor,
    batch_size: int,
    generator: torch.Generator,
    *,
    shuffle: bool = True,
    augment: bool = False,
    drop_last: bool = True,
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of ``(x_batch, y_batch)`` on ``x``'s device.

    The order is a permutation drawn from ``generator`` (which may live on the CPU
    when ``x`` is on an accelerator) and every sample appears at most once; with
    ``drop_last`` the final partial batch is dropped. With ``augment`` each batch goes
    through :func:`augment_batch` with the same generator. Arguments are checked
    here, before the first batch is requested.
    """
    n = _check_pair(x, y)
    check("generator", generator, isinstance(generator, torch.Generator), "a torch.Generator")
    count = num_batches(n, batch_size, drop_last)
    check("batch_size", batch_size, count > 0 or n == 0, f"<= the {n} samples with drop_last=True, or an epoch has no batches")
    if shuffle:
        order = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
    else:
        order = None
    return _iterate(x, y, batch_size, count, order, generator if augment else None)


def _iterate(x, y, batch_size, count, order, augment_generator):
    for i in range(count):
        if order is None:
            xb, yb = x[i * batch_size : (i + 1) * batch_size], y[i * batch_size : (i + 1) * batch_size]
        else:
            idx = order[i * batch_size : (i + 1) * batch_size]
            xb, yb = x[idx], y[idx]
        if augment_generator is not None:
            xb = augment_batch(xb, augment_generator)
        yield xb, yb


def augment_batch(x: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    r"""Random crop after zero padding, then random horizontal flip, for a whole batch.

    Each image ``(C, H, W)`` is padded with ``padding`` zeros on every side and an
    ``H x W`` window at a uniform offset in ``[0, 2 padding]^2`` is kept; with
    probability 1/2 it is mirrored left-right. The images are already normalised, so
    the padding value 0 is the training-set mean of each channel. All offsets and flips
    are drawn at once from ``generator``; one gather builds the batch.
    """
    check("x.shape", tuple(x.shape), x.dim() == 4, "a (B, C, H, W) batch")
    check_int("padding", _plain(padding), 0)
    b, _, h, w = x.shape
    draw = dict(generator=generator, device=generator.device)
    dy = torch.randint(0, 2 * padding + 1, (b, 1), **draw).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), **draw).to(x.device)
    flip = (torch.rand((b, 1), **draw) < 0.5).to(x.device)
    rows = dy + torch.arange(h, device=x.device)  # (B, H) rows of the padded image
    cols_fwd = torch.arange(w, device=x.device)
    cols = dx + torch.where(flip, w - 1 - cols_fwd, cols_fwd)  # (B, W), mirrored if flip
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indices on dims 0, 2, 3 around the channel slice put them first: (B, H, W, C).
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def eval_batches(x: Tensor, y: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Sequential ``(x_batch, y_batch)`` covering all samples; the last batch may be short."""
    n = _check_pair(x, y)
    count = num_batches(n, batch_size, drop_last=False)
    return _iterate(x, y, batch_size, count, None, None)


def _check_pair(x: Tensor, y: Tensor) -> int:
    shapes = (tuple(x.shape), tuple(y.shape))
    check("x, y shapes", shapes, x.dim() > 0 and y.dim() > 0 and len(x) == len(y), "the same number of samples (dim 0)")
    check("y.device", y.device, y.device == x.device, f"x's device, {x.device}")
    return len(x)


def _plain(value):
    """A numpy integer (an array's length or element) as a Python int; anything else as it is."""
    return int(value) if isinstance(value, np.integer) else value
