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
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import signal
from dataclasses import dataclass, fields
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import parse_qs

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine import Engine
from engine.errors import InputError

from .protocol import BUSY, CLOSE_BUSY, CLOSE_INTERNAL, DEFAULT_HOST, DEFAULT_PORT, INTERNAL, PATH
from .session import _Session

log = logging.getLogger(__name__)

WEB_INDEX = Path(__file__).parent / "web" / "index.html"


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
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        for name in ("idle_timeout", "ping_interval", "ping_timeout"):
            v = getattr(self, name)
            if v is None and name != "idle_timeout":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 \
                    or not math.isfinite(v):
                raise InputError(f"{name} must be a positive number of seconds, got {v!r}")

    @classmethod
    def from_kwargs(cls, **limits: Any) -> "ServerLimits":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(limits) - known)
        if unknown:
            raise InputError(f"unknown limit(s) {unknown}; known: {sorted(known)}")
        return cls(**limits)


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
    """Refuse unsafe or invalid listening settings (InputError): a token is required on any
    address other than loopback."""
    if not isinstance(host, str) or not host:
        raise InputError(f"host must be a non-empty string, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"port must be an integer in 0..65535, got {port!r}")
    if token is not None and (not isinstance(token, str) or not token
                              or not token.isprintable() or any(c.isspace() for c in token)):
        raise InputError("the token must be a non-empty string of printable characters "
                         "without spaces")
    if token is None and not is_loopback(host):
        raise InputError(f"refusing to listen on {host!r} without a token: anyone who can "
                         "reach it could use this machine's compute. Pass --token (or set "
                         "FPSTREAM_TOKEN), or bind to 127.0.0.1")


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
               on_ready: Callable[[TTSServer], None] | None = None,
               also: Sequence[contextlib.AbstractAsyncContextManager] = (),
               **limits: Any) -> None:
    """Serve until Ctrl-C or SIGTERM, then close every session and return. The arguments are
    checked (InputError) before anything listens. ``also``: more async context managers (e.g.
    a Wyoming server on the same engine) entered after this server, closed before it.
    ``on_ready(server)`` runs once everything listens."""
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
            async with server, contextlib.AsyncExitStack() as extras:
                for cm in also:
                    await extras.enter_async_context(cm)
                if on_ready is not None:
                    on_ready(server)
                await stop.wait()
                log.info("shutting down: closing %d session(s)", len(server.sessions))
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    asyncio.run(main())
