"""The reproduction on CPU: the paper's regime (``fashion_mnist_paper``), 3 seeds, every method.

Three parts, each a comparison directory under ``--out`` (each resumes with ``--resume``):

* ``wide/``: every method, seeds 0-2, the paper's wide ranges (lr in [0, 1], momentum in
  [0, 0.99], weight decay in [0, 0.003]) for every method, FDS bounded to the same ranges;
* ``narrow/``: the same seeds in the narrow ranges (lr in [0, 0.3], momentum in [0, 0.9]), the
  black-box methods' best case: FDS, random search, HyperBand and BOHB, the paper's baselines
  (:data:`NARROW_METHODS`; every method would double the run's time on 2 cores); the
  learning-rate-free rows do not depend on a range, so they are the wide part's runs (copied,
  not run again);
* ``horizon/h<steps>/``: FDS, BOHB, HyperBand and random search at shorter and longer horizons
  (seeds 0-1, wide ranges); the 2,000-step point is the wide part's seeds 0 and 1.

Then ``horizon/horizon.png``, ``horizon.md`` and ``horizon.csv`` (FDS's speedup against each method
as the horizon grows, :func:`analysis.horizon_frame`).  ``fds-tune report DIR`` rebuilds each part's
table and plots from its ``results.csv`` alone; ``fds-tune report --horizon DIR/horizon --point
2000=DIR/wide --seeds 0 1`` the horizon report.

    python experiments/reproduce.py --out results/reproduction [--resume] [--parts wide narrow horizon]
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from fds_tune.results import LR_FREE_METHODS, METHODS

from experiments.compare import compare, write_horizon_report

PRESET = "fashion_mnist_paper"
SEEDS = (0, 1, 2)
NARROW = {"lr": (0.0, 0.3), "momentum": (0.0, 0.9)}
STEPS_PER_EPOCH = 400  # the preset's 25,600 training images in batches of 64
EPOCHS = 5  # the preset's horizon: 2,000 steps
HORIZON_EPOCHS = (2, 15)  # 800 and 6,000 steps; the 2,000-step point is the wide part
HORIZON_METHODS = ("fds", "bohb", "hyperband", "random")
HORIZON_SEEDS = (0, 1)
# The narrow table runs FDS against random search, HyperBand and BOHB (the paper's black-box
# baselines): on 2 cores every method twice over would take ~3 hours.
NARROW_METHODS = ("fds", "random", "hyperband", "bohb")
PARTS = ("wide", "horizon", "narrow")


def horizon_overrides(epochs: int) -> dict:
    """The preset at a horizon of ``epochs`` epochs: every outer step after the first and the final
    retraining train that many epochs, and so does every black-box trial."""
    return {"epochs": [1] + [epochs] * 5, "retrain_epochs": epochs}


def share_runs(src: Path, dst: Path, methods, seeds) -> None:
    """Copy the finished runs of ``methods`` (which do not depend on the range) from ``src/ray`` into ``dst/ray``."""
    (dst / "ray").mkdir(parents=True, exist_ok=True)
    for m in methods:
        for s in seeds:
            run, copy = src / "ray" / f"{m}-seed{s}", dst / "ray" / f"{m}-seed{s}"
            if (run / ".fds_tune_done").exists() and not copy.exists():
                shutil.copytree(run, copy)


def main(out: str, parts=PARTS, resume: bool = False, horizons=HORIZON_EPOCHS, narrow_methods=NARROW_METHODS) -> None:
    out = Path(out)
    started = time.time()

    def log(text: str) -> None:
        print(f"[{time.time() - started:6.0f}s] {text}" if text.startswith("==") else text, flush=True)

    if "wide" in parts:
        compare(PRESET, out=out / "wide", seeds=list(SEEDS), resume=resume, log=log)
    if "horizon" in parts:
        for epochs in horizons:
            compare(
                PRESET, out=out / "horizon" / f"h{epochs * STEPS_PER_EPOCH}", seeds=list(HORIZON_SEEDS), methods=list(HORIZON_METHODS),
                max_epochs=epochs, overrides=horizon_overrides(epochs), resume=resume, log=log,
            )
        write_horizon_report(out / "horizon", {EPOCHS * STEPS_PER_EPOCH: out / "wide"}, seeds=list(HORIZON_SEEDS), log=log)
    if "narrow" in parts:
        share_runs(out / "wide", out / "narrow", LR_FREE_METHODS, SEEDS)
        methods = list(narrow_methods) + list(LR_FREE_METHODS)  # the lr-free runs are the wide part's, kept
        compare(PRESET, out=out / "narrow", seeds=list(SEEDS), methods=methods, ranges=NARROW, resume=True, log=log)
    log(f"== done in {time.time() - started:.0f}s")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/reproduction")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--horizons", nargs="+", type=int, default=list(HORIZON_EPOCHS), help="epochs of the horizon study's runs")
    p.add_argument("--narrow-methods", nargs="+", choices=[m for m in METHODS if m not in LR_FREE_METHODS], default=list(NARROW_METHODS))
    p.add_argument("--resume", action="store_true", help="continue an interrupted reproduction in --out")
    a = p.parse_args()
    main(a.out, a.parts, a.resume, tuple(a.horizons), tuple(a.narrow_methods))
