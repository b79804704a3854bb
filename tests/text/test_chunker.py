"""Tests for engine/text/chunker.py: sentence boundaries, streaming equivalence, first-fragment
rules, max_chars cuts, offsets and input validation. The chunker is pure Python (no torch, no
numpy); a test below checks that in a fresh interpreter.
"""

from __future__ import annotations

import ast
import math
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.text import chunker as scheduler

_CHUNKER_PATH = Path(scheduler.__file__)

ChunkPolicy = scheduler.ChunkPolicy
TextChunk = scheduler.TextChunk
TextChunker = scheduler.TextChunker
split_sentences = scheduler.split_sentences

# First-fragment rules off: chunks end only at sentence ends and max_chars cuts.
NO_FIRST = ChunkPolicy(first_force_words=10**6, first_min_words=10**6,
                       first_max_wait_s=float("inf"))

# (id, whole text, exact chunk texts with the first-fragment rules off)
CORPUS: list[tuple[str, str, list[str]]] = [
    # -- basics
    ("plain", "Hello world. How are you? I am fine!",
     ["Hello world.", "How are you?", "I am fine!"]),
    ("surrounding-whitespace", "   Hello there.   \n  ", ["Hello there."]),
    ("no-punctuation", "just some words without any punctuation at all",
     ["just some words without any punctuation at all"]),
    ("lowercase-never-starts", "I bought it. iPhones are great.",
     ["I bought it. iPhones are great."]),
    # -- abbreviations
    ("titles", "Mr. Smith and Mrs. Jones met Dr. Brown and Prof. White. They talked.",
     ["Mr. Smith and Mrs. Jones met Dr. Brown and Prof. White.", "They talked."]),
    ("saint-junior", "St. Louis is nice. Martin Luther King Jr. was a leader.",
     ["St. Louis is nice.", "Martin Luther King Jr. was a leader."]),
    ("junior-ends-sentence", "I met Sammy Davis Jr. He sang.",
     ["I met Sammy Davis Jr.", "He sang."]),
    ("versus", "It was Lakers vs. Celtics. The Lakers won.",
     ["It was Lakers vs. Celtics.", "The Lakers won."]),
    ("etc-ends-sentence", "Bring apples, pears, etc. The store closes soon.",
     ["Bring apples, pears, etc.", "The store closes soon."]),
    ("etc-continues", "We need pens, paper, etc. and some glue.",
     ["We need pens, paper, etc. and some glue."]),
    ("eg-ie", "Some fruits, e.g. Apples and pears, are sweet. Others, i.e. lemons, are sour.",
     ["Some fruits, e.g. Apples and pears, are sweet.", "Others, i.e. lemons, are sour."]),
    ("us-army-vs-us-the", "The U.S. Army is large. She moved to the U.S. The weather was better.",
     ["The U.S. Army is large.", "She moved to the U.S.", "The weather was better."]),
    ("uk-end", "He lives in the U.K. It rains a lot there.",
     ["He lives in the U.K.", "It rains a lot there."]),
    ("us-hyphenated", "A U.S.-based firm grew. It hired staff.",
     ["A U.S.-based firm grew.", "It hired staff."]),
    ("inc-ltd", "Acme Inc. announced a merger with Foo Ltd. The deal closes in May.",
     ["Acme Inc. announced a merger with Foo Ltd.", "The deal closes in May."]),
    ("number-abbrev", "He wore No. 5 on his shirt. No. I did not see it.",
     ["He wore No. 5 on his shirt.", "No.", "I did not see it."]),
    ("fig-jan", "See Fig. 3 for details. The data is from Jan. 5, 2024.",
     ["See Fig. 3 for details.", "The data is from Jan. 5, 2024."]),
    ("jan-is-a-name", "I met Jan. She was kind.", ["I met Jan.", "She was kind."]),
    ("page", "See p. 12 for the proof. It is short.", ["See p. 12 for the proof.", "It is short."]),
    ("abbrev-in-brackets", "The author (Dr. Who) arrived. He was late.",
     ["The author (Dr. Who) arrived.", "He was late."]),
    ("phd", "She has a Ph.D. in physics. He has a Ph.D. He teaches.",
     ["She has a Ph.D. in physics.", "He has a Ph.D.", "He teaches."]),
    # -- initials
    ("initials", "J. R. R. Tolkien wrote The Hobbit. George W. Bush was president.",
     ["J. R. R. Tolkien wrote The Hobbit.", "George W. Bush was president."]),
    ("initials-no-spaces", "J.R.R. Tolkien was born in 1892. He died in 1973.",
     ["J.R.R. Tolkien was born in 1892.", "He died in 1973."]),
    ("initial-ends-sentence", "I got an A. Then I celebrated.",
     ["I got an A.", "Then I celebrated."]),
    ("unit-letter-is-no-initial", "It was 98.6°F. Next we checked again.",
     ["It was 98.6°F.", "Next we checked again."]),
    # -- numbers
    ("decimals", "Pi is about 3.14. The value of e is 2.718.",
     ["Pi is about 3.14.", "The value of e is 2.718."]),
    ("versions", "Upgrade to v1.0.2. Version 2.0 is coming.",
     ["Upgrade to v1.0.2.", "Version 2.0 is coming."]),
    ("money", "It costs $4.99. That is cheap. The total was 1,000.50 dollars.",
     ["It costs $4.99.", "That is cheap.", "The total was 1,000.50 dollars."]),
    ("number-ends-sentence", "We counted 42. Then we stopped.",
     ["We counted 42.", "Then we stopped."]),
    ("digit-starts-sentence", "I was born in May. 5 years later I moved.",
     ["I was born in May.", "5 years later I moved."]),
    ("chapter", "Chapter 1. The Beginning", ["Chapter 1.", "The Beginning"]),
    # -- times
    ("time-midsentence", "The meeting is at 10:30 a.m. tomorrow. Please be on time.",
     ["The meeting is at 10:30 a.m. tomorrow.", "Please be on time."]),
    ("am-ends-sentence", "We met at 10 a.m. Then we left.", ["We met at 10 a.m.", "Then we left."]),
    ("pm-before-capital", "The shop opens at 9 a.m. and closes at 5 p.m. Sharp as always.",
     ["The shop opens at 9 a.m. and closes at 5 p.m.", "Sharp as always."]),
    ("era-before-digit", "Vesuvius erupted in A.D. 79 and buried Pompeii.",
     ["Vesuvius erupted in A.D. 79 and buried Pompeii."]),
    # -- URLs and e-mail
    ("url-query", "Visit example.com/path?x=1 for more. It is free.",
     ["Visit example.com/path?x=1 for more.", "It is free."]),
    ("url-at-end", "Go to www.foo.org. Then click the link.",
     ["Go to www.foo.org.", "Then click the link."]),
    ("email-at-end", "Write to john.doe@mail.com. We reply fast.",
     ["Write to john.doe@mail.com.", "We reply fast."]),
    # -- ellipses and multiple marks
    ("ellipsis-lowercase", "Wait... what? That can't be right.",
     ["Wait... what?", "That can't be right."]),
    ("ellipsis-char-capital", "Well… I see. Thanks.", ["Well…", "I see.", "Thanks."]),
    ("spaced-dots", "And then . . . nothing happened.", ["And then . . . nothing happened."]),
    ("ellipsis-leading", "...and so it began. The end.", ["...and so it began.", "The end."]),
    ("multiple-marks", "Really?! You won?!! Amazing!!!", ["Really?!", "You won?!!", "Amazing!!!"]),
    ("interrobang", "You did what‽ Unbelievable.", ["You did what‽", "Unbelievable."]),
    # -- quotes and brackets
    ("quote-after-mark", 'He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("quote-then-lowercase", '"Are you sure?" she asked. "Yes!" he said.',
     ['"Are you sure?" she asked.', '"Yes!" he said.']),
    ("question-in-quote-midsentence", 'He asked "Why?" and left. Fine.',
     ['He asked "Why?" and left.', "Fine."]),
    ("curly-quotes", "She whispered, “Run.” They ran.", ["She whispered, “Run.”", "They ran."]),
    ("brackets", "He left early (as usual.) Nobody was surprised. [Citation needed.] The end.",
     ["He left early (as usual.)", "Nobody was surprised.", "[Citation needed.]", "The end."]),
    ("em-dash-inside", "He paused—then spoke. Silence.", ["He paused—then spoke.", "Silence."]),
    # -- newlines and lists
    ("paragraph-without-period",
     "First paragraph without a period\n\nSecond paragraph. It has two sentences.",
     ["First paragraph without a period", "Second paragraph.", "It has two sentences."]),
    ("hard-wrapped-line", "This sentence is wrapped\nacross two lines. Next one.",
     ["This sentence is wrapped\nacross two lines.", "Next one."]),
    ("blank-line-after-abbreviation", "Ask the Dr.\n\nShe knows.", ["Ask the Dr.", "She knows."]),
    ("crlf-paragraphs", "Line one.\r\n\r\nLine two", ["Line one.", "Line two"]),
    ("numbered-list", "1. First item\n2. Second item\n3. Third item",
     ["1. First item", "2. Second item", "3. Third item"]),
    ("numbered-list-with-periods", "Steps:\n1. Open the box.\n2. Remove the cover.\n3. Done.",
     ["Steps:", "1. Open the box.", "2. Remove the cover.", "3. Done."]),
    ("inline-numbered-list", "Steps: 1. Open it. 2. Close it.",
     ["Steps: 1. Open it.", "2. Close it."]),
    ("bullets", "Shopping list:\n- eggs\n- milk\n* bread",
     ["Shopping list:", "- eggs", "- milk", "* bread"]),
    ("markdown-heading", "Intro text\n# Heading\n\nBody.", ["Intro text", "# Heading", "Body."]),
    # -- empty
    ("empty", "", []),
    ("whitespace-only", "  \n\n  ", []),
]
CORPUS_IDS = [c[0] for c in CORPUS]
assert len(set(CORPUS_IDS)) == len(CORPUS_IDS) >= 40


# -- helpers ---------------------------------------------------------------------------------


def whole(text: str, policy: ChunkPolicy = NO_FIRST) -> list[TextChunk]:
    chunker = TextChunker(policy)
    return chunker.feed(text, 0.0) + chunker.flush()


def deltas(text: str, seed: int | None) -> list[str]:
    """Cut ``text`` into random pieces of 1..8 characters (1 each when seed is None)."""
    if seed is None:
        return list(text)
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, 8)
        out.append(text[i:i + n])
        i += n
    return out


def streamed(text: str, policy: ChunkPolicy = NO_FIRST, seed: int | None = 0,
             now: float = 0.0) -> list[TextChunk]:
    chunker = TextChunker(policy)
    out: list[TextChunk] = []
    for d in deltas(text, seed):
        out += chunker.feed(d, now)
    return out + chunker.flush()


def assert_covers(text: str, chunks: list[TextChunk]) -> None:
    """Offsets are exact, chunks are stripped and in order, and together they hold every
    non-space character of ``text`` exactly once."""
    prev = 0
    for c in chunks:
        assert text[c.start:c.end] == c.text
        assert c.text and c.text == c.text.strip()
        assert c.start >= prev
        assert not text[prev:c.start].strip(), f"lost text {text[prev:c.start]!r}"
        assert c.kind in ("sentence", "clause", "forced", "flush")
        prev = c.end
    assert not text[prev:].strip(), f"lost text {text[prev:]!r}"


def assert_first_fragment_consistent(full: list[TextChunk], sentences: list[TextChunk]) -> None:
    """Chunks with the first-fragment rules on = the sentence chunks, except that the first
    sentence may be cut once more (the first fragment, then the rest of that sentence)."""
    if not sentences:
        assert not full
        return
    first, s0 = full[0], sentences[0]
    assert first.start == s0.start and first.end <= s0.end
    if first.end == s0.end:
        assert first.text == s0.text
        assert full[1:] == sentences[1:]
    else:
        assert first.kind in ("clause", "forced")
        rest = full[1]
        assert (rest.end, rest.kind) == (s0.end, s0.kind)
        assert full[2:] == sentences[1:]


# -- the corpus ------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [c[1:] for c in CORPUS], ids=CORPUS_IDS)
def test_corpus_whole_text(text: str, expected: list[str]) -> None:
    chunks = whole(text)
    assert [c.text for c in chunks] == expected
    assert_covers(text, chunks)
    # All short: every chunk ends a sentence, but an unfinished last piece.
    for c in chunks[:-1]:
        assert (c.kind, c.pause_after_s) == ("sentence", 0.25)
    if chunks:
        ends = re.search(r"[.!?…‽][\"'”’)\]]*\Z", chunks[-1].text) is not None
        assert chunks[-1].kind == ("sentence" if ends else "flush")
        assert chunks[-1].pause_after_s == (0.25 if ends else 0.0)


@pytest.mark.parametrize("text,expected", [c[1:] for c in CORPUS], ids=CORPUS_IDS)
def test_corpus_split_sentences(text: str, expected: list[str]) -> None:
    spans = split_sentences(text)
    assert [s.text for s in spans] == expected
    assert all(text[s.start:s.end] == s.text for s in spans)


@pytest.mark.parametrize("seed", [None, 0, 1, 2, 3, 4])
@pytest.mark.parametrize("text", [c[1] for c in CORPUS], ids=CORPUS_IDS)
def test_corpus_streaming_equals_whole(text: str, seed: int | None) -> None:
    chunks = streamed(text, seed=seed)
    assert chunks == whole(text)
    assert_covers(text, chunks)


@pytest.mark.parametrize("seed", [None, 0, 1])
@pytest.mark.parametrize("text", [c[1] for c in CORPUS], ids=CORPUS_IDS)
def test_corpus_streaming_equals_whole_with_max_chars_cuts(text: str, seed: int | None) -> None:
    policy = ChunkPolicy.sentences_only(max_chars=20)
    chunks = streamed(text, policy, seed=seed)
    assert chunks == whole(text, policy)
    assert_covers(text, chunks)
    assert all(len(c.text) <= 20 for c in chunks)


@pytest.mark.parametrize("seed", [None, 0, 1])
@pytest.mark.parametrize("text", [c[1] for c in CORPUS], ids=CORPUS_IDS)
def test_corpus_default_policy_differs_only_in_first_fragment(text: str,
                                                               seed: int | None) -> None:
    sentences = whole(text)
    for chunks in (whole(text, ChunkPolicy(first_force_words=10)), streamed(text, ChunkPolicy(first_force_words=10), seed=seed)):
        assert_covers(text, chunks)
        assert_first_fragment_consistent(chunks, sentences)


def test_long_stream_keeps_offsets_after_dropping_old_text() -> None:
    """Long streams drop old text internally; offsets still refer to the full text and the
    chunks still match the whole-text ones."""
    text = " ".join(c[1] for c in CORPUS if c[1].strip()) * 15
    assert len(text) > 30_000
    chunks = streamed(text, seed=7)
    assert chunks == whole(text)
    assert_covers(text, chunks)


# Pieces of tricky text, glued at random by the fuzz test below.
_FUZZ_TOKENS = [
    "Hello", "world", "Dr.", "U.S.", "a.m.", "3.14", "v1.0.2.", "The", "the", "It", "Mr.", "No.",
    "5", "1.", "2)", "-", "—", "–", ",", ";", ":", "...", "…", "?!", "!", "?", ".", '"', "“", "”",
    "(", ")", "\n", "\n\n", " ", "  ", "\t", "J.", "etc.", "Inc.", "e.g.", "#", "*", "x" * 40,
    "example.com/a?b=1", "john@mail.com.", "98.6°F.", "Then", "iPhone", "'", "Jan.", "A.D.",
    "\r\n", "•", "b)", "12.", "1234.",
]


@pytest.mark.parametrize("seed", range(8))
def test_random_texts_streaming_equals_whole(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(60):
        parts = []
        for _ in range(rng.randint(0, 50)):
            parts += [rng.choice(_FUZZ_TOKENS), rng.choice([" ", " ", "", "\n"])]
        text = "".join(parts)
        for policy in (NO_FIRST, ChunkPolicy.sentences_only(max_chars=25)):
            expected = whole(text, policy)
            assert_covers(text, expected)
            assert all(len(c.text) <= policy.max_chars for c in expected)
            for delta_seed in (None, rng.randrange(10**6)):
                assert streamed(text, policy, seed=delta_seed) == expected, text
        chunks = streamed(text, ChunkPolicy(max_chars=25), seed=None)
        assert_covers(text, chunks)
        assert all(len(c.text) <= 25 for c in chunks)


# -- streaming details -----------------------------------------------------------------------


def test_sentence_end_waits_for_whitespace_and_next_character() -> None:
    c = TextChunker(NO_FIRST)
    assert c.feed("Pi is 3.", 0.0) == []
    assert c.feed("14. It", 0.0)[0].text == "Pi is 3.14."
    assert c.feed(" is Dr.", 0.0) == []
    assert c.feed(" ", 0.0) == []
    assert c.feed("Smith. ", 0.0) == []
    assert [x.text for x in c.feed("Bye", 0.0)] == ["It is Dr. Smith."]
    assert c.buffered == "Bye"
    assert [(x.text, x.kind) for x in c.flush()] == [("Bye", "flush")]
    assert c.buffered == ""


def test_sentence_starter_rule_waits_for_the_whole_next_word() -> None:
    c = TextChunker(NO_FIRST)
    assert c.feed("I moved to the U.S. Th", 0.0) == []
    assert c.feed("e", 0.0) == []  # "The" or "Theodore"?
    assert [x.text for x in c.feed(" weather", 0.0)] == ["I moved to the U.S."]


def test_flush_decides_pending_candidates() -> None:
    c = TextChunker(NO_FIRST)
    assert c.feed("We live in the U.S. The", 0.0) == []  # "The" may still grow
    assert [(x.text, x.kind) for x in c.flush()] == [("We live in the U.S.", "sentence"),
                                                     ("The", "flush")]
    c = TextChunker(NO_FIRST)
    assert c.feed("Pi is 3.", 0.0) == []  # "3." may become "3.14"
    assert [(x.text, x.kind) for x in c.flush()] == [("Pi is 3.", "sentence")]


def test_feeding_continues_after_flush_with_offsets_into_the_full_text() -> None:
    c = TextChunker(NO_FIRST)
    full = "One. Two"
    out = c.feed(full, 0.0) + c.flush()
    full += " three. Four."
    out += c.feed(" three. Four.", 0.0) + c.flush()
    assert [x.text for x in out] == ["One.", "Two", "three.", "Four."]
    assert_covers(full, out)


def test_empty_delta_and_poll_release_nothing_after_the_first_chunk() -> None:
    c = TextChunker(NO_FIRST)
    assert c.feed("Hello. Wor", 0.0)[0].text == "Hello."
    assert c.feed("", 1.0) == []
    assert c.poll(100.0) == []
    assert c.buffered == "Wor"


# -- first fragment --------------------------------------------------------------------------


def test_first_fragment_clause_needs_min_words() -> None:
    c = TextChunker(ChunkPolicy(first_force_words=10))
    assert c.feed("Hi, there my friend", 0.0) == []  # "Hi," has 1 word before it
    assert c.feed(",", 0.0) == []  # the mark needs whitespace after it
    out = c.feed(" how are you doing", 0.0)
    assert [(x.text, x.kind, x.pause_after_s) for x in out] == \
        [("Hi, there my friend,", "clause", 0.1)]
    assert c.emitted_any


@pytest.mark.parametrize("mark", [",", ";", ":", " —", "—", " –", " -"])
def test_first_fragment_clause_marks(mark: str) -> None:
    text = f"We walked to the park{mark} it was sunny and warm outside"
    chunks = whole(text, ChunkPolicy(first_force_words=100))
    assert chunks[0].text == f"We walked to the park{mark}".strip()
    assert chunks[0].kind == "clause"
    assert_covers(text, chunks)


def test_em_dash_between_words_is_a_clause_mark() -> None:
    text = "We walked to the park—it was sunny and warm outside"
    chunks = whole(text, ChunkPolicy(first_force_words=100))
    assert [c.text for c in chunks] == ["We walked to the park—", "it was sunny and warm outside"]


def test_numbers_and_times_are_not_clause_marks() -> None:
    text = "We paid 1,000 dollars at 10:30 sharp, then left the shop quickly"
    chunks = whole(text, ChunkPolicy(first_force_words=100))
    assert [c.text for c in chunks] == ["We paid 1,000 dollars at 10:30 sharp,",
                                        "then left the shop quickly"]


def test_first_fragment_forced_after_n_complete_words() -> None:
    c = TextChunker(ChunkPolicy(first_force_words=10))
    assert c.feed("one two three four five six seven eight nine ten", 0.0) == []
    out = c.feed(" ele", 0.0)  # "ten" is complete once whitespace follows it
    assert [(x.text, x.kind, x.pause_after_s) for x in out] == \
        [("one two three four five six seven eight nine ten", "forced", 0.0)]
    assert c.feed("ven twelve", 0.0) == []  # after the first chunk: only sentence ends
    assert [(x.text, x.kind) for x in c.flush()] == [("eleven twelve", "flush")]


def test_first_fragment_force_counts_words_not_symbols() -> None:
    policy = ChunkPolicy(first_force_words=3)
    chunks = whole("one — two & three four", policy)
    assert [c.text for c in chunks] == ["one — two & three", "four"]


def test_sentence_end_before_force_wins() -> None:
    chunks = whole("Hi there. This sentence has quite a lot of words in it, really.",
                   ChunkPolicy(first_force_words=10))
    assert [(c.text, c.kind) for c in chunks] == [
        ("Hi there.", "sentence"),
        ("This sentence has quite a lot of words in it, really.", "sentence")]


def test_whole_text_default_policy() -> None:
    text = ("Well, I think that, in general, this works. Right. One two three four five "
            "six seven eight nine ten eleven.")
    chunks = whole(text, ChunkPolicy(first_force_words=10))
    assert [(c.text, c.kind) for c in chunks] == [
        ("Well, I think that,", "clause"),
        ("in general, this works.", "sentence"),
        ("Right.", "sentence"),
        ("One two three four five six seven eight nine ten eleven.", "sentence")]
    assert_covers(text, chunks)


def test_first_fragment_max_wait_via_poll() -> None:
    c = TextChunker(ChunkPolicy(first_force_words=10))
    assert c.feed("Hello wor", 10.0) == []
    assert c.poll(10.29) == []
    out = c.poll(10.3)
    assert [(x.text, x.kind, x.start, x.end) for x in out] == [("Hello", "forced", 0, 5)]
    assert c.poll(20.0) == []  # only the first fragment is released on time
    assert c.feed("ld again, and more", 10.4) == []
    assert [x.text for x in c.feed(". Next", 10.5)] == ["world again, and more."]


def test_max_wait_needs_a_complete_word() -> None:
    c = TextChunker(ChunkPolicy(first_force_words=10))
    assert c.feed("Supercal", 0.0) == []
    assert c.poll(5.0) == []  # a partial word is never spoken early
    out = c.feed("ifragilistic is", 5.1)  # the wait is over: release on arrival
    assert [x.text for x in out] == ["Supercalifragilistic"]


def test_max_wait_counts_from_the_first_non_space_text() -> None:
    c = TextChunker(ChunkPolicy(first_force_words=10))
    assert c.feed("  \n", 0.0) == []
    assert c.feed("Hi the", 10.0) == []
    assert c.poll(10.2) == []
    assert [x.text for x in c.poll(10.3)] == ["Hi"]


def test_partial_words_never_emitted_early() -> None:
    c = TextChunker(ChunkPolicy(first_max_wait_s=0.0))
    assert c.feed("Hel", 0.0) == []
    assert c.feed("lo", 1.0) == []
    out = c.feed(" wor", 2.0)
    assert [x.text for x in out] == ["Hello"]
    assert c.buffered == " wor"


def test_llm_token_stream() -> None:
    c = TextChunker(ChunkPolicy(first_force_words=10))
    got = [c.feed(d, 0.0) for d in ["Hel", "lo wor", "ld. How", " are", " you?"]]
    assert got[:2] == [[], []]
    assert [x.text for x in got[2]] == ["Hello world."]
    assert got[3:] == [[], []]
    assert [x.text for x in c.flush()] == ["How are you?"]


def test_after_first_chunk_only_sentence_ends_release_text() -> None:
    text = ("So, as I was saying, the committee met on Tuesday, and after a long debate, "
            "which went on for hours, they agreed; nobody was happy: least of all me. Then "
            "we went home.")
    c = TextChunker(ChunkPolicy(first_force_words=10))
    out: list[tuple[int, TextChunk]] = []
    for i, ch in enumerate(text):
        out += [(i, x) for x in c.feed(ch, 0.0)]
    out += [(len(text), x) for x in c.flush()]
    chunks = [x for _, x in out]
    assert chunks[0].kind == "clause" and chunks[0].text == "So, as I was saying,"
    assert [(x.text, x.kind) for x in chunks[1:]] == [
        ("the committee met on Tuesday, and after a long debate, which went on for hours, "
         "they agreed; nobody was happy: least of all me.", "sentence"),
        ("Then we went home.", "sentence")]
    # The second chunk went out when the "T" after "me. " arrived, not before.
    assert out[1][0] == text.index("Then")
    assert_covers(text, chunks)


# -- max_chars -------------------------------------------------------------------------------


def test_max_chars_cuts_at_clause_marks_then_spaces() -> None:
    policy = ChunkPolicy.sentences_only(max_chars=40)
    text = ("The quick brown fox, which was very quick indeed, jumped over the lazy dog "
            "and ran away into the dark forest without looking back at all.")
    chunks = whole(text, policy)
    assert [(c.text, c.kind) for c in chunks] == [
        ("The quick brown fox,", "clause"),
        ("which was very quick indeed,", "clause"),
        ("jumped over the lazy dog and ran away", "forced"),
        ("into the dark forest without looking", "forced"),
        ("back at all.", "sentence")]
    assert [c.pause_after_s for c in chunks] == [0.1, 0.1, 0.0, 0.0, 0.25]
    assert_covers(text, chunks)


def test_max_chars_hard_cut_of_one_enormous_token() -> None:
    text = "x" * 70
    chunks = whole(text, ChunkPolicy.sentences_only(max_chars=30))
    assert [c.text for c in chunks] == ["x" * 30, "x" * 30, "x" * 10]
    assert [c.kind for c in chunks] == ["forced", "forced", "flush"]


def test_max_chars_applies_to_the_first_fragment_too() -> None:
    policy = ChunkPolicy(first_force_words=1000, first_max_wait_s=0.0, max_chars=20)
    c = TextChunker(policy)
    out = c.feed("aaaa bbbb cccc dddd eeee ffff gg", 0.0)
    assert [x.text for x in out] == ["aaaa bbbb cccc dddd"]


def test_sentence_exactly_max_chars_is_not_cut() -> None:
    sentence = "abcd " * 7 + "abcde."  # 41 characters
    text = sentence + " Next one."
    policy = ChunkPolicy.sentences_only(max_chars=len(sentence))
    assert [c.text for c in whole(text, policy)] == [sentence, "Next one."]
    assert [c.text for c in streamed(text, policy, seed=None)] == [sentence, "Next one."]


@pytest.mark.parametrize("delta", [None, 5, 10_000])
def test_ten_thousand_characters_without_punctuation_are_fast(delta: int | None) -> None:
    rng = random.Random(3)
    words = [rng.choice(["alpha", "be", "gamma", "delta", "epsilonic"]) for _ in range(3000)]
    text = " ".join(words)[:9_999] + "x"  # exactly 10,000 characters, ending in a word
    assert len(text) == 10_000
    start = time.perf_counter()
    chunker = TextChunker(ChunkPolicy(first_force_words=10))
    pieces = list(text) if delta is None else [text[i:i + delta]
                                               for i in range(0, len(text), delta)]
    chunks: list[TextChunk] = []
    for p in pieces:
        chunks += chunker.feed(p, 0.0)
    chunks += chunker.flush()
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"{elapsed:.3f} s"
    assert_covers(text, chunks)
    assert all(len(c.text) <= 300 for c in chunks)
    assert len(chunks) >= 10_000 // 300


# -- validation and purity -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, 5, 1.5, b"bytes", ["a"]])
def test_feed_rejects_non_strings(bad: object) -> None:
    with pytest.raises(ValueError):
        TextChunker().feed(bad, 0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("now", [float("nan"), float("inf"), "0", None, True])
def test_feed_and_poll_reject_bad_times(now: object) -> None:
    with pytest.raises(ValueError):
        TextChunker().feed("Hi", now)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TextChunker().poll(now)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [
    {"first_min_words": 0}, {"first_min_words": -1}, {"first_min_words": 2.5},
    {"first_min_words": True}, {"first_force_words": 0}, {"first_force_words": "10"},
    {"first_max_wait_s": -0.1}, {"first_max_wait_s": math.nan}, {"first_max_wait_s": "0.3"},
    {"max_chars": 19}, {"max_chars": 0}, {"max_chars": 300.0}, {"max_chars": None},
    {"pause_sentence_s": -1.0}, {"pause_sentence_s": math.inf}, {"pause_sentence_s": math.nan},
    {"pause_clause_s": None}, {"pause_clause_s": -0.01},
])
def test_invalid_policy(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ChunkPolicy(**kwargs)


def test_valid_policy_edges() -> None:
    ChunkPolicy(first_min_words=1, first_force_words=1, first_max_wait_s=0.0, max_chars=20,
                pause_sentence_s=0.0, pause_clause_s=0)
    ChunkPolicy(first_max_wait_s=math.inf)
    assert ChunkPolicy.sentences_only(50).max_chars == 50


def test_chunker_rejects_non_policy() -> None:
    with pytest.raises(ValueError):
        TextChunker({"max_chars": 100})  # type: ignore[arg-type]


def test_split_sentences_rejects_tiny_max_chars() -> None:
    with pytest.raises(ValueError):
        split_sentences("Hello there.", max_chars=10)


def test_split_sentences_cuts_long_sentences() -> None:
    text = "word " * 100 + "end."
    spans = split_sentences(text, max_chars=50)
    assert all(len(s.text) <= 50 for s in spans)
    assert " ".join(s.text for s in spans) == text.strip()


def test_chunker_is_pure_python() -> None:
    """The chunker's own imports are the standard library and the project's errors; importing
    it (and the rest of the torch-free runtime) with torch made unimportable works."""
    tree = ast.parse(_CHUNKER_PATH.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    assert not imported & {"torch", "numpy"}, imported
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "import engine.text.chunker, engine.runtime.scheduler\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
