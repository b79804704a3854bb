"""Shared bench helpers: environment description, CSV rows, the bench voice, memory.

The timers and statistics (percentile, playback underruns, timed streams) and the 128-character
phrase are the package's (``clients.benchmark``, also behind ``fpstream bench ttfa``); they are
re-exported here for the scripts.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import statistics
from pathlib import Path
from typing import Any, Sequence

import torch

from clients.benchmark import (PHRASE_128, engine_run, git_commit, percentile,  # noqa: F401
                               playback_underruns)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# Durations that make speech of a realistic length from random weights: ~7 frames per token
# (LJSpeech averages ~6-8). The 128-char phrase then gives 9.9 s of audio (its pauses
# included); the trained default voice says it in about 7 s.
BENCH_FRAMES_PER_TOKEN = 7.0


def environment(device: torch.device) -> dict[str, Any]:
    """What a result row must say about where it was measured."""
    try:
        import triton  # noqa: F401

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001 - triton is optional on CPU
        triton_version = "none"
    if device.type == "cuda":
        dev_name = torch.cuda.get_device_name(device)
    else:
        dev_name = f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
    commit = git_commit()
    return {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": commit or "unknown", "device": dev_name, "torch": torch.__version__,
            "triton": triton_version, "python": platform.python_version(),
            "cpu_count": os.cpu_count()}


def summarize(xs: Sequence[float]) -> dict[str, float]:
    """median, p5/p95-style spread (min, max, IQR) of a sample."""
    s = sorted(xs)
    q = statistics.quantiles(s, n=4) if len(s) >= 2 else [s[0]] * 3
    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "q1": q[0], "q3": q[2],
            "n": len(s)}


def write_rows(name: str, rows: list[dict[str, Any]]) -> Path:
    """Append rows to bench/results/<name>.csv (header written once)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.csv"
    fields = list(rows[0])
    new = not path.exists()
    if not new:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != fields:  # columns changed: start a fresh file beside the old one
            path.rename(path.with_suffix(f".{_dt.datetime.now():%Y%m%d%H%M%S}.csv"))
            new = True
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        if new:
            w.writeheader()
        w.writerows(rows)
    return path


def bench_fastpitch(preset: str = "nvidia"):
    """A FastPitch of the given preset with random weights and fixed realistic durations.

    Speed does not depend on weight values, only on shapes and lengths; durations are fixed
    so the mel (and so the vocoder's work) has a realistic length.
    """
    import math

    from engine.config import FASTPITCH_PRESETS
    from engine.models.fastpitch import FastPitch

    torch.manual_seed(0)
    fp = FastPitch(FASTPITCH_PRESETS[preset]).eval()
    with torch.no_grad():
        fp.duration_predictor.fc.weight.zero_()
        fp.duration_predictor.fc.bias.fill_(math.log1p(BENCH_FRAMES_PER_TOKEN))
    setup = {"sampling_rate": 22050, "hop_length": 256, "win_length": 1024,
             "max_wav_value": 32768.0, "p_arpabet": 1.0}
    return fp, setup


def bench_voice(preset: str, hifigan: str | None, device: torch.device):
    """A :class:`Voice` of :func:`bench_fastpitch` (random weights of ``preset``'s size) and
    the given HiFi-GAN (None: the default one), for timing without a trained voice."""
    from engine.models.voice import Voice
    from engine.models.weights import load_hifigan
    from engine.text import get_text_processor

    fp, setup = bench_fastpitch(preset)
    gen, hg_setup, den = load_hifigan(hifigan, device=device)
    return Voice(fp.to(device), gen, den, get_text_processor(), setup, hg_setup)


def timed_chunks(engine, source) -> tuple[list[float], list[float]]:
    """Stream ``source`` (text or deltas) through ``engine``: (arrival time of each chunk in s
    from the call, duration of each chunk in s)."""
    run = engine_run(engine, source)
    return run.arrivals, run.durations


# ---------------------------------------------------------------------------- memory

def rss_mb(pid: int | None = None) -> float | None:
    """Resident set size of ``pid`` (None: this process) in MB; None if unknown."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - process gone, no access
        return None
    try:
        with open(f"/proc/{pid or 'self'}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_parts_mb() -> dict[str, float | None]:
    """This process's RSS split (Linux): anonymous memory (heap, mmapped buffers, JIT code,
    stacks) and file-backed pages (shared libraries' code and data as it gets touched)."""
    parts: dict[str, float | None] = {"rss_anon_mb": None, "rss_file_mb": None}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                key = {"RssAnon": "rss_anon_mb", "RssFile": "rss_file_mb"}.get(name)
                if key:
                    parts[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return parts
