"""Hypothesis profiles for the parser fuzz tests.

``quick`` (the default, `make test`): a few dozen examples per parser. ``fuzz``
(`make fuzz`, ``LIVEFW_FUZZ=1``): thousands. Either way every example must finish
within the deadline (no hang) and allocate a bounded amount of memory.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "quick",
    max_examples=40,
    deadline=2000,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("LIVEFW_FUZZ_EXAMPLES", "4000")),
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,  # a failure prints its example; nothing is left in the tree
)
settings.load_profile("fuzz" if os.environ.get("LIVEFW_FUZZ") == "1" else "quick")
