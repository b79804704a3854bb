"""Optimisation: the LAMB optimizer (or AdamW), the learning-rate schedule and the
binarization-loss schedule.

* :class:`Lamb` (You et al., 2019): Adam moments with a per-tensor trust ratio, FastPitch's
  optimizer; :func:`make_optimizer` builds it or AdamW from the run's settings.
* :func:`learning_rate`: a short linear warmup to the peak, then inverse-sqrt decay over the
  global step (so a resumed run warms up briefly and continues the decay).
* :func:`bin_loss_weight`: the aligner's binarization loss is off for the first steps, then
  ramps in linearly.
* Mixed precision (``--amp``): :func:`amp_supported` says whether autocast in a dtype runs on
  a device (CUDA; bf16 on CPUs with native bf16, :func:`cpu_has_bf16`) and logs why not.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from ..errors import InputError
from ..models.weights import cpu_has_bf16

log = logging.getLogger(__name__)

OPTIMIZERS = ("lamb", "adamw")


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2019): Adam moments, then each tensor's update is rescaled by the
    trust ratio ||w|| / ||update||, which keeps large learning rates stable."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.98),
                 eps: float = 1e-8, weight_decay: float = 1e-6):
        if lr <= 0 or eps <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise InputError(f"bad LAMB settings: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                g = p.grad.float()
                st["m"].mul_(b1).add_(g, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = st["m"] / (1 - b1 ** st["step"])
                v_hat = st["v"] / (1 - b2 ** st["step"])
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update = update.add(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm,
                                    torch.ones_like(w_norm))
                p.add_(update * trust, alpha=-group["lr"])


def make_optimizer(name: str, params: Any, lr: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    """``lamb`` (:class:`Lamb`) or ``adamw`` (betas 0.9/0.98, eps 1e-9) over ``params``."""
    if name == "lamb":
        return Lamb(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), eps=1e-9,
                                 weight_decay=weight_decay)
    raise InputError(f"optimizer must be lamb or adamw, got {name!r}")


def learning_rate(peak: float, step: int, local_step: int, warmup: int,
                  local_warmup: int) -> float:
    """Linear warmup over ``local_warmup`` steps of this run, times inverse-sqrt decay after
    ``warmup`` global steps (so a resumed run warms up briefly, then continues the decay)."""
    ramp = min(1.0, (local_step + 1) / max(1, local_warmup))
    decay = min(1.0, math.sqrt(max(1, warmup) / max(1, step + 1)))
    return peak * ramp * decay


def bin_loss_weight(step: int, start: int, warmup: int) -> float:
    """0 before ``start`` steps, then a linear ramp to 1 over ``warmup`` steps."""
    if step < start:
        return 0.0
    return min(1.0, (step - start + 1) / max(1, warmup))


def amp_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``--amp`` with ``dtype`` runs on ``device``; logs why not. CUDA: bf16 needs
    Ampere or newer, fp16 always runs. CPU: bf16 only on CPUs with native bf16."""
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            log.warning("--amp: this GPU has no bf16; use --amp-dtype fp16. Training in fp32")
            return False
        return True
    if device.type == "cpu":
        if dtype != torch.bfloat16:
            log.warning("--amp on the CPU supports bf16 only (not fp16); training in fp32")
            return False
        if not cpu_has_bf16():
            log.warning("--amp: this CPU has no native bf16 (avx512_bf16/amx_bf16), where bf16 "
                        "autocast would be slower than fp32; training in fp32")
            return False
        return True
    log.warning("--amp is not supported on %s; training in fp32", device)
    return False
