"""Pitch transforms for FastPitch's predicted pitch, the hub's ``pitch_transform`` hook.

A transform is any callable ``f(pitch, pitch_lens, mean, std) -> pitch`` working on the
normalised pitch (B, 1, T_text), as NVIDIA's ``infer(pitch_transform=...)`` takes it. These are
the presets: shift in Hz, scale (flatten / invert / amplify), a Hertz adapter, and NVIDIA
``inference.py``'s composition of them.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

PitchTransform = Callable[[Tensor, Tensor, "Tensor | float", "Tensor | float"], Tensor]


class PitchShift:
    """Shift pitch by ``hz`` Hertz (in normalised units: + hz / std)."""

    def __init__(self, hz: float):
        self.hz = float(hz)

    def __call__(self, pitch: Tensor, pitch_lens: Tensor, mean, std) -> Tensor:
        return pitch + self.hz / std

    def __repr__(self) -> str:
        return f"PitchShift({self.hz:g} Hz)"


class PitchScale:
    """Multiply the normalised pitch: 0 flattens to the mean, -1 inverts, >1 amplifies."""

    def __init__(self, factor: float):
        self.factor = float(factor)

    def __call__(self, pitch: Tensor, pitch_lens: Tensor, mean, std) -> Tensor:
        return pitch * self.factor

    def __repr__(self) -> str:
        return f"PitchScale({self.factor:g})"


class PitchHz:
    """Adapt a hook that works in Hertz, ``f(pitch_hz, pitch_lens) -> pitch_hz``."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]):
        self.fn = fn

    def __call__(self, pitch: Tensor, pitch_lens: Tensor, mean, std) -> Tensor:
        return (self.fn(pitch * std + mean, pitch_lens) - mean) / std


class Compose:
    """Apply transforms in order."""

    def __init__(self, *transforms: PitchTransform):
        self.transforms = transforms

    def __call__(self, pitch: Tensor, pitch_lens: Tensor, mean, std) -> Tensor:
        for t in self.transforms:
            pitch = t(pitch, pitch_lens, mean, std)
        return pitch

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(map(repr, self.transforms)) + ")"


def pitch_transform(flatten: bool = False, invert: bool = False, amplify: float = 1.0,
                    shift_hz: float = 0.0) -> PitchTransform | None:
    """NVIDIA ``inference.py``'s composable transform, in its order: flatten, invert,
    amplify, shift. Returns None when every option is neutral."""
    steps: list[PitchTransform] = []
    if flatten:
        steps.append(PitchScale(0.0))
    if invert:
        steps.append(PitchScale(-1.0))
    if amplify != 1.0:
        steps.append(PitchScale(amplify))
    if shift_hz != 0.0:
        steps.append(PitchShift(shift_hz))
    if not steps:
        return None
    return steps[0] if len(steps) == 1 else Compose(*steps)


# Named presets, e.g. ``PITCH_PRESETS["flatten"]``; parametrised ones take one number.
PITCH_PRESETS: dict[str, Callable[..., PitchTransform]] = {
    "shift": PitchShift,
    "flatten": lambda: PitchScale(0.0),
    "invert": lambda: PitchScale(-1.0),
    "amplify": PitchScale,
}
