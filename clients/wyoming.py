"""The Wyoming front (Home Assistant's voice protocol): a TCP server that speaks through one
:class:`Engine`, built on the ``wyoming`` package's own server, handler and event classes.

This module owns the Wyoming side only: parsing ``tcp://HOST:PORT`` addresses and the listening
rules (:func:`parse_uri`, :func:`check_wyoming_listen`), the ``info`` the server describes
itself with, one connection's events (:class:`WyomingHandler`), the in-process server
(:class:`WyomingServer`, :func:`serve_wyoming`) and the blocking runner of ``fpstream wyoming``
(:func:`run_wyoming`). Events, in short (README.md, "Home Assistant (Wyoming)")::

    -> describe                      <- info (one TtsProgram, streaming supported, voice "default")
    -> synthesize {text, voice?}     <- audio-start, audio-chunk..., audio-stop
    -> synthesize-start {voice?}
    -> synthesize-chunk {text}...    <- audio-start, audio-chunk... (as soon as the engine cuts
    -> synthesize (ignored here)        a first fragment, long before the stop)
    -> synthesize-stop               <- ...audio-chunk, audio-stop, synthesize-stopped
    anything wrong                   <- error {text, code}; the connection stays usable

A ``synthesize`` always ends with ``audio-stop`` and a stream with ``synthesize-stopped``,
failed or not (an ``error`` comes first when it failed). Audio is 16-bit mono PCM at the voice's
rate. Requests of one connection are answered in the order they came; a closed connection
cancels its engine requests. Wyoming has no authentication, so the server listens on loopback
only unless remote access is asked for explicitly (``allow_remote``).

In-process (tests, embedding)::

    async with serve_wyoming(engine, "tcp://127.0.0.1:0") as server:
        print(server.uri)          # tcp://127.0.0.1:<port>
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from importlib import metadata
from typing import Any, Callable
from urllib.parse import urlsplit

from wyoming.audio import AudioChunk as WyAudioChunk
from wyoming.audio import AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice, TtsVoiceSpeaker
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler, AsyncServer, HandlerFactory
from wyoming.tts import (Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop,
                         SynthesizeStopped)

from engine import AsyncStream, Engine
from engine.errors import InputError
from engine.pcm import encode

from .protocol import BAD_REQUEST, BUSY, INTERNAL, TOO_LARGE
from .server import is_loopback, serve_until_signal

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 10200  # the port Home Assistant's Wyoming add-ons use for text-to-speech
DEFAULT_URI = f"tcp://{DEFAULT_HOST}:{DEFAULT_PORT}"
VOICE_NAME = "default"
LANGUAGES = ("en",)
SAMPLE_WIDTH = 2  # bytes: 16-bit PCM
MAX_QUEUED = 8  # requests of one connection waiting or speaking at once
ATTRIBUTION = Attribution(
    name="NVIDIA FastPitch 1.1 + HiFi-GAN",
    url="https://github.com/NVIDIA/DeepLearningExamples/tree/master/PyTorch/SpeechSynthesis/"
        "FastPitch")


class WyomingError(InputError):
    """A client event answered with an ``error`` event (the connection goes on unless
    ``close``)."""

    def __init__(self, code: str, message: str, close: bool = False):
        super().__init__(message)
        self.code = code
        self.close = close  # the connection ends after the error event


# ---------------------------------------------------------------------------- addresses


def parse_uri(uri: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port); InputError naming what is wrong. Port 0 picks a
    free port; IPv6 hosts go in brackets (``tcp://[::1]:10200``)."""
    if not isinstance(uri, str) or not uri:
        raise InputError(f"Wyoming address must be tcp://HOST:PORT, got {uri!r}")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as e:
        raise InputError(f"bad Wyoming address {uri!r}: {e}") from None
    if parts.scheme != "tcp":
        raise InputError(f"bad Wyoming address {uri!r}: only tcp://HOST:PORT is supported")
    if parts.username is not None or parts.password is not None:
        raise InputError(f"bad Wyoming address {uri!r}: no user or password belongs in it")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InputError(f"bad Wyoming address {uri!r}: expected tcp://HOST:PORT and nothing "
                         "after the port")
    if not parts.hostname:
        raise InputError(f"bad Wyoming address {uri!r}: the host is missing")
    if port is None:
        raise InputError(f"bad Wyoming address {uri!r}: the port is missing (e.g. "
                         f"tcp://{parts.hostname}:{DEFAULT_PORT})")
    return parts.hostname, port


def check_wyoming_listen(host: str, port: int, allow_remote: bool = False) -> None:
    """Refuse invalid or unsafe listening settings (InputError). Wyoming has no
    authentication: anyone who reaches the port could use this machine's compute, so an
    address other than loopback needs ``allow_remote``."""
    if not isinstance(host, str) or not host:
        raise InputError(f"host must be a non-empty string, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"port must be an integer in 0..65535, got {port!r}")
    if not allow_remote and not is_loopback(host):
        raise InputError(f"refusing to serve Wyoming on {host!r}: the protocol has no "
                         "authentication, so anyone who can reach it could use this machine. "
                         "Bind to 127.0.0.1, or pass --wyoming-allow-remote on a trusted "
                         "network")


LIMITS = {"max_connections": 16, "max_text_chars": 100_000}  # names and defaults


def check_limits(**limits: Any) -> dict[str, int]:
    """Validate server limits (positive integers; InputError naming unknown ones) -> all
    limits, defaults filled in. max_connections: connections at once (more get a ``busy``
    error); max_text_chars: text of one utterance accepted but not yet spoken."""
    unknown = sorted(set(limits) - set(LIMITS))
    if unknown:
        raise InputError(f"unknown limit(s) {unknown}; known: {sorted(LIMITS)}")
    out = {**LIMITS, **limits}
    for name, v in out.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    return out


def check_wyoming_args(uri: str, allow_remote: bool = False, **limits: Any) -> None:
    """Every check a Wyoming server makes before listening (InputError), without one."""
    check_wyoming_listen(*parse_uri(uri), allow_remote=allow_remote)
    check_limits(**limits)


# ---------------------------------------------------------------------------- describe


def _package_version() -> str | None:
    try:
        return metadata.version("fastpitch-stream")
    except metadata.PackageNotFoundError:
        return None


def build_info(engine: Engine) -> Info:
    """What ``describe`` answers: one TTS program that streams, with the voice "default"
    (and its speakers "0".."N-1" for a multi-speaker voice)."""
    n = engine.voice.fastpitch.config.n_speakers
    setup = engine.voice.fastpitch_setup
    voice = TtsVoice(
        name=VOICE_NAME, attribution=ATTRIBUTION, installed=True,
        description=str(setup.get("voice") or "FastPitch voice"), version=None,
        languages=list(LANGUAGES),
        speakers=[TtsVoiceSpeaker(name=str(i)) for i in range(n)] if n > 1 else None)
    program = TtsProgram(
        name="fpstream", attribution=ATTRIBUTION, installed=True,
        description="Streaming FastPitch + HiFi-GAN text-to-speech (fastpitch-stream)",
        version=_package_version(), voices=[voice], supports_synthesize_streaming=True)
    return Info(tts=[program])


def parse_voice(data: dict[str, Any], engine: Engine) -> dict[str, Any]:
    """The ``voice`` and ``text_format`` fields of a synthesize(-start) event -> engine
    options; WyomingError (bad_request) naming what is wrong."""
    fmt = data.get("text_format")
    if fmt is not None and fmt != "text":
        raise WyomingError(BAD_REQUEST, f"text_format {fmt!r} is not supported; send plain "
                                        "text")
    voice = data.get("voice")
    if voice is None:
        return {}
    if not isinstance(voice, dict):
        raise WyomingError(BAD_REQUEST, f"voice must be an object, got {type(voice).__name__}")
    name, language, speaker = voice.get("name"), voice.get("language"), voice.get("speaker")
    if name is not None and name != VOICE_NAME:
        raise WyomingError(BAD_REQUEST, f"unknown voice {name!r}; this server has "
                                        f"{[VOICE_NAME]}")
    if language is not None and (not isinstance(language, str) or language.replace(
            "_", "-").split("-")[0].lower() not in LANGUAGES):
        raise WyomingError(BAD_REQUEST, f"language {language!r} is not spoken here; "
                                        f"languages: {list(LANGUAGES)}")
    if speaker is None:
        return {}
    n = engine.voice.fastpitch.config.n_speakers
    names = [str(i) for i in range(n)]
    if not isinstance(speaker, str) or speaker not in names:
        which = f"speakers {names}" if n > 1 else "a single speaker"
        raise WyomingError(BAD_REQUEST, f"unknown speaker {speaker!r}; this voice has "
                                        f"{which}")
    return {"speaker": int(speaker)}


def _text_field(data: dict[str, Any], event_type: str) -> str:
    text = data.get("text")
    if not isinstance(text, str):
        raise WyomingError(BAD_REQUEST, f"{event_type}: field \"text\" must be a string, got "
                                        f"{type(text).__name__}")
    return text


# ---------------------------------------------------------------------------- one connection


class _Utterance:
    """One request of a connection (a ``synthesize``, or a stream from ``synthesize-start`` to
    ``synthesize-stop``): its engine stream, or why it failed before reaching the engine, and
    the task that answers it."""

    def __init__(self, stream: AsyncStream | None, streaming: bool,
                 failure: tuple[str, str] | None = None):
        self.stream = stream
        self.streaming = streaming  # answered with synthesize-stopped once its stop is in
        self.failure = failure  # (code, message) when refused before the engine saw it
        self.stopped = asyncio.Event()  # synthesize-stop received (streaming only)
        self.pump: asyncio.Task | None = None
        self.done = stream is None  # no more text is taken (finished, failed or cancelled)
        self.chars_sent = 0
        self.chars_spoken = 0

    def cancel(self) -> None:
        """Stop the engine request (within one chunk); a no-op once it finished."""
        self.done = True
        if self.stream is not None:
            self.stream.cancel()


class WyomingHandler(AsyncEventHandler):
    """One client connection: answers its events, relays each utterance's audio.

    Every ``synthesize`` is answered by ``audio-stop`` in the end and every stream by
    ``synthesize-stopped`` (Home Assistant reads until those), failed or not; an ``error``
    event before them says why it failed. Errors about other events are answered at once.
    """

    def __init__(self, server: "WyomingServer", cid: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        super().__init__(reader, writer)
        self.server = server
        self.engine = server.engine
        self.id = cid
        self.open_stream: _Utterance | None = None  # between synthesize-start and -stop
        self.utterances: list[_Utterance] = []  # in order; each pump waits for the previous
        self.finished = asyncio.Event()

    async def run(self) -> None:
        server = self.server
        server.handlers.add(self)
        peer = self.writer.get_extra_info("peername")
        try:
            if len(server.handlers) > server.max_connections:
                log.warning("refusing a Wyoming connection: %d at once is the limit",
                            server.max_connections)
                await self.write_event(Error(
                    f"the server is busy ({server.max_connections} connections); try again "
                    "later", BUSY).event())
                self.writer.close()
                return
            log.info("wyoming %d: connected from %s", self.id, peer)
            await super().run()
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            log.info("wyoming %d: connection lost (%s)", self.id, e)
        except Exception:  # noqa: BLE001 - an unreadable event: this connection ends
            # (the base class's run() has already cancelled its synthesis and closed it)
            log.warning("wyoming %d: closing after an unreadable event", self.id, exc_info=True)
        finally:
            server.handlers.discard(self)
            log.info("wyoming %d: closed", self.id)
            self.finished.set()

    async def disconnect(self) -> None:
        """The client is gone (or the server closes): cancel every utterance now."""
        for utt in self.utterances:
            utt.cancel()
            if utt.pump is not None:
                utt.pump.cancel()
        await asyncio.gather(*(u.pump for u in self.utterances if u.pump is not None),
                             return_exceptions=True)
        self.utterances.clear()
        self.open_stream = None

    async def handle_event(self, event: Event) -> bool:
        try:
            await self._dispatch(event)
        except WyomingError as e:
            await self.send_error(e.code, str(e))
            return not e.close
        except ConnectionError:
            return False
        except Exception:  # noqa: BLE001 - a bug: say so, keep the connection
            log.exception("wyoming %d: failed to handle %r", self.id, event.type)
            await self.send_error(INTERNAL, "internal server error")
        return True

    async def _dispatch(self, event: Event) -> None:
        kind = event.type
        if not isinstance(event.data, dict):
            raise WyomingError(BAD_REQUEST, f"{kind}: data must be an object")
        if Describe.is_type(kind):
            await self.write_event(build_info(self.engine).event())
        elif Synthesize.is_type(kind):
            if self.open_stream is not None:
                # Streaming clients also send the whole text as `synthesize`, for servers that
                # cannot stream; the chunks already carry it.
                log.debug("wyoming %d: synthesize inside a stream ignored", self.id)
                return
            try:
                text = _text_field(event.data, kind)
                options = parse_voice(event.data, self.engine)
                self._check_size(0, text)
            except WyomingError as e:
                self._enqueue({}, streaming=False, failure=(e.code, str(e)))
                return
            utt = self._enqueue(options, streaming=False)
            if utt.stream is not None:
                await self._send_text(utt, text)
                await utt.stream.end()
        elif SynthesizeStart.is_type(kind):
            if self.open_stream is not None:
                raise WyomingError(BAD_REQUEST, "synthesize-start: a stream is already open; "
                                                "send synthesize-stop first")
            try:
                options = parse_voice(event.data, self.engine)
            except WyomingError as e:  # a failed stream: its chunks are dropped
                self.open_stream = self._enqueue({}, streaming=True, failure=(e.code, str(e)))
                return
            self.open_stream = self._enqueue(options, streaming=True)
        elif SynthesizeChunk.is_type(kind):
            utt = self._require_stream(kind)
            text = _text_field(event.data, kind)
            if not utt.done:
                await self._send_text(utt, text)
        elif SynthesizeStop.is_type(kind):
            utt = self._require_stream(kind)
            self.open_stream = None
            utt.stopped.set()
            if not utt.done and utt.stream is not None:
                await utt.stream.end()
        elif Ping.is_type(kind):
            await self.write_event(Pong(text=event.data.get("text")).event())
        else:
            raise WyomingError(BAD_REQUEST, f"unknown event type {kind!r}; this TTS server "
                                            "answers describe, synthesize, synthesize-start, "
                                            "synthesize-chunk, synthesize-stop and ping")

    def _require_stream(self, kind: str) -> _Utterance:
        if self.open_stream is None:
            raise WyomingError(BAD_REQUEST, f"{kind} without synthesize-start")
        return self.open_stream

    def _enqueue(self, options: dict[str, Any], streaming: bool,
                 failure: tuple[str, str] | None = None) -> _Utterance:
        """A new utterance, answered after the ones before it; its engine request starts now
        (unless it already failed)."""
        if len(self.utterances) >= MAX_QUEUED:
            raise WyomingError(BUSY, f"more than {MAX_QUEUED} requests waiting on one "
                                     "connection; closing it", close=True)
        stream = None
        if failure is None:
            try:
                stream = self.engine.aopen(**options)
            except InputError as e:  # the engine's own checks of the options
                failure = (BAD_REQUEST, str(e))
            except Exception:  # noqa: BLE001 - a bug: this request fails, not the connection
                log.exception("wyoming %d: cannot open a synthesis", self.id)
                failure = (INTERNAL, "internal server error")
        utt = _Utterance(stream, streaming, failure)
        previous = self.utterances[-1].pump if self.utterances else None
        self.utterances.append(utt)
        utt.pump = asyncio.ensure_future(self._pump(utt, previous))
        return utt

    def _check_size(self, buffered: int, text: str) -> None:
        limit = self.server.max_text_chars
        if buffered + len(text) > limit:
            raise WyomingError(TOO_LARGE, f"more than {limit} characters of text waiting to be "
                                          "spoken; this text was dropped")

    async def _send_text(self, utt: _Utterance, text: str) -> None:
        assert utt.stream is not None
        self._check_size(utt.chars_sent - utt.chars_spoken, text)
        utt.chars_sent += len(text)
        if text:
            await utt.stream.send(text)  # waits while the engine's inbox is full

    async def _pump(self, utt: _Utterance, previous: asyncio.Task | None) -> None:
        """Answer one utterance: audio-start, audio-chunks as the engine makes them, audio-stop
        (an error event first on failure), then synthesize-stopped for a stream once its stop
        has arrived."""
        rate = self.engine.sample_rate
        started = False
        samples = 0
        failure = utt.failure
        try:
            if previous is not None:  # answer in the order asked
                await asyncio.gather(previous, return_exceptions=True)
            if utt.stream is not None:
                try:
                    async for chunk in utt.stream:
                        if chunk.text_span is not None:
                            utt.chars_spoken = chunk.text_span[1]
                        if not started:
                            await self.write_event(AudioStart(rate, SAMPLE_WIDTH, 1).event())
                            started = True
                        await self.write_event(WyAudioChunk(
                            rate, SAMPLE_WIDTH, 1, encode(chunk.audio, "pcm_s16le"),
                            timestamp=samples * 1000 // rate).event())
                        samples += len(chunk.audio)
                except InputError as e:  # the engine's verdict on the text
                    failure = (BAD_REQUEST, str(e))
                except (ConnectionError, asyncio.CancelledError):
                    raise
                except Exception:  # noqa: BLE001 - a bug: this request fails, not the rest
                    log.exception("wyoming %d: synthesis failed", self.id)
                    failure = (INTERNAL, "synthesis failed (internal server error)")
                finally:
                    utt.cancel()  # a no-op for a finished stream; frees a failed one
            if failure is not None:
                await self.send_error(*failure)
            if started or not utt.streaming:
                await self.write_event(AudioStop(timestamp=samples * 1000 // rate).event())
            log.info("wyoming %d: %s %s: %.2f s of audio", self.id,
                     "stream" if utt.streaming else "synthesize",
                     "failed" if failure else "done", samples / rate)
            if utt.streaming:
                await utt.stopped.wait()
                await self.write_event(SynthesizeStopped().event())
        except ConnectionError:
            log.info("wyoming %d: client gone while speaking", self.id)
        finally:
            utt.cancel()
            if utt in self.utterances:
                self.utterances.remove(utt)

    async def send_error(self, code: str, message: str) -> None:
        log.info("wyoming %d: %s: %s", self.id, code, message)
        await self.write_event(Error(text=message, code=code).event())


# ---------------------------------------------------------------------------- the server


class _TcpServer(AsyncServer):
    """The ``wyoming`` package's server base over TCP, exposing the bound sockets (port 0)."""

    def __init__(self, host: str, port: int):
        super().__init__()
        self.host, self.port = host, port
        self.server: asyncio.AbstractServer | None = None

    async def start(self, handler_factory: HandlerFactory) -> None:
        self.server = await asyncio.start_server(
            partial(self._handler_callback, handler_factory), host=self.host, port=self.port)

    async def run(self, handler_factory: HandlerFactory) -> None:
        await self.start(handler_factory)
        assert self.server is not None
        await self.server.serve_forever()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()  # stop accepting first
        await super().stop()  # then end every connection's handler


class WyomingServer:
    """The Wyoming server around one :class:`Engine`. Use as an async context manager (see
    :func:`serve_wyoming`); ``port=0`` picks a free port, read back from :attr:`port`."""

    def __init__(self, engine: Engine, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                 allow_remote: bool = False, **limits: Any):
        check_wyoming_listen(host, port, allow_remote)
        lim = check_limits(**limits)
        self.engine = engine
        self.host = host
        self.requested_port = port
        self.max_connections = lim["max_connections"]
        self.max_text_chars = lim["max_text_chars"]
        self.handlers: set[WyomingHandler] = set()
        self._ids = 0
        self._tcp: _TcpServer | None = None

    @property
    def port(self) -> int:
        if self._tcp is None or self._tcp.server is None:
            raise RuntimeError("the Wyoming server is not started")
        return self._tcp.server.sockets[0].getsockname()[1]

    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    def _handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                 ) -> WyomingHandler:
        self._ids += 1
        return WyomingHandler(self, self._ids, reader, writer)

    async def start(self) -> "WyomingServer":
        self._tcp = _TcpServer(self.host, self.requested_port)
        await self._tcp.start(self._handler)
        log.info("Wyoming listening on %s", self.uri)
        return self

    async def close(self) -> None:
        """Stop accepting, end every connection (cancelling its synthesis), wait."""
        if self._tcp is None:
            return
        handlers = list(self.handlers)
        await self._tcp.stop()
        waits = [asyncio.ensure_future(h.finished.wait()) for h in handlers]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=5.0)
            for w in pending:
                w.cancel()
        self._tcp = None

    async def __aenter__(self) -> "WyomingServer":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def serve_wyoming(engine: Engine, uri: str = DEFAULT_URI, *, allow_remote: bool = False,
                  **limits: Any) -> WyomingServer:
    """A :class:`WyomingServer` on ``tcp://HOST:PORT`` for ``async with`` (InputError for a bad
    address; ``limits``: max_connections, max_text_chars).

        async with serve_wyoming(engine, "tcp://127.0.0.1:0") as server:
            ...  # clients connect to server.host, server.port
    """
    host, port = parse_uri(uri)
    return WyomingServer(engine, host, port, allow_remote=allow_remote, **limits)


def run_wyoming(engine: Engine, uri: str = DEFAULT_URI, *, allow_remote: bool = False,
                on_ready: Callable[[WyomingServer], None] | None = None,
                **limits: Any) -> None:
    """Serve Wyoming until Ctrl-C or SIGTERM (``fpstream wyoming``). The address is checked
    (InputError) before anything listens; ``on_ready(server)`` runs once listening."""
    server = serve_wyoming(engine, uri, allow_remote=allow_remote, **limits)
    serve_until_signal([server], on_ready=None if on_ready is None else (lambda: on_ready(server)))
