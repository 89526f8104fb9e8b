"""Every number option of every ``replicator`` command refuses what is no usable number
(NaN, infinity, a value past its bound) as a usage error naming the option, before the
job file is read: such a value once reached a wait and ended in a traceback.

Click refuses these while it parses the command line, before any of the command runs,
so each case runs the command's parser in this process (click's test runner, as
``replicator`` would call it); one case runs the command as a process of its own."""

from __future__ import annotations

import re
from pathlib import Path

import click
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


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's path under ``group``, hidden ones and subgroups' included."""
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
    return found


@pytest.mark.parametrize("command", _commands(cli), ids=" ".join)
def test_no_help_shows_a_range_with_a_missing_bound(command: tuple[str, ...]) -> None:
    """``wait --help`` showed ``[default: 0.25; x<=None]`` for --poll: click's range of a
    number option with neither bound. Every range shown has its bounds."""
    done = CliRunner().invoke(cli, [*command, "--help"], prog_name="replicator", terminal_width=200)
    assert done.exit_code == 0, done.output
    assert "None]" not in done.stdout, done.stdout
    assert "x<=None" not in done.stdout and "None<" not in done.stdout, done.stdout
    ranges = re.findall(r"\[[^\]]*\]", done.stdout.replace("\n", " "))
    shown = [r for r in ranges if "x" in r and ("<" in r or ">" in r)]
    assert all(re.search(r"(\d[\d.e+]*<=?)?x(<=?|>=?)\d", r) for r in shown), shown


def test_the_poll_option_shows_its_default_and_no_range_of_none() -> None:
    done = CliRunner().invoke(cli, ["wait", "--help"], prog_name="replicator", terminal_width=200)
    assert done.exit_code == 0, done.output
    (poll,) = [line for line in done.stdout.splitlines() if "--poll" in line]
    assert poll.endswith("(0.01 to 3600).  [default: 0.25]"), poll
