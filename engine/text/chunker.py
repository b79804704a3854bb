"""Text chunking for synthesis (pure Python: no torch, no numpy here).

FastPitch attends over a whole input at once, so text is spoken piece by piece. This module
decides where the pieces end, for text that arrives whole (:func:`split_sentences`) or as a
stream of deltas such as LLM tokens (:class:`TextChunker`). Both run the same machinery, so a
streamed text is cut exactly like the same text given whole (the first-fragment latency rules
aside, which only exist for streams and are switched off by :meth:`ChunkPolicy.sentences_only`).

Sentence ends
-------------
A candidate end is a run of terminal marks (``. ! ? … ‽``, e.g. ``?!`` or ``...``) with any
closing quotes/brackets after it, followed by whitespace. While streaming, a candidate is only
decided once the whitespace *and* the next non-space character have arrived (more when the rule
below needs the whole next word), so ``"3."`` + ``"14"`` or ``"Dr."`` + ``" Smith"`` never cut;
:meth:`TextChunker.flush` treats the end of the text as final. Given the next word:

* A blank line always ends a chunk; so does a newline followed by a list item (``- x``,
  ``* x``, ``• x``, ``2. x``, ``b) x``) or a markdown heading (``# x``). A single newline
  otherwise is ordinary whitespace, since hard-wrapped text has one in mid-sentence.
* Nothing ends a sentence before a lower-case word (``"Stop!" he said``, ``Wait... what?``).
* ``! ? ‽`` and ellipses (``...``, ``…``) end a sentence before anything else, upper case
  included: ``Well… I see.`` is two chunks; an ellipsis before a capital starts a new
  sentence far more often than not. Spaced dots (``. . .``) never end one.
* A single ``.`` ends a sentence before anything but a lower-case word, except after:

  - titles and joining abbreviations that precede what they qualify (Mr., Dr., Prof., St.,
    vs., e.g., i.e., ...): never. "Baker St. It is" therefore stays one chunk; merging two
    sentences costs a little prosody, while "St." + "Louis" would be a broken utterance;
  - abbreviations for numbered things (No., Fig., Vol., p., Jan., Sept., ...): not before a
    digit ("No. 5", "Jan. 5"); otherwise they behave like words ("No. I won't." splits);
  - time and era abbreviations (a.m., p.m., B.C., A.D.): only before a capital, not a digit
    ("We met at 10 a.m. Then we left." splits; "A.D. 79" does not);
  - abbreviations that can close a sentence (Inc., Ltd., Jr., et al., ...), initials (a
    single capital letter preceded by start/space/opening punctuation: "J. R. R. Tolkien",
    "George W. Bush") and dotted initialisms (U.S., U.K., Ph.D.): only before a common
    sentence-opening word (The, It, He, Then, However, ...), because "U.S. Army" and
    "U.S. The" cannot be told apart from the capital alone;
  - a number of up to three digits that starts a line or follows a sentence end or colon:
    a list marker ("1. First item", "Steps: 1. Open it. 2. Close it.").

  Decimals, versions, times, URLs and e-mail addresses never have whitespace after their inner
  dots, so only their final dot is a candidate, judged like any word ("98.6°F. Next" splits).

Other cuts
----------
Any chunk longer than ``max_chars`` is cut at its last clause mark (``, ; : — –`` or a spaced
hyphen, followed by whitespace) past a third of the limit, else at its last space, else hard.
Before the first chunk of a stream has gone out, :class:`ChunkPolicy`'s first-fragment rules
also cut early at a clause mark, after a number of complete words, or after a wait.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import InputError

DEFAULT_MAX_CHARS = 300
MIN_MAX_CHARS = 20

# Far beyond any real first sentence: "never" for the word-count first-fragment rules.
_NEVER_WORDS = 10**9

_STRONG_TERMINALS = "!?‽…"
_CLOSERS = "\"'”’)]}»›"
_OPENERS = "\"'“‘([{«‹¿¡"
_EMPHASIS = "*_"  # markdown emphasis around a word: "*Note*." is the word "Note"

# Events worth a look while scanning for sentence ends: a terminal mark or a newline.
_EVENT = re.compile(r"[.!?…‽\n]")
# A terminal run: terminal marks, then any mix of further marks and closers ('?!")').
_RUN = re.compile(r"[.!?…‽][.!?…‽\"'”’)\]}»›]*")
_ENDS_WITH_RUN = re.compile(r"[.!?…‽][.!?…‽\"'”’)\]}»›]*\Z")
_NONSPACE = re.compile(r"\S")
_TOKEN = re.compile(r"\S+")
_ALNUM = re.compile(r"[^\W_]")
# Clause marks; a cut goes right after the match. ", ; : — –" need whitespace after them (so
# "1,000" and "10:30" are not marks), a hyphen needs a space on both sides, and an em dash
# between two words ("well—I") is one too.
_CLAUSE = re.compile(r"[,;:—–][\"'”’)\]}»›]*(?=\s)|(?<=[ \t])-(?=\s)|(?<=[^\W_])—(?=[^\W_])")
# Starts of a list item or heading line, and what could still grow into one.
_LINE_MARKER = re.compile(r"(?:[-*•‣◦▪+]|\d{1,3}[.)]|[A-Za-z]\)|#{1,6})(?=\s)")
_LINE_MARKER_PREFIX = re.compile(r"(?:[-*•‣◦▪+]|\d{1,3}[.)]?|[A-Za-z]\)?|#{1,6})\Z")

# How far back a rule may look: abbreviations and list numbers are short. Bounded so that a
# stream can drop old text and still decide exactly as on the whole text.
_LOOKBACK = 64
_KEEP = 4 * _LOOKBACK  # text kept before the unchunked part once old text is dropped
_TRIM_AT = 8192  # drop old text once this much has been chunked (amortises the copy)

# Lower-cased abbreviations, by how they behave before the next word (see module docstring).
PREFIX_ABBREVIATIONS = frozenset("""
mr mrs ms mx dr prof rev hon gen capt lt col sgt maj sen rep gov pres supt insp det cmdr adm
brig cpl pvt fr st mt ft messrs mme mlle vs v cf viz e.g i.e a.k.a w.r.t
""".split())
NUMBERED_ABBREVIATIONS = frozenset("""
no nos nr fig figs vol vols p pp pg ch chap sec sect eq eqs art op ref refs tab pt pts para
approx ca est jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thur thurs
fri sat sun
""".split())
TIME_ABBREVIATIONS = frozenset("a.m p.m b.c a.d b.c.e c.e".split())
CLOSING_ABBREVIATIONS = frozenset("""
inc ltd co corp jr sr esq bros llc plc al ave blvd rd dept assn univ govt intl mfg div
""".split())
# Words that open a new sentence after an ambiguous abbreviation or initial ("U.S. The ...").
SENTENCE_STARTERS = frozenset("""
the this that these those there here it its he she we they i you his her our their my your
but and so then however also now when while if as yet still thus therefore hence meanwhile
what why how where who which let please today tomorrow yesterday finally first next later
afterwards unfortunately fortunately in on at after before since during although though
because once
""".split())

SENTENCE, CLAUSE, FORCED, FLUSH = "sentence", "clause", "forced", "flush"


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_seconds(name: str, value: object, allow_inf: bool) -> None:
    ok = (not isinstance(value, bool) and isinstance(value, (int, float))
          and not math.isnan(value) and value >= 0 and (allow_inf or math.isfinite(value)))
    if not ok:
        bound = "" if allow_inf else " finite"
        raise InputError(f"{name} must be a{bound} number of seconds >= 0, got {value!r}")


@dataclass(frozen=True)
class ChunkPolicy:
    """When a :class:`TextChunker` releases text, and the pauses after each chunk.

    The ``first_*`` rules apply only until the first chunk of a stream is out; they trade a
    less natural first cut for a short wait before the first audio.
    """

    # First chunk: cut at a clause mark once at least this many words precede it,
    first_min_words: int = 4
    # else cut after this many complete words,
    first_force_words: int = 6
    # else, this long after the first text arrived, emit the complete words so far.
    first_max_wait_s: float = 0.3
    max_chars: int = DEFAULT_MAX_CHARS  # longer chunks are cut at a clause mark, else a space
    pause_sentence_s: float = 0.25  # silence after a chunk ending a sentence
    pause_clause_s: float = 0.1  # silence after a chunk ending at a clause mark

    def __post_init__(self) -> None:
        _check_int("first_min_words", self.first_min_words, 1)
        _check_int("first_force_words", self.first_force_words, 1)
        _check_int("max_chars", self.max_chars, MIN_MAX_CHARS)
        _check_seconds("first_max_wait_s", self.first_max_wait_s, allow_inf=True)
        _check_seconds("pause_sentence_s", self.pause_sentence_s, allow_inf=False)
        _check_seconds("pause_clause_s", self.pause_clause_s, allow_inf=False)

    @classmethod
    def sentences_only(cls, max_chars: int = DEFAULT_MAX_CHARS,
                       pause_sentence_s: float = 0.25,
                       pause_clause_s: float = 0.1) -> "ChunkPolicy":
        """A policy without first-fragment rules: chunks end only at sentence ends and
        ``max_chars`` cuts, so streamed and whole text give identical chunks."""
        return cls(first_min_words=_NEVER_WORDS, first_force_words=_NEVER_WORDS,
                   first_max_wait_s=math.inf, max_chars=max_chars,
                   pause_sentence_s=pause_sentence_s, pause_clause_s=pause_clause_s)

    def pause_for(self, kind: str) -> float:
        """Silence (seconds) to insert after a chunk of this kind."""
        if kind == SENTENCE:
            return float(self.pause_sentence_s)
        if kind == CLAUSE:
            return float(self.pause_clause_s)
        return 0.0


@dataclass(frozen=True)
class TextChunk:
    """A piece of text ready to speak: ``full_text[start:end] == text`` (stripped).

    ``kind`` is ``'sentence'`` (ends a sentence, paragraph or list item), ``'clause'`` (cut at
    a clause mark), ``'forced'`` (cut at a word or character limit or after a wait) or
    ``'flush'`` (the unfinished end of the text, spoken on :meth:`TextChunker.flush`).
    """

    text: str
    start: int
    end: int
    pause_after_s: float
    kind: str


@dataclass(frozen=True)
class Span:
    """A piece of the input: ``text == source[start:end]`` (stripped)."""

    text: str
    start: int
    end: int


class _Cand(NamedTuple):
    """The verdict on one candidate sentence end (local indices into the buffer)."""

    status: str  # 'no' | 'boundary' | 'undecided' | 'end'
    end: int  # boundary/end: chunk end; undecided: the least end a boundary here could have
    resume: int  # no/boundary: where text continues; undecided: the candidate's start


_NO, _BOUNDARY, _UNDECIDED, _END = "no", "boundary", "undecided", "end"


class TextChunker:
    """Incremental sentence/clause chunker for one request's text.

    Feed text as it arrives (whole, or in deltas that may split words anywhere); each call
    returns the chunks that became ready, in order. Offsets refer to the request's full text
    so far. ``now`` is the caller's monotonic clock in seconds; it only matters for
    ``first_max_wait_s``, so tests can pass a constant.

    Whole text: ``feed(text, now) + flush()``.
    """

    def __init__(self, policy: ChunkPolicy = ChunkPolicy()):
        if not isinstance(policy, ChunkPolicy):
            raise InputError(f"policy must be a ChunkPolicy, got {type(policy).__name__}")
        self.policy = policy
        # Only a tail of the full text is kept: self._text[i] is full_text[self._base + i].
        # All cursors below are indices into self._text.
        self._text = ""
        self._base = 0
        self._pos = 0  # start of the text not yet chunked
        self._scan = 0  # every candidate end before this is decided: not a boundary
        self._emitted = False
        self._t_first: float | None = None  # when the first non-space text arrived
        self._reset_fragment()

    # -- public API ---------------------------------------------------------------------

    @property
    def buffered(self) -> str:
        """Text received but not yet chunked (may begin or end with whitespace)."""
        return self._text[self._pos:]

    @property
    def emitted_any(self) -> bool:
        """Whether any chunk has been returned yet (the first-fragment rules are over)."""
        return self._emitted

    def feed(self, delta: str, now: float) -> list[TextChunk]:
        """Append ``delta`` to the text and return the chunks now ready to speak."""
        if not isinstance(delta, str):
            raise InputError(f"text delta must be a string, got {type(delta).__name__}")
        now = _check_now(now)
        if delta:
            self._text += delta
            if self._t_first is None and not delta.isspace():
                self._t_first = now
        return self._drain(now, final=False)

    def poll(self, now: float) -> list[TextChunk]:
        """Release text on time alone (``first_max_wait_s``) when no new text has come."""
        return self._drain(_check_now(now), final=False)

    def flush(self) -> list[TextChunk]:
        """Chunk everything buffered: the end of the text counts as final, so pending
        candidates are decided and the rest is spoken (its last piece has kind ``'flush'``
        unless it ends a sentence). Feeding may continue afterwards."""
        out = self._drain(0.0, final=True)
        self._pos = len(self._text)
        self._scan = max(self._scan, self._pos)
        self._reset_fragment()
        self._trim()
        return out

    # -- the cutting loop -----------------------------------------------------------------

    def _drain(self, now: float, final: bool) -> list[TextChunk]:
        out = []
        while (cut := self._next_cut(now, final)) is not None:
            start, end, resume, kind = cut
            out.append(TextChunk(self._text[start:end], self._base + start, self._base + end,
                                 self.policy.pause_for(kind), kind))
            self._pos = resume
            self._scan = max(self._scan, resume)
            self._emitted = True
        if not final:
            self._trim()
        return out

    def _next_cut(self, now: float, final: bool) -> tuple[int, int, int, str] | None:
        """The next chunk as (start, end, resume, kind), or None when nothing is ready."""
        text, n, max_chars = self._text, len(self._text), self.policy.max_chars
        m = _NONSPACE.search(text, self._pos)
        if m is None:
            return None
        s = m.start()
        limit = s + max_chars  # a chunk may end at or before this
        cand = self._find_candidate(s, final)
        best: tuple[int, int, str] | None = None  # (end, resume, kind)

        if cand.status == _BOUNDARY and cand.end <= limit:
            best = (cand.end, cand.resume, SENTENCE)
        elif cand.status == _END and cand.end <= limit:
            kind = SENTENCE if _ENDS_WITH_RUN.search(text, s, cand.end) else FLUSH
            best = (cand.end, n, kind)

        fragment_on = not final and not self._emitted
        if fragment_on:
            frag = self._fragment_cut(s)
            # A fragment may not run past a sentence end, nor past an undecided candidate
            # (the text after it may belong to the next sentence).
            if cand.status == _UNDECIDED:
                reach = cand.resume
            elif cand.status in (_BOUNDARY, _END):
                reach = cand.end
            else:
                reach = n
            if (frag is not None and frag[0] <= min(reach, limit)
                    and (best is None or frag[0] < best[0])):
                best = (frag[0], frag[0], frag[1])

        if best is None and self._over_limit(s, cand):
            best = self._window_cut(s)

        if best is None and fragment_on and self._t_first is not None \
                and now - self._t_first >= self.policy.first_max_wait_s:
            e = self._frag_cut[0] if self._frag_cut is not None else self._frag_last_end
            if e is not None and e > s:
                best = self._window_cut(s) if e > limit else (e, e, FORCED)

        if best is None:
            return None
        return (s, *best)

    def _over_limit(self, s: int, cand: _Cand) -> bool:
        """Is it certain that the chunk starting at ``s`` will be longer than max_chars?

        True when text goes on past the limit and no sentence end can come before it; a
        stream then cuts exactly where the whole text would.
        """
        limit = s + self.policy.max_chars
        if _NONSPACE.search(self._text, limit) is None:
            return False
        if cand.status in (_BOUNDARY, _END, _UNDECIDED):
            return cand.end > limit
        return True  # no candidate left in the buffer

    def _window_cut(self, s: int) -> tuple[int, int, str]:
        """Cut the text at ``s`` to at most max_chars: after the last clause mark past a
        third of the limit, else at the last space, else hard at the limit."""
        text, max_chars = self._text, self.policy.max_chars
        limit = s + max_chars
        clause_end = None
        # endpos limit + 1: a mark ending at the limit still needs its following whitespace.
        for m in _CLAUSE.finditer(text, s, limit + 1):
            if max_chars // 3 < m.end() - s <= max_chars:
                clause_end = m.end()
        if clause_end is not None:
            return clause_end, clause_end, CLAUSE
        w = limit
        while w > s and not text[w].isspace():
            w -= 1
        if w > s:
            e = w
            while text[e - 1].isspace():
                e -= 1
            return e, w, FORCED
        return limit, limit, FORCED  # one enormous token

    # -- sentence ends -------------------------------------------------------------------

    def _find_candidate(self, s: int, final: bool) -> _Cand:
        """The first candidate sentence end at or after ``s`` that is not decided 'no'.

        Returns it decided (boundary/end) or undecided; when the buffer holds none, 'end'
        (final) or a 'no' placeholder. Candidates decided 'no' are skipped for good.
        """
        text, n = self._text, len(self._text)
        pos = max(self._scan, s)
        while True:
            m = _EVENT.search(text, pos)
            if m is None:
                self._scan = n
                if final:
                    return _Cand(_END, _rstrip_end(text, s), n)
                return _Cand(_NO, n, n)
            i = m.start()
            cand = self._newline(i, final) if text[i] == "\n" else self._terminal(i, final)
            if cand.status != _NO:
                self._scan = i
                return cand
            pos = self._scan = cand.resume

    def _terminal(self, i: int, final: bool) -> _Cand:
        """Decide the terminal run starting at ``i``."""
        text, n = self._text, len(self._text)
        j = _RUN.match(text, i).end()
        if j == n:  # the run or its closers may still grow
            return _Cand(_END, j, n) if final else _Cand(_UNDECIDED, j, i)
        if not text[j].isspace():
            return _Cand(_NO, j, j)  # "3.14", "e.g.,", "example.com/x?y=1"
        m = _NONSPACE.search(text, j)
        k = m.start() if m else n
        if k == n:
            return _Cand(_END, j, n) if final else _Cand(_UNDECIDED, j, i)
        gap = text[j:k]
        if gap.count("\n") >= 2:
            return _Cand(_BOUNDARY, j, k)  # a blank line always ends a chunk
        if "\n" in gap:
            marker = _line_marker(text, k, final)
            if marker is None:
                return _Cand(_UNDECIDED, j, i)
            if marker:
                return _Cand(_BOUNDARY, j, k)
        verdict = self._ends_sentence(i, j, k, final)
        if verdict is None:
            return _Cand(_UNDECIDED, j, i)
        return _Cand(_BOUNDARY, j, k) if verdict else _Cand(_NO, k, k)

    def _newline(self, i: int, final: bool) -> _Cand:
        """Decide a newline not after a terminal run: only a blank line or a following list
        item / heading ends a chunk there."""
        text, n = self._text, len(self._text)
        p = i
        while text[p - 1].isspace():  # the chunk start is not space, so this stops after it
            p -= 1
        m = _NONSPACE.search(text, i)
        k = m.start() if m else n
        if k == n:
            return _Cand(_END, p, n) if final else _Cand(_UNDECIDED, p, p)
        if text.count("\n", p, k) >= 2:
            return _Cand(_BOUNDARY, p, k)
        marker = _line_marker(text, k, final)
        if marker is None:
            return _Cand(_UNDECIDED, p, p)
        return _Cand(_BOUNDARY, p, k) if marker else _Cand(_NO, k, k)

    def _ends_sentence(self, i: int, j: int, k: int, final: bool) -> bool | None:
        """Does the terminal run ``text[i:j]``, followed by whitespace and then ``text[k]``,
        end a sentence? None: the next word has not fully arrived yet."""
        text = self._text
        nxt = _next_word(text, k, final)
        if nxt is None:
            return None
        cls, word, complete = nxt
        run = text[i:j]
        if any(c in _STRONG_TERMINALS for c in run) or run.count(".") >= 2:
            return cls != "lower"  # ! ? ‽ and ellipses
        before = _token_before(text, i)
        if before is None:
            return cls != "lower"  # a long token (URL, ...) is no abbreviation
        a, token = before
        if not token:
            return False  # spaced dots: "Wait . . . what"
        word_before = token.lstrip(_OPENERS + _EMPHASIS).rstrip(_CLOSERS + _EMPHASIS)
        key = word_before.lower()
        if key in PREFIX_ABBREVIATIONS:
            return False
        if key in NUMBERED_ABBREVIATIONS and cls == "digit":
            return False
        if self._is_list_number(a, token):
            return False
        if key in TIME_ABBREVIATIONS:
            return cls == "upper"
        if key in CLOSING_ABBREVIATIONS or _is_initial(word_before) or _is_initialism(word_before):
            if cls != "upper":
                return False
            if not complete:
                return None
            return word.lower() in SENTENCE_STARTERS
        return cls != "lower"

    def _is_list_number(self, a: int, token: str) -> bool:
        """Is ``token`` (at ``a``, before a '.') a list number: up to three digits at the
        start of the text or a line, or after a sentence end or colon?"""
        if not (token.isdigit() and len(token) <= 3):
            return False
        text = self._text
        b, lo = a, max(0, a - _LOOKBACK)
        while b > lo and text[b - 1].isspace():
            b -= 1
        if b == 0:
            return self._base == 0
        return "\n" in text[b:a] or text[b - 1] in ":;.!?…"

    # -- first fragment ------------------------------------------------------------------

    def _reset_fragment(self) -> None:
        self._frag_pos: int | None = None  # next token to examine
        self._frag_words = 0  # complete words (tokens with a letter or digit) so far
        self._frag_last_end: int | None = None  # end of the last complete token
        self._frag_cut: tuple[int, str] | None = None  # the first-fragment cut, once found

    def _fragment_cut(self, s: int) -> tuple[int, str] | None:
        """The first-fragment cut (end, kind) among the complete tokens from ``s``: after the
        first clause mark with first_min_words words before it, or after the
        first_force_words-th word, whichever comes first. Incremental: each token is
        examined once, when whitespace after it shows it is complete."""
        if self._frag_cut is not None:
            return self._frag_cut
        text, n, policy = self._text, len(self._text), self.policy
        pos = s if self._frag_pos is None else max(self._frag_pos, s)
        for tok in _TOKEN.finditer(text, pos):
            a, b = tok.span()
            if b == n:
                break  # the last word may still be growing
            self._frag_pos = self._frag_last_end = b
            for mark in _CLAUSE.finditer(text, a, b + 1):
                words = self._frag_words + (1 if _ALNUM.search(text, a, mark.start()) else 0)
                if words >= policy.first_min_words:
                    self._frag_cut = (mark.end(), CLAUSE)
                    return self._frag_cut
            if _ALNUM.search(text, a, b):
                self._frag_words += 1
                if self._frag_words >= policy.first_force_words:
                    self._frag_cut = (b, FORCED)
                    return self._frag_cut
        return None

    # -- housekeeping ----------------------------------------------------------------------

    def _trim(self) -> None:
        """Drop long-chunked text, keeping enough before the unchunked part for look-backs."""
        if self._pos <= _TRIM_AT:
            return
        cut = self._pos - _KEEP
        self._text = self._text[cut:]
        self._base += cut
        self._pos -= cut
        self._scan -= cut
        self._reset_fragment()


def _check_now(now: object) -> float:
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise InputError(f"now must be a finite number of seconds, got {now!r}")
    return float(now)


def _rstrip_end(text: str, s: int) -> int:
    """End of ``text`` without trailing whitespace (``text[s]`` is not whitespace)."""
    e = len(text)
    while e > s and text[e - 1].isspace():
        e -= 1
    return e


def _line_marker(text: str, k: int, final: bool) -> bool | None:
    """Does the line at ``k`` start with a list marker or heading? None: can't tell yet."""
    if _LINE_MARKER.match(text, k):
        return True
    if not final and _LINE_MARKER_PREFIX.match(text, k):
        return None
    return False


def _next_word(text: str, k: int, final: bool) -> tuple[str, str, bool] | None:
    """Look at the token starting at ``k`` past any opening punctuation: returns (class of
    its first letter/digit: 'lower' | 'upper' | 'digit' | 'other', the word of letters
    there, whether that word is complete), or None while its first letter is still to come."""
    n = len(text)
    m = k
    while m < n and not text[m].isspace() and not text[m].isalnum():
        m += 1
    if m == n:
        return ("other", "", True) if final else None
    c = text[m]
    if c.isspace():
        return "other", "", True  # a token of symbols only ("—", "&")
    if c.islower():
        cls = "lower"
    elif c.isalpha():
        cls = "upper"  # upper case, or a script without case
    else:
        cls = "digit"
    e = m
    while e < n and text[e].isalpha():
        e += 1
    return cls, text[m:e], e < n or final


def _token_before(text: str, i: int) -> tuple[int, str] | None:
    """The whitespace-delimited token ending at ``i`` as (start, token); None when longer
    than the look-back (no abbreviation is that long)."""
    lo = max(0, i - _LOOKBACK)
    a = i
    while a > lo and not text[a - 1].isspace():
        a -= 1
    if a == lo and a > 0 and not text[a - 1].isspace():
        return None
    return a, text[a:i]


def _is_initial(word: str) -> bool:
    """A single capital letter: "J" in "J. R. R. Tolkien" (the caller has stripped only
    opening punctuation, so "98.6°F" is not one)."""
    return len(word) == 1 and word.isupper()


def _is_initialism(word: str) -> bool:
    """Dotted letters such as "U.S", "e.g", "Ph.D" (before their final dot)."""
    parts = word.split(".")
    return len(parts) >= 2 and all(p.isalpha() and len(p) <= 2 for p in parts)


def split_sentences(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[Span]:
    """Split whole ``text`` into sentence spans of at most ``max_chars`` characters each
    (no first-fragment rules; see the module docstring for the boundary rules)."""
    chunker = TextChunker(ChunkPolicy.sentences_only(max_chars))
    chunks = chunker.feed(text, 0.0) + chunker.flush()
    return [Span(c.text, c.start, c.end) for c in chunks]
