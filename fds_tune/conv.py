"""Convolutions with a cheaper exact double backward, for reverse mode's Hessian-vector products.

Reverse mode differentiates the minibatch gradient once more (``H v = d(g . v)/dtheta``).
Through a convolution ``y = conv(x, w) + b`` that second backward is PyTorch's
``_convolution_double_backward``, which on CPU wastes work twice:

- it computes the gradient with respect to the layer's input, ``convT(gO, ggW)``, whether or
  not the input needs one (it never does for the first layer, whose input is data);
- its weight gradients go through oneDNN's weight-gradient kernel, which is slow for few
  channels (on LeNet's first layer it took twice as long as the same sum written as a
  convolution of the batch-transposed tensors).

Here the convolution is a :class:`torch.autograd.Function` whose backward is written in
convolutions, each differentiable and each computed only where a gradient is needed::

    gI = convT(gO, w)                                   (input; stride s, padding p, dilation d)
    gW = conv(x^T, gO^T; stride d, padding p, dilation s)^T, cut to w's size   (batch as channels)
    gb = sum of gO over the batch and the positions

and the weight gradient is itself a Function whose backward is two convolutions,
``conv(x, ggW)`` for ``gO`` and ``convT(gO, ggW)`` for ``x`` (only if ``x`` needs it).
The values are the same sums as PyTorch's (equal in float64 to rounding, tested against
PyTorch's own first and second derivatives in tests/test_fds_tune/test_conv.py).

:func:`convolutions_for_double_backward` routes ``F.conv1d/2d/3d`` through it for the code
inside the ``with`` (a :class:`~torch.overrides.TorchFunctionMode`, so a user's module that
calls ``F.conv2d`` itself is covered too).  Grouped convolutions and ``padding="same"`` keep
PyTorch's path.  Reverse mode uses it for the gradient it differentiates again, on CPU only:
it was measured there (experiments/bench_reverse.py), not on GPUs.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["convolutions_for_double_backward"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_DIMS = {conv: n for n, conv in _CONV.items()}


class ConvSpec(tuple):
    """(stride, padding, dilation) of an ungrouped convolution, each a tuple of ``n`` ints."""

    __slots__ = ()

    def __new__(cls, n: int, stride, padding, dilation):
        return super().__new__(cls, tuple(_ints(v, n) for v in (stride, padding, dilation)))

    @property
    def dims(self) -> int:
        return len(self[0])


def _ints(v, n: int) -> tuple[int, ...]:
    return tuple(v) * (n if len(v) == 1 else 1) if isinstance(v, (tuple, list)) else (int(v),) * n


def _input_grad(g_out, weight, spec: ConvSpec, input_shape) -> torch.Tensor:
    """``convT(g_out, weight)``: the gradient with respect to the input, shaped like it."""
    (s, p, d), n = spec, spec.dims
    out = g_out.shape[2:]
    k = weight.shape[2:]
    extra = tuple(input_shape[2 + i] - ((out[i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + 1) for i in range(n))
    return _CONV_T[n](g_out, weight, None, s, p, extra, 1, d)


class _WeightGrad(torch.autograd.Function):
    """``gW = sum_n x_n (*) gO_n``, written as a convolution of the batch-transposed tensors."""

    @staticmethod
    def forward(x, g_out, spec, kernel):
        (s, p, d), n = spec, spec.dims
        gw = _CONV[n](x.transpose(0, 1), g_out.transpose(0, 1), None, d, p, s).transpose(0, 1)
        for i, k in enumerate(kernel):
            gw = gw.narrow(2 + i, 0, k)
        return gw.contiguous()

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, g_out, spec, _ = inputs
        ctx.save_for_backward(x, g_out)
        ctx.spec = spec

    @staticmethod
    def backward(ctx, gg_w):
        x, g_out = ctx.saved_tensors
        (s, p, d), n = ctx.spec, ctx.spec.dims
        g_x = _input_grad(g_out, gg_w, ctx.spec, x.shape) if ctx.needs_input_grad[0] else None
        g_gout = _CONV[n](x, gg_w, None, s, p, d) if ctx.needs_input_grad[1] else None
        return g_x, g_gout, None, None


class _Conv(torch.autograd.Function):
    """``conv(x, w) + b`` whose backward is :func:`_input_grad`, :class:`_WeightGrad` and a sum."""

    @staticmethod
    def forward(x, weight, bias, spec):
        (s, p, d), n = spec, spec.dims
        return _CONV[n](x, weight, bias, s, p, d, 1)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, spec = inputs
        ctx.save_for_backward(x, weight)
        ctx.spec, ctx.has_bias = spec, bias is not None

    @staticmethod
    def backward(ctx, g_out):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        g_x = _input_grad(g_out, weight, ctx.spec, x.shape) if need_x else None
        g_w = _WeightGrad.apply(x, g_out, ctx.spec, tuple(weight.shape[2:])) if need_w else None
        g_b = g_out.sum([0, *range(2, g_out.dim())]) if ctx.has_bias and need_b else None
        return g_x, g_w, g_b, None


def _conv(n: int, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """The :class:`_Conv` of ``F.conv{n}d``'s arguments; None where PyTorch's path is kept."""
    if groups != 1 or (isinstance(padding, str) and padding != "valid"):
        return None
    spec = ConvSpec(n, stride, 0 if padding == "valid" else padding, dilation)
    return _Conv.apply(input, weight, bias, spec)


class _Mode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        n = _DIMS.get(func)  # every op of the forward pass comes through here: one lookup each
        out = None if n is None else _conv(n, *args, **kwargs)
        return func(*args, **kwargs) if out is None else out


@contextlib.contextmanager
def convolutions_for_double_backward(enabled: bool = True) -> Iterator[None]:
    """Inside the ``with``, ``F.conv1d/2d/3d`` (ungrouped) build graphs whose double backward is
    :class:`_Conv`'s; with ``enabled=False`` nothing changes."""
    if not enabled:
        yield
        return
    with _Mode():
        yield
