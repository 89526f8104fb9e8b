"""``replicator watermark`` and ``replicator wait``: the watermark from a job file.

Both read only the status table in each destination's region, with the destination's
own credentials (its endpoint and role), exactly as an application there would.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import click
from botocore.exceptions import BotoCoreError, ClientError

from replicator import wiring
from replicator.config.model import DestinationConfig, ResolvedJob, StreamKind
from replicator.exceptions import ConfigError, EnvironmentProblem, StatusTableMissing
from replicator.runtime.preflight import explain
from replicator.watermark.parts import Watermark, iso, seconds
from replicator.watermark.wait import (
    WaitResult,
    checked_seconds,
    read_watermark,
    to_epoch_us,
    wait_until_replicated,
)

EXIT_REPLICATED = 0
EXIT_TIMEOUT = 1
EXIT_DEAD_LETTERED = 4
"""Also when changes in the window were never read for the destination (unread spans)."""


def parse_time(text: str, option: str) -> float:
    """Epoch seconds (fractions allowed) or ISO 8601 with a zone, from 1970 to before
    ``SECONDS_CEILING``; ValueError naming ``option`` and ``text``."""
    shown = f"{option} {text!r}"
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return checked_seconds(value, shown, typed_as_number=True)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{shown}: expected epoch seconds (such as 1767225600.25) or an ISO 8601 "
            "time with a zone (such as 2026-01-01T00:00:00.250Z)"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(
            f"{shown}: an ISO 8601 time needs a zone (Z or +hh:mm); without one it "
            "could be any of 24 hours"
        )
    return checked_seconds(moment.timestamp(), shown, typed_as_number=False)


def resolve_destination(resolved: ResolvedJob, name: str) -> DestinationConfig:
    """A destination by its label (``name``, default ``<region>/<table>``) or its table
    name; failing both, by its ``<region>/<table>``. Refused when more than one fits: a
    name that is also another destination's table would otherwise pick one silently,
    and the ``<region>/<table>`` of a named destination is then how to choose it."""
    destinations = resolved.job.destinations
    fits = [d for d in destinations if name in (d.label, d.table)]
    if not fits:
        fits = [d for d in destinations if name == f"{d.region}/{d.table}"]
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise ConfigError(
            f"--destination {name!r} fits several destinations "
            f"({', '.join(_spelled(d) for d in fits)}); give one's name or <region>/<table>"
        )
    raise ConfigError(
        f"--destination {name!r}: no destination of {resolved.path} has that name or table; "
        f"its destinations: {', '.join(_spelled(d) for d in destinations)}"
    )


def _spelled(destination: DestinationConfig) -> str:
    where = f"{destination.region}/{destination.table}"
    return where if destination.label == where else f"{destination.label} ({where})"


def _require_watermark(resolved: ResolvedJob) -> None:
    if resolved.job.source.stream.kind is StreamKind.KINESIS:
        raise ConfigError(
            f"{resolved.path}: the watermark is published for DynamoDB Streams sources only "
            "(a Kinesis stream may deliver a change after newer ones, so no time can be promised)"
        )
    if not resolved.job.watermark.enabled:
        raise ConfigError(f"{resolved.path}: watermark.enabled is false; nothing is published")


def _read(resolved: ResolvedJob, destination: DestinationConfig) -> Watermark | None:
    try:
        return read_watermark(
            destination=destination.label,
            status_table=resolved.watermark_table,
            client=wiring.status_client(resolved, destination.label),
        )
    except StatusTableMissing:
        return None
    except (ClientError, BotoCoreError) as error:
        raise _problem(resolved, destination, error) from None


def _problem(
    resolved: ResolvedJob, destination: DestinationConfig, error: BaseException
) -> EnvironmentProblem:
    where = destination.endpoint_url or f"region {destination.region}"
    return explain(error, f"status table {resolved.watermark_table}", where)


def show(resolved: ResolvedJob, name: str | None, as_json: bool) -> int:
    """Print each destination's watermark; 1 if one has none yet."""
    _require_watermark(resolved)
    chosen = [resolve_destination(resolved, name)] if name else list(resolved.job.destinations)
    now = time.time()
    found = [(d, _read(resolved, d)) for d in chosen]
    if as_json:
        report = [
            (mark.as_dict() if mark else {"destination": d.label, "watermark": None})
            | {"status_table": resolved.watermark_table, "region": d.region}
            for d, mark in found
        ]
        click.echo(json.dumps(report if name is None else report[0], indent=2))
    else:
        for destination, mark in found:
            click.echo(_describe(resolved, destination, mark, now))
    return 0 if all(mark and mark.watermark_us is not None for _, mark in found) else 1


def _describe(
    resolved: ResolvedJob, destination: DestinationConfig, mark: Watermark | None, now: float
) -> str:
    lines = [
        f"{destination.label}: status table {resolved.watermark_table} in {destination.region}"
    ]
    if mark is None:
        lines.append("  watermark: none (the status table does not exist yet)")
        return "\n".join(lines)
    if mark.watermark_us is None:
        waiting = ", ".join(mark.unknown) or "no shard has published"
        lines.append(f"  watermark: none yet (waiting for {waiting})")
    else:
        lines.append(
            f"  watermark: {iso(mark.watermark_us)} ({seconds(mark.watermark_us):.6f}), "
            f"{max(0.0, now - seconds(mark.watermark_us)):.1f}s ago"
        )
    lines.append(f"  shards: {len(mark.counted)} counted, {len(mark.retired)} ended")
    if mark.dead_letters:
        spans = ", ".join(f"{iso(lo)}..{iso(hi)}" for lo, hi in mark.dead_letter_ranges)
        lines.append(f"  dead letters: {mark.dead_letters} (changes created in {spans})")
    else:
        lines.append("  dead letters: none")
    lines.extend(f"  never read: {span.describe()}" for span in mark.unread_spans)
    return "\n".join(lines)


def wait(
    resolved: ResolvedJob,
    name: str,
    until: float,
    timeout: float,
    since: float | None,
    poll_interval: float,
) -> int:
    """Wait until the destination's watermark passes ``until``: 0, 1 (timeout), 4 (dead
    letters); EnvironmentProblem (3) when the status table cannot be read, or answers no
    read before the timeout."""
    _require_watermark(resolved)
    destination = resolve_destination(resolved, name)
    try:
        result: WaitResult = wait_until_replicated(
            until,
            destination=destination.label,
            status_table=resolved.watermark_table,
            timeout=timeout,
            since=since,
            poll_interval=poll_interval,
            client=wiring.status_client(resolved, destination.label),
        )
    except (ClientError, BotoCoreError) as error:
        raise _problem(resolved, destination, error) from None
    if result.unanswered:  # nothing is known: the table could not be read, as when refused
        where = destination.endpoint_url or f"region {destination.region}"
        raise EnvironmentProblem(
            f"status table {resolved.watermark_table} did not answer at {where} in "
            f"{result.waited_s:.1f}s: the endpoint hangs, or is slower than --timeout"
        )
    target = f"{destination.label} until {iso(to_epoch_us(until))}"
    click.echo(f"{target}: {result.describe()}", err=not result.replicated)
    if not result.reached:
        return EXIT_TIMEOUT
    return EXIT_DEAD_LETTERED if result.dead_lettered or result.unread else EXIT_REPLICATED
