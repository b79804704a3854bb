"""FastPitch 1.1, readable top to bottom.

Text ids -> encoder (FFT stack) -> duration / pitch / energy predictors -> length regulator
-> decoder (FFT stack) -> linear projection to an 80-band natural-log mel.

Module and parameter names equal NVIDIA's, so a hub checkpoint's ``state_dict`` loads
strictly (after removing any ``module.`` prefix; see :mod:`engine.models.weights`). The numerics
follow NVIDIA's FastPitch code, including the places where
padded positions are *not* masked, so batched outputs equal NVIDIA's padded computation.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import FastPitchConfig
from ..errors import InputError
from .pitch_transform import PitchTransform

# Used by NVIDIA's infer() only when the pitch_std buffer is 0 (an untrained/odd checkpoint).
FALLBACK_PITCH_MEAN = 218.14
FALLBACK_PITCH_STD = 67.24


def mask_from_lens(lens: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True on real positions."""
    if max_len is None:
        max_len = int(lens.max())
    ids = torch.arange(max_len, device=lens.device)
    return ids[None, :] < lens[:, None]


# --------------------------------------------------------------------------------------
# Transformer blocks
# --------------------------------------------------------------------------------------


class PositionalEmbedding(nn.Module):
    """Sinusoidal positions: [sin(p*f_i) ..., cos(p*f_i) ...], sines first, not interleaved."""

    def __init__(self, d_model: int):
        super().__init__()
        inv_freq = 1 / (10000 ** (torch.arange(0.0, d_model, 2.0) / d_model))
        self.register_buffer("inv_freq", inv_freq)  # (d_model/2,); stored in checkpoints

    def forward(self, pos_seq: Tensor) -> Tensor:
        angles = torch.matmul(pos_seq.unsqueeze(-1), self.inv_freq.unsqueeze(0))  # (T, d/2)
        return torch.cat([angles.sin(), angles.cos()], dim=1)[None]  # (1, T, d)


class MultiHeadAttn(nn.Module):
    """Post-LayerNorm self-attention. Inner width n_head*d_head may differ from d_model."""

    def __init__(self, n_head: int, d_model: int, d_head: int, dropout: float, dropatt: float):
        super().__init__()
        self.n_head, self.d_head = n_head, d_head
        self.scale = 1 / (d_head ** 0.5)
        self.qkv_net = nn.Linear(d_model, 3 * n_head * d_head)
        self.drop = nn.Dropout(dropout)
        self.dropatt = nn.Dropout(dropatt)
        self.o_net = nn.Linear(n_head * d_head, d_model, bias=False)
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        # x: (B, T, d_model); key_mask: (B, T) True on real positions.
        B, T, _ = x.shape
        q, k, v = self.qkv_net(x).chunk(3, dim=2)  # each (B, T, H*dh), heads contiguous
        q, k, v = (t.view(B, T, self.n_head, self.d_head).transpose(1, 2) for t in (q, k, v))
        score = torch.matmul(q, k.transpose(2, 3)) * self.scale  # (B, H, T, T)
        # Padded keys get -inf. (NVIDIA mixes batch items here when H > 1 and B > 1; the
        # reference calls that a bug, so we mask each row with its own keys.)
        score = score.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        prob = self.dropatt(F.softmax(score, dim=3))
        out = torch.matmul(prob, v).transpose(1, 2).reshape(B, T, self.n_head * self.d_head)
        out = self.drop(self.o_net(out))
        return self.layer_norm(x + out)


class PositionwiseConvFF(nn.Module):
    """Conv1d -> ReLU -> Conv1d, residual, LayerNorm (post-norm).

    ``fused``: an optional replacement for the eval-mode forward, ``fused(x, mask) -> (B, T,
    d_model)`` computing the same thing (default None: plain PyTorch). Only the runner
    (:mod:`engine.runtime.runner`) sets it, to the fused Triton kernel, and only while it runs
    the model; it is ignored in training mode.
    """

    fused: Callable[[Tensor, Tensor | None], Tensor] | None = None

    def __init__(self, d_model: int, d_inner: int, kernel_size: int, dropout: float):
        super().__init__()
        self.CoreNet = nn.Sequential(
            nn.Conv1d(d_model, d_inner, kernel_size, padding=kernel_size // 2),
            nn.ReLU(),
            nn.Conv1d(d_inner, d_model, kernel_size, padding=kernel_size // 2),
            nn.Dropout(dropout),
        )
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        # x: (B, T, d_model). NVIDIA leaves the hidden activation unmasked, so the second conv
        # reads nonzero values one step past a padded row's end; ``mask`` (B, T, 1) zeroes
        # them, making a padded row equal its solo run.
        if self.fused is not None and not self.training:
            return self.fused(x, mask)
        if mask is None:
            core = self.CoreNet(x.transpose(1, 2))
        else:
            conv1, relu, conv2, drop = self.CoreNet
            hidden = relu(conv1(x.transpose(1, 2))) * mask.transpose(1, 2).to(x.dtype)
            core = drop(conv2(hidden))
        return self.layer_norm(x + core.transpose(1, 2))


class TransformerLayer(nn.Module):
    def __init__(self, n_head: int, d_model: int, d_head: int, d_inner: int, kernel_size: int,
                 dropout: float, dropatt: float):
        super().__init__()
        self.dec_attn = MultiHeadAttn(n_head, d_model, d_head, dropout, dropatt)
        self.pos_ff = PositionwiseConvFF(d_model, d_inner, kernel_size, dropout)

    def forward(self, x: Tensor, mask: Tensor, mask_hidden: bool = False) -> Tensor:
        # mask: (B, T, 1) float/bool; pads are zeroed after each sub-block.
        x = self.dec_attn(x, key_mask=mask.squeeze(2).bool()) * mask
        return self.pos_ff(x, mask if mask_hidden else None) * mask


class FFTransformer(nn.Module):
    """The encoder (with a token embedding) or decoder (without) stack."""

    def __init__(self, n_layer: int, n_head: int, d_model: int, d_head: int, d_inner: int,
                 kernel_size: int, dropout: float, dropatt: float, dropemb: float = 0.0,
                 embed_input: bool = True, n_embed: int | None = None, padding_idx: int = 0):
        super().__init__()
        self.padding_idx = padding_idx
        self.word_emb = (nn.Embedding(n_embed, d_model, padding_idx=padding_idx)
                         if embed_input else None)
        self.pos_emb = PositionalEmbedding(d_model)
        self.drop = nn.Dropout(dropemb)
        self.layers = nn.ModuleList(
            TransformerLayer(n_head, d_model, d_head, d_inner, kernel_size, dropout, dropatt)
            for _ in range(n_layer)
        )

    def forward(self, inp: Tensor, seq_lens: Tensor | None = None,
                conditioning: Tensor | float = 0,
                mask_hidden: bool = False) -> tuple[Tensor, Tensor]:
        """inp: (B, T) ids for the encoder, or (B, T, d_model) frames + seq_lens for the
        decoder. Returns (out (B, T, d_model), mask (B, T, 1) bool). ``mask_hidden`` masks
        the feed-forward hidden activations too (solo-equivalent batching)."""
        if self.word_emb is None:
            x = inp
            mask = mask_from_lens(seq_lens, inp.size(1)).unsqueeze(2)
        else:
            x = self.word_emb(inp)
            mask = (inp != self.padding_idx).unsqueeze(2)
        pos_seq = torch.arange(x.size(1), device=x.device, dtype=x.dtype)
        pos = self.pos_emb(pos_seq) * mask
        out = self.drop(x + pos + conditioning)
        for layer in self.layers:
            out = layer(out, mask=mask, mask_hidden=mask_hidden)
        return out, mask


# --------------------------------------------------------------------------------------
# Predictors and the training-time aligner
# --------------------------------------------------------------------------------------


class ConvReLUNorm(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(out_ch)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T) -> (B, C_out, T)
        x = F.relu(self.conv(x))
        return self.dropout(self.norm(x.transpose(1, 2)).transpose(1, 2))


class TemporalPredictor(nn.Module):
    """Duration / pitch / energy predictor: n x (conv, ReLU, LayerNorm), then a linear."""

    def __init__(self, in_ch: int, filter_size: int, kernel_size: int, dropout: float,
                 n_layers: int, n_predictions: int = 1):
        super().__init__()
        self.layers = nn.Sequential(*[
            ConvReLUNorm(in_ch if i == 0 else filter_size, filter_size, kernel_size, dropout)
            for i in range(n_layers)
        ])
        self.fc = nn.Linear(filter_size, n_predictions, bias=True)

    def forward(self, enc_out: Tensor, enc_mask: Tensor, mask_hidden: bool = False) -> Tensor:
        # enc_out: (B, T, C), enc_mask: (B, T, 1) -> (B, T, n_predictions).
        # NVIDIA leaves hidden activations at pads unmasked, so a padded row "sees" nonzero
        # values past its end; mask_hidden zeroes them, making each row equal its solo run.
        x = enc_out * enc_mask
        if mask_hidden:
            m = enc_mask.transpose(1, 2).to(x.dtype)  # (B, 1, T)
            x = x.transpose(1, 2)
            for layer in self.layers:
                x = layer(x) * m
            x = x.transpose(1, 2)
        else:
            x = self.layers(x.transpose(1, 2)).transpose(1, 2)
        return self.fc(x) * enc_mask


class ConvNorm(nn.Module):
    """A Conv1d wrapped as NVIDIA names it (``.conv``), 'same' padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class ConvAttention(nn.Module):
    """The unsupervised text-to-mel aligner of FastPitch 1.1 (training only).

    Scores are negative scaled squared distances between projected mel frames (queries) and
    projected text (keys), combined with a log attention prior. ``attn_proj`` is kept for
    state-dict compatibility; the distance form does not use it.
    """

    def __init__(self, n_mel_channels: int = 80, n_text_channels: int = 384,
                 n_att_channels: int = 80, temperature: float = 0.0005):
        super().__init__()
        self.temperature = temperature
        self.key_proj = nn.Sequential(
            ConvNorm(n_text_channels, n_text_channels * 2, 3), nn.ReLU(),
            ConvNorm(n_text_channels * 2, n_att_channels, 1),
        )
        self.query_proj = nn.Sequential(
            ConvNorm(n_mel_channels, n_mel_channels * 2, 3), nn.ReLU(),
            ConvNorm(n_mel_channels * 2, n_mel_channels, 1), nn.ReLU(),
            ConvNorm(n_mel_channels, n_att_channels, 1),
        )
        self.attn_proj = nn.Conv2d(n_att_channels, 1, kernel_size=1)

    def forward(self, queries: Tensor, keys: Tensor, key_mask: Tensor | None = None,
                attn_prior: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """queries: (B, 80, T_mel) mel; keys: (B, C, T_text) text embeddings; key_mask:
        (B, T_text) True on pads; attn_prior: (B, T_mel, T_text).
        Returns (soft attention, log-probabilities), both (B, 1, T_mel, T_text)."""
        q = self.query_proj(queries)  # (B, A, T_mel)
        k = self.key_proj(keys)  # (B, A, T_text)
        dist = (q[:, :, :, None] - k[:, :, None, :]) ** 2
        logits = -self.temperature * dist.sum(1, keepdim=True)  # (B, 1, T_mel, T_text)
        if attn_prior is not None:
            logits = F.log_softmax(logits, dim=3) + torch.log(attn_prior[:, None] + 1e-8)
        logprob = logits
        if key_mask is not None:
            # A large finite fill: -inf gives NaN gradients in the forward-sum loss on CPU.
            logits = logits.masked_fill(key_mask[:, None, None, :], -1e4)
        return F.softmax(logits, dim=3), logprob


# --------------------------------------------------------------------------------------
# Length regulator
# --------------------------------------------------------------------------------------


def regulate_len(durations: Tensor, enc_out: Tensor, pace: Tensor | float = 1.0,
                 max_len: int | None = None) -> tuple[Tensor, Tensor]:
    """Repeat each token's vector by its paced, rounded duration.

    durations: (B, T_text) float frames; enc_out: (B, T_text, C); pace: float or (B,).
    repeats = floor(d / pace + 0.5) (round half up, in the duration dtype, as NVIDIA).
    Returns (frames (B, T_mel, C) zero past each row's length, mel_lens (B,) int64).
    ``max_len`` fixes T_mel (static shapes); rows longer than it are cut.
    """
    if not torch.is_tensor(pace):
        pace = torch.tensor(float(pace), device=durations.device)
    pace = pace.to(durations.dtype).reshape(-1, 1)  # (B or 1, 1)
    reps = (durations / pace + 0.5).clamp_min(0).long()  # (B, T_text)
    mel_lens = reps.sum(dim=1)
    if max_len is None:
        max_len = max(int(mel_lens.max()), 1) if mel_lens.numel() else 1
    ends = reps.cumsum(dim=1)  # (B, T_text): last frame (exclusive) of each token
    frames = torch.arange(max_len, device=durations.device)
    # Token index of each output frame: the number of tokens that end at or before it.
    token = torch.searchsorted(ends, frames.expand(ends.size(0), -1).contiguous(), right=True)
    token = token.clamp_max(enc_out.size(1) - 1)  # (B, T_mel)
    out = torch.gather(enc_out, 1, token.unsqueeze(2).expand(-1, -1, enc_out.size(2)))
    valid = frames[None, :] < mel_lens[:, None]
    return out * valid.unsqueeze(2).to(out.dtype), mel_lens.clamp_max(max_len)


# --------------------------------------------------------------------------------------
# FastPitch
# --------------------------------------------------------------------------------------


class FastPitch(nn.Module):
    """FastPitch 1.1. ``forward`` is ``infer``, as in the torch.hub model."""

    def __init__(self, config: FastPitchConfig = FastPitchConfig()):
        super().__init__()
        c = self.config = config
        d = c.symbols_embedding_dim
        self.encoder = FFTransformer(
            c.in_fft_n_layers, c.in_fft_n_heads, d, c.in_fft_d_head, c.in_fft_conv1d_filter_size,
            c.in_fft_conv1d_kernel_size, c.p_in_fft_dropout, c.p_in_fft_dropatt,
            c.p_in_fft_dropemb, embed_input=True, n_embed=c.n_symbols, padding_idx=c.padding_idx)
        self.speaker_emb = nn.Embedding(c.n_speakers, d) if c.n_speakers > 1 else None
        self.duration_predictor = TemporalPredictor(
            c.in_fft_output_size, c.dur_predictor_filter_size, c.dur_predictor_kernel_size,
            c.p_dur_predictor_dropout, c.dur_predictor_n_layers)
        self.decoder = FFTransformer(
            c.out_fft_n_layers, c.out_fft_n_heads, d, c.out_fft_d_head,
            c.out_fft_conv1d_filter_size, c.out_fft_conv1d_kernel_size, c.p_out_fft_dropout,
            c.p_out_fft_dropatt, c.p_out_fft_dropemb, embed_input=False)
        self.pitch_predictor = TemporalPredictor(
            c.in_fft_output_size, c.pitch_predictor_filter_size, c.pitch_predictor_kernel_size,
            c.p_pitch_predictor_dropout, c.pitch_predictor_n_layers,
            n_predictions=c.pitch_conditioning_formants)
        k = c.pitch_embedding_kernel_size
        self.pitch_emb = nn.Conv1d(c.pitch_conditioning_formants, d, k, padding=(k - 1) // 2)
        # Training normalisation, saved in checkpoints; 0 means "not set".
        self.register_buffer("pitch_mean", torch.zeros(1))
        self.register_buffer("pitch_std", torch.zeros(1))
        if c.energy_conditioning:
            self.energy_predictor = TemporalPredictor(
                c.in_fft_output_size, c.energy_predictor_filter_size,
                c.energy_predictor_kernel_size, c.p_energy_predictor_dropout,
                c.energy_predictor_n_layers)
            k = c.energy_embedding_kernel_size
            self.energy_emb = nn.Conv1d(1, d, k, padding=(k - 1) // 2)
        self.proj = nn.Linear(c.out_fft_output_size, c.n_mel_channels, bias=True)
        self.attention = ConvAttention(c.n_mel_channels, d)

    def pitch_stats(self) -> tuple[float, float]:
        """(mean, std) in Hz used by pitch transforms (NVIDIA's fallback when unset)."""
        std = float(self.pitch_std[0])
        if std == 0.0:
            return FALLBACK_PITCH_MEAN, FALLBACK_PITCH_STD
        return float(self.pitch_mean[0]), std

    def _speaker_embedding(self, speaker: int | Sequence[int] | Tensor, batch: int,
                           device: torch.device) -> Tensor | float:
        if self.speaker_emb is None:
            return 0.0  # single-speaker: the argument is ignored, as in NVIDIA's model
        spk = torch.as_tensor(speaker, dtype=torch.long, device=device).reshape(-1)
        if spk.numel() == 1:
            spk = spk.expand(batch)
        if spk.numel() != batch:
            raise InputError(f"speaker: expected 1 or {batch} ids, got {spk.numel()}")
        n = self.config.n_speakers
        if bool(((spk < 0) | (spk >= n)).any()):
            raise InputError(f"speaker id out of range: this voice has {n} speakers (0..{n - 1})")
        return self.speaker_emb(spk).unsqueeze(1) * self.config.speaker_emb_weight  # (B,1,d)

    def infer(self, inputs: Tensor, pace: float | Tensor = 1.0, dur_tgt: Tensor | None = None,
              pitch_tgt: Tensor | None = None, energy_tgt: Tensor | None = None,
              pitch_transform: PitchTransform | None = None, max_duration: float = 75,
              speaker: int | Sequence[int] | Tensor = 0, solo_equivalent: bool = False):
        """Synthesize mels from token ids.

        Args:
            inputs: (B, T_text) int64 ids, right-padded with 0.
            pace: speaking-rate factor (>1 is faster); a float or a (B,) tensor.
            dur_tgt: (B, T_text) durations in frames replacing the prediction.
            pitch_tgt: (B, 1, T_text) normalised pitch replacing the prediction.
            energy_tgt: (B, 1, T_text) or (B, T_text) energy replacing the prediction
                (NVIDIA's code crashes here; we return the prediction alongside).
            pitch_transform: ``f(pitch (B,1,T), pitch_lens (B,), mean, std) -> pitch`` in
                normalised units, e.g. :class:`PitchShift`; see :data:`engine.models.pitch_transform.PITCH_PRESETS`.
            max_duration: clamp for predicted durations (frames).
            speaker: speaker id (int, or one per row); ignored by single-speaker voices.
            solo_equivalent: mask padded positions everywhere, so each row of a padded batch
                gives what it gives alone (NVIDIA's default computation lets padding leak into
                shorter rows; the reference vectors follow NVIDIA, the engine uses this).

        Returns:
            ``(mel (B, 80, T_mel), mel_lens (B,), dur_pred (B, T_text),
            pitch_pred (B, 1, T_text), energy_pred (B, T_text) or None)``.
        """
        if inputs.dim() != 2:
            raise InputError(f"inputs must be (batch, time) token ids, got shape {tuple(inputs.shape)}")
        if inputs.dtype not in (torch.int64, torch.int32):
            raise InputError(f"inputs must be integer token ids, got {inputs.dtype}")
        if not torch.is_tensor(pace):
            if not (isinstance(pace, (int, float)) and math.isfinite(pace) and pace > 0):
                raise InputError(f"pace must be a positive number, got {pace!r}")
        elif bool((pace <= 0).any()):
            raise InputError("pace must be positive")
        B = inputs.size(0)
        spk = self._speaker_embedding(speaker, B, inputs.device)
        stats = self.pitch_stats() if pitch_transform is not None else None
        enc_out, dur_pred, pitch_pred, energy_pred = self.encode(
            inputs, spk, pitch_transform, stats, pitch_tgt, energy_tgt, max_duration,
            solo_equivalent)
        durs = dur_pred if dur_tgt is None else dur_tgt.to(dur_pred.dtype)
        frames, mel_lens = regulate_len(durs, enc_out, pace)
        mel = self.decode(frames, mel_lens, solo_equivalent)
        return mel, mel_lens, dur_pred, pitch_pred, energy_pred

    def encode(self, inputs: Tensor, spk: Tensor | float = 0.0,
               pitch_transform: PitchTransform | None = None,
               pitch_stats: tuple[float, float] | None = None, pitch_tgt: Tensor | None = None,
               energy_tgt: Tensor | None = None, max_duration: float = 75,
               solo_equivalent: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Encoder + predictors, without host syncs (CUDA-graph safe; the runner's static path
        calls it directly).

        inputs (B, T_text) ids; spk (B, 1, d) speaker term or 0. Returns
        (enc_out (B, T_text, d) with pitch/energy embeddings added, dur_pred (B, T_text),
        pitch_pred (B, F, T_text), energy_pred (B, T_text) or None).
        """
        sm = solo_equivalent
        enc_out, enc_mask = self.encoder(inputs, conditioning=spk, mask_hidden=sm)  # (B,T,d)
        log_dur = self.duration_predictor(enc_out, enc_mask, sm).squeeze(-1)  # (B, T)
        dur_pred = torch.clamp(torch.exp(log_dur) - 1, 0, max_duration)

        pitch_pred = self.pitch_predictor(enc_out, enc_mask, sm).permute(0, 2, 1)  # (B, F, T)
        if pitch_transform is not None:
            mean, std = pitch_stats if pitch_stats is not None else self.pitch_stats()
            pitch_lens = enc_mask.sum(dim=(1, 2))
            pitch_pred = pitch_transform(pitch_pred, pitch_lens, mean, std)
        pitch_in = pitch_pred if pitch_tgt is None else pitch_tgt.to(enc_out.dtype)
        if sm:  # a shifted pitch is nonzero at pads; the embedding conv would read it
            pitch_in = pitch_in * enc_mask.transpose(1, 2)
        enc_out = enc_out + self.pitch_emb(pitch_in).transpose(1, 2)

        energy_pred = None
        if self.config.energy_conditioning:
            energy_pred = self.energy_predictor(enc_out, enc_mask, sm).squeeze(-1)  # (B, T)
            energy_in = energy_pred.unsqueeze(1) if energy_tgt is None else energy_tgt
            if energy_in.dim() == 2:
                energy_in = energy_in.unsqueeze(1)
            if sm:
                energy_in = energy_in * enc_mask.transpose(1, 2)
            enc_out = enc_out + self.energy_emb(energy_in.to(enc_out.dtype)).transpose(1, 2)
        return enc_out, dur_pred, pitch_pred, energy_pred

    def decode(self, frames: Tensor, mel_lens: Tensor, solo_equivalent: bool = False) -> Tensor:
        """Length-regulated frames (B, T_mel, d) + lengths (B,) -> mel (B, 80, T_mel)."""
        dec_out, _ = self.decoder(frames, mel_lens, mask_hidden=solo_equivalent)
        return self.proj(dec_out).permute(0, 2, 1)

    forward = infer
