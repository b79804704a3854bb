"""Fused 'same'-padded 1-D convolution: pre-activation -> conv -> bias -> post-activation ->
time mask -> residual -> LayerNorm over channels, in one Triton kernel.

This is the building block of HiFi-GAN's ResBlock1 (:mod:`kernels.resblock`) and FastPitch's
position-wise conv feed-forward (:mod:`kernels.ffn`).

Kernel design (GEMM-like implicit convolution): one program computes an output tile
``out[b, co:co+BLOCK_CO, t:t+BLOCK_T]``. Its reduction loop runs over (tap, input-channel tile)
pairs; each step loads a (BLOCK_CO x BLOCK_CI) weight slice and the (BLOCK_CI x BLOCK_T)
input window shifted by ``tap * dilation - pad`` (masked to zero outside [0, T): the zero
padding), applies the pre-activation, and accumulates their ``tl.dot`` in fp32. The epilogue
adds the bias, applies the post-activation, multiplies by a per-(batch, time) mask (FastPitch's
padding mask on the feed-forward hidden activation), adds the residual and, when asked,
normalises over the channel axis (only when one tile holds every output channel). All tensors are addressed
through their strides, so (B, T, C)-layout tensors are passed as ``x.transpose(1, 2)`` views
without copies.

Precision: fp16/bf16 inputs use tensor cores with fp32 accumulation; fp32 inputs use exact
IEEE fp32 dots (FMA units) unless ``allow_tf32=True``. The kernel is built lazily
(:class:`kernels.utils.LazyKernel`), so importing this module does not import triton.
"""

from __future__ import annotations

from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .utils import (LazyKernel, cdiv, check_tensor, device_ctx, interpret_env,
                    log_fallback_once, next_power_of_2, overlaps, same_layout_empty, triton_ready)

__all__ = ["conv1d_fused", "reference", "pack_weight", "PreAct", "parse_pre_act"]

OP = "conv1d"
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MASK_DTYPES = FLOAT_DTYPES + (torch.bool,)
# (name, slope): the activation applied to the conv input. relu and leaky map 0 to 0, so
# applying them after zero padding (as the kernel does, on masked loads) equals padding after.
PreAct = Union[None, str, tuple[str, float]]

_PRE_NONE, _PRE_RELU, _PRE_LEAKY = 0, 1, 2
_POST_NONE, _POST_RELU = 0, 1
MIN_DOT = 16  # tl.dot needs every block dimension >= 16 on NVIDIA GPUs

tl: Any = None  # triton.language, bound by LazyKernel at the first launch


def _conv1d_fused_kernel(
    x_ptr, w_ptr, bias_ptr, res_ptr, gamma_ptr, beta_ptr, mask_ptr, out_ptr,
    C_in, C_out, T,
    stride_xb, stride_xc, stride_xt,
    stride_wo, stride_wi, stride_wk,
    stride_rb, stride_rc, stride_rt,
    stride_mb, stride_mt,
    stride_ob, stride_oc, stride_ot,
    dilation, pad, slope, eps,
    K: tl.constexpr,
    PRE_ACT: tl.constexpr, POST_ACT: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, HAS_LN: tl.constexpr,
    HAS_MASK: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """One (batch, C_out tile, T tile) output block; see the module docstring."""
    pid_t = tl.program_id(0)
    pid_co = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)  # int64: batch offsets may pass 2**31 elements

    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)  # (BLOCK_CO,)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
    co_ok = offs_co < C_out
    x_base = x_ptr + pid_b * stride_xb

    acc = tl.zeros((BLOCK_CO, BLOCK_T), dtype=tl.float32)  # (BLOCK_CO, BLOCK_T)
    # One flat reduction loop over (tap, input-channel tile) -- the GEMM's K dimension is
    # K * C_in. Two loads per iteration, so the software pipeliner buffers one weight and one
    # input tile per stage; an unrolled tap loop inside a channel loop would multiply that
    # shared memory by K (11 taps x 3 stages does not fit).
    n_ci = tl.cdiv(C_in, BLOCK_CI)
    for it in range(0, K * n_ci):
        k = it // n_ci  # tap
        offs_ci = (it - k * n_ci) * BLOCK_CI + tl.arange(0, BLOCK_CI)  # (BLOCK_CI,)
        ci_ok = offs_ci < C_in
        # (BLOCK_CO, BLOCK_CI) slice of tap k; zero rows/cols past C_out/C_in add nothing.
        w = tl.load(w_ptr + offs_co[:, None] * stride_wo + offs_ci[None, :] * stride_wi
                    + k * stride_wk, mask=co_ok[:, None] & ci_ok[None, :], other=0.0)
        # Input positions seen by tap k; outside [0, T) is the conv's zero padding.
        t_in = offs_t + (k * dilation - pad)  # (BLOCK_T,)
        t_ok = (t_in >= 0) & (t_in < T)
        xv = tl.load(x_base + offs_ci[:, None] * stride_xc + t_in[None, :] * stride_xt,
                     mask=ci_ok[:, None] & t_ok[None, :], other=0.0)  # (BLOCK_CI, BLOCK_T)
        if PRE_ACT == 1:
            xv = tl.maximum(xv, 0.0)
        elif PRE_ACT == 2:
            # In fp32 then back to the input dtype: what F.leaky_relu does for fp16/bf16.
            xf = xv.to(tl.float32)
            xv = tl.where(xf > 0, xf, xf * slope).to(x_ptr.dtype.element_ty)
        acc = tl.dot(w, xv, acc, input_precision=PRECISION)

    # ---- epilogue, all in fp32 ----
    t_ok_out = offs_t < T
    out_mask = co_ok[:, None] & t_ok_out[None, :]  # (BLOCK_CO, BLOCK_T)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_co, mask=co_ok, other=0.0).to(tl.float32)
        acc += bias[:, None]
    if POST_ACT == 1:
        acc = tl.maximum(acc, 0.0)
    if HAS_MASK:
        # (BLOCK_T,) mask of this row, broadcast over channels; a multiply (not a select), as
        # PyTorch's ``h * mask``: NaN/inf stay NaN at masked steps, 0/1 masks are exact.
        tm = tl.load(mask_ptr + pid_b * stride_mb + offs_t * stride_mt, mask=t_ok_out,
                     other=0).to(tl.float32)
        acc = acc * tm[None, :]
    if HAS_RES:
        # Read before the store below: ``out`` may alias ``res`` (in-place residual), and
        # this program is the only one touching these elements.
        res = tl.load(res_ptr + pid_b * stride_rb + offs_co[:, None] * stride_rc
                      + offs_t[None, :] * stride_rt, mask=out_mask, other=0.0)
        acc += res.to(tl.float32)
    if HAS_LN:
        # LayerNorm over channels (axis 0); the launcher guarantees BLOCK_CO >= C_out.
        # Biased variance, as torch.nn.LayerNorm.
        inv_c = 1.0 / C_out  # fp32 (C_out may be specialised to a constexpr 1)
        mean = tl.sum(tl.where(co_ok[:, None], acc, 0.0), axis=0) * inv_c  # (BLOCK_T,)
        diff = tl.where(co_ok[:, None], acc - mean[None, :], 0.0)  # (BLOCK_CO, BLOCK_T)
        var = tl.sum(diff * diff, axis=0) * inv_c  # (BLOCK_T,)
        rstd = 1.0 / tl.sqrt(var + eps)
        gamma = tl.load(gamma_ptr + offs_co, mask=co_ok, other=0.0).to(tl.float32)
        beta = tl.load(beta_ptr + offs_co, mask=co_ok, other=0.0).to(tl.float32)
        acc = diff * rstd[None, :] * gamma[:, None] + beta[:, None]

    tl.store(out_ptr + pid_b * stride_ob + offs_co[:, None] * stride_oc
             + offs_t[None, :] * stride_ot, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


_CONV1D_KERNEL = LazyKernel(_conv1d_fused_kernel)


# --------------------------------------------------------------------------------------
# argument handling
# --------------------------------------------------------------------------------------


def parse_pre_act(pre_act: PreAct) -> tuple[int, float]:
    """None | 'relu' | ('leaky', slope) -> (kernel code, slope)."""
    if pre_act is None:
        return _PRE_NONE, 0.0
    if pre_act == "relu":
        return _PRE_RELU, 0.0
    if (isinstance(pre_act, tuple) and len(pre_act) == 2 and pre_act[0] == "leaky"
            and isinstance(pre_act[1], (int, float)) and not isinstance(pre_act[1], bool)):
        return _PRE_LEAKY, float(pre_act[1])
    raise ValueError(f"pre_act must be None, 'relu' or ('leaky', slope), got {pre_act!r}")


def _parse_post_act(post_act: str | None) -> int:
    if post_act is None:
        return _POST_NONE
    if post_act == "relu":
        return _POST_RELU
    raise ValueError(f"post_act must be None or 'relu', got {post_act!r}")


def _validate(x: Tensor, weight: Tensor, bias: Tensor | None, dilation: int,
              residual: Tensor | None, layer_norm: tuple[Tensor, Tensor, float] | None,
              time_mask: Tensor | None, out: Tensor | None) -> tuple[int, int, int, int, int]:
    """Check every argument; returns (B, C_in, T, C_out, K)."""
    check_tensor("x", x, 3, dtypes=FLOAT_DTYPES)
    dev = x.device
    b, c_in, t = x.shape
    check_tensor("weight", weight, 3, device=dev, dtypes=(x.dtype,))
    c_out, w_cin, k = weight.shape
    if w_cin != c_in:
        raise ValueError(f"weight has {w_cin} input channels, x has {c_in} (x is (B, C_in, T))")
    if c_in < 1 or c_out < 1:
        raise ValueError(f"channels must be >= 1, got C_in={c_in}, C_out={c_out}")
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel size must be odd for 'same' padding, got {k}")
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be an int >= 1, got {dilation!r}")
    if bias is not None:
        check_tensor("bias", bias, 1, device=dev, dtypes=FLOAT_DTYPES, shape=(c_out,))
    if residual is not None:
        check_tensor("residual", residual, 3, device=dev, dtypes=(x.dtype,),
                     shape=(b, c_out, t))
    if layer_norm is not None:
        if not (isinstance(layer_norm, tuple) and len(layer_norm) == 3):
            raise ValueError("layer_norm must be a (gamma, beta, eps) tuple")
        gamma, beta, eps = layer_norm
        check_tensor("layer_norm gamma", gamma, 1, device=dev, dtypes=FLOAT_DTYPES,
                     shape=(c_out,))
        check_tensor("layer_norm beta", beta, 1, device=dev, dtypes=FLOAT_DTYPES,
                     shape=(c_out,))
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps < 0:
            raise ValueError(f"layer_norm eps must be a float >= 0, got {eps!r}")
    if time_mask is not None:
        check_tensor("time_mask", time_mask, 2, device=dev, dtypes=MASK_DTYPES, shape=(b, t))
    if out is not None:
        check_tensor("out", out, 3, device=dev, dtypes=(x.dtype,), shape=(b, c_out, t))
        if overlaps(out, x) or overlaps(out, weight) or (
                time_mask is not None and overlaps(out, time_mask)):
            raise ValueError("out must not overlap x, weight or time_mask (other programs still "
                             "read them)")
        if residual is not None and overlaps(out, residual) and not (
                out.data_ptr() == residual.data_ptr() and out.stride() == residual.stride()):
            raise ValueError("out may alias residual only exactly (same pointer and strides)")
    return b, c_in, t, c_out, k


def _blocks(c_in: int, c_out: int, t: int, with_ln: bool, interpreted: bool, fma: bool,
            block_co: int | None, block_ci: int | None, block_t: int | None
            ) -> tuple[int, int, int, int, int]:
    """Tile sizes (BLOCK_CO, BLOCK_CI, BLOCK_T, num_warps, num_stages).

    GPU defaults are a GEMM tiling of 64 x 32 x 64 at 4 warps on tensor cores (fp16, bf16,
    TF32). ``fma``: exact fp32 dots run on FMA units, whose operand fragments take more
    registers, so 64 x 16 x 64 at 8 warps (no spills on sm_90). With a LayerNorm epilogue one
    tile holds every output channel, so BLOCK_T shrinks to keep the fp32 accumulator at
    <= 8192 elements (32 registers/thread at 8 warps; 4096 on FMA). These choices were checked by compiling
    for sm_90 and sm_80 (registers, spills, shared memory), not yet timed on a GPU. Under the
    interpreter each program is a Python-level loop, so bigger tiles (fewer programs) run
    much faster.
    """
    if interpreted:
        d_co = max(MIN_DOT, min(128, next_power_of_2(c_out)))
        d_ci = max(MIN_DOT, min(128, next_power_of_2(c_in)))
        d_t = max(MIN_DOT, min(256, next_power_of_2(t)))
    else:
        d_co = max(MIN_DOT, min(64, next_power_of_2(c_out)))
        d_ci = max(MIN_DOT, min(16 if fma else 32, next_power_of_2(c_in)))
        d_t = 64
    if with_ln:
        d_co = max(MIN_DOT, next_power_of_2(c_out))
        if not interpreted:
            d_t = max(MIN_DOT, min(64, (4096 if fma else 8192) // d_co))
            if d_co >= 256:  # keep the (BLOCK_CO x BLOCK_CI) weight stages in shared memory
                d_ci = MIN_DOT
    bco, bci, bt = block_co or d_co, block_ci or d_ci, block_t or d_t
    for name, v in (("block_co", bco), ("block_ci", bci), ("block_t", bt)):
        if v < MIN_DOT or v & (v - 1):
            raise ValueError(f"{name} must be a power of two >= {MIN_DOT} (tl.dot), got {v}")
    if with_ln and bco < c_out:
        raise ValueError(f"a LayerNorm epilogue needs one C_out tile over all {c_out} channels; "
                         f"block_co={bco} is too small (use >= {next_power_of_2(c_out)})")
    num_warps = 8 if bco * bt >= 8192 or (fma and bco * bt >= 4096) else 4
    # Big LayerNorm tiles: fewer stages leave registers for the accumulator (an FMA tile of
    # 512 x 16 spills at 2 stages).
    num_stages = (1 if fma else 2) if bco >= 256 else 3
    return bco, bci, bt, num_warps, num_stages


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def conv1d_fused(x: Tensor, weight: Tensor, bias: Tensor | None = None, dilation: int = 1,
                 pre_act: PreAct = None, post_act: str | None = None,
                 residual: Tensor | None = None,
                 layer_norm: tuple[Tensor, Tensor, float] | None = None, *,
                 time_mask: Tensor | None = None,
                 out: Tensor | None = None, allow_tf32: bool = False,
                 block_co: int | None = None, block_ci: int | None = None,
                 block_t: int | None = None) -> Tensor:
    """``LN(post_act(conv1d(pre_act(x), weight, bias, 'same', dilation)) * time_mask + res)``.

    x: (B, C_in, T) fp32/fp16/bf16, any strides (pass a (B, T, C) tensor as
    ``x.transpose(1, 2)``); weight: (C_out, C_in, K), K odd, x's dtype, any strides
    (:func:`pack_weight` gives the fastest layout); bias, gamma, beta: (C_out,) any float
    dtype; residual / out: (B, C_out, T) in x's dtype, any strides; time_mask: (B, T) float or
    bool, any strides, multiplies every channel of output step t of row b (after the
    post-activation, before the residual). Padding is
    ``dilation * (K - 1) // 2`` zeros on each side. Accumulates in fp32; returns x's dtype.
    ``out`` may be ``residual`` itself (in-place residual update), never x. ``allow_tf32``
    lets fp32 inputs use TF32 tensor cores on GPU (faster, ~1e-3 relative error); the default
    is exact IEEE fp32. ``block_*`` override the tile sizes (powers of two >= 16). Falls back
    to :func:`reference` (logged once) where Triton cannot run.
    """
    b, c_in, t, c_out, k = _validate(x, weight, bias, dilation, residual, layer_norm, time_mask,
                                     out)
    pre_code, slope = parse_pre_act(pre_act)
    post_code = _parse_post_act(post_act)

    ok, why = triton_ready(x.device)
    if not ok:
        log_fallback_once(OP, why)
        ref = reference(x, weight, bias, dilation, pre_act, post_act, residual, layer_norm,
                        time_mask=time_mask)
        return ref if out is None else out.copy_(ref)

    interpreted = interpret_env()  # tile sizes: few big programs under the interpreter
    fma = x.dtype == torch.float32 and not allow_tf32  # exact fp32: no tensor-core path
    bco, bci, bt, num_warps, num_stages = _blocks(c_in, c_out, t, layer_norm is not None,
                                                  interpreted, fma, block_co, block_ci, block_t)
    if out is None:
        out = same_layout_empty(x, c_out)
    if out.numel() == 0:
        return out
    gamma, beta, eps = layer_norm if layer_norm is not None else (None, None, 0.0)
    res = residual if residual is not None else out  # dummy pointer, never read
    # A bool mask is read as its bytes (0/1; a free view), a float one as is.
    tmask = (time_mask.view(torch.uint8) if time_mask is not None and time_mask.dtype == torch.bool
             else time_mask)  # (B, T) or None
    grid = (cdiv(t, bt), cdiv(c_out, bco), b)
    with device_ctx(x):
        _CONV1D_KERNEL[grid](
            x, weight, bias if bias is not None else out, res,
            gamma if gamma is not None else out, beta if beta is not None else out,
            tmask if tmask is not None else out, out,  # out: dummy pointer, never read
            c_in, c_out, t,
            *x.stride(), *weight.stride(), *res.stride(),
            *(tmask.stride() if tmask is not None else (0, 0)), *out.stride(),
            dilation, dilation * (k - 1) // 2, slope, float(eps),
            K=k, PRE_ACT=pre_code, POST_ACT=post_code,
            HAS_BIAS=bias is not None, HAS_RES=residual is not None,
            HAS_LN=layer_norm is not None, HAS_MASK=time_mask is not None,
            # IEEE fp32 dots unless TF32 is allowed; 16-bit inputs ignore the setting (the
            # default is passed for them, the path every Triton version compiles).
            PRECISION="ieee" if fma else "tf32",
            BLOCK_CO=bco, BLOCK_CI=bci, BLOCK_T=bt,
            num_warps=num_warps, num_stages=num_stages,
        )
    return out


def pack_weight(weight: Tensor) -> Tensor:
    """A (C_out, C_in, K) weight re-laid out in memory as (K, C_out, C_in), returned as the same
    (C_out, C_in, K) view.

    The kernel loads (BLOCK_CO x BLOCK_CI) slices of one tap; in PyTorch's layout consecutive
    input channels sit K elements apart (uncoalesced loads), in this one they are adjacent.
    Values and shape are unchanged, so the packed weight works everywhere a weight does; pack
    once at load time, not per call.
    """
    return weight.detach().permute(2, 0, 1).contiguous().permute(1, 2, 0)


def reference(x: Tensor, weight: Tensor, bias: Tensor | None = None, dilation: int = 1,
              pre_act: PreAct = None, post_act: str | None = None,
              residual: Tensor | None = None,
              layer_norm: tuple[Tensor, Tensor, float] | None = None, *,
              time_mask: Tensor | None = None) -> Tensor:
    """Pure-PyTorch :func:`conv1d_fused` (same arguments, computed in x's dtype)."""
    code, slope = parse_pre_act(pre_act)
    if code == _PRE_RELU:
        x = F.relu(x)
    elif code == _PRE_LEAKY:
        x = F.leaky_relu(x, slope)
    k = weight.size(2)
    bias_c = bias.to(x.dtype) if bias is not None else None
    y = F.conv1d(x, weight, bias_c, padding=dilation * (k - 1) // 2, dilation=dilation)
    if _parse_post_act(post_act) == _POST_RELU:
        y = F.relu(y)
    if time_mask is not None:
        y = y * time_mask[:, None, :].to(y.dtype)  # (B, 1, T): every channel of step t
    if residual is not None:
        y = y + residual
    if layer_norm is not None:
        gamma, beta, eps = layer_norm
        y = F.layer_norm(y.transpose(1, 2), (y.size(1),), gamma.to(y.dtype), beta.to(y.dtype),
                         eps).transpose(1, 2)
    return y

