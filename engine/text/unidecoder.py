"""Transliteration of non-ASCII text to ASCII, as NVIDIA's ``convert_to_ascii`` does it.

Code points below U+007F pass through unchanged. Every other character is replaced by its
entry in ``data/unidecoder_char_map.json`` (which records NVIDIA's observed output for every
code point, one character at a time) or, when it has no entry, deleted. Emoji, most CJK,
Hebrew, the em dash, the ellipsis, ``½``, ``°`` and ``£`` (outside a currency amount) are
examples of deleted characters.

Deleted characters are reported through :mod:`logging` as warnings, with NVIDIA's wording.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from importlib import resources

__all__ = ["to_ascii", "transliterate", "warn_deleted", "deleted_character_message"]

logger = logging.getLogger(__name__)

_MAP_RESOURCE = "unidecoder_char_map.json"
# The first code point that goes through the table (DEL, U+007F, has no entry: deleted).
_FIRST_MAPPED = 0x7F


@lru_cache(maxsize=1)
def _translation_table() -> dict[int, str]:
    """Load the character map once: ``{code point: replacement}`` for ``str.translate``."""
    # Traversable.joinpath takes a single segment on Python 3.10.
    with resources.files(__package__).joinpath("data").joinpath(_MAP_RESOURCE).open("r", encoding="utf-8") as fh:
        raw = json.load(fh)
    return {int(key[2:], 16): value for key, value in raw["map"].items()}


def transliterate(text: str) -> tuple[str, list[str]]:
    """Transliterate ``text`` to ASCII.

    Returns:
        ``(ascii_text, deleted)`` where ``deleted`` lists, in order of appearance, every
        character that had no transliteration and was removed (with repetitions).
    """
    if text.isascii() and "\x7f" not in text:
        return text, []
    # Every replacement in the table is printable ASCII, so whatever is still >= U+007F
    # after translate() had no entry and must be deleted.
    translated = text.translate(_translation_table())
    deleted = [ch for ch in translated if ord(ch) >= _FIRST_MAPPED]
    if deleted:
        translated = "".join(ch for ch in translated if ord(ch) < _FIRST_MAPPED)
    return translated, deleted


def deleted_character_message(char: str) -> str:
    """NVIDIA's warning text for a deleted character (non-printable ones are shown as U+XXXX)."""
    shown = char if char.isprintable() else f"U+{ord(char):04X}"
    return f"Unexpected character {shown}: please revise your text cleaning rules."


# Beyond this many distinct deleted characters in one text (e.g. a page of CJK), the rest
# are summarised in one line instead of one warning each.
_MAX_INDIVIDUAL_WARNINGS = 10


def warn_deleted(deleted: list[str]) -> None:
    """Log one warning per distinct deleted character, in order of first appearance (at most
    ten; further ones are summarised in a single warning)."""
    distinct = list(dict.fromkeys(deleted))
    for char in distinct[:_MAX_INDIVIDUAL_WARNINGS]:
        logger.warning(deleted_character_message(char))
    if len(distinct) > _MAX_INDIVIDUAL_WARNINGS:
        logger.warning(
            "%d more distinct unexpected characters were deleted", len(distinct) - _MAX_INDIVIDUAL_WARNINGS
        )


def to_ascii(text: str) -> str:
    """Transliterate ``text`` to ASCII, logging a warning for each distinct deleted character."""
    ascii_text, deleted = transliterate(text)
    warn_deleted(deleted)
    return ascii_text
