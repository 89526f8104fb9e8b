"""Reading a destination's watermark, and waiting until it passes a time.

Needs only boto3 and read access (``dynamodb:Query``) to the status table in the
destination's region: an application there learns from one local Query whether a write
it depends on has arrived. Many threads waiting on one destination through one client
share one reader's state, which asks at most once per poll interval; nothing of a client
is kept once the application drops it.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from replicator.aws import clients
from replicator.aws.backoff import Backoff
from replicator.aws.errors import ErrorKind, cause, classify, error_code, error_message
from replicator.epoch import SECONDS_CEILING, exact_seconds, finer_unit
from replicator.exceptions import StatusTableMissing, StatusTableSilent
from replicator.logs import redact
from replicator.watermark.parts import US, Watermark, combine, iso, seconds, waiting_on
from replicator.watermark.spans import UnreadSpan
from replicator.watermark.table import StatusTable
from replicator.watermark.tracker import DeadLetterRange

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

DEFAULT_POLL_INTERVAL_S = 0.25
DEFAULT_DEAD_LETTER_WINDOW_S = 60.0
MIN_POLL_INTERVAL_S = 0.01
"""The shortest poll interval taken, by the API as by ``replicator wait --poll``: a
processor publishes at most every 50 ms (``watermark.publish_interval_ms``), so a shorter
one only Queries the status table as fast as it answers, for no news."""
MAX_POLL_INTERVAL_S = 3600.0
"""The longest poll interval taken: a barrier that reads less than hourly is a mistake
(and a sleep of much more overflows), so a longer one is refused rather than obeyed."""


_LATEST = "5138-11-16T09:46:40Z"  # SECONDS_CEILING


def checked_seconds(value: Seconds, shown: str, *, typed_as_number: bool) -> Seconds:
    """``value`` (epoch seconds) if a wait can use it as a time; else ValueError
    ``"<shown>: <why>"``.

    A time is from 1970 (the epoch) to before ``SECONDS_CEILING``: within what a
    datetime can show, and the same line the package draws between seconds and
    milliseconds elsewhere, so that epoch milliseconds typed by mistake are named as
    such at once, rather than waited for until the timeout. ``typed_as_number``: the
    value was given as a number (the unit hint applies), not as a datetime.
    """
    if not math.isfinite(value):
        raise ValueError(f"{shown}: not a time")
    if value < 0:
        if typed_as_number:
            raise ValueError(f"{shown}: not a time (epoch seconds must be >= 0)")
        raise ValueError(f"{shown}: before 1970: a time must be from 1970-01-01T00:00:00Z on")
    if value >= SECONDS_CEILING:
        unit = finer_unit(value) if typed_as_number else None
        if unit is not None:
            name, per_second = unit
            given = f"{float(value) / per_second:.6f}".rstrip("0").rstrip(".")
            raise ValueError(f"{shown}: looks like epoch {name}: give seconds, e.g. {given}")
        raise ValueError(
            f"{shown}: out of range: a time must be before {_LATEST} "
            f"(epoch seconds below {SECONDS_CEILING})"
        )
    return value


Seconds = float | Decimal
"""A number of seconds as an application has it: boto3's resource API reads every number
stored in a table as a Decimal (a Fraction, any real number, is taken too)."""


def _real(value: object) -> float | None:
    """``value`` as a float if it is a real number (an int, a float, a Decimal, a
    Fraction; not a bool, which no one means as seconds); else None. A signalling NaN
    (``Decimal('sNaN')``, which float() refuses) is NaN, refused as NaN is. A finite
    number too large for a float (``10**400``, ``Decimal('1e400')``) is an infinity of
    its sign, which :func:`_overflowed` tells from one given as such."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | Decimal):
        return None
    try:
        return float(value)
    except ValueError:
        return math.nan
    except OverflowError:  # an int or a Fraction; a Decimal becomes inf by itself
        negative = isinstance(value, numbers.Rational) and int(value.numerator) < 0
        return -math.inf if negative else math.inf


def _overflowed(value: object, number: float) -> bool:
    """``number`` (``value`` as :func:`_real` read it) is infinite though ``value`` is
    a finite number: an int or a Fraction is never infinite, a Decimal is when it says
    so. Only an infinity given as one (``math.inf``, ``Decimal('Infinity')``) means it."""
    if not math.isinf(number):
        return False
    if isinstance(value, Decimal):
        return value.is_finite()
    return isinstance(value, numbers.Rational)


def _brief(value: object) -> str:
    """``value``'s repr for a message, cut short: a number too large for a float can
    have hundreds of digits (and an int of more than 4300 has no repr at all)."""
    try:
        shown = repr(value)
    except ValueError:
        return f"(an {type(value).__name__} too large to show)"
    return shown if len(shown) <= 40 else f"{shown[:20]}...{shown[-8:]}"


def _number(value: object, name: str, hint: str) -> float:
    """``value`` as a float if it is a real number (not a bool, not a string that spells
    one); else ValueError naming ``name`` and the value, as for every other bad input,
    rather than the unnamed TypeError that comparing it would raise. A finite number too
    large for a float is refused so, as ``--timeout 1e400`` is, rather than raised as an
    unnamed OverflowError or taken for an infinity no one gave."""
    number = _real(value)
    if number is None:
        raise ValueError(f"{name} {value!r}: not a number of seconds ({hint})")
    if _overflowed(value, number):
        sign = "" if number > 0 else "-"
        raise ValueError(
            f"{name} {_brief(value)}: too large a number of seconds "
            f"(it overflows to {sign}infinity; {hint})"
        )
    return number


def _timeout(value: object, hint: str) -> float:
    """``value`` as the seconds a wait or a read may take: a number from 0 (read once)
    up, ``math.inf`` for no limit; else ValueError naming ``timeout`` and the value. A
    negative one is refused, as ``replicator wait --timeout`` refuses it, rather than
    taken for 0: it comes from a deadline computed wrong (or already past), and reading
    once would hide that behind an answer that looks like a timeout."""
    seconds_ = _number(value, "timeout", hint)
    if math.isnan(seconds_):
        raise ValueError(f"timeout {value!r}: not a number of seconds ({hint})")
    if seconds_ < 0:
        raise ValueError(f"timeout {value!r}: must be a number of seconds >= 0 ({hint})")
    return seconds_


def _name(value: object, name: str, what: str) -> str:
    """``value`` if it is a string with something in it; else ValueError naming ``name``,
    the value and ``what`` it must be. Sent as it is, an empty one is a server error at
    the Query and a non-string a ParamValidationError, neither naming the parameter."""
    if isinstance(value, str) and value.strip():
        return value
    raise ValueError(f"{name} {value!r}: not {what}")


def _names(destination: object, status_table: object, source: object = None) -> None:
    """ValueError unless ``destination`` and ``status_table`` (and ``source``, if given)
    can name what they do."""
    _name(
        destination,
        "destination",
        "a destination's label (a non-empty string: its name in the job, default <region>/<table>)",
    )
    _name(status_table, "status_table", "a table name (a non-empty string: <task_name>-watermark)")
    if source is not None:
        _name(source, "source", "a source table (a non-empty string: <region>/<table>, or its ARN)")


def _shown(moment: Seconds | datetime | None) -> str:
    return moment.isoformat() if isinstance(moment, datetime) else repr(moment)


def to_epoch_us(moment: Seconds | datetime, name: str = "until") -> int:
    """Epoch seconds (or an aware datetime) to whole microseconds, rounded down;
    ValueError naming ``name`` and the value when it is not a time a wait can use. A
    Decimal (or an int, a Fraction) is converted exactly, as a float cannot: the
    ``written_at`` an application stored to the microsecond is that microsecond."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError(f"{name} {_shown(moment)}: has no time zone; give one (such as UTC)")
        value = checked_seconds(
            exact_seconds(moment), f"{name} {_shown(moment)}", typed_as_number=False
        )
        return math.floor(value * US)
    number = _real(moment)
    if number is None:
        raise ValueError(
            f"{name} {moment!r}: expected epoch seconds (a number) or an aware datetime"
        )
    if _overflowed(moment, number):
        if number < 0:
            raise ValueError(f"{name} {_brief(moment)}: not a time (epoch seconds must be >= 0)")
        raise ValueError(
            f"{name} {_brief(moment)}: out of range: a time must be before {_LATEST} "
            f"(epoch seconds below {SECONDS_CEILING})"
        )
    # A Decimal (an int, a Fraction) is checked exactly too: as a float,
    # 99999999999.9999999 would be the ceiling itself, and refused.
    exact = isinstance(moment, Decimal | numbers.Rational) and math.isfinite(number)
    checked = checked_seconds(
        moment if exact else number,
        f"{name} {_shown(moment)}",
        typed_as_number=True,
    )
    return math.floor(checked * US)


MIN_READ_S = 2.0
"""How long a wait gives a read even when less of its timeout is left (so that a timeout
of 0 still reads once): a wait returns within its timeout plus this, however long the
status table takes to answer, or if it never does."""
READ_PATIENCE_S = 5.0
"""How long a read is waited for at most before a later one is started beside it: an
endpoint that stopped answering is asked again rather than waited on for good."""
STALE_PARTS_S = 60.0
"""Parts of a watermark all older than this are named as the likely cause of a timeout,
where the job's settings are not known (see :func:`stale_after_s`)."""

# For the clients this module builds: a read no waiter waits for any more is abandoned,
# not cancelled, so its thread must end by itself soon.
_READ_CONFIG = Config(
    connect_timeout=READ_PATIENCE_S,
    read_timeout=READ_PATIENCE_S,
    retries={"mode": "standard", "total_max_attempts": 2},
)


_RETRY = Backoff(base_s=0.1, cap_s=READ_PATIENCE_S)
"""Pauses after a throttled or failed read, beside the poll interval: throttling is
eased, yet a barrier still asks at least every few seconds."""


def transient(error: ClientError | BotoCoreError) -> bool:
    """An error that a later read may not meet: throttling, server errors and a dropped
    connection (``replicator.aws.errors``' THROTTLED and RETRY), retried until the
    timeout. Refusals (access denied, bad credentials) and an endpoint that cannot be
    reached at all (refused, no such host) are not: waiting for them to mend would turn
    a broken setup into a timeout, so they are raised at once; so is a role whose STS
    endpoint cannot be reached."""
    if isinstance(cause(error), EndpointConnectionError):
        return False
    return classify(error) in (ErrorKind.THROTTLED, ErrorKind.RETRY)


def _transient_problem(status_table: str, error: ClientError | BotoCoreError) -> str:
    if isinstance(error, ClientError):
        message = error_message(error)
        said = f"answered {error_code(error)}" + (f" ({message})" if message else "")
    else:
        said = f"failed: {error}"
    return f"status table {status_table} {said}, retried until the timeout"


@dataclass
class _Read:
    """One Query of the status table, run on its own thread, and its outcome."""

    started: float
    done: threading.Event = field(default_factory=threading.Event)
    watermark: Watermark | None = None
    error: Exception | None = None


@dataclass
class ReadState:
    """What the readers of one destination through one client share: the last answer
    and the Query in flight. It holds no client (a Query's thread holds its reader, and
    so its client, only until the Query ends), so that the process-wide cache of these,
    keyed weakly by client, lets a client go once the application drops it."""

    min_interval_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: Watermark | None = None
    last_at: float = -math.inf
    last_started: float = -math.inf
    reading: _Read | None = None


class WatermarkReader:
    """Reads one destination's parts; concurrent callers share one Query per interval.

    The Query runs on a thread of its own and callers wait for its answer each for as
    long as they have, so no caller waits on a Query beyond its own timeout, whatever
    the client's timeouts and retries are (an application's client may retry a silent
    endpoint for minutes). The lock guards only the state's fields, never a Query.
    Readers given one ``state`` share its answers and its Query in flight.
    """

    def __init__(
        self, table: StatusTable, min_interval_s: float = 0.0, *, state: ReadState | None = None
    ) -> None:
        self.table = table
        self.state = state if state is not None else ReadState(min_interval_s)

    def read(self, timeout: float | None = None, *, after: float = -math.inf) -> Watermark:
        """The last watermark read if it is younger than ``min_interval_s`` and came
        after ``after`` (a ``time.monotonic()``: when the caller had its last answer, so
        that it never takes that answer again), else the answer of a Query (the one in
        flight, unless it has been in flight for longer than ``READ_PATIENCE_S``).
        ``timeout``: seconds to wait for it (None: as long as the client takes). Raises
        StatusTableSilent when it has not come by then, StatusTableMissing, or the
        client's error."""
        state = self.state
        with state.lock:
            now = time.monotonic()
            fresh = now - state.last_at < state.min_interval_s and state.last_at > after
            if state.last is not None and fresh:
                return state.last
            pending = state.reading
            if pending is None or now - pending.started > READ_PATIENCE_S:
                pending = state.reading = _Read(now)
                threading.Thread(
                    target=self._query, args=(pending,), name="watermark-read", daemon=True
                ).start()
        if not pending.done.wait(timeout):
            raise StatusTableSilent(
                f"status table {self.table.name} did not answer within "
                f"{timeout if timeout is not None else 0:.1f}s"
            )
        if pending.error is not None:
            raise pending.error
        assert pending.watermark is not None
        return pending.watermark

    def _query(self, pending: _Read) -> None:
        try:
            parts = self.table.parts()
            self.table.refuse_other_sources(parts)  # two jobs' parts are no one watermark
            pending.watermark = combine(self.table.destination, parts, self.table.place)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                pending.error = StatusTableMissing(
                    f"status table {self.table.name} does not exist: the replicator has "
                    "not published a watermark there (is it running, with "
                    "watermark.enabled?)"
                )
            else:
                pending.error = error
        except Exception as error:  # noqa: BLE001  # raised again by each caller waiting
            pending.error = error
        finally:
            state = self.state
            with state.lock:
                if state.reading is pending:
                    state.reading = None
                # A read overtaken by a later one does not replace that one's answer.
                if pending.watermark is not None and pending.started >= state.last_started:
                    state.last, state.last_started = pending.watermark, pending.started
                    state.last_at = time.monotonic()
            pending.done.set()


@dataclass(frozen=True)
class WaitResult:
    """What a wait found. ``replicated`` is the answer; the rest says why."""

    reached: bool
    """The watermark passed ``until``: every change created by then is settled there."""
    watermark: Watermark | None
    dead_lettered: tuple[DeadLetterRange, ...] = field(default=())
    """Dead-lettered changes created in [since, until] (us): settled, but not applied."""
    waited_s: float = 0.0
    problem: str | None = None
    """Why no watermark could be read, when that is why the wait timed out."""
    unanswered: bool = False
    """No read of the status table was answered during the wait: nothing is known, not
    even that it is behind. ``problem`` says why: the last read's failure (a reset
    connection, an answer that is no Query answer), or, when ``hung``, none returned."""
    hung: bool = False
    """No read returned at all, neither an answer nor a failure: the endpoint hangs, or
    answers slower than the timeout."""
    unread: tuple[UnreadSpan, ...] = field(default=())
    """Spans meeting [since, until] whose changes were never read for the destination
    (a LATEST start, a destination that joined late): passed, but not applied. Not
    reached, the open ``unwatched`` spans that ended the wait: the job runs with the
    watermark off, and nothing follows its changes."""
    stale_after_s: float = STALE_PARTS_S
    """Parts all older than this, at a timeout, are named as the likely cause (see
    :func:`stale_after_s`)."""
    since_us: int | None = None
    """Where the window the dead letters and unread spans were looked for in began."""
    since_given: bool = False
    """Whether the caller gave that start (``since``, ``--since``), or took the default."""

    @property
    def replicated(self) -> bool:
        return self.reached and not self.dead_lettered and not self.unread

    def __bool__(self) -> bool:
        return self.replicated

    def _stale(self) -> str:
        assert self.watermark is not None
        note = stale_note(self.watermark, time.time(), self.stale_after_s)
        return f" ({note})" if note else ""

    def describe(self) -> str:
        if self.watermark is None or self.watermark.watermark_us is None:
            why = redact(self.problem) if self.problem else "no watermark published yet"
            return f"no watermark after {self.waited_s:.2f}s: {why}"
        # As ``replicator watermark`` shows it: the time, then the epoch seconds --until takes.
        us = self.watermark.watermark_us
        shown, epoch = iso(us), f"{seconds(us):.6f}"
        mark = f"watermark {shown}" + ("" if shown == epoch else f" ({epoch})")
        if not self.reached and self.unread:  # an open span: the job runs without it
            return f"{mark} stands, and " + "; ".join(span.describe() for span in self.unread)
        if not self.reached:
            why = f" ({redact(self.problem)})" if self.problem else self._stale()
            return f"timed out after {self.waited_s:.2f}s at {mark}{why}"
        if self.unread or self.dead_lettered:
            reasons = [span.describe() for span in self.unread]
            if self.dead_lettered:
                spans = ", ".join(f"{iso(lo)}..{iso(hi)}" for lo, hi in self.dead_lettered)
                reasons.append(
                    f"changes created in {spans} were dead-lettered at this destination "
                    "(settled, not applied): see the dead letters, then redrive; a "
                    "verify that finds the destination equal clears them here"
                )
            if self.since_us is not None:
                reasons.append(
                    f"the wait looked for these from {iso(self.since_us)}"
                    + (
                        " (since, --since)"
                        if self.since_given
                        else f": since (--since), {DEFAULT_DEAD_LETTER_WINDOW_S:g} s before "
                        "until (--until) by default, moves that start"
                    )
                )
            return f"{mark} passed, but " + "; ".join(reasons)
        return f"replicated: {mark} passed after {self.waited_s:.2f}s"


_clients: dict[tuple[str | None, str | None], DynamoDBClient] = {}
_states: weakref.WeakKeyDictionary[
    DynamoDBClient, dict[tuple[str, str, str | None, str | None], ReadState]
] = weakref.WeakKeyDictionary()
"""Per client (held weakly: an application may make one per request), per status table
and destination: what its waiters share."""
_shared = threading.Lock()


def _client(region: str | None, endpoint_url: str | None) -> DynamoDBClient:
    with _shared:
        key = (region, endpoint_url)
        if key not in _clients:
            _clients[key] = clients.default_dynamodb(region, endpoint_url, _READ_CONFIG)
        return _clients[key]


def shared_reader(
    client: DynamoDBClient,
    status_table: str,
    destination: str,
    poll_s: float,
    destination_table: str | None = None,
    source: str | None = None,
) -> WatermarkReader:
    """A reader sharing its reads with every other one for (client, table, destination)
    in this process. What they share goes with the client: a client the application
    dropped is not kept, and a new one (even at a dropped one's address) reads anew."""
    with _shared:
        by_table = _states.setdefault(client, {})
        state = by_table.setdefault(
            (status_table, destination, destination_table, source), ReadState(poll_s / 2)
        )
        state.min_interval_s = min(state.min_interval_s, poll_s / 2)
    table = StatusTable(client, status_table, destination, destination_table, source)
    return WatermarkReader(table, state=state)


def read_watermark(
    *,
    destination: str,
    status_table: str,
    region: str | None = None,
    client: DynamoDBClient | None = None,
    endpoint_url: str | None = None,
    timeout: Seconds | None = None,
    destination_table: str | None = None,
    source: str | None = None,
) -> Watermark:
    """The destination's watermark now. Raises StatusTableMissing; ValueError, before
    reading anything, for a ``destination`` or ``status_table`` that is not a non-empty
    string, or a ``timeout`` that is not a number (NaN included), is negative, or is a
    finite number too large for a float (``math.inf`` is how to say no limit).

    ``timeout`` None: one Query, waited for as long as the client takes, its error
    raised. Given (seconds, at least ``MIN_READ_S`` is given): the answer is waited for
    at most that long, so that an endpoint that accepts connections and never answers
    cannot hold the caller for the client's own timeouts and retries; throttling and
    server errors are retried meanwhile (the last one is raised when time runs out),
    and StatusTableSilent is raised when no read was answered in time.

    ``source``: as for :func:`wait_until_replicated`; StatusTableShared is raised for a
    part of another source (or, without ``source``, for parts of two sources).
    """
    _names(destination, status_table, source)
    client = client or _client(region, endpoint_url)
    table = StatusTable(client, status_table, destination, destination_table, source)
    reader = WatermarkReader(table)
    if timeout is None:
        return reader.read()
    deadline = time.monotonic() + _timeout(timeout, "None: as long as the client takes")
    attempt = 0
    while True:
        left = max(deadline - time.monotonic(), MIN_READ_S)
        try:
            return reader.read(min(left, READ_PATIENCE_S))
        except StatusTableSilent:
            if time.monotonic() >= deadline:
                raise
        except (ClientError, BotoCoreError) as error:
            if not transient(error) or time.monotonic() >= deadline:
                raise
            time.sleep(min(_RETRY.delay(attempt), max(0.0, deadline - time.monotonic())))
            attempt += 1


def wait_until_replicated(
    until: Seconds | datetime,
    *,
    destination: str,
    status_table: str,
    timeout: Seconds,
    region: str | None = None,
    since: Seconds | datetime | None = None,
    poll_interval: Seconds = DEFAULT_POLL_INTERVAL_S,
    client: DynamoDBClient | None = None,
    endpoint_url: str | None = None,
    destination_table: str | None = None,
    source: str | None = None,
) -> WaitResult:
    """Wait until every source change created at or before ``until`` is settled at
    ``destination``, or ``timeout`` seconds pass.

    ``until``: epoch seconds (fractions allowed) or an aware datetime; take it after
    the write you depend on returned. Seconds (``until``, ``since``, ``timeout``,
    ``poll_interval``) are any real number but a bool: a Decimal too, as boto3's resource
    API reads a number back from a table. ``since`` (default ``until`` minus 60 s): dead
    letters of changes created from then to ``until`` are reported in the result, and
    make ``replicated`` false. ``destination`` is the destination's label in the job
    (its ``name``, default ``<region>/<table>``); ``status_table`` is
    ``<task_name>-watermark`` in the destination's region. Give ``client`` (a boto3
    DynamoDB client for that region) or ``region``. ``destination_table``: the
    destination's ``<region>/<table>``, for a destination with a ``name``: its status
    parts are kept by name, and while they were last claimed for another table (the
    name given to this one since) the wait does not pass on them. ``source``: the
    job's source table, as ``<region>/<table>`` (or the ARN its parts record): a part
    of the destination that records another source was published by another job given
    the same task name, and StatusTableShared is raised at once; without it, only parts
    of two different sources are refused so.

    ``timeout``: seconds from 0 (read once) up, or ``math.inf`` (no limit). A window
    that meets an open ``unwatched`` span (the job runs with ``watermark.enabled:
    false``) ends the wait at once, not reached, that span in ``unread``.

    Throttling and server errors of the status table (the classes the replicator
    retries everywhere) are retried until the timeout, and name themselves in the
    result's ``problem`` if it passes; a refusal (access denied, unreachable) is raised,
    and so is StatusItemUnreadable (an item of the status table that does not read as
    the replicator writes it, such as a hand edit gone wrong) and StatusTableShared (the
    parts of two jobs, see ``source``): waiting cannot mend these.

    Raises ValueError naming the parameter and the value, before reading anything, for
    a ``destination`` or ``status_table`` that is not a non-empty string, a time that is
    not from 1970 to before ``SECONDS_CEILING`` (epoch milliseconds given for seconds
    are named as such), ``since`` after ``until``, a timeout that is not a number
    (None, a string, NaN), is negative, or is a finite number too large for a float
    (``10**400``, ``Decimal('1e400')``: ``math.inf`` means no limit), or a poll
    interval that is not a number of seconds from ``MIN_POLL_INTERVAL_S`` to
    ``MAX_POLL_INTERVAL_S`` (0.01 to 3600).
    """
    _names(destination, status_table, source)
    until_us = to_epoch_us(until, "until")
    since_us = (
        to_epoch_us(since, "since")
        if since is not None
        else until_us - int(DEFAULT_DEAD_LETTER_WINDOW_S * US)
    )
    if since_us > until_us:
        raise ValueError(
            f"since {_shown(since)} is after until {_shown(until)}: the window is inverted"
        )
    poll_s = _number(poll_interval, "poll_interval", "such as 0.25")
    if not (math.isfinite(poll_s) and MIN_POLL_INTERVAL_S <= poll_s <= MAX_POLL_INTERVAL_S):
        raise ValueError(
            f"poll_interval {poll_interval!r}: must be a number of seconds from "
            f"{MIN_POLL_INTERVAL_S:g} to {MAX_POLL_INTERVAL_S:g}"
        )
    timeout_s = _timeout(timeout, "math.inf: no limit")
    client = client or _client(region, endpoint_url)
    reader = shared_reader(client, status_table, destination, poll_s, destination_table, source)
    started = time.monotonic()
    deadline = started + timeout_s
    watermark: Watermark | None = None
    problem: str | None = None
    answered = False
    failed = False  # a read failed (not only took too long): ``problem`` says how
    failures = 0  # transient errors in a row
    # When this wait last had an answer: a read after a sleep cut short by the deadline
    # (a poll interval longer than the time left) is a Query, not that answer again.
    answered_at = -math.inf
    while True:
        patience = max(deadline - time.monotonic(), MIN_READ_S)
        pause = poll_s
        try:
            watermark = reader.read(min(patience, READ_PATIENCE_S), after=answered_at)
            answered, problem, failures, failed = True, None, 0, False
            answered_at = time.monotonic()
        except StatusTableMissing as missing:
            answered, problem, failed = True, str(missing), False
        except StatusTableSilent as silent:
            # The watermark read before, if any, still holds; so does a failure said
            # before, which tells more than a read that has not come back yet.
            problem = problem if failed else str(silent)
        except (ClientError, BotoCoreError) as error:
            if not transient(error):
                raise
            # A throttle or a 5xx is an answer: the table is there and reachable. A dropped
            # connection is not: if nothing else comes, the endpoint could not be read.
            answered = answered or isinstance(error, ClientError)
            problem, failed = _transient_problem(status_table, error), True
            pause = max(poll_s, _RETRY.delay(failures))
            failures += 1
        if watermark is not None and watermark.passes(until_us):
            dead = tuple(watermark.dead_lettered_between(since_us, until_us))
            unread = tuple(watermark.unread_between(since_us, until_us))
            return WaitResult(
                True,
                watermark,
                dead,
                time.monotonic() - started,
                unread=unread,
                since_us=since_us,
                since_given=since is not None,
            )
        if watermark is not None:
            # The job runs with the watermark off: its changes in the window are followed
            # by nothing, and the answer, once it is on again, is this span's.
            unwatched = tuple(s for s in watermark.unread_between(since_us, until_us) if s.open)
            if unwatched:
                return WaitResult(
                    False, watermark, (), time.monotonic() - started, unread=unwatched
                )
        now = time.monotonic()
        if now >= deadline:
            hung = not answered and not failed
            if hung:
                problem = (
                    f"status table {status_table} did not answer in {now - started:.2f}s "
                    "(its endpoint hangs, or is slower than the timeout)"
                )
            elif problem is None and watermark is not None:
                problem = _unpublished(watermark, status_table)
            return WaitResult(False, watermark, (), now - started, problem, not answered, hung=hung)
        time.sleep(min(pause, deadline - now))


def _unpublished(watermark: Watermark, status_table: str) -> str | None:
    """Why there is no watermark yet, from what the status table holds for the destination.

    No part at all looks the same for a destination whose processors have not published
    yet and for a label that no job publishes (the Query sees one destination only, and
    an application may Query nothing else), so both are named.
    """
    if watermark.watermark_us is not None:
        return None
    if not watermark.counted and not watermark.retired:
        return (
            f"status table {status_table} has no part for destination "
            f"{watermark.destination!r}: its replicator has not published yet, or that is "
            "not the destination's label in the job (its name, default <region>/<table>; "
            "check the spelling)"
        )
    return waiting_on(watermark)


def stale_after_s(publish_interval_ms: int, idle_time_between_reads_ms: int) -> float:
    """How long a running job may leave every part unraised: a part is raised at most
    every publish interval, and an idle shard's only after an empty read; three of the
    longer, and never under :data:`STALE_PARTS_S`."""
    return max(STALE_PARTS_S, 3 * max(publish_interval_ms, idle_time_between_reads_ms) / 1000)


def stale_note(watermark: Watermark, now: float, after_s: float = STALE_PARTS_S) -> str:
    """Why the watermark may not be moving, or "" when a part was raised lately: a
    running job raises each shard's part every ``watermark.publish_interval_ms`` (a
    second by default; an idle shard's too) unless a change of the shard is not settled
    at the destination yet, so parts all older than ``after_s`` mean the job is
    stopped or stuck, or a change is held there: the destination fails or refuses its
    writes (retried until they apply, or until they are dead-lettered), or another
    destination does, and the shard's buffer, full of its changes, keeps the shard from
    being read."""
    times = [part.updated_at for part in watermark.counted if part.updated_at]
    if not times:
        return ""
    age = now - max(times)
    if age < after_s:
        return ""
    return (
        f"no shard's part of it was published in the last {age:.0f}s: is the job "
        "running? it publishes every watermark.publish_interval_ms, a second by default, "
        "unless a change is held at the destination, or the shard's reading waits "
        "on another destination of the job that holds its buffer full: see the job's "
        "log, replicator_retries_total (by destination) for writes failed or refused, "
        "and replicator_buffered_changes"
    )
