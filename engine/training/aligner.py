"""The unsupervised aligner's training side: prior, scores, losses, hard alignment, warm-up.

Follows "One TTS Alignment To Rule Them All" (Badlani et al., 2021), as FastPitch 1.1 does:

* **Soft alignment.** The model's ``attention`` (``ConvAttention``) scores mel frames (queries)
  against the token embeddings (keys) with a scaled negative squared distance
  (:func:`aligner_scores`); a static beta-binomial prior (:func:`beta_binomial_prior`) pushes
  it towards the diagonal. It learns from the **forward-sum** loss (CTC over all monotonic
  paths, :func:`forward_sum_loss`).
* **Hard alignment.** Monotonic alignment search (:func:`monotonic_alignment_search`, batched,
  one vectorised step per mel frame) turns the soft attention into durations; the
  **binarization** loss (:func:`binarization_loss`, KL between soft and hard) pulls the soft
  attention towards it once its schedule (:func:`engine.training.optim.bin_loss_weight`)
  switches it on.
* **Warm-up.** A voice shipped without its aligner re-learns one alone on the frozen token
  embeddings (:func:`aligner_forward`, :func:`warm_aligner`) before the rest trains on its
  durations.
* **Health plot.** :func:`plot_alignment` draws the attention without the prior above the hard
  alignment, for the validation samples.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..models.fastpitch import FastPitch, mask_from_lens
from .data import Batch

NEG = -1e4  # finite "minus infinity" for masked keys: -inf gives NaN gradients in CTC (CPU)
ALIGNER_WARMUP_LR = 3e-3  # the aligner-only warm-up's learning rate (see warm_aligner)


def beta_binomial_prior(text_lens: Tensor, mel_lens: Tensor, max_text: int | None = None,
                        max_mel: int | None = None, scaling: float = 1.0) -> Tensor:
    """The static alignment prior: (B,) lengths -> (B, T_mel, T_text) probabilities.

    Row i (frame 1..M) of an utterance with N tokens is the beta-binomial pmf over tokens
    k = 0..N-1 with n = N-1, alpha = scaling * i, beta = scaling * (M - i + 1): it peaks
    near k = (N-1) (i-1) / (M-1), i.e. on the diagonal. Padded entries are 0.
    """
    if text_lens.shape != mel_lens.shape or text_lens.dim() != 1:
        raise InputError("text_lens and mel_lens must be (B,) tensors of equal shape")
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
    """The aligner of :class:`engine.models.fastpitch.ConvAttention`, in a memory-lean form.

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
        raise InputError("every utterance needs at least as many mel frames as tokens")
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
# The aligner alone: warm-up of a voice shipped without one
# --------------------------------------------------------------------------------------


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


def warm_aligner(model: FastPitch, batches: Iterator[Batch], *, max_steps: int,
                 target: float, prior_scaling: float, grad_clip: float, log_every: int,
                 finished: Callable[[], bool], on_step: Callable[[float], None],
                 on_log: Callable[[int, dict[str, float], float], None]) -> int:
    """Train only ``model.attention`` (forward-sum loss; the rest untouched) until the mean max
    attention over the last ``log_every`` steps reaches ``target``, for ``max_steps`` steps at
    most, or until ``finished()``.

    ``batches`` yields device batches (endlessly); ``on_step(seconds)`` gets each step's time,
    batch loading included; ``on_log(k, averages, seconds_per_step)`` gets the metrics
    averaged over each ``log_every`` window. Returns the number of steps taken.
    """
    params = list(model.attention.parameters())
    # AdamW at a fixed 3e-3: on a frozen encoder it left the uniform start ~2x sooner
    # than LAMB at the main run's peak (synthetic corpus, tests/training/test_train.py).
    opt = torch.optim.AdamW(params, lr=ALIGNER_WARMUP_LR, betas=(0.9, 0.98), eps=1e-9)
    model.train()
    window: list[dict[str, float]] = []
    k, t_window = 0, time.perf_counter()
    while k < max_steps and not finished():
        t0 = time.perf_counter()
        batch = next(batches)
        for g in opt.param_groups:
            g["lr"] = ALIGNER_WARMUP_LR * min(1.0, (k + 1) / 20)
        loss, m = aligner_forward(model, batch, prior_scaling)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        on_step(time.perf_counter() - t0)
        k += 1
        window.append(m)
        if k % log_every == 0:
            avg = {key: sum(w[key] for w in window) / len(window) for key in m}
            on_log(k, avg, (time.perf_counter() - t_window) / len(window))
            window, t_window = [], time.perf_counter()
            if avg["attn_max"] >= target:
                break  # reached the target
    return k


# --------------------------------------------------------------------------------------
# Health plot
# --------------------------------------------------------------------------------------


def plot_alignment(path: str | Path, raw_attn: Tensor, hard: Tensor, step: int) -> bool:
    """Save a PNG of one utterance's attention without the prior (top) and its hard alignment
    (bottom), both (T_mel, T_text). Returns False (and writes nothing) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    path = Path(path)
    path.parent.mkdir(exist_ok=True)
    fig, axes = plt.subplots(2, 1, figsize=(8, 6))
    for ax, image, title in ((axes[0], raw_attn, "attention without the prior"),
                             (axes[1], hard, "hard alignment (MAS)")):
        ax.imshow(image.T.float().cpu().numpy(), origin="lower", aspect="auto")
        ax.set_title(f"step {step}: {title}")
        ax.set_ylabel("token")
    axes[1].set_xlabel("mel frame")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True
