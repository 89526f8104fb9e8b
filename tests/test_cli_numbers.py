"""Every number option of every ``replicator`` command refuses what is no usable number
(NaN, infinity, a value past its bound) as a usage error naming the option, before the
job file is read: such a value once reached a wait and ended in a traceback.

Click refuses these while it parses the command line, before any of the command runs,
so each case runs the command's parser in this process (click's test runner, as
``replicator`` would call it); one case runs the command as a process of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from replicator.cli import cli
from tests.support.cli import replicator

BOUNDED = ("nan", "inf", "1e10")  # a number of seconds or items with an upper bound
UNBOUNDED = ("nan", "inf")  # a rate or a count that may be as large as it likes
WAIT = ("-d", "eu", "--until", "1")

# (command, option, the values it refuses, what else the command needs)
NUMBER_OPTIONS: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
    ("demo", "--duration", BOUNDED, ()),
    ("demo", "--rate", BOUNDED, ()),
    ("demo", "--keys", BOUNDED, ()),
    ("demo", "--settle-timeout", BOUNDED, ()),
    ("demo", "--linger", BOUNDED, ()),
    ("backfill", "--segments", BOUNDED, ()),
    ("backfill", "--read-rate", UNBOUNDED, ()),
    ("backfill", "--threads", BOUNDED, ()),
    ("backfill", "--page-size", BOUNDED, ()),
    ("backfill", "--max-items", UNBOUNDED, ()),
    ("verify", "--segments", BOUNDED, ()),
    ("verify", "--threads", BOUNDED, ()),
    ("verify", "--read-rate", UNBOUNDED, ()),
    ("verify", "--sample", UNBOUNDED, ()),
    ("verify", "--recheck", BOUNDED, ()),
    ("verify", "--recheck-pause", BOUNDED, ()),
    ("wait", "--poll", BOUNDED, (*WAIT, "--timeout", "1")),
    ("wait", "--timeout", ("nan",), WAIT),  # inf: no limit
    ("conflicts", "--limit", UNBOUNDED, ()),
]


@pytest.mark.parametrize(
    ("command", "option", "value", "needed"),
    [
        pytest.param(command, option, value, needed, id=f"{command} {option} {value}")
        for command, option, values, needed in NUMBER_OPTIONS
        for value in values
    ],
)
def test_a_number_option_given_no_usable_number_is_a_usage_error_naming_it(
    command: str, option: str, value: str, needed: tuple[str, ...], tmp_path: Path
) -> None:
    args = [command, "--config", str(tmp_path / "job.yaml"), *needed, option, value]
    done = CliRunner().invoke(cli, args, prog_name="replicator")

    assert done.exit_code == 2, done.stderr
    assert done.stdout == ""
    assert done.exception is None or isinstance(done.exception, SystemExit)
    error = done.stderr.splitlines()[-1]
    assert error.startswith(f"Error: Invalid value for '{option}': "), done.stderr


def test_the_command_itself_refuses_a_number_option_as_a_usage_error(tmp_path: Path) -> None:
    done = replicator("verify", "--config", str(tmp_path / "job.yaml"), "--recheck-pause", "inf")

    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("Error: Invalid value for '--recheck-pause': ")


@pytest.mark.parametrize(
    ("command", "option", "needed", "kind"),
    [
        ("wait", "--timeout", WAIT, "number"),
        ("wait", "--poll", (*WAIT, "--timeout", "1"), "number"),
        ("demo", "--duration", (), "number"),
        ("verify", "--recheck-pause", (), "number"),
        ("backfill", "--threads", (), "whole number"),
        ("backfill", "--segments", (), "whole number"),
        ("conflicts", "--limit", (), "whole number"),
    ],
)
def test_a_value_with_a_unit_or_a_word_is_named_as_no_number(
    command: str, option: str, needed: tuple[str, ...], kind: str, tmp_path: Path
) -> None:
    """``--timeout 5s`` was "not a valid float range": click's name for its type."""
    for value in ("5s", "ten"):
        args = [command, "--config", str(tmp_path / "job.yaml"), *needed, option, value]
        done = CliRunner().invoke(cli, args, prog_name="replicator")

        assert done.exit_code == 2, done.stderr
        assert done.stderr.splitlines()[-1] == (
            f"Error: Invalid value for '{option}': '{value}' is not a valid {kind}."
        )
