"""Static-shape execution for the runner: shape buckets and (on CUDA) CUDA graphs.

FastPitch runs as two static programs: encode (encoder + predictors) over a (batch, text)
bucket, then length regulation + decoder over a (batch, text, mel) bucket. The one host sync
is reading the mel lengths in between, to pick the mel bucket. HiFi-GAN windows are padded to
a (batch, frames) bucket without changing their delivered samples (see :func:`pad_window`).

On CUDA each bucket is captured once as a CUDA graph (static input/output buffers, warm-up
outside timing) and replayed; elsewhere the same bucketed computation runs eagerly, which is
what the tests compare against the unbucketed path.

The length regulator of the decoder program is a parameter: the model's ``regulate_len`` by
default, the Triton kernel (``kernels.length_regulator``) when the runner uses kernels. This
module only runs what it is given; the runner decides (and installs) kernels.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..audio import LOG_MEL_FLOOR
from ..models.fastpitch import FastPitch, regulate_len
from ..models.hifigan import Generator
from ..text import SPACE_ID

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Buckets:
    """Shape buckets; a size beyond the largest bucket runs unbucketed (eager)."""

    batch: tuple[int, ...] = (1, 2, 4, 8, 16)
    text: tuple[int, ...] = (32, 64, 128, 256, 512)
    mel: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096)
    window: tuple[int, ...] = (40, 64, 96, 128, 192, 256, 384)  # vocoder input frames


# (enc_out (B, T_text, d), durations (B, T_text), pace (B,), max_len) ->
# (frames (B, max_len, d) zero past each row's length, mel_lens (B,) int64 clamped to max_len).
# Must not sync with the host (it runs inside captured graphs).
LengthRegulator = Callable[[Tensor, Tensor, Tensor, int], tuple[Tensor, Tensor]]


def _regulate_len(enc_out: Tensor, durations: Tensor, pace: Tensor,
                  max_len: int) -> tuple[Tensor, Tensor]:
    """The model's PyTorch length regulator in :data:`LengthRegulator` form."""
    return regulate_len(durations, enc_out, pace, max_len=max_len)


def bucket(n: int, sizes: tuple[int, ...]) -> int | None:
    """The smallest bucket >= n, or None if n is larger than all."""
    i = bisect_left(sizes, n)
    return sizes[i] if i < len(sizes) else None


class _Graph:
    """A captured CUDA graph around ``fn`` with static inputs, or eager where not on CUDA."""

    def __init__(self, fn: Callable[[], tuple[Tensor, ...]], use_graph: bool,
                 pool: object | None = None):
        self.fn = fn
        self.graph = None
        self.outputs: tuple[Tensor, ...] | None = None
        if use_graph:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up (cuDNN autotune, allocator) outside capture
                for _ in range(2):
                    fn()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, pool=pool):
                self.outputs = fn()

    def __call__(self) -> tuple[Tensor, ...]:
        if self.graph is None:
            return self.fn()
        self.graph.replay()
        assert self.outputs is not None
        return self.outputs


class StaticFastPitch:
    """Bucketed FastPitch with per-row pace, speaker and pitch shift; CUDA graphs on GPU.

    ``length_regulator`` (a :data:`LengthRegulator`; None = the model's ``regulate_len``)
    expands the encoder output in the decoder program.
    """

    def __init__(self, model: FastPitch, buckets: Buckets = Buckets(), use_graphs: bool = False,
                 length_regulator: LengthRegulator | None = None):
        self.model, self.buckets = model, buckets
        self.length_regulator = length_regulator or _regulate_len
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.use_graphs = use_graphs and self.device.type == "cuda"
        self.pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self.mean, self.std = model.pitch_stats()  # read once: no sync inside graphs
        self._enc: dict[tuple[int, int], tuple[_Graph, dict[str, Tensor]]] = {}
        self._dec: dict[tuple[int, int, int], tuple[_Graph, dict[str, Tensor]]] = {}

    def _encoder_program(self, b: int, t: int) -> tuple[_Graph, dict[str, Tensor]]:
        key = (b, t)
        if key not in self._enc:
            dev = self.device
            io = {"ids": torch.full((b, t), 0, dtype=torch.long, device=dev),
                  "pace": torch.ones(b, device=dev), "speaker": torch.zeros(b, dtype=torch.long, device=dev),
                  "shift": torch.zeros(b, device=dev)}
            io["ids"][:, 0] = SPACE_ID
            m, std = self.model, self.std

            def run() -> tuple[Tensor, ...]:
                spk = 0.0
                if m.speaker_emb is not None:
                    spk = m.speaker_emb(io["speaker"]).unsqueeze(1) * m.config.speaker_emb_weight
                shift = io["shift"].to(self.dtype).view(-1, 1, 1) / std
                enc_out, dur, _, _ = m.encode(
                    io["ids"], spk, lambda p, lens, mean, s: p + shift, (self.mean, self.std),
                    solo_equivalent=True)
                reps = (dur.float() / io["pace"].view(-1, 1) + 0.5).clamp_min(0).floor()
                return enc_out, dur, reps.long().sum(dim=1)

            self._enc[key] = (_Graph(run, self.use_graphs, self.pool), io)
        return self._enc[key]

    def _decoder_program(self, b: int, t: int, mel: int) -> tuple[_Graph, dict[str, Tensor]]:
        key = (b, t, mel)
        if key not in self._dec:
            d = self.model.config.symbols_embedding_dim
            io = {"enc_out": torch.zeros(b, t, d, device=self.device, dtype=self.dtype),
                  "dur": torch.zeros(b, t, device=self.device, dtype=self.dtype),
                  "pace": torch.ones(b, device=self.device)}

            def run() -> tuple[Tensor, ...]:
                frames, lens = self.length_regulator(io["enc_out"], io["dur"], io["pace"], mel)
                # frames (b, mel, d), zero past each row's length; lens (b,) int64
                return self.model.decode(frames, lens, solo_equivalent=True), lens

            self._dec[key] = (_Graph(run, self.use_graphs, self.pool), io)
        return self._dec[key]

    def fits(self, batch: int, text_len: int) -> bool:
        return (bucket(batch, self.buckets.batch) is not None
                and bucket(text_len, self.buckets.text) is not None)

    @torch.inference_mode()
    def __call__(self, ids: list[list[int]], pace: list[float], speaker: list[int],
                 shift_hz: list[float]) -> list[tuple[Tensor, Tensor]]:
        """Rows of token ids -> per row (mel (80, T_mel), durations (T_text,) before pace)."""
        B, T = len(ids), max(len(x) for x in ids)
        b, t = bucket(B, self.buckets.batch), bucket(T, self.buckets.text)
        assert b is not None and t is not None, "check fits() first"
        enc, io = self._encoder_program(b, t)
        rows = torch.zeros(b, t, dtype=torch.long)
        rows[:, 0] = SPACE_ID  # unused rows hold one real token: an all-pad row would be NaN
        for r, x in enumerate(ids):
            rows[r, :len(x)] = torch.as_tensor(x)
            rows[r, len(x):] = 0
        io["ids"].copy_(rows)
        io["pace"].copy_(torch.tensor(pace + [1.0] * (b - B)))
        io["speaker"].copy_(torch.tensor(speaker + [0] * (b - B)))
        io["shift"].copy_(torch.tensor(shift_hz + [0.0] * (b - B)))
        enc_out, dur, mel_lens = enc()
        lens = mel_lens[:B].tolist()  # the one host sync: picks the mel bucket
        m = bucket(max(max(lens), 1), self.buckets.mel)
        if m is None:  # longer than every bucket: decode this batch at its own size
            m = max(lens)
        dec, dio = self._decoder_program(b, t, m)
        dio["enc_out"].copy_(enc_out)
        dio["dur"].copy_(dur)
        dio["pace"].copy_(io["pace"])
        mel, _ = dec()
        return [(mel[r, :, :lens[r]].clone(), dur[r, :len(ids[r])].clone()) for r in range(B)]


class StaticVocoder:
    """HiFi-GAN over (batch, frames) buckets; CUDA graphs on GPU."""

    def __init__(self, generator: Generator, buckets: Buckets = Buckets(),
                 use_graphs: bool = False):
        self.gen, self.buckets = generator, buckets
        p = next(generator.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.use_graphs = use_graphs and self.device.type == "cuda"
        self.pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self._progs: dict[tuple[int, int], tuple[_Graph, Tensor]] = {}

    def program(self, b: int, n: int) -> tuple[_Graph, Tensor]:
        if (b, n) not in self._progs:
            mel = torch.full((b, self.gen.config.num_mels, n), LOG_MEL_FLOOR, device=self.device,
                             dtype=self.dtype)
            self._progs[(b, n)] = (_Graph(lambda: (self.gen(mel),), self.use_graphs, self.pool), mel)
        return self._progs[(b, n)]

    @torch.inference_mode()
    def __call__(self, mels: Tensor) -> Tensor:
        """(B, 80, n) with n a window bucket -> (B, 1, n * hop)."""
        B, _, n = mels.shape
        b = bucket(B, self.buckets.batch)
        if b is None:
            return self.gen(mels)
        prog, buf = self.program(b, n)
        buf[:B].copy_(mels)
        return prog()[0][:B]


def pad_window(mel_lo: int, mel_hi: int, out_hi: int, final: bool, ctx_right: int,
               sizes: tuple[int, ...]) -> tuple[int, int, int] | None:
    """Grow a vocoder window's input [mel_lo, mel_hi) to a bucket without changing the audio
    it delivers. Returns (lo, hi, pad_right) or None when no bucket can be exact.

    Extra real frames on the left never change delivered samples (more context than the
    receptive field). Silence padded on the right is exact only when the delivered frames
    keep ``ctx_right`` real frames after them; a window that reaches the stream's end with
    less (the final one, or one just before it) may only grow to the left.
    """
    n = mel_hi - mel_lo
    nb = bucket(n, sizes)
    if nb is None:
        return None
    extra = nb - n
    if final or mel_hi - out_hi < ctx_right:
        if mel_lo < extra:
            return None
        return mel_lo - extra, mel_hi, 0
    left = min(extra, mel_lo)
    return mel_lo - left, mel_hi, extra - left
