"""The ``fds-tune`` command line: a thin shell over :mod:`experiments.compare`.

    fds-tune compare --preset digits [--seeds K | --seed-list S ...] [--budget EPOCHS | --budget-ratio R] [--methods fds bohb ...] [--range lr=0,0.3]
                     [--gpus-per-trial SHARE] [--out DIR] [--resume] [--problem mypkg.module:make_problem] [--parallel K]
    fds-tune report DIR          # rebuild CSV, table, reading and plots from DIR/ray (or DIR/results.csv alone) without running anything
    fds-tune report --horizon DIR [--point STEPS=PATH ...] [--seeds S ...]
                                 # the horizon study: FDS's speedup at each DIR/h<steps>/ (and each --point) -> DIR/horizon.{csv,md,png}

``report DIR`` reads ``DIR/ray`` where it exists (and rewrites ``DIR/results.csv`` from it), else
``DIR/results.csv`` alone (a committed CSV).  ``--horizon`` changes what DIR is: the horizon
study's directory, one comparison per horizon (``h<steps>/``, each with ``results.csv`` or
``ray/``); ``--point 2000=results/reproduction/wide`` adds a comparison directory elsewhere as
one more horizon, and ``--seeds 0 1`` restricts every horizon to those seeds (default: the seeds
with runs of FDS and every method at every horizon).

Every error is one line on stderr, ``fds-tune: error: ...``, with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable

from fds_tune.results import METHODS
from fds_tune.validation import check, check_int, check_number

from experiments.compare import COMPARE_PRESETS, compare, write_horizon_report, write_report

__all__ = ["checked", "key_value", "main", "one_line"]

PROG = "fds-tune"


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (``fds-tune: error: ...``, exit 2) instead of the usage and the error."""

    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog=PROG, description="Gradient-based HPO over long horizons (FDS), compared with black-box and greedy HPO.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="run FDS and the baselines on one preset; write results, a table and plots")
    c.add_argument("--preset", required=True, choices=sorted(COMPARE_PRESETS))
    seeds = c.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds", type=checked(int, check_int, minimum=1), default=1, metavar="K",
        help="run K seeds of every method, seeds 0..K-1 (default 1: seed 0)",
    )
    seeds.add_argument(
        "--seed-list", nargs="+", type=checked(int, check_int, minimum=0), default=None, metavar="S",
        help="run exactly these seeds of every method instead, e.g. --seed-list 2 5 (distinct ints >= 0)",
    )
    c.add_argument(
        "--budget", type=checked(float, check_number, low=0, low_open=True), default=None,
        help="training epochs per black-box method (default: the preset's)",
    )
    c.add_argument(
        "--budget-ratio", type=checked(float, check_number, low=0, low_open=True), default=None, metavar="R",
        help="instead of --budget: R times FDS's total compute (FDS runs first for each seed)",
    )
    c.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD", help=f"from {', '.join(METHODS)} (default: all)")
    c.add_argument("--max-epochs", type=checked(int, check_int, minimum=1), default=None, help="epochs of one black-box trial and of an HD/greedy run")
    c.add_argument("--samples", type=checked(int, check_int, minimum=1), default=None, help="black-box trials per method")
    c.add_argument(
        "--set", action="append", default=[], type=checked(key_value), metavar="KEY=VALUE",
        help="override a key of the FDS preset for every method (VALUE is JSON, e.g. epochs=[1,2] or data_root=\"/data\")",
    )
    c.add_argument(
        "--range", action="append", default=[], type=checked(_kind_range), metavar="KIND=LOW,HIGH", dest="ranges",
        help="black-box search range of one kind, e.g. lr=0,0.3 (default: the preset's; the paper's lr=0,1 momentum=0,0.99 weight_decay=0,0.003)",
    )
    c.add_argument(
        "--problem", default=None, metavar="MODULE:FUNCTION",
        help="your own problem: a function returning a fds_tune.ProblemSpec (importable here and on every Ray node); "
        "every method trains it instead of the preset's data and network, with the preset's settings and budgets",
    )
    c.add_argument(
        "--parallel", type=checked(int, check_int, minimum=1), default=None, metavar="K",
        help="FDS's inner runs per outer step, run side by side (FDSSearcher; default: the preset's, 1); "
        "compute counts every run, and the wall clock is written beside it (fds_wall_clock.json)",
    )
    c.add_argument("--out", default=None, help="output directory (default: results/PRESET)")
    c.add_argument("--resume", action="store_true", help="continue an interrupted comparison in --out")
    c.add_argument("--address", default=None, help="an existing Ray cluster to run on (e.g. 'auto' or HOST:PORT); default: a local Ray")
    c.add_argument("--cpus", type=checked(int, check_int, minimum=1), default=None, help="CPUs for a local Ray (default: all)")
    c.add_argument(
        "--gpus-per-trial", type=checked(float, check_number, low=0, high=1, low_open=True), default=None, metavar="SHARE",
        help="on a Ray cluster with GPUs, the GPU share in (0, 1] every trial of every method requests (default 1: one trial "
        "per GPU); without GPUs trials request 1 CPU and train on CPU. Compute is device-seconds of one trial's resources",
    )
    r = sub.add_parser(
        "report", help="rebuild results.csv, the table, its reading and the plots from a comparison directory (or, with --horizon, "
        "the horizon study's speedup table and plot)",
    )
    r.add_argument(
        "out", metavar="DIR",
        help="a comparison directory: its ray/ where present (results.csv is rewritten from it), else its results.csv alone; "
        "with --horizon, the horizon study's directory (h<steps>/ subdirectories, one comparison each)",
    )
    r.add_argument(
        "--horizon", action="store_true",
        help="DIR is a horizon study: write DIR/horizon.csv, horizon.md and horizon.png (FDS's speedup at each horizon)",
    )
    r.add_argument(
        "--point", action="append", default=[], type=checked(_steps_path), metavar="STEPS=PATH",
        help="with --horizon: one more horizon, a comparison directory with results.csv or ray/, e.g. 2000=results/reproduction/wide",
    )
    r.add_argument(
        "--seeds", nargs="+", type=checked(int, check_int, minimum=0), default=None, metavar="S",
        help="with --horizon: the seeds to use at every horizon (default: those with runs of FDS and every method at every horizon)",
    )
    return p


ARG = "value"  # the key the checks below name; argparse names the option itself ("argument --seeds: got 0; ...")


def checked(parse: Callable[[str], object], checker: Callable | None = None, **rule) -> Callable[[str], object]:
    """An argparse ``type``: ``parse`` the text, then ``checker(ARG, value, **rule)`` (a :mod:`fds_tune.validation`
    helper; text that does not parse goes to it as it is, so that it says what was expected).  The
    ``ValueError`` becomes argparse's error, in the one message form less the key."""

    def convert(text: str):
        try:
            if checker is None:
                return parse(text)
            try:
                value = parse(text)
            except ValueError:
                value = text
            return checker(ARG, value, **rule)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix(f"{ARG}: ")) from None

    return convert


def key_value(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> ``(KEY, VALUE)``: VALUE parsed as JSON, else kept as the bare string (e.g. a path)."""
    key, sep, raw = text.partition("=")
    check(ARG, text, bool(sep and key), "KEY=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare string, e.g. data_root=/data
    return key, value


def _kind_range(text: str) -> tuple[str, tuple[float, float]]:
    kind, sep, raw = text.partition("=")
    bounds = raw.split(",")
    try:
        low, high = float(bounds[0]), float(bounds[-1])
    except ValueError:
        low = high = None
    check(ARG, text, bool(sep and kind) and len(bounds) == 2 and low is not None, "KIND=LOW,HIGH, e.g. lr=0,0.3")
    return kind, (low, high)


def _steps_path(text: str) -> tuple[int, str]:
    steps, sep, path = text.partition("=")
    ok = bool(sep and path) and steps.isdigit() and int(steps) >= 1
    check(ARG, text, ok, "STEPS=PATH with STEPS an int >= 1 (inner steps), e.g. 2000=results/reproduction/wide")
    return int(steps), path


def one_line(err: BaseException) -> str:
    """An error's message on one line (for ``PROG: error: ...``)."""
    return " ".join(str(err).split())


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "report":
        _check_report_options(parser, args)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        if args.command == "compare":
            compare(
                args.preset,
                out=args.out or f"results/{args.preset}",
                seeds=args.seeds if args.seed_list is None else args.seed_list,
                methods=args.methods,
                budget_epochs=args.budget,
                budget_ratio=args.budget_ratio,
                max_epochs=args.max_epochs,
                num_samples=args.samples,
                overrides=dict(args.set),
                ranges=dict(args.ranges),
                resume=args.resume,
                address=args.address,
                num_cpus=args.cpus,
                gpus_per_trial=args.gpus_per_trial,
                problem=args.problem,
                parallel=args.parallel,
            )
        elif args.horizon:
            write_horizon_report(args.out, points=dict(args.point), seeds=args.seeds)
        else:
            write_report(args.out)
    except (ValueError, FileNotFoundError) as err:  # bad input or missing files (CheckpointError is a ValueError)
        print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


def _check_report_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--point and --seeds only with --horizon; each horizon and seed once."""
    if not args.horizon:
        for option, given in (("--point", args.point), ("--seeds", args.seeds)):
            if given:
                parser.error(f"argument {option}: only with --horizon")
    steps = [s for s, _ in args.point]
    if len(set(steps)) < len(steps):
        parser.error(f"argument --point: got horizons {steps}; must be distinct")
    if args.seeds is not None and len(set(args.seeds)) < len(args.seeds):
        parser.error(f"argument --seeds: got {args.seeds}; must be distinct")


if __name__ == "__main__":
    sys.exit(main())
