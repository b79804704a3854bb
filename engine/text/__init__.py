"""Text processing for FastPitch: a drop-in for NVIDIA's ``nvidia_textprocessing_utils``.

Typical use::

    from engine.text import get_text_processor

    tp = get_text_processor(cmudict_path="cmudict-0.7b_nv22.08", heteronyms_path="heteronyms-052722")
    ids = tp.encode_text("Say this smoothly, to prove you are not a robot.")
    batches = tp.prepare_input_sequence(["Hello world.", "Second text."], batch_size=2)
"""

from .cleaners import english_cleaners_v2
from .cmudict import CMUDict, load_heteronyms
from .processor import TextProcessor, get_text_processor
from .symbols import ARPABET_SYMBOLS, PAD_ID, SPACE_ID, SYMBOL_TO_ID, SYMBOLS, VALID_ARPABET, get_symbols
from .unidecoder import to_ascii, transliterate

__all__ = [
    "ARPABET_SYMBOLS",
    "CMUDict",
    "PAD_ID",
    "SPACE_ID",
    "SYMBOLS",
    "SYMBOL_TO_ID",
    "TextProcessor",
    "VALID_ARPABET",
    "english_cleaners_v2",
    "get_symbols",
    "get_text_processor",
    "load_heteronyms",
    "to_ascii",
    "transliterate",
]
