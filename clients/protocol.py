"""The websocket protocol's vocabulary, shared by the server and the client (no torch here).

Message types and fields, audio encodings, sample rates, error and close codes: README.md,
"Websocket protocol". The per-request voice options come from the engine's own list
(:data:`engine.runtime.request.WIRE_OPTION_NAMES`), so a new option reaches the wire, the
client and the server in one place.
"""

from __future__ import annotations

from typing import Any, Iterable

from engine.pcm import ENCODINGS as _ENCODING_WIDTHS
from engine.runtime.request import WIRE_OPTION_NAMES, WordTiming

PATH = "/v1/tts"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_URL = f"ws://{DEFAULT_HOST}:{DEFAULT_PORT}{PATH}"

ENCODINGS: tuple[str, ...] = tuple(_ENCODING_WIDTHS)  # pcm_s16le (default), pcm_f32le, mulaw
DEFAULT_ENCODING = "pcm_s16le"
MULAW_RATE = 8000  # G.711 defines µ-law at 8 kHz only
EXTRA_RATES = (8000, 16000, 24000, 44100, 48000)  # besides the voice's native rate
VOICES = ("default",)

# Fields of a `start` message: the session's format, its voice, and the voice options.
SESSION_FIELDS = ("voice", "sample_rate", "encoding")
OPTION_FIELDS: tuple[str, ...] = WIRE_OPTION_NAMES  # pace, pitch_shift, speaker, denoise
START_FIELDS = frozenset({"type", *SESSION_FIELDS, *OPTION_FIELDS})

# Error codes of {"type": "error"} frames.
BAD_REQUEST, TOO_LARGE, BUSY, UNAUTHORIZED, INTERNAL = (
    "bad_request", "too_large", "busy", "unauthorized", "internal")
ERROR_CODES = (BAD_REQUEST, TOO_LARGE, BUSY, UNAUTHORIZED, INTERNAL)

# Close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000  # idle timeout, or the client closed
CLOSE_INTERNAL = 1011  # a bug in the server
CLOSE_BUSY = 1013  # "try again later": max_sessions reached


def words_from_json(words: Iterable[dict[str, Any]]) -> tuple[WordTiming, ...]:
    """The ``words`` field of a ``chunk`` message -> WordTimings (the inverse of
    :meth:`WordTiming.to_dict`)."""
    return tuple(WordTiming(str(w["word"]), float(w["start"]), float(w["end"])) for w in words)
