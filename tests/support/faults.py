"""Fault injection for the end-to-end tests: an FDS trainable that fails once, on purpose.

``FaultyFDS`` reads one extra config key, ``fault``::

    {"marker": "/tmp/.../marker", "at": 1, "how": "raise" | "exit", "seed": None}

At outer step ``at`` (0-based: the ``at + 1``-th ``step()``) of a trial whose seed is
``seed`` (any seed when None), and only while ``marker`` does not exist, it writes the
marker and then raises (``how="raise"``: Tune sees a failed trial) or kills its worker
process (``how="exit"``: ``os._exit(1)``, as a lost worker).  The marker makes it happen
once per experiment, whatever restarts follow.

``FaultyInnerRun`` does the same to one inner run of an :class:`~fds_tune.FDSSearcher`; its fault comes
from ``tune.with_parameters(FaultyInnerRun, fault=inner_fault(...))`` (the searcher writes every trial's
config): inner run ``run`` of outer step ``outer_step`` (1-based, as results count them) fails, once
per experiment with a ``marker``, or every time it runs without one (a run that fails for good).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import ray

from fds_tune import FDSInnerRun, FDSTrainable

__all__ = ["FaultyFDS", "fault", "FaultyInnerRun", "inner_fault"]

# Ray workers cannot import the tests' support package: ship this module's classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fault(marker: str | os.PathLike, at: int = 1, how: str = "raise", seed: int | None = None) -> dict:
    """The ``fault`` config value for :class:`FaultyFDS`."""
    if how not in ("raise", "exit"):
        raise ValueError(f"how: got {how!r}; must be 'raise' or 'exit'")
    return {"marker": str(marker), "at": at, "how": how, "seed": seed}


class FaultyFDS(FDSTrainable):
    """:class:`~fds_tune.FDSTrainable` that fails once as its ``fault`` config key says."""

    def setup(self, config):
        self.fault = config.get("fault")
        super().setup({k: v for k, v in config.items() if k != "fault"})

    def step(self):
        f, run = self.fault, self.run
        marker = Path(f["marker"]) if f else None
        due = f and run.learner.outer_step == f["at"] and f["seed"] in (None, run.config.seed)
        if due and not marker.exists():
            marker.write_text(f"failed once ({f['how']})")
            if f["how"] == "exit":
                os._exit(1)
            raise RuntimeError("injected failure")
        return super().step()


def inner_fault(outer_step: int, run: int, marker: str | os.PathLike | None = None, how: str = "raise") -> dict:
    """The ``fault`` parameter of :class:`FaultyInnerRun` (``marker`` None: it fails every time)."""
    if how not in ("raise", "exit"):
        raise ValueError(f"how: got {how!r}; must be 'raise' or 'exit'")
    return {"outer_step": outer_step, "run": run, "marker": None if marker is None else str(marker), "how": how}


class FaultyInnerRun(FDSInnerRun):
    """:class:`~fds_tune.FDSInnerRun` that fails as its ``fault`` parameter says."""

    def setup(self, config, fault=None, problem=None):
        self.fault = fault
        super().setup(config, **({} if problem is None else {"problem": problem}))

    def step(self):
        f, job = self.fault, self.run.job
        due = f and job["kind"] == "inner" and (job["outer_step"] + 1, job["run"]) == (f["outer_step"], f["run"])
        marker = Path(f["marker"]) if f and f["marker"] else None
        if due and not (marker and marker.exists()):
            if marker:
                marker.write_text(f"failed once ({f['how']})")
            if f["how"] == "exit":
                os._exit(1)
            raise RuntimeError("injected failure of an inner run")
        return super().step()
