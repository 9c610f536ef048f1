"""A training problem as data: the network factory, the data, the loss and the metric.

A :class:`ProblemSpec` is what a user writes to train *their* network on *their* data
with FDS and every baseline (see the README, "Your own problem")::

    spec = ProblemSpec(model=lambda seed: MyNet(), train=(x_train, y_train), test=(x_test, y_test))

The built-in datasets and networks are ordinary specs (:func:`builtin_problem`).
:class:`~fds_tune.problem.Problem` adds the seeded splits, batching and the device.

Data is either a pair of tensors ``(inputs, targets)``, held on the training device and
sliced into batches (the fast path, no per-sample Python work), or a map-style
``torch.utils.data.Dataset`` whose ``dataset[i]`` is ``(input, target)``, read sample by
sample as each batch is formed (data that does not fit in device memory).  Both give the
same batches for the same seed.  Everything that can be checked is checked here, before any
training: float inputs, one target per input, labels within the classes, the same input
shape for training and test, a network with floating-point parameters whose ``forward``
does not change state in place.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, jvp

from .data import augment_batch, eval_batches, load_dataset, num_batches
from .models import build_model
from .validation import check, check_choice, check_int, fail

__all__ = ["ProblemSpec", "TensorData", "SampleData", "METRICS", "builtin_problem", "check_model", "check_forward_mode", "on_device"]

METRICS: tuple[str, ...] = ("accuracy", "loss")  # "loss": regression; results report -loss as the (maximised) metric


@dataclass(frozen=True, eq=False)
class ProblemSpec:
    """A problem: ``model(seed) -> nn.Module``, training and test data, loss and metric.

    ``train``/``test``: ``(inputs, targets)`` tensors or a map-style Dataset of ``(input, target)``
    pairs (stored as :class:`TensorData` / :class:`SampleData`).  ``num_classes``: for
    ``metric="accuracy"``, the classes the integer labels index (None: ``max label + 1`` of
    tensors; a Dataset needs it given).  ``loss(outputs, targets)``: the mean loss of a batch
    (default cross-entropy).  ``metric``: ``"accuracy"`` or ``"loss"`` (regression: the results'
    ``val_acc``/``test_acc`` then hold the negated mean loss, so that higher is better for every
    method's search).  ``augment``: random crop and flip of image batches, as for CIFAR-10.
    ``model`` is called inside ``torch.random.fork_rng`` seeded with its argument, so a factory
    that draws its weights from the global RNG is reproducible too.
    """

    model: Callable[[int], nn.Module]
    train: Any
    test: Any
    num_classes: int | None = None
    loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
    metric: str = "accuracy"
    augment: bool = False
    name: str = "custom"

    def __post_init__(self):
        check("model", self.model, callable(self.model), "a callable seed -> nn.Module")
        check("loss", self.loss, callable(self.loss), "a callable (outputs, targets) -> mean loss")
        check_choice("metric", self.metric, METRICS)
        check("augment", self.augment, isinstance(self.augment, bool), "a bool")
        train, test = as_data("train", self.train), as_data("test", self.test)
        check("test input shape", test.input_shape, test.input_shape == train.input_shape, f"{train.input_shape}, the training inputs' shape")
        classes = self.num_classes
        if self.metric == "accuracy":
            for key, data in (("train", train), ("test", test)):
                data.check_label_dtype(key)
            if classes is None:
                tensors = isinstance(train, TensorData) and isinstance(test, TensorData)
                check("num_classes", classes, tensors, "an int >= 2 for a Dataset (its labels are not read ahead)")
                classes = int(max(train.y.max(), test.y.max())) + 1
            check_int("num_classes", classes, 2)
            for key, data in (("train", train), ("test", test)):
                data.check_labels(key, classes)
        object.__setattr__(self, "train", train)
        object.__setattr__(self, "test", test)
        object.__setattr__(self, "num_classes", classes)

    def build(self, seed: int) -> nn.Module:
        """The network of initialisation ``seed`` (the global RNG is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self.model(seed)
        check("model(seed)", type(net).__name__, isinstance(net, nn.Module), "an nn.Module")
        return net


# --------------------------------------------------------------------------- data


class TensorData:
    """Inputs and targets held as tensors (the fast path: batches are slices)."""

    def __init__(self, key: str, x: Tensor, y: Tensor):
        check(f"{key} inputs dtype", x.dtype, x.is_floating_point(), "a floating-point dtype (convert them, e.g. x.float() / 255)")
        check(f"{key} size", len(x) if x.dim() else 0, x.dim() > 0 and len(x) > 0, "at least one sample (the dataset is empty)")
        check(f"{key} targets", tuple(y.shape), y.dim() > 0 and len(y) == len(x), f"one target per input: {len(x)} of them")
        self.x, self.y = x, (y.to(torch.int64) if not y.is_floating_point() else y)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def check_label_dtype(self, key: str) -> None:
        check(f"{key} labels dtype", self.y.dtype, self.y.dtype == torch.int64, "an integer dtype (class indices) for metric 'accuracy'")

    def check_labels(self, key: str, classes: int) -> None:
        span = (int(self.y.min()), int(self.y.max()))
        check(f"{key} labels", span, 0 <= span[0] and span[1] < classes, f"within [0, num_classes={classes})")

    def to(self, device: torch.device) -> TensorData:
        out = copy.copy(self)
        out.x, out.y = self.x.to(device), self.y.to(device)
        return out

    def sequential(self, idx: Tensor | None, batch_size: int) -> list[tuple[Tensor, Tensor]]:
        x, y = (self.x, self.y) if idx is None else (self.x[idx], self.y[idx])
        return list(eval_batches(x, y, batch_size))


class SampleData:
    """A map-style Dataset read sample by sample as batches are formed (``dataset[i] -> (input, target)``)."""

    def __init__(self, key: str, dataset: Any):
        ok = hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")
        check(key, type(dataset).__name__, ok, "a pair of tensors (inputs, targets) or a map-style Dataset (__getitem__, __len__)")
        self.key, self.dataset, self.device, self.classes = key, dataset, torch.device("cpu"), None
        check(f"{key} size", len(dataset), len(dataset) > 0, "at least one sample (the dataset is empty)")
        x, y = self.sample(0)
        self.input_shape = tuple(x.shape)
        self.label_dtype = y.dtype

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, i: int) -> tuple[Tensor, Tensor]:
        item = self.dataset[i]
        check(f"{self.key}[{i}]", type(item).__name__, isinstance(item, (tuple, list)) and len(item) == 2, "a pair (input, target)")
        x, y = torch.as_tensor(item[0]), torch.as_tensor(item[1])
        check(f"{self.key}[{i}] input dtype", x.dtype, x.is_floating_point(), "a floating-point dtype (convert it, e.g. x.float() / 255)")
        return x, y

    def check_label_dtype(self, key: str) -> None:
        check(f"{key} labels dtype", self.label_dtype, not self.label_dtype.is_floating_point, "an integer dtype (class indices) for metric 'accuracy'")

    def check_labels(self, key: str, classes: int) -> None:
        self.classes = classes  # each batch's labels are checked as it is read

    def to(self, device: torch.device) -> SampleData:
        out = copy.copy(self)
        out.device = device
        return out

    def gather(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """The batch of samples ``idx`` (read now), on the device."""
        rows = idx.tolist()
        xs, ys = zip(*(self.sample(i) for i in rows))
        x, y = torch.stack(xs), torch.stack(ys)
        if self.classes is not None:
            bad = [i for i, label in zip(rows, y.tolist()) if not 0 <= label < self.classes]
            if bad:
                fail(f"{self.key}[{bad[0]}] label", int(y[rows.index(bad[0])]), f"within [0, num_classes={self.classes})")
            y = y.to(torch.int64)
        return x.to(self.device), y.to(self.device)

    def epoch(self, idx: Tensor | None, batch_size: int, gen: torch.Generator, augment: bool, start: int, stop: int | None) -> Iterator:
        """Batches ``start .. stop - 1`` of one shuffled epoch of ``idx``: the same order, augmentation and
        random draws as :func:`~fds_tune.data.epoch_batches` over the same samples held as tensors."""
        base = torch.arange(len(self)) if idx is None else idx.cpu()
        count = num_batches(len(base), batch_size)
        check("batch_size", batch_size, count > 0, f"<= the {len(base)} samples with drop_last=True, or an epoch has no batches")
        order = torch.randperm(len(base), generator=gen)
        for i in range(count if stop is None else min(stop, count)):
            sel = base[order[i * batch_size : (i + 1) * batch_size]]
            if i < start:  # a skipped batch is not read, but its augmentation draws are taken as a full epoch takes them
                if augment:
                    augment_batch(torch.zeros(len(sel), 1, 1, 1), gen)
                continue
            x, y = self.gather(sel)
            yield (augment_batch(x, gen) if augment else x), y

    def sequential(self, idx: Tensor | None, batch_size: int) -> LazyBatches:
        return LazyBatches(self, torch.arange(len(self)) if idx is None else idx.cpu(), batch_size)


class LazyBatches:
    """Sequential batches of a :class:`SampleData`, read each time they are iterated."""

    def __init__(self, data: SampleData, idx: Tensor, batch_size: int):
        self.data, self.idx, self.batch_size = data, idx, batch_size

    def __len__(self) -> int:
        return num_batches(len(self.idx), self.batch_size, drop_last=False)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(len(self)):
            yield self.data.gather(self.idx[i * self.batch_size : (i + 1) * self.batch_size])


def as_data(key: str, data: Any) -> TensorData | SampleData:
    """``(inputs, targets)`` tensors as :class:`TensorData`, a Dataset as :class:`SampleData`."""
    if isinstance(data, (TensorData, SampleData)):
        return data
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        return TensorData(key, *data)
    return SampleData(key, data)


def on_device(data: TensorData | SampleData, device: torch.device) -> TensorData | SampleData:
    """``data`` with its tensors (or the batches it reads) on ``device``."""
    return data.to(device)


# --------------------------------------------------------------------------- built-in problems and model checks


def builtin_problem(config) -> ProblemSpec:
    """The built-in dataset ``config.dataset`` and network ``config.model`` as a :class:`ProblemSpec`."""
    data = load_dataset(config.dataset, config.data_root)
    x_train, y_train, x_test = data.x_train, data.y_train, data.x_test
    size = getattr(config, "image_size", None)
    if size is not None:
        side = min(x_train.shape[-2:])
        check("image_size", size, size <= side, f"an int <= {side}, the side of {data.name}'s images (pooling only shrinks)")
        x_train, x_test = (F.adaptive_avg_pool2d(x, size) for x in (x_train, x_test))
    keep = getattr(config, "train_size", None)
    if keep is not None:
        check("train_size", keep, keep <= len(x_train), f"an int <= {len(x_train)}, the training images of {data.name}")
        idx = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))[:keep]  # one fixed subset
        x_train, y_train = x_train[idx], y_train[idx]
    shape, classes, name = tuple(x_train.shape[1:]), data.num_classes, config.model
    return ProblemSpec(
        model=lambda seed: build_model(name, shape, classes, seed=seed),
        train=TensorData("train", x_train, y_train),
        test=TensorData("test", x_test, data.y_test),
        num_classes=classes,
        augment=data.augment,
        name=data.name,
    )


def check_model(model: nn.Module, batch: tuple[Tensor, Tensor]) -> None:
    """Refuse, naming the module and what to change, a network the functional step cannot train:
    one without floating-point parameters, or one whose ``forward`` changes its own state
    (a buffer changed in place, an attribute set) other than BatchNorm's running statistics.
    Runs a plain forward only (no ``torch.func`` transform): every method's run needs it; forward
    mode's own requirement on the loss is :func:`check_forward_mode`'s."""
    x, _ = batch
    what = type(model).__name__
    params = list(model.named_parameters())
    check("model", what, bool(params), "a network with parameters to train (it has none)")
    for name, p in params:
        check(f"model parameter {name!r}", p.dtype, p.is_floating_point(), "a floating-point dtype (the engine differentiates with respect to it; make it a buffer if it is a constant)")
    probe = copy.deepcopy(model).train()
    norms = {m for m in probe.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    before = {n: _state(m) for n, m in probe.named_modules() if m not in norms}
    with torch.no_grad():
        probe(x)
    for n, m in probe.named_modules():
        if n in before and _state(m) != before[n]:
            changed = sorted(k for k in set(before[n]) | set(_state(m)) if before[n].get(k) != _state(m).get(k))
            where = f"{n} ({type(m).__name__})" if n else what
            fail(
                f"model {where}", f"forward changes {changed}",
                "a forward that changes no state: the functional step cannot follow state changed in forward; compute it from "
                "the inputs, keep it in a parameter, or update it outside forward",
            )


def check_forward_mode(model: nn.Module, batch: tuple[Tensor, Tensor], loss: Callable) -> None:
    """Refuse, with the way round, a loss whose gradient forward mode cannot differentiate
    (``torch.func.jvp`` of ``grad``), for the runs that differentiate through training (FDS, HD,
    greedy).  Its first call in a process also pays ``torch.func``'s lazy imports (~1 s)."""
    x, y = batch
    probe = copy.deepcopy(model).eval()  # running statistics, no dropout: only the loss's derivatives are probed here
    params = {n: p.detach() for n, p in probe.named_parameters()}
    try:
        jvp(grad(lambda p: loss(functional_call(probe, p, (x,)), y)), (params,), ({n: torch.ones_like(p) for n, p in params.items()},))
    except RuntimeError as err:
        fail(
            "loss", getattr(loss, "__name__", type(loss).__name__),
            f"a loss forward mode can differentiate (torch.func.jvp of its gradient failed: {' '.join(str(err).split())[:200]}); "
            "write it with plain tensor ops, e.g. ((out - y) ** 2).mean() instead of F.mse_loss",
        )


def _state(module: nn.Module) -> dict[str, Any]:
    """What a forward could change: buffer values and plain attributes (tensors by value)."""
    out = {f"buffer {k}": (b.detach().clone() if b is not None else None) for k, b in module._buffers.items()}
    for k, v in vars(module).items():
        if not k.startswith("_") and k != "training":
            out[k] = v.detach().clone() if isinstance(v, Tensor) else v
    return {k: _Same(v) for k, v in out.items()}


class _Same:
    """Equality by value for tensors (shape, dtype and every element), by ``==`` otherwise."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        a, b = self.value, getattr(other, "value", other)
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and a.dtype == b.dtype and bool((a == b).all())
        try:
            return bool(a == b)
        except (RuntimeError, TypeError, ValueError):  # no usable ==: unchanged only if the very same
            return a is b
