"""FDS's learned schedule for your own network and data: a small CNN on your own tensors, through Ray Tune.

    python experiments/own_problem.py            # a tiny run: about 25 s on 2 cores (test accuracy ~0.77; chance 0.25)
    fds-tune compare --preset digits --problem experiments.own_problem:make_problem --methods fds random hd

``make_problem`` is the whole problem (a :class:`fds_tune.ProblemSpec`): a factory of the network
from a seed, training and test tensors (here a synthetic 4-class image task standing in for yours),
the loss and the metric (cross-entropy and accuracy by default).  The same spec trains through
``tune.with_parameters(FDSTrainable, problem=...)``, by a registered name
(``fds_tune.register_problem``) and, as ``module:function``, through ``fds-tune compare --problem``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from fds_tune import ProblemSpec

__all__ = ["SmallCNN", "make_problem", "main"]


class SmallCNN(nn.Module):
    """Two 3x3 convolutions with GroupNorm, dropout, global average pooling and a linear classifier."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(), nn.Dropout(0.1),
            nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.GroupNorm(4, 16), nn.ReLU(),
        )
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def synthetic_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy 8x8 images of 4 classes: which quadrant is bright."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g)
    for c, (r, k) in enumerate(((0, 0), (0, 4), (4, 0), (4, 4))):
        x[y == c, :, r : r + 4, k : k + 4] += 1.5
    return x, y


def make_problem() -> ProblemSpec:
    """The problem: SmallCNN on 512 training and 256 test images."""
    return ProblemSpec(model=lambda seed: SmallCNN(), train=synthetic_images(512, 0), test=synthetic_images(256, 1), num_classes=4)


def main() -> None:
    from ray import tune

    from fds_tune import FDSTrainable

    config = {"preset": None, "epochs": [1, 3, 3, 3, 3], "retrain_epochs": 5, "batch_size": 32, "n_values": {"lr": 3, "momentum": 1, "weight_decay": 1}}
    analysis = tune.run(tune.with_parameters(FDSTrainable, problem=make_problem()), config=config, verbose=0)
    last = analysis.trials[0].last_result
    print("learned schedule:", last["schedule"])
    print("test accuracy after retraining with it:", last["retrain_test_acc"])


if __name__ == "__main__":
    main()
