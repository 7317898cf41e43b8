"""The web console page "Firmware" (cockpit/) in headless Chromium (issue 19).

Not part of ``make test``: ``make test-web`` installs Debian's cockpit-ws,
cockpit-bridge, chromium and chromium-driver when missing and sets LIVEFW_WEB_TEST=1.
Each test starts its own private system bus, ``livefwd --simulate`` (no polkit on the
bus: livefwd allows root, the uid cockpit-ws runs the bridge as, and refuses nobody),
a fake systemd (tests/web/fake_systemd.py) and one ``cockpit-ws --local-session``
whose bridge sees the private bus as the system bus and finds the page, installed by
``make install-cockpit``, under ``$XDG_DATA_HOME/cockpit/livefw``. Selenium drives
Debian's chromedriver. Every process is stopped by the fixture (cockpit-ws with its
process group: the bridge starts a session bus and an ssh-agent). Screenshots are kept
in ``$LIVEFW_WEB_SHOTS`` (default: the test's temp dir).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from livefw.testing import NOBODY, Cli, DaemonProcess, PrivateBus, as_user, busctl

REPO = Path(__file__).resolve().parent.parent.parent
COCKPIT_WS = "/usr/lib/cockpit/cockpit-ws"
CHROMIUM = "/usr/lib/chromium/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PFRU_KEY = "pfru/code-injection"
SYSTEMD_TEST = (
    "org.freedesktop.systemd1",
    "/org/freedesktop/systemd1/test",
    "org.livefw.Test.Systemd",
)

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("LIVEFW_WEB_TEST") != "1",
        reason="browser test: run `make test-web` (sets LIVEFW_WEB_TEST=1)",
    ),
    pytest.mark.skipif(
        not all(os.path.exists(p) for p in (COCKPIT_WS, CHROMIUM, CHROMEDRIVER))
        or shutil.which("cockpit-bridge") is None,
        reason="needs cockpit-ws, cockpit-bridge, chromium, chromium-driver (`make test-web`)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="runs cockpit-ws as root and as nobody"),
    pytest.mark.timeout(300),
]

webdriver = pytest.importorskip("selenium.webdriver", reason="pip install -e '.[web]'")
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By  # noqa: E402


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (WebDriverException, LookupError, ValueError) as error:
            last = error
        time.sleep(0.2)
    raise TimeoutError(f"{what} (last error: {last})")


def _stable(action: Callable[[], Any]) -> Any:
    """Run ``action`` again when the page re-rendered the element under it."""
    for _attempt in range(20):
        try:
            return action()
        except StaleElementReferenceException:
            time.sleep(0.1)
    return action()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Group:
    """A process started in its own process group; stop() ends the whole group."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        with open(log, "wb") as handle:
            self.proc = subprocess.Popen(
                command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.log = log

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # the bridge's session bus and ssh-agent stay in the group after cockpit-ws exits
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class Web:
    """One private bus, livefwd --simulate, fake systemd, cockpit-ws and a browser."""

    def __init__(self, root: Path, shots: Path, request: pytest.FixtureRequest) -> None:
        self.root = root
        self.shots = shots
        self.request = request
        self.groups: list[Group] = []
        bus_dir = root / "bus"
        bus_dir.mkdir()
        self.bus = PrivateBus(str(bus_dir)).start()
        self.state = root / "state"
        self.daemon = DaemonProcess(self.bus, str(self.state))
        self.cli = Cli(self.bus, str(self.state))
        self.driver: Any = None
        # the page, installed as `make install` does, found by the bridge in XDG_DATA_HOME
        self.data_home = root / "data"
        stage = root / "stage"
        subprocess.run(
            ["make", "-s", "install-cockpit", f"DESTDIR={stage}", "PREFIX=/usr"],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        (self.data_home / "cockpit").mkdir(parents=True)
        shutil.copytree(stage / "usr/share/cockpit/livefw", self.data_home / "cockpit/livefw")
        # the maintenance window's drop-in goes below this temp dir, never /etc
        self.unit_dir = root / "etc/systemd/system"
        self.unit_dir.mkdir(parents=True)
        config_dir = root / "xdg-config/cockpit"
        config_dir.mkdir(parents=True)
        (config_dir / "livefw.override.json").write_text(
            json.dumps({"config": {"unit_dir": str(self.unit_dir)}})
        )
        for path in (root, self.data_home, root / "xdg-config"):
            os.chmod(path, 0o755)
        for directory, _dirs, files in os.walk(root / "data"):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(os.path.join(directory, name), 0o644)
        for directory in (root / "xdg-config", config_dir):
            os.chmod(directory, 0o755)
        os.chmod(config_dir / "livefw.override.json", 0o644)

    def start(self, uid: int | None = None, config: str | None = None) -> None:
        if config is not None:
            path = self.root / "livefw.conf"
            path.write_text(config)
            self.daemon.config = str(path)
        self.daemon.start()
        env = self.bus.env()
        self.groups.append(
            Group(
                [
                    sys.executable,
                    str(REPO / "tests/web/fake_systemd.py"),
                    self.bus.address,
                    str(self.unit_dir),
                    str(REPO / "systemd/livefw-activate.timer"),
                ],
                env,
                self.root / "fake-systemd.log",
            )
        )
        self.bus.wait_for_name("org.freedesktop.systemd1", timeout=30)
        self.port = _free_port()
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        os.chmod(home, 0o777)
        ws_env = {
            "PATH": os.path.dirname(sys.executable) + ":/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "DBUS_SYSTEM_BUS_ADDRESS": self.bus.address,
            "XDG_DATA_HOME": str(self.data_home),
            "XDG_CONFIG_DIRS": str(self.root / "xdg-config"),
            "XDG_RUNTIME_DIR": str(home),
        }
        command = [
            COCKPIT_WS,
            "--no-tls",
            "--local-session=cockpit-bridge",
            "--port",
            str(self.port),
            "--address",
            "127.0.0.1",
        ]
        if uid is not None:
            command = as_user(uid, command)
        self.groups.append(Group(command, ws_env, self.root / "cockpit-ws.log"))
        _wait(self._listening, 30, "cockpit-ws did not listen")
        self.driver = self._browser()

    def _listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def _browser(self) -> Any:
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        options = Options()
        options.binary_location = CHROMIUM
        profile = self.root / "chromium"
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1400,1600",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager download anything
        service = Service(CHROMEDRIVER, log_output=str(self.root / "chromedriver.log"))
        return webdriver.Chrome(service=service, options=options)

    def open(self) -> None:
        self.driver.get(f"http://127.0.0.1:{self.port}/cockpit/@localhost/livefw/index.html")
        _wait(
            lambda: self.driver.execute_script("return document.body.dataset.ready === 'true'"),
            60,
            "the page did not start",
        )
        _wait(lambda: self.rows(), 60, "no device rows")

    def rows(self) -> list[Any]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, "#devices tbody tr[data-id]"))

    def row(self, device_id: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, f'#devices tr[data-id="{device_id}"]')

    def text(self, selector: str) -> str:
        return str(_stable(lambda: self.driver.find_element(By.CSS_SELECTOR, selector).text))

    def cell(self, device_id: str, selector: str) -> str:
        """Text of ``selector`` in the device's row (rows are rebuilt on every change)."""
        return str(
            _stable(lambda: self.row(device_id).find_element(By.CSS_SELECTOR, selector).text)
        )

    def attribute(self, device_id: str, selector: str, name: str) -> str | None:
        return _stable(  # type: ignore[no-any-return]
            lambda: self.row(device_id).find_element(By.CSS_SELECTOR, selector).get_attribute(name)
        )

    def click(self, selector: str, device_id: str | None = None) -> None:
        if device_id is None:
            _stable(lambda: self.driver.find_element(By.CSS_SELECTOR, selector).click())
        else:
            _stable(lambda: self.row(device_id).find_element(By.CSS_SELECTOR, selector).click())

    def errors(self) -> list[str]:
        return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, "#errors .fw-alert")]

    def shot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def systemd_test(self, member: str, signature: str = "", *args: str) -> str:
        name, path, iface = SYSTEMD_TEST
        result = busctl(self.bus.address, "call", name, path, iface, member, signature, *args)
        return result.stdout

    def stop(self) -> None:
        failed = getattr(self.request.node, "rep_call", None)
        if failed is not None and failed.failed:
            if self.driver is not None:
                try:
                    self.shot(f"{self.request.node.name}-failure")
                    for entry in self.driver.get_log("browser"):
                        sys.stderr.write(f"browser: {entry}\n")
                except WebDriverException:
                    pass
            for log in ("cockpit-ws.log", "fake-systemd.log"):
                path = self.root / log
                if path.exists():
                    sys.stderr.write(f"----- {log} -----\n{path.read_text(errors='replace')}\n")
            sys.stderr.write("----- livefwd log -----\n" + self.daemon.log() + "\n")
        if self.driver is not None:
            self.driver.quit()
        for group in reversed(self.groups):
            group.stop()
        self.daemon.stop()
        self.bus.stop()


@pytest.fixture
def web(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Web]:
    shots = Path(os.environ.get("LIVEFW_WEB_SHOTS") or tmp_path / "shots")
    root = Path(
        subprocess.run(
            ["mktemp", "-d", "/tmp/livefw-web.XXXXXX"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    os.chmod(root, 0o755)
    env = Web(root, shots, request)
    yield env
    env.stop()
    shutil.rmtree(root, ignore_errors=True)


def _devices(web: Web) -> dict[str, dict[str, Any]]:
    listing = json.loads(web.cli("get-devices", "--json").stdout)
    return {device["Id"]: device for device in listing}


# ------------------------------------------------------------------------ tests


def test_device_list_matches_the_cli(web: Web) -> None:
    web.start()
    web.open()
    devices = _devices(web)

    def table() -> dict[str, list[str]]:
        return {
            row.get_attribute("data-id"): [c.text for c in row.find_elements(By.TAG_NAME, "td")]
            for row in web.rows()
        }

    shown = _stable(table)
    assert set(shown) == set(devices)
    for device_id, device in devices.items():
        cells = shown[device_id]
        assert cells[0].splitlines()[0] == device["Name"]
        assert cells[1] == (device["Version"] or "\u2014")
        assert cells[2] == device["VersionPending"]
        assert cells[4].splitlines()[0] == device["UpdateState"]
    # flags in words: the pending LFA image says so, and activation-capable is spelled out
    lfa = next(d for d in devices.values() if "needs-activation" in d["Flags"])
    flags = web.cell(lfa["Id"], ".fw-flags")
    assert "waiting for activation" in flags
    assert "stops all CPUs to activate" in flags
    # the ESRT details of the UEFI device, and fwctl's FWCTL_INFO
    esrt = next(d for d in devices.values() if d["Plugin"] == "uefi_capsule")
    web.click('button[data-action="details"]', esrt["Id"])
    details = web.text(f'tr[data-details-for="{esrt["Id"]}"]')
    assert "ESRT entry" in details
    assert esrt["Metadata"]["last-attempt-status"] in details
    cxl = next(d for d in devices.values() if d["Metadata"].get("device-type") == "cxl")
    web.click('button[data-action="details"]', cxl["Id"])
    web.click(f'tr[data-details-for="{cxl["Id"]}"] button[data-action="features"]')
    _wait(
        lambda: "patrol scrub control" in web.text(f'tr[data-details-for="{cxl["Id"]}"]'),
        60,
        "the CXL feature table",
    )
    assert "FWCTL_INFO features" in web.text(f'tr[data-details-for="{cxl["Id"]}"]')
    # live-update sessions: one made with the CLI shows with its state
    web.cli("liveupdate", "create", "vm1", "--label", "guest memory")
    luo = next(d for d in devices.values() if d["Plugin"] == "liveupdate")
    web.click('button[data-action="details"]', luo["Id"])
    web.click(f'tr[data-details-for="{luo["Id"]}"] button[data-action="sessions"]')
    _wait(
        lambda: "guest memory" in web.text(f'tr[data-details-for="{luo["Id"]}"]'),
        30,
        "the live-update session",
    )
    assert "outgoing" in web.text(f'tr[data-details-for="{luo["Id"]}"]')
    web.shot("devices")
    assert web.errors() == []
    # a change arrives through PropertiesChanged, without reloading the page
    web.cli("sim", "stage", "rmm", "--version", "0.8")
    web.cli("refresh")
    rmm = next(d for d in devices.values() if d["Name"] == "TF-RMM")
    _wait(
        lambda: web.cell(rmm["Id"], ".fw-pending") == "0.8",
        30,
        "the staged RMM image did not show",
    )


def test_install_activate_history_and_telemetry(web: Web, tmp_path: Path) -> None:
    web.start()
    web.open()
    capsule = tmp_path / "code-injection-6.cap"
    web.cli("sim", "sample", PFRU_KEY, "--version", "6", "-o", str(capsule))
    pfru = next(d for d in _devices(web).values() if d["PhysicalId"].endswith("/code-injection"))
    assert web.attribute(pfru["Id"], 'button[data-action="activate"]', "disabled"), (
        "nothing is staged yet"
    )
    # follow the telemetry of the PFRU device before installing
    assert web.driver.find_element(By.ID, "telemetry-device").get_attribute("value") == pfru["Id"]
    _wait(lambda: "runtime update service ready" in web.text("#telemetry-log"), 30, "telemetry")
    # level and log type go to the firmware through SetLogInfo
    web.driver.find_element(By.CSS_SELECTOR, '#telemetry-level option[value="verbose"]').click()
    web.click("#telemetry-apply")
    _wait(
        lambda: (
            json.loads(web.cli("telemetry", pfru["Id"], "--json").stdout)["log_level"] == "verbose"
        ),
        30,
        "the log level set",
    )
    _wait(lambda: "runtime update service ready" in web.text("#telemetry-log"), 30, "re-read")
    web.click("#telemetry-follow")

    web.driver.find_element(By.ID, "install-file").send_keys(str(capsule))
    web.click("#install")
    _wait(lambda: "Installed" in web.text("#install-result"), 60, "install result")
    assert "3 \u2192 6" in web.text("#install-result")
    _wait(
        lambda: web.cell(pfru["Id"], ".fw-pending") == "6",
        30,
        "pending version 6",
    )
    _wait(
        lambda: "code-injection runtime version 6 staged" in web.text("#telemetry-log"),
        30,
        "the staging record in the followed telemetry",
    )
    # the upload's private dir is removed once livefw install is done
    _wait(lambda: not list(Path("/tmp").glob("livefw-cockpit.*")), 30, "the upload was not removed")

    # every Status/Percentage the progress bar showed, recorded as it changes
    # every status the progress bar showed: textContent puts in a new text node each time,
    # so the records keep each value even when several changes arrive in one batch
    web.driver.execute_script(
        "window.seen = [];"
        "new MutationObserver(records => records.forEach(r => r.addedNodes.forEach("
        "  node => window.seen.push(node.textContent))))"
        ".observe(document.getElementById('progress-status'), {childList: true});"
    )
    web.click('button[data-action="activate"]', pfru["Id"])
    dialog = _wait(lambda: web.driver.find_element(By.ID, "confirm").is_displayed(), 10, "dialog")
    assert dialog
    text = web.text("#confirm-body")
    assert "3 \u2192 6" in text
    assert "cannot be undone" in text
    assert "Kernel taint mask now: 0" in text
    web.shot("activate-confirm")
    web.click("#confirm-ok")
    _wait(
        lambda: web.cell(pfru["Id"], ".fw-version") == "6",
        60,
        "version 6 after activation",
    )
    assert web.cell(pfru["Id"], ".fw-pending") == ""
    seen = web.driver.execute_script("return window.seen")
    assert any(entry.startswith("activating") for entry in seen), seen
    assert web.driver.find_element(By.ID, "progress").is_displayed() is False
    _wait(
        lambda: web.driver.find_elements(
            By.CSS_SELECTOR, f'#history tr[data-device="{pfru["Id"]}"][data-state="success"]'
        ),
        30,
        "the history row",
    )
    history = json.loads(web.cli("history", "--json").stdout)
    first = web.driver.find_element(By.CSS_SELECTOR, "#history tbody tr")
    assert first.get_attribute("data-id") == history[0]["Id"]
    assert history[0]["Kind"] == "activate"
    assert history[0]["State"] == "success"
    last = web.cell(pfru["Id"], ".fw-last")
    assert "activate 6: success" in last
    _wait(
        lambda: "code-injection now runtime version 6" in web.text("#telemetry-log"),
        30,
        "the activation record in the followed telemetry",
    )
    # filters: by result and by device
    results = web.driver.find_element(By.ID, "history-result")
    results.find_element(By.CSS_SELECTOR, 'option[value="success"]').click()
    states = {
        r.get_attribute("data-state")
        for r in web.driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    }
    assert states == {"success"}
    results.find_element(By.CSS_SELECTOR, 'option[value=""]').click()
    web.cli("activate", "bl31")  # another device's entry
    _wait(
        lambda: len(web.driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")) == 3,
        30,
        "3 rows",
    )
    devices = web.driver.find_element(By.ID, "history-device")
    devices.find_element(By.CSS_SELECTOR, f'option[value="{pfru["Id"]}"]').click()
    shown = {
        r.get_attribute("data-device")
        for r in web.driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    }
    assert shown == {pfru["Id"]}
    devices.find_element(By.CSS_SELECTOR, 'option[value=""]').click()
    web.shot("firmware")
    assert web.errors() == []
    # the README's picture (docs/cockpit-firmware.png is this, reduced)
    web.driver.set_window_size(1200, 900)
    web.driver.execute_script("window.scrollTo(0, 0)")
    web.shot("readme")


def test_errors_show_livefwds_message(web: Web, tmp_path: Path) -> None:
    web.start()
    web.open()
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a capsule\n" * 10)
    web.driver.find_element(By.ID, "install-file").send_keys(str(junk))
    web.click("#install")
    errors = _wait(web.errors, 60, "an error alert")
    assert errors[0].startswith("Install: ")
    # the daemon's own sentence, not only an error name
    assert "org.livefw.Daemon1.Error" not in errors[0]
    assert len(errors[0]) > len("Install: The file was refused: ") + 10, errors[0]
    # an activation the firmware refuses
    lfa = next(d for d in _devices(web).values() if "needs-activation" in d["Flags"])
    web.cli("sim", "fault", "lfa", "activation-failed", "--device", "bl31")
    web.click('button[data-action="activate"]', lfa["Id"])
    _wait(lambda: web.driver.find_element(By.ID, "confirm").is_displayed(), 10, "dialog")
    assert "stops every CPU together" in web.text("#confirm-body")
    web.click("#confirm-ok")
    _wait(lambda: len(web.errors()) >= 2, 60, "the activation error")
    assert web.errors()[0].startswith("Activation: Activation failed: ")
    web.shot("errors")


def test_maintenance_window(web: Web) -> None:
    web.start()
    web.open()
    _wait(lambda: "*-*-* 03:00:00" in web.text("#timer"), 30, "the timer's window")
    assert "no (disabled)" in web.text("#timer")
    web.click("#timer-toggle")
    _wait(lambda: web.text("#timer-toggle") == "Disable", 30, "enabled")
    calls = web.systemd_test("Calls")
    assert "EnableUnitFiles livefw-activate.timer" in calls
    assert "StartUnit livefw-activate.timer" in calls
    assert "not scheduled" not in web.text('#timer dd[data-key="Next run"]')

    # a bad expression is refused before anything is written
    field = web.driver.find_element(By.ID, "timer-calendar")
    field.clear()
    field.send_keys("whenever it suits")
    web.click("#timer-save")
    _wait(web.errors, 30, "the refusal")
    assert "systemd does not accept" in web.errors()[0]
    drop_in = web.unit_dir / "livefw-activate.timer.d" / "window.conf"
    assert not drop_in.exists()

    field.clear()
    field.send_keys("Sun *-*-* 02:00:00")
    web.click("#timer-save")
    _wait(lambda: "Sun *-*-* 02:00:00" in web.text("#timer"), 30, "the new window")
    assert drop_in.read_text().endswith("[Timer]\nOnCalendar=\nOnCalendar=Sun *-*-* 02:00:00\n")
    assert "*-*-* 03:00:00" not in web.text('#timer dd[data-key="Window (OnCalendar=)"]')
    next_run = web.text('#timer dd[data-key="Next run"]')
    assert next_run not in ("", "never"), next_run

    # a run of the service that failed shows with its meaning
    web.systemd_test("FinishRun", "i", "1")
    _wait(
        lambda: "at least one activation failed" in web.text('#timer dd[data-key="Last result"]'),
        30,
        "the last result",
    )
    # the run's lines from the journal, found by its invocation id
    _wait(lambda: web.driver.find_element(By.ID, "timer-journal").is_displayed(), 30, "journal")
    journal = web.text("#timer-journal")
    assert "no lines from the last run" in journal or "Cannot read the journal" in journal
    web.shot("maintenance-window")

    web.click("#timer-reset")
    _wait(lambda: "*-*-* 03:00:00" in web.text("#timer"), 30, "the default window back")
    assert not drop_in.exists()
    web.click("#timer-toggle")
    _wait(lambda: web.text("#timer-toggle") == "Enable", 30, "disabled")
    assert "DisableUnitFiles livefw-activate.timer" in web.systemd_test("Calls")


def test_unprivileged_session_is_read_only(web: Web) -> None:
    web.start(uid=NOBODY)
    web.open()
    assert len(web.rows()) == len(_devices(web))
    assert "Read-only" in web.text("#access")
    # the telemetry log is polkit's telemetry-read: the section says why it is empty
    _wait(lambda: "Not authorized" in web.text("#telemetry-info"), 30, "the telemetry refusal")
    assert "telemetry-read" in web.text("#telemetry-info")
    assert web.errors() == []
    install = web.driver.find_element(By.ID, "install")
    assert install.get_attribute("disabled")
    assert "administrative access" in install.get_attribute("title")
    assert "administrative access" in web.text("#install-why")
    lfa = next(d for d in _devices(web).values() if "needs-activation" in d["Flags"])
    assert web.attribute(lfa["Id"], 'button[data-action="activate"]', "disabled")
    assert "administrative access" in (
        web.attribute(lfa["Id"], 'button[data-action="activate"]', "title") or ""
    )
    _wait(lambda: web.text("#timer-toggle") == "Enable", 30, "the timer state")
    assert web.driver.find_element(By.ID, "timer-toggle").get_attribute("disabled")
    assert web.driver.find_element(By.ID, "timer-save").get_attribute("disabled")
    # a button that is disabled for another reason says that reason
    rmm = next(d for d in _devices(web).values() if d["Name"] == "TF-RMM")
    assert (
        web.attribute(rmm["Id"], 'button[data-action="activate"]', "title")
        == "nothing is waiting for activation"
    )
    web.shot("read-only")


def test_update_from_a_remote(web: Web, tmp_path: Path) -> None:
    """GetUpgrades lists the newer release of a local remote; Update installs it."""
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    remotes = tmp_path / "remotes.d"
    remotes.mkdir()
    (remotes / "fleet.conf").write_text(
        f"[livefw Remote]\nEnabled=true\nTitle=Fleet firmware\nPath={firmware}\nTrusted=true\n"
    )
    web.start(config=f'[install]\nremotes_dir = "{remotes}"\n')
    pfru = next(d for d in _devices(web).values() if d["PhysicalId"].endswith("/code-injection"))
    payload = tmp_path / "pfru-7.bin"
    web.cli("sim", "sample", PFRU_KEY, "--version", "7", "-o", str(payload))
    web.cli(
        "build-cabinet", str(payload), "--guid", pfru["Guids"][0], "--version", "7",
        "--id", "org.example.pfru.code-injection", "--name", "Example runtime fix",
        "--protocol", "org.livefw.pfru", "-o", str(firmware / "pfru-7.cab"),
    )  # fmt: skip
    web.open()
    web.click("#check-updates")
    row = _wait(
        lambda: web.driver.find_element(By.CSS_SELECTOR, f'#updates tr[data-id="{pfru["Id"]}"]'),
        60,
        "the update row",
    )
    cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1:3] == ["3", "7"]
    assert "Example runtime fix" in cells[3]
    # the devices without a release say why
    assert "no releases for System Firmware" in web.text("#updates-none")
    web.shot("updates")
    web.click(f'#updates tr[data-id="{pfru["Id"]}"] button[data-action="update"]')
    _wait(
        lambda: web.cell(pfru["Id"], ".fw-pending") == "7",
        60,
        "pending version 7",
    )
    _wait(lambda: "Updated" in web.text("#install-result"), 30, "the update result")
    assert web.errors() == []
    # PFRU firmware cannot discard a staged capsule (no can-cancel flag): Cancel says so
    assert web.attribute(pfru["Id"], 'button[data-action="cancel"]', "disabled")
    assert "cannot discard" in (
        web.attribute(pfru["Id"], 'button[data-action="cancel"]', "title") or ""
    )
    # a UEFI capsule staged for the next boot can be cancelled
    uefi = next(d for d in _devices(web).values() if d["Name"] == "System Firmware")
    # a hostile file name is shown as text, never parsed as HTML
    capsule = tmp_path / '<img src=x onerror="window.pwned=1">.cap'
    web.cli("sim", "sample", "System Firmware", "--version", "65600", "-o", str(capsule))
    web.driver.find_element(By.ID, "install-file").send_keys(str(capsule))
    _wait(lambda: web.driver.find_element(By.ID, "install").is_enabled(), 60, "Install enabled")
    web.click("#install")
    _wait(
        lambda: web.attribute(uefi["Id"], 'button[data-action="cancel"]', "disabled") is None,
        60,
        "Cancel enabled for the staged capsule",
    )
    assert web.cell(uefi["Id"], ".fw-pending") == "65600"
    _wait(lambda: "Installed <img" in web.text("#install-result"), 30, "the result as text")
    assert web.driver.execute_script("return window.pwned") is None
    assert not web.driver.find_elements(By.CSS_SELECTOR, "#install-result img")
    web.click('button[data-action="cancel"]', uefi["Id"])
    _wait(
        lambda: web.cell(uefi["Id"], ".fw-pending") == "",
        60,
        "the staged capsule cancelled",
    )
    assert web.errors() == []
    assert not web.driver.find_elements(By.CSS_SELECTOR, "#updates tbody tr"), "checked again"
