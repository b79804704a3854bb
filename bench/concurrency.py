"""N concurrent streams: TTFA percentiles and real-time underruns.

    python -m bench.concurrency                 # N = 1 2 3 4
    python -m bench.concurrency --streams 1 2 4 8 --rounds 3 --prebuffer-ms 100

Each of N client threads requests the 128-character phrase at the same moment, plays it back
in real time from its first chunk (plus --prebuffer-ms) and counts an underrun whenever a
chunk arrives after the audio before it has finished playing (playback stalls, resumes). Repeated --rounds times per N. Prints, per N, the
TTFA p50/p95/p99, underruns, streams that had any, and the largest N with zero underruns;
appends rows to bench/results/concurrency.csv.
"""

from __future__ import annotations

import argparse
import threading

from bench.common import (PHRASE_128, environment, percentile, playback_underruns, timed_chunks,
                          write_rows)
from bench.ttfa import load_engine


def run_round(engine, n: int, prebuffer_s: float) -> list[dict]:
    results: list[dict] = [{} for _ in range(n)]
    barrier = threading.Barrier(n)

    def client(i: int) -> None:
        barrier.wait()
        arrivals, durations = timed_chunks(engine, PHRASE_128)
        under, gap = playback_underruns(arrivals, durations, prebuffer_s)
        results[i] = {"ttfa": arrivals[0], "underruns": under, "gap": gap,
                      "audio_s": sum(durations), "wall_s": arrivals[-1]}

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prebuffer-ms", type=float, default=0.0,
                    help="client jitter buffer before playback starts (default 0)")
    ap.add_argument("--fastpitch")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--hifigan")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-csv", action="store_true")
    args = ap.parse_args(argv)
    if min(args.streams) < 1 or args.rounds < 1:
        ap.error("--streams and --rounds must be >= 1")

    engine, voice_name = load_engine(args)
    env = environment(engine.runner.device)
    rows, best = [], 0
    try:
        run_round(engine, 1, 0.0)  # warm-up
        print(f"concurrency bench: 128-char phrase, {voice_name}; device {env['device']}, "
              f"torch {env['torch']}, commit {env['commit']}; {args.rounds} rounds per N, "
              f"prebuffer {args.prebuffer_ms:g} ms")
        print(f"{'N':>4} {'TTFA p50':>9} {'p95':>8} {'p99':>8} {'underruns':>9} "
              f"{'streams w/':>10} {'max gap ms':>13}")
        for n in args.streams:
            res = [r for _ in range(args.rounds) for r in run_round(engine, n, args.prebuffer_ms / 1e3)]
            ttfa = [r["ttfa"] * 1e3 for r in res]
            under = sum(r["underruns"] for r in res)
            bad = sum(r["underruns"] > 0 for r in res)
            worst = max(r["gap"] for r in res) * 1e3
            if under == 0 and n > best:
                best = n
            print(f"{n:4d} {percentile(ttfa, 50):9.1f} {percentile(ttfa, 95):8.1f} "
                  f"{percentile(ttfa, 99):8.1f} {under:9d} {bad:10d} {worst:13.1f}")
            rows.append({**env, "bench": "concurrency", "voice": voice_name, "streams": n,
                         "rounds": args.rounds, "prebuffer_ms": args.prebuffer_ms,
                         "ttfa_ms_p50": round(percentile(ttfa, 50), 2),
                         "ttfa_ms_p95": round(percentile(ttfa, 95), 2),
                         "ttfa_ms_p99": round(percentile(ttfa, 99), 2),
                         "underruns": under, "streams_with_underruns": bad,
                         "max_total_gap_ms": round(worst, 2)})
        print(f"largest N with zero underruns: {best or 'none'}")
    finally:
        engine.close()
    if not args.no_csv:
        print(f"rows appended to {write_rows('concurrency', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
