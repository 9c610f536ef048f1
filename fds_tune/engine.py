"""FDS: exact hypergradients with shared hyperparameters, in forward or reverse mode.

Inner optimizer (any :class:`~fds_tune.optim.Optimizer`; SGD shown)::

    v_{t+1}     = mu_t v_t + (clamp(g_t) + beta_t theta_t)
    theta_{t+1} = theta_t - eta_t v_{t+1}

Each hyperparameter kind ``k`` has ``n_k`` shared values (per parameter group, if
the kind is given per group: :mod:`fds_tune.groups`); step ``t`` of ``T`` uses value
``floor(n_k t / T)``.  Every shared value is a *column*.  The objective is the
validation loss of the final weights, ``L_val(theta_T)``.  Two exact ways:

**Forward mode** (``mode="forward"``, the paper's way).  For every column we carry
the tangents ``dtheta_t/dlambda`` and ``dstate_t/dlambda`` forward.  One inner step
maps ``(theta, state, h) -> (theta', state')``; its tangent is ``torch.func.jvp`` of
that pure step (forward-over-reverse, since the step calls ``torch.func.grad``),
batched over columns with ``vmap``.  Columns whose chunk has not started have zero
tangents and are skipped, so the work per step grows with the number of *active*
columns.  Memory is ``O(P * n)`` (the tangents), independent of the horizon.

**Reverse mode** (``mode="reverse"``, :mod:`fds_tune.reverse`).  Train once storing
the states (or checkpoints of them), then sweep backward carrying the adjoint of the
state.  Per step the cost is one Hessian-vector product, whatever the number of
columns, and the sweep yields the hypergradient of every single step
(``HyperGradients.per_step``).  Memory grows with the states stored
(``O((T/s + s) P)`` with a checkpoint every ``s`` steps).

The clamp is differentiated exactly in both (its derivative is the mask where it
does not bind).  The validation loss uses train-mode BatchNorm on each validation
batch (batch statistics, as the paper's code does), so that it is the exact function
differentiated; running statistics are used only for evaluation (accuracy).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import grad_and_value, jvp, vmap

from .functional_model import FunctionalModel, LossFn, TrainState
from .groups import GroupSpec, HyperLayout, columns_by_kind, param_groups
from .loop import (
    Batch, BatchSource, all_finite, has_dropout, inner_loop, one_pass, plain_step, replayable, run_length, step_rng,
    validation_gradient,
)
from .optim import Optimizer, resolve_optimizer
from .reverse import Reverse, default_checkpoint_every
from .schedule import Schedule, value_index
from .validation import check, check_choice, check_int, check_optional, fail

__all__ = [
    "hypergradients", "train", "HyperGradients", "TrainResult", "default_group_size", "make_step", "hyper_vectors",
    "MODES", "TANGENT_METHODS", "choose_mode",
]

MODES = ("forward", "reverse", "auto")
TANGENT_METHODS = ("vmap", "per_column")  # forward mode's batched jvp, and the slow per-column double-backward reference
DEFAULT_MEMORY_BUDGET = 1024**3  # bytes of extra activation memory for forward mode's batched columns
DEFAULT_CHECKPOINT_BUDGET = 2 * 1024**3  # bytes of stored states for reverse mode (every step stored when it fits)
STALL_RATIO = 0.95  # a run stalled when its final train loss stays above 95% of its first
# Costs in plain training steps, measured with experiments/bench_reverse.py (LeNet, batch 128, CPU, three
# runs on each of two machines; docs/results.md): forward mode paid about one step plus 1.0-1.5 per active
# column (5 to 22 active on average) on the first, more on the second; reverse mode one step forward,
# 2.2-2.8 for the step back (the gradient recomputed with its graph, then a double backward) and, with
# checkpoints, one recomputed step.  So the estimate leans to forward mode where the two are close.
FORWARD_PER_COLUMN = 1.1
REVERSE_SWEEP = 2.5


@dataclass
class TrainResult:
    """End of an inner run: final state, per-step train losses, divergence flag."""

    state: TrainState
    train_losses: list[float]
    diverged: bool = False

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return self.state.params

    @property
    def buffers(self) -> dict[str, torch.Tensor]:
        return self.state.buffers

    @property
    def stalled(self) -> bool:
        """The run did not learn: the mean train loss over its last tenth of steps is at
        least ``STALL_RATIO`` times the first step's loss (the loss at the starting weights).

        A network that collapsed (dead units, constant predictions) ends near its starting
        loss without any NaN, so ``diverged`` stays False; this is how such a run shows.
        """
        n = len(self.train_losses)
        if n < 2:
            return False
        tail = self.train_losses[-max(1, n // 10):]
        return sum(tail) / len(tail) >= STALL_RATIO * self.train_losses[0]


@dataclass
class HyperGradients(Mapping[str, torch.Tensor]):
    """d L_val(theta_T) / d (shared value), per hyperparameter kind: a 1-D tensor, or a
    ``(groups, values)`` tensor for a kind given per parameter group.

    Also carries the trained state, the validation loss and the train losses.
    ``diverged`` is True when a loss, the weights or a hypergradient became
    non-finite; the run then stopped early and the gradients are NaN.  ``mode`` says
    which engine ran (``"forward"`` or ``"reverse"``); ``per_step`` (reverse mode only)
    holds, per kind, the hypergradient of each inner step's value (``T`` values, or
    ``T x groups``): summed over a chunk's steps it is that chunk's hypergradient.
    """

    grads: dict[str, torch.Tensor]
    val_loss: float
    run: TrainResult
    tangents: torch.Tensor | None = field(default=None, repr=False)
    mode: str = "forward"
    per_step: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    checkpoint_every: int | None = None  # reverse mode: steps between stored states (1: every step stored)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.grads[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.grads)

    def __len__(self) -> int:
        return len(self.grads)

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return self.run.params

    @property
    def buffers(self) -> dict[str, torch.Tensor]:
        return self.run.buffers

    @property
    def diverged(self) -> bool:
        return self.run.diverged


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------
def hypergradients(
    model: nn.Module,
    schedule: Schedule | Mapping[str, Sequence[float] | torch.Tensor],
    train_batches: BatchSource,
    val_batches: Iterable[Batch],
    *,
    loss_fn: LossFn = F.cross_entropy,
    grad_clamp: float | None = None,
    optimizer: str | Optimizer = "sgd",
    horizon: int | None = None,
    mode: str = "forward",
    method: str = "vmap",
    group_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    checkpoint_every: int | None = None,
    checkpoint_budget: int = DEFAULT_CHECKPOINT_BUDGET,
    build_ahead: bool | None = None,
    groups: GroupSpec = None,
    start: TrainState | None = None,
    schedule_horizon: int | None = None,
) -> HyperGradients:
    """Train ``model`` for ``T`` steps with ``schedule`` and return exact hypergradients.

    Args:
        model: an ``nn.Module``; training starts from its current parameters and
            buffers (or from ``start``).  The module itself is not modified.
        schedule: shared values per kind; kinds must be the optimizer's
            hyperparameters (``lr``, ``momentum``, ``weight_decay`` for SGD).  A kind
            given as a ``(groups, values)`` table has one row per parameter group.
        train_batches: ``(x, y)`` pairs: a sequence (``T = len``), a *replayable source*
            ``source(first, n) -> batches of steps first .. first + n - 1`` (``horizon``
            required), or a one-shot iterable (``horizon`` required; forward mode only,
            since reverse mode replays segments of the run).
        val_batches: ``(x, y)`` pairs; the objective is the mean of ``loss_fn``
            over all validation samples (batches weighted by size).
        grad_clamp: clamp minibatch gradients elementwise to ``[-c, c]``
            (the optimizer becomes :func:`~fds_tune.optim.clamped`).
        optimizer: ``"sgd"`` (default), ``"sgd_nesterov"``, ``"adamw"`` or an
            :class:`~fds_tune.optim.Optimizer`.
        mode: ``"forward"`` (tangents carried forward; the paper's way), ``"reverse"``
            (one backward sweep through stored states) or ``"auto"`` (the cheaper of
            the two for this number of columns and the budgets; ``.mode`` says which ran).
        method: forward mode's tangent step: ``"vmap"`` (batched jvp of the gradient) or
            ``"per_column"`` (the slow reference: one double-backward per active column).
        group_size: forward mode: active columns batched together; ``None`` picks the
            largest group whose estimated activation memory fits ``memory_budget``.
        checkpoint_every: reverse mode: store the state every this many steps and
            recompute the steps between (1 stores every step).  ``None``: every step
            when that fits ``checkpoint_budget`` bytes, else about ``sqrt(T)``.
        build_ahead: reverse mode on CPU: build each step's graph on a second thread while
            the step after it is swept back (two steps side by side, one thread each, instead
            of one step on every thread).  ``None``: when torch has two or more threads, the
            network has convolutions and a step saves at most
            :data:`~fds_tune.reverse.BUILD_AHEAD_MAX_BYTES` for its backward (small
            convolutions, which threads speed up least; :func:`~fds_tune.reverse.builds_ahead`).
            The same numbers either way, up to float rounding.
        groups: parameter groups for kinds given per group: ``"layers"`` or a mapping
            group name -> parameter-name patterns (:func:`~fds_tune.groups.param_groups`).
        start: continue from a :class:`TrainState` instead of the model's state.
        schedule_horizon: the horizon the schedule spans, when this run is a
            window of a longer one: global step ``start.step + t`` uses value
            ``floor(n_k (start.step + t) / schedule_horizon)``.  Default:
            ``start.step + T``.  Columns whose chunk ended before ``start`` get
            zero hypergradients.

    Returns:
        :class:`HyperGradients`, a mapping kind -> tensor of ``dL_val/dvalue``, with
        ``.val_loss``, ``.params``, ``.buffers``, ``.run``, ``.diverged``, ``.mode`` and
        (reverse mode) ``.per_step``.
    """
    check_choice("mode", mode, MODES)
    if method == "reverse":
        fail("method", method, "'vmap' or 'per_column' (forward mode's tangent step); for the reverse sweep pass mode='reverse'")
    check_choice("method", method, TANGENT_METHODS)
    check_optional("group_size", group_size, check_int, 1, rule="a positive int or None (automatic)")
    check_optional("checkpoint_every", checkpoint_every, check_int, 1, rule="a positive int or None (from checkpoint_budget)")
    check_int("checkpoint_budget", checkpoint_budget, 1, rule="a positive int (bytes)")
    check_optional("build_ahead", build_ahead, check, isinstance(build_ahead, bool), "True, False or None (decided by the step's size)")
    opt = resolve_optimizer(optimizer, grad_clamp)
    fm = FunctionalModel(model, loss_fn)
    schedule, horizon, state, span, layout = _prepare(fm, opt, schedule, train_batches, horizon, start, schedule_horizon, groups)
    source = replayable(train_batches)
    if mode != "forward" and checkpoint_every is None:
        checkpoint_every = default_checkpoint_every(fm, state, horizon, checkpoint_budget)
    if mode == "auto":
        mode = choose_mode(schedule, horizon, span, state.step, source is not None, checkpoint_every)
    if mode == "reverse":
        if source is None:
            fail(
                "train_batches", type(train_batches).__name__,
                "replayable in reverse mode: a list of batches, or a callable source(first, n) returning the batches of "
                "steps first .. first + n - 1 (e.g. lambda first, n: problem.steps(idx, first, n)); a one-shot iterator "
                "can only be used with mode='forward'",
            )
        out = Reverse(fm, opt, layout, schedule, horizon, span, checkpoint_every, build_ahead).run(state, source, val_batches)
        run = TrainResult(out.state, out.losses, out.diverged)
        return HyperGradients(out.grads, out.val_loss, run, mode="reverse", per_step=out.per_step, checkpoint_every=checkpoint_every)
    return _Forward(fm, opt, layout, schedule, horizon, span, method, group_size, memory_budget).run(
        state, one_pass(train_batches, horizon), val_batches
    )


def choose_mode(schedule: Schedule, horizon: int, span: int, first: int, replayable_batches: bool, checkpoint_every: int) -> str:
    """``"reverse"`` when its estimated cost (in plain steps) is below forward mode's for this
    schedule's columns, the batches can be replayed and the states fit the checkpoint budget."""
    if not replayable_batches:
        return "forward"
    counts, sizes = schedule.group_counts, schedule.sizes
    # the mean number of active columns over the run: a column is active from its chunk's start
    active = 0.0
    for k in schedule:
        for t in (first, first + horizon // 2, first + horizon - 1):
            active += counts[k] * (value_index(sizes[k], t, span) - value_index(sizes[k], first, span) + 1) / 3
    forward = 1 + FORWARD_PER_COLUMN * active
    reverse = 1 + REVERSE_SWEEP + (1 if checkpoint_every > 1 else 0)
    return "reverse" if reverse < forward else "forward"


def train(
    model: nn.Module,
    schedule: Schedule | Mapping[str, Sequence[float] | torch.Tensor],
    train_batches: BatchSource,
    *,
    loss_fn: LossFn = F.cross_entropy,
    grad_clamp: float | None = None,
    optimizer: str | Optimizer = "sgd",
    horizon: int | None = None,
    groups: GroupSpec = None,
    start: TrainState | None = None,
    schedule_horizon: int | None = None,
) -> TrainResult:
    """Plain training with a shared schedule (no tangents); same step as :func:`hypergradients`.

    With constant values this equals ``torch.optim.SGD(lr, momentum, weight_decay)``
    step for step.  Stops early (``diverged=True``) on a non-finite loss or weights.
    """
    opt = resolve_optimizer(optimizer, grad_clamp)
    fm = FunctionalModel(model, loss_fn)
    schedule, horizon, state, span, layout = _prepare(fm, opt, schedule, train_batches, horizon, start, schedule_horizon, groups)
    hvecs = hyper_vectors(schedule, opt, span, state.step, horizon)
    step = plain_step(fm, opt, layout)

    def loop_step(t, x, y, theta, buffers, opt_state):
        theta, opt_state, _, loss, stats = step(theta, opt_state, hvecs[t], buffers, x, y, state.step + t)
        return theta, opt_state, loss, stats

    end = inner_loop(fm, fm.flatten(state.params), state.buffers, state.opt_state, one_pass(train_batches, horizon), horizon, loop_step)
    return TrainResult(TrainState(fm.unflatten(end.theta), end.buffers, end.carry, state.step + len(end.losses)), end.losses, end.diverged)


def default_group_size(model: nn.Module, example_x: torch.Tensor, n_columns: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """Largest number of columns to batch whose activation memory fits ``memory_budget``.

    Batched forward-over-reverse keeps, per column, tangents of the forward
    activations and of the backward intermediates; we estimate that as
    ``_TANGENT_FACTOR`` times the activations of one forward pass.
    """
    per_column = _TANGENT_FACTOR * _activation_bytes(model, example_x)
    return int(max(1, min(n_columns, memory_budget // max(per_column, 1.0))))


def hyper_vectors(schedule: Schedule, opt: Optimizer, span: int, first: int, horizon: int) -> list[torch.Tensor]:
    """For steps ``first .. first + horizon - 1`` of ``span``, the hyperparameter vectors
    (one slot per kind in ``opt.hyper_names`` order, a grouped kind taking one slot per group)."""
    return list(schedule.table(opt.hyper_names, range(first, first + horizon), span).unbind(0))


def make_step(fm: FunctionalModel, opt: Optimizer, layout: HyperLayout | None = None):
    """The pure inner step ``(theta, state, hvec, buffers, x, y, t) -> ((theta', state'), (loss, BN stats))``."""
    layout = layout or HyperLayout(opt.hyper_names, dict.fromkeys(opt.hyper_names, 1), None)
    grad_loss = grad_and_value(fm.loss, has_aux=True)

    def step(theta, opt_state, hvec, buffers, x, y, t):
        g, (loss, stats) = grad_loss(theta, buffers, x, y)
        theta, opt_state = opt.update(theta, opt_state, g, layout.hypers(hvec), t)
        return (theta, opt_state), (loss, stats)

    return step


# Measured (experiments/bench_engine.py --group-sizes 1 2 3, CPU): each extra batched WRN-16-1
# column at batch 128 raises peak RSS by ~470 MB, 3.4x the 140 MB of activations of one forward
# pass (it was 5.5x before BatchNorm's tangents were written by hand, fds_tune.batchnorm).
# With the 1 GiB default budget WRN-16-1 batches 2 columns (1.5x the reference way's peak memory)
# and LeNet all 7.
_TANGENT_FACTOR = 3.5


# ---------------------------------------------------------------------------------------
# Internals
# ---------------------------------------------------------------------------------------
def _prepare(fm, opt, schedule, train_batches, horizon, start, schedule_horizon, groups):
    if not isinstance(schedule, Schedule):
        schedule = Schedule(schedule)
    missing, extra = set(opt.hyper_names) - set(schedule), set(schedule) - set(opt.hyper_names)
    if missing or extra:
        raise ValueError(
            f"schedule: got kinds {sorted(schedule)}; optimizer {opt.name!r} needs exactly {list(opt.hyper_names)}"
            + (f" (missing {sorted(missing)})" if missing else "")
            + (f" (unknown {sorted(extra)})" if extra else "")
        )
    horizon = run_length(train_batches, horizon)
    start = fm.start_state(opt.init) if start is None else start
    span = start.step + horizon if schedule_horizon is None else schedule_horizon
    check_int("schedule_horizon", span, start.step + horizon, rule=f"an int >= start.step + horizon = {start.step + horizon}")
    ref = next(iter(start.params.values()))
    schedule = schedule.to(dtype=ref.dtype, device=ref.device)
    names, index = param_groups(fm.names, fm.numels, groups)
    counts = schedule.group_counts
    for k, n in counts.items():
        if n > 1 and n != len(names):
            rule = f"one per parameter group: {len(names)} groups {names}" if names else "1, or one per group with groups= given (e.g. 'layers')"
            fail(f"schedule[{k!r}] rows", n, rule)
    layout = HyperLayout(opt.hyper_names, counts, None if index is None else index.to(ref.device))
    return schedule, horizon, start, span, layout


def _activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()
            model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


class _Forward:
    """One forward-mode run: tangents carried through every inner step."""

    def __init__(self, fm, opt, layout, schedule, horizon, span, method, group_size, memory_budget):
        self.fm, self.opt, self.layout, self.schedule, self.horizon, self.span = fm, opt, layout, schedule, horizon, span
        self.method = method
        self.group_size, self.memory_budget = group_size, memory_budget
        self.kinds = opt.hyper_names
        # one block of columns per (kind, group row): its hyperparameter slot and number of values
        self.blocks = [(layout.slot(k, r), schedule.sizes[k]) for k in self.kinds for r in range(layout.counts[k])]
        self.offsets = [sum(n for _, n in self.blocks[:i]) for i in range(len(self.blocks))]
        self.n_columns = sum(n for _, n in self.blocks)
        self.step = make_step(fm, opt, layout)
        self.stochastic = has_dropout(fm.model)  # dropout: vmap draws one mask for all columns, seeded per step
        self._active_cache: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    # Columns whose chunk has started (since the run's first step), and each one's
    # hyperparameter tangent at global step ``t``.
    def _active(self, first: int, t: int, like: torch.Tensor):
        idx = tuple((value_index(n, first, self.span), value_index(n, t, self.span)) for _, n in self.blocks)
        if idx not in self._active_cache:
            cols, slots = [], []
            for (slot, _), off, (i_first, i_now) in zip(self.blocks, self.offsets, idx):
                for i in range(i_first, i_now + 1):
                    cols.append(off + i)
                    slots.append(slot if i == i_now else -1)
            cols_t = torch.tensor(cols, device=like.device)
            zh = torch.zeros(len(cols), self.layout.n_slots, dtype=like.dtype, device=like.device)
            for r, slot in enumerate(slots):
                if slot >= 0:
                    zh[r, slot] = 1.0
            self._active_cache[idx] = (cols_t, zh)
        return self._active_cache[idx]

    def run(self, start: TrainState, train_batches, val_batches) -> HyperGradients:
        fm = self.fm
        theta, opt_state = fm.flatten(start.params), start.opt_state
        z_theta = theta.new_zeros(self.n_columns, theta.numel())
        z_state = tuple(s.new_zeros(self.n_columns, *s.shape) for s in opt_state)
        hvecs = hyper_vectors(self.schedule, self.opt, self.span, start.step, self.horizon)
        tangent_step = self._tangent_step_forward if self.method == "vmap" else self._tangent_step_per_column

        def step(t, x, y, theta, buffers, carry):
            opt_state, z_theta, z_state = carry
            if self.group_size is None:
                self.group_size = default_group_size(fm.model, x, self.n_columns, self.memory_budget)
            cols, zh = self._active(start.step, start.step + t, theta)
            all_active = len(cols) == self.n_columns
            zt = z_theta if all_active else z_theta.index_select(0, cols)
            zs = tuple(z if all_active else z.index_select(0, cols) for z in z_state)
            args = (buffers, x, y, start.step + t)
            (theta, opt_state), (zt, zs), (loss, stats) = tangent_step(theta, opt_state, hvecs[t], zt, zs, zh, args)
            if all_active:
                z_theta, z_state = zt, zs
            else:
                z_theta = z_theta.index_copy(0, cols, zt)
                z_state = tuple(z.index_copy(0, cols, n) for z, n in zip(z_state, zs))
            return theta, (opt_state, z_theta, z_state), loss, stats

        forward_kernels = self.method == "vmap"
        end = inner_loop(
            fm, theta, start.buffers, (opt_state, z_theta, z_state), train_batches, self.horizon, step, forward_mode=forward_kernels,
        )
        (opt_state, z_theta, _), diverged = end.carry, end.diverged
        if diverged:
            val_loss, g_val = float("nan"), torch.full_like(end.theta, float("nan"))
        else:
            with fm.batch_statistics(forward_mode=forward_kernels):
                val_loss, g_val = validation_gradient(fm, end.theta, end.buffers, val_batches)
        flat = z_theta @ g_val
        diverged = diverged or not all_finite(flat)
        state = TrainState(fm.unflatten(end.theta), end.buffers, opt_state, start.step + len(end.losses))
        return HyperGradients(columns_by_kind(flat, self.layout, self.schedule.sizes), val_loss, TrainResult(state, end.losses, diverged), z_theta)

    def _groups(self, m: int) -> list[slice]:
        g = self.group_size or m
        return [slice(i, min(i + g, m)) for i in range(0, m, g)]

    def _tangent_step_forward(self, theta, opt_state, hvec, zt, zs, zh, args):
        """vmap over columns of jvp(step): forward-over-reverse, in groups of bounded size."""
        step = self.step

        def one_column(zt_j, zs_j, zh_j):
            return jvp(lambda th, st, hv: step(th, st, hv, *args), (theta, opt_state, hvec), (zt_j, zs_j, zh_j), has_aux=True)

        batched = vmap(one_column, in_dims=(0, 0, 0), out_dims=(None, 0, None), randomness="same" if self.stochastic else "error")
        primal = aux = None
        outs_t, outs_s = [], []
        try:
            for sl in self._groups(zt.shape[0]):
                with step_rng(args[-1], theta.device, self.stochastic):  # every group: the same masks
                    p, (t_theta, t_state), a = batched(zt[sl], tuple(z[sl] for z in zs), zh[sl])
                if primal is None:  # every group recomputes the same primal step; keep the first
                    primal, aux = p, a
                    self.fm.record_stats = False
                outs_t.append(t_theta)
                outs_s.append(t_state)
        finally:
            self.fm.record_stats = True
        zt = outs_t[0] if len(outs_t) == 1 else torch.cat(outs_t)
        zs = tuple(s[0] if len(outs_s) == 1 else torch.cat(s) for s in zip(*outs_s))
        return primal, (zt, zs), aux

    def _tangent_step_per_column(self, theta, opt_state, hvec, zt, zs, zh, args):
        """The reference way: one double-backward (Hessian-vector product) per active column."""
        fm, opt, layout = self.fm, self.opt, self.layout
        buffers, x, y, t = args
        with torch.enable_grad(), step_rng(t, theta.device, self.stochastic):
            th = theta.detach().requires_grad_(True)
            loss, stats = fm.loss(th, buffers, x, y)
            (g,) = torch.autograd.grad(loss, th, create_graph=True)

        def post_grad(th_, st_, g_, hv_):  # the optimizer's update (a clamp, if any, included)
            return opt.update(th_, st_, g_, layout.hypers(hv_), t)

        g0 = g.detach()
        new_t, new_s, primal = [], [], None
        for j in range(zt.shape[0]):
            (hz,) = torch.autograd.grad(g, th, zt[j], retain_graph=j + 1 < zt.shape[0])
            primal, (tt, ts) = jvp(
                post_grad, (theta, opt_state, g0, hvec), (zt[j], tuple(z[j] for z in zs), hz, zh[j])
            )
            new_t.append(tt)
            new_s.append(ts)
        if primal is None:  # no active column cannot happen (column 0 of every kind starts at t=0)
            raise RuntimeError("no active hyperparameter column")
        return primal, (torch.stack(new_t), tuple(torch.stack(s) for s in zip(*new_s))), (loss.detach(), stats)
