"""One websocket session of the TTS server: reads client messages, runs utterances one at a
time through the engine, relays their audio (resampled and encoded for the session).

A session speaks one *utterance* at a time and can speak any number in turn; `start`
negotiates the session's rate, encoding and voice options (:func:`parse_start`). Bad client
messages get an ``error`` frame (:class:`ProtocolError`) and change nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import AsyncStream, Engine
from engine.errors import InputError
from engine.pcm import StreamResampler, encode
from engine.runtime.request import SynthesisOptions

from .protocol import (BAD_REQUEST, CLOSE_NORMAL, DEFAULT_ENCODING, ENCODINGS, EXTRA_RATES,
                       INTERNAL, MULAW_RATE, OPTION_FIELDS, START_FIELDS, TOO_LARGE, VOICES)

if TYPE_CHECKING:
    from .app import AppState

log = logging.getLogger(__name__)


class SessionClosed(Exception):
    """The client's connection is gone (or closing): the session ends."""


class ProtocolError(InputError):
    """A client message the server answers with an ``error`` frame (the session goes on)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SessionConfig:
    """What a ``start`` message negotiated (or the defaults)."""

    sample_rate: int
    encoding: str = DEFAULT_ENCODING
    options: dict[str, Any] = field(default_factory=dict)  # engine options: pace, ...

    def ready_message(self) -> dict[str, Any]:
        return {"type": "ready", "sample_rate": self.sample_rate, "encoding": self.encoding,
                "channels": 1}


def parse_start(msg: dict[str, Any], engine: Engine) -> SessionConfig:
    """Validate a ``start`` message against the engine's voice. Raises ProtocolError
    (bad_request) naming the offending field. ``null`` values mean "the default"."""
    unknown = sorted(set(msg) - START_FIELDS)
    if unknown:
        raise ProtocolError(BAD_REQUEST, f"start: unknown field(s) {unknown}; known: "
                                         f"{sorted(START_FIELDS - {'type'})}")
    m = {k: v for k, v in msg.items() if v is not None}
    voice = m.get("voice", "default")
    if voice not in VOICES:
        raise ProtocolError(BAD_REQUEST, f"start: voice must be one of {list(VOICES)}, "
                                         f"got {voice!r}")
    encoding = m.get("encoding", DEFAULT_ENCODING)
    if encoding not in ENCODINGS:
        raise ProtocolError(BAD_REQUEST, f"start: encoding must be one of {list(ENCODINGS)}, "
                                         f"got {encoding!r}")
    native = engine.sample_rate
    rates = sorted({native, *EXTRA_RATES})
    # µ-law is telephone audio: G.711 defines it at 8 kHz only, so that is its default.
    rate = m.get("sample_rate", MULAW_RATE if encoding == "mulaw" else native)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate not in rates:
        raise ProtocolError(BAD_REQUEST, f"start: sample_rate must be one of {rates}, "
                                         f"got {rate!r}")
    if encoding == "mulaw" and rate != MULAW_RATE:
        raise ProtocolError(BAD_REQUEST, f"start: encoding mulaw requires sample_rate "
                                         f"{MULAW_RATE}, got {rate}")
    options = {k: m[k] for k in OPTION_FIELDS if k in m}
    try:
        SynthesisOptions.from_kwargs(**options)  # the engine's own checks and messages
    except InputError as e:
        raise ProtocolError(BAD_REQUEST, f"start: {e}") from None
    # Checked here because an out-of-range id would fail the whole FastPitch batch, i.e.
    # other sessions' requests too.
    n_speakers = engine.voice.fastpitch.config.n_speakers
    if options.get("speaker", 0) >= n_speakers:
        raise ProtocolError(BAD_REQUEST, f"start: speaker must be in 0..{n_speakers - 1} for "
                                         f"this voice, got {options['speaker']}")
    return SessionConfig(rate, encoding, options)


class _Encoder:
    """Float chunks at the voice's rate -> bytes in the session's rate and encoding. One per
    utterance: the resampler's state joins chunk seams without clicks."""

    def __init__(self, native_rate: int, config: SessionConfig):
        self.encoding = config.encoding
        self.resampler = StreamResampler(native_rate, config.sample_rate)

    def encode(self, audio: np.ndarray, last: bool) -> tuple[bytes, int]:
        out = self.resampler.process(audio, last=last)
        return encode(out, self.encoding), len(out)


class _Utterance:
    """One utterance of a session: its engine stream, the task relaying its audio, counters."""

    def __init__(self, stream: AsyncStream, encoder: _Encoder, sample_rate: int):
        self.stream = stream
        self.encoder = encoder
        self.sample_rate = sample_rate
        self.pump: asyncio.Task | None = None
        self.ended = False  # "end" received
        self.cancelled = False
        self.in_pair = False  # between a chunk's JSON frame and its binary frame
        self.chars_sent = 0  # text characters given to the engine
        self.chars_spoken = 0  # end of the last text span the engine reported
        self.samples_out = 0
        self.t_first_text = time.monotonic()
        self.t_first_audio: float | None = None

    @property
    def chars_buffered(self) -> int:
        return self.chars_sent - self.chars_spoken


class _Session:
    """One websocket connection: reads client messages, runs utterances one at a time."""

    def __init__(self, server: "AppState", conn: Any, sid: int):
        self.server = server
        self.engine = server.engine
        self.limits = server.limits
        self.conn = conn
        self.id = sid
        self.config: SessionConfig | None = None
        self.utt: _Utterance | None = None
        # Held while a frame (or a chunk's JSON + binary pair) is written, so that no other
        # frame can land between a chunk's JSON and its audio.
        self.send_lock = asyncio.Lock()
        self.loop = asyncio.get_running_loop()
        self.last_activity = self.loop.time()

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        recv: asyncio.Task | None = None
        try:
            while True:
                if recv is None:
                    recv = asyncio.ensure_future(self.conn.recv())
                waiting: set[asyncio.Future] = {recv}
                speaking = self.utt is not None and self.utt.pump is not None
                timeout: float | None = None  # no idle clock while an utterance runs
                if speaking:
                    waiting.add(self.utt.pump)  # to restart the idle clock when it ends
                else:
                    timeout = max(0.0, self.last_activity + self.limits.idle_timeout
                                  - self.loop.time())
                # A client's close frame ends recv() at once (the server answers it), even
                # while our writer waits on a client that reads no more: the finally below
                # then cancels the synthesis.
                done, _ = await asyncio.wait(waiting, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    log.info("session %d: idle for %.0f s, closing", self.id,
                             self.limits.idle_timeout)
                    await self.conn.close(CLOSE_NORMAL, "idle timeout")
                    return
                if recv in done:
                    message = recv.result()  # SessionClosed ends the session
                    recv = None
                    self.last_activity = self.loop.time()
                    await self.handle(message)
                else:
                    self.last_activity = self.loop.time()  # an utterance ended
        except SessionClosed:
            pass
        finally:
            if recv is not None:
                recv.cancel()
                await asyncio.gather(recv, return_exceptions=True)
            await self.stop_utterance(drain_pair=False)

    async def handle(self, message: str | bytes) -> None:
        """Answer one client frame; bad ones get an error frame and change nothing."""
        try:
            msg = self.parse(message)
            kind = msg["type"]
            if kind == "text":
                await self.on_text(msg)
            elif kind == "flush":
                self.expect_fields(msg, {"type"})
                if self.utt is not None and not self.utt.ended:
                    await self.utt.stream.flush()
            elif kind == "end":
                self.expect_fields(msg, {"type"})
                await self.on_end()
            elif kind == "cancel":
                self.expect_fields(msg, {"type"})
                await self.stop_utterance(drain_pair=True)
                await self.send({"type": "cancelled"})
            elif kind == "start":
                if self.utt is not None:
                    raise ProtocolError(BAD_REQUEST, "start: an utterance is in progress; "
                                                     "send end (and wait for done) or cancel")
                self.config = parse_start(msg, self.engine)
                await self.send(self.config.ready_message())
            else:
                raise ProtocolError(BAD_REQUEST, f"unknown message type {kind!r}; known: "
                                                 "start, text, flush, cancel, end")
        except ProtocolError as e:
            await self.send_error(e.code, str(e))

    def parse(self, message: str | bytes) -> dict[str, Any]:
        if isinstance(message, bytes):
            raise ProtocolError(BAD_REQUEST, "binary frames are not accepted: send JSON "
                                             "messages as text frames")
        limit = self.limits.max_frame_bytes
        # Characters <= bytes <= 4 characters in UTF-8: encode only when it can matter.
        if len(message) > limit or (len(message) * 4 > limit
                                    and len(message.encode("utf-8")) > limit):
            raise ProtocolError(TOO_LARGE, f"frame larger than {limit} bytes; send long text "
                                           "as several text messages")
        try:
            msg = json.loads(message)
        except ValueError as e:
            raise ProtocolError(BAD_REQUEST, f"malformed JSON: {e}") from None
        except RecursionError:  # e.g. 60,000 nested brackets: still a client's mistake
            raise ProtocolError(BAD_REQUEST, "malformed JSON: nested too deeply") from None
        if not isinstance(msg, dict):
            raise ProtocolError(BAD_REQUEST, "a message must be a JSON object with a "
                                             f"\"type\", got {type(msg).__name__}")
        if not isinstance(msg.get("type"), str):
            raise ProtocolError(BAD_REQUEST, "a message needs a string field \"type\"")
        return msg

    @staticmethod
    def expect_fields(msg: dict[str, Any], allowed: set[str]) -> None:
        extra = sorted(set(msg) - allowed)
        if extra:
            raise ProtocolError(BAD_REQUEST, f"{msg['type']}: unknown field(s) {extra}")

    # ------------------------------------------------------------------ messages

    async def on_text(self, msg: dict[str, Any]) -> None:
        self.expect_fields(msg, {"type", "text"})
        text = msg.get("text")
        if not isinstance(text, str):
            raise ProtocolError(BAD_REQUEST, "text: field \"text\" must be a string, got "
                                             f"{type(text).__name__}")
        utt = self.utt
        if utt is not None and utt.ended:
            raise ProtocolError(BAD_REQUEST, "text after end: wait for done (or send cancel) "
                                             "before the next utterance")
        buffered = (utt.chars_buffered if utt is not None else 0) + len(text)
        if buffered > self.limits.max_text_chars:
            raise ProtocolError(TOO_LARGE, f"more than {self.limits.max_text_chars} characters "
                                           "of text waiting to be spoken; this text was "
                                           "dropped (wait for audio, or cancel)")
        if utt is None:
            if self.config is None:  # no start: defaults, announced before any audio
                self.config = parse_start({"type": "start"}, self.engine)
                await self.send(self.config.ready_message())
            utt = self.open_utterance(self.config)
        utt.chars_sent += len(text)
        if text:
            # Waits while the engine's inbox for this request is full, which stops reading
            # this client (TCP backpressure).
            await utt.stream.send(text)

    async def on_end(self) -> None:
        utt = self.utt
        if utt is None:
            raise ProtocolError(BAD_REQUEST, "end: there is no text to speak; send text first")
        if utt.ended:
            raise ProtocolError(BAD_REQUEST, "end: already sent for this utterance")
        utt.ended = True
        await utt.stream.end()

    # ------------------------------------------------------------------ utterances

    def open_utterance(self, config: SessionConfig) -> _Utterance:
        try:
            stream = self.engine.aopen(**config.options)
        except InputError as e:  # validated in parse_start; kept as a safety net
            raise ProtocolError(BAD_REQUEST, str(e)) from None
        utt = _Utterance(stream, _Encoder(self.engine.sample_rate, config), config.sample_rate)
        utt.pump = asyncio.ensure_future(self.pump(utt))
        self.utt = utt
        return utt

    async def pump(self, utt: _Utterance) -> None:
        """Relay one utterance's chunks to the client, then report done or the error."""
        outcome: dict[str, Any] | None = None
        try:
            async for chunk in utt.stream:
                if utt.cancelled:
                    break
                data, n = utt.encoder.encode(chunk.audio, last=chunk.final)
                if chunk.text_span is not None:
                    utt.chars_spoken = chunk.text_span[1]
                meta = {"type": "chunk", "offset": utt.samples_out, "samples": n,
                        "text": chunk.text, "words": [w.to_dict() for w in chunk.words]}
                async with self.send_lock:
                    utt.in_pair = True
                    try:
                        await self.conn.send(json.dumps(meta))
                        await self.conn.send(data)
                    finally:
                        utt.in_pair = False
                utt.samples_out += n
                if utt.t_first_audio is None:
                    utt.t_first_audio = time.monotonic()
            if not utt.cancelled:
                wall = time.monotonic() - utt.t_first_text
                seconds = utt.samples_out / utt.sample_rate
                ttfa = None if utt.t_first_audio is None else \
                    round((utt.t_first_audio - utt.t_first_text) * 1000, 1)
                outcome = {"type": "done", "ttfa_ms": ttfa, "audio_seconds": round(seconds, 4),
                           "rtf": round(seconds / wall, 3) if wall > 0 else None}
                log.info("session %d: utterance done: %.2f s of audio, TTFA %s ms, RTF %s",
                         self.id, seconds, ttfa, outcome["rtf"])
        except SessionClosed:
            pass  # the session's reader sees it too and cleans up
        except InputError as e:  # the engine's verdict on the text, e.g. nothing speakable
            outcome = {"type": "error", "code": BAD_REQUEST, "message": str(e)}
        except Exception as e:  # noqa: BLE001 - one utterance fails, the session goes on
            log.exception("session %d: synthesis failed", self.id)
            outcome = {"type": "error", "code": INTERNAL, "message": f"synthesis failed: {e}"}
        finally:
            # However the relay ended (a send failing on a closed connection included), the
            # engine request must not outlive it; a no-op for a stream that finished.
            utt.stream.cancel()
            # Cleared before "done" is sent, so that text the client sends once it has seen
            # "done" always starts a new utterance.
            if self.utt is utt:
                self.utt = None
                self.last_activity = self.loop.time()
        if outcome is not None:
            try:
                await self.send(outcome)
            except SessionClosed:
                pass

    async def stop_utterance(self, drain_pair: bool) -> None:
        """Cancel the current utterance: the engine drops its request within one chunk and
        undelivered audio is discarded. With ``drain_pair`` a chunk whose JSON frame is
        already out still gets its binary frame (the connection stays usable)."""
        utt = self.utt
        if utt is None:
            return
        utt.cancelled = True
        utt.stream.cancel()
        pump = utt.pump
        if pump is not None:
            if not (drain_pair and utt.in_pair):
                pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        if self.utt is utt:  # a newer utterance opened meanwhile is not this one to drop
            self.utt = None

    # ------------------------------------------------------------------ sending

    async def send(self, msg: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.conn.send(json.dumps(msg))

    async def send_error(self, code: str, message: str) -> None:
        log.info("session %d: %s: %s", self.id, code, message)
        await self.send({"type": "error", "code": code, "message": message})
