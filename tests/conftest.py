"""Test-session setup.

Without a GPU, Triton kernels run under its interpreter. Triton reads TRITON_INTERPRET when it
is first imported, so it is set here, before any test module (or a bench helper that reports
triton's version) can import triton in compiled mode.
"""

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def served_engine():
    """The tiny voice as the websocket tests serve it (one engine per test module)."""
    from engine import Engine, EngineConfig

    # One vocoder window size: the engine shrinks growing windows when a listener falls
    # behind (a timing-dependent choice that moves the crossfade seams by float rounding).
    # A fixed plan makes the served audio comparable bit for bit with engine.synthesize,
    # also on a loaded machine.
    eng = Engine.load(fastpitch=DATA / "tiny_fastpitch.pt", hifigan=DATA / "tiny_hifigan.pt",
                      device="cpu", config=EngineConfig(window_sizes=(48,)))
    yield eng
    eng.close()
