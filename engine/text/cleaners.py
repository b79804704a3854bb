"""``english_cleaners_v2``: NVIDIA's text normalisation, applied to one whitespace-free chunk.

The steps and their order follow NVIDIA's text pipeline (the ground truth is the
reference vectors in ``tests/data/text_vectors.json``):

1. transliteration to ASCII (:mod:`engine.text.unidecoder`);
2. am/pm times;
3. letters and numbers: units, dimensions, splitting of mixed letter/digit tokens;
4. numbers (:func:`engine.text.numbers.expand_numbers`);
5. abbreviations;
6. acronyms;
7. lower-case; 8. collapse whitespace; 9. runs of ``/`` become a space.

The text processor calls this once per whitespace-separated chunk, so rules that need a
space ("3:30 pm", "10 x 20") never fire on user text; that is NVIDIA's behaviour too.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..errors import InputError
from .numbers import expand_numbers, integer_words
from .unidecoder import transliterate, warn_deleted

__all__ = ["english_cleaners_v2", "collapse_whitespace", "get_cleaner", "CLEANERS"]

# --------------------------------------------------------------------------------------
# 2. am/pm
# --------------------------------------------------------------------------------------

_TIME_RE = re.compile(r"\b([01]?[0-9]|2[0-3])(?::([0-5][0-9]))?\s*([ap])m\b", re.IGNORECASE)


def _expand_time(match: re.Match[str]) -> str:
    hour, minutes, half = match.groups()
    words = integer_words(hour)
    if minutes and int(minutes) != 0:
        words += " " + integer_words(minutes)
    return f"{words} {half.lower()}.m."


# --------------------------------------------------------------------------------------
# 3. letters and numbers
# --------------------------------------------------------------------------------------

_UNIT_WORDS = {
    "tb": "terabyte",
    "gb": "gigabyte",
    "mb": "megabyte",
    "kb": "kilobyte",
    "ghz": "gigahertz",
    "mhz": "megahertz",
    "khz": "kilohertz",
    "hz": "hertz",
    "mm": "millimeter",
}
# The (?<![0-9]) / (?<![0-9][.,]) / (?<![a-z]) look-behinds in this module never change what
# matches (a match found inside a run is also found from the run's start, which the scan
# tries first); they only stop quadratic backtracking on very long digit or letter runs.
_UNITS_RE = re.compile(
    r"(?<![0-9])(?<![0-9][.,])([0-9]+(?:[.,][0-9]+)*)\s*(tb|gb|mb|kb|ghz|mhz|khz|hz|mm)\b", re.IGNORECASE
)
# "AxB[xC]" with an optional in/inch/m suffix. The vectors do not pin what happens to the
# suffix; it is kept as a word ("5x10in" -> "5 by 10 in"), like "20in" -> "20 in".
_DIMENSIONS_RE = re.compile(r"(?<![0-9])([0-9]+)x([0-9]+)(?:x([0-9]+))?(inch|in|m)?\b", re.IGNORECASE)
_ALNUM_RUN_RE = re.compile(r"[A-Za-z0-9]+")
# Parts of a mixed token: digits keep an ordinal or plural suffix that ends the letters.
_MIXED_PART_RE = re.compile(r"[0-9]+(?:st|nd|rd|th|s)(?![A-Za-z])|[0-9]+|[A-Za-z]+")


def _quantity_is_plural(quantity: str) -> bool:
    try:
        return float(quantity.replace(",", "")) > 1
    except ValueError:  # "1.2.3": several dots, certainly not exactly one
        return True


def _expand_unit(match: re.Match[str]) -> str:
    quantity, unit = match.group(1), match.group(2).lower()
    word = _UNIT_WORDS[unit]
    if not unit.endswith("hz") and _quantity_is_plural(quantity):
        word += "s"
    return f"{quantity} {word}"


def _expand_dimensions(match: re.Match[str]) -> str:
    sides = [side for side in match.group(1, 2, 3) if side]
    text = " by ".join(sides)
    return f"{text} {match.group(4)}" if match.group(4) else text


def _regroup_digits(part: str) -> str:
    """Digit runs of 3-4 digits are read in two-digit groups: "1080" -> "10 80". For three
    digits the pair is taken from the right ("A380" -> "A 3 80"); the vectors only pin four."""
    suffix = part.lstrip("0123456789")
    digits = part[: len(part) - len(suffix)]
    if 3 <= len(digits) <= 4:
        digits = f"{digits[:-2]} {digits[-2:]}"
    return digits + suffix


def _split_mixed_token(match: re.Match[str]) -> str:
    token = match.group(0)
    parts = _MIXED_PART_RE.findall(token)
    if len(parts) < 2:  # pure letters, pure digits, or digits + suffix ("2nd", "1990s")
        return token
    return " ".join(_regroup_digits(p) if p[0].isdigit() else p for p in parts)


def _expand_letters_and_numbers(text: str) -> str:
    text = _UNITS_RE.sub(_expand_unit, text)
    text = _DIMENSIONS_RE.sub(_expand_dimensions, text)
    return _ALNUM_RUN_RE.sub(_split_mixed_token, text)


# --------------------------------------------------------------------------------------
# 5. abbreviations
# --------------------------------------------------------------------------------------

# "No." + digit -> "number" is part of NVIDIA's list but can never fire here: every digit has
# been read out by the number rules before this step. It is therefore not implemented.
_TITLES = {
    "mrs": "misess",
    "ms": "miss",
    "mr": "mister",
    "dr": "doctor",
    "st": "saint",
    "co": "company",
    "jr": "junior",
    "maj": "major",
    "gen": "general",
    "drs": "doctors",
    "rev": "reverend",
    "lt": "lieutenant",
    "hon": "honorable",
    "sgt": "sergeant",
    "capt": "captain",
    "esq": "esquire",
    "ltd": "limited",
    "col": "colonel",
    "ft": "fort",
    "sen": "senator",
    "etc": "et cetera",
}
_TITLES_RE = re.compile(r"\b(" + "|".join(sorted(_TITLES, key=len, reverse=True)) + r")\.", re.IGNORECASE)
_PERCENT_RE = re.compile(r"\s?%")
_DOMAIN_RE = re.compile(r"\.(com|gov|org)\b", re.IGNORECASE)


def _expand_abbreviations(text: str) -> str:
    text = _PERCENT_RE.sub(" percent", text)
    text = text.replace("&", " and ").replace("@", " at ")
    text = _DOMAIN_RE.sub(r" dot \1", text)
    return _TITLES_RE.sub(lambda m: _TITLES[m.group(1).lower()], text)


# --------------------------------------------------------------------------------------
# 6. acronyms
# --------------------------------------------------------------------------------------

_EMAIL_RE = re.compile(r"\bemail\b", re.IGNORECASE)
# Optional lower-case letters, then at least two capitals, an optional plural "s" and an
# optional full stop (absorbed: the spelling already ends with one).
_ACRONYM_RE = re.compile(r"(?<![a-z])([a-z]*[A-Z]{2,})(s?)(\.?)")
# Acronyms NVIDIA does not spell letter by letter.
_ACRONYM_EXCEPTIONS = {"NVIDIA": "N.VIDIA"}


def _spell_acronym(match: re.Match[str]) -> str:
    letters, plural, dot = match.groups()
    exception = _ACRONYM_EXCEPTIONS.get(letters)
    if exception is not None:
        # The exception does not end in a dot, so a sentence-final one is kept.
        return exception + ("'s" if plural else "") + dot
    return "".join(ch + "." for ch in letters) + ("'s" if plural else "")


def _expand_acronyms(text: str) -> str:
    text = _EMAIL_RE.sub("e-mail", text)
    return _ACRONYM_RE.sub(_spell_acronym, text)


# --------------------------------------------------------------------------------------
# pipeline
# --------------------------------------------------------------------------------------

_WHITESPACE_RE = re.compile(r"\s+")
_SLASHES_RE = re.compile(r"/+")


def collapse_whitespace(text: str) -> str:
    """Replace every run of whitespace by one space (no stripping, as NVIDIA does)."""
    return _WHITESPACE_RE.sub(" ", text)


def english_cleaners_v2(text: str, deleted: list[str] | None = None) -> str:
    """Normalise one chunk of text with NVIDIA's ``english_cleaners_v2``.

    Args:
        text: the chunk (the text processor passes whitespace-free chunks; any string works).
        deleted: if given, characters removed by transliteration are appended to it and not
            logged, so that the caller can warn once per input; if ``None`` they are logged.

    Returns:
        The cleaned, lower-case ASCII text.
    """
    text, removed = transliterate(text)
    if deleted is None:
        warn_deleted(removed)
    else:
        deleted.extend(removed)
    text = _TIME_RE.sub(_expand_time, text)
    text = _expand_letters_and_numbers(text)
    text = expand_numbers(text)
    text = _expand_abbreviations(text)
    text = _expand_acronyms(text)
    text = text.lower()
    text = collapse_whitespace(text)
    return _SLASHES_RE.sub(" ", text)


#: Cleaner functions by the names NVIDIA's configs use.
CLEANERS: dict[str, Callable[..., str]] = {"english_cleaners_v2": english_cleaners_v2}


def get_cleaner(name: str) -> Callable[..., str]:
    """Look up a cleaner by name; raises ``ValueError`` for unknown names."""
    try:
        return CLEANERS[name]
    except KeyError:
        raise InputError(f"unknown text cleaner {name!r}; available: {sorted(CLEANERS)}") from None
