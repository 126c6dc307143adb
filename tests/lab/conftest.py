"""Fixtures for tests that run against a converged lab (`bin/lab up`).

These tests exercise the lab the way an operator does: over SSH through the bastion, with the
lab inventory. They fail, rather than skip, when no lab is running: `bin/test` brings one up
before it runs them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labview import REPO, Lab, ansible_env, load_lab  # noqa: E402,F401  (re-exported for the tests)


@pytest.fixture(scope="session")
def lab() -> Lab:
    try:
        return load_lab()
    except RuntimeError as err:
        pytest.fail(str(err))
