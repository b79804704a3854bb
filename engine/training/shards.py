"""Checkpoint files in pieces: split a file into pieces of at most 15 MiB and join them again.

    python -m engine.training.shards shard FILE [--max-mib 15] [--out DIR] [--name NAME]
    python -m engine.training.shards unshard INDEX [--out FILE]

:func:`shard_file` writes ``NAME.part000``, ``NAME.part001``, ... and an index
``NAME.shards.json`` (sizes and SHA-256 of the whole file and of every piece);
:func:`unshard_file` checks and joins them. ``fpstream train --resume`` accepts such an index
(:func:`resolve_checkpoint`). Every file is written under a temporary name and renamed
(:func:`atomic`), so a reader never sees half a file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from ..errors import InputError

SHARD_MAX_MIB = 15.0  # pieces stay under 16 MiB, a common per-file limit of transfers


def atomic(path: Path) -> Path:
    """A temporary sibling name for an all-or-nothing write."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def shard_file(path: str | os.PathLike, max_mib: float = SHARD_MAX_MIB,
               out_dir: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """Split a file into pieces of at most ``max_mib`` MiB.

    Writes ``NAME.part000``, ``NAME.part001``, ... and an index ``NAME.shards.json`` (sizes and
    SHA-256 of the whole file and of each piece) into ``out_dir`` (default: beside the file).
    ``NAME`` is the file's name unless ``name`` gives another. Returns the index path.
    """
    src = Path(path)
    name = name or src.name
    if not name or "/" in name:
        raise InputError(f"bad shard name {name!r}")
    if not src.is_file():
        raise InputError(f"{src}: no such file")
    if max_mib <= 0:
        raise InputError(f"max_mib must be positive, got {max_mib}")
    dst = Path(out_dir) if out_dir is not None else src.parent
    dst.mkdir(parents=True, exist_ok=True)
    size = int(max_mib * 2 ** 20)
    whole = hashlib.sha256()
    parts = []
    with open(src, "rb") as f:
        while True:
            chunk = f.read(size)
            if not chunk and parts:
                break
            piece = f"{name}.part{len(parts):03d}"
            tmp = atomic(dst / piece)
            tmp.write_bytes(chunk)
            os.replace(tmp, dst / piece)
            whole.update(chunk)
            parts.append({"name": piece, "bytes": len(chunk),
                          "sha256": hashlib.sha256(chunk).hexdigest()})
            if len(chunk) < size:
                break
    index = {"file": name, "bytes": sum(p["bytes"] for p in parts),
             "sha256": whole.hexdigest(), "parts": parts}
    idx = dst / f"{name}.shards.json"
    tmp = atomic(idx)
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, idx)
    return idx


def unshard_file(index_path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Join the pieces listed in a ``.shards.json`` index (checking every hash) -> the file
    (default: the original name beside the index)."""
    idx = Path(index_path)
    try:
        index = json.loads(idx.read_text())
        parts = index["parts"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{idx}: not a shard index: {e}") from None
    dst = Path(out) if out is not None else idx.parent / index["file"]
    whole = hashlib.sha256()
    tmp = atomic(dst)
    with open(tmp, "wb") as f:
        for p in parts:
            piece = idx.parent / p["name"]
            if not piece.exists():
                tmp.unlink()
                raise InputError(f"{idx}: missing piece {piece}")
            data = piece.read_bytes()
            if len(data) != p["bytes"] or hashlib.sha256(data).hexdigest() != p["sha256"]:
                tmp.unlink()
                raise InputError(f"{piece}: size or SHA-256 differs from the index")
            whole.update(data)
            f.write(data)
    if whole.hexdigest() != index["sha256"]:
        tmp.unlink()
        raise InputError(f"{idx}: the joined file's SHA-256 differs from the index")
    os.replace(tmp, dst)
    return dst


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint path, or a ``.shards.json`` index (joined into a file beside it)."""
    p = Path(path)
    if p.name.endswith(".shards.json"):
        return unshard_file(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m engine.training.shards shard FILE [--max-mib 15] [--out DIR]`` or
    ``python -m engine.training.shards unshard INDEX [--out FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m engine.training.shards",
                                     description="split/join checkpoint files")
    sub = parser.add_subparsers(dest="action", required=True)
    s = sub.add_parser("shard", help="split FILE into pieces of at most --max-mib MiB")
    s.add_argument("file")
    s.add_argument("--max-mib", type=float, default=SHARD_MAX_MIB)
    s.add_argument("--out", metavar="DIR", help="folder for the pieces (default: beside FILE)")
    s.add_argument("--name", help="base name of the pieces (default: FILE's name)")
    u = sub.add_parser("unshard", help="join the pieces listed in INDEX (.shards.json)")
    u.add_argument("index")
    u.add_argument("--out", metavar="FILE")
    args = parser.parse_args(argv)
    try:
        if args.action == "shard":
            print(shard_file(args.file, args.max_mib, args.out, args.name))
        else:
            print(unshard_file(args.index, args.out))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
