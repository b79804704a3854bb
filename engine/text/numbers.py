"""Number, ordinal, Roman-numeral and currency reading for ``english_cleaners_v2``.

All number words come from :mod:`inflect` (NVIDIA leaves it unpinned; the reference vectors
were made with inflect 7.6.0). The rules, and where inflect's hyphens and commas are kept or
removed, follow NVIDIA's text pipeline and the reference vectors exactly.

Beyond the reference: inflect cannot name numbers of 10**36 and above (it raises) and Python
refuses ``int()`` on very long digit strings, so such numbers are read digit by digit
("one two three ...") instead of crashing.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import inflect

__all__ = [
    "expand_currency",
    "expand_numbers",
    "integer_words",
    "inflect_words",
    "ordinal_words",
    "warm_up",
]

# inflect names numbers up to 999 decillion (36 digits).
_MAX_INFLECT_DIGITS = 36

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_engine: inflect.engine | None = None
# inflect keeps per-call state on the engine object (e.g. the current "mill" count), so
# concurrent calls from several threads must not interleave.
_inflect_lock = threading.Lock()


def _inflect() -> inflect.engine:
    """The shared inflect engine, created on first use (creating one is slow).
    Call it only while holding ``_inflect_lock``."""
    global _engine
    if _engine is None:
        import inflect

        _engine = inflect.engine()
    return _engine


def warm_up() -> None:
    """Import inflect and create its engine now (importing inflect takes over a second, which
    would otherwise land on the first text that contains a number)."""
    with _inflect_lock:
        _inflect()


def _digits_one_by_one(digits: str) -> str:
    return " ".join(_DIGIT_WORDS[int(d)] for d in digits)


@lru_cache(maxsize=8192)
def inflect_words(number: int) -> str:
    """inflect's reading of a non-negative integer, hyphens and commas kept.

    ``1234`` -> ``"one thousand, two hundred and thirty-four"``.
    """
    if len(str(number)) > _MAX_INFLECT_DIGITS:
        return _digits_one_by_one(str(number))
    with _inflect_lock:
        return _inflect().number_to_words(number, andword="and")


def _plain_words(number: int) -> str:
    """inflect's reading with hyphens turned into spaces and commas removed."""
    return inflect_words(number).replace("-", " ").replace(",", "")


def _strip_leading_zeros(digits: str) -> str:
    return digits.lstrip("0") or "0"


@lru_cache(maxsize=8192)
def integer_words(digits: str) -> str:
    """Read a string of digits the way english_cleaners_v2 reads a bare integer.

    * multiples of 100 above 1000 that are not multiples of 1000: "<n/100> hundred", with
      inflect's hyphens kept ("2100" -> "twenty-one hundred");
    * 1000 < n < 3000: 2000 -> "two thousand", 2001-2009 -> "two thousand <units>", the rest
      as two 2-digit groups with "oh" for a zero tens digit ("1001" -> "ten oh one");
    * otherwise inflect with "and", without hyphens or commas ("101" -> "one hundred and one");
    * leading zeros vanish ("007" -> "seven").
    """
    digits = _strip_leading_zeros(digits)
    if len(digits) > _MAX_INFLECT_DIGITS:
        return _digits_one_by_one(digits)
    n = int(digits)
    if n > 1000 and n % 100 == 0 and n % 1000 != 0:
        return f"{inflect_words(n // 100)} hundred"
    if 1000 < n < 3000:
        if n == 2000:
            return "two thousand"
        if 2000 < n < 2010:
            return f"two thousand {_plain_words(n - 2000)}"
        high, low = divmod(n, 100)
        low_words = f"oh {_plain_words(low)}" if low < 10 else _plain_words(low)
        return f"{_plain_words(high)} {low_words}"
    return _plain_words(n)


@lru_cache(maxsize=4096)
def ordinal_words(digits: str) -> str:
    """Ordinal words for a digit string: "21" -> "twenty-first" (inflect; hyphens and commas kept)."""
    digits = _strip_leading_zeros(digits)
    if len(digits) > _MAX_INFLECT_DIGITS:
        return _digits_one_by_one(digits)
    with _inflect_lock:
        engine = _inflect()
        return engine.number_to_words(engine.ordinal(int(digits)), andword="and")


# --------------------------------------------------------------------------------------
# Currency
# --------------------------------------------------------------------------------------

_CURRENCY_UNITS = {"$": "dollar", "€": "euro", "£": "pound", "₩": "won"}
_MAGNITUDES = {
    "trillion": "trillion",
    "billion": "billion",
    "million": "million",
    "thousand": "thousand",
    "hundred": "hundred",
    "t": "trillion",
    "b": "billion",
    "m": "million",
}
# A currency sign, an amount (digits, commas and dots, ending in a digit) and an optional
# magnitude word or letter that must not run on into another letter ("$5m" yes, "$5mb" no).
_CURRENCY_RE = re.compile(
    r"([$€£₩])([0-9.,]*[0-9]+)"
    r"(?:[ ]?(trillion|billion|million|thousand|hundred|[mbt])(?![a-z]))?",
    re.IGNORECASE,
)


def _currency_integer_words(digits: str) -> str:
    """inflect's reading of an amount, hyphens and commas kept; 1001-9999 multiples of 100
    (but not of 1000) are read as "<n/100> hundred" ("1200" -> "twelve hundred")."""
    digits = _strip_leading_zeros(digits)
    if len(digits) > _MAX_INFLECT_DIGITS:
        return _digits_one_by_one(digits)
    n = int(digits)
    if 1000 < n < 10000 and n % 100 == 0 and n % 1000 != 0:
        return f"{inflect_words(n // 100)} hundred"
    return inflect_words(n)


def _currency_amount_words(amount: str) -> str:
    """Words for the amount before a magnitude: "2.5" -> "two point five" (inflect)."""
    if "." not in amount:
        return _currency_integer_words(amount)
    whole, _, fraction = amount.partition(".")
    # inflect reads the fraction digit by digit; do the same without its length limits.
    whole_words = _currency_integer_words(whole) if whole else "zero"
    return f"{whole_words} point {_digits_one_by_one(fraction)}"


def _expand_currency_match(match: re.Match[str]) -> str:
    unit = _CURRENCY_UNITS[match.group(1)]
    amount = match.group(2).replace(",", "")
    magnitude = match.group(3)
    if amount.count(".") > 1:
        # Not an amount ("$1.2.3"): name the unit and leave the digits to the number rules.
        return f"{amount} {unit}s"
    if magnitude:
        return f"{_currency_amount_words(amount)} {_MAGNITUDES[magnitude.lower()]} {unit}s"

    whole, _, fraction = amount.partition(".")
    whole = _strip_leading_zeros(whole) if whole else "0"
    fraction = _strip_leading_zeros(fraction) if fraction else "0"
    parts = []
    if whole != "0":
        parts.append(f"{_currency_integer_words(whole)} {unit}{'' if whole == '1' else 's'}")
    if fraction != "0":
        parts.append(f"{_currency_integer_words(fraction)} cent{'' if fraction == '1' else 's'}")
    if not parts:
        return f"zero {unit}s"
    return ", ".join(parts)


def expand_currency(text: str) -> str:
    """Spell out currency amounts: "$5.50" -> "five dollars, fifty cents",
    "$2.5 million" -> "two point five million dollars", "$1,200" -> "twelve hundred dollars"."""
    if not any(sign in text for sign in _CURRENCY_UNITS):
        return text
    return _CURRENCY_RE.sub(_expand_currency_match, text)


# --------------------------------------------------------------------------------------
# Numbers inside a cleaned chunk
# --------------------------------------------------------------------------------------

# The (?<![0-9]) look-behinds never change what matches (a match inside a digit run would
# also be found from the run's start, which is tried first); they only stop quadratic
# backtracking on very long digit runs.
_COMMA_NUMBER_RE = re.compile(r"[0-9][0-9,]+[0-9]")
_DECIMAL_RE = re.compile(r"(?<![0-9])([0-9]+)\.([0-9]+)")
_ORDINAL_RE = re.compile(r"(?<![0-9])([0-9]+)(st|nd|rd|th)")
# Roman numerals, converted only when the units part is II, III, IV, VII, VIII or IX, so
# that ordinary capitals ("I", "V", "X", "CD", "DC", "VI") are left to the acronym rule.
_ROMAN_RE = re.compile(r"\b(?=[MDCLXVI])(M*)(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{2,3})\b")
_TIMES_RE = re.compile(r"(?<![0-9])([0-9]+)x([0-9]+)")
_INTEGER_RE = re.compile(r"([0-9]+)('s|s)?")

_ROMAN_VALUES = {"M": 1000, "D": 500, "C": 100, "L": 50, "X": 10, "V": 5, "I": 1}


def _roman_to_int(numeral: str) -> int:
    values = [_ROMAN_VALUES[ch] for ch in numeral]
    # A symbol smaller than its successor is subtracted (the I of IV, the C of CM).
    return sum(-v if i + 1 < len(values) and values[i + 1] > v else v for i, v in enumerate(values))


def _expand_roman(match: re.Match[str]) -> str:
    return str(_roman_to_int(match.group(0)))


def _expand_integer(match: re.Match[str]) -> str:
    words = integer_words(match.group(1))
    suffix = match.group(2)
    if not suffix:
        return words
    # "1990s" -> "nineteen nineties", "80's" -> "eighties", "2000s" -> "two thousands".
    if words.endswith("y"):
        return words[:-1] + "ies"
    return words + suffix


def expand_numbers(text: str) -> str:
    """Step 4 of english_cleaners_v2: commas, currency, decimals, ordinals, Roman numerals,
    "AxB" and finally every remaining integer (with an optional plural "s" / "'s")."""
    text = _COMMA_NUMBER_RE.sub(lambda m: m.group(0).replace(",", ""), text)
    text = expand_currency(text)
    text = _DECIMAL_RE.sub(r"\1 point \2", text)
    text = _ORDINAL_RE.sub(lambda m: ordinal_words(m.group(1)), text)
    text = _ROMAN_RE.sub(_expand_roman, text)
    text = _TIMES_RE.sub(r"\1 by \2", text)
    return _INTEGER_RE.sub(_expand_integer, text)
