"""scripts/gpu_bench.sh without a GPU: its help, bad usage, and the one-line no-CUDA exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _gpu_bench(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_bench.sh"), *args], cwd=cwd,
                          env={**os.environ, "PYTHON": sys.executable, **env},
                          capture_output=True, text=True, timeout=120)


def test_help_names_the_steps_and_options():
    shown = _gpu_bench("--help")
    assert shown.returncode == 0
    for word in ("bench.gpu", "bench.kernels", "tests/kernels", "--out DIR", "--no-tests",
                 "--dry-run"):
        assert word in shown.stdout, word
    assert "run(" not in shown.stdout and "shared" not in shown.stdout


def test_bad_usage_and_no_cuda_exit_2(tmp_path):
    proc = _gpu_bench("--frobnicate")
    assert proc.returncode == 2 and "unknown argument" in proc.stderr
    # No CUDA (hidden where there is one), called from elsewhere: one line, exit 2.
    proc = _gpu_bench("--out", "results", cwd=tmp_path, CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("gpu_bench: no CUDA") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "results").exists()
