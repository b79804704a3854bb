"""The one module for STFT, mel spectrograms and PCM conversion.

Everything that turns audio into spectra (the denoiser, training features) or float audio
into integer PCM goes through here, so there is exactly one implementation of each.
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


def float_to_pcm16(audio: np.ndarray | Tensor) -> np.ndarray:
    """float audio in [-1, 1] -> int16 PCM (clipped, rounded to nearest)."""
    if torch.is_tensor(audio):
        audio = audio.detach().float().cpu().numpy()
    a = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return np.round(a * 32767.0).astype(np.int16)


def write_wav(path: str, audio: np.ndarray | Tensor, sampling_rate: int) -> None:
    """Write mono float audio in [-1, 1] as a 16-bit PCM WAV file."""
    import soundfile as sf  # lazy: only the CLI and tests write files

    sf.write(path, float_to_pcm16(audio), sampling_rate, subtype="PCM_16")


def pcm16_to_float(pcm: np.ndarray | bytes) -> np.ndarray:
    """int16 PCM (an array, or little-endian bytes) -> float32 in [-1, 1]; the inverse of
    :func:`float_to_pcm16` up to its rounding."""
    a = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, (bytes, bytearray, memoryview)) \
        else np.asarray(pcm, dtype=np.int16)
    return (a.astype(np.float32) / 32767.0).clip(-1.0, 1.0)


# ---------------------------------------------------------------------------- resampling
# soxr (libsoxr, "HQ": 20-bit precision, linear phase) is a real band-limited resampler;
# imported lazily so that loading a voice does not need it.

def _check_rate(name: str, rate: int) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"{name} must be a positive integer rate in Hz, got {rate!r}")
    return int(rate)


def resample(audio: np.ndarray | Tensor, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono float audio from ``sr_in`` to ``sr_out`` Hz (soxr HQ) -> float32.

    The output has ``round(len(audio) * sr_out / sr_in)`` samples. Equal rates return a
    float32 copy."""
    sr_in, sr_out = _check_rate("sr_in", sr_in), _check_rate("sr_out", sr_out)
    if torch.is_tensor(audio):
        audio = audio.detach().float().cpu().numpy()
    a = np.ascontiguousarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"audio must be 1-D (mono), got shape {a.shape}")
    if sr_in == sr_out:
        return a.copy()
    import soxr

    return np.asarray(soxr.resample(a, sr_in, sr_out, quality="HQ"), dtype=np.float32)


class StreamResampler:
    """Resample a stream of mono float32 chunks without seams.

    One resampler state (``soxr.ResampleStream``) carries the filter history across chunks,
    so the joined output equals resampling the joined input: no clicks at chunk boundaries,
    which resampling each chunk on its own would cause. The filter delays the output by a few
    milliseconds; ``process(last_chunk, last=True)`` flushes the held tail, after which the
    total length is ``round(samples_in * sr_out / sr_in)``. Equal rates pass audio through.

        rs = StreamResampler(22050, 16000)
        for i, chunk in enumerate(chunks):
            out = rs.process(chunk, last=i == len(chunks) - 1)
    """

    def __init__(self, sr_in: int, sr_out: int):
        self.sr_in = _check_rate("sr_in", sr_in)
        self.sr_out = _check_rate("sr_out", sr_out)
        self._stream = None
        if self.sr_in != self.sr_out:
            import soxr

            self._stream = soxr.ResampleStream(self.sr_in, self.sr_out, 1, dtype="float32",
                                               quality="HQ")
        self.samples_in = 0
        self.samples_out = 0

    def process(self, audio: np.ndarray, last: bool = False) -> np.ndarray:
        """Feed the next chunk; returns the float32 output available so far (may be shorter
        or longer than the chunk's share, never lost). ``last=True`` ends the stream and
        flushes it; the next call starts a new stream."""
        a = np.ascontiguousarray(audio, dtype=np.float32)
        if a.ndim != 1:
            raise ValueError(f"audio must be 1-D (mono), got shape {a.shape}")
        self.samples_in += len(a)
        if self._stream is None:
            out = a.copy()
        else:
            out = np.asarray(self._stream.resample_chunk(a, last=last), dtype=np.float32)
        self.samples_out += len(out)
        if last:
            self.reset()
        return out

    def reset(self) -> None:
        """Drop any held samples and start a new stream (e.g. after a cancelled utterance)."""
        if self._stream is not None:
            self._stream.clear()
        self.samples_in = self.samples_out = 0


# ---------------------------------------------------------------------------- G.711 µ-law
# ITU-T G.711 µ-law with the reference codec's segment table (as in Sun's g711.c and
# Python's former audioop.lin2ulaw): 14-bit magnitude, bias 33, 8 segments of 16 steps,
# bits inverted on the wire. 0xFF and 0x7F are the two zeros; 0x80 is +32124, 0x00 -32124.
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], np.int32)
_ULAW_CLIP = 8159  # largest 14-bit magnitude µ-law encodes
_ULAW_BIAS = 0x21  # 33 = 0x84 >> 2


def pcm16_to_mulaw(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM -> G.711 µ-law bytes (uint8 array)."""
    x = np.asarray(pcm, dtype=np.int16).astype(np.int32) >> 2  # 14-bit, as G.711 works
    mask = np.where(x < 0, 0x7F, 0xFF).astype(np.int32)
    mag = np.minimum(np.abs(x), _ULAW_CLIP) + _ULAW_BIAS
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left").astype(np.int32)
    code = np.where(seg >= 8, 0x7F,
                    (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0xF))
    return (code ^ mask).astype(np.uint8)


def mulaw_to_pcm16(codes: np.ndarray | bytes) -> np.ndarray:
    """G.711 µ-law bytes -> int16 PCM (the reference decoder: 0x80 -> 32124)."""
    u = np.frombuffer(codes, dtype=np.uint8) if isinstance(codes, (bytes, bytearray, memoryview)) \
        else np.asarray(codes, dtype=np.uint8)
    u = (~u.astype(np.int32)) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def float_to_mulaw(audio: np.ndarray | Tensor) -> np.ndarray:
    """float audio in [-1, 1] -> G.711 µ-law bytes (via 16-bit PCM, clipped)."""
    return pcm16_to_mulaw(float_to_pcm16(audio))


def mulaw_to_float(codes: np.ndarray | bytes) -> np.ndarray:
    """G.711 µ-law bytes -> float32 in [-1, 1]."""
    return pcm16_to_float(mulaw_to_pcm16(codes))
