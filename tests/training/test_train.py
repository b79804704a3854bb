"""Training pieces: prior, aligner scores, forward-sum loss, MAS, a few steps on a synthetic
corpus, checkpoints that the engine loads, resume, shards, scripts/gpu_train.sh."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import FASTPITCH_PRESETS
from engine.models.fastpitch import ConvAttention, FastPitch
from engine.models.weights import load_fastpitch
from engine.training.aligner import (aligner_scores, beta_binomial_prior, forward_sum_loss,
                                     monotonic_alignment_search)
from engine.training.corpus import FeatureConfig, save_utterance, write_manifest
from engine.training.optim import Lamb, bin_loss_weight, learning_rate
from engine.training.shards import shard_file, unshard_file
from engine.training.trainer import FP32_BUFFERS, LAST_NAME, SHIPPING_NAME, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY_HIFIGAN = ROOT / "tests" / "data" / "tiny_hifigan.pt"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: one torch thread (several threads that wait for each other are slow on
    a busy machine); the setting is restored for the other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------
# Alignment pieces
# --------------------------------------------------------------------------------------


def brute_force_alignment(logp: np.ndarray) -> tuple[float, list[int]]:
    """Best monotonic path by enumeration: token of frame 0 is 0, of the last frame N-1,
    each frame advances by 0 or 1 token."""
    M, N = logp.shape
    best = (-math.inf, [])
    for steps in itertools.product((0, 1), repeat=M - 1):
        if sum(steps) != N - 1:
            continue
        path = [0] + list(np.cumsum(steps))
        score = sum(logp[i, j] for i, j in enumerate(path))
        if score > best[0]:
            best = (score, path)
    return best


def test_mas_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    lens = [(7, 3), (9, 4), (6, 6), (8, 1), (10, 5)]  # (frames, tokens) per row
    M, N = max(m for m, _ in lens), max(n for _, n in lens)
    logp = torch.log_softmax(torch.randn(len(lens), M, N, generator=g) * 2, dim=2)
    mel_lens = torch.tensor([m for m, _ in lens])
    text_lens = torch.tensor([n for _, n in lens])
    hard = monotonic_alignment_search(logp, text_lens, mel_lens)
    for b, (m, n) in enumerate(lens):
        score, path = brute_force_alignment(logp[b, :m, :n].numpy())
        got = hard[b, :m, :n]
        assert torch.equal(got.sum(1), torch.ones(m))  # one token per frame
        assert got.argmax(1).tolist() == path
        assert float((got * logp[b, :m, :n]).sum()) == pytest.approx(score, abs=1e-4)
        assert hard[b, m:].sum() == 0 and hard[b, :, n:].sum() == 0  # nothing on padding
        durs = got.sum(0)
        assert (durs >= 1).all() and durs.sum() == m


def test_mas_needs_enough_frames():
    with pytest.raises(ValueError):
        monotonic_alignment_search(torch.zeros(1, 3, 4), torch.tensor([4]), torch.tensor([3]))


def test_beta_binomial_prior_shape():
    text_lens, mel_lens = torch.tensor([5, 3, 1]), torch.tensor([20, 9, 4])
    prior = beta_binomial_prior(text_lens, mel_lens)
    assert prior.shape == (3, 20, 5)
    for b in range(3):
        n, m = int(text_lens[b]), int(mel_lens[b])
        p = prior[b, :m, :n]
        assert torch.allclose(p.sum(1), torch.ones(m), atol=1e-5)  # a pmf per frame
        assert prior[b, m:].sum() == 0 and prior[b, :, n:].sum() == 0
        peak = p.argmax(1)
        assert peak[0] == 0 and peak[-1] == n - 1  # starts and ends at the corners
        assert (peak[1:] >= peak[:-1]).all()  # monotonic: the diagonal
    # Against the textbook pmf C(n,k) B(k+a, n-k+b) / B(a,b), in Python floats.
    def betabinom(k: int, n: int, a: float, b: float) -> float:
        lb = lambda x, y: math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)  # noqa: E731
        return math.comb(n, k) * math.exp(lb(k + a, n - k + b) - lb(a, b))

    n, m = 5, 20
    for i in (1, 7, 20):
        ref = [betabinom(k, n - 1, i, m - i + 1) for k in range(n)]
        assert np.allclose(prior[0, i - 1].numpy(), ref, atol=1e-6)


def test_aligner_scores_equal_conv_attention():
    torch.manual_seed(0)
    att = ConvAttention(80, 32)
    mel, keys = torch.randn(2, 80, 30), torch.randn(2, 32, 9)
    prior = beta_binomial_prior(torch.tensor([9, 9]), torch.tensor([30, 30]))
    soft_ref, logprob_ref = att(mel, keys, attn_prior=prior)
    log_attn, logprob, raw = aligner_scores(att, mel, keys, torch.ones(2, 9, dtype=torch.bool),
                                            prior)
    assert torch.allclose(logprob, logprob_ref[:, 0], atol=1e-4)
    assert torch.allclose(log_attn.exp(), soft_ref[:, 0], atol=1e-5)
    soft_noprior, _ = att(mel, keys)
    assert torch.allclose(raw, soft_noprior[:, 0], atol=1e-5)


def test_forward_sum_loss_prefers_the_diagonal_and_masks_padding():
    M, N = 12, 4
    diag = torch.full((1, M, N), -8.0)
    for i in range(M):
        diag[0, i, i * N // M] = 0.0
    anti = diag.flip(2)
    lens = (torch.tensor([N]), torch.tensor([M]))
    assert forward_sum_loss(diag, *lens) < 0.5 * forward_sum_loss(anti, *lens)
    # Padded keys and frames: same loss as the unpadded row, finite gradients.
    padded = torch.full((1, M + 5, N + 3), -1e4)
    padded[0, :M, :N] = diag[0]
    padded.requires_grad_(True)
    loss = forward_sum_loss(padded, *lens)
    assert loss.item() == pytest.approx(forward_sum_loss(diag, *lens).item(), abs=1e-5)
    loss.backward()
    assert torch.isfinite(padded.grad).all()


def test_schedules():
    lrs = [learning_rate(1e-2, s, s, 100, 100) for s in range(400)]
    assert lrs[0] == pytest.approx(1e-4) and max(lrs) == pytest.approx(1e-2)
    assert lrs[99] == pytest.approx(1e-2) and lrs[399] == pytest.approx(1e-2 * 0.5)
    # Resumed at global step 400 with a fresh warmup of 10 steps.
    assert learning_rate(1e-2, 400, 0, 100, 10) == pytest.approx(1e-3 * math.sqrt(100 / 401))
    assert [bin_loss_weight(s, 10, 4) for s in (0, 9, 10, 12, 13, 50)] == [0, 0, .25, .75, 1, 1]


def test_lamb_reduces_a_quadratic():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(10) + 3)
    start = float((w - 1).norm().detach())
    opt = Lamb([w], lr=0.05)
    for k in range(300):
        opt.param_groups[0]["lr"] = 0.05 * 0.98 ** k
        opt.zero_grad()
        (w - 1).square().sum().backward()
        opt.step()
    assert float((w - 1).norm().detach()) < 0.05 * start


# --------------------------------------------------------------------------------------
# A synthetic corpus: each token has its own mel pattern and pitch, durations 2-5 frames
# --------------------------------------------------------------------------------------


def make_synthetic_corpus(out: Path, n_train: int = 24, n_val: int = 4, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    vocab = torch.arange(38, 64)  # letters a-z
    patterns = -6 + 2 * torch.randn(64, 80, generator=g)  # a log-mel frame per token id
    records = []
    for k in range(n_train + n_val):
        ids = vocab[torch.randint(len(vocab), (int(torch.randint(6, 12, (1,), generator=g)),),
                                  generator=g)]
        durs = torch.randint(2, 6, ids.shape, generator=g)
        frames = torch.repeat_interleave(ids, durs)
        mel = patterns[frames].T + 0.1 * torch.randn(80, frames.numel(), generator=g)
        pitch = torch.where(frames % 3 == 0, torch.zeros(frames.shape), 150.0 + 4 * frames)
        feats = {"mel": mel, "pitch": pitch, "energy": mel.exp().norm(dim=0)}
        split = "train" if k < n_train else "val"
        records.append(save_utterance(out, f"S{k:03d}", split, "synthetic", ids.tolist(), feats,
                                      frames.numel() * 256 / 22050))
    write_manifest(out, records, FeatureConfig())
    return out


def train_cfg(corpus: Path, out: Path, **kw) -> TrainConfig:
    base = dict(corpus=str(corpus), out=str(out), preset="tiny", batch_size=8, lr=3e-3,
                warmup=5, log_every=1, val_every=0, save_every=0, samples=0, device="cpu",
                bin_start=10, bin_warmup=10, seed=0, threads=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """40 steps on the synthetic corpus (tiny preset): (corpus dir, run dir, log records)."""
    root = tmp_path_factory.mktemp("train")
    corpus = make_synthetic_corpus(root / "corpus")
    torch.manual_seed(0)
    result = Trainer(train_cfg(corpus, root / "run", steps=40)).run()
    records = [json.loads(line) for line in (root / "run" / "train_log.jsonl").open()]
    return corpus, root / "run", records, result


def test_training_losses_fall(trained):
    _, run, records, result = trained
    steps = [r for r in records if r["kind"] == "train"]
    assert len(steps) >= 40 and result["step"] == 40
    for r in steps:  # the total without the scheduled binarization term
        r["loss_no_bin"] = r["loss"] - r["bin_weight"] * r["bin"]
    keys = ("loss_no_bin", "mel", "dur", "pitch", "energy", "attn")
    for r in steps:
        assert all(math.isfinite(r[k]) for k in keys + ("loss", "bin", "grad_norm"))
    first, last = steps[:5], steps[-5:]
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    for k in keys:
        assert mean(last, k) < mean(first, k), k
    assert steps[-1]["bin_weight"] == 1.0  # the binarization term was switched on
    assert "val" in result and math.isfinite(result["val"]["loss"])


def test_checkpoints_load_in_the_engine(trained):
    corpus, run, _, _ = trained
    from engine import Engine

    ship = run / SHIPPING_NAME
    model, setup = load_fastpitch(ship)
    assert setup["sampling_rate"] == 22050 and setup["hop_length"] == 256
    assert setup["win_length"] == 1024 and setup["filter_length"] == 1024
    assert setup["mel_fmin"] == 0.0 and setup["mel_fmax"] == 8000.0
    assert setup["max_wav_value"] == 32768.0 and setup["symbol_set"] == "english_basic"
    assert setup["text_cleaners"] == ["english_cleaners_v2"] and setup["p_arpabet"] == 1.0
    assert setup["prepend_space_to_text"] is False and setup["append_space_to_text"] is False
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert float(model.pitch_mean[0]) == pytest.approx(manifest["pitch_mean"], rel=1e-6)
    assert float(model.pitch_std[0]) == pytest.approx(manifest["pitch_std"], rel=1e-6)
    assert setup["pitch_mean"] == pytest.approx(manifest["pitch_mean"], rel=1e-6)

    raw = torch.load(ship, map_location="cpu", weights_only=True)
    for k, v in raw["state_dict"].items():
        want = torch.float32 if k in FP32_BUFFERS else torch.float16
        assert v.dtype == want, k
    assert any(k.startswith("attention.") for k in raw["state_dict"])
    full, _ = load_fastpitch(run / LAST_NAME)
    for (k, a), b in zip(full.state_dict().items(), model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-2 * (1 + a.abs().max())), k

    engine = Engine.load(fastpitch=str(ship), hifigan=str(TINY_HIFIGAN))
    try:
        chunk = engine.synthesize("Hello there.")
    finally:
        engine.close()
    assert chunk.sample_rate == 22050 and len(chunk.audio) > 256
    assert np.isfinite(np.asarray(chunk.audio)).all()


def test_resume_from_fp16_weights_and_from_full_checkpoint(trained, tmp_path):
    corpus, run, _, _ = trained
    # Weights only: fresh optimizer, short warmup, the global step continues.
    t = Trainer(train_cfg(corpus, tmp_path / "a", steps=2, resume=str(run / SHIPPING_NAME),
                          resume_warmup=3))
    assert t.step == 40 and t.local_warmup == 3 and not t.aligner_fresh
    assert not t.opt.state
    res = t.run()
    assert res["step"] == 42 and math.isfinite(res["loss"])
    # Full checkpoint: the optimizer state comes back too.
    t2 = Trainer(train_cfg(corpus, tmp_path / "b", steps=1, resume=str(run / LAST_NAME)))
    assert t2.step == 40 and t2.local_warmup == 0 and len(t2.opt.state) > 0
    # A voice saved without the aligner still resumes (the aligner restarts).
    model, setup = load_fastpitch(run / SHIPPING_NAME)
    from engine.models.weights import save_fastpitch

    save_fastpitch(model, tmp_path / "noalign.pt", setup, half=True, include_aligner=False)
    t3 = Trainer(train_cfg(corpus, tmp_path / "c", steps=1, resume=str(tmp_path / "noalign.pt"),
                           aligner_warmup=0))
    assert t3.aligner_fresh and t3.bin_offset == t3.step and not t3.aligner_pending


def test_aligner_warmup_trains_only_the_aligner(trained, tmp_path):
    """A voice shipped without its aligner resumes with the aligner trained alone first: its
    forward-sum loss falls, every other weight stays as shipped, binarization ramps in anew."""
    corpus, run, _, _ = trained
    model, setup = load_fastpitch(run / SHIPPING_NAME)
    from engine.models.weights import save_fastpitch

    save_fastpitch(model, tmp_path / "noalign.pt", setup, half=True, include_aligner=False)
    t = Trainer(train_cfg(corpus, tmp_path / "w", steps=1, resume=str(tmp_path / "noalign.pt"),
                          aligner_warmup=60, aligner_target=0.99, log_every=10))
    assert t.aligner_pending
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t._warm_aligner(lambda: False)
    after = t.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("attention.") for k in changed)
    records = [json.loads(line) for line in (tmp_path / "w" / "train_log.jsonl").open()]
    warm = [r for r in records if r["kind"] == "aligner"]
    assert [r["warmup_step"] for r in warm] == [10, 20, 30, 40, 50, 60]
    assert warm[-1]["attn"] < warm[0]["attn"] - 0.1
    assert warm[-1]["attn_max"] > warm[0]["attn_max"] + 0.1
    # binarization ramps in again from its first step
    assert bin_loss_weight(t.step - t.bin_offset, t.cfg.bin_start, t.cfg.bin_warmup) == \
        pytest.approx(1 / t.cfg.bin_warmup)
    assert not t.aligner_pending
    res = t.run()  # then trains on as usual
    assert res["step"] == t.step == 41 and math.isfinite(res["loss"])


def test_training_time_is_recorded_and_carried_over(trained, tmp_path):
    corpus, run, _, _ = trained
    model, setup = load_fastpitch(run / SHIPPING_NAME)
    assert setup["train_seconds"] > 0 and setup["cpu_seconds"] >= setup["train_seconds"]
    assert setup["train_hours"] == pytest.approx(setup["train_seconds"] / 3600, abs=1e-4)
    t = Trainer(train_cfg(corpus, tmp_path / "r", steps=2, resume=str(run / SHIPPING_NAME),
                          keep_voices=True, save_every=1))
    res = t.run()
    _, setup2 = load_fastpitch(tmp_path / "r" / SHIPPING_NAME)
    assert setup2["train_seconds"] > setup["train_seconds"]  # resumed, then added to
    kept = sorted(p.name for p in (tmp_path / "r" / "voices").glob("*.pt"))
    assert kept == [f"step{res['step'] - 1:06d}.pt", f"step{res['step']:06d}.pt"]


def test_amp_on_the_cpu(trained, tmp_path, monkeypatch, caplog):
    """--amp: bf16 autocast where the CPU has native bf16, fp32 with a clear reason where it
    has not (and for fp16, which the CPU path does not offer)."""
    import logging

    import engine.training.optim as optim_mod

    corpus, _, _, _ = trained
    cpu = torch.device("cpu")
    with caplog.at_level(logging.WARNING, logger="engine.training.optim"):
        assert not optim_mod.amp_supported(cpu, torch.float16)
    assert "bf16 only" in caplog.text
    monkeypatch.setattr(optim_mod, "cpu_has_bf16", lambda: False)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="engine.training"):
        t = Trainer(train_cfg(corpus, tmp_path / "fp32", steps=1, amp=True))
    assert "no native bf16" in caplog.text and "training path: fp32" in caplog.text
    with t.autocast():
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(optim_mod, "cpu_has_bf16", lambda: True)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="engine.training"):
        t = Trainer(train_cfg(corpus, tmp_path / "bf16", steps=3, amp=True))
    assert "training path: bfloat16 autocast on cpu" in caplog.text
    with t.autocast():
        assert torch.is_autocast_enabled("cpu")
    res = t.run()  # runs (emulated where the CPU lacks bf16) with finite losses
    assert res["step"] == 3 and math.isfinite(res["loss"]) and math.isfinite(res["mel"])


def test_small_preset_shipping_size(tmp_path):
    from engine.training.trainer import save_shipping, voice_train_setup

    model = FastPitch(FASTPITCH_PRESETS["small"])
    path = tmp_path / "small.pt"
    save_shipping(model, path, voice_train_setup(model))
    assert path.stat().st_size <= 25e6  # fp16 with the aligner
    index = shard_file(path, max_mib=16)
    assert all(p.stat().st_size <= 16 * 2 ** 20 for p in tmp_path.glob("small.pt.part*"))
    assert len(json.loads(index.read_text())["parts"]) == 2


def test_shard_round_trip(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 2_600_000, dtype=np.uint8).tobytes()
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    index = shard_file(src, max_mib=1, out_dir=tmp_path / "pieces")
    pieces = sorted((tmp_path / "pieces").glob("blob.bin.part*"))
    assert len(pieces) == 3 and all(p.stat().st_size <= 2 ** 20 for p in pieces)
    out = unshard_file(index, tmp_path / "joined.bin")
    assert out.read_bytes() == data
    # Exact multiple of the piece size, and the command-line form.
    exact = tmp_path / "exact.bin"
    exact.write_bytes(data[:2 * 2 ** 20])
    from engine.training.shards import main

    assert main(["shard", str(exact), "--max-mib", "1", "--name", "renamed.bin",
                 "--out", str(tmp_path / "p2")]) == 0
    idx2 = tmp_path / "p2" / "renamed.bin.shards.json"
    assert len(json.loads(idx2.read_text())["parts"]) == 2
    assert unshard_file(idx2).read_bytes() == data[:2 * 2 ** 20]
    proc = subprocess.run([sys.executable, "-m", "engine.training.shards", "unshard", str(idx2),
                           "--out", str(tmp_path / "cli.bin")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cli.bin").read_bytes() == data[:2 * 2 ** 20]
    # A damaged piece is refused.
    pieces[1].write_bytes(b"x" + pieces[1].read_bytes()[1:])
    with pytest.raises(ValueError, match="SHA-256"):
        unshard_file(index, tmp_path / "bad.bin")
    assert not (tmp_path / "bad.bin").exists()


def test_cli_train_reports_bad_corpus(tmp_path, capsys):
    from clients.cli import main

    assert main(["train", "--corpus", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
                 "--steps", "1", "--preset", "tiny"]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def _gpu_train(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/gpu_train.sh", *args], cwd=ROOT,
                          env={**os.environ, "PYTHON": sys.executable, **env},
                          capture_output=True, text=True, timeout=600)


def test_gpu_script_help_and_errors(tmp_path):
    """scripts/gpu_train.sh: --help, bad usage and a machine without CUDA, each a clear exit."""
    shown = _gpu_train("--help")
    assert shown.returncode == 0
    for word in ("--minutes N", "--corpus DIR", "--out DIR", "--resume CKPT", "--dry-run"):
        assert word in shown.stdout, word
    assert "run(" not in shown.stdout and "shared" not in shown.stdout
    for args, message in ((["--out", str(tmp_path)], "--minutes N is required"),
                          (["--minutes", "0"], "positive number"),
                          (["--minutes", "5", "--frobnicate"], "unknown argument")):
        proc = _gpu_train(*args)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    # No CUDA (hidden where there is one): one line, exit 2, nothing built or trained.
    proc = _gpu_train("--minutes", "1", "--corpus", str(tmp_path / "c"), "--out",
                      str(tmp_path / "o"), CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("gpu_train: no CUDA") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_gpu_script_dry_run(tmp_path):
    """scripts/gpu_train.sh rehearsed on the CPU: corpus built, 3 training steps, the voice."""
    pytest.importorskip("hibari")
    corpus, out = tmp_path / "corpus", tmp_path / "run"
    proc = _gpu_train("--dry-run", "--corpus", str(corpus), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (corpus / "manifest.json").exists() and (out / "train.log").exists()
    model, setup = load_fastpitch(out / SHIPPING_NAME)
    assert setup["iteration"] == 3


def test_time_carried_from_a_voice_that_records_only_hours(trained, tmp_path):
    """Voices shipped before the trainer counted seconds carry train_hours/cpu_hours only:
    a run resumed from one adds to those hours instead of starting from zero."""
    corpus, run, _, _ = trained
    ck = torch.load(run / SHIPPING_NAME, map_location="cpu", weights_only=True)
    setup = ck["train_setup"]
    for key in ("train_seconds", "cpu_seconds"):
        setup.pop(key, None)
    setup.update(train_hours=1.5, cpu_hours=3.0)
    old = tmp_path / "hours_only.pt"
    torch.save(ck, old)
    Trainer(train_cfg(corpus, tmp_path / "h", steps=1, resume=str(old))).run()
    _, setup2 = load_fastpitch(tmp_path / "h" / SHIPPING_NAME)
    assert setup2["train_seconds"] > 1.5 * 3600 and setup2["cpu_seconds"] > 3.0 * 3600
