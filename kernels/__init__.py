"""Triton kernels for the GPU hot path. Each file holds the kernel(s), a launcher that checks
its inputs and falls back to the pure-PyTorch reference (with a logged reason) where Triton
cannot run, and that reference. Only engine.runtime.runner installs them."""
