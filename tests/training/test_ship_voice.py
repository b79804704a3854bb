"""Shipping a voice (scripts/ship_voice.py) and the WER curve (bench.voice_curve), on a tiny
random voice and a made-up results CSV."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from engine.config import FASTPITCH_PRESETS
from engine.models.fastpitch import FastPitch
from engine.models.weights import load_fastpitch
from engine.training.trainer import FP32_BUFFERS, save_shipping, voice_train_setup

ROOT = Path(__file__).resolve().parents[2]


def _load_script():
    spec = importlib.util.spec_from_file_location("ship_voice", ROOT / "scripts" / "ship_voice.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(tmp_path: Path, step: int = 120) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = FastPitch(FASTPITCH_PRESETS["tiny"])
    setup = voice_train_setup(model, iteration=step,
                              training={"preset": "tiny", "batch_size": 16, "lr": 5e-3,
                                        "optimizer": "lamb", "amp": True,
                                        "corpus": str(tmp_path / "my" / "corpus")},
                              corpus={"teacher": "hibari-tts 0.2.1", "train_utterances": 9,
                                      "hours": 0.01})
    voice = tmp_path / "fastpitch_fp16.pt"
    save_shipping(model, voice, setup, iteration=step)
    log = tmp_path / "train_log.jsonl"
    recs = [{"kind": "train", "step": s, "step_s": 2.0, "loss": 3.0 - s / 100, "mel": 0.5,
             "dur": 0.1, "pitch": 0.2, "energy": 0.01, "attn": 1.5, "attn_max": 0.6}
            for s in (1, 25, 50, 75, 100, 125)]
    recs.append({"kind": "val", "step": 100, "loss": 2.5, "mel": 0.6, "dur": 0.2, "pitch": 0.3,
                 "energy": 0.02, "attn": 1.6, "attn_max": 0.55})
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return voice, log


def test_ship_strips_the_aligner_and_records_time(tmp_path, monkeypatch):
    ship = _load_script()
    voice, log = _run(tmp_path)
    results = tmp_path / "intelligibility.csv"
    monkeypatch.setattr(ship, "RESULTS", results)
    out = tmp_path / "voices" / "default.pt"
    assert ship.main(["--voice", str(voice), "--log", str(log), "--out", str(out)]) == 0
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert not any(k.startswith("attention.") for k in raw["state_dict"])
    for k, v in raw["state_dict"].items():
        if v.is_floating_point():
            assert v.dtype == (torch.float32 if k in FP32_BUFFERS else torch.float16), k
    setup = raw["train_setup"]
    assert setup["training"]["corpus"] == "corpus"  # no machine paths in a shipped voice
    # steps 1..100 of the log (the voice is at 120; the record at 125 is later): 100 steps x 2 s
    assert setup["train_seconds"] == pytest.approx(200.0)
    assert setup["cpu_hours"] == pytest.approx(2 * 200 / 3600, abs=1e-4)
    assert setup["last_train"]["loss"] == pytest.approx(2.0)
    assert setup["last_val"]["attn_max"] == pytest.approx(0.55)
    model, _ = load_fastpitch(out)  # the engine loads it
    assert isinstance(model, FastPitch)
    card = out.with_suffix(".md").read_text()
    assert "120 steps" in card and "Not measured yet" in card and "hibari-tts 0.2.1" in card

    # Bench rows for this step (and the teacher's on the same sentences) go into the card.
    fields = ["list", "sentences", "system", "voice", "step", "wer", "sig", "bak", "ovrl",
              "audio_s", "audio_vs_teacher"]
    rows = [dict(zip(fields, r)) for r in (
        ("assistant", "30", "student", "default", "120", "9.5", "3.1", "3.9", "2.8", "99", "0.9"),
        ("assistant", "30", "student", "default", "60", "50.0", "", "", "", "90", ""),
        ("assistant", "30", "teacher", "", "", "0.93", "3.5", "4.1", "3.3", "116", "1.0"),
        ("ljspeech-test", "100", "teacher", "", "", "2.9", "", "", "", "600", "1.0"))]
    with open(results, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    assert ship.main(["--card-only", "--out", str(out)]) == 0
    card = out.with_suffix(".md").read_text()
    assert "| assistant | student | 30 | 9.5 |" in card
    assert "| assistant | teacher | 30 | 0.93 |" in card
    assert "50.0" not in card and "ljspeech-test" not in card  # other steps, unmatched lists


def test_ship_refuses_an_oversized_voice(tmp_path, monkeypatch):
    ship = _load_script()
    voice, log = _run(tmp_path)
    monkeypatch.setattr(ship, "MAX_MB", 0.01)
    out = tmp_path / "default.pt"
    with pytest.raises(SystemExit, match="over the"):
        ship.ship(voice, log, out)
    assert not out.exists() and not list(tmp_path.glob(".default.pt*"))


def test_voice_curve_table_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from bench import voice_curve

    fields = ["list", "sentences", "system", "voice", "step", "train_hours", "cpu_hours", "wer",
              "ovrl"]
    rows = [("assistant", "30", "student", "default", "1000", "0.4", "0.8", "12.0", ""),
            ("assistant", "30", "student", "default", "2000", "0.8", "1.6", "4.0", "3.0"),
            ("assistant", "10", "student", "default", "2000", "0.8", "1.6", "7.0", ""),
            ("assistant", "30", "student", "other", "2000", "0.8", "1.6", "99.0", ""),
            ("assistant", "30", "teacher", "", "", "", "", "0.93", "3.3")]
    path = tmp_path / "r.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        w.writerows(rows)
    curves, teacher = voice_curve.load_curve(path, "default")
    assert [r["wer"] for r in curves["assistant (30)"]] == ["12.0", "4.0"]
    assert [r["wer"] for r in curves["assistant (10)"]] == ["7.0"]
    assert teacher == {"assistant (30)": 0.93}
    png = tmp_path / "c.png"
    assert voice_curve.main(["--csv", str(path), "--png", str(png)]) == 0
    assert png.stat().st_size > 5000
    out = capsys.readouterr().out
    assert "assistant (30)" in out and "99.0" not in out
    with pytest.raises(SystemExit):
        voice_curve.main(["--csv", str(path), "--label", "nobody", "--png", str(png)])
