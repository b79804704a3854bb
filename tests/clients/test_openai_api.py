"""The OpenAI-compatible speech API (clients/openai_api.py, clients/app.py), through the real
``openai`` client (sync and async), raw HTTP read line by line, and curl; every bad input
answered in OpenAI's error shape, and the server usable afterwards."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import shutil
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from urllib.parse import urlsplit

from server_thread import ServerThread
from clients import openai_api as oa
from clients.server import serve_tts
from engine.pcm import pcm16_to_float, resample

openai = pytest.importorskip("openai")

TEXT = "Hello there, my friend. How are you today?"
TOKEN = "s3cret-token"


class _ServerThread(ServerThread):
    """Our server for ``engine`` in a thread; ``url`` is its HTTP base URL."""

    def __init__(self, engine, **kwargs):
        super().__init__(serve_tts(engine, port=0, **kwargs))
        self.url = self.servers[0].http_url


@pytest.fixture(scope="module")
def server(engine):
    s = _ServerThread(engine, max_input_chars=200, max_sessions=2)
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="anything", max_retries=0)


@pytest.fixture(scope="module")
def reference_24k(engine) -> np.ndarray:
    """The engine's audio for TEXT at OpenAI's 24 kHz, quantized to 16 bits."""
    audio = resample(engine.synthesize(TEXT).audio, engine.sample_rate, oa.OPENAI_RATE)
    return np.round(np.clip(audio, -1, 1) * 32767) / 32767


def _close(a: np.ndarray, b: np.ndarray) -> None:
    """Streamed and whole-signal resampling agree but for float rounding at seams."""
    assert abs(len(a) - len(b)) <= 2, (len(a), len(b))
    n = min(len(a), len(b))
    err = np.abs(a[:n] - b[:n])
    assert err.max() < 2e-3, err.max()


def request(url: str, method: str = "GET", path: str = "/", body: bytes | dict | None = None,
            headers: dict | None = None) -> http.client.HTTPResponse:
    """A plain HTTP request (stdlib only); the response is open for streaming reads."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    response.connection = conn  # to hang up mid-response
    return response


def get_json(url: str, path: str, **kw) -> tuple[int, dict]:
    r = request(url, "GET", path, **kw)
    return r.status, json.loads(r.read())


def post(url: str, body, headers: dict | None = None) -> tuple[int, bytes]:
    r = request(url, "POST", "/v1/audio/speech", body, headers)
    return r.status, r.read()


def wait_idle(engine, timeout: float = 5.0) -> None:
    t0 = time.monotonic()
    while engine.active_requests and time.monotonic() - t0 < timeout:
        time.sleep(0.01)
    assert engine.active_requests == 0


# ---------------------------------------------------------------------------- happy paths


def test_models_voices_and_health(server, client):
    assert [m.id for m in client.models.list()] == [oa.MODEL_ID]
    status, voices = get_json(server.url, "/v1/audio/voices")
    assert status == 200 and voices == {"voices": [{"id": "default",
                                                    "name": oa.VOICES["default"]}]}
    status, health = get_json(server.url, "/healthz")
    assert status == 200 and health["status"] == "ok"


def test_sync_client_pcm_streamed_to_file(client, tmp_path, reference_24k, engine):
    out = tmp_path / "speech.pcm"
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=TEXT, response_format="pcm") as r:
        assert r.headers["content-type"] == "audio/pcm"
        r.stream_to_file(out)
    _close(pcm16_to_float(out.read_bytes()), reference_24k)
    wait_idle(engine)


def test_sync_client_wav_chunks_arrive_before_the_end(client, reference_24k):
    arrivals, data = [], b""
    t0 = time.perf_counter()
    with client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice={"id": "default"}, input=TEXT + " " + TEXT,
            response_format="wav", instructions="Speak cheerfully.") as r:
        for part in r.iter_bytes(4096):
            arrivals.append(time.perf_counter() - t0)
            data += part
    assert len(arrivals) > 2  # sent as it was made, not in one piece
    header = data[:44]
    assert header[:4] == b"RIFF" and header[8:12] == b"WAVE"
    assert int.from_bytes(header[24:28], "little") == oa.OPENAI_RATE
    audio = pcm16_to_float(data[44:])
    assert len(audio) > 1.8 * len(reference_24k)


def test_async_client_and_speed(server, reference_24k):
    async def main() -> bytes:
        c = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        r = await c.audio.speech.create(model="tts-1", voice="nova", input=TEXT,
                                        response_format="pcm", speed=2.0)
        return r.content

    audio = pcm16_to_float(asyncio.run(main()))
    # Twice the pace: about half the audio (pauses scale with the pace too).
    assert 0.4 * len(reference_24k) < len(audio) < 0.62 * len(reference_24k)


@pytest.mark.parametrize("fmt", ["flac", "mp3", "opus"])
def test_compressed_formats_decode(client, fmt, tmp_path):
    out = tmp_path / f"speech.{fmt}"
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=TEXT, response_format=fmt) as r:
        assert r.headers["content-type"] == oa.FORMATS[fmt][0]
        r.stream_to_file(out)
    audio, rate = sf.read(out)
    assert rate == oa.OPENAI_RATE
    assert len(audio) > 1.0 * rate and np.abs(audio).max() > 0.01


def test_sse_read_line_by_line(server, reference_24k):
    body = {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": TEXT,
            "response_format": "pcm", "stream_format": "sse"}
    events = []
    # Accept as the openai client sends it: the server does not negotiate on it.
    r = request(server.url, "POST", "/v1/audio/speech", body,
                {"Accept": "application/octet-stream"})
    assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
    while line := r.readline():  # the stream, line by line as it arrives
        if line.startswith(b"data: "):
            events.append(json.loads(line[6:]))
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) > 1 and events[-1]["type"] == "speech.audio.done"
    assert events[-1]["usage"]["input_tokens"] == len(TEXT)
    audio = pcm16_to_float(b"".join(base64.b64decode(e["audio"]) for e in deltas))
    _close(audio, reference_24k)


def test_sse_through_the_openai_client(client):
    with client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice="alloy", input=TEXT, response_format="pcm",
            stream_format="sse") as r:
        kinds = [json.loads(line[6:])["type"] for line in r.iter_lines()
                 if line.startswith("data: ")]
    assert kinds[-1] == "speech.audio.done" and kinds.count("speech.audio.delta") > 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl(server, tmp_path, reference_24k):
    out = tmp_path / "speech.pcm"
    body = json.dumps({"model": "tts-1", "voice": "alloy", "input": TEXT,
                       "response_format": "pcm"})
    r = subprocess.run(["curl", "-sS", "--fail-with-body", server.url + "/v1/audio/speech",
                        "-H", "Content-Type: application/json", "-d", body, "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    _close(pcm16_to_float(out.read_bytes()), reference_24k)


# ---------------------------------------------------------------------------- bad input

BAD = [
    # (description, body or raw bytes, content type, status, param)
    ("invalid JSON", b"{not json", "application/json", 400, None),
    ("wrong content type", json.dumps({"model": "m", "input": "Hi.", "voice": "alloy"}).encode(),
     "text/plain", 400, None),
    ("not an object", b"[1, 2]", "application/json", 400, None),
    ("missing input", {"model": "m", "voice": "alloy"}, None, 400, "input"),
    ("missing voice", {"model": "m", "input": "Hi."}, None, 400, "voice"),
    ("unknown voice", {"model": "m", "input": "Hi.", "voice": "bob"}, None, 400, "voice"),
    ("unknown field", {"model": "m", "input": "Hi.", "voice": "alloy", "x": 1}, None, 400, "x"),
    ("speed too low", {"model": "m", "input": "Hi.", "voice": "alloy", "speed": 0.1}, None, 400,
     "speed"),
    ("speed too high", {"model": "m", "input": "Hi.", "voice": "alloy", "speed": 4.5}, None,
     400, "speed"),
    ("speed not a number", {"model": "m", "input": "Hi.", "voice": "alloy", "speed": "fast"},
     None, 400, "speed"),
    ("unknown format", {"model": "m", "input": "Hi.", "voice": "alloy",
                        "response_format": "ogg"}, None, 400, "response_format"),
    ("format not a string", {"model": "m", "input": "Hi.", "voice": "alloy",
                             "response_format": ["pcm"]}, None, 400, "response_format"),
    ("aac refused", {"model": "m", "input": "Hi.", "voice": "alloy", "response_format": "aac"},
     None, 400, "response_format"),
    ("bad stream_format", {"model": "m", "input": "Hi.", "voice": "alloy",
                           "stream_format": "chunks"}, None, 400, "stream_format"),
    ("input too long", {"model": "m", "input": "a" * 201, "voice": "alloy"}, None, 413, "input"),
    ("empty input", {"model": "m", "input": "  ", "voice": "alloy"}, None, 400, "input"),
    ("nothing speakable", {"model": "m", "input": "🙂🙂", "voice": "alloy"}, None, 400, "input"),
    ("body too large", b"{" + b" " * 70_000 + b"}", "application/json", 413, None),
]


@pytest.mark.parametrize("what,body,ctype,status,param", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_answered_in_openais_shape(server, client, engine, what, body, ctype,
                                                status, param):
    code, data = post(server.url, body, None if isinstance(body, dict) else
                      {"Content-Type": ctype})
    assert code == status, data
    err = json.loads(data)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param
    # The server is still usable.
    ok = client.audio.speech.create(model="tts-1", voice="alloy", input="Fine.",
                                    response_format="pcm")
    assert len(ok.content) > 1000
    wait_idle(engine)


def test_openai_client_raises_on_bad_input(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", speed=9)
    assert e.value.body["param"] == "speed"


def test_token_is_required_when_set(engine):
    s = _ServerThread(engine, token=TOKEN)
    try:
        bad = openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
        assert get_json(s.url, "/v1/models")[0] == 401
        assert get_json(s.url, "/healthz")[0] == 200  # for load balancers
        good = openai.OpenAI(base_url=s.url + "/v1", api_key=TOKEN, max_retries=0)
        assert len(good.audio.speech.create(model="tts-1", voice="alloy", input="Hi.",
                                            response_format="pcm").content) > 1000
    finally:
        s.close()


def test_busy_is_503_and_disconnect_stops_synthesis(server, engine):
    """Two requests at once is this server's limit; a third gets 503. A client that goes
    away mid-response stops its synthesis."""
    long_text = ("This sentence is long enough to take a while to speak. " * 3).strip()
    body = {"model": "m", "input": long_text, "voice": "alloy", "response_format": "pcm"}
    responses = [request(server.url, "POST", "/v1/audio/speech", body) for _ in range(2)]
    for r in responses:
        assert r.status == 200
        assert len(r.read1(1024)) > 0  # audio has started
    code, data = post(server.url, body)
    assert code == 503 and json.loads(data)["error"]["code"] == "server_busy"
    for r in responses:
        r.connection.close()  # hang up mid-response
    wait_idle(engine, timeout=10)


def test_a_bug_is_a_500_internal_and_the_server_goes_on(server, client, monkeypatch):
    async def broken(engine, req):
        raise RuntimeError("a bug in the engine")

    monkeypatch.setattr(oa, "speech_chunks", broken)
    code, data = post(server.url, {"model": "m", "input": "Hi.", "voice": "alloy"})
    assert code == 500
    err = json.loads(data)["error"]
    assert err["type"] == "server_error" and err["code"] == "internal"
    assert "a bug" not in err["message"]  # details go to the log, not to the client
    monkeypatch.undo()
    assert len(client.audio.speech.create(model="tts-1", voice="alloy", input="Fine.",
                                          response_format="pcm").content) > 1000
