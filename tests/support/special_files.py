"""Paths that exist but are no regular file, as a job's file targets may name them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Each file target: its setting (PATH for the path), its key, and what messages call it.
FILE_TARGETS = pytest.mark.parametrize(
    ("setting", "key", "what"),
    [
        ("dead_letter: {kind: file, path: PATH}", "dead_letter.path", "the dead-letter file"),
        ("conflict_log: {kind: file, path: PATH}", "conflict_log.path", "the conflict log"),
    ],
)
SPECIAL_FILES = pytest.mark.parametrize("special", ["fifo", "/dev/null", "loop"])


def special_file(tmp_path: Path, special: str) -> tuple[Path, str]:
    """The path ``special`` names (a FIFO made in ``tmp_path``, two symbolic links in it
    to each other, or a device), and what messages call it."""
    if special == "loop":
        (tmp_path / "loopa").symlink_to("loopb")
        (tmp_path / "loopb").symlink_to("loopa")
        return tmp_path / "loopa", "a loop of symbolic links (ELOOP)"
    if special != "fifo":
        return Path(special), "a character device"
    target = tmp_path / "fifo"
    os.mkfifo(target)
    return target, "a FIFO (named pipe)"


# Paths no file can have: one name over 255 bytes, and a whole path over 4096 (PATH_MAX).
TOO_LONG = pytest.mark.parametrize(
    "too_long", ["x" * 300 + ".jsonl", "d/" * 3000 + "f.jsonl"], ids=["name", "path"]
)
