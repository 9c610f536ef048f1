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

import math
from typing import NamedTuple

import torch

from .conv import convolutions_for_double_backward
from .functional_model import FunctionalModel, TrainState
from .groups import HyperLayout, columns_by_kind
from .loop import all_finite, has_dropout, inner_loop, plain_step, step_rng, validation_gradient
from .optim import Optimizer
from .schedule import Schedule, value_index

__all__ = ["Reverse", "ReverseEnd", "default_checkpoint_every", "stored_bytes", "BATCH_BLOCK"]

BATCH_BLOCK = 64  # with every step stored, batches are replayed this many steps at a time


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

    def __init__(self, fm: FunctionalModel, opt: Optimizer, layout: HyperLayout, schedule: Schedule, horizon: int, span: int, every: int):
        self.fm, self.opt, self.layout, self.schedule = fm, opt, layout, schedule
        self.horizon, self.span, self.every = horizon, span, every
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
                    for j in reversed(range(b - a)):
                        theta, opt_state = states[j]
                        x, y = batches[j]
                        a_theta, a_state, a_h = self._adjoint(theta, opt_state, hvecs[a + j], start.buffers, x, y, first + a + j, a_theta, a_state)
                        per_step[a + j] = a_h
                        states[j] = None  # free the step's state as soon as it is swept
                finally:
                    self.fm.record_stats = True

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

    def _adjoint(self, theta, opt_state, hvec, buffers, x, y, t, a_theta, a_state):
        """One step back: the cotangents of (theta_t, state_t) and of step t's hyperparameter vector."""
        with torch.enable_grad(), step_rng(t, theta.device, self.stochastic):
            leaf = theta.detach().requires_grad_(True)
            state = tuple(s.detach().requires_grad_(True) for s in opt_state)
            hypers = {k: v.detach().requires_grad_(True) for k, v in self.layout.hypers(hvec).items()}
            with convolutions_for_double_backward(theta.device.type == "cpu"):
                loss, _ = self.fm.loss(leaf, buffers, x, y)
            (g,) = torch.autograd.grad(loss, leaf, create_graph=True)
            new_theta, new_state = self.opt.update(leaf, state, g, hypers, t)
            # one backward through U and on through g's graph: U's VJP, plus H gbar for theta
            outs, cots = zip(*[(o, a) for o, a in zip((new_theta, *new_state), (a_theta, *a_state)) if o.requires_grad])
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
