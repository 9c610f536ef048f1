"""Black-box baselines run through Ray Tune on the same problem and schedule space as FDS.

Methods (``BASELINES``): ``random``, ``hyperband``, ``bohb``, ``tpe``, ``optuna``, ``asha``, and the
population methods ``pbt``, ``pb2`` (:mod:`baselines.pbt`).  The learning-rate-free optimizers
(``schedulefree``, ``dadapt``, ``prodigy``: :mod:`baselines.lr_free`) are one run each, not a search.
Typical use::

    from baselines import SpaceConfig, run_baseline
    grid = run_baseline("bohb", space=SpaceConfig(sizes={"lr": 7, "momentum": 1, "weight_decay": 1}),
                        max_epochs=27, num_samples=64, seed=0, storage_path="/abs/results")

Names are imported on first use, so that a Ray worker that only needs
:class:`ScheduleTrainable` does not import every searcher library.
"""
import importlib

_EXPORTS = {
    "BASELINES": "registry",
    "Baseline": "registry",
    "EpochBudget": "registry",
    "TuneSetup": "registry",
    "get_baseline": "registry",
    "run_baseline": "registry",
    "SpaceConfig": "space",
    "param_space": "space",
    "schedule_from_config": "space",
    "ScheduleRun": "schedule_run",
    "ScheduleTrainable": "schedule_run",
    "TrainableConfig": "schedule_run",
    "PBTRun": "pbt",
    "PBTTrainable": "pbt",
    "replay_config": "pbt",
    "LRFreeRun": "lr_free",
    "LRFreeTrainable": "lr_free",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
