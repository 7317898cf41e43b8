"""``/etc/livefw/livefw.conf``: TOML, validated by livefw.model.

A bad value is reported as one line naming the key, e.g.
``livefw.conf: daemon.shutdown_timeout: Input should be a valid number``.

Drop-ins: ``livefw.conf.d/*.conf`` beside the file are read after it, in name order;
a key in a later file replaces the value before it, tables merge. livefwd writes one
of them itself, ``fwupd.conf`` (fwupd's ModifyConfig, :func:`write_dropin`), so the
administrator's file, its comments and its unknown-to-fwupd keys are never rewritten.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

from livefw.errors import ConfigError
from livefw.model import Field, Model, ValidationError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Config",
    "dropin_dir",
    "load_config",
    "remove_dropin",
    "write_dropin",
]

DEFAULT_CONFIG_PATH = "/etc/livefw/livefw.conf"
#: drop-in files read at most (a directory of thousands is a mistake, not a config).
DROPINS_MAX = 64
#: the biggest drop-in read back.
DROPIN_SIZE_MAX = 1 << 20


class _Section(Model, extra="forbid", frozen=True):
    """A table of livefw.conf: unknown keys are errors, values never change."""


class DaemonSection(_Section, frozen=True):
    """``[daemon]``."""

    #: seconds SIGTERM waits for an irreversible step in flight before exiting anyway.
    shutdown_timeout: float = Field(default=120.0, ge=0)
    #: log level: debug, info, warning, error.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: also own org.freedesktop.fwupd (the fwupd-compatible API).
    fwupd_compat: bool = False
    #: DaemonVersion on the fwupd-compatible API; "" = the installed libfwupd's
    #: version (fwupdmgr refuses a daemon whose version differs from its own).
    fwupd_version: str = ""


class AuthSection(_Section, frozen=True):
    """``[auth]``."""

    #: ``auto``: polkit when it is on the bus, else the fallback; ``required``: refuse
    #: privileged calls without polkit; ``off``: the fallback only.
    polkit: Literal["auto", "required", "off"] = "auto"
    #: uids allowed privileged methods when polkit is not used.
    fallback_uids: tuple[int, ...] = (0,)


class InstallSection(_Section, frozen=True):
    """``[install]``."""

    #: largest payload accepted, in bytes (the PFRU buffer size is not exposed).
    max_payload_size: int = Field(default=256 * 1024 * 1024, gt=0)
    #: seconds a payload read may go without progress before it is given up (a
    #: file system that stopped answering; livefw.fdread).
    payload_read_timeout: float = Field(default=30.0, gt=0)
    #: refuse cabinets whose payload and metainfo are not signed by a key in
    #: ``pki_dir`` and that do not come from a remote marked Trusted.
    only_trusted: bool = True
    #: certificates (PEM, *.pem/*.crt) that cabinet signatures (.jcat PKCS#7) must chain to.
    pki_dir: str = "/etc/livefw/pki"
    #: local remotes: one INI file per folder of .cab files (see livefw.remotes).
    remotes_dir: str = "/etc/livefw/remotes.d"


class PluginsSection(Model, extra="allow", frozen=True):
    """``[plugins]``: ``disabled`` plus one table per plugin (``[plugins.lfa]``)."""

    disabled: tuple[str, ...] = ()

    def for_plugin(self, name: str) -> dict[str, Any]:
        """The plugin's own table, or an empty one."""
        extra = self.model_extra or {}
        value = extra.get(name, {})
        return dict(value) if isinstance(value, dict) else {}


class Config(_Section, frozen=True):
    """The whole configuration."""

    daemon: DaemonSection = DaemonSection()
    auth: AuthSection = AuthSection()
    install: InstallSection = InstallSection()
    plugins: PluginsSection = PluginsSection()


def dropin_dir(path: str | None) -> str:
    """``livefw.conf.d`` beside the configuration file ``path`` (None: the default)."""
    return (path or DEFAULT_CONFIG_PATH) + ".d"


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` over it: tables merge, any other value replaces."""
    result = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result


def _read_dropins(
    directory: str, override: Mapping[str, Mapping[str, Any] | None]
) -> list[tuple[str, Mapping[str, Any]]]:
    """The drop-ins in name order; ``override``: contents to use instead (None: absent)."""
    try:
        names = {n for n in os.listdir(directory) if n.endswith(".conf") and not n.startswith(".")}
    except FileNotFoundError:
        names = set()
    except OSError as error:
        raise ConfigError(f"{directory}: cannot read: {error.strerror}") from error
    names |= set(override)
    if len(names) > DROPINS_MAX:
        raise ConfigError(f"{directory}: more than {DROPINS_MAX} drop-in files")
    result = []
    for name in sorted(names):
        if name in override:
            table = override[name]
            if table is not None:
                result.append((name, table))
            continue
        try:
            with open(os.path.join(directory, name), "rb") as handle:
                data = handle.read(DROPIN_SIZE_MAX + 1)
        except OSError as error:
            raise ConfigError(f"{directory}/{name}: cannot read: {error.strerror}") from error
        if len(data) > DROPIN_SIZE_MAX:
            raise ConfigError(f"{name}: larger than {DROPIN_SIZE_MAX >> 20} MiB")
        try:
            result.append((name, tomllib.loads(data.decode("utf-8"))))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ConfigError(f"{name}: TOML syntax error: {error}") from error
    return result


def load_config(
    path: str | None,
    *,
    required: bool = False,
    dropins: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> Config:
    """Read and validate the configuration and its drop-ins.

    Args:
        path: the file; ``None`` means the default path.
        required: a missing file is an error (``--config`` given explicitly).
        dropins: drop-in name -> contents to validate instead of the file's (None:
            as if absent): a change is checked before it is written.

    Raises:
        ConfigError: unreadable file, TOML syntax error or invalid value, with a
            one-line message naming the file and the key.
    """
    path = path or DEFAULT_CONFIG_PATH
    name = path.rsplit("/", 1)[-1]
    raw: dict[str, Any] = {}
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{name}: TOML syntax error: {error}") from error
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from error
    read = _read_dropins(dropin_dir(path), dropins or {})
    for _dropin, table in read:
        raw = _merge(raw, table)
    if read:
        name += " with " + ", ".join(f"{name}.d/{dropin}" for dropin, _ in read)
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        raise ConfigError(f"{name}: {key}: {message}") from error


# ------------------------------------------------------------------- the writer

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    # JSON's string escapes (\", \\, \n, \uXXXX) are TOML basic-string escapes
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_table(prefix: str, table: Mapping[str, Any], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    if scalars or not prefix:
        if prefix:
            lines.append(f"\n[{prefix}]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in sorted(scalars.items()))
    for key, value in sorted(table.items()):
        if isinstance(value, Mapping):
            name = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
            _toml_table(name, value, lines)


def dump_toml(table: Mapping[str, Any], header: str = "") -> str:
    """``table`` (tables of booleans, numbers, strings and lists) as TOML text."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    _toml_table("", table, lines)
    return "\n".join(lines).strip("\n") + "\n"


def write_dropin(path: str | None, name: str, table: Mapping[str, Any], header: str = "") -> None:
    """Replace drop-in ``name`` of configuration ``path``, atomically, never via a link.

    The directory is made (0755) when missing; a symlinked directory is refused.

    Raises:
        OSError: the write failed; the previous drop-in is unchanged.
        ConfigError: the drop-in directory is a symbolic link.
    """
    from livefw.statefiles import write_atomic

    directory = dropin_dir(path)
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o755)
    _refuse_link(directory)
    write_atomic(os.path.join(directory, name), dump_toml(table, header).encode(), mode=0o644)


def _refuse_link(directory: str) -> None:
    if os.path.islink(directory):
        raise ConfigError(f"{directory} is a symbolic link; remove it")


def remove_dropin(path: str | None, name: str) -> bool:
    """Delete drop-in ``name`` (never through a symlinked directory); whether it was there.

    Raises:
        ConfigError: the drop-in directory is a symbolic link.
        OSError: it could not be removed.
    """
    directory = dropin_dir(path)
    _refuse_link(directory)
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):  # replaced by a link meanwhile
            raise ConfigError(f"{directory} is a symbolic link; remove it") from None
        raise
    try:
        os.unlink(name, dir_fd=dir_fd)
        os.fsync(dir_fd)
    except FileNotFoundError:
        return False
    finally:
        os.close(dir_fd)
    return True
