"""Reverse mode: exact hypergradients from one backward sweep through the run.

The run is ``s_{t+1} = F_t(s_t, h_t)`` with ``s = (theta, optimizer state)``; the
objective is ``L(theta_T)``.  The adjoint ``a_t = dL/ds_t`` runs backward::

    a_T = (grad L_val(theta_T), 0)
    dL/dh_t = a_{t+1} . dF_t/dh_t              (the hypergradient of step t's values)
    a_t     = a_{t+1} . dF_t/ds_t

Every optimizer step is ``F_t = U(theta, state, g(theta), h)``: an elementwise update
``U`` (a clamp included) of the minibatch gradient ``g(theta)``.  So the vector-Jacobian
product splits into the cheap VJP of ``U`` (giving the cotangents of ``theta``, the state,
``h`` and ``g``) plus the VJP of ``g``, which is a Hessian-vector product ``H gbar``.  One
step back recomputes ``g`` with its graph (a forward and a backward pass) and applies
``U`` to it with autograd on; one backward of ``U``'s outputs against ``a_{t+1}`` then
gives ``U``'s VJP and goes on through ``g``'s graph, which differentiates ``g . gbar``
once more (double backward): ``g`` comes with the product, so it is never stored.
(Forward-over-reverse, ``jvp`` of ``grad``, gives the same product since the Hessian is
symmetric, but needs ``g`` before ``gbar`` is known, so a stored gradient per step: it
measured no faster on LeNet, and stored half as much again; experiments/bench_reverse.py.)
The clamp's mask reaches ``gbar`` through ``U``'s VJP before the product, the transpose of
forward mode's mask after it.  The split holds for any optimizer (SGD, Nesterov, AdamW):
only ``g`` couples the parameters, and its Jacobian is a Hessian.

Two things keep the step back near its floor (a plain step's forward and backward passes
with the graph kept, then the double backward): on CPU the recomputed gradient runs its
convolutions through :mod:`fds_tune.conv`, whose double backward skips the input gradient of
data and writes weight gradients as convolutions; and ``U``'s VJP is taken with respect to
the hyperparameter values as the optimizer reads them, a grouped kind's per-element
cotangents then summed per group by :meth:`HyperLayout.hypers_vjp` (autograd's backward of
the indexing is several times slower).
On CPU with two or more threads, a sweep of small convolutional steps runs two steps side by side
(:func:`build_ahead`): while one step's backward runs, the next step back's graph (its forward
and backward passes) is built on a second thread, each on one intra-op thread, where one step
at a time would split each small operation over both.  :func:`builds_ahead` decides it from the
model's layers and the bytes a step saves for its backward, never from a timing, and
``build_ahead=`` overrides it.
Measured costs: docs/results.md, "Reverse mode against forward mode and plain training".

Cost per step: one Hessian-vector product, whatever the number of hyperparameter
columns.  Memory: the sweep needs ``theta_t`` and the state at every step.
With ``checkpoint_every = 1`` the forward pass stores them all (no recomputation);
with ``s > 1`` it stores ``(theta, state)`` every ``s`` steps, and each segment is
recomputed from its checkpoint before being swept (one more plain step per step).
Memory is ``O((T/s + s) P)``.  BatchNorm buffers are not stored: in train mode the
loss reads batch statistics only, and the running statistics are folded in by the
forward pass exactly as in plain training.
"""
from __future__ import annotations

import functools
import math
import queue
import threading
from typing import Callable, Iterable, Iterator, NamedTuple, TypeVar

import torch
from torch import nn

from .conv import convolutions_for_double_backward
from .functional_model import FunctionalModel, TrainState
from .groups import HyperLayout, columns_by_kind
from .loop import all_finite, has_dropout, inner_loop, plain_step, step_rng, validation_gradient
from .optim import Optimizer
from .schedule import Schedule, value_index

__all__ = ["Reverse", "ReverseEnd", "build_ahead", "builds_ahead", "default_checkpoint_every", "saved_bytes", "stored_bytes", "BATCH_BLOCK", "BUILD_AHEAD_MAX_BYTES"]

BATCH_BLOCK = 64  # with every step stored, batches are replayed this many steps at a time
# A convolutional network's step whose forward pass saves at most this much for its backward is swept
# with its graph built one step ahead on a second thread (builds_ahead).  Whole reverse-mode runs,
# built ahead / in turn, on 2 cores (experiments/bench_build_ahead.py, three runs; docs/results.md):
# LeNet batch 32 (1.8 MiB) 0.79, 64 (3.5 MiB) 0.83, 128 (6.8 MiB) 0.93, 0.96 and 0.90: faster in every
# run.  Above the line, even or slower in some run: LeNet 256 (13.4 MiB) 0.98, 1.08, 0.94; 512
# (26.6 MiB) 1.24, 1.23, 0.97; WRN-16-1 batch 16 (26.1 MiB) 1.05, 0.99, 0.98; 128 (204 MiB) 1.14, 1.27,
# 1.30.  An MLP, whose matrix products use both threads well, came out even (batch 128, 0.7 MiB:
# 1.06, 0.83, 0.92), hence convolutional networks only.
BUILD_AHEAD_MAX_BYTES = 8 * 2**20

T_ = TypeVar("T_")
R_ = TypeVar("R_")


class ReverseEnd(NamedTuple):
    grads: dict[str, torch.Tensor]
    per_step: dict[str, torch.Tensor]
    val_loss: float
    state: TrainState
    losses: list[float]
    diverged: bool


def stored_bytes(fm: FunctionalModel, state: TrainState) -> tuple[int, int]:
    """Bytes of one checkpoint and of one stored step: the weights and the optimizer state, both."""
    theta = next(iter(state.params.values()))
    checkpoint = fm.numel * theta.element_size() + sum(s.numel() * s.element_size() for s in state.opt_state)
    return checkpoint, checkpoint


def default_checkpoint_every(fm: FunctionalModel, state: TrainState, horizon: int, budget: int) -> int:
    """1 (store every step) when the run's states fit ``budget`` bytes; otherwise the interval
    ``s ~ sqrt(T c / p)`` that minimises ``(T/s) c + s p`` (``c``: a checkpoint, ``p``: a stored step)."""
    checkpoint, step = stored_bytes(fm, state)
    if horizon * step <= budget:
        return 1
    return max(2, min(horizon, round(math.sqrt(horizon * checkpoint / step))))


class Reverse:
    """One reverse-mode run: a forward pass storing states, then the backward sweep."""

    def __init__(self, fm: FunctionalModel, opt: Optimizer, layout: HyperLayout, schedule: Schedule, horizon: int, span: int, every: int, ahead: bool | None = None):
        self.fm, self.opt, self.layout, self.schedule = fm, opt, layout, schedule
        self.horizon, self.span, self.every = horizon, span, every
        self.ahead = ahead  # build each step's graph ahead on a second thread; None: by builds_ahead's rule
        self.step = plain_step(fm, opt, layout)
        self.stochastic = has_dropout(fm.model)  # dropout: step t's masks are drawn from step t's seed, as in the forward pass

    def run(self, start: TrainState, source, val_batches) -> ReverseEnd:
        fm, T, every, first = self.fm, self.horizon, self.every, start.step
        hvecs = list(self.schedule.table(self.opt.hyper_names, range(first, first + T), self.span).unbind(0))
        stored: dict[int, tuple] = {}

        def forward_step(t, x, y, theta, buffers, opt_state):
            new_theta, new_state, _, loss, stats = self.step(theta, opt_state, hvecs[t], buffers, x, y, first + t)
            if t % every == 0:
                stored[t] = (theta, opt_state)
            return new_theta, new_state, loss, stats

        end = inner_loop(fm, fm.flatten(start.params), start.buffers, start.opt_state, source(0, T), T, forward_step)
        state = TrainState(fm.unflatten(end.theta), end.buffers, end.carry, first + len(end.losses))
        per_step = end.theta.new_zeros(T, self.layout.n_slots)
        if end.diverged:
            val_loss = float("nan")
            per_step.fill_(float("nan"))
        else:
            with fm.batch_statistics():
                val_loss, g_val = validation_gradient(fm, end.theta, end.buffers, val_batches)
            self._sweep(start, source, hvecs, stored, g_val, end.carry, per_step)
        grads = self._chunk_sums(per_step, first)
        diverged = end.diverged or not all(all_finite(g) for g in grads.values())
        slots = {k: per_step[:, self.layout.slot(k) : self.layout.slot(k) + self.layout.counts[k]] for k in self.layout.kinds}
        per_kind = {k: v[:, 0] if v.shape[1] == 1 else v for k, v in slots.items()}
        return ReverseEnd(grads, per_kind, val_loss, state, end.losses, diverged)

    # ---- the backward sweep ------------------------------------------------------------
    def _sweep(self, start, source, hvecs, stored, a_theta, final_state, per_step):
        T, every, first = self.horizon, self.every, start.step
        a_state = tuple(torch.zeros_like(s) for s in final_state)
        block = every if every > 1 else BATCH_BLOCK
        ahead = self.ahead  # None: decided on the first step swept
        for a in reversed(range(0, T, block)):
            b = min(a + block, T)
            batches = list(source(a, b - a))
            if every == 1:
                states = [stored.pop(t) for t in range(a, b)]
            else:
                states = self._recompute(stored.pop(a), batches, hvecs, a, start)
            with self.fm.batch_statistics():  # PyTorch's BatchNorm: its double backward is exact
                self.fm.record_stats = False
                try:
                    if ahead is None:
                        ahead = builds_ahead(self.fm, states[-1][0], start.buffers, *batches[-1])
                    build = functools.partial(self._step_graph, states, batches, hvecs, a, start)
                    steps = range(b - a - 1, -1, -1)
                    graphs = build_ahead(build, steps) if ahead else map(build, steps)
                    try:
                        for j, graph in zip(steps, graphs):
                            a_theta, a_state, per_step[a + j] = self._back(graph, a_theta, a_state)
                    finally:
                        getattr(graphs, "close", lambda: None)()  # stops and joins the builder thread
                finally:
                    self.fm.record_stats = True

    def _step_graph(self, states, batches, hvecs, a, start, j):
        """The graph of the segment's step ``j`` (segment from step ``a``); frees its stored state."""
        theta, opt_state = states[j]
        states[j] = None
        return self._graph(theta, opt_state, hvecs[a + j], start.buffers, *batches[j], start.step + a + j)

    def _recompute(self, checkpoint, batches, hvecs, a, start):
        """The states of a segment's steps, recomputed from its checkpoint exactly as the
        forward pass computed them."""
        theta, opt_state = checkpoint
        states = []
        with self.fm.batch_statistics():
            self.fm.record_stats = False
            try:
                for j, (x, y) in enumerate(batches):
                    new_theta, new_state, _, _, _ = self.step(theta, opt_state, hvecs[a + j], start.buffers, x, y, start.step + a + j)
                    states.append((theta, opt_state))
                    theta, opt_state = new_theta, new_state
            finally:
                self.fm.record_stats = True
        return states

    def _graph(self, theta, opt_state, hvec, buffers, x, y, t):
        """Step t's graph for the step back: the recomputed gradient ``g`` (with its graph) and
        ``U``'s outputs, with the leaves they are differentiated against."""
        with torch.enable_grad(), step_rng(t, theta.device, self.stochastic):
            leaf = theta.detach().requires_grad_(True)
            state = tuple(s.detach().requires_grad_(True) for s in opt_state)
            hypers = {k: v.detach().requires_grad_(True) for k, v in self.layout.hypers(hvec).items()}
            with convolutions_for_double_backward(theta.device.type == "cpu"):
                loss, _ = self.fm.loss(leaf, buffers, x, y)
            (g,) = torch.autograd.grad(loss, leaf, create_graph=True)
            new_theta, new_state = self.opt.update(leaf, state, g, hypers, t)
        return leaf, state, hypers, (new_theta, *new_state)

    def _back(self, graph, a_theta, a_state):
        """One step back through a step's graph: the cotangents of (theta_t, state_t) and of
        step t's hyperparameter vector.  One backward through U and on through g's graph:
        U's VJP, plus H gbar for theta."""
        leaf, state, hypers, outputs = graph
        outs, cots = zip(*[(o, a) for o, a in zip(outputs, (a_theta, *a_state)) if o.requires_grad])
        cot = torch.autograd.grad(outs, (leaf, *state, *hypers.values()), cots, materialize_grads=True)
        n = len(state)
        return cot[0], cot[1 : 1 + n], self.layout.hypers_vjp(dict(zip(hypers, cot[1 + n :])))

    def _chunk_sums(self, per_step: torch.Tensor, first: int) -> dict[str, torch.Tensor]:
        """Per column, the sum of its steps' hypergradients: per_step summed over each value's chunk."""
        sizes, cols = self.schedule.sizes, []
        steps = range(first, first + self.horizon)
        for k in self.layout.kinds:
            n = sizes[k]
            idx = torch.tensor([value_index(n, t, self.span) for t in steps], device=per_step.device)
            for r in range(self.layout.counts[k]):
                slot = self.layout.slot(k, r)
                cols.append(per_step.new_zeros(n).index_add_(0, idx, per_step[:, slot]))
        return columns_by_kind(torch.cat(cols), self.layout, sizes)


def builds_ahead(fm: FunctionalModel, theta: torch.Tensor, buffers, x: torch.Tensor, y: torch.Tensor) -> bool:
    """The default of ``build_ahead``: whether to build each step's graph on a second thread while
    the step after it is swept back (:func:`build_ahead`).  Yes on CPU with two or more threads,
    for a network with convolutions whose step's forward pass saves at most
    :data:`BUILD_AHEAD_MAX_BYTES` for its backward: small convolutions (and the pooling and
    activations around them) are what threads speed up least, while the large matrix products of
    an MLP use both threads well.  Decided from the model and the step's shapes, never from a
    timing, so that the same run always sums in the same order."""
    if theta.device.type != "cpu" or torch.get_num_threads() < 2:
        return False
    if not any(isinstance(m, nn.modules.conv._ConvNd) for m in fm.model.modules()):
        return False
    return saved_bytes(fm, theta, buffers, x, y) <= BUILD_AHEAD_MAX_BYTES


def saved_bytes(fm: FunctionalModel, theta: torch.Tensor, buffers, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes one training step's forward pass saves for its backward (its activations, mostly),
    as the step back builds it.  The global RNG is left as it was."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.enable_grad(), step_rng(0, theta.device, has_dropout(fm.model)), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with convolutions_for_double_backward(theta.device.type == "cpu"):
            fm.loss(theta.detach().requires_grad_(True), buffers, x, y)
    return total


def build_ahead(build: Callable[[T_], R_], items: Iterable[T_]) -> Iterator[R_]:
    """``build(item)`` for each item in order, each one built on a second thread while the
    caller still works on the one before: two steps run side by side, one thread each.

    At most two results are alive: the one the caller holds and the next.  Both threads run
    torch on one intra-op thread; the caller's count is restored when the generator ends or
    is closed.  An error in ``build`` is raised in the caller, at the item that raised it.
    """
    threads = torch.get_num_threads()
    done = object()
    results: queue.Queue = queue.Queue()
    turn = threading.Semaphore(1)  # the builder may start the next item once the caller took the last
    stop = threading.Event()

    def builder():
        torch.set_num_threads(1)
        try:
            for item in items:
                turn.acquire()
                if stop.is_set():
                    return
                results.put((True, build(item)))
        except BaseException as error:  # handed to the caller, raised there
            results.put((False, error))
            return
        results.put((True, done))

    worker = threading.Thread(target=builder, name="fds-reverse-builder", daemon=True)
    torch.set_num_threads(1)
    worker.start()
    try:
        while True:
            ok, out = results.get()
            if not ok:
                raise out
            if out is done:
                return
            turn.release()
            yield out
    finally:
        stop.set()
        turn.release()
        worker.join()
        torch.set_num_threads(threads)
