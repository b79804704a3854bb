"""Load on the websocket server: N concurrent clients, many idle sessions, a soak.

    python -m bench.load                                    # --clients 1 2 4, the tiny voice
    python -m bench.load --clients 1 2 4 8 --idle 200 --soak-minutes 10
    python -m bench.load --url ws://127.0.0.1:8765/v1/tts --server-pid 1234 --clients 1 2

Without ``--url`` the server runs in this process (127.0.0.1, port 0, in its own thread and
event loop) with the tiny test voice (``--fastpitch`` / ``--hifigan`` for another; the
default universal vocoder is slow on a CPU). The clients are websocket connections on
loopback in the main event loop.

- **clients N** (``--clients``): N clients at once, each streaming the 128-character phrase
  as word deltas (``--word-rate`` words/s, 0 = as fast as possible), ``--rounds`` times.
  Per N: client-side TTFA (first text sent -> first binary chunk) p50/p95/p99, underruns
  (``bench.common.playback_underruns`` on the chunks' arrival times and durations, playback
  from the first chunk + ``--prebuffer-ms``), errors, server RSS. Then the largest N with
  zero underruns and zero errors.
- **idle K** (``--idle``): K sessions open at once for ``--idle-seconds``; each sends
  ``start`` and then a short text every ``--idle-interval`` seconds (staggered). Reports
  how many stayed open to the end, errors, short-utterance TTFA and RSS.
- **soak M** (``--soak-minutes``): ``--soak-clients`` clients (default: the largest clean N)
  speak the phrase back to back for M minutes; RSS at the start, every minute and the end.
  In-process, each minute also records leak indicators read in the server's loop: its asyncio
  tasks, open sessions, engine requests, and the C heap in use (glibc ``mallinfo2``: live
  allocations, without the freed memory the allocator may still hold, which RSS includes).
  Start and end are taken with no session open, after ``gc.collect()`` and ``malloc_trim``
  (engine.runtime.memory), so they compare live memory. ``--trim-interval 0`` turns off the engine's
  periodic ``malloc_trim`` to see what RSS does without it.

RSS is the server's: this process when in-process (psutil if installed, else
/proc/self/status VmRSS), ``--server-pid`` with ``--url``, otherwise not measured. Prints a
table and appends rows to bench/results/load.csv.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench.common import (PHRASE_128, environment, percentile, playback_underruns,
                          rss_mb, rss_parts_mb, write_rows)
from engine.runtime.memory import release_free_heap

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
WORDS = re.findall(r"\S+\s*", PHRASE_128)
SHORT = "Still here."
BYTES_PER_SAMPLE = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1}


# ---------------------------------------------------------------------------- RSS

class RssSampler:
    """Samples the server's RSS every ``interval`` s in a thread: [(monotonic time, MB)]."""

    def __init__(self, pid: int | None, enabled: bool, interval: float = 0.25):
        self.pid, self.enabled, self.interval = pid, enabled, interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> float | None:
        if not self.enabled:
            return None
        v = rss_mb(self.pid)
        if v is not None:
            self.samples.append((time.monotonic(), v))
        return v

    def start(self) -> "RssSampler":
        if self.enabled:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def window(self, t0: float, t1: float) -> list[float]:
        return [v for t, v in self.samples if t0 <= t <= t1]


# ---------------------------------------------------------------------------- server

class InProcessServer:
    """serve_tts in a thread with its own event loop, so the clients' loop cannot stall it."""

    def __init__(self, engine, max_sessions: int):
        self.engine, self.max_sessions = engine, max_sessions
        self.url: str | None = None
        self.server = None  # the TTSServer, once started
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="tts-server")

    def _run(self) -> None:
        from clients.server import serve_tts

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with serve_tts(self.engine, "127.0.0.1", port=0,
                                 max_sessions=self.max_sessions) as server:
                self.server = server
                self.url = server.url
                self._ready.set()
                await self._stop.wait()

        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 - reported by start()
            self._error = e
            self._ready.set()

    def __enter__(self) -> "InProcessServer":
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None or self.url is None:
            raise RuntimeError(f"the server did not start: {self._error!r}")
        return self

    def snapshot(self) -> dict:
        """Leak indicators, read inside the server's loop: its asyncio tasks, open sessions,
        engine requests; plus the C heap in use (glibc), which unlike RSS excludes freed
        memory the allocator still holds."""
        from engine.runtime.memory import heap_stats

        async def read() -> dict:
            c = self.engine.runner.vocoder_s_per_frame  # measured cost, an EMA
            return {"server_tasks": len(asyncio.all_tasks()),
                    "sessions": len(self.server.sessions),
                    "engine_requests": self.engine.active_requests,
                    "vocoder_ms_per_frame": None if c is None else c * 1000}

        snap = asyncio.run_coroutine_threadsafe(read(), self._loop).result(10)
        h = heap_stats()
        snap["heap_in_use_mb"] = None if h is None else h.in_use / 2**20
        snap.update(rss_parts_mb())
        return snap

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


# ---------------------------------------------------------------------------- clients

async def recv_utterance(ws, t0: float, timeout: float, fmt: dict) -> dict:
    """Read one utterance to ``done`` / ``error``: arrival times (s from t0) and durations.
    ``fmt`` is the session's format (sample_rate, encoding), updated by ``ready``."""
    arrivals, durations, pending = [], [], None
    while True:
        msg = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(msg, bytes):
            if pending is None:
                return {"error": "binary frame without a chunk message"}
            arrivals.append(time.perf_counter() - t0)
            durations.append(len(msg) / BYTES_PER_SAMPLE[fmt["encoding"]]
                             / fmt["sample_rate"])
            pending = None
            continue
        m = json.loads(msg)
        if m["type"] == "ready":
            fmt.update(sample_rate=m["sample_rate"], encoding=m["encoding"])
        elif m["type"] == "chunk":
            pending = m
        elif m["type"] == "done":
            return {"arrivals": arrivals, "durations": durations, "error": None}
        elif m["type"] == "error":
            return {"arrivals": arrivals, "durations": durations,
                    "error": f"{m['code']}: {m['message']}"}


async def speak(ws, fmt: dict, words: list[str], word_rate: float, timeout: float) -> dict:
    """One utterance on an open session (after start): word deltas, end, read to done."""
    reader = None
    t0 = time.perf_counter()
    for i, w in enumerate(words):
        await ws.send(json.dumps({"type": "text", "text": w}))
        if i == 0:
            t0 = time.perf_counter()
            reader = asyncio.ensure_future(recv_utterance(ws, t0, timeout, fmt))
        if word_rate > 0:
            await asyncio.sleep(1 / word_rate)
    await ws.send(json.dumps({"type": "end"}))
    return await reader


async def one_client(url: str, args, start_at: float) -> dict:
    from websockets.asyncio.client import connect

    try:
        async with connect(url, max_size=None, open_timeout=30) as ws:
            await ws.send(json.dumps({"type": "start"}))
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            r = await speak(ws, {}, WORDS, args.word_rate, args.timeout)
    except Exception as e:  # noqa: BLE001 - counted as an error of this client
        return {"error": f"{type(e).__name__}: {e}"}
    if r["error"] is None and not r["arrivals"]:
        r["error"] = "no audio"
    return r


async def run_clients(url: str, n: int, args) -> list[dict]:
    results = []
    for _ in range(args.rounds):
        start_at = time.monotonic() + 0.5  # connect all first, then speak at once
        results += await asyncio.gather(*(one_client(url, args, start_at) for _ in range(n)))
    return results


async def idle_session(url: str, args, deadline: float, stats: dict) -> bool:
    """Hold one session until ``deadline``, a short utterance every --idle-interval s.
    True if it was still open (and error-free) at the end."""
    from websockets.asyncio.client import connect

    try:
        async with connect(url, max_size=None, open_timeout=60) as ws:
            await ws.send(json.dumps({"type": "start"}))
            ready = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if ready.get("type") != "ready":
                stats["errors"].append(f"{ready.get('code')}: {ready.get('message')}")
                return False
            fmt = {"sample_rate": ready["sample_rate"], "encoding": ready["encoding"]}
            stats["opened"] += 1
            await asyncio.sleep(random.uniform(0, args.idle_interval))  # stagger
            ok = True
            while time.monotonic() < deadline:
                r = await speak(ws, fmt, [SHORT], 0, args.timeout)
                if r["error"]:
                    stats["errors"].append(r["error"])
                    ok = False
                elif r["arrivals"]:
                    stats["ttfa"].append(r["arrivals"][0])
                stats["utterances"] += 1
                await asyncio.sleep(min(args.idle_interval, max(0.0, deadline - time.monotonic())))
            return ok
    except Exception as e:  # noqa: BLE001
        stats["errors"].append(f"{type(e).__name__}: {e}")
        return False


async def run_idle(url: str, k: int, args) -> dict:
    stats = {"opened": 0, "utterances": 0, "ttfa": [], "errors": []}
    deadline = time.monotonic() + args.idle_seconds
    ok = await asyncio.gather(*(idle_session(url, args, deadline, stats) for _ in range(k)))
    stats["stayed_open"] = sum(ok)
    return stats


async def run_soak(url: str, n: int, args, sampler: RssSampler,
                   snapshot: Callable[[], dict] | None = None) -> list[dict]:
    """n clients speak the phrase back to back for --soak-minutes; one row per minute.
    ``snapshot`` (in-process server only) adds leak indicators at each minute's end."""
    from websockets.asyncio.client import connect

    t_start = time.monotonic()
    end = t_start + args.soak_minutes * 60
    minutes: list[dict] = [{"ttfa": [], "under": 0, "errors": 0, "utts": 0}
                           for _ in range(max(1, int(args.soak_minutes + 0.999)))]

    async def client() -> None:
        while time.monotonic() < end:
            try:
                async with connect(url, max_size=None, open_timeout=30) as ws:
                    await ws.send(json.dumps({"type": "start"}))
                    fmt: dict = {}
                    while time.monotonic() < end:
                        r = await speak(ws, fmt, WORDS, args.word_rate, args.timeout)
                        m = minutes[min(len(minutes) - 1, int((time.monotonic() - t_start) // 60))]
                        m["utts"] += 1
                        if r["error"] or not r["arrivals"]:
                            m["errors"] += 1
                            break
                        m["ttfa"].append(r["arrivals"][0])
                        m["under"] += playback_underruns(r["arrivals"], r["durations"],
                                                         args.prebuffer_ms / 1000)[0]
            except Exception:  # noqa: BLE001
                minutes[min(len(minutes) - 1, int((time.monotonic() - t_start) // 60))][
                    "errors"] += 1
                await asyncio.sleep(0.5)

    async def reporter() -> None:
        for i in range(len(minutes)):
            await asyncio.sleep(max(0.0, min(end, t_start + 60 * (i + 1)) - time.monotonic()))
            rss = sampler.sample()
            m = minutes[i]
            if snapshot is not None:
                m["snapshot"] = await asyncio.to_thread(snapshot)
            t = m["ttfa"] or [float("nan")]
            print(f"  soak minute {i + 1}: {m['utts']} utterances, TTFA p50 "
                  f"{percentile(t, 50) * 1000:.0f} ms, underruns {m['under']}, errors "
                  f"{m['errors']}, RSS {fmt_mb(rss)}{fmt_snapshot(m.get('snapshot'))}",
                  flush=True)

    await asyncio.gather(reporter(), *(client() for _ in range(n)))
    return minutes


# ---------------------------------------------------------------------------- main

def fmt_mb(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f} MB"


def fmt_snapshot(snap: dict | None) -> str:
    if not snap:
        return ""
    c = snap["vocoder_ms_per_frame"]
    return (f", anon {fmt_mb(snap['rss_anon_mb'])} + file {fmt_mb(snap['rss_file_mb'])}"
            f", heap in use {fmt_mb(snap['heap_in_use_mb'])}, server tasks "
            f"{snap['server_tasks']}, sessions {snap['sessions']}, engine requests "
            f"{snap['engine_requests']}, vocoder {'n/a' if c is None else f'{c:.2f}'} ms/frame")


def snapshot_cols(snap: dict | None) -> dict:
    if not snap:
        return {}
    return {"rss_anon_mb": rnd(snap["rss_anon_mb"]), "rss_file_mb": rnd(snap["rss_file_mb"]),
            "heap_in_use_mb": rnd(snap["heap_in_use_mb"]), "server_tasks": snap["server_tasks"],
            "sessions": snap["sessions"], "engine_requests": snap["engine_requests"],
            "vocoder_ms_per_frame": rnd(snap["vocoder_ms_per_frame"], 3)}


def rnd(v: float | None, nd: int = 1):
    return "" if v is None or v != v else round(v, nd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--rounds", type=int, default=3, help="repeats per N (default 3)")
    ap.add_argument("--word-rate", type=float, default=0.0,
                    help="words per second sent per client; 0 = as fast as possible")
    ap.add_argument("--prebuffer-ms", type=float, default=0.0)
    ap.add_argument("--idle", type=int, default=0, help="K idle-ish sessions (0 = skip)")
    ap.add_argument("--idle-seconds", type=float, default=30.0)
    ap.add_argument("--idle-interval", type=float, default=5.0)
    ap.add_argument("--soak-minutes", type=float, default=0.0)
    ap.add_argument("--soak-clients", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=60.0, help="per message, seconds")
    ap.add_argument("--url", default=None, help="a running server (default: in-process)")
    ap.add_argument("--server-pid", type=int, default=None,
                    help="with --url: the server's pid, for its RSS")
    ap.add_argument("--fastpitch", default=str(DATA / "tiny_fastpitch.pt"))
    ap.add_argument("--hifigan", default=str(DATA / "tiny_hifigan.pt"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--trim-interval", type=float, default=None,
                    help="in-process: EngineConfig.trim_interval_s (seconds between giving "
                         "freed heap back to the OS; 0 = never; default: the engine's)")
    args = ap.parse_args()
    if min(args.clients) < 1 or args.rounds < 1 or args.idle < 0:
        ap.error("--clients and --rounds must be >= 1, --idle >= 0")

    try:  # many sockets: raise the soft fd limit to the hard one
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass

    engine = None
    if args.url is None:
        from engine import Engine, EngineConfig

        config = (EngineConfig() if args.trim_interval is None
                  else EngineConfig(trim_interval_s=args.trim_interval))
        engine = Engine.load(args.fastpitch, args.hifigan, device=args.device, config=config)
        print(f"engine: trim_interval_s={config.trim_interval_s:g}")
        server_cm: Any = InProcessServer(engine, max_sessions=max(64, max(args.clients),
                                                                  args.idle + 8))
        sampler = RssSampler(None, True)
        voice = Path(args.fastpitch).name
    else:
        server_cm = None
        sampler = RssSampler(args.server_pid, args.server_pid is not None)
        voice = f"remote {args.url}"
    env = environment(torch.device(args.device))
    rows: list[dict] = []

    def row(phase: str, n: int, **kw: Any) -> dict:
        base = {**env, "voice": voice, "phase": phase, "n": n, "utterances": 0,
                "ttfa_p50_ms": "", "ttfa_p95_ms": "", "ttfa_p99_ms": "", "underruns": "",
                "streams_with_underruns": "", "errors": 0, "stayed_open": "",
                "rss_start_mb": "", "rss_end_mb": "", "rss_max_mb": "", "rss_anon_mb": "",
                "rss_file_mb": "", "heap_in_use_mb": "",
                "server_tasks": "", "sessions": "", "engine_requests": "",
                "vocoder_ms_per_frame": "", "wall_s": ""}
        base.update(kw)
        rows.append(base)
        return base

    def rss_cols(t0: float, t1: float) -> dict:
        w = sampler.window(t0, t1)
        if not w:
            return {}
        return {"rss_start_mb": rnd(w[0]), "rss_end_mb": rnd(w[-1]), "rss_max_mb": rnd(max(w))}

    async def run_all(url: str) -> None:
        print(f"server {url}; voice {voice}; {len(WORDS)} word deltas per utterance")
        # warm up: first-use allocations and lazy init are not load
        await run_clients(url, 1, argparse.Namespace(**{**vars(args), "rounds": 1}))
        print(f"{'N':>4} {'utts':>5} {'TTFA p50':>9} {'p95':>7} {'p99':>7} {'underruns':>9} "
              f"{'streams':>7} {'errors':>6} {'RSS start->end (max) MB':>24}")
        clean = 0
        for n in args.clients:
            t0 = time.monotonic()
            res = await run_clients(url, n, args)
            t1 = time.monotonic()
            ok = [r for r in res if not r.get("error")]
            errs = [r["error"] for r in res if r.get("error")]
            ttfa = [r["arrivals"][0] * 1000 for r in ok]
            unders = [playback_underruns(r["arrivals"], r["durations"],
                                         args.prebuffer_ms / 1000)[0] for r in ok]
            r = row("clients", n, utterances=len(res),
                    ttfa_p50_ms=rnd(percentile(ttfa, 50)) if ttfa else "",
                    ttfa_p95_ms=rnd(percentile(ttfa, 95)) if ttfa else "",
                    ttfa_p99_ms=rnd(percentile(ttfa, 99)) if ttfa else "",
                    underruns=sum(unders), streams_with_underruns=sum(u > 0 for u in unders),
                    errors=len(errs), wall_s=round(t1 - t0, 2), **rss_cols(t0, t1))
            print(f"{n:>4} {len(res):>5} {r['ttfa_p50_ms']:>7} ms {r['ttfa_p95_ms']:>7} "
                  f"{r['ttfa_p99_ms']:>7} {r['underruns']:>9} {r['streams_with_underruns']:>7} "
                  f"{len(errs):>6} {r['rss_start_mb']!s:>8} -> {r['rss_end_mb']!s} "
                  f"({r['rss_max_mb']})", flush=True)
            for e in sorted(set(errs))[:3]:
                print(f"       error: {e}")
            if not errs and sum(unders) == 0:
                clean = max(clean, n)
        print(f"largest N with zero underruns and zero errors: {clean or 'none'}")
        row("largest_clean_n", clean)

        if args.idle:
            t0 = time.monotonic()
            st = await run_idle(url, args.idle, args)
            t1 = time.monotonic()
            ttfa = [x * 1000 for x in st["ttfa"]]
            r = row("idle", args.idle, utterances=st["utterances"],
                    ttfa_p50_ms=rnd(percentile(ttfa, 50)) if ttfa else "",
                    ttfa_p95_ms=rnd(percentile(ttfa, 95)) if ttfa else "",
                    ttfa_p99_ms=rnd(percentile(ttfa, 99)) if ttfa else "",
                    errors=len(st["errors"]), stayed_open=st["stayed_open"],
                    wall_s=round(t1 - t0, 2), **rss_cols(t0, t1))
            print(f"idle: {args.idle} sessions for {args.idle_seconds:.0f} s (a short text every "
                  f"~{args.idle_interval:.0f} s): opened {st['opened']}, stayed open "
                  f"{st['stayed_open']}, {st['utterances']} utterances, TTFA p50 "
                  f"{r['ttfa_p50_ms']} ms p95 {r['ttfa_p95_ms']} ms, errors {len(st['errors'])}, "
                  f"RSS {r['rss_start_mb']} -> {r['rss_end_mb']} MB (max {r['rss_max_mb']})")
            for e in sorted(set(st["errors"]))[:3]:
                print(f"       error: {e}")

        if args.soak_minutes > 0:
            n = args.soak_clients or clean or 1
            snapshot = server_cm.snapshot if server_cm is not None else None

            async def settled() -> dict | None:
                """Leak indicators once no session or request is left (at most 30 s), after
                giving freed heap back to the OS, so that start and end RSS compare live
                memory rather than where the engine's periodic trim happened to be."""
                if snapshot is None:
                    return None
                for _ in range(300):
                    snap = await asyncio.to_thread(snapshot)
                    if not snap["sessions"] and not snap["engine_requests"]:
                        break
                    await asyncio.sleep(0.1)
                gc.collect()
                release_free_heap()
                return await asyncio.to_thread(snapshot)

            print(f"soak: {n} clients for {args.soak_minutes:g} min")
            snap0 = await settled()
            t0 = time.monotonic()
            rss0 = sampler.sample()
            row("soak_start", n, rss_start_mb=rnd(rss0), **snapshot_cols(snap0))
            print(f"  soak start (no sessions): RSS {fmt_mb(rss0)}{fmt_snapshot(snap0)}")
            minutes = await run_soak(url, n, args, sampler, snapshot)
            t1 = time.monotonic()
            for i, m in enumerate(minutes):
                t = [x * 1000 for x in m["ttfa"]]
                a, b = t0 + 60 * i, min(t1, t0 + 60 * (i + 1))
                row(f"soak_min{i + 1}", n, utterances=m["utts"],
                    ttfa_p50_ms=rnd(percentile(t, 50)) if t else "",
                    ttfa_p95_ms=rnd(percentile(t, 95)) if t else "",
                    ttfa_p99_ms=rnd(percentile(t, 99)) if t else "",
                    underruns=m["under"], errors=m["errors"], wall_s=round(b - a, 2),
                    **rss_cols(a, b), **snapshot_cols(m.get("snapshot")))
            snap1 = await settled()
            rss1 = sampler.sample()
            row("soak_end", n, rss_end_mb=rnd(rss1), **snapshot_cols(snap1))
            print(f"  soak end (sessions closed): RSS {fmt_mb(rss1)}{fmt_snapshot(snap1)}")
            if rss0 is not None and rss1 is not None:
                print(f"  RSS start -> end: {rss0:.1f} -> {rss1:.1f} MB "
                      f"({rss1 - rss0:+.1f} MB)", flush=True)

    sampler.start()
    try:
        if server_cm is not None:
            with server_cm as srv:
                asyncio.run(run_all(srv.url))
        else:
            asyncio.run(run_all(args.url))
    finally:
        sampler.stop()
        if engine is not None:
            engine.close()
    print(f"appended to {write_rows('load', rows)}")


if __name__ == "__main__":
    main()
