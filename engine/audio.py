"""The one module for STFT and mel spectrograms (torch).

Everything that turns audio into spectra (the denoiser, training features) goes through here,
so there is exactly one implementation of each; sample-domain work (PCM, µ-law, resampling,
WAV files) is in :mod:`engine.pcm`, which needs no torch.
Conventions are NVIDIA's (its STFT and mel code): periodic Hann window,
reflect padding, natural-log mel of the STFT magnitude clamped at 1e-5, Slaney mel scale and
area normalisation (librosa's defaults).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from .config import AudioConfig

LOG_MEL_FLOOR = math.log(1e-5)  # ≈ -11.5129: the mel value of silence


@functools.lru_cache(maxsize=8)
def _hann(win_length: int, device: str, dtype: torch.dtype) -> Tensor:
    return torch.hann_window(win_length, periodic=True, device=device, dtype=dtype)


def stft(audio: Tensor, n_fft: int = 1024, hop_length: int = 256,
         win_length: int = 1024) -> Tensor:
    """Centred STFT with reflect padding: (B, N) float -> (B, n_fft//2+1, frames) complex."""
    window = _hann(win_length, str(audio.device), audio.dtype)
    return torch.stft(audio, n_fft, hop_length, win_length, window=window, center=True,
                      pad_mode="reflect", return_complex=True)


def istft(spec: Tensor, length: int, n_fft: int = 1024, hop_length: int = 256,
          win_length: int = 1024) -> Tensor:
    """Inverse of :func:`stft` (least-squares overlap-add): -> (B, length)."""
    window = _hann(win_length, str(spec.device), spec.real.dtype)
    return torch.istft(spec, n_fft, hop_length, win_length, window=window, center=True,
                       length=length)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney: linear below 1 kHz, logarithmic above.
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sampling_rate: int = 22050, n_fft: int = 1024, n_mels: int = 80,
                   fmin: float = 0.0, fmax: float = 8000.0) -> np.ndarray:
    """(n_mels, n_fft//2+1) float32 triangular filters, Slaney scale and normalisation
    (the same matrix as ``librosa.filters.mel`` with its defaults)."""
    fft_freqs = np.linspace(0, sampling_rate / 2, n_fft // 2 + 1)
    mel_pts = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_pts[2:n_mels + 2] - mel_pts[:n_mels]))[:, None]  # area norm
    return weights.astype(np.float32)


def mel_spectrogram(audio: Tensor, cfg: AudioConfig = AudioConfig()) -> Tensor:
    """FastPitch training mel: (B, N) float audio in [-1, 1] -> (B, 80, 1 + N // hop) log mel.

    Centred STFT (reflect padding of n_fft/2), magnitude, Slaney mel, ln(clamp(x, 1e-5)).
    """
    if audio.dim() == 1:
        audio = audio[None]
    spec = stft(audio, cfg.filter_length, cfg.hop_length, cfg.win_length).abs()
    fb = torch.from_numpy(mel_filterbank(cfg.sampling_rate, cfg.filter_length,
                                         cfg.n_mel_channels, cfg.mel_fmin, cfg.mel_fmax))
    mel = torch.matmul(fb.to(spec.device, spec.dtype), spec)
    return torch.log(torch.clamp(mel, min=1e-5))
