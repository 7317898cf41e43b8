"""``ansible-test sanity`` on the livefw.firmware collection (docs, lint, imports)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: ansible-test's cached pip bootstrap (its download server is out of reach here).
GET_PIP_CACHE = Path.home() / ".ansible/test/cache/get_pip_24_2.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_collection_passes_ansible_test_sanity(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("ansible-test sanity needs git")
    GET_PIP_CACHE.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).parent / "tools/get_pip_shim.py", GET_PIP_CACHE)
    # ansible-test finds a collection by its path: .../ansible_collections/NAMESPACE/NAME
    root = tmp_path / "ansible_collections/livefw/firmware"
    shutil.copytree(REPO / "ansible", root)
    git = ["git", "-c", "user.name=livefw", "-c", "user.email=livefw@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "collection"], cwd=root, check=True)
    env = dict(os.environ)
    result = subprocess.run(
        [str(BIN / "ansible-test"), "sanity", "--python", "3.11", "--local"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert 'Running sanity test "validate-modules"' in result.stdout + result.stderr
