"""The one inner loop: plain training, forward mode and HD all run through :func:`inner_loop`.

Read top to bottom, one inner step is::

    for t, (x, y) in take(batches, horizon):
        theta, carry, loss, stats = step(t, x, y, theta, buffers, carry)   # the method's pure step
        buffers = update_buffers(buffers, stats)                            # BatchNorm running statistics
        stop if a loss is not finite (checked every k steps)                # divergence ends the run

What differs between methods is only ``step`` and what it carries: the
optimizer state (plain training), plus the tangents (forward mode), plus the
hyperparameters and their one-step direction (HD).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from .functional_model import FunctionalModel
from .groups import HyperLayout
from .optim import Optimizer
from .validation import check_int

__all__ = [
    "Batch", "BatchSource", "LoopEnd", "run_length", "take", "all_finite", "inner_loop", "plain_step", "replayable", "one_pass",
    "validation_gradient", "CHECK_EVERY_ACCELERATOR", "has_dropout", "step_rng", "step_seed",
]

CHECK_EVERY_ACCELERATOR = 50  # steps between divergence checks on a GPU (each check is one host sync)

Batch = tuple[torch.Tensor, torch.Tensor]
# Training batches: a sequence, a replayable source ``source(first, n)`` giving the batches of steps
# ``first .. first + n - 1`` (the same ones on every call), or a one-shot iterable.
BatchSource = Sequence[Batch] | Callable[[int, int], Iterable[Batch]] | Iterable[Batch]
Step = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, dict, Any], tuple[torch.Tensor, Any, torch.Tensor, dict]]


class LoopEnd(NamedTuple):
    """Where a loop ended: flat weights, buffers, the step's carry, per-step losses, divergence."""

    theta: torch.Tensor
    buffers: dict[str, torch.Tensor]
    carry: Any
    losses: list[float]
    diverged: bool


def run_length(batches: BatchSource, horizon: int | None) -> int:
    """The number of inner steps: ``len(batches)`` unless ``horizon`` is given (required for plain iterables and sources)."""
    if horizon is None:
        if not hasattr(batches, "__len__"):
            raise ValueError("horizon: train_batches has no len(); pass horizon=T for an iterable or a source of batches")
        horizon = len(batches)
    check_int("horizon", horizon, 1, rule="a positive int (number of inner steps)")
    if hasattr(batches, "__len__") and len(batches) < horizon:
        n = len(batches)  # the same words as when an iterable runs out during the run
        raise ValueError(f"horizon: got {horizon}, but train_batches ran out after {n} batches (it holds only {n})")
    return horizon


def replayable(batches: BatchSource) -> Callable[[int, int], Iterable[Batch]] | None:
    """``source(first, n)`` for a sequence or a callable source; None for a one-shot iterable."""
    if callable(batches):
        return batches
    if isinstance(batches, Sequence):
        return lambda first, n: batches[first : first + n]
    return None


def one_pass(batches: BatchSource, horizon: int) -> Iterable[Batch]:
    """The batches of one pass over ``horizon`` steps: a sequence or an iterable as given, a source called once."""
    return batches(0, horizon) if callable(batches) else batches


def take(batches: Iterable[Batch], horizon: int) -> Iterator[tuple[int, Batch]]:
    """``(t, batch)`` for the first ``horizon`` batches; a clear error if there are fewer."""
    it = iter(batches)
    for t in range(horizon):
        try:
            yield t, next(it)
        except StopIteration:
            raise ValueError(f"horizon: got {horizon}, but train_batches ran out after {t} batches") from None


def has_dropout(model: nn.Module) -> bool:
    """``model`` holds a dropout layer (any ``nn.Dropout*``): its steps draw random masks."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


def step_seed(step: int) -> int:
    """The seed of the random draws (dropout masks) of global inner step ``step`` (validation batch ``i``: ``-1 - i``)."""
    return (0x5EED * 1_000_003 + step) % 2**63


@contextlib.contextmanager
def step_rng(step: int, device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Random ops inside draw from :func:`step_seed` of ``step``, and the global RNG is left as it was.

    So a step's dropout masks are a function of its global index alone: the plain step, every
    column group of forward mode (each recomputes the primal step, under ``vmap(randomness="same")``:
    one mask for all columns), the reference way, and any replay of the step all see the same masks.
    ``enabled=False`` (a network without dropout) costs nothing.
    """
    if not enabled:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(step_seed(step))
        yield


def all_finite(*tensors: torch.Tensor) -> bool:
    """No NaN or inf in any of ``tensors``."""
    return all(bool(torch.isfinite(x).all()) for x in tensors)


def inner_loop(
    fm: FunctionalModel,
    theta: torch.Tensor,
    buffers: dict[str, torch.Tensor],
    carry: Any,
    batches: Iterable[Batch],
    horizon: int,
    step: Step,
    *,
    forward_mode: bool = False,
    check_every: int | None = None,
) -> LoopEnd:
    """Run ``step`` over ``horizon`` batches; stop early when the loss or the weights become non-finite.

    ``step(t, x, y, theta, buffers, carry) -> (theta, carry, loss, stats)`` is one
    pure inner step (``t`` counts from 0 within this loop); ``stats`` are the
    BatchNorm batch statistics that :meth:`FunctionalModel.update_buffers` folds
    into the running ones.  ``forward_mode`` selects BatchNorm's forward-mode
    kernels (:meth:`FunctionalModel.batch_statistics`).

    Divergence is checked every ``check_every`` steps (default: every step on a
    CPU, where a check costs nothing; every :data:`CHECK_EVERY_ACCELERATOR` steps on
    an accelerator, where reading a loss back is a host sync that stalls the
    device).  A check reads the losses since the last one: a non-finite loss
    means the weights it was computed from were already non-finite, so the
    weights themselves are scanned only once, at the end.  A run that diverges
    therefore stops within ``check_every`` steps of it; the steps it took all count.
    """
    if check_every is None:
        check_every = 1 if theta.device.type == "cpu" else CHECK_EVERY_ACCELERATOR
    losses: list[float] = []
    pending: list[torch.Tensor] = []
    diverged = False
    with fm.batch_statistics(forward_mode=forward_mode):
        for t, (x, y) in take(batches, horizon):
            theta, carry, loss, stats = step(t, x, y, theta, buffers, carry)
            buffers = fm.update_buffers(buffers, stats)
            pending.append(loss.detach())
            if len(pending) == check_every or t == horizon - 1:
                recent = torch.stack(pending).double().tolist()  # the one host sync
                losses += recent
                pending = []
                if not all(math.isfinite(v) for v in recent):
                    diverged = True
                    break
    diverged = diverged or not all_finite(theta)
    return LoopEnd(theta, buffers, carry, losses, diverged)


def validation_gradient(fm: FunctionalModel, theta: torch.Tensor, buffers: dict[str, torch.Tensor], val_batches) -> tuple[float, torch.Tensor]:
    """Mean validation loss over all samples (train-mode BatchNorm) and its gradient; call inside
    :meth:`FunctionalModel.batch_statistics`."""
    loss_grad = torch.func.grad_and_value(fm.loss, has_aux=True)
    total, count, g_sum = 0.0, 0, torch.zeros_like(theta)
    stochastic = has_dropout(fm.model)
    for i, (x, y) in enumerate(val_batches):
        with step_rng(-1 - i, theta.device, stochastic):  # dropout: validation batch i's masks, the same in every run
            g, (loss, _) = loss_grad(theta, buffers, x, y)
        n = len(y)
        g_sum = g_sum + n * g
        total += float(loss) * n
        count += n
    if count == 0:
        raise ValueError("val_batches: got no batches")
    return total / count, g_sum / count


def plain_step(fm: FunctionalModel, opt: Optimizer, layout: HyperLayout):
    """One plain training step ``(theta, state, hvec, buffers, x, y, t) -> (theta', state', grad, loss, BN stats)``.

    Plain reverse mode (one backward pass, no torch.func transform): as fast as a plain
    ``nn.Module`` + ``torch.optim.SGD`` step (experiments/bench_plain.py).  ``hvec`` is the
    step's hyperparameter vector (:class:`~fds_tune.groups.HyperLayout`), ``t`` the global step.
    """

    stochastic = has_dropout(fm.model)

    def step(theta, opt_state, hvec, buffers, x, y, t):
        with torch.enable_grad(), step_rng(t, theta.device, stochastic):
            leaf = theta.detach().requires_grad_(True)
            loss, stats = fm.loss(leaf, buffers, x, y)
            (g,) = torch.autograd.grad(loss, leaf)
        with torch.no_grad():
            theta, opt_state = opt.update(theta, opt_state, g, layout.hypers(hvec), t)
        return theta, opt_state, g, loss.detach(), stats

    return step
