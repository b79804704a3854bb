"""HiFi-GAN ResBlock1 on the fused conv kernel.

Per dilation d (as ``engine.models.hifigan.ResBlock1.forward``)::

    xt = conv1_d(lrelu(x))          # launch 1: pre-act leaky 0.1, dilation d
    x  = conv2(lrelu(xt)) + x       # launch 2: pre-act leaky 0.1, residual fused, in place

Two launches per dilation instead of five eager ops (two lrelu, two convs, one add), and no
lrelu'd copies of the activations. After the first dilation the
running sum is updated in place in the output buffer (each program reads the residual tile it
then overwrites), so the whole block needs one scratch buffer for ``xt``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conv1d import conv1d_fused, pack_weight
from .utils import check_tensor, log_fallback_once, same_layout_empty, triton_ready

__all__ = ["resblock1", "reference", "params_from_module", "LRELU_SLOPE"]

OP = "resblock1"
# engine.models.hifigan.LRELU_SLOPE (the tests check they agree); not imported, so that the
# engine can import this module without an import cycle.
LRELU_SLOPE = 0.1


def _validate(x: Tensor, w1: Sequence[Tensor], b1: Sequence[Tensor | None],
              w2: Sequence[Tensor], b2: Sequence[Tensor | None], kernel_size: int,
              dilations: Sequence[int], out: Tensor | None) -> None:
    check_tensor("x", x, 3, dtypes=(torch.float32, torch.float16, torch.bfloat16))
    c = x.size(1)
    n = len(dilations)
    if n < 1:
        raise ValueError("dilations must name at least one dilation")
    for name, seq in (("convs1_weights", w1), ("convs1_biases", b1),
                      ("convs2_weights", w2), ("convs2_biases", b2)):
        if len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} entries, expected one per dilation ({n})")
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd int, got {kernel_size!r}")
    for i, (wa, wb) in enumerate(zip(w1, w2)):
        check_tensor(f"convs1_weights[{i}]", wa, 3, shape=(c, c, kernel_size))
        check_tensor(f"convs2_weights[{i}]", wb, 3, shape=(c, c, kernel_size))
    if out is not None:
        check_tensor("out", out, 3, device=x.device, dtypes=(x.dtype,), shape=tuple(x.shape))


def resblock1(x: Tensor, convs1_weights: Sequence[Tensor],
              convs1_biases: Sequence[Tensor | None], convs2_weights: Sequence[Tensor],
              convs2_biases: Sequence[Tensor | None], kernel_size: int,
              dilations: Sequence[int], *, out: Tensor | None = None,
              slope: float = LRELU_SLOPE) -> Tensor:
    """HiFi-GAN ResBlock1 forward on x (B, C, T) (any strides, fp32/fp16/bf16).

    convs1_weights[i]: (C, C, K) with dilation ``dilations[i]``; convs2_weights[i]: (C, C, K)
    with dilation 1; biases (C,) or None. ``out`` (B, C, T) receives the result; it may be x
    itself (x is fully read by the first conv before it is overwritten). Falls back to
    :func:`reference` (logged once) where Triton cannot run.
    """
    _validate(x, convs1_weights, convs1_biases, convs2_weights, convs2_biases, kernel_size,
              dilations, out)
    ok, why = triton_ready(x.device)
    if not ok:
        log_fallback_once(OP, why)
        ref = reference(x, convs1_weights, convs1_biases, convs2_weights, convs2_biases,
                        kernel_size, dilations, slope=slope)
        return ref if out is None else out.copy_(ref)

    act = ("leaky", float(slope))
    c = x.size(1)
    xt = same_layout_empty(x, c)  # (B, C, T) scratch for conv1's output
    y = same_layout_empty(x, c) if out is None else out
    res = x  # running sum: x for the first dilation, then y in place
    for w1, b1, w2, b2, d in zip(convs1_weights, convs1_biases, convs2_weights, convs2_biases,
                                 dilations):
        # conv1 reads res before conv2 (a later launch on the same stream) overwrites it.
        conv1d_fused(res, w1, b1, int(d), pre_act=act, out=xt)
        conv1d_fused(xt, w2, b2, 1, pre_act=act, residual=res, out=y)
        res = y
    return y


def reference(x: Tensor, convs1_weights: Sequence[Tensor],
              convs1_biases: Sequence[Tensor | None], convs2_weights: Sequence[Tensor],
              convs2_biases: Sequence[Tensor | None], kernel_size: int,
              dilations: Sequence[int], *, slope: float = LRELU_SLOPE) -> Tensor:
    """Pure-PyTorch ResBlock1 (the ops of ``engine.models.hifigan.ResBlock1.forward``)."""
    for w1, b1, w2, b2, d in zip(convs1_weights, convs1_biases, convs2_weights, convs2_biases,
                                 dilations):
        xt = F.conv1d(F.leaky_relu(x, slope), w1, b1, dilation=int(d),
                      padding=(kernel_size * d - d) // 2)
        xt = F.conv1d(F.leaky_relu(xt, slope), w2, b2, padding=(kernel_size - 1) // 2)
        x = xt + x
    return x


def params_from_module(block: nn.Module, pack: bool = False) -> dict[str, Any]:
    """Keyword arguments of :func:`resblock1` from an ``engine.models.hifigan.ResBlock1``.

    ``resblock1(x, **params_from_module(block))`` computes ``block(x)``. ``pack=True`` returns
    weights copied into the kernel's preferred memory layout (:func:`kernels.conv1d.pack_weight`):
    do it once when the model is loaded and keep the result.
    """
    convs1, convs2 = list(block.convs1), list(block.convs2)
    prep = pack_weight if pack else (lambda w: w)
    return {
        "convs1_weights": [prep(c.weight) for c in convs1],
        "convs1_biases": [c.bias for c in convs1],
        "convs2_weights": [prep(c.weight) for c in convs2],
        "convs2_biases": [c.bias for c in convs2],
        "kernel_size": int(convs1[0].kernel_size[0]),
        "dilations": tuple(int(c.dilation[0]) for c in convs1),
    }
