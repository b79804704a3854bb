"""What runs next (pure Python: no torch, no numpy here).

The engine loop asks the scheduler, once per step, which requests run in this step's FastPitch
batch and which in its HiFi-GAN batch, and how large each request's vocoder window may be.
The rules:

* **Readiness.** FastPitch: a request with a text chunk waiting whose un-vocoded mel backlog
  is under ``max_mel_backlog`` frames. HiFi-GAN: a request whose planner has a window ready
  and whose consumer holds fewer than ``max_pending_chunks`` undelivered chunks (a listener
  that does not read pauses its own request, nobody else's).
* **Order.** Earliest deadline first (:func:`select_batch`): a request's deadline is when its
  delivered audio runs out if played in real time.
* **Deadline caps.** Once a request is playing, its next window is capped so that vocoding it
  finishes before the listener's buffer runs dry, from the runner's measured cost per frame.

:class:`RequestState` is the per-request state the loop keeps and the scheduler reads.
"""

from __future__ import annotations

import collections
import itertools
import queue
import time
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import InputError
from ..text.chunker import ChunkPolicy, TextChunk, TextChunker
from .request import SynthesisOptions
from .windows import WindowPlanner

# Seconds kept in hand when a window is capped to a listener's deadline.
SAFETY_MARGIN_S = 0.02


class RequestState:
    """The engine loop's state of one request. Only the loop thread touches it, except the
    inbox (producers put text events), the cancel flag and the sink (consumers take chunks).

    The scheduler reads: :meth:`deadline`, ``fp_queue``, ``mel_frames``, ``planner``,
    ``first_audio``, ``finished`` and ``sink.outstanding``.
    """

    _ids = itertools.count(1)

    def __init__(self, options: SynthesisOptions, sink: Any, planner: WindowPlanner,
                 policy: ChunkPolicy, max_inbox: int, keep_mel: bool = False):
        self.id = next(self._ids)
        self.options = options
        self.sink = sink  # streams._Sink: where delivered chunks go
        self.planner = planner
        self.chunker = TextChunker(policy)
        self.inbox: queue.Queue = queue.Queue(max_inbox)  # ("text"|"flush"|"end"|"error", value)
        self.cancelled = False
        self.created = time.monotonic()
        self.text_ended = False
        self.fp_queue: collections.deque[tuple[TextChunk, list[int]]] = collections.deque()
        self.mel_frames = 0  # frames appended to the mel stream
        self.tail: Any = None  # float32 samples held for the next crossfade (numpy), or None
        self.emitted = 0  # samples delivered
        self.chunks = 0  # chunks delivered
        self.first_audio: float | None = None
        self.timeline: collections.deque = collections.deque()  # (frame, TextChunk|WordTiming)
        self.finished = False
        self.spoke_any = False  # a chunk with speakable symbols was synthesized
        self.mel_log: list[Any] | None = [] if keep_mel else None  # (80, T) tensors, if kept

    @classmethod
    def private_id(cls) -> int:
        """An id no live request has (negative): for work outside the loop, e.g. vocode()."""
        return -next(cls._ids)

    def deadline(self, sample_rate: int) -> float:
        """When this request's delivered audio runs out if played in real time from its first
        chunk; requests without audio yet are due at their creation time (most urgent)."""
        if self.first_audio is None:
            return self.created
        return self.first_audio + self.emitted / sample_rate



@dataclass(frozen=True)
class SchedulerLimits:
    """Batch sizes and per-request bounds (the engine's config fills them in)."""

    max_batch_fastpitch: int = 16
    max_batch_vocoder: int = 8
    max_pending_chunks: int = 4  # undelivered chunks per request before it is paused
    max_mel_backlog: int = 2000  # un-vocoded frames per request before FastPitch waits

    def __post_init__(self) -> None:
        if min(self.max_pending_chunks, self.max_batch_vocoder, self.max_batch_fastpitch,
               self.max_mel_backlog) < 1:
            raise InputError("batch sizes, max_pending_chunks and max_mel_backlog must be >= 1")


class Scheduler:
    """Decides each step's FastPitch and HiFi-GAN batches.

    ``frame_s`` is the audio seconds of one mel frame (hop / sample rate).
    """

    def __init__(self, limits: SchedulerLimits, sample_rate: int, hop: int):
        self.limits = limits
        self.sample_rate = sample_rate
        self.frame_s = hop / sample_rate

    def fastpitch_batch(self, requests: Iterable[RequestState]) -> list[RequestState]:
        """The requests whose next text chunk runs in this step's FastPitch batch."""
        ready = [r for r in requests
                 if r.fp_queue and not r.finished
                 and r.mel_frames - r.planner.next < self.limits.max_mel_backlog]
        return self._earliest(ready, self.limits.max_batch_fastpitch)

    def vocoder_batch(self, requests: Iterable[RequestState], now: float,
                      s_per_frame: float | None) -> list[tuple[RequestState, int | None]]:
        """(request, window cap in frames or None) for this step's HiFi-GAN batch.
        ``s_per_frame`` is the runner's measured vocoder cost (None before the first run)."""
        caps: dict[int, int | None] = {}
        ready = []
        for r in requests:
            if r.finished or r.sink.outstanding >= self.limits.max_pending_chunks:
                continue
            cap = self.window_cap(r, now, s_per_frame)
            if r.planner.peek(cap) is not None:
                caps[r.id] = cap
                ready.append(r)
        return [(r, caps[r.id]) for r in self._earliest(ready, self.limits.max_batch_vocoder)]

    def window_cap(self, req: RequestState, now: float, s_per_frame: float | None) -> int | None:
        """Largest window (frames) whose vocoding should finish before the request's
        delivered audio runs out, from the measured cost per frame; None = no cap."""
        c = s_per_frame
        if req.first_audio is None or c is None:
            return None
        slack = req.deadline(self.sample_rate) - now - SAFETY_MARGIN_S
        overhead = req.planner.ctx_left + req.planner.ctx_right + req.planner.overlap
        cap = int(slack / c) - overhead
        # Below this size a window costs more than ~2/3 of the audio it makes: capping there
        # would keep the stream behind forever. Then grow instead, to catch up.
        efficient = overhead * c / max(self.frame_s - c, 1e-9) * 1.5
        return cap if cap >= efficient else None

    def _earliest(self, ready: list[RequestState], max_batch: int) -> list[RequestState]:
        by_id = {r.id: r for r in ready}
        ids = select_batch([(r.deadline(self.sample_rate), r.id) for r in ready], max_batch)
        return [by_id[i] for i in ids]


def select_batch(candidates: list[tuple[float, int]], max_batch: int) -> list[int]:
    """Pick which ready requests run in this step's batch: earliest deadline first.

    ``candidates`` are (deadline, request id) of requests that have work ready; a request's
    deadline is when its delivered audio runs out in real-time playback (requests without
    audio yet are due at their creation time). Earliest-deadline-first keeps every stream
    ahead of its listener as long as the machine can, and is fair: a request that was skipped
    only grows more urgent. Ties go to the older request (smaller id).
    """
    if max_batch < 1:
        raise InputError("max_batch must be >= 1")
    return [rid for _, rid in sorted(candidates)[:max_batch]]
