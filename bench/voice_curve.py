"""The default voice's training curve: WER against training CPU-hours, from the bench results.

    python -m bench.voice_curve [--label default] [--png bench/results/voice_wer_curve.png]

Reads the student rows that ``python -m bench.intelligibility --label LABEL`` appended to
bench/results/intelligibility.csv (each carries the voice's step and training hours, read
from the voice file) and the teacher lines of the same lists. Prints a table (one row per
list and step; the newest measurement of each wins) and plots WER % against CPU-hours per
list, the teacher's WER as a dashed line.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from bench.common import RESULTS


def load_curve(path: Path, label: str) -> tuple[dict[str, list[dict[str, str]]], dict[str, float]]:
    """{"list (N)": student rows sorted by step} and {"list (N)": newest teacher WER}."""
    if not path.exists():
        raise ValueError(f"{path}: no results yet; run python -m bench.intelligibility first")
    rows = list(csv.DictReader(open(path, newline="", encoding="utf-8")))
    # Curves per list and sentence count ("assistant (30)"): WERs on other subsets of a list
    # are not comparable.
    curves: dict[str, dict[int, dict[str, str]]] = {}
    teacher: dict[str, float] = {}
    for r in rows:
        name = f"{r.get('list')} ({r.get('sentences')})"
        if r.get("system") == "student" and r.get("voice") == label and r.get("step") \
                and r.get("cpu_hours"):
            curves.setdefault(name, {})[int(r["step"])] = r  # the newest wins
        elif r.get("system") == "teacher":
            teacher[name] = float(r["wer"])
    return ({k: [v[s] for s in sorted(v)] for k, v in curves.items()}, teacher)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="default", help="voice label in the CSV (default)")
    ap.add_argument("--csv", type=Path, default=RESULTS / "intelligibility.csv")
    ap.add_argument("--png", type=Path, default=RESULTS / "voice_wer_curve.png")
    args = ap.parse_args(argv)
    try:
        curves, teacher = load_curve(args.csv, args.label)
    except ValueError as e:
        ap.exit(2, f"bench.voice_curve: error: {e}\n")
    if not curves:
        ap.exit(2, f"bench.voice_curve: error: no student rows labelled {args.label!r} with "
                   "training hours in the CSV\n")
    print(f"{'list (sentences)':<20} {'step':>6} {'train h':>8} {'CPU-h':>6} {'WER %':>6} "
          f"{'teacher %':>9} {'OVRL':>5}")
    for name, rows in sorted(curves.items()):
        for r in rows:
            print(f"{name:<20} {int(r['step']):6d} {float(r['train_hours']):8.2f} "
                  f"{float(r['cpu_hours']):6.2f} {float(r['wer']):6.2f} "
                  f"{teacher.get(name, float('nan')):9.2f} {r.get('ovrl') or '-':>5}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        ap.exit(2, "bench.voice_curve: error: the plot needs matplotlib\n")
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, (name, rows) in enumerate(sorted(curves.items())):
        color = f"C{k}"
        ax.plot([float(r["cpu_hours"]) for r in rows], [float(r["wer"]) for r in rows], "o-",
                color=color, label=f"student, {name}")
        if name in teacher:
            ax.axhline(teacher[name], color=color, ls="--", lw=1,
                       label=f"teacher, {name} ({teacher[name]:.2f} %)")
    ax.set_xlabel("training CPU-hours (2 cores)")
    ax.set_ylabel("round-trip WER % (Whisper tiny.en)")
    ax.set_yscale("log")
    ax.set_title(f"Voice '{args.label}': WER against training compute")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=100)
    plt.close(fig)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
