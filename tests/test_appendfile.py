"""An append that fails part way (a full disk) leaves the file as it was: its caller stores
the line again, and a fragment left behind would be an unreadable line for ever after."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from replicator import appendfile
from replicator.appendfile import append_line


def test_an_append_the_disk_fills_during_is_cut_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "letters.jsonl"
    append_line(path, '{"n": 1}')
    real_write = os.write
    calls = []

    def fills_up(descriptor: int, data: bytes | memoryview) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(descriptor, bytes(data)[:5])  # part of the line, then full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(appendfile.os, "write", fills_up)
    with pytest.raises(OSError, match="No space left"):
        append_line(path, '{"n": 2, "padding": "' + "x" * 100 + '"}')
    monkeypatch.setattr(appendfile.os, "write", real_write)
    assert len(calls) == 2
    assert path.read_bytes() == b'{"n": 1}\n'
    # Stored again once there is room: whole, on a line of its own.
    append_line(path, '{"n": 2}')
    assert path.read_bytes() == b'{"n": 1}\n{"n": 2}\n'


def test_a_dead_letter_file_that_cannot_be_opened_is_named_not_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start's check said "cannot write in DIRECTORY" when the file itself refused
    (its mode, owner or immutable flag), sending the operator to a directory that was
    fine."""
    letters = tmp_path / "letters.jsonl"
    letters.write_text("")
    real_open = os.open

    def refusing(path: Any, flags: int, *args: Any) -> int:
        if Path(os.path.realpath(path)) == letters:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing)
    assert appendfile.why_not_appendable(letters) == (
        f"the file cannot be opened for appending: Permission denied{appendfile.unwritable_hint()}"
    )
    link = tmp_path / "link.jsonl"
    link.symlink_to(letters)
    assert appendfile.why_not_appendable(link) == (
        f"the file it links to, {letters}, cannot be opened for appending: Permission denied"
        f"{appendfile.unwritable_hint()}"
    )


def test_a_link_on_the_way_to_nothing_is_named_and_a_path_that_may_not_be_looked_at_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory of the path that links into a volume not mounted made the start say
    "cannot create the directory ...: File exists"; one that may not be searched is for
    opening the file to tell (validate crashed on it)."""
    (tmp_path / "letters").symlink_to("/nonexistent-volume/letters")
    assert appendfile.dangling_link(tmp_path / "letters" / "x.jsonl") == (
        f"its directory {tmp_path / 'letters'} is a symbolic link to /nonexistent-volume/letters, "
        "and /nonexistent-volume/letters it points to does not exist (a volume not mounted?): "
        "mount or create it, or name another file"
    )
    (tmp_path / "plain").write_text("")
    (tmp_path / "into-a-file.jsonl").symlink_to(tmp_path / "plain" / "x.jsonl")
    assert appendfile.dangling_link(tmp_path / "into-a-file.jsonl") == (
        f"it is a symbolic link to {tmp_path / 'plain' / 'x.jsonl'}, and {tmp_path / 'plain'} "
        "it points into is not a directory: point the link at one, or name another file"
    )

    def unsearchable(self: Path) -> bool:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "is_symlink", unsearchable)
    assert appendfile.dangling_link(tmp_path / "letters" / "x.jsonl") is None
