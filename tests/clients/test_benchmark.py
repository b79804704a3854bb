"""``fpstream bench ttfa`` and its measuring code (clients/benchmark.py): the statistics on
hand-made chunk arrivals, target URLs, the command in-process and against a websocket, an
OpenAI-compatible and a Wyoming server (one table, one plot for all), and bad arguments as one
``fpstream: error:`` line with exit status 2."""

from __future__ import annotations

import asyncio
import csv
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from server_thread import ServerThread
from clients import benchmark as bm
from clients.cli import main
from clients.server import serve_tts
from clients.wyoming import serve_wyoming

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
TINY = ["--fastpitch", str(DATA / "tiny_fastpitch.pt"), "--hifigan", str(DATA / "tiny_hifigan.pt"),
        "--device", "cpu"]
FAST = ["--runs", "2", "--warmup", "0", "--no-progress"]

# Arrivals and durations in binary fractions, so that every expected number is exact.
ARRIVALS = [0.0, 0.25, 1.5, 1.75]
DURATIONS = [0.5, 0.5, 0.25, 0.5]


# ---------------------------------------------------------------------------- statistics


def test_percentiles_are_nearest_rank():
    xs = list(range(1, 101))
    assert [bm.percentile(xs, p) for p in (0, 1, 50, 95, 99, 100)] == [1, 1, 50, 95, 99, 100]
    assert [bm.percentile([3, 1, 2, 4], p) for p in (25, 50, 75, 95)] == [1, 2, 3, 4]
    assert [bm.percentile(list(range(20)), p) for p in (50, 95, 99)] == [9, 18, 19]
    assert bm.percentile([7.5], 99) == 7.5
    with pytest.raises(ValueError):
        bm.percentile([], 50)


def test_gaps_and_playback_without_prebuffer():
    assert bm.chunk_gaps(ARRIVALS) == [0.25, 1.25, 0.25]
    # Chunk 1 waits for chunk 0 (ends 0.5); chunk 2 comes 0.5 s after chunk 1 ended (1.0):
    # an underrun; chunk 3 comes exactly when chunk 2 ends (1.75): no gap.
    assert bm.playback_starts(ARRIVALS, DURATIONS) == [0.0, 0.5, 1.5, 1.75]
    assert bm.playback_underruns(ARRIVALS, DURATIONS) == (1, 0.5)
    assert bm.playback_underruns([], []) == (0, 0)
    assert bm.playback_underruns([0.0, 5.0, 9.0], [1.0, 1.0, 1.0]) == (2, 7.0)


def test_prebuffer_shortens_and_then_removes_the_underrun():
    assert bm.playback_starts(ARRIVALS, DURATIONS, 0.25) == [0.25, 0.75, 1.5, 1.75]
    assert bm.playback_underruns(ARRIVALS, DURATIONS, 0.25) == (1, 0.25)
    assert bm.playback_starts(ARRIVALS, DURATIONS, 0.5) == [0.5, 1.0, 1.5, 1.75]
    assert bm.playback_underruns(ARRIVALS, DURATIONS, 0.5) == (0, 0)


def test_run_and_summary():
    run = bm.Run(list(ARRIVALS), list(DURATIONS), wall=3.5)
    assert (run.ttfa, run.last, run.audio_s, run.rtf) == (0.0, 1.75, 1.75, 0.5)
    later = bm.Run([0.5, 0.75], [0.25, 0.25], wall=1.0)
    st = bm.summarize_runs([run, later], prebuffer=0.25)
    assert (st["ttfa_ms_p50"], st["ttfa_ms_p95"], st["ttfa_ms_p99"]) == (0.0, 500.0, 500.0)
    assert st["last_audio_ms_p50"] == 750.0 and st["rtf_p50"] == 0.5
    assert st["gap_ms_p95"] == 1250.0  # gaps 250, 1250, 250 and 250 ms
    assert (st["underruns"], st["underrun_gap_ms"], st["streams"]) == (1, 250.0, 2)
    with pytest.raises(bm.BenchError, match="no audio"):
        bm.Run().end(0.0)


def test_token_deltas_rebuild_the_text():
    deltas = bm.token_deltas(bm.PHRASE_128)
    assert "".join(deltas) == bm.PHRASE_128 and 25 < len(deltas) < 45
    assert all(len(d) <= 5 for d in deltas)
    assert bm.token_deltas("Hi disappearance") == ["Hi", " dis", "appe", "aran", "ce"]


def test_imports_without_torch():
    """The in-process target's engine comes from the caller: no torch at import."""
    code = "import sys; sys.modules['torch'] = None; import clients.benchmark"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def test_the_phrase_is_the_bench_phrase():
    text = (ROOT / "bench" / "data" / "benchmark_phrase_128.txt").read_text().strip()
    assert bm.PHRASE_128 == text and len(text) == 128


@pytest.mark.parametrize("spec, api, want", [
    ("ws://h:1", None, ("ws", "ws://h:1/v1/tts")),
    ("wss://h:1/custom", None, ("ws", "wss://h:1/custom")),
    ("http://h:1", None, ("openai", "http://h:1/v1")),
    ("https://api.example.com/v1/", None, ("openai", "https://api.example.com/v1/")),
    ("tcp://h:10200", None, ("wyoming", "tcp://h:10200")),
    ("openai+http://h:1/v1", None, ("openai", "http://h:1/v1")),
    ("wyoming+tcp://h:2", None, ("wyoming", "tcp://h:2")),
    ("http://h:1/v1", "openai", ("openai", "http://h:1/v1")),
])
def test_targets_from_urls(spec, api, want):
    t = bm.parse_target(spec, api)
    assert (t.api, t.url) == want


def test_targets_of_the_command():
    ts = bm.parse_targets(None, None, ["ws://h:1", "wyoming+tcp://h:2"])
    assert [t.api for t in ts] == ["engine", "ws", "wyoming"]
    assert ts[0].label == "in-process"
    ts = bm.parse_targets("http://h:1", "openai", ["tcp://h:2"])
    assert [t.label for t in ts] == ["openai http://h:1/v1", "wyoming tcp://h:2"]


# ---------------------------------------------------------------------------- the command


def _table(out: str) -> list[list[str]]:
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("target"))
    rows = []
    for line in lines[head + 1:]:
        if line.startswith("TTFA /"):
            break
        rows.append(line.split())
    return rows


def test_in_process_prints_the_table_and_writes_csv_and_plot(tmp_path, capsys):
    out_csv, png = tmp_path / "ttfa.csv", tmp_path / "ttfa.png"
    code = main(["bench", "ttfa", *TINY, *FAST, "--csv", str(out_csv), "--plot", str(png)])
    out = capsys.readouterr().out
    assert code == 0
    header = out.splitlines()[0]
    for word in ("device cpu", "CPU ", "torch ", "commit "):
        assert word in header, header
    assert "the 128-character phrase, whole" in out and "prebuffer 150 ms" in out
    (row,) = _table(out)
    assert row[0] == "in-process" and row[-1] == "2"
    ttfa50, ttfa95, ttfa99, last50 = map(float, row[1:5])
    assert 0 < ttfa50 <= ttfa95 <= ttfa99 <= last50
    (line,) = csv.DictReader(out_csv.open())
    assert line["target"] == "in-process" and line["api"] == "engine"
    assert line["runs"] == "2" and line["streams"] == "2" and line["torch"]
    assert float(line["ttfa_ms_p50"]) == pytest.approx(ttfa50, abs=0.06)
    assert float(line["audio_s"]) > 1 and float(line["rtf_p50"]) > 0
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000


class _Servers(ServerThread):
    """Our websocket + OpenAI server and our Wyoming server, in a thread (the command runs
    its own event loop)."""

    def __init__(self, engine):
        super().__init__(serve_tts(engine, port=0), serve_wyoming(engine, "tcp://127.0.0.1:0"))
        self.http, self.wyoming = self.servers
        self.urls = {"ws": self.http.url, "openai": self.http.http_url + "/v1",
                     "wyoming": self.wyoming.uri}


@pytest.fixture(scope="module")
def servers(served_engine):
    s = _Servers(served_engine)
    yield s
    s.close()


@pytest.mark.parametrize("api", ["ws", "openai", "wyoming"])
def test_against_a_server(servers, api, tmp_path, capsys):
    out_csv = tmp_path / "s.csv"
    rate = 400.0
    code = main(["bench", "ttfa", "--server", servers.urls[api], "--api", api, *FAST,
                 "--token-rate", str(rate), "--csv", str(out_csv)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| client (servers: their own) | CPU " in out and f"tokens at {rate:g}/s" in out
    (row,) = _table(out)
    label = servers.urls[api] if api == "ws" else f"{api} {servers.urls[api]}"
    assert " ".join(row[:len(label.split())]) == label
    (line,) = csv.DictReader(out_csv.open())
    assert line["api"] == api and line["url"] == servers.urls[api]
    ttfa = float(line["ttfa_ms_p50"])
    tokens_ms = (len(bm.token_deltas(bm.PHRASE_128)) - 1) / rate * 1e3
    if api == "openai":  # whole text only: sent once the last token came, timed from the first
        assert ttfa > tokens_ms
    assert 0 < ttfa <= float(line["last_audio_ms_p50"]) and float(line["audio_s"]) > 1


def test_compare_in_process_and_all_three_fronts(servers, tmp_path, capsys):
    png, out_csv = tmp_path / "cmp.png", tmp_path / "cmp.csv"
    code = main(["bench", "ttfa", *TINY, *FAST, "--compare", servers.urls["ws"],
                 "openai+" + servers.urls["openai"], "wyoming+" + servers.urls["wyoming"],
                 "--plot", str(png), "--csv", str(out_csv)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("target ") == 1  # one table
    rows = _table(out)
    assert [r[0] for r in rows] == ["in-process", servers.urls["ws"], "openai", "wyoming"]
    assert [r["api"] for r in csv.DictReader(out_csv.open())] == ["engine", "ws", "openai",
                                                                  "wyoming"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_other_runners_directly(servers):
    """SSE from the OpenAI API and a one-shot Wyoming synthesize (servers that do not
    stream): the same audio length as their streaming twins."""
    sse = bm.openai_run(servers.urls["openai"], bm.PHRASE_128, sse=True)
    pcm = bm.openai_run(servers.urls["openai"], bm.PHRASE_128)
    assert sse.audio_s == pytest.approx(pcm.audio_s, abs=1e-9) and pcm.audio_s > 1
    host, port = servers.wyoming.host, servers.wyoming.port
    assert asyncio.run(bm.wyoming_streams(host, port)) is True
    one = asyncio.run(bm.wyoming_run(host, port, bm.PHRASE_128, streaming=False))
    streamed = asyncio.run(bm.wyoming_run(host, port, bm.token_deltas(bm.PHRASE_128)))
    assert one.audio_s == pytest.approx(streamed.audio_s, abs=1e-9) and one.audio_s > 1
    assert len(one.arrivals) > 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, msg", [
    (["--server", "ws://127.0.0.1:1", "--api", "grpc"], "unknown API 'grpc'"),
    (["--compare", "grpc+http://127.0.0.1:1"], "unknown API 'grpc'"),
    (["--server", "localhost:8765"], "bad server URL"),
    (["--server", "http://127.0.0.1:99999/v1"], "bad server URL"),
    (["--server", "tcp://127.0.0.1"], "bad server URL"),
    (["--server", "ws://127.0.0.1:1", "--api", "openai"], "bad server URL"),
    (["--api", "ws"], "--api applies to --server"),
    (["--runs", "0"], "--runs must be >= 1"),
    (["--clients", "0"], "--clients must be > 0"),
    (["--token-rate", "0"], "--token-rate must be > 0"),
    (["--text", "  "], "the text is empty"),
    (["--file", "/no/such/file.txt"], "cannot read"),
    (["--server", "ws://127.0.0.1:{port}"], "cannot reach ws://127.0.0.1:{port}/v1/tts"),
    (["--server", "http://127.0.0.1:{port}"], "cannot reach openai http://127.0.0.1:{port}/v1"),
    (["--server", "tcp://127.0.0.1:{port}"], "cannot reach wyoming tcp://127.0.0.1:{port}"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, msg, capsys):
    port = str(_closed_port())
    args = [a.replace("{port}", port) for a in args]
    code = main(["bench", "ttfa", *FAST, "--timeout", "10", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("fpstream: error: ") and err.count("\n") == 1, err
    assert msg.replace("{port}", port) in err, err
