"""One training problem shared by FDS and every baseline: data, splits, network, loss, metric.

FDS, the black-box baselines and the greedy methods all train through a
:class:`Problem`, so they see the same data splits, the same network
initialisation and the same batches for the same seed.  What is trained is a
:class:`~fds_tune.spec.ProblemSpec`: a built-in dataset and network, or a user's own
(``ProblemConfig.user_problem``, or a spec given directly).
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn

from .data import DATASETS, epoch_batches, num_batches, train_val_split
from .functional_model import FunctionalModel
from .models import MODELS
from .problems import resolve_problem
from .results import DIVERGED_LOSS, diverged_metrics
from .spec import ProblemSpec, TensorData, builtin_problem, check_forward_mode, check_model, on_device
from .validation import check, check_choice, check_int, check_number, check_optional, fail

__all__ = ["ProblemConfig", "Problem", "resolve_device", "cached_problem", "problem_for", "RETRAIN_DRAW"]

RETRAIN_DRAW = -1  # the draw of a final retraining (every method's hand-over): its initialisation and batch order


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when this process can see a GPU, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check("device", device, device == "cpu" or device.startswith("cuda"), "'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("device", device, "'auto' or 'cpu': no CUDA device is visible")
    return torch.device(device)


@dataclass(frozen=True)
class ProblemConfig:
    dataset: str = "digits"  # the embedded default: needs no download
    model: str = "lenet"
    batch_size: int = 128  # the paper's CPU-friendly default; CIFAR-10 preset uses 256
    val_fraction: float = 0.05  # the paper carves 5% of the training set out for validation
    seed: int = 0  # network initialisation, splits and batch order
    data_root: str | None = None  # where dataset files live (None: the loader's defaults)
    device: str = "auto"
    # a user's problem: a name given to fds_tune.register_problem, or "module:function" (a factory
    # returning a ProblemSpec, importable on every node); it replaces dataset, model and data_root
    user_problem: str | None = None
    # a cheaper built-in problem: the training set cut to its first ``train_size`` images in a fixed
    # order (the same for every seed; the test set is kept whole), images average-pooled to
    # ``image_size`` x ``image_size`` (train and test alike).  None: as loaded.
    train_size: int | None = None
    image_size: int | None = None

    def __post_init__(self):
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("model", self.model, MODELS)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        check_number("val_fraction", self.val_fraction, low=0, high=1, low_open=True, high_open=True, rule="a number in (0, 1)")
        if self.data_root is not None and not isinstance(self.data_root, str):  # a TypeError: callers rely on it
            raise TypeError(f"data_root: got {self.data_root!r}; must be a path string or None")
        check("device", self.device, isinstance(self.device, str), "a string such as 'auto', 'cpu' or 'cuda'")
        resolve_device(self.device) if self.device != "auto" else None
        ok = self.user_problem is None or (isinstance(self.user_problem, str) and bool(self.user_problem))
        check("user_problem", self.user_problem, ok, "None, a registered problem name or 'module:function'")
        check_optional("train_size", self.train_size, check_int, 2, rule="an int >= 2 (training images kept) or None (all)")
        check_optional("image_size", self.image_size, check_int, 1, rule="an int >= 1 (pooled side) or None (as loaded)")
        cut = self.train_size is not None or self.image_size is not None
        check("user_problem", self.user_problem, not (cut and self.user_problem), "None when train_size or image_size is set (they cut a built-in dataset)")


class Problem:
    """Data on the training device (or a Dataset read on the fly), seeded splits, batches, the network, loss and metric.

    ``spec`` is the problem itself (:class:`~fds_tune.spec.ProblemSpec`); by default it comes from
    ``config``: ``config.user_problem`` (a registered name or ``"module:function"``, see
    :func:`~fds_tune.problems.resolve_problem`), else the built-in ``config.dataset`` and ``config.model``.
    """

    def __init__(self, config: ProblemConfig, spec: ProblemSpec | None = None):
        check("spec", type(spec).__name__, spec is None or isinstance(spec, ProblemSpec), "a ProblemSpec or None")
        self.config = config
        self.device = resolve_device(config.device)
        if spec is None:
            spec = resolve_problem(config.user_problem) if config.user_problem is not None else builtin_problem(config)
        self.spec = spec
        self.loss = spec.loss
        self.num_classes = spec.num_classes
        self.train_data = on_device(spec.train, self.device)
        self.test_data = on_device(spec.test, self.device)
        n = self.n_train - len(self.split(0)[1])
        check("batch_size", config.batch_size, self.steps_per_epoch(n) > 0, f"<= the {n} training samples left after the validation split")
        check_model(self.model(0), self._probe_batch())
        self._forward_mode_checked = False

    def check_forward_mode(self) -> None:
        """Refuse a loss that forward mode cannot differentiate (:func:`~fds_tune.spec.check_forward_mode`),
        once per problem; a run that differentiates through training (FDS, HD, greedy) calls it before
        its first step, which so pays ``torch.func``'s lazy imports (~1 s per process) outside its
        ``compute_s``.  Plain runs (a black-box trial, a hand-over) never need it, nor pay it."""
        if not self._forward_mode_checked:
            check_forward_mode(self.model(0), self._probe_batch(), self.spec.loss)
            self._forward_mode_checked = True

    def _probe_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return next(iter(self.eval_batches(torch.arange(min(2, self.n_train), device=self.device), 2)))

    @property
    def n_train(self) -> int:
        return len(self.train_data)

    def split(self, draw: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Train/validation indices for outer step (or draw) ``draw``; reproducible from the seed."""
        train_idx, val_idx = train_val_split(self.n_train, self.config.val_fraction, seed=self._seed(draw, 0))
        return train_idx.to(self.device), val_idx.to(self.device)

    def steps_per_epoch(self, n: int | None = None) -> int:
        n = self.n_train - len(self.split(0)[1]) if n is None else n
        return num_batches(n, self.config.batch_size)

    def model(self, draw: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
        """The network, initialised from ``(seed, draw)``, on the training device.

        Each FDS outer step ``k`` draws its own initialisation (``draw=k``), and so does a
        final retraining (``RETRAIN_DRAW``), as the paper's code does: a schedule is not
        tuned to one initialisation.  A single-run method (a black-box trial, HD, greedy)
        trains draw 0, the initialisation of FDS's first outer step.
        """
        net = self.spec.build(self._seed(draw, 2) % 2**32)
        return net.to(device=self.device, dtype=dtype)

    def functional(self, model: nn.Module) -> FunctionalModel:
        """``model`` as the engine sees it, with this problem's loss and metric."""
        return FunctionalModel(model, self.loss, metric=self.spec.metric)

    def diverged_metrics(self) -> dict[str, float | bool]:
        """The metrics a diverged run reports: chance accuracy, or the (negated) stand-in loss for metric "loss"."""
        if self.spec.metric == "loss":
            return {"val_acc": -DIVERGED_LOSS, "val_loss": DIVERGED_LOSS, "test_acc": -DIVERGED_LOSS, "diverged": True}
        return diverged_metrics(self.num_classes)

    def train_batches(self, idx: torch.Tensor | None, epochs: int, draw: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled (and, with ``augment``, augmented) batches over ``epochs`` epochs of ``idx`` (None: all)."""
        gen = torch.Generator().manual_seed(self._seed(draw, 1))
        return itertools.chain.from_iterable(self._epoch(idx, gen) for _ in range(epochs))

    def _epoch(self, idx, gen, start: int = 0, stop: int | None = None):
        data, bs, augment = self.train_data, self.config.batch_size, self.spec.augment
        if isinstance(data, TensorData):  # the fast path: slices of tensors already on the device
            x, y = (data.x, data.y) if idx is None else (data.x[idx], data.y[idx])
            return itertools.islice(epoch_batches(x, y, bs, gen, augment=augment), start, stop)
        return data.epoch(idx, bs, gen, augment, start, stop)

    def steps(self, idx: torch.Tensor | None, first: int, n: int, handover: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of global steps ``first .. first + n - 1`` of a run over ``idx`` (None: the
        full training set), one epoch after another.

        Epoch ``e`` draws its order with ``draw=e`` (a search run), or ``draw=RETRAIN_DRAW - e``
        (a hand-over: the final retraining of every method), so that a run resumes at any step
        without replaying earlier epochs, and every method's hand-over sees the same batches.
        The same arguments give the same batches, every time (a replay of steps sees what they saw).
        """
        steps_per_epoch = self.steps_per_epoch(self.n_train if idx is None else len(idx))
        epoch, skip = divmod(first, steps_per_epoch)
        while n > 0:
            take = min(n, steps_per_epoch - skip)
            draw = RETRAIN_DRAW - epoch if handover else epoch
            yield from self._epoch(idx, torch.Generator().manual_seed(self._seed(draw, 1)), skip, skip + take)
            epoch, skip, n = epoch + 1, 0, n - take

    def replayable(self, idx: torch.Tensor | None, handover: bool = False) -> Callable[[int, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
        """``(first, n) -> the batches of global steps first .. first + n - 1`` (:meth:`steps`): a source an
        engine can ask again for any steps it replays, getting the same batches."""
        return functools.partial(self.steps, idx, handover=handover)

    def eval_batches(self, idx: torch.Tensor, batch_size: int = 1024):
        """Sequential batches of the training samples ``idx`` (re-iterable)."""
        return self.train_data.sequential(idx, batch_size)

    def test_batches(self, batch_size: int = 1024):
        """Sequential batches of the test set (re-iterable)."""
        return self.test_data.sequential(None, batch_size)

    def _seed(self, draw: int, stream: int) -> int:
        return (self.config.seed * 1_000_003 + draw * 7919 + stream) % (2**63 - 1)


@functools.lru_cache(maxsize=1)
def cached_problem(config: ProblemConfig) -> Problem:
    """The loaded problem, cached per process: a reused Ray actor loads its dataset once."""
    return Problem(config)


def problem_for(config: ProblemConfig, problem: Problem | ProblemSpec | None = None) -> Problem:
    """The :class:`Problem` a run trains: ``problem`` itself, a :class:`~fds_tune.spec.ProblemSpec` with
    ``config``'s seed, split, batch size and device (cached per process, like :func:`cached_problem`),
    or, given None, ``cached_problem(config)``."""
    if problem is None:
        return cached_problem(config)
    if isinstance(problem, Problem):
        return problem
    check("problem", type(problem).__name__, isinstance(problem, ProblemSpec), "a Problem, a ProblemSpec or None")
    return _spec_problem(config, problem)


@functools.lru_cache(maxsize=1)
def _spec_problem(config: ProblemConfig, spec: ProblemSpec) -> Problem:
    return Problem(config, spec)
