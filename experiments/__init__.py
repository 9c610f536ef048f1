"""The comparison and the experiments: the top layer, on `fds_tune`, `baselines` and `analysis`.

* :mod:`experiments.compare`: FDS against every baseline under one budget
  (``experiments.compare.compare``; ``write_report``, ``COMPARE_PRESETS`` here too);
* :mod:`experiments.cli`: the ``fds-tune`` command line over it;
* :mod:`experiments.handtuned`: a hand-tuned SGD reference (``hand_tuned``);
* scripts, each also run as ``python experiments/<name>.py``: ``bench_engine``,
  ``bench_epoch``, ``fds_vs_hand_tuned``, ``greedy_vs_fds``.

Import what you need from its module (``from experiments.compare import compare``): this
package imports nothing itself, so a script that only needs :func:`hand_tuned` does not
load Ray, every searcher and matplotlib.
"""
