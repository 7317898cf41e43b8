"""The GUI tests' fixtures; their helpers are in guikit.py (this folder is on sys.path)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from guikit import Processes  # noqa: E402


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Background processes of one test, stopped when it ends."""
    procs = Processes()
    yield procs
    procs.stop()
