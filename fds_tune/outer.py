"""Outer update rules: pure functions from (state, hypergradients) to a new state.

Every rule works on name-keyed dicts of 1-D tensors (one entry per
hyperparameter kind), so all kinds go through the same code.

* :func:`sign_update` -- the paper's rule: each shared value moves by its own
  step size against the sign of its hypergradient; a value's step halves when
  its hypergradient's sign flips; the run has converged when every step is
  below 5% of its value.
* :func:`adam_update` -- Adam on the (normalised) hypergradients, one Adam
  learning rate per kind.

Hypergradients are first normalised by the number of inner steps each shared
value covers (:func:`normalise`), as the reference code does.  A diverged inner
run is treated as a step in the wrong direction (:func:`step_back`): values
return to where they were before the last update and every step shrinks.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch

from .schedule import steps_per_value

__all__ = ["OuterState", "OUTER_RULES", "init_outer", "outer_update", "step_back", "normalise", "converged", "finite", "to_json", "from_json"]

Values = dict[str, torch.Tensor]
CONVERGED_FRACTION = 0.05  # a run has converged when every step is below 5% of its value
SHRINK = 0.5


class OuterState(NamedTuple):
    values: Values  # current shared values
    steps: Values  # per-value step size (sign rule) or Adam learning rate
    prev_sign: Values  # sign of the last hypergradient (0 before the first)
    prev_values: Values  # values before the last update (for step_back)
    m: Values  # Adam first moment
    v: Values  # Adam second moment
    t: int  # number of updates taken


def init_outer(values: Mapping[str, torch.Tensor], step_sizes: Mapping[str, float]) -> OuterState:
    vals = {k: v.detach().clone().to(torch.float64) for k, v in values.items()}
    zeros = {k: torch.zeros_like(v) for k, v in vals.items()}
    steps = {k: torch.full_like(v, float(step_sizes[k])) for k, v in vals.items()}
    return OuterState(vals, steps, zeros, dict(vals), zeros, zeros, 0)


def normalise(hypergrads: Mapping[str, torch.Tensor], horizon: int) -> Values:
    """Divide each value's hypergradient by the number of inner steps it covers."""
    return {k: g.detach().to(torch.float64).cpu() / steps_per_value(g.numel(), horizon) for k, g in hypergrads.items()}


def _clip(values: Values, bounds: Mapping[str, tuple[float, float]]) -> Values:
    return {k: v.clamp(*bounds[k]) if k in bounds else v for k, v in values.items()}


def sign_update(state: OuterState, grads: Values, bounds: Mapping[str, tuple[float, float]]) -> OuterState:
    sign = {k: torch.sign(g) for k, g in grads.items()}
    steps = {k: torch.where(sign[k] * state.prev_sign[k] < 0, s * SHRINK, s) for k, s in state.steps.items()}
    values = _clip({k: v - steps[k] * sign[k] for k, v in state.values.items()}, bounds)
    return state._replace(values=values, steps=steps, prev_sign=sign, prev_values=state.values, t=state.t + 1)


def adam_update(
    state: OuterState, grads: Values, bounds: Mapping[str, tuple[float, float]], betas=(0.9, 0.999), eps=1e-12
) -> OuterState:
    b1, b2 = betas
    t = state.t + 1
    m = {k: b1 * state.m[k] + (1 - b1) * g for k, g in grads.items()}
    v = {k: b2 * state.v[k] + (1 - b2) * g * g for k, g in grads.items()}
    values = {
        k: x - state.steps[k] * (m[k] / (1 - b1**t)) / ((v[k] / (1 - b2**t)).sqrt() + eps) for k, x in state.values.items()
    }
    sign = {k: torch.sign(g) for k, g in grads.items()}
    return state._replace(values=_clip(values, bounds), prev_sign=sign, prev_values=state.values, m=m, v=v, t=t)


OUTER_RULES = {"sign": sign_update, "adam": adam_update}


def outer_update(rule: str, state: OuterState, grads: Values, bounds) -> OuterState:
    return OUTER_RULES[rule](state, grads, bounds)


def step_back(state: OuterState) -> OuterState:
    """After a diverged inner run: undo the last update and shrink every step.

    Before any update there is nothing to undo, so the values shrink towards
    zero instead (a run that diverges from its initial values has them too large).
    """
    if state.t == 0:
        values = {k: v * SHRINK for k, v in state.values.items()}
    else:
        values = state.prev_values
    steps = {k: s * SHRINK for k, s in state.steps.items()}
    return state._replace(values=values, steps=steps, prev_sign={k: torch.zeros_like(v) for k, v in values.items()})


def converged(state: OuterState) -> bool:
    """Every step is below 5% of the magnitude of its value (sign rule)."""
    return state.t > 0 and all(bool((s < CONVERGED_FRACTION * v.abs()).all()) for s, v in zip(state.steps.values(), state.values.values()))


def to_json(state: OuterState) -> dict:
    return {f: ({k: v.tolist() for k, v in x.items()} if isinstance(x, dict) else x) for f, x in state._asdict().items()}


def from_json(data: Mapping) -> OuterState:
    fields = {}
    for f in OuterState._fields:
        x = data[f]
        fields[f] = {k: torch.tensor(v, dtype=torch.float64) for k, v in x.items()} if isinstance(x, dict) else int(x)
    return OuterState(**fields)


def finite(grads: Values) -> bool:
    return all(bool(torch.isfinite(g).all()) for g in grads.values())
