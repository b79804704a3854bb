"""PCM audio as the engine hands it out: float <-> 16-bit PCM and G.711 µ-law, band-limited
resampling (soxr) and WAV files. numpy only, no torch: the clients import it too, so this is
the one implementation of each conversion for the engine, the servers and the clients.

Functions that take audio accept numpy arrays, and torch tensors on any device (converted
with ``.detach().cpu()``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["ENCODINGS", "StreamResampler", "decode", "encode", "float_to_mulaw",
           "float_to_pcm16", "mulaw_to_float", "mulaw_to_pcm16", "pcm16_to_float",
           "pcm16_to_mulaw", "resample", "write_wav"]

# Sample encodings on the wire: name -> bytes per sample.
ENCODINGS = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1}


def _as_numpy(audio: Any) -> np.ndarray:
    if hasattr(audio, "detach"):  # a torch tensor (without importing torch here)
        audio = audio.detach().float().cpu().numpy()
    return np.asarray(audio)


def float_to_pcm16(audio: np.ndarray | Any) -> np.ndarray:
    """float audio in [-1, 1] -> int16 PCM (clipped, rounded to nearest)."""
    audio = _as_numpy(audio)
    a = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return np.round(a * 32767.0).astype(np.int16)


def write_wav(path: str, audio: np.ndarray | Any, sampling_rate: int) -> None:
    """Write mono float audio in [-1, 1] as a 16-bit PCM WAV file."""
    import soundfile as sf  # lazy: only the CLI and tests write files

    sf.write(path, float_to_pcm16(audio), sampling_rate, subtype="PCM_16")


def pcm16_to_float(pcm: np.ndarray | bytes) -> np.ndarray:
    """int16 PCM (an array, or little-endian bytes) -> float32 in [-1, 1]; the inverse of
    :func:`float_to_pcm16` up to its rounding."""
    a = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, (bytes, bytearray, memoryview)) \
        else np.asarray(pcm, dtype=np.int16)
    return (a.astype(np.float32) / 32767.0).clip(-1.0, 1.0)


# ---------------------------------------------------------------------------- resampling
# soxr (libsoxr, "HQ": 20-bit precision, linear phase) is a real band-limited resampler;
# imported lazily so that loading a voice does not need it.

def _check_rate(name: str, rate: int) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise InputError(f"{name} must be a positive integer rate in Hz, got {rate!r}")
    return int(rate)


def resample(audio: np.ndarray | Any, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono float audio from ``sr_in`` to ``sr_out`` Hz (soxr HQ) -> float32.

    The output has ``round(len(audio) * sr_out / sr_in)`` samples. Equal rates return a
    float32 copy."""
    sr_in, sr_out = _check_rate("sr_in", sr_in), _check_rate("sr_out", sr_out)
    audio = _as_numpy(audio)
    a = np.ascontiguousarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise InputError(f"audio must be 1-D (mono), got shape {a.shape}")
    if sr_in == sr_out:
        return a.copy()
    import soxr

    return np.asarray(soxr.resample(a, sr_in, sr_out, quality="HQ"), dtype=np.float32)


class StreamResampler:
    """Resample a stream of mono float32 chunks without seams.

    One resampler state (``soxr.ResampleStream``) carries the filter history across chunks,
    so the joined output equals resampling the joined input: no clicks at chunk boundaries,
    which resampling each chunk on its own would cause. The filter delays the output by a few
    milliseconds; ``process(last_chunk, last=True)`` flushes the held tail, after which the
    total length is ``round(samples_in * sr_out / sr_in)``. Equal rates pass audio through.

        rs = StreamResampler(22050, 16000)
        for i, chunk in enumerate(chunks):
            out = rs.process(chunk, last=i == len(chunks) - 1)
    """

    def __init__(self, sr_in: int, sr_out: int):
        self.sr_in = _check_rate("sr_in", sr_in)
        self.sr_out = _check_rate("sr_out", sr_out)
        self._stream = None
        if self.sr_in != self.sr_out:
            import soxr

            self._stream = soxr.ResampleStream(self.sr_in, self.sr_out, 1, dtype="float32",
                                               quality="HQ")
        self.samples_in = 0
        self.samples_out = 0

    def process(self, audio: np.ndarray, last: bool = False) -> np.ndarray:
        """Feed the next chunk; returns the float32 output available so far (may be shorter
        or longer than the chunk's share, never lost). ``last=True`` ends the stream and
        flushes it; the next call starts a new stream."""
        a = np.ascontiguousarray(audio, dtype=np.float32)
        if a.ndim != 1:
            raise InputError(f"audio must be 1-D (mono), got shape {a.shape}")
        self.samples_in += len(a)
        if self._stream is None:
            out = a.copy()
        else:
            out = np.asarray(self._stream.resample_chunk(a, last=last), dtype=np.float32)
        self.samples_out += len(out)
        if last:
            self.reset()
        return out

    def reset(self) -> None:
        """Drop any held samples and start a new stream (e.g. after a cancelled utterance)."""
        if self._stream is not None:
            self._stream.clear()
        self.samples_in = self.samples_out = 0


# ---------------------------------------------------------------------------- G.711 µ-law
# ITU-T G.711 µ-law with the reference codec's segment table (as in Sun's g711.c and
# Python's former audioop.lin2ulaw): 14-bit magnitude, bias 33, 8 segments of 16 steps,
# bits inverted on the wire. 0xFF and 0x7F are the two zeros; 0x80 is +32124, 0x00 -32124.
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], np.int32)
_ULAW_CLIP = 8159  # largest 14-bit magnitude µ-law encodes
_ULAW_BIAS = 0x21  # 33 = 0x84 >> 2


def pcm16_to_mulaw(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM -> G.711 µ-law bytes (uint8 array)."""
    x = np.asarray(pcm, dtype=np.int16).astype(np.int32) >> 2  # 14-bit, as G.711 works
    mask = np.where(x < 0, 0x7F, 0xFF).astype(np.int32)
    mag = np.minimum(np.abs(x), _ULAW_CLIP) + _ULAW_BIAS
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left").astype(np.int32)
    code = np.where(seg >= 8, 0x7F,
                    (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0xF))
    return (code ^ mask).astype(np.uint8)


def mulaw_to_pcm16(codes: np.ndarray | bytes) -> np.ndarray:
    """G.711 µ-law bytes -> int16 PCM (the reference decoder: 0x80 -> 32124)."""
    u = np.frombuffer(codes, dtype=np.uint8) if isinstance(codes, (bytes, bytearray, memoryview)) \
        else np.asarray(codes, dtype=np.uint8)
    u = (~u.astype(np.int32)) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def float_to_mulaw(audio: np.ndarray | Any) -> np.ndarray:
    """float audio in [-1, 1] -> G.711 µ-law bytes (via 16-bit PCM, clipped)."""
    return pcm16_to_mulaw(float_to_pcm16(audio))


def mulaw_to_float(codes: np.ndarray | bytes) -> np.ndarray:
    """G.711 µ-law bytes -> float32 in [-1, 1]."""
    return pcm16_to_float(mulaw_to_pcm16(codes))



def encode(audio: np.ndarray, encoding: str) -> bytes:
    """float audio in [-1, 1] -> little-endian bytes in ``encoding`` (see :data:`ENCODINGS`)."""
    if encoding == "pcm_s16le":
        return float_to_pcm16(audio).astype("<i2", copy=False).tobytes()
    if encoding == "pcm_f32le":
        return np.asarray(audio, dtype="<f4").tobytes()
    if encoding == "mulaw":
        return float_to_mulaw(audio).tobytes()
    raise InputError(f"unknown encoding {encoding!r}; known: {list(ENCODINGS)}")


def decode(data: bytes, encoding: str) -> np.ndarray:
    """Little-endian bytes in ``encoding`` -> float32 audio in [-1, 1]."""
    if encoding == "pcm_s16le":
        return pcm16_to_float(data)
    if encoding == "pcm_f32le":
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    if encoding == "mulaw":
        return mulaw_to_float(data)
    raise InputError(f"unknown encoding {encoding!r}; known: {list(ENCODINGS)}")
