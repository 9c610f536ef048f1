"""``FDSTrainable``: the FDS learner as a Ray Tune ``Trainable``.

    tune.run(FDSTrainable, config={"preset": "digits"}, stop={"training_iteration": 3})

Each ``step()`` is one outer step.  The step that finishes the run (converged
or outer-step budget spent) also retrains the learned schedule from scratch and
reports ``retrain_test_acc`` (unless ``retrain_epochs`` is 0).  Checkpoints are JSON only.
"""
from __future__ import annotations

from typing import Any

from ray import tune

from .checkpoint import load_json, save_json
from .config import fds_config
from .learner import FDSLearner
from .problem import cached_problem

__all__ = ["FDSTrainable"]

FORMAT_VERSION = 1


class FDSTrainable(tune.Trainable):
    """One FDS run per trial; one outer step per ``step()``."""

    def setup(self, config: dict[str, Any]) -> None:
        self._build(config)

    def _build(self, config: dict[str, Any]) -> None:
        self.fds = fds_config(config)
        self.learner = FDSLearner(self.fds, cached_problem(self.fds.problem))

    def step(self) -> dict[str, Any]:
        result = {"method": "fds", **self.learner.step()}
        if self.learner.done:
            result.update(self.learner.retrain())
            result["done"] = True
        result["retrained"] = "retrain_test_acc" in result
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        save_json(checkpoint_dir, "fds", FORMAT_VERSION, self.fds.to_dict(), self.learner.state_dict())
        return None

    def load_checkpoint(self, checkpoint: str | dict) -> None:
        self.learner.load_state_dict(load_json(checkpoint, "fds", FORMAT_VERSION, self.fds.to_dict()))

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self._build(new_config)
        return True
