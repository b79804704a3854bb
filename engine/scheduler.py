"""Text chunking for synthesis (pure Python: no torch here).

FastPitch attends over a whole input at once, so long texts are spoken sentence by sentence.
:func:`split_sentences` cuts at sentence ends while leaving abbreviations, initials,
decimals, versions, times, URLs and ellipses inside their sentence, and cuts over-long
sentences at clause punctuation, then at spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Lower-cased words that end with a dot without ending a sentence.
ABBREVIATIONS = frozenset("""
mr mrs ms dr prof st jr sr co corp inc ltd vs etc eg ie cf al fig no nos vol pp approx
dept est gen gov lt maj capt col sgt rev hon esq ft sen rep mt ave blvd rd jan feb mar apr
jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun
""".split())

DEFAULT_MAX_CHARS = 300

# A candidate end: terminal punctuation (with closing quotes/brackets), then whitespace.
_END = re.compile(r"""([.!?]+|…)(["'”’)\]]*)(\s+)""")


@dataclass(frozen=True)
class Span:
    """A piece of the input: ``text == source[start:end]`` (stripped)."""

    text: str
    start: int
    end: int


def _is_abbreviation(text: str, dot: int) -> bool:
    """Is the '.' at ``text[dot]`` part of an abbreviation or initial?"""
    j = dot
    while j > 0 and (text[j - 1].isalpha() or text[j - 1] == "."):
        j -= 1
    word = text[j:dot]
    if not word:
        return False
    if len(word) == 1 and word.isalpha():
        return True  # initials: "J. R. R. Tolkien", "U.S."'s last letter
    if "." in word:
        return True  # "e.g", "U.S", "a.m"
    return word.lower() in ABBREVIATIONS


def split_sentences(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[Span]:
    """Split ``text`` into sentence spans of at most ``max_chars`` characters each."""
    if max_chars < 20:
        raise ValueError("max_chars must be at least 20")
    spans: list[Span] = []
    start = 0
    for m in _END.finditer(text):
        punct, after = m.group(1), m.end()
        if punct == "." and _is_abbreviation(text, m.start(1)):
            continue  # "Dr. Smith", "e.g. this", "J. R. R. Tolkien"
        nxt = text[after:after + 1]
        if nxt and nxt.islower():
            continue  # "... and so on. and then" — not a sentence start
        _add(spans, text, start, m.end(2))
        start = after
    _add(spans, text, start, len(text))
    out: list[Span] = []
    for s in spans:
        out.extend(_cut_long(text, s, max_chars))
    return out


def _add(spans: list[Span], text: str, start: int, end: int) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if stripped:
        lead = len(piece) - len(piece.lstrip())
        spans.append(Span(stripped, start + lead, start + lead + len(stripped)))


def _cut_long(text: str, span: Span, max_chars: int) -> list[Span]:
    """Cut a span longer than max_chars at the last clause mark, else space, before it."""
    out: list[Span] = []
    s = span
    while len(s.text) > max_chars:
        window = s.text[:max_chars]
        cut = max(window.rfind(p) for p in (", ", "; ", ": ", " - ", " — "))
        if cut > max_chars // 3:
            cut += 1  # keep the punctuation with the left piece
        else:
            cut = window.rfind(" ")
            if cut <= 0:
                cut = max_chars  # one enormous token: cut it anyway
        left = s.text[:cut].rstrip()
        rest = s.text[cut:]
        lead = len(rest) - len(rest.lstrip())
        out.append(Span(left, s.start, s.start + len(left)))
        s = Span(rest.strip(), s.start + cut + lead, s.end)
        if not s.text:
            break
    if s.text:
        out.append(s)
    return out
