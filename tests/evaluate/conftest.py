"""Fixtures of the eval tests (helpers in tiny_runs.py)."""

import pytest
from tiny_runs import make_tiny_eval


@pytest.fixture(scope="session")
def tiny_eval(tmp_path_factory) -> dict:
    """{"run": an unconditional tiny run, "classifier": a 20-step digits classifier, "root"}."""
    return make_tiny_eval(tmp_path_factory.mktemp("tiny-eval"))
