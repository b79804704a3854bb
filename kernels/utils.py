"""Shared helpers for the Triton kernels: availability checks, lazy kernels, fallback
logging, tile maths.

Triton is optional and imported lazily: importing ``kernels.*`` (and so the engine) never
imports triton; the first launch that can run does (:func:`load_triton`), and each kernel is
wrapped by :class:`LazyKernel`, which applies ``triton.jit`` then. Where Triton cannot run,
each launcher falls back to its pure-PyTorch ``reference`` and logs why, once per op.

Interpreter note (checked against triton 3.9's sources): ``TRITON_INTERPRET`` is read when a
``@triton.jit`` decorator runs, which includes triton's own standard library at ``import
triton``, and again at launch. So it must be set before triton is first imported in the
process and while kernels launch. Lazy loading makes that "before the first kernel launch" in
practice; :func:`triton_ready` detects a triton imported in the other mode and says so.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from types import ModuleType
from typing import Any, Callable

import torch

logger = logging.getLogger("fastpitch_stream.kernels")

# Installed? (find_spec does not import it.) Tests monkeypatch this to simulate its absence.
HAS_TRITON = importlib.util.find_spec("triton") is not None

__all__ = [
    "HAS_TRITON", "logger", "interpret_env", "load_triton", "triton_ready", "LazyKernel",
    "log_fallback_once", "reset_fallback_log", "next_power_of_2", "cdiv", "check_tensor",
    "same_layout_empty", "overlaps", "device_ctx",
]

_TRUE = ("1", "true", "on")


def interpret_env() -> bool:
    """True when ``TRITON_INTERPRET`` is set to a true value in the environment right now."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE


_triton: ModuleType | None = None
_triton_error = ""


def load_triton() -> tuple[ModuleType | None, str]:
    """Import triton once; returns (module, "") or (None, why)."""
    global _triton, _triton_error
    if _triton is None and not _triton_error:
        try:
            import triton
            import triton.language  # noqa: F401 - bound by LazyKernel

            _triton = triton
        except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install raising anything
            _triton_error = f"{type(exc).__name__}: {exc}"
    return _triton, _triton_error


_STDLIB_MODE: list[bool | None] = []  # cached answer of _stdlib_interpreted


def _stdlib_interpreted() -> bool | None:
    """Were triton.language's own @jit helpers built for the interpreter? Fixed when triton
    was imported (so cached); None when no helper is found (unknown triton layout)."""
    if not _STDLIB_MODE:
        mode = None
        try:
            import triton.language.standard as std

            for v in vars(std).values():
                name = type(v).__name__
                if name in ("InterpretedFunction", "JITFunction"):
                    mode = name == "InterpretedFunction"
                    break
        except Exception:  # noqa: BLE001 - layout of triton internals may change
            mode = None
        _STDLIB_MODE.append(mode)
    return _STDLIB_MODE[0]


def triton_ready(device: torch.device | str) -> tuple[bool, str]:
    """Can the Triton kernels run on ``device``? Returns ``(ok, reason)``; reason is "" if ok.

    True on CUDA with Triton importable, or on any device under the interpreter
    (``TRITON_INTERPRET=1``, needed from triton's first import through each launch); always
    False when ``FPSTREAM_NO_TRITON=1`` (a kill switch for the runner, and the tests' way to
    simulate a machine without Triton). Imports triton only when the answer may be True.
    """
    device = torch.device(device)
    if os.environ.get("FPSTREAM_NO_TRITON", "0").strip().lower() in _TRUE:
        return False, "disabled by FPSTREAM_NO_TRITON=1"
    if not HAS_TRITON:
        return False, "triton is not installed"
    interp = interpret_env()
    if not interp:
        if device.type != "cuda":
            return False, (f"device is {device.type!r}, not CUDA (set TRITON_INTERPRET=1 "
                           "before triton is imported to run the kernels under the Triton "
                           "interpreter)")
        if not torch.cuda.is_available():
            return False, "CUDA tensors given but CUDA is not available"
    mod, err = load_triton()
    if mod is None:
        return False, f"triton failed to import ({err})"
    std = _stdlib_interpreted()
    if std is not None and std != interp:
        return False, (f"triton was imported with TRITON_INTERPRET {'set' if std else 'unset'} "
                       f"but it is {'set' if interp else 'unset'} now; it must not change after "
                       "triton's first import")
    return True, ""


class LazyKernel:
    """A Triton kernel (a plain function written in triton.language) jitted on first use.

    ``triton.jit`` runs at the first launch, for the mode (compiled or interpreted) that
    ``TRITON_INTERPRET`` selects then, and binds the kernel module's global ``tl`` to
    ``triton.language`` (the op modules leave it None so that importing them never imports
    triton; annotations are strings under ``from __future__ import annotations``, which triton
    reads). ``kernel[grid](...)`` launches like a ``@triton.jit`` function.
    """

    def __init__(self, fn: Callable[..., None]):
        self.fn = fn
        self._built: dict[bool, Any] = {}

    def get(self) -> Any:
        mode = interpret_env()
        k = self._built.get(mode)
        if k is None:
            triton, err = load_triton()
            if triton is None:
                raise RuntimeError(f"triton is unavailable: {err}")
            self.fn.__globals__["tl"] = triton.language
            k = self._built[mode] = triton.jit(self.fn)
        return k

    def __getitem__(self, grid: Any) -> Callable[..., Any]:
        return self.get()[grid]


_LOGGED: set[tuple[str, str]] = set()


def log_fallback_once(op: str, reason: str) -> bool:
    """Log (WARNING) that ``op`` falls back to its PyTorch reference, once per (op, reason).

    Returns True when this call logged. A per-call log would flood the streaming loop, which
    calls each op hundreds of times per second.
    """
    key = (op, reason)
    if key in _LOGGED:
        return False
    _LOGGED.add(key)
    logger.warning("kernels.%s: Triton kernel unavailable, using the PyTorch reference: %s",
                   op, reason)
    return True


def reset_fallback_log() -> None:
    """Forget which fallbacks were logged (tests)."""
    _LOGGED.clear()


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (1 for n <= 1)."""
    n = int(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative ints."""
    return -(-int(a) // int(b))


def check_tensor(name: str, t: Any, ndim: int, *, device: torch.device | None = None,
                 dtypes: tuple[torch.dtype, ...] | None = None,
                 shape: tuple[int | None, ...] | None = None) -> torch.Tensor:
    """Raise a clear ValueError unless ``t`` is a tensor of the given rank/device/dtype/shape.

    ``shape`` entries of None are not checked.
    """
    if not torch.is_tensor(t):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device}")
    if dtypes is not None and t.dtype not in dtypes:
        raise ValueError(f"{name} has dtype {t.dtype}, expected one of "
                         f"{', '.join(str(d) for d in dtypes)}")
    if shape is not None:
        for i, (got, want) in enumerate(zip(t.shape, shape)):
            if want is not None and got != want:
                raise ValueError(f"{name} must have shape "
                                 f"{tuple('*' if s is None else s for s in shape)}, "
                                 f"got {tuple(t.shape)} (dim {i})")
    return t


def same_layout_empty(like: torch.Tensor, channels: int) -> torch.Tensor:
    """An empty (B, channels, T) tensor laid out like the (B, C, T) view ``like``.

    A (B, T, C)-contiguous tensor viewed as (B, C, T) (``x.transpose(1, 2)``) gets a
    (B, T, channels) buffer viewed the same way, so FastPitch's (B, T, C) layout survives a
    chain of convs without copies; anything else gets a contiguous (B, channels, T) buffer.
    """
    b, _, t = like.shape
    if like.stride(1) == 1 and like.stride(2) != 1:
        return torch.empty(b, t, channels, device=like.device, dtype=like.dtype).transpose(1, 2)
    return torch.empty(b, channels, t, device=like.device, dtype=like.dtype)


def _span(t: torch.Tensor) -> tuple[int, int]:
    """[first, last) byte addresses a tensor's elements may touch."""
    if t.numel() == 0:
        return 0, 0
    start = t.data_ptr()
    last = sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()))
    return start, start + (last + 1) * t.element_size()


def overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Conservative memory-overlap test (byte ranges) between two tensors."""
    a0, a1 = _span(a)
    b0, b1 = _span(b)
    return a0 < b1 and b0 < a1


def device_ctx(t: torch.Tensor) -> contextlib.AbstractContextManager[Any]:
    """Context that makes ``t``'s GPU current: Triton launches on the current CUDA device."""
    if t.is_cuda:
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()
