"""What livefwd knows about the sessions it brokers: names, records, the registry.

Kernel session names are ``livefw.<uid>.<name>`` so two users cannot collide. The
broker's registry (names, owners, tokens, labels) is what survives a daemon restart
(``registry.json`` in the plugin's state dir) and a kexec (a sealed memfd preserved
in a reserved session, ``livefw.registry.a``/``.b``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from livefw.errors import InvalidArgument
from livefw.kernel.uapi import liveupdate as uapi
from livefw.model import Field, Model
from livefw.plugin import clean_text
from livefw.record import FACTORY, Frozen

__all__ = [
    "FDSTORE_PREFIX",
    "FILES_MAX",
    "INTERFACE",
    "LABEL_MAX",
    "NAME_MAX",
    "PROTOCOL",
    "REGISTRY_FILE",
    "REGISTRY_SESSIONS",
    "REGISTRY_TOKEN",
    "SESSIONS_MAX",
    "SESSIONS_PER_USER",
    "SESSIONS_RESERVED_FOR_ROOT",
    "Registry",
    "SessionInfo",
    "SessionRecord",
    "State",
    "info_of",
    "kernel_session_name",
    "parse_options",
]

PROTOCOL = "org.livefw.liveupdate"
#: the D-Bus interface the device carries (implemented in livefw.bus.ext_liveupdate).
INTERFACE = "org.livefw.Daemon1.LiveUpdate"
#: kernel session names livefwd creates for clients: ``livefw.<uid>.<name>``.
KERNEL_PREFIX = "livefw."
#: livefwd's own registry sessions (no uid, so no client name can collide).
REGISTRY_SESSIONS = ("livefw.registry.a", "livefw.registry.b")
#: the registry's copy in the plugin's state dir (restarts without a kexec).
REGISTRY_FILE = "registry.json"
REGISTRY_TOKEN = 1
#: fd store names: ``luo.<kernel session name>``.
FDSTORE_PREFIX = "luo."
#: longest uid in decimal (4294967295).
_UID_DIGITS = 10
#: longest client session name: 63 - len("livefw.") - 10 - len(".") = 45.
NAME_MAX = uapi.SESSION_NAME_MAX - len(KERNEL_PREFIX) - _UID_DIGITS - 1
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
LABEL_MAX = 256
#: livefwd's own limits, the kernel's up to 7.1 (luo_session.c LUO_SESSION_MAX with
#: 4 KiB pages, luo_file.c LUO_FILE_MAX). 7.2 dropped both; livefwd keeps them so the
#: descriptors it holds stay within the unit's LimitNOFILE and the registry it
#: rewrites after every change stays small, whatever a client asks for.
SESSIONS_MAX = 744
FILES_MAX = 128
#: default of ``[plugins.liveupdate] sessions_per_user``: the sessions one non-root uid
#: may hold in livefwd (any state), so that no single user takes all SESSIONS_MAX.
SESSIONS_PER_USER = 256
#: default of ``[plugins.liveupdate] sessions_reserved_for_root``: of SESSIONS_MAX, the
#: sessions users other than root may never take, together. The per-user limit bounds
#: one uid, not several (three at 256 fill 744); a third is kept for root (libvirt's
#: system QEMU, the VMM manager), so non-root users together hold at most 496.
SESSIONS_RESERVED_FOR_ROOT = 248

State = Literal["outgoing", "incoming", "retrieved"]


def kernel_session_name(owner: int, name: str) -> str:
    """The kernel name of a client session (validates ``name``).

    Raises:
        InvalidArgument: empty, too long, or characters outside ``[A-Za-z0-9._-]``.
    """
    if not name:
        raise InvalidArgument("a session name must not be empty")
    if len(name) > NAME_MAX:
        raise InvalidArgument(
            f"session name {name[:20]!r}... is {len(name)} characters; at most {NAME_MAX} fit "
            "in the kernel's 63-character limit next to the owner's uid"
        )
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"session name {name!r} may use only letters, digits, '.', '_' and '-', "
            "and must start with a letter or digit"
        )
    if not 0 <= owner <= 0xFFFFFFFF:
        raise InvalidArgument(f"invalid owner uid {owner}")
    return f"{KERNEL_PREFIX}{owner}.{name}"


class SessionRecord(Model, extra="forbid"):
    """One brokered session in the registry."""

    name: str
    owner: int
    kernel_name: str
    state: State
    label: str = ""
    #: token (decimal string, JSON keys are strings) -> label
    tokens: dict[str, str] = Field(default_factory=dict)
    #: tokens handed back through livefwd after the kexec (Retrieve)
    retrieved: list[str] = Field(default_factory=list)
    #: tokens that are VFIO device files (the kernel's rules for them differ)
    vfio: list[str] = Field(default_factory=list)

    def waiting(self) -> list[int]:
        """Tokens preserved through livefwd and never handed back, ascending."""
        return sorted(int(token) for token in self.tokens if token not in self.retrieved)


class Registry(Model, extra="forbid"):
    """What survives a restart (registry.json) and a kexec (the registry memfd)."""

    generation: int = 0
    boot_id: str = ""
    sessions: list[SessionRecord] = Field(default_factory=list)


class SessionInfo(Frozen):
    """A session as the bus layer and the CLI see it."""

    _FIELDS = ("name", "kernel_name", "owner", "state", "label", "tokens")
    name: str
    kernel_name: str
    owner: int
    state: str
    label: str
    tokens: dict[int, str]

    def __init__(
        self,
        name: str,
        kernel_name: str,
        owner: int,
        state: str,
        label: str,
        tokens: dict[int, str] = FACTORY,
    ) -> None:
        _set = object.__setattr__
        _set(self, "name", name)
        _set(self, "kernel_name", kernel_name)
        _set(self, "owner", owner)
        _set(self, "state", state)
        _set(self, "label", label)
        _set(self, "tokens", dict() if tokens is FACTORY else tokens)


def info_of(record: SessionRecord) -> SessionInfo:
    """The public view of a record (labels sanitised, also those of older registries)."""
    return SessionInfo(
        name=record.name,
        kernel_name=record.kernel_name,
        owner=record.owner,
        state=record.state,
        label=clean_text(record.label, LABEL_MAX),
        tokens={int(token): clean_text(label, LABEL_MAX) for token, label in record.tokens.items()},
    )


def parse_options(options: dict[str, Any] | None, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Check a call's options; a ``label`` is bounded and stored sanitised.

    Raises:
        InvalidArgument: an unknown option, or a label that is not a short string.
    """
    options = options or {}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidArgument(f"unknown options {unknown}; this call accepts {list(allowed)}")
    if "label" in options:
        label = options["label"]
        if not isinstance(label, str) or len(label) > LABEL_MAX or "\x00" in label:
            raise InvalidArgument(f"label must be a string of at most {LABEL_MAX} characters")
        # another user's text that root lists: stored and published sanitised
        return {**options, "label": clean_text(label, LABEL_MAX)}
    return options
