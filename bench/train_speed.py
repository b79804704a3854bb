"""Training speed of each CPU path: frames/s and losses at equal steps, in one run.

    python -m bench.train_speed --corpus corpus/ --resume run/checkpoint_last.pt \
        [--steps 20] [--paths fp32,bf16] [--threads 2] [--train-limit 2000]

Every path starts from the same checkpoint (an exact resume: same weights, optimizer and
batch order), trains ``--steps`` steps and reports mel frames per second (median and spread
over steps after the first) and its mean losses; the losses must agree between paths (bf16
changes rounding, not the recipe). ``--threads`` may list several counts (e.g. ``1,2``).
Appends rows to bench/results/train_speed.csv.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import environment, summarize, write_rows


def run_path(corpus: str, resume: str, steps: int, amp: bool, threads: int,
             train_limit: int | None) -> dict:
    import torch

    from engine.training.trainer import TrainConfig, Trainer

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(corpus=corpus, out=out, resume=resume, steps=steps, amp=amp,
                          threads=threads, val_every=0, save_every=0, samples=0, val_utts=0,
                          log_every=10 ** 9, train_limit=train_limit)
        t = Trainer(cfg)
        if amp and not t.amp_on:
            raise ValueError("bf16 autocast is not available on this CPU")
        rates, losses = [], {}
        for k, idx in enumerate(t.train.batches(cfg.batch_size, t.rng)):
            if k >= steps:
                break
            t0 = time.perf_counter()
            batch = t.train.collate(idx)
            m = t.train_step(batch, k)
            dt = time.perf_counter() - t0
            if k:  # the first step warms up oneDNN's primitive caches
                rates.append(m["frames"] / dt)
            for key in ("loss", "mel", "dur", "pitch", "attn"):
                losses[key] = losses.get(key, 0.0) + m[key] / steps
        t.log_file.close()
    return {"threads": torch.get_num_threads(), "rates": rates, **losses}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--resume", required=True, help="checkpoint_last.pt (or a voice)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--paths", default="fp32,bf16", help="fp32 and/or bf16 (default both)")
    ap.add_argument("--threads", default="0", help="torch threads, comma-separated (0: default)")
    ap.add_argument("--train-limit", type=int, default=2000,
                    help="load only the first N train utterances (default 2000)")
    ap.add_argument("--no-csv", action="store_true")
    args = ap.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or any(p not in ("fp32", "bf16") for p in paths):
        ap.error("--paths takes fp32 and/or bf16")
    if args.steps < 3:
        ap.error("--steps must be >= 3")
    try:
        threads = [int(x) for x in args.threads.split(",")]
    except ValueError:
        ap.error("--threads takes integers")
    import torch

    env = environment(torch.device("cpu"))
    default_threads = torch.get_num_threads()  # torch's choice, for --threads 0
    results = []
    for n in threads:
        n = n or default_threads
        for p in paths:
            r = run_path(args.corpus, args.resume, args.steps, p == "bf16", n, args.train_limit)
            r["path"] = p
            results.append(r)
            s = summarize(r["rates"])
            print(f"{p:<5} {r['threads']} threads: {s['median']:7.0f} frames/s "
                  f"(min {s['min']:.0f}, max {s['max']:.0f}); mean loss {r['loss']:.4f} mel "
                  f"{r['mel']:.4f} dur {r['dur']:.4f} pitch {r['pitch']:.4f} "
                  f"forward-sum {r['attn']:.4f}", flush=True)
    base = statistics.median(results[0]["rates"])
    rows = []
    for r in results:
        s = summarize(r["rates"])
        rows.append({**env, "resume": Path(args.resume).name, "steps": args.steps,
                     "path": r["path"],
                     "threads": r["threads"], "frames_per_s_median": round(s["median"]),
                     "frames_per_s_min": round(s["min"]), "frames_per_s_max": round(s["max"]),
                     "speedup_vs_first": round(s["median"] / base, 3),
                     **{k: round(r[k], 4) for k in ("loss", "mel", "dur", "pitch", "attn")}})
        print(f"{r['path']:<5} {r['threads']} threads: {s['median'] / base:.2f}x the first path")
    if not args.no_csv:
        print(f"appended {len(rows)} rows to {write_rows('train_speed', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
