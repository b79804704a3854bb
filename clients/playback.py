"""Play streamed speech on a sound device while it is being synthesized.

    from clients.playback import play_stream
    stream = engine.stream("Hello there.")
    stats = play_stream(stream, engine.sample_rate, cancel=stream.cancel)
    print(stats.underruns, stats.played_seconds)

The caller's thread iterates the chunks (so synthesis and Ctrl-C stay in the caller's hands)
and copies their samples into a bounded single-producer/single-consumer ring buffer. A
PortAudio output stream (via the ``sounddevice`` package) drains the ring from its own
real-time callback. The producer blocks while the ring is full, so a fast producer is paced
by the sound card instead of buffering the whole utterance in memory.

Playback starts once ``prebuffer_ms`` of audio is queued (or the producer has finished). When
the ring runs dry mid-stream the callback plays silence, counts an underrun and waits for the
prebuffer to refill again, so one slow stretch becomes one gap rather than a crackle of tiny
gaps.

PortAudio itself is a system library (``apt-get install libportaudio2`` on Debian/Ubuntu);
``sounddevice`` loads it on import. Every setup problem (no PortAudio, no output device, an
unknown device, an unsupported sample rate) raises :class:`PlaybackError`, a ``ValueError``
whose message says how to fix it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from engine.errors import InputError

log = logging.getLogger(__name__)

LIST_HINT = ("List the devices with `python -m sounddevice` and pick one with device=NAME|INDEX "
             "(fpstream speak --play --device-out NAME|INDEX).")

# When the ring is full the producer sleeps for about the time the device needs to free the
# space it waits for, but never longer than this, so Ctrl-C and a dead device are noticed.
_MAX_WAIT_S = 0.02
# No frame consumed for this long while audio is queued: the device has stopped pulling
# data (unplugged, suspended); fail instead of blocking the producer forever.
_STALL_S = 3.0


class PlaybackError(InputError):
    """Playback cannot start (PortAudio missing, no such output device, unsupported settings)
    or cannot go on (the device stopped taking audio). An InputError: the machine's sound
    setup, not a bug, so command lines report it as one line, not a traceback."""


@dataclass(frozen=True)
class OutputDevice:
    """A PortAudio device with output channels, as :func:`list_output_devices` reports it."""

    index: int
    name: str
    hostapi: str
    channels: int
    default_samplerate: float
    is_default: bool

    def describe(self) -> str:
        mark = "*" if self.is_default else " "
        return (f"{mark}{self.index:3d} {self.name} ({self.hostapi}, {self.channels} out, "
                f"{self.default_samplerate:g} Hz)")


@dataclass(frozen=True)
class PlaybackStats:
    """What happened during :func:`play_stream`.

    ``played_seconds`` counts only real audio the device callback consumed (silence inserted
    for pre-roll, gaps or the final drain is not included). ``underruns`` is ``starved``
    (times the ring ran dry mid-stream, each followed by a re-buffer) plus
    ``device_underflows`` (PortAudio's output_underflow flag: the callback itself was late).
    Times are seconds from the call of :func:`play_stream`; ``first_sound_seconds`` adds the
    device's reported output latency to the moment the first samples were handed over, and
    is None when nothing was played.
    """

    played_seconds: float
    underruns: int
    starved: int
    device_underflows: int
    gap_seconds: float
    first_chunk_seconds: float | None
    first_sound_seconds: float | None
    wall_seconds: float
    sample_rate: int
    device: str


# --------------------------------------------------------------------------- devices


def _sounddevice() -> Any:
    """Import sounddevice, turning a missing PortAudio or package into a PlaybackError."""
    try:
        import sounddevice
    except ImportError:
        raise PlaybackError("speaker playback needs the sounddevice package: "
                            "pip install sounddevice") from None
    except OSError as e:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise PlaybackError(f"speaker playback needs the PortAudio library ({e}); install it "
                            f"with `apt-get install libportaudio2` (Debian/Ubuntu), "
                            f"`dnf install portaudio` or `brew install portaudio`") from None
    return sounddevice


def list_output_devices() -> list[OutputDevice]:
    """Every PortAudio device that can play audio, default output marked."""
    sd = _sounddevice()
    default_out = sd.default.device[1]
    hostapis = sd.query_hostapis()
    out = []
    for info in sd.query_devices():
        if info["max_output_channels"] > 0:
            out.append(OutputDevice(
                index=int(info["index"]), name=str(info["name"]),
                hostapi=str(hostapis[info["hostapi"]]["name"]),
                channels=int(info["max_output_channels"]),
                default_samplerate=float(info["default_samplerate"]),
                is_default=int(info["index"]) == default_out))
    return out


def _no_device_message() -> str:
    return ("no audio output device found: PortAudio sees no sound card and no configured "
            "ALSA/PulseAudio/JACK output on this machine. On a machine without speakers, define "
            "a virtual device (e.g. an ALSA `null` or `file` PCM in ~/.asoundrc) and choose it "
            "explicitly. " + LIST_HINT)


def resolve_output_device(device: str | int | None = None) -> OutputDevice:
    """The output device to use: ``None`` = the system default, an index (int or digit
    string), or a name (exact, else a unique case-insensitive substring). Raises
    :class:`PlaybackError` naming the available outputs when that is not possible."""
    devices = list_output_devices()
    if not devices:
        raise PlaybackError(_no_device_message())
    listing = "available output devices:\n" + "\n".join(d.describe() for d in devices)
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)
    if device is None:
        for d in devices:
            if d.is_default:
                return d
        raise PlaybackError("there is no default audio output device; choose one explicitly. "
                            + LIST_HINT + "\n" + listing)
    if isinstance(device, bool) or not isinstance(device, (int, str)):
        raise PlaybackError(f"device must be a name or an index, got {device!r}")
    if isinstance(device, int):
        for d in devices:
            if d.index == device:
                return d
        raise PlaybackError(f"no output device with index {device}. " + LIST_HINT + "\n"
                            + listing)
    want = device.strip().lower()
    exact = [d for d in devices if d.name.lower() == want]
    if len(exact) == 1:
        return exact[0]
    partial = [d for d in devices if want in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    what = "matches several output devices" if partial else "matches no output device"
    raise PlaybackError(f"{device!r} {what}. " + LIST_HINT + "\n" + listing)


# --------------------------------------------------------------------------- ring buffer


class _Ring:
    """Bounded single-producer/single-consumer float32 ring.

    ``written`` is only ever advanced by the producer and ``read`` only by the consumer, each
    after its copy is complete; a plain attribute store is atomic under the GIL, so neither
    side needs a lock and the audio callback never waits on the producer.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._buf = np.zeros(capacity, np.float32)
        self.written = 0  # frames ever written (monotonic)
        self.read = 0  # frames ever read (monotonic)
        self.closed = False  # the producer is done: no more frames will come

    def available(self) -> int:
        return self.written - self.read

    def write_some(self, data: np.ndarray) -> int:
        """Copy as much of ``data`` as fits; returns the number of frames taken."""
        n = min(len(data), self.capacity - (self.written - self.read))
        if n <= 0:
            return 0
        start = self.written % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start:start + first] = data[:first]
        if n > first:
            self._buf[:n - first] = data[first:n]
        self.written += n  # publish only after the copy
        return n

    def read_into(self, out: np.ndarray) -> int:
        """Copy up to ``len(out)`` frames into ``out``; returns the number copied."""
        n = min(len(out), self.written - self.read)
        if n <= 0:
            return 0
        start = self.read % self.capacity
        first = min(n, self.capacity - start)
        out[:first] = self._buf[start:start + first]
        if n > first:
            out[first:n] = self._buf[:n - first]
        self.read += n  # free the space only after the copy
        return n


class _Player:
    """The PortAudio callback and its counters (written by the callback thread only)."""

    def __init__(self, ring: _Ring, prebuffer: int, t0: float, latency: float):
        self.ring = ring
        self.prebuffer = prebuffer
        self.t0 = t0
        self.latency = latency  # fallback when PortAudio gives no DAC timestamps
        self.playing = False  # False: pre-roll or re-buffering after a gap
        self.played = 0  # real frames handed to the device
        self.gap_frames = 0  # silence frames inserted after playback had started
        self.starved = 0
        self.device_underflows = 0
        self.first_sound: float | None = None
        self.done = threading.Event()  # set by PortAudio once the stream has finished
        self.stop: type[BaseException] = Exception  # sounddevice.CallbackStop, set at open

    def callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.output_underflow:
            self.device_underflows += 1
        out = outdata.reshape(-1)  # mono: a view, not a copy
        ring = self.ring
        closed = ring.closed  # read before available(): all data is written once closed
        avail = ring.available()
        if not self.playing:
            if avail >= self.prebuffer or (closed and avail > 0):
                self.playing = True
            else:
                out.fill(0)
                if self.played:
                    self.gap_frames += frames
                if closed:  # nothing left at all
                    raise self.stop
                return
        n = ring.read_into(out)
        if n and self.first_sound is None:
            self.first_sound = time.perf_counter() - self.t0 + self._dac_delay(time_info)
        self.played += n
        if n < frames:
            out[n:] = 0
            if closed and ring.available() == 0:
                raise self.stop  # end of stream: PortAudio plays out what it has, then stops
            # Mid-stream starvation: play silence and re-buffer before resuming.
            self.starved += 1
            self.gap_frames += frames - n
            self.playing = False

    def _dac_delay(self, time_info: Any) -> float:
        """Seconds until the samples of this callback reach the DAC."""
        try:
            delay = time_info.outputBufferDacTime - time_info.currentTime
        except AttributeError:
            delay = -1.0
        # Some host APIs (ALSA plugins among them) report zeros: use the stream latency.
        return delay if 0 < delay < 2 else self.latency


# --------------------------------------------------------------------------- playback


def _chunk_audio(chunk: Any, sample_rate: int) -> np.ndarray:
    """The float32 mono samples of one chunk (an AudioChunk-like object or an array)."""
    if isinstance(chunk, np.ndarray):
        audio = chunk
    else:
        rate = getattr(chunk, "sample_rate", sample_rate)
        if rate != sample_rate:
            raise InputError(f"chunk sample rate {rate} Hz differs from the stream's "
                             f"{sample_rate} Hz")
        audio = np.asarray(chunk.audio)
    if audio.ndim != 1 and not (audio.ndim == 2 and 1 in audio.shape):
        raise InputError(f"chunks must be mono audio, got shape {audio.shape}")
    return np.asarray(audio, dtype=np.float32).reshape(-1)


def play_stream(chunks: Iterable[Any], sample_rate: int, device: str | int | None = None,
                prebuffer_ms: float = 150, *, cancel: Callable[[], None] | None = None,
                buffer_ms: float = 2000, latency: float | str = "high",
                blocksize: int = 0) -> PlaybackStats:
    """Play ``chunks`` as they arrive and return when the last sample has been played.

    ``chunks`` yields objects with ``.audio`` (float32 mono) and ``.sample_rate`` (such as
    the engine's AudioChunk) or plain 1-D arrays, all at ``sample_rate``. ``device`` is an
    output device name or index (None: the system default; see :func:`list_output_devices`).
    Playback begins once ``prebuffer_ms`` of audio is queued; the ring holds at most
    ``buffer_ms`` and iteration pauses while it is full. ``latency`` and ``blocksize`` go to
    PortAudio ("high" latency makes a busy synthesizer in the same process less likely to
    starve the callback).

    On any early exit (KeyboardInterrupt, an error from the producer or the device) the
    stream is aborted and closed, ``cancel()`` is called to stop the producer's work, and the
    exception propagates. Setup problems raise :class:`PlaybackError` (a ValueError).
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise InputError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if not prebuffer_ms >= 0 or not buffer_ms > 0:
        raise InputError("prebuffer_ms must be >= 0 and buffer_ms > 0")
    sd = _sounddevice()
    out_dev = resolve_output_device(device)
    capacity = max(int(buffer_ms * sample_rate / 1000), 1024)
    prebuffer = min(int(prebuffer_ms * sample_rate / 1000), capacity)
    t0 = time.perf_counter()
    ring = _Ring(capacity)
    player = _Player(ring, prebuffer, t0, latency=0.0)
    player.stop = sd.CallbackStop
    try:
        stream = sd.OutputStream(samplerate=sample_rate, device=out_dev.index, channels=1,
                                 dtype="float32", latency=latency, blocksize=blocksize,
                                 callback=player.callback, finished_callback=player.done.set)
    except (sd.PortAudioError, ValueError) as e:
        raise PlaybackError(f"cannot open output device {out_dev.index} {out_dev.name!r} at "
                            f"{sample_rate} Hz: {e}. A plug/default device resamples; "
                            + LIST_HINT) from None
    player.latency = float(stream.latency)
    log.debug("playing on %s at %d Hz, latency %.3f s, ring %d frames, prebuffer %d",
              out_dev.describe(), sample_rate, stream.latency, capacity, prebuffer)
    first_chunk: float | None = None
    try:
        # Start before the first chunk: the device is running (playing silence) by the time
        # audio arrives, so the first sound is not delayed by the device's start-up.
        try:
            stream.start()
        except sd.PortAudioError as e:
            raise PlaybackError(f"cannot start output device {out_dev.index} "
                                f"{out_dev.name!r}: {e}. " + LIST_HINT) from None
        for chunk in chunks:
            if first_chunk is None:
                first_chunk = time.perf_counter() - t0
            _push(ring, _chunk_audio(chunk, sample_rate), sample_rate, player)
        ring.closed = True
        _wait_played(ring, player)
    except BaseException:
        stream.abort(ignore_errors=True)  # stop the sound now, do not play out the buffer
        if cancel is not None:
            try:
                cancel()
            except Exception:  # noqa: BLE001 - a failing cancel must not mask the cause
                log.exception("cancel callback failed")
        raise
    finally:
        stream.close(ignore_errors=True)
    stats = PlaybackStats(
        played_seconds=player.played / sample_rate,
        underruns=player.starved + player.device_underflows,
        starved=player.starved, device_underflows=player.device_underflows,
        gap_seconds=player.gap_frames / sample_rate, first_chunk_seconds=first_chunk,
        first_sound_seconds=player.first_sound, wall_seconds=time.perf_counter() - t0,
        sample_rate=sample_rate, device=out_dev.name)
    log.info("played %.2f s on %r: %d underruns (%.2f s of gaps), first sound after %s s",
             stats.played_seconds, stats.device, stats.underruns, stats.gap_seconds,
             "n/a" if stats.first_sound_seconds is None else f"{stats.first_sound_seconds:.3f}")
    return stats


def _push(ring: _Ring, audio: np.ndarray, sample_rate: int, player: _Player) -> None:
    """Copy ``audio`` into the ring, blocking while it is full (backpressure)."""
    pos = 0
    last_read, last_progress = ring.read, time.monotonic()
    while pos < len(audio):
        pos += ring.write_some(audio[pos:])
        if pos >= len(audio):
            return
        if player.done.is_set():
            raise PlaybackError("the audio output stream stopped unexpectedly")
        if ring.read != last_read:
            last_read, last_progress = ring.read, time.monotonic()
        elif time.monotonic() - last_progress > _STALL_S:
            raise PlaybackError(f"the audio output device stopped consuming audio "
                               f"(nothing played for {_STALL_S:g} s)")
        need = min(len(audio) - pos, ring.capacity // 4)
        time.sleep(min(max(need / sample_rate, 0.001), _MAX_WAIT_S))


def _wait_played(ring: _Ring, player: _Player) -> None:
    """Wait until the callback has played everything and PortAudio has finished the stream
    (the callback raises CallbackStop at the end; PortAudio then drains its own buffers)."""
    last_read, last_progress = ring.read, time.monotonic()
    # Short waits keep the main thread responsive to Ctrl-C.
    while not player.done.wait(0.05):
        if ring.read != last_read:
            last_read, last_progress = ring.read, time.monotonic()
        elif time.monotonic() - last_progress > _STALL_S + player.latency:
            raise PlaybackError(f"the audio output device stopped consuming audio "
                               f"(nothing played for {_STALL_S:g} s)")
