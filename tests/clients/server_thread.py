"""Servers on their own event loop in a background thread, so that blocking code in a test
(the sync clients, the openai client, the CLI) can talk to them from the test's thread."""

from __future__ import annotations

import asyncio
import threading
from typing import Any


class ServerThread:
    """Starts ``servers`` (objects with async ``start()`` and ``close()``, such as
    ``serve_tts(...)`` and ``serve_wyoming(...)``) on a private event loop; ``close()`` (or
    leaving the ``with`` block) closes them in reverse order and stops the loop."""

    def __init__(self, *servers: Any):
        self.servers = servers
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        for s in servers:
            asyncio.run_coroutine_threadsafe(s.start(), self.loop).result(timeout=20)

    def close(self) -> None:
        for s in reversed(self.servers):
            asyncio.run_coroutine_threadsafe(s.close(), self.loop).result(timeout=20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def __enter__(self) -> Any:
        return self.servers[0]

    def __exit__(self, *exc: Any) -> None:
        self.close()
