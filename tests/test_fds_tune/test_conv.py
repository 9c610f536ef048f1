"""convolutions_for_double_backward: PyTorch's first and second derivatives of convolutions
(float64), through a graph that skips the input gradient where the input needs none."""
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from fds_tune.conv import convolutions_for_double_backward

DT = torch.float64
CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def two_layers(n, stride, padding, dilation, bias, data_input):
    """A loss through two convolutions (the first with the given settings) and its leaves."""
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(3, 2, *(8 if n < 3 else 7,) * n, dtype=DT, generator=gen).requires_grad_(not data_input)
    w1 = torch.randn(4, 2, *(3,) * n, dtype=DT, generator=gen).requires_grad_()
    w2 = torch.randn(3, 4, *(2,) * n, dtype=DT, generator=gen).requires_grad_()
    b = torch.randn(4, dtype=DT, generator=gen).requires_grad_() if bias else None
    conv = CONVS[n]

    def loss():
        h = torch.tanh(conv(x, w1, b, stride, padding, dilation))
        h = conv(h, w2)
        return (h**2).sum() + h.sum()

    leaves = [w1, w2] + ([b] if bias else []) + ([] if data_input else [x])
    return loss, leaves


def derivatives(loss, leaves, fast):
    """The gradient and a Hessian-vector product (double backward) of ``loss``."""
    with convolutions_for_double_backward(fast):
        value = loss()
    grads = torch.autograd.grad(value, leaves, create_graph=True)
    gen = torch.Generator().manual_seed(7)
    vs = [torch.randn(g.shape, dtype=DT, generator=gen) for g in grads]
    return value.grad_fn, [g.detach() for g in grads] + list(torch.autograd.grad(grads, leaves, vs))


def graph_nodes(fn, seen=None):
    seen = set() if seen is None else seen
    if fn is not None and fn not in seen:
        seen.add(fn)
        for nxt, _ in fn.next_functions:
            graph_nodes(nxt, seen)
    return {type(f).__name__ for f in seen}


@pytest.mark.parametrize(
    "n, stride, padding, dilation, bias, data_input",
    [(n, s, p, d, b, di) for n, (s, p, d), b, di in itertools.product([1, 2, 3], [(1, 0, 1), (2, 1, 1), (1, 1, 2), (2, 0, 2)], [True, False], [True, False])],
)
def test_first_and_second_derivatives_equal_pytorchs(n, stride, padding, dilation, bias, data_input):
    loss, leaves = two_layers(n, stride, padding, dilation, bias, data_input)
    native_fn, native = derivatives(loss, leaves, fast=False)
    fast_fn, fast = derivatives(loss, leaves, fast=True)
    assert "_ConvBackward" in graph_nodes(fast_fn) and "_ConvBackward" not in graph_nodes(native_fn)
    for a, b in zip(native, fast):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12 * float(a.abs().max()))


def test_double_backward_skips_the_gradient_of_a_data_input():
    """PyTorch's double backward computes convT(gO, ggW) for the input even when the input is
    data; this one computes no transposed convolution at all for a one-layer loss on data."""
    x = torch.randn(4, 1, 12, 12, dtype=DT)
    w = torch.randn(3, 1, 5, 5, dtype=DT, requires_grad=True)
    for fast, expected in ((False, True), (True, False)):
        with convolutions_for_double_backward(fast):
            value = (F.conv2d(x, w).relu() ** 2).sum()
        (g,) = torch.autograd.grad(value, w, create_graph=True)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            torch.autograd.grad(g, w, torch.ones_like(g))
        transposed = [e for e in prof.events() if e.name == "aten::_convolution" and e.input_shapes and e.input_shapes[0] == [4, 3, 8, 8]]
        assert bool(transposed) is expected


@pytest.mark.parametrize("kwargs", [{"groups": 2}, {"padding": "same"}])
def test_grouped_and_same_padded_convolutions_keep_pytorchs_path(kwargs):
    x = torch.randn(2, 4, 9, 9, dtype=DT)
    w = torch.randn(4, 4 // kwargs.get("groups", 1), 3, 3, dtype=DT, requires_grad=True)
    with convolutions_for_double_backward():
        y = F.conv2d(x, w, **kwargs)
    assert type(y.grad_fn).__name__ == "ConvolutionBackward0"
    assert torch.equal(y, F.conv2d(x, w, **kwargs))


def test_modules_and_valid_padding_go_through_it():
    """nn.Conv2d (reflect padding included: it pads, then calls F.conv2d) and padding="valid"."""
    layer = nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect").double()
    x = torch.randn(2, 2, 6, 6, dtype=DT)
    with convolutions_for_double_backward():
        y, z = layer(x), F.conv2d(x, layer.weight, padding="valid")
    assert type(y.grad_fn).__name__ == type(z.grad_fn).__name__ == "_ConvBackward"
    assert torch.allclose(y, layer(x), rtol=1e-13) and torch.allclose(z, F.conv2d(x, layer.weight), rtol=1e-13)
