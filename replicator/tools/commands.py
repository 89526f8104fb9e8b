"""The operator commands as the CLI runs them: logging, signals, output, exit status.

Kept apart from the tools themselves so that those stay callable from tests and
scripts without touching the process's signal handlers or stdout.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from replicator import logs
from replicator.config import load_job
from replicator.config.model import ResolvedJob


def load(config_path: Path) -> ResolvedJob:
    resolved = load_job(config_path.resolve())
    logs.configure(resolved.job.logging.level, resolved.job.logging.format.value)
    logs.bind_everywhere(task=resolved.task_name)
    return resolved


@contextmanager
def interrupts(on_signal: Callable[[], None]) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``on_signal`` (called once per signal) while inside."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.getsignal(number) for number in handled}

    def handler(number: int, frame: Any) -> None:
        click.echo(
            f"replicator: {signal.Signals(number).name} received; stopping after the work in "
            "hand (again to stop at once)",
            err=True,
        )
        on_signal()

    for number in handled:
        signal.signal(number, handler)
    try:
        yield
    finally:
        for number, action in previous.items():
            signal.signal(number, action)


def backfill(config_path: Path, **options: Any) -> int:
    from replicator.tools.backfill import Backfill, BackfillOptions

    resolved = load(config_path)
    runner = Backfill(resolved, BackfillOptions(**options))
    with interrupts(runner.interrupt), aws_failures(f"backfill {resolved.task_name}"):
        result = runner.run()
    click.echo(result.summary())
    return result.exit_code


def verify(config_path: Path, as_json: bool, **options: Any) -> int:
    from replicator.tools.verify import Verify, VerifyOptions

    resolved = load(config_path)
    runner = Verify(resolved, VerifyOptions(**options))
    with interrupts(runner.stop.set), aws_failures(f"verify {resolved.task_name}"):
        report = runner.run()
    click.echo(report.as_json() if as_json else report.text())
    return report.exit_code


@contextmanager
def aws_failures(what: str) -> Iterator[None]:
    """AWS errors that outlasted the retries, and refusing destinations, as one clear line."""
    from botocore.exceptions import BotoCoreError, ClientError

    from replicator.exceptions import (
        DeadLetterUnavailable,
        DestinationRefused,
        EnvironmentProblem,
    )
    from replicator.runtime.preflight import explain

    try:
        yield
    except (DestinationRefused, DeadLetterUnavailable) as error:
        raise EnvironmentProblem(f"{what}: {error}") from None
    except (ClientError, BotoCoreError) as error:
        raise explain(error, what, "its AWS endpoint") from None


def redrive(config_path: Path) -> int:
    from replicator.tools.redrive import Redrive

    resolved = load(config_path)
    runner = Redrive(resolved)
    with interrupts(runner.interrupt), aws_failures(f"redrive {resolved.task_name}"):
        report = runner.run()
    click.echo(report.text())
    return report.exit_code
