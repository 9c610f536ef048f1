"""One Ray Tune shell for every run: :class:`RunTrainable`, and FDS's own, :class:`FDSTrainable`.

    tune.run(FDSTrainable, config={"preset": "digits"}, stop={"training_iteration": 3})
    tune.run(tune.with_parameters(FDSTrainable, problem=my_spec), config={...})   # a user's ProblemSpec
    tune.run(FDSTrainable, config={"user_problem": "mine", ...})                   # fds_tune.register_problem("mine", ...)

A :class:`RunTrainable` holds one :class:`~fds_tune.run.Run` (``RUN(config)``) and
only wires Ray's ``Trainable`` contract to it: ``step`` is the run's ``step``,
checkpoints are the run's JSON-safe ``state_dict`` in one atomic JSON file
(kind, format version and config checked on load).  For FDS each ``step()`` is
one outer step; the step that finishes the run also retrains the learned
schedule from scratch and reports ``retrain_test_acc`` (unless ``retrain_epochs`` is 0).

Devices.  A trial trains on the resources Tune gave it: with ``device="auto"``
(the default) a trial given a GPU trains on it, and a trial given none trains on
CPU (:func:`cpu_unless_given_a_gpu`), so that black-box trials never share a GPU
they did not ask for.  Every result under Tune carries the trial's request,
``cpus`` and ``gpus`` (its GPU share): ``compute_s`` is seconds of those resources.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import ray
import torch
from ray import tune

from .checkpoint import FORMAT_VERSION, load_json, save_json
from .learner import FDSRun

__all__ = ["RunTrainable", "FDSTrainable", "cpu_unless_given_a_gpu"]


def cpu_unless_given_a_gpu(config: Mapping[str, Any], gpu_ids: Sequence | None) -> bool:
    """Keep a Ray trial given no GPU off the GPUs; True when its run must be told ``device="cpu"``.

    ``gpu_ids``: the GPUs Ray assigned this process (``ray.get_gpu_ids()``), None outside a Ray
    actor.  Ray sets ``CUDA_VISIBLE_DEVICES`` for a trial given a GPU, but leaves it alone for one
    given none, where ``device="auto"`` would then pick a GPU that other trials share.  So, in an
    actor given no GPU and asked for ``"auto"``, this hides the GPUs from the process
    (``CUDA_VISIBLE_DEVICES=""``), which holds as long as CUDA was not yet initialised in it.  If it
    was, GPUs stay visible, and only ``device="cpu"`` keeps the run off them: it returns True.
    Anything else (outside Ray, a GPU assigned, an explicit device) is left as it is.
    """
    if gpu_ids is None or len(gpu_ids) > 0 or config.get("device", "auto") != "auto":
        return False
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return torch.cuda.is_available()


class RunTrainable(tune.Trainable):
    """Ray Tune shell around a run class ``RUN``; subclasses only name it."""

    RUN: ClassVar[type]

    def setup(self, config: dict[str, Any], problem: Any = None) -> None:
        """``problem``: a :class:`~fds_tune.spec.ProblemSpec` (or Problem), from ``tune.with_parameters(..., problem=...)``;
        None: the problem the config names (``user_problem``, or the built-in ``dataset`` and ``model``)."""
        to_cpu = cpu_unless_given_a_gpu(config, ray.get_gpu_ids() if self.is_actor() else None)
        self.run = self.RUN({**config, "device": "cpu"} if to_cpu else config, **({} if problem is None else {"problem": problem}))
        # A checkpoint belongs to the config the trial asked for, whichever device this process could use.
        self.checkpoint_config = {**self.run.config_dict(), "device": "auto"} if to_cpu else self.run.config_dict()
        requested = self.trial_resources.required_resources if self.trial_resources is not None else None
        self.resources = {} if requested is None else {"cpus": requested.get("CPU", 0.0), "gpus": requested.get("GPU", 0.0)}

    def step(self) -> dict[str, Any]:
        return {**self.run.step(), **self.resources}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        save_json(checkpoint_dir, self.run.KIND, FORMAT_VERSION, self.checkpoint_config, self.run.state_dict())

    def load_checkpoint(self, checkpoint: str) -> None:
        self.run.load_state_dict(load_json(checkpoint, self.run.KIND, FORMAT_VERSION, self.checkpoint_config))

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.setup(new_config)  # the cached problem is reused unless its keys changed
        return True


class FDSTrainable(RunTrainable):
    """One FDS run per trial (:class:`~fds_tune.learner.FDSRun`); one outer step per ``step()``."""

    RUN = FDSRun
