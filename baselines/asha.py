"""ASHA (Li et al., 2020): random configurations, asynchronous successive halving."""
from __future__ import annotations

from fds_tune.validation import check_int

from .hyperband import REDUCTION_FACTOR, check_reduction_factor

NAME = "asha"


def make(seed: int, max_epochs: int, dims: int, *, grace_period: int = 1, reduction_factor: float = REDUCTION_FACTOR):
    """``BasicVariantGenerator`` seeded with ``seed``; ``ASHAScheduler`` with ``max_t = max_epochs``.

    Every trial is a random draw (``model_based`` False); ``dims`` is not needed.

    The reduction factor defaults to HyperBand's, so that the successive-halving
    methods differ only in how they schedule, not in how hard they prune.
    """
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    check_reduction_factor(reduction_factor)
    check_int("grace_period", grace_period, 1, max_epochs, rule=f"an int in [1, max_epochs={max_epochs}]")
    scheduler = ASHAScheduler(
        time_attr="training_iteration", max_t=max_epochs, grace_period=grace_period, reduction_factor=reduction_factor
    )
    return BasicVariantGenerator(random_state=seed), scheduler
