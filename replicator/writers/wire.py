"""PutItem and DeleteItem over DynamoDB's JSON protocol, without botocore's request pipeline.

Why: a writer spends most of its CPU in botocore, not in the network: about three
quarters of a processor's time at 1,000 changes/s goes to botocore's event hooks,
serializer, endpoint resolution and parser around each request (see the benchmarks).
These two operations are all the stream path sends, their wire format is small and
stable (JSON, attribute values as DynamoDB JSON), so they are sent here directly:
the body serialized with :mod:`json`, signed with SigV4 (:mod:`.sigv4`) using botocore's
credentials (so the default chain and assumed roles refresh as usual), over a urllib3
connection pool.

What stays botocore's: credentials, endpoint resolution (taken from a botocore client
built for the destination), and the exception types. Every failure is raised
as the :class:`~botocore.exceptions.ClientError` or
:class:`~botocore.exceptions.BotoCoreError` botocore would have raised, with the same
error code and HTTP status, so :func:`replicator.aws.errors.classify` (retries,
refusals, dead letters) works unchanged. ``get_item``, the rest of
:class:`~replicator.aws.clients.WriteClient`, is the botocore client's.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, cast

import msgspec
import structlog
import urllib3
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.httpsession import get_cert_path

from replicator.aws.answers import check_crc32, parse_answer
from replicator.aws.errors import CLOCK_SKEW
from replicator.exceptions import AttributeFormatError
from replicator.images import Image
from replicator.items import item_from_wire
from replicator.writers.sigv4 import DynamoDBSigner, host_of

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb import type_defs as wire
    from typing_extensions import Unpack

    from replicator.aws.clients import WriteClient

log = structlog.get_logger(__name__)

_ENCODER = msgspec.json.Encoder()
_TARGET = "DynamoDB_20120810."
_CONTENT_TYPE = "application/x-amz-json-1.0"
# How far the destination's clock must be from the one signed on before a refusal is
# taken for the clock's: DynamoDB refuses a signature 5 minutes off, and the Date header
# has a resolution of a second.
_CLOCK_MOVED = timedelta(seconds=60)


def _encode_binary(value: object) -> str:
    """``json.dumps`` hook: binaries travel as base64 strings in DynamoDB JSON."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not a DynamoDB attribute value")


def direct_write_client(
    botocore_client: DynamoDBClient,
    *,
    max_connections: int,
    connect_timeout: float,
    read_timeout: float,
) -> WriteClient:
    """A :class:`WireWriteClient` reaching the endpoint as botocore would, else botocore's.

    The direct path verifies TLS against the CA bundle botocore resolved
    (``AWS_CA_BUNDLE``, ``ca_bundle``, or its default). It does not speak to HTTP proxies:
    where botocore would send the destination's requests through one (``HTTPS_PROXY``,
    the client's ``proxies``), the writer keeps botocore's pipeline instead.
    """
    endpoint_url: str = botocore_client.meta.endpoint_url
    session = botocore_client._endpoint.http_session  # type: ignore[attr-defined]
    proxy_config = getattr(session, "_proxy_config", None)
    if proxy_config is None:  # a botocore whose HTTP session this module does not know
        log.info("writes go through botocore's request pipeline", endpoint=endpoint_url)
        return botocore_client
    if proxy_config.proxy_url_for(endpoint_url):
        log.info(
            "writes go through botocore's request pipeline: an HTTP proxy applies",
            endpoint=endpoint_url,
        )
        return botocore_client
    return WireWriteClient(
        botocore_client,
        max_connections=max_connections,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        verify=getattr(session, "_verify", True),
    )


def botocore_client_of(client: WriteClient) -> DynamoDBClient:
    """The botocore client behind a writer's client, for what writers never send
    (DescribeTable, Scan): the direct client's, or the client itself."""
    if isinstance(client, WireWriteClient):
        return client.botocore_client
    return cast("DynamoDBClient", client)


class WireWriteClient:
    """``put_item``/``delete_item`` as a boto3 DynamoDB client has them, sent directly.

    ``botocore_client`` supplies the endpoint, region, credentials and User-Agent, and
    answers ``get_item``; nothing else is forwarded to it, so what the writers may call
    is :class:`~replicator.aws.clients.WriteClient` and no more.
    """

    def __init__(
        self,
        botocore_client: DynamoDBClient,
        *,
        max_connections: int,
        connect_timeout: float,
        read_timeout: float,
        verify: bool | str = True,
    ) -> None:
        """``verify``: False skips TLS verification, a string names a CA bundle."""
        self.botocore_client = botocore_client
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.verify = verify
        meta = botocore_client.meta
        self.endpoint_url: str = meta.endpoint_url
        self._region: str = meta.region_name
        self._credentials = botocore_client._request_signer._credentials  # type: ignore[attr-defined]
        self._user_agent: str = meta.config.user_agent or "dynamodb-replicator"  # type: ignore[attr-defined]
        self._signer = DynamoDBSigner(self._region, host_of(self.endpoint_url))
        # Server time minus ours, learnt from a clock-skew refusal: requests are signed
        # on the server's clock from then on, so a host whose clock drifted keeps writing.
        self.clock_offset = timedelta(0)
        self._pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=max_connections,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            **_tls(verify),
        )

    def put_item(self, **kwargs: Unpack[wire.PutItemInputTypeDef]) -> wire.PutItemOutputTypeDef:
        return cast("wire.PutItemOutputTypeDef", self._call("PutItem", kwargs))

    def delete_item(
        self, **kwargs: Unpack[wire.DeleteItemInputTypeDef]
    ) -> wire.DeleteItemOutputTypeDef:
        return cast("wire.DeleteItemOutputTypeDef", self._call("DeleteItem", kwargs))

    def get_item(self, **kwargs: Unpack[wire.GetItemInputTypeDef]) -> wire.GetItemOutputTypeDef:
        """Only a rule that reads the destination's item calls this; wiring gives such a
        rule botocore's client, so this answers through botocore as well."""
        return self.botocore_client.get_item(**kwargs)

    def batch_get_item(
        self, **kwargs: Unpack[wire.BatchGetItemInputTypeDef]
    ) -> wire.BatchGetItemOutputTypeDef:
        """Only the tombstone reads of active-active's high-water stage call this, off the
        event loop: botocore answers it."""
        return self.botocore_client.batch_get_item(**kwargs)

    def _call(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        body, headers = self.request(operation, params)
        try:
            response = self._pool.urlopen(
                "POST",
                self.endpoint_url + "/",
                body=body,
                headers=headers,
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.ReadTimeoutError as error:
            raise ReadTimeoutError(endpoint_url=self.endpoint_url, error=error) from error
        except (
            urllib3.exceptions.NewConnectionError,
            urllib3.exceptions.ConnectTimeoutError,
        ) as error:
            raise EndpointConnectionError(endpoint_url=self.endpoint_url, error=error) from error
        except urllib3.exceptions.HTTPError as error:
            # Reset, closed mid-response, protocol errors: the write may or may not have
            # happened, which a conditional (or in-order) write tolerates on retry.
            raise ConnectionClosedError(endpoint_url=self.endpoint_url, error=error) from error
        return self.answer(
            operation,
            response.status,
            response.data,
            response.headers.get("x-amz-crc32"),
            response.headers.get("Date"),
        )

    def signing_may_block(self) -> bool:
        """Whether signing now may refresh the credentials first: a call to STS, or to the
        container or instance credential endpoint, that can take seconds. The event loop
        leaves such writes to a thread, so that one destination's refresh never stalls
        the others' writes."""
        refresh_needed = getattr(self._credentials, "refresh_needed", None)
        return bool(refresh_needed()) if callable(refresh_needed) else False

    def request(self, operation: str, params: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The body and signed headers of one request (``Host`` and ``Content-Length``
        are the transport's); every transport sends exactly these."""
        body = request_body(params)
        return body, self._signed_headers(operation, body)

    def answer(
        self,
        operation: str,
        status: int,
        data: bytes,
        crc32: str | None,
        date: str | None,
    ) -> dict[str, Any]:
        """What an HTTP answer means, as botocore would say it: the parsed output of a
        200, else the :class:`ClientError` raised; a body that fails its ``x-amz-crc32``
        raises :class:`ChecksumError`, and a 200 whose body is not a JSON object
        :class:`~replicator.aws.answers.MalformedAnswer` (a write that may have landed,
        as a dropped connection's: never counted applied). Every transport hands its
        answers here, so the writers classify them the same way whichever sent the
        request."""
        check_crc32(data, crc32)
        if status == 200:
            return parse_answer(operation, data)
        parsed = _parse(data)
        failure = _error_response(status, parsed, data)
        if failure["Error"]["Code"] in CLOCK_SKEW:
            self._learn_clock_offset(date)
        raise ClientError(failure, operation)  # type: ignore[arg-type]

    def _learn_clock_offset(self, date_header: str | None) -> None:
        """Take the server's clock from the ``Date`` header of a clock-skew refusal."""
        if not date_header:
            return
        try:
            server_now = parsedate_to_datetime(date_header)
        except (TypeError, ValueError):
            return
        if server_now.tzinfo is None:
            server_now = server_now.replace(tzinfo=UTC)
        offset = server_now - datetime.now(UTC)
        # A refusal with the clocks in step (within the Date header's second and the
        # answer's way back) is not the clock's doing: a wrong secret key is answered
        # with the same code. Only a clock that moved by more than that is learnt and
        # said, once per move, not once per refused write.
        if abs(offset - self.clock_offset) < _CLOCK_MOVED:
            return
        if abs(offset) < _CLOCK_MOVED:
            offset = timedelta(0)
            log.warning(
                "the destination's clock agrees with this host's again; signing on this "
                "host's clock",
                endpoint=self.endpoint_url,
            )
        else:
            log.warning(
                "the destination's clock differs from this host's; signing on its clock",
                endpoint=self.endpoint_url,
                offset_s=round(offset.total_seconds(), 1),
            )
        self.clock_offset = offset

    def _signed_headers(self, operation: str, body: bytes) -> dict[str, str]:
        credentials = self._credentials
        if credentials is None:
            raise NoCredentialsError()
        # Frozen per request: a refreshable (assumed-role, container) credential renews
        # itself here before it expires.
        now = datetime.now(UTC) + self.clock_offset if self.clock_offset else None
        headers = self._signer.headers(
            credentials.get_frozen_credentials(), _TARGET + operation, _CONTENT_TYPE, body, now
        )
        headers["User-Agent"] = self._user_agent
        return headers


def request_body(params: Mapping[str, Any]) -> bytes:
    """The JSON body of a PutItem/DeleteItem request with these boto3-style parameters.

    An ``Item`` that is a stream :class:`~replicator.images.Image` (the put writes a
    change's image as the record carried it) goes out as the record's bytes: DynamoDB
    JSON is the form PutItem takes (binaries as base64 text, numbers as their exact
    strings), so it is neither decoded nor encoded again. Any other item (a write-back,
    a correction, a resolver's) is encoded from its boto3 form, binaries as base64.
    """
    item = params.get("Item")
    if type(item) is Image:
        wire = item.wire
        params = {**params, "Item": msgspec.Raw(wire) if wire is not None else item.item}
    try:
        return _ENCODER.encode(params)
    except TypeError:
        # Not a DynamoDB attribute value (a set, a float): say which, as json would.
        return json.dumps(params, default=_encode_binary, separators=(",", ":")).encode()


def ca_bundle(verify: bool | str) -> str | None:
    """The CA bundle TLS is verified against (None: not verified), as botocore resolves
    ``verify``: False skips verification, a string names a bundle, True is botocore's."""
    if verify is False:
        return None
    return verify if isinstance(verify, str) else cast("str", get_cert_path(True))


def _tls(verify: bool | str) -> dict[str, Any]:
    bundle = ca_bundle(verify)
    if bundle is None:
        return {"cert_reqs": "CERT_NONE"}
    return {"cert_reqs": "CERT_REQUIRED", "ca_certs": bundle}


def _parse(data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    try:
        parsed = json.loads(data)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _error_response(status: int, parsed: dict[str, Any], data: bytes) -> dict[str, Any]:
    """The ``response`` botocore's ClientError carries, built from DynamoDB's error body."""
    kind = str(parsed.get("__type", ""))
    code = kind.rsplit("#", 1)[-1] if kind else str(status)
    message = parsed.get("message") or parsed.get("Message")
    if message is None:
        # Not cut here: a cut in a tag would stay in the line; excerpt() cuts the text.
        message = data[:8192].decode("utf-8", "replace") if not parsed else ""
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": str(message)},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    if isinstance(parsed.get("Item"), dict):
        # Only explains a lost condition (in the debug log): an item that does not
        # convert is left out rather than hiding the error it came with.
        with contextlib.suppress(AttributeFormatError):
            response["Item"] = item_from_wire(parsed["Item"])
    return response
