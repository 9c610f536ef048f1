"""Outer update rules as ``(init, update)`` pairs over name-keyed shared values (optax style).

Each rule is an :class:`OuterRule`: pure functions over its own small state
(a ``NamedTuple`` whose first field is ``values``, kind -> 1-D float64 tensor),
so every hyperparameter kind goes through the same code, and adding a rule is
adding a pair:

* :func:`sign_rule` -- the paper's rule: each shared value moves by its own
  step size against the sign of its hypergradient; a value's step halves when
  its hypergradient's sign flips; the run has converged when every step is
  below 5% of its value.
* :func:`adam_rule` -- Adam on the (normalised) hypergradients, one Adam
  learning rate per kind; it never declares convergence.

Hypergradients are first normalised by the number of inner steps each shared
value covers (:func:`normalise`), as the reference code does.  A diverged inner
run is treated as a step in the wrong direction (``rule.step_back``): values
return to where they were before the last update and every step shrinks.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

from .schedule import steps_per_value
from .validation import check_choice

__all__ = [
    "OuterRule", "SignState", "AdamState", "sign_rule", "adam_rule", "OUTER_RULES", "get_rule", "normalise", "finite",
    "to_json", "from_json",
]

Values = dict[str, torch.Tensor]
Bounds = Mapping[str, tuple[float, float]]
CONVERGED_FRACTION = 0.05  # a run has converged when every step is below 5% of its value
SHRINK = 0.5


class OuterRule(NamedTuple):
    """An outer rule: ``state = init(values, step_sizes)``, ``state = update(state, grads, bounds)``.

    ``step_back(state)`` answers a diverged inner run; ``converged(state)`` says
    the rule has nothing left to do; ``state_type`` reads a state back from JSON.
    """

    name: str
    state_type: type
    init: Callable[[Mapping[str, torch.Tensor], Mapping[str, float]], Any]
    update: Callable[[Any, Values, Bounds], Any]
    step_back: Callable[[Any], Any]
    converged: Callable[[Any], bool]


class SignState(NamedTuple):
    values: Values  # current shared values
    steps: Values  # per-value step size
    prev_sign: Values  # sign of the last hypergradient (0 before the first)
    prev_values: Values  # values before the last update (for step_back)
    t: int  # number of updates taken


class AdamState(NamedTuple):
    values: Values
    steps: Values  # per-value Adam learning rate
    m: Values  # first moment
    v: Values  # second moment
    prev_values: Values
    t: int


def _start(values: Mapping[str, torch.Tensor], step_sizes: Mapping[str, float]) -> tuple[Values, Values, Values]:
    """(values, per-value steps, zeros), float64 copies."""
    vals = {k: v.detach().clone().to(torch.float64) for k, v in values.items()}
    steps = {k: torch.full_like(v, float(step_sizes[k])) for k, v in vals.items()}
    return vals, steps, {k: torch.zeros_like(v) for k, v in vals.items()}


def _clip(values: Values, bounds: Bounds) -> Values:
    return {k: v.clamp(*bounds[k]) if k in bounds else v for k, v in values.items()}


def _back(state):
    """Undo the last update (before any update: shrink the values towards zero, since a run that
    diverges from its initial values has them too large) and shrink every step."""
    values = {k: v * SHRINK for k, v in state.values.items()} if state.t == 0 else state.prev_values
    return state._replace(values=values, steps={k: s * SHRINK for k, s in state.steps.items()})


def sign_rule() -> OuterRule:
    """The paper's rule: ``lambda <- clip(lambda - s * sign(g))``; ``s`` halves where the sign flips."""

    def init(values, step_sizes):
        vals, steps, zeros = _start(values, step_sizes)
        return SignState(vals, steps, zeros, dict(vals), 0)

    def update(state: SignState, grads: Values, bounds: Bounds) -> SignState:
        sign = {k: torch.sign(g) for k, g in grads.items()}
        steps = {k: torch.where(sign[k] * state.prev_sign[k] < 0, s * SHRINK, s) for k, s in state.steps.items()}
        values = _clip({k: v - steps[k] * sign[k] for k, v in state.values.items()}, bounds)
        return SignState(values, steps, sign, state.values, state.t + 1)

    def step_back(state: SignState) -> SignState:
        return _back(state)._replace(prev_sign={k: torch.zeros_like(v) for k, v in state.values.items()})

    def converged(state: SignState) -> bool:
        """Every step is below 5% of the magnitude of its value."""
        return state.t > 0 and all(bool((state.steps[k] < CONVERGED_FRACTION * v.abs()).all()) for k, v in state.values.items())

    return OuterRule("sign", SignState, init, update, step_back, converged)


def adam_rule(betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-12) -> OuterRule:
    """Adam on the normalised hypergradients, the step size of each kind as its learning rate."""
    b1, b2 = betas

    def init(values, step_sizes):
        vals, steps, zeros = _start(values, step_sizes)
        return AdamState(vals, steps, zeros, zeros, dict(vals), 0)

    def update(state: AdamState, grads: Values, bounds: Bounds) -> AdamState:
        t = state.t + 1
        m = {k: b1 * state.m[k] + (1 - b1) * g for k, g in grads.items()}
        v = {k: b2 * state.v[k] + (1 - b2) * g * g for k, g in grads.items()}
        values = {
            k: x - state.steps[k] * (m[k] / (1 - b1**t)) / ((v[k] / (1 - b2**t)).sqrt() + eps) for k, x in state.values.items()
        }
        return AdamState(_clip(values, bounds), state.steps, m, v, state.values, t)

    return OuterRule("adam", AdamState, init, update, _back, lambda state: False)


OUTER_RULES: dict[str, Callable[[], OuterRule]] = {"sign": sign_rule, "adam": adam_rule}


def get_rule(name: str) -> OuterRule:
    """The rule registered under ``name`` (see :data:`OUTER_RULES`)."""
    return OUTER_RULES[check_choice("outer_rule", name, OUTER_RULES)]()


def normalise(hypergrads: Mapping[str, torch.Tensor], horizon: int) -> Values:
    """Divide each value's hypergradient by the number of inner steps it covers (a row per group alike)."""
    return {k: g.detach().to(torch.float64).cpu() / steps_per_value(g.shape[-1], horizon) for k, g in hypergrads.items()}


def finite(grads: Mapping[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(g).all()) for g in grads.values())


def to_json(state: NamedTuple) -> dict:
    """A rule's state as plain JSON (exact: float64 values round-trip through Python floats)."""
    return {f: ({k: v.tolist() for k, v in x.items()} if isinstance(x, dict) else x) for f, x in state._asdict().items()}


def from_json(rule: OuterRule, data: Mapping) -> NamedTuple:
    """Read back a state written by :func:`to_json` for ``rule``."""
    fields = {}
    for f in rule.state_type._fields:
        x = data[f]
        fields[f] = {k: torch.tensor(v, dtype=torch.float64) for k, v in x.items()} if isinstance(x, dict) else int(x)
    return rule.state_type(**fields)
