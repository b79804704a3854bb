"""Model behaviour beyond the reference vectors: weight-norm forms, presets, speakers, pace."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.config import FASTPITCH_PRESETS, HIFIGAN_PRESETS, FastPitchConfig, HiFiGANConfig
from engine.models.fastpitch import FastPitch, regulate_len
from engine.models.pitch_transform import PITCH_PRESETS, PitchHz
from engine.models.hifigan import Generator
from engine.models.weights import load_hifigan

DATA = Path(__file__).resolve().parents[1] / "data"


def _weight_normed(gen: Generator, parametrize: bool) -> dict[str, torch.Tensor]:
    """The generator's weights in the stored weight-norm form, jik876 flat resblock names."""
    import warnings

    from torch.nn.utils import parametrizations, weight_norm

    warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated", category=FutureWarning)

    g = Generator(gen.config)
    g.load_state_dict(gen.state_dict())
    for m in g.modules():
        if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
            parametrizations.weight_norm(m) if parametrize else weight_norm(m)
    k = len(gen.config.resblock_kernel_sizes)
    out = {}
    for name, v in g.state_dict().items():
        parts = name.split(".")
        if parts[0] == "resblocks":  # nested i.j -> flat k*i+j, as jik876 saves
            name = ".".join(["resblocks", str(int(parts[1]) * k + int(parts[2]))] + parts[3:])
        out[name] = v
    return out


@pytest.mark.parametrize("parametrize", [False, True], ids=["weight_g_v", "parametrizations"])
def test_jik876_files_in_both_weight_norm_forms(tmp_path, parametrize):
    torch.manual_seed(0)
    gen = Generator(HIFIGAN_PRESETS["tiny"]).eval()
    p = tmp_path / "generator_tiny.pth.tar"
    torch.save({"generator": _weight_normed(gen, parametrize)}, p)  # jik876: no config
    (tmp_path / "config.json").write_text(
        '{"resblock": "1", "upsample_rates": [8,8,2,2], "upsample_kernel_sizes": [16,16,4,4],'
        ' "upsample_initial_channel": 16, "resblock_kernel_sizes": [3,7,11],'
        ' "resblock_dilation_sizes": [[1,3,5],[1,3,5],[1,3,5]], "sampling_rate": 22050,'
        ' "hop_size": 256, "win_size": 1024, "n_fft": 1024}')
    loaded, setup, _ = load_hifigan(p)
    mel = torch.randn(1, 80, 12) - 5
    with torch.no_grad():
        assert (loaded(mel) - gen(mel)).abs().max() < 1e-5
    assert setup["hop_length"] == 256 and setup["max_wav_value"] == 32768.0


def test_pitch_presets_and_hz_hook():
    fp = FastPitch(FASTPITCH_PRESETS["tiny"]).eval()
    ids = torch.tensor([[57, 45, 46, 56, 11, 46, 56, 7]])
    with torch.no_grad():
        base = fp(ids)[3]
        assert torch.allclose(fp(ids, pitch_transform=PITCH_PRESETS["flatten"]())[3], base * 0)
        assert torch.allclose(fp(ids, pitch_transform=PITCH_PRESETS["invert"]())[3], -base)
        assert torch.allclose(fp(ids, pitch_transform=PITCH_PRESETS["amplify"](2.0))[3], 2 * base)
        mean, std = fp.pitch_stats()  # buffers unset: NVIDIA's fallback constants
        assert (mean, std) == (218.14, 67.24)
        shifted = fp(ids, pitch_transform=PITCH_PRESETS["shift"](20.0))[3]
        assert torch.allclose(shifted, base + 20.0 / std)
        hz = fp(ids, pitch_transform=PitchHz(lambda f, lens: f + 20.0))[3]
        assert torch.allclose(hz, shifted, atol=1e-5)


def test_multi_speaker_ids_and_validation():
    torch.manual_seed(0)
    fp = FastPitch(FASTPITCH_PRESETS["tiny"].replace(n_speakers=3)).eval()
    ids = torch.tensor([[57, 45, 46, 56, 11, 46, 56, 7]] * 2)
    with torch.no_grad():
        a = fp(ids, speaker=0)[3]  # pitch_pred: (B, 1, T_text), length-independent
        b = fp(ids, speaker=2)[3]
        mixed = fp(ids, speaker=[0, 2])[3]
        assert not torch.allclose(a, b)
        assert torch.allclose(mixed[0], a[0]) and torch.allclose(mixed[1], b[1])
        with pytest.raises(ValueError, match="speaker id out of range"):
            fp(ids, speaker=3)


def test_pace_per_row_and_validation():
    fp = FastPitch(FASTPITCH_PRESETS["tiny"]).eval()
    ids = torch.tensor([[57, 45, 46, 56, 11, 46, 56, 7]] * 2)
    with torch.no_grad():
        lens = fp(ids, pace=torch.tensor([1.0, 2.0]))[1]
        assert lens[0] == fp(ids[:1], pace=1.0)[1][0] and lens[1] == fp(ids[:1], pace=2.0)[1][0]
        for bad in (0, -1.0, float("nan"), "fast"):
            with pytest.raises(ValueError, match="pace"):
                fp(ids, pace=bad)


def test_regulate_len_round_half_up_and_static_max_len():
    enc = torch.arange(3, dtype=torch.float32).reshape(1, 3, 1)  # token i has value i
    frames, lens = regulate_len(torch.tensor([[0.5, 1.49, 2.5]]), enc)
    assert lens.tolist() == [1 + 1 + 3]
    assert frames[0, :, 0].tolist() == [0, 1, 2, 2, 2]
    frames, lens = regulate_len(torch.tensor([[0.5, 1.49, 2.5]]), enc, max_len=8)
    assert frames.shape == (1, 8, 1) and frames[0, 5:, 0].tolist() == [0, 0, 0]


def test_config_round_trip_and_presets():
    for cfg in FASTPITCH_PRESETS.values():
        assert FastPitchConfig.from_dict(cfg.to_dict()) == cfg
    for cfg in HIFIGAN_PRESETS.values():
        assert HiFiGANConfig.from_dict(cfg.to_dict()) == cfg
    small = FastPitch(FASTPITCH_PRESETS["small"])
    n = sum(p.numel() for n_, p in small.named_parameters() if not n_.startswith("attention."))
    assert 11e6 < n < 12.5e6  # the shipped-voice size (~11.7 M with the aligner)
    with pytest.raises(ValueError, match="resblock"):
        HiFiGANConfig(resblock="2")
