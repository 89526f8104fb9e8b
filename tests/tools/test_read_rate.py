"""What the operator commands say on a first and a second Ctrl-C."""

from __future__ import annotations

import os
import signal

import pytest

from replicator.tools.commands import interrupts


def test_a_second_signal_says_the_command_stops_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    received: list[str] = []
    with interrupts(lambda: received.append("stop")):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
    assert received == ["stop", "stop"]
    assert capsys.readouterr().err.splitlines() == [
        "replicator: SIGINT received; stopping after the work in hand (again to stop at once)",
        "replicator: SIGTERM received again; stopping at once",
    ]
