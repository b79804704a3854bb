"""A request's data seen from outside: options in, audio chunks and word timings out.

No torch here: clients import :class:`WordTiming` and :data:`WIRE_OPTION_NAMES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class WordTiming:
    """A spoken word (as cleaned: "3" is "three") and its time in the stream, in seconds."""

    word: str
    start: float
    end: float

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "start": round(self.start, 4), "end": round(self.end, 4)}


@dataclass(frozen=True)
class AudioChunk:
    """A piece of streamed audio.

    ``audio`` is float32 mono in [-1, 1] at ``sample_rate``; ``offset`` is the index of its
    first sample in the request's stream. ``text`` is the input text whose speech *starts* in
    this chunk (each piece of text is reported once), ``text_span`` its (start, end)
    character offsets in the request's full text, and ``words`` the words that start here.
    """

    audio: np.ndarray
    sample_rate: int
    offset: int
    text: str = ""
    text_span: tuple[int, int] | None = None
    words: tuple[WordTiming, ...] = ()
    final: bool = False
    mel: np.ndarray | None = field(default=None, repr=False)  # (80, T); synthesize(keep_mel=True)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate

    @property
    def start_time(self) -> float:
        return self.offset / self.sample_rate


def _number(name: str, v: Any, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(f"{name} must be a number, got {v!r}")
    if not lo <= v <= hi:
        raise InputError(f"{name} must be within [{lo:g}, {hi:g}], got {v!r}")
    return float(v)


@dataclass(frozen=True)
class SynthesisOptions:
    """Per-request options, validated on construction (ValueError on bad values).

    pace: speaking rate (>1 faster); pitch_shift: Hz added to the predicted pitch;
    pitch_transform: a hub-style callable ``f(pitch, pitch_lens, mean, std)`` applied before
    the shift; speaker: speaker id; denoise: denoiser strength (0 = off; NVIDIA's example uses
    0.005).
    """

    pace: float = 1.0
    pitch_shift: float = 0.0
    pitch_transform: Callable | None = field(default=None, compare=False)
    speaker: int = 0
    denoise: float = 0.0

    def __post_init__(self) -> None:
        _number("pace", self.pace, 0.1, 10.0)
        _number("pitch_shift", self.pitch_shift, -1000.0, 1000.0)
        _number("denoise strength", self.denoise, 0.0, 1.0)
        if isinstance(self.speaker, bool) or not isinstance(self.speaker, int) or self.speaker < 0:
            raise InputError(f"speaker must be a non-negative integer, got {self.speaker!r}")
        if self.pitch_transform is not None and not callable(self.pitch_transform):
            raise InputError("pitch_transform must be callable f(pitch, pitch_lens, mean, std)")

    @classmethod
    def from_kwargs(cls, **options: Any) -> "SynthesisOptions":
        """Build from keyword options, naming unknown ones in the error."""
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise InputError(f"unknown option(s) {unknown}; known: {sorted(OPTION_NAMES)}")
        return cls(**options)


# The per-request option names, in one place: SynthesisOptions' fields. The websocket
# protocol's `start` fields (clients.protocol), the server's checks and the client's
# keyword options derive theirs from it.
OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(SynthesisOptions))
# The options a JSON message can carry (a callable cannot travel over the wire).
WIRE_OPTION_NAMES: tuple[str, ...] = tuple(n for n in OPTION_NAMES if n != "pitch_transform")

