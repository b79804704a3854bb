"""Speaker playback (clients/playback.py, ``fpstream speak --play``) through a real PortAudio.

No sound card is needed: each test writes its own ALSA configuration into a temp dir and
points ``ALSA_CONFIG_PATH`` at it, in a subprocess, so the developer's ALSA setup (and real
speakers) are never touched. The test device ``fpsink`` is ALSA's ``plug`` -> ``file`` ->
``null`` chain: PortAudio plays into it as into any card, the ``file`` plugin writes every
sample (float32 mono, 22.05 kHz) into a FIFO, and :class:`PacedSink` reads that FIFO at
real-time speed, like a DAC would. So the tests see exactly what reached the "speaker", and
playback takes real time, which makes underruns from a slow producer observable.

PortAudio is a system library (Debian: libportaudio2; ``.ci/install-system-deps`` installs it
in CI). Without it these tests skip, unless FPSTREAM_REQUIRE_PORTAUDIO=1 (set by ``.ci/run``)
turns the skip into a failure so CI cannot silently stop testing playback.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from clients.playback import _Ring
from engine.pcm import float_to_pcm16
from clients.cli import main

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"
TINY = ["--fastpitch", str(DATA / "tiny_fastpitch.pt"), "--hifigan", str(DATA / "tiny_hifigan.pt"),
        "--device", "cpu"]
RATE = 22050
BYTES_PER_S = RATE * 4  # float32 mono

# PortAudio 19.6 asserts (aborts the process) when the ALSA configuration has no `default`
# PCM, so every configuration defines one.
SINK_CONF = """\
pcm.!default {{ type null }}
pcm.fpsink {{
  type plug
  slave {{
    pcm {{ type file  slave.pcm {{ type null }}  file "{fifo}"  format "raw" }}
    format FLOAT_LE
    rate {rate}
    channels 1
  }}
  hint.description "fpstream test sink"
}}
"""
# A capture-only default: PortAudio lists a device, but none that can play.
NO_OUTPUT_CONF = "pcm.!default { type asym  capture.pcm { type null } }\n"

# The child process for library-level tests: plays a deterministic test signal (no zeros in
# it, so silence inserted by playback is recognisable) and prints one JSON line.
CHILD = r"""
import json, os, sys, time
import numpy as np
from clients.playback import PlaybackError, list_output_devices, play_stream

spec = json.loads(sys.argv[1])
rate = 22050
rng = np.random.default_rng(0)
n = int(spec.get("seconds", 0) * rate)
audio = (rng.uniform(0.05, 0.5, n) * rng.choice([-1.0, 1.0], n)).astype(np.float32)
step = int(spec.get("chunk_ms", 50) * rate / 1000)
cancelled = []

def chunks():
    for k, i in enumerate(range(0, n, step)):
        if k == spec.get("interrupt_after"):
            raise KeyboardInterrupt  # what Ctrl-C does to a producer
        time.sleep(spec.get("delay_s", 0))
        yield np.asarray(audio[i:i + step])

result = {"outputs": [d.name for d in list_output_devices()]}
t = time.perf_counter()
try:
    stats = play_stream(chunks(), rate, device=spec.get("device"),
                        prebuffer_ms=spec.get("prebuffer_ms", 150),
                        cancel=lambda: cancelled.append(True))
    result["stats"] = stats.__dict__
except KeyboardInterrupt:
    result["interrupted"] = True
except PlaybackError as e:
    result["error"] = str(e)
    result["is_value_error"] = isinstance(e, ValueError)
result["return_s"] = time.perf_counter() - t
result["cancelled"] = bool(cancelled)
# Is the device (the FIFO behind it) still held open by this process?
fds = [os.readlink(f"/proc/self/fd/{f}") for f in os.listdir("/proc/self/fd")
       if os.path.islink(f"/proc/self/fd/{f}")]
result["fifo_open"] = any(p.endswith("sink.fifo") for p in fds)
print(json.dumps(result))
"""


def _test_env(conf_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Only our configuration: alsa.conf (which loads ~/.asoundrc and the real cards) is not read.
    env["ALSA_CONFIG_PATH"] = str(conf_path)
    # Keep a developer's running JACK server out of PortAudio's device list.
    env["JACK_NO_START_SERVER"] = "1"
    env["JACK_DEFAULT_SERVER"] = "fpstream-test-no-such-server"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="session")
def portaudio(tmp_path_factory) -> None:
    """Skip (or fail under FPSTREAM_REQUIRE_PORTAUDIO=1) when PortAudio cannot be loaded."""
    conf = tmp_path_factory.mktemp("alsa") / "asound.conf"
    conf.write_text(NO_OUTPUT_CONF)
    r = subprocess.run([sys.executable, "-c", "import sounddevice"], env=_test_env(conf),
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        msg = f"PortAudio cannot be loaded ({why}); install libportaudio2"
        if os.environ.get("FPSTREAM_REQUIRE_PORTAUDIO") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


class PacedSink:
    """Reads what the ALSA `file` plugin writes into a FIFO, at real-time speed.

    The FIFO is opened non-blocking and kept open for the whole test, so the plugin's open
    for writing never blocks, and PortAudio may open and close the device several times
    (it probes it when it starts). The pipe is shrunk to one page so that the writer cannot
    run far ahead of "real time".
    """

    def __init__(self, fifo: Path):
        self.fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            fcntl.fcntl(self.fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
        except OSError:
            pass  # a larger pipe only adds latency
        self._data = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Set when the writer closes the device after sending audio: everything is read.
        self.drained = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="paced-sink")
        self._thread.start()

    def _run(self) -> None:
        t0, base = None, 0
        while not self._stop.is_set():
            if not select.select([self.fd], [], [], 0.02)[0]:
                continue
            try:
                b = os.read(self.fd, 1024)  # 256 frames: ~12 ms pacing granularity
            except BlockingIOError:
                continue
            if not b:  # no writer (yet, or it closed the device): restart the clock
                t0 = None
                if self._data:
                    self.drained.set()
                time.sleep(0.005)
                continue
            self.drained.clear()
            with self._lock:
                self._data += b
                total = len(self._data)
            if t0 is None:
                t0, base = time.perf_counter(), total - len(b)
            ahead = (total - base) / BYTES_PER_S - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)

    def seconds(self) -> float:
        with self._lock:
            return len(self._data) / BYTES_PER_S

    def samples(self) -> np.ndarray:
        with self._lock:
            data = bytes(self._data[: len(self._data) // 4 * 4])
        return np.frombuffer(data, dtype="<f4")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        os.close(self.fd)


@pytest.fixture
def sink(portaudio, tmp_path):
    """An ALSA configuration with the paced ``fpsink`` device; yields (env, sink)."""
    fifo = tmp_path / "sink.fifo"
    os.mkfifo(fifo)
    conf = tmp_path / "asound.conf"
    conf.write_text(SINK_CONF.format(fifo=fifo, rate=RATE))
    paced = PacedSink(fifo)
    yield _test_env(conf), paced
    paced.close()


@pytest.fixture
def no_output_env(portaudio, tmp_path) -> dict[str, str]:
    conf = tmp_path / "asound.conf"
    conf.write_text(NO_OUTPUT_CONF)
    return _test_env(conf)


def run_child(env: dict[str, str], **spec) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def expected_signal(seconds: float) -> np.ndarray:
    """The child's test signal (same seed and recipe)."""
    rng = np.random.default_rng(0)
    n = int(seconds * RATE)
    return (rng.uniform(0.05, 0.5, n) * rng.choice([-1.0, 1.0], n)).astype(np.float32)


def wait_for(cond, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


# --------------------------------------------------------------------------- library


def test_plays_every_sample_in_real_time(sink):
    env, paced = sink
    res = run_child(env, device="fpsink", seconds=1.0, chunk_ms=50)
    st = res["stats"]
    assert "fpsink" in res["outputs"] and st["device"] == "fpsink"
    assert st["played_seconds"] == pytest.approx(1.0, abs=1 / RATE)
    assert isinstance(st["underruns"], int) and st["underruns"] == 0 and st["starved"] == 0
    assert 0.0 <= st["first_chunk_seconds"] < 0.5 and 0.0 < st["first_sound_seconds"] < 1.0
    assert 0.8 < st["wall_seconds"] < 5.0  # the device pulled the audio at real-time speed
    # What reached the device is the signal, bit for bit, in one piece (pre-roll and the
    # final drain are silence around it).
    assert paced.drained.wait(5)
    got = paced.samples()
    sent = expected_signal(1.0)
    nz = np.flatnonzero(got)
    assert len(nz) == len(sent) and nz[-1] - nz[0] + 1 == len(sent)
    np.testing.assert_array_equal(got[nz[0]:nz[0] + len(sent)], sent)


def test_slow_producer_underruns_are_counted(sink):
    env, paced = sink
    # 50 ms chunks every 100 ms: half real time, the ring must run dry repeatedly.
    res = run_child(env, device="fpsink", seconds=0.6, chunk_ms=50, delay_s=0.1,
                    prebuffer_ms=60)
    st = res["stats"]
    assert st["played_seconds"] == pytest.approx(0.6, abs=1 / RATE)
    assert isinstance(st["underruns"], int) and st["starved"] >= 2
    assert st["underruns"] == st["starved"] + st["device_underflows"]
    assert st["gap_seconds"] > 0.1 and st["wall_seconds"] > 1.0
    # Every sample still arrived, in order; the gaps are silence between them.
    assert paced.drained.wait(5)
    got = paced.samples()
    np.testing.assert_array_equal(got[got != 0], expected_signal(0.6))
    print(f"slow producer: {st['underruns']} underruns, {st['gap_seconds']:.2f} s of gaps, "
          f"{st['played_seconds']:.2f} s played in {st['wall_seconds']:.2f} s")


def test_ctrl_c_in_producer_stops_cleanly(sink):
    env, paced = sink
    res = run_child(env, device="fpsink", seconds=3.0, chunk_ms=50, delay_s=0.05,
                    interrupt_after=8)
    assert res["interrupted"] and res["cancelled"]  # KeyboardInterrupt propagated, cancel ran
    assert not res["fifo_open"]  # the stream (and with it the ALSA device) is closed
    assert res["return_s"] < 2.0
    assert paced.seconds() < 1.5  # far less than the 3 s signal reached the device


def test_no_output_device_is_a_clear_error(no_output_env):
    res = run_child(no_output_env, seconds=0.1)
    assert res["outputs"] == []
    assert res["is_value_error"] and "no audio output device" in res["error"]
    assert "python -m sounddevice" in res["error"] and "--device-out" in res["error"]


def test_unknown_device_lists_the_outputs(sink):
    env, _ = sink
    res = run_child(env, device="no-such-speaker", seconds=0.1)
    assert res["is_value_error"] and "matches no output device" in res["error"]
    assert "fpsink" in res["error"] and "python -m sounddevice" in res["error"]
    res = run_child(env, device=99, seconds=0.1)
    assert "no output device with index 99" in res["error"]


# --------------------------------------------------------------------------- CLI


def speak_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "clients.cli", "speak", *args, *TINY]


def test_speak_play_streams_to_the_device_without_writing_a_file(sink, tmp_path):
    env, paced = sink
    r = subprocess.run(speak_cmd("Hello there, how are you?", "--play", "--device-out", "fpsink"),
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = re.search(r"played ([\d.]+) s on 'fpsink' at 22050 Hz: (\d+) underruns", r.stderr)
    assert m, r.stderr
    played = float(m.group(1))
    assert played > 0.5 and "first sound" in r.stderr
    assert not (tmp_path / "audio.wav").exists()  # --play without -o writes no file
    assert paced.drained.wait(5)
    assert np.count_nonzero(paced.samples()) >= (played - 0.01) * RATE


def test_speak_play_with_output_also_writes_the_wav(tmp_path, monkeypatch, capsys):
    # In-process with a recording player in place of PortAudio (the real device path is
    # covered above): the WAV must hold exactly the audio that was handed to the player.
    import clients.playback as playback

    played: list[np.ndarray] = []
    device = playback.OutputDevice(3, "recorder", "test", 1, RATE, True)

    def record(chunks, sample_rate, device=None, prebuffer_ms=150, *, cancel=None, **kw):
        assert sample_rate == RATE and device == 3 and cancel is not None
        played.extend(np.array(c.audio) for c in chunks)
        return playback.PlaybackStats(len(np.concatenate(played)) / RATE, 0, 0, 0, 0.0, 0.1,
                                      0.2, 1.0, RATE, "recorder")

    monkeypatch.setattr(playback, "resolve_output_device", lambda dev: device)
    monkeypatch.setattr(playback, "play_stream", record)
    out = tmp_path / "both.wav"
    assert main(["speak", "Testing one two.", "--play", "-o", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    assert "played" in err and "on 'recorder'" in err and f"wrote {out}" in err
    wav, rate = sf.read(out, dtype="int16")
    assert rate == RATE and len(played) >= 1
    np.testing.assert_array_equal(wav, float_to_pcm16(np.concatenate(played)))


def test_speak_play_ctrl_c_exits_130_without_traceback(sink, tmp_path):
    env, paced = sink
    # On a hang, SIGABRT makes faulthandler print every thread's stack: the failure says where.
    env = {**env, "PYTHONFAULTHANDLER": "1"}
    text = "This is a long text that keeps playing for a while. " * 20
    # A shell's background job (e.g. a CI step run with '&') ignores SIGINT, and so would
    # the child: give it the default disposition, as in a terminal, so Python installs its
    # Ctrl-C handler.
    p = subprocess.Popen(speak_cmd(text, "--play", "--device-out", "fpsink"), cwd=tmp_path,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert wait_for(lambda: paced.seconds() > 0.3 or p.poll() is not None, 60)
        assert p.poll() is None, p.communicate()[1]
        p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGABRT)
            _, err = p.communicate(timeout=20)
            pytest.fail(f"no exit 20 s after Ctrl-C; the stacks at SIGABRT:\n{err}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err
    assert "fpstream: interrupted" in err and "Traceback" not in err
    heard = paced.seconds()
    time.sleep(0.3)
    assert paced.seconds() - heard < 0.2  # playback stopped with the process


def test_speak_play_without_an_output_device(no_output_env, tmp_path):
    r = subprocess.run(speak_cmd("Hello.", "--play"), cwd=tmp_path, env=no_output_env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "fpstream: error: no audio output device found" in r.stderr
    assert "python -m sounddevice" in r.stderr


def test_device_out_needs_play(capsys):
    # Rejected before PortAudio is touched, so this runs in-process.
    assert main(["speak", "Hello.", "--device-out", "fpsink", *TINY]) == 2
    assert "--device-out only applies together with --play" in capsys.readouterr().err


# --------------------------------------------------------------------------- ring buffer


def test_ring_wraps_around_and_applies_backpressure():
    ring = _Ring(8)
    a = np.arange(1, 21, dtype=np.float32)
    assert ring.write_some(a[:6]) == 6
    out = np.zeros(4, np.float32)
    assert ring.read_into(out) == 4 and out.tolist() == [1, 2, 3, 4]
    assert ring.write_some(a[6:]) == 6  # full: only the free space is taken, across the end
    assert ring.write_some(a[12:]) == 0
    out = np.zeros(10, np.float32)
    assert ring.read_into(out) == 8 and out[:8].tolist() == list(range(5, 13))
    assert ring.read_into(out) == 0 and ring.available() == 0
