"""The runner: owns the models, tensors and per-request mel buffers; runs batches.

It never decides which request runs (the engine loop and scheduler do); it takes a batch of
FastPitch items or vocoder windows and returns results. Rows of different requests run in one
padded batch with ``solo_equivalent`` masking, so a row's output does not depend on what it
was batched with.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .audio import LOG_MEL_FLOOR
from .fastpitch import PitchTransform
from .request import SynthesisOptions
from .voice import Voice
from .windows import Window

log = logging.getLogger(__name__)

# The denoiser's centred STFT (n_fft 1024 = 4 frames) reads this many frames either side.
DENOISE_MARGIN_FRAMES = 4


@dataclass
class MelPiece:
    """FastPitch output for one text chunk."""

    mel: Tensor  # (80, T) on the runner's device
    repeats: np.ndarray  # (T_text,) frames per token, after pace


class _PerRowShift:
    """Pitch shift in Hz per batch row: pitch + hz[b] / std."""

    def __init__(self, hz: Tensor, user: Callable | None = None):
        self.hz, self.user = hz, user

    def __call__(self, pitch: Tensor, lens: Tensor, mean, std) -> Tensor:
        if self.user is not None:
            pitch = self.user(pitch, lens, mean, std)
        return pitch + self.hz.to(pitch.dtype).view(-1, 1, 1) / std


class MelStore:
    """Per-request growing mel streams with their start trimmed as windows move on."""

    def __init__(self, n_mels: int, device: torch.device):
        self.n_mels, self.device = n_mels, device
        self._bufs: dict[int, Tensor] = {}  # (80, capacity)
        self._base: dict[int, int] = {}  # stream frame index of column 0
        self._len: dict[int, int] = {}  # stream frames appended so far

    def append(self, rid: int, mel: Tensor) -> None:
        """Append (80, T) frames to request ``rid``'s stream."""
        buf = self._bufs.get(rid)
        n = self._len.get(rid, 0) - self._base.get(rid, 0)  # columns in use
        need = n + mel.size(1)
        if buf is None or buf.size(1) < need:
            grown = torch.empty(self.n_mels, max(need, 2 * (buf.size(1) if buf is not None else 64)),
                                device=self.device, dtype=mel.dtype)
            if buf is not None and n:
                grown[:, :n] = buf[:, :n]
            buf = self._bufs[rid] = grown
            self._base.setdefault(rid, 0)
        buf[:, n:need] = mel
        self._len[rid] = self._len.get(rid, 0) + mel.size(1)

    def append_silence(self, rid: int, frames: int, dtype: torch.dtype) -> None:
        if frames > 0:
            self.append(rid, torch.full((self.n_mels, frames), LOG_MEL_FLOOR, device=self.device,
                                        dtype=dtype))

    def frames(self, rid: int, lo: int, hi: int) -> Tensor:
        base = self._base[rid]
        assert lo >= base and hi <= self._len[rid], (lo, hi, base, self._len[rid])
        return self._bufs[rid][:, lo - base:hi - base]

    def trim(self, rid: int, keep_from: int) -> None:
        """Drop frames before stream index ``keep_from`` (no future window needs them)."""
        base = self._base.get(rid)
        if base is None or keep_from <= base:
            return
        buf, n = self._bufs[rid], self._len[rid] - base
        drop = min(keep_from - base, n)
        if drop < buf.size(1) // 2:  # only compact when it frees a good share
            return
        buf[:, :n - drop] = buf[:, drop:n].clone()
        self._base[rid] = base + drop

    def free(self, rid: int) -> None:
        for d in (self._bufs, self._base, self._len):
            d.pop(rid, None)

    def __len__(self) -> int:
        return len(self._bufs)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._bufs.values())


class Runner:
    """Runs FastPitch and HiFi-GAN batches for the engine."""

    def __init__(self, voice: Voice):
        self.voice = voice
        self.device = voice.device
        self.dtype = next(voice.fastpitch.parameters()).dtype
        self.hop = voice.hop_length
        self.sample_rate = voice.sample_rate
        self.mels = MelStore(voice.hifigan.config.num_mels, self.device)
        ctx_l, ctx_r = voice.hifigan.receptive_field_frames()
        self.ctx_left, self.ctx_right = ctx_l, ctx_r
        # Measured vocoder cost, seconds per mel frame (EMA), for sizing windows to deadlines.
        self.vocoder_s_per_frame: float | None = None

    def contexts(self, options: SynthesisOptions) -> tuple[int, int]:
        """(left, right) context frames for a request: the receptive field, plus the
        denoiser's reach when it is on."""
        extra = DENOISE_MARGIN_FRAMES if options.denoise > 0 else 0
        return self.ctx_left + extra, self.ctx_right + extra

    @torch.inference_mode()
    def fastpitch(self, items: Sequence[tuple[Sequence[int], SynthesisOptions]]) -> list[MelPiece]:
        """Token ids + options per item -> one MelPiece per item, in order.

        Items with a custom pitch_transform callable run in their own batch (the callable sees
        the whole batch); all others share one padded batch with per-row pace, speaker and
        pitch shift.
        """
        out: list[MelPiece | None] = [None] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (_, opt) in enumerate(items):
            key = id(opt.pitch_transform) if opt.pitch_transform is not None else 0
            groups.setdefault(key, []).append(i)
        for idx in groups.values():
            for i, piece in zip(idx, self._fastpitch_batch([items[i] for i in idx])):
                out[i] = piece
        return out  # type: ignore[return-value]

    def _fastpitch_batch(self, items) -> list[MelPiece]:
        fp = self.voice.fastpitch
        T = max(len(ids) for ids, _ in items)
        inputs = torch.zeros(len(items), T, dtype=torch.long)
        for r, (ids, _) in enumerate(items):
            inputs[r, :len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
        opts = [o for _, o in items]
        pace = torch.tensor([o.pace for o in opts], dtype=torch.float32, device=self.device)
        shifts = torch.tensor([o.pitch_shift for o in opts], device=self.device)
        user = opts[0].pitch_transform
        transform: PitchTransform | None = None
        if user is not None or bool((shifts != 0).any()):
            transform = _PerRowShift(shifts, user)
        speaker = [o.speaker for o in opts]
        mel, mel_lens, dur, _, _ = fp(inputs.to(self.device), pace=pace,
                                      pitch_transform=transform, speaker=speaker,
                                      solo_equivalent=True)
        reps = torch.floor(dur.float() / pace.view(-1, 1) + 0.5).long().cpu().numpy()
        lens = mel_lens.tolist()
        return [MelPiece(mel[r, :, :lens[r]], reps[r, :len(items[r][0])]) for r in range(len(items))]

    @torch.inference_mode()
    def vocode_windows(self, work: Sequence[tuple[int, Window, float]]) -> list[np.ndarray]:
        """(request id, window, denoise strength) -> float32 audio of frames
        [out_lo, out_hi) of each window. Windows of equal length run as one batch."""
        t0 = time.perf_counter()
        out: list[np.ndarray | None] = [None] * len(work)
        by_len: dict[int, list[int]] = {}
        for i, (_, win, _) in enumerate(work):
            by_len.setdefault(win.mel_hi - win.mel_lo, []).append(i)
        for idx in by_len.values():
            mel = torch.stack([self.mels.frames(work[i][0], work[i][1].mel_lo, work[i][1].mel_hi)
                               for i in idx])  # (B, 80, n)
            audio = self.voice.hifigan(mel).float().squeeze(1)  # (B, n * hop)
            for row, i in enumerate(idx):
                _, win, strength = work[i]
                a = audio[row:row + 1]
                if strength > 0 and self.voice.denoiser is not None:
                    a = self.voice.denoiser(a, strength).squeeze(1)
                lo = (win.out_lo - win.mel_lo) * self.hop
                hi = (win.out_hi - win.mel_lo) * self.hop
                out[i] = a[0, lo:hi].cpu().numpy()
        frames = sum(w.mel_hi - w.mel_lo for _, w, _ in work)
        per_frame = (time.perf_counter() - t0) / max(frames, 1)
        ema = self.vocoder_s_per_frame
        self.vocoder_s_per_frame = per_frame if ema is None else 0.8 * ema + 0.2 * per_frame
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def vocode_full(self, mel: Tensor, denoise: float = 0.0) -> np.ndarray:
        """Offline: one pass over a whole (80, T) mel -> float32 audio."""
        audio = self.voice.hifigan(mel.to(self.device, self.dtype)[None]).float().squeeze(1)
        if denoise > 0 and self.voice.denoiser is not None:
            audio = self.voice.denoiser(audio, denoise).squeeze(1)
        return audio[0].cpu().numpy()
