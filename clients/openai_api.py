"""The OpenAI-compatible speech API: ``POST /v1/audio/speech``, ``GET /v1/audio/voices`` and
``GET /v1/models``, with OpenAI's field names, formats and error shape.

What OpenAI's clients send is accepted as they send it: any ``model`` string, a ``voice`` name
(OpenAI's names such as ``alloy`` all mean the default voice) or ``{"id": …}``,
``instructions`` (accepted and ignored: FastPitch has no prompt), ``speed`` 0.25-4 (the pace),
``response_format`` and ``stream_format``. The ``Accept`` header is not negotiated on (the
openai client always sends ``application/octet-stream``, SSE included).

Audio is 24 kHz mono like OpenAI's (``pcm`` is raw s16le), resampled from the voice's rate as
chunks come, and sent as it is made: ``stream_format: "audio"`` as chunked bytes,
``"sse"`` as ``speech.audio.delta`` events with base64 audio, then ``speech.audio.done`` with
``usage``. ``wav`` streams with a header of unknown length; ``mp3`` and ``opus`` (Ogg) are
encoded by libsndfile (through soundfile) as chunks come; ``flac`` is sent whole at the end,
because its header (written first) must hold the length for libsndfile-based readers to open
it; ``aac`` is refused with a 400.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import struct
from dataclasses import dataclass
from typing import Any, AsyncIterator

import numpy as np

from engine import AsyncStream, Engine
from engine.errors import InputError
from engine.pcm import StreamResampler, encode

log = logging.getLogger(__name__)

MODEL_ID = "fastpitch-stream"
OPENAI_RATE = 24000  # OpenAI's speech API returns 24 kHz audio in every format
DEFAULT_MAX_INPUT_CHARS = 4096
SPEED_RANGE = (0.25, 4.0)
# OpenAI's built-in voice names: clients offer them, so each one maps to our default voice.
OPENAI_VOICES = ("alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova",
                 "onyx", "sage", "shimmer", "verse")
VOICES = {"default": "fastpitch-stream default voice (LJSpeech, FastPitch 1.1)"}
# response_format -> (content type, soundfile (format, subtype) or None for our own writer)
# Formats sent whole when synthesis ends: the encoder seeks back to write their header.
WHOLE_FORMATS = ("flac",)
FORMATS: dict[str, tuple[str, tuple[str, str] | None]] = {
    "pcm": ("audio/pcm", None),
    "wav": ("audio/wav", None),
    "flac": ("audio/flac", ("FLAC", "PCM_16")),
    "mp3": ("audio/mpeg", ("MP3", "MPEG_LAYER_III")),
    "opus": ("audio/ogg", ("OGG", "OPUS")),
}
UNSUPPORTED_FORMATS = {"aac": "libsndfile cannot write AAC; use mp3, opus, flac, wav or pcm"}
REQUEST_FIELDS = ("model", "input", "voice", "instructions", "speed", "response_format",
                  "stream_format")


class ApiError(InputError):
    """A request answered with OpenAI's error shape and an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.code, self.type = status, param, code, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.type, "param": self.param,
                          "code": self.code}}


@dataclass(frozen=True)
class SpeechRequest:
    """A validated ``POST /v1/audio/speech`` body."""

    input: str
    model: str
    voice: str  # our voice id
    speed: float = 1.0
    response_format: str = "mp3"
    stream_format: str = "audio"
    instructions: str | None = None

    @property
    def content_type(self) -> str:
        return "text/event-stream" if self.stream_format == "sse" \
            else FORMATS[self.response_format][0]


def resolve_voice(voice: Any) -> str:
    """A voice name or ``{"id": name}`` -> our voice id (OpenAI's names -> default)."""
    if isinstance(voice, dict):
        if set(voice) != {"id"} or not isinstance(voice["id"], str):
            raise ApiError(400, "voice must be a name or an object {\"id\": name}", "voice")
        voice = voice["id"]
    if not isinstance(voice, str):
        raise ApiError(400, f"voice must be a string, got {type(voice).__name__}", "voice")
    if voice in VOICES:
        return voice
    if voice.lower() in OPENAI_VOICES:
        return "default"
    known = sorted(VOICES) + list(OPENAI_VOICES)
    raise ApiError(400, f"unknown voice {voice!r}; available: {', '.join(known)}", "voice",
                   "invalid_voice")


def parse_speech_request(body: bytes, content_type: str | None,
                         max_input_chars: int = DEFAULT_MAX_INPUT_CHARS) -> SpeechRequest:
    """Validate a request body (JSON) the way OpenAI's API does; ApiError(400) otherwise."""
    if (content_type or "").split(";")[0].strip().lower() != "application/json":
        raise ApiError(400, f"Content-Type must be application/json, got {content_type!r}")
    try:
        msg = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise ApiError(400, f"invalid JSON body: {e}") from None
    if not isinstance(msg, dict):
        raise ApiError(400, "the body must be a JSON object")
    unknown = sorted(set(msg) - set(REQUEST_FIELDS))
    if unknown:
        raise ApiError(400, f"unrecognized request argument(s): {', '.join(unknown)}",
                       unknown[0])
    for name in ("model", "input", "voice"):
        if msg.get(name) is None:
            raise ApiError(400, f"missing required parameter: '{name}'", name)
    model, text = msg["model"], msg["input"]
    if not isinstance(model, str):
        raise ApiError(400, "model must be a string", "model")
    if not isinstance(text, str):
        raise ApiError(400, "input must be a string", "input")
    if not text.strip():
        raise ApiError(400, "input is empty", "input")
    if len(text) > max_input_chars:
        raise ApiError(413, f"input is {len(text)} characters; the limit is {max_input_chars}",
                       "input", "string_above_max_length")
    speed = msg.get("speed", 1.0)
    if speed is None:
        speed = 1.0
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed) \
            or not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
        raise ApiError(400, f"speed must be a number from {SPEED_RANGE[0]} to {SPEED_RANGE[1]}, "
                            f"got {speed!r}", "speed")
    fmt = msg.get("response_format") or "mp3"
    if not isinstance(fmt, str):
        raise ApiError(400, f"response_format must be a string, got {type(fmt).__name__}",
                       "response_format")
    if fmt in UNSUPPORTED_FORMATS:
        raise ApiError(400, f"response_format {fmt!r} is not supported here: "
                            f"{UNSUPPORTED_FORMATS[fmt]}", "response_format", "unsupported_format")
    if fmt not in FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(FORMATS)}, got {fmt!r}",
                       "response_format")
    stream_format = msg.get("stream_format") or "audio"
    if not isinstance(stream_format, str) or stream_format not in ("audio", "sse"):
        raise ApiError(400, f"stream_format must be 'audio' or 'sse', got {stream_format!r}",
                       "stream_format")
    instructions = msg.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise ApiError(400, "instructions must be a string", "instructions")
    return SpeechRequest(text, model, resolve_voice(msg["voice"]), float(speed), fmt,
                         stream_format, instructions)


# ---------------------------------------------------------------------------- audio formats


class _GrowingFile(io.RawIOBase):
    """A file in memory for libsndfile's virtual I/O, from which the bytes written since the
    last :meth:`take` are handed on (header patches an encoder seeks back to write after
    those bytes have gone would be lost: formats that need them are taken whole, at the end)."""

    def __init__(self) -> None:
        super().__init__()
        self._buf = bytearray()
        self._pos = 0
        self._sent = 0

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        end = self._pos + len(data)
        if end > len(self._buf):
            self._buf.extend(b"\0" * (end - len(self._buf)))
        self._buf[self._pos:end] = data
        self._pos = end
        return len(data)

    def readinto(self, b: Any) -> int:
        data = self._buf[self._pos:self._pos + len(b)]
        b[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._buf)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out = bytes(self._buf[self._sent:])
        self._sent = len(self._buf)
        return out


def wav_header(sample_rate: int, channels: int = 1, bits: int = 16) -> bytes:
    """A RIFF/WAVE header for a stream of unknown length (sizes 0xFFFFFFFF, as streaming
    servers send it; players read to the end of the data)."""
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate,
                                    sample_rate * block, block, bits)
            + b"data" + struct.pack("<I", 0xFFFFFFFF))


class AudioEncoder:
    """Float chunks at the voice's rate -> bytes of one response format at 24 kHz, chunk by
    chunk (one per response: the resampler joins the seams)."""

    def __init__(self, response_format: str, voice_rate: int):
        self.format = response_format
        self.resampler = StreamResampler(voice_rate, OPENAI_RATE)
        self.samples = 0
        self._header = wav_header(OPENAI_RATE) if response_format == "wav" else b""
        self._file: _GrowingFile | None = None
        self._sf: Any = None
        spec = FORMATS[response_format][1]
        if spec is not None:
            import soundfile as sf

            self._file = _GrowingFile()
            self._sf = sf.SoundFile(self._file, "w", samplerate=OPENAI_RATE, channels=1,
                                    format=spec[0], subtype=spec[1])

    def encode(self, audio: np.ndarray, last: bool) -> bytes:
        out = self.resampler.process(audio, last=last)
        self.samples += len(out)
        if self._sf is None:
            data, self._header = self._header + encode(out, "pcm_s16le"), b""
            return data
        assert self._file is not None
        if len(out):
            self._sf.write(out.astype(np.float32))
        if last:
            self._sf.close()
        elif self.format in WHOLE_FORMATS:
            return b""
        return self._file.take()

    def close(self) -> None:
        if self._sf is not None and not self._sf.closed:
            self._sf.close()


async def speech_chunks(engine: Engine, req: SpeechRequest) -> tuple[AsyncStream, Any]:
    """Start synthesis; returns the stream and its first chunk (awaited here, so that a
    request the engine refuses, such as text with nothing speakable, still gets its 400)."""
    stream = engine.aopen(pace=req.speed)
    try:
        await stream.send(req.input)
        await stream.end()
        first = await stream.__anext__()
    except StopAsyncIteration:
        stream.cancel()
        raise ApiError(400, "the input has nothing speakable", "input") from None
    except InputError as e:
        stream.cancel()
        raise ApiError(400, str(e), "input") from None
    except BaseException:
        stream.cancel()
        raise
    return stream, first


async def speech_body(stream: AsyncStream, first: Any, req: SpeechRequest,
                      voice_rate: int) -> AsyncIterator[bytes]:
    """The response body, made as the engine delivers chunks. Closing this generator (a
    client that went away) cancels the synthesis within one chunk."""
    encoder = AudioEncoder(req.response_format, voice_rate)
    sse = req.stream_format == "sse"
    try:
        chunk = first
        while chunk is not None:
            data = encoder.encode(chunk.audio, last=chunk.final)
            if data:
                if sse:
                    event = {"type": "speech.audio.delta",
                             "audio": base64.b64encode(data).decode("ascii")}
                    yield f"data: {json.dumps(event)}\n\n".encode()
                else:
                    yield data
            if chunk.final:
                break
            chunk = await anext_or_none(stream)
        if sse:
            # Usage in OpenAI's shape; FastPitch has no tokens, so input characters stand in.
            n = len(req.input)
            done = {"type": "speech.audio.done",
                    "usage": {"input_tokens": n, "output_tokens": 0, "total_tokens": n}}
            yield f"data: {json.dumps(done)}\n\n".encode()
    finally:
        stream.cancel()
        encoder.close()


async def anext_or_none(stream: AsyncStream) -> Any:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


def models_body() -> dict[str, Any]:
    return {"object": "list",
            "data": [{"id": MODEL_ID, "object": "model", "created": 0,
                      "owned_by": "fastpitch-stream"}]}


def voices_body() -> dict[str, Any]:
    return {"voices": [{"id": vid, "name": name} for vid, name in VOICES.items()]}
