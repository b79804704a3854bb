"""bench.fronts: every front answers through one engine, and the bench times each of them."""

from __future__ import annotations

import asyncio

from bench import fronts


def test_every_front_is_timed(served_engine):
    results = asyncio.run(fronts.measure(served_engine, runs=2, token_rate=None))
    assert set(results) == set(fronts.FRONTS)
    for front, r in results.items():
        assert len(r["ttfa"]) == 2 and len(r["last"]) == 2, front
        assert all(0 < t <= last for t, last in zip(r["ttfa"], r["last"])), front
