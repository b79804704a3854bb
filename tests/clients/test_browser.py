"""The browser page (clients/web/index.html) in headless Chromium against a real server.

The server runs in the test's event loop on 127.0.0.1 port 0 with the tiny test voice. The
page is opened at ``GET /?text=...&autorun=1`` so it speaks on load; the test drives Chromium
through the DevTools protocol (``--remote-debugging-port=0``, the port read back from
``DevToolsActivePort`` in a fresh profile directory, the page's target from ``/json/list``,
then ``Runtime.evaluate`` over a websocket with the ``websockets`` package) and polls
``window.fpstats`` until the page reports ``done`` or an error.

Skips when Chromium is not installed, unless FPSTREAM_REQUIRE_BROWSER=1 (set by .ci/run),
where a missing Chromium is a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from clients.server import WEB_INDEX, serve_tts
from engine import Engine

DATA = Path(__file__).resolve().parents[1] / "data"
TEXT = "Hello there, my friend. How are you today?"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required", "--mute-audio", "--no-default-browser-check",
    "--disable-dev-shm-usage",
)


def find_chromium() -> str | None:
    env = os.environ.get("FPSTREAM_CHROMIUM")
    if env:
        return env
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = find_chromium()
if CHROMIUM is None:
    if os.environ.get("FPSTREAM_REQUIRE_BROWSER") == "1":
        raise RuntimeError("FPSTREAM_REQUIRE_BROWSER=1 but Chromium is not installed "
                           "(bash .ci/install-system-deps installs Debian's chromium)")
    pytest.skip("Chromium is not installed (/usr/bin/chromium; apt-get install chromium, "
                "or set FPSTREAM_CHROMIUM)", allow_module_level=True)


@pytest.fixture(scope="module")
def engine():
    eng = Engine.load(fastpitch=DATA / "tiny_fastpitch.pt", hifigan=DATA / "tiny_hifigan.pt",
                      device="cpu")
    yield eng
    eng.close()


def http_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class DevTools:
    """Just enough of the Chrome DevTools protocol: send a command, wait for its answer."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = 0

    async def call(self, method: str, **params) -> dict:
        self.ids += 1
        my_id = self.ids
        await self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"DevTools {method}: {msg['error']}")
                return msg["result"]

    async def evaluate(self, expression: str):
        res = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page exception: {res['exceptionDetails']}")
        return res["result"].get("value")


async def open_page(url: str, profile: Path) -> tuple[asyncio.subprocess.Process, str]:
    """Start Chromium on ``url``; (the process, the page target's DevTools websocket URL)."""
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
        "--remote-debugging-address=127.0.0.1", url,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 20
    while True:
        if proc.returncode is not None:
            err = (await proc.stderr.read()).decode(errors="replace")[-2000:]
            raise RuntimeError(f"Chromium exited ({proc.returncode}):\n{err}")
        text = port_file.read_text() if port_file.exists() else ""
        if text.strip():
            break
        if time.monotonic() > deadline:
            raise RuntimeError("Chromium did not open its DevTools port within 20 s")
        await asyncio.sleep(0.05)
    port = int(text.splitlines()[0])
    while True:
        targets = await asyncio.to_thread(http_json, f"http://127.0.0.1:{port}/json/list")
        pages = [t for t in targets if t.get("type") == "page" and
                 t.get("url", "").startswith(url.split("?")[0])]
        if pages:
            return proc, pages[0]["webSocketDebuggerUrl"]
        if time.monotonic() > deadline:
            raise RuntimeError(f"no page target for {url}: {targets}")
        await asyncio.sleep(0.05)


async def stop_chromium(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def speak_in_browser(engine: Engine, text: str, token: str | None = None) -> dict:
    async with serve_tts(engine, "127.0.0.1", port=0, token=token) as server:
        query = {"text": text, "autorun": "1"}
        if token:
            query["token"] = token
        url = f"http://127.0.0.1:{server.port}/?{urllib.parse.urlencode(query)}"
        with tempfile.TemporaryDirectory(prefix="fpstream-chromium-") as profile:
            proc, target = await open_page(url, Path(profile))
            try:
                async with connect(target, max_size=None) as ws:
                    dt = DevTools(ws)
                    deadline = time.monotonic() + 20
                    while True:
                        stats = await dt.evaluate("JSON.stringify(window.fpstats || null)")
                        stats = json.loads(stats) if stats else None
                        if stats and (stats["done"] or stats["error"]):
                            return stats
                        if time.monotonic() > deadline:
                            raise AssertionError(f"the page did not finish in 20 s: {stats}")
                        await asyncio.sleep(0.1)
            finally:
                await stop_chromium(proc)


def test_page_exists():
    html = WEB_INDEX.read_text(encoding="utf-8")
    assert "/v1/tts" in html and "pcm_f32le" in html
    # self-contained: nothing fetched from elsewhere
    assert "http://" not in html and "https://" not in html and "src=" not in html


def test_browser_speaks_and_schedules_audio(engine):
    stats = asyncio.run(asyncio.wait_for(speak_in_browser(engine, TEXT), 45))
    assert stats["error"] is None, stats
    assert stats["done"] is True, stats
    assert stats["sampleRate"] == engine.sample_rate, stats  # start without sample_rate: native
    assert stats["chunks"] > 0, stats
    assert stats["samplesReceived"] > 0, stats
    assert stats["samplesScheduled"] == stats["samplesReceived"], stats
    assert stats["ttfaMs"] is not None and stats["ttfaMs"] >= 0, stats
    assert abs(stats["audioSeconds"] - stats["samplesReceived"] / stats["sampleRate"]) < 1e-6


def test_browser_passes_token(engine):
    stats = asyncio.run(asyncio.wait_for(speak_in_browser(engine, "Hi there.", token="s3cret"),
                                         45))
    assert stats["error"] is None and stats["done"] is True, stats
    assert stats["samplesScheduled"] == stats["samplesReceived"] > 0, stats
