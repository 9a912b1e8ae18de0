"""tools/find-python: the Makefile's choice of interpreter for a new .venv, with fake interpreters."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FINDER = ROOT / "tools" / "find-python"


def fake(bin_dir: Path, name: str, version: str | None) -> Path:
    """A fake interpreter answering the finder's version query (None: a shim that does not run)."""
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + (f"echo {version}\n" if version else "echo 'pyenv: not installed' >&2; exit 127\n"))
    path.chmod(0o755)
    return path


def find(bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    # PATH holds only the fakes: the machine's own pythons must not be found
    return subprocess.run(["/bin/bash", str(FINDER), *args], env={"PATH": str(bin_dir)},
                          capture_output=True, text=True, timeout=30)


def supported() -> tuple[int, int]:
    spec = re.search(r'^requires-python = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    return int(re.search(r">=3\.(\d+)", spec).group(1)), int(re.search(r"<3\.(\d+)", spec).group(1)) - 1


def test_requires_python_covers_311_to_313():
    assert supported() == (11, 13)


def test_old_python3_only_fails_naming_the_versions(tmp_path):
    fake(tmp_path, "python3", "3.10")
    res = find(tmp_path)
    assert res.returncode == 1 and res.stdout == ""
    assert "needs Python 3.11, 3.12 or 3.13" in res.stderr
    assert "python3 (3.10)" in res.stderr and "PYTHON=" in res.stderr


def test_nothing_on_path_fails(tmp_path):
    res = find(tmp_path)
    assert res.returncode == 1 and "Found none of them" in res.stderr


def test_newest_supported_wins_and_broken_shims_are_skipped(tmp_path):
    fake(tmp_path, "python3", "3.10")
    fake(tmp_path, "python3.11", "3.11")
    fake(tmp_path, "python3.12", None)  # pyenv shim of an uninstalled version
    assert find(tmp_path).stdout.strip() == "python3.11"
    fake(tmp_path, "python3.13", "3.13")
    assert find(tmp_path).stdout.strip() == "python3.13"


def test_python3_is_taken_when_its_version_fits(tmp_path):
    fake(tmp_path, "python3", "3.12")
    fake(tmp_path, "python3.11", None)
    assert find(tmp_path).stdout.strip() == "python3"
    fake(tmp_path, "python3", "3.14")  # newer than the pins' wheels
    res = find(tmp_path)
    assert res.returncode == 1 and "python3 (3.14)" in res.stderr and "python3.11 (does not run)" in res.stderr


def test_explicit_python_is_checked_too(tmp_path):
    old = fake(tmp_path, "py-old", "3.9")
    res = find(tmp_path, str(old))
    assert res.returncode == 1 and f"{old} (3.9)" in res.stderr
    # the real interpreter running this test (CI: 3.11) is accepted
    res = find(tmp_path, sys.executable)
    assert res.returncode == 0 and res.stdout.strip() == sys.executable


def test_makefile_uses_the_finder_and_fails_before_installing(tmp_path):
    dry = subprocess.run(["make", "-n", "-C", str(ROOT), "install", f"VENV={tmp_path}/v", "PYTHON=py-x"],
                         capture_output=True, text=True, timeout=30)
    assert "tools/find-python py-x" in dry.stdout
    fake(tmp_path, "python3", "3.10")
    real = subprocess.run(["make", "-C", str(ROOT), "install", f"VENV={tmp_path}/v", "PYTHON=" + str(tmp_path / "python3")],
                          capture_output=True, text=True, timeout=30)
    assert real.returncode != 0 and "needs Python 3.11" in real.stderr
    assert not (tmp_path / "v").exists()  # failed at once: no venv, no pip
