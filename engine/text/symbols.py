"""NVIDIA's ``english_basic`` symbol set (148 symbols; the id of a symbol is its position).

Layout (NVIDIA's ``english_basic``; ``tests/data/text_vectors.json`` checks the ids):

* 0      ``_`` (padding)
* 1      ``-``
* 2-10   ``! ' ( ) , . : ; ?``
* 11     a single space
* 12-37  ``A``-``Z`` (never produced by the cleaners; kept so the model's vocabulary matches)
* 38-63  ``a``-``z``
* 64-147 the 84 CMUdict ARPAbet phonemes, each prefixed with ``@``
"""

from __future__ import annotations

import string

from ..errors import InputError

__all__ = [
    "ARPABET_SYMBOLS",
    "PAD",
    "PAD_ID",
    "SPACE_ID",
    "SYMBOLS",
    "SYMBOL_TO_ID",
    "VALID_ARPABET",
    "VALID_ARPABET_LIST",
    "get_symbols",
]

PAD = "_"
_PUNCTUATION = "!'(),.:;? "
_SPECIAL = "-"

# Vowels carry an optional stress digit (0, 1, 2); CMUdict also uses the bare vowel.
_VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
_CONSONANTS = (
    "B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG",
    "P", "R", "S", "SH", "T", "TH", "V", "W", "Y", "Z", "ZH",
)


def _arpabet_in_nvidia_order() -> list[str]:
    """The 84 valid CMUdict symbols, sorted alphabetically (the order NVIDIA lists them in)."""
    vowels = [v + stress for v in _VOWELS for stress in ("", "0", "1", "2")]
    return sorted(vowels + list(_CONSONANTS))


#: The 84 valid ARPAbet phonemes (no ``@``), in id order.
VALID_ARPABET_LIST: list[str] = _arpabet_in_nvidia_order()
#: Set form, used to validate dictionary pronunciations.
VALID_ARPABET: frozenset[str] = frozenset(VALID_ARPABET_LIST)
#: The phoneme symbols as they appear in the symbol table (``@``-prefixed).
ARPABET_SYMBOLS: list[str] = ["@" + s for s in VALID_ARPABET_LIST]

#: ``english_basic`` in id order.
SYMBOLS: tuple[str, ...] = tuple(
    [PAD, _SPECIAL]
    + list(_PUNCTUATION)
    + list(string.ascii_uppercase)
    + list(string.ascii_lowercase)
    + ARPABET_SYMBOLS
)
#: symbol -> id.
SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(SYMBOLS)}

PAD_ID: int = SYMBOL_TO_ID[PAD]
SPACE_ID: int = SYMBOL_TO_ID[" "]

assert len(SYMBOLS) == 148 and len(VALID_ARPABET) == 84 and SYMBOL_TO_ID["@AA"] == 64


def get_symbols(symbol_set: str = "english_basic") -> tuple[str, ...]:
    """Return the symbol list of ``symbol_set`` (only ``'english_basic'`` is supported).

    Raises:
        ValueError: for any other symbol set name.
    """
    if symbol_set != "english_basic":
        raise InputError(f"unsupported symbol set {symbol_set!r}; only 'english_basic' is available")
    return SYMBOLS
