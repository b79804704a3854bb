"""HiFi-GAN generator (jik876 V1 / NVIDIA hub layout) and NVIDIA's denoiser.

The generator is built with plain convolutions: weight norm is folded into the weights when a
checkpoint is loaded (:func:`fold_weight_norm`), so inference runs no reparametrisation.
Parameter names are NVIDIA's nested ``resblocks.{stage}.{kernel}``; jik876's flat names are
mapped on load (:mod:`engine.models.weights`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import audio as audio_lib
from ..config import HiFiGANConfig
from ..errors import InputError

LRELU_SLOPE = 0.1


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """Per dilation d: lrelu -> conv(K, d) -> lrelu -> conv(K, 1) -> + input.

    ``fused``: an optional replacement for the eval-mode forward, ``fused(x) -> (B, C, T)``
    computing the same thing (default None: plain PyTorch). Only the runner
    (:mod:`engine.runtime.runner`) sets it, to the fused Triton kernel, and only while it runs
    the model; it is ignored in training mode.
    """

    fused: Callable[[Tensor], Tensor] | None = None

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, 1, dilation=d,
                      padding=get_padding(kernel_size, d))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, 1, dilation=1,
                      padding=get_padding(kernel_size, 1))
            for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T) -> (B, C, T)
        if self.fused is not None and not self.training:
            return self.fused(x)
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c1(F.leaky_relu(x, LRELU_SLOPE))
            xt = c2(F.leaky_relu(xt, LRELU_SLOPE))
            x = xt + x
        return x


class Generator(nn.Module):
    """Mel (B, 80, T) natural-log -> audio (B, 1, T * hop) in [-1, 1]."""

    def __init__(self, config: HiFiGANConfig = HiFiGANConfig()):
        super().__init__()
        self.config = c = config
        self.num_kernels = len(c.resblock_kernel_sizes)
        self.num_upsamples = len(c.upsample_rates)
        ch = c.upsample_initial_channel
        self.conv_pre = nn.Conv1d(c.num_mels, ch, 7, 1, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(ch // 2 ** i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes))
        )
        self.resblocks = nn.ModuleList(
            nn.ModuleList(
                ResBlock1(ch // 2 ** (i + 1), k, tuple(d))
                for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes)
            )
            for i in range(self.num_upsamples)
        )
        self.conv_post = nn.Conv1d(ch // 2 ** self.num_upsamples, 1, 7, 1, padding=3)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def forward(self, mel: Tensor) -> Tensor:
        if mel.dim() != 3 or mel.size(1) != self.config.num_mels:
            raise InputError(f"HiFi-GAN expects a (batch, {self.config.num_mels}, frames) mel, "
                             f"got shape {tuple(mel.shape)}")
        x = self.conv_pre(mel)
        for up, blocks in zip(self.ups, self.resblocks):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / self.num_kernels
        x = F.leaky_relu(x)  # slope 0.01 here (PyTorch's default), as in the original
        return torch.tanh(self.conv_post(x))

    def receptive_field_frames(self) -> tuple[int, int]:
        """(left, right): how many mel frames before / after its own frame can influence an
        output sample, maximised over the sample's position within its frame.

        Exact for this architecture: an influence interval is walked back from one output
        sample through conv_post, each stage's widest resblock, each transposed conv and
        conv_pre. Windows with at least this much context reproduce a whole-mel pass.
        """
        c = self.config
        res_reach = [max(sum(get_padding(k, d) + get_padding(k, 1) for d in dil)
                         for k, dil in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes))
                     for _ in c.upsample_rates]
        hop = self.hop_length
        base = 1000 * hop  # far from 0 so integer floors behave
        left = right = 0
        for r in range(hop):
            s = base + r
            lo, hi = s - 3, s + 3  # conv_post
            for u, k, reach in reversed(list(zip(c.upsample_rates, c.upsample_kernel_sizes,
                                                  res_reach))):
                lo, hi = lo - reach, hi + reach  # resblocks at this resolution
                p = (k - u) // 2
                lo, hi = -((-(lo + p - k + 1)) // u), (hi + p) // u  # transposed conv
            lo, hi = lo - 3, hi + 3  # conv_pre
            frame = s // hop
            left, right = max(left, frame - lo), max(right, hi - frame)
        return left, right


def fold_weight_norm(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Replace every ``X.weight_g`` / ``X.weight_v`` pair by ``X.weight = g * v / ||v||``.

    The norm is over all dimensions but 0 (torch's weight_norm with dim=0): for Conv1d g is
    (out, 1, 1); for ConvTranspose1d, whose weight is (in, out, k), it is (in, 1, 1).
    Also accepts torch's newer parametrize form (``X.parametrizations.weight.original0/1``).
    """
    out: dict[str, Tensor] = {}
    pairs: dict[str, dict[str, Tensor]] = {}
    for k, v in state_dict.items():
        for g_suf, v_suf in ((".weight_g", ".weight_v"),
                             (".parametrizations.weight.original0",
                              ".parametrizations.weight.original1")):
            if k.endswith(g_suf):
                pairs.setdefault(k[: -len(g_suf)], {})["g"] = v
                break
            if k.endswith(v_suf):
                pairs.setdefault(k[: -len(v_suf)], {})["v"] = v
                break
        else:
            out[k] = v
    for name, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            missing = "weight_v" if "g" in gv else "weight_g"
            raise KeyError(f"{name}: weight norm pair is missing its {missing}")
        g, v = gv["g"].float(), gv["v"].float()
        norm = v.flatten(1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))
        out[name + ".weight"] = g.reshape(norm.shape) * v / norm
    return out


class Denoiser(nn.Module):
    """Removes the generator's constant bias hum (NVIDIA's denoiser, mode 'zeros').

    The bias spectrum is the STFT magnitude of the first frame of the generator's output for
    an all-zeros (1, 80, 88) mel. ``forward(audio (B, N), strength)`` subtracts
    ``strength * bias`` from every frame's magnitude, keeps the phase and inverts the STFT.
    """

    def __init__(self, generator: Generator, filter_length: int = 1024, n_overlap: int = 4,
                 win_length: int = 1024):
        super().__init__()
        self.filter_length = filter_length
        self.hop_length = filter_length // n_overlap
        self.win_length = win_length
        p = next(generator.parameters())
        with torch.no_grad():
            zeros = torch.zeros(1, generator.config.num_mels, 88, dtype=p.dtype, device=p.device)
            bias_audio = generator(zeros).float().squeeze(1)  # (1, 88 * hop)
            spec = audio_lib.stft(bias_audio, filter_length, self.hop_length, win_length)
        self.register_buffer("bias_spec", spec.abs()[:, :, 0:1])  # (1, 513, 1)

    def forward(self, audio: Tensor, strength: float = 0.1) -> Tensor:
        """audio: (B, N) or (N,) float -> (B, 1, N)."""
        if audio.dim() == 1:
            audio = audio[None]
        if audio.dim() == 3 and audio.size(1) == 1:
            audio = audio.squeeze(1)
        dtype = audio.dtype
        x = audio.float()
        spec = audio_lib.stft(x, self.filter_length, self.hop_length, self.win_length)
        mag = torch.clamp(spec.abs() - self.bias_spec * float(strength), min=0.0)
        out = audio_lib.istft(torch.polar(mag, spec.angle()), x.size(-1), self.filter_length,
                              self.hop_length, self.win_length)
        return out.unsqueeze(1).to(dtype)
