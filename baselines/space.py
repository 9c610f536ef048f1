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
from fds_tune.validation import check, check_int, check_kinds, check_number, check_range

__all__ = [
    "KINDS", "SpaceConfig", "param_space", "schedule_keys", "schedule_from_config", "sizes_from_keys",
    "is_schedule_key", "check_no_quantized", "random_phase",
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
            check_kinds(name, getattr(self, name), KINDS)
        sizes, ranges = {}, {}
        for kind in KINDS:
            sizes[kind] = check_int(f"sizes[{kind!r}]", self.sizes[kind], 1)
            key, pair = f"ranges[{kind!r}]", self.ranges[kind]
            ranges[kind] = check_range(key, pair, low=0)
            check(key, pair, math.isfinite(ranges[kind][1]), "a pair of finite numbers")
        # validated copies, in KINDS order (plain dicts, so that the config pickles)
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "ranges", ranges)

    @property
    def dims(self) -> int:
        """Number of searched values (dimensions of the space)."""
        return sum(self.sizes.values())


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
    for kind, indices in found.items():
        missing = [f"{kind}_{i}" for i in range(max(indices, default=0) + 1) if i not in indices]
        keys = [f"{kind}_{i}" for i in sorted(indices)]
        check(f"schedule keys of kind {kind!r}", keys, not missing, f"consecutive from {kind}_0; missing {missing}")
    return {kind: len(indices) for kind, indices in found.items()}


def is_schedule_key(key: str) -> bool:
    m = _KEY.match(key) if isinstance(key, str) else None
    return bool(m) and m["kind"] in KINDS


def schedule_from_config(config: Mapping[str, Any], sizes: Mapping[str, int]) -> Schedule:
    """The :class:`~fds_tune.schedule.Schedule` held in a flat config (pure).

    ``config[f"{kind}_{i}"]`` is value ``i`` of ``kind``; other keys are ignored.
    """
    missing = [key for key in schedule_keys(sizes) if key not in config]
    given = [key for key in config if is_schedule_key(key)]
    check("schedule keys", given, not missing, f"keys for sizes {dict(sizes)}; missing {missing}")
    values = {kind: [float(check_number(key, config[key])) for key in schedule_keys({kind: n})] for kind, n in sizes.items()}
    return Schedule(values)


def check_no_quantized(space: Mapping[str, Any]) -> None:
    """Refuse quantized domains: ConfigSpace 1.x (TuneBOHB) dropped them, and TuneBOHB would silently drop ``q``."""
    for key, domain in space.items():
        quantized = isinstance(domain, Domain) and isinstance(domain.get_sampler(), Quantized)
        rule = "an unquantized domain: ConfigSpace 1.x dropped quantization and TuneBOHB would ignore it"
        check(key, domain, not quantized, rule)


def random_phase(dims: int) -> int:
    """Random observations a model-based searcher collects before its model proposes: ``dims + 1``.

    ``dims + 1`` points in general position are the fewest whose affine hull is
    the whole space (any fewer lie in a lower-dimensional plane), and it is the BOHB paper's
    minimum for a model (Falkner et al., 2018: ``N_min = d + 1``).  The
    libraries' own defaults ignore the dimension (hyperopt 20, Optuna 10) or wait
    twice as long (hpbandster: ``d + 1`` good and ``d + 1`` bad results at one
    budget), so that runs of 12-24 trials stayed mostly or wholly random.  The
    ``tpe``, ``optuna`` and ``bohb`` baselines all derive their defaults from
    this one number, so that they differ in their models, not in how long they
    wait for one.
    """
    return check_int("dims", dims, 1) + 1
