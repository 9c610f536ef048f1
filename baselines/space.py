"""The one schedule search space every black-box baseline searches.

A schedule has ``n_k`` shared values per hyperparameter kind ``k`` (as in FDS:
step ``t`` of ``T`` uses value ``floor(n_k t / T)``).  The space is flat: one
uniform Tune domain per shared value, keyed ``<kind>_<i>`` (``lr_0 .. lr_6``,
``momentum_0``, ``weight_decay_0``).  It is defined here once, in Tune domains;
each searcher converts it with its own ``convert_search_space``.

The domains are plain ``tune.uniform`` (no quantization, no log scale): the
paper searches wide linear ranges that include 0, and ConfigSpace 1.x (used by
TuneBOHB) dropped quantized domains, so :func:`check_no_quantized` refuses them.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ray import tune
from ray.tune.search.sample import Domain, Quantized

from fds_tune.optim import sgd
from fds_tune.schedule import Schedule

__all__ = [
    "KINDS", "SpaceConfig", "param_space", "schedule_keys", "schedule_from_config", "sizes_from_keys",
    "is_schedule_key", "check_no_quantized",
]

KINDS: tuple[str, ...] = sgd().hyper_names  # the kinds the baselines' plain SGD needs: lr, momentum, weight_decay

_DEFAULT_SIZES = {"lr": 7, "momentum": 1, "weight_decay": 1}  # the paper's CIFAR-10 setting
_DEFAULT_RANGES = {"lr": (0.0, 1.0), "momentum": (0.0, 0.99), "weight_decay": (0.0, 3e-3)}  # the paper's wide ranges
_KEY = re.compile(r"^(?P<kind>[a-z][a-z0-9_]*?)_(?P<index>0|[1-9][0-9]*)$")


@dataclass(frozen=True)
class SpaceConfig:
    """Number of shared values and search range ``[low, high]`` per hyperparameter kind.

    Match ``sizes`` to the FDS config the baselines are compared with.
    """

    sizes: Mapping[str, int] = field(default_factory=lambda: dict(_DEFAULT_SIZES))
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(_DEFAULT_RANGES))

    def __post_init__(self):
        for name in ("sizes", "ranges"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ValueError(f"{name}: got {value!r}; must be a mapping kind -> value for kinds {list(KINDS)}")
            if set(value) != set(KINDS):
                raise ValueError(f"{name}: got kinds {sorted(value)}; must give exactly the kinds {list(KINDS)}")
        sizes, ranges = {}, {}
        for kind in KINDS:
            n = self.sizes[kind]
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"sizes[{kind!r}]: got {n!r}; must be an int >= 1")
            sizes[kind] = n
            ranges[kind] = _checked_range(kind, self.ranges[kind])
        # validated copies, in KINDS order (plain dicts, so that the config pickles)
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "ranges", ranges)

    @property
    def dims(self) -> int:
        """Number of searched values (dimensions of the space)."""
        return sum(self.sizes.values())


def _checked_range(kind: str, bounds: Any) -> tuple[float, float]:
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"ranges[{kind!r}]: got {bounds!r}; must be a pair (low, high) of numbers") from None
    if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):
        raise ValueError(f"ranges[{kind!r}]: got ({low!r}, {high!r}); must satisfy 0 <= low < high, both finite")
    return low, high


def schedule_keys(sizes: Mapping[str, int]) -> list[str]:
    """The flat config keys of a schedule: ``<kind>_<i>`` for ``i < sizes[kind]``, in kind order."""
    return [f"{kind}_{i}" for kind, n in sizes.items() for i in range(n)]


def param_space(space: SpaceConfig) -> dict[str, Domain]:
    """One ``tune.uniform(low, high)`` per shared value, keyed by :func:`schedule_keys`."""
    return {
        key: tune.uniform(*space.ranges[kind])
        for kind in KINDS
        for key in schedule_keys({kind: space.sizes[kind]})
    }


def sizes_from_keys(keys) -> dict[str, int]:
    """Infer ``sizes`` from the schedule keys among ``keys``; others are ignored.

    Raises ``ValueError`` when a kind is missing or its indices are not ``0..n-1``.
    """
    found: dict[str, set[int]] = {kind: set() for kind in KINDS}
    for key in keys:
        m = _KEY.match(key) if isinstance(key, str) else None
        if m and m["kind"] in found:
            found[m["kind"]].add(int(m["index"]))
    sizes = {}
    for kind, indices in found.items():
        n = len(indices)
        if n == 0:
            raise ValueError(f"schedule: no key for kind {kind!r}; expected {kind}_0 (and {kind}_1, ... for more values)")
        if indices != set(range(n)):
            missing = sorted(set(range(max(indices) + 1)) - indices)
            raise ValueError(f"schedule: kind {kind!r} has keys for indices {sorted(indices)}; missing {[f'{kind}_{i}' for i in missing]}")
        sizes[kind] = n
    return sizes


def is_schedule_key(key: str) -> bool:
    m = _KEY.match(key) if isinstance(key, str) else None
    return bool(m) and m["kind"] in KINDS


def schedule_from_config(config: Mapping[str, Any], sizes: Mapping[str, int]) -> Schedule:
    """The :class:`~fds_tune.schedule.Schedule` held in a flat config (pure).

    ``config[f"{kind}_{i}"]`` is value ``i`` of ``kind``; other keys are ignored.
    """
    values = {}
    for kind, n in sizes.items():
        row = []
        for key in schedule_keys({kind: n}):
            if key not in config:
                raise ValueError(f"schedule: config has no key {key!r} (sizes {dict(sizes)})")
            v = config[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{key}: got {v!r}; must be a finite number")
            row.append(float(v))
        values[kind] = row
    return Schedule(values)


def check_no_quantized(space: Mapping[str, Any]) -> None:
    """Refuse quantized domains: ConfigSpace 1.x (TuneBOHB) dropped them, and TuneBOHB would silently drop ``q``."""
    for key, domain in space.items():
        if isinstance(domain, Domain) and isinstance(domain.get_sampler(), Quantized):
            raise ValueError(
                f"{key}: got a quantized domain ({domain!r}); the schedule space uses none, because "
                "ConfigSpace 1.x dropped quantization and TuneBOHB would ignore it"
            )
