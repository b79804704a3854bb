"""Websocket text-to-speech server: text in (whole, or LLM-style deltas), PCM out.

One websocket connection is one *session*; a session speaks one *utterance* at a time, and
can speak any number of them in turn. The protocol is documented in README.md, section
"Websocket protocol". In short (client -> server JSON text frames, server -> client JSON
text frames plus one binary frame of audio after each ``chunk``)::

    -> {"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"}   (optional)
    <- {"type": "ready", "sample_rate": 16000, "encoding": "pcm_s16le", "channels": 1}
    -> {"type": "text", "text": "Hello th"}   -> {"type": "text", "text": "ere."}
    -> {"type": "end"}
    <- {"type": "chunk", "offset": 0, "samples": 2048, "text": "Hello there.", "words": [...]}
    <- <binary: 2048 samples of PCM>
    <- {"type": "done", "ttfa_ms": 31.0, "audio_seconds": 1.2, "rtf": 25.1}

In-process (tests, embedding)::

    async with serve_tts(engine, port=0) as server:
        print(server.url)          # ws://127.0.0.1:<port>/v1/tts

Blocking (the ``fpstream serve`` command): :func:`run_server`, which stops cleanly on
Ctrl-C / SIGTERM.

Synthesis runs in the engine's own loop thread; this module only moves text and bytes, so
nothing here blocks the event loop for long (encoding one chunk takes well under 1 ms).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import queue
import signal
import time
from dataclasses import dataclass, field, fields
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from engine.audio import StreamResampler, float_to_mulaw, float_to_pcm16
from engine.engine import AsyncStream, Engine
from engine.request import SynthesisOptions

log = logging.getLogger(__name__)

PATH = "/v1/tts"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
ENCODINGS = ("pcm_s16le", "pcm_f32le", "mulaw")
EXTRA_RATES = (8000, 16000, 24000, 44100, 48000)  # besides the voice's native rate
VOICES = ("default",)
WEB_INDEX = Path(__file__).parent / "web" / "index.html"

# Close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000  # idle timeout, or the client closed
CLOSE_INTERNAL = 1011  # a bug in this server
CLOSE_BUSY = 1013  # "try again later": max_sessions reached

# Error codes of {"type": "error"} frames.
BAD_REQUEST, TOO_LARGE, BUSY, UNAUTHORIZED, INTERNAL = (
    "bad_request", "too_large", "busy", "unauthorized", "internal")

# How often a session that is speaking checks whether the client started closing.
_CLOSE_POLL_S = 0.05

_START_FIELDS = {"type", "voice", "sample_rate", "encoding", "pace", "pitch_shift", "speaker",
                 "denoise"}


class ProtocolError(ValueError):
    """A client message the server answers with an ``error`` frame (the session goes on)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ServerLimits:
    """Per-server limits. Every one bounds memory or work that a client could otherwise grow.

    max_frame_bytes: largest client frame handled; larger ones get a ``too_large`` error and
        are dropped. Frames over 4x this are not even read: the connection closes with 1009.
    max_text_chars: text accepted but not yet spoken, per session (``too_large`` beyond it).
    max_sessions: connections at once; one more gets a ``busy`` error and close code 1013.
    idle_timeout: seconds without a client message, while no utterance is in progress, after
        which the server closes the session (code 1000, reason "idle timeout").
    write_limit: bytes buffered for a client before sending waits (backpressure): a slow
        reader pauses its own synthesis instead of growing buffers.
    ping_interval, ping_timeout: websocket keepalive; a peer that stops answering pings
        (gone, or not reading at all) is disconnected.
    """

    max_frame_bytes: int = 64 * 1024
    max_text_chars: int = 100_000
    max_sessions: int = 16
    idle_timeout: float = 60.0
    write_limit: int = 64 * 1024
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0

    def __post_init__(self) -> None:
        for name in ("max_frame_bytes", "max_text_chars", "max_sessions", "write_limit"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("idle_timeout", "ping_interval", "ping_timeout"):
            v = getattr(self, name)
            if v is None and name != "idle_timeout":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 \
                    or not math.isfinite(v):
                raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")

    @classmethod
    def from_kwargs(cls, **limits: Any) -> "ServerLimits":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(limits) - known)
        if unknown:
            raise ValueError(f"unknown limit(s) {unknown}; known: {sorted(known)}")
        return cls(**limits)


@dataclass(frozen=True)
class SessionConfig:
    """What a ``start`` message negotiated (or the defaults)."""

    sample_rate: int
    encoding: str = "pcm_s16le"
    options: dict[str, Any] = field(default_factory=dict)  # engine options: pace, ...

    def ready_message(self) -> dict[str, Any]:
        return {"type": "ready", "sample_rate": self.sample_rate, "encoding": self.encoding,
                "channels": 1}


def parse_start(msg: dict[str, Any], engine: Engine) -> SessionConfig:
    """Validate a ``start`` message against the engine's voice. Raises ProtocolError
    (bad_request) naming the offending field. ``null`` values mean "the default"."""
    unknown = sorted(set(msg) - _START_FIELDS)
    if unknown:
        raise ProtocolError(BAD_REQUEST, f"start: unknown field(s) {unknown}; known: "
                                         f"{sorted(_START_FIELDS - {'type'})}")
    m = {k: v for k, v in msg.items() if v is not None}
    voice = m.get("voice", "default")
    if voice not in VOICES:
        raise ProtocolError(BAD_REQUEST, f"start: voice must be one of {list(VOICES)}, "
                                         f"got {voice!r}")
    encoding = m.get("encoding", "pcm_s16le")
    if encoding not in ENCODINGS:
        raise ProtocolError(BAD_REQUEST, f"start: encoding must be one of {list(ENCODINGS)}, "
                                         f"got {encoding!r}")
    native = engine.sample_rate
    rates = sorted({native, *EXTRA_RATES})
    # µ-law is telephone audio: G.711 defines it at 8 kHz only, so that is its default.
    rate = m.get("sample_rate", 8000 if encoding == "mulaw" else native)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate not in rates:
        raise ProtocolError(BAD_REQUEST, f"start: sample_rate must be one of {rates}, "
                                         f"got {rate!r}")
    if encoding == "mulaw" and rate != 8000:
        raise ProtocolError(BAD_REQUEST, f"start: encoding mulaw requires sample_rate 8000, "
                                         f"got {rate}")
    options = {k: m[k] for k in ("pace", "pitch_shift", "speaker", "denoise") if k in m}
    try:
        SynthesisOptions.from_kwargs(**options)  # the engine's own checks and messages
    except (ValueError, TypeError) as e:
        raise ProtocolError(BAD_REQUEST, f"start: {e}") from None
    # Checked here because an out-of-range id would fail the whole FastPitch batch, i.e.
    # other sessions' requests too.
    n_speakers = engine.voice.fastpitch.config.n_speakers
    if options.get("speaker", 0) >= n_speakers:
        raise ProtocolError(BAD_REQUEST, f"start: speaker must be in 0..{n_speakers - 1} for "
                                         f"this voice, got {options['speaker']}")
    return SessionConfig(rate, encoding, options)


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` is reachable from this machine only. Host names other than
    ``localhost`` count as public: what they resolve to can change."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen_args(host: str, port: int, token: str | None) -> None:
    """Refuse unsafe or invalid listening settings (ValueError): a token is required on any
    address other than loopback."""
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty string, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer in 0..65535, got {port!r}")
    if token is not None and (not isinstance(token, str) or not token
                              or not token.isprintable() or any(c.isspace() for c in token)):
        raise ValueError("the token must be a non-empty string of printable characters "
                         "without spaces")
    if token is None and not is_loopback(host):
        raise ValueError(f"refusing to listen on {host!r} without a token: anyone who can "
                         "reach it could use this machine's compute. Pass --token (or set "
                         "FPSTREAM_TOKEN), or bind to 127.0.0.1")


class _Encoder:
    """Float chunks at the voice's rate -> bytes in the session's rate and encoding. One per
    utterance: the resampler's state joins chunk seams without clicks."""

    def __init__(self, native_rate: int, config: SessionConfig):
        self.encoding = config.encoding
        self.resampler = StreamResampler(native_rate, config.sample_rate)

    def encode(self, audio: np.ndarray, last: bool) -> tuple[bytes, int]:
        out = self.resampler.process(audio, last=last)
        if self.encoding == "pcm_s16le":
            data = float_to_pcm16(out).astype("<i2", copy=False).tobytes()
        elif self.encoding == "pcm_f32le":
            data = out.astype("<f4", copy=False).tobytes()
        else:
            data = float_to_mulaw(out).tobytes()
        return data, len(out)


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

    def __init__(self, server: "TTSServer", conn: ServerConnection, sid: int):
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
                if speaking:
                    waiting.add(self.utt.pump)  # to restart the idle clock when it ends
                    timeout = _CLOSE_POLL_S
                else:
                    timeout = max(0.0, self.last_activity + self.limits.idle_timeout
                                  - self.loop.time())
                done, _ = await asyncio.wait(waiting, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done and speaking:
                    # recv() only fails once the TCP connection is gone. A client that
                    # sent a close frame but reads no more would keep our writer (and its
                    # paused engine request) waiting for the whole close timeout: stop the
                    # synthesis as soon as the close frame is in.
                    if self.conn.protocol.state is not State.OPEN:
                        log.info("session %d: client is closing; cancelling synthesis",
                                 self.id)
                        await self.stop_utterance(drain_pair=False)
                    continue
                if not done:
                    log.info("session %d: idle for %.0f s, closing", self.id,
                             self.limits.idle_timeout)
                    await self.conn.close(CLOSE_NORMAL, "idle timeout")
                    return
                if recv in done:
                    message = recv.result()  # ConnectionClosed ends the session
                    recv = None
                    self.last_activity = self.loop.time()
                    await self.handle(message)
                else:
                    self.last_activity = self.loop.time()  # an utterance ended
        except ConnectionClosed:
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
                    await self.post(self.utt, self.utt.stream.flush)
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
            await self.post(utt, lambda: utt.stream.send(text))

    async def on_end(self) -> None:
        utt = self.utt
        if utt is None:
            raise ProtocolError(BAD_REQUEST, "end: there is no text to speak; send text first")
        if utt.ended:
            raise ProtocolError(BAD_REQUEST, "end: already sent for this utterance")
        utt.ended = True
        await self.post(utt, utt.stream.end)

    @staticmethod
    async def post(utt: _Utterance, call: Callable[[], None]) -> None:
        """Hand an event to the engine. Its inbox is bounded and drained every engine step;
        when full, wait here, which stops reading this client (TCP backpressure)."""
        while not utt.cancelled:
            try:
                call()
                return
            except queue.Full:
                await asyncio.sleep(0.005)

    # ------------------------------------------------------------------ utterances

    def open_utterance(self, config: SessionConfig) -> _Utterance:
        try:
            stream = self.engine.aopen(**config.options)
        except ValueError as e:  # validated in parse_start; kept as a safety net
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
        except ConnectionClosed:
            pass  # the session's reader sees it too and cleans up
        except ValueError as e:  # the engine's verdict on the text, e.g. nothing speakable
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
            except ConnectionClosed:
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
        self.utt = None

    # ------------------------------------------------------------------ sending

    async def send(self, msg: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.conn.send(json.dumps(msg))

    async def send_error(self, code: str, message: str) -> None:
        log.info("session %d: %s: %s", self.id, code, message)
        await self.send({"type": "error", "code": code, "message": message})


class TTSServer:
    """The websocket server around one :class:`Engine`. Use as an async context manager
    (see :func:`serve_tts`); ``port=0`` picks a free port, read back from :attr:`port`."""

    def __init__(self, engine: Engine, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                 token: str | None = None, limits: ServerLimits | None = None,
                 web_index: Path | None = WEB_INDEX):
        check_listen_args(host, port, token)
        self.engine = engine
        self.host = host
        self.requested_port = port
        self.token = token
        self.limits = limits or ServerLimits()
        self.web_index = web_index
        self.sessions: dict[int, _Session] = {}
        self._ids = 0
        self._server: Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{PATH}"

    async def start(self) -> "TTSServer":
        lim = self.limits
        self._server = await serve(
            self._handle, self.host, self.requested_port,
            process_request=self._process_request,
            # Frames past the soft limit are still read (to answer "too_large"); past 4x
            # they are refused unread and the connection closes with 1009.
            max_size=4 * lim.max_frame_bytes,
            max_queue=16,  # client frames read ahead: bounded memory per session
            write_limit=lim.write_limit,
            ping_interval=lim.ping_interval, ping_timeout=lim.ping_timeout,
            compression=None,  # PCM does not compress; deflate would only cost CPU
        )
        log.info("listening on %s", self.url)
        return self

    async def close(self) -> None:
        """Stop accepting, close sessions (code 1001), cancel their synthesis, wait."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "TTSServer":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ------------------------------------------------------------------ HTTP side

    def _authorized(self, request: Request, query: str) -> bool:
        if self.token is None:
            return True
        want = self.token.encode()
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), want):
            return True
        for value in parse_qs(query).get("token", []):
            if hmac.compare_digest(value.encode(), want):
                return True
        return False

    async def _process_request(self, conn: ServerConnection, request: Request
                               ) -> Response | None:
        """Route before the websocket handshake: /v1/tts (after auth), GET / (a browser page,
        when clients/web/index.html exists), 404 otherwise."""
        path, _, query = request.path.partition("?")
        if path not in (PATH, "/"):
            return conn.respond(HTTPStatus.NOT_FOUND, f"not found; the websocket is at {PATH}\n")
        if not self._authorized(request, query):
            # The query string is not logged: it may hold a (wrong) token.
            log.info("rejected %s from %s: missing or wrong token", path, conn.remote_address)
            response = conn.respond(HTTPStatus.UNAUTHORIZED,
                                    "unauthorized: send 'Authorization: Bearer <token>' or "
                                    "?token=<token>\n")
            response.headers["WWW-Authenticate"] = 'Bearer realm="fpstream"'
            return response
        if path == PATH:
            return None  # go on with the websocket handshake
        if self.web_index is None or not self.web_index.is_file():
            return conn.respond(HTTPStatus.NOT_FOUND, f"not found; the websocket is at {PATH}\n")
        html = await asyncio.to_thread(self.web_index.read_text, encoding="utf-8")
        response = conn.respond(HTTPStatus.OK, html)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        return response

    # ------------------------------------------------------------------ websocket side

    async def _handle(self, conn: ServerConnection) -> None:
        if len(self.sessions) >= self.limits.max_sessions:
            log.warning("refusing a session: %d at once is the limit", self.limits.max_sessions)
            try:
                await conn.send(json.dumps({
                    "type": "error", "code": BUSY,
                    "message": f"the server is busy ({self.limits.max_sessions} sessions); "
                               "try again later"}))
                await conn.close(CLOSE_BUSY, "busy")
            except ConnectionClosed:
                pass
            return
        self._ids += 1
        session = _Session(self, conn, self._ids)
        self.sessions[session.id] = session
        log.info("session %d opened from %s (%d open)", session.id, conn.remote_address,
                 len(self.sessions))
        try:
            await session.run()
        except Exception:  # noqa: BLE001 - a bug: close this session, keep the server
            log.exception("session %d failed", session.id)
            try:
                await session.send({"type": "error", "code": INTERNAL,
                                    "message": "internal server error"})
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass
            await conn.close(CLOSE_INTERNAL, "internal error")
        finally:
            del self.sessions[session.id]
            # conn.protocol: ServerConnection.close_code only exists from websockets 14.
            log.info("session %d closed (%s %s)", session.id, conn.protocol.close_code,
                     conn.protocol.close_reason or "")


def serve_tts(engine: Engine, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
              token: str | None = None, web_index: Path | None = WEB_INDEX,
              **limits: Any) -> TTSServer:
    """A :class:`TTSServer` for ``async with``; ``limits`` are :class:`ServerLimits` fields
    (max_frame_bytes, max_text_chars, max_sessions, idle_timeout, write_limit, ...).

        async with serve_tts(engine, port=0, max_sessions=4) as server:
            ...  # clients connect to server.url
    """
    return TTSServer(engine, host, port, token=token, limits=ServerLimits.from_kwargs(**limits),
                     web_index=web_index)


def run_server(engine: Engine, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
               token: str | None = None,
               on_ready: Callable[[TTSServer], None] | None = None, **limits: Any) -> None:
    """Serve until Ctrl-C or SIGTERM, then close every session and return. The arguments are
    checked (ValueError) before anything listens. ``on_ready(server)`` runs once listening."""
    server = serve_tts(engine, host, port, token=token, **limits)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                handled.append(sig)
            except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
                pass
        try:
            async with server:
                if on_ready is not None:
                    on_ready(server)
                await stop.wait()
                log.info("shutting down: closing %d session(s)", len(server.sessions))
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    asyncio.run(main())
