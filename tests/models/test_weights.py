"""Checkpoint loading: every bad file is a clear CheckpointError naming the file (and keys)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.models.weights import (CheckpointError, check_agreement, load_fastpitch, load_hifigan,
                            resolve_dtype, save_fastpitch)

DATA = Path(__file__).resolve().parents[1] / "data"
REF = DATA / "reference"
FP = REF / "fastpitch_small_checkpoint.pt"
HG = REF / "hifigan_small_checkpoint.pt"


def test_every_reference_checkpoint_loads():
    for p in ("fastpitch_small_checkpoint.pt", "fastpitch_small_2head_checkpoint.pt"):
        model, setup = load_fastpitch(REF / p)
        assert not model.training and setup["sampling_rate"] == 22050
    for p in ("hifigan_small_checkpoint.pt", "hifigan_small_checkpoint_flatkeys.pt"):
        gen, setup, den = load_hifigan(REF / p)
        assert den is not None and setup["max_wav_value"] == 32768.0


def test_module_prefix_is_stripped_anywhere():
    sd = torch.load(FP, weights_only=True)["state_dict"]
    assert all(k.startswith("module.") for k in sd)  # this file is DDP-prefixed
    model, _ = load_fastpitch(FP)
    assert "encoder.word_emb.weight" in model.state_dict()


def test_truncated_checkpoint(tmp_path):
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(FP.read_bytes()[:50_000])
    with pytest.raises(CheckpointError, match="truncated.pt.*truncated or corrupt"):
        load_fastpitch(bad)
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_hifigan(bad)


def test_garbage_and_missing_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_fastpitch(junk)
    with pytest.raises(CheckpointError, match="no such file"):
        load_fastpitch(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="directory"):
        load_hifigan(tmp_path)


def test_wrong_model_type_is_named():
    with pytest.raises(CheckpointError, match="FastPitch checkpoint, but a HiFi-GAN"):
        load_hifigan(FP)
    with pytest.raises(CheckpointError, match="HiFi-GAN vocoder checkpoint, but a FastPitch"):
        load_fastpitch(HG)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    ck = torch.load(FP, weights_only=True)
    del ck["state_dict"]["module.proj.weight"]
    ck["state_dict"]["module.extra.thing"] = torch.zeros(1)
    p = tmp_path / "edited.pt"
    torch.save(ck, p)
    with pytest.raises(CheckpointError) as e:
        load_fastpitch(p)
    msg = str(e.value)
    assert "edited.pt" in msg and "proj.weight" in msg and "extra.thing" in msg


def test_shape_mismatch_is_listed(tmp_path):
    ck = torch.load(FP, weights_only=True)
    ck["config"]["n_symbols"] = 100  # the embedding table in the file has 148 rows
    p = tmp_path / "shape.pt"
    torch.save(ck, p)
    with pytest.raises(CheckpointError, match=r"encoder.word_emb.weight \(148, 64\) vs \(100, 64\)"):
        load_fastpitch(p)


def test_missing_config_and_missing_weight_norm_half(tmp_path):
    ck = torch.load(FP, weights_only=True)
    del ck["config"]
    torch.save(ck, tmp_path / "noconfig.pt")
    with pytest.raises(CheckpointError, match="no 'config'"):
        load_fastpitch(tmp_path / "noconfig.pt")
    hg = torch.load(HG, weights_only=True)
    del hg["generator"]["conv_pre.weight_v"]
    torch.save(hg, tmp_path / "half_wn.pt")
    with pytest.raises(CheckpointError, match="conv_pre.*weight_v"):
        load_hifigan(tmp_path / "half_wn.pt")


def test_voice_without_aligner_in_fp16_loads(tmp_path):
    model, setup = load_fastpitch(FP)
    p = tmp_path / "voice.pt"
    save_fastpitch(model, p, setup, half=True, include_aligner=False)
    again, _ = load_fastpitch(p)
    ids = torch.tensor([[57, 45, 46, 56, 11, 38]])
    with torch.no_grad():
        a, b = model(ids)[0], again(ids)[0]
    assert a.shape == b.shape and (a - b).abs().max() < 5e-2  # fp16 weight rounding only


def test_agreement_check_names_the_mismatch():
    check_agreement({"sampling_rate": 22050, "p_arpabet": 1.0}, {"sampling_rate": 22050})
    with pytest.raises(ValueError, match="sampling_rate: 22050 in FastPitch vs 24000 in HiFi-GAN"):
        check_agreement({"sampling_rate": 22050}, {"sampling_rate": 24000})


def test_half_precision_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        resolve_dtype("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8", torch.device("cpu"))
