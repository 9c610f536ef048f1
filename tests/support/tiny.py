"""Tiny float64 models and batches for the engine's exactness tests."""
import torch
import torch.nn as nn

DT = torch.float64


def tiny_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.Tanh(), nn.Linear(7, 3)).to(DT)


def tiny_lenet(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 3, 3)]
    if bn:
        layers.append(nn.BatchNorm2d(3))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 2)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)]
    return nn.Sequential(*layers).to(DT)


def batches(n, shape, batch=6, seed=1, classes=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, *shape, generator=g, dtype=DT), torch.randint(0, classes, (batch,), generator=g)) for _ in range(n)]


def rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


CASES = {
    "mlp": (lambda: tiny_mlp(), (12,)),
    "lenet": (lambda: tiny_lenet(), (1, 8, 8)),
    "lenet_bn": (lambda: tiny_lenet(bn=True), (1, 8, 8)),
}
