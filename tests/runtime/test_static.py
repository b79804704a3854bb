"""The static (bucketed, CUDA-graph) FastPitch path with the Triton kernels equals the eager
unbucketed path: its length regulator is ``kernels.length_regulator`` and its feed-forward
blocks run the fused kernels (interpreted on CPU, forced on with ``use_kernels="force"``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).resolve().parents[1] / "data"

# Small buckets keep the interpreter quick; the last case's slow row (pace 0.5) is longer
# than the largest mel bucket, so its batch decodes at its own length.
BUCKETS = dict(batch=(1, 2, 4), text=(16, 32, 64), mel=(32, 64, 128))
TEXTS = ("Hi there.", "A longer test, yes.", "Is it 3 or 4?")
# id: (text indices, pace per row, pitch shift in Hz per row)
CASES = {
    "b1": ([0], [1.0], [0.0]),
    "b2-slow-shift": ([1, 0], [0.75, 0.75], [12.0, 12.0]),
    "b3-mixed-paces": ([2, 1, 0], [0.8, 1.0, 1.25], [0.0, -20.0, 5.0]),  # bucket 4: a pad row
    "b2-past-mel-buckets": ([1, 2], [0.5, 1.3], [0.0, 0.0]),
}


@pytest.fixture(scope="module")
def runners():
    """(static runner with kernels, eager runner without) on one voice object."""
    import os

    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs CUDA or TRITON_INTERPRET=1 (tests/conftest.py sets it)")
    pytest.importorskip("triton")
    from engine.models.voice import Voice
    from engine.runtime.runner import Runner
    from engine.runtime.static import Buckets
    from kernels.utils import triton_ready

    voice = Voice.load(DATA / "tiny_fastpitch.pt", DATA / "tiny_hifigan.pt")
    ok, why = triton_ready(voice.device)
    if not ok:
        pytest.skip(f"Triton kernels cannot run here: {why}")
    static = Runner(voice, static=True, use_graphs=True, buckets=Buckets(**BUCKETS),
                    use_kernels="force")
    eager = Runner(voice, static=False, use_kernels=False)
    assert static.kernels and static.static_fastpitch is not None
    return static, eager


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_static_path_with_kernels_equals_eager(runners, case, monkeypatch):
    import kernels.length_regulator as klr
    from engine.runtime.request import SynthesisOptions

    static, eager = runners
    calls = {"kernel": 0, "reference": 0}
    launch, ref = klr.length_regulate, klr.reference

    def spy_launch(*args, **kwargs):
        calls["kernel"] += 1
        return launch(*args, **kwargs)

    def spy_ref(*args, **kwargs):  # the launcher's fallback
        calls["reference"] += 1
        return ref(*args, **kwargs)

    monkeypatch.setattr(klr, "length_regulate", spy_launch)
    monkeypatch.setattr(klr, "reference", spy_ref)

    rows, paces, shifts = case
    tp = static.voice.text_processor
    items = [(tp.encode_text(TEXTS[r]), SynthesisOptions(pace=p, pitch_shift=s))
             for r, p, s in zip(rows, paces, shifts)]
    assert static.static_fastpitch.fits(len(items), max(len(i) for i, _ in items))
    got = static.fastpitch(items)
    want = eager.fastpitch(items)
    # The static decoder program ran the Triton length regulator, not its fallback.
    assert calls["kernel"] >= 1 and calls["reference"] == 0
    for g, w in zip(got, want):
        assert g.mel.shape == w.mel.shape  # mel lengths exact
        assert np.array_equal(g.repeats, w.repeats)
        torch.testing.assert_close(g.mel, w.mel, atol=1e-4, rtol=0)
