"""Client for the ``fpstream serve`` websocket protocol (README.md, "Websocket protocol").

Async, streaming::

    from clients.client import synthesize

    async with synthesize("ws://127.0.0.1:8765/v1/tts", "Hello there.", sample_rate=16000) as s:
        async for chunk in s:
            play(chunk.audio)            # float32 mono at chunk.sample_rate
    print(s.stats.ttfa_ms, s.stats.rtf)

``text`` may also be an iterable or async iterable of deltas (LLM tokens, partial words
included); they are sent as they come while audio is received. Synchronous code uses
:func:`synthesize_sync` (same arguments, a plain iterator). Server errors raise
:class:`TTSError` with the protocol's error code.

Command line (writes a WAV and prints client-side timing)::

    python -m clients.client --server ws://127.0.0.1:8765/v1/tts "Hello there." -o out.wav
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterable, Iterable, Iterator, Sequence

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from engine.errors import InputError
from engine.pcm import decode
from engine.runtime.request import WordTiming

from .cli_common import read_text, save_wav
from .protocol import DEFAULT_ENCODING, DEFAULT_URL, ENCODINGS, OPTION_FIELDS, words_from_json

log = logging.getLogger(__name__)

_OPTIONS = {*OPTION_FIELDS, "voice"}  # keyword options of synthesize(): the start fields
_END_OF_DELTAS = object()
_MAX_FRAME_CHARS = 8000


class TTSError(Exception):
    """The server answered with an error (``code`` is the protocol's: bad_request,
    too_large, busy, unauthorized, internal), or broke the protocol (``protocol``), or the
    connection ended early (``closed``)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ClientChunk:
    """One decoded audio chunk: ``audio`` float32 mono at ``sample_rate``; ``offset`` is its
    first sample's index in the utterance; ``text`` and ``words`` as the server reported
    them (word times in seconds from the utterance's start); ``arrival_s`` is when its audio
    arrived, in seconds after the first text was sent."""

    audio: np.ndarray
    sample_rate: int
    offset: int
    text: str
    words: tuple[WordTiming, ...]
    arrival_s: float

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass(frozen=True)
class SynthesisStats:
    """Timing of one utterance. ``ttfa_ms``: first text sent -> first audio received, as the
    client sees it (network included); ``connect_ms``: opening the websocket; ``rtf``: audio
    seconds / seconds from the first text to ``done``. ``server`` is the ``done`` message."""

    sample_rate: int
    encoding: str
    connect_ms: float
    ttfa_ms: float | None
    audio_seconds: float
    wall_seconds: float
    rtf: float | None
    chunks: int
    server: dict[str, Any]


def decode_audio(data: bytes, encoding: str) -> np.ndarray:
    """One binary frame -> float32 samples."""
    return decode(data, encoding)


class Synthesis:
    """One utterance over one websocket connection; an async iterator of
    :class:`ClientChunk` and an async context manager (closing it early cancels the
    server's work). :attr:`stats` is set once the server said ``done``."""

    def __init__(self, url: str, text: str | Iterable[str] | AsyncIterable[str], *,
                 sample_rate: int | None = None, encoding: str = "pcm_s16le",
                 token: str | None = None, open_timeout: float = 10.0, **options: Any):
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise InputError(f"url must be a ws:// or wss:// URL, got {url!r}")
        if encoding not in ENCODINGS:
            raise InputError(f"encoding must be one of {list(ENCODINGS)}, got {encoding!r}")
        if isinstance(text, (bytes, bytearray)) or not isinstance(
                text, (str, Iterable, AsyncIterable)):
            raise InputError("text must be a str or an (async) iterable of str, got "
                             f"{type(text).__name__}")
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise InputError(f"unknown option(s) {unknown}; known: {sorted(_OPTIONS)}")
        self.url = url
        self.text = text
        self.token = token
        self.open_timeout = open_timeout
        self.start_message: dict[str, Any] = {"type": "start", "encoding": encoding, **options}
        if sample_rate is not None:
            self.start_message["sample_rate"] = sample_rate
        self.sample_rate: int | None = None  # negotiated (from "ready")
        self.encoding = encoding
        self.stats: SynthesisStats | None = None
        self._conn: ClientConnection | None = None
        self._sender: asyncio.Task | None = None
        self._finished = False
        self._t_connect = 0.0
        self._t_text: float | None = None
        self._t_first_audio: float | None = None
        self._samples = 0
        self._chunks = 0

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> "Synthesis":
        await self._open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __aiter__(self) -> "Synthesis":
        return self

    async def _open(self) -> None:
        if self._conn is not None:
            return
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        t0 = time.perf_counter()
        try:
            self._conn = await connect(self.url, additional_headers=headers,
                                       open_timeout=self.open_timeout, compression=None,
                                       max_size=64 * 2**20)
        except InvalidStatus as e:
            status = e.response.status_code
            code = {401: "unauthorized", 503: "busy", 404: "not_found"}.get(status, "http")
            raise TTSError(code, f"HTTP {status} from {self.url}: "
                                 f"{e.response.body.decode(errors='replace').strip()}") from None
        except InvalidURI as e:
            raise InputError(f"bad server URL {self.url!r}: {e}") from None
        except InvalidHandshake as e:  # e.g. not a websocket server at all
            raise TTSError("handshake", f"no websocket at {self.url}: {e}") from None
        self._t_connect = time.perf_counter() - t0
        self._t_text = time.perf_counter()
        # Messages go out from their own task, so that audio is received while text is sent.
        self._sender = asyncio.ensure_future(self._send_all(self.text))

    async def _send_all(self, text: str | Iterable[str] | AsyncIterable[str]) -> None:
        assert self._conn is not None
        try:
            await self._conn.send(json.dumps(self.start_message))
            await self._send_deltas(text)
        except ConnectionClosed:
            pass  # the receiving side reports why (e.g. a "busy" error frame, then close)

    async def _send_deltas(self, deltas: str | Iterable[str] | AsyncIterable[str]) -> None:
        assert self._conn is not None
        if isinstance(deltas, str):
            await self._send_delta(deltas)
        elif isinstance(deltas, AsyncIterable):
            async for d in deltas:
                await self._send_delta(d)
        else:
            it = iter(deltas)
            while True:
                # A sync producer may block (e.g. reading an LLM's HTTP stream): not here.
                d = await asyncio.to_thread(next, it, _END_OF_DELTAS)
                if d is _END_OF_DELTAS:
                    break
                await self._send_delta(d)
        await self._conn.send(json.dumps({"type": "end"}))

    async def _send_delta(self, d: Any) -> None:
        if not isinstance(d, str):
            raise InputError(f"text deltas must be str, got {type(d).__name__}")
        assert self._conn is not None
        # Long text goes as several messages, each well under the server's frame limit
        # (64 KiB by default; JSON escapes make a character at most 6 bytes).
        for i in range(0, max(len(d), 1), _MAX_FRAME_CHARS):
            await self._conn.send(json.dumps({"type": "text", "text": d[i:i + _MAX_FRAME_CHARS]},
                                             ensure_ascii=False))

    async def aclose(self) -> None:
        """Close the connection (the server cancels synthesis that is still running)."""
        self._finished = True
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)
        if self._conn is not None:
            await self._conn.close()

    # ------------------------------------------------------------------ receiving

    async def __anext__(self) -> ClientChunk:
        if self._finished:
            raise StopAsyncIteration
        try:
            await self._open()
            return await self._next_chunk()
        except StopAsyncIteration:
            await self.aclose()
            raise
        except BaseException:
            await self.aclose()
            raise

    def _check_sender(self) -> None:
        """Re-raise the text producer's error (e.g. an LLM stream that failed)."""
        sender = self._sender
        if sender is not None and sender.done() and not sender.cancelled():
            exc = sender.exception()
            if exc is not None:
                raise exc

    async def _recv(self) -> str | bytes:
        """The next frame; also ends the wait if the text producer fails meanwhile (the
        server would otherwise wait for more text forever)."""
        assert self._conn is not None
        self._check_sender()
        recv = asyncio.ensure_future(self._conn.recv())
        try:
            if self._sender is not None and not self._sender.done():
                await asyncio.wait({recv, self._sender}, return_when=asyncio.FIRST_COMPLETED)
                if not recv.done():
                    self._check_sender()  # raises if it failed; else it just finished
            return await recv
        except ConnectionClosed as e:
            self._check_sender()
            rcvd = e.rcvd
            why = f"{rcvd.code} {rcvd.reason}".strip() if rcvd else "no close frame"
            raise TTSError("closed", f"the server closed the connection ({why})") from None
        finally:
            if not recv.done():
                recv.cancel()  # safe: websockets loses no data when recv() is cancelled
                await asyncio.gather(recv, return_exceptions=True)

    async def _next_chunk(self) -> ClientChunk:
        while True:
            message = await self._recv()
            if isinstance(message, bytes):
                raise TTSError("protocol", "binary frame without a chunk message before it")
            msg = json.loads(message)
            kind = msg.get("type")
            if kind == "ready":
                self.sample_rate, self.encoding = int(msg["sample_rate"]), msg["encoding"]
            elif kind == "chunk":
                return await self._read_chunk(msg)
            elif kind == "done":
                assert self._t_text is not None
                wall = time.perf_counter() - self._t_text
                seconds = self._samples / self.sample_rate if self.sample_rate else 0.0
                ttfa = None if self._t_first_audio is None else \
                    (self._t_first_audio - self._t_text) * 1000
                self.stats = SynthesisStats(
                    sample_rate=self.sample_rate or 0, encoding=self.encoding,
                    connect_ms=self._t_connect * 1000, ttfa_ms=ttfa, audio_seconds=seconds,
                    wall_seconds=wall, rtf=seconds / wall if wall > 0 else None,
                    chunks=self._chunks, server=msg)
                raise StopAsyncIteration
            elif kind == "error":
                raise TTSError(str(msg.get("code")), str(msg.get("message")))
            else:
                log.debug("ignoring message of type %r", kind)  # newer servers may add some

    async def _read_chunk(self, meta: dict[str, Any]) -> ClientChunk:
        if self.sample_rate is None:
            raise TTSError("protocol", "chunk before ready")
        data = await self._recv()
        if not isinstance(data, bytes):
            raise TTSError("protocol", "a chunk message must be followed by a binary frame")
        audio = decode_audio(data, self.encoding)
        if len(audio) != meta["samples"] or meta["offset"] != self._samples:
            raise TTSError("protocol", f"chunk says {meta['samples']} samples at offset "
                                       f"{meta['offset']}, got {len(audio)} at {self._samples}")
        now = time.perf_counter()
        if self._t_first_audio is None:
            self._t_first_audio = now
        self._samples += len(audio)
        self._chunks += 1
        words = words_from_json(meta.get("words", ()))
        assert self._t_text is not None
        return ClientChunk(audio, self.sample_rate, int(meta["offset"]), meta.get("text", ""),
                           words, now - self._t_text)


def synthesize(url: str, text: str | Iterable[str] | AsyncIterable[str], *,
               sample_rate: int | None = None, encoding: str = "pcm_s16le",
               token: str | None = None, **options: Any) -> Synthesis:
    """Speak ``text`` on the server at ``url``; iterate the result with ``async for`` for
    decoded :class:`ClientChunk` s. ``sample_rate`` None: the voice's native rate (8000 for
    ``mulaw``). ``options``: pace, pitch_shift, speaker, denoise, voice. ``token``: sent as
    ``Authorization: Bearer``."""
    return Synthesis(url, text, sample_rate=sample_rate, encoding=encoding, token=token,
                     **options)


class SyncSynthesis:
    """Iterator twin of :class:`Synthesis` for synchronous code: the websocket runs on an
    event loop in a background thread, and chunks are handed over through a small bounded
    queue (a consumer that stops reading pauses the download, and the server's synthesis).
    ``close()`` (or leaving a ``with`` block) stops it early."""

    def __init__(self, url: str, text: str | Iterable[str] | AsyncIterable[str], **kwargs: Any):
        self._synthesis = synthesize(url, text, **kwargs)  # validates arguments here
        self._q: queue.Queue = queue.Queue(maxsize=4)
        self._closing = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._started = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True,
                                        name="fpstream-client")
        self._thread.start()

    @property
    def stats(self) -> SynthesisStats | None:
        return self._synthesis.stats

    @property
    def sample_rate(self) -> int | None:
        return self._synthesis.sample_rate

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._started.set()
        if self._closing.is_set():
            return
        try:
            async with self._synthesis as s:
                async for chunk in s:
                    await self._put(("chunk", chunk))
            await self._put(("end", None))
        except asyncio.CancelledError:
            pass  # close() was called
        except Exception as e:  # noqa: BLE001 - handed to the consumer's thread
            await self._put(("error", e))

    async def _put(self, item: tuple[str, Any]) -> None:
        while not self._closing.is_set():
            try:
                self._q.put_nowait(item)
                return
            except queue.Full:
                await asyncio.sleep(0.01)  # the consumer is behind: wait, do not buffer
        raise asyncio.CancelledError

    def __iter__(self) -> Iterator[ClientChunk]:
        return self

    def __next__(self) -> ClientChunk:
        if self._done:
            raise StopIteration
        kind, value = self._q.get()
        if kind == "chunk":
            return value
        self._done = True
        self._thread.join(timeout=5)
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop early: closes the connection (the server cancels the synthesis)."""
        if self._done:
            return
        self._done = True
        self._closing.set()
        self._started.wait(timeout=5)
        if self._loop is not None and self._task is not None:
            try:
                self._loop.call_soon_threadsafe(self._task.cancel)
            except RuntimeError:  # the loop already finished
                pass
        self._thread.join(timeout=10)

    def __enter__(self) -> "SyncSynthesis":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def synthesize_sync(url: str, text: str | Iterable[str], **kwargs: Any) -> SyncSynthesis:
    """Blocking :func:`synthesize`: an iterator of :class:`ClientChunk` (``.stats`` after)."""
    return SyncSynthesis(url, text, **kwargs)


# ---------------------------------------------------------------------------- command line


def add_client_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m clients.client`` and ``fpstream say``."""
    p.add_argument("text", nargs="?", help="the text to speak (omit to read --text-file or "
                                           "standard input)")
    p.add_argument("-f", "--text-file", metavar="PATH",
                   help="read the text from this UTF-8 file ('-' = standard input)")
    p.add_argument("--server", default=DEFAULT_URL, metavar="URL",
                   help=f"websocket URL of an fpstream server (default {DEFAULT_URL})")
    p.add_argument("--token", default=os.environ.get("FPSTREAM_TOKEN"),
                   help="access token (default: $FPSTREAM_TOKEN)")
    p.add_argument("-o", "--output", metavar="WAV", help="write the audio to this WAV file "
                                                         "(16-bit at the output rate)")
    p.add_argument("--play", action="store_true", help="play the audio as it arrives")
    p.add_argument("--device-out", metavar="NAME|INDEX",
                   help="output device for --play (default: the system default)")
    p.add_argument("--sample-rate", type=int, metavar="HZ",
                   help="output rate: the voice's native rate (default), 8000, 16000, 24000, "
                        "44100 or 48000")
    p.add_argument("--encoding", default=DEFAULT_ENCODING, choices=ENCODINGS,
                   help="audio encoding on the wire (default pcm_s16le; mulaw is 8 kHz)")
    p.add_argument("--delta-chars", type=int, metavar="N",
                   help="send the text in pieces of N characters, as an LLM would stream it")
    g = p.add_argument_group("voice options")
    g.add_argument("--pace", type=float, help="speaking rate: >1 faster (0.1..10)")
    g.add_argument("--pitch-shift", type=float, metavar="HZ", help="pitch shift in Hz")
    g.add_argument("--speaker", type=int, help="speaker id of a multi-speaker voice")
    g.add_argument("--denoise", type=float, nargs="?", const=0.005, metavar="STRENGTH",
                   help="remove vocoder bias hum; bare flag = 0.005")


def run_cli(args: argparse.Namespace) -> int:
    """Run a parsed client command line. Expected failures (bad arguments, no server, a
    server error) raise InputError with a one-line message."""
    if not args.output and not args.play:
        raise InputError("say where the audio goes: -o out.wav, or --play (or both)")
    if args.device_out is not None and not args.play:
        raise InputError("--device-out only applies together with --play")
    if args.delta_chars is not None and args.delta_chars < 1:
        raise InputError("--delta-chars must be >= 1")
    play_stream = None
    if args.play:
        try:
            from clients.playback import play_stream
        except ImportError:
            raise InputError("--play needs clients/playback.py, which this installation does "
                             "not have; write a file with -o instead") from None
    text = read_text(args)
    options = {k: getattr(args, k) for k in OPTION_FIELDS
               if getattr(args, k) is not None}
    source: str | Iterable[str] = text
    if args.delta_chars:
        n = args.delta_chars
        source = [text[i:i + n] for i in range(0, len(text), n)]
    kept: list[np.ndarray] = []
    try:
        with synthesize_sync(args.server, source, sample_rate=args.sample_rate,
                             encoding=args.encoding, token=args.token, **options) as s:
            if play_stream is not None:
                first = next(s, None)  # the output rate is known once audio starts
                if first is not None:
                    def chunks() -> Iterator[ClientChunk]:
                        for c in _chain(first, s):
                            kept.append(c.audio)
                            yield c

                    play_stream(chunks(), first.sample_rate, device=args.device_out,
                                cancel=s.close)
            else:
                kept.extend(c.audio for c in s)
            stats = s.stats
    except TTSError as e:
        raise InputError(f"server error {e}") from None
    except (OSError, asyncio.TimeoutError) as e:
        raise InputError(f"cannot reach {args.server}: {e}") from None
    if stats is None:  # pragma: no cover - the iterator ends only after done or an error
        raise InputError("the server ended the utterance without done")
    audio = np.concatenate(kept) if kept else np.zeros(0, np.float32)
    if args.output:
        save_wav(args.output, audio, stats.sample_rate)
    ttfa = "n/a" if stats.ttfa_ms is None else f"{stats.ttfa_ms:.0f} ms"
    rtf = "n/a" if stats.rtf is None else f"{stats.rtf:.1f}x"
    where = f"wrote {args.output}" if args.output else "played"
    print(f"{where}: {stats.audio_seconds:.2f} s of audio at {stats.sample_rate} Hz "
          f"({stats.encoding}, {stats.chunks} chunks); TTFA {ttfa} (client side, connect "
          f"{stats.connect_ms:.0f} ms more), RTF {rtf}", file=sys.stderr)
    return 0


def _chain(first: ClientChunk, rest: Iterator[ClientChunk]) -> Iterator[ClientChunk]:
    yield first
    yield from rest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clients.client",
        description="Speak text with an fpstream websocket server; write a WAV and/or play it.")
    add_client_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run_cli(args)
    except InputError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
