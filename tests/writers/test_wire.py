"""The direct PutItem/DeleteItem path: the signature equals botocore's, items round-trip
byte for byte through a real moto server, and every failure is raised as botocore would
raise it, so the writers classify it the same way (retry, condition lost, dead letter).
Both transports (the blocking urllib3 one and the event loop's) get the same requests and
must give the same answers and errors."""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import threading
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from replicator.aws import clients
from replicator.aws.answers import MalformedAnswer
from replicator.aws.clients import Place
from replicator.aws.errors import (
    ErrorKind,
    classify,
    error_code,
    error_message,
    may_have_landed,
)
from replicator.writers.sigv4 import DynamoDBSigner, host_of
from replicator.writers.wire import WireWriteClient, _error_response, direct_write_client
from tests.support.aws import client, create_table
from tests.support.faults.proxy import FaultProxy
from tests.support.loop import LoopClient
from tests.support.silent import SilentEndpoint

REGION = "eu-west-1"
TARGET = "DynamoDB_20120810.PutItem"
CONTENT_TYPE = "application/x-amz-json-1.0"


@pytest.mark.parametrize(
    ("url", "token"),
    [
        ("https://dynamodb.eu-west-1.amazonaws.com", None),
        ("https://dynamodb.eu-west-1.amazonaws.com", "session-token/with+chars=="),
        ("http://127.0.0.1:4566", "t"),
        ("https://dynamodb.eu-west-1.amazonaws.com:443", None),
    ],
)
def test_the_signature_is_botocores(url: str, token: str | None) -> None:
    credentials = ReadOnlyCredentials(
        "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token
    )
    body = b'{"TableName":"orders","Item":{"pk":{"S":"\xc3\xa9"}}}'
    request = AWSRequest(
        method="POST",
        url=url + "/",
        data=body,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET},
    )
    SigV4Auth(credentials, "dynamodb", REGION).add_auth(request)
    moment = datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)

    signer = DynamoDBSigner(REGION, host_of(url))
    ours = signer.headers(credentials, TARGET, CONTENT_TYPE, body, now=moment)
    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours.get("X-Amz-Security-Token") == request.headers.get("X-Amz-Security-Token")
    # The key is cached per day and secret: a second request signs the same way.
    again = signer.headers(credentials, TARGET, CONTENT_TYPE, body, now=moment)
    assert again["Authorization"] == ours["Authorization"]


Connect = Callable[..., Any]


@pytest.fixture(params=["urllib3", "loop"])
def connect(request: pytest.FixtureRequest) -> Iterator[Connect]:
    """Makes direct clients sending over one transport (closed after the test)."""
    loops: list[LoopClient] = []

    def make(endpoint: str, read_timeout: float = 10.0, verify: bool | str = True) -> Any:
        direct = direct_client(endpoint, read_timeout, verify)
        if request.param == "urllib3":
            return direct
        loops.append(LoopClient(direct))
        return loops[-1]

    yield make
    for loop in loops:
        loop.close()


@pytest.fixture
def wire(moto_endpoint: str, connect: Connect) -> Any:
    return connect(moto_endpoint)


@pytest.fixture
def ddb(moto_endpoint: str) -> Any:
    return client("dynamodb", REGION, moto_endpoint)


@pytest.fixture
def table(ddb: Any, unique: Any) -> str:
    name: str = unique("wire")
    create_table(ddb, name, stream=None)
    return name


def direct_client(
    endpoint: str, read_timeout: float = 10.0, verify: bool | str = True
) -> WireWriteClient:
    botocore_client = clients.dynamodb(Place(REGION, endpoint), sdk_retries=False)
    return WireWriteClient(
        botocore_client,
        max_connections=4,
        connect_timeout=2.0,
        read_timeout=read_timeout,
        verify=verify,
    )


EVERY_TYPE: dict[str, Any] = {
    "pk": {"S": "k-é-\u2603"},
    "n": {"N": "-0.000000000000000000000000000000012345678901234567890123456789"},
    "b": {"B": bytes(range(256))},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b"\x00", b"\xff\xfe"]},
    "m": {"M": {"inner": {"L": [{"NULL": True}, {"BOOL": False}, {"B": b"\x01"}]}}},
    "empty_s": {"S": ""},
}


def test_every_attribute_type_round_trips(wire: Any, ddb: Any, table: str) -> None:
    wire.put_item(TableName=table, Item=EVERY_TYPE)
    stored = ddb.get_item(TableName=table, Key={"pk": EVERY_TYPE["pk"]}, ConsistentRead=True)
    assert stored["Item"] == EVERY_TYPE

    wire.delete_item(
        TableName=table,
        Key={"pk": EVERY_TYPE["pk"]},
        ConditionExpression="#n = :n",
        ExpressionAttributeNames={"#n": "n"},
        ExpressionAttributeValues={":n": EVERY_TYPE["n"]},
    )
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": EVERY_TYPE["pk"]})


def test_a_lost_condition_carries_the_destination_item_in_boto3_form(
    wire: Any, ddb: Any, table: str
) -> None:
    ddb.put_item(TableName=table, Item=EVERY_TYPE)
    with pytest.raises(ClientError) as raised:
        wire.put_item(
            TableName=table,
            Item={"pk": EVERY_TYPE["pk"]},
            ConditionExpression="attribute_not_exists(pk)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert error_code(raised.value) == "ConditionalCheckFailedException"
    assert classify(raised.value) is ErrorKind.CONDITION_FAILED
    assert raised.value.response["Item"] == EVERY_TYPE


def test_a_missing_table_and_a_rejected_item_are_classified_as_botocore_errors(
    wire: Any, table: str, unique: Any
) -> None:
    with pytest.raises(ClientError) as missing:
        wire.put_item(TableName=unique("absent"), Item={"pk": {"S": "a"}})
    assert error_code(missing.value) == "ResourceNotFoundException"
    assert classify(missing.value) is ErrorKind.NOT_FOUND

    with pytest.raises(ClientError) as rejected:
        wire.put_item(TableName=table, Item={"pk": {"N": "1"}})  # the key is a string
    assert error_code(rejected.value) == "ValidationException"
    assert rejected.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert classify(rejected.value) is ErrorKind.REJECTED


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    running = FaultProxy(moto_endpoint).start()
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("fault", "expected", "raised_as"),
    [
        ("throttle", ErrorKind.THROTTLED, ClientError),
        ("server_errors", ErrorKind.RETRY, ClientError),
        ("resets", ErrorKind.RETRY, ConnectionClosedError),
        ("black_hole", ErrorKind.RETRY, ReadTimeoutError),
        ("refuse", ErrorKind.RETRY, EndpointConnectionError),
        ("garbage", ErrorKind.RETRY, MalformedAnswer),
    ],
)
def test_faults_surface_as_retryable_errors_and_the_client_recovers(
    proxy: FaultProxy,
    ddb: Any,
    table: str,
    fault: str,
    expected: ErrorKind,
    raised_as: type[Exception],
    connect: Connect,
) -> None:
    # Only the black hole needs a short read timeout to end; elsewhere a generous one keeps
    # a slow moment of the shared moto server from failing the recovery step.
    wire = connect(proxy.url, read_timeout=2.0 if fault == "black_hole" else 10.0)
    wire.put_item(TableName=table, Item={"pk": {"S": "before"}})  # a pooled connection

    if fault == "throttle":
        proxy.throttle(1.0)
    elif fault == "resets":
        proxy.resets(1.0)
    else:
        getattr(proxy, fault)()
    with pytest.raises((ClientError, BotoCoreError)) as raised:
        wire.put_item(TableName=table, Item={"pk": {"S": "during"}})
    assert classify(raised.value) is expected
    assert type(raised.value) is raised_as
    if fault in ("throttle", "server_errors"):
        assert isinstance(raised.value, ClientError)
    else:
        assert isinstance(raised.value, BotoCoreError)  # counted as "network" by the writer
    if fault == "garbage":
        assert may_have_landed(raised.value)  # a garbled 200 is no refusal
        assert "PutItem answered HTTP 200" in str(raised.value)

    proxy.pass_through()
    wire.put_item(TableName=table, Item={"pk": {"S": "after"}})
    keys = {item["pk"]["S"] for item in ddb.scan(TableName=table)["Items"]}
    assert {"before", "after"} <= keys


class _CorruptingHandler(BaseHTTPRequestHandler):
    """Answers 200 with a body whose x-amz-crc32 does not match, as a corrupted reply."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-crc32", str(zlib.crc32(body) ^ 1))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _corrupting_server() -> Iterator[str]:
    """The URL of a server answering every request as :class:`_CorruptingHandler`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CorruptingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_corrupted_response_is_a_retryable_checksum_error(connect: Connect) -> None:
    with _corrupting_server() as url:
        wire = connect(url)
        with pytest.raises(ChecksumError) as raised:
            wire.put_item(TableName="t", Item={"pk": {"S": "a"}})
        assert classify(raised.value) is ErrorKind.RETRY


def test_a_corrupted_response_is_a_checksum_error_through_botocore_too() -> None:
    """``writer.send_with_botocore``: botocore's own crc32 check is a retry condition,
    and with the writers' single attempt it returned the corrupted body as a success."""
    with _corrupting_server() as url:
        ddb = clients.dynamodb(Place(REGION, url), sdk_retries=False)
        with pytest.raises(ChecksumError) as raised:
            ddb.put_item(TableName="t", Item={"pk": {"S": "a"}})
        assert may_have_landed(raised.value)


def test_an_error_body_without_json_keeps_its_status() -> None:
    plain = _error_response(502, {}, b"<html>Bad Gateway</html>")
    assert plain["Error"] == {"Code": "502", "Message": "<html>Bad Gateway</html>"}
    assert classify(ClientError(plain, "PutItem")) is ErrorKind.RETRY


def test_a_destination_behind_an_http_proxy_keeps_botocores_pipeline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    proxied = clients.dynamodb(Place(REGION), sdk_retries=False)  # https://dynamodb...
    assert (
        direct_write_client(proxied, max_connections=4, connect_timeout=1.0, read_timeout=1.0)
        is proxied
    )

    monkeypatch.delenv("HTTPS_PROXY")
    direct = clients.dynamodb(Place(REGION), sdk_retries=False)
    chosen = direct_write_client(direct, max_connections=4, connect_timeout=1.0, read_timeout=1.0)
    assert isinstance(chosen, WireWriteClient)


def test_tls_is_verified_against_the_bundle_botocore_resolved(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    bundle = tmp_path / "corporate-ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
    botocore_client = clients.dynamodb(Place(REGION), sdk_retries=False)
    chosen = direct_write_client(
        botocore_client, max_connections=4, connect_timeout=1.0, read_timeout=1.0
    )
    assert isinstance(chosen, WireWriteClient)
    settings = chosen._pool.connection_pool_kw
    assert settings["cert_reqs"] == "CERT_REQUIRED" and settings["ca_certs"] == str(bundle)

    unverified = WireWriteClient(
        botocore_client, max_connections=1, connect_timeout=1, read_timeout=1, verify=False
    )
    assert unverified._pool.connection_pool_kw["cert_reqs"] == "CERT_NONE"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, signed by itself (its own CA bundle)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _EmptyAnswerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize(
    ("resets", "raised_as"), [(False, ReadTimeoutError), (True, ConnectionClosedError)]
)
def test_a_broken_tls_handshake_is_in_doubt_alike_on_both_transports(
    connect: Connect, resets: bool, raised_as: type[BotoCoreError]
) -> None:
    """The TCP connection was made, the handshake stalled or was reset: nothing was asked,
    but urllib3 raises what a request without an answer raises, which no writer can tell
    apart. The loop raises the same, not a connection never made: a write found there
    later counts applied whichever transport sent it."""
    with SilentEndpoint(resets=resets) as endpoint:
        url = endpoint.url.replace("http://", "https://")
        wire = connect(url, read_timeout=1.0, verify=False)
        with pytest.raises(BotoCoreError) as raised:
            wire.put_item(TableName="t", Item={"pk": {"S": "a"}})
    assert type(raised.value) is raised_as
    assert may_have_landed(raised.value)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_against_the_ca_bundle_by_both_transports(
    tmp_path: Path, connect: Connect
) -> None:
    cert, key = _self_signed(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmptyAnswerHandler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        assert connect(url, verify=str(cert)).put_item(TableName="t", Item={"pk": {"S": "a"}}) == {}
        assert connect(url, verify=False).put_item(TableName="t", Item={"pk": {"S": "a"}}) == {}
        # botocore's own bundle does not know this certificate: refused, and retried.
        with pytest.raises(ConnectionClosedError) as refused:
            connect(url).put_item(TableName="t", Item={"pk": {"S": "a"}})
        assert classify(refused.value) is ErrorKind.RETRY
    finally:
        server.shutdown()
        server.server_close()


_DENIAL = (
    b'<?xml version="1.0" encoding="UTF-8"?><ErrorResponse><Error><Code>AccessDenied</Code>'
    b"<Message>User: arn:aws:iam::123456789012:user/replicator is not authorized to perform: "
    b"dynamodb:PutItem on resource: arn:aws:dynamodb:eu-west-1:123456789012:table/orders"
    b"</Message></Error><RequestId>" + b"7" * 52 + b"</RequestId></ErrorResponse>"
)


class _DenyingHandler(BaseHTTPRequestHandler):
    """Answers 403 with an XML body and no JSON error type, as moto's IAM checks do (and
    as a gateway in front of an endpoint may)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(403)
        self.send_header("Content-Length", str(len(_DENIAL)))
        self.end_headers()
        self.wfile.write(_DENIAL)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_403_without_an_aws_error_type_is_access_denied_on_both_paths(
    connect: Connect,
) -> None:
    """It was classified ``rejected``, a property of the change: the writer dead-lettered
    each refused change and the checkpoint moved past it, where a refusal of access must
    be retried and, persisting, stop the worker (the stream reader already stopped)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DenyingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        direct = connect(url)
        botocore_client = clients.dynamodb(Place(REGION, url), sdk_retries=False)
        for send in (direct.put_item, botocore_client.put_item):
            with pytest.raises(ClientError) as raised:
                send(TableName="orders", Item={"pk": {"S": "a"}})
            assert classify(raised.value) is ErrorKind.DENIED
            assert not may_have_landed(raised.value)
        # The direct path's message: the page's text, no tag cut in two.
        message = direct_message(direct)
        assert "not authorized to perform: dynamodb:PutItem" in message, message
        assert "<" not in message, message
    finally:
        server.shutdown()
        server.server_close()


def direct_message(direct: Any) -> str:
    with pytest.raises(ClientError) as raised:
        direct.put_item(TableName="orders", Item={"pk": {"S": "a"}})
    return error_message(raised.value)


def test_a_403_with_an_aws_error_type_keeps_its_own_kind() -> None:
    """Only a 403 without an AWS error type is taken for access denied: SQS's ``OverLimit``
    (too many messages in flight, HTTP 403) is throttling."""
    over = {
        "Error": {"Code": "OverLimit", "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": 403},
    }
    assert classify(ClientError(over, "SendMessage")) is ErrorKind.THROTTLED
    untyped = _error_response(403, {}, b"<html>Forbidden</html>")
    assert classify(ClientError(untyped, "PutItem")) is ErrorKind.DENIED
