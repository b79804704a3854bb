"""engine/runtime/scheduler.py: readiness, mel backlog, pending-chunk bounds, deadline caps and
earliest-deadline-first order, on real RequestStates (pure Python, no models)."""

from __future__ import annotations

import pytest

from engine.errors import InputError
from engine.runtime.request import SynthesisOptions
from engine.runtime.scheduler import RequestState, Scheduler, SchedulerLimits, select_batch
from engine.runtime.windows import WindowPlanner
from engine.text.chunker import ChunkPolicy, TextChunk

SR, HOP = 22050, 256
FRAME_S = HOP / SR


class _Sink:
    def __init__(self, outstanding: int = 0):
        self.outstanding = outstanding


def _request(created: float, frames: int = 0, queued: int = 0, outstanding: int = 0,
             finished: bool = False) -> RequestState:
    r = RequestState(SynthesisOptions(), _Sink(outstanding), WindowPlanner(13, 13, 1, (12, 24)),
                     ChunkPolicy(), max_inbox=8)
    r.created = created
    for i in range(queued):
        r.fp_queue.append((TextChunk(f"chunk {i}.", 0, 8, 0.25, "sentence"), [1, 2, 3]))
    if frames:
        r.mel_frames = frames
        r.planner.add_frames(frames)
    r.finished = finished
    return r


def test_select_batch_is_earliest_deadline_first_with_ties_to_the_older() -> None:
    assert select_batch([(3.0, 1), (1.0, 2), (2.0, 3), (1.0, 0)], 3) == [0, 2, 3]
    with pytest.raises(InputError):
        select_batch([], 0)


def test_fastpitch_batch_takes_ready_requests_in_deadline_order() -> None:
    s = Scheduler(SchedulerLimits(max_batch_fastpitch=2), SR, HOP)
    old, mid, new = _request(1.0, queued=1), _request(2.0, queued=1), _request(3.0, queued=1)
    idle = _request(0.5)  # nothing queued
    done = _request(0.1, queued=1, finished=True)
    assert s.fastpitch_batch([new, idle, mid, done, old]) == [old, mid]


def test_fastpitch_waits_while_the_mel_backlog_is_full() -> None:
    s = Scheduler(SchedulerLimits(max_mel_backlog=100), SR, HOP)
    r = _request(1.0, frames=100, queued=1)  # 100 frames made, none vocoded yet
    assert s.fastpitch_batch([r]) == []
    r.planner.next = 1  # one frame delivered: under the bound again
    assert s.fastpitch_batch([r]) == [r]


def test_vocoder_skips_requests_whose_consumer_is_behind() -> None:
    s = Scheduler(SchedulerLimits(max_pending_chunks=2), SR, HOP)
    slow = _request(1.0, frames=200, outstanding=2)
    fast = _request(2.0, frames=200, outstanding=1)
    empty = _request(0.0)  # no frames: no window ready
    assert [r for r, _ in s.vocoder_batch([slow, fast, empty], now=5.0, s_per_frame=None)] \
        == [fast]


def test_window_cap_follows_the_listeners_buffer() -> None:
    s = Scheduler(SchedulerLimits(), SR, HOP)
    r = _request(0.0, frames=400)
    assert s.window_cap(r, now=0.0, s_per_frame=1e-3) is None  # not playing yet: no cap
    r.first_audio, r.emitted = 10.0, SR  # 1 s of audio delivered at t=10
    assert s.window_cap(r, now=10.0, s_per_frame=None) is None  # cost not measured yet
    cost = 1e-3  # s per frame: 11.6x faster than real time
    cap = s.window_cap(r, now=10.5, s_per_frame=cost)
    overhead = 13 + 13 + 1
    assert cap == int((11.0 - 10.5 - 0.02) / cost) - overhead
    # Almost out of buffer: a capped window would cost more than it makes, so no cap (grow).
    assert s.window_cap(r, now=10.99, s_per_frame=cost) is None
    # The vocoder batch passes the cap to the planner.
    (req, got), = s.vocoder_batch([r], now=10.5, s_per_frame=cost)
    assert req is r and got == cap


def test_limits_are_validated() -> None:
    with pytest.raises(InputError):
        SchedulerLimits(max_batch_vocoder=0)
    with pytest.raises(InputError):
        SchedulerLimits(max_pending_chunks=0)
