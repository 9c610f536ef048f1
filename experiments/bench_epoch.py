"""Time one training epoch of LeNet on Fashion-MNIST with plain ``torch.optim.SGD``.

Each step is forward + backward + SGD step on a batch from ``epoch_batches``; the
reported time is the median over a few epochs. The time spent only producing the
batches (shuffling and slicing the in-memory tensors) is printed too, to show that the
data path costs next to nothing.

    python experiments/bench_epoch.py                  # 3 epochs, batch 128, CPU
    python experiments/bench_epoch.py --epochs 5 --device cuda
    python experiments/bench_epoch.py --threads 1      # on a machine shared with other jobs
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from fds_tune.data import epoch_batches, load_dataset, num_batches
from fds_tune.models import build_model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_epoch(step, x, y, batch_size: int, generator: torch.Generator, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    for xb, yb in epoch_batches(x, y, batch_size, generator):
        step(xb, yb)
    synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed (median reported)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--root", default=None, help="directory holding Fashion-MNIST")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    data = load_dataset("fashion_mnist", root=args.root).to(device)
    model = build_model("lenet", data.input_shape, data.num_classes, seed=0).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)

    def train_step(xb, yb):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        optimizer.step()

    steps = num_batches(len(data.y_train), args.batch_size)
    time_epoch(train_step, data.x_train, data.y_train, args.batch_size, generator, device)  # warm-up
    epochs = [
        time_epoch(train_step, data.x_train, data.y_train, args.batch_size, generator, device)
        for _ in range(args.epochs)
    ]
    batching = [
        time_epoch(lambda xb, yb: None, data.x_train, data.y_train, args.batch_size, generator, device)
        for _ in range(args.epochs)
    ]
    epoch = statistics.median(epochs)
    print(
        f"device={device} threads={torch.get_num_threads()} batch={args.batch_size} "
        f"steps/epoch={steps}"
    )
    print(f"epochs (s): {', '.join(f'{t:.2f}' for t in epochs)}")
    print(f"LeNet Fashion-MNIST epoch: {epoch:.2f} s median ({1e3 * epoch / steps:.1f} ms/step)")
    print(f"batching alone: {statistics.median(batching):.3f} s per epoch")


if __name__ == "__main__":
    main()
