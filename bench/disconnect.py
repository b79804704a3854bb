"""Disconnect soak for the websocket server: many connect / speak / disconnect cycles.

    python -m bench.disconnect                      # 1,000 cycles, the tiny test voice
    python -m bench.disconnect --cycles 5000 --fastpitch voice.pt

Each cycle connects to an in-process server (127.0.0.1, port 0) and sends a long text. Then
it leaves in one of four ways, in turn:
- a close handshake, or a dropped TCP connection;
- before any audio, or after the first chunk.

For the disconnects after audio it measures how long the engine takes to drop the request
(disconnect -> ``engine.active_requests == 0``) and how many chunks it still made after the
disconnect (the step in flight, and any started before the cancel reached the engine). At the end it reports these counts, before
and after the cycles:
- asyncio tasks, open sessions, engine requests and mel buffers (all must return to their
  starting values);
- the process RSS (it must not grow with the number of cycles; allocator noise of a few MB
  is normal).

It appends one row to bench/results/disconnect.csv.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from pathlib import Path

import torch

from bench.common import environment, percentile, rss_mb, write_rows
from clients.server import serve_tts
from engine import Engine

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
TEXT = " ".join((DATA / "sentences.txt").read_text().splitlines())


async def soak(engine: Engine, cycles: int) -> dict:
    from websockets.asyncio.client import connect

    stop_ms: list[float] = []
    chunks_after: list[int] = []  # chunks made after each mid-audio disconnect
    async with serve_tts(engine, port=0, max_sessions=64) as server:
        async def cycle(i: int) -> None:
            ws = await connect(server.url)
            await ws.send(json.dumps({"type": "start"}))
            await ws.send(json.dumps({"type": "text", "text": TEXT}))
            await ws.send(json.dumps({"type": "end"}))
            mid_audio = i % 2 == 1
            req = None
            if mid_audio:
                while json.loads(await ws.recv())["type"] != "chunk":
                    pass
                # The engine's state of this (the only) request, read-only: to count the
                # chunks it still makes after the disconnect.
                (req,) = engine._requests.values()
                chunks_before = req.chunks
            t0 = time.perf_counter()
            if i % 4 < 2:
                await ws.close()
            else:
                ws.transport.abort()
                await ws.wait_closed()
            if mid_audio:
                while engine.active_requests:
                    await asyncio.sleep(0.0005)
                stop_ms.append((time.perf_counter() - t0) * 1000)
                chunks_after.append(req.chunks - chunks_before)

        async def settle() -> None:
            for _ in range(500):
                if not engine.active_requests and not server.sessions:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # handlers finish their close handshakes
            gc.collect()

        for i in range(8):  # warm up: first-use allocations are not leaks
            await cycle(i)
        await settle()
        before = {"tasks": len(asyncio.all_tasks()), "rss_mb": rss_mb()}
        t0 = time.perf_counter()
        for i in range(cycles):
            await cycle(i)
        wall = time.perf_counter() - t0
        await settle()
        after = {"tasks": len(asyncio.all_tasks()), "rss_mb": rss_mb(),
                 "sessions": len(server.sessions), "requests": engine.active_requests,
                 "mel_buffers": len(engine.runner.mels)}
    return {"before": before, "after": after, "wall": wall, "stop_ms": stop_ms,
            "chunks_after": chunks_after}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--fastpitch", default=str(DATA / "tiny_fastpitch.pt"))
    ap.add_argument("--hifigan", default=str(DATA / "tiny_hifigan.pt"))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.cycles < 1:
        ap.error("--cycles must be >= 1")
    engine = Engine.load(args.fastpitch, args.hifigan, device=args.device)
    try:
        r = asyncio.run(soak(engine, args.cycles))
    finally:
        engine.close()
    b, a, stops = r["before"], r["after"], r["stop_ms"]
    ok = (a["tasks"] <= b["tasks"] and a["sessions"] == 0 and a["requests"] == 0
          and a["mel_buffers"] == 0)
    print(f"{args.cycles} cycles in {r['wall']:.1f} s ({r['wall'] / args.cycles * 1000:.1f} ms "
          f"each)")
    print(f"asyncio tasks {b['tasks']} -> {a['tasks']}; sessions {a['sessions']}, engine "
          f"requests {a['requests']}, mel buffers {a['mel_buffers']} after")
    print(f"RSS {b['rss_mb']:.1f} -> {a['rss_mb']:.1f} MB ({a['rss_mb'] - b['rss_mb']:+.1f} MB)")
    print(f"disconnect -> engine idle (n={len(stops)}): p50 {percentile(stops, 50):.1f} ms, "
          f"p95 {percentile(stops, 95):.1f} ms, max {max(stops):.1f} ms")
    extra = r["chunks_after"]
    hist = {k: extra.count(k) for k in sorted(set(extra))}
    print(f"chunks made after the disconnect (n={len(extra)}): max {max(extra)}; "
          + ", ".join(f"{k}: {v}" for k, v in hist.items()))
    print("no leaks" if ok else "LEAK: something did not return to its starting value")
    env = environment(torch.device(args.device))
    path = write_rows("disconnect", [{
        **env, "voice": Path(args.fastpitch).name, "cycles": args.cycles,
        "wall_s": round(r["wall"], 2), "tasks_before": b["tasks"], "tasks_after": a["tasks"],
        "sessions_after": a["sessions"], "requests_after": a["requests"],
        "rss_before_mb": round(b["rss_mb"], 1), "rss_after_mb": round(a["rss_mb"], 1),
        "stop_p50_ms": round(percentile(stops, 50), 2),
        "stop_p95_ms": round(percentile(stops, 95), 2), "stop_max_ms": round(max(stops), 2),
        "chunks_after_p50": percentile(extra, 50), "chunks_after_max": max(extra),
        "leak_free": ok}])
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
