"""Streaming runtime: the scheduler decides what runs (pure Python), the runner owns tensors,
buckets, kernels and CUDA graphs, and the engine loop joins them and delivers chunks through
streams. ``request``, ``scheduler`` and ``windows`` import no torch."""
