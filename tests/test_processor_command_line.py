"""Which processes ignore the stop signals from the package's first line: the processor
as the runtimes (and an operator) start it, and no program that only imports the package,
whatever its own arguments are (replicator/__init__.py)."""

from __future__ import annotations

import pytest

import replicator

PY = "/usr/bin/python3"


@pytest.mark.parametrize(
    ("orig_argv", "processor"),
    [
        ([PY, "-m", "replicator", "processor", "--config", "job.yaml"], True),
        ([PY, "-u", "-X", "importtime", "-m", "replicator", "processor"], True),
        ([PY, "-mreplicator", "processor", "--config", "job.yaml"], True),
        ([PY, "-W", "ignore", "-mreplicator", "processor"], True),
        ([PY, "/venv/bin/replicator", "processor", "--config", "job.yaml"], True),
        ([PY, "-m", "replicator", "run", "--config", "job.yaml"], False),
        ([PY, "/venv/bin/replicator", "run"], False),
        ([PY, "app.py", "-m", "replicator", "processor"], False),
        ([PY, "-c", "import replicator", "-m", "replicator", "processor"], False),
        ([PY, "-c", "import replicator", "processor"], False),
        ([PY, "-m", "app", "replicator", "processor"], False),
        ([PY, "/usr/bin/app", "processor"], False),
        ([PY, "-", "processor"], False),
        ([PY], False),
    ],
)
def test_only_the_processor_command_is_taken_for_the_processor(
    orig_argv: list[str], processor: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.orig_argv", orig_argv)
    assert replicator._started_as_the_processor() is processor
