"""Why a processor process exits, left where its runtime can read it.

A processor that stops on an error no retry fixes (a destination refusing every write)
logs it and exits; the local runtime only sees a closed pipe or an exit status. The
runtime names a file in ``REPLICATOR_LAST_WORDS`` for each child it starts, the child
writes its reason there before it exits, and the runtime's error for a processor that
keeps failing gives that reason. With the reason goes the exit code the CLI gives such a
failure (3 for a destination not as the job says), when the child knows it: the runtime
ends with that code if the processor keeps failing so. Both sides import only this
module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

ENV = "REPLICATOR_LAST_WORDS"
_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")

_lock = threading.Lock()
_left: list[str] = []
_also: list[Callable[[str], object]] = []


def tell_also(hook: Callable[[str], object]) -> None:
    """Have ``hook`` told the reason too: under the KCL the daemon, not a runtime of ours,
    starts the processors, and the launcher reads a processor's reason from its note
    (replicator/runtime/kcl/awaited.py)."""
    _also.append(hook)


def leave(reason: str, exit_code: int | None = None) -> None:
    """Write ``reason`` (and the CLI's ``exit_code`` for it) where the runtime asked, and
    tell the hooks (nothing when neither asked)."""
    path = os.environ.get(ENV)
    if not path and not _also:
        return
    # One line: it ends the run's last line, which log tools take whole or not at all,
    # and an error an endpoint answered can hold line breaks (an XML body, say).
    reason = _LINE_BREAKS.sub(" ", reason.strip())
    # Several writer threads may fail at once, each about to end the process: the first
    # one's words are kept whole (written aside, then renamed into place), and the others
    # wait for them rather than cut them short.
    with _lock:
        if _left:
            return
        _left.append(reason)
        if path:
            try:
                with open(path + ".tmp", "w", encoding="utf-8") as file:
                    file.write(json.dumps({"reason": reason[:2000], "exit_code": exit_code}))
                os.replace(path + ".tmp", path)
            except OSError:
                pass  # only an explanation: the exit itself must happen
        for hook in _also:
            with contextlib.suppress(Exception):  # likewise
                hook(reason)


def read(path: Path) -> tuple[str, int | None]:
    """What a child left at ``path``: its reason ("" when none) and exit code."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "", None
    try:
        said = json.loads(text)
    except json.JSONDecodeError:
        return text, None
    if not isinstance(said, dict):
        return text, None
    code = said.get("exit_code")
    return str(said.get("reason", "")).strip(), code if isinstance(code, int) else None
