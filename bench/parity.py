"""Parity report against NVIDIA's reference vectors (tests/data/reference).

    python -m bench.parity

Prints, per case, the max absolute and relative error of every output of our FastPitch,
HiFi-GAN and denoiser vs the outputs NVIDIA's hub code produced from the same checkpoints,
whether mel lengths are exact, and the worst case overall. The acceptance rule is max abs
<= 1e-4 (float32) and exact integers; tests/models/test_parity.py asserts it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.models.pitch_transform import PitchShift, pitch_transform
from engine.models.weights import load_fastpitch, load_hifigan

REF = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference"


def _err(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    d = (got.double() - want.double()).abs().max().item()
    return d, d / max(want.double().abs().max().item(), 1e-30)


def _transform(name: str):
    if "amplify" in name:
        return pitch_transform(amplify=1.5, shift_hz=-30.0)
    if "flatten" in name:
        return pitch_transform(flatten=True)
    return PitchShift(50.0)


def main() -> int:
    worst_abs, worst_rel, n_cases, lens_ok = 0.0, 0.0, 0, True
    print(f"{'model/case':<52} {'output':<20} {'max abs':>10} {'max rel':>10}")
    for vec_file in ("fastpitch_small_vectors.pt", "fastpitch_small_2head_vectors.pt"):
        vec = torch.load(REF / vec_file, weights_only=True)
        model, _ = load_fastpitch(REF / vec["checkpoint"])
        for case in vec["cases"]:
            if "outputs" not in case:
                continue
            kw = dict(case["kwargs"])
            if kw.get("pitch_transform") is not None:
                kw["pitch_transform"] = _transform(case["name"])
            with torch.no_grad():
                mel, lens, dur, pitch, energy = model(case["inputs"], **kw)
            ref = case["outputs"]
            exact = lens.tolist() == ref["mel_lens"].tolist()
            lens_ok &= exact
            n_cases += 1
            for name, got, want in (("mel", mel, ref["mel"]), ("dur_pred", dur, ref["dur_pred"]),
                                    ("pitch_pred", pitch, ref["pitch_pred"]),
                                    ("energy_pred", energy, ref["energy_pred"])):
                a, r = _err(got, want)
                worst_abs, worst_rel = max(worst_abs, a), max(worst_rel, r)
                print(f"{vec['model'] + '/' + case['name']:<52} {name:<20} {a:10.2e} {r:10.2e}")
            print(f"{'':<52} {'mel_lens exact':<20} {str(exact):>10}")
    hv = torch.load(REF / "hifigan_small_vectors.pt", weights_only=True)
    for ckpt in ("hifigan_small_checkpoint.pt", "hifigan_small_checkpoint_flatkeys.pt"):
        gen, _, den = load_hifigan(REF / ckpt)
        ref_sd = hv["generator_state_dict_weight_norm_removed"]
        a = max(_err(gen.state_dict()[k], v)[0] for k, v in ref_sd.items())
        print(f"{ckpt:<52} {'fused weights':<20} {a:10.2e}")
        a, r = _err(den.bias_spec, hv["denoiser_bias_spec"])
        worst_abs, worst_rel = max(worst_abs, a), max(worst_rel, r)
        print(f"{ckpt:<52} {'denoiser bias':<20} {a:10.2e} {r:10.2e}")
        for case in hv["cases"]:
            n_cases += 1
            with torch.no_grad():
                audio = gen(case["mel"])
                outs = [("audio", audio, case["audio"])] + [
                    (f"denoised_{s}", den(audio.squeeze(1), float(s)), case[f"denoised_{s}"])
                    for s in ("0.005", "0.1")]
            for name, got, want in outs:
                a, r = _err(got, want)
                worst_abs, worst_rel = max(worst_abs, a), max(worst_rel, r)
                print(f"{ckpt.split('_check')[0] + '/' + case['name']:<52} {name:<20} {a:10.2e} {r:10.2e}")
    print(f"\n{n_cases} cases; mel_lens all exact: {lens_ok}; worst max abs error "
          f"{worst_abs:.2e}, worst relative error {worst_rel:.2e} (limit 1e-4)")
    return 0 if lens_ok and worst_abs <= 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
