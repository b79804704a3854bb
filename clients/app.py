"""One ASGI app, one port, every front: the websocket protocol at ``/v1/tts``, the OpenAI
speech API (``/v1/audio/speech``, ``/v1/audio/voices``, ``/v1/models``), the browser page at
``GET /`` and ``GET /healthz``. Starlette routes; :mod:`clients.server` serves it with uvicorn
(and Ray Serve can mount the same app).

All fronts share one engine, one token (``Authorization: Bearer`` or ``?token=``, compared in
constant time; ``/healthz`` needs none) and one budget: ``max_sessions`` counts websocket
sessions and speech requests together.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import itertools
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, \
    StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine import Engine
from engine.errors import InputError

from . import openai_api as oa
from .protocol import BUSY, CLOSE_BUSY, CLOSE_INTERNAL, INTERNAL, PATH
from .session import SessionClosed, _Session

log = logging.getLogger(__name__)

WEB_INDEX = Path(__file__).parent / "web" / "index.html"


@dataclass(frozen=True)
class ServerLimits:
    """Per-server limits. Every one bounds memory or work that a client could otherwise grow.

    max_frame_bytes: largest websocket frame handled; larger ones get a ``too_large`` error
        and are dropped. Frames over 4x this are not even read: the connection closes (1009).
    max_text_chars: websocket text accepted but not yet spoken, per session (``too_large``).
    max_sessions: websocket sessions and speech requests at once; one more websocket gets a
        ``busy`` error and close code 1013, one more HTTP request a 503.
    idle_timeout: seconds without a client message, while no utterance is in progress, after
        which the server closes the session (code 1000, reason "idle timeout").
    ping_interval, ping_timeout: websocket keepalive; a peer that stops answering pings
        (gone, or not reading at all) is disconnected.
    max_input_chars: the OpenAI API's ``input`` limit (OpenAI's own is 4096).
    max_body_bytes: largest HTTP request body (413 beyond it).
    """

    max_frame_bytes: int = 64 * 1024
    max_text_chars: int = 100_000
    max_sessions: int = 16
    idle_timeout: float = 60.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    max_input_chars: int = oa.DEFAULT_MAX_INPUT_CHARS
    max_body_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        for name in ("max_frame_bytes", "max_text_chars", "max_sessions", "max_input_chars",
                     "max_body_bytes"):
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


class _AsgiConnection:
    """A Starlette websocket seen the way a session uses a connection: ``recv``, ``send``,
    ``close``. A connection that is gone raises :class:`SessionClosed`."""

    def __init__(self, ws: WebSocket):
        self.ws = ws
        self.close_code: int | None = None
        self.close_reason = ""

    async def recv(self) -> str | bytes:
        try:
            msg = await self.ws.receive()
        except (RuntimeError, OSError):
            raise SessionClosed() from None
        if msg["type"] == "websocket.disconnect":
            self.close_code = self.close_code or msg.get("code")
            raise SessionClosed()
        if msg.get("text") is not None:
            return msg["text"]
        return msg.get("bytes") or b""

    async def send(self, data: str | bytes) -> None:
        try:
            if isinstance(data, str):
                await self.ws.send_text(data)
            else:
                await self.ws.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise SessionClosed() from None

    async def close(self, code: int, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        try:
            await self.ws.close(code, reason)
        except (RuntimeError, OSError):
            pass  # already closed


class AppState:
    """What the routes share: the engine, the limits, the token and the open sessions."""

    def __init__(self, engine: Engine, token: str | None, limits: ServerLimits,
                 web_index: Path | None):
        self.engine, self.token, self.limits, self.web_index = engine, token, limits, web_index
        self.sessions: dict[int, _Session] = {}
        self.busy = 0  # websocket sessions + speech requests in progress
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    def acquire(self) -> bool:
        if self.busy >= self.limits.max_sessions:
            return False
        self.busy += 1
        return True

    def release(self) -> None:
        self.busy -= 1

    def authorized(self, headers: Any, query: Any) -> bool:
        if self.token is None:
            return True
        want = self.token.encode()
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), want):
            return True
        return any(hmac.compare_digest(v.encode(), want) for v in query.getlist("token"))

    async def close_sessions(self, code: int = 1001, reason: str = "server shutting down"
                             ) -> None:
        """Close every websocket session (their synthesis stops)."""
        for session in list(self.sessions.values()):
            await session.stop_utterance(drain_pair=False)
            await session.conn.close(code, reason)


_UNAUTHORIZED = "unauthorized: send 'Authorization: Bearer <token>' or ?token=<token>\n"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="fpstream"'}


class _OwnedStream(StreamingResponse):
    """A streaming response that runs ``done()`` however it ends: sent in full, the client
    gone (even before the body started), or cancelled. The engine request and the session
    budget are released there, not in the body generator, which may never start."""

    def __init__(self, done: Callable[[], None], *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._done = done

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._done()


def _api_error(e: oa.ApiError) -> JSONResponse:
    headers = {"Retry-After": "1"} if e.status == 503 else None
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


def create_app(engine: Engine, token: str | None = None, limits: ServerLimits | None = None,
               web_index: Path | None = WEB_INDEX) -> Starlette:
    """The ASGI app of every front around ``engine``; ``app.state.fronts`` is its
    :class:`AppState`."""
    state = AppState(engine, token, limits or ServerLimits(), web_index)

    async def tts_socket(ws: WebSocket) -> None:
        if not state.authorized(ws.headers, ws.query_params):
            # The query string is not logged: it may hold a (wrong) token.
            log.info("rejected %s from %s: missing or wrong token", PATH, ws.client)
            await ws.send_denial_response(PlainTextResponse(_UNAUTHORIZED, 401, _CHALLENGE))
            return
        await ws.accept()
        conn = _AsgiConnection(ws)
        if not state.acquire():
            log.warning("refusing a session: %d at once is the limit", state.limits.max_sessions)
            try:
                await conn.send(json.dumps({"type": "error", "code": BUSY,
                                       "message": f"the server is busy "
                                                  f"({state.limits.max_sessions} sessions); "
                                                  "try again later"}))
            except SessionClosed:
                pass
            await conn.close(CLOSE_BUSY, "busy")
            return
        session = _Session(state, conn, state.next_id())
        state.sessions[session.id] = session
        log.info("session %d opened from %s (%d open)", session.id, ws.client,
                 len(state.sessions))
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
            del state.sessions[session.id]
            state.release()
            log.info("session %d closed (%s %s)", session.id, conn.close_code,
                     conn.close_reason)

    async def page(request: Request) -> Response:
        if not state.authorized(request.headers, request.query_params):
            return PlainTextResponse(_UNAUTHORIZED, 401, _CHALLENGE)
        if state.web_index is None or not state.web_index.is_file():
            return PlainTextResponse(f"not found; the websocket is at {PATH}\n", 404)
        html = await asyncio.to_thread(state.web_index.read_text, encoding="utf-8")
        return HTMLResponse(html)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "sessions": len(state.sessions),
                             "busy": state.busy, "engine_requests": engine.active_requests,
                             "sample_rate": engine.sample_rate})

    def api_auth(request: Request) -> None:
        if not state.authorized(request.headers, request.query_params):
            raise oa.ApiError(401, "missing or wrong API key: send 'Authorization: Bearer "
                                   "<token>'", code="invalid_api_key")

    def listing(body: Callable[[], dict[str, Any]]) -> Callable:
        """A GET route of the OpenAI API that lists something (token checked first)."""

        async def route(request: Request) -> Response:
            try:
                api_auth(request)
            except oa.ApiError as e:
                return _api_error(e)
            return JSONResponse(body())

        return route

    async def speech(request: Request) -> Response:
        try:
            api_auth(request)
            try:
                body = await _read_body(request, state.limits.max_body_bytes)
            except ClientDisconnect:  # gone while sending its request: nobody to answer
                return Response(status_code=400)
            req = oa.parse_speech_request(body, request.headers.get("content-type"),
                                          state.limits.max_input_chars)
            if not state.acquire():
                raise oa.ApiError(503, f"the server is busy ({state.limits.max_sessions} "
                                       "requests at once); try again later",
                                  code="server_busy", type="server_error")
        except oa.ApiError as e:
            log.info("speech request refused: %s %s", e.status, e)
            return _api_error(e)
        try:
            stream, first = await oa.speech_chunks(engine, req)
        except oa.ApiError as e:
            state.release()
            return _api_error(e)
        except Exception:  # noqa: BLE001 - a bug: 500, the server goes on
            state.release()
            log.exception("speech request failed")
            return JSONResponse({"error": {"message": "internal server error",
                                           "type": "server_error", "param": None,
                                           "code": INTERNAL}}, status_code=500)
        except BaseException:  # cancelled (e.g. shutdown): the slot is still given back
            state.release()
            raise

        async def body():
            try:
                async for part in oa.speech_body(stream, first, req, engine.sample_rate):
                    yield part
            except Exception:  # noqa: BLE001 - headers are out: log, end the body early
                log.exception("speech response failed mid-stream")

        def done() -> None:
            stream.cancel()  # a no-op once the audio is all out
            state.release()

        return _OwnedStream(done, body(), media_type=req.content_type,
                            headers={"X-Sample-Rate": str(oa.OPENAI_RATE),
                                     "Cache-Control": "no-store"})

    async def not_found(request: Request) -> Response:
        return PlainTextResponse(f"not found; the websocket is at {PATH}, the OpenAI API "
                                 "under /v1\n", 404)

    async def no_socket_here(ws: WebSocket) -> None:
        await ws.send_denial_response(
            PlainTextResponse(f"not found; the websocket is at {PATH}\n", 404))

    app = Starlette(routes=[
        WebSocketRoute(PATH, tts_socket),
        WebSocketRoute("/{path:path}", no_socket_here),  # 404, not a bare 403
        Route("/", page, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/models", listing(oa.models_body), methods=["GET"]),
        Route("/v1/audio/voices", listing(oa.voices_body), methods=["GET"]),
        Route("/v1/audio/speech", speech, methods=["POST"]),
        Route("/{path:path}", not_found, methods=["GET", "HEAD", "POST", "PUT", "DELETE"]),
    ])
    app.state.fronts = state
    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise oa.ApiError(413, f"request body larger than {limit} bytes",
                          code="request_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise oa.ApiError(413, f"request body larger than {limit} bytes",
                              code="request_too_large")
    return bytes(body)
