"""Fixtures of the server tests (websocket, Wyoming, OpenAI API): the served tiny-voice engine
under the name the tests use, and its reference audio for the short sentence."""

import pytest

SHORT = "Hello there, my friend. How are you today?"


@pytest.fixture(scope="module")
def engine(served_engine):
    return served_engine


@pytest.fixture(scope="module")
def short_ref(engine):
    """engine.synthesize(SHORT): what every front must deliver for SHORT."""
    return engine.synthesize(SHORT)
