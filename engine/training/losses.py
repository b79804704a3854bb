"""The teacher-forced training pass of FastPitch with its aligner, and its losses.

:func:`train_forward` runs FastPitch's own submodules on a :class:`~engine.training.data.Batch`:
the encoder; the soft and hard alignment of this very batch (:mod:`engine.training.aligner`);
targets from the alignment (durations in the log domain, per-token average pitch over voiced
frames normalised with the model's ``pitch_mean``/``pitch_std``, per-token log(1 + energy));
the decoder teacher-forced with them. Losses: masked MSE on the mel, the duration, pitch and
energy predictors, plus the aligner's forward-sum and (scheduled) binarization losses, scaled
by :class:`LossWeights`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..models.fastpitch import FastPitch, mask_from_lens, regulate_len
from .aligner import (aligner_scores, beta_binomial_prior, binarization_loss, forward_sum_loss,
                      monotonic_alignment_search)
from .data import Batch
from .pitch import average_per_token


@dataclass
class LossWeights:
    """Loss scales (FastPitch's defaults: predictors 0.1, aligner 1)."""

    mel: float = 1.0
    dur: float = 0.1
    pitch: float = 0.1
    energy: float = 0.1
    attn: float = 1.0
    bin: float = 1.0


def normalize_pitch(pitch_hz: Tensor, mean: float, std: float) -> Tensor:
    """Hz -> normalised units; unvoiced (0) stays 0, as NVIDIA's recipe."""
    return torch.where(pitch_hz > 0, (pitch_hz - mean) / std, torch.zeros_like(pitch_hz))


def train_forward(model: FastPitch, batch: Batch, bin_weight: float,
                  weights: LossWeights = LossWeights(), prior_scaling: float = 1.0
                  ) -> tuple[Tensor, dict[str, float], dict[str, Tensor]]:
    """One teacher-forced pass with the aligner -> (total loss, float metrics, tensors).

    The encoder, predictors and decoder are FastPitch's own submodules; durations, per-token
    pitch and energy come from the hard alignment of this very batch.
    """
    ids, text_lens, mel_lens = batch.ids, batch.text_lens, batch.mel_lens
    B, T = ids.shape
    M = batch.mel.size(2)
    enc_out, enc_mask = model.encoder(ids)  # (B, T, d), (B, T, 1)
    text_mask = enc_mask.squeeze(2)  # (B, T) bool
    log_dur_pred = model.duration_predictor(enc_out, enc_mask).squeeze(-1)  # (B, T)
    pitch_pred = model.pitch_predictor(enc_out, enc_mask).permute(0, 2, 1)  # (B, 1, T)

    # Alignment: soft (with prior) -> hard (MAS) -> durations.
    prior = beta_binomial_prior(text_lens, mel_lens, T, M, prior_scaling)  # (B, M, T)
    keys = model.encoder.word_emb(ids).transpose(1, 2)  # (B, d, T)
    log_attn, logprob, raw_attn = aligner_scores(model.attention, batch.mel, keys, text_mask,
                                                 prior)
    hard = monotonic_alignment_search(log_attn.detach(), text_lens, mel_lens)  # (B, M, T)
    dur_tgt = hard.sum(1)  # (B, T) frames per token
    loss_attn = forward_sum_loss(logprob, text_lens, mel_lens)
    loss_bin = binarization_loss(hard, log_attn)

    # Per-token targets through the alignment.
    mean, std = float(model.pitch_mean[0]), float(model.pitch_std[0])
    pitch_tgt = normalize_pitch(average_per_token(batch.pitch, dur_tgt), mean, std)  # (B, T)
    energy_tgt = torch.log1p(average_per_token(batch.energy, dur_tgt, voiced_only=False))
    pitch_tgt = pitch_tgt * text_mask
    energy_tgt = energy_tgt * text_mask

    enc_out = enc_out + model.pitch_emb(pitch_tgt.unsqueeze(1).to(enc_out.dtype)).transpose(1, 2)
    energy_pred = None
    if model.config.energy_conditioning:
        energy_pred = model.energy_predictor(enc_out, enc_mask).squeeze(-1)  # (B, T)
        enc_out = enc_out + model.energy_emb(
            energy_tgt.unsqueeze(1).to(enc_out.dtype)).transpose(1, 2)
    frames, _ = regulate_len(dur_tgt, enc_out, 1.0, max_len=M)  # (B, M, d)
    dec_out, _ = model.decoder(frames, mel_lens)
    mel_out = model.proj(dec_out).float()  # (B, M, 80)

    frame_mask = mask_from_lens(mel_lens, M).float()  # (B, M)
    tok = text_mask.float()  # (B, T)
    n_frames, n_tok = frame_mask.sum().clamp_min(1), tok.sum().clamp_min(1)
    mel_tgt = batch.mel.transpose(1, 2).float()  # (B, M, 80)
    loss_mel = ((mel_out - mel_tgt).square().mean(2) * frame_mask).sum() / n_frames
    log_dur_tgt = torch.log1p(dur_tgt)
    loss_dur = ((log_dur_pred.float() - log_dur_tgt).square() * tok).sum() / n_tok
    loss_pitch = ((pitch_pred[:, 0].float() - pitch_tgt).square() * tok).sum() / n_tok
    loss_energy = (((energy_pred.float() - energy_tgt).square() * tok).sum() / n_tok
                   if energy_pred is not None else torch.zeros((), device=ids.device))
    total = (weights.mel * loss_mel + weights.dur * loss_dur + weights.pitch * loss_pitch
             + weights.energy * loss_energy + weights.attn * loss_attn
             + weights.bin * bin_weight * loss_bin)

    with torch.no_grad():
        attn_max = (raw_attn.max(2).values * frame_mask).sum() / n_frames
        metrics = {"loss": float(total), "mel": float(loss_mel), "dur": float(loss_dur),
                   "pitch": float(loss_pitch), "energy": float(loss_energy),
                   "attn": float(loss_attn), "bin": float(loss_bin),
                   "attn_max": float(attn_max), "frames": float(n_frames)}
    tensors = {"hard": hard, "raw_attn": raw_attn, "log_attn": log_attn, "dur_tgt": dur_tgt,
               "mel_out": mel_out}
    return total, metrics, tensors
