"""Websocket server (clients/server.py) against a real server on 127.0.0.1, port 0, in the
test's own event loop, with the tiny test voice. Also the audio helpers it relies on
(streaming resampler, G.711 µ-law)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from clients.server import TTSServer, is_loopback, serve_tts
from engine import Engine
from engine.pcm import (StreamResampler, float_to_mulaw, float_to_pcm16, mulaw_to_float,
                        mulaw_to_pcm16, pcm16_to_float, pcm16_to_mulaw, resample)
from clients.cli import main as cli_main

DATA = Path(__file__).resolve().parents[1] / "data"
SENTENCES = (DATA / "sentences.txt").read_text().splitlines()
LONG = " ".join(SENTENCES)  # about 54 s of audio: many chunks
SHORT = "Hello there, my friend. How are you today?"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


async def recv_json(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(msg, str), "expected a JSON text frame, got binary"
    return json.loads(msg)


async def send(ws: ClientConnection, **msg: Any) -> None:
    await ws.send(json.dumps(msg))


async def read_utterance(ws: ClientConnection, timeout: float = 20
                         ) -> tuple[list[dict], list[bytes], dict, list[dict]]:
    """Read until done or an utterance-ending error: (chunk metas, binary frames, the last
    message, other messages such as ready). Checks that each chunk JSON is followed by
    exactly one binary frame."""
    metas, blobs, others = [], [], []
    while True:
        msg = await recv_json(ws, timeout)
        if msg["type"] == "chunk":
            data = await asyncio.wait_for(ws.recv(), timeout)
            assert isinstance(data, bytes), "a chunk message must be followed by binary"
            metas.append(msg)
            blobs.append(data)
        elif msg["type"] in ("done", "error"):
            return metas, blobs, msg, others
        else:
            others.append(msg)


async def wait_idle(engine: Engine, timeout: float = 5.0) -> float:
    """Seconds until the engine has no request left (asserts it gets there)."""
    t0 = time.perf_counter()
    while engine.active_requests and time.perf_counter() - t0 < timeout:
        await asyncio.sleep(0.002)
    assert engine.active_requests == 0, "engine requests leaked: " + "; ".join(
        f"#{r.id} cancelled={r.cancelled} finished={r.finished} ended={r.text_ended} "
        f"emitted={r.emitted} inbox={r.inbox.qsize()} outstanding={r.sink.outstanding}"
        for r in list(engine._requests.values()))
    return time.perf_counter() - t0


def check_chunks(metas: list[dict], blobs: list[bytes], bytes_per_sample: int) -> None:
    offset = 0
    for m, b in zip(metas, blobs):
        assert m["offset"] == offset and len(b) == m["samples"] * bytes_per_sample
        offset += m["samples"]


# ---------------------------------------------------------------------------- happy path


def test_happy_path_f32_equals_engine_synthesize(engine, short_ref):
    async def main():
        async with serve_tts(engine, port=0) as server:
            assert server.port > 0 and server.url.endswith("/v1/tts")
            async with connect(server.url) as ws:
                await send(ws, type="start", encoding="pcm_f32le", voice="default")
                ready = await recv_json(ws)
                await send(ws, type="text", text=SHORT)
                await send(ws, type="flush")
                await send(ws, type="end")
                return ready, await read_utterance(ws)

    ready, (metas, blobs, done, others) = run(main())
    assert ready == {"type": "ready", "sample_rate": 22050, "encoding": "pcm_f32le",
                     "channels": 1}
    assert others == [] and done["type"] == "done" and len(metas) >= 2
    check_chunks(metas, blobs, 4)
    audio = np.concatenate([np.frombuffer(b, "<f4") for b in blobs])
    np.testing.assert_array_equal(audio, short_ref.audio)  # bit-exact
    assert [w for m in metas for w in m["words"]] == [w.to_dict() for w in short_ref.words]
    assert " ".join(m["text"] for m in metas if m["text"]) == SHORT
    assert done["audio_seconds"] == pytest.approx(short_ref.duration, abs=1e-3)
    assert done["ttfa_ms"] > 0 and done["rtf"] > 0


def test_defaults_without_start_partial_deltas_and_second_utterance(engine, short_ref):
    async def main():
        async with serve_tts(engine, port=0) as server, connect(server.url) as ws:
            for i in range(0, len(SHORT), 5):  # LLM-style deltas that split words
                await send(ws, type="text", text=SHORT[i:i + 5])
            await send(ws, type="end")
            first = await read_utterance(ws)
            await send(ws, type="text", text="Once more.")  # a new utterance, same session
            await send(ws, type="end")
            return first, await read_utterance(ws)

    (metas, blobs, done, others), (metas2, blobs2, done2, others2) = run(main())
    assert others == [{"type": "ready", "sample_rate": 22050, "encoding": "pcm_s16le",
                       "channels": 1}]
    assert done["type"] == "done" and done2["type"] == "done" and others2 == []
    check_chunks(metas, blobs, 2)
    check_chunks(metas2, blobs2, 2)  # offsets restart at 0
    audio = np.concatenate([np.frombuffer(b, "<i2") for b in blobs])
    # Deltas may be cut differently from the whole text, so compare length and words only.
    assert abs(len(audio) - len(short_ref.audio)) < 0.2 * len(short_ref.audio)
    assert [w["word"] for m in metas for w in m["words"]] == [w.word for w in short_ref.words]
    assert np.abs(audio).max() > 100


def test_s16_is_the_engine_audio_quantized(engine, short_ref):
    async def main():
        async with serve_tts(engine, port=0) as server, connect(server.url) as ws:
            await send(ws, type="text", text=SHORT)
            await send(ws, type="end")
            return await read_utterance(ws)

    metas, blobs, done, _ = run(main())
    pcm = np.concatenate([np.frombuffer(b, "<i2") for b in blobs])
    np.testing.assert_array_equal(pcm, float_to_pcm16(short_ref.audio))


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 44100, 48000])
def test_resampled_rates_equal_whole_signal_resampling(engine, short_ref, rate):
    async def main():
        async with serve_tts(engine, port=0) as server, connect(server.url) as ws:
            await send(ws, type="start", sample_rate=rate, encoding="pcm_f32le")
            ready = await recv_json(ws)
            await send(ws, type="text", text=SHORT)
            await send(ws, type="end")
            return ready, await read_utterance(ws)

    ready, (metas, blobs, done, _) = run(main())
    assert ready["sample_rate"] == rate and done["type"] == "done"
    check_chunks(metas, blobs, 4)
    audio = np.concatenate([np.frombuffer(b, "<f4") for b in blobs])
    assert np.isfinite(audio).all()
    assert abs(len(audio) - len(short_ref.audio) * rate / 22050) <= 1
    # Streamed (per-chunk) resampling equals resampling the whole signal: no seams.
    whole = resample(short_ref.audio, 22050, rate)
    assert len(whole) == len(audio)
    np.testing.assert_allclose(audio, whole, atol=1e-6)
    assert done["audio_seconds"] == pytest.approx(len(audio) / rate, abs=1e-3)


def test_mulaw_stream(engine, short_ref):
    async def main():
        async with serve_tts(engine, port=0) as server, connect(server.url) as ws:
            await send(ws, type="start", encoding="mulaw")  # rate defaults to 8000
            ready = await recv_json(ws)
            await send(ws, type="text", text=SHORT)
            await send(ws, type="end")
            return ready, await read_utterance(ws)

    ready, (metas, blobs, done, _) = run(main())
    assert ready["sample_rate"] == 8000 and ready["encoding"] == "mulaw"
    check_chunks(metas, blobs, 1)
    codes = b"".join(blobs)
    expected = pcm16_to_mulaw(float_to_pcm16(resample(short_ref.audio, 22050, 8000)))
    assert codes == expected.tobytes()


# ---------------------------------------------------------------------------- bad input

_LONG_WORDS = "Pneumonoultramicroscopicsilicovolcanoconiosis " * 3  # 3 words, 138 chars

# (id, frames that set the scene, the bad frame, expected code, an utterance is running)
BAD_INPUTS = [
    ("malformed_json", [], "{not json", "bad_request", False),
    ("json_not_object", [], "[1, 2]", "bad_request", False),
    ("json_nested_too_deeply", [], "[" * 60_000, "bad_request", False),
    ("missing_type", [], {"text": "hi"}, "bad_request", False),
    ("unknown_type", [], {"type": "speak", "text": "hi"}, "bad_request", False),
    ("text_not_string", [], {"type": "text", "text": 5}, "bad_request", False),
    ("text_missing", [], {"type": "text"}, "bad_request", False),
    ("unknown_field", [], {"type": "text", "text": "hi", "speed": 2}, "bad_request", False),
    ("start_unknown_option", [], {"type": "start", "speed": 2}, "bad_request", False),
    ("pace_string", [], {"type": "start", "pace": "fast"}, "bad_request", False),
    ("pace_out_of_range", [], {"type": "start", "pace": 0}, "bad_request", False),
    ("pitch_shift_bool", [], {"type": "start", "pitch_shift": True}, "bad_request", False),
    ("denoise_negative", [], {"type": "start", "denoise": -1}, "bad_request", False),
    ("speaker_float", [], {"type": "start", "speaker": 1.5}, "bad_request", False),
    ("speaker_out_of_range", [], {"type": "start", "speaker": 3}, "bad_request", False),
    ("sample_rate_unsupported", [], {"type": "start", "sample_rate": 12345}, "bad_request",
     False),
    ("sample_rate_string", [], {"type": "start", "sample_rate": "16000"}, "bad_request", False),
    ("encoding_unknown", [], {"type": "start", "encoding": "opus"}, "bad_request", False),
    ("mulaw_not_8k", [], {"type": "start", "encoding": "mulaw", "sample_rate": 16000},
     "bad_request", False),
    ("voice_unknown", [], {"type": "start", "voice": "alice"}, "bad_request", False),
    ("binary_frame", [], b"\x00\x01\x02", "bad_request", False),
    ("end_without_text", [], {"type": "end"}, "bad_request", False),
    ("nothing_speakable", [{"type": "text", "text": "\U0001f389\U0001f389"}],
     {"type": "end"}, "bad_request", False),
    ("frame_too_large", [], {"type": "text", "text": "a" * 70_000}, "too_large", False),
    ("text_buffer_too_large", [{"type": "text", "text": _LONG_WORDS}],
     {"type": "text", "text": "b" * 100}, "too_large", True),
    ("text_after_end", [{"type": "text", "text": SHORT}, {"type": "end"}],
     {"type": "text", "text": "More."}, "bad_request", True),
    ("end_twice", [{"type": "text", "text": SHORT}, {"type": "end"}], {"type": "end"},
     "bad_request", True),
    ("start_during_utterance", [{"type": "text", "text": SHORT}],
     {"type": "start", "sample_rate": 16000}, "bad_request", True),
]


@pytest.mark.parametrize("setup, bad, code, running",
                         [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_an_error_and_the_session_stays_usable(engine, setup, bad, code,
                                                                running):
    async def main():
        async with serve_tts(engine, port=0, max_text_chars=200) as server, \
                connect(server.url) as ws:
            for m in setup:
                await ws.send(json.dumps(m))
            await ws.send(bad if isinstance(bad, (str, bytes)) else json.dumps(bad))
            errors, done = [], None
            # Collect the error; when an utterance is running, finish it too (sending end
            # unless the scene already did).
            if running and not any(m["type"] == "end" for m in setup):
                await send(ws, type="end")
            while not errors or (running and done is None):
                msg = await recv_json(ws)
                if msg["type"] == "chunk":
                    assert isinstance(await ws.recv(), bytes)
                elif msg["type"] == "error":
                    errors.append(msg)
                elif msg["type"] == "done":
                    done = msg
            # The session still works: a fresh utterance is spoken.
            await send(ws, type="text", text="Still here.")
            await send(ws, type="end")
            metas, blobs, last, _ = await read_utterance(ws)
            await wait_idle(engine)
            return errors, done, last, sum(len(b) for b in blobs)

    errors, done, last, nbytes = run(main())
    assert [e["code"] for e in errors] == [code], errors
    assert isinstance(errors[0]["message"], str) and errors[0]["message"]
    assert last["type"] == "done" and nbytes > 0


def test_frame_far_over_the_limit_closes_with_1009(engine):
    async def main():
        async with serve_tts(engine, port=0, max_frame_bytes=1024) as server, \
                connect(server.url) as ws:
            await ws.send(json.dumps({"type": "text", "text": "a" * 10_000}))
            with pytest.raises(ConnectionClosed):
                await recv_json(ws)
            return ws.protocol.close_code

    assert run(main()) == 1009


# ---------------------------------------------------------------------------- safety


def test_non_loopback_needs_a_token(engine):
    with pytest.raises(ValueError, match="without a token"):
        TTSServer(engine, "0.0.0.0")
    with pytest.raises(ValueError, match="without a token"):
        TTSServer(engine, "example.org")
    TTSServer(engine, "0.0.0.0", token="s3cret")  # allowed (not started)
    with pytest.raises(ValueError, match="token"):
        TTSServer(engine, "127.0.0.1", token="has space")
    with pytest.raises(ValueError, match="unknown limit"):
        serve_tts(engine, port=0, max_sesions=3)
    with pytest.raises(ValueError, match="max_sessions"):
        serve_tts(engine, port=0, max_sessions=0)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


def test_cli_serve_refuses_public_host_without_token(capsys, monkeypatch):
    monkeypatch.delenv("FPSTREAM_TOKEN", raising=False)
    assert cli_main(["serve", "--host", "0.0.0.0"]) == 2  # before any model is loaded
    assert "without a token" in capsys.readouterr().err


@pytest.mark.parametrize("how, ok", [
    ("none", False), ("header_wrong", False), ("query_wrong", False),
    ("header", True), ("header_lowercase_scheme", True), ("query", True)])
def test_token_auth(engine, how, ok):
    token = "s3cret-Token"

    async def main():
        async with serve_tts(engine, port=0, token=token) as server:
            url, headers = server.url, None
            if how == "header":
                headers = {"Authorization": f"Bearer {token}"}
            elif how == "header_lowercase_scheme":
                headers = {"Authorization": f"bearer {token}"}
            elif how == "header_wrong":
                headers = {"Authorization": "Bearer nope"}
            elif how == "query":
                url += f"?token={token}"
            elif how == "query_wrong":
                url += "?token=nope"
            try:
                async with connect(url, additional_headers=headers) as ws:
                    await send(ws, type="text", text="Hi there.")
                    await send(ws, type="end")
                    return (await read_utterance(ws))[2]["type"]
            except InvalidStatus as e:
                return e.response.status_code

    assert run(main()) == ("done" if ok else 401)


def test_http_routes(engine, tmp_path):
    page = tmp_path / "index.html"

    async def get(url: str) -> tuple[int, str]:
        def fetch():
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
        return await asyncio.to_thread(fetch)

    async def main():
        async with serve_tts(engine, port=0, web_index=page) as server:
            base = f"http://127.0.0.1:{server.port}"
            no_page = await get(base + "/")
            page.write_text("<html><body>fpstream</body></html>")
            with_page = await get(base + "/")
            other = await get(base + "/v2/tts")
        async with serve_tts(engine, port=0, web_index=page, token="t") as server:
            page_needs_token = await get(f"http://127.0.0.1:{server.port}/")
        return no_page, with_page, other, page_needs_token

    no_page, with_page, other, page_needs_token = run(main())
    assert no_page[0] == 404 and other[0] == 404 and "/v1/tts" in other[1]
    assert with_page == (200, "<html><body>fpstream</body></html>")
    assert page_needs_token[0] == 401


def test_busy_when_max_sessions_reached(engine):
    async def main():
        async with serve_tts(engine, port=0, max_sessions=1) as server:
            async with connect(server.url) as first:
                await send(first, type="start")
                await recv_json(first)  # the first session is established
                async with connect(server.url) as second:
                    err = await recv_json(second)
                    with pytest.raises(ConnectionClosed):
                        await recv_json(second)
                    code = second.protocol.close_code
            await asyncio.sleep(0.05)  # the first session's handler returns
            async with connect(server.url) as third:  # a slot is free again
                await send(third, type="text", text="Hi there.")
                await send(third, type="end")
                last = (await read_utterance(third))[2]
            return err, code, last

    err, code, last = run(main())
    assert err["type"] == "error" and err["code"] == "busy"
    assert code == 1013 and last["type"] == "done"


def test_idle_timeout_only_when_no_utterance_runs(engine, caplog):
    caplog.set_level(logging.INFO, logger="clients.server")
    caplog.set_level(logging.INFO, logger="clients.session")

    async def main():
        async with serve_tts(engine, port=0, idle_timeout=0.5) as server:
            async with connect(server.url) as ws:
                t0 = time.perf_counter()
                with pytest.raises(ConnectionClosed):
                    await recv_json(ws)
                idle = (time.perf_counter() - t0, ws.protocol.close_code,
                        ws.protocol.close_reason)
            async with connect(server.url, max_queue=4) as ws:
                # An utterance that outlives the timeout with no client message: a slow
                # reader holds it back (48 kHz float: far more than the socket buffers).
                await send(ws, type="start", encoding="pcm_f32le", sample_rate=48000)
                await recv_json(ws)
                await send(ws, type="text", text=LONG)
                await send(ws, type="end")
                t_end = time.time()  # the client's last message
                t0 = time.perf_counter()
                while True:
                    msg = await recv_json(ws)
                    if msg["type"] == "chunk":
                        await ws.recv()
                        if time.perf_counter() - t0 < 1.2:
                            await asyncio.sleep(0.1)
                    elif msg["type"] == "done":
                        break
                with pytest.raises(ConnectionClosed):
                    await recv_json(ws)
                closed = (ws.protocol.close_code, ws.protocol.close_reason)
            return idle, t_end, closed

    (idle_s, code, reason), t_end, closed = run(main())
    assert code == 1000 and reason == "idle timeout" and 0.45 <= idle_s < 2.0
    assert closed == (1000, "idle timeout")
    # Server-side times: the utterance ran past the timeout without any client message, and
    # the idle clock started when it was done.
    done_at = [r.created for r in caplog.records if "utterance done" in r.getMessage()]
    idle_at = [r.created for r in caplog.records if "closing" in r.getMessage()]
    assert len(done_at) == 1 and len(idle_at) == 2
    assert done_at[0] - t_end > 1.0
    assert 0.45 <= idle_at[1] - done_at[0] < 1.5


# ---------------------------------------------------------------------------- cancel, leaks


def test_cancel_mid_utterance_then_a_new_utterance(engine, short_ref):
    async def main():
        async with serve_tts(engine, port=0) as server, connect(server.url) as ws:
            await send(ws, type="start", encoding="pcm_f32le")
            await recv_json(ws)
            await send(ws, type="text", text=LONG)
            await send(ws, type="end")
            first = await recv_json(ws)
            assert first["type"] == "chunk" and isinstance(await ws.recv(), bytes)
            await send(ws, type="cancel")
            late = 0
            while True:  # chunks already on their way, each still with its binary frame
                msg = await recv_json(ws)
                if msg["type"] == "cancelled":
                    break
                assert msg["type"] == "chunk" and isinstance(await ws.recv(), bytes)
                late += 1
            stop_s = await wait_idle(engine)
            await send(ws, type="text", text=SHORT)
            await send(ws, type="end")
            return late, stop_s, await read_utterance(ws)

    late, stop_s, (metas, blobs, done, others) = run(main())
    # Chunks the server sent before it read the cancel still arrive (then "cancelled");
    # the rest of the ~54 s text is never made.
    assert late <= 12 and stop_s < 1.0
    assert done["type"] == "done" and others == [] and metas[0]["offset"] == 0
    audio = np.concatenate([np.frombuffer(b, "<f4") for b in blobs])
    np.testing.assert_array_equal(audio, short_ref.audio)


def test_slow_reader_pauses_synthesis(engine):
    async def main():
        async with serve_tts(engine, port=0) as server:
            ws = await connect(server.url, max_queue=4)
            await send(ws, type="start", encoding="pcm_f32le", sample_rate=48000)
            await recv_json(ws)
            # ~430 s of audio, ~80 MB at 48 kHz float: more than any socket buffers hold.
            await send(ws, type="text", text=LONG * 8)
            await send(ws, type="end")
            # Do not read. Synthesis must stall once the socket buffers, the server's write
            # buffer and the engine's few queued chunks are full.
            while not engine._requests:
                await asyncio.sleep(0.01)
            (req,) = engine._requests.values()
            history = [req.emitted]
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 8:
                await asyncio.sleep(0.25)
                history.append(req.emitted)
                if len(history) >= 3 and history[-1] == history[-3] and history[-1] > 0:
                    break
            state = (not req.finished, req.sink.outstanding, history)
            # A graceful close from a client that reads nothing more: the server must not
            # wait for its writes to drain (the close timeout) before dropping the work.
            closing = asyncio.ensure_future(ws.close())
            stop_s = await wait_idle(engine)
            ws.transport.abort()
            await asyncio.gather(closing, return_exceptions=True)
            return state, stop_s

    (running, outstanding, history), stop_s = run(main())
    assert stop_s < 0.5
    stalled_at = history[-1] / engine.sample_rate
    print(f"slow reader: synthesis stalled after {stalled_at:.1f} s of audio "
          f"(kernel socket buffers hold most of it)")
    # Unpaused, the tiny voice (~50x real time) would run on to the end of the text.
    assert running and history[-1] == history[-3] and stalled_at < 200
    assert outstanding <= engine.config.max_pending_chunks


@pytest.mark.parametrize("how", ["close", "abort"])
def test_disconnect_mid_utterance_stops_synthesis_within_one_chunk(engine, how):
    async def main():
        async with serve_tts(engine, port=0) as server:
            ws = await connect(server.url)
            await send(ws, type="start")
            await recv_json(ws)
            await send(ws, type="text", text=LONG)
            await send(ws, type="end")
            assert (await recv_json(ws))["type"] == "chunk"
            (req,) = engine._requests.values()
            chunks_at_disconnect = req.chunks
            if how == "close":
                await ws.close()
            else:
                ws.transport.abort()
            stop_s = await wait_idle(engine)
            await asyncio.sleep(0.05)
            return stop_s, req.chunks - chunks_at_disconnect, req.emitted, len(server.sessions)

    stop_s, after, emitted, sessions = run(main())
    print(f"disconnect ({how}) -> engine idle in {stop_s * 1000:.1f} ms; "
          f"{after} chunk(s) made after it")
    assert stop_s < 1.0 and sessions == 0
    # Work stops within one chunk: at most the step in flight finishes after the disconnect,
    # never the rest of the ~54 s text.
    assert after <= 1
    assert emitted < 20 * engine.sample_rate


def test_200_connect_disconnect_cycles_leak_nothing(engine):
    async def main():
        async with serve_tts(engine, port=0) as server:
            async def cycle(i: int) -> None:
                ws = await connect(server.url)
                await send(ws, type="text", text=LONG)
                if i % 2:  # half of them mid-audio, half before any audio
                    await send(ws, type="end")
                    assert (await recv_json(ws))["type"] in ("ready", "chunk")
                if i % 4 < 2:
                    await ws.close()
                else:
                    ws.transport.abort()
                    await ws.wait_closed()

            await cycle(0)  # warm up anything created once
            await wait_idle(engine)
            gc.collect()
            tasks_before = len(asyncio.all_tasks())
            t0 = time.perf_counter()
            for i in range(200):
                await cycle(i)
            wall = time.perf_counter() - t0
            await wait_idle(engine)
            for _ in range(100):  # handlers finish their close handshakes
                if not server.sessions and len(asyncio.all_tasks()) <= tasks_before:
                    break
                await asyncio.sleep(0.02)
            gc.collect()
            return tasks_before, len(asyncio.all_tasks()), len(server.sessions), wall

    before, after, sessions, wall = run(main())
    print(f"200 cycles in {wall:.1f} s; asyncio tasks {before} -> {after}")
    assert after <= before and sessions == 0 and engine.active_requests == 0
    assert len(engine.runner.mels) == 0  # mel buffers freed too


def test_server_close_ends_sessions_and_their_synthesis(engine):
    async def main():
        server = await serve_tts(engine, port=0).start()
        ws = await connect(server.url)
        await send(ws, type="text", text=LONG)
        await send(ws, type="end")
        assert (await recv_json(ws))["type"] == "ready"
        assert (await recv_json(ws))["type"] == "chunk"
        await server.close()
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
        await wait_idle(engine)
        return ws.protocol.close_code

    assert run(main()) == 1001


# ---------------------------------------------------------------------------- audio helpers

# G.711 µ-law reference values. Decoding: ITU-T G.711 table (16-bit scale, as the reference
# decoder and the former CPython audioop.ulaw2lin give them). Encoding: CPython 3.11's
# audioop.lin2ulaw on these 16-bit inputs.
ULAW_DECODE = {0x00: -32124, 0x0F: -16764, 0x10: -15996, 0x70: -120, 0x7E: -8, 0x7F: 0,
               0x80: 32124, 0x8F: 16764, 0xEF: 132, 0xF0: 120, 0xFE: 8, 0xFF: 0}
ULAW_ENCODE = {0: 0xFF, -1: 0x7E, 1: 0xFF, 4: 0xFE, -4: 0x7E, 100: 0xF2, -100: 0x72,
               1000: 0xCE, -1000: 0x4E, 8000: 0xA0, 32767: 0x80, -32768: 0x00, 32124: 0x80,
               -32124: 0x00}


def test_mulaw_known_values_and_round_trip():
    codes = np.array(list(ULAW_DECODE), np.uint8)
    assert mulaw_to_pcm16(codes).tolist() == list(ULAW_DECODE.values())
    pcm = np.array(list(ULAW_ENCODE), np.int16)
    assert pcm16_to_mulaw(pcm).tolist() == list(ULAW_ENCODE.values())
    # Every code decodes to a value that encodes back to itself (except the -0 code 0x7F,
    # which decodes to 0 = code 0xFF).
    all_codes = np.arange(256, dtype=np.uint8)
    back = pcm16_to_mulaw(mulaw_to_pcm16(all_codes))
    assert (back == all_codes).sum() == 255 and back[0x7F] == 0xFF
    # Companding keeps the SNR nearly constant over a wide range of levels (G.711: about
    # 38 dB); 8-bit linear PCM would give ~6 dB at the quietest of these.
    t = np.arange(8000) / 8000
    for amplitude, min_snr in ((0.5, 35), (0.05, 35), (0.005, 27)):
        x = (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        y = mulaw_to_float(float_to_mulaw(x))
        assert 10 * np.log10(np.sum(x ** 2) / np.sum((x - y) ** 2)) > min_snr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop  # CPython <= 3.12: the whole 16-bit range against its encoder
        except ImportError:
            return
    full = np.arange(-32768, 32768, dtype=np.int16)
    assert pcm16_to_mulaw(full).tobytes() == audioop.lin2ulaw(full.tobytes(), 2)


def test_stream_resampler_has_no_seams():
    rng = np.random.default_rng(0)
    t = np.arange(22050 * 2) / 22050
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t))).astype(
        np.float32)
    for rate in (8000, 16000, 48000):
        rs = StreamResampler(22050, rate)
        cuts = [0, 100, 3072, 3073, 9000, 20000, len(x)]
        parts = [rs.process(x[a:b], last=b == len(x)) for a, b in zip(cuts, cuts[1:])]
        out = np.concatenate(parts)
        whole = resample(x, 22050, rate)
        assert len(out) == len(whole) == round(len(x) * rate / 22050)
        np.testing.assert_allclose(out, whole, atol=1e-6)
        assert rs.samples_in == 0  # reset after last: ready for the next stream
    same = StreamResampler(22050, 22050)
    np.testing.assert_array_equal(same.process(x), x)
    with pytest.raises(ValueError):
        StreamResampler(22050, 0)
    with pytest.raises(ValueError):
        resample(np.zeros((2, 10), np.float32), 22050, 16000)
    assert pcm16_to_float(np.array([32767, -32767, 0], np.int16)).tolist() == [1.0, -1.0, 0.0]


def test_a_taken_port_is_an_oserror(engine):
    async def main():
        async with serve_tts(engine, port=0) as first:
            with pytest.raises(OSError):
                await serve_tts(engine, port=first.port).start()
            return first.port

    assert run(main()) > 0
