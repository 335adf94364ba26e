"""Fixtures shared by the unit tests. (The rules for every test run, the `slow` marker and nbval's
dead-kernel check, are in the repository's root conftest.py, so they also apply to
`pytest notebooks/NN_x.ipynb` run alone.)"""

import pytest

NO_ARCHIVES = (
    "the six Enron-Spam archives are not here: set GROKFL_DATA to a folder that holds enron1.tar.gz "
    "... enron6.tar.gz (or put them in data/) to run the tests on the real corpus"
)


@pytest.fixture(scope="session")
def corpus():
    """The real Enron-Spam corpus (from $GROKFL_DATA or data/, as a learner's notebook gets it).
    Where the archives are not here the test is skipped, as tests/test_data.py does: a test run
    never downloads."""
    from grokfl_helpers import data

    if data.find_archives() is None:
        pytest.skip(NO_ARCHIVES)
    return data.load_enron(verbose=False)
