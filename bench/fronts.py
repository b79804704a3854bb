"""Time to first audio through every front against the native websocket, same text and voice.

    python -m bench.fronts                       # 20 runs each, the shipped voice
    python -m bench.fronts --runs 50 --token-rate 40 --fastpitch voice.pt

One engine serves every front in this process (as ``fpstream serve --wyoming`` does), and each
run takes a fresh connection, the fronts taking turns:

* ws: ``clients.client.synthesize`` (the websocket protocol at /v1/tts); TTFA from handing
  it the first text delta to its first audio chunk.
* openai-pcm / openai-sse: ``POST /v1/audio/speech`` with ``response_format: pcm`` and
  ``stream_format`` audio / sse; TTFA from sending the request to the first audio bytes /
  the first ``speech.audio.delta`` event (the whole text goes in the request).
* wyoming: ``synthesize-start``, ``synthesize-chunk`` per delta, ``synthesize-stop`` with the
  ``wyoming`` package's ``AsyncTcpClient``; TTFA from writing the first chunk to reading the
  first ``audio-chunk``.

The websocket and Wyoming fronts get the 128-character benchmark phrase as one delta, or as
LLM-style deltas (~4 characters) paced at --token-rate tokens/s. Connecting is not counted.
Prints p50/p95 of TTFA and of the time to the last audio, with the device, torch version and
commit, and appends a row per front to bench/results/fronts.csv. The runners are
``clients.benchmark``'s (``fpstream bench ttfa --server URL --compare URL…`` measures any
server, ours or another engine's, the same way).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import torch

from bench.common import PHRASE_128, environment, percentile, write_rows
from clients import benchmark
from clients.benchmark import token_deltas
from clients.server import serve_tts
from clients.wyoming import serve_wyoming
from engine import Engine


async def wyoming_run(host: str, port: int, deltas: list[str],
                      token_rate: float | None) -> tuple[float, float]:
    """(TTFA, time to the last audio) in seconds, from the first synthesize-chunk."""
    run = await benchmark.wyoming_run(host, port, deltas, token_rate, streaming=True)
    return run.ttfa, run.last


async def websocket_run(url: str, deltas: list[str],
                        token_rate: float | None) -> tuple[float, float]:
    """(TTFA, time to the last audio) in seconds, from handing over the first text delta."""
    run = await benchmark.ws_run(url, deltas, token_rate)
    return run.ttfa, run.last


def openai_run(host: str, port: int, text: str, sse: bool) -> tuple[float, float]:
    """(TTFA, time to the last audio) in seconds, from sending the request (blocking: run it
    in a thread)."""
    run = benchmark.openai_run(f"http://{host}:{port}/v1", text, sse=sse)
    return run.ttfa, run.last


FRONTS = ("ws", "openai-pcm", "openai-sse", "wyoming")


async def measure(engine: Engine, runs: int, token_rate: float | None
                  ) -> dict[str, dict[str, list[float]]]:
    deltas = token_deltas(PHRASE_128) if token_rate else [PHRASE_128]
    out: dict[str, dict[str, list[float]]] = {f: {"ttfa": [], "last": []} for f in FRONTS}
    async with serve_tts(engine, port=0) as ws, \
            serve_wyoming(engine, "tcp://127.0.0.1:0") as wy:

        async def once(front: str) -> tuple[float, float]:
            if front == "ws":
                return await websocket_run(ws.url, deltas, token_rate)
            if front == "wyoming":
                return await wyoming_run(wy.host, wy.port, deltas, token_rate)
            return await asyncio.to_thread(openai_run, "127.0.0.1", ws.port, PHRASE_128,
                                           front == "openai-sse")

        for front in FRONTS:  # one warm-up run each (first-call allocations, lazy imports)
            await once(front)
        for _ in range(runs):
            for front in FRONTS:
                ttfa, last = await once(front)
                out[front]["ttfa"].append(ttfa * 1000)
                out[front]["last"].append(last * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="runs per front (default 20)")
    ap.add_argument("--token-rate", type=float, default=None, metavar="TOKENS_PER_S",
                    help="send ws/Wyoming text as LLM-style deltas at this rate (default: the "
                         "whole text in one message)")
    ap.add_argument("--fastpitch", default=None, help="voice (default: the shipped one)")
    ap.add_argument("--hifigan", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-csv", action="store_true", help="print only")
    args = ap.parse_args()
    if args.runs < 20:
        ap.error("--runs must be >= 20 (p95 needs them)")
    if args.token_rate is not None and not args.token_rate > 0:
        ap.error("--token-rate must be > 0")
    engine = Engine.load(args.fastpitch, args.hifigan, device=args.device)
    try:
        results = asyncio.run(measure(engine, args.runs, args.token_rate))
        device = engine.runner.device
    finally:
        engine.close()
    env = environment(torch.device(device))
    pacing = (f"ws/wyoming deltas at {args.token_rate:g} tokens/s" if args.token_rate
              else "the whole text in one message")
    print(f"device {env['device']} | torch {env['torch']} | commit {env['commit']} | "
          f"{args.runs} runs per front | 128-char phrase, {pacing}")
    print(f"{'front':<11} {'TTFA p50 ms':>12} {'TTFA p95 ms':>12} {'last p50 ms':>12} "
          f"{'last p95 ms':>12}")
    rows: list[dict[str, Any]] = []
    for front, r in results.items():
        t50, t95 = percentile(r["ttfa"], 50), percentile(r["ttfa"], 95)
        l50, l95 = percentile(r["last"], 50), percentile(r["last"], 95)
        print(f"{front:<11} {t50:>12.1f} {t95:>12.1f} {l50:>12.1f} {l95:>12.1f}")
        rows.append({**env, "front": front, "voice": args.fastpitch or "default",
                     "runs": args.runs, "token_rate": args.token_rate or "",
                     "ttfa_p50_ms": round(t50, 2), "ttfa_p95_ms": round(t95, 2),
                     "last_audio_p50_ms": round(l50, 2), "last_audio_p95_ms": round(l95, 2)})
    if not args.no_csv:
        print(f"appended to {write_rows('fronts', rows)}")


if __name__ == "__main__":
    main()
