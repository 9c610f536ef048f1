"""Benchmark of the plain training path against a plain PyTorch loop (the comparison's unit of cost).

Times, interleaved in one run (round-robin, so that a change of load hits both alike):
  (a) a plain PyTorch training step: ``nn.Module`` + ``torch.optim.SGD`` (lr, momentum, weight decay),
  (p) fds-tune's plain path, ``fds_tune.train`` (what the black-box trials, FDS's retraining and
      the hand-over retraining run), with the same constant values and, optionally, its gradient clamp,
on LeNet / Fashion-MNIST at batch 128 (random input of that shape when the data is missing).

    python experiments/bench_plain.py                    # LeNet, horizon 200, 5 rounds
    python experiments/bench_plain.py --net mlp --clamp 3
"""
from __future__ import annotations

import argparse

import torch

from experiments.bench_engine import NETS, interleaved, make_batches, plain_steps
from fds_tune import Schedule, train
from fds_tune.models import build_model

VALUES = Schedule(lr=[0.01], momentum=[0.9], weight_decay=[5e-4])


def plain_fds(net, device, clamp):
    """(p): one ``fds_tune.train`` run over the batches."""
    model = build_model(net, NETS[net][1], 10).to(device)
    return lambda batches, val: train(model, VALUES, batches, grad_clamp=clamp)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", default="lenet", choices=sorted(NETS))
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--clamp", type=float, default=None, help="fds-tune's gradient clamp (the comparison uses 3)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    batches = make_batches(args.net, args.horizon, 128, device)
    t = interleaved({"a": plain_steps(args.net, device), "p": plain_fds(args.net, device, args.clamp)}, batches, batches[:1], args.rounds, device)
    print(f"## {args.net}, batch 128, horizon {args.horizon} x {args.rounds} rounds ({device.type}, {torch.get_num_threads()} threads)")
    print(f"(a) nn.Module + torch.optim.SGD   {1e3 * t['a']:7.2f} ms/step")
    print(f"(p) fds_tune.train (clamp {args.clamp})  {1e3 * t['p']:7.2f} ms/step")
    print(f"(p)/(a) = {t['p'] / t['a']:.3f}   target <= 1.05")


if __name__ == "__main__":
    main()
