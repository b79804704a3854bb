"""bench.load's measuring parts: the in-process server's leak indicators and a short soak.

The full bench (minutes long, appends to bench/results) is run by hand; these check that
what it reports is read from the server and changes when the server's state does."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import pytest

from bench import load
from bench.common import rss_mb, rss_parts_mb
from engine import Engine

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="RSS parts come from /proc")


@pytest.fixture(scope="module")
def server():
    eng = Engine.load(load.DATA / "tiny_fastpitch.pt", load.DATA / "tiny_hifigan.pt")
    srv = load.InProcessServer(eng, max_sessions=8)
    with srv:
        yield srv
    eng.close()


def test_rss_parts_add_up_to_rss():
    parts = rss_parts_mb()
    total = rss_mb()
    assert parts["rss_anon_mb"] > 0 and parts["rss_file_mb"] > 0
    # RssShmem is the rest; it is small for this process.
    assert abs(parts["rss_anon_mb"] + parts["rss_file_mb"] - total) < 0.1 * total


def test_snapshot_sees_an_open_session_and_its_end(server):
    from websockets.asyncio.client import connect

    async def main():
        idle = await asyncio.to_thread(server.snapshot)
        async with connect(server.url) as ws:
            await ws.send(json.dumps({"type": "start"}))
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready"
            during = await asyncio.to_thread(server.snapshot)
            fmt = {"sample_rate": ready["sample_rate"], "encoding": ready["encoding"]}
            r = await load.speak(ws, fmt, ["Counting ", "things."], 0, 60)
        for _ in range(100):  # the server notices the close
            after = await asyncio.to_thread(server.snapshot)
            if after["sessions"] == 0:
                break
            await asyncio.sleep(0.05)
        return idle, during, after, r

    idle, during, after, r = asyncio.run(main())
    assert r["error"] is None and r["arrivals"]
    assert idle["sessions"] == 0 and during["sessions"] == 1 and after["sessions"] == 0
    assert during["server_tasks"] > idle["server_tasks"]
    assert after["server_tasks"] == idle["server_tasks"]
    assert after["engine_requests"] == 0
    assert after["vocoder_ms_per_frame"] > 0  # measured by the utterance above
    if after["heap_in_use_mb"] is not None:  # glibc
        assert after["heap_in_use_mb"] > 1


def test_short_soak_reports_every_minute_with_snapshots(server):
    args = argparse.Namespace(soak_minutes=0.05, word_rate=0.0, timeout=60.0,
                              prebuffer_ms=200.0)
    sampler = load.RssSampler(None, True)
    minutes = asyncio.run(load.run_soak(server.url, 2, args, sampler, server.snapshot))
    assert len(minutes) == 1
    m = minutes[0]
    assert m["utts"] >= 2 and m["errors"] == 0 and len(m["ttfa"]) == m["utts"]
    assert m["snapshot"]["sessions"] <= 2
