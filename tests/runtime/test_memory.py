"""engine.runtime.memory: freed heap goes back to the OS, heap stats see live allocations, and the
engine loop trims on its interval (and never when told 0)."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
import pytest

import engine.runtime.engine as engine_module
from bench.common import rss_mb
from engine import Engine, EngineConfig, Voice
from engine.runtime.memory import heap_stats, release_free_heap

DATA = Path(__file__).resolve().parents[1] / "data"

glibc = pytest.mark.skipif(heap_stats() is None, reason="needs glibc >= 2.33 (mallinfo2)")


@glibc
def test_heap_stats_follow_live_allocations():
    # The stats cover every thread's arena: threads left by earlier tests (engine loops
    # closing, ASR/ONNX pools) may free memory meanwhile, so settle first and allow retries.
    grew = []
    for _ in range(3):
        gc.collect()
        time.sleep(0.2)
        before = heap_stats()
        # 4,000 x 32 KB blocks: under the mmap threshold, so they live in the arenas.
        blocks = [np.ones(8192, np.float32) for _ in range(4000)]  # 125 MB
        held = heap_stats()
        grew.append(held.in_use - before.in_use)
        del blocks
        after = heap_stats()
        if grew[-1] > 100 * 2**20 and after.in_use - before.in_use < 20 * 2**20:
            break
    else:
        pytest.fail(f"heap in use grew by {[g >> 20 for g in grew]} MB for 125 MB of blocks")


@glibc
def test_release_free_heap_gives_freed_pages_back():
    release_free_heap()
    blocks = [np.ones(8192, np.float32) for _ in range(6000)]  # 188 MB of small blocks
    keep = blocks[-1]  # the top of the heap stays in use: plain sbrk trimming cannot help
    del blocks
    grown = rss_mb()
    assert release_free_heap() is True
    released = grown - rss_mb()
    assert released > 100, f"only {released:.1f} MB given back"
    assert keep.sum() == 8192  # still valid after the trim
    assert release_free_heap() in (True, False)  # nothing left to give: still fine


def test_trim_interval_is_validated():
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="trim_interval_s"):
            EngineConfig(trim_interval_s=bad)
    assert EngineConfig().trim_interval_s > 0  # on by default


@pytest.fixture(scope="module")
def voice():
    return Voice.load(DATA / "tiny_fastpitch.pt", DATA / "tiny_hifigan.pt", device="cpu")


@pytest.mark.parametrize("interval,expect_calls", [(0.05, True), (0.0, False)])
def test_engine_loop_trims_on_its_interval(voice, monkeypatch, interval, expect_calls):
    calls = []
    monkeypatch.setattr(engine_module, "release_free_heap", lambda: calls.append(1) or True)
    eng = Engine(voice, EngineConfig(trim_interval_s=interval))
    try:
        audio = eng.synthesize("Trim between steps.").audio  # work still runs normally
        assert audio.size > 0
        time.sleep(1.2)  # idle waits are at most 0.5 s, so a due trim happens in this time
    finally:
        eng.close()
    if expect_calls:
        assert len(calls) >= 2
    else:
        assert calls == []
