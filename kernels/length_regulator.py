"""FastPitch length regulator: repeat each token's encoder vector by its paced duration.

``repeats = floor(d / pace + 0.5)`` (fp32, clamped at 0); frame ``f`` of row ``b`` copies the
vector of the token whose cumulative-duration interval holds ``f``; frames past the row's length
are zero; rows longer than ``max_len`` are cut. ``max_len`` is a static int (a shape bucket), so
nothing here waits for the GPU (no ``.item()``, no host copies).

Kernel design, two launches:

1. ``_lr_ends_kernel``, one program per row: repeats and their running sum ``ends`` (int32,
   saturated at ``max_len``), chunk by chunk with ``tl.cumsum`` plus a carry; the row's total
   (= ``mel_lens``, clamped) is the last carry.
2. ``_lr_gather_kernel``, programs over (frame tile, channel tile, batch): each frame finds its
   token by a binary search over its row of ``ends`` (the number of ends <= f, i.e.
   ``searchsorted(ends, f, right=True)``), then copies a (BLOCK_F x BLOCK_C) tile of encoder
   vectors, writing zeros past the row's length.

Saturating at ``max_len`` changes nothing visible: a clamped repeat or end is still >= max_len,
so it is still past every output frame (< max_len), and ``mel_lens`` is clamped to max_len
anyway; it keeps int32 sums from overflowing on absurd durations.

The runner's static FastPitch path (``engine.runtime.static``, decoder program) runs this
launcher when the runner uses kernels; the eager path keeps ``regulate_len``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .utils import (LazyKernel, cdiv, check_tensor, device_ctx, interpret_env,
                    log_fallback_once, next_power_of_2, triton_ready)

__all__ = ["length_regulate", "reference"]

OP = "length_regulator"
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


tl: Any = None  # triton.language, bound by LazyKernel at the first launch


def _lr_ends_kernel(dur_ptr, pace_ptr, ends_ptr, lens_ptr,
                    T_text, max_len,
                    stride_db, stride_dt, stride_pb,
                    BLOCK: tl.constexpr):
    """Row b: ends[b, :] = min(cumsum(repeats), max_len) (int32); lens[b] = last end."""
    b = tl.program_id(0).to(tl.int64)
    pace = tl.load(pace_ptr + b * stride_pb).to(tl.float32)
    max_len_f = max_len * 1.0
    carry = tl.sum(tl.zeros((BLOCK,), dtype=tl.int64), axis=0)  # int64 scalar 0
    for t0 in range(0, T_text, BLOCK):
        offs = t0 + tl.arange(0, BLOCK)  # (BLOCK,)
        ok = offs < T_text
        d = tl.load(dur_ptr + b * stride_db + offs * stride_dt, mask=ok,
                    other=0.0).to(tl.float32)
        # IEEE division (plain '/' is approximate on NVIDIA GPUs and could move a value
        # sitting exactly on .5 across the rounding boundary).
        reps = tl.floor(tl.math.div_rn(d, pace) + 0.5)
        reps = tl.minimum(tl.maximum(reps, 0.0), max_len_f)  # clamp >= 0; <= max_len (see top)
        reps_i = tl.where(ok, reps.to(tl.int64), 0)  # (BLOCK,)
        ends = tl.cumsum(reps_i, axis=0) + carry
        tl.store(ends_ptr + b * T_text + offs, tl.minimum(ends, max_len).to(tl.int32),
                 mask=ok)
        carry = tl.minimum(carry + tl.sum(reps_i, axis=0), max_len)
    tl.store(lens_ptr + b, carry)

def _lr_gather_kernel(enc_ptr, ends_ptr, lens_ptr, out_ptr,
                      T_text, C, max_len,
                      stride_eb, stride_et, stride_ec,
                      stride_ob, stride_of, stride_oc,
                      N_STEPS: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_C: tl.constexpr):
    """out[b, f, c] = enc[b, token(f), c] if f < lens[b] else 0, for one tile."""
    pid_f = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_f = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)  # (BLOCK_F,)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    row = ends_ptr + b * T_text

    # Binary search per frame: token = #ends <= f, in [0, T_text]. N_STEPS =
    # bit_length(T_text) halvings shrink [lo, hi) to empty.
    lo = tl.zeros((BLOCK_F,), dtype=tl.int32)
    hi = tl.zeros((BLOCK_F,), dtype=tl.int32) + T_text
    for _ in tl.static_range(N_STEPS):
        active = lo < hi
        mid = (lo + hi) >> 1
        e = tl.load(row + mid, mask=active, other=0)
        right = active & (e <= offs_f)
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(active & (e > offs_f), mid, hi)
    token = tl.minimum(lo, T_text - 1)  # frames past the end are zeroed below anyway

    length = tl.load(lens_ptr + b)  # int64, <= max_len
    c_ok = offs_c < C
    valid = (offs_f < length)[:, None] & c_ok[None, :]  # (BLOCK_F, BLOCK_C)
    vals = tl.load(enc_ptr + b * stride_eb + token[:, None].to(tl.int64) * stride_et
                   + offs_c[None, :] * stride_ec, mask=valid, other=0.0)
    store_ok = (offs_f < max_len)[:, None] & c_ok[None, :]
    tl.store(out_ptr + b * stride_ob + offs_f[:, None].to(tl.int64) * stride_of
             + offs_c[None, :] * stride_oc, vals, mask=store_ok)


_ENDS_KERNEL = LazyKernel(_lr_ends_kernel)
_GATHER_KERNEL = LazyKernel(_lr_gather_kernel)


def _pace_tensor(pace: Tensor | float, batch: int, device: torch.device) -> Tensor:
    """pace as a 1-D float tensor of length 1 or B (float: a one-element tensor, no sync)."""
    if isinstance(pace, (int, float)) and not isinstance(pace, bool):
        return torch.full((1,), float(pace), device=device, dtype=torch.float32)
    if not torch.is_tensor(pace):
        raise ValueError(f"pace must be a float or a (B,) tensor, got {type(pace).__name__}")
    if not pace.is_floating_point():
        raise ValueError(f"pace must be a floating tensor, got {pace.dtype}")
    if pace.device != device:
        raise ValueError(f"pace is on {pace.device}, expected {device}")
    if pace.dim() > 1 or pace.numel() not in (1, batch):
        raise ValueError(f"pace must have shape (B,) = ({batch},) or one element, "
                         f"got {tuple(pace.shape)}")
    return pace.reshape(-1)


def _validate(enc_out: Tensor, durations: Tensor, max_len: int,
              out: Tensor | None) -> tuple[int, int, int]:
    check_tensor("enc_out", enc_out, 3, dtypes=FLOAT_DTYPES)
    b, t_text, c = enc_out.shape
    check_tensor("durations", durations, 2, device=enc_out.device, dtypes=FLOAT_DTYPES,
                 shape=(b, t_text))
    if t_text < 1:
        raise ValueError("enc_out/durations need at least one token (T_text >= 1)")
    if isinstance(max_len, bool) or not isinstance(max_len, int):
        raise ValueError(f"max_len must be a Python int (a static shape bucket), got "
                         f"{type(max_len).__name__}")
    if max_len < 0:
        raise ValueError(f"max_len must be >= 0, got {max_len}")
    if out is not None:
        check_tensor("out", out, 3, device=enc_out.device, dtypes=(enc_out.dtype,),
                     shape=(b, max_len, c))
    return b, t_text, c


def length_regulate(enc_out: Tensor, durations: Tensor, pace: Tensor | float, max_len: int,
                    *, out: Tensor | None = None, block_f: int | None = None,
                    block_c: int | None = None) -> tuple[Tensor, Tensor]:
    """Length-regulate ``enc_out`` by ``durations``.

    enc_out: (B, T_text, C) fp32/fp16/bf16, any strides; durations: (B, T_text) float frames;
    pace: (B,) float tensor (or one element / a float, shared); max_len: static output length.
    Returns (frames (B, max_len, C) in enc_out's dtype, zero past each row's length;
    mel_lens (B,) int64 clamped to max_len). ``out`` receives the frames if given.
    Falls back to :func:`reference` (logged once) where Triton cannot run.
    """
    b, t_text, c = _validate(enc_out, durations, max_len, out)
    pace_t = _pace_tensor(pace, b, enc_out.device)

    ok, why = triton_ready(enc_out.device)
    if not ok:
        log_fallback_once(OP, why)
        frames, lens = reference(enc_out, durations, pace_t, max_len)
        return (frames if out is None else out.copy_(frames)), lens

    if out is None:
        out = torch.empty(b, max_len, c, device=enc_out.device, dtype=enc_out.dtype)
    mel_lens = torch.empty(b, device=enc_out.device, dtype=torch.int64)
    if b == 0:
        return out, mel_lens
    ends = torch.empty(b, t_text, device=enc_out.device, dtype=torch.int32)  # scratch
    interpreted = interpret_env()
    # Under the interpreter, few large programs are much faster than many small ones.
    bf = block_f or (min(256, max(16, next_power_of_2(max_len))) if interpreted else 32)
    bc = block_c or min(512 if interpreted else 128, max(16, next_power_of_2(c)))
    bt = min(1024, max(16, next_power_of_2(t_text)))
    with device_ctx(enc_out):
        _ENDS_KERNEL[(b,)](durations, pace_t, ends, mel_lens, t_text, max_len,
                              *durations.stride(), pace_t.stride(0) if pace_t.numel() > 1 else 0,
                              BLOCK=bt, num_warps=4)
        if max_len > 0 and c > 0:
            grid = (cdiv(max_len, bf), cdiv(c, bc), b)
            _GATHER_KERNEL[grid](enc_out, ends, mel_lens, out, t_text, c, max_len,
                                    *enc_out.stride(), *out.stride(),
                                    N_STEPS=t_text.bit_length(), BLOCK_F=bf, BLOCK_C=bc,
                                    num_warps=4)
    return out, mel_lens


def reference(enc_out: Tensor, durations: Tensor, pace: Tensor | float,
              max_len: int) -> tuple[Tensor, Tensor]:
    """Pure-PyTorch :func:`length_regulate` (same arguments and results).

    Equals ``engine.models.fastpitch.regulate_len(durations, enc_out, pace, max_len=max_len)``
    for fp32 durations (that function does the repeat maths in the durations' dtype).
    """
    b, t_text, c = enc_out.shape
    pace_t = _pace_tensor(pace, b, enc_out.device).to(torch.float32).reshape(-1, 1)
    reps = torch.floor(durations.to(torch.float32) / pace_t + 0.5).clamp_min(0).long()
    ends = reps.cumsum(dim=1)  # (B, T_text)
    mel_lens = ends[:, -1]
    frames = torch.arange(max_len, device=enc_out.device)
    token = torch.searchsorted(ends, frames.expand(b, -1).contiguous(), right=True)
    token = token.clamp_max(t_text - 1)  # (B, max_len)
    out = torch.gather(enc_out, 1, token.unsqueeze(2).expand(-1, -1, c))
    valid = frames[None, :] < mel_lens[:, None]  # (B, max_len)
    return out * valid.unsqueeze(2).to(out.dtype), mel_lens.clamp_max(max_len)

