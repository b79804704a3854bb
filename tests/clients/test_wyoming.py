"""Wyoming front (clients/wyoming.py) against the real client of the ``wyoming`` package
(``AsyncTcpClient``) and the in-process server on 127.0.0.1, port 0, with the tiny test voice:
describe, one-shot and streaming synthesis, every bad input answered with an ``error`` event
(the connection and the server usable afterwards), disconnects, the CLI."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.tts import (Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop,
                         SynthesizeStopped, SynthesizeVoice)

import clients.wyoming as wy
from clients.cli import main as cli_main
from clients.wyoming import WyomingServer, check_wyoming_listen, parse_uri, serve_wyoming
from engine import Engine, EngineConfig
from engine.pcm import float_to_pcm16

DATA = Path(__file__).resolve().parents[1] / "data"
SENTENCES = (DATA / "sentences.txt").read_text().splitlines()
LONG = " ".join(SENTENCES)  # about 54 s of audio: many chunks
SHORT = "Hello there, my friend. How are you today?"
HI = "Hi there."


@pytest.fixture(scope="module")
def multi_engine():
    """The tiny voice with three speakers (a speaker table added to its FastPitch)."""
    import torch

    from engine.models.fastpitch import FastPitch
    from engine.models.voice import Voice

    torch.manual_seed(0)
    voice = Voice.load(DATA / "tiny_fastpitch.pt", DATA / "tiny_hifigan.pt", device="cpu")
    fp = FastPitch(voice.fastpitch.config.replace(n_speakers=3))
    fp.load_state_dict(voice.fastpitch.state_dict(), strict=False)
    voice.fastpitch = fp.eval()
    eng = Engine(voice, EngineConfig(window_sizes=(48,)))
    yield eng
    eng.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def client(server: WyomingServer) -> AsyncTcpClient:
    return AsyncTcpClient(server.host, server.port, connect_timeout=5, read_timeout=10)


async def read_until(c: AsyncTcpClient, *last: str) -> list[Event]:
    """Events up to and including the first whose type is in ``last``."""
    out = []
    while True:
        event = await c.read_event()
        assert event is not None, f"connection closed; got {[e.type for e in out]}"
        out.append(event)
        if event.type in last:
            return out


async def wait_idle(engine: Engine, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while engine.active_requests and loop.time() - t0 < timeout:
        await asyncio.sleep(0.005)
    assert engine.active_requests == 0, "engine requests leaked"


def pcm_of(events: list[Event]) -> np.ndarray:
    chunks = [AudioChunk.from_event(e) for e in events if AudioChunk.is_type(e.type)]
    for c in chunks:
        assert (c.rate, c.width, c.channels) == (22050, 2, 1)
    return np.frombuffer(b"".join(c.audio for c in chunks), "<i2")


def assert_pcm_close(pcm: np.ndarray, audio: np.ndarray) -> None:
    """``pcm`` is ``audio`` quantized, give or take one step: requests running at once are
    batched, which moves float rounding (atol 1e-5 in tests/runtime) across a step."""
    want = float_to_pcm16(audio)
    assert len(pcm) == len(want)
    assert np.abs(pcm.astype(np.int32) - want.astype(np.int32)).max() <= 1


def types(events: list[Event]) -> list[str]:
    """Event types with runs of audio-chunk collapsed to one."""
    out: list[str] = []
    for e in events:
        if not (e.type == "audio-chunk" and out and out[-1] == "audio-chunk"):
            out.append(e.type)
    return out


async def speak_once(c: AsyncTcpClient, text: str = HI, **voice: Any) -> list[Event]:
    v = SynthesizeVoice(**voice) if voice else None
    await c.write_event(Synthesize(text=text, voice=v).event())
    return await read_until(c, "audio-stop")


# ---------------------------------------------------------------------------- describe


def test_describe_answers_info_with_a_streaming_tts_program(engine):
    async def main():
        async with serve_wyoming(engine, "tcp://127.0.0.1:0") as server, client(server) as c:
            assert server.port > 0 and server.uri == f"tcp://127.0.0.1:{server.port}"
            await c.write_event(Describe().event())
            info_event = await c.read_event()
            await c.write_event(Ping(text="x").event())
            return info_event, await c.read_event()

    event, pong = run(main())
    assert Info.is_type(event.type)
    (program,) = Info.from_event(event).tts
    assert program.supports_synthesize_streaming is True and program.installed
    assert program.name == "fpstream" and program.attribution.url.startswith("https://")
    (voice,) = program.voices
    assert voice.name == "default" and voice.languages == ["en"] and voice.installed
    assert voice.speakers is None  # a single-speaker voice
    assert Pong.is_type(pong.type) and Pong.from_event(pong).text == "x"


# ---------------------------------------------------------------------------- synthesis


def test_one_shot_synthesize_is_the_engine_audio(engine, short_ref):
    async def main():
        async with serve_wyoming(engine, "tcp://127.0.0.1:0") as server, client(server) as c:
            first = await speak_once(c, SHORT)
            second = await speak_once(c, SHORT, name="default")  # same connection, again
            await wait_idle(engine)
            return first, second

    first, second = run(main())
    assert types(first) == ["audio-start", "audio-chunk", "audio-stop"]
    start = AudioStart.from_event(first[0])
    assert (start.rate, start.width, start.channels) == (engine.sample_rate, 2, 1)
    chunks = [AudioChunk.from_event(e) for e in first[1:-1]]
    assert len(chunks) >= 2  # streamed as the engine makes them
    stamps = [c.timestamp for c in chunks]
    assert stamps[0] == 0 and stamps == sorted(stamps)
    pcm = pcm_of(first)
    np.testing.assert_array_equal(pcm, float_to_pcm16(short_ref.audio))  # bit-exact
    assert AudioStop.from_event(first[-1]).timestamp == len(pcm) * 1000 // 22050
    np.testing.assert_array_equal(pcm_of(second), pcm)


def test_streaming_audio_starts_before_the_stop_and_compat_synthesize_is_ignored(
        engine, short_ref):
    async def main():
        async with serve_wyoming(engine, "tcp://127.0.0.1:0") as server, client(server) as c:
            await c.write_event(SynthesizeStart(voice=SynthesizeVoice(name="default")).event())
            # Deltas that split words; no sentence end yet.
            for piece in ("Hello th", "ere, my fri", "end, and how a", "re you"):
                await c.write_event(SynthesizeChunk(text=piece).event())
            before_stop = await read_until(c, "audio-chunk")  # the first sub-sentence audio
            assert engine.active_requests == 1  # the stream is still open
            for piece in (" to", "day? I am fine."):
                await c.write_event(SynthesizeChunk(text=piece).event())
            # What a streaming client also sends, for servers that cannot stream: ignored.
            await c.write_event(Synthesize(text="Hello there, my friend, and how are you "
                                                "today? I am fine.").event())
            await c.write_event(SynthesizeStop().event())
            rest = await read_until(c, "synthesize-stopped")
            again = await speak_once(c, HI)  # the connection goes on
            await wait_idle(engine)
            return before_stop, rest, again

    before_stop, rest, again = run(main())
    events = before_stop + rest
    assert types(events) == ["audio-start", "audio-chunk", "audio-stop", "synthesize-stopped"]
    assert SynthesizeStopped.is_type(events[-1].type)
    ref = engine.synthesize("Hello there, my friend, and how are you today? I am fine.")
    pcm = pcm_of(events)
    # Deltas may be cut differently from the whole text, so compare length only (the ignored
    # `synthesize` would have doubled it).
    assert abs(len(pcm) - len(ref.audio)) < 0.2 * len(ref.audio)
    assert np.abs(pcm).max() > 100
    assert types(again) == ["audio-start", "audio-chunk", "audio-stop"]


def test_multi_speaker_voice_lists_and_selects_speakers(multi_engine):
    eng = multi_engine
    ref0, ref2 = eng.synthesize(HI, speaker=0), eng.synthesize(HI, speaker=2)
    assert not np.array_equal(ref0.audio, ref2.audio)

    async def main():
        async with serve_wyoming(eng, "tcp://127.0.0.1:0") as server, client(server) as c:
            await c.write_event(Describe().event())
            info = Info.from_event(await c.read_event())
            two = await speak_once(c, HI, name="default", speaker="2")
            bad = await speak_once(c, HI, name="default", speaker="3")
            default = await speak_once(c, HI)
            await c.write_event(SynthesizeStart(voice=SynthesizeVoice(
                name="default", speaker="2")).event())
            await c.write_event(SynthesizeChunk(text=HI).event())
            await c.write_event(SynthesizeStop().event())
            streamed = await read_until(c, "synthesize-stopped")
            await wait_idle(eng)
            return info, two, bad, default, streamed

    info, two, bad, default, streamed = run(main())
    assert [s.name for s in info.tts[0].voices[0].speakers] == ["0", "1", "2"]
    np.testing.assert_array_equal(pcm_of(two), float_to_pcm16(ref2.audio))
    assert [e.type for e in bad] == ["error", "audio-stop"]
    assert "unknown speaker '3'" in Error.from_event(bad[0]).text
    np.testing.assert_array_equal(pcm_of(default), float_to_pcm16(ref0.audio))
    np.testing.assert_array_equal(pcm_of(streamed), float_to_pcm16(ref2.audio))


def test_requests_on_one_connection_are_answered_in_order(engine, short_ref):
    async def main():
        async with serve_wyoming(engine, "tcp://127.0.0.1:0") as server, client(server) as c:
            # Sent back to back: the second one's audio waits for the first one's audio-stop.
            await c.write_event(Synthesize(SHORT).event())
            await c.write_event(Synthesize("").event())
            await c.write_event(Synthesize(HI).event())
            first = await read_until(c, "audio-stop")
            second = await read_until(c, "audio-stop")
            third = await read_until(c, "audio-stop")
            await wait_idle(engine)
            return first, second, third

    first, second, third = run(main())
    assert_pcm_close(pcm_of(first), short_ref.audio)
    assert types(second) == ["error", "audio-stop"]
    assert_pcm_close(pcm_of(third), engine.synthesize(HI).audio)


def test_too_many_waiting_requests_close_the_connection(engine):
    async def main():
        async with serve_wyoming(engine, "tcp://127.0.0.1:0") as server, client(server) as c:
            for _ in range(wy.MAX_QUEUED + 1):
                await c.write_event(Synthesize(LONG).event())
            events = []
            while (event := await c.read_event()) is not None:
                events.append(event)
            await wait_idle(engine)
            async with client(server) as c2:
                return events, await speak_once(c2, HI)

    events, after = run(main())
    errors = [Error.from_event(e) for e in events if e.type == "error"]
    assert [e.code for e in errors] == ["busy"]
    assert types(after) == ["audio-start", "audio-chunk", "audio-stop"]


# ---------------------------------------------------------------------------- bad input

ERR = ["error", "audio-stop"]  # a synthesize always ends with audio-stop
NOW = ["error"]  # events that start no synthesis: answered at once
STREAM_ERR = ["error", "synthesize-stopped"]  # a stream always ends with synthesize-stopped

BAD_INPUTS = {
    "unknown voice": ([Synthesize(HI, voice=SynthesizeVoice(name="nope")).event()],
                      ERR, "unknown voice 'nope'"),
    "unknown voice in start": ([SynthesizeStart(voice=SynthesizeVoice(name="x")).event(),
                                SynthesizeChunk(HI).event(), Synthesize(HI).event(),
                                SynthesizeStop().event()], STREAM_ERR, "unknown voice 'x'"),
    "voice not an object": ([Event("synthesize", {"text": HI, "voice": "default"})],
                            ERR, "voice must be an object"),
    "language not spoken": ([Synthesize(HI, voice=SynthesizeVoice(language="de")).event()],
                            ERR, "language 'de'"),
    "bad speaker": ([Event("synthesize", {"text": HI, "voice": {"name": "default",
                                                                 "speaker": "1"}})],
                    ERR, "unknown speaker '1'"),
    "speaker as a number": ([Event("synthesize", {"text": HI, "voice": {"speaker": 0}})],
                            ERR, "unknown speaker 0"),
    "empty text": ([Synthesize("").event()], ERR, "nothing speakable"),
    "unspeakable text": ([Synthesize("\u2603 \U0001F600").event()], ERR, "nothing speakable"),
    "text missing": ([Event("synthesize", {})], ERR, "\"text\" must be a string"),
    "text not a string": ([Event("synthesize", {"text": 5})], ERR, "must be a string, got int"),
    "ssml": ([Event("synthesize", {"text": HI, "text_format": "ssml"})], ERR, "ssml"),
    "chunk without start": ([SynthesizeChunk(HI).event()], NOW,
                            "synthesize-chunk without synthesize-start"),
    "stop without start": ([SynthesizeStop().event()], NOW,
                           "synthesize-stop without synthesize-start"),
    "unknown event type": ([Event("transcribe", {"language": "en"})], NOW,
                           "unknown event type 'transcribe'"),
    "chunk text not a string": ([SynthesizeStart().event(), Event("synthesize-chunk",
                                                                  {"text": None}),
                                 SynthesizeStop().event()],
                                ["error", "error", "synthesize-stopped"], "must be a string"),
    "empty stream": ([SynthesizeStart().event(), SynthesizeChunk(" ").event(),
                      SynthesizeStop().event()], STREAM_ERR, "nothing speakable"),
    "start while a stream is open": (
        [SynthesizeStart().event(), SynthesizeStart().event(), SynthesizeChunk(HI).event(),
         SynthesizeStop().event()],
        ["error", "audio-start", "audio-chunk", "audio-stop", "synthesize-stopped"],
        "a stream is already open"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_an_error_event_and_the_connection_stays_usable(engine, case):
    events, expected, message = BAD_INPUTS[case]

    async def main():
        async with serve_wyoming(engine, "tcp://127.0.0.1:0") as server, client(server) as c:
            for e in events:
                await c.write_event(e)
            answer = await read_until(c, expected[-1])
            after = await speak_once(c, HI)
            await c.write_event(Describe().event())
            info = await c.read_event()
            await wait_idle(engine)
            return answer, after, info

    answer, after, info = run(main())
    assert types(answer) == expected
    err = Error.from_event(answer[0])
    assert message in err.text and err.code in ("bad_request",)
    assert types(after) == ["audio-start", "audio-chunk", "audio-stop"]
    assert Info.is_type(info.type)


def test_too_much_text_is_refused_and_nothing_is_left_running(engine):
    async def main():
        async with serve_wyoming(engine, "tcp://127.0.0.1:0", max_text_chars=20) as server, \
                client(server) as c:
            big = await speak_once(c, SHORT)
            await wait_idle(engine)
            after = await speak_once(c, HI)
            await c.write_event(SynthesizeStart().event())
            await c.write_event(SynthesizeChunk(SHORT).event())  # dropped, the stream goes on
            refused = await c.read_event()
            await c.write_event(SynthesizeChunk(HI).event())
            await c.write_event(SynthesizeStop().event())
            stream = await read_until(c, "synthesize-stopped")
            await wait_idle(engine)
            return big, after, refused, stream

    big, after, refused, stream = run(main())
    assert types(big) == ["error", "audio-stop"]
    assert Error.from_event(big[0]).code == "too_large"
    assert Error.from_event(refused).code == "too_large"
    assert types(stream) == ["audio-start", "audio-chunk", "audio-stop", "synthesize-stopped"]
    assert_pcm_close(pcm_of(stream), engine.synthesize(HI).audio)
    assert types(after) == ["audio-start", "audio-chunk", "audio-stop"]


def test_unreadable_event_closes_only_that_connection(engine):
    async def main():
        async with serve_wyoming(engine, "tcp://127.0.0.1:0") as server:
            reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(b"this is not json\n")
            await writer.drain()
            closed = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            async with client(server) as c:
                return closed, await speak_once(c, HI)

    closed, after = run(main())
    assert closed == b""
    assert types(after) == ["audio-start", "audio-chunk", "audio-stop"]


def test_a_bug_is_an_internal_error_event_with_a_traceback(engine, monkeypatch, caplog):
    def broken(audio, encoding):
        raise RuntimeError("boom")

    async def main():
        async with serve_wyoming(engine, "tcp://127.0.0.1:0") as server, client(server) as c:
            with monkeypatch.context() as m:
                m.setattr(wy, "encode", broken)
                failed = await speak_once(c, LONG)
                await wait_idle(engine)
            return failed, await speak_once(c, HI)

    with caplog.at_level(logging.ERROR, logger="clients.wyoming"):
        failed, after = run(main())
    assert types(failed) == ["audio-start", "error", "audio-stop"]
    err = Error.from_event(failed[1])
    assert err.code == "internal" and "boom" not in err.text
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)
    assert types(after) == ["audio-start", "audio-chunk", "audio-stop"]


# ---------------------------------------------------------------------------- disconnects


@pytest.mark.parametrize("streaming, how", [(True, "close"), (True, "abort"), (False, "close")])
def test_disconnect_mid_stream_cancels_the_engine_request(engine, streaming, how):
    async def main():
        async with serve_wyoming(engine, "tcp://127.0.0.1:0") as server:
            c = client(server)
            await c.connect()
            if streaming:
                await c.write_event(SynthesizeStart().event())
                await c.write_event(SynthesizeChunk(LONG).event())
            else:
                await c.write_event(Synthesize(LONG).event())
            await read_until(c, "audio-chunk")
            assert engine.active_requests == 1
            if how == "abort":
                c._writer.transport.abort()  # a reset, not a clean close
            await c.disconnect()
            t0 = asyncio.get_running_loop().time()
            await wait_idle(engine)
            idle_s = asyncio.get_running_loop().time() - t0
            await asyncio.sleep(0.05)
            return idle_s, len(server.handlers)

    idle_s, handlers = run(main())
    assert idle_s < 1.0 and handlers == 0


def test_server_close_ends_connections_and_their_synthesis(engine):
    async def main():
        server = await serve_wyoming(engine, "tcp://127.0.0.1:0").start()
        c = client(server)
        await c.connect()
        await c.write_event(Synthesize(LONG).event())
        await read_until(c, "audio-chunk")
        await server.close()
        await wait_idle(engine)
        while (event := await c.read_event()) is not None:  # drains, then EOF
            assert event.type in ("audio-chunk", "audio-stop")
        await c.disconnect()
        return len(server.handlers)

    assert run(main()) == 0


def test_busy_beyond_max_connections(engine):
    async def main():
        async with serve_wyoming(engine, "tcp://127.0.0.1:0", max_connections=1) as server, \
                client(server) as first:
            await first.write_event(Describe().event())
            await first.read_event()
            async with client(server) as second:
                refused = await second.read_event()
                eof = await second.read_event()
            return refused, eof, await speak_once(first, HI)

    refused, eof, after = run(main())
    assert Error.from_event(refused).code == "busy" and eof is None
    assert types(after) == ["audio-start", "audio-chunk", "audio-stop"]


# ---------------------------------------------------------------------------- addresses, CLI


def test_addresses_and_the_loopback_rule(engine):
    assert parse_uri("tcp://127.0.0.1:10200") == ("127.0.0.1", 10200)
    assert parse_uri("tcp://[::1]:0") == ("::1", 0)
    assert parse_uri("tcp://localhost:5/") == ("localhost", 5)
    for bad, why in [("unix:///tmp/s", "only tcp"), ("tcp://127.0.0.1", "port is missing"),
                     ("tcp://:10200", "host is missing"), ("tcp://h:99999", "out of range"),
                     ("tcp://h:x", "bad Wyoming address"), ("127.0.0.1:10200", "only tcp"),
                     ("tcp://u:p@h:1", "no user"), ("tcp://h:1/path", "nothing after"),
                     ("", "tcp://HOST:PORT")]:
        with pytest.raises(ValueError, match=why):
            parse_uri(bad)
    with pytest.raises(ValueError, match="no authentication"):
        check_wyoming_listen("0.0.0.0", 10200)
    with pytest.raises(ValueError, match="no authentication"):
        serve_wyoming(engine, "tcp://example.org:10200")
    check_wyoming_listen("0.0.0.0", 10200, allow_remote=True)
    serve_wyoming(engine, "tcp://0.0.0.0:0", allow_remote=True)  # allowed (not started)
    with pytest.raises(ValueError, match="unknown limit"):
        serve_wyoming(engine, "tcp://127.0.0.1:0", max_conections=3)
    with pytest.raises(ValueError, match="max_connections"):
        serve_wyoming(engine, "tcp://127.0.0.1:0", max_connections=0)


def test_cli_wyoming_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["wyoming", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Wyoming" in out and "--uri" in out and "--allow-remote" in out
    assert "--fastpitch" in out  # the model flags of `serve`
    with pytest.raises(SystemExit):
        cli_main(["serve", "--help"])
    assert "--wyoming URI" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["serve", "--wyoming", "http://127.0.0.1:10200"], "only tcp://HOST:PORT"),
    (["serve", "--wyoming", "tcp://127.0.0.1"], "port is missing"),
    (["serve", "--wyoming", "tcp://0.0.0.0:10200"], "--wyoming-allow-remote"),
    (["serve", "--wyoming-allow-remote"], "only applies together with --wyoming"),
    (["wyoming", "--uri", "tcp://0.0.0.0:10200"], "no authentication"),
    (["wyoming", "--uri", "tcp://h:70000"], "out of range"),
    (["wyoming", "--max-connections", "0"], "max_connections"),
])
def test_cli_bad_wyoming_settings_exit_2_with_one_line(capsys, monkeypatch, argv, message):
    def no_models(args):
        raise AssertionError("the models must not load for bad settings")

    monkeypatch.setattr("clients.cli._load_engine", no_models)
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fpstream: error: ") and message in err


def test_cli_serve_with_wyoming_runs_both_fronts_on_one_engine(engine, monkeypatch, capsys):
    """`fpstream serve --port 0 --wyoming tcp://127.0.0.1:0`: a websocket client and a
    Wyoming client both get audio from the one engine; SIGTERM stops both."""
    import clients.server as server_mod
    from clients.client import synthesize

    class Shared:  # the module's engine: the command must not close it
        def __getattr__(self, name):
            return getattr(engine, name)

        def close(self):
            pass

    seen: dict[str, Any] = {}
    real_run_server = server_mod.run_server

    def check_both(ws_url: str, wy: WyomingServer) -> None:
        async def talk():
            samples = 0
            async for chunk in synthesize(ws_url, HI):
                samples += len(chunk.audio)
            async with client(wy) as c:
                return samples, await speak_once(c, HI)

        try:
            seen["ws"], seen["wy"] = asyncio.run(asyncio.wait_for(talk(), 30))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            seen["error"] = e
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    def run_server(*args, on_ready, also, **kwargs):
        def ready(server):
            on_ready(server)
            threading.Thread(target=check_both, args=(server.url, also[0]), daemon=True).start()
        real_run_server(*args, on_ready=ready, also=also, **kwargs)

    monkeypatch.setattr(server_mod, "run_server", run_server)
    monkeypatch.setattr("clients.cli._load_engine", lambda args: Shared())
    assert cli_main(["serve", "--port", "0", "--wyoming", "tcp://127.0.0.1:0"]) == 0
    assert "error" not in seen, seen.get("error")
    assert "and Wyoming on tcp://127.0.0.1:" in capsys.readouterr().err
    assert seen["ws"] > 0
    assert types(seen["wy"]) == ["audio-start", "audio-chunk", "audio-stop"]
    assert engine.active_requests == 0


def test_cli_wyoming_standalone_serves_until_sigterm():
    """`fpstream wyoming` in its own process: announces its port, speaks, and stops cleanly
    (exit 0) on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "wyoming", "--uri", "tcp://127.0.0.1:0",
         "--fastpitch", str(DATA / "tiny_fastpitch.pt"),
         "--hifigan", str(DATA / "tiny_hifigan.pt"), "--device", "cpu"],
        stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        line = proc.stderr.readline()
        found = re.search(r"serving Wyoming on tcp://127\.0\.0\.1:(\d+)", line)
        assert found, line
        port = int(found.group(1))

        async def main():
            async with AsyncTcpClient("127.0.0.1", port, connect_timeout=5,
                                      read_timeout=10) as c:
                return await speak_once(c, HI)

        events = run(main())
        assert types(events) == ["audio-start", "audio-chunk", "audio-stop"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "Wyoming server stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
