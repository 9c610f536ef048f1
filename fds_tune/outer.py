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
* :func:`rprop_rule` -- iRprop-: the sign rule with steps that also grow
  (x eta+) while a value's sign repeats, bounded below and above.
* :func:`normalised_rule` -- each kind moves along its hypergradient scaled
  by the kind's largest component (magnitudes kept within a kind), with a
  per-kind step that grows or shrinks with the agreement of successive
  hypergradients.

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
from .validation import check_choice, check_number

__all__ = [
    "OuterRule", "SignState", "AdamState", "RpropState", "NormalisedState", "sign_rule", "adam_rule", "rprop_rule",
    "normalised_rule", "OUTER_RULES", "get_rule", "normalise", "finite",
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


class RpropState(NamedTuple):
    values: Values
    steps: Values  # per-value step size, within [min_factor, max_factor] x its initial step
    base: Values  # the initial step sizes (the bounds on steps are relative to them)
    prev_sign: Values  # sign of the last hypergradient taken (0 after a flip or a step back)
    prev_values: Values
    t: int


class NormalisedState(NamedTuple):
    values: Values
    steps: Values  # per-kind step size (equal within a kind): the move of the kind's largest component
    base: Values
    prev_dir: Values  # the last normalised direction (zeros before the first)
    prev_values: Values
    t: int


def _start(values: Mapping[str, torch.Tensor], step_sizes: Mapping[str, float]) -> tuple[Values, Values, Values]:
    """(values, per-value steps, zeros), float64 copies."""
    vals = {k: v.detach().clone().to(torch.float64) for k, v in values.items()}
    steps = {k: torch.full_like(v, float(step_sizes[k])) for k, v in vals.items()}
    return vals, steps, {k: torch.zeros_like(v) for k, v in vals.items()}


def _clip(values: Values, bounds: Bounds) -> Values:
    return {k: v.clamp(*bounds[k]) if k in bounds else v for k, v in values.items()}


def _back(state, forget: str | None = None):
    """Undo the last update (before any update: shrink the values towards zero, since a run that
    diverges from its initial values has them too large) and shrink every step; the state field
    ``forget`` (the last sign or direction a rule remembers) goes back to zeros."""
    values = {k: v * SHRINK for k, v in state.values.items()} if state.t == 0 else state.prev_values
    state = state._replace(values=values, steps={k: s * SHRINK for k, s in state.steps.items()})
    return state if forget is None else state._replace(**{forget: {k: torch.zeros_like(v) for k, v in state.values.items()}})


def _adaptive_init(state_type: type):
    """``init`` of a rule whose steps adapt within bounds relative to the initial steps:
    ``state_type(values, steps, base=steps, zeros, prev_values=values, t=0)``."""

    def init(values, step_sizes):
        vals, steps, zeros = _start(values, step_sizes)
        return state_type(vals, steps, dict(steps), zeros, dict(vals), 0)

    return init


def _below_fraction(state) -> bool:
    """Every step is below 5% of the magnitude of its value (after at least one update)."""
    return state.t > 0 and all(bool((state.steps[k] < CONVERGED_FRACTION * v.abs()).all()) for k, v in state.values.items())


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
        return _back(state, forget="prev_sign")

    return OuterRule("sign", SignState, init, update, step_back, _below_fraction)


def _check_adaptation(eta_plus: float, eta_minus: float, min_factor: float, max_factor: float) -> None:
    """The growth/shrink factors and step bounds of :func:`rprop_rule` and :func:`normalised_rule`."""
    check_number("eta_plus", eta_plus, low=1)
    check_number("eta_minus", eta_minus, low=0, high=1, low_open=True, high_open=True)
    check_number("min_factor", min_factor, low=0, high=1, low_open=True)
    check_number("max_factor", max_factor, low=1)


def rprop_rule(eta_plus: float = 1.5, eta_minus: float = 0.5, min_factor: float = 1e-3, max_factor: float = 10.0) -> OuterRule:
    """iRprop- on the normalised hypergradients' signs.

    A value's step grows ``x eta_plus`` when its hypergradient has the sign of the last one
    taken, shrinks ``x eta_minus`` on a flip, and stays within ``[min_factor, max_factor]``
    times its initial step; the value moves by its step against the sign.

    Why iRprop- (the update is skipped for a value whose sign flipped, and its remembered
    sign is reset, so that the next step neither shrinks nor grows): Rprop+ and iRprop+
    undo the last move on a flip (or when the loss rose), which needs a loss comparable
    across outer steps; here each outer step draws a fresh initialisation and validation
    split, so that comparison is noisy, and undoing costs a full inner run per mistake.
    iRprop- needs signs only, like the paper's rule.  ``eta_plus = 1.5`` (Rprop's usual
    1.2 is tuned for thousands of steps; FDS has 6-10): from zero with step ``s``, a value
    reaches ``8 s`` in 4 outer steps (``13 s`` in 5), where the paper's rule needs 8.
    """
    _check_adaptation(eta_plus, eta_minus, min_factor, max_factor)

    init = _adaptive_init(RpropState)

    def update(state: RpropState, grads: Values, bounds: Bounds) -> RpropState:
        steps, signs = {}, {}
        for k, g in grads.items():
            agree = torch.sign(g) * state.prev_sign[k]
            grown = torch.where(agree > 0, state.steps[k] * eta_plus, torch.where(agree < 0, state.steps[k] * eta_minus, state.steps[k]))
            steps[k] = grown.clamp(state.base[k] * min_factor, state.base[k] * max_factor)
            signs[k] = torch.where(agree < 0, torch.zeros_like(g), torch.sign(g))  # iRprop-: no move after a flip
        values = _clip({k: v - steps[k] * signs[k] for k, v in state.values.items()}, bounds)
        return RpropState(values, steps, state.base, signs, state.values, state.t + 1)

    def step_back(state: RpropState) -> RpropState:
        return _back(state, forget="prev_sign")

    return OuterRule("rprop", RpropState, init, update, step_back, _below_fraction)


def normalised_rule(eta_plus: float = 1.5, eta_minus: float = 0.5, min_factor: float = 1e-3, max_factor: float = 10.0) -> OuterRule:
    """Normalised hypergradient steps: magnitudes within a kind, an adaptive step per kind.

    Each kind ``k`` moves by ``-s_k g / max|g|``: its largest component moves by ``s_k``,
    the others in proportion to their hypergradients (the shape of the lr schedule that
    the sign rule discards; the normalised hypergradients of one kind are per inner step,
    so they are comparable).  ``s_k`` grows ``x eta_plus`` when the kind's
    direction agrees with the last one (positive inner product), shrinks ``x eta_minus``
    when it disagrees, within ``[min_factor, max_factor]`` times its initial step.  Unlike
    :func:`rprop_rule` it still moves after a disagreement (with the shrunk step): a kind of
    one value is then the paper's sign rule with growing steps.
    """
    _check_adaptation(eta_plus, eta_minus, min_factor, max_factor)

    init = _adaptive_init(NormalisedState)

    def update(state: NormalisedState, grads: Values, bounds: Bounds) -> NormalisedState:
        steps, dirs = {}, {}
        for k, g in grads.items():
            scale = g.abs().max()
            dirs[k] = g / scale if scale > 0 else torch.zeros_like(g)
            agree = float((dirs[k] * state.prev_dir[k]).sum())
            factor = eta_plus if agree > 0 else eta_minus if agree < 0 else 1.0
            steps[k] = (state.steps[k] * factor).clamp(state.base[k] * min_factor, state.base[k] * max_factor)
        values = _clip({k: v - steps[k] * dirs[k] for k, v in state.values.items()}, bounds)
        return NormalisedState(values, steps, state.base, dirs, state.values, state.t + 1)

    def step_back(state: NormalisedState) -> NormalisedState:
        return _back(state, forget="prev_dir")

    return OuterRule("normalised", NormalisedState, init, update, step_back, _below_fraction)


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


OUTER_RULES: dict[str, Callable[[], OuterRule]] = {
    "sign": sign_rule, "adam": adam_rule, "rprop": rprop_rule, "normalised": normalised_rule,
}


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
