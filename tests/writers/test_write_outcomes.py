"""What a write's outcome is when the answer is late, the clock is off, the user's resolver
raises, or the lease is gone: applied, retried, dead-lettered or cancelled, never
misfiled, and never a dead letter for a problem that is not the change's own."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import structlog
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from replicator.aws import clients
from replicator.aws.backoff import Backoff
from replicator.aws.clients import Place
from replicator.aws.errors import ErrorKind, classify, may_have_landed, refused_for_the_clock
from replicator.buffer import ChangeBuffer
from replicator.config.model import ConflictConfig
from replicator.deadletter import FileDeadLetters
from replicator.deadletter.failed import DeadLetterer
from replicator.decode import decode
from replicator.exceptions import DestinationRefused, DestinationUnavailable
from replicator.metrics import Metrics
from replicator.pipeline import ShardPipeline
from replicator.rules import IN_STREAM_ORDER, rule_for
from replicator.writers import destination
from replicator.writers.destination import DestinationWriter
from replicator.writers.outcomes import Outcome
from replicator.writers.refusals import key_schema_differs, keys_not_of
from replicator.writers.wire import WireWriteClient
from tests.support.aws import client, create_table
from tests.support.faults.proxy import FaultProxy
from tests.support.metrics import sample
from tests.support.records import daemon_record, put, remove, stream_record

REGION = "eu-west-1"
LWW = {"policy": "last_writer_wins", "timestamp_attribute": "ts"}
VERSION = {"policy": "version", "version_attribute": "ts"}


def client_error(code: str, message: str = "", item: dict[str, Any] | None = None) -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    if item is not None:
        response["Item"] = item
    return ClientError(response, "PutItem")  # type: ignore[arg-type]


class ScriptedClient:
    """Raises the scripted errors in turn, then answers every call with success."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.lock = threading.Lock()

    def _answer(self, **kwargs: Any) -> dict[str, Any]:
        with self.lock:
            self.calls += 1
            if self.errors:
                raise self.errors.pop(0)
        return {}

    put_item = _answer
    delete_item = _answer


def writer_for(
    client: Any, tmp_path: Path, metrics: Metrics, table: str = "t", **conflict: Any
) -> DestinationWriter:
    return DestinationWriter(
        label="dest",
        table=table,
        region=REGION,
        client=client,
        rule=rule_for(ConflictConfig(**(conflict or {"policy": "overwrite"})), "origin"),
        metrics=metrics,
        backoff=Backoff(0.0001, 0.001),
    )


def outcomes(metrics: Metrics, outcome: str) -> float:
    return sum(
        sample(metrics, "replicator_writes_total", destination="dest", op=op, outcome=outcome)
        for op in ("put", "delete")
    )


# -- a write whose answer was lost ------------------------------------------------------------


@pytest.mark.parametrize("conflict", [LWW, VERSION, {"policy": "overwrite"}])
def test_a_write_answered_after_the_read_timeout_is_applied_not_a_lost_conflict(
    proxy: FaultProxy,
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    metrics: Metrics,
    conflict: dict[str, str],
) -> None:
    ddb = client("dynamodb", REGION, moto_endpoint)
    table = unique("late")
    create_table(ddb, table, stream=None)
    botocore_client = clients.dynamodb(Place(REGION, proxy.url), sdk_retries=False)
    # The answer is held for 3 s against a 1 s read timeout; the retry (answered at once)
    # meets the write that already landed.
    direct = WireWriteClient(
        botocore_client, max_connections=2, connect_timeout=2.0, read_timeout=1.0
    )
    writer = writer_for(direct, tmp_path, metrics, table, **conflict)

    proxy.slow_answer_once(3.0)
    assert writer.write(decode(put("a", 1, ts=10, origin="us-east-1"))).outcome is Outcome.APPLIED
    assert proxy.counts("PutItem")["slow_answer_200"] == 1
    assert sample(metrics, "replicator_retries_total", destination="dest", reason="network") >= 1

    proxy.slow_answer_once(3.0)
    assert (
        writer.write(decode(remove("a", 2, ts=10, origin="us-east-1"))).outcome is Outcome.APPLIED
    )
    assert proxy.counts("DeleteItem")["slow_answer_200"] == 1

    assert outcomes(metrics, "applied") == 2
    assert outcomes(metrics, "conflict_lost") == 0
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "a"}})


def test_a_lost_condition_that_finds_the_changes_own_image_is_applied(
    tmp_path: Path, metrics: Metrics
) -> None:
    change = decode(put("a", 1, ts=10, origin="us-east-1", n={"N": "1.50"}))
    assert change.new_image is not None
    # What the destination holds is the change's image, written as DynamoDB stores it
    # (a number in another spelling): the first attempt landed, its answer was lost.
    landed = {**change.new_image, "n": {"N": "1.5"}}
    scripted = ScriptedClient(
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        client_error("ConditionalCheckFailedException", "The conditional request failed", landed),
    )
    writer = writer_for(scripted, tmp_path, metrics, **LWW)
    assert writer.write(change).outcome is Outcome.APPLIED
    assert outcomes(metrics, "conflict_lost") == 0
    assert (
        sample(metrics, "replicator_retries_total", destination="dest", reason="already_applied")
        == 1
    )


def newer_ts(incoming: Any, existing: Any) -> bool:
    """Test resolver: the incoming put only when its 'ts' is higher than the item's."""
    if existing is None or incoming.new_image is None:
        return True
    return int(incoming.new_image["ts"]["N"]) > int(existing["ts"]["N"])


class LandingClient:
    """A table of one item whose first PutItem fails with ``error`` (a read timeout unless
    told). When ``lands``, that put was applied all the same (its answer lost); else it
    was not, and another writer put ``meanwhile`` there instead (a backfill's copy, a
    repair). Reads answer what the table holds."""

    def __init__(
        self,
        error: BaseException | None = None,
        *,
        lands: bool = True,
        meanwhile: dict[str, Any] | None = None,
    ) -> None:
        self.error = error or ReadTimeoutError(endpoint_url="http://127.0.0.1:1")
        self.lands = lands
        self.meanwhile = meanwhile
        self.item: dict[str, Any] | None = None
        self.puts = 0

    def get_item(self, **kwargs: Any) -> dict[str, Any]:
        return {} if self.item is None else {"Item": self.item}

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self.puts += 1
        if self.puts == 1:
            self.item = kwargs["Item"] if self.lands else self.meanwhile
            raise self.error
        self.item = kwargs["Item"]
        return {}


def stamp_when_newer(incoming: Any, existing: Any) -> Any:
    """Test resolver: the incoming put marked as resolved when its 'ts' is higher than
    the item's (or there is none); else the item stays."""
    if incoming.new_image is None:
        return True
    if existing is None or int(incoming.new_image["ts"]["N"]) > int(existing["ts"]["N"]):
        return {**incoming.new_image, "resolved": {"BOOL": True}}
    return False


def soft_delete(incoming: Any, existing: Any) -> Any:
    """Test resolver: a delete becomes a marker item; a put is written as it is."""
    if incoming.new_image is None:
        return {**incoming.keys, "deleted": {"BOOL": True}}
    return True


@pytest.mark.parametrize(
    ("resolver", "change", "mark"),
    [
        ("newer_ts", put("a", 1, ts=10), None),
        ("stamp_when_newer", put("a", 1, ts=10), "resolved"),
        ("soft_delete", remove("a", 1, ts=10), "deleted"),
    ],
)
def test_a_custom_write_whose_answer_was_lost_is_applied_not_lost_to_itself(
    tmp_path: Path, metrics: Metrics, resolver: str, change: dict[str, Any], mark: str | None
) -> None:
    """The retry reads the item the first attempt wrote. Asked about it, a resolver that
    keeps the destination's item unless the incoming one is newer would keep it: a lost
    conflict of the change against its own write. It is the change's write, applied.
    The other two write their own item (``mark``), not the change's outcome: compared
    with that, the write was not recognised, and the resolver was asked again."""
    landing = LandingClient()
    writer = writer_for(
        landing,
        tmp_path,
        metrics,
        policy="custom",
        resolver=f"tests.writers.test_write_outcomes:{resolver}",
    )
    assert writer.write(decode(change)).outcome is Outcome.APPLIED
    assert landing.puts == 1
    assert landing.item is not None
    assert mark is None or landing.item[mark] == {"BOOL": True}
    assert outcomes(metrics, "conflict_lost") == 0
    assert (
        sample(metrics, "replicator_retries_total", destination="dest", reason="already_applied")
        == 1
    )


def server_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutItem",
    )


URL = "http://127.0.0.1:1"
# Failed writes that may have been applied all the same, and refusals that say nothing was.
MAY_HAVE_LANDED = [
    ReadTimeoutError(endpoint_url=URL),
    ConnectionClosedError(endpoint_url=URL),
    server_error("InternalServerError", 500),
    server_error("ServiceUnavailable", 503),
]
# Refused writes that are retried (each at most once here: a denial stays under its limit).
REFUSED = [
    client_error("ProvisionedThroughputExceededException", "slow down"),
    client_error("ThrottlingException"),
    client_error("AccessDeniedException"),
    client_error("ResourceNotFoundException"),
    client_error("TransactionConflictException"),
    EndpointConnectionError(endpoint_url=URL),
    ConnectTimeoutError(endpoint_url=URL),
]
NOT_LANDED = [
    *REFUSED,
    client_error("ValidationException"),
    client_error("ConditionalCheckFailedException"),
]


def error_id(error: BaseException) -> str:
    return (
        error.response["Error"]["Code"] if isinstance(error, ClientError) else type(error).__name__
    )


@pytest.mark.parametrize("error", MAY_HAVE_LANDED + NOT_LANDED, ids=error_id)
def test_which_failed_writes_may_have_landed(error: BaseException) -> None:
    """One answer for both transports: the direct path raises botocore's errors."""
    assert may_have_landed(error) is (error in MAY_HAVE_LANDED)


# A first attempt that fails with ``error``, and whether the write landed all the same.
FAILED_FIRST = pytest.mark.parametrize(
    ("error", "lands"),
    [(error, True) for error in MAY_HAVE_LANDED] + [(error, False) for error in REFUSED],
    ids=lambda value: error_id(value) if isinstance(value, BaseException) else str(value),
)


@FAILED_FIRST
def test_a_custom_write_is_in_doubt_only_after_an_answer_that_may_hide_it_landed(
    tmp_path: Path, metrics: Metrics, error: BaseException, lands: bool
) -> None:
    """A refused write (throttled, denied, no table, no connection) wrote nothing: the
    same image found there next is another writer's, ``unchanged`` (the resolver keeps
    it), not this write's, counted ``applied`` and ``already_applied``."""
    change = decode(put("a", 1, ts=10))
    assert change.new_image is not None
    table = LandingClient(error, lands=lands, meanwhile=dict(change.new_image))
    writer = writer_for(
        table,
        tmp_path,
        metrics,
        policy="custom",
        resolver="tests.writers.test_write_outcomes:newer_ts",
    )
    expected = Outcome.APPLIED if lands else Outcome.UNCHANGED
    assert writer.write(change).outcome is expected
    assert table.puts == 1
    assert outcomes(metrics, "conflict_lost") == 0
    already = sample(
        metrics, "replicator_retries_total", destination="dest", reason="already_applied"
    )
    assert already == (1 if lands else 0)


class LateLanding(LandingClient):
    """A :class:`LandingClient` whose first PutItem times out while still in flight: it
    is carried out only when the second PutItem arrives, after the retry's read found
    nothing. That second put then fails its condition on the first one's item, or is
    throttled; any later put is applied."""

    def __init__(self, second: str) -> None:
        super().__init__()
        self.second = second
        self.first: dict[str, Any] | None = None

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        if self.puts == 0:
            self.puts += 1
            self.first = kwargs["Item"]
            raise self.error
        if self.puts == 1:
            self.puts += 1
            self.item = self.first
            if self.second == "condition":
                raise client_error("ConditionalCheckFailedException", "", self.item)
            raise client_error("ProvisionedThroughputExceededException", "slow down")
        return super().put_item(**kwargs)


@pytest.mark.parametrize(
    ("resolver", "second"),
    [
        ("newer_ts", "condition"),
        ("stamp_when_newer", "condition"),
        ("newer_ts", "throttled"),
        ("stamp_when_newer", "throttled"),
    ],
)
def test_a_custom_write_that_lands_after_the_retry_read_is_still_applied(
    tmp_path: Path, metrics: Metrics, resolver: str, second: str
) -> None:
    """The first write timed out and the retry's read did not show it, but it was still
    in flight: the item the re-send's failed condition returns, or the next read, is that
    write's. It stays in doubt for the whole change, so the resolver is not asked about
    its own item (a lost conflict, or ``unchanged`` for an identical image)."""
    table = LateLanding(second)
    writer = writer_for(
        table,
        tmp_path,
        metrics,
        policy="custom",
        resolver=f"tests.writers.test_write_outcomes:{resolver}",
    )
    assert writer.write(decode(put("a", 1, ts=10))).outcome is Outcome.APPLIED
    assert table.puts == 2
    assert table.item is not None and table.item == table.first
    assert outcomes(metrics, "conflict_lost") == 0
    assert outcomes(metrics, "unchanged") == 0
    assert (
        sample(metrics, "replicator_retries_total", destination="dest", reason="already_applied")
        == 1
    )


@FAILED_FIRST
def test_an_ordered_write_is_in_doubt_only_after_an_answer_that_may_hide_it_landed(
    tmp_path: Path, metrics: Metrics, error: BaseException, lands: bool
) -> None:
    """The same under last_writer_wins: the retry's condition fails on the change's own
    image. After a refusal another writer put it there (``unchanged``); after a timeout
    or a 5xx it may be the first attempt's (``applied``)."""
    change = decode(put("a", 1, ts=10, origin="us-east-1"))
    assert change.new_image is not None
    scripted = ScriptedClient(
        error, client_error("ConditionalCheckFailedException", "", dict(change.new_image))
    )
    writer = writer_for(scripted, tmp_path, metrics, **LWW)
    expected = Outcome.APPLIED if lands else Outcome.UNCHANGED
    assert writer.write(change).outcome is expected
    already = sample(
        metrics, "replicator_retries_total", destination="dest", reason="already_applied"
    )
    assert already == (1 if lands else 0)


def test_a_lost_condition_that_finds_another_image_is_still_a_lost_conflict(
    tmp_path: Path, metrics: Metrics
) -> None:
    change = decode(put("a", 1, ts=10, origin="us-east-1"))
    assert change.new_image is not None
    newer = {**change.new_image, "ts": {"N": "11"}}
    scripted = ScriptedClient(client_error("ConditionalCheckFailedException", "", newer))
    writer = writer_for(scripted, tmp_path, metrics, **LWW)
    assert writer.write(change).outcome is Outcome.CONFLICT_LOST
    assert outcomes(metrics, "applied") == 0


def test_a_retried_delete_that_finds_the_item_gone_is_applied(
    tmp_path: Path, metrics: Metrics
) -> None:
    scripted = ScriptedClient(
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        client_error("ConditionalCheckFailedException", "", None),
    )
    writer = writer_for(scripted, tmp_path, metrics, **LWW)
    assert writer.write(decode(remove("a", 2, ts=10))).outcome is Outcome.APPLIED
    assert outcomes(metrics, "conflict_lost") == 0


# -- clock skew and authentication ------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "UnrecognizedClientException",
    ],
)
def test_signature_and_credential_refusals_are_retried_never_dead_lettered(
    tmp_path: Path, metrics: Metrics, code: str
) -> None:
    assert classify(client_error(code)) is ErrorKind.AUTH
    scripted = ScriptedClient(*[client_error(code, "Signature expired") for _ in range(3)])
    writer = writer_for(scripted, tmp_path, metrics)
    assert writer.write(decode(put("a", 1))).outcome is Outcome.APPLIED
    assert scripted.calls == 4
    reasons = ("clock_skew", "auth")
    retried = sum(
        sample(metrics, "replicator_retries_total", destination="dest", reason=reason)
        for reason in reasons
    )
    assert retried == 3


def test_a_signature_refused_for_good_with_the_clocks_in_step_names_the_credentials(
    tmp_path: Path, metrics: Metrics
) -> None:
    wrong_key = [
        client_error(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        )
        for _ in range(100)
    ]
    writer = writer_for(ScriptedClient(*wrong_key), tmp_path, metrics)
    with pytest.raises(DestinationRefused, match=r"Check the credentials") as refused:
        writer.write(decode(put("a", 1)))
    assert "NTP" not in str(refused.value)
    assert sample(metrics, "replicator_retries_total", destination="dest", reason="auth") == (
        writer.refusal_limit - 1
    )


def test_persistent_clock_skew_stops_the_worker_with_a_clear_message(
    tmp_path: Path, metrics: Metrics
) -> None:
    skewed = [
        client_error("InvalidSignatureException", "Signature expired: 20261130T101010Z")
        for _ in range(100)
    ]
    writer = writer_for(ScriptedClient(*skewed), tmp_path, metrics)
    with pytest.raises(DestinationRefused, match=r"clock \(NTP\)"):
        writer.write(decode(put("a", 1)))
    assert sample(metrics, "replicator_retries_total", destination="dest", reason="clock_skew") == (
        writer.refusal_limit - 1
    )


def _send_json(
    handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any], now: datetime
) -> None:
    """Answer with ``body``, dated ``now`` (the server's clock)."""
    data = json.dumps(body).encode()
    handler.send_response_only(status)
    handler.send_header("Date", format_datetime(now, usegmt=True))
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class _SkewCheckingHandler(BaseHTTPRequestHandler):
    """A DynamoDB stand-in whose clock runs an hour ahead: it refuses a request signed
    more than 5 minutes from its own time, as DynamoDB does, and names its time in Date."""

    offset = timedelta(hours=1)
    accepted: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        server_now = datetime.now(UTC) + self.offset
        signed_at = datetime.strptime(self.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=UTC
        )
        if abs(server_now - signed_at) > timedelta(minutes=5):
            status, body = (
                400,
                {
                    "__type": "com.amazon.coral.service#InvalidSignatureException",
                    "message": "Signature expired",
                },
            )
        else:
            status, body = 200, {}
            self.accepted.append(self.headers["X-Amz-Date"])
        _send_json(self, status, body, server_now)

    def log_message(self, *args: Any) -> None:
        pass


def _direct_writer_against(
    handler: type[BaseHTTPRequestHandler], tmp_path: Path, metrics: Metrics
) -> tuple[ThreadingHTTPServer, WireWriteClient, DestinationWriter]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    botocore_client = clients.dynamodb(Place(REGION, url), sdk_retries=False)
    direct = WireWriteClient(
        botocore_client, max_connections=2, connect_timeout=2.0, read_timeout=5.0
    )
    return server, direct, writer_for(direct, tmp_path, metrics)


def test_the_direct_path_signs_on_the_servers_clock_after_a_skew_refusal(
    tmp_path: Path, metrics: Metrics
) -> None:
    server, direct, writer = _direct_writer_against(_SkewCheckingHandler, tmp_path, metrics)
    try:
        assert writer.write(decode(put("a", 1))).outcome is Outcome.APPLIED
        assert (
            sample(metrics, "replicator_retries_total", destination="dest", reason="clock_skew")
            == 1
        )
        assert abs(direct.clock_offset - timedelta(hours=1)) < timedelta(minutes=1)
        assert len(_SkewCheckingHandler.accepted) == 1
    finally:
        server.shutdown()
        server.server_close()


class _WrongKeyHandler(BaseHTTPRequestHandler):
    """A DynamoDB stand-in on this host's clock that refuses the first requests' signature,
    as DynamoDB answers a wrong secret key (the refusal's code is the skewed clock's)."""

    refusals = 3
    answered: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if len(self.answered) < self.refusals:
            status, body = (
                400,
                {
                    "__type": "com.amazon.coral.service#InvalidSignatureException",
                    "message": "The request signature we calculated does not match the "
                    "signature you provided.",
                },
            )
        else:
            status, body = 200, {}
        self.answered.append(status)
        _send_json(self, status, body, datetime.now(UTC))

    def log_message(self, *args: Any) -> None:
        pass


def test_a_refused_signature_on_a_clock_in_step_is_no_clock_skew(
    tmp_path: Path, metrics: Metrics
) -> None:
    """A wrong secret key is answered with InvalidSignatureException, the code of a skewed
    clock's refusal too: with the destination's clock in step, it is retried as ``auth``,
    the signing clock stays this host's, and no refusal says the clocks differ."""
    _WrongKeyHandler.answered = []
    server, direct, writer = _direct_writer_against(_WrongKeyHandler, tmp_path, metrics)
    try:
        with structlog.testing.capture_logs() as logs:
            assert writer.write(decode(put("a", 1))).outcome is Outcome.APPLIED
    finally:
        server.shutdown()
        server.server_close()
    assert _WrongKeyHandler.answered == [400, 400, 400, 200]
    assert sample(metrics, "replicator_retries_total", destination="dest", reason="auth") == 3
    assert sample(metrics, "replicator_retries_total", destination="dest", reason="clock_skew") == 0
    assert direct.clock_offset == timedelta(0)
    assert not [entry for entry in logs if "clock" in entry["event"]]


class _InStepServer(_SkewCheckingHandler):
    """A server on this host's clock, refusing a request signed 5 minutes off as DynamoDB
    does."""

    offset = timedelta(0)
    accepted: ClassVar[list[str]] = []


def test_a_clock_that_comes_back_in_step_is_signed_on_again(
    tmp_path: Path, metrics: Metrics
) -> None:
    """Signing on a learnt offset after the host's clock was set right (or the
    destination's) is refused for the clock; the writer goes back to this host's clock,
    says so once, and the write lands."""
    _InStepServer.accepted = []
    server, direct, writer = _direct_writer_against(_InStepServer, tmp_path, metrics)
    direct.clock_offset = timedelta(hours=1)
    try:
        with structlog.testing.capture_logs() as logs:
            assert writer.write(decode(put("a", 1))).outcome is Outcome.APPLIED
            assert writer.write(decode(put("b", 2))).outcome is Outcome.APPLIED
    finally:
        server.shutdown()
        server.server_close()
    assert direct.clock_offset == timedelta(0)
    assert len(_InStepServer.accepted) == 2
    assert sample(metrics, "replicator_retries_total", destination="dest", reason="clock_skew") == 1
    said = [entry["event"] for entry in logs if "clock" in entry["event"]]
    assert said == [
        "the destination's clock agrees with this host's again; signing on this host's clock"
    ]


@pytest.mark.parametrize(
    ("code", "message", "for_the_clock"),
    [
        ("InvalidSignatureException", "Signature expired: 20261130T101010Z is now earlier", True),
        ("InvalidSignatureException", "Signature not yet current: 20261130T101010Z", True),
        ("RequestTimeTooSkewed", "", True),
        ("InvalidSignatureException", "The request signature we calculated does not match", False),
        ("SignatureDoesNotMatch", "The request signature we calculated does not match", False),
        ("UnrecognizedClientException", "The security token included is invalid", False),
    ],
)
def test_a_signature_refusal_blames_the_clock_only_when_it_says_so(
    code: str, message: str, for_the_clock: bool
) -> None:
    assert refused_for_the_clock(client_error(code, message)) is for_the_clock


# -- retryable codes ----------------------------------------------------------------------


@pytest.mark.parametrize("code", ["ReplicatedWriteConflictException", "InvalidEndpointException"])
def test_codes_that_a_later_attempt_can_succeed_are_retried(
    tmp_path: Path, metrics: Metrics, code: str
) -> None:
    assert classify(client_error(code)) is ErrorKind.RETRY
    writer = writer_for(ScriptedClient(client_error(code)), tmp_path, metrics)
    assert writer.write(decode(put("a", 1))).outcome is Outcome.APPLIED


# -- a destination that does not answer (operator commands) ----------------------------------


class _SlowClock:
    """The writer's clock, moved on 5 s by every request its client sends."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class _TimedClient(ScriptedClient):
    def __init__(self, clock: _SlowClock, *errors: BaseException) -> None:
        super().__init__(*errors)
        self.clock = clock

    def _answer(self, **kwargs: Any) -> dict[str, Any]:
        self.clock.now += 5.0
        return super()._answer(**kwargs)

    put_item = _answer
    delete_item = _answer


def test_a_write_no_answer_comes_to_for_unanswered_for_s_ends_with_the_error(
    tmp_path: Path, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _SlowClock()
    monkeypatch.setattr(destination, "time", clock)
    unanswered = [EndpointConnectionError(endpoint_url="http://127.0.0.1:9") for _ in range(9)]
    writer = writer_for(_TimedClient(clock, *unanswered), tmp_path, metrics)
    writer.unanswered_for_s = 12.0

    with pytest.raises(DestinationUnavailable) as raised:
        writer.write(decode(put("a", 1)))

    # 0-5 s, 5-10 s, 10-15 s: the third attempt ends past the bound, counted from the first.
    assert str(raised.value) == (
        "destination dest (eu-west-1/t) did not answer for 12 s (3 attempts of one write); "
        "last error: EndpointConnectionError: Could not connect to the endpoint URL: "
        '"http://127.0.0.1:9"'
    )


def test_throttling_is_an_answer_and_starts_the_wait_for_one_again(
    tmp_path: Path, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unanswered for 10 s, throttled, unanswered for 10 s more: never 12 s in a row."""
    clock = _SlowClock()
    monkeypatch.setattr(destination, "time", clock)
    net = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    throttled = client_error("ProvisionedThroughputExceededException")
    writer = writer_for(_TimedClient(clock, net, net, throttled, net, net), tmp_path, metrics)
    writer.unanswered_for_s = 12.0

    assert writer.write(decode(put("a", 1))).outcome is Outcome.APPLIED


# -- the user's resolver ----------------------------------------------------------------------


def exploding_resolver(incoming: Any, existing: Any) -> bool:
    if incoming.keys["pk"]["S"] == "bad":
        raise KeyError("price")
    return True


def resolving_writer(
    moto_endpoint: str, table: str, tmp_path: Path, metrics: Metrics, resolver: str
) -> tuple[Any, DestinationWriter, FileDeadLetters, DeadLetterer]:
    """A table on moto, a ``custom`` writer to it with ``resolver`` (of this module), and
    its file dead letters."""
    ddb = client("dynamodb", REGION, moto_endpoint)
    create_table(ddb, table, stream=None)
    writer = writer_for(
        ddb,
        tmp_path,
        metrics,
        table,
        policy="custom",
        resolver=f"tests.writers.test_write_outcomes:{resolver}",
    )
    target = FileDeadLetters(tmp_path / "dead.jsonl")
    return ddb, writer, target, DeadLetterer(target, metrics, "task", "shard-1")


def test_an_exception_in_a_custom_resolver_dead_letters_that_change_and_goes_on(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    ddb, writer, target, letters = resolving_writer(
        moto_endpoint, unique("resolver"), tmp_path, metrics, "exploding_resolver"
    )
    table = writer.table
    assert letters.write(writer, decode(put("bad", 1))).outcome is Outcome.FAILED
    assert letters.write(writer, decode(put("good", 2))).outcome is Outcome.APPLIED
    (letter,) = target.letters()
    assert letter.reason == "resolver_failed"
    assert "exploding_resolver raised KeyError: 'price'" in letter.error
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "bad"}})
    assert "Item" in ddb.get_item(TableName=table, Key={"pk": {"S": "good"}})
    assert (
        sample(
            metrics, "replicator_dead_letters_total", destination="dest", reason="resolver_failed"
        )
        == 1
    )


def test_a_resolver_exception_names_the_resolver_line_that_raised(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """The letter carries no traceback: its message says where the user's code raised."""
    _, writer, target, letters = resolving_writer(
        moto_endpoint, unique("resolver-where"), tmp_path, metrics, "exploding_resolver"
    )
    assert letters.write(writer, decode(put("bad", 1))).outcome is Outcome.FAILED
    (letter,) = target.letters()
    line = exploding_resolver.__code__.co_firstlineno + 2  # its ``raise``
    assert f"(at {__file__}:{line}, in exploding_resolver)" in letter.error


def _price_of(item: Any) -> Any:
    return item["price"]


def test_a_resolver_exception_raised_deeper_names_both_lines() -> None:
    from replicator.exceptions import ResolverFailed
    from replicator.rules.custom import CustomRule

    def resolver(incoming: Any, existing: Any) -> bool:
        return bool(_price_of({}))

    with pytest.raises(ResolverFailed) as failed:
        CustomRule(resolver).plan(decode(put("bad", 1)), None)
    message = str(failed.value)
    assert f"(at {__file__}:{resolver.__code__.co_firstlineno + 1}, in resolver; " in message
    assert f"raised at {__file__}:{_price_of.__code__.co_firstlineno + 1}, in _price_of)" in (
        message
    )


def raising_the_existing_price(incoming: Any, existing: Any) -> Any:
    """Changes the item it is given and returns it: an ordinary Python idiom."""
    existing["price"] = {"N": str(int(existing["price"]["N"]) + 1)}
    return existing


def tagging_the_incoming(incoming: Any, existing: Any) -> bool:
    incoming.new_image["price"] = {"N": "9"}
    return True


def marking_the_existing_item(incoming: Any, existing: Any) -> bool:
    existing["seen"] = {"BOOL": True}
    return True


@pytest.mark.parametrize(
    "resolver", ["raising_the_existing_price", "marking_the_existing_item", "tagging_the_incoming"]
)
def test_a_resolver_that_changes_the_item_it_is_given_is_written_not_a_conflict(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics, resolver: str
) -> None:
    """The write's condition is the item as read, whatever the resolver did to its copy:
    nothing else writes the destination, so the first write applies."""
    table = unique("resolver-mutates")
    ddb, writer, target, letters = resolving_writer(
        moto_endpoint, table, tmp_path, metrics, resolver
    )
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "price": {"N": "1"}})
    assert letters.write(writer, decode(put("a", 1, price=7))).outcome is Outcome.APPLIED
    assert target.letters() == []
    item = ddb.get_item(TableName=table, Key={"pk": {"S": "a"}}, ConsistentRead=True)["Item"]
    expected = {"raising_the_existing_price": "2", "tagging_the_incoming": "9"}.get(resolver, "7")
    assert item == {"pk": {"S": "a"}, "price": {"N": expected}}


def counting_up(incoming: Any, existing: Any) -> bool:
    """Changes the new image it is given in place and answers True: an ordinary idiom."""
    image = incoming.new_image
    image["n"] = {"N": str(int(image["n"]["N"]) + 1)}
    return True


def test_a_resolver_changing_the_new_image_in_place_writes_it_and_changes_nothing_shared() -> None:
    """The change is shared by every destination's writer and each retry: what one call
    did to its image must not reach the next (n grew by one per call), nor the change."""
    from replicator.rules.custom import CustomRule

    change = decode(put("k", 1, n=1))
    rule = CustomRule(counting_up)
    planned = [rule.plan(change, None) for _ in range(3)]
    assert [request.item for request in planned] == [{"pk": {"S": "k"}, "n": {"N": "2"}}] * 3  # type: ignore[union-attr]
    assert change.new_image == {"pk": {"S": "k"}, "n": {"N": "1"}}


def test_an_image_changed_in_place_into_no_item_is_named_as_such() -> None:
    from replicator.exceptions import PlanError
    from replicator.rules.custom import CustomRule

    def resolver(incoming: Any, existing: Any) -> bool:
        incoming.new_image["n"] = 2
        return True

    with pytest.raises(PlanError) as refused:
        CustomRule(resolver).plan(decode(put("k", 1, n=1)), None)
    assert str(refused.value).startswith(
        "custom resolver tests.writers.test_write_outcomes:"
        "test_an_image_changed_in_place_into_no_item_is_named_as_such.<locals>.resolver "
        "answered True with incoming.new_image changed in place into an item "
        "not in attribute-value form: its 'n' is 2,"
    )


def _answers_text(incoming: Any, existing: Any) -> Any:
    return "yes"


def _answers_nothing(incoming: Any, existing: Any) -> Any:
    return None


@pytest.mark.parametrize(
    ("resolver", "returned"), [(_answers_text, "str"), (_answers_nothing, "NoneType")]
)
def test_a_resolver_returning_no_decision_is_named_in_the_refusal(
    resolver: Any, returned: str
) -> None:
    """The dead letter of a wrong-typed answer names the resolver, as a raising one's does:
    a job whose destinations apply different resolvers says which one to fix."""
    from replicator.exceptions import PlanError
    from replicator.rules.custom import CustomRule

    with pytest.raises(PlanError) as refused:
        CustomRule(resolver).plan(decode(put("k", 1)), None)
    assert str(refused.value) == (
        f"custom resolver tests.writers.test_write_outcomes:{resolver.__name__} returned "
        f"{returned}; expected True, False or an item"
    )


def binary_resolver(incoming: Any, existing: Any) -> Any:
    from boto3.dynamodb.types import Binary

    return {
        "pk": incoming.keys["pk"],
        "blob": {"B": Binary(b"\x00\x01")},
        "blobs": {"BS": [Binary(b"\x02")]},
        "nested": {"M": {"inner": {"B": Binary(b"\x03")}}},
    }


def test_a_resolver_returning_boto3_binary_values_is_written_not_a_crash(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """botocore refuses ``Binary`` where it expects bytes, and fails while saying so: the
    writer stopped the shard, again after every restart."""
    table = unique("resolver-binary")
    ddb, writer, target, letters = resolving_writer(
        moto_endpoint, table, tmp_path, metrics, "binary_resolver"
    )
    assert letters.write(writer, decode(put("b", 1))).outcome is Outcome.APPLIED
    assert target.letters() == []
    item = ddb.get_item(TableName=table, Key={"pk": {"S": "b"}}, ConsistentRead=True)["Item"]
    assert item == {
        "pk": {"S": "b"},
        "blob": {"B": b"\x00\x01"},
        "blobs": {"BS": [b"\x02"]},
        "nested": {"M": {"inner": {"B": b"\x03"}}},
    }


RESOLVER_CALLS_SEEN: list[float] = []
RESOLVER_METRICS: list[Metrics] = []


def counting_resolver(incoming: Any, existing: Any) -> bool:
    """Records what the metric says while it runs (the test reads it), as a slow one."""
    metrics = RESOLVER_METRICS[0]
    RESOLVER_CALLS_SEEN.append(
        sample(metrics, "replicator_resolver_calls_running", destination="dest", shard="")
    )
    time.sleep(0.2)
    return True


def test_a_running_resolver_is_counted_and_a_slow_one_logged_with_its_key(
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    metrics: Metrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(destination, "SLOW_RESOLVER_S", 0.1)
    RESOLVER_METRICS[:] = [metrics]
    RESOLVER_CALLS_SEEN.clear()
    _, writer, _, letters = resolving_writer(
        moto_endpoint, unique("resolver-slow"), tmp_path, metrics, "counting_resolver"
    )
    with structlog.testing.capture_logs() as logs:
        assert letters.write(writer, decode(put("slow", 1))).outcome is Outcome.APPLIED
    assert RESOLVER_CALLS_SEEN == [1.0]
    assert sample(metrics, "replicator_resolver_calls_running", destination="dest", shard="") == 0
    (slow,) = [
        entry for entry in logs if entry["event"] == "the custom resolver was slow to decide"
    ]
    assert slow["log_level"] == "warning"
    assert slow["key"] == "pk=S:slow"
    assert slow["destination"] == "dest"
    assert slow["rule"] == "custom resolver tests.writers.test_write_outcomes:counting_resolver"
    assert slow["seconds"] >= 0.2


@pytest.mark.parametrize(
    ("returned", "named"),
    [
        ({"pk": "bad", "price": 1}, "its 'pk' is 'bad'"),
        ({"pk": {"S": "bad"}, "price": 1}, "its 'price' is 1"),
        (
            {"pk": {"S": "bad"}, "price": {"N": "1", "S": "1"}},
            "its 'price' is {'N': '1', 'S': '1'}",
        ),
        ({"pk": {"S": "bad"}, "price": {"Number": "1"}}, "its 'price' is {'Number': '1'}"),
        # What the SDK refuses before any request: dead-lettered as the destination's
        # refusal (rejected) before, where the resolver's answer is what cannot be planned.
        ({"pk": {"S": "bad"}, "price": {"N": 5}}, "its 'price'.N is 5"),
        ({"pk": {"S": "bad"}, "note": {"S": None}}, "its 'note'.S is None"),
        ({"pk": {"S": "bad"}, "ok": {"BOOL": "yes"}}, "its 'ok'.BOOL is 'yes'"),
        ({"pk": {"S": "bad"}, "tags": {"SS": {"a"}}}, "its 'tags'.SS is {'a'}"),
        ({"pk": {"S": "bad"}, "m": {"M": {"a": 1}}}, "its 'm'.M['a'] is 1"),
        ({"pk": {"S": "bad"}, "l": {"L": [{"S": "x"}, {"N": 2}]}}, "its 'l'.L[1].N is 2"),
        ({"pk": {"S": "bad"}, "l": {"L": "x"}}, "its 'l'.L is 'x'"),
    ],
)
def test_a_resolver_returning_an_item_not_in_attribute_value_form_is_told_so(
    returned: dict[str, Any], named: str
) -> None:
    from replicator.exceptions import PlanError
    from replicator.rules.custom import CustomRule

    with pytest.raises(PlanError) as refused:
        CustomRule(lambda incoming, existing: returned).plan(decode(put("bad", 1)), None)
    message = str(refused.value)
    assert message.startswith("custom resolver tests.writers.test_write_outcomes:"), message
    assert f" returned an item not in attribute-value form: {named}," in message
    assert "differ" not in message


def test_a_resolver_returning_every_type_of_attribute_value_is_written() -> None:
    from boto3.dynamodb.types import Binary

    from replicator.rules.custom import CustomRule
    from replicator.rules.requests import WriteRequest

    item = {
        "pk": {"S": "bad"},
        "n": {"N": "1.5"},
        "b": {"B": b"\x00"},
        "t": {"BOOL": False},
        "z": {"NULL": True},
        "ss": {"SS": ["a"]},
        "ns": {"NS": ("1", "2")},
        "bs": {"BS": [b"x", "text"]},  # a string: the SDK sends its UTF-8 bytes
        "bt": {"B": "text"},
        "wrapped": {"L": ({"B": Binary(b"b")}, {"BS": (Binary(b"c"),)})},
        "m": {"M": {"inner": {"L": [{"S": "x"}, {"M": {}}, {"BS": [bytearray(b"y")]}]}}},
    }
    planned = CustomRule(lambda incoming, existing: item).plan(decode(put("bad", 1)), None)
    assert isinstance(planned, WriteRequest)  # nothing refused that the SDK sends
    written = planned.item  # strings under B and BS as the bytes the SDK sends
    assert isinstance(written, dict)
    assert (written["bt"], written["bs"]) == ({"B": b"text"}, {"BS": [b"x", b"text"]})


@pytest.mark.parametrize("raised", [SystemExit(2), GeneratorExit(), KeyboardInterrupt()])
def test_a_resolver_raising_what_is_no_exception_fails_the_change_unless_it_is_ctrl_c(
    raised: BaseException,
) -> None:
    """Whatever else a resolver raises (a sys.exit() among them) is that change's failure;
    KeyboardInterrupt is the operator's Ctrl-C reaching a command that resolves on its
    main thread, and goes on stopping it."""
    from replicator.exceptions import ResolverFailed
    from replicator.rules.custom import CustomRule

    def resolver(incoming: Any, existing: Any) -> bool:
        raise raised

    rule = CustomRule(resolver)
    if isinstance(raised, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            rule.plan(decode(put("bad", 1)), None)
        return
    with pytest.raises(ResolverFailed) as failed:
        rule.plan(decode(put("bad", 1)), None)
    assert f"resolver raised {type(raised).__name__}" in str(failed.value)


@pytest.mark.parametrize("where", ["sigint ignored", "sigint routed", "another thread"])
def test_a_resolvers_own_keyboard_interrupt_fails_the_change_where_ctrl_c_cannot_raise_it(
    where: str,
) -> None:
    """A processor ignores SIGINT, the tools route it to their own handler, and Python
    raises a signal's exception on the main thread only: a KeyboardInterrupt there is the
    resolver's own. Let through, it crash-looped the shard, the processor saying SIGINT
    received, which it never was."""
    import signal
    import threading

    from replicator.exceptions import ResolverFailed
    from replicator.rules.custom import CustomRule

    def resolver(incoming: Any, existing: Any) -> bool:
        raise KeyboardInterrupt("the resolver's")

    rule = CustomRule(resolver)
    failures: list[BaseException] = []

    def plan() -> None:
        try:
            rule.plan(decode(put("bad", 1)), None)
        except BaseException as error:  # what it raised, to assert on
            failures.append(error)

    handlers = {"sigint ignored": signal.SIG_IGN, "sigint routed": lambda *_: None}
    previous = signal.signal(signal.SIGINT, handlers.get(where, signal.default_int_handler))
    try:
        if where == "another thread":
            thread = threading.Thread(target=plan)
            thread.start()
            thread.join()
        else:
            plan()
    finally:
        signal.signal(signal.SIGINT, previous)
    (failure,) = failures
    assert isinstance(failure, ResolverFailed), repr(failure)
    assert "resolver raised KeyboardInterrupt: the resolver's" in str(failure)


# -- a lost lease -----------------------------------------------------------------------------


def test_a_lost_lease_stops_the_writes_still_being_retried(
    tmp_path: Path, metrics: Metrics
) -> None:
    throttled = [client_error("ProvisionedThroughputExceededException") for _ in range(10_000)]
    scripted = ScriptedClient(*throttled)
    writer = writer_for(scripted, tmp_path, metrics)
    pipeline = ShardPipeline(
        {"dest": writer},
        ChangeBuffer(["dest"], IN_STREAM_ORDER),
        metrics,
        "shard-1",
        max_in_flight=4,
        max_buffered=100,
        dead_letters=DeadLetterer(FileDeadLetters(tmp_path / "dead.jsonl"), metrics, "t", "s"),
    )
    for sequence in range(1, 4):
        pipeline.submit(decode(put(f"k{sequence}", sequence)))
    pipeline.dispatch()
    deadline = threading.Event()
    while scripted.calls < 10 and not deadline.wait(0.01):
        pass
    pipeline.abandon()
    for executor in pipeline._executors.values():
        executor.shutdown(wait=True)  # every write has returned
    # The writes gave up while throttled: had they gone on, they would have outlasted the
    # scripted throttling and applied stale changes over the new owner's writes.
    assert scripted.errors
    assert outcomes(metrics, "applied") == 0
    assert pipeline.checkpointable() is None


def test_a_retried_delete_that_finds_a_lower_ranked_item_is_applied(
    tmp_path: Path, metrics: Metrics
) -> None:
    # The delete landed; before the retry an older image was rewritten: the delete did
    # its work, and that older write is a later change of its own.
    older = {"pk": {"S": "a"}, "ts": {"N": "5"}}
    scripted = ScriptedClient(
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        client_error("ConditionalCheckFailedException", "", older),
    )
    writer = writer_for(scripted, tmp_path, metrics, **LWW)
    assert writer.write(decode(remove("a", 2, ts=10))).outcome is Outcome.APPLIED
    assert outcomes(metrics, "conflict_lost") == 0


def test_a_session_token_quoted_by_an_error_is_never_logged(
    tmp_path: Path, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS answers a bad signature with the canonical request it expected, the session
    token header included: every log line says <redacted> in its place."""
    import io
    import logging

    from replicator import logs

    # The token in use is an assumed role's (not in the environment); the environment's
    # own is redacted wherever it shows.
    token = "ROLEqqqTOKENqqq789"
    environment_token = "ENVqqqTOKENqqq456"
    monkeypatch.setenv("AWS_SESSION_TOKEN", environment_token)
    quoted = (
        "The request signature we calculated does not match. The Canonical String for this "
        f"request should have been 'POST\n/\n\nhost:127.0.0.1\nx-amz-security-token:{token}\n'"
    )
    captured = io.StringIO()
    logs.configure("info", "json", captured)
    try:
        scripted = ScriptedClient(
            *[client_error("InvalidSignatureException", quoted) for _ in range(2)]
        )
        writer = writer_for(scripted, tmp_path, metrics)
        assert writer.write(decode(put("a", 1))).outcome is Outcome.APPLIED
        logging.getLogger("botocore.test").warning("failed with %s", f"token {environment_token}")
        structlog.get_logger("test").warning(
            "nested", errors=[{"message": f"'X-Amz-Security-Token': '{token}'"}]
        )
        try:
            raise RuntimeError("the credential refresh failed")
        except RuntimeError:  # botocore warns of it with the traceback: one line stays
            logging.getLogger("botocore.credentials").warning("refresh failed", exc_info=True)
    finally:
        logs.configure("info", "json")
    text = captured.getvalue()
    assert text.count("write failed, retrying") == 2
    assert token not in text and environment_token not in text
    assert "x-amz-security-token:<redacted>" in text
    assert '"logger": "botocore.test"' in text and "token <redacted>" in text
    assert "X-Amz-Security-Token': '<redacted>" in text
    assert '"logger": "botocore.credentials"' in text and "Traceback" not in text


# -- a destination whose key schema is not the source's ---------------------------------------


def test_only_the_answers_that_name_the_tables_key_mean_another_key_schema() -> None:
    missing = "One or more parameter values were invalid: Missing the key id in the item"
    mismatch = "The provided key element does not match the schema"
    mistyped = (
        "One or more parameter values were invalid: Type mismatch for key pk expected: N actual: S"
    )
    assert key_schema_differs(client_error("ValidationException", missing))
    assert key_schema_differs(client_error("ValidationException", mismatch))
    assert key_schema_differs(client_error("ValidationException", mistyped))
    for other in (
        "Item size has exceeded the maximum allowed size",
        "One or more parameter values were invalid: Type mismatch for Index Key email "
        "Expected: S Actual: NULL IndexName: by-email",
    ):
        assert not key_schema_differs(client_error("ValidationException", other))
        assert classify(client_error("ValidationException", other)) is ErrorKind.REJECTED
    assert not key_schema_differs(client_error("ConditionalCheckFailedException", missing))
    # The generic classification is unchanged; the writers decide what the answer means.
    assert classify(client_error("ValidationException", missing)) is ErrorKind.REJECTED


@pytest.mark.parametrize(
    ("conflict", "change", "key", "key_type"),
    [
        ({"policy": "overwrite"}, put("a", 1), "id", "S"),
        ({"policy": "overwrite"}, remove("a", 1), "id", "S"),
        (LWW, put("a", 1, ts=5), "id", "S"),  # reads the destination's item first
        # The source's key name with another type: "Type mismatch for key pk expected: N
        # actual: S". (moto accepts a delete whose key has another type, where DynamoDB
        # answers "The provided key element does not match the schema".)
        ({"policy": "overwrite"}, put("a", 1), "pk", "N"),
        (LWW, put("a", 1, ts=5), "pk", "N"),
    ],
)
def test_a_destination_re_created_with_another_key_stops_the_worker_nothing_dead_lettered(
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    metrics: Metrics,
    conflict: Any,
    change: Any,
    key: str,
    key_type: str,
) -> None:
    ddb = client("dynamodb", REGION, moto_endpoint)
    table = unique("rekeyed")
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": key_type}],
        BillingMode="PAY_PER_REQUEST",
    )
    writer = writer_for(ddb, tmp_path, metrics, table, **conflict)
    writer.refusal_limit = 3
    target = FileDeadLetters(tmp_path / "dead.jsonl")
    letters = DeadLetterer(target, metrics, "task", "shard-1")
    with pytest.raises(DestinationRefused, match="key schema is not the source table's") as refused:
        letters.write(writer, decode(change))
    assert "ValidationException" in str(refused.value)
    assert target.letters() == []
    assert sample(metrics, "replicator_retries_total", destination="dest", reason="key_schema") == 2
    assert ddb.scan(TableName=table)["Items"] == []


def hand_made(event: str, keys: dict[str, Any], seq: int, **attributes: Any) -> Any:
    """A record whose Keys (and image) are what a hand-made record gives, not the
    table's: a put's image holds its Keys, so that it decodes."""
    image = {**keys, **attributes}
    if event == "REMOVE":
        return decode(daemon_record(stream_record(event, keys, None, image, seq=seq), seq))
    return decode(daemon_record(stream_record(event, keys, image, seq=seq), seq))


@pytest.mark.parametrize(
    ("conflict", "change", "why"),
    [
        (
            {"policy": "overwrite"},
            ("MODIFY", {"id": {"S": "a"}}),
            "lacks pk; has id, which is no key attribute",
        ),
        (
            {"policy": "overwrite"},
            ("REMOVE", {"id": {"S": "a"}}),
            "lacks pk; has id, which is no key attribute",
        ),
        (
            LWW,
            ("MODIFY", {"id": {"S": "a"}}),
            "lacks pk; has id, which is no key attribute",
        ),  # reads the item first
        ({"policy": "overwrite"}, ("MODIFY", {"pk": {"N": "1"}}), "has pk of type N, not S"),
        (LWW, ("MODIFY", {"pk": {"N": "1"}}), "has pk of type N, not S"),
    ],
)
def test_a_change_whose_keys_are_not_the_sources_is_dead_lettered_not_a_lost_table(
    moto_endpoint: str,
    unique: Any,
    tmp_path: Path,
    metrics: Metrics,
    conflict: Any,
    change: tuple[str, dict[str, Any]],
    why: str,
) -> None:
    """A hand-made record (one put on a Kinesis stream by hand) whose keys are not the
    source table's: the destination, keyed as the source, refuses its write in the words
    of a table re-created with another key. Its keys say it is the record's fault: it is
    dead-lettered, naming why, and the destination is not taken as lost (no alert, no
    stop of the worker at every restart)."""
    ddb = client("dynamodb", REGION, moto_endpoint)
    table = unique("keyed")
    create_table(ddb, table, stream=None)  # pk (S), as the source
    writer = writer_for(ddb, tmp_path, metrics, table, **conflict)
    writer.refusal_limit = 3
    asked: list[int] = []
    writer.source_key_schema = lambda: asked.append(1) or {"pk": "HASH:S"}
    target = FileDeadLetters(tmp_path / "dead.jsonl")
    letters = DeadLetterer(target, metrics, "task", "shard-1")
    event, keys = change
    letters.write(writer, hand_made(event, keys, 7, ts={"N": "5"}))
    [letter] = target.letters()
    assert letter.reason == "rejected"
    assert f"its key {why} (the source table's key: pk (S))" in letter.error
    assert "a record not of the source table; ValidationException: " in letter.error
    assert sample(metrics, "replicator_destination_tables_lost_total", destination="dest") == 0
    assert sample(metrics, "replicator_retries_total", destination="dest", reason="key_schema") == 0
    assert asked == [1]
    assert ddb.scan(TableName=table)["Items"] == []


def test_a_change_of_the_sources_key_refused_by_a_re_keyed_destination_still_stops(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """The source's key read, a change that has it refused at a destination re-created
    with another key is the table's problem, as without the source's key: it stops the
    worker, nothing dead-lettered. The source's key unreadable (None) changes nothing."""
    ddb = client("dynamodb", REGION, moto_endpoint)
    table = unique("rekeyed")
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for schema in ({"pk": "HASH:S"}, None):
        writer = writer_for(ddb, tmp_path, metrics, table)
        writer.refusal_limit = 2
        writer.source_key_schema = lambda schema=schema: schema  # type: ignore[misc]
        target = FileDeadLetters(tmp_path / "dead.jsonl")
        with pytest.raises(
            DestinationRefused, match="key schema is not the source table's"
        ) as refused:
            DeadLetterer(target, metrics, "task", "shard-1").write(writer, decode(put("a", 1)))
        assert target.letters() == []
        # Unread, the stop says the changes may be records not of the source table.
        unread = "the source table's key could not be read to tell" in str(refused.value)
        assert unread is (schema is None)
    assert sample(metrics, "replicator_retries_total", destination="dest", reason="key_schema") == 2


def test_why_keys_are_not_a_tables_key() -> None:
    schema = {"pk": "HASH:S", "sk": "RANGE:N"}
    assert keys_not_of({"pk": {"S": "a"}, "sk": {"N": "1"}}, schema) is None
    assert keys_not_of({"pk": {"S": "a"}}, schema) == (
        "its key lacks sk (the source table's key: pk (S), sk (N))"
    )
    assert keys_not_of({"pk": {"S": "a"}, "sk": {"S": "1"}, "x": {"S": "b"}}, schema) == (
        "its key has sk of type S, not N; has x, which is no key attribute "
        "(the source table's key: pk (S), sk (N))"
    )


def test_an_item_whose_index_key_has_another_type_is_dead_lettered_not_a_key_schema(
    moto_endpoint: str, unique: Any, tmp_path: Path, metrics: Metrics
) -> None:
    """DynamoDB words a mistyped GSI key "Type mismatch for Index Key ...": the item's
    own problem, dead-lettered, while the worker goes on."""
    ddb = client("dynamodb", REGION, moto_endpoint)
    table = unique("indexed")
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "email", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-email",
                "KeySchema": [{"AttributeName": "email", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
    writer = writer_for(ddb, tmp_path, metrics, table)
    target = FileDeadLetters(tmp_path / "dead.jsonl")
    letters = DeadLetterer(target, metrics, "task", "shard-1")
    letters.write(writer, decode(put("a", 1, email={"NULL": True})))
    [letter] = target.letters()
    assert letter.reason == "rejected" and "Type mismatch for Index Key email" in letter.error
    assert sample(metrics, "replicator_retries_total", destination="dest", reason="key_schema") == 0
    assert ddb.scan(TableName=table)["Items"] == []


# -- refusals counted per change, whatever the number of writes in flight ---------------------


class _RefusingClient:
    """Refuses every put whose key starts with one of ``denied`` (all of them when it is
    empty) with AccessDeniedException, and accepts the others."""

    def __init__(self, *denied: str) -> None:
        self.denied = denied
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        key = kwargs["Item"]["pk"]["S"]
        with self.lock:
            self.calls[key] = self.calls.get(key, 0) + 1
        if not self.denied or key.startswith(self.denied):
            raise client_error("AccessDeniedException", "not authorized to perform PutItem")
        return {}


class _CeilingBackoff(Backoff):
    """The default backoff's ceilings, without the jitter: each wait is known."""

    def delay(self, attempt: int) -> float:
        return min(self.cap_s, self.base_s * (2 ** min(attempt, 30)))


class _RecordedWaits(threading.Event):
    """``cancelled`` for a writer whose retries must not take real time: every wait is
    recorded by thread name, and returns at once (or when ``until`` is set)."""

    def __init__(self, until: threading.Event | None = None) -> None:
        super().__init__()
        self.until = until
        self.waits: dict[str, list[float]] = {}
        self.lock = threading.Condition()

    def wait(self, timeout: float | None = None) -> bool:
        with self.lock:
            name = threading.current_thread().name
            self.waits.setdefault(name, []).append(timeout or 0.0)
            self.lock.notify_all()
        if self.until is not None:
            assert self.until.wait(60), "the other writes never finished"
        return False

    def threads_waited(self, count: int) -> bool:
        """Whether ``count`` threads have each waited once, within a minute."""
        with self.lock:
            return self.lock.wait_for(lambda: len(self.waits) >= count, 60)


def _write_all(writer: DestinationWriter, keys: list[str]) -> dict[str, Any]:
    """Write a put of each key, all at once, each on its own thread: key -> outcome or
    the exception its write raised."""
    results: dict[str, Any] = {}

    def one(key: str) -> None:
        try:
            results[key] = writer.write(decode(put(key, 1))).outcome
        except DestinationRefused as error:
            results[key] = error

    threads = [threading.Thread(target=one, args=(key,), name=key) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_a_blanket_refusal_with_many_changes_in_flight_retries_each_for_the_documented_time(
    tmp_path: Path, metrics: Metrics
) -> None:
    """50 changes in flight, all refused: each is retried with the backoff, 20 refusals
    (``writer.access_denied_limit``) before the destination counts as refusing, never
    the 50 first attempts adding up to a stop within milliseconds."""
    refusing = _RefusingClient()
    waits = _RecordedWaits()
    writer = writer_for(refusing, tmp_path, metrics)
    writer.backoff = _CeilingBackoff()  # the default base and cap
    writer.cancelled = waits
    keys = [f"k{index}" for index in range(50)]
    results = _write_all(writer, keys)
    assert all(isinstance(results[key], DestinationRefused) for key in keys)
    assert "refused 20 writes in a row" in str(results["k0"])
    assert refusing.calls == dict.fromkeys(keys, writer.refusal_limit)
    assert set(waits.waits) == set(keys)
    for delays in waits.waits.values():
        assert len(delays) == writer.refusal_limit - 1
        # Full jitter waits half the ceilings on average: about two minutes in all.
        assert 200 < sum(delays) < 250


def test_items_denied_while_other_writes_succeed_fail_for_dead_letters_the_others_apply(
    tmp_path: Path, metrics: Metrics
) -> None:
    """40 items denied by a fine-grained policy among 240 changes in flight: the 40 fail
    (the pipeline dead-letters them) and the 200 others are applied; the destination is
    not declared refusing."""
    refusing = _RefusingClient("deny")
    others_done = threading.Event()
    writer = writer_for(refusing, tmp_path, metrics)
    # Every denied change is refused once before the other writes start, and waits out
    # its backoff until they have succeeded: the order in which they are answered does
    # not depend on the threads' timing (a denied change first tried after the last
    # success would see no other write succeed, and count the destination as refusing).
    waits = _RecordedWaits(until=others_done)
    writer.cancelled = waits
    denied = [f"deny{index}" for index in range(40)]
    ok = [f"ok{index}" for index in range(200)]
    results: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: results.update(_write_all(writer, denied)))
    runner.start()
    assert waits.threads_waited(len(denied)), "the denied changes were never refused"
    results.update(_write_all(writer, ok))
    others_done.set()
    runner.join(60)
    assert {results[key] for key in ok} == {Outcome.APPLIED}
    assert {results[key] for key in denied} == {Outcome.FAILED}


class _TableGoneClient:
    """A destination whose table is gone while ``gone`` is set: every put is answered
    ResourceNotFoundException then, and accepted otherwise."""

    def __init__(self) -> None:
        self.gone = threading.Event()
        self.gone.set()
        self.calls: dict[str, int] = {}

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        key = kwargs["Item"]["pk"]["S"]
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.gone.is_set():
            raise client_error("ResourceNotFoundException", "Requested resource not found")
        return {}


class _AtFirstWait(threading.Event):
    """``cancelled`` that runs ``step`` at the first wait of a retry, and never waits."""

    def __init__(self, step: Any) -> None:
        super().__init__()
        self.step = step
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        if self.waits == 1:
            self.step()
        return False


def test_a_table_re_created_and_deleted_again_under_a_retried_change_never_dead_letters_it(
    tmp_path: Path, metrics: Metrics
) -> None:
    """A missing table is the whole destination's, never one item's: a change refused
    with ResourceNotFoundException while other writes succeed (the table re-created,
    then deleted again, between two of its retries) is retried until the destination
    counts as refusing (``writer.access_denied_limit`` in a row, counted again from the
    success), and stops the worker, never fails for a dead letter as ``access_denied``."""
    table = _TableGoneClient()
    writer = writer_for(table, tmp_path, metrics, **LWW)
    others = [decode(put(f"other{index}", 1, ts=1)) for index in range(5)]

    def re_created_then_deleted_again() -> None:
        table.gone.clear()
        assert {writer.write(change).outcome for change in others} == {Outcome.APPLIED}
        table.gone.set()

    writer.cancelled = _AtFirstWait(re_created_then_deleted_again)
    target = FileDeadLetters(tmp_path / "dead.jsonl")
    letters = DeadLetterer(target, metrics, "task", "shard-1")
    with pytest.raises(DestinationRefused, match="refused 20 writes in a row") as refused:
        letters.write(writer, decode(put("stuck", 1, ts=2)))
    assert "ResourceNotFoundException: Requested resource not found" in str(refused.value)
    assert target.letters() == []
    # Refused once before the others' successes, then 20 in a row after them.
    assert table.calls["stuck"] == 1 + writer.refusal_limit
    retried = sample(metrics, "replicator_retries_total", destination="dest", reason="not_found")
    assert retried == writer.refusal_limit


class _PutsDeniedClient:
    """A destination whose policy allows DeleteItem but not PutItem: every put is denied
    (as botocore raises it, naming its operation), every delete accepted."""

    def __init__(self) -> None:
        self.puts = 0
        self.deletes = 0

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self.puts += 1
        raise ClientError(
            {
                "Error": {"Code": "AccessDeniedException", "Message": "not authorized"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            },
            "PutItem",
        )

    def delete_item(self, **kwargs: Any) -> dict[str, Any]:
        self.deletes += 1
        return {}


class _AtEveryWait(threading.Event):
    """``cancelled`` that runs ``step`` at every wait of a retry, and never waits."""

    def __init__(self, step: Any) -> None:
        super().__init__()
        self.step = step

    def wait(self, timeout: float | None = None) -> bool:
        self.step()
        return False


def test_puts_denied_while_deletes_succeed_stop_the_worker_not_dead_lettered(
    tmp_path: Path, metrics: Metrics
) -> None:
    """A policy with DeleteItem and without PutItem: every put looked denied for itself
    (other writes, the deletes, succeeded), was dead-lettered as access_denied and
    checkpointed past, the worker healthy. A refused put is compared with the puts the
    destination accepted: none, so the destination refuses puts, and the worker stops."""
    table = _PutsDeniedClient()
    writer = writer_for(table, tmp_path, metrics)
    deletes = iter(range(1000))
    writer.cancelled = _AtEveryWait(
        lambda: writer.write(decode(remove(f"gone{next(deletes)}", 1))).outcome
    )
    target = FileDeadLetters(tmp_path / "dead.jsonl")
    letters = DeadLetterer(target, metrics, "task", "shard-1")
    with pytest.raises(DestinationRefused, match="refused 20 writes in a row") as refused:
        letters.write(writer, decode(put("k", 1)))
    assert "AccessDeniedException: not authorized" in str(refused.value)
    assert target.letters() == []
    assert table.puts == writer.refusal_limit
    assert table.deletes == writer.refusal_limit - 1  # one between each two of the put's


def _denied(operation: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "AccessDeniedException", "Message": "not authorized"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        operation,  # type: ignore[arg-type]
    )


def test_a_refusal_streak_starts_again_only_with_a_success_of_its_kind(
    tmp_path: Path, metrics: Metrics
) -> None:
    """A put's refusals count on while deletes succeed, start again once a put succeeds;
    a refusal of another kind (a rule's read) counts on rather than comparing the counts
    of two kinds."""
    writer = writer_for(_PutsDeniedClient(), tmp_path, metrics)
    streak, seen = writer._note_refusal(_denied("PutItem"), 0, None)
    assert (streak, seen.kind) == (1, "put")
    writer._note_success("delete", 3)
    streak, seen = writer._note_refusal(_denied("PutItem"), streak, seen)
    assert streak == 2
    writer._note_success("put")
    streak, seen = writer._note_refusal(_denied("PutItem"), streak, seen)
    assert streak == 1
    writer._note_success("put")
    streak, seen = writer._note_refusal(_denied("GetItem"), streak, seen)
    assert (streak, seen.kind) == (2, None)  # no success of a read's kind is known


def test_a_table_missing_is_told_lost_only_after_it_accepted_writes(
    tmp_path: Path, metrics: Metrics
) -> None:
    """DynamoDB answers ResourceNotFoundException for a table still being created, which
    loses nothing: told to the watermark as lost (``on_table_lost``), every wait for an
    earlier time exited 4 until a backfill and a verify. A table that accepted this
    writer's writes and then answers so was deleted (or re-created) under it."""
    table = _TableGoneClient()
    writer = writer_for(table, tmp_path, metrics, **LWW)
    writer.shard = "shardId-1"  # a shard's pipeline's writer
    told: list[str] = []
    writer.on_table_lost = told.append
    writer.refusal_limit = 3
    with pytest.raises(DestinationRefused):
        writer.write(decode(put("creating", 1, ts=1)))
    assert told == []  # still being created, as far as this writer knows
    table.gone.clear()
    assert writer.write(decode(put("created", 1, ts=1))).outcome is Outcome.APPLIED
    table.gone.set()
    with pytest.raises(DestinationRefused):
        writer.write(decode(put("deleted", 1, ts=1)))
    assert told and set(told) == {"dest"}
    # Counted (and logged at error level) once per loss, not per refusal: the writes wait
    # and go on once the table is back, and nothing else said its items were gone.
    lost = "replicator_destination_tables_lost_total"
    assert metrics.registry.get_sample_value(lost, {"destination": "dest"}) == 1
    with pytest.raises(DestinationRefused):
        writer.write(decode(put("still-deleted", 1, ts=1)))
    assert metrics.registry.get_sample_value(lost, {"destination": "dest"}) == 1
    # Re-created: as it comes back, answers to writes sent before and after interleave
    # (hundreds of losses were told for one deletion): the same loss.
    for turn in range(5):
        table.gone.clear()
        assert writer.write(decode(put(f"back-{turn}", 1, ts=1))).outcome is Outcome.APPLIED
        table.gone.set()
        with pytest.raises(DestinationRefused):
            writer.write(decode(put(f"in-flight-{turn}", 1, ts=1)))
    assert metrics.registry.get_sample_value(lost, {"destination": "dest"}) == 1
    # Lost again after it took writes longer than that (and than the longest pause
    # between two retries): a new loss.
    writer.table_loss_settle_s = 0.0
    writer.backoff = Backoff(0.0, 0.0)
    table.gone.clear()
    assert writer.write(decode(put("again", 1, ts=1))).outcome is Outcome.APPLIED
    table.gone.set()
    with pytest.raises(DestinationRefused):
        writer.write(decode(put("lost-again", 1, ts=1)))
    assert metrics.registry.get_sample_value(lost, {"destination": "dest"}) == 2


@pytest.mark.parametrize("whose", ["an operator tool's", "the source's own (write-backs)"])
def test_a_table_lost_is_counted_for_a_replicated_destination_only(
    tmp_path: Path, metrics: Metrics, whose: str
) -> None:
    """A tool's writer (its own failure line says what happened to the command) and the
    source's own writer (a lost source is the job's stop, and "backfill the destination"
    would be wrong for it) count and log no destination table lost."""
    table = _TableGoneClient()
    writer = writer_for(table, tmp_path, metrics, **LWW)
    if whose == "the source's own (write-backs)":
        writer.shard, writer.counted = "shardId-1", False
    writer.refusal_limit = 3
    table.gone.clear()
    assert writer.write(decode(put("created", 1, ts=1))).outcome is Outcome.APPLIED
    table.gone.set()
    with pytest.raises(DestinationRefused):
        writer.write(decode(put("deleted", 1, ts=1)))
    lost = "replicator_destination_tables_lost_total"
    assert metrics.registry.get_sample_value(lost, {"destination": "dest"}) is None
