"""Temporary directories of runs killed outright are removed by the next run that makes
one of its kind; a live run's, a starting run's and other programs' are left alone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from replicator import scratch
from replicator.metrics import multiprocess

HOLD = """
import sys, time
from pathlib import Path
from replicator import scratch
made = scratch.make(sys.argv[1], Path(sys.argv[2]))
print(made.path, flush=True)
time.sleep(600)
"""


def held_elsewhere(prefix: str, where: Path) -> tuple[subprocess.Popen[str], Path]:
    """A process that made a directory and holds it; the directory."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, prefix, str(where)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


def test_the_directory_of_a_killed_run_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    killed, left = held_elsewhere("replicator-kcl-", tmp_path)
    alive, held = held_elsewhere("replicator-kcl-", tmp_path)
    try:
        (left / "job.yaml").write_text("source: ...\n")
        killed.send_signal(signal.SIGKILL)  # no chance to remove its own
        killed.wait(10)
        assert left.is_dir()
        # Not this program's (no owner file), another kind, and a run starting (its
        # owner file there, still empty): each left as it is.
        foreign = tmp_path / "replicator-kcl-foreign"
        foreign.mkdir()
        other_kind = tmp_path / "replicator-metrics-x"  # ended too, but not of this kind
        other_kind.mkdir()
        (other_kind / scratch.OWNER_FILE).write_text("12345\n")
        # A FIFO in an owner file's place: opened as it is, it waited for a writer, and
        # every start of the host's runs with it.
        fifo = tmp_path / "replicator-kcl-fifo"
        fifo.mkdir()
        os.mkfifo(fifo / scratch.OWNER_FILE)
        starting = tmp_path / "replicator-kcl-starting"
        starting.mkdir()
        (starting / scratch.OWNER_FILE).write_text("")

        with contextlib.closing(scratch.make("replicator-kcl-", tmp_path)) as mine:
            assert mine.path.is_dir()
            assert not left.exists()
            assert held.is_dir() and foreign.is_dir() and starting.is_dir()
            assert other_kind.is_dir() and fifo.is_dir()
            # Another in this process: a live one's lock is its own open file, not the
            # process's, so the two leave each other alone.
            with contextlib.closing(scratch.make("replicator-kcl-", tmp_path)) as beside:
                assert mine.path.is_dir() and beside.path.is_dir()
        assert not mine.path.exists()  # removed on the way out
    finally:
        alive.kill()
        alive.wait(10)


def test_a_runs_metrics_samples_directory_is_one_the_next_run_can_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first = multiprocess.prepare(private=True)
    assert first.owned and first.path.parent == tmp_path and first.lock is not None
    os.close(first.lock)  # as the kernel lets go for a run killed outright
    second = multiprocess.prepare(private=True)
    try:
        assert not first.path.exists()
        assert second.path.is_dir()
    finally:
        multiprocess.discard(second)
    assert not second.path.exists()


def test_a_directory_of_another_user_is_left_alone(tmp_path: Path) -> None:
    """Ended as it looks (an owner file of its own, unlocked, not empty), but not this
    user's: a run as root removed every user's."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to make a file another user owns")
    theirs = tmp_path / "replicator-local-theirs"
    theirs.mkdir()
    (theirs / scratch.OWNER_FILE).write_text("12345\n")
    os.chown(theirs / scratch.OWNER_FILE, 10001, 10001)
    os.chown(theirs, 10001, 10001)
    with contextlib.closing(scratch.make("replicator-local-", tmp_path)):
        assert theirs.is_dir()
