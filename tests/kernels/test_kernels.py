"""Triton kernels (``kernels/``) against their pure-PyTorch references and the engine modules.

Without CUDA the kernels run on CPU under the Triton interpreter. Triton reads
``TRITON_INTERPRET`` when it is first imported (its own ``@triton.jit`` library), when a kernel
is jitted and at launch. ``kernels.*`` import triton lazily, at the first launch that can run,
so a module-scoped fixture sets the variable while these tests run (and restores it after:
other test modules keep the CPU fallback they expect). If something imported triton without
it earlier in the process, the kernel tests skip with that reason rather than silently testing
the fallback.

Every case draws fresh random inputs from a new seed (printed in failure messages; set
``KERNELS_TEST_SEED`` to replay one). Output buffers are filled with NaN first, so an element a
kernel forgot to write fails the comparison. GPU-only cases (fp16/bf16, TF32, large shapes) are
marked ``gpu`` and skip cleanly without CUDA.
"""

from __future__ import annotations

import logging
import os
import secrets
from contextlib import contextmanager
from typing import Iterator

import pytest
import torch

import kernels.conv1d as kconv
import kernels.ffn as kffn
import kernels.length_regulator as klr
import kernels.resblock as krb
import kernels.utils as kutils
from engine.models.fastpitch import PositionwiseConvFF, regulate_len
from engine.models.hifigan import LRELU_SLOPE, ResBlock1

HAS_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")


@contextmanager
def _interpreter_env() -> Iterator[None]:
    """TRITON_INTERPRET=1 inside the block when there is no GPU; restored afterwards."""
    if HAS_CUDA:
        yield
        return
    prev = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        if prev is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = prev


def gpu_only(fn):
    """Mark ``gpu``, skip without CUDA, and skip (with the reason) if the kernels can't run."""
    fn = pytest.mark.usefixtures("triton_on")(fn)
    return pytest.mark.gpu(pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")(fn))


# (dtype, atol, rtol) per precision, and why:
# fp32: interpreter (numpy) or GPU with IEEE dots (no TF32): only the summation order differs
#   from PyTorch's conv, ~1e-6 on the O(1) outputs these tests produce.
F32 = (torch.float32, 1e-5, 1e-5)
# fp32 at production sizes (GPU only): reductions over up to C_in * K = 4608 products, whose
#   accumulation-order error grows ~sqrt(n) * eps (a few 1e-6 typical, the max over ~1e6
#   outputs a few times more).
F32_LARGE = (torch.float32, 5e-5, 1e-5)
# fp16 (GPU only): inputs, pre-activated inputs and intermediates rounded to fp16
#   (eps 9.8e-4) vs an fp32 reference of the same (fp16-valued) inputs; outputs O(1).
F16 = (torch.float16, 1e-2, 1e-2)
# bf16 (GPU only): same, with bf16's eps 7.8e-3.
BF16 = (torch.bfloat16, 6e-2, 3e-2)
# tf32 (GPU only, allow_tf32=True): 10-bit mantissa products, fp32 accumulation.
TF32 = (torch.float32, 1e-2, 1e-2)


@pytest.fixture(autouse=True, scope="module")
def _kernel_env() -> Iterator[None]:
    """Interpreter on CPU; exact fp32 convs in the PyTorch references on GPU (cuDNN defaults
    to TF32 for fp32 convs, which would make the reference the inexact side)."""
    prev_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    with _interpreter_env():
        yield
    torch.backends.cudnn.allow_tf32 = prev_tf32


@pytest.fixture
def triton_on() -> None:
    """Skip (with the reason) where the kernels cannot run, instead of testing the fallback."""
    ok, why = kutils.triton_ready(DEVICE)
    if not ok:
        pytest.skip(f"Triton kernels cannot run here: {why}")


@pytest.fixture
def seed() -> int:
    """A fresh seed per test (KERNELS_TEST_SEED replays one)."""
    s = int(os.environ.get("KERNELS_TEST_SEED", secrets.randbelow(2 ** 31)))
    torch.manual_seed(s)
    return s


def _nan_like_layout(b: int, c: int, t: int, layout: str, dtype: torch.dtype) -> torch.Tensor:
    """A NaN-filled (B, C, T) buffer, (B, C, T)- or (B, T, C)-contiguous."""
    if layout == "btc":
        return torch.full((b, t, c), float("nan"), device=DEVICE, dtype=dtype).transpose(1, 2)
    return torch.full((b, c, t), float("nan"), device=DEVICE, dtype=dtype)


def _randn_layout(b: int, c: int, t: int, layout: str, dtype: torch.dtype) -> torch.Tensor:
    if layout == "btc":
        return torch.randn(b, t, c, device=DEVICE).to(dtype).transpose(1, 2)
    return torch.randn(b, c, t, device=DEVICE).to(dtype)


def _assert_close(got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float,
                  what: str, seed: int) -> None:
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert not torch.isnan(got).any(), f"{what}: NaN in output (unwritten elements?) seed={seed}"
    err = (got.float() - want.float()).abs().max().item() if got.numel() else 0.0
    torch.testing.assert_close(got.float(), want.float(), atol=atol, rtol=rtol,
                               msg=lambda m: f"{what} (seed={seed}, max abs err {err:.3g}): {m}")


# --------------------------------------------------------------------------------------
# conv1d_fused
# --------------------------------------------------------------------------------------

LEAKY = ("leaky", LRELU_SLOPE)
# id: (B, C_in, C_out, T, K, dilation, pre_act, post_act, residual, layer_norm, layout,
#      (block_co, block_ci, block_t) or None for the launcher's choice)
CONV_CASES = {
    # several T/C tiles, T and C not multiples of the tile or powers of two
    "k3d1-tiled": (1, 20, 24, 37, 3, 1, None, None, False, False, "bct", (16, 16, 16)),
    "k7d3-leaky-relu-res": (2, 33, 17, 50, 7, 3, LEAKY, "relu", True, False, "bct",
                            (16, 16, 16)),
    # T=5 much smaller than the span 1 + 5 * 10 = 51: most taps read padding
    "k11d5-short-ln": (2, 24, 40, 5, 11, 5, "relu", None, True, True, "bct", None),
    "k11d1-short": (1, 16, 16, 8, 11, 1, LEAKY, None, False, False, "bct", (16, 16, 16)),
    "k3d3-tiled": (2, 19, 21, 40, 3, 3, "relu", None, False, False, "bct", (16, 16, 16)),
    "k7d5-tiled": (1, 17, 18, 44, 7, 5, LEAKY, None, True, False, "bct", (16, 16, 16)),
    "k11d3": (2, 18, 20, 41, 11, 3, LEAKY, None, True, False, "bct", None),
    # FastPitch's (B, T, C) layout, passed as transposed views (no copies)
    "k3-btc-res-ln": (2, 24, 30, 45, 3, 1, None, "relu", True, True, "btc", (32, 16, 16)),
    "k5d3-btc-leaky": (1, 18, 18, 26, 5, 3, ("leaky", 0.2), None, True, False, "btc",
                       (16, 16, 16)),
    "k1-pointwise": (2, 12, 5, 19, 1, 1, None, None, False, False, "bct", None),
    # HiFi-GAN conv_post-like: one output channel
    "cout1": (1, 20, 1, 33, 7, 1, ("leaky", 0.01), None, False, False, "bct", None),
}


def _conv_inputs(case: tuple, dtype: torch.dtype) -> tuple[dict, str, int, int, int]:
    b, c_in, c_out, t, k, d, pre, post, res, ln, layout, _ = case
    x = _randn_layout(b, c_in, t, layout, dtype)
    w = (torch.randn(c_out, c_in, k, device=DEVICE) / (c_in * k) ** 0.5).to(dtype)
    kw = dict(x=x, weight=w, bias=torch.randn(c_out, device=DEVICE).to(dtype), dilation=d,
              pre_act=pre, post_act=post,
              residual=_randn_layout(b, c_out, t, layout, dtype) if res else None,
              layer_norm=((torch.randn(c_out, device=DEVICE).to(dtype),
                           torch.randn(c_out, device=DEVICE).to(dtype), 1e-5) if ln else None))
    return kw, layout, b, c_out, t


def _upcast(kw: dict) -> dict:
    """The same arguments in fp32 (the reference for half-precision runs)."""
    out = {}
    for k, v in kw.items():
        if torch.is_tensor(v):
            v = v.float()
        elif k == "layer_norm" and v is not None:
            v = (v[0].float(), v[1].float(), v[2])
        out[k] = v
    return out


@pytest.mark.usefixtures("triton_on")
@pytest.mark.parametrize("case", list(CONV_CASES.values()), ids=list(CONV_CASES))
def test_conv1d_fused_matches_reference(case, seed):
    dtype, atol, rtol = F32  # fp32: see F32 above
    kw, layout, b, c_out, t = _conv_inputs(case, dtype)
    bco, bci, bt = case[-1] or (None, None, None)
    out = _nan_like_layout(b, c_out, t, layout, dtype)
    got = kconv.conv1d_fused(**kw, out=out, block_co=bco, block_ci=bci, block_t=bt)
    assert got is out
    _assert_close(got, kconv.reference(**kw), atol, rtol, "conv1d_fused", seed)
    # Allocating path (the output keeps the input's layout), with the weight in the packed
    # (K, C_out, C_in) memory layout: same values, other strides.
    packed = {**kw, "weight": kconv.pack_weight(kw["weight"])}
    assert packed["weight"].stride(1) == 1 and torch.equal(packed["weight"], kw["weight"])
    got2 = kconv.conv1d_fused(**packed, block_co=bco, block_ci=bci, block_t=bt)
    assert (got2.stride(1) == 1) == (layout == "btc")
    _assert_close(got2, kconv.reference(**kw), atol, rtol, "conv1d_fused (alloc, packed)", seed)


@pytest.mark.usefixtures("triton_on")
def test_conv1d_fused_in_place_residual(seed):
    dtype, atol, rtol = F32  # fp32: see F32 above
    x = torch.randn(2, 20, 29, device=DEVICE)
    w = torch.randn(20, 20, 5, device=DEVICE) / 10
    res = torch.randn(2, 20, 29, device=DEVICE)
    want = kconv.reference(x, w, None, 3, LEAKY, residual=res)
    got = kconv.conv1d_fused(x, w, None, 3, LEAKY, residual=res, out=res, block_t=16)
    assert got is res
    _assert_close(got, want, atol, rtol, "conv1d_fused in place", seed)


def _lengths_mask(lens: list[int], t: int, kind: str) -> torch.Tensor:
    """(B, T) padding mask (True / 1 on the first lens[b] steps) as ``kind``: 'bool',
    'float', or 'strided' (a bool (B, T) view with non-unit time stride)."""
    m = torch.arange(t, device=DEVICE)[None, :] < torch.tensor(lens, device=DEVICE)[:, None]
    if kind == "float":
        return m.float()
    if kind == "strided":
        return m.repeat_interleave(2, dim=1)[:, ::2]
    return m


# id: (CONV_CASES entry, row lengths, mask kind)
CONV_MASK_CASES = {
    "k3-btc-relu-bool": ("k3-btc-res-ln", [45, 7], "bool"),
    "k7d3-float": ("k7d3-leaky-relu-res", [50, 1], "float"),
    "k11d5-short-strided": ("k11d5-short-ln", [3, 5], "strided"),
    "k3d3-no-res": ("k3d3-tiled", [13, 40], "bool"),
}


@pytest.mark.usefixtures("triton_on")
@pytest.mark.parametrize("case", list(CONV_MASK_CASES.values()), ids=list(CONV_MASK_CASES))
def test_conv1d_fused_time_mask(case, seed):
    dtype, atol, rtol = F32  # fp32: see F32 above
    conv_case, lens, kind = case
    kw, layout, b, c_out, t = _conv_inputs(CONV_CASES[conv_case], dtype)
    mask = _lengths_mask(lens, t, kind)  # (B, T)
    bco, bci, bt = CONV_CASES[conv_case][-1] or (None, None, None)
    out = _nan_like_layout(b, c_out, t, layout, dtype)
    got = kconv.conv1d_fused(**kw, time_mask=mask, out=out, block_co=bco, block_ci=bci,
                             block_t=bt)
    want = kconv.reference(**kw, time_mask=mask)
    _assert_close(got, want, atol, rtol, "conv1d_fused time_mask", seed)
    # The reference is the unmasked op times the mask, before the residual and LayerNorm.
    if kw["residual"] is None and kw["layer_norm"] is None:
        assert torch.equal(want, kconv.reference(**kw) * mask[:, None, :].to(dtype))


def test_conv1d_fused_rejects_bad_arguments():
    x = torch.randn(1, 8, 10, device=DEVICE)
    w = torch.randn(16, 8, 3, device=DEVICE)
    with pytest.raises(ValueError, match="odd"):
        kconv.conv1d_fused(x, torch.randn(16, 8, 4, device=DEVICE))
    with pytest.raises(ValueError, match="input channels"):
        kconv.conv1d_fused(x, torch.randn(16, 9, 3, device=DEVICE))
    with pytest.raises(ValueError, match="dtype"):
        kconv.conv1d_fused(x, w.double())
    with pytest.raises(ValueError, match="pre_act"):
        kconv.conv1d_fused(x, w, pre_act="gelu")
    with pytest.raises(ValueError, match="post_act"):
        kconv.conv1d_fused(x, w, post_act=("leaky", 0.1))
    with pytest.raises(ValueError, match="dilation"):
        kconv.conv1d_fused(x, w, dilation=0)
    with pytest.raises(ValueError, match="residual"):
        kconv.conv1d_fused(x, w, residual=torch.randn(1, 16, 9, device=DEVICE))
    with pytest.raises(ValueError, match="overlap"):
        kconv.conv1d_fused(x, torch.randn(8, 8, 3, device=DEVICE), out=x)
    ln = (torch.ones(40, device=DEVICE), torch.zeros(40, device=DEVICE), 1e-5)
    with pytest.raises(ValueError, match="one C_out tile"):
        kconv.conv1d_fused(x, torch.randn(40, 8, 3, device=DEVICE), layer_norm=ln, block_co=32)
    with pytest.raises(ValueError, match="power of two"):
        kconv.conv1d_fused(x, w, block_t=24)
    with pytest.raises(ValueError, match="time_mask"):
        kconv.conv1d_fused(x, w, time_mask=torch.ones(1, 9, dtype=torch.bool, device=DEVICE))
    with pytest.raises(ValueError, match="time_mask"):
        kconv.conv1d_fused(x, w, time_mask=torch.ones(1, 10, dtype=torch.long, device=DEVICE))


# --------------------------------------------------------------------------------------
# length_regulate
# --------------------------------------------------------------------------------------

# id: (B, T_text, C, max_len, (block_f, block_c) or None, enc layout, pace kind)
LR_CASES = {
    "b1-short-rows": (1, 5, 7, 40, (16, 16), "btc", "tensor"),
    "b3-zero-durations": (3, 13, 40, 64, (16, 16), "btc", "tensor"),
    "rows-cut-at-max_len": (2, 40, 33, 50, None, "btc", "tensor"),
    "one-token": (2, 1, 5, 3, None, "btc", "float"),
    "strided-enc": (2, 9, 24, 37, (16, 16), "bct", "one"),
    "max_len-1": (3, 6, 16, 1, None, "btc", "tensor"),
}


def _durations(b: int, t_text: int) -> torch.Tensor:
    """Random non-negative durations: ~30% zeros, ~30% exact halves (rounding ties), rest
    arbitrary; some rows long enough to be cut by max_len in the cases above."""
    d = torch.rand(b, t_text, device=DEVICE) * 8
    u = torch.rand(b, t_text, device=DEVICE)
    d = torch.where(u < 0.3, torch.zeros_like(d), d)
    return torch.where(u > 0.7, torch.randint(0, 16, (b, t_text), device=DEVICE) / 2, d)


@pytest.mark.usefixtures("triton_on")
@pytest.mark.parametrize("case", list(LR_CASES.values()), ids=list(LR_CASES))
def test_length_regulate_matches_reference_and_engine(case, seed):
    b, t_text, c, max_len, blocks, layout, pace_kind = case
    dtype = torch.float32  # a pure copy: exact in any dtype, so compared with torch.equal
    enc = (torch.randn(b, c, t_text, device=DEVICE).transpose(1, 2) if layout == "bct"
           else torch.randn(b, t_text, c, device=DEVICE)).to(dtype)
    durs = _durations(b, t_text)
    if pace_kind == "float":
        pace = 1.0  # exact halves stay ties: round half up
    elif pace_kind == "one":
        pace = torch.tensor([2.0], device=DEVICE)
    else:
        pace = torch.rand(b, device=DEVICE) + 0.5
    out = torch.full((b, max_len, c), float("nan"), device=DEVICE, dtype=dtype)
    bf, bc = blocks or (None, None)
    frames, lens = klr.length_regulate(enc, durs, pace, max_len, out=out, block_f=bf,
                                       block_c=bc)
    ref_frames, ref_lens = klr.reference(enc, durs, pace, max_len)
    eng_frames, eng_lens = regulate_len(durs, enc, pace, max_len=max_len)
    assert frames is out
    assert lens.dtype == torch.int64 and lens.shape == (b,)
    assert torch.equal(lens, ref_lens), f"seed={seed}: {lens.tolist()} != {ref_lens.tolist()}"
    assert torch.equal(frames, ref_frames), f"seed={seed}: frames differ from the reference"
    assert torch.equal(ref_frames, eng_frames) and torch.equal(ref_lens, eng_lens), \
        f"seed={seed}: reference differs from engine.models.fastpitch.regulate_len"


@pytest.mark.usefixtures("triton_on")
def test_length_regulate_rounding_ties_and_cut(seed):
    # d / pace lands exactly on .5 (rounds up), on .5 - ulp (rounds down), and one row longer
    # than max_len: cut, mel_lens clamped.
    enc = torch.randn(2, 4, 16, device=DEVICE)
    durs = torch.tensor([[0.5, 1.5, 2.4999998, 0.0], [3.0, 5.0, 100.0, 7.0]], device=DEVICE)
    pace = torch.tensor([1.0, 2.0], device=DEVICE)
    frames, lens = klr.length_regulate(enc, durs, pace, 20)
    assert lens.tolist() == [1 + 2 + 2, 20]
    ref_frames, _ = regulate_len(durs, enc, pace, max_len=20)
    assert torch.equal(frames, ref_frames)
    assert torch.equal(frames[0, 5:], torch.zeros(15, 16, device=DEVICE))


@pytest.mark.usefixtures("triton_on")
def test_length_regulate_max_len_zero():
    frames, lens = klr.length_regulate(torch.randn(2, 3, 8, device=DEVICE),
                                       torch.ones(2, 3, device=DEVICE), 1.0, 0)
    assert frames.shape == (2, 0, 8) and lens.tolist() == [0, 0]


def test_length_regulate_rejects_bad_arguments():
    enc = torch.randn(2, 3, 8, device=DEVICE)
    durs = torch.ones(2, 3, device=DEVICE)
    with pytest.raises(ValueError, match="Python int"):
        klr.length_regulate(enc, durs, 1.0, torch.tensor(5))
    with pytest.raises(ValueError, match="durations"):
        klr.length_regulate(enc, torch.ones(2, 4, device=DEVICE), 1.0, 5)
    with pytest.raises(ValueError, match="pace"):
        klr.length_regulate(enc, durs, torch.ones(3, device=DEVICE), 5)
    with pytest.raises(ValueError, match="T_text >= 1"):
        klr.length_regulate(enc[:, :0], durs[:, :0], 1.0, 5)
    with pytest.raises(ValueError, match="out"):
        klr.length_regulate(enc, durs, 1.0, 5, out=torch.empty(2, 4, 8, device=DEVICE))


# --------------------------------------------------------------------------------------
# ResBlock1
# --------------------------------------------------------------------------------------

# id: (B, C, T, K, dilations)
RB_CASES = {
    "k3": (2, 24, 50, 3, (1, 3, 5)),
    "k7-T<span": (1, 20, 9, 7, (1, 3, 5)),  # span of the d=5 conv: 31 > T
    "k11": (2, 16, 70, 11, (1, 3, 5)),
    "k5-one-dilation": (1, 18, 31, 5, (2,)),
}


def _resblock_module(c: int, k: int, dilations: tuple[int, ...]) -> ResBlock1:
    m = ResBlock1(c, k, dilations).to(DEVICE).eval()
    with torch.no_grad():  # PyTorch's init is small; O(1) activations exercise more
        for conv in list(m.convs1) + list(m.convs2):
            conv.weight.normal_(0, (c * k) ** -0.5)
            conv.bias.normal_(0, 0.5)
    return m


def test_lrelu_slope_matches_engine():
    assert krb.LRELU_SLOPE == LRELU_SLOPE


@pytest.mark.usefixtures("triton_on")
@pytest.mark.parametrize("case", list(RB_CASES.values()), ids=list(RB_CASES))
def test_resblock1_matches_module(case, seed):
    dtype, atol, rtol = F32  # fp32: see F32 above
    b, c, t, k, dil = case
    m = _resblock_module(c, k, dil)
    x = torch.randn(b, c, t, device=DEVICE)
    params = krb.params_from_module(m)
    with torch.no_grad():
        want = m(x)
        ref = krb.reference(x, **params)
        out = torch.full_like(x, float("nan"))
        got = krb.resblock1(x, **params, out=out)
    assert got is out
    assert torch.equal(ref, want), "reference must be the module's own ops"
    _assert_close(got, want, atol, rtol, "resblock1", seed)


@pytest.mark.usefixtures("triton_on")
def test_resblock1_in_place(seed):
    dtype, atol, rtol = F32  # fp32: see F32 above
    m = _resblock_module(16, 3, (1, 3, 5))
    x = torch.randn(2, 16, 40, device=DEVICE)
    with torch.no_grad():
        want = m(x)
        got = krb.resblock1(x, **krb.params_from_module(m, pack=True), out=x)
    assert got is x
    _assert_close(got, want, atol, rtol, "resblock1 in place", seed)


# --------------------------------------------------------------------------------------
# PositionwiseConvFF
# --------------------------------------------------------------------------------------

# id: (B, T, d_model, d_inner, K, packed weights)
FFN_CASES = {
    "b2": (2, 30, 24, 40, 3, False),
    "b1-pow2": (1, 17, 32, 64, 3, False),
    "T<span-k5": (2, 2, 20, 36, 5, True),
    "b3-c48-packed": (3, 45, 48, 80, 3, True),
}


def _ffn_module(d: int, di: int, k: int) -> PositionwiseConvFF:
    m = PositionwiseConvFF(d, di, k, dropout=0.1).to(DEVICE).eval()
    with torch.no_grad():  # a non-trivial LayerNorm affine
        m.layer_norm.weight.normal_(1.0, 0.5)
        m.layer_norm.bias.normal_(0.0, 0.5)
    return m


@pytest.mark.usefixtures("triton_on")
@pytest.mark.parametrize("case", list(FFN_CASES.values()), ids=list(FFN_CASES))
def test_ffn_matches_module(case, seed):
    dtype, atol, rtol = F32  # fp32: see F32 above
    b, t, d, di, k, pack = case
    m = _ffn_module(d, di, k)
    x = torch.randn(b, t, d, device=DEVICE)
    params = kffn.params_from_module(m, pack=pack)
    with torch.no_grad():
        want = m(x)
        ref = kffn.reference(x, **kffn.params_from_module(m))
        out = torch.full_like(x, float("nan"))
        got = kffn.positionwise_conv_ff(x, **params, out=out)
    assert got.data_ptr() == out.data_ptr() and got.shape == x.shape
    assert torch.equal(ref, want), "reference must be the module's own ops"
    _assert_close(got, want, atol, rtol, "ffn", seed)


# id: (B, T, d_model, d_inner, K, packed weights, row lengths, mask dtype)
FFN_MASK_CASES = {
    # a full row, a one-step row and one in between (solo-equivalent batching)
    "b3-lens-bool": (3, 21, 24, 40, 3, True, [21, 1, 9], torch.bool),
    # odd widths, not powers of two; T spans several time tiles under the block sizes used
    "b2-odd-k5-float": (2, 37, 20, 36, 5, False, [30, 37], torch.float32),
    # T shorter than the kernel span; every row but one padded
    "b4-short-k5": (4, 3, 16, 24, 5, True, [3, 2, 1, 1], torch.bool),
    # all rows full: the masked path must equal the unmasked one
    "b2-full": (2, 19, 48, 80, 3, True, [19, 19], torch.bool),
}


@pytest.mark.usefixtures("triton_on")
@pytest.mark.parametrize("case", list(FFN_MASK_CASES.values()), ids=list(FFN_MASK_CASES))
def test_ffn_with_mask_matches_module(case, seed):
    dtype, atol, rtol = F32  # fp32: see F32 above
    b, t, d, di, k, pack, lens, mask_dtype = case
    m = _ffn_module(d, di, k)
    x = torch.randn(b, t, d, device=DEVICE)  # nonzero at padded steps too
    mask = _lengths_mask(lens, t, "bool").unsqueeze(2).to(mask_dtype)  # (B, T, 1)
    params = kffn.params_from_module(m, pack=pack)
    with torch.no_grad():
        want = m(x, mask)
        ref = kffn.reference(x, **kffn.params_from_module(m), mask=mask)
        out = torch.full_like(x, float("nan"))
        got = kffn.positionwise_conv_ff(x, **params, mask=mask, out=out)
        unmasked = kffn.positionwise_conv_ff(x, **params)
    assert got.data_ptr() == out.data_ptr() and got.shape == x.shape
    assert torch.equal(ref, want), "reference must be the module's own ops"
    _assert_close(got, want, atol, rtol, "ffn with mask", seed)
    if min(lens) == t:
        _assert_close(got, unmasked, atol, rtol, "ffn full mask vs no mask", seed)
    else:  # the mask must matter: padding leaks into the unmasked rows' last real steps
        assert not torch.allclose(got, unmasked, atol=atol, rtol=rtol)


@pytest.mark.usefixtures("triton_on")
def test_ffn_with_mask_solo_equivalent(seed):
    """A padded row with the mask equals the row run alone (what the runner relies on)."""
    dtype, atol, rtol = F32  # fp32: see F32 above
    m = _ffn_module(24, 40, 3)
    params = kffn.params_from_module(m, pack=True)
    x = torch.randn(2, 17, 24, device=DEVICE)
    mask = _lengths_mask([17, 6], 17, "bool").unsqueeze(2)  # (B, T, 1)
    batched = kffn.positionwise_conv_ff(x * mask, **params, mask=mask)
    solo = kffn.positionwise_conv_ff(x[1:, :6].contiguous(), **params)
    _assert_close(batched[1:, :6], solo, atol, rtol, "ffn padded row vs solo", seed)


def test_ffn_rejects_bad_mask():
    m = _ffn_module(16, 24, 3)
    params = kffn.params_from_module(m)
    x = torch.randn(2, 7, 16, device=DEVICE)
    for bad in (torch.ones(2, 7, dtype=torch.bool, device=DEVICE),  # (B, T): missing the 1
                torch.ones(2, 6, 1, dtype=torch.bool, device=DEVICE),  # wrong T
                torch.ones(2, 7, 1, dtype=torch.long, device=DEVICE)):  # not float/bool
        with pytest.raises(ValueError, match="mask"):
            kffn.positionwise_conv_ff(x, **params, mask=bad)


# --------------------------------------------------------------------------------------
# fallback (Triton unavailable)
# --------------------------------------------------------------------------------------


def _run_all_ops() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(launcher result, reference result) for every op on small inputs."""
    x = torch.randn(2, 12, 20, device=DEVICE)
    w = torch.randn(12, 12, 3, device=DEVICE) / 6
    enc, durs = torch.randn(2, 5, 8, device=DEVICE), torch.rand(2, 5, device=DEVICE) * 4
    rb = _resblock_module(12, 3, (1, 3))
    ff = _ffn_module(16, 24, 3)
    xf = torch.randn(2, 11, 16, device=DEVICE)
    mf = _lengths_mask([11, 4], 11, "bool").unsqueeze(2)  # (B, T, 1)
    with torch.no_grad():
        return {
            "conv1d": (kconv.conv1d_fused(x, w, None, 3, LEAKY, residual=x.clone()),
                       kconv.reference(x, w, None, 3, LEAKY, residual=x.clone())),
            "length_regulator": (klr.length_regulate(enc, durs, 1.0, 12)[0],
                                 klr.reference(enc, durs, 1.0, 12)[0]),
            "resblock1": (krb.resblock1(x, **krb.params_from_module(rb)), rb(x)),
            "ffn": (kffn.positionwise_conv_ff(xf, **kffn.params_from_module(ff)), ff(xf)),
            "ffn (mask)": (kffn.positionwise_conv_ff(xf, **kffn.params_from_module(ff), mask=mf),
                           ff(xf, mf)),
        }


@pytest.mark.parametrize("how", ["kill-switch", "no-triton"])
def test_fallback_returns_reference_and_logs_once(how, monkeypatch, caplog):
    if how == "kill-switch":
        monkeypatch.setenv("FPSTREAM_NO_TRITON", "1")
        reason = "FPSTREAM_NO_TRITON"
    else:  # what a machine without triton sees
        monkeypatch.setattr(kutils, "HAS_TRITON", False)
        reason = "not installed"
    kutils.reset_fallback_log()
    caplog.set_level(logging.WARNING, logger=kutils.logger.name)
    for _ in range(2):  # the second round must not log again
        for op, (got, want) in _run_all_ops().items():
            assert torch.equal(got, want), f"{op}: fallback must return the reference result"
    for op in ("conv1d", "length_regulator", "resblock1", "ffn"):
        msgs = [r.getMessage() for r in caplog.records if f"kernels.{op}:" in r.getMessage()]
        assert len(msgs) == 1, f"{op}: expected one fallback log, got {msgs}"
        assert reason in msgs[0]
    kutils.reset_fallback_log()


def test_triton_ready_reasons(monkeypatch):
    monkeypatch.setenv("FPSTREAM_NO_TRITON", "1")
    assert kutils.triton_ready("cpu") == (False, "disabled by FPSTREAM_NO_TRITON=1")
    monkeypatch.delenv("FPSTREAM_NO_TRITON")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    ok, why = kutils.triton_ready("cpu")
    assert not ok and ("not CUDA" in why or "not installed" in why)
    monkeypatch.setattr(kutils, "HAS_TRITON", False)
    assert kutils.triton_ready("cuda") == (False, "triton is not installed")


def test_utils_helpers():
    assert [kutils.next_power_of_2(n) for n in (0, 1, 2, 3, 16, 17, 384)] == \
        [1, 1, 2, 4, 16, 32, 512]
    assert kutils.cdiv(37, 16) == 3 and kutils.cdiv(32, 16) == 2
    a = torch.zeros(4, 5)
    assert kutils.overlaps(a[1:3], a) and not kutils.overlaps(a[:2], a[2:])
    btc = torch.zeros(2, 7, 3).transpose(1, 2)  # (B, C, T) view of (B, T, C)
    buf = kutils.same_layout_empty(btc, 5)
    assert buf.shape == (2, 5, 7) and buf.stride(1) == 1


# --------------------------------------------------------------------------------------
# GPU only: half precision, TF32, production shapes
# --------------------------------------------------------------------------------------

# id: (B, C_in, C_out, T, K, dilation, pre_act, post_act, residual, layer_norm, layout, blocks)
GPU_CONV_CASES = {
    "hifigan-256-k11d5": (2, 256, 256, 2000, 11, 5, LEAKY, None, True, False, "bct", None),
    "hifigan-32-k3d1": (4, 32, 32, 8193, 3, 1, LEAKY, None, True, False, "bct", None),
    "fastpitch-conv1": (4, 384, 1536, 501, 3, 1, None, "relu", False, False, "btc", None),
    "fastpitch-conv2-ln": (4, 1536, 384, 501, 3, 1, None, None, True, True, "btc", None),
}


@gpu_only
@pytest.mark.parametrize("prec", [F32_LARGE, F16, BF16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", list(GPU_CONV_CASES.values()), ids=list(GPU_CONV_CASES))
def test_gpu_conv1d_fused_large(case, prec, seed):
    dtype, atol, rtol = prec  # see F32_LARGE / F16 / BF16 above
    kw, layout, b, c_out, t = _conv_inputs(case, dtype)
    out = _nan_like_layout(b, c_out, t, layout, dtype)
    got = kconv.conv1d_fused(**kw, out=out)
    assert got.dtype == dtype
    _assert_close(got, kconv.reference(**_upcast(kw)), atol, rtol, f"conv1d {dtype}", seed)


@gpu_only
def test_gpu_conv1d_fused_tf32(seed):
    dtype, atol, rtol = TF32  # see TF32 above
    kw, layout, b, c_out, t = _conv_inputs(GPU_CONV_CASES["hifigan-256-k11d5"], dtype)
    got = kconv.conv1d_fused(**kw, allow_tf32=True)
    _assert_close(got, kconv.reference(**kw), atol, rtol, "conv1d tf32", seed)


def _round_params_(m: torch.nn.Module, dtype: torch.dtype) -> None:
    """Round a module's fp32 parameters to ``dtype`` values (kept in fp32), so the fp32 module
    is the exact reference for a run on the ``dtype`` copies."""
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.to(dtype).float())


@gpu_only
@pytest.mark.parametrize("prec", [F32_LARGE, F16, BF16], ids=["fp32", "fp16", "bf16"])
def test_gpu_resblock1_hifigan_v1(prec, seed):
    dtype, atol, rtol = prec  # see F32_LARGE / F16 / BF16 above
    for c, t, k in ((256, 1024, 11), (128, 4096, 7), (32, 16384, 3)):  # V1 stage widths
        m = _resblock_module(c, k, (1, 3, 5))
        _round_params_(m, dtype)
        x = torch.randn(2, c, t, device=DEVICE).to(dtype)
        params = {key: ([p.to(dtype) for p in v] if isinstance(v, list) else v)
                  for key, v in krb.params_from_module(m).items()}
        with torch.no_grad():
            want = m(x.float())
            got = krb.resblock1(x, **params, out=torch.full_like(x, float("nan")))
        # Three residual sums of O(1) terms: outputs reach ~3x the size of one conv's, and
        # so do the rounding errors of the half-precision intermediates.
        _assert_close(got, want, atol * 3, rtol, f"resblock1 C={c} {dtype}", seed)


@gpu_only
@pytest.mark.parametrize("prec", [F32_LARGE, F16, BF16], ids=["fp32", "fp16", "bf16"])
def test_gpu_ffn_nvidia_size(prec, seed):
    dtype, atol, rtol = prec  # see F32_LARGE / F16 / BF16 above
    m = _ffn_module(384, 1536, 3)
    _round_params_(m, dtype)
    x = torch.randn(8, 400, 384, device=DEVICE).to(dtype)
    params = {k: (v.to(dtype) if torch.is_tensor(v) and k.startswith("conv") else v)
              for k, v in kffn.params_from_module(m).items()}
    mask = _lengths_mask([400, 399, 250, 1, 400, 17, 300, 64], 400, "bool").unsqueeze(2)
    with torch.no_grad():
        want = m(x.float())
        got = kffn.positionwise_conv_ff(x, **params)
        want_masked = m(x.float(), mask)
        got_masked = kffn.positionwise_conv_ff(x, **params, mask=mask)
    assert got.dtype == dtype and got_masked.dtype == dtype
    _assert_close(got, want, atol, rtol, f"ffn {dtype}", seed)
    _assert_close(got_masked, want_masked, atol, rtol, f"ffn with mask {dtype}", seed)


@gpu_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_length_regulate_large(dtype, seed):
    b, t_text, c, max_len = 8, 300, 384, 2048  # a copy: exact in every dtype
    enc = torch.randn(b, t_text, c, device=DEVICE).to(dtype)
    durs = _durations(b, t_text)
    pace = torch.rand(b, device=DEVICE) + 0.5
    frames, lens = klr.length_regulate(enc, durs, pace, max_len)
    ref_frames, ref_lens = klr.reference(enc, durs, pace, max_len)
    assert torch.equal(lens, ref_lens) and torch.equal(frames, ref_frames), f"seed={seed}"
    if dtype == torch.float32:
        eng_frames, eng_lens = regulate_len(durs, enc, pace, max_len=max_len)
        assert torch.equal(frames, eng_frames) and torch.equal(lens, eng_lens)
