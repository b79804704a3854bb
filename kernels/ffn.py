"""FastPitch position-wise conv feed-forward on the fused conv kernel.

``engine.models.fastpitch.PositionwiseConvFF`` (eval mode) on x (B, T, d_model), with an
optional padding mask (B, T, 1)::

    h   = relu(conv1(x)) * mask                # launch 1: ReLU post-activation, time mask
    out = layer_norm(x + conv2(h))             # launch 2: residual + LayerNorm epilogue

The mask is what solo-equivalent batching passes (``PositionwiseConvFF.forward(x, mask)``): it
zeroes the hidden activation at padded steps, so conv2 does not read a padded row's nonzero
values one step past its end and a padded row equals its solo run. It is applied in conv1's
epilogue (no extra pass over h). Without a mask, h is left unmasked, as NVIDIA's model does.

This module owns the feed-forward's kernel launches, argument checks and PyTorch fallback; the
engine reaches it only through the runner (``engine.runtime.runner``), which sets the module's
``fused`` hook to this launcher.

Everything stays in FastPitch's (B, T, C) layout: x, h and out are passed to the conv kernel
as (B, C, T) stride views, so nothing is transposed or copied. The LayerNorm epilogue needs one
program to own all d_model channels of its time tile (BLOCK_CO = next_pow2(d_model)).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conv1d import conv1d_fused, pack_weight
from .utils import check_tensor, log_fallback_once, same_layout_empty, triton_ready

__all__ = ["positionwise_conv_ff", "reference", "params_from_module"]

OP = "ffn"


def _validate(x: Tensor, w1: Tensor, w2: Tensor, ln_weight: Tensor, ln_bias: Tensor,
              mask: Tensor | None, out: Tensor | None) -> None:
    check_tensor("x", x, 3, dtypes=(torch.float32, torch.float16, torch.bfloat16))
    b, t, d_model = x.shape
    if mask is not None:
        check_tensor("mask", mask, 3, device=x.device,
                     dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.bool),
                     shape=(b, t, 1))
    check_tensor("conv1_weight", w1, 3, shape=(None, d_model, None))
    d_inner = w1.size(0)
    check_tensor("conv2_weight", w2, 3, shape=(d_model, d_inner, None))
    check_tensor("ln_weight", ln_weight, 1, shape=(d_model,))
    check_tensor("ln_bias", ln_bias, 1, shape=(d_model,))
    if out is not None:
        check_tensor("out", out, 3, device=x.device, dtypes=(x.dtype,), shape=tuple(x.shape))


def positionwise_conv_ff(x: Tensor, conv1_weight: Tensor, conv1_bias: Tensor | None,
                         conv2_weight: Tensor, conv2_bias: Tensor | None, ln_weight: Tensor,
                         ln_bias: Tensor, ln_eps: float = 1e-5, *,
                         mask: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """``layer_norm(x + conv2(relu(conv1(x)) * mask))`` on x (B, T, d_model), 'same' padding.

    conv1_weight: (d_inner, d_model, K1); conv2_weight: (d_model, d_inner, K2), K odd; biases
    (d_inner,) / (d_model,) or None; LayerNorm affine (d_model,) and eps. ``mask``: (B, T, 1)
    bool or float (True / 1 on real steps), multiplied into the hidden activation between the
    two convs, as ``PositionwiseConvFF.forward(x, mask)``; None leaves it unmasked. Returns
    (B, T, d_model) in x's dtype (out, if given; it may be x itself). Falls back to
    :func:`reference` (logged once) where Triton cannot run.
    """
    _validate(x, conv1_weight, conv2_weight, ln_weight, ln_bias, mask, out)
    ok, why = triton_ready(x.device)
    if not ok:
        log_fallback_once(OP, why)
        ref = reference(x, conv1_weight, conv1_bias, conv2_weight, conv2_bias, ln_weight,
                        ln_bias, ln_eps, mask=mask)
        return ref if out is None else out.copy_(ref)

    xc = x.transpose(1, 2)  # (B, d_model, T) view of the (B, T, d_model) tensor
    h = same_layout_empty(xc, conv1_weight.size(0))  # (B, d_inner, T) view of (B, T, d_inner)
    conv1d_fused(xc, conv1_weight, conv1_bias, 1, post_act="relu",
                 time_mask=None if mask is None else mask[:, :, 0],  # (B, T) view
                 out=h)
    y = conv1d_fused(h, conv2_weight, conv2_bias, 1, residual=xc,
                     layer_norm=(ln_weight, ln_bias, float(ln_eps)),
                     out=None if out is None else out.transpose(1, 2))
    return y.transpose(1, 2)  # (B, T, d_model)


def reference(x: Tensor, conv1_weight: Tensor, conv1_bias: Tensor | None,
              conv2_weight: Tensor, conv2_bias: Tensor | None, ln_weight: Tensor,
              ln_bias: Tensor, ln_eps: float = 1e-5, *, mask: Tensor | None = None) -> Tensor:
    """Pure-PyTorch feed-forward: the ops of ``PositionwiseConvFF.forward(x, mask)`` in eval
    mode (same arguments as :func:`positionwise_conv_ff`)."""
    hidden = F.relu(F.conv1d(x.transpose(1, 2), conv1_weight, conv1_bias,
                             padding=conv1_weight.size(2) // 2))  # (B, d_inner, T)
    if mask is not None:
        hidden = hidden * mask.transpose(1, 2).to(x.dtype)  # (B, 1, T)
    core = F.conv1d(hidden, conv2_weight, conv2_bias, padding=conv2_weight.size(2) // 2)
    return F.layer_norm(x + core.transpose(1, 2), (x.size(2),), ln_weight, ln_bias, ln_eps)


def params_from_module(module: nn.Module, pack: bool = False) -> dict[str, Any]:
    """Keyword arguments of :func:`positionwise_conv_ff` from a ``PositionwiseConvFF``.

    ``positionwise_conv_ff(x, **params_from_module(m))`` computes ``m.eval()(x)``.
    ``pack=True`` returns conv weights copied into the kernel's preferred memory layout
    (:func:`kernels.conv1d.pack_weight`): do it once when the model is loaded.
    """
    conv1, conv2 = module.CoreNet[0], module.CoreNet[2]
    prep = pack_weight if pack else (lambda w: w)
    return {
        "conv1_weight": prep(conv1.weight), "conv1_bias": conv1.bias,
        "conv2_weight": prep(conv2.weight), "conv2_bias": conv2.bias,
        "ln_weight": module.layer_norm.weight, "ln_bias": module.layer_norm.bias,
        "ln_eps": float(module.layer_norm.eps),
    }
