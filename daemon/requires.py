"""A release's ``<requires>``: evaluated against the device and the daemon, bounded.

fwupd's ``fu_engine_check_requirements``: ``<id>`` requirements against the versions
of the components the daemon knows, ``<firmware>`` against the device's version;
``regex``/``glob`` comparisons run under RE2 (linear time, bounded program) within a
CPU budget, since a cabinet's patterns come from anyone who can hand the daemon a
file; what livefw cannot evaluate is refused rather than ignored.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

from livefw.cabinet import Release
from livefw.errors import InvalidFile, NotFound, NotSupported
from livefw.lazy import lazy_module
from livefw.vercmp import compare_versions

__all__ = ["PATTERN_MAX", "PATTERN_MEMORY", "REQUIREMENTS_CPU_BUDGET", "check_requirements"]

# imported on first use: off livefwd's start path (tests/integration/test_import_budget.py)
re2: Any = lazy_module("re2")


#: longest ``regex``/``glob`` pattern and longest text a requirement compares (a real
#: one is a version pattern of a few dozen characters).
PATTERN_MAX = 256
#: memory RE2 may use for one compiled pattern: a bigger program is refused ("pattern
#: too large"), which keeps one compile to a few milliseconds.
PATTERN_MEMORY = 64 * 1024
#: CPU time all ``<requires>`` patterns of one check may take (compiles included).
REQUIREMENTS_CPU_BUDGET = 0.05


def _re2_options() -> Any:
    options = re2.Options()
    options.max_mem = PATTERN_MEMORY
    options.log_errors = False  # RE2 would write the hostile pattern to stderr
    return options


@functools.lru_cache(maxsize=64)
def _pattern(compare: str, want: str) -> Any:
    """A compiled ``regex`` or ``glob`` requirement (at most 64 kept, 64 KiB each).

    Requirement patterns come from cabinets, that is from anyone who can hand the
    daemon a file. Python's ``re`` backtracks: ``^(.*)(.*)...(.*)X`` against a version
    string runs for hours, in the event loop, and the daemon answers nothing. RE2
    matches in time linear in the text, with a bounded program; what it lacks
    (backreferences, lookaround) is refused. ``glob`` is fwupd's
    ``g_pattern_match_simple``: ``*`` and ``?`` only, over the whole text.
    """
    if len(want) > PATTERN_MAX:
        raise InvalidFile(
            f"a <requires> {compare} pattern is {len(want)} characters long; at most "
            f"{PATTERN_MAX} are accepted"
        )
    if compare == "glob":
        pattern = "".join(".*" if c == "*" else "." if c == "?" else re2.escape(c) for c in want)
        pattern = f"\\A(?:{pattern})\\z"
    else:
        pattern = want
    try:
        return re2.compile(pattern, _re2_options())
    except re2.error as error:
        reason = error.args[0] if error.args else error
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise InvalidFile(
            f"the <requires> {compare} pattern {want[:64]!r} cannot be used: {reason} "
            "(livefw matches requirement patterns with RE2, in linear time: no "
            "backreferences or lookaround, bounded size)"
        ) from error


def _compare_ok(compare: str, have: str, want: str, version_format: str) -> bool:
    if compare in ("glob", "regex"):
        if len(have) > PATTERN_MAX:
            raise InvalidFile(
                f"a <requires> {compare} would compare a text of {len(have)} characters; "
                f"at most {PATTERN_MAX} are accepted"
            )
        return _pattern(compare, want).search(have) is not None
    result = compare_versions(have, want, version_format)
    table = {
        "eq": result == 0,
        "ne": result != 0,
        "lt": result < 0,
        "le": result <= 0,
        "gt": result > 0,
        "ge": result >= 0,
    }
    if compare not in table:
        raise InvalidFile(f"unknown requirement comparison {compare!r}")
    return table[compare]


def check_requirements(
    release: Release,
    device_version: str,
    version_format: str,
    runtimes: Mapping[str, str],
) -> None:
    """Evaluate ``<requires>`` against a device and the daemon.

    Args:
        release: the release to check.
        device_version: the device's current version.
        version_format: the format both versions use.
        runtimes: component ids the daemon knows with their versions
            (``org.freedesktop.fwupd``, ``org.livefw.daemon`` ...).

    Raises:
        InvalidFile: a requirement is not met; a pattern RE2 cannot compile (or too
            long); evaluating them took more than REQUIREMENTS_CPU_BUDGET.
        NotFound: a runtime id the daemon does not know.
        NotSupported: a requirement livefw cannot evaluate (HWIDs, bootloader,
            parent/child devices, client features): refused rather than ignored.
    """
    started = time.thread_time()
    for req in release.requirements:
        if time.thread_time() - started > REQUIREMENTS_CPU_BUDGET:
            raise InvalidFile(
                f"evaluating the <requires> of {release.appstream_id} took more than "
                f"{REQUIREMENTS_CPU_BUDGET * 1000:.0f} ms of CPU: the cabinet is refused"
            )
        if req.kind == "id":
            have = runtimes.get(req.text)
            if have is None:
                raise NotFound(f"the firmware requires {req.text}, which livefw does not know")
            if req.compare and not _compare_ok(req.compare, have, req.version, ""):
                raise InvalidFile(
                    f"not compatible with {req.text} version {have}, requires "
                    f"{req.compare} {req.version}"
                )
        elif req.kind == "firmware" and not req.text and not req.depth:
            if req.compare and not _compare_ok(
                req.compare, device_version, req.version, version_format
            ):
                raise InvalidFile(
                    f"not compatible with firmware version {device_version}, requires "
                    f"{req.compare} {req.version}"
                )
        else:
            what = f"<{req.kind}>{req.text}</{req.kind}>" if req.text else f"<{req.kind}/>"
            raise NotSupported(
                f"the firmware requires {what}, which livefw cannot check; refusing rather "
                "than installing it unchecked"
            )
