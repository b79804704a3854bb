"""The runner's Triton wiring: with kernels (forced on; the interpreter on CPU), FastPitch and
HiFi-GAN give what the plain PyTorch modules give, through the kernel launchers in
``kernels/``, and the model objects stay plain PyTorch outside the runner's calls."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture()
def interpreter(monkeypatch):
    """Kernels that can run here (interpreter on CPU), or a skip with the reason."""
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    pytest.importorskip("triton")
    from kernels.utils import triton_ready

    ok, why = triton_ready("cpu")  # the tests' voices are loaded on the CPU
    if not ok:
        pytest.skip(f"Triton kernels cannot run here: {why}")


def _voice():
    from engine.models.voice import Voice

    return Voice.load(DATA / "tiny_fastpitch.pt", DATA / "tiny_hifigan.pt")


def _hooked(voice) -> list[str]:
    """Modules of the voice with a ``fused`` hook set on the instance."""
    return [type(m).__name__ for model in (voice.fastpitch, voice.hifigan)
            for m in model.modules() if "fused" in vars(m)]


class _Spy:
    """Counts calls of a module-level function and delegates to it."""

    def __init__(self, monkeypatch, module, name: str):
        self.calls, fn = 0, getattr(module, name)

        def spy(*args, **kwargs):
            self.calls += 1
            return fn(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)


def test_forced_kernels_match_plain_modules(interpreter, monkeypatch):
    import kernels.ffn as kffn
    import kernels.resblock as krb
    from engine.runtime.request import SynthesisOptions
    from engine.runtime.runner import Runner

    ffn_calls = _Spy(monkeypatch, kffn, "positionwise_conv_ff")
    ffn_refs = _Spy(monkeypatch, kffn, "reference")  # the fallback: must not run
    rb_calls = _Spy(monkeypatch, krb, "resblock1")
    rb_refs = _Spy(monkeypatch, krb, "reference")

    plain, voice = _voice(), _voice()
    fused = Runner(voice, static=False, use_kernels="force")
    assert fused.kernels
    assert _hooked(voice) == []  # nothing is installed on the models between calls
    ids = [voice.text_processor.encode_text(t) for t in ("Hi there.", "A longer test, yes.")]
    opts = SynthesisOptions(pace=1.1, pitch_shift=10.0)
    want = Runner(plain, use_kernels=False).fastpitch([(i, opts) for i in ids])
    got = fused.fastpitch([(i, opts) for i in ids])  # batched: the masked FFN path
    assert ffn_calls.calls > 0 and ffn_refs.calls == 0
    for g, w in zip(got, want):
        assert g.mel.shape == w.mel.shape  # same durations
        assert (g.repeats == w.repeats).all()
        torch.testing.assert_close(g.mel, w.mel, atol=1e-4, rtol=0)  # fp32 kernels
    mel = torch.randn(80, 2) - 5  # 512 samples: the interpreter is slow
    audio = fused.vocode_full(mel)
    assert rb_calls.calls > 0 and rb_refs.calls == 0
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(audio), plain.hifigan(mel[None])[0, 0],
                                   atol=1e-5, rtol=0)
    # After the runner's calls the same model objects are plain PyTorch again.
    assert _hooked(voice) == []
    n = rb_calls.calls
    with torch.no_grad():
        assert torch.equal(voice.hifigan(mel[None]), plain.hifigan(mel[None]))
    assert rb_calls.calls == n


def test_use_kernels_modes(interpreter, monkeypatch, caplog):
    from engine.runtime.runner import Runner
    from engine.runtime.static import _regulate_len

    voice = _voice()
    # Default (True): CUDA only. On the CPU the runner stays on PyTorch, interpreter or not.
    default = Runner(voice, static=True, use_graphs=False)
    assert default.kernels == (voice.device.type == "cuda")
    if not default.kernels:
        assert default.fused is None
        assert default.static_fastpitch.length_regulator is _regulate_len
    off = Runner(voice, static=True, use_kernels=False)
    assert not off.kernels and off.static_fastpitch.length_regulator is _regulate_len
    forced = Runner(voice, static=True, use_graphs=False, use_kernels="force")
    assert forced.kernels
    assert forced.static_fastpitch.length_regulator == forced.fused.length_regulate
    with pytest.raises(ValueError, match="use_kernels"):
        Runner(voice, use_kernels="always")
    # Forced where Triton cannot run: PyTorch, with the reason logged.
    monkeypatch.setenv("FPSTREAM_NO_TRITON", "1")
    caplog.set_level(logging.INFO, logger="engine.runtime.runner")
    assert not Runner(voice, use_kernels="force").kernels
    assert any("FPSTREAM_NO_TRITON" in r.getMessage() for r in caplog.records)


def test_fused_hooks_are_scoped_and_nest(interpreter):
    from engine.models.fastpitch import PositionwiseConvFF
    from engine.models.hifigan import ResBlock1
    from engine.runtime.runner import FusedKernels

    voice = _voice()
    a, b = FusedKernels.for_voice(voice), FusedKernels.for_voice(voice)  # e.g. two runners
    blocks = [m for m in voice.hifigan.modules() if isinstance(m, ResBlock1)]
    ffns = [m for m in voice.fastpitch.modules() if isinstance(m, PositionwiseConvFF)]
    assert blocks and ffns
    with a.active(voice.hifigan):
        assert all(m.fused is not None for m in blocks)
        assert all(m.fused is None for m in ffns)  # only the model being run
        with b.active(voice.hifigan):
            pass
        assert all(m.fused is not None for m in blocks)  # the outer call still has them
        # The hook is for inference: a block in training mode runs its PyTorch ops.
        x = torch.randn(1, blocks[0].convs1[0].in_channels, 5)
        blocks[0].train()
        try:
            with torch.no_grad():
                assert torch.equal(blocks[0](x), _plain_resblock(blocks[0], x))
        finally:
            blocks[0].eval()
    assert _hooked(voice) == []
    # Concurrent runner calls on two threads: the hooks stay until the last one leaves.
    inside, release = threading.Barrier(3), threading.Event()

    def call():
        with a.active(voice.hifigan):
            inside.wait()
            release.wait(10)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert all(m.fused is not None for m in blocks)
    release.set()
    for t in threads:
        t.join()
    assert _hooked(voice) == []


def _plain_resblock(block, x):
    """ResBlock1's PyTorch ops (its forward without a hook)."""
    import torch.nn.functional as F
    from engine.models.hifigan import LRELU_SLOPE

    for c1, c2 in zip(block.convs1, block.convs2):
        x = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE)) + x
    return x
