"""Make the tiny random-weight test voice: tests/data/tiny_fastpitch.pt + tiny_hifigan.pt.

    python tests/data/make_tiny_voice.py

Deterministic (fixed seed). The weights are random, so the audio is babble, but every code
path (text -> ids -> FastPitch -> HiFi-GAN -> denoiser -> WAV) runs on real-format files in
well under a second, so the suite needs no trained weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from engine.config import FASTPITCH_PRESETS, HIFIGAN_PRESETS  # noqa: E402
from engine.models.fastpitch import FastPitch  # noqa: E402
from engine.models.hifigan import Generator  # noqa: E402
from engine.models.weights import save_fastpitch, save_hifigan  # noqa: E402

AUDIO_SETUP = {"sampling_rate": 22050, "filter_length": 1024, "hop_length": 256,
               "win_length": 1024, "mel_fmin": 0.0, "mel_fmax": 8000.0, "n_mel_channels": 80,
               "max_wav_value": 32768.0}
TEXT_SETUP = {"symbol_set": "english_basic", "text_cleaners": ["english_cleaners_v2"],
              "p_arpabet": 1.0, "prepend_space_to_text": False, "append_space_to_text": False}


def make(out_dir: Path = HERE) -> tuple[Path, Path]:
    torch.manual_seed(20261124)
    fp = FastPitch(FASTPITCH_PRESETS["tiny"]).eval()
    with torch.no_grad():
        # Predicted durations of a few frames per token: exp(1.6) - 1 ≈ 4.
        fp.duration_predictor.fc.weight.mul_(0.05)
        fp.duration_predictor.fc.bias.fill_(1.6)
        fp.pitch_mean.fill_(203.1)  # the hibari teacher's voiced pitch (measured)
        fp.pitch_std.fill_(33.8)
    fp_path = out_dir / "tiny_fastpitch.pt"
    save_fastpitch(fp, fp_path, {**AUDIO_SETUP, **TEXT_SETUP,
                                 "note": "tiny random-weight TEST voice, not trained"})

    gen = Generator(HIFIGAN_PRESETS["tiny"]).eval()
    with torch.no_grad():
        gen.conv_post.weight.mul_(0.2)  # keep tanh away from saturation
    hg_path = out_dir / "tiny_hifigan.pt"
    save_hifigan(gen, hg_path, {**AUDIO_SETUP, "num_mels": 80,
                                "note": "tiny random-weight TEST vocoder, not trained"})
    return fp_path, hg_path


if __name__ == "__main__":
    for p in make():
        print(f"wrote {p} ({p.stat().st_size / 1024:.0f} KiB)")
