"""Typed, validated FDS configuration and presets.

A Ray Tune config dict becomes one :class:`FDSConfig` through
:func:`fds_config`: ``{"preset": "digits"}`` gives a preset as it stands, any
other key overrides that preset's value (per-kind dicts merge kind by kind),
and an unknown key or a bad value raises a ``ValueError`` that names the key,
the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from .optim import sgd
from .outer import OUTER_RULES
from .problem import ProblemConfig

__all__ = ["FDSConfig", "PRESETS", "fds_config", "KINDS"]

KINDS: tuple[str, ...] = sgd().hyper_names  # ("lr", "momentum", "weight_decay")
PROBLEM_KEYS = tuple(f.name for f in dataclasses.fields(ProblemConfig))


def _per_kind(**values):
    return field(default_factory=lambda: dict(values))


@dataclass(frozen=True)
class FDSConfig:
    # --- the problem (shared with every baseline) ---
    dataset: str = "digits"  # embedded default, needs no download
    model: str = "lenet"
    batch_size: int = 128
    val_fraction: float = 0.05  # the paper's validation split
    seed: int = 0
    data_root: str | None = None
    device: str = "auto"  # CUDA when the trial was given a GPU, else CPU
    # --- the schedules FDS learns ---
    n_values: dict = _per_kind(lr=5, momentum=1, weight_decay=1)  # shared values per kind
    init: dict = _per_kind(lr=0.0, momentum=0.0, weight_decay=0.0)  # the paper learns from zero
    step_size: dict = _per_kind(lr=0.1, momentum=0.1, weight_decay=3e-4)  # the paper's outer step sizes
    bounds: dict = _per_kind(lr=(0.0, math.inf), momentum=(0.0, 0.99), weight_decay=(0.0, math.inf))
    outer_rule: str = "sign"  # the paper's rule; "adam" is the alternative
    # --- horizons and budgets ---
    epochs: tuple = (1, 5, 5, 5, 5, 5)  # epochs of each outer step's inner run (first short, as in the paper)
    retrain_epochs: int = 5  # final training from scratch on the full training set
    retrain_fallbacks: int = 2  # if retraining diverges or stalls: retrain this many evaluated schedules instead, best first
    grad_clamp: float | None = 3.0  # the paper clamps minibatch gradients to [-3, 3]
    group_size: int | None = None  # active columns batched per vmap (None: from a memory budget)

    def __post_init__(self):
        self.problem  # validates the problem keys
        for key in ("n_values", "init", "step_size", "bounds"):
            value = getattr(self, key)
            if not isinstance(value, Mapping) or set(value) != set(KINDS):
                raise ValueError(f"{key}: got {value!r}; must give a value for each of {list(KINDS)}")
        for k, n in self.n_values.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"n_values[{k!r}]: got {n!r}; must be an int >= 1")
        for k, s in self.step_size.items():
            if not _number(s) or not s > 0 or not math.isfinite(s):
                raise ValueError(f"step_size[{k!r}]: got {s!r}; must be a finite number > 0")
        for k, b in self.bounds.items():
            if not (isinstance(b, (tuple, list)) and len(b) == 2 and all(_number(x) for x in b) and b[0] < b[1]):
                raise ValueError(f"bounds[{k!r}]: got {b!r}; must be [low, high] with low < high")
        for k, v in self.init.items():
            lo, hi = self.bounds[k]
            if not _number(v) or not math.isfinite(v) or not lo <= v <= hi:
                raise ValueError(f"init[{k!r}]: got {v!r}; must be a finite number within bounds [{lo}, {hi}]")
        if self.outer_rule not in OUTER_RULES:
            raise ValueError(f"outer_rule: got {self.outer_rule!r}; allowed values are {sorted(OUTER_RULES)}")
        if not (isinstance(self.epochs, (tuple, list)) and self.epochs and all(_int(e) and e >= 1 for e in self.epochs)):
            raise ValueError(f"epochs: got {self.epochs!r}; must be a non-empty list of ints >= 1 (epochs per outer step)")
        if not _int(self.retrain_epochs) or self.retrain_epochs < 0:
            raise ValueError(f"retrain_epochs: got {self.retrain_epochs!r}; must be an int >= 0 (0: no retraining)")
        if not _int(self.retrain_fallbacks) or self.retrain_fallbacks < 0:
            raise ValueError(f"retrain_fallbacks: got {self.retrain_fallbacks!r}; must be an int >= 0 (0: retrain the learned schedule only)")
        if self.grad_clamp is not None and (not _number(self.grad_clamp) or not self.grad_clamp > 0):
            raise ValueError(f"grad_clamp: got {self.grad_clamp!r}; must be a number > 0 or None")
        if self.group_size is not None and (not _int(self.group_size) or self.group_size < 1):
            raise ValueError(f"group_size: got {self.group_size!r}; must be an int >= 1 or None")

    @property
    def problem(self) -> ProblemConfig:
        return ProblemConfig(**{k: getattr(self, k) for k in PROBLEM_KEYS})

    @property
    def outer_steps(self) -> int:
        return len(self.epochs)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["epochs"] = list(self.epochs)
        d["bounds"] = {k: list(v) for k, v in self.bounds.items()}
        return d


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


PRESETS: dict[str, FDSConfig] = {
    # Embedded default: sklearn digits, a few seconds per outer step on a CPU.
    "digits": FDSConfig(dataset="digits", model="mlp", epochs=(1,) + (10,) * 9, retrain_epochs=10),
    # CPU benchmark: a full FDS run takes about 10-20 minutes on 2 cores.
    "fashion_mnist": FDSConfig(dataset="fashion_mnist", model="lenet", epochs=(1, 3, 3, 3, 3, 3), retrain_epochs=3),
    # The paper's CIFAR-10 setup (GPU): WRN-16-1, 7 lr values, 10 outer steps, retraining for 50 epochs.
    "paper_cifar10": FDSConfig(
        dataset="cifar10",
        model="wrn-16-1",
        batch_size=256,
        n_values={"lr": 7, "momentum": 1, "weight_decay": 1},
        step_size={"lr": 0.1, "momentum": 0.1, "weight_decay": 3e-4},
        epochs=(1,) + (10,) * 9,
        grad_clamp=3.0,
        val_fraction=0.05,
        retrain_epochs=50,
    ),
}
PRESETS["cifar10_paper"] = PRESETS["paper_cifar10"]
ALLOWED_KEYS = ("preset",) + tuple(f.name for f in dataclasses.fields(FDSConfig))


def fds_config(config: Mapping | None = None) -> FDSConfig:
    """Build an :class:`FDSConfig` from a (Ray Tune) dict: a preset plus overrides."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(ALLOWED_KEYS))
    if unknown:
        raise ValueError(f"config key {unknown[0]!r} (value {config[unknown[0]]!r}) is not known; allowed keys are {list(ALLOWED_KEYS)}")
    preset = config.pop("preset", "digits")
    if preset not in PRESETS:
        raise ValueError(f"preset: got {preset!r}; allowed values are {sorted(PRESETS)}")
    base = PRESETS[preset]
    fields = {}
    for key, value in config.items():
        current = getattr(base, key)
        if isinstance(current, dict):
            if not isinstance(value, Mapping):
                raise ValueError(f"{key}: got {value!r}; must be a dict keyed by kinds {list(KINDS)}")
            bad = sorted(set(value) - set(KINDS))
            if bad:
                raise ValueError(f"{key}: kind {bad[0]!r} is not known; allowed kinds are {list(KINDS)}")
            value = {**current, **value}
        elif key == "epochs" and isinstance(value, list):
            value = tuple(value)
        fields[key] = value
    if "bounds" in fields:
        fields["bounds"] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields["bounds"].items()}
    return dataclasses.replace(base, **fields)
