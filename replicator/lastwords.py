"""Why a processor process exits, left where its runtime can read it.

A processor that stops on an error no retry fixes (a destination refusing every write)
logs it and exits; the local runtime only sees a closed pipe or an exit status. The
runtime names a file in ``REPLICATOR_LAST_WORDS`` for each child it starts, the child
writes its reason there before it exits, and the runtime's error for a processor that
keeps failing gives that reason. Both sides import only this module.
"""

from __future__ import annotations

import os

ENV = "REPLICATOR_LAST_WORDS"


def leave(reason: str) -> None:
    """Write ``reason`` where the runtime asked (nothing when it did not ask)."""
    path = os.environ.get(ENV)
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as file:
            file.write(reason[:2000])
    except OSError:
        pass  # only an explanation: the exit itself must happen
