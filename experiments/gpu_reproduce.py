"""The paper's CIFAR-10 / WRN-16-1 comparison (``cifar10_paper``) on a GPU machine, in one command.

    python experiments/gpu_reproduce.py --data-root DIR --out results/cifar10_paper [--seeds 3] [--resume]
        [--estimate-only] [--set KEY=VALUE ...] [--max-epochs N] [--budget EPOCHS] [--methods fds bohb ...]
        [--gpus-per-trial SHARE]

1. Measures, on the device the trials will use (CUDA when visible, else CPU), one plain step, one
   FDS step and one greedy step on CIFAR-10 batches (:func:`experiments.estimate.measure_step_costs`).
2. Prints the expected device-hours per method and the wall clock (:func:`experiments.estimate.expected_hours`)
   and writes them to ``OUT/estimate.json`` and ``OUT/estimate.md``; ``--estimate-only`` stops here
   (without ``--data-root`` it times random CIFAR-shaped input instead).
3. Runs the comparison (:func:`experiments.compare.compare`) and writes its report; ``--resume``
   continues a killed run (and reuses the estimate).  ``fds-tune report OUT`` rebuilds the report.

DIR holds CIFAR-10 in torchvision's layout: ``DIR/cifar-10-batches-py/`` with ``data_batch_1`` ..
``data_batch_5``, ``test_batch`` and ``batches.meta`` (the python version of the dataset).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import torch

from experiments.cli import checked, key_value, one_line
from experiments.compare import COMPARE_PRESETS, compare, resolved_config
from experiments.estimate import estimate_table, expected_hours, measure_step_costs, random_problem
from fds_tune import Problem
from fds_tune.data import load_dataset
from fds_tune.results import METHODS
from fds_tune.validation import check, check_int, check_number, fail

PRESET = "cifar10_paper"
PROG = "gpu_reproduce"
CIFAR10_TRAIN_IMAGES = 50_000  # the steps per epoch of an estimate without the data
LAYOUT = "DIR/cifar-10-batches-py/ holding data_batch_1 .. data_batch_5, test_batch and batches.meta (torchvision's CIFAR-10 layout)"
SET_BY_FLAGS = {"data_root": "--data-root", "seed": "--seeds", "preset": "the script (cifar10_paper)", "bounds": "fds-tune compare --range"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=None, metavar="DIR", help=f"where CIFAR-10 is: {LAYOUT}")
    p.add_argument("--out", default=f"results/{PRESET}", help="output directory (default: results/cifar10_paper)")
    p.add_argument("--seeds", type=checked(int, check_int, minimum=1), default=3, metavar="K", help="seeds 0..K-1 of every method (default 3)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out (the estimate is kept)")
    p.add_argument("--estimate-only", action="store_true", help="measure and estimate, then stop")
    p.add_argument("--set", action="append", default=[], type=checked(key_value), metavar="KEY=VALUE", help="override a key of the preset (VALUE is JSON)")
    p.add_argument("--max-epochs", type=checked(int, check_int, minimum=1), default=None, help="epochs of one black-box trial (default: the preset's 50)")
    p.add_argument("--budget", type=checked(float, check_number, low=0, low_open=True), default=None, help="black-box epochs per method (default 1600)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD", help="default: all")
    p.add_argument(
        "--gpus-per-trial", type=checked(float, check_number, low=0, high=1, low_open=True), default=None, metavar="SHARE",
        help="GPU share per trial, e.g. 0.25 for 4 trials at once on a GPU (default 1: one at a time)",
    )
    p.add_argument("--steps", type=checked(int, check_int, minimum=1), default=28, help="steps timed per round (default 28: 7 lr chunks x 4)")
    p.add_argument("--rounds", type=checked(int, check_int, minimum=1), default=3, help="timed rounds after a warm-up round (default 3)")
    return p


def checked_data_root(root: str, dataset: str) -> str:
    """``root`` as an absolute path, once ``dataset`` loads from it without a download (one-line errors otherwise)."""
    path = Path(root).expanduser().absolute()
    check("--data-root", root, path.is_dir(), f"an existing directory: {LAYOUT}")
    try:
        load_dataset(dataset, path, download=False)
    except FileNotFoundError:
        fail("--data-root", root, f"a directory holding {dataset} without a download: {LAYOUT}")
    return str(path)


def estimate(args, overrides: dict, spec, out: Path) -> dict:
    """Measure the step costs on this machine's device and estimate the hours; write both to OUT/estimate.json and .md."""
    config = resolved_config(PRESET, spec, 0)
    if args.data_root is not None:
        problem = Problem(config.problem)
    else:
        check("--data-root", None, config.dataset == "cifar10", f"given: without the data only cifar10's size is known (dataset {config.dataset!r})")
        problem = random_problem(config, math.ceil((args.steps + 1) * config.batch_size / (1 - config.val_fraction)) + 2)
    n_train = problem.n_train if args.data_root is not None else min(CIFAR10_TRAIN_IMAGES, config.train_size or CIFAR10_TRAIN_IMAGES)
    print(f"== measuring {args.steps} steps x {args.rounds} rounds on {problem.device} "
          f"({'CIFAR-10 from ' + args.data_root if args.data_root else 'random CIFAR-shaped input'})", flush=True)
    measured = measure_step_costs(config, problem, args.steps, args.rounds)
    del problem
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the trials need the GPU's memory, not this process
    concurrent = 1 if args.gpus_per_trial is None else max(1, math.floor(1 / args.gpus_per_trial + 1e-9))
    result = {
        "preset": PRESET, "overrides": overrides, **{k: v for k, v in measured.items() if k != "costs"},
        **expected_hours(config, spec, measured["costs"], n_train, seeds=args.seeds, concurrent=concurrent, methods=args.methods),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "estimate.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "estimate.md").write_text(describe(result) + "\n")
    return result


def describe(e: dict) -> str:
    """What was measured, then the estimate's table."""
    c = e["step_costs"]
    return (
        f"Measured on {e['device']} ({e['steps']} steps x {e['rounds']} rounds): plain step {1e3 * c['plain_s']:.1f} ms, "
        f"FDS step {1e3 * c['fds_s']:.1f} ms ({e['fds_mode']} mode, {c['fds_s'] / c['plain_s']:.1f}x plain), "
        f"greedy step {1e3 * c['greedy_s']:.1f} ms"
        + (f"; peak CUDA memory {e['peak_cuda_mb']:.0f} MB" if e.get("peak_cuda_mb") else "")
        + f".\n\n{estimate_table(e)}"
    )


def preset_spec(overrides: dict, args):
    """The preset's comparison spec with ``overrides`` (``--set``, the data root) and ``--max-epochs`` / ``--budget``."""
    base = COMPARE_PRESETS[PRESET]
    budget = {} if args.budget is None else {"budget_epochs": args.budget, "budget_ratio": None}
    return dataclasses.replace(
        base, fds_overrides={**base.fds_overrides, **overrides}, max_epochs=args.max_epochs or base.max_epochs, **budget
    )


def run(args) -> None:
    overrides = dict(args.set)
    for key, flag in SET_BY_FLAGS.items():
        check(f"--set {key}", overrides.get(key), key not in overrides, f"absent (set through {flag})")
    dataset = resolved_config(PRESET, preset_spec(overrides, args), 0).dataset  # checks every --set before any work
    if args.data_root is not None:
        overrides["data_root"] = checked_data_root(args.data_root, dataset)
    elif not args.estimate_only:
        fail("--data-root", None, f"given (only --estimate-only runs without the data): {LAYOUT}")
    check("--gpus-per-trial", args.gpus_per_trial, args.gpus_per_trial is None or torch.cuda.is_available(), "absent on a machine without a GPU")
    out = Path(args.out)
    ray_dir = out / "ray"
    if not args.estimate_only and not args.resume and ray_dir.is_dir() and any(ray_dir.iterdir()):
        fail("--out", str(out), "a directory without results (pass --resume to continue them, or choose another --out)")
    spec = preset_spec(overrides, args)
    kept = out / "estimate.json"
    result = json.loads(kept.read_text()) if args.resume and kept.is_file() else estimate(args, overrides, spec, out)
    print(describe(result), flush=True)
    if args.estimate_only:
        return
    compare(
        PRESET, out=out, seeds=args.seeds, methods=args.methods, budget_epochs=args.budget, max_epochs=args.max_epochs,
        overrides=overrides, resume=args.resume, gpus_per_trial=args.gpus_per_trial,
    )
    print(f"\nRebuild the report from the results on disk: fds-tune report {out}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
