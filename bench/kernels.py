"""Micro-benchmarks of the Triton kernels (kernels/) vs their PyTorch references and the
engine's eager modules.

    python -m bench.kernels                       # CUDA: every op, fp32 and fp16
    python -m bench.kernels --dtype fp16 --op ffn resblock1
    python -m bench.kernels --cpu-refs            # no GPU: time the references only

On CUDA each implementation is timed with ``triton.testing.do_bench`` (median of repeated
runs after warm-up, CUDA events); the first kernel call (compilation) is excluded. Each row
also reports the kernel's max abs error vs the reference on the same inputs. fp32 rows run
with cuDNN's TF32 off (the default here; ``--tf32`` turns it on for cuDNN and the kernels
alike), so both sides compute in full fp32.

Without CUDA there is nothing to time for the kernels (the Triton interpreter measures
Python, not a GPU): the bench says so and, with ``--cpu-refs``, times the CPU references and
eager modules only (``time.perf_counter`` median).

Implementations per op: ``triton`` (the kernel launcher), ``reference`` (the pure-PyTorch
function in the same file), ``eager`` (the engine module: ``regulate_len``, ``ResBlock1``,
``PositionwiseConvFF``; for the bare conv, ``nn.Conv1d`` behind ``nn.LeakyReLU`` plus the
residual add).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from bench.common import environment, write_rows

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Case:
    """One benchmark shape: its implementations (name -> no-arg callable) and a check."""

    op: str
    name: str
    shape: str
    impls: dict[str, Callable[[], Any]]


def _lr_case(device: torch.device, dtype: torch.dtype) -> Case:
    from engine.models.fastpitch import regulate_len
    from kernels import length_regulator as klr

    b, t_text, c, max_len = 8, 200, 384, 2048  # ~7 frames/token, a 2048-frame bucket
    enc = torch.randn(b, t_text, c, device=device, dtype=dtype)
    durs = torch.rand(b, t_text, device=device) * 12 + 1
    pace = torch.ones(b, device=device)
    out = torch.empty(b, max_len, c, device=device, dtype=dtype)
    return Case("length_regulator", "fastpitch-nvidia", f"B{b} Ttext{t_text} C{c} max{max_len}", {
        "triton": lambda: klr.length_regulate(enc, durs, pace, max_len, out=out)[0],
        "reference": lambda: klr.reference(enc, durs, pace, max_len)[0],
        "eager": lambda: regulate_len(durs, enc, pace, max_len=max_len)[0],
    })


def _conv_case(device: torch.device, dtype: torch.dtype, c: int, t: int, k: int,
               d: int, tf32: bool) -> Case:
    from kernels import conv1d as kconv
    from kernels.resblock import LRELU_SLOPE

    b = 4
    x = torch.randn(b, c, t, device=device, dtype=dtype)
    res = torch.randn(b, c, t, device=device, dtype=dtype)
    conv = nn.Conv1d(c, c, k, dilation=d, padding=d * (k - 1) // 2).to(device, dtype).eval()
    eager = nn.Sequential(nn.LeakyReLU(LRELU_SLOPE), conv)
    act = ("leaky", LRELU_SLOPE)
    w_packed = kconv.pack_weight(conv.weight)  # once, as a runner would at load time
    out = torch.empty_like(x)
    return Case("conv1d", f"hifigan-C{c}-k{k}d{d}", f"B{b} C{c} T{t} K{k} d{d} +res", {
        "triton": lambda: kconv.conv1d_fused(x, w_packed, conv.bias, d, act, residual=res,
                                             out=out, allow_tf32=tf32),
        "reference": lambda: kconv.reference(x, conv.weight, conv.bias, d, act, residual=res),
        "eager": lambda: eager(x) + res,
    })


def _resblock_case(device: torch.device, dtype: torch.dtype, c: int, t: int, k: int) -> Case:
    from engine.models.hifigan import ResBlock1
    from kernels import resblock as krb

    b = 4
    m = ResBlock1(c, k, (1, 3, 5)).to(device, dtype).eval()
    x = torch.randn(b, c, t, device=device, dtype=dtype)
    params = krb.params_from_module(m)
    packed = krb.params_from_module(m, pack=True)  # once, as a runner would at load time
    out = torch.empty_like(x)
    return Case("resblock1", f"hifigan-v1-C{c}-k{k}", f"B{b} C{c} T{t} K{k} d(1,3,5)", {
        "triton": lambda: krb.resblock1(x, **packed, out=out),
        "reference": lambda: krb.reference(x, **params),
        "eager": lambda: m(x),
    })


def _ffn_case(device: torch.device, dtype: torch.dtype) -> Case:
    from engine.models.fastpitch import PositionwiseConvFF
    from kernels import ffn as kffn

    b, t, d, di, k = 8, 400, 384, 1536, 3  # the NVIDIA FastPitch decoder's FF at 400 frames
    m = PositionwiseConvFF(d, di, k, 0.1).to(device, dtype).eval()
    x = torch.randn(b, t, d, device=device, dtype=dtype)
    params = kffn.params_from_module(m)
    packed = kffn.params_from_module(m, pack=True)  # once, as a runner would at load time
    out = torch.empty_like(x)
    return Case("ffn", "fastpitch-nvidia", f"B{b} T{t} d{d} inner{di} K{k}", {
        "triton": lambda: kffn.positionwise_conv_ff(x, **packed, out=out),
        "reference": lambda: kffn.reference(x, **params),
        "eager": lambda: m(x),
    })


def build_cases(ops: list[str], device: torch.device, dtype: torch.dtype,
                tf32: bool) -> list[Case]:
    cases: list[Case] = []
    if "length_regulator" in ops:
        cases.append(_lr_case(device, dtype))
    if "conv1d" in ops:
        cases += [_conv_case(device, dtype, 256, 2048, 11, 5, tf32),
                  _conv_case(device, dtype, 32, 16384, 3, 1, tf32)]
    if "resblock1" in ops:
        cases += [_resblock_case(device, dtype, 256, 2048, 11),
                  _resblock_case(device, dtype, 128, 4096, 7),
                  _resblock_case(device, dtype, 32, 16384, 3)]
    if "ffn" in ops:
        cases.append(_ffn_case(device, dtype))
    return cases


def _time_cuda(fn: Callable[[], Any], warmup_ms: int, rep_ms: int) -> float:
    import triton.testing

    fn()  # compile / autotune outside the timing
    torch.cuda.synchronize()
    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms,
                                         return_mode="median"))


def _time_cpu(fn: Callable[[], Any], runs: int) -> float:
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--op", nargs="+", default=["length_regulator", "conv1d", "resblock1", "ffn"],
                    choices=["length_regulator", "conv1d", "resblock1", "ffn"])
    ap.add_argument("--dtype", nargs="+", default=["fp32", "fp16"], choices=list(DTYPES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--warmup-ms", type=int, default=25, help="do_bench warm-up (CUDA)")
    ap.add_argument("--rep-ms", type=int, default=200, help="do_bench repetition time (CUDA)")
    ap.add_argument("--tf32", action="store_true",
                    help="allow TF32 for fp32 (cuDNN and the kernels); default off")
    ap.add_argument("--cpu-refs", action="store_true",
                    help="without CUDA: time the CPU references and eager modules")
    ap.add_argument("--cpu-runs", type=int, default=5)
    ap.add_argument("--no-csv", action="store_true")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    env = environment(device)
    on_gpu = device.type == "cuda"
    print(f"kernel micro-benchmarks on {env['device']}, torch {env['torch']}, "
          f"triton {env['triton']}, commit {env['commit']}")
    if not on_gpu:
        print("GPU timing skipped: no CUDA device (Triton kernels are only timed on a GPU; "
              "the CPU interpreter would time Python, not the kernel).")
        if not args.cpu_refs:
            print("Pass --cpu-refs to time the CPU references and eager modules.")
            return 0
        impls = ("reference", "eager")
        dtypes = ["fp32"]  # CPU half-precision convs are not a configuration we ship
    else:
        from kernels.utils import triton_ready

        ok, why = triton_ready(device)
        if not ok:
            print(f"Triton kernels unavailable ({why}); timing the references only.")
        impls = ("triton", "reference", "eager") if ok else ("reference", "eager")
        dtypes = args.dtype

    prev_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    rows: list[dict[str, Any]] = []
    print(f"{'op':<17} {'case':<22} {'dtype':<5} {'shape':<34} "
          + "".join(f"{i + ' ms':>13}" for i in impls)
          + f"{'vs eager':>10}{'max|err|':>11}")
    try:
        with torch.inference_mode():
            for dname in dtypes:
                dtype = DTYPES[dname]
                for case in build_cases(args.op, device, dtype, args.tf32):
                    times = {}
                    for impl in impls:
                        fn = case.impls[impl]
                        times[impl] = (_time_cuda(fn, args.warmup_ms, args.rep_ms) if on_gpu
                                       else _time_cpu(fn, args.cpu_runs))
                    err = float("nan")
                    if "triton" in impls:
                        got, want = case.impls["triton"](), case.impls["reference"]()
                        err = (got.float() - want.float()).abs().max().item()
                    fast = times.get("triton", times["reference"])
                    speedup = times["eager"] / fast if fast > 0 else float("nan")
                    print(f"{case.op:<17} {case.name:<22} {dname:<5} {case.shape:<34} "
                          + "".join(f"{times[i]:13.4f}" for i in impls)
                          + f"{speedup:9.2f}x" + (f"{err:11.2e}" if err == err else f"{'-':>11}"))
                    for impl in impls:
                        rows.append({**env, "bench": "kernels", "op": case.op,
                                     "case": case.name, "shape": case.shape, "dtype": dname,
                                     "impl": impl, "tf32": bool(args.tf32),
                                     "timer": "do_bench-median" if on_gpu else "perf_counter-median",
                                     "median_ms": round(times[impl], 5),
                                     "speedup_vs_eager": round(times["eager"] / times[impl], 3),
                                     "max_abs_err_vs_ref": (err if impl == "triton"
                                                            else "")})
    finally:
        torch.backends.cudnn.allow_tf32 = prev_tf32
    if rows and not args.no_csv:
        print(f"{len(rows)} rows appended to {write_rows('kernels', rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
