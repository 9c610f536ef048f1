"""Inner optimizers as pure update functions over flat parameter vectors.

Each optimizer is an :class:`Optimizer`: the names of its hyperparameters, an
``init`` that builds its state (a tuple of tensors shaped like the parameters)
and an ``update`` that is pure and out-of-place, so that ``torch.func.jvp`` can
carry tangents through it with respect to parameters, state *and*
hyperparameters.  Adding an optimizer to FDS means writing these two functions.

Links compose optimizers, in the spirit of optax's ``chain``: :func:`clamped`
wraps any optimizer so that its update first clamps the minibatch gradient
elementwise (the paper's ``[-3, 3]``).  ``jvp`` differentiates the clamp
exactly (its tangent is the gradient tangent masked where the clamp binds).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch

from .validation import check_choice, check_number

__all__ = ["Optimizer", "sgd", "adamw", "clamped", "OPTIMIZERS", "get_optimizer", "resolve_optimizer"]

State = tuple[torch.Tensor, ...]
Update = Callable[[torch.Tensor, State, torch.Tensor, Mapping[str, torch.Tensor], int], tuple[torch.Tensor, State]]


class Optimizer(NamedTuple):
    """A pure optimizer: ``update(params, state, grad, hypers, step) -> (params, state)``.

    ``step`` is the 0-based inner step index (a Python int, never differentiated).
    """

    name: str
    hyper_names: tuple[str, ...]
    init: Callable[[torch.Tensor], State]
    update: Update


def sgd(*, nesterov: bool = False) -> Optimizer:
    """SGD with momentum and weight decay in PyTorch's convention (dampening 0)::

        d_t     = g_t + beta_t * theta_t
        v_{t+1} = mu_t * v_t + d_t                      (v_0 = 0)
        theta_{t+1} = theta_t - eta_t * v_{t+1}          (or eta_t * (d_t + mu_t v_{t+1}) with Nesterov)
    """

    def init(params: torch.Tensor) -> State:
        return (torch.zeros_like(params),)

    def update(params, state, grad, hypers, step):
        (velocity,) = state
        d = grad + hypers["weight_decay"] * params
        velocity = hypers["momentum"] * velocity + d
        direction = d + hypers["momentum"] * velocity if nesterov else velocity
        return params - hypers["lr"] * direction, (velocity,)

    return Optimizer("sgd_nesterov" if nesterov else "sgd", ("lr", "momentum", "weight_decay"), init, update)


def adamw(*, eps: float = 1e-8) -> Optimizer:
    """AdamW as in ``torch.optim.AdamW`` (decoupled weight decay, bias correction)::

        theta <- theta (1 - eta lambda)
        m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
        theta <- theta - eta * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def init(params: torch.Tensor) -> State:
        return (torch.zeros_like(params), torch.zeros_like(params))

    def update(params, state, grad, hypers, step):
        m, v = state
        lr, b1, b2 = hypers["lr"], hypers["beta1"], hypers["beta2"]
        t = step + 1
        params = params * (1 - lr * hypers["weight_decay"])
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        v_hat = v / (1 - b2**t)
        # clamp_min keeps the derivative of sqrt finite where v == 0 (grad exactly 0);
        # sqrt(tiny) is ~1e-19, far below eps, so the value matches torch.optim.AdamW.
        denom = v_hat.clamp_min(torch.finfo(v.dtype).tiny).sqrt() + eps
        return params - lr * (m / (1 - b1**t)) / denom, (m, v)

    return Optimizer("adamw", ("lr", "beta1", "beta2", "weight_decay"), init, update)


def clamped(inner: Optimizer, clamp: float) -> Optimizer:
    """``inner`` whose update first clamps the gradient elementwise to ``[-clamp, clamp]``::

        update(theta, state, g, h, t) = inner.update(theta, state, clamp(g, -c, c), h, t)
    """
    c = check_number("grad_clamp", clamp, low=0, low_open=True, rule="a finite number > 0 or None")

    def update(params, state, grad, hypers, step):
        return inner.update(params, state, grad.clamp(-c, c), hypers, step)

    return Optimizer(f"clamped({inner.name}, {c:g})", inner.hyper_names, inner.init, update)


OPTIMIZERS: dict[str, Callable[[], Optimizer]] = {"sgd": sgd, "sgd_nesterov": lambda: sgd(nesterov=True), "adamw": adamw}


def get_optimizer(name: str) -> Optimizer:
    return OPTIMIZERS[check_choice("optimizer", name, OPTIMIZERS)]()


def resolve_optimizer(optimizer: str | Optimizer, grad_clamp: float | None = None) -> Optimizer:
    """An :class:`Optimizer` from a name or an optimizer, wrapped in :func:`clamped` when ``grad_clamp`` is set."""
    opt = optimizer if isinstance(optimizer, Optimizer) else get_optimizer(optimizer)
    return opt if grad_clamp is None else clamped(opt, grad_clamp)
