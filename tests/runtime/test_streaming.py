"""Streaming engine: streamed audio equals offline audio, seams are clean, cancel and
backpressure work, batching does not change a request's audio."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import AudioChunk, ChunkPolicy, Engine, EngineConfig
from engine.runtime.windows import WindowPlanner

DATA = Path(__file__).resolve().parents[1] / "data"
TINY_FP = DATA / "tiny_fastpitch.pt"
TINY_HG = DATA / "tiny_hifigan.pt"

# 21 sentences with numbers, abbreviations, questions, clauses (also used by bench.fidelity).
SENTENCES = (DATA / "sentences.txt").read_text().splitlines()


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    noise = np.sum((ref.astype(np.float64) - test) ** 2)
    return float("inf") if noise == 0 else 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / noise)


@pytest.fixture(scope="module")
def engine():
    eng = Engine.load(fastpitch=TINY_FP, hifigan=TINY_HG, device="cpu")
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def mels(engine):
    return [engine.synthesize(s, keep_mel=True).mel for s in SENTENCES]


@pytest.mark.parametrize("sizes", [(12, 24, 48, 96, 192), (8,), (16, 32), (64, 128)],
                         ids=lambda s: "x".join(map(str, s)))
def test_streamed_vocoding_equals_offline(engine, mels, sizes):
    worst_snr, n = float("inf"), 0
    for mel in mels:
        offline = engine.vocode(mel, streaming=False)
        streamed = engine.vocode(mel, streaming=True, window_sizes=sizes)
        assert streamed.shape == offline.shape
        worst_snr = min(worst_snr, snr_db(offline, streamed))
        n += 1
    assert n >= 20
    assert worst_snr >= 60.0, f"worst SNR {worst_snr:.1f} dB"


def _seam_and_inner_jumps(audio: np.ndarray, seams: list[int]) -> tuple[float, float]:
    d = np.abs(np.diff(audio.astype(np.float64)))  # d[i] = |x[i+1] - x[i]|
    seam_idx = [s - 1 for s in seams if 0 < s < len(audio)]
    mask = np.ones_like(d, dtype=bool)
    mask[seam_idx] = False
    return float(d[seam_idx].max()) if seam_idx else 0.0, float(d[mask].max())


def test_seams_are_no_larger_than_jumps_inside_chunks(engine):
    for text in SENTENCES[:8]:
        chunks = list(engine.stream(text))
        audio = np.concatenate([c.audio for c in chunks])
        seams = [c.offset for c in chunks[1:]]
        seam, inner = _seam_and_inner_jumps(audio, seams)
        assert seam <= inner, (text, seam, inner)


def test_stream_equals_synthesize_and_offline_vocoding(engine):
    text = " ".join(SENTENCES[:4])
    chunks = list(engine.stream(text))
    assert all(isinstance(c, AudioChunk) and c.audio.dtype == np.float32 for c in chunks)
    assert chunks[-1].final and not any(c.final for c in chunks[:-1])
    offsets = np.cumsum([0] + [len(c.audio) for c in chunks[:-1]])
    assert [c.offset for c in chunks] == offsets.tolist()  # contiguous, nothing lost
    streamed = np.concatenate([c.audio for c in chunks])
    whole = engine.synthesize(text, keep_mel=True)
    # Same chunks and the same exact windows; window sizes adapt to load, which moves seams
    # and so float rounding, hence a tolerance far below audibility rather than equality.
    np.testing.assert_allclose(streamed, whole.audio, atol=1e-5)
    offline = engine.vocode(whole.mel, streaming=False)
    assert snr_db(offline, streamed) >= 60.0


def test_text_spans_and_word_timings(engine):
    text = "First sentence here. Then a second one! And a third?"
    chunks = list(engine.stream(text))
    spans = [c.text_span for c in chunks if c.text_span]
    assert "".join(text[a:b] for a, b in spans).replace(" ", "") == text.replace(" ", "")
    words = [w for c in chunks for w in c.words]
    assert [w.word for w in words] == ["first", "sentence", "here.", "then", "a", "second",
                                       "one!", "and", "a", "third?"]
    total = sum(len(c.audio) for c in chunks) / chunks[0].sample_rate
    starts = [w.start for w in words]
    assert starts == sorted(starts) and all(0 <= w.start < w.end <= total for w in words)
    for c in chunks:  # each word is reported in the chunk where it starts
        for w in c.words:
            assert c.start_time <= w.start + 1e-6


def test_options_change_audio_and_are_validated(engine):
    base = engine.synthesize("Hello there friend.")
    slow = engine.synthesize("Hello there friend.", pace=0.5)
    assert slow.duration > 1.6 * base.duration
    shifted = engine.synthesize("Hello there friend.", pitch_shift=40.0, denoise=0.01)
    assert shifted.duration == base.duration and not np.allclose(shifted.audio, base.audio)
    with pytest.raises(ValueError, match="unknown option"):
        engine.stream("Hi.", speed=2)
    with pytest.raises(ValueError, match="pace"):
        engine.stream("Hi.", pace=0)
    with pytest.raises(ValueError, match="str"):
        engine.stream(12345)
    with pytest.raises(ValueError, match="nothing speakable"):
        list(engine.stream("🎉🎉"))


def test_streamed_deltas_equal_whole_text():
    policy = ChunkPolicy(first_min_words=10**6, first_force_words=10**6,
                         first_max_wait_s=float("inf"))
    with Engine.load(fastpitch=TINY_FP, hifigan=TINY_HG,
                     config=EngineConfig(policy=policy)) as eng:
        text = "Hello there, my friend. This arrives token by token! Does it work?"
        deltas = [text[i:i + 3] for i in range(0, len(text), 3)]
        streamed = np.concatenate([c.audio for c in eng.stream(iter(deltas))])
        whole = eng.synthesize(text).audio
        np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_async_stream_with_async_deltas(engine):
    text = "Async streams work too. They yield the same chunks."

    async def deltas():
        for w in text.split(" "):
            yield w + " "
            await asyncio.sleep(0)

    async def main():
        a = [c async for c in engine.astream(text)]
        b = [c async for c in engine.astream(deltas())]
        return a, b

    a, b = asyncio.run(main())
    assert len(a) > 1 and sum(len(c.audio) for c in b) > 0
    np.testing.assert_allclose(np.concatenate([c.audio for c in a]),
                               engine.synthesize(text).audio, atol=1e-5)


def test_concurrent_requests_are_batched_without_changing_audio(engine):
    texts = SENTENCES[:6]
    solo = [engine.synthesize(t).audio for t in texts]
    out: list[np.ndarray | None] = [None] * len(texts)

    def run(i):
        out[i] = np.concatenate([c.audio for c in engine.stream(texts[i])])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s, o in zip(solo, out):
        assert o is not None and o.shape == s.shape
        assert snr_db(s, o) >= 60.0


def test_cancel_stops_within_one_chunk_and_frees_buffers(engine):
    text = " ".join(SENTENCES)  # long: many chunks
    stream = engine.stream(text)
    first = next(stream)
    assert first.audio.size > 0
    t0 = time.perf_counter()
    stream.cancel()
    rest = list(stream)
    assert rest == []  # the iterator ends at once
    deadline = time.time() + 5
    while engine.active_requests and time.time() < deadline:
        time.sleep(0.01)
    assert engine.active_requests == 0 and len(engine.runner.mels) == 0
    assert time.perf_counter() - t0 < 5


def test_slow_consumer_is_paused_and_does_not_stall_others(engine):
    cfg = engine.config
    slow = engine.stream(" ".join(SENTENCES))
    next(slow)
    time.sleep(0.5)  # the slow reader does not read; the engine must pause it
    req = slow._req
    assert req.sink.outstanding <= cfg.max_pending_chunks
    assert req.sink.q.qsize() <= cfg.max_pending_chunks
    t0 = time.perf_counter()
    fast = engine.synthesize("Meanwhile this one finishes.")  # not stalled by the slow one
    assert fast.duration > 0 and time.perf_counter() - t0 < 10
    assert list(slow)  # and the slow one resumes when read
    assert engine.active_requests == 0


def test_window_planner_covers_every_frame_once():
    for total in (0, 1, 5, 13, 40, 333):
        p = WindowPlanner(13, 13, overlap=1, sizes=(12, 24, 48))
        p.add_frames(total)
        p.finish()
        covered, wins = 0, []
        while (w := p.take()) is not None:
            wins.append(w)
            assert w.out_lo == covered - w.head and w.mel_lo >= 0 and w.mel_hi <= total
            covered = w.out_hi
        assert covered == total and (not wins or wins[-1].final)


def test_receptive_field_context_is_exact():
    """Perturbing one mel frame changes no sample further than the computed context."""
    from engine.models.hifigan import Generator
    from engine.config import HIFIGAN_PRESETS

    torch.manual_seed(0)
    g = Generator(HIFIGAN_PRESETS["tiny"]).eval()
    left, right = g.receptive_field_frames()
    mel = torch.randn(1, 80, 80) - 5
    bumped = mel.clone()
    bumped[:, :, 40] += 5
    with torch.no_grad():
        d = (g(mel) - g(bumped)).abs()[0, 0]
    changed = torch.nonzero(d > 0).flatten() // 256
    assert changed.min() >= 40 - right and changed.max() <= 40 + left
    # and it is nearly tight (the outermost taps' effect can round away in float32)
    assert changed.min() <= 40 - right + 2 and changed.max() >= 40 + left - 2


def test_push_mode_send_flush_end(engine):
    stream = engine.open(pace=1.0)
    stream.send("Partial words arr")
    stream.send("ive here, and")
    stream.flush()  # speak what is buffered without waiting for a sentence end
    first = next(stream)
    assert first.offset == 0 and first.audio.size > 0
    stream.send(" then the rest comes.")
    stream.end()
    rest = list(stream)
    assert rest and rest[-1].final
    words = [w.word for c in [first, *rest] for w in c.words]
    assert words[:3] == ["partial", "words", "arrive"] and words[-1] == "comes."


def test_async_push_mode(engine):
    async def main():
        s = engine.aopen()
        s.send("Hello from an async server.")
        s.end()
        return [c async for c in s]

    chunks = asyncio.run(main())
    assert chunks and chunks[-1].final


def test_bucketed_static_path_equals_eager_for_every_bucket():
    """Graph replay == eager: on CPU the bucketed (static-shape) path runs eagerly and must
    give the unbucketed path's audio; on CUDA the same buckets are captured as graphs."""
    from engine.runtime.static import Buckets

    texts = SENTENCES[:5]
    with Engine.load(fastpitch=TINY_FP, hifigan=TINY_HG) as eager, \
            Engine.load(fastpitch=TINY_FP, hifigan=TINY_HG,
                        config=EngineConfig(static_shapes=True)) as static:
        assert static.runner.static and not eager.runner.static
        for t in texts:
            a, b = eager.synthesize(t), static.synthesize(t, pitch_shift=0.0)
            assert a.audio.shape == b.audio.shape and snr_db(a.audio, b.audio) >= 60.0
        # every FastPitch batch bucket: static rows == the unbucketed eager batch's rows
        from engine.runtime.request import SynthesisOptions

        sfp = static.runner.static_fastpitch
        ids = [static.voice.text_processor.encode_text(t) for t in texts]
        for bsz in Buckets().batch:
            rows = (ids * bsz)[:bsz]
            got = sfp(rows, [1.2] * bsz, [0] * bsz, [15.0] * bsz)
            want = eager.runner.fastpitch([(r, SynthesisOptions(pace=1.2, pitch_shift=15.0))
                                           for r in rows])
            for (mel, _), piece in zip(got, want):
                assert mel.shape == piece.mel.shape
                assert torch.allclose(mel, piece.mel, atol=1e-4)
        # every text bucket (and the mel buckets those lengths land in), batch 1
        gen = torch.Generator().manual_seed(0)
        for t in Buckets().text:
            row = torch.randint(38, 64, (t,), generator=gen).tolist()
            row[4::6] = [11] * len(row[4::6])  # spaces between "words"
            (mel, _), = sfp([row], [1.0], [0], [0.0])
            want = eager.runner.fastpitch([(row, SynthesisOptions())])[0]
            assert mel.shape == want.mel.shape and torch.allclose(mel, want.mel, atol=1e-4)
        voc = static.runner.static_vocoder
        mel = torch.randn(2, 80, 400) - 5
        for n in Buckets().window:
            got = voc(mel[:, :, :n])
            want = static.voice.hifigan(mel[:, :, :n])
            assert torch.allclose(got, want, atol=1e-6)
