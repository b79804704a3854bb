"""Streams: how a caller takes a request's chunks and feeds it text.

One core (:class:`_StreamCore`) holds what both flavours share: the text events a stream
posts to its request's bounded inbox, how a delivered item becomes a chunk, the end or an
error, and cancellation. :class:`Stream` (threads) waits on a thread queue and blocks while
the inbox is full; :class:`AsyncStream` (asyncio) awaits an asyncio queue and never blocks the
event loop: its ``send``/``flush``/``end`` keep the events' order in a local backlog and return
an awaitable that completes once the event is in the inbox (``await`` it for backpressure).
Text producers (iterables, async iterables) are fed through the same calls.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
from typing import TYPE_CHECKING, Any, AsyncIterable, Iterable, Iterator

from ..errors import InputError
from .request import AudioChunk

if TYPE_CHECKING:
    from .engine import Engine
    from .scheduler import RequestState

log = logging.getLogger(__name__)

END = object()  # end-of-stream marker in a request's output queue


class Sink:
    """Where a request's chunks go: a thread queue (sync) or an asyncio queue (async). Counts
    chunks delivered but not yet taken, which the scheduler bounds per request."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self.loop = loop
        self.q: Any = asyncio.Queue() if loop is not None else queue.Queue()
        self._outstanding = 0
        self._lock = threading.Lock()
        self.dead = False  # the consumer's event loop is closed: the engine drops the request

    def put(self, item: Any) -> None:
        """Deliver from the engine thread."""
        with self._lock:
            self._outstanding += 1
        if self.loop is None:
            self.q.put(item)
        else:
            try:
                self.loop.call_soon_threadsafe(self.q.put_nowait, item)
            except RuntimeError:  # the consumer's event loop is closed: nobody listens
                self.dead = True

    def taken(self) -> None:
        with self._lock:
            self._outstanding -= 1

    @property
    def outstanding(self) -> int:
        return self._outstanding


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise InputError(f"text must be a str, got {type(text).__name__}")
    return text


class _StreamCore:
    """What Stream and AsyncStream share."""

    def __init__(self, engine: "Engine", req: "RequestState"):
        self._engine, self._req = engine, req
        self._done = False

    @property
    def request_id(self) -> int:
        return self._req.id

    def _receive(self, item: Any) -> AudioChunk | None:
        """A delivered item -> the chunk, or None at the end; a delivered error is raised."""
        self._req.sink.taken()
        self._engine._wake()  # a slot freed: the request may be runnable again
        if item is END or self._req.cancelled:
            self._done = True
            return None
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def _gone(self) -> bool:
        """The request takes no more text: cancelled, or already ended by the engine."""
        return self._req.cancelled or self._req.finished

    def _offer(self, event: tuple[str, Any]) -> bool:
        """Put a text event into the request's inbox if it has room (never blocks)."""
        try:
            self._req.inbox.put_nowait(event)
        except queue.Full:
            return False
        self._engine._wake()
        return True

    def _post_blocking(self, event: tuple[str, Any]) -> None:
        """Put a text event, waiting while the inbox is full (a fast producer waits here)."""
        while not self._gone():
            try:
                self._req.inbox.put(event, timeout=0.1)
            except queue.Full:
                continue
            self._engine._wake()
            return

    def _feed_thread(self, deltas: Iterable[str]) -> None:
        """Iterate a (possibly blocking) producer in its own thread, posting what it yields."""

        def run() -> None:
            try:
                for d in deltas:
                    if self._gone():
                        return
                    self._post_blocking(("text", _check_text(d)))
                self._post_blocking(("end", None))
            except Exception as e:  # noqa: BLE001 - the producer's error ends the stream
                self._post_blocking(("error", e))

        threading.Thread(target=run, daemon=True, name=f"fpstream-feed-{self._req.id}").start()

    def _cancel(self) -> None:
        self._req.cancelled = True
        self._done = True
        self._engine._wake()


class Stream(_StreamCore):
    """A synchronous stream of :class:`AudioChunk`s. Work happens in the engine's loop;
    iteration blocks for the next chunk. ``cancel()`` stops the request within one chunk."""

    def __iter__(self) -> Iterator[AudioChunk]:
        return self

    def __next__(self) -> AudioChunk:
        if self._done:
            raise StopIteration
        chunk = self._receive(self._req.sink.q.get())
        if chunk is None:
            raise StopIteration
        return chunk

    def send(self, text: str) -> None:
        """Append a text delta (push mode: streams made by :meth:`Engine.open`). Blocks while
        the request's bounded inbox is full."""
        self._post_blocking(("text", _check_text(text)))

    def flush(self) -> None:
        """Speak whatever text is buffered now, without waiting for a sentence end."""
        self._post_blocking(("flush", None))

    def end(self) -> None:
        """No more text: speak the rest, then the stream ends."""
        self._post_blocking(("end", None))

    def feed(self, deltas: Iterable[str]) -> None:
        """Feed text deltas from an iterable in a background thread, then end the text; a
        producer's error ends the stream with that error."""
        self._feed_thread(deltas)

    def cancel(self) -> None:
        """Stop all further work for this request; buffers are freed by the loop."""
        self._cancel()

    close = cancel

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()

    def __del__(self) -> None:
        if not self._done:
            self._req.cancelled = True


class AsyncStream(_StreamCore):
    """Async twin of :class:`Stream` for asyncio code (``async for chunk in ...``). Create it
    inside a running event loop (:meth:`Engine.astream`, :meth:`Engine.aopen`)."""

    def __init__(self, engine: "Engine", req: "RequestState"):
        super().__init__(engine, req)
        self._loop = asyncio.get_running_loop()
        # Events waiting for inbox room, in order, each with the future its caller may await.
        self._backlog: collections.deque[tuple[tuple[str, Any], asyncio.Future]] = \
            collections.deque()
        self._drainer: asyncio.Task | None = None
        self._feeder: asyncio.Task | None = None

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> AudioChunk:
        if self._done:
            raise StopAsyncIteration
        chunk = self._receive(await self._req.sink.q.get())
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    def send(self, text: str) -> asyncio.Future:
        """Append a text delta (push mode, :meth:`Engine.aopen`). Never blocks: returns an
        awaitable that completes once the delta is in the request's bounded inbox; ``await``
        it to slow down with the engine (events keep their order either way)."""
        return self._post(("text", _check_text(text)))

    def flush(self) -> asyncio.Future:
        """Speak whatever text is buffered now (awaitable like :meth:`send`)."""
        return self._post(("flush", None))

    def end(self) -> asyncio.Future:
        """No more text: speak the rest, then the stream ends (awaitable like :meth:`send`)."""
        return self._post(("end", None))

    def feed(self, deltas: Iterable[str] | AsyncIterable[str]) -> None:
        """Feed text deltas, then end the text: an async iterable in a task of this loop, a
        plain iterable in a background thread (it may block). A producer's error ends the
        stream with that error."""
        if isinstance(deltas, AsyncIterable):
            self._feeder = self._loop.create_task(self._feed_async(deltas))
        else:
            self._feed_thread(deltas)

    async def _feed_async(self, deltas: AsyncIterable[str]) -> None:
        try:
            async for d in deltas:
                if self._gone():
                    return
                await self._post(("text", _check_text(d)))
            await self._post(("end", None))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the producer's error ends the stream
            await self._post(("error", e))

    def _post(self, event: tuple[str, Any]) -> asyncio.Future:
        fut = self._loop.create_future()
        if self._gone():
            fut.set_result(None)
        elif not self._backlog and self._offer(event):
            fut.set_result(None)
        else:
            self._backlog.append((event, fut))
            if self._drainer is None or self._drainer.done():
                self._drainer = self._loop.create_task(self._drain())
        return fut

    async def _drain(self) -> None:
        """Move backlogged events into the inbox as it frees up, in order."""
        try:
            while self._backlog and not self._gone():
                event, fut = self._backlog[0]
                if self._offer(event):
                    self._backlog.popleft()
                    if not fut.done():
                        fut.set_result(None)
                else:
                    await asyncio.sleep(0.005)  # the engine drains the inbox every step
        finally:
            self._release_backlog()

    def _release_backlog(self) -> None:
        while self._backlog:
            _, fut = self._backlog.popleft()
            if not fut.done():
                fut.set_result(None)

    def cancel(self) -> None:
        """Stop all further work for this request (and its feeder, if any)."""
        self._cancel()
        for task in (self._feeder, self._drainer):
            if task is not None:
                task.cancel()
        self._release_backlog()

    async def aclose(self) -> None:
        self.cancel()

    def __del__(self) -> None:
        # Dropped without cancel() (a consumer that broke out of its loop, or whose event
        # loop ended): the engine frees the request at its next step.
        if not self._done:
            self._req.cancelled = True
