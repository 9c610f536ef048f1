"""One Ray Tune shell for every run: :class:`RunTrainable`, and FDS's own, :class:`FDSTrainable`.

    tune.run(FDSTrainable, config={"preset": "digits"}, stop={"training_iteration": 3})

A :class:`RunTrainable` holds one :class:`~fds_tune.run.Run` (``RUN(config)``) and
only wires Ray's ``Trainable`` contract to it: ``step`` is the run's ``step``,
checkpoints are the run's JSON-safe ``state_dict`` in one atomic JSON file
(kind, format version and config checked on load).  For FDS each ``step()`` is
one outer step; the step that finishes the run also retrains the learned
schedule from scratch and reports ``retrain_test_acc`` (unless ``retrain_epochs`` is 0).
"""
from __future__ import annotations

from typing import Any, ClassVar

from ray import tune

from .checkpoint import FORMAT_VERSION, load_json, save_json
from .learner import FDSRun

__all__ = ["RunTrainable", "FDSTrainable"]


class RunTrainable(tune.Trainable):
    """Ray Tune shell around a run class ``RUN``; subclasses only name it."""

    RUN: ClassVar[type]

    def setup(self, config: dict[str, Any]) -> None:
        self.run = self.RUN(config)

    def step(self) -> dict[str, Any]:
        return self.run.step()

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        save_json(checkpoint_dir, self.run.KIND, FORMAT_VERSION, self.run.config_dict(), self.run.state_dict())

    def load_checkpoint(self, checkpoint: str) -> None:
        self.run.load_state_dict(load_json(checkpoint, self.run.KIND, FORMAT_VERSION, self.run.config_dict()))

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.setup(new_config)  # the cached problem is reused unless its keys changed
        return True


class FDSTrainable(RunTrainable):
    """One FDS run per trial (:class:`~fds_tune.learner.FDSRun`); one outer step per ``step()``."""

    RUN = FDSRun
