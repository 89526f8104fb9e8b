"""``wait_until_replicated`` and ``replicator wait`` as an application or a script calls
them: what they refuse before reading anything, and how long they take when the status
table's endpoint accepts connections and never answers."""

from __future__ import annotations

import gc
import math
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber

from replicator.aws.answers import MalformedAnswer, watch_answers
from replicator.watermark import (
    StatusTableSilent,
    WaitResult,
    read_watermark,
    wait_until_replicated,
)
from replicator.watermark.commands import parse_time
from replicator.watermark.parts import Part, combine
from replicator.watermark.table import StatusTable
from replicator.watermark.wait import to_epoch_us
from tests.support.aws import client
from tests.support.e2e import PATIENCE
from tests.support.faults.proxy import FaultProxy
from tests.support.silent import SilentEndpoint, run_from_first_read

PLUS_ONE = timezone(timedelta(hours=1))
MINUS_ONE = timezone(timedelta(hours=-1))


@pytest.mark.parametrize(
    ("times", "message"),
    [
        (
            {"until": 1796097900000},
            "until 1796097900000: looks like epoch milliseconds: give seconds, e.g. 1796097900",
        ),
        ({"until": 1796097900123456}, "looks like epoch microseconds"),
        ({"until": 1e20}, "until 1e+20: out of range"),
        ({"until": datetime(1, 1, 1, tzinfo=PLUS_ONE)}, "until 0001-01-01T00:00:00+01:00: before"),
        ({"until": datetime(9999, 12, 31, 23, 59, 59, tzinfo=MINUS_ONE)}, "out of range"),
        ({"until": 1e9, "since": datetime(1960, 1, 1, tzinfo=UTC)}, "since 1960-01-01"),
        ({"until": -1.0}, "until -1.0: not a time"),
        ({"until": datetime(2026, 1, 1)}, "has no time zone"),
    ],
)
def test_a_time_it_cannot_wait_for_is_refused_before_waiting(
    moto_endpoint: str, times: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        wait_until_replicated(
            **times,
            destination="eu-west-1/replica",
            status_table="wm-times-watermark",
            client=client("dynamodb", "eu-west-1", moto_endpoint),
            timeout=1,
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"until": 1e9, "since": 1e9 + 100}, "since 1000000100.0 is after until 1000000000.0"),
        (
            {"until": datetime(2026, 1, 1, tzinfo=UTC), "since": datetime(2026, 1, 2, tzinfo=UTC)},
            "since 2026-01-02T00:00:00+00:00 is after until 2026-01-01T00:00:00+00:00",
        ),
        ({"until": 1e9, "poll_interval": math.nan}, "poll_interval nan: must be a number of"),
        ({"until": 1e9, "poll_interval": math.inf}, "poll_interval inf: must be a number of"),
        ({"until": 1e9, "poll_interval": 0}, "poll_interval 0: must be a number of seconds"),
        # As the CLI's --poll: no read more often than the table can have news.
        ({"until": 1e9, "poll_interval": 0.001}, "poll_interval 0.001: must be a number of"),
        ({"until": 1e9, "poll_interval": -1}, "from 0.01 to 3600"),
        ({"until": 1e9, "timeout": math.nan}, "timeout nan: not a number of seconds"),
        # Not numbers at all: named, as ValueError, rather than an unnamed TypeError.
        ({"until": 1e9, "timeout": None}, "timeout None: not a number of seconds (math.inf"),
        ({"until": 1e9, "timeout": "5"}, "timeout '5': not a number of seconds"),
        ({"until": 1e9, "timeout": True}, "timeout True: not a number of seconds"),
        ({"until": 1e9, "poll_interval": "1"}, "poll_interval '1': not a number of seconds"),
        # A poll so long that its sleep would overflow, and none a barrier wants.
        (
            {"until": 1e9, "poll_interval": 1e10},
            "poll_interval 10000000000.0: must be a number of seconds from 0.01 to 3600",
        ),
        ({"until": 1e9, "poll_interval": 3600.5}, "from 0.01 to 3600"),
        # A Decimal (boto3's resource API reads numbers so) is checked as a float is.
        ({"until": Decimal("NaN")}, "until Decimal('NaN'): not a time"),
        ({"until": Decimal("sNaN")}, "until Decimal('sNaN'): not a time"),
        ({"until": Decimal("Infinity")}, "until Decimal('Infinity'): not a time"),
        ({"until": Decimal(-1)}, "until Decimal('-1'): not a time (epoch seconds must be >= 0)"),
        ({"until": Decimal(1796097900000)}, "looks like epoch milliseconds: give seconds"),
        ({"until": Decimal("100000000000.0000001")}, "looks like epoch milliseconds"),
        ({"until": 1e9, "timeout": Decimal("NaN")}, "timeout Decimal('NaN'): not a number of"),
        ({"until": 1e9, "poll_interval": Decimal(0)}, "poll_interval Decimal('0'): must be a"),
        ({"until": 1e9, "poll_interval": Decimal("Infinity")}, "from 0.01 to 3600"),
        # Still no numbers: a bool, a complex.
        ({"until": True}, "until True: expected epoch seconds (a number) or an aware datetime"),
        ({"until": 1e9 + 0j}, "expected epoch seconds (a number) or an aware datetime"),
        ({"until": 1e9, "timeout": False}, "timeout False: not a number of seconds"),
        ({"until": 1e9, "timeout": 1 + 0j}, "timeout (1+0j): not a number of seconds"),
    ],
)
def test_an_inverted_window_or_a_poll_or_timeout_that_is_no_number_is_refused(
    moto_endpoint: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        wait_until_replicated(
            **{"timeout": 1, **options},
            destination="eu-west-1/replica",
            status_table="wm-options-watermark",
            client=client("dynamodb", "eu-west-1", moto_endpoint),
        )


@pytest.mark.parametrize("reads", ["wait", "read"])
@pytest.mark.parametrize(
    ("names", "message"),
    [
        ({"destination": ""}, "destination '': not a destination's label"),
        ({"destination": "  "}, "destination '  ': not a destination's label"),
        ({"destination": None}, "destination None: not a destination's label"),
        ({"destination": 5}, "destination 5: not a destination's label"),
        ({"status_table": ""}, "status_table '': not a table name"),
        ({"status_table": " "}, "status_table ' ': not a table name"),
        ({"status_table": None}, "status_table None: not a table name"),
        ({"status_table": b"t-watermark"}, "status_table b't-watermark': not a table name"),
    ],
)
def test_a_destination_or_status_table_that_names_nothing_is_refused_before_reading(
    reads: str, names: dict[str, Any], message: str
) -> None:
    """Named as ValueError, as the other bad inputs are, not sent to the status table
    (where an empty destination is a server error and None a ParamValidationError): the
    stubbed client answers no call, so any read fails the test."""
    stubbed = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url="http://127.0.0.1:1")
    given: dict[str, Any] = {
        "destination": "eu-west-1/replica",
        "status_table": "wm-names-watermark",
        "client": stubbed,
        "timeout": 1,
        **names,
    }
    with Stubber(stubbed), pytest.raises(ValueError, match=re.escape(message)):
        if reads == "wait":
            wait_until_replicated(1e9, **given)
        else:
            read_watermark(**given)


@pytest.mark.parametrize("reads", ["wait", "read"])
@pytest.mark.parametrize(
    ("timeout", "shown"),
    [
        (-1, "-1"),
        (-0.5, "-0.5"),
        (-math.inf, "-inf"),
        (Decimal(-1), "Decimal('-1')"),
        (Decimal("-Infinity"), "Decimal('-Infinity')"),
        (Fraction(-1, 3), "Fraction(-1, 3)"),
    ],
)
def test_a_negative_timeout_is_refused_naming_it_before_reading(
    reads: str, timeout: Any, shown: str
) -> None:
    """``replicator wait --timeout -1`` is a usage error; the API took -1 for 0 (read
    once) and answered "not replicated", as if the wait had timed out. It is refused,
    naming the argument, before anything is read: the stubbed client answers no call."""
    stubbed = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url="http://127.0.0.1:1")
    given: dict[str, Any] = {
        "destination": "eu-west-1/replica",
        "status_table": "wm-timeout-watermark",
        "client": stubbed,
        "timeout": timeout,
    }
    message = f"timeout {shown}: must be a number of seconds >= 0"
    with Stubber(stubbed), pytest.raises(ValueError, match=re.escape(message)):
        if reads == "wait":
            wait_until_replicated(1e9, **given)
        else:
            read_watermark(**given)


@pytest.mark.parametrize("reads", ["wait", "read"])
@pytest.mark.parametrize(
    ("timeout", "shown"),
    [
        (10**400, "10000000000000000000...00000000"),
        (-(10**400), "-1000000000000000000...00000000"),
        (10**5000, "(an int too large to show)"),
        (Fraction(10**400, 3), "Fraction(10000000000...0000, 3)"),
        (Decimal("1e400"), "Decimal('1E+400')"),
        (Decimal("-1e400"), "Decimal('-1E+400')"),
    ],
    ids=["int", "negative-int", "int-of-5001-digits", "fraction", "decimal", "negative-decimal"],
)
def test_a_timeout_too_large_for_a_float_is_refused_naming_it_before_reading(
    reads: str, timeout: Any, shown: str
) -> None:
    """An int or a Fraction too large for a float raised an unnamed OverflowError, and a
    Decimal so large was taken for no limit (``--timeout 1e400`` is refused): each is a
    ValueError naming ``timeout``, before anything is read (the stubbed client answers
    no call). Only an infinity given as such means no limit."""
    stubbed = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url="http://127.0.0.1:1")
    given: dict[str, Any] = {
        "destination": "eu-west-1/replica",
        "status_table": "wm-timeout-watermark",
        "client": stubbed,
        "timeout": timeout,
    }
    message = f"timeout {shown}: too large a number of seconds (it overflows to "
    with Stubber(stubbed), pytest.raises(ValueError, match=re.escape(message)):
        if reads == "wait":
            wait_until_replicated(1e9, **given)
        else:
            read_watermark(**given)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"until": 10**400}, "until 10000000000000000000...00000000: out of range"),
        ({"until": Fraction(10**400)}, "out of range: a time must be before 5138-11-16"),
        ({"until": Decimal("1e400")}, "until Decimal('1E+400'): out of range"),
        (
            {"until": 1e9, "since": -(10**400)},
            "since -1000000000000000000...00000000: not a time (epoch seconds must be >= 0)",
        ),
        (
            {"until": 1e9, "poll_interval": 10**400},
            "poll_interval 10000000000000000000...00000000: too large a number",
        ),
        ({"until": 1e9, "poll_interval": Fraction(10**400)}, "too large a number of seconds"),
    ],
)
def test_a_time_or_poll_too_large_for_a_float_is_refused_naming_it(
    options: dict[str, Any], message: str
) -> None:
    stubbed = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url="http://127.0.0.1:1")
    with Stubber(stubbed), pytest.raises(ValueError, match=re.escape(message)):
        wait_until_replicated(
            **{"timeout": 1, **options},
            destination="eu-west-1/replica",
            status_table="wm-options-watermark",
            client=stubbed,
        )


@pytest.mark.parametrize("timeout", [math.nan, Decimal("NaN"), Decimal("sNaN")])
def test_read_watermark_refuses_a_nan_timeout_naming_it(timeout: Any) -> None:
    stubbed = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url="http://127.0.0.1:1")
    message = f"timeout {timeout!r}: not a number of seconds (None: as long as the client takes)"
    with Stubber(stubbed), pytest.raises(ValueError, match=re.escape(message)):
        read_watermark(
            destination="eu-west-1/replica",
            status_table="wm-timeout-watermark",
            client=stubbed,
            timeout=timeout,
        )


def test_a_timeout_of_zero_or_of_no_limit_is_taken(moto_endpoint: str, status_table: str) -> None:
    """0 reads once, math.inf waits without limit (here: until the watermark passes, at
    the first read); neither is refused with the negative ones."""
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    for timeout in (0, -0.0, Decimal(0), math.inf, Decimal("Infinity")):
        result = wait_at_t0(status_table, ddb, timeout=timeout)
        assert result.replicated, (timeout, result.describe())
        assert read_watermark(
            destination="eu-west-1/replica", status_table=status_table, client=ddb, timeout=timeout
        ).passes(T0)


# -- a status table whose endpoint never answers ----------------------------------------------

# Before each read was bounded a 2 s wait took 31 s (the CLI) and 240 s (the Python API):
# the bound asserted is far above what a bounded wait takes on a loaded machine, and far
# below what an unbounded one took.
SLACK_S = 15.0


def wait_on(endpoint: str, timeout: float, **options: Any) -> tuple[WaitResult, float]:
    started = time.monotonic()
    result = wait_until_replicated(
        time.time(),
        destination="eu-west-1/replica",
        status_table="wm-silent-watermark",
        timeout=timeout,
        **options,
    )
    return result, time.monotonic() - started


def test_a_wait_returns_by_its_timeout_when_the_status_table_never_answers(
    silent_endpoint: str,
) -> None:
    result, took = wait_on(silent_endpoint, 2, region="eu-west-1", endpoint_url=silent_endpoint)
    assert took < 2 + SLACK_S
    assert not result.reached and not result.replicated
    assert result.unanswered
    assert "did not answer" in result.describe(), result.describe()


def test_a_client_of_the_applications_own_with_long_timeouts_is_bounded_too(
    silent_endpoint: str,
) -> None:
    patient = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url=silent_endpoint)
    result, took = wait_on(silent_endpoint, 2, client=patient)  # botocore: 60 s reads, 5 tries
    assert took < 2 + SLACK_S
    assert not result.reached and result.unanswered


def test_a_waiter_does_not_queue_behind_another_waiters_unanswered_read(
    silent_endpoint: str,
) -> None:
    """Waiters on one destination share its reader; one with a short timeout returns by
    it while another, with a longer one, is still waiting on the same silent table."""
    patient = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url=silent_endpoint)
    long_timeout = 10.0
    long_wait: list[float] = []

    def wait_long() -> None:
        long_wait.append(wait_on(silent_endpoint, long_timeout, client=patient)[1])

    first = threading.Thread(target=wait_long)
    first.start()
    try:
        result, took = wait_on(silent_endpoint, 2, client=patient)
        assert took < long_timeout
        assert not result.reached and result.unanswered
        assert not long_wait, "the short wait outlasted the long one"
    finally:
        first.join()
    assert long_wait and long_wait[0] < long_timeout + SLACK_S


def test_the_wait_command_exits_3_by_its_timeout_when_the_status_table_never_answers(
    silent: SilentEndpoint, tmp_path: Path
) -> None:
    silent_endpoint = silent.url
    path = tmp_path / "job.yaml"
    path.write_text(
        "task_name: wm-silent\n"
        # The owner tag's read, before the status table's, finds nothing listening.
        "source: {region: us-east-1, table: src, endpoint_url: 'http://127.0.0.1:1'}\n"
        "destinations:\n"
        f"  - {{region: eu-west-1, table: replica, endpoint_url: '{silent_endpoint}'}}\n"
    )
    waited = run_from_first_read(
        silent,
        [
            *("wait", "--config", str(path)),
            *("--destination", "replica", "--until", f"{time.time():.6f}", "--timeout", "2"),
        ],
    )
    err = waited.stderr
    assert waited.returncode == 3, err
    assert waited.took_s < 2 + SLACK_S
    assert err.startswith("replicator: status table wm-silent-watermark"), err
    assert "did not answer" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


# -- a status table that throttles, or answers 5xx, for a while ---------------------------------

S = 1_000_000
T0 = 1_700_000_000 * S


@pytest.fixture
def proxied(moto_endpoint: str, unique: Callable[[str], str]) -> Iterator[tuple[str, FaultProxy]]:
    """A status table on moto with one part at T0 (for eu-west-1/replica), and a fault
    proxy in front of moto; yields the table's name and the proxy."""
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    table = StatusTable(ddb, f"{unique('wm-faults')}-watermark", "eu-west-1/replica")
    table.ensure_exists()
    table.raise_part("s1", T0, "test:1")
    proxy = FaultProxy(moto_endpoint).start()
    try:
        yield table.name, proxy
    finally:
        proxy.stop()


def once(endpoint: str) -> Any:
    """A client that never retries by itself: every throttle reaches the wait."""
    return boto3.client(
        "dynamodb",
        region_name="eu-west-1",
        endpoint_url=endpoint,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


def until_counted(proxy: FaultProxy, outcome: str, at_least: int = 2) -> None:
    deadline = time.monotonic() + 30
    while proxy.counts("Query")[outcome] < at_least:
        assert time.monotonic() < deadline, proxy.counts("Query")
        time.sleep(0.05)


@pytest.mark.parametrize(
    "fault",
    ["ThrottlingException", "ProvisionedThroughputExceededException", "server_error", "reset"],
)
def test_a_wait_retries_a_throttled_or_failing_status_table_until_it_answers(
    proxied: tuple[str, FaultProxy], fault: str
) -> None:
    name, proxy = proxied
    if fault == "server_error":
        proxy.server_errors()
    elif fault == "reset":
        proxy.resets(1.0)
    else:
        proxy.throttle(1.0, fault)
    found: list[WaitResult | BaseException] = []

    def wait() -> None:
        try:
            found.append(
                wait_until_replicated(
                    T0 / S,
                    destination="eu-west-1/replica",
                    status_table=name,
                    client=once(proxy.url),
                    timeout=30,
                    poll_interval=0.05,
                )
            )
        except BaseException as error:  # asserted below
            found.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    until_counted(proxy, {"server_error": "server_error", "reset": "reset"}.get(fault, "throttled"))
    proxy.pass_through()
    waiter.join(60)
    assert len(found) == 1 and isinstance(found[0], WaitResult), found
    assert found[0].replicated, found[0].describe()


def test_a_status_table_throttled_throughout_times_the_wait_out_and_says_so(
    proxied: tuple[str, FaultProxy],
) -> None:
    name, proxy = proxied
    proxy.throttle(1.0, "ThrottlingException")
    result = wait_until_replicated(
        T0 / S,
        destination="eu-west-1/replica",
        status_table=name,
        client=once(proxy.url),
        timeout=1.5,
        poll_interval=0.05,
    )
    assert not result.reached and not result.unanswered
    reason = result.describe()
    assert f"status table {name} answered ThrottlingException" in reason, reason
    assert "retried until the timeout" in reason, reason


@pytest.mark.parametrize("watched", [False, True], ids=["boto3-client", "checked-client"])
@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("reset", "Connection was closed before we received a valid response"),
        ("garbage", "answered HTTP 200 with a body that is not a well-formed answer"),
    ],
)
def test_a_wait_whose_reads_all_fail_names_the_failure_not_a_hang(
    proxied: tuple[str, FaultProxy], fault: str, says: str, watched: bool
) -> None:
    """Every read failed at once (a reset connection, a 200 with garbage): the timeout's
    reason said the endpoint "did not answer ... hangs", and a boto3 client's garbage,
    parsed into an empty answer, read as a destination with no part ("check the
    spelling")."""
    name, proxy = proxied
    if fault == "reset":
        proxy.resets(1.0)
    else:
        proxy.garbage()
    ddb = watch_answers(once(proxy.url)) if watched else once(proxy.url)
    result = wait_until_replicated(
        T0 / S,
        destination="eu-west-1/replica",
        status_table=name,
        client=ddb,
        timeout=1.5,
        poll_interval=0.05,
    )
    assert not result.reached and result.unanswered
    assert proxy.counts("Query")[fault] >= 2
    reason = result.describe()
    assert f"status table {name} failed: " in reason and says in reason, reason
    assert "retried until the timeout" in reason, reason
    assert "hangs" not in reason and "did not answer" not in reason, reason
    assert "no part for destination" not in reason, reason


def test_a_boto3_client_that_parses_garbage_into_an_empty_answer_is_not_read_as_no_parts(
    proxied: tuple[str, FaultProxy],
) -> None:
    name, proxy = proxied
    proxy.garbage()
    with pytest.raises(MalformedAnswer, match=r"\(neither Items nor Count: not a Query answer\)"):
        read_watermark(destination="eu-west-1/replica", status_table=name, client=once(proxy.url))


def test_a_refusal_is_raised_at_once_not_retried() -> None:
    """An error no later read can mend (access denied) is raised, not waited out."""
    denied = once("http://127.0.0.1:1")
    stubber = Stubber(denied)
    stubber.add_client_error("query", "AccessDeniedException", "not allowed", 400)
    started = time.monotonic()
    with stubber, pytest.raises(ClientError, match="AccessDeniedException"):
        wait_until_replicated(
            T0 / S,
            destination="eu-west-1/replica",
            status_table="wm-denied-watermark",
            client=denied,
            timeout=20,
        )
    assert time.monotonic() - started < 10


def test_an_endpoint_that_refuses_connections_is_raised_at_once_not_retried() -> None:
    """Unreachable is not transient for a wait: exit 3 at once, not a timeout later."""
    started = time.monotonic()
    with pytest.raises(EndpointConnectionError):
        wait_until_replicated(
            T0 / S,
            destination="eu-west-1/replica",
            status_table="wm-refused-watermark",
            client=once("http://127.0.0.1:1"),  # nothing listens there
            timeout=20,
        )
    assert time.monotonic() - started < 10


def test_read_watermark_with_a_timeout_is_bounded_and_checks_it(silent_endpoint: str) -> None:
    """Without a timeout it waits as long as the client takes (botocore's defaults: a
    minute per attempt); with one, at most that plus MIN_READ_S."""
    patient = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url=silent_endpoint)
    started = time.monotonic()
    with pytest.raises(StatusTableSilent):
        read_watermark(
            destination="eu-west-1/replica",
            status_table="wm-silent-watermark",
            client=patient,
            timeout=1,
        )
    assert time.monotonic() - started < 1 + SLACK_S
    with pytest.raises(ValueError, match=re.escape("timeout '5': not a number of seconds")):
        read_watermark(
            destination="eu-west-1/replica",
            status_table="wm-silent-watermark",
            client=patient,
            timeout="5",  # type: ignore[arg-type]
        )


# -- an application that makes a client for each wait -------------------------------------------


@pytest.fixture
def status_table(moto_endpoint: str, unique: Callable[[str], str]) -> str:
    """A status table on moto with one part at T0, for eu-west-1/replica."""
    table = StatusTable(
        client("dynamodb", "eu-west-1", moto_endpoint),
        f"{unique('wm-clients')}-watermark",
        "eu-west-1/replica",
    )
    table.ensure_exists()
    table.raise_part("s1", T0, "test:1")
    return table.name


def wait_at_t0(status_table: str, ddb: Any, **options: Any) -> WaitResult:
    return wait_until_replicated(
        T0 / S, destination="eu-west-1/replica", status_table=status_table, client=ddb, **options
    )


def reads_ended() -> None:
    """Every read's thread has ended (it holds its client until then)."""
    for thread in threading.enumerate():
        if thread.name == "watermark-read":
            thread.join(30)
            assert not thread.is_alive(), "a read of moto did not end in 30 s"


def test_a_client_made_for_each_wait_is_let_go_after_it(
    moto_endpoint: str, status_table: str
) -> None:
    """A wait keeps nothing of a client the application dropped (one client per request
    or per Lambda invocation): before, every client was kept for good, with its reader,
    at about 0.3 MB each."""
    dropped: list[weakref.ref[Any]] = []
    for _ in range(20):
        fresh = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url=moto_endpoint)
        result = wait_at_t0(status_table, fresh, timeout=30)
        assert result.replicated, result.describe()
        dropped.append(weakref.ref(fresh))
        del fresh
    reads_ended()
    gc.collect()
    kept = [ref for ref in dropped if ref() is not None]
    assert not kept, f"{len(kept)} of {len(dropped)} dropped clients are still held"


def test_a_long_lived_client_shares_its_reads_and_a_new_client_reads_anew(
    moto_endpoint: str, status_table: str
) -> None:
    """Waits with one client share a read within half the poll interval; a client made
    after another was dropped (and that may have its address) never gets its answer."""
    kept = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url=moto_endpoint)
    stubber = Stubber(kept)
    with stubber:  # a second Query would find no answer left in the stubber
        stubber.add_response("query", {"Items": [], "Count": 0, "ScannedCount": 0})
        for _ in range(3):
            early = wait_at_t0(status_table, kept, timeout=0, poll_interval=600)
            assert not early.reached and early.watermark is not None
        stubber.assert_no_pending_responses()
    del kept, stubber, early
    reads_ended()
    gc.collect()
    for _ in range(3):
        fresh = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url=moto_endpoint)
        result = wait_at_t0(status_table, fresh, timeout=30, poll_interval=600)
        assert result.replicated, result.describe()
        del fresh
        reads_ended()
        gc.collect()


# -- numbers as boto3's resource API reads them ----------------------------------------------------


def test_a_time_read_back_from_a_table_as_a_decimal_is_waited_for(
    moto_endpoint: str, status_table: str, unique: Callable[[str], str]
) -> None:
    """boto3's resource API reads every stored number as a Decimal: a ``written_at`` read
    back from a table was refused ("expected epoch seconds (a number) ..."), and so were
    a timeout and a poll interval read from one."""
    dynamodb = boto3.resource("dynamodb", region_name="eu-west-1", endpoint_url=moto_endpoint)
    events = dynamodb.create_table(
        TableName=unique("wm-events"),
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    events.put_item(
        Item={"id": "a", "written_at": Decimal(T0) / S, "timeout": 30, "poll": Decimal("0.05")}
    )
    item = events.get_item(Key={"id": "a"}, ConsistentRead=True)["Item"]
    assert isinstance(item["written_at"], Decimal) and isinstance(item["timeout"], Decimal)
    ddb = client("dynamodb", "eu-west-1", moto_endpoint)
    result = wait_until_replicated(
        item["written_at"],
        since=item["written_at"] - 60,
        destination="eu-west-1/replica",
        status_table=status_table,
        client=ddb,
        timeout=item["timeout"],
        poll_interval=item["poll"],
    )
    assert result.replicated, result.describe()
    # Exactly: a microsecond after the part is not passed (as a float it rounded down).
    later = wait_until_replicated(
        Decimal(T0 + 1) / S,
        destination="eu-west-1/replica",
        status_table=status_table,
        client=ddb,
        timeout=Decimal(0),
    )
    assert not later.reached, later.describe()
    watermark = read_watermark(
        destination="eu-west-1/replica",
        status_table=status_table,
        client=ddb,
        timeout=Decimal("30"),
    )
    assert watermark.watermark_us == T0
    assert wait_at_t0(status_table, ddb, timeout=Fraction(30)).replicated


# -- a poll interval longer than the time left ----------------------------------------------------


def test_a_wait_reads_once_more_at_its_deadline_however_long_its_poll_interval(
    moto_endpoint: str, status_table: str
) -> None:
    """A poll interval longer than the timeout sleeps until the deadline, and the read
    there is a Query, not the answer of the read before it (which the reader shares for
    half a poll interval): a watermark that passed ``until`` meanwhile is replicated.
    The part is raised as soon as the first Query is answered, before the wait has seen
    its answer; so only a second read can find it, whenever the first one ends."""
    ddb = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url=moto_endpoint)
    table = StatusTable(
        client("dynamodb", "eu-west-1", moto_endpoint), status_table, "eu-west-1/replica"
    )
    queries: list[str] = []

    def raise_part_after_the_first(**_: Any) -> None:
        queries.append("Query")
        if len(queries) == 1:
            table.raise_part("s1", T0 + 2 * S, "test:1", raised_before=True)

    ddb.meta.events.register("after-call.dynamodb.Query", raise_part_after_the_first)
    result = wait_until_replicated(
        (T0 + S) / S,
        destination="eu-west-1/replica",
        status_table=status_table,
        client=ddb,
        timeout=2 * PATIENCE,
        poll_interval=3600,
    )
    assert result.replicated, result.describe()
    assert result.watermark is not None and result.watermark.watermark_us == T0 + 2 * S
    assert len(queries) == 2, queries


def test_a_timeout_names_parts_no_processor_has_published_for_a_minute() -> None:
    """A wait against a stopped job times out at a watermark that no longer moves: the
    message says when its parts were last published, which points at the job, not at
    replication being slow. Parts published a moment ago say nothing of the kind."""
    now = time.time()
    stopped = combine("d", [Part("d", "s1", watermark_us=1, updated_at=now - 600)])
    said = WaitResult(False, stopped, waited_s=3.0).describe()
    assert said.startswith(
        "timed out after 3.00s at watermark 1970-01-01T00:00:00.000001Z (0.000001) (no shard's part"
    )
    assert "published in the last 600s: is the job running?" in said
    # A running job whose destination refuses a change's writes does not raise the part
    # either: the message names that too.
    assert "unless a change is held at the destination" in said
    assert "replicator_retries_total" in said
    # Nor one whose reading waits on another destination that keeps the buffer full.
    assert "another destination of the job that holds its buffer full" in said
    assert "replicator_buffered_changes" in said
    running = combine("d", [Part("d", "s1", watermark_us=1, updated_at=now - 2)])
    assert (
        WaitResult(False, running, waited_s=3.0)
        .describe()
        .endswith("watermark 1970-01-01T00:00:00.000001Z (0.000001)")
    )


def test_a_wait_names_its_times_as_iso_and_a_watermark_beyond_any_date_as_seconds() -> None:
    """Every time in the message is an ISO time, the watermark with the epoch seconds
    ``--until`` takes beside it; one no date holds (a status item edited by hand) is still
    said, in seconds, not a crash."""
    now = time.time()
    mark = combine("d", [Part("d", "s1", watermark_us=3 * S + 5, updated_at=now)])
    said = WaitResult(True, mark, dead_lettered=((S, 2 * S),)).describe()
    assert said == (
        "watermark 1970-01-01T00:00:03.000005Z (3.000005) passed, but changes created in "
        "1970-01-01T00:00:01.000000Z..1970-01-01T00:00:02.000000Z were dead-lettered at this "
        "destination (settled, not applied): see the dead letters, then redrive; a verify "
        "that finds the destination equal clears them here"
    )
    # A wait's own result names the window it looked in: a span or letter ending before
    # the --until asked was reached by the default --since.
    windowed = WaitResult(True, mark, dead_lettered=((S, 2 * S),), since_us=S // 2).describe()
    assert windowed == said + (
        "; the wait looked for these from 1970-01-01T00:00:00.500000Z: since (--since), 60 s "
        "before until (--until) by default, moves that start"
    )
    given = WaitResult(
        True, mark, dead_lettered=((S, 2 * S),), since_us=S // 2, since_given=True
    ).describe()
    assert (
        given
        == said + "; the wait looked for these from 1970-01-01T00:00:00.500000Z (since, --since)"
    )
    huge = combine("d", [Part("d", "s1", watermark_us=300_000_000 * 10**9, updated_at=now)])
    assert WaitResult(True, huge).describe() == (
        "replicated: watermark 300000000000.000000 passed after 0.00s"
    )


def test_importing_the_wait_loads_no_job_file_schema() -> None:
    """Applications import the wait in request handlers (a Lambda's cold start): it reads
    no job file, so the schema's libraries must not be loaded with it."""
    import subprocess
    import sys

    code = (
        "import sys; from replicator.watermark import wait_until_replicated; "
        "print(sorted(m for m in ('pydantic', 'yaml', 'replicator.config.model') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize(
    ("until", "epoch_us"),
    [
        # As floats, the first is the ceiling itself (refused as milliseconds) and the
        # second the next second: a Decimal or a Fraction is taken exactly, then rounded
        # down to the microsecond as every time is.
        (Decimal("99999999999.9999999"), 99_999_999_999_999_999),
        (Decimal("1796466592.9999999"), 1_796_466_592_999_999),
        (Fraction(3_592_933_185, 2), 1_796_466_592_500_000),
        (1796466592.25, 1_796_466_592_250_000),
    ],
)
def test_a_time_given_exactly_is_taken_to_the_microsecond_below_it(
    until: Any, epoch_us: int
) -> None:
    assert to_epoch_us(until) == epoch_us


@pytest.mark.parametrize(
    ("text", "epoch_us"),
    [
        # As a float (datetime.timestamp()), the first was the ceiling itself, refused as
        # out of range though before it, and the second 7 microseconds later.
        ("5138-11-16T09:46:39.999999Z", 99_999_999_999_999_999),
        ("5138-11-16T09:46:39.000009Z", 99_999_999_999_000_009),
        ("2026-12-01T17:00:00.000001+01:00", 1_796_140_800_000_001),
    ],
)
def test_an_iso_time_is_taken_exactly_to_its_microsecond(text: str, epoch_us: int) -> None:
    """``wait --until`` and an aware datetime given to ``wait_until_replicated``."""
    assert to_epoch_us(parse_time(text, "--until")) == epoch_us
    assert to_epoch_us(datetime.fromisoformat(text)) == epoch_us


def test_a_number_with_an_exponent_beyond_a_decimals_is_read_not_a_traceback() -> None:
    """``--until 1e-99999999999999999999999``: a float reads it (0), a Decimal does not,
    and the command ended in a traceback (exit 1)."""
    assert to_epoch_us(parse_time("1e-99999999999999999999999", "--until")) == 0
    with pytest.raises(ValueError, match="'1e99999999999999999999999': not a time"):
        parse_time("1e99999999999999999999999", "--until")
