"""Where a student's speech gets shorter than its teacher's: the length ratio, factor by factor.

    python -m bench.durations --fastpitch voice.pt --corpus corpus/ [--split test] [--n 100]

On held-out corpus utterances (same text, same token ids the voice saw in training) it
measures, in mel frames (256 samples at 22.05 kHz):

* ``teacher``: the teacher's own audio as the intelligibility bench hears it (untrimmed);
* ``corpus``: the same audio after the corpus build trimmed leading/trailing silence, i.e.
  what the student learnt to reproduce (the durations the aligner found sum to this);
* ``predicted``: the student's duration predictor on the whole utterance in one pass
  (``FastPitch.infer``, pace 1);
* ``engine``: what the engine makes of the text (cut into sentence/clause chunks, each
  predicted on its own, joined), the path users and the benches hear.

The ratios between neighbours say which step loses length: trimming (corpus/teacher), the
duration predictor (predicted/corpus) or chunking (engine/predicted). Prints the table and
appends one row to bench/results/durations.csv.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench.common import environment, write_rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fastpitch", required=True, help="FastPitch voice")
    ap.add_argument("--corpus", required=True, help="corpus folder (fpstream corpus build)")
    ap.add_argument("--split", default="test", help="corpus split (default test)")
    ap.add_argument("--n", type=int, default=100, help="first N utterances (default 100)")
    ap.add_argument("--no-engine", action="store_true",
                    help="skip the engine column (it vocodes, the slow part)")
    ap.add_argument("--no-csv", action="store_true")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be >= 1")
    import torch

    from engine import Engine
    from engine.training.corpus import TEACHER_RATE, load_manifest, load_utterance, utterance_seed

    try:
        manifest = load_manifest(args.corpus)
        uids = list(manifest["splits"].get(args.split, []))[:args.n]
        if not uids:
            raise ValueError(f"{args.corpus}: split {args.split!r} has no utterances")
        from hibari import Hibari
    except ImportError:
        ap.exit(2, "bench.durations: error: the teacher needs hibari-tts: "
                   "pip install -e '.[train]'\n")
    except ValueError as e:
        ap.exit(2, f"bench.durations: error: {e}\n")
    tts = Hibari()
    eng = Engine.load(fastpitch=args.fastpitch, device="cpu")
    hop, rate = eng.voice.hop_length, eng.sample_rate
    model = eng.voice.fastpitch
    sums = {"teacher": 0.0, "corpus": 0.0, "predicted": 0.0, "engine": 0.0}
    per_utt = []
    t0 = time.perf_counter()
    try:
        for k, uid in enumerate(uids, 1):
            it = load_utterance(args.corpus, uid)
            audio = tts(it["text"], seed=utterance_seed(uid))
            teacher = len(audio) * rate / TEACHER_RATE / hop
            corpus = float(it["mel"].size(1))
            with torch.inference_mode():
                _, mel_lens, *_ = model.infer(it["ids"].long()[None], solo_equivalent=True)
            predicted = float(mel_lens[0])
            engine_frames = (len(eng.synthesize(it["text"]).audio) / hop
                             if not args.no_engine else float("nan"))
            for key, v in (("teacher", teacher), ("corpus", corpus), ("predicted", predicted),
                           ("engine", engine_frames)):
                sums[key] += v
            per_utt.append(predicted / corpus)
            print(f"\r{k}/{len(uids)} utterances, {time.perf_counter() - t0:.0f} s", end="",
                  file=sys.stderr, flush=True)
    finally:
        eng.close()
    print(file=sys.stderr)
    s = sums
    print(f"\nLengths on {len(uids)} '{args.split}' utterances ({args.fastpitch}), seconds:")
    for key in ("teacher", "corpus", "predicted", "engine"):
        if not np.isnan(s[key]):
            print(f"  {key:<10} {s[key] * hop / rate:8.1f} s   ({s[key] / s['teacher']:.3f} of the "
                  f"teacher's)")
    r = np.array(per_utt)
    print(f"  corpus/teacher (trimming) {s['corpus'] / s['teacher']:.3f}; predicted/corpus "
          f"(duration predictor) {s['predicted'] / s['corpus']:.3f} (per utterance median "
          f"{np.median(r):.3f}, 10-90 % {np.percentile(r, 10):.3f}-{np.percentile(r, 90):.3f})"
          + ("" if args.no_engine else
             f"; engine/predicted (chunking) {s['engine'] / s['predicted']:.3f}"))
    if not args.no_csv:
        row = {**environment(torch.device("cpu")), "voice": args.fastpitch,
               "split": args.split, "utterances": len(uids),
               **{f"{k}_s": round(v * hop / rate, 1) for k, v in s.items()},
               "corpus_vs_teacher": round(s["corpus"] / s["teacher"], 4),
               "predicted_vs_corpus": round(s["predicted"] / s["corpus"], 4),
               "engine_vs_predicted": (round(s["engine"] / s["predicted"], 4)
                                       if not args.no_engine else "")}
        print(f"appended a row to {write_rows('durations', [row])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
