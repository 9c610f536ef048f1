"""One way to check user input, with one message form: ``"key: got VALUE; must be RULE"``.

Every config class and public function of fds-tune, the baselines and the
comparison validates through these helpers, so that a bad value always raises a
``ValueError`` that names the key, the value received and the rule it broke::

    check_int("batch_size", 0, minimum=1)
    # ValueError: batch_size: got 0; must be an int >= 1
"""
from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any, NoReturn

__all__ = [
    "fail", "is_int", "is_number", "check", "check_int", "check_number", "check_choice", "check_kinds", "check_range",
    "check_optional",
]


def fail(key: str, value: Any, rule: str) -> NoReturn:
    """Raise the one error form: ``key: got VALUE; must be RULE``."""
    raise ValueError(f"{key}: got {value!r}; must be {rule}")


def is_int(x: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    """An int or float that is not a bool (may be inf or NaN)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check(key: str, value: Any, ok: bool, rule: str) -> Any:
    """``value`` if ``ok``, else :func:`fail`."""
    if not ok:
        fail(key, value, rule)
    return value


def check_int(key: str, value: Any, minimum: int | None = None, maximum: int | None = None, rule: str | None = None) -> int:
    """An int (not a bool) within ``[minimum, maximum]``."""
    ok = is_int(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        bounds = [f">= {minimum}"] * (minimum is not None) + [f"<= {maximum}"] * (maximum is not None)
        fail(key, value, rule or " ".join(["an int", " and ".join(bounds)]).strip())
    return value


def check_number(
    key: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    rule: str | None = None,
) -> float:
    """A number (not a bool), finite unless ``finite=False``, within the given bounds.

    ``low_open``/``high_open`` exclude the bound itself (``> low``, ``< high``).
    """
    ok = is_number(value) and not math.isnan(value) and (math.isfinite(value) or not finite)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        parts = ["a finite number" if finite else "a number"]
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {high}")
        fail(key, value, rule or " ".join(parts[:1]) + (" " + " and ".join(parts[1:]) if len(parts) > 1 else ""))
    return value


def check_choice(key: str, value: Any, allowed: Collection) -> Any:
    """One of ``allowed``."""
    try:
        ok = value in allowed
    except TypeError:  # an unhashable value for a dict or set of names
        ok = False
    if not ok:
        fail(key, value, f"one of {list(allowed)}")
    return value


def check_kinds(key: str, value: Any, kinds: Collection[str], exact: bool = True) -> Mapping:
    """A mapping keyed by hyperparameter kinds: exactly ``kinds`` (or, with ``exact=False``, some of them)."""
    if not isinstance(value, Mapping):
        fail(key, value, f"a dict keyed by kinds {list(kinds)}")
    unknown = [k for k in value if k not in kinds]
    if unknown:
        fail(f"{key}[{unknown[0]!r}]", value[unknown[0]], f"given for a known kind, one of {list(kinds)}")
    if exact and set(value) != set(kinds):
        fail(key, value, f"a dict with a value for each of {list(kinds)}")
    return value


def check_range(key: str, value: Any, low: float = -math.inf, high: float = math.inf) -> tuple[float, float]:
    """A pair ``(lo, hi)`` of numbers with ``low <= lo < hi <= high``; returned as a tuple of floats."""
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(is_number(x) and not math.isnan(x) for x in value)
    ok = ok and low <= value[0] < value[1] <= high
    if not ok:
        fail(key, value, f"a pair [low, high] of numbers with {low} <= low < high <= {high}")
    return float(value[0]), float(value[1])


def check_optional(key: str, value: Any, checker: Callable[..., Any], *args, **kwargs) -> Any:
    """``None``, or a value that ``checker(key, value, ...)`` accepts."""
    return None if value is None else checker(key, value, *args, **kwargs)
