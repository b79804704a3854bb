"""torch.hub drop-in: NVIDIA's published hub example runs with only torch.hub.load changed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"
REF = DATA / "reference"
SEED = DATA / "seed_hub_example.md"  # the pytorch/hub page this project started from

NVIDIA_SOURCE = "'NVIDIA/DeepLearningExamples:torchhub'"


def seed_code() -> str:
    """The example's Python blocks, joined in order, exactly as published."""
    blocks = re.findall(r"```python\n(.*?)```", SEED.read_text(), flags=re.S)
    assert len(blocks) >= 8, "seed example not found"
    return "\n".join(blocks)


def switched_code(fastpitch: Path, hifigan: Path) -> str:
    """The only edit a user makes: the torch.hub.load source (and a local checkpoint path,
    since nothing can be downloaded)."""
    code = seed_code()
    repl = {
        f"torch.hub.load({NVIDIA_SOURCE}, 'nvidia_fastpitch')":
            f"torch.hub.load({str(ROOT)!r}, 'nvidia_fastpitch', source='local', "
            f"checkpoint={str(fastpitch)!r})",
        f"torch.hub.load({NVIDIA_SOURCE}, 'nvidia_hifigan')":
            f"torch.hub.load({str(ROOT)!r}, 'nvidia_hifigan', source='local', "
            f"checkpoint={str(hifigan)!r})",
        f"torch.hub.load({NVIDIA_SOURCE}, 'nvidia_textprocessing_utils',":
            f"torch.hub.load({str(ROOT)!r}, 'nvidia_textprocessing_utils', source='local',",
    }
    for old, new in repl.items():
        assert code.count(old) == 1, old
        code = code.replace(old, new)
    assert NVIDIA_SOURCE not in code
    return code


def test_seed_example_runs_and_matches_nvidia_audio(tmp_path):
    # The example downloads these two files with wget; we ship NVIDIA's copies.
    (tmp_path / "cmudict-0.7b").write_bytes((DATA / "cmudict-0.7b_nv22.08").read_bytes())
    (tmp_path / "heteronyms").write_bytes((DATA / "heteronyms-052722").read_bytes())
    script = tmp_path / "example.py"
    script.write_text(switched_code(REF / "fastpitch_small_checkpoint.pt",
                                    REF / "hifigan_small_checkpoint.pt"))
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    from scipy.io import wavfile

    rate, audio = wavfile.read(tmp_path / "audio.wav")
    assert rate == 22050 and audio.dtype == np.float32
    # The seed sentence with NVIDIA's reference checkpoints is exactly the reference
    # end-to-end case: FastPitch 'single_pace1.0' -> HiFi-GAN -> denoiser(0.005) * 32768.
    vec = torch.load(REF / "hifigan_small_vectors.pt", weights_only=True)
    case = next(c for c in vec["cases"] if c["name"].startswith("e2e_"))
    want = case["denoised_0.005"][0, 0].numpy() * 32768.0
    assert audio.shape == want.shape
    assert np.abs(audio - want).max() <= 1e-4 * 32768  # 1e-4 of full scale


def test_seed_example_with_only_the_source_changed_speaks_in_the_default_voice(tmp_path):
    """No checkpoint paths at all: nvidia_fastpitch loads the shipped voice, nvidia_hifigan
    the universal V1, and each says so."""
    (tmp_path / "cmudict-0.7b").write_bytes((DATA / "cmudict-0.7b_nv22.08").read_bytes())
    (tmp_path / "heteronyms").write_bytes((DATA / "heteronyms-052722").read_bytes())
    code = seed_code()
    n = code.count(NVIDIA_SOURCE)
    code = code.replace(f"torch.hub.load({NVIDIA_SOURCE}, '", f"torch.hub.load({str(ROOT)!r}, '")
    code = re.sub(r"(torch\.hub\.load\([^)]*?'nvidia_\w+')", r"\1, source='local'", code)
    assert n == 3 and code.count("source='local'") == 3 and NVIDIA_SOURCE not in code
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "default voice" in r.stderr and "universal HiFi-GAN V1" in r.stderr
    from scipy.io import wavfile

    rate, audio = wavfile.read(tmp_path / "audio.wav")
    assert rate == 22050 and 1.5 < len(audio) / rate < 6.0  # the seed sentence, spoken
    assert np.abs(audio).max() > 0.05 * 32768


def _manifest(name: str, field: str) -> dict[str, tuple[int, ...]]:
    import ast
    import json

    entries = json.loads((REF / name).read_text())[field]
    if isinstance(entries, str):  # hifigan_keys.json stores some lists as Python reprs
        entries = ast.literal_eval(entries)
    return {e["key"]: tuple(e["shape"]) for e in entries}


def test_hub_default_vocoder_and_random_init_match_nvidia_key_manifests():
    gen, setup, den = torch.hub.load(str(ROOT), "nvidia_hifigan", source="local",
                                     checkpoint="default")
    assert setup["sampling_rate"] == 22050 and setup["max_wav_value"] == 32768.0
    # Every tensor of NVIDIA's default generator after weight-norm removal, same shapes.
    want = _manifest("hifigan_keys.json", "keys_after_remove_weight_norm")
    assert {k: tuple(v.shape) for k, v in gen.state_dict().items()} == want
    with torch.no_grad():
        audio = den(gen(torch.full((1, 80, 20), -6.0)).squeeze(1), 0.005)
    assert audio.shape == (1, 1, 20 * 256)
    fp, fp_setup = torch.hub.load(str(ROOT), "nvidia_fastpitch", source="local", pretrained=False)
    want = _manifest("fastpitch_keys.json", "keys")
    assert {k: tuple(v.shape) for k, v in fp.state_dict().items()} == want and fp_setup == {}
