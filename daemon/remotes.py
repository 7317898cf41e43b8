"""Local remotes: folders of .cab files that feed GetReleases/GetUpgrades.

This is the air-gapped and fleet path: operators drop cabinets into a folder with
their own tooling (rsync, Ansible, a package), and livefw offers them as releases.
Each remote is one INI file in the remotes directory (``/etc/livefw/remotes.d/``
by default, ``[install] remotes_dir`` in livefw.conf)::

    # /etc/livefw/remotes.d/vendor.conf
    [livefw Remote]
    Enabled=true
    Title=Vendor firmware
    Path=/var/lib/livefw/firmware
    Trusted=false

``Path`` may also be given as fwupd's ``MetadataURI=file:///folder``, and the section
may be called ``[fwupd Remote]``, so fwupd's ``directory`` remote files work as they
are. ``Trusted=true`` makes every cabinet of the folder count as signed (as fwupd
does for local and directory remotes); leave it off when other people can write the
folder. The remote id is the file name without ``.conf``.
"""

from __future__ import annotations

import configparser
import glob
import os
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import structlog

from livefw.cabinet import Cabinet, Limits, read_cabinet
from livefw.errors import LivefwError

__all__ = ["Remote", "RemoteFile", "RemoteStore", "load_remotes"]

log = structlog.get_logger("livefw.remotes")

_SECTIONS = ("livefw Remote", "fwupd Remote")
#: cabinets scanned per remote at most (a folder is not a mirror of the LVFS).
MAX_CABINETS = 1024


@dataclass(frozen=True)
class Remote:
    """One configured remote."""

    id: str
    title: str
    path: str
    enabled: bool
    trusted: bool
    priority: int
    config_path: str
    mtime: int = 0


@dataclass(frozen=True)
class RemoteFile:
    """A cabinet found in a remote, parsed (or why it could not be)."""

    remote: Remote
    path: str
    cabinet: Cabinet | None
    error: str = ""


def _bool(value: str, where: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"{where}: {value!r} is not true or false")


def _parse_remote(path: str) -> Remote:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    with open(path, encoding="utf-8") as handle:
        parser.read_file(handle)
    section = next((s for s in _SECTIONS if parser.has_section(s)), None)
    if section is None:
        raise ValueError(f"no [{_SECTIONS[0]}] section")
    values = parser[section]
    folder = values.get("Path", "").strip()
    uri = values.get("MetadataURI", "").strip()
    if not folder and uri:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ValueError(
                f"MetadataURI {uri!r} is not a file:// folder (download remotes are not "
                "supported; use a folder of cabinets)"
            )
        folder = unquote(parsed.path)
    if not folder:
        raise ValueError("no Path (the folder of .cab files)")
    if not os.path.isabs(folder):
        raise ValueError(f"Path {folder!r} is not absolute")
    remote_id = os.path.basename(path).removesuffix(".conf")
    try:
        priority = int(values.get("Priority", "0"))
    except ValueError as error:
        raise ValueError(f"Priority {values.get('Priority')!r} is not a number") from error
    return Remote(
        id=remote_id,
        title=values.get("Title", remote_id).strip() or remote_id,
        path=folder.rstrip("/") or "/",
        enabled=_bool(values.get("Enabled", "true"), "Enabled"),
        trusted=_bool(values.get("Trusted", "false"), "Trusted"),
        priority=priority,
        config_path=path,
    )


def load_remotes(remotes_dir: str) -> tuple[list[Remote], dict[str, str]]:
    """Every ``*.conf`` of ``remotes_dir``: the remotes, and the files that failed."""
    remotes: list[Remote] = []
    errors: dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(remotes_dir), "*.conf"))):
        try:
            remotes.append(_parse_remote(path))
        except (OSError, ValueError, configparser.Error) as error:
            errors[path] = str(error)
            log.warning("remote_config_invalid", path=path, error=str(error))
    return remotes, errors


class RemoteStore:
    """Scans the remotes' folders, caching parsed cabinets by path and stat.

    A cabinet is parsed again when its inode, size, mtime or ctime differ: a file
    renamed into place (rsync, ``install``) is a new inode even when it keeps the
    size and, with ``rsync -t``, the mtime of the one it replaces.
    """

    def __init__(self, remotes_dir: str, limits: Limits) -> None:
        self.remotes_dir = remotes_dir
        self.limits = limits
        self._cache: dict[str, tuple[tuple[int, int, int, int], RemoteFile]] = {}

    def remotes(self) -> list[Remote]:
        """The configured remotes (invalid files are logged and left out)."""
        remotes, _ = load_remotes(self.remotes_dir)
        result = []
        for remote in remotes:
            try:
                mtime = int(os.stat(remote.path).st_mtime)
            except OSError:
                mtime = 0
            result.append(
                Remote(
                    remote.id,
                    remote.title,
                    remote.path,
                    remote.enabled,
                    remote.trusted,
                    remote.priority,
                    remote.config_path,
                    mtime,
                )
            )
        return result

    def scan(self) -> list[RemoteFile]:
        """Every cabinet of every enabled remote (blocking: run it in a thread)."""
        found: list[RemoteFile] = []
        seen: set[str] = set()
        for remote in self.remotes():
            if not remote.enabled:
                continue
            paths = sorted(glob.glob(os.path.join(glob.escape(remote.path), "*.cab")))
            if len(paths) > MAX_CABINETS:
                log.warning("remote_too_many_cabinets", remote=remote.id, count=len(paths))
                paths = paths[:MAX_CABINETS]
            for path in paths:
                seen.add(path)
                found.append(self._load(remote, path))
        for path in list(self._cache):
            if path not in seen:
                del self._cache[path]
        return found

    def _load(self, remote: Remote, path: str) -> RemoteFile:
        try:
            info = os.stat(path)
        except OSError as error:
            return RemoteFile(remote, path, None, error.strerror or str(error))
        key = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        cached = self._cache.get(path)
        if cached and cached[0] == key:
            entry = cached[1]
            return RemoteFile(remote, path, entry.cabinet, entry.error)
        entry = RemoteFile(remote, path, None, "")
        if info.st_size > self.limits.max_size:
            entry = RemoteFile(remote, path, None, "over the cabinet size limit")
        else:
            try:
                with open(path, "rb") as handle:
                    data = handle.read(self.limits.max_size + 1)
                entry = RemoteFile(remote, path, read_cabinet(data, self.limits))
            except OSError as error:
                entry = RemoteFile(remote, path, None, error.strerror or str(error))
            except LivefwError as error:
                entry = RemoteFile(remote, path, None, error.message)
        if entry.error:
            log.warning("remote_cabinet_invalid", remote=remote.id, path=path, error=entry.error)
        self._cache[path] = (key, entry)
        return entry
