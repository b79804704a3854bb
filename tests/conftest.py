"""Test-session setup.

Without a GPU, Triton kernels run under its interpreter. Triton reads TRITON_INTERPRET when it
is first imported, so it is set here, before any test module (or a bench helper that reports
triton's version) can import triton in compiled mode.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
