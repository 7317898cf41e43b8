"""Helpers of the robustness tests (fault matrix, load, access) live next to them."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from livefw.testing import NOBODY

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


@pytest.fixture
def nobody() -> int:
    """The uid a hostile client runs as (setpriv): skips unless root with setpriv."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as nobody (setpriv)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    return NOBODY
