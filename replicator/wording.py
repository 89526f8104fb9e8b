"""Counts as the reports say them: "1 segment", "2 segments"."""

from __future__ import annotations


def counted(count: int, noun: str) -> str:
    """``count`` with ``noun``, plural (an ``s``) unless the count is one."""
    return f"{count} {noun}" + ("" if count == 1 else "s")
