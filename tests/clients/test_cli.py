"""fpstream speak: inputs, outputs, and clear errors for bad input (never a traceback)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from clients.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"
ROOT = Path(__file__).resolve().parents[2]
TINY_FP = str(DATA / "tiny_fastpitch.pt")
TINY_HG = str(DATA / "tiny_hifigan.pt")
TINY = ["--fastpitch", TINY_FP, "--hifigan", TINY_HG, "--device", "cpu"]


def speak(tmp_path, *args, stdin: str | None = None, monkeypatch=None):
    out = tmp_path / "out.wav"
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["speak", *args, "-o", str(out)])
    return code, out


def test_speak_writes_16bit_wav(tmp_path, capsys):
    code, out = speak(tmp_path, "Say this smoothly, to prove you are not a robot.", *TINY)
    assert code == 0
    audio, rate = sf.read(out, dtype="int16")
    info = sf.info(out)
    assert rate == 22050 and info.subtype == "PCM_16" and info.channels == 1
    assert len(audio) % 256 == 0 and len(audio) > 22050 * 0.5
    assert np.abs(audio).max() > 100  # not silence
    assert "wrote" in capsys.readouterr().err


def test_speak_default_vocoder_and_options(tmp_path):
    code, out = speak(tmp_path, "Hello there.", "--fastpitch", TINY_FP, "--pace", "1.5",
                      "--pitch-shift", "30", "--denoise")
    assert code == 0
    fast = sf.info(out).frames
    code, out = speak(tmp_path, "Hello there.", "--fastpitch", TINY_FP, "--pace", "0.75")
    assert code == 0 and sf.info(out).frames > fast * 1.5  # slower pace -> longer audio


def test_speak_from_file_stdin_and_plot(tmp_path, monkeypatch):
    txt = tmp_path / "t.txt"
    txt.write_text("First sentence. Second one! Third?", encoding="utf-8")
    png = tmp_path / "mel.png"
    code, out = speak(tmp_path, "-f", str(txt), "--plot-mel", str(png), *TINY)
    assert code == 0 and png.stat().st_size > 1000
    n_file = sf.info(out).frames
    code, out = speak(tmp_path, *TINY, stdin="First sentence. Second one! Third?",
                      monkeypatch=monkeypatch)
    assert code == 0 and sf.info(out).frames == n_file


@pytest.mark.parametrize("text", ["", "   \n\t ", "😀🎉👍"])
def test_nothing_speakable_is_a_clear_error(tmp_path, capsys, text):
    code, out = speak(tmp_path, text, *TINY)
    err = capsys.readouterr().err
    assert code == 2 and "nothing speakable" in err and not out.exists()


@pytest.mark.parametrize("text", [
    "Hello\x00 there\x07, world\x1b[31m!",   # control characters
    "Hello 😀 world 🎉, nice.",              # emoji inside a sentence
    "مرحبا بالعالم. Hello. שלום עולם",        # right-to-left scripts
])
def test_odd_characters_still_speak(tmp_path, text):
    code, out = speak(tmp_path, text, *TINY)
    assert code == 0 and sf.info(out).frames > 0


def test_ten_thousand_characters(tmp_path):
    base = "The quick brown fox jumps over the lazy dog, again and again. "
    text = (base * (10_000 // len(base) + 1))[:10_000]
    code, out = speak(tmp_path, text, *TINY, "--no-progress")
    assert code == 0
    assert sf.info(out).duration > 100  # ~160 sentences, all spoken


def test_bad_checkpoints_are_clear_errors(tmp_path, capsys):
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(Path(TINY_FP).read_bytes()[:10_000])
    code, _ = speak(tmp_path, "Hi.", "--fastpitch", str(trunc), "--hifigan", TINY_HG)
    assert code == 2 and "trunc.pt" in capsys.readouterr().err
    code, _ = speak(tmp_path, "Hi.", "--fastpitch", TINY_FP, "--hifigan", TINY_FP)
    assert code == 2 and "FastPitch checkpoint, but a HiFi-GAN" in capsys.readouterr().err


def test_mismatched_sampling_rates(tmp_path, capsys):
    ck = torch.load(TINY_HG, weights_only=True)
    ck["train_setup"]["sampling_rate"] = 24000
    p = tmp_path / "hifigan_24k.pt"
    torch.save(ck, p)
    code, _ = speak(tmp_path, "Hi.", "--fastpitch", TINY_FP, "--hifigan", str(p))
    err = capsys.readouterr().err
    assert code == 2 and "sampling_rate: 22050" in err and "24000" in err


@pytest.mark.parametrize("args,msg", [
    (["--pace", "0"], "pace"), (["--pace", "nan"], "pace"), (["--denoise", "5"], "denoise"),
    (["--speaker", "-1"], "speaker"), (["--device", "cuda"], "CUDA"), (["--dtype", "fp16"], "CUDA"),
])
def test_bad_options(tmp_path, capsys, args, msg):
    if msg == "CUDA" and torch.cuda.is_available():
        pytest.skip("CUDA present")
    code, _ = speak(tmp_path, "Hi.", *TINY, *args)
    assert code == 2 and msg in capsys.readouterr().err


def test_console_script_runs_as_a_module(tmp_path):
    out = tmp_path / "m.wav"
    r = subprocess.run([sys.executable, "-m", "clients.cli", "speak", "Testing one two.",
                        "-o", str(out), *TINY], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and out.exists()
