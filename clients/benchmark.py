"""Time-to-first-audio measuring, for ``fpstream bench ttfa`` and the scripts in ``bench/``: the
one implementation of the timers, the statistics and the runners of every target.

* **Statistics** of a stream's chunks (arrival times, durations): :func:`percentile` (nearest
  rank), :func:`chunk_gaps`, :func:`playback_starts` / :func:`playback_underruns` (a real-time
  player starting ``prebuffer`` s after the first chunk, stalling when one is late) and
  :class:`Run` (time to first / last audio, streaming RTF = audio s / wall s).
* **Runners**, one per target, each timing one stream from handing over the text (connecting
  is not counted): :func:`engine_run` (in-process ``Engine.stream``), :func:`ws_run` (our
  websocket protocol), :func:`openai_run` (any OpenAI-compatible ``POST {base}/audio/speech``,
  pcm s16le at 24 kHz), :func:`wyoming_run` (any Wyoming TTS: synthesize-start/chunk/stop when
  its info says it streams, else one ``synthesize``). Text goes whole or as LLM-style token
  deltas (:func:`token_deltas`) at a token rate; APIs that take whole text only (OpenAI,
  one-shot Wyoming) get it when its last token has come, timed from the first token too.
* :class:`Benchmark` runs targets in turn (``clients`` concurrent streams each);
  :func:`environment`, :func:`format_table`, :func:`write_csv` and :func:`plot` report
  (``fpstream bench ttfa`` in ``clients/cli.py`` puts it together). No torch at module level:
  the in-process engine comes from the caller.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import datetime as _dt
import http.client
import json
import math
import os
import platform
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, Iterator, Sequence
from urllib.parse import urlsplit

from wyoming.audio import AudioChunk, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.tts import (Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop,
                         SynthesizeStopped, SynthesizeVoice)

from engine.errors import InputError

from .client import TTSError, synthesize
from .protocol import PATH as WS_PATH

# The 128-character benchmark phrase (bench/data/benchmark_phrase_128.txt), the default text.
PHRASE_128 = ("His disappearance gave color and substance to evil reports already in "
              "circulation that the will and conveyance above referred to")
OPENAI_RATE = 24000  # OpenAI's speech API: pcm is s16le mono at 24 kHz
APIS = ("ws", "openai", "wyoming")
SCHEMES = {"ws": ("ws", "wss"), "openai": ("http", "https"), "wyoming": ("tcp",)}
ROOT = Path(__file__).resolve().parents[1]


class BenchError(InputError):
    """A target that answered wrongly (an HTTP error, an error event, no audio)."""


# ---------------------------------------------------------------------------- statistics


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile, p in [0, 100]: the smallest sample with at least p % of the
    samples at or below it."""
    s = sorted(xs)
    if not s:
        raise ValueError("percentile of no samples")
    rank = math.ceil(p * len(s) / 100)
    return s[min(len(s), max(1, rank)) - 1]


def chunk_gaps(arrivals: Sequence[float]) -> list[float]:
    """Time between consecutive chunk arrivals."""
    return [b - a for a, b in zip(arrivals, arrivals[1:])]


def playback_starts(arrivals: Sequence[float], durations: Sequence[float],
                    prebuffer: float = 0.0) -> list[float]:
    """When a real-time player starts each chunk: the first ``prebuffer`` s after it arrives,
    each next one when the audio before it has finished, or when it arrives if that is later
    (an underrun: the listener hears a gap, then playback resumes)."""
    starts: list[float] = []
    end = None
    for t, d in zip(arrivals, durations):
        starts.append(t + prebuffer if end is None else max(t, end))
        end = starts[-1] + d
    return starts


def playback_underruns(arrivals: Sequence[float], durations: Sequence[float],
                       prebuffer: float = 0.0) -> tuple[int, float]:
    """(underruns, total gap s) of :func:`playback_starts`: chunks that arrived after the
    audio before them had finished playing, and the silence they caused."""
    starts = playback_starts(arrivals, durations, prebuffer)
    stalls = [s - (s0 + d0) for s, s0, d0 in zip(starts[1:], starts, durations)]
    late = [x for x in stalls if x > 0]
    return len(late), sum(late)


@dataclass
class Run:
    """One stream: each audio chunk's arrival (s after the text was handed over) and audio
    duration (s), and when the stream ended (``wall``, s)."""

    arrivals: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    wall: float = 0.0

    def add(self, t0: float, seconds: float) -> None:
        self.arrivals.append(time.perf_counter() - t0)
        self.durations.append(seconds)

    def end(self, t0: float) -> "Run":
        self.wall = time.perf_counter() - t0
        if not self.arrivals:
            raise BenchError("no audio came back")
        return self

    @property
    def ttfa(self) -> float:
        return self.arrivals[0]

    @property
    def last(self) -> float:
        return self.arrivals[-1]

    @property
    def audio_s(self) -> float:
        return sum(self.durations)

    @property
    def rtf(self) -> float:
        return self.audio_s / self.wall if self.wall > 0 else math.inf

    @property
    def gaps(self) -> list[float]:
        return chunk_gaps(self.arrivals)


def summarize_runs(runs: Sequence[Run], prebuffer: float = 0.0) -> dict[str, Any]:
    """The table's numbers for one target (times in ms)."""
    ttfa = [r.ttfa * 1e3 for r in runs]
    gaps = [g * 1e3 for r in runs for g in r.gaps] or [0.0]
    under = [playback_underruns(r.arrivals, r.durations, prebuffer) for r in runs]
    return {"ttfa_ms_p50": percentile(ttfa, 50), "ttfa_ms_p95": percentile(ttfa, 95),
            "ttfa_ms_p99": percentile(ttfa, 99),
            "last_audio_ms_p50": percentile([r.last * 1e3 for r in runs], 50),
            "rtf_p50": percentile([r.rtf for r in runs], 50),
            "gap_ms_p95": percentile(gaps, 95), "underruns": sum(u for u, _ in under),
            "underrun_gap_ms": sum(g for _, g in under) * 1e3, "streams": len(runs),
            "audio_s": percentile([r.audio_s for r in runs], 50)}


# ---------------------------------------------------------------------------- text


def token_deltas(text: str) -> list[str]:
    """Split text like an LLM tokenizer would: words with their leading space, long words
    cut into ~4-character pieces."""
    out = []
    for w in re.findall(r"\s*\S+", text):
        while len(w) > 5:
            out.append(w[:4])
            w = w[4:]
        out.append(w)
    return out


def paced(deltas: Iterable[str], rate: float | None) -> Iterator[str]:
    """Deltas at ``rate`` per second from the first (None: all at once)."""
    t0 = time.perf_counter()
    for i, d in enumerate(deltas):
        wait = t0 + i / rate - time.perf_counter() if rate else 0
        if wait > 0:
            time.sleep(wait)
        yield d


async def apaced(deltas: Iterable[str], rate: float | None) -> AsyncIterator[str]:
    """:func:`paced` for the event loop."""
    t0 = time.perf_counter()
    for i, d in enumerate(deltas):
        wait = t0 + i / rate - time.perf_counter() if rate else 0
        if wait > 0:
            await asyncio.sleep(wait)
        yield d


def _deltas(text: str | Iterable[str]) -> list[str]:
    return [text] if isinstance(text, str) else list(text)


# ---------------------------------------------------------------------------- runners


def engine_run(engine: Any, text: str | Iterable[str], token_rate: float | None = None) -> Run:
    """One in-process ``engine.stream``: ``text`` whole, or deltas paced at ``token_rate``."""
    source = text if isinstance(text, str) else paced(list(text), token_rate)
    run = Run()
    t0 = time.perf_counter()
    for chunk in engine.stream(source):
        run.add(t0, len(chunk.audio) / chunk.sample_rate)
    return run.end(t0)


async def ws_run(url: str, text: str | Iterable[str], token_rate: float | None = None, *,
                 token: str | None = None, voice: str | None = None) -> Run:
    """One utterance over this project's websocket protocol, timed from the first delta."""
    t0: list[float] = []

    async def timed() -> AsyncIterator[str]:
        async for d in apaced(_deltas(text), token_rate):
            if not t0:
                t0.append(time.perf_counter())
            yield d

    run = Run()
    async with synthesize(url, timed(), token=token,
                          **({"voice": voice} if voice else {})) as s:
        async for chunk in s:
            run.add(t0[0], chunk.duration)
    return run.end(t0[0])


def openai_run(base_url: str, text: str | Iterable[str], token_rate: float | None = None, *,
               model: str = "tts-1", voice: str = "alloy", api_key: str | None = None,
               sse: bool = False, timeout: float = 60.0) -> Run:
    """One ``POST {base_url}/audio/speech`` (pcm; ``sse``: as ``speech.audio.delta`` events),
    timed from the first token (blocking: run it in a thread)."""
    u = urlsplit(base_url)
    deltas = _deltas(text)
    body = {"model": model, "voice": voice, "input": "".join(deltas), "response_format": "pcm"}
    if sse:
        body["stream_format"] = "sse"
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    conn_type = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = conn_type(u.hostname, u.port, timeout=timeout)
    conn.connect()  # connecting is not counted
    try:
        t0 = time.perf_counter()
        for _ in paced(deltas, token_rate):  # the whole text exists once its last token came
            pass
        conn.request("POST", u.path.rstrip("/") + "/audio/speech", body=json.dumps(body),
                     headers=headers)
        r = conn.getresponse()
        if r.status != 200:
            raise BenchError(f"HTTP {r.status} from {base_url}/audio/speech: "
                             f"{r.read(300).decode(errors='replace').strip()}")
        run, nbytes = Run(), 0
        while part := (r.readline() if sse else r.read1(65536)):
            if sse:  # speech.audio.delta events; other lines and events carry no audio
                event = _json(part[5:]) if part.startswith(b"data:") else None
                if not isinstance(event, dict) or event.get("type") != "speech.audio.delta":
                    continue
                part = base64.b64decode(event.get("audio", ""))
            run.add(t0, ((nbytes + len(part)) // 2 - nbytes // 2) / OPENAI_RATE)
            nbytes += len(part)
    finally:
        conn.close()
    return run.end(t0)


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:  # e.g. "data: [DONE]"
        return None


async def wyoming_streams(host: str, port: int, timeout: float = 60.0) -> bool:
    """Ask a Wyoming server (``describe``) whether its TTS supports streaming synthesis."""
    async with AsyncTcpClient(host, port, connect_timeout=timeout,
                              read_timeout=timeout) as client:
        await client.write_event(Describe().event())
        while (event := await client.read_event()) is not None:
            if Info.is_type(event.type):
                tts = Info.from_event(event).tts
                if not tts:
                    raise BenchError(f"the Wyoming server at {host}:{port} has no "
                                     "text-to-speech program")
                return any(getattr(p, "supports_synthesize_streaming", False) for p in tts)
    raise BenchError(f"the Wyoming server at {host}:{port} closed the connection")


async def wyoming_run(host: str, port: int, text: str | Iterable[str],
                      token_rate: float | None = None, *, streaming: bool = True,
                      voice: str | None = None, timeout: float = 60.0) -> Run:
    """One utterance over Wyoming, timed from the first synthesize-chunk (``streaming``) or
    from the first token (one ``synthesize`` of the whole text once its last token came)."""
    deltas = _deltas(text)
    v = SynthesizeVoice(name=voice) if voice else None
    synth = Synthesize(text="".join(deltas), voice=v).event()
    async with AsyncTcpClient(host, port, connect_timeout=timeout,
                              read_timeout=timeout) as client:
        if streaming:
            await client.write_event(SynthesizeStart(voice=v).event())
        t0 = time.perf_counter()

        async def write() -> None:
            async for d in apaced(deltas, token_rate):
                if streaming:
                    await client.write_event(SynthesizeChunk(d).event())
            # Streaming: the whole text too, as Home Assistant sends it (streaming servers
            # ignore it; older ones speak it), then the stop.
            await client.write_event(synth)
            if streaming:
                await client.write_event(SynthesizeStop().event())

        writer = asyncio.ensure_future(write())
        run = Run()
        done = SynthesizeStopped if streaming else AudioStop
        try:
            while not done.is_type((event := await client.read_event() or _closed()).type):
                if AudioChunk.is_type(event.type):
                    c = AudioChunk.from_event(event)
                    run.add(t0, len(c.audio) / (c.width * c.channels) / c.rate)
                elif event.type == "error":
                    raise BenchError(f"Wyoming error: {(event.data or {}).get('text')}")
            await writer
        finally:
            writer.cancel()
    return run.end(t0)


def _closed() -> Any:
    raise BenchError("the Wyoming server closed the connection")


# ---------------------------------------------------------------------------- targets


@dataclass
class Target:
    """What is measured: ``api`` "engine" (in-process), "ws", "openai" or "wyoming", at
    ``url``; ``streaming``: a Wyoming server takes text as it comes (from its info)."""

    api: str
    url: str = ""
    streaming: bool | None = None  # Wyoming: None until the server was asked

    @property
    def label(self) -> str:
        if self.api == "engine":
            return "in-process"
        return self.url if self.api == "ws" else f"{self.api} {self.url}"


def parse_target(spec: str, api: str | None = None) -> Target:
    """``URL`` or ``API+URL`` (``openai+http://…``, ``wyoming+tcp://…``) -> a Target; the API is
    ``api`` or inferred from the scheme (ws/wss: ws, http/https: openai, tcp: wyoming). A ws
    URL without a path gets /v1/tts, an OpenAI one /v1."""
    prefix, plus, rest = spec.partition("+")
    if plus and "://" not in prefix:
        if api is not None and api != prefix:
            raise InputError(f"{spec!r} names API {prefix!r} but --api says {api!r}")
        api, spec = prefix, rest
    if api is not None and api not in APIS:
        raise InputError(f"unknown API {api!r}: use ws, openai or wyoming")
    try:
        u = urlsplit(spec)
        u.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise InputError(f"bad server URL {spec!r}: {e}") from None
    inferred = next((a for a, schemes in SCHEMES.items() if u.scheme in schemes), None)
    api = api or inferred
    if api is None or u.scheme not in SCHEMES[api] or not u.hostname:
        want = " or ".join(f"{s}://HOST:PORT" for s in SCHEMES.get(api or "", ())) or \
            "ws://HOST:PORT/v1/tts, http://HOST:PORT/v1 or tcp://HOST:PORT"
        raise InputError(f"bad server URL {spec!r}: expected {want}")
    if api == "wyoming" and (u.port is None or u.path not in ("", "/")):
        raise InputError(f"bad server URL {spec!r}: expected tcp://HOST:PORT")
    if u.path in ("", "/") and api != "wyoming":
        spec = spec.rstrip("/") + (WS_PATH if api == "ws" else "/v1")
    return Target(api, spec)


def parse_targets(server: str | None, api: str | None = None,
                  compare: Sequence[str] = ()) -> list[Target]:
    """``server`` (its API ``api`` or inferred) or the in-process engine first, then every
    ``compare`` URL (``API+URL`` or inferred)."""
    if api is not None and server is None:
        raise InputError("--api applies to --server; give --compare URLs as API+URL")
    targets = [parse_target(server, api) if server else Target("engine")]
    targets += [parse_target(u) for u in compare]
    labels = [t.label for t in targets]
    if len(set(labels)) < len(labels):
        raise InputError(f"a target is named twice: {labels}")
    return targets


@dataclass
class Settings:
    """How each stream is made: the text, whole or as token deltas at ``token_rate``;
    ``clients`` streams at once per run; OpenAI's model and voice (Wyoming, ws: the voice
    when given); ``api_key``: OpenAI's key (default $OPENAI_API_KEY), the ws token (default
    $FPSTREAM_TOKEN)."""

    text: str = PHRASE_128
    token_rate: float | None = None
    clients: int = 1
    model: str = "tts-1"
    voice: str | None = None
    api_key: str | None = None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise InputError("the text is empty")
        for name, ok in (("clients", self.clients >= 1), ("timeout", self.timeout > 0),
                         ("token-rate", self.token_rate is None or self.token_rate > 0)):
            if not ok:  # NaN fails every comparison
                raise InputError(f"--{name} must be > 0, got "
                                 f"{getattr(self, name.replace('-', '_')):g}")

    @property
    def source(self) -> str | list[str]:
        return token_deltas(self.text) if self.token_rate else self.text


class Benchmark:
    """Targets measured in turn, ``settings.clients`` concurrent streams each per run."""

    def __init__(self, targets: Sequence[Target], settings: Settings, engine: Any = None):
        self.targets, self.settings, self.engine = list(targets), settings, engine
        self._pool: ThreadPoolExecutor | None = None

    async def stream(self, target: Target) -> Run:
        """One stream of ``target``; failures to reach or use it as :class:`BenchError`."""
        s, loop = self.settings, asyncio.get_running_loop()
        u = urlsplit(target.url)
        try:
            if target.api == "engine":
                return await loop.run_in_executor(self._pool, engine_run, self.engine,
                                                  s.source, s.token_rate)
            if target.api == "openai":
                key = s.api_key or os.environ.get("OPENAI_API_KEY")
                return await loop.run_in_executor(self._pool, lambda: openai_run(
                    target.url, s.source, s.token_rate, model=s.model,
                    voice=s.voice or "alloy", api_key=key, timeout=s.timeout))
            if target.api == "ws":
                token = s.api_key or os.environ.get("FPSTREAM_TOKEN")
                return await asyncio.wait_for(ws_run(target.url, s.source, s.token_rate,
                                                     token=token, voice=s.voice), s.timeout)
            if target.streaming is None:  # ask once what the server can do
                target.streaming = await wyoming_streams(u.hostname, u.port, s.timeout)
            return await wyoming_run(u.hostname, u.port, s.source, s.token_rate,
                                     streaming=target.streaming, voice=s.voice,
                                     timeout=s.timeout)
        except BenchError as e:
            raise BenchError(f"{target.label}: {e}") from None
        except TTSError as e:
            raise BenchError(f"{target.label}: server error {e}") from None
        except asyncio.TimeoutError:
            raise BenchError(f"{target.label}: no answer within {s.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            why = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise BenchError(f"cannot reach {target.label}: {why}") from None

    async def measure(self, runs: int, warmup: int = 0,
                      progress: Callable[[int, int], None] | None = None
                      ) -> dict[str, list[Run]]:
        """``warmup`` then ``runs`` rounds, the targets taking turns in each: every stream's
        :class:`Run` by target label."""
        n = self.settings.clients
        out: dict[str, list[Run]] = {t.label: [] for t in self.targets}
        self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="bench")
        try:
            total, done = (warmup + runs) * len(self.targets), 0
            for i in range(warmup + runs):
                for t in self.targets:
                    got = await asyncio.gather(*(self.stream(t) for _ in range(n)))
                    if i >= warmup:
                        out[t.label] += got
                    done += 1
                    if progress is not None:
                        progress(done, total)
        finally:
            self._pool.shutdown(wait=False)
        return out


# ---------------------------------------------------------------------------- environment


def git_commit(where: Path = ROOT) -> str:
    """The short commit of the checkout ``where`` belongs to ("" if none)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "--short", "HEAD"],
                             cwd=where, capture_output=True, text=True,
                             timeout=5).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return ""
    return out[1] if len(out) == 2 and Path(out[0]).resolve() == where.resolve() else ""


def cpu_model() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(engine: Any = None) -> dict[str, Any]:
    """Where it was measured: date, commit (or package version), device, CPU, GPU (in-process
    on CUDA), torch and Python versions."""
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return ""

    dev = engine.runner.device if engine is not None else None
    gpu = ""
    if dev is not None and dev.type == "cuda":
        import torch

        gpu = torch.cuda.get_device_name(dev)
    return {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": git_commit() or f"v{version('fastpitch-stream') or 'unknown'}",
            "device": str(dev or "client"), "cpu": f"{cpu_model()} x{os.cpu_count()}", "gpu": gpu,
            "torch": version("torch") or "none", "python": platform.python_version()}


# ---------------------------------------------------------------------------- report

COLUMNS = (("TTFA p50", "ttfa_ms_p50", ".1f"), ("p95", "ttfa_ms_p95", ".1f"),
           ("p99 ms", "ttfa_ms_p99", ".1f"), ("last p50 ms", "last_audio_ms_p50", ".1f"),
           ("RTF p50", "rtf_p50", ".2f"), ("gap p95 ms", "gap_ms_p95", ".1f"),
           ("underruns", "underruns", "d"), ("runs", "runs", "d"))


def format_table(stats: dict[str, dict[str, Any]]) -> str:
    """One line per target under a header line."""
    width = max([len("target")] + [len(k) for k in stats])
    lines = [f"{'target':<{width}}" + "".join(f" {h:>{max(len(h), 8)}}" for h, _, _ in COLUMNS)]
    for label, st in stats.items():
        lines.append(f"{label:<{width}}" + "".join(
            f" {st[k]:>{max(len(h), 8)}{f}}" for h, k, f in COLUMNS))
    return "\n".join(lines)


def write_csv(path: str, rows: list[dict[str, Any]]) -> None:
    """Rows (dicts with the same keys) to a new CSV file with a header line."""
    try:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    except OSError as e:
        raise InputError(f"cannot write --csv {path}: {e.strerror or e}") from None


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend; InputError when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install matplotlib") from None
    return plt


def plot(path: str, results: dict[str, list[Run]], prebuffer: float) -> None:
    """Left: TTFA CDF per target. Right: the median-TTFA run of each target, audio received
    (solid) and played by a real-time player (dashed, flat while it stalls) against time."""
    plt = pyplot()
    fig, (cdf, tl) = plt.subplots(1, 2, figsize=(13, 5))
    for i, (label, runs) in enumerate(results.items()):
        color = f"C{i}"
        ttfa = sorted(r.ttfa * 1e3 for r in runs)
        cdf.step(ttfa[:1] + ttfa, [0.0] + [(k + 1) / len(ttfa) for k in range(len(ttfa))],
                 where="post", color=color, label=label)
        run = sorted(runs, key=lambda r: r.ttfa)[(len(runs) - 1) // 2]
        got = [sum(run.durations[:k + 1]) for k in range(len(run.durations))]
        tl.step([0.0] + run.arrivals, [0.0] + got, where="post", color=color, label=label)
        xs, ys, pos = [0.0], [0.0], 0.0
        for s, d in zip(playback_starts(run.arrivals, run.durations, prebuffer), run.durations):
            xs += [s, s + d]
            ys += [pos, pos + d]
            pos += d
        tl.plot(xs, ys, "--", color=color, linewidth=1)
    cdf.set(xlabel="time to first audio (ms)", ylabel="fraction of streams",
            title="TTFA CDF")
    tl.set(xlabel="seconds since the text was handed over", ylabel="seconds of audio",
           title=f"one run: received (solid) vs played, prebuffer {prebuffer * 1e3:g} ms")
    for ax in (cdf, tl):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise InputError(f"cannot write --plot {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
