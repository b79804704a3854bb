"""The runner: owns the models, tensors and per-request mel buffers; runs batches.

It never decides which request runs (the engine loop and scheduler do); it takes a batch of
FastPitch items or vocoder windows and returns results. Rows of different requests run in one
padded batch with ``solo_equivalent`` masking, so a row's output does not depend on what it
was batched with. It alone decides whether the fused Triton kernels (``kernels/``) run, and
routes the models through them only for the duration of its own calls (:class:`FusedKernels`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..audio import LOG_MEL_FLOOR
from ..models.fastpitch import PositionwiseConvFF
from ..models.pitch_transform import PitchTransform
from ..models.hifigan import ResBlock1
from .static import Buckets, StaticFastPitch, StaticVocoder, pad_window
from .request import SynthesisOptions
from ..models.voice import Voice
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

    def first_frame(self, rid: int) -> int:
        """Stream index of the oldest frame still held for ``rid``."""
        return self._base[rid]

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


def _ffn_hook(params: dict, x: Tensor, mask: Tensor | None = None) -> Tensor:
    """``PositionwiseConvFF.fused``: x (B, T, d_model), mask (B, T, 1) or None."""
    from kernels import ffn

    return ffn.positionwise_conv_ff(x, **params, mask=mask)


def _resblock_hook(params: dict, x: Tensor) -> Tensor:
    """``ResBlock1.fused``: x (B, C, T)."""
    from kernels import resblock

    return resblock.resblock1(x, **params)


class FusedKernels:
    """The fused Triton kernels for one voice, owned by a :class:`Runner`.

    Built once (:meth:`for_voice`): packs the weights of every FastPitch ``PositionwiseConvFF``
    and HiFi-GAN ``ResBlock1`` for the kernel launchers in ``kernels/``, and provides the
    length regulator of the static path (:meth:`length_regulate`). The launchers keep their
    own argument checks and fall back to their PyTorch references (logged) where Triton
    cannot run.

    The kernels reach the models through the modules' documented ``fused`` hook. It is set
    only while a runner runs the model (:meth:`active`) and removed afterwards, so outside the
    runners' calls the model objects are plain PyTorch for everyone else (direct calls,
    training, ``state_dict``, pickling and copies see nothing). ``active`` is
    reference-counted per model object (across runners), so concurrent runner calls (the
    engine loop and ``Engine.vocode`` on another thread, or two runners sharing a voice) nest
    correctly; whoever calls the same model object directly *during* a runner call gets the
    fused path, which computes the same result.
    """

    # id(model) -> runner calls now inside active(model); shared by all runners, guarded by
    # _LOCK (ids are only held while their model is in use, so none goes stale).
    _DEPTH: dict[int, int] = {}
    _LOCK = threading.Lock()

    def __init__(self, hooks: dict[int, list[tuple[nn.Module, Callable]]]):
        self._hooks = hooks  # id(model) -> [(block module, its fused callable)]

    @classmethod
    def for_voice(cls, voice: Voice) -> FusedKernels | None:
        """The kernels for ``voice``, or None (logged) when Triton cannot run on its device."""
        try:
            from kernels import ffn, resblock
            from kernels.utils import triton_ready
        except ImportError as e:
            log.warning("Triton kernels unavailable (%s); using PyTorch", e)
            return None
        ok, why = triton_ready(voice.device)
        if not ok:
            log.info("Triton kernels not used: %s", why)
            return None
        with torch.no_grad():  # packed weight copies, made once
            fp = [(m, functools.partial(_ffn_hook, ffn.params_from_module(m, pack=True)))
                  for m in voice.fastpitch.modules() if isinstance(m, PositionwiseConvFF)]
            hg = [(m, functools.partial(_resblock_hook,
                                        resblock.params_from_module(m, pack=True)))
                  for m in voice.hifigan.modules() if isinstance(m, ResBlock1)]
        return cls({id(voice.fastpitch): fp, id(voice.hifigan): hg})

    @staticmethod
    def length_regulate(enc_out: Tensor, durations: Tensor, pace: Tensor,
                        max_len: int) -> tuple[Tensor, Tensor]:
        """``kernels.length_regulator.length_regulate``: enc_out (B, T_text, d), durations
        (B, T_text), pace (B,) -> (frames (B, max_len, d), mel_lens (B,) int64)."""
        from kernels import length_regulator

        return length_regulator.length_regulate(enc_out, durations, pace, max_len)

    @contextlib.contextmanager
    def active(self, model: nn.Module) -> Iterator[None]:
        """Route ``model``'s fused blocks through the kernels inside this block."""
        key, depth = id(model), FusedKernels._DEPTH
        with FusedKernels._LOCK:
            depth[key] = depth.get(key, 0) + 1
            if depth[key] == 1:
                for m, hook in self._hooks.get(key, ()):
                    m.fused = hook
        try:
            yield
        finally:
            with FusedKernels._LOCK:
                depth[key] -= 1
                if depth[key] == 0:
                    del depth[key]
                    for m, _ in self._hooks.get(key, ()):
                        m.__dict__.pop("fused", None)  # back to the class default, None


KernelMode = Union[bool, Literal["force"]]


class Runner:
    """Runs FastPitch and HiFi-GAN batches for the engine.

    ``static`` runs batches in shape buckets (and, with ``use_graphs`` on CUDA, as captured
    CUDA graphs); None picks it on CUDA only. Output equals the unbucketed eager path.

    ``use_kernels`` routes FastPitch's feed-forward blocks, HiFi-GAN's residual blocks and the
    static path's length regulator through the fused Triton kernels (:class:`FusedKernels`):
    ``True`` (default) on CUDA only; ``"force"`` wherever Triton can run, i.e. CUDA or any
    device under the Triton interpreter (``TRITON_INTERPRET=1`` set before triton's first
    import: how the tests exercise the kernel path on CPU; far too slow for real use);
    ``False`` never. Where Triton cannot run the runner uses PyTorch (logged). ``kernels``
    tells which was chosen.

    The runner is the only place kernels are installed (:class:`FusedKernels`) and CUDA
    graphs captured (through its static programs, :mod:`engine.runtime.static`).
    """

    def __init__(self, voice: Voice, static: bool | None = None, use_graphs: bool = True,
                 buckets: Buckets = Buckets(), use_kernels: KernelMode = True,
                 vocoder_autocast: torch.dtype | None = None):
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
        # Fused Triton kernels: by default on CUDA only (on the CPU they would run under the
        # interpreter, and their references are the modules' own code anyway).
        if isinstance(use_kernels, str) and use_kernels != "force":
            raise ValueError(f"use_kernels must be True, False or 'force', got {use_kernels!r}")
        want = use_kernels == "force" or (bool(use_kernels) and self.device.type == "cuda")
        self.fused = FusedKernels.for_voice(voice) if want else None
        self.kernels = self.fused is not None
        self.static = (self.device.type == "cuda") if static is None else static
        self.buckets = buckets
        self.static_fastpitch = StaticFastPitch(
            voice.fastpitch, buckets, use_graphs,
            length_regulator=self.fused.length_regulate if self.fused is not None else None,
        ) if self.static else None
        self.static_vocoder = StaticVocoder(voice.hifigan, buckets, use_graphs) if self.static else None
        # Frames kept before a request's next window, so windows can grow left into a bucket.
        self.trim_margin = max(buckets.window) if self.static else 0
        # HiFi-GAN (92 % of the CPU time) under autocast, e.g. bf16 on CPUs with native bf16:
        # weights stay fp32, FastPitch (durations, pitch) stays in its own precision.
        self.vocoder_autocast = vocoder_autocast
        if vocoder_autocast is not None:
            log.info("HiFi-GAN runs under %s autocast on %s (weights %s)",
                     str(vocoder_autocast).replace("torch.", ""), self.device.type,
                     str(self.dtype).replace("torch.", ""))

    def _vocoder_precision(self) -> contextlib.AbstractContextManager:
        if self.vocoder_autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.vocoder_autocast)

    def _kernels_on(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """The fused kernels for ``model`` during a runner call (a no-op without kernels)."""
        return self.fused.active(model) if self.fused is not None else contextlib.nullcontext()

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
        with self._kernels_on(self.voice.fastpitch):
            for idx in groups.values():
                for i, piece in zip(idx, self._fastpitch_batch([items[i] for i in idx])):
                    out[i] = piece
        return out  # type: ignore[return-value]

    def _fastpitch_batch(self, items) -> list[MelPiece]:
        opts = [o for _, o in items]
        sfp = self.static_fastpitch
        if (sfp is not None and opts[0].pitch_transform is None
                and sfp.fits(len(items), max(len(ids) for ids, _ in items))):
            out = sfp([list(ids) for ids, _ in items], [o.pace for o in opts],
                      [o.speaker for o in opts], [o.pitch_shift for o in opts])
            return [MelPiece(mel, torch.floor(dur.float() / o.pace + 0.5).long().cpu().numpy())
                    for (mel, dur), o in zip(out, opts)]
        fp = self.voice.fastpitch
        T = max(len(ids) for ids, _ in items)
        inputs = torch.zeros(len(items), T, dtype=torch.long)
        for r, (ids, _) in enumerate(items):
            inputs[r, :len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
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
        # Group windows by their (bucketed) input length; each group runs as one batch.
        groups: dict[tuple[bool, int], list[tuple[int, int, int, int]]] = {}
        for i, (rid, win, strength) in enumerate(work):
            lo, hi, pad = win.mel_lo, win.mel_hi, 0
            if self.static_vocoder is not None:
                need_right = self.ctx_right + (DENOISE_MARGIN_FRAMES if strength > 0 else 0)
                grown = pad_window(win.mel_lo, win.mel_hi, win.out_hi, win.final, need_right,
                                   self.buckets.window)
                if grown is not None and grown[0] >= self.mels.first_frame(rid):
                    lo, hi, pad = grown
            static = self.static_vocoder is not None and (hi - lo + pad) in self.buckets.window
            groups.setdefault((static, hi - lo + pad), []).append((i, lo, hi, pad))
        with self._kernels_on(self.voice.hifigan), self._vocoder_precision():
            for (static, n), members in groups.items():
                mel = torch.stack([self._window_input(work[i][0], lo, hi, pad)
                                   for i, lo, hi, pad in members])  # (B, 80, n)
                gen = self.static_vocoder if static else self.voice.hifigan
                audio = gen(mel).float().squeeze(1)  # (B, n * hop)
                for row, (i, lo, _, _) in enumerate(members):
                    _, win, strength = work[i]
                    a = audio[row:row + 1]
                    if strength > 0 and self.voice.denoiser is not None:
                        a = self.voice.denoiser(a, strength).squeeze(1)
                    s0 = (win.out_lo - lo) * self.hop
                    s1 = (win.out_hi - lo) * self.hop
                    out[i] = a[0, s0:s1].cpu().numpy()
        frames = sum(w.mel_hi - w.mel_lo for _, w, _ in work)
        per_frame = (time.perf_counter() - t0) / max(frames, 1)
        ema = self.vocoder_s_per_frame
        self.vocoder_s_per_frame = per_frame if ema is None else 0.8 * ema + 0.2 * per_frame
        return out  # type: ignore[return-value]

    def _window_input(self, rid: int, lo: int, hi: int, pad: int) -> Tensor:
        """Mel frames [lo, hi) of a request, plus ``pad`` silence frames: (80, hi - lo + pad)."""
        mel = self.mels.frames(rid, lo, hi)
        if pad:
            mel = torch.cat([mel, torch.full((mel.size(0), pad), LOG_MEL_FLOOR,
                                             device=mel.device, dtype=mel.dtype)], dim=1)
        return mel

    @torch.inference_mode()
    def vocode_full(self, mel: Tensor, denoise: float = 0.0) -> np.ndarray:
        """Offline: one pass over a whole (80, T) mel -> float32 audio."""
        with self._kernels_on(self.voice.hifigan), self._vocoder_precision():
            audio = self.voice.hifigan(mel.to(self.device, self.dtype)[None]).float().squeeze(1)
        if denoise > 0 and self.voice.denoiser is not None:
            audio = self.voice.denoiser(audio, denoise).squeeze(1)
        return audio[0].cpu().numpy()
