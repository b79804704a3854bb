"""engine/runtime/streams.py: Stream and AsyncStream share one core and behave alike.

With an inbox of one event, producers must wait for the engine: the sync ``send`` blocks, the
async ``send`` never blocks the event loop nor raises, keeps the order of the events (awaited
or not), and all ways of feeding the same text give the same audio.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine import Engine, EngineConfig, InputError

DATA = Path(__file__).resolve().parents[1] / "data"
TEXT = "Hello there, my friend. How are you today? I am fine."
DELTAS = ["Hel", "lo there,", " my fr", "iend. How", " are you", " today? I am", " fine."]


@pytest.fixture(scope="module")
def engine():
    eng = Engine.load(fastpitch=DATA / "tiny_fastpitch.pt", hifigan=DATA / "tiny_hifigan.pt",
                      device="cpu", config=EngineConfig(window_sizes=(48,), max_inbox=1))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def reference(engine) -> np.ndarray:
    return engine.synthesize(TEXT).audio


def _audio(chunks) -> np.ndarray:
    return np.concatenate([c.audio for c in chunks])


def test_sync_push_stream_blocks_but_delivers_everything(engine, reference) -> None:
    stream = engine.open()

    def produce() -> None:
        for d in DELTAS:
            stream.send(d)  # waits while the one-event inbox is full
        stream.end()

    t = threading.Thread(target=produce)
    t.start()
    got = _audio(stream)
    t.join(timeout=10)
    assert not t.is_alive()
    np.testing.assert_array_equal(got, reference)


def test_async_send_never_raises_and_keeps_order_unawaited(engine, reference) -> None:
    async def main() -> np.ndarray:
        stream = engine.aopen()
        futures = [stream.send(d) for d in DELTAS]  # the inbox holds one: the rest wait
        futures.append(stream.end())  # nothing raised (the old async send raised queue.Full)
        chunks = [c async for c in stream]
        assert all(f.done() for f in futures)
        return _audio(chunks)

    np.testing.assert_array_equal(asyncio.run(main()), reference)


def test_async_send_awaited_and_feeders_give_the_same_audio(engine, reference) -> None:
    async def pushed() -> np.ndarray:
        stream = engine.aopen()

        async def produce() -> None:
            for d in DELTAS:
                await stream.send(d)
            await stream.end()

        task = asyncio.create_task(produce())
        chunks = [c async for c in stream]
        await task
        return _audio(chunks)

    async def from_async_iterable() -> np.ndarray:
        async def gen():
            for d in DELTAS:
                yield d
                await asyncio.sleep(0)
        return _audio([c async for c in engine.astream(gen())])

    async def from_iterable() -> np.ndarray:
        return _audio([c async for c in engine.astream(iter(DELTAS))])

    for run in (pushed, from_async_iterable, from_iterable):
        np.testing.assert_array_equal(asyncio.run(run()), reference)
    np.testing.assert_array_equal(_audio(engine.stream(iter(DELTAS))), reference)


def test_cancel_releases_waiting_sends(engine) -> None:
    async def main() -> None:
        stream = engine.aopen()
        futures = [stream.send(d) for d in DELTAS]
        stream.cancel()
        await asyncio.wait_for(asyncio.gather(*futures), timeout=5)
        assert [c async for c in stream] == []

    asyncio.run(main())


def test_producer_errors_end_the_stream(engine) -> None:
    def bad():
        yield "Hello there."
        raise RuntimeError("the producer broke")

    with pytest.raises(RuntimeError, match="producer broke"):
        list(engine.stream(bad()))

    async def main() -> None:
        async def bad_async():
            yield "Hello there."
            yield 42  # not text: the caller's mistake

        with pytest.raises(InputError, match="must be a str"):
            async for _ in engine.astream(bad_async()):
                pass

    asyncio.run(main())


def test_bad_text_sources_are_input_errors(engine) -> None:
    with pytest.raises(InputError):
        engine.stream(b"bytes")
    with pytest.raises(InputError):
        engine.stream(42)
    with pytest.raises(InputError):
        engine.open().send(42)

    async def main() -> None:
        with pytest.raises(InputError):
            engine.astream(3.5)
        s = engine.aopen()
        with pytest.raises(InputError):
            s.send(None)
        s.cancel()

    asyncio.run(main())
    # Nothing speakable: the engine's verdict is the user's error too.
    with pytest.raises(InputError, match="nothing speakable"):
        engine.synthesize("   ")


def test_dropped_async_stream_frees_its_request(engine) -> None:
    async def main() -> None:
        async for _ in engine.astream(TEXT + " " + TEXT):
            break  # no cancel(): the stream object is dropped

    asyncio.run(main())
    gc.collect()
    _wait_idle(engine)


def test_producer_stops_when_the_engine_ends_the_request(engine) -> None:
    """A request that fails (here its pitch_transform raises) ends; its producer thread stops
    iterating instead of waiting forever on the request's inbox."""
    pulled = []

    def endless():
        while True:
            pulled.append(1)
            yield "More words to speak. "
            time.sleep(0.005)

    def broken(pitch, lens, mean, std):
        raise RuntimeError("a broken pitch hook")

    with pytest.raises(RuntimeError, match="synthesis failed"):
        list(engine.stream(endless(), pitch_transform=broken))
    time.sleep(0.5)
    n = len(pulled)
    time.sleep(0.5)
    assert len(pulled) == n  # the feeder has stopped
    _wait_idle(engine)


def test_a_failing_request_does_not_fail_its_batch_mates(engine, reference) -> None:
    def broken(pitch, lens, mean, std):
        raise RuntimeError("a broken pitch hook")

    bad = engine.open(pitch_transform=broken)
    good = engine.open()
    for s in (bad, good):
        s.send(TEXT)
        s.end()
    np.testing.assert_array_equal(_audio(good), reference)
    with pytest.raises(RuntimeError):
        list(bad)


def test_speaker_out_of_range_is_the_users_error(engine) -> None:
    assert engine.voice.fastpitch.config.n_speakers == 1
    with pytest.raises(InputError, match="speaker"):
        engine.open(speaker=1)
    _wait_idle(engine)


def test_close_ends_streams_submitted_as_it_stops() -> None:
    eng = Engine.load(fastpitch=DATA / "tiny_fastpitch.pt", hifigan=DATA / "tiny_hifigan.pt",
                      device="cpu")
    streams = [eng.open() for _ in range(3)]
    eng.close()
    with pytest.raises(RuntimeError, match="closed"):
        eng.open()
    done = threading.Event()
    threading.Thread(target=lambda: ([list(s) for s in streams], done.set()),
                     daemon=True).start()
    assert done.wait(5), "a stream kept its consumer waiting after close()"


def _wait_idle(engine, timeout: float = 5.0) -> None:
    t0 = time.monotonic()
    while engine.active_requests and time.monotonic() - t0 < timeout:
        time.sleep(0.01)
    assert engine.active_requests == 0


@pytest.mark.skipif(not __import__("engine.models.weights", fromlist=["x"]).cpu_has_bf16(),
                    reason="this CPU has no native bf16")
def test_cpu_bf16_vocoder_streams_equal_offline_and_stay_close_to_fp32(engine, caplog) -> None:
    with caplog.at_level("INFO", logger="engine.runtime.runner"):
        eng = Engine.load(fastpitch=DATA / "tiny_fastpitch.pt", hifigan=DATA / "tiny_hifigan.pt",
                          device="cpu", dtype="bf16", config=EngineConfig(window_sizes=(48,)))
    try:
        assert "bfloat16 autocast" in caplog.text  # the log says which path runs
        whole = eng.synthesize(TEXT)
        streamed = _audio(eng.stream(iter(DELTAS)))
        np.testing.assert_array_equal(streamed, whole.audio)  # same path: identical
        ref = engine.synthesize(TEXT).audio  # fp32
        n = min(len(ref), len(whole.audio))
        noise = np.sum((ref[:n] - whole.audio[:n]) ** 2)
        assert 10 * np.log10(np.sum(ref[:n] ** 2) / noise) > 10  # bf16 rounding, not garbage
    finally:
        eng.close()


def test_cpu_bf16_is_refused_where_it_would_be_slow(monkeypatch) -> None:
    import engine.runtime.engine as engine_mod

    monkeypatch.setattr(engine_mod, "cpu_has_bf16", lambda: False)
    with pytest.raises(InputError, match="no native bf16"):
        Engine.load(fastpitch=DATA / "tiny_fastpitch.pt", hifigan=DATA / "tiny_hifigan.pt",
                    device="cpu", dtype="bf16")
