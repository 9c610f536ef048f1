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

from .engine import MODES
from .optim import sgd
from .outer import OUTER_RULES
from .problem import ProblemConfig
from .validation import check, check_choice, check_int, check_kinds, check_number, check_optional, check_range, fail, is_int

__all__ = ["FDSConfig", "PRESETS", "fds_config", "KINDS", "FINAL_CHOICES"]

KINDS: tuple[str, ...] = sgd().hyper_names  # ("lr", "momentum", "weight_decay")
PROBLEM_KEYS = tuple(f.name for f in dataclasses.fields(ProblemConfig))
# What the final retraining trains: the best validated schedule an inner run used, or the last update (the paper's).
FINAL_CHOICES: tuple[str, ...] = ("incumbent", "last")


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
    user_problem: str | None = None  # a registered problem name or "module:function" (fds_tune.problems); replaces dataset and model
    train_size: int | None = None  # training images kept (a fixed subset, the same for every seed); None: all
    image_size: int | None = None  # images average-pooled to this side; None: as loaded
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
    final: str = "incumbent"  # retrain the incumbent (best validated schedule); "last": the last update, as the paper
    grad_clamp: float | None = 3.0  # the paper clamps minibatch gradients to [-3, 3]
    group_size: int | None = None  # active columns batched per vmap (None: from a memory budget)
    # --- the engine: forward mode is the paper's way; reverse mode costs the same whatever the columns ---
    engine_mode: str = "forward"  # "forward", "reverse" or "auto" (fds_tune.engine.MODES)
    param_groups: dict | str | None = None  # parameter groups: "layers" or {name: [name patterns]} (fds_tune.groups)
    group_kinds: tuple = ()  # kinds learned per parameter group (each gets a row of n_values per group)
    # --- a label: the preset this config came from (None: built by hand); every result carries it ---
    preset: str | None = None

    def __post_init__(self):
        self.problem  # validates the problem keys
        check("preset", self.preset, self.preset is None or isinstance(self.preset, str), "a preset name (a label) or None")
        for key in ("n_values", "init", "step_size", "bounds"):
            check_kinds(key, getattr(self, key), KINDS)
        for k in KINDS:
            check_int(f"n_values[{k!r}]", self.n_values[k], 1)
            check_number(f"step_size[{k!r}]", self.step_size[k], low=0, low_open=True)
            lo, hi = check_range(f"bounds[{k!r}]", self.bounds[k])
            check_number(f"init[{k!r}]", self.init[k], low=lo, high=hi, rule=f"a finite number within bounds [{lo}, {hi}]")
        check_choice("outer_rule", self.outer_rule, OUTER_RULES)
        epochs_ok = isinstance(self.epochs, (tuple, list)) and bool(self.epochs) and all(is_int(e) and e >= 1 for e in self.epochs)
        check("epochs", self.epochs, epochs_ok, "a non-empty list of ints >= 1 (epochs per outer step)")
        check_int("retrain_epochs", self.retrain_epochs, 0, rule="an int >= 0 (0: no retraining)")
        check_int("retrain_fallbacks", self.retrain_fallbacks, 0, rule="an int >= 0 (0: retrain the learned schedule only)")
        check_choice("final", self.final, FINAL_CHOICES)
        check_optional("grad_clamp", self.grad_clamp, check_number, low=0, low_open=True, rule="a finite number > 0 or None")
        check_optional("group_size", self.group_size, check_int, 1, rule="an int >= 1 or None")
        check_choice("engine_mode", self.engine_mode, MODES)
        groups_ok = self.param_groups in (None, "layers") or (
            isinstance(self.param_groups, dict) and bool(self.param_groups)
            and all(isinstance(v, (list, tuple)) and v and all(isinstance(p, str) for p in v) for v in self.param_groups.values())
        )
        check("param_groups", self.param_groups, groups_ok, "None, 'layers' or {group name: [parameter-name patterns]}")
        kinds_ok = isinstance(self.group_kinds, (tuple, list)) and set(self.group_kinds) <= set(KINDS)
        check("group_kinds", self.group_kinds, kinds_ok and len(set(self.group_kinds)) == len(self.group_kinds), f"distinct kinds from {list(KINDS)}")
        check("group_kinds", self.group_kinds, not self.group_kinds or self.param_groups is not None, "empty unless param_groups is set")

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
        d["group_kinds"] = list(self.group_kinds)
        return d


PRESETS: dict[str, FDSConfig] = {
    # Embedded default: sklearn digits, a few seconds per outer step on a CPU.
    "digits": FDSConfig(dataset="digits", model="mlp", epochs=(1,) + (10,) * 9, retrain_epochs=10),
    # CPU benchmark: a full FDS run takes about 10-20 minutes on 2 cores.
    "fashion_mnist": FDSConfig(dataset="fashion_mnist", model="lenet", epochs=(1, 3, 3, 3, 3, 3), retrain_epochs=3),
    # The main job (`make run`): 12,800 Fashion-MNIST images pooled to 14x14, a 64-unit MLP,
    # batch 64 (200 steps an epoch), 3-epoch (600-step) runs; reverse mode where it is cheaper.
    "fashion_mnist_small": FDSConfig(
        dataset="fashion_mnist", model="mlp-small", batch_size=64, train_size=13474, image_size=14,
        epochs=(1, 3, 3, 3, 3, 3), retrain_epochs=3, engine_mode="auto",
    ),
    # The CPU benchmark in the paper's regime: the same network on 25,600 training images
    # (400 steps an epoch), 5-epoch (2,000-step) runs, 7 lr values + momentum + weight decay,
    # 6 outer steps.  Long epochs keep Ray's per-epoch cost (~0.2 core-s) small beside training.
    "fashion_mnist_paper": FDSConfig(
        dataset="fashion_mnist", model="mlp-small", batch_size=64, train_size=26948, image_size=14,
        n_values={"lr": 7, "momentum": 1, "weight_decay": 1},
        epochs=(1, 5, 5, 5, 5, 5), retrain_epochs=5, engine_mode="auto",
    ),
    # The paper's CIFAR-10 setup (GPU): WRN-16-1, 7 lr values, 10 outer steps, retraining for 50 epochs.
    "cifar10_paper": FDSConfig(
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
PRESETS = {name: dataclasses.replace(cfg, preset=name) for name, cfg in PRESETS.items()}  # each carries its name
ALLOWED_KEYS = tuple(f.name for f in dataclasses.fields(FDSConfig))


def fds_config(config: Mapping | None = None) -> FDSConfig:
    """Build an :class:`FDSConfig` from a (Ray Tune) dict: a preset plus overrides.

    ``preset`` (default ``"digits"``; None: :class:`FDSConfig`'s defaults) names the base; every other key overrides
    that preset's value (per-kind dicts merge kind by kind).  A full
    :meth:`FDSConfig.to_dict` reads back to the same config.
    """
    config = dict(config or {})
    unknown = [k for k in config if k not in ALLOWED_KEYS]
    if unknown:
        fail("config", unknown[0], f"one of the allowed keys {list(ALLOWED_KEYS)}")
    name = config.pop("preset", "digits")  # None: a config built by hand (the dataclass defaults)
    base = FDSConfig() if name is None else PRESETS[check_choice("preset", name, PRESETS)]
    fields = {}
    for key, value in config.items():
        current = getattr(base, key)
        if isinstance(current, dict):
            value = {**current, **check_kinds(key, value, KINDS, exact=False)}
        elif key in ("epochs", "group_kinds") and isinstance(value, list):
            value = tuple(value)
        fields[key] = value
    if "bounds" in fields:
        fields["bounds"] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields["bounds"].items()}
    return dataclasses.replace(base, **fields)
