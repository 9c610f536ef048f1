"""Benchmark of the FDS engine: time per inner step and peak memory.

Prints, in one run and with ratios:
  (a) plain torch.optim.SGD,
  (b) fds-tune forward mode (vmapped jvp of the gradient), 5 lr + 1 momentum + 1 weight-decay values,
  (c) the same tangent recurrence done the reference way (one double-backward per active column),
for LeNet on Fashion-MNIST (batch 128) and WRN-16-1 on CIFAR-10-shaped input (batch 128), and the
peak memory (RSS; CUDA too on a GPU) of (a), (b) and (c) at horizons 100 and 1000 (LeNet) and 5 (WRN-16-1), each measured in a fresh
subprocess.

    python experiments/bench_engine.py                 # everything
    python experiments/bench_engine.py --only lenet    # one network
    python experiments/bench_engine.py --profile wrn-16-1   # where forward mode's time goes (top ops)
    python experiments/bench_engine.py --only wrn-16-1 --group-sizes 2 3   # (b) also at fixed group sizes
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from fds_tune import Schedule, hypergradients
from fds_tune.engine import default_group_size
from fds_tune.data import epoch_batches, load_dataset
from fds_tune.models import build_model

SCHEDULE = Schedule(lr=[0.05, 0.04, 0.03, 0.02, 0.01], momentum=[0.9], weight_decay=[5e-4])
NETS = {"lenet": ("fashion_mnist", (1, 28, 28)), "wrn-16-1": ("cifar10-shaped", (3, 32, 32))}


def make_batches(net: str, n: int, batch: int, device) -> list:
    dataset, shape = NETS[net]
    gen = torch.Generator().manual_seed(0)
    if dataset == "fashion_mnist":
        try:
            data = load_dataset("fashion_mnist", download=False)
            it = epoch_batches(data.x_train, data.y_train, batch, gen)
            out = []
            while len(out) < n:
                out.extend(b for _, b in zip(range(n - len(out)), it))
                it = epoch_batches(data.x_train, data.y_train, batch, gen)
            return [(x.to(device), y.to(device)) for x, y in out]
        except (FileNotFoundError, RuntimeError) as err:
            print(f"# Fashion-MNIST not found ({type(err).__name__}); using random 28x28 input", file=sys.stderr)
    return [(torch.randn(batch, *shape, generator=gen).to(device), torch.randint(0, 10, (batch,), generator=gen).to(device)) for _ in range(n)]


def plain_steps(net, device):
    """(a): a closure running torch.optim.SGD over a list of batches."""
    model = build_model(net, NETS[net][1], 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def run(batches, val):
        for x, y in batches:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

    return run


def fds_steps(net, device, method, group_size=None):
    """(b) or (c): one full FDS inner run (hypergradients included) over the batches."""
    model = build_model(net, NETS[net][1], 10).to(device)
    return lambda batches, val: hypergradients(model, SCHEDULE, batches, val, method=method, group_size=group_size)


def interleaved(runners: dict, batches, val, rounds: int, device) -> dict:
    """Seconds per step of each runner, measured in alternation (round-robin), so that a change
    of load on a shared machine hits every runner alike.  The first round is a warm-up."""
    totals = {k: 0.0 for k in runners}
    for r in range(rounds + 1):
        for name, run in runners.items():
            seconds = _seconds(lambda: run(batches, val), device)
            if r > 0:
                totals[name] += seconds
    return {k: v / (rounds * len(batches)) for k, v in totals.items()}


def bracketed(unit, runners: dict, device, rounds: int = 1) -> tuple[list[float], dict]:
    """Each runner timed between two runs of ``unit`` (the plain run that is the unit of cost):
    ``unit -> r1 -> unit -> r2 -> ... -> unit``, the sequence ``rounds`` times over.  A runner's
    cost in a round is its seconds per step over the mean of the two unit runs beside it, so that
    a change of the machine's speed over the minutes of a benchmark cancels instead of landing on
    whichever runner ran then; its cost is the mean over the rounds.

    ``unit`` and each runner are ``(run, steps)`` with ``run()`` taking no argument.  Returns the
    unit's seconds per step, run by run, and runner -> (seconds per step, cost in units, the
    cost round by round)."""
    def per_step(run, steps):
        return _seconds(run, device) / steps

    units = [per_step(*unit)]
    seconds, costs = {k: [] for k in runners}, {k: [] for k in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            seconds[name].append(per_step(*runner))
            units.append(per_step(*unit))
            costs[name].append(seconds[name][-1] / ((units[-2] + units[-1]) / 2))
    return units, {k: (sum(seconds[k]) / rounds, sum(costs[k]) / rounds, costs[k]) for k in runners}


def _seconds(run, device) -> float:
    """Wall-clock seconds of ``run()``, the device synchronised before and after."""
    _sync(device)
    t0 = time.perf_counter()
    run()
    _sync(device)
    return time.perf_counter() - t0


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory(net, horizon, method, device, group_size=None) -> dict:
    """Run in a fresh process: peak RSS (MB) and peak CUDA memory of one run."""
    cmd = [sys.executable, __file__, "--memory", net, str(horizon), method, str(group_size or 0), device.type]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def _memory_child(net, horizon, method, group_size, device_type):
    device = torch.device(device_type)
    model = build_model(net, NETS[net][1], 10).to(device)
    gen = torch.Generator().manual_seed(1)
    shape = NETS[net][1]

    def batch():  # random input of the dataset's shape: no dataset in memory, so the peak is the engine's
        return torch.randn(128, *shape, generator=gen).to(device), torch.randint(0, 10, (128,), generator=gen).to(device)

    val = [batch()]
    stream = (batch() for _ in range(horizon))
    if method == "plain":
        plain_steps(net, device)(stream, val)
    else:
        hypergradients(model, SCHEDULE, stream, val, horizon=horizon, method=method, group_size=group_size or None)
    out = {"rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        out["cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def profile(net, horizon, device, top=15):
    """Where the time of (b) goes: torch.profiler's top operators by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    batches = make_batches(net, horizon, 128, device)
    run = fds_steps(net, device, "vmap")
    run(batches[:2], batches[:1])  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        run(batches, batches[:1])
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    print(f"\n## where (b)'s time goes: {net}, batch 128, horizon {horizon} ({device.type}, {torch.get_num_threads()} threads)")
    print(table)


def peak_rss_mb() -> float:
    """Peak RSS of this process.  Linux's VmHWM starts afresh at exec; ``ru_maxrss`` does not
    (it keeps the forking parent's peak, which would hide the child's own)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)


def bench(net, horizon, rounds, device, memory_horizons, group_sizes=()):
    batches = make_batches(net, horizon, 128, device)
    val = batches[:1]
    runners = {"a": plain_steps(net, device), "b": fds_steps(net, device, "vmap"), "c": fds_steps(net, device, "per_column")}
    runners.update({g: fds_steps(net, device, "vmap", g) for g in group_sizes})
    t = interleaved(runners, batches, val, rounds, device)
    a, b, c = t["a"], t["b"], t["c"]
    avg_active = sum(sum(v.numel() * i // horizon + 1 for v in SCHEDULE.values()) for i in range(horizon)) / horizon
    print(f"\n## {net}, batch 128, horizon {horizon} x {rounds} rounds, 5 lr + 1 momentum + 1 weight decay values "
          f"({device.type}, {torch.get_num_threads()} threads)")
    print(f"(a) torch.optim.SGD          {1e3 * a:8.1f} ms/step")
    print(f"(b) fds-tune forward mode    {1e3 * b:8.1f} ms/step")
    print(f"(c) reference (double-bwd)   {1e3 * c:8.1f} ms/step")
    print(f"(b)/(c) = {b / c:.3f}   (b)/(a) = {b / a:.2f}   target (b)/(a) <= 1 + 1.2 x {avg_active:.1f} = {1 + 1.2 * avg_active:.1f}")
    model = build_model(net, NETS[net][1], 10)
    print(f"    default group size: {default_group_size(model, batches[0][0].cpu(), sum(v.numel() for v in SCHEDULE.values()))} columns")
    for h in memory_horizons:
        mp, mf, mr = (peak_memory(net, h, m, device) for m in ("plain", "vmap", "per_column"))
        print(f"peak memory, horizon {h:5d}: (a) {_mb(mp)}  (b) {_mb(mf)}  (c) {_mb(mr)}  (b)/(c) RSS = {mf['rss_mb'] / mr['rss_mb']:.2f}")
    for g in group_sizes:
        line = f"(b) with group size {g}: {1e3 * t[g]:8.1f} ms/step  (b)/(c) = {t[g] / c:.3f}"
        if memory_horizons:  # peak memory at the last horizon measured above
            mg = peak_memory(net, memory_horizons[-1], "vmap", device, g)
            line += f"   peak memory, horizon {memory_horizons[-1]}: {_mb(mg)}  (b)/(c) RSS = {mg['rss_mb'] / mr['rss_mb']:.2f}"
        print(line)


def _mb(m: dict) -> str:
    return " ".join(f"{k.removesuffix('_mb')} {v:.0f} MB" for k, v in m.items())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=sorted(NETS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--lenet-rounds", type=int, default=2, help="rounds of a 50-step horizon (LeNet)")
    p.add_argument("--wrn-rounds", type=int, default=2, help="rounds of a 5-step horizon (WRN-16-1)")
    p.add_argument("--memory-horizons", type=int, nargs="*", default=[100, 1000], help="LeNet horizons for peak memory")
    p.add_argument("--profile", choices=sorted(NETS), help="profile forward mode on one network instead")
    p.add_argument("--group-sizes", type=int, nargs="*", default=[], help="also time (b) at these fixed group sizes")
    p.add_argument("--memory", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory:
        net, h, method, g, dev = args.memory
        return _memory_child(net, int(h), method, int(g), dev)
    device = torch.device(args.device)
    if args.profile:
        return profile(args.profile, 3 if args.profile == "wrn-16-1" else 20, device)
    if args.only in (None, "lenet"):
        bench("lenet", 50, args.lenet_rounds, device, args.memory_horizons, args.group_sizes)
    if args.only in (None, "wrn-16-1"):
        bench("wrn-16-1", 5, args.wrn_rounds, device, (5,), args.group_sizes)


if __name__ == "__main__":
    main()
