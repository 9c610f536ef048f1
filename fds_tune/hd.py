"""Hypergradient descent (HD; Baydin et al., ICLR 2018) for every hyperparameter of the inner optimizer.

HD adapts the hyperparameters ``h`` (learning rate, momentum, weight decay, ...)
online, at every inner step of one training run, with *one-step* hypergradients::

    theta_{t+1} = update(theta_t, state_t, g_t, h_t)                  (the inner step)
    d_t         = d theta_{t+1} / d h_t                               (K x P, one row per kind)
    a_t         = d L_{t+1}(theta_{t+1}) / d h_t = d_t . grad L_{t+1}(theta_{t+1})
    h_{t+1}     = clip(h_t - beta * a_t)                              (per-kind hyper-learning rate beta_k)

``grad L_{t+1}`` is the gradient of the *next* minibatch's loss, which the next
inner step computes anyway; so HD costs one gradient per step plus ``d_t``.
``d_t`` comes from ``torch.func.jvp`` of the optimizer's pure ``update`` with
respect to its hyperparameters (one one-hot tangent per kind, batched with
``vmap``), so one code path serves every kind of every
:class:`~fds_tune.optim.Optimizer`.  For SGD it is ``-v_{t+1}`` for the
learning rate, ``-eta_t v_t`` for momentum and ``-eta_t theta_t`` for weight decay.

The hypergradient uses the raw minibatch gradient (it is the derivative of the
next-step loss); the inner step clamps it when ``grad_clamp`` is set (the
optimizer becomes :func:`~fds_tune.optim.clamped`, and ``d_t`` is its derivative).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import grad_and_value, jvp, vmap

from .functional_model import FunctionalModel, LossFn, TrainState
from .loop import Batch, all_finite, has_dropout, inner_loop, run_length, step_rng
from .optim import Optimizer, resolve_optimizer
from .validation import check_kinds

__all__ = ["HDState", "HDResult", "hd_init", "step_direction", "hypergradient", "hd_update", "hd_train"]

Hypers = dict[str, torch.Tensor]


class HDState(NamedTuple):
    """HD's state between inner steps.

    ``hypers``: kind -> 0-d float64 tensor, the values ``h_{t-1}`` the last inner
    step used (the initial values before the first step).
    ``direction``: ``d theta_t / d h_{t-1}`` (K x P, rows in ``opt.hyper_names``
    order), or None before the first inner step.  The next inner step computes
    ``grad L_t(theta_t)``, adapts ``h_t = clip(h_{t-1} - beta * direction . grad)``
    and then steps with ``h_t``.
    """

    hypers: Hypers
    direction: torch.Tensor | None


def hd_init(init: Mapping[str, float]) -> HDState:
    """Start HD from the values ``init`` (kind -> float)."""
    return HDState({k: torch.tensor(float(v), dtype=torch.float64) for k, v in init.items()}, None)


def step_direction(
    opt: Optimizer, theta: torch.Tensor, opt_state: tuple, grad: torch.Tensor, hypers: Mapping[str, torch.Tensor], step: int
) -> tuple[tuple[torch.Tensor, tuple], torch.Tensor]:
    """One inner step and its derivative with respect to the hyperparameters.

    Returns ``((theta', state'), d)`` with ``d[i] = d theta' / d hypers[kinds[i]]``
    (K x P, rows in ``opt.hyper_names`` order), by ``vmap`` of ``jvp`` of
    ``opt.update`` over one-hot hyperparameter tangents.
    """
    names = opt.hyper_names
    hvec = torch.stack([torch.as_tensor(hypers[k]) for k in names]).to(dtype=theta.dtype, device=theta.device)

    def update(hv):
        return opt.update(theta, opt_state, grad, dict(zip(names, hv.unbind(0))), step)

    def one_kind(e):
        return jvp(update, (hvec,), (e,))

    eye = torch.eye(len(names), dtype=theta.dtype, device=theta.device)
    new, (d_theta, _) = vmap(one_kind, out_dims=(None, 0))(eye)
    return new, d_theta


def hypergradient(direction: torch.Tensor, next_grad: torch.Tensor, kinds: Iterable[str]) -> Hypers:
    """``dL_{t+1}/dh_t = d_t . grad L_{t+1}``, per kind (0-d float64 tensors)."""
    return dict(zip(kinds, (direction @ next_grad).detach().to(torch.float64).cpu().unbind(0)))


def hd_update(
    hypers: Mapping[str, torch.Tensor],
    hypergrads: Mapping[str, torch.Tensor],
    hyper_lr: Mapping[str, float],
    bounds: Mapping[str, tuple[float, float]],
) -> Hypers:
    """``h_k <- clip(h_k - beta_k a_k, bounds_k)`` for every kind (kinds without bounds are not clipped)."""
    out = {}
    for k, h in hypers.items():
        new = h - float(hyper_lr[k]) * hypergrads[k]
        out[k] = new.clamp(*bounds[k]) if k in bounds else new
    return out


@dataclass
class HDResult:
    """End of an HD run (or of one piece of it).

    ``values[t]``/``hypergrads[t]``: the hyperparameters step ``t`` used, and the
    hypergradient computed at step ``t`` (``dL_t/dh_{t-1}``, which set
    ``values[t]``; NaN at a run's very first step); rows in ``kinds`` order.
    A step whose adapted values are not finite ends the run untaken: it has a
    hypergradient row but no values row.
    """

    state: TrainState
    hd: HDState
    kinds: tuple[str, ...]
    values: torch.Tensor
    hypergrads: torch.Tensor
    train_losses: list[float]
    diverged: bool = False


def hd_train(
    model: nn.Module,
    hd: HDState,
    train_batches: Iterable[Batch],
    *,
    hyper_lr: Mapping[str, float],
    bounds: Mapping[str, tuple[float, float]] | None = None,
    loss_fn: LossFn = F.cross_entropy,
    grad_clamp: float | None = None,
    optimizer: str | Optimizer = "sgd",
    horizon: int | None = None,
    start: TrainState | None = None,
) -> HDResult:
    """Train ``model`` for ``horizon`` steps, adapting every hyperparameter by HD at every step.

    Continues from ``start`` and ``hd`` (pass the previous result's ``state`` and
    ``hd`` to run in pieces: the result is the same as one run).  Stops early
    (``diverged=True``) when a loss, the weights or a hyperparameter become
    non-finite.  The module itself is not modified.
    """
    opt = resolve_optimizer(optimizer, grad_clamp)  # a clamp acts inside the step; HD's hypergradient uses the raw gradient
    kinds = opt.hyper_names
    check_kinds("hd.hypers", hd.hypers, kinds)
    check_kinds("hyper_lr", hyper_lr, kinds)
    horizon = run_length(train_batches, horizon)
    fm = FunctionalModel(model, loss_fn)
    start = fm.start_state(opt.init) if start is None else start
    bounds = dict(bounds or {})
    grad_loss = grad_and_value(fm.loss, has_aux=True)
    values, hgrads = [], []
    stochastic = has_dropout(model)

    def step(t, x, y, theta, buffers, carry):
        opt_state, hypers, direction = carry
        with step_rng(start.step + t, theta.device, stochastic):
            g, (loss, stats) = grad_loss(theta, buffers, x, y)
        if direction is None:  # a run's first step: nothing to adapt yet
            hgrads.append(torch.full((len(kinds),), math.nan, dtype=torch.float64))
        else:
            a = hypergradient(direction, g, kinds)
            hypers = hd_update(hypers, a, hyper_lr, bounds)
            hgrads.append(torch.stack([a[k] for k in kinds]))
        row = torch.stack([hypers[k] for k in kinds])
        if not all_finite(row):  # the adaptation diverged: end the run here, the step untaken and its values unused
            return theta, (opt_state, hypers, direction), torch.full_like(loss, math.nan), stats
        values.append(row)
        (theta, opt_state), direction = step_direction(opt, theta, opt_state, g, hypers, start.step + t)
        return theta, (opt_state, hypers, direction), loss, stats

    carry = (start.opt_state, dict(hd.hypers), hd.direction)
    end = inner_loop(fm, fm.flatten(start.params), start.buffers, carry, train_batches, horizon, step)
    opt_state, hypers, direction = end.carry
    empty = torch.empty(0, len(kinds), dtype=torch.float64)
    return HDResult(
        state=TrainState(fm.unflatten(end.theta), end.buffers, opt_state, start.step + len(end.losses)),
        hd=HDState(hypers, direction),
        kinds=kinds,
        values=torch.stack(values) if values else empty,
        hypergrads=torch.stack(hgrads) if hgrads else empty,
        train_losses=end.losses,
        diverged=end.diverged,
    )
