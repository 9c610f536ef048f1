"""Benchmark: reverse mode's sweep with each step's graph built ahead on a second thread, against
the same sweep built in turn on all of torch's threads, for networks and batches of several sizes.

Its figures set :func:`fds_tune.reverse.builds_ahead`, the rule ``hypergradients(build_ahead=None)``
follows (convolutional networks whose step saves at most
:data:`~fds_tune.reverse.BUILD_AHEAD_MAX_BYTES`): each line prints the bytes one step's forward
pass saves for its backward (:func:`fds_tune.reverse.saved_bytes`) beside the measured ratio and
what the rule chooses.  Random input of each network's shape, schedule 7+1+1, every step
stored; the two sweeps alternate (in turn, ahead, in turn, ...) and each ratio is the ahead run
over the mean of the two in-turn runs beside it.

    python experiments/bench_build_ahead.py                    # the default cases
    python experiments/bench_build_ahead.py --case lenet 512 40  # one case: network, batch, steps
"""
from __future__ import annotations

import argparse
import functools

import torch

from experiments.bench_engine import bracketed
from fds_tune import Schedule, hypergradients
from fds_tune.functional_model import FunctionalModel
from fds_tune.models import build_model
from fds_tune.reverse import BUILD_AHEAD_MAX_BYTES, builds_ahead, saved_bytes

SHAPES = {"mlp": (1, 28, 28), "lenet": (1, 28, 28), "wrn-16-1": (3, 32, 32)}
CASES = [("mlp", 128, 200), ("mlp", 512, 100), ("lenet", 32, 200), ("lenet", 64, 150), ("lenet", 128, 100), ("lenet", 256, 60), ("lenet", 384, 50), ("lenet", 512, 40), ("wrn-16-1", 16, 16), ("wrn-16-1", 32, 10), ("wrn-16-1", 128, 6)]
SCHEDULE = Schedule(lr=[0.05, 0.045, 0.04, 0.03, 0.02, 0.01, 0.005], momentum=[0.9], weight_decay=[5e-4])


def case(net: str, batch: int, steps: int, rounds: int) -> None:
    shape = SHAPES[net]
    model = build_model(net, shape, 10)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch, *shape, generator=gen), torch.randint(0, 10, (batch,), generator=gen)) for _ in range(steps)]
    fm = FunctionalModel(model, torch.nn.functional.cross_entropy)
    theta, buffers = fm.flatten(dict(model.named_parameters())), dict(model.named_buffers())
    with fm.batch_statistics():
        saved, ahead = saved_bytes(fm, theta, buffers, *batches[0]), builds_ahead(fm, theta, buffers, *batches[0])

    def run(built_ahead):
        return hypergradients(model, SCHEDULE, batches, batches[:1], mode="reverse", checkpoint_every=1, build_ahead=built_ahead)

    run(False), run(True)  # warm-up: lazy imports and allocations
    units, t = bracketed((functools.partial(run, False), steps), {"ahead": (functools.partial(run, True), steps)}, torch.device("cpu"), rounds)
    _, ratio, by_round = t["ahead"]
    rule = "ahead" if ahead else "in turn"
    print(f"{net:>9} batch {batch:4d}: saves {saved / 2**20:6.1f} MiB/step; in turn {1e3 * sum(units) / len(units):7.1f} ms/step; "
          f"ahead / in turn = {ratio:.2f} (rounds {', '.join(f'{r:.2f}' for r in by_round)}); the rule builds {rule}", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", nargs=3, metavar=("NET", "BATCH", "STEPS"), help="one case instead of the defaults")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    cases = [(args.case[0], int(args.case[1]), int(args.case[2]))] if args.case else CASES
    print(f"## built ahead / built in turn, reverse sweep, 7+1+1, every step stored; {torch.get_num_threads()} threads; "
          f"rule: ahead for a convolutional network whose step saves <= {BUILD_AHEAD_MAX_BYTES / 2**20:.0f} MiB")
    for net, batch, steps in cases:
        case(net, batch, steps, args.rounds)


if __name__ == "__main__":
    main()
