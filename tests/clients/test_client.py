"""Websocket client (clients/client.py), `fpstream say` and `fpstream serve`, against a real
server on 127.0.0.1 (port 0) running in a background thread with the tiny test voice."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from server_thread import ServerThread
from clients import client as client_mod
from clients.client import TTSError, synthesize, synthesize_sync
from clients.server import serve_tts
from engine import Engine
from engine.pcm import float_to_mulaw, float_to_pcm16, mulaw_to_float, pcm16_to_float, resample
from clients.cli import main as cli_main

DATA = Path(__file__).resolve().parents[1] / "data"
ROOT = Path(__file__).resolve().parents[2]
TINY = ["--fastpitch", str(DATA / "tiny_fastpitch.pt"), "--hifigan",
        str(DATA / "tiny_hifigan.pt"), "--device", "cpu"]
SENTENCES = (DATA / "sentences.txt").read_text().splitlines()
LONG = " ".join(SENTENCES)
SHORT = "Hello there, my friend. How are you today?"
TOKEN = "client-test-token"


def server_thread(engine: Engine, **kwargs) -> ServerThread:
    """Our server for the tiny engine, in a thread (``with`` gives the TTSServer)."""
    return ServerThread(serve_tts(engine, port=0, **kwargs))


@pytest.fixture(scope="module")
def server(engine):
    with server_thread(engine, token=TOKEN) as srv:
        yield srv


@pytest.fixture(scope="module")
def short_ref(engine):
    return engine.synthesize(SHORT)


def wait_idle(engine: Engine, timeout: float = 5.0) -> float:
    t0 = time.perf_counter()
    while engine.active_requests and time.perf_counter() - t0 < timeout:
        time.sleep(0.005)
    assert engine.active_requests == 0
    return time.perf_counter() - t0


def test_async_client_text_equals_engine_audio(server, short_ref):
    async def main():
        async with synthesize(server.url, SHORT, encoding="pcm_f32le", token=TOKEN) as s:
            chunks = [c async for c in s]
        return chunks, s.stats

    chunks, stats = asyncio.run(main())
    assert len(chunks) >= 2 and all(c.sample_rate == 22050 for c in chunks)
    assert [c.offset for c in chunks] == np.cumsum([0] + [len(c.audio) for c in chunks[:-1]]
                                                   ).tolist()
    audio = np.concatenate([c.audio for c in chunks])
    assert audio.dtype == np.float32
    np.testing.assert_array_equal(audio, short_ref.audio)
    assert [w for c in chunks for w in c.words] == [
        type(w)(w.word, round(w.start, 4), round(w.end, 4)) for w in short_ref.words]
    assert stats.encoding == "pcm_f32le" and stats.chunks == len(chunks)
    assert stats.audio_seconds == pytest.approx(short_ref.duration)
    assert 0 < stats.ttfa_ms < stats.wall_seconds * 1000 and stats.rtf > 0
    assert stats.server["type"] == "done"


def test_async_and_sync_delta_sources(server, short_ref):
    deltas = [SHORT[i:i + 4] for i in range(0, len(SHORT), 4)]  # splits words

    async def agen():
        for d in deltas:
            await asyncio.sleep(0.001)
            yield d

    async def main(source):
        s = synthesize(server.url, source, token=TOKEN, pace=1.0)
        return [c async for c in s], s.stats

    expected_words = [w.word for w in short_ref.words]
    for source in (agen(), iter(deltas), deltas):
        chunks, stats = asyncio.run(main(source))
        assert [w.word for c in chunks for w in c.words] == expected_words
        assert stats is not None and stats.audio_seconds > 1.0


def test_sync_client_resamples_and_decodes_s16(server, short_ref):
    with synthesize_sync(server.url, SHORT, sample_rate=16000, token=TOKEN) as s:
        chunks = list(s)
    assert s.stats.sample_rate == 16000 and all(c.sample_rate == 16000 for c in chunks)
    audio = np.concatenate([c.audio for c in chunks])
    expected = pcm16_to_float(float_to_pcm16(resample(short_ref.audio, 22050, 16000)))
    np.testing.assert_array_equal(audio, expected)


def test_sync_client_mulaw(server, short_ref):
    chunks = list(synthesize_sync(server.url, SHORT, encoding="mulaw", token=TOKEN))
    audio = np.concatenate([c.audio for c in chunks])
    ref = resample(short_ref.audio, 22050, 8000)
    assert chunks[0].sample_rate == 8000 and len(audio) == len(ref)
    np.testing.assert_array_equal(audio, mulaw_to_float(float_to_mulaw(ref)))
    snr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((audio - ref) ** 2))
    assert snr > 30  # G.711 keeps the waveform (about 35 dB here)


def test_closing_early_cancels_the_server_work(server, engine):
    s = synthesize_sync(server.url, LONG, token=TOKEN)
    first = next(s)
    assert first.audio.size > 0
    t0 = time.perf_counter()
    s.close()
    assert wait_idle(engine) + (time.perf_counter() - t0) < 2.0
    with pytest.raises(StopIteration):
        next(s)


def test_server_errors_raise_tts_error(server, engine):
    with pytest.raises(TTSError) as e:
        list(synthesize_sync(server.url, SHORT, token=TOKEN, pace="fast"))
    assert e.value.code == "bad_request" and "pace" in e.value.message
    with pytest.raises(TTSError) as e:
        list(synthesize_sync(server.url, SHORT, token=TOKEN, sample_rate=12345))
    assert e.value.code == "bad_request" and "sample_rate" in e.value.message
    with pytest.raises(TTSError) as e:
        list(synthesize_sync(server.url, SHORT))  # no token
    assert e.value.code == "unauthorized"
    with pytest.raises(TTSError) as e:
        list(synthesize_sync(server.url, SHORT, token="wrong"))
    assert e.value.code == "unauthorized"
    with pytest.raises(TTSError) as e:
        list(synthesize_sync(server.url.replace("/v1/tts", "/v2"), SHORT, token=TOKEN))
    assert e.value.code == "not_found"
    with pytest.raises(TTSError) as e:
        list(synthesize_sync(server.url, "\U0001f389", token=TOKEN))
    assert e.value.code == "bad_request" and "nothing speakable" in e.value.message
    wait_idle(engine)


def test_client_side_argument_errors(server):
    with pytest.raises(ValueError, match="encoding"):
        synthesize(server.url, "Hi.", encoding="opus")
    with pytest.raises(ValueError, match="ws://"):
        synthesize("http://127.0.0.1:8765/v1/tts", "Hi.")
    with pytest.raises(ValueError, match="unknown option"):
        synthesize(server.url, "Hi.", speed=2)
    with pytest.raises(ValueError, match="text"):
        synthesize(server.url, 123)


def test_failing_text_producer_propagates_and_frees_the_server(server, engine):
    async def deltas():
        yield "Hello there, "
        await asyncio.sleep(0.05)
        raise RuntimeError("the LLM stream broke")

    async def main():
        async with synthesize(server.url, deltas(), token=TOKEN) as s:
            return [c async for c in s]

    with pytest.raises(RuntimeError, match="LLM stream broke"):
        asyncio.run(asyncio.wait_for(main(), timeout=10))  # raised, not a hang
    wait_idle(engine)


def test_busy_server_raises_busy(engine):
    with server_thread(engine, max_sessions=1) as srv:
        holder = synthesize_sync(srv.url, LONG)
        next(holder)  # the only session is in use
        with pytest.raises(TTSError) as e:
            list(synthesize_sync(srv.url, SHORT))
        holder.close()
    assert e.value.code == "busy"
    wait_idle(engine)


# ---------------------------------------------------------------------------- command lines


def test_client_cli_writes_wav_and_prints_timing(server, tmp_path, capsys):
    out = tmp_path / "out.wav"
    code = client_mod.main(["--server", server.url, "--token", TOKEN, SHORT, "-o", str(out),
                            "--sample-rate", "24000", "--delta-chars", "3", "--pace", "1.2"])
    assert code == 0
    audio, rate = sf.read(out, dtype="int16")
    assert rate == 24000 and len(audio) > 24000 * 0.5 and np.abs(audio).max() > 100
    err = capsys.readouterr().err
    assert re.search(r"TTFA \d+ ms \(client side", err) and "RTF" in err and "24000 Hz" in err


def test_say_errors(server, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FPSTREAM_TOKEN", raising=False)
    assert cli_main(["say", "--server", server.url, "Hi."]) == 2
    assert "-o out.wav, or --play" in capsys.readouterr().err
    out = str(tmp_path / "x.wav")
    assert cli_main(["say", "--server", "ws://127.0.0.1:9/v1/tts", "Hi.", "-o", out]) == 2
    assert "cannot reach" in capsys.readouterr().err
    assert cli_main(["say", "--server", server.url, "Hi.", "-o", out]) == 2
    assert "unauthorized" in capsys.readouterr().err
    monkeypatch.setenv("FPSTREAM_TOKEN", TOKEN)  # the token may come from the environment
    assert cli_main(["say", "--server", server.url, "Hi there.", "-o", out]) == 0


def test_say_play_hands_chunks_to_playback(server, tmp_path, monkeypatch, capsys):
    import clients.playback

    calls = {}

    def fake_play_stream(chunks, sample_rate, device=None, **kw):
        calls.update(sample_rate=sample_rate, device=device, cancel=kw.get("cancel"),
                     n=sum(len(c.audio) for c in chunks))

    monkeypatch.setattr(clients.playback, "play_stream", fake_play_stream)
    out = tmp_path / "played.wav"
    code = cli_main(["say", "--server", server.url, "--token", TOKEN, SHORT, "--play",
                     "--device-out", "3", "-o", str(out), "--sample-rate", "48000"])
    assert code == 0
    assert calls["sample_rate"] == 48000 and calls["device"] == "3" and callable(calls["cancel"])
    assert sf.info(out).frames == calls["n"] > 48000  # the same audio was played and written


def test_serve_command_end_to_end_and_clean_ctrl_c(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("FPSTREAM_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "clients.cli", "serve", "--port", "0",
                             "--token", TOKEN, "--idle-timeout", "30", *TINY],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.time() + 60
        while url is None and time.time() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            m = re.search(r"serving (ws://\S+)", line)
            url = m.group(1) if m else None
        assert url, "the server did not report its address"
        out = tmp_path / "say.wav"
        assert cli_main(["say", "--server", url, "--token", TOKEN, SHORT, "-o", str(out)]) == 0
        assert sf.info(out).samplerate == 22050 and sf.info(out).frames > 22050
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert "server stopped" in rest and "Traceback" not in rest
