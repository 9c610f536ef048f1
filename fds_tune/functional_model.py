"""A module seen as a pure function of one flat parameter vector.

Everything the engine differentiates goes through :class:`FunctionalModel`:
parameters are a single flat tensor (so optimizer updates and tangents are a
few fused elementwise ops), buffers are passed explicitly, and BatchNorm's
running statistics are updated *outside* the differentiated function.

BatchNorm inside ``torch.func`` transforms: PyTorch updates running statistics
in place, which fails on captured tensors.  While :meth:`FunctionalModel.loss`
runs, BatchNorm layers use batch statistics without tracking, and a forward
pre-hook records each layer's batch mean and unbiased variance (detached) as an
auxiliary output.  :meth:`FunctionalModel.update_buffers` then applies exactly
PyTorch's running-statistics rule to the explicit buffers.

Forward mode (``batch_statistics(forward_mode=True)``) also swaps BatchNorm's
computation for :func:`~fds_tune.batchnorm.batch_norm_train`: the same values and
gradients, with an exact forward-mode derivative of its backward pass that costs a
fraction of PyTorch's generic one.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn as nn
from torch.func import functional_call

from .batchnorm import batch_norm_train

__all__ = ["FunctionalModel", "TrainState", "val_test_metrics"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Stats = dict[str, tuple[torch.Tensor, torch.Tensor]]


class TrainState(tuple):
    """(params, buffers, opt_state, step): everything needed to continue a run.

    ``params`` and ``buffers`` are name -> tensor dicts, ``opt_state`` a tuple of
    flat tensors, ``step`` the number of inner steps taken so far.
    """

    __slots__ = ()

    def __new__(cls, params, buffers, opt_state, step):
        return super().__new__(cls, (params, buffers, opt_state, step))

    params = property(lambda s: s[0])
    buffers = property(lambda s: s[1])
    opt_state = property(lambda s: s[2])
    step = property(lambda s: s[3])


_PLAIN_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _batch_norm_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Train-mode forward of a BatchNorm layer (batch statistics) through :func:`batch_norm_train`."""
    self._check_input_dim(x)
    if x.numel() // x.shape[1] <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
    return batch_norm_train(x, self.weight, self.bias, self.eps)


class FunctionalModel:
    """Pure-function view of ``model``: ``loss(flat_params, buffers, x, y)``.

    ``metric``: what :meth:`evaluate` reports beside the loss, ``"accuracy"`` (argmax against
    integer labels) or ``"loss"`` (regression: the negated mean loss, so that higher is better).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, metric: str = "accuracy"):
        self.model = model
        self.loss_fn = loss_fn
        self.metric = metric
        named = list(model.named_parameters())
        if not named:
            raise ValueError("model: has no parameters to train")
        self.names = [n for n, _ in named]
        # A tensor shared by two modules (weight tying) is given under each module's name explicitly.
        # A module used twice needs nothing: its one attribute serves both uses.  (functional_call's
        # own tie_weights walks every module on every call, and with a module registered twice it
        # leaves the module holding the call's tensors afterwards, in PyTorch 2.14.)
        self.aliases = _aliases(model, model.named_parameters(), model.named_parameters(remove_duplicate=False))
        self.buffer_aliases = _aliases(model, model.named_buffers(), model.named_buffers(remove_duplicate=False))
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.numel = sum(self.numels)
        self.batchnorms = {
            n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        }
        self._stats: Stats = {}
        self.record_stats = True  # False: loss() skips the statistics (a recomputation of a step already recorded)

    # ---- parameters ----------------------------------------------------------------
    def flatten(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: c.view(s) for n, c, s in zip(self.names, torch.split(flat, self.numels), self.shapes)}

    def start_state(self, init_opt_state: Callable[[torch.Tensor], tuple]) -> TrainState:
        """A run's starting state: copies of the model's current parameters and buffers,
        ``init_opt_state(flat_params)`` (an optimizer's ``init``), step 0."""
        theta = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()]).clone()
        buffers = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        return TrainState(self.unflatten(theta), buffers, init_opt_state(theta), 0)

    def _with_aliases(self, params: dict, buffers: dict) -> tuple[dict, dict]:
        if self.aliases:
            params = {**params, **{alias: params[name] for alias, name in self.aliases.items()}}
        if self.buffer_aliases:
            buffers = {**buffers, **{alias: buffers[name] for alias, name in self.buffer_aliases.items()}}
        return params, buffers

    # ---- the differentiated function ----------------------------------------------
    def loss(self, flat: torch.Tensor, buffers: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor):
        """Mean train-mode loss on one batch, and the BatchNorm batch statistics (aux).

        Must be called inside :meth:`batch_statistics`.
        """
        self._stats = {}
        out = functional_call(self.model, self._with_aliases(self.unflatten(flat), buffers), (x,), tie_weights=False)
        stats, self._stats = self._stats, {}
        return self.loss_fn(out, y), stats

    @contextlib.contextmanager
    def batch_statistics(self, forward_mode: bool = False) -> Iterator[None]:
        """Train mode, BatchNorm on batch statistics without in-place tracking, stats recorded.

        With ``forward_mode``, BatchNorm layers compute with :func:`batch_norm_train`
        (fast ``jvp(grad)``; no double backward).
        """
        was_training = {m: m.training for m in self.model.modules()}
        hooks = []
        for name, bn in self.batchnorms.items():
            bn.track_running_stats = False
            hooks.append(bn.register_forward_pre_hook(self._recorder(name)))
        swapped = [  # a layer whose forward the user replaced on the instance keeps it
            m for m in self.model.modules() if forward_mode and isinstance(m, _PLAIN_BATCHNORMS) and "forward" not in vars(m)
        ]
        for bn in swapped:
            bn.forward = _batch_norm_forward.__get__(bn)
        self.model.train()
        try:
            yield
        finally:
            for bn in swapped:
                del bn.forward
            for h in hooks:
                h.remove()
            for bn in self.batchnorms.values():
                bn.track_running_stats = True
            for m, mode in was_training.items():
                m.training = mode

    def _recorder(self, name: str):
        def record(module, inputs):
            if not self.record_stats:
                return
            x = inputs[0].detach()
            var, mean = torch.var_mean(x, [0] + list(range(2, x.dim())), correction=1)
            self._stats[name] = (mean, var)

        return record

    def update_buffers(self, buffers: dict[str, torch.Tensor], stats: Stats) -> dict[str, torch.Tensor]:
        """PyTorch's running-statistics rule, applied out of place to explicit buffers."""
        if not stats:
            return buffers
        new = dict(buffers)
        for name, (mean, var) in stats.items():
            bn = self.batchnorms[name]
            prefix = f"{name}." if name else ""
            count = buffers[prefix + "num_batches_tracked"] + 1
            factor = 1.0 / float(count) if bn.momentum is None else bn.momentum
            new[prefix + "num_batches_tracked"] = count
            new[prefix + "running_mean"] = torch.lerp(buffers[prefix + "running_mean"], mean, factor)
            new[prefix + "running_var"] = torch.lerp(buffers[prefix + "running_var"], var, factor)
        return new

    # ---- evaluation ----------------------------------------------------------------
    @torch.no_grad()
    def evaluate(
        self, flat: torch.Tensor, buffers: dict[str, torch.Tensor], batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[float, float]:
        """Eval-mode (running statistics) mean loss and metric (accuracy, or -loss) over ``batches``."""
        was_training = {m: m.training for m in self.model.modules()}
        self.model.eval()
        params = self.unflatten(flat)
        total_loss, correct, count = 0.0, 0, 0
        try:
            for x, y in batches:
                out = functional_call(self.model, self._with_aliases(params, buffers), (x,), tie_weights=False)
                total_loss += float(self.loss_fn(out, y)) * len(y)
                correct += int((out.argmax(-1) == y).sum()) if self.metric == "accuracy" else 0
                count += len(y)
        finally:
            for m, mode in was_training.items():
                m.training = mode
        if count == 0:
            raise ValueError("evaluate: got no batches")
        return total_loss / count, (correct / count if self.metric == "accuracy" else -total_loss / count)


def _aliases(model: nn.Module, unique, every) -> dict[str, str]:
    """Names of a shared tensor in another module than its first name's -> its first name."""
    first = {id(t): n for n, t in unique}

    def slot(name):  # (the owning module, the attribute)
        owner, _, attr = name.rpartition(".")
        return id(model.get_submodule(owner)), attr

    return {n: first[id(t)] for n, t in every if slot(n) != slot(first[id(t)])}


def val_test_metrics(fm: FunctionalModel, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], val_batches, test_batches):
    """Eval-mode validation and test metrics of a trained state; None when the loss is not finite."""
    theta = fm.flatten(params)
    val_loss, val_acc = fm.evaluate(theta, buffers, val_batches)
    if not math.isfinite(val_loss):
        return None
    _, test_acc = fm.evaluate(theta, buffers, test_batches)
    return {"val_acc": val_acc, "val_loss": val_loss, "test_acc": test_acc, "diverged": False}
