"""Random search: independent uniform draws, every trial trained for the full budget."""
from __future__ import annotations

NAME = "random"


def make(seed: int, max_epochs: int, dims: int):
    """``BasicVariantGenerator`` seeded with ``seed``, and FIFO scheduling (no early stopping).

    Every trial is a random draw (its results report ``model_based`` False); ``dims`` is not needed.
    """
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed), FIFOScheduler()
