"""The networks FDS and the baselines train: an MLP, LeNet and a Wide ResNet.

All are ordinary ``nn.Module``s written to be called through
``torch.func.functional_call(model, (params, buffers), (x,))`` and transformed with
``grad``, ``jvp`` and ``vmap``: activations are never modified in place, the forward
pass has no data-dependent Python control flow, and batch normalisation is the stock
``nn.BatchNorm2d`` (running statistics, momentum 0.1). Inside a transform, train-mode
BatchNorm goes through :class:`~fds_tune.functional_model.FunctionalModel`, which
updates the running statistics outside the differentiated function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .validation import check, check_choice, check_int, is_int

__all__ = ["MODELS", "LeNet", "MLP", "WideResNet", "build_model"]

MODELS: tuple[str, ...] = ("mlp", "mlp-small", "lenet", "wrn-16-1")


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, *, seed: int = 0
) -> nn.Module:
    """Build model ``name`` (one of :data:`MODELS`) for ``(C, H, W)`` inputs.

    The initial weights depend only on ``seed``: they are drawn inside
    ``torch.random.fork_rng``, so the global RNG state is the same afterwards.
    """
    check_choice("model", name, MODELS)
    check_int("seed", seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _BUILDERS[name](tuple(input_shape), num_classes)


class MLP(nn.Module):
    """Flatten, then ``Linear -> ReLU`` per hidden width, then a linear classifier.

    One hidden layer of 256 units is enough for 8x8 digits and a reasonable small
    baseline on 28x28 images.
    """

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256,)
    ) -> None:
        super().__init__()
        shape = tuple(input_shape)
        check("input_shape", shape, bool(shape) and all(is_int(s) and s >= 1 for s in shape), "a non-empty shape of ints >= 1")
        check_int("num_classes", num_classes, 1)
        for i, width in enumerate(hidden):
            check_int(f"hidden[{i}]", width, 1)
        widths = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for fan_in, fan_out in zip(widths, widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LeNet(nn.Module):
    """LeNet-5 style: two 5x5 convolutions (6 and 16 channels) each followed by ReLU
    and 2x2 max pooling, then fully connected layers of 120 and 84 units.

    As in the FDS paper's code the convolutions are unpadded for 28x28 and 32x32 inputs
    (16x4x4 and 16x5x5 features). Images smaller than 16x16 (8x8 digits) are too small
    for two unpadded 5x5 convolutions, so both then pad by 2 (8 -> 4 -> 2). The choice
    and the flattened size follow from ``input_shape`` at construction.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = _image_shape(input_shape, min_side=4)
        check_int("num_classes", num_classes, 1)
        padding = 0 if min(height, width) >= 16 else 2
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )

        def side(size: int) -> int:  # conv 5x5 then pool 2, twice
            for _ in range(2):
                size = (size + 2 * padding - 4) // 2
            return size

        flat = 16 * side(height) * side(width)
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class _WideBasicBlock(nn.Module):
    """Pre-activation block: ``BN-ReLU-conv3x3-BN-ReLU-conv3x3`` plus the shortcut.

    As in Zagoruyko & Komodakis's code, when the width or stride changes the first
    BN-ReLU is shared by the residual branch and a 1x1 convolution shortcut.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.shortcut = (
            None if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        skip = x if self.shortcut is None else self.shortcut(pre)
        return skip + out


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` (Zagoruyko & Komodakis 2016), no dropout.

    A 3x3 stem of 16 channels, three groups of ``(depth - 4) / 6`` pre-activation
    blocks of widths ``16k, 32k, 64k`` (strides 1, 2, 2), BN-ReLU, global average
    pooling and a linear classifier. WRN-16-1 (the FDS paper's CIFAR-10 network) has
    two blocks per group. Global average pooling replaces the original fixed 8x8
    pooling so that any input size works; for 32x32 inputs they are the same.
    Initialisation follows the reference code: He-normal (fan-out) convolutions,
    BatchNorm weight 1 and bias 0, zero linear bias.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int = 16,
        widen_factor: int = 1,
    ) -> None:
        super().__init__()
        channels, _, _ = _image_shape(input_shape, min_side=1)
        check_int("num_classes", num_classes, 1)
        check_int("widen_factor", widen_factor, 1)
        depth_ok = is_int(depth) and depth >= 10 and (depth - 4) % 6 == 0
        check("depth", depth, depth_ok, "an int 6n + 4 with n >= 1 (10, 16, 22, 28, ...)")
        blocks_per_group = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(channels, widths[0], 3, stride=1, padding=1, bias=False)
        groups = []
        for in_planes, out_planes, stride in zip(widths, widths[1:], (1, 2, 2)):
            group = [_WideBasicBlock(in_planes, out_planes, stride)]
            group += [_WideBasicBlock(out_planes, out_planes, 1) for _ in range(blocks_per_group - 1)]
            groups.append(nn.Sequential(*group))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn(out))
        return self.fc(out.mean(dim=(2, 3)))


def _image_shape(input_shape: Sequence[int], *, min_side: int) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    ok = len(shape) == 3 and all(is_int(s) for s in shape) and shape[0] >= 1 and min(shape[1:]) >= min_side
    return check("input_shape", shape, ok, f"(C, H, W): ints with C >= 1 and H, W >= {min_side}")


_BUILDERS: dict[str, Callable[[tuple[int, ...], int], nn.Module]] = {
    "mlp": MLP,
    "mlp-small": lambda shape, classes: MLP(shape, classes, hidden=(64,)),  # the CPU benchmarks' network (cheap steps)
    "lenet": LeNet,
    "wrn-16-1": lambda shape, classes: WideResNet(shape, classes, depth=16, widen_factor=1),
}
