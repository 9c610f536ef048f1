"""The ``fds-tune`` command line: a thin shell over :mod:`fds_tune.compare`.

    fds-tune compare --preset digits [--seeds K] [--budget EPOCHS] [--methods fds bohb ...] [--range lr=0,0.3] [--out DIR] [--resume]
    fds-tune report DIR          # rebuild CSV, table and plots from DIR/ray without running anything
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from .compare import COMPARE_PRESETS, METHODS

    p = argparse.ArgumentParser(prog="fds-tune", description="Gradient-based HPO over long horizons (FDS), compared with black-box and greedy HPO.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="run FDS and the baselines on one preset; write results, a table and plots")
    c.add_argument("--preset", required=True, choices=sorted(COMPARE_PRESETS))
    c.add_argument("--seeds", type=_positive_int, default=1, help="seeds per method (default 1)")
    c.add_argument("--budget", type=_positive_float, default=None, help="training epochs per black-box method (default: the preset's)")
    c.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD", help=f"from {', '.join(METHODS)} (default: all)")
    c.add_argument("--max-epochs", type=_positive_int, default=None, help="epochs of one black-box trial and of an HD/greedy run")
    c.add_argument("--samples", type=_positive_int, default=None, help="black-box trials per method")
    c.add_argument(
        "--set", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
        help="override a key of the FDS preset for every method (VALUE is JSON, e.g. epochs=[1,2] or data_root=\"/data\")",
    )
    c.add_argument(
        "--range", action="append", default=[], type=_kind_range, metavar="KIND=LOW,HIGH", dest="ranges",
        help="black-box search range of one kind, e.g. lr=0,0.3 (default: the preset's; the paper's lr=0,1 momentum=0,0.99 weight_decay=0,0.003)",
    )
    c.add_argument("--out", default=None, help="output directory (default: results/PRESET)")
    c.add_argument("--resume", action="store_true", help="continue an interrupted comparison in --out")
    c.add_argument("--address", default=None, help="an existing Ray cluster to run on (e.g. 'auto' or HOST:PORT); default: a local Ray")
    c.add_argument("--cpus", type=_positive_int, default=None, help="CPUs for a local Ray (default: all)")
    r = sub.add_parser("report", help="rebuild results.csv, the table and the plots from a comparison directory")
    r.add_argument("out")
    return p


def _key_value(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"got {text!r}; must be KEY=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare string, e.g. data_root=/data
    return key, value


def _kind_range(text: str) -> tuple[str, tuple[float, float]]:
    kind, sep, raw = text.partition("=")
    try:
        low, high = (float(x) for x in raw.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; must be KIND=LOW,HIGH, e.g. lr=0,0.3") from None
    if not sep or not kind:
        raise argparse.ArgumentTypeError(f"got {text!r}; must be KIND=LOW,HIGH, e.g. lr=0,0.3")
    return kind, (low, high)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; must be an int >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"got {value}; must be an int >= 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; must be a number > 0") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"got {text!r}; must be a finite number > 0")
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    from .compare import compare, write_report

    try:
        if args.command == "compare":
            compare(
                args.preset,
                out=args.out or f"results/{args.preset}",
                seeds=args.seeds,
                methods=args.methods,
                budget_epochs=args.budget,
                max_epochs=args.max_epochs,
                num_samples=args.samples,
                overrides=dict(args.set),
                ranges=dict(args.ranges),
                resume=args.resume,
                address=args.address,
                num_cpus=args.cpus,
            )
        else:
            write_report(args.out)
    except ValueError as err:
        print(f"fds-tune: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
