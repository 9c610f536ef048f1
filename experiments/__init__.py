"""The comparison and the experiments: the top layer, on `fds_tune`, `baselines` and `analysis`.

* :mod:`experiments.compare`: FDS against every baseline under one budget
  (``experiments.compare.compare``; ``write_report``, ``COMPARE_PRESETS`` here too);
* :mod:`experiments.cli`: the ``fds-tune`` command line over it;
* :mod:`experiments.handtuned`: a hand-tuned SGD reference (``hand_tuned``);
* scripts, each also run as ``python experiments/<name>.py``: ``bench_engine``,
  ``bench_epoch``, ``fds_vs_hand_tuned``, ``greedy_vs_fds``.

Names are imported on first use: the comparison imports Ray, every searcher and
matplotlib, which a script that only needs :func:`hand_tuned` does not.
"""
import importlib

_EXPORTS = {
    "COMPARE_PRESETS": "compare",
    "CompareSpec": "compare",
    "Progress": "compare",
    "write_report": "compare",
    "main": "cli",
    "cosine_schedule": "handtuned",
    "hand_tuned": "handtuned",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
