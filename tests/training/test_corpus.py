"""Corpus features: pitch estimator, trimming, per-token averages, and a real (hibari) build."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from engine.audio import mel_spectrogram
from engine.training.corpus import (FeatureConfig, build_corpus, extract_features,
                                    load_manifest, load_utterance, read_transcripts,
                                    trim_silence)
from engine.training.pitch import average_per_token, estimate_pitch, voiced_stats

SR = 22050
HAVE_HIBARI = importlib.util.find_spec("hibari") is not None


def tone(f0: float, seconds: float = 1.0, harmonics: int = 5, sr: int = SR) -> torch.Tensor:
    """A harmonic tone (speech-like: several partials with falling amplitude)."""
    t = torch.arange(int(seconds * sr)) / sr
    x = sum((0.5 / h) * torch.sin(2 * math.pi * f0 * h * t + h) for h in range(1, harmonics + 1))
    return (0.5 * x / x.abs().max()).float()


@pytest.mark.parametrize("f0", [85.0, 140.0, 203.1, 330.0, 610.0])
def test_pitch_of_tones(f0):
    p = estimate_pitch(tone(f0))
    assert p.shape == (1 + SR // 256,)
    inner = p[5:-5]
    assert (inner > 0).float().mean() > 0.97  # voiced
    assert torch.allclose(inner[inner > 0], torch.full_like(inner[inner > 0], f0), rtol=0.01)


def test_pitch_glide_is_tracked():
    # A glide 150 -> 300 Hz: the estimate follows the instantaneous frequency within 2 %.
    sr, secs = SR, 1.5
    t = torch.arange(int(sr * secs)) / sr
    f = 150 + 150 * t / secs
    phase = 2 * math.pi * torch.cumsum(f, 0) / sr
    x = 0.4 * torch.sin(phase) + 0.2 * torch.sin(2 * phase)
    p = estimate_pitch(x)
    frames = torch.arange(p.numel()) * 256 / sr
    truth = 150 + 150 * frames / secs
    sel = slice(5, -5)
    assert ((p[sel] / truth[sel] - 1).abs() < 0.02).float().mean() > 0.95


def test_noise_and_silence_are_unvoiced():
    g = torch.Generator().manual_seed(0)
    noise = 0.3 * torch.randn(SR, generator=g)
    assert (estimate_pitch(noise) > 0).float().mean() < 0.05
    assert (estimate_pitch(torch.zeros(SR)) == 0).all()
    # Tone then near-silence: the quiet half is unvoiced (silence gate), the tone voiced.
    x = torch.cat([tone(200.0, 0.5), 1e-4 * tone(200.0, 0.5)])
    p = estimate_pitch(x)
    half = p.numel() // 2
    assert (p[3:half - 3] > 0).all()
    assert (p[half + 3:] == 0).all()


def test_pitch_batched_equals_single():
    a, b = tone(150.0, 0.6), tone(260.0, 0.6)
    both = estimate_pitch(torch.stack([a, b]))
    assert torch.equal(both[0], estimate_pitch(a))
    assert torch.equal(both[1], estimate_pitch(b))


def test_pitch_rejects_bad_input():
    with pytest.raises(ValueError):
        estimate_pitch(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError):
        estimate_pitch(torch.zeros(100), fmin=500, fmax=100)


def test_voiced_stats_and_token_average():
    p = torch.tensor([0.0, 100.0, 200.0, 0.0, 300.0])
    n, s, ss = voiced_stats(p)
    assert (n, s, ss) == (3, 600.0, 100.0 ** 2 + 200.0 ** 2 + 300.0 ** 2)
    dense = torch.tensor([[0.0, 100.0, 200.0, 0.0, 0.0, 300.0]])
    durs = torch.tensor([[3, 2, 1, 0]])
    avg = average_per_token(dense, durs)
    assert torch.allclose(avg, torch.tensor([[150.0, 0.0, 300.0, 0.0]]))
    avg_all = average_per_token(dense, durs, voiced_only=False)
    assert torch.allclose(avg_all, torch.tensor([[100.0, 0.0, 300.0, 0.0]]))


def test_features_and_trim():
    x = torch.cat([torch.zeros(SR), tone(180.0, 0.8), torch.zeros(SR)])
    y = trim_silence(x)
    cfg = FeatureConfig()
    margin = cfg.trim_margin_frames * 256
    # Leading/trailing seconds of silence are cut to a few frames around the tone.
    assert int(0.8 * SR) <= y.numel() <= int(0.8 * SR) + 2 * margin + 4 * 256
    f = extract_features(y)
    T = 1 + y.numel() // 256
    assert f["mel"].shape == (80, T) and f["pitch"].shape == (T,) and f["energy"].shape == (T,)
    assert torch.equal(f["mel"], mel_spectrogram(y[None])[0])  # the one mel implementation
    assert torch.allclose(f["energy"], f["mel"].exp().norm(dim=0))
    voiced = f["pitch"][f["pitch"] > 0]
    assert voiced.numel() > 0.8 * (0.8 * SR / 256)
    assert torch.allclose(voiced, torch.full_like(voiced, 180.0), rtol=0.01)


def test_transcripts_are_shipped():
    for split, n in (("train", 12496), ("val", 100), ("test", 500)):
        items = read_transcripts(split)
        assert len(items) == n and all(uid.startswith("LJ") and text for uid, text in items)
    with pytest.raises(ValueError):
        read_transcripts("dev")


def test_build_refuses_a_corpus_with_other_settings(tmp_path):
    from engine.training.corpus import write_manifest

    write_manifest(tmp_path, [], FeatureConfig(pitch_threshold=0.1))
    with pytest.raises(ValueError, match="other feature settings"):
        build_corpus(tmp_path, ["val"], limit=1, jobs=1, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["format"] = 1  # an older corpus (energy was the mean magnitude then)
    write_manifest(tmp_path, [], FeatureConfig())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "features":
                                                        FeatureConfig().to_dict()}))
    with pytest.raises(ValueError, match="other feature settings"):
        build_corpus(tmp_path, ["val"], limit=1, jobs=1, progress=False)


@pytest.mark.skipif(not HAVE_HIBARI, reason="needs the train extra (hibari-tts)")
def test_pitch_agrees_with_the_teachers_own_f0():
    """hibari synthesizes from an F0 track; our estimate on its audio must match it where the
    teacher's harmonic part dominates (voicing errors < 15 %, gross errors < 2 %)."""
    from hibari import Hibari, dsp

    from engine.pcm import resample

    tts = Hibari()
    text = "Printing, in the only sense with which we are at present concerned, differs."
    rng = np.random.default_rng(0)
    audio, ref = [], []
    for ps in tts.phonemize(text):
        out = tts.sess.run(None, {"ids": np.asarray([tts.ids(ps)], np.int64),
                                  "speed": np.asarray([1.0], np.float32)})
        lh, th, ln, lr, phi, f0 = (o[0] for o in out)
        audio.append(dsp.synth(lh, th, ln, lr, phi, f0, rng))
        harm = np.exp(2 * np.minimum(lh, 7)).sum(0)
        other = np.exp(2 * np.minimum(ln, 7)).sum(0) + np.exp(2 * np.minimum(lr, 7)).sum(0)
        ref.append(np.where((harm > other) & (harm > harm.max() * 1e-4), f0, 0.0))
    x = torch.from_numpy(resample(np.concatenate(audio), 24000, SR))
    est = estimate_pitch(x, threshold=FeatureConfig().pitch_threshold).numpy()
    f0 = np.concatenate(ref)
    t = np.arange(est.size) * 256 / SR
    tk = (np.arange(f0.size) * 300 + 149.5) / 24000  # hibari: 300-sample hop at 24 kHz
    ref_f0 = np.interp(t, tk, f0)
    ref_v = np.interp(t, tk, (f0 > 0).astype(float)) > 0.99
    est_v = est > 0
    both = ref_v & est_v
    assert both.sum() > 100
    assert (ref_v != est_v).mean() < 0.15
    assert (np.abs(est[both] / ref_f0[both] - 1) > 0.2).mean() < 0.02


@pytest.mark.skipif(not HAVE_HIBARI, reason="needs the train extra (hibari-tts)")
def test_build_small_corpus_and_resume(tmp_path):
    from engine.text import TextProcessor

    out = tmp_path / "corpus"
    m = build_corpus(out, ["train", "val"], limit=2, jobs=1, progress=False)
    assert m["build"]["made"] == 4 and not m["build"]["failed"]
    assert [len(m["splits"][s]) for s in ("train", "val", "test")] == [2, 2, 0]
    assert 150 < m["pitch_mean"] < 260 and 10 < m["pitch_std"] < 80
    uid = m["splits"]["train"][0]
    item = load_utterance(out, uid)
    text = dict(read_transcripts("train"))[uid]
    assert item["text"] == text
    assert item["ids"].tolist() == TextProcessor(p_arpabet=1.0).encode_text(text)
    T = item["mel"].size(1)
    assert item["mel"].shape == (80, T) and item["mel"].dtype == torch.float16
    assert item["pitch"].shape == (T,) and item["energy"].shape == (T,)
    assert m["utterances"][uid]["n_frames"] == T
    assert (item["pitch"] > 0).float().mean() > 0.2

    # Resume: lose the journal and one file; only that utterance is made again.
    (out / "index.jsonl").unlink()
    (out / "utt" / f"{uid}.pt").unlink()
    m2 = build_corpus(out, ["train", "val"], limit=2, jobs=1, progress=False)
    assert m2["build"]["made"] == 1
    assert m2["splits"] == m["splits"]
    assert json.loads((out / "manifest.json").read_text())["pitch_mean"] == \
        pytest.approx(m["pitch_mean"], rel=1e-6)
    assert load_manifest(out)["utterances"] == m["utterances"]
    assert not list((out / "utt").glob(".*.tmp"))
