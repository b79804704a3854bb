"""What the command lines share (``fpstream`` and ``python -m clients.client``): reading the
text to speak from an argument, a file or standard input, and writing the WAV. No torch here.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.errors import InputError
from engine.pcm import write_wav


def read_text(args: argparse.Namespace) -> str:
    """The text of ``args.text`` or ``args.text_file`` (a path, or '-' for standard input),
    else standard input when it is not a terminal."""
    if args.text is not None and args.text_file is not None:
        raise InputError("give the text either as an argument or with --text-file, not both")
    if args.text is not None:
        return args.text
    if args.text_file not in (None, "-"):
        try:
            with open(args.text_file, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise InputError(f"cannot read --text-file {args.text_file}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise InputError(f"--text-file {args.text_file} is not UTF-8 text") from None
    if args.text_file is None and sys.stdin.isatty():
        raise InputError("no text given: pass it as an argument, with --text-file, or on stdin")
    return sys.stdin.read()


def save_wav(path: str, audio: Any, sample_rate: int) -> None:
    """Write 16-bit WAV; a path that cannot be written is the user's error."""
    try:
        write_wav(path, audio, sample_rate)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types for bad paths
        raise InputError(f"cannot write {path}: {e}") from None
