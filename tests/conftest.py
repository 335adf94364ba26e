"""Fixtures shared by the unit tests."""

import pytest


@pytest.fixture(scope="session")
def corpus():
    """The real Enron-Spam corpus (from $GROKFL_DATA or data/, as a learner's notebook gets it)."""
    from grokfl_helpers.data import load_enron

    return load_enron(verbose=False)
