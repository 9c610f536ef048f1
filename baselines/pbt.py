"""Population Based Training (``pbt``) and PB2 (``pb2``): Ray Tune's own schedule learners.

A population of runs trains at once; every ``perturbation_interval`` epochs
(:func:`interval`: a fraction of the horizon, ``interval_fraction`` of
``max_epochs``, at least one epoch) the worst quantile of members clone a
better member's checkpoint (*exploit*) and change its hyperparameters
(*explore*): PBT (Jaderberg et al., 2017, ``PopulationBasedTraining``) by
random perturbation or resampling, PB2 (Parker-Holder et al., 2020, ``pb2.PB2``)
by a GP bandit.  PB2 in Ray 2.60 needs scikit-learn (its
``GaussianProcessRegressor``) and SciPy, both dependencies of this package.

A member (:class:`PBTRun`) is a :class:`~baselines.schedule_run.ScheduleRun` with
one value per kind (``lr_0``, ``momentum_0``, ``weight_decay_0``, in the same
ranges as the black-box search: :func:`member_space`), one epoch per step,
trained for ``max_epochs`` epochs of its lineage.  It records the schedule it
actually *followed*, one value per kind and epoch (epoch ``e``: steps
``e * steps_per_epoch ..``), inherited history included: the history travels in
its state, so a member that clones another continues the donor's history.
:class:`PBTTrainable` accepts a checkpoint of another member of the same
population (configs that differ in the schedule keys alone), which exploiting
needs, and nothing else.

The learned schedule is the followed schedule of the best final member, chosen
on validation; :func:`replay_config` turns it into a
:class:`~baselines.schedule_run.ScheduleRun` config of ``E`` values per kind over
``E`` epochs, which replays it step for step (value ``floor(E t / (E s)) = e`` at
step ``t`` of epoch ``e``) and is handed over like any black-box trial's schedule.

Compute: the population is synchronous (``synch=True``): every member pauses at
each perturbation time until all have reached it, and a member clones the
checkpoint its donor wrote at that same time.  So a member's lineage epochs
(its ``epochs_total``) are exactly the epochs it trained itself, and the
population's compute is the sum of its members' epochs (each member's last
``epochs_total``).  ``compute_s`` is the lineage's seconds (the donor's for the
epochs before a clone: the same number of epochs of the same work), so a member's
``compute_s`` can drop a little at a clone.  Ray may leave out of a member's log the
result it reported just before it was exploited (its iterations then skip one);
that epoch was trained, and its last ``epochs_total`` counts it.

Seeds: ``seed`` seeds the initial population's draws; Ray's PBT perturbs with
Python's global ``random`` and PB2 with NumPy's global generator (Ray takes no
seed for them), so later perturbations are not reproducible from the seed.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fds_tune.checkpoint import FORMAT_VERSION, load_json, saved_config
from fds_tune.trainable import RunTrainable
from fds_tune.validation import check, check_number

from .schedule_run import MODEL_BASED, ScheduleRun
from .space import KINDS, SpaceConfig, is_schedule_key, schedule_keys

__all__ = ["PBTRun", "PBTTrainable", "member_space", "interval", "replay_config", "make_pbt", "make_pb2", "MAKERS", "FOLLOWED"]

FOLLOWED = "followed"  # the result column (and state key): kind -> the value followed in each epoch so far
INTERVAL_FRACTION = 0.2  # perturb every fifth of the horizon: 4 perturbations per run
QUANTILE_FRACTION = 0.25  # Ray's default: the bottom quarter clones the top quarter


class PBTRun(ScheduleRun):
    """One member of a population: its current values (one per kind) for the next epochs, and the history it followed."""

    KIND = "pbt_run"
    METHOD = "pbt"

    def __init__(self, config, handover: bool = False, problem=None):
        super().__init__(config, handover, problem)
        sizes = self.schedule.sizes
        check("schedule sizes", sizes, set(sizes.values()) == {1}, "one value per kind (a population member's current values)")
        self.followed: dict[str, list[float]] = {kind: [] for kind in self.schedule}

    @classmethod
    def for_handover(cls, config, epochs):
        """A member's hand-over is its followed schedule's: see :func:`replay_config`."""
        raise TypeError("for_handover: a population member hands over the schedule it followed; use replay_config(config, followed)")

    def advance(self, batches, n):
        extra, diverged = super().advance(batches, n)
        epochs = n // self.steps_per_epoch  # one epoch per step: the horizon is max_epochs whole epochs
        for kind, values in self.schedule.as_lists().items():
            self.followed[kind] += values * epochs
        return {**extra, FOLLOWED: {k: list(v) for k, v in self.followed.items()}}, diverged

    def method_state(self) -> dict[str, Any]:
        return {FOLLOWED: self.followed}

    def load_method_state(self, state: Mapping[str, Any]) -> None:
        self.followed = {kind: [float(v) for v in values] for kind, values in state[FOLLOWED].items()}


class PBTTrainable(RunTrainable):
    """Ray Tune shell around :class:`PBTRun`; it accepts the checkpoint of another member of its population.

    PBT's exploit restores the donor's checkpoint into a member whose config holds
    new values: a checkpoint whose config differs from this member's in the
    member's own schedule keys alone is accepted (any other difference is refused),
    and the donor's followed history comes with its state.
    """

    RUN = PBTRun

    def load_checkpoint(self, checkpoint: str) -> None:
        saved = saved_config(checkpoint) or {}
        own = self.checkpoint_config
        expected = {**own, **{k: saved[k] for k in own if is_schedule_key(k) and k in saved}}
        self.run.load_state_dict(load_json(checkpoint, self.run.KIND, FORMAT_VERSION, expected))


def member_space(space: SpaceConfig) -> SpaceConfig:
    """A member's space: one value per kind, in ``space``'s ranges (PBT changes it over time instead)."""
    return SpaceConfig(sizes={kind: 1 for kind in KINDS}, ranges=dict(space.ranges))


def interval(max_epochs: int, fraction: float = INTERVAL_FRACTION) -> int:
    """The perturbation interval in epochs (Tune's ``training_iteration``): ``max(1, floor(fraction * max_epochs))``."""
    check_number("interval_fraction", fraction, low=0, high=1, low_open=True, rule="a number in (0, 1]")
    return max(1, math.floor(fraction * max_epochs))


def replay_config(config: Mapping[str, Any], followed: Mapping[str, list[float]]) -> dict[str, Any]:
    """A :class:`~baselines.schedule_run.ScheduleRun` config that replays ``followed`` step for step.

    ``config``: a member's flat config (its non-schedule keys are kept); ``followed``:
    kind -> the value followed in each of ``E`` epochs.  The result has ``E`` values
    per kind (``lr_0 .. lr_{E-1}``, ...) over ``max_epochs = E``: the hand-over
    stretches them over its own epochs as it does any schedule.
    """
    lengths = {kind: len(values) for kind, values in followed.items()}
    ok = set(followed) == set(KINDS) and len(set(lengths.values())) == 1 and min(lengths.values()) >= 1
    check(FOLLOWED, lengths, ok, f"the same number (>= 1) of epochs for each kind of {list(KINDS)}")
    epochs = lengths[KINDS[0]]
    flat = {k: v for k, v in config.items() if not is_schedule_key(k)}
    for kind in KINDS:
        flat.update(zip(schedule_keys({kind: epochs}), (float(v) for v in followed[kind])))
    return {**flat, "max_epochs": epochs, MODEL_BASED: False}


def _mutations(ranges: Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    return {f"{kind}_0": tuple(ranges[kind]) for kind in KINDS}


def make_pbt(seed: int, max_epochs: int, dims: int, *, ranges, interval_fraction: float = INTERVAL_FRACTION,
             quantile_fraction: float = QUANTILE_FRACTION):
    """``BasicVariantGenerator`` seeded with ``seed`` (the initial population); synchronous
    ``PopulationBasedTraining`` over the member's three values, resampled from their ranges and
    perturbed by Ray's factors (0.8, 1.2), clipped back into the ranges."""
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    bounds = _mutations(ranges)

    def clip(config):
        return {**config, **{k: min(max(config[k], low), high) for k, (low, high) in bounds.items()}}

    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=interval(max_epochs, interval_fraction),
        hyperparam_mutations={k: tune.uniform(low, high) for k, (low, high) in bounds.items()},
        quantile_fraction=check_number("quantile_fraction", quantile_fraction, low=0, high=0.5, low_open=True),
        custom_explore_fn=clip,
        synch=True,
        log_config=False,
    )
    return BasicVariantGenerator(random_state=seed), scheduler


def make_pb2(seed: int, max_epochs: int, dims: int, *, ranges, interval_fraction: float = INTERVAL_FRACTION,
             quantile_fraction: float = QUANTILE_FRACTION):
    """``BasicVariantGenerator`` seeded with ``seed`` (the initial population); synchronous ``PB2``
    (a GP bandit proposes the explored values) within the member's ranges."""
    from ray.tune.schedulers.pb2 import PB2
    from ray.tune.search.basic_variant import BasicVariantGenerator

    scheduler = PB2(
        time_attr="training_iteration",
        perturbation_interval=interval(max_epochs, interval_fraction),
        hyperparam_bounds={k: list(b) for k, b in _mutations(ranges).items()},
        quantile_fraction=check_number("quantile_fraction", quantile_fraction, low=0, high=0.5, low_open=True),
        synch=True,
        log_config=False,
    )
    return BasicVariantGenerator(random_state=seed), scheduler


MAKERS = {"pbt": make_pbt, "pb2": make_pb2}
