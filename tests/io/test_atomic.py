"""Files appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsiseg.io.atomic import replacing, write_bytes, write_text


def test_replacing_swaps_in_the_new_file_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half")
        assert target.read_text() == "old"  # the old one is untouched while the new one is written
        raise RuntimeError("killed")
    assert target.read_text() == "old" and not list(tmp_path.glob(".*.tmp"))
    write_bytes(target, b"new", fsync=True)
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_a_failing_write_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_text(tmp_path / "missing-dir" / "f.txt", "x")
    assert list(tmp_path.iterdir()) == []
