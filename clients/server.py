"""The server: every front on one port (:mod:`clients.app`), served by uvicorn.

The websocket text-to-speech protocol at ``/v1/tts`` (text in, whole or as LLM-style deltas;
PCM out), the OpenAI speech API, the browser page and ``/healthz``. One websocket connection is
one *session*; a session speaks one *utterance* at a time, any number in turn. The websocket
protocol is documented in README.md, section "Websocket protocol". In short (client -> server
JSON text frames, server -> client JSON text frames plus one binary frame after each
``chunk``)::

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
        print(server.http_url)     # http://127.0.0.1:<port> (OpenAI base URL: + "/v1")

Blocking (the ``fpstream serve`` command): :func:`run_server`, which stops cleanly on
Ctrl-C / SIGTERM.

Synthesis runs in the engine's own loop thread; this module only moves text and bytes, so
nothing here blocks the event loop for long (encoding one chunk takes well under 1 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import uvicorn

from engine import Engine
from engine.errors import InputError

from .app import WEB_INDEX, AppState, ServerLimits, create_app
from .protocol import DEFAULT_HOST, DEFAULT_PORT, PATH

__all__ = ["ServerLimits", "TTSServer", "WEB_INDEX", "check_listen_args", "is_loopback",
           "run_server", "serve_tts"]

log = logging.getLogger(__name__)


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


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: whoever runs the server decides when it stops
    (:func:`run_server` on Ctrl-C / SIGTERM, tests and embedders with ``close()``)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class TTSServer:
    """Every front around one :class:`Engine` (:func:`clients.app.create_app`) on one port.
    Use as an async context manager (see :func:`serve_tts`); ``port=0`` picks a free port,
    read back from :attr:`port`."""

    def __init__(self, engine: Engine, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                 token: str | None = None, limits: ServerLimits | None = None,
                 web_index: Path | None = WEB_INDEX):
        check_listen_args(host, port, token)
        self.engine = engine
        self.host = host
        self.requested_port = port
        self.token = token
        self.limits = limits or ServerLimits()
        self.app = create_app(engine, token, self.limits, web_index)
        self.state: AppState = self.app.state.fronts
        self._uv: _Uvicorn | None = None
        self._task: asyncio.Task | None = None
        self._sock: socket.socket | None = None

    @property
    def sessions(self) -> dict:
        """Open websocket sessions by id."""
        return self.state.sessions

    @property
    def port(self) -> int:
        if self._uv is None:
            raise RuntimeError("the server is not started")
        return self._sock.getsockname()[1]

    @property
    def http_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The websocket URL."""
        return "ws" + self.http_url[4:] + PATH

    async def start(self) -> "TTSServer":
        lim = self.limits
        config = uvicorn.Config(
            self.app, host=self.host, port=self.requested_port, lifespan="off",
            ws="websockets-sansio",
            # Frames past the soft limit are still read (to answer "too_large"); past 4x
            # they are refused unread and the connection closes with 1009.
            ws_max_size=4 * lim.max_frame_bytes,
            ws_ping_interval=lim.ping_interval, ws_ping_timeout=lim.ping_timeout,
            ws_per_message_deflate=False,  # PCM does not compress; deflate would cost CPU
            log_config=None, access_log=False,
            timeout_graceful_shutdown=5)
        self._uv = _Uvicorn(config)
        # The socket is bound here, so a taken port is an OSError for the caller (uvicorn
        # would sys.exit() from inside its task).
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host.strip("[]"), self.requested_port),
                                    family=family, reuse_port=False)
        self._sock = sock
        self._task = asyncio.ensure_future(self._uv.serve(sockets=[sock]))
        while not self._uv.started:  # uvicorn sets it once it serves the socket
            if self._task.done():
                sock.close()
                self._task.result()  # its exception, if any
                raise OSError(f"the server on {self.host}:{self.requested_port} stopped "
                              "while starting")
            await asyncio.sleep(0.01)
        log.info("listening on %s (websocket %s)", self.http_url, self.url)
        return self

    async def close(self) -> None:
        """Close websocket sessions (code 1001) and stop their synthesis, finish HTTP
        responses in flight (cancelled after 5 s), stop listening."""
        if self._uv is None:
            return
        try:
            await self.state.close_sessions(1001, "server shutting down")
        finally:
            self._uv.should_exit = True
            assert self._task is not None
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._sock.close()
            self._uv = self._task = None

    async def __aenter__(self) -> "TTSServer":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def serve_tts(engine: Engine, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
              token: str | None = None, web_index: Path | None = WEB_INDEX,
              **limits: Any) -> TTSServer:
    """A :class:`TTSServer` for ``async with``; ``limits`` are :class:`ServerLimits` fields
    (max_frame_bytes, max_text_chars, max_sessions, idle_timeout, max_input_chars, ...).

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
    serve_until_signal([server, *also],
                       on_ready=None if on_ready is None else (lambda: on_ready(server)))


def serve_until_signal(servers: Sequence[contextlib.AbstractAsyncContextManager],
                       on_ready: Callable[[], None] | None = None) -> None:
    """Enter ``servers`` in order, run until Ctrl-C or SIGTERM, then close them in reverse
    order (the blocking entry point of the ``fpstream`` serving commands)."""

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
            async with contextlib.AsyncExitStack() as stack:
                for cm in servers:
                    await stack.enter_async_context(cm)
                if on_ready is not None:
                    on_ready()
                await stop.wait()
                log.info("shutting down")
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    asyncio.run(main())
