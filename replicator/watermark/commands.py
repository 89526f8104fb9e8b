"""``replicator watermark`` and ``replicator wait``: the watermark from a job file.

Both read the status table in each destination's region, with the destination's own
credentials (its endpoint and role), exactly as an application there would; first, the
task's owner tag on the lease table with the source's (ownership.check_reader), which
leaves its check undone when it cannot be read. A part of the destination that records
another source than the job's (a job of another source given the same task name, which
publishes into the same status table) ends either command with exit 3 rather than a
watermark that is that job's, or a mix of both.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from replicator import entry, logs, wiring
from replicator.config.destinations import destination_place, resolve_destination
from replicator.config.model import DestinationConfig, ResolvedJob, StreamKind
from replicator.epoch import ISO_TIME_FORM, date_alone, exact_seconds, typed_iso_time, typed_number
from replicator.exceptions import (
    ConfigError,
    EnvironmentProblem,
    StatusTableMissing,
    StatusTableSilent,
)
from replicator.logs import redact
from replicator.runtime.preflight import explain
from replicator.shards import ownership
from replicator.watermark.parts import Watermark, iso, seconds, waiting_on
from replicator.watermark.wait import (
    Seconds,
    WaitResult,
    checked_seconds,
    read_watermark,
    stale_after_s,
    stale_note,
    to_epoch_us,
    wait_until_replicated,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

EXIT_REPLICATED = 0
EXIT_TIMEOUT = 1
EXIT_DEAD_LETTERED = 4
"""Also when changes in the window were never read for the destination (unread spans)."""


class _Stopped(BaseException):
    """SIGINT or SIGTERM during a command: a BaseException, as KeyboardInterrupt is, so
    that no handler of errors on the way takes it for a failed read."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal = signal.Signals(signum)

    @property
    def exit_code(self) -> int:
        """128 + the signal's number (130 SIGINT, 143 SIGTERM), as a shell reports a
        command the signal ended, and as ``replicator run`` exits when stopped at once:
        a script can tell an interrupted wait from a timeout (1)."""
        return 128 + self.signal.value


@contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP (unless ignored, as by ``nohup``: :func:`replicator.
    entry.stop_signals`) raise :class:`_Stopped` while inside (on the main thread; a
    caller on another thread keeps its process's handlers). Without this click answers
    Ctrl-C with "Aborted!" and exit 1, the timeout's code, and SIGTERM kills silently."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = entry.stop_signals()
    previous = {number: signal.getsignal(number) for number in handled}

    def stop(signum: int, _frame: object) -> None:
        for number in handled:  # the first decides; another is noted, not raised again
            signal.signal(number, entry.noted_after_the_work)
        raise _Stopped(signum)

    for number in handled:
        signal.signal(number, stop)
    try:
        yield
    finally:
        # The result is decided: a signal from here to the process's end (a second
        # Ctrl-C, or coreutils' timeout signalling the process group after the process)
        # is noted, not a KeyboardInterrupt in the line being printed or in the
        # interpreter's shutdown (``replicator.entry`` ends the command without it).
        # An in-process caller gets its own handlers back.
        entry.after_the_work(previous)


def _stopped_line(stop: _Stopped, what: str) -> int:
    logs.echo(f"replicator: {stop.signal.name} received; {what}", err=True)
    return stop.exit_code


def parse_time(text: str, option: str) -> Seconds:
    """Epoch seconds (fractions allowed) or ISO 8601 with a zone (read by
    :func:`typed_iso_time`, as ``conflicts --since`` reads it), from 1970 to before
    ``SECONDS_CEILING``; ValueError naming ``option`` and ``text``. A number is kept
    exactly (a Decimal), as an application's Decimal is: a float would round
    ``1796466592.9999999`` up to the next second, and ``99999999999.9999999`` up to
    the ceiling, where every time is later rounded down to the microsecond."""
    shown = f"{option} {text!r}"
    exact = typed_number(text)
    if exact is not None:
        return checked_seconds(exact, shown, typed_as_number=True)
    midnight = date_alone(text)
    if midnight is not None:
        raise ValueError(
            f"{shown}: a date alone is not a time; a time with a zone is required, "
            f"such as {midnight}"
        )
    try:
        moment = typed_iso_time(text)
    except ValueError as error:
        hint = f"; {error}" if str(error) else ""
        raise ValueError(
            f"{shown}: expected epoch seconds (such as 1767225600.25) or an ISO 8601 "
            f"time with a zone ({ISO_TIME_FORM}, such as 2026-01-01T00:00:00.250Z){hint}"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(
            f"{shown}: an ISO 8601 time needs a zone (Z or +hh:mm); without one it "
            "could be any of 24 hours"
        )
    return checked_seconds(exact_seconds(moment), shown, typed_as_number=False)


def _require_watermark(resolved: ResolvedJob) -> None:
    if resolved.job.source.stream.kind is StreamKind.KINESIS:
        raise ConfigError(
            f"{resolved.path}: the watermark is published for DynamoDB Streams sources only "
            "(a Kinesis stream may deliver a change after newer ones, so no time can be promised)"
        )
    if not resolved.job.watermark.enabled:
        raise ConfigError(f"{resolved.path}: watermark.enabled is false; nothing is published")


SHOW_TIMEOUT_S = 10.0
"""How long ``replicator watermark`` waits for a status table's answer (throttling and
server errors retried meanwhile): the destination's client, with its own timeouts and
retries, could otherwise hang on an endpoint that never answers for half a minute."""


def _status_client(resolved: ResolvedJob, destination: DestinationConfig) -> DynamoDBClient:
    """The destination's client for its status table, without the SDK's own retries:
    the commands retry throttling and server errors themselves, within their bound, and
    a client that backs off inside one Query for seconds would have them report a table
    that answered (throttling) as one that did not answer at all."""
    return wiring.status_client(resolved, destination.label, sdk_retries=False)


def _source(resolved: ResolvedJob) -> str:
    """The job's source as the readers compare it with the ``source`` its parts record
    (a table ARN): ``<region>/<table>``, so that no call reaches the source."""
    source = resolved.job.source
    return f"{source.region}/{source.table}"


def _read(resolved: ResolvedJob, destination: DestinationConfig) -> Watermark | None:
    try:
        return read_watermark(
            destination=destination.label,
            status_table=resolved.watermark_table,
            client=_status_client(resolved, destination),
            timeout=SHOW_TIMEOUT_S,
            destination_table=destination_place(destination),
            source=_source(resolved),
        )
    except StatusTableMissing:
        return None
    except StatusTableSilent:
        where = destination.endpoint_url or f"region {destination.region}"
        raise EnvironmentProblem(
            f"status table {resolved.watermark_table} did not answer at {where} in "
            f"{SHOW_TIMEOUT_S:g}s: the endpoint hangs, or is slower than that"
        ) from None
    except (ClientError, BotoCoreError) as error:
        raise _problem(resolved, destination, error) from None


def _read_all(
    resolved: ResolvedJob, chosen: list[DestinationConfig]
) -> list[Watermark | EnvironmentProblem | None]:
    """Each destination's watermark, read all at once so that ``SHOW_TIMEOUT_S`` bounds
    the command rather than each destination; in place of one that could not be read,
    why (any other error is raised).

    Daemon threads, not an executor: a command that ends (an error, an interrupt) must
    not wait at exit for reads nobody wants any more."""
    marks: list[Watermark | None] = [None] * len(chosen)
    errors: list[BaseException | None] = [None] * len(chosen)

    def read(index: int) -> None:
        try:
            marks[index] = _read(resolved, chosen[index])
        except BaseException as error:  # noqa: BLE001  # raised on the main thread
            errors[index] = error

    threads = [
        threading.Thread(target=read, args=(i,), name="watermark-show", daemon=True)
        for i in range(len(chosen))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        # In short joins: a SIGINT the kernel hands to a reading thread only flags the
        # main thread, which runs the handler when it next wakes, not when a read ends.
        while thread.is_alive():
            thread.join(0.1)
    for error in errors:
        if error is not None and not isinstance(error, EnvironmentProblem):
            raise error
    return [
        error if isinstance(error, EnvironmentProblem) else mark
        for mark, error in zip(marks, errors, strict=True)
    ]


def _problem(
    resolved: ResolvedJob, destination: DestinationConfig, error: BaseException
) -> EnvironmentProblem:
    where = destination.endpoint_url or f"region {destination.region}"
    return explain(error, f"status table {resolved.watermark_table}", where)


def show(resolved: ResolvedJob, name: str | None, as_json: bool) -> int:
    """Print each destination's watermark; 1 if one has none yet; 130 or 143 when stopped
    by SIGINT or SIGTERM; EnvironmentProblem (3) when a status table cannot be read, or
    answers no read in ``SHOW_TIMEOUT_S``."""
    _require_watermark(resolved)
    # "" names no destination (refused, as by wait): it is not "every destination".
    chosen = (
        [resolve_destination(resolved, name)]
        if name is not None
        else list(resolved.job.destinations)
    )
    now = time.time()
    try:
        with _stopped_by_signals():
            ownership.check_reader(resolved)
            found = list(zip(chosen, _read_all(resolved, chosen), strict=True))
    except _Stopped as stop:
        return _stopped_line(stop, "stopped before the watermark was read")
    # A destination whose status table cannot be read (its role not assumed, say) does
    # not hide the others': they are shown, then the command ends naming it (exit 3).
    unread = [(d, mark) for d, mark in found if isinstance(mark, EnvironmentProblem)]
    if as_json:
        report = [
            _as_dict(d, mark)
            | {
                "status_table": resolved.watermark_table,
                "region": d.region,
                "destination_table": destination_place(d),
            }
            for d, mark in found
        ]
        logs.echo(json.dumps(report if name is None else report[0], indent=2))
    else:
        for destination, mark in found:
            if not isinstance(mark, EnvironmentProblem):
                logs.echo(_describe(resolved, destination, mark, now))
    if unread:
        raise EnvironmentProblem("; ".join(str(problem) for _, problem in unread))
    return (
        0 if all(isinstance(m, Watermark) and m.watermark_us is not None for _, m in found) else 1
    )


def _as_dict(
    destination: DestinationConfig, mark: Watermark | EnvironmentProblem | None
) -> dict[str, object]:
    if isinstance(mark, Watermark):
        return dict(mark.as_dict())
    shown: dict[str, object] = {"destination": destination.label, "watermark": None}
    if isinstance(mark, EnvironmentProblem):
        shown["error"] = str(mark)
    return shown


def _describe(
    resolved: ResolvedJob, destination: DestinationConfig, mark: Watermark | None, now: float
) -> str:
    lines = [
        f"{destination.label}: status table {resolved.watermark_table} in {destination.region}"
    ]
    if mark is None:
        lines.append("  watermark: none (the status table does not exist yet)")
        return "\n".join(lines)
    if mark.watermark_us is None and mark.unknown:
        lines.append(f"  watermark: none yet ({waiting_on(mark)})")
    elif mark.watermark_us is None:
        lines.append(
            "  watermark: none yet (no shard has published for this destination: its "
            "replicator has not started publishing, or the job's label for it is not the one "
            "it publishes under)"
        )
    else:
        lines.append(
            f"  watermark: {iso(mark.watermark_us)} ({seconds(mark.watermark_us):.6f}), "
            f"{max(0.0, now - seconds(mark.watermark_us)):.1f}s ago"
        )
        stale = stale_note(mark, now, _stale_after(resolved))
        if stale:
            lines.append(f"  published: {stale}")
    lines.append(f"  shards: {len(mark.counted)} counted, {len(mark.retired)} ended")
    if mark.dead_letters:
        spans = ", ".join(f"{iso(lo)}..{iso(hi)}" for lo, hi in mark.dead_letter_ranges)
        lines.append(f"  dead letters: {mark.dead_letters} (changes created in {spans})")
    else:
        lines.append("  dead letters: none")
    lines.extend(f"  {span.heading}: {span.describe()}" for span in mark.unread_spans)
    return "\n".join(lines)


def _stale_after(resolved: ResolvedJob) -> float:
    job = resolved.job
    return stale_after_s(job.watermark.publish_interval_ms, job.kcl.idle_time_between_reads_ms)


def wait(
    resolved: ResolvedJob,
    name: str,
    until: Seconds,
    timeout: float,
    since: Seconds | None,
    poll_interval: float,
) -> int:
    """Wait until the destination's watermark passes ``until``: 0, 1 (timeout), 4 (dead
    letters), 130 or 143 (stopped by SIGINT or SIGTERM); EnvironmentProblem (3) when the
    status table cannot be read, or answers no read before the timeout."""
    _require_watermark(resolved)
    destination = resolve_destination(resolved, name)
    try:
        with _stopped_by_signals():
            ownership.check_reader(resolved)
            result: WaitResult = wait_until_replicated(
                until,
                destination=destination.label,
                status_table=resolved.watermark_table,
                timeout=timeout,
                since=since,
                poll_interval=poll_interval,
                client=_status_client(resolved, destination),
                destination_table=destination_place(destination),
                source=_source(resolved),
            )
    except _Stopped as stop:
        return _stopped_line(
            stop,
            f"stopped waiting for {destination.label} until {iso(to_epoch_us(until))}: "
            "not known to be replicated",
        )
    except (ClientError, BotoCoreError) as error:
        raise _problem(resolved, destination, error) from None
    if result.unanswered:  # nothing is known: the table could not be read, as when refused
        where = destination.endpoint_url or f"region {destination.region}"
        if result.hung:
            raise EnvironmentProblem(
                f"status table {resolved.watermark_table} did not answer at {where} in "
                f"{result.waited_s:.1f}s: the endpoint hangs, or is slower than --timeout"
            )
        # Every read failed (a reset connection, a garbled answer): the last failure.
        raise EnvironmentProblem(
            f"{redact(result.problem or '')} (at {where}, no read answered in "
            f"{result.waited_s:.1f}s)"
        )
    result = dataclasses.replace(result, stale_after_s=_stale_after(resolved))
    said = f"{destination.label} until {iso(to_epoch_us(until))}: {result.describe()}"
    logs.echo_outcome(said, err=not result.replicated)  # the exit code says it too
    if not result.reached and not result.unread:
        return EXIT_TIMEOUT
    return EXIT_DEAD_LETTERED if result.dead_lettered or result.unread else EXIT_REPLICATED
