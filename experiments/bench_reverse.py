"""Benchmark: reverse mode against forward mode and plain training (time per step, peak memory).

One interleaved run, every engine run timed between two plain runs (so that a change of the
machine's speed cancels in each ratio) of
  plain    a plain nn.Module + torch.optim.SGD training run (the unit of cost),
  reverse  fds-tune reverse mode (default checkpointing),
  forward  fds-tune forward mode (vmapped jvp),
for LeNet on Fashion-MNIST (batch 128) at three schedules: 5+1+1 and 10+1+1 shared values,
and 35 lr columns (7 values x 5 parameter groups, one per layer) + 1 + 1.  Then WRN-16-1 on
CIFAR-shaped random input (batch 128, 7+1+1), and peak memory (RSS, a fresh process each).

    python experiments/bench_reverse.py                          # everything, T = 2000
    python experiments/bench_reverse.py --forward-steps 500      # forward mode over 500 steps only
    python experiments/bench_reverse.py --only memory            # peak memory only

Forward mode's cost per step depends on the fraction of columns active, which is the same at
every horizon (chunks stretch with it), so ``--forward-steps`` shorter than ``--steps`` measures
the same per-step cost in less time; the printout says which horizons ran.
"""
from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys

import torch

from experiments.bench_engine import bracketed, make_batches, peak_rss_mb, plain_steps
from fds_tune import Schedule, hypergradients
from fds_tune.models import build_model

WARMUP_STEPS = 5  # steps of every runner before the timed round (first calls pay lazy imports and allocations)
LR7 = [0.05, 0.045, 0.04, 0.03, 0.02, 0.01, 0.005]
SCHEDULES = {
    "5+1+1": (Schedule(lr=LR7[:5], momentum=[0.9], weight_decay=[5e-4]), None),
    "10+1+1": (Schedule(lr=[0.05 - 0.004 * i for i in range(10)], momentum=[0.9], weight_decay=[5e-4]), None),
    "7x5+1+1": (Schedule(lr=[LR7] * 5, momentum=[0.9], weight_decay=[5e-4]), "layers"),  # LeNet's 5 layers
}
WRN = Schedule(lr=LR7, momentum=[0.9], weight_decay=[5e-4])


def engine(net, shape, schedule, groups, mode, device):
    model = build_model(net, shape, 10).to(device)
    return lambda batches, val: hypergradients(model, schedule, batches, val, mode=mode, groups=groups)


def timed(net, shape, steps, forward_steps, device, schedules, rounds):
    batches = make_batches(net, max(steps, forward_steps), 128, device)
    val = batches[:1]
    plain = plain_steps(net, device)
    runners = {}
    for name, (schedule, groups) in schedules.items():
        for mode, horizon in (("reverse", steps), ("forward", forward_steps)):
            run = engine(net, shape, schedule, groups, mode, device)
            run(batches[:WARMUP_STEPS], val)  # first calls pay lazy imports and allocations
            runners[f"{mode} {name}"] = (functools.partial(run, batches[:horizon], val), horizon)
    plain(batches[:WARMUP_STEPS], val)
    units, t = bracketed((functools.partial(plain, batches[:steps], val), steps), runners, device, rounds)
    print(f"\n## {net}, batch 128, after a {WARMUP_STEPS}-step warm-up ({device.type}, {torch.get_num_threads()} threads); "
          f"plain and reverse over {steps} steps, forward over {forward_steps}; each engine run between two plain runs, "
          f"{rounds} round(s), costs averaged over the rounds")
    print("plain torch.optim.SGD: " + ", ".join(f"{1e3 * u:.2f}" for u in units) + " ms/step (run by run)")
    for name in schedules:
        (r, rx, rs), (f, fx, fs) = t[f"reverse {name}"], t[f"forward {name}"]
        print(f"{name:>8}: reverse {1e3 * r:7.2f} ms/step = {rx:5.2f}x plain   "
              f"forward {1e3 * f:7.2f} ms/step = {fx:5.2f}x plain   reverse/forward = {rx / fx:.3f}"
              + (f"   (rounds: reverse {', '.join(f'{v:.2f}' for v in rs)}; forward {', '.join(f'{v:.2f}' for v in fs)})" if rounds > 1 else ""))
    return t


def peak(net, shape, steps, mode, schedule_name, batch) -> dict:
    cmd = [sys.executable, __file__, "--child", net, json.dumps(shape), str(steps), mode, schedule_name, str(batch)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def child(net, shape, steps, mode, schedule_name, batch):
    """Peak RSS of one run on seeded random input (no dataset in memory, so the peak is the engine's)."""
    shape = tuple(json.loads(shape))
    model = build_model(net, shape, 10)

    def batch_of(t):
        gen = torch.Generator().manual_seed(t)
        return torch.randn(batch, *shape, generator=gen), torch.randint(0, 10, (batch,), generator=gen)

    def source(first, n):  # replayable: step t's batch from seed t
        return (batch_of(t) for t in range(first, first + n))

    schedule, groups = SCHEDULES[schedule_name]
    base = peak_rss_mb()
    hg = hypergradients(model, schedule, source, [batch_of(-1)], horizon=steps, mode=mode, groups=groups)
    print(json.dumps({"rss_mb": peak_rss_mb(), "before_mb": base, "checkpoint_every": hg.checkpoint_every}))


def memory(steps, long_steps, long_batch):
    shape = (1, 28, 28)
    f = peak("lenet", shape, steps, "forward", "5+1+1", 128)
    r = peak("lenet", shape, steps, "reverse", "5+1+1", 128)
    print(f"\n## peak RSS, LeNet, batch 128, T = {steps}, 5+1+1: forward {f['rss_mb']:.0f} MB, "
          f"reverse {r['rss_mb']:.0f} MB (checkpoint every {r['checkpoint_every']}), reverse/forward = {r['rss_mb'] / f['rss_mb']:.2f}")
    if long_steps:
        from fds_tune.engine import DEFAULT_CHECKPOINT_BUDGET

        lg = peak("lenet", shape, long_steps, "reverse", "5+1+1", long_batch)
        print(f"## peak RSS, LeNet, batch {long_batch}, T = {long_steps}, reverse: {lg['rss_mb']:.0f} MB "
              f"({lg['rss_mb'] - lg['before_mb']:.0f} MB above the {lg['before_mb']:.0f} MB before the run; checkpoint every "
              f"{lg['checkpoint_every']}; budget {DEFAULT_CHECKPOINT_BUDGET / 2**20:.0f} MB)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["lenet", "wrn-16-1", "memory"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=2000, help="LeNet horizon of plain and reverse runs")
    p.add_argument("--forward-steps", type=int, default=2000, help="LeNet horizon of forward-mode runs")
    p.add_argument("--rounds", type=int, default=2, help="times the interleaved sequence runs (costs averaged)")
    p.add_argument("--wrn-steps", type=int, default=14, help="WRN-16-1 horizon (7 lr chunks of 2 steps)")
    p.add_argument("--long-steps", type=int, default=20000, help="horizon of the long memory run (0: skip)")
    p.add_argument("--long-batch", type=int, default=16, help="batch of the long memory run (stored states do not depend on it)")
    p.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        net, shape, steps, mode, name, batch = args.child
        return child(net, shape, int(steps), mode, name, int(batch))
    device = torch.device(args.device)
    if args.only in (None, "lenet"):
        timed("lenet", (1, 28, 28), args.steps, args.forward_steps, device, SCHEDULES, args.rounds)
    if args.only in (None, "wrn-16-1"):
        timed("wrn-16-1", (3, 32, 32), args.wrn_steps, args.wrn_steps, device, {"7+1+1": (WRN, None)}, args.rounds)
    if args.only in (None, "memory"):
        memory(args.steps, args.long_steps, args.long_batch)


if __name__ == "__main__":
    main()
