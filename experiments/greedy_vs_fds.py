"""Final test accuracy of HD and greedy forward mode beside FDS, all from zero initialisation.

For each FDS preset: FDS runs its outer steps and retrains its learned schedule from
scratch (``retrain_epochs``); HD and greedy forward mode (one-epoch windows) each train
one run of ``retrain_epochs`` epochs, adapting the hyperparameters online, with their
default settings (``--hd-scales`` searches HD's hyper-learning rates and reports the best
run by validation accuracy as ``hd``).  All three start from the preset's initial values (0) on the same
problem.  Prints a table and writes ``<out>/greedy_vs_fds_<preset>.json``.

    python experiments/greedy_vs_fds.py                          # digits (about a minute)
    python experiments/greedy_vs_fds.py --presets fashion_mnist  # CPU benchmark (tens of minutes)
    python experiments/greedy_vs_fds.py --presets fashion_mnist --methods hd --hd-scales 1e-4 3e-4 1e-3 2e-3 3e-3
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from baselines.greedy import GreedyRun, HDRun
from fds_tune import FDSRun
from fds_tune.run import run_to_end

KEPT = ("val_acc", "epochs_total", "compute_s", "schedule", "trajectory", "retrain_schedule", "retrain_attempts")


def summary(run) -> dict:
    """Any run (the one protocol), run to its end; the final test accuracy is the retrained one where FDS retrains."""
    result = run_to_end(run)[-1]
    retrained = "retrain_test_acc" in result
    return {
        "test_acc": result["retrain_test_acc" if retrained else "test_acc"],
        "diverged": result["retrain_diverged" if retrained else "diverged"],
        **{k: result[k] for k in KEPT if k in result},
    }


def run_hd(preset: str, scales: list[float] | None) -> dict[str, dict]:
    """HD with its default rates, or with each ``scale * (1, 10, 0.1)``; then ``hd`` is the best by val_acc."""
    if not scales:
        return {"hd": summary(HDRun({"preset": preset}))}
    rates = {f"hd@{s:g}": {"lr": s, "momentum": 10 * s, "weight_decay": s / 10} for s in scales}
    runs = {name: {**summary(HDRun({"preset": preset, "hyper_lr": r})), "hyper_lr": r} for name, r in rates.items()}
    best = max(runs, key=lambda name: runs[name]["val_acc"])
    return {**runs, "hd": {**runs[best], "chosen": best}}


RUNNERS = {
    "fds": lambda preset, args: {"fds": summary(FDSRun({"preset": preset}))},
    "hd": lambda preset, args: run_hd(preset, args.hd_scales),
    "greedy": lambda preset, args: {"greedy": summary(GreedyRun({"preset": preset}))},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["digits"], help="FDS presets (digits, fashion_mnist)")
    parser.add_argument("--methods", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    parser.add_argument("--out", default="results", help="directory for the JSON results (merged into existing ones)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--hd-scales", nargs="+", type=float, help="search HD's rates (scale x (1, 10, 0.1)) by val_acc")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for preset in args.presets:
        path = Path(args.out) / f"greedy_vs_fds_{preset}.json"
        rows = json.loads(path.read_text()) if path.exists() else {}
        for method in args.methods:
            rows.update(RUNNERS[method](preset, args))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rows, indent=1))  # after every method: a long run keeps what it finished
        print(f"\n{preset}: final test accuracy from zero initialisation")
        print(f"{'method':8} {'test_acc':>8} {'epochs':>7} {'compute_s':>9}  final values")
        for method, r in rows.items():
            final = {k: [round(v, 4) for v in vs] for k, vs in r["schedule"].items()}
            print(f"{method:8} {r['test_acc']:8.4f} {r['epochs_total']:7.1f} {r['compute_s']:9.1f}  {final}")


if __name__ == "__main__":
    main()
