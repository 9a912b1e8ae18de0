"""Atomic outputs (archscale.io): all or nothing, and with the modes a plain write would give."""

from __future__ import annotations

import os
import stat

import pytest

from archscale.io import atomic_dir, atomic_path, read_json, write_json


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_get_the_umask_mode_not_owner_only(tmp_path, umask_027):
    write_json(tmp_path / "a.json", {"x": 1})
    assert read_json(tmp_path / "a.json") == {"x": 1}
    assert _mode(tmp_path / "a.json") == 0o640  # 0666 & ~027; mkstemp alone gives 0600
    with atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("y")
    assert _mode(tmp_path / "d") == 0o750  # 0777 & ~027; mkdtemp alone gives 0700
    assert (tmp_path / "d" / "f").read_text() == "y"


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "e") as d:
            (d / "f").write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
