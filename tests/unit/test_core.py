"""Config, state table, devices, history, the real provider and payload reading."""

import ast
import os
import socket
from pathlib import Path

import pytest

from livefw.config import Config, load_config
from livefw.device import Device, device_id
from livefw.engine import Engine
from livefw.errors import (
    ALL_ERRORS,
    ConfigError,
    Internal,
    InvalidArgument,
    InvalidFile,
    KernelError,
)
from livefw.history import History
from livefw.kernel.provider import WRITE_CHUNK, normalize
from livefw.kernel.real import RealProvider
from livefw.kernel.sim.machine import SimMachine
from livefw.kernel.sim.provider import SimProvider
from livefw.state import ALLOWED, UpdateState, transition

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------- config


def test_config_defaults_when_the_file_is_missing(tmp_path: Path) -> None:
    config = load_config(str(tmp_path / "absent.conf"))
    assert config.auth.fallback_uids == (0,)
    assert config.daemon.shutdown_timeout == 120


def test_config_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "absent.conf"), required=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[daemon]\nshutdown_timeout = 'soon'\n", "livefw.conf: daemon.shutdown_timeout: "),
        ("[auth]\npolkit = 'maybe'\n", "livefw.conf: auth.polkit: "),
        ("[daemon]\nbogus = 1\n", "livefw.conf: daemon.bogus: unknown key"),
        ("[daemon\n", "livefw.conf: TOML syntax error"),
    ],
)
def test_config_errors_are_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "livefw.conf"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.message.startswith(message)
    assert "\n" not in info.value.message


def test_plugin_sections_reach_plugins(tmp_path: Path) -> None:
    path = tmp_path / "livefw.conf"
    path.write_text("[plugins]\ndisabled = ['pfru']\n[plugins.fwctl]\nallow_full_debug = true\n")
    config = load_config(str(path))
    assert config.plugins.disabled == ("pfru",)
    assert config.plugins.for_plugin("fwctl") == {"allow_full_debug": True}
    assert config.plugins.for_plugin("lfa") == {}


# ----------------------------------------------------------- state and devices


def test_transition_table_refuses_waiting_for_two_things() -> None:
    assert set(ALLOWED) == set(UpdateState)
    assert transition(UpdateState.NONE, UpdateState.PENDING) == UpdateState.PENDING
    assert transition(UpdateState.PENDING, UpdateState.PENDING) == UpdateState.PENDING
    with pytest.raises(Internal, match="cannot go from pending to needs-reboot"):
        transition(UpdateState.PENDING, UpdateState.NEEDS_REBOOT)
    device = Device("test", "p", name="x")
    device.update(update_state="needs-reboot")
    with pytest.raises(Internal):
        device.update(update_state="pending")


def test_device_ids_are_sha1_of_plugin_and_physical_id() -> None:
    # sha1("lfa:abc"), computed independently with sha1sum
    assert device_id("lfa", "abc") == "39208e2e89aaf64afb5a3ce2db339ef2788b99ff"


def test_device_update_notifies_only_real_changes() -> None:
    device = Device("test", "p1", name="Thing", version="1")
    seen: list[frozenset[str]] = []
    device.add_listener(lambda d, names: seen.append(names))
    device.update(version="1", name="Thing")
    device.update(version="2", flags=["b", "a"])
    assert seen == [frozenset({"version", "flags"})]
    with pytest.raises(TypeError):
        device.update(colour="red")


def test_every_error_has_a_dbus_name() -> None:
    names = {cls("x").dbus_name for cls in ALL_ERRORS}
    assert all(name.startswith("org.livefw.Daemon1.Error.") for name in names)
    assert len(names) == len(ALL_ERRORS)
    assert KernelError(16, "write", "x").dbus_name.endswith(".Busy")


# -------------------------------------------------------------------- history


def test_history_rows_survive_reopen_and_merge_data(tmp_path: Path) -> None:
    history = History(str(tmp_path / "history.db"))
    entry = history.begin(
        device_id="d",
        device_name="Dev",
        plugin="lfa",
        physical_id="p",
        kind="activate",
        version_old="1",
        version_new="2",
        boot_id="b",
    )
    history.record(entry.op_id, {"a": 1})
    history.record(entry.op_id, {"b": [1, 2]})
    history.close()
    again = History(str(tmp_path / "history.db"))
    (row,) = again.entries(unfinished=True)
    assert row.data == {"a": 1, "b": [1, 2]}
    assert row.unfinished
    again.set_state(row.op_id, "success")
    assert again.entries(unfinished=True) == []


# --------------------------------------------------------------- kernel paths


@pytest.mark.parametrize("bad", ["/sys", "../etc", "sys/../../etc", "", "a/\x00b"])
def test_paths_cannot_leave_the_root(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        normalize(bad)


def test_normalize_folds_redundant_parts() -> None:
    assert normalize("sys//firmware/./lfa/") == "sys/firmware/lfa"


async def test_real_provider_under_a_root(tmp_path: Path) -> None:
    (tmp_path / "sys/firmware/lfa/x").mkdir(parents=True)
    (tmp_path / "sys/firmware/lfa/x/name").write_text("Image\n")
    (tmp_path / "esp").mkdir()
    provider = RealProvider(str(tmp_path))
    assert await provider.listdir("sys/firmware/lfa") == ["x"]
    assert await provider.read_attr("sys/firmware/lfa/x/name") == "Image"
    await provider.write_file("esp/a.tmp", b"data", durable=True)
    await provider.rename("esp/a.tmp", "esp/a")
    assert await provider.read_file("esp/a") == b"data"
    with pytest.raises(KernelError) as info:
        await provider.read_attr("sys/firmware/lfa/missing")
    assert info.value.errno == 2
    assert await provider.free_space("esp") > 0


async def test_real_provider_parses_mountinfo(tmp_path: Path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_text(
        "36 25 259:1 / /boot/efi rw,relatime shared:5 - vfat /dev/nvme0n1p1 rw\n"
        "37 25 0:30 / /with\\040space rw - tmpfs tmpfs rw\n"
    )
    mounts = await RealProvider(str(tmp_path)).mounts()
    assert mounts[0].mount_point == "/boot/efi"
    assert mounts[0].fs_type == "vfat"
    assert (mounts[0].major, mounts[0].minor) == (259, 1)
    assert mounts[1].mount_point == "/with space"


# ------------------------------------------------------------ payload reading


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    machine = SimMachine.create(str(tmp_path / "sim"), "empty")
    config = Config.model_validate({"install": {"max_payload_size": 16}})
    return Engine(SimProvider(machine), config, str(tmp_path), [])


async def test_payload_must_be_a_regular_file_or_memfd(engine: Engine, tmp_path: Path) -> None:
    memfd = os.memfd_create("payload")
    os.write(memfd, b"capsule")
    assert (await engine.read_payload(memfd)).data == b"capsule"
    os.close(memfd)
    left, right = socket.socketpair()
    with pytest.raises(InvalidFile, match="regular file or a memfd"):
        await engine.read_payload(left.fileno())
    left.close(), right.close()
    read_end, write_end = os.pipe()
    with pytest.raises(InvalidFile, match="regular file or a memfd"):
        await engine.read_payload(read_end)
    os.close(read_end), os.close(write_end)
    null = os.open("/dev/null", os.O_RDONLY)
    with pytest.raises(InvalidFile):
        await engine.read_payload(null)
    os.close(null)


async def test_payload_empty_or_too_large(engine: Engine, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    fd = os.open(empty, os.O_RDONLY)
    with pytest.raises(InvalidFile, match="empty"):
        await engine.read_payload(fd)
    os.close(fd)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 17)
    fd = os.open(big, os.O_RDONLY)
    with pytest.raises(InvalidFile, match="over the limit of 16"):
        await engine.read_payload(fd)
    os.close(fd)


# ------------------------------------------------------------------ boundaries


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.add(node.module.split(".")[0])
    return names


def test_plugins_reach_the_kernel_only_through_the_provider() -> None:
    """A plugin importing os, fcntl, mmap or pyudev would bypass the provider."""
    forbidden = {"os", "fcntl", "mmap", "pyudev", "ctypes", "subprocess"}
    # livefw.model: validated records (what pydantic was for the plugins' state files);
    # livefw.record: the frozen-record base (no I/O: what @dataclass(frozen=True) gave)
    allowed_livefw = (
        "livefw.plugin",
        "livefw.kernel",
        "livefw.errors",
        "livefw.plugins",
        "livefw.model",
        "livefw.record",
    )
    offenders = []
    for path in sorted((REPO / "plugins").rglob("*.py")):
        names = _imports(path)
        if names & forbidden:
            offenders.append(f"{path.relative_to(REPO)}: {sorted(names & forbidden)}")
        for name in names:
            if name.startswith("livefw.") and not name.startswith(allowed_livefw):
                offenders.append(f"{path.relative_to(REPO)}: imports {name}")
    assert offenders == []


def test_only_dbuslib_imports_the_dbus_library() -> None:
    offenders = []
    for folder in ("daemon", "plugins"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name == "dbuslib.py" and path.parent.name == "bus":
                continue
            names = _imports(path)
            if {"dbus_next", "dbus_fast", "dbus"} & {n.split(".")[0] for n in names}:
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


async def test_real_provider_writes_a_capsule_in_1_mib_writes_and_a_variable_in_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write(2) of 64 MiB into the page cache took 10x as long as 1 MiB writes on
    the bench's VM (issue 17.5, livefw.kernel.provider.WRITE_CHUNK); an efivarfs
    variable must stay one write (one write is one SetVariable)."""
    (tmp_path / "esp").mkdir()
    provider = RealProvider(str(tmp_path))
    sizes: list[int] = []
    real_write = os.write

    def counting(fd: int, data: bytes) -> int:
        sizes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting)
    capsule = os.urandom(WRITE_CHUNK * 2 + 5)
    await provider.write_file("esp/capsule.cap", capsule, durable=True)
    assert sizes == [WRITE_CHUNK, WRITE_CHUNK, 5]
    assert (tmp_path / "esp/capsule.cap").read_bytes() == capsule
    sizes.clear()
    await provider.write_file("esp/var", b"\x07\x00\x00\x00" + bytes(40_000))
    assert sizes == [40_004]
