"""Train-mode BatchNorm whose forward-over-reverse derivative is cheap and exact.

Forward mode differentiates the *backward* pass: ``jvp(grad(loss))``.  PyTorch has
no forward-mode formula for ``native_batch_norm_backward``; under ``torch.func``
it falls back to a decomposition into a long chain of elementwise ops, which on
WRN-16-1 took a third of forward mode's time and a large share of its activation
memory per batched column.  Here both passes are :class:`torch.autograd.Function`
with hand-written tangents, in the ``xhat`` form (per channel, ``M`` elements)::

    xhat = (x - mean) * invstd            y = w * xhat + b
    gx   = w * invstd * (gy - mean(gy) - xhat * mean(gy * xhat))
    gw   = sum(gy * xhat)                 gb = sum(gy)

Tangents (``_t``), all exact:

    xhat_t   = invstd * (x_t - mean(x_t) - xhat * mean(xhat * x_t))
    invstd_t = -invstd^2 * mean(xhat * x_t)
    y_t      = w * xhat_t + w_t * xhat + b_t
    gx_t     = w * invstd * (gy_t - mean(gy_t) - xhat * mean(gy_t * xhat))       (linear in gy)
               + w_t * gx / w + (invstd_t / invstd) * gx                           (w, invstd)
               - w * invstd * (xhat_t * mean(gy * xhat) + xhat * mean(gy * xhat_t)) (xhat)
    gw_t     = sum(gy_t * xhat) + sum(gy * xhat_t)          gb_t = sum(gy_t)

(``gx / w`` is computed directly, never divided.)  The primal passes use PyTorch's
fused kernels; the tangents, batched over columns by ``vmap``, are a handful of
broadcast multiply-adds.  ``xhat`` and ``invstd`` are internal outputs of the
forward pass so that the backward pass sees their tangents.

Only forward-over-reverse is supported: a second reverse pass (double backward)
raises.  The engine's reference path (``method="reverse"``) and plain training use
PyTorch's BatchNorm.
"""
from __future__ import annotations

import torch

__all__ = ["batch_norm_train"]

_aten = torch.ops.aten


def batch_norm_train(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """``F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)`` with a fast exact jvp of its gradient."""
    channels = x.shape[1]
    if weight is None:
        weight = x.new_ones(channels)
    if bias is None:
        bias = x.new_zeros(channels)
    return _BatchNorm.apply(x, weight, bias, eps)[0]


def _per_channel(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view((1, -1) + (1,) * (like.dim() - 2))


def _addcmul(acc: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``acc + a * b``, where a missing ``acc`` is zero."""
    return a * b if acc is None else torch.addcmul(acc, a, b)


def _add(acc, v):
    return v if acc is None else acc + v


def _dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _fused_backward(gy: torch.Tensor, xhat: torch.Tensor, invstd: torch.Tensor):
    """PyTorch's fused kernel, in xhat form: (invstd * (gy - mean(gy) - xhat mean(gy xhat)), sum(gy xhat), sum(gy))."""
    c = xhat.shape[1]
    zeros, ones = xhat.new_zeros(c), xhat.new_ones(c)
    return _aten.native_batch_norm_backward(gy, xhat, invstd, None, None, zeros, ones, True, 0.0, [True, True, True])


class _BatchNorm(torch.autograd.Function):
    """``(x, w, b) -> (y, xhat, invstd)``; ``xhat`` and ``invstd`` carry tangents for the backward pass."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, eps):
        y, mean, invstd = _aten.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)
        xhat = (x - _per_channel(mean, x)) * _per_channel(invstd, x)
        return y, xhat, invstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, weight, _, _ = inputs
        _, xhat, invstd = output
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.save_for_forward(xhat, invstd, weight)

    @staticmethod
    def backward(ctx, gy, _gxhat, _ginvstd):  # xhat and invstd never leave this module
        xhat, invstd, weight = ctx.saved_tensors
        if gy is None:
            return None, None, None, None
        gx, gw, gb, _ = _BatchNormBackward.apply(gy, xhat, invstd, weight)
        return gx, gw, gb, None

    @staticmethod
    def jvp(ctx, x_t, w_t, b_t, _eps_t):
        xhat, invstd, weight = ctx.saved_tensors
        m = xhat.numel() // xhat.shape[1]
        y_t = xhat_t = invstd_t = None
        if x_t is not None:
            dims = _dims(x_t)
            s_x = (x_t * xhat).sum(dims)  # sum(x_t xhat)
            xhat_t = torch.addcmul(_per_channel(-invstd * x_t.mean(dims), x_t), x_t, _per_channel(invstd, x_t))
            xhat_t = xhat_t.addcmul(xhat, _per_channel(-invstd * s_x / m, x_t))
            invstd_t = -invstd * invstd * s_x / m
            y_t = xhat_t * _per_channel(weight, xhat_t)
        if w_t is not None:
            y_t = _addcmul(y_t, xhat, _per_channel(w_t, xhat))
        if b_t is not None:
            y_t = _add(y_t, _per_channel(b_t, xhat))
        return y_t, xhat_t, invstd_t


class _BatchNormBackward(torch.autograd.Function):
    """``(gy, xhat, invstd, w) -> (gx, gw, gb)``, differentiable in forward mode only."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gy, xhat, invstd, weight):
        gxo, gw, gb = _fused_backward(gy, xhat, invstd)  # gxo = gx / w
        return gxo * _per_channel(weight, gxo), gw, gb, gxo

    @staticmethod
    def setup_context(ctx, inputs, output):
        gy, xhat, invstd, weight = inputs
        gx, gw, _, gxo = output
        ctx.mark_non_differentiable(gxo)
        ctx.save_for_forward(gy, xhat, invstd, weight, gx, gw, gxo)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            "batch_norm_train: the gradient of its backward pass (double backward) is not supported; "
            "use F.batch_norm for reverse-over-reverse"
        )

    @staticmethod
    def jvp(ctx, gy_t, xhat_t, invstd_t, w_t):
        gy, xhat, invstd, weight, gx, gw, gxo = ctx.saved_tensors
        m = xhat.numel() // xhat.shape[1]
        dims = _dims(xhat)
        scale = weight * invstd
        gx_t = gw_t = gb_t = coef_xhat = None  # coef_xhat: per-channel coefficient of xhat in gx_t
        if gy_t is not None:  # w invstd (gy_t - mean(gy_t) - xhat mean(gy_t xhat))
            gb_t, gw_t = gy_t.sum(dims), (gy_t * xhat).sum(dims)
            gx_t = torch.addcmul(_per_channel(-scale * gb_t / m, gy_t), gy_t, _per_channel(scale, gy_t))
            coef_xhat = -scale * gw_t / m
        if xhat_t is not None:  # - w invstd (xhat_t mean(gy xhat) + xhat mean(gy xhat_t))
            s = (gy * xhat_t).sum(dims)
            gx_t = _addcmul(gx_t, xhat_t, _per_channel(-scale * gw / m, xhat_t))
            coef_xhat = _add(coef_xhat, -scale * s / m)
            gw_t = _add(gw_t, s)
        if coef_xhat is not None:
            gx_t = _addcmul(gx_t, xhat, _per_channel(coef_xhat, xhat))
        if w_t is not None:
            gx_t = _addcmul(gx_t, gxo, _per_channel(w_t, gxo))
        if invstd_t is not None:
            gx_t = _addcmul(gx_t, gx, _per_channel(invstd_t / invstd, gx))
        return gx_t, gw_t, gb_t, None
