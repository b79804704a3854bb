"""Model and audio configuration: frozen dataclasses with named presets.

Field names follow NVIDIA's checkpoint ``config`` dicts exactly, so a checkpoint's config
round-trips through :meth:`from_dict` / :meth:`to_dict` unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

from .errors import InputError

log = logging.getLogger(__name__)

T = TypeVar("T", bound="_DictConfig")


class _DictConfig:
    """Shared dict conversion for the config dataclasses below."""

    @classmethod
    def from_dict(cls: type[T], d: Mapping[str, Any], *, source: str = "config") -> T:
        """Build from a checkpoint's config dict; unknown keys are logged and ignored."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names)
        if unknown:
            log.warning("%s: ignoring unknown %s keys %s", source, cls.__name__, unknown)
        kwargs = {k: _freeze(v) for k, v in d.items() if k in names}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise InputError(f"{source}: invalid {cls.__name__}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return {k: _thaw(v) for k, v in dataclasses.asdict(self).items()}  # type: ignore[call-overload]

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _freeze(v: Any) -> Any:
    # Lists from JSON/torch configs become tuples so the frozen dataclass stays hashable.
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def _thaw(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    return v


@dataclass(frozen=True)
class FastPitchConfig(_DictConfig):
    """FastPitch 1.1 hyper-parameters (NVIDIA's constructor argument names).

    Defaults are the torch.hub ``nvidia_fastpitch`` default config (45 M parameters without
    the aligner).
    """

    n_mel_channels: int = 80
    n_symbols: int = 148
    padding_idx: int = 0
    symbols_embedding_dim: int = 384
    in_fft_n_layers: int = 6
    in_fft_n_heads: int = 1
    in_fft_d_head: int = 64
    in_fft_conv1d_kernel_size: int = 3
    in_fft_conv1d_filter_size: int = 1536
    in_fft_output_size: int = 384
    p_in_fft_dropout: float = 0.1
    p_in_fft_dropatt: float = 0.1
    p_in_fft_dropemb: float = 0.0
    out_fft_n_layers: int = 6
    out_fft_n_heads: int = 1
    out_fft_d_head: int = 64
    out_fft_conv1d_kernel_size: int = 3
    out_fft_conv1d_filter_size: int = 1536
    out_fft_output_size: int = 384
    p_out_fft_dropout: float = 0.1
    p_out_fft_dropatt: float = 0.1
    p_out_fft_dropemb: float = 0.0
    dur_predictor_kernel_size: int = 3
    dur_predictor_filter_size: int = 256
    p_dur_predictor_dropout: float = 0.1
    dur_predictor_n_layers: int = 2
    pitch_predictor_kernel_size: int = 3
    pitch_predictor_filter_size: int = 256
    p_pitch_predictor_dropout: float = 0.1
    pitch_predictor_n_layers: int = 2
    pitch_embedding_kernel_size: int = 3
    n_speakers: int = 1
    speaker_emb_weight: float = 1.0
    energy_predictor_kernel_size: int = 3
    energy_predictor_filter_size: int = 256
    p_energy_predictor_dropout: float = 0.1
    energy_predictor_n_layers: int = 2
    energy_conditioning: bool = True
    energy_embedding_kernel_size: int = 3
    pitch_conditioning_formants: int = 1

    def __post_init__(self) -> None:
        if self.in_fft_output_size != self.symbols_embedding_dim:
            # NVIDIA feeds the encoder output straight into predictors and proj sized by d_model.
            raise InputError(
                f"in_fft_output_size ({self.in_fft_output_size}) must equal "
                f"symbols_embedding_dim ({self.symbols_embedding_dim})"
            )
        if self.symbols_embedding_dim % 2:
            raise InputError("symbols_embedding_dim must be even (sin/cos positional encoding)")
        if self.n_speakers < 1:
            raise InputError("n_speakers must be >= 1")


@dataclass(frozen=True)
class HiFiGANConfig(_DictConfig):
    """HiFi-GAN generator hyper-parameters. Defaults: jik876 V1 / NVIDIA hub default."""

    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    upsample_initial_channel: int = 512
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    num_mels: int = 80

    def __post_init__(self) -> None:
        if str(self.resblock) != "1":
            # NVIDIA's type-2 block cannot run (its slope is never set); jik876 V1/V3 use '1'.
            raise InputError(f"only resblock '1' is supported, got {self.resblock!r}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise InputError("upsample_rates and upsample_kernel_sizes differ in length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise InputError("resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        for k, u in zip(self.upsample_kernel_sizes, self.upsample_rates):
            if (k - u) % 2:
                raise InputError(f"upsample kernel {k} and rate {u} give a fractional padding")

    @property
    def hop_length(self) -> int:
        """Audio samples per mel frame: the product of the upsample rates."""
        n = 1
        for u in self.upsample_rates:
            n *= u
        return n


@dataclass(frozen=True)
class AudioConfig(_DictConfig):
    """The mel / STFT setup shared by FastPitch output and HiFi-GAN input (NVIDIA names)."""

    sampling_rate: int = 22050
    filter_length: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mel_channels: int = 80
    mel_fmin: float = 0.0
    mel_fmax: float = 8000.0
    max_wav_value: float = 32768.0


# Named presets. "nvidia" = the hub defaults; "small" = the shipped default voice
# (11.7 M params with the aligner); "tiny" = random-weight voice for the test suite.
FASTPITCH_PRESETS: dict[str, FastPitchConfig] = {
    "nvidia": FastPitchConfig(),
    "small": FastPitchConfig(
        symbols_embedding_dim=256, in_fft_output_size=256, out_fft_output_size=256,
        in_fft_n_layers=4, out_fft_n_layers=4,
        in_fft_conv1d_filter_size=768, out_fft_conv1d_filter_size=768,
    ),
    "tiny": FastPitchConfig(
        symbols_embedding_dim=32, in_fft_output_size=32, out_fft_output_size=32,
        in_fft_n_layers=1, out_fft_n_layers=1, in_fft_d_head=16, out_fft_d_head=16,
        in_fft_conv1d_filter_size=64, out_fft_conv1d_filter_size=64,
        dur_predictor_filter_size=16, pitch_predictor_filter_size=16,
        energy_predictor_filter_size=16,
    ),
}

HIFIGAN_PRESETS: dict[str, HiFiGANConfig] = {
    "v1": HiFiGANConfig(),
    "tiny": HiFiGANConfig(upsample_initial_channel=16),
}

# Keys that the hub example compares between the generator's and the vocoder's train_setup.
CHECKPOINT_SPECIFIC_ARGS = (
    "sampling_rate", "hop_length", "win_length", "p_arpabet", "text_cleaners",
    "symbol_set", "max_wav_value", "prepend_space_to_text", "append_space_to_text",
)

__all__ = [
    "AudioConfig", "FastPitchConfig", "HiFiGANConfig", "FASTPITCH_PRESETS",
    "HIFIGAN_PRESETS", "CHECKPOINT_SPECIFIC_ARGS",
]
