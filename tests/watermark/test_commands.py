"""``replicator wait`` and ``replicator watermark`` as a script runs them: options given
twice, a poll interval too long to sleep, a status table that throttles or never answers,
a destination with no parts, and a wait stopped by a signal; each asserted by its exit
code and its message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from replicator.cli import cli

S = 1_000_000
T0 = 1_700_000_000 * S
SLACK_S = 15.0  # as in test_wait: far above a bounded command, far below an unbounded one


def job_file(tmp_path: Path, task: str, endpoint: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(
        f"task_name: {task}\n"
        f"source: {{region: us-east-1, table: src, endpoint_url: '{endpoint}'}}\n"
        "destinations:\n"
        f"  - {{region: eu-west-1, table: replica, endpoint_url: '{endpoint}'}}\n"
        f"  - {{region: ap-southeast-2, table: replica, endpoint_url: '{endpoint}'}}\n"
    )
    return path


def replicator(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- refused before anything is read ------------------------------------------------------------

EU = "eu-west-1/replica"
AP = "ap-southeast-2/replica"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["wait", "-d", EU, "-d", AP, "--until", "1", "--timeout", "0"],
            "--destination given 2 times; replicator wait takes one: run it once for each "
            "destination (joined with && to wait for all)",
        ),
        (
            ["wait", "-d", EU, "--destination", AP, "--until", "1", "--timeout", "0"],
            "--destination given 2 times",
        ),
        (
            ["wait", "-d", EU, "--until", "99999", "--until", "1", "--timeout", "0"],
            "--until given 2 times; replicator wait takes one: the last would be used",
        ),
        (
            ["wait", "-d", EU, "--until", "1", "--timeout", "0", "--timeout=5"],
            "--timeout given 2 times",
        ),
        (
            ["wait", "-d", EU, "--until", "1", "--timeout", "0", "--poll", "1", "--poll", "2"],
            "--poll given 2 times",
        ),
        (
            ["watermark", "-d", EU, "-d", AP],
            "--destination given 2 times; replicator watermark takes one: leave it out to "
            "show every destination",
        ),
        (
            # A poll whose sleep overflowed (OverflowError) with no timeout to cut it short.
            ["wait", "-d", EU, "--until", "99999999999", "--timeout", "inf", "--poll", "1e12"],
            "1000000000000.0 is not in the range 0.01<=x<=3600",
        ),
    ],
)
def test_an_option_given_twice_or_a_poll_beyond_an_hour_is_refused_with_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = job_file(tmp_path, "wm-twice", "http://127.0.0.1:1")  # never read
    result = CliRunner().invoke(
        cli, [args[0], "--config", str(path), *args[1:]], prog_name="replicator"
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
