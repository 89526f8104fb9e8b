"""AWS clients: credentials from the default chain, or from an assumed role that refreshes.

The one place the package builds sessions and clients, so that every client gets the
same User-Agent, timeouts and retry settings, and so that credentials are handled in one
module. Credentials are never read, copied or logged here: botocore resolves them
(environment, shared config, container or instance role), and for a table in another
account botocore's assume-role fetcher obtains temporary credentials and renews them
before they expire.

Clients are made by botocore sessions directly: boto3 adds resources and S3 transfers to
them, neither used here, and importing it (with s3transfer) cost every processor, runtime
and command a twentieth of a second of CPU at start. Only :func:`default_dynamodb`, for
applications that embed the watermark reader, uses boto3's default session.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import botocore.session
from botocore.config import Config
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    InvalidConfigError,
    NoCredentialsError,
    ProfileNotFound,
)

from replicator import __version__
from replicator.aws.answers import watch_answers
from replicator.aws.errors import RoleNotAssumed
from replicator.aws.models import data_loader
from replicator.config.endpoints import ENDPOINT_IDS, endpoint_problem, quoted, without_userinfo
from replicator.exceptions import EnvironmentProblem

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        BatchGetItemInputTypeDef,
        BatchGetItemOutputTypeDef,
        DeleteItemInputTypeDef,
        DeleteItemOutputTypeDef,
        GetItemInputTypeDef,
        GetItemOutputTypeDef,
        PutItemInputTypeDef,
        PutItemOutputTypeDef,
    )
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_sqs import SQSClient
    from typing_extensions import Unpack

SESSION_NAME = "dynamodb-replicator"

# A fixed User-Agent (botocore appends its own version). Without it botocore rebuilds and
# sanitizes its composite header twice per request, about a tenth of the CPU of a PutItem;
# and CloudTrail names the replicator.
USER_AGENT = f"dynamodb-replicator/{__version__} Python/{platform.python_version()}"


class Reach(Protocol):
    """Where a service is reached and as whom: a job's source and destinations have these."""

    @property
    def region(self) -> str: ...

    @property
    def endpoint_url(self) -> str | None: ...

    @property
    def role_arn(self) -> str | None: ...

    @property
    def external_id(self) -> str | None: ...


@dataclass(frozen=True)
class Place:
    """A :class:`Reach` for what the job file does not describe as a table of its own
    (a dead-letter queue, the conflict-log table, a test's endpoint)."""

    region: str
    endpoint_url: str | None = None
    role_arn: str | None = None
    external_id: str | None = None


class Tuning(TypedDict, total=False):
    """How a client talks to its service; what is left out keeps the default.

    ``max_pool_connections`` (10), ``connect_timeout`` (5 s), ``read_timeout`` (10 s);
    ``sdk_retries=False`` leaves every retry to the caller; ``validate_parameters=False``
    skips botocore's client-side walk of every argument, for callers whose arguments were
    already checked (a decoded stream image): the service still validates, and answers
    ValidationException for anything malformed.
    """

    max_pool_connections: int
    connect_timeout: float
    read_timeout: float
    sdk_retries: bool
    validate_parameters: bool


class WriteClient(Protocol):
    """What a destination writer calls: both botocore's DynamoDB client and the direct
    JSON-protocol client (:class:`replicator.writers.wire.WireWriteClient`) have it."""

    def put_item(self, **kwargs: Unpack[PutItemInputTypeDef]) -> PutItemOutputTypeDef: ...

    def delete_item(self, **kwargs: Unpack[DeleteItemInputTypeDef]) -> DeleteItemOutputTypeDef: ...

    def get_item(self, **kwargs: Unpack[GetItemInputTypeDef]) -> GetItemOutputTypeDef: ...

    def batch_get_item(
        self, **kwargs: Unpack[BatchGetItemInputTypeDef]
    ) -> BatchGetItemOutputTypeDef: ...


@dataclass(frozen=True)
class RegionSession:
    """A botocore session and the region its clients are made in: what a boto3 session
    is to this package."""

    botocore_session: botocore.session.Session
    region: str

    def client(
        self, service: str, endpoint_url: str | None = None, config: Config | None = None
    ) -> Any:
        return self.botocore_session.create_client(
            service, region_name=self.region, endpoint_url=endpoint_url, config=config
        )


def _botocore_session(*, makes_clients: bool = True) -> botocore.session.Session:
    """A session on the shared loader. One that ``makes_clients`` adds botocore's name and
    version to their User-Agent after :data:`USER_AGENT`, as boto3's sessions did: the
    header CloudTrail records, and filters match, is the same whichever made the client.
    (The session an assumed role's STS client comes from keeps botocore's own header.)"""
    session = botocore.session.Session()
    session.register_component("data_loader", data_loader(session.get_config_variable("data_path")))
    if makes_clients:
        session.user_agent_extra = f"Botocore/{session.user_agent_version}"
    return session


def session_for(
    region: str, role_arn: str | None = None, external_id: str | None = None
) -> RegionSession:
    """A session in ``region``; with ``role_arn``, one that assumes that role. A role
    that cannot be assumed raises :class:`RoleNotAssumed` where a request is signed,
    naming STS's endpoint: the request it was for was never sent, and an error that
    named that request's endpoint would send an operator to the wrong service.

    One session serves every client of the same region and role while the ``AWS_*``
    environment stays as it was: a session costs about ten milliseconds of CPU to make,
    and each resolves the credential chain (or assumes the role) on its own, so a
    process with a client per table, destination and segment made them all again.
    Clients are made from it one at a time (:data:`_MAKING`): a session is not safe to
    make clients from on two threads at once; the clients themselves are."""
    return _shared_session(region, role_arn, external_id, _aws_environment())


def _aws_environment() -> tuple[tuple[str, str], ...]:
    """What of the environment a session reads its credentials and settings from: a
    command run again in one process with other credentials gets a session of its own."""
    return tuple(sorted(item for item in os.environ.items() if item[0].startswith("AWS_")))


_MAKING = threading.Lock()


@functools.lru_cache(maxsize=32)
def _shared_session(
    region: str,
    role_arn: str | None,
    external_id: str | None,
    environment: tuple[tuple[str, str], ...],
) -> RegionSession:
    del environment  # part of the cache's key only
    if role_arn is None:
        plain = _botocore_session()
        plain.set_config_variable("region", region)
        return RegionSession(plain, region)
    base = _botocore_session(makes_clients=False)
    base.set_config_variable("region", region)
    extra: dict[str, Any] = {"RoleSessionName": SESSION_NAME}
    if external_id:
        extra["ExternalId"] = external_id
    sts_endpoint = f"of {region}"  # the STS client's, once one is made

    def sts_client(service: str, **kwargs: Any) -> Any:
        nonlocal sts_endpoint
        try:
            client = base.create_client(service, **kwargs)
        except ValueError as error:
            # botocore refuses an endpoint without a scheme itself ("Invalid endpoint"),
            # before it could be checked below: the same one line, not a traceback.
            if "endpoint" not in str(error).lower():
                raise
            origin, given = _endpoint_origin("sts", Place(region))
            url = given or origin
            problem: str | None = (given and endpoint_problem(given)) or _said_safely(error)
        else:
            url = str(client.meta.endpoint_url)
            problem = endpoint_problem(url)
            if problem is None:
                sts_endpoint = url
                return client
        # As for the services' own endpoints (_checked), and never shown: a user name
        # and password in $AWS_ENDPOINT_URL_STS are refused, not sent along.
        sts_endpoint = without_userinfo(url)
        raise ClientError(
            {
                "Error": {
                    "Code": "InvalidEndpoint",
                    "Message": f"the sts endpoint {quoted(url)} is not usable: {problem}",
                }
            },
            "AssumeRole",
        )

    source_credentials = base.get_credentials()
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=sts_client,
        source_credentials=source_credentials,
        role_arn=role_arn,
        extra_args=extra,
    )

    def fetch_credentials() -> dict[str, Any]:
        try:
            if source_credentials is None:
                # No credentials to ask STS with: botocore's fetcher would fail on None
                # (an AttributeError, a traceback where the operator needs one line).
                raise NoCredentialsError()
            return fetcher.fetch_credentials()
        except (ClientError, BotoCoreError) as error:
            raise RoleNotAssumed(
                role_arn=role_arn, sts_endpoint=sts_endpoint, error=error
            ) from error

    assumed = _botocore_session()
    assumed.set_config_variable("region", region)
    assumed._credentials = DeferredRefreshableCredentials(  # type: ignore[attr-defined]
        method="assume-role", refresh_using=fetch_credentials
    )
    return RegionSession(assumed, region)


def _config(region: str, tuning: Tuning) -> Config:
    """botocore reads ``retries["max_attempts"]`` as retries *after* the first attempt, so
    the limit is given as ``total_max_attempts`` (first attempt included): 1 means the
    SDK never retries, and every failure reaches the caller and its metrics."""
    return Config(
        region_name=region,
        max_pool_connections=tuning.get("max_pool_connections", 10),
        connect_timeout=tuning.get("connect_timeout", 5.0),
        read_timeout=tuning.get("read_timeout", 10.0),
        retries={
            "mode": "standard",
            "total_max_attempts": 3 if tuning.get("sdk_retries", True) else 1,
        },
        tcp_keepalive=True,
        parameter_validation=tuning.get("validate_parameters", True),
        user_agent=USER_AGENT,
    )


@contextmanager
def _loading_credentials(place: Reach) -> Iterator[None]:
    """A client resolves its credentials when it is made: a profile that does not exist,
    or a credential process that fails, is the operator's to fix (one line, exit 3)."""
    try:
        yield
    except (ProfileNotFound, CredentialRetrievalError, InvalidConfigError) as error:
        whose = f" to assume {place.role_arn}" if place.role_arn else ""
        said = " ".join(str(error).split())  # a credential process's own lines, as one
        raise EnvironmentProblem(
            f"AWS credentials{whose} for {place.region} could not be loaded: {said}. "
            "Check AWS_PROFILE and the shared config and credentials files"
        ) from None


def _endpoint_origin(service: str, place: Reach) -> tuple[str, str | None]:
    """Where botocore takes the endpoint of a ``service`` client at ``place`` from, and
    the value there when it is a variable or the job file."""
    if place.endpoint_url:
        return "the job file", place.endpoint_url
    names = [f"AWS_ENDPOINT_URL_{ENDPOINT_IDS.get(service, service.upper())}", "AWS_ENDPOINT_URL"]
    for name in names:
        if os.environ.get(name):
            return f"${name}", os.environ[name]
    return "the AWS config file's endpoint_url", None


def _client(service: str, place: Reach, tuning: Tuning) -> Any:
    """A client of ``service`` at ``place``, made as :func:`_checked` says."""
    with _loading_credentials(place):
        return _checked(
            service,
            place,
            lambda: _made_from(_session(place), service, place, tuning),
        )


def _made_from(session: RegionSession, service: str, place: Reach, tuning: Tuning) -> Any:
    with _MAKING:
        return session.client(
            service, endpoint_url=place.endpoint_url, config=_config(place.region, tuning)
        )


def _checked(service: str, place: Reach, make: Callable[[], Any]) -> Any:
    """The client ``make`` returns; an endpoint botocore would refuse, or take and fail on
    later (a URL without a scheme, a trailing space, a port that is not a number), from a
    variable such as AWS_ENDPOINT_URL or the config file, is one line (exit 3)."""
    origin, url = _endpoint_origin(service, place)
    try:
        client = make()
    except ValueError as error:
        if "endpoint" not in str(error).lower():
            raise
        problem = (url and endpoint_problem(url)) or _said_safely(error)
    else:
        url = client.meta.endpoint_url
        checked = endpoint_problem(client.meta.endpoint_url)
        if checked is None:
            return client
        problem = checked
    shown = f" {quoted(url)}" if url is not None else ""
    raise EnvironmentProblem(
        f"the {service} endpoint{shown} for {place.region}, from {origin}, is not usable: "
        f"{problem} (an endpoint is http:// or https://, a host and an optional port)"
    )


def _said_safely(error: ValueError) -> str:
    """botocore's refusal of an endpoint (``Invalid endpoint: URL``), with any user name
    and password in the URL it quotes hidden: one from the AWS config file is not checked
    before botocore sees it."""
    return re.sub(r"\S+@\S+", lambda found: without_userinfo(found.group()), str(error))


def _session(place: Reach) -> RegionSession:
    return session_for(place.region, place.role_arn, place.external_id)


def dynamodb(place: Reach, **tuning: Unpack[Tuning]) -> DynamoDBClient:
    """A low-level DynamoDB client for the table (or tables) at ``place``; a garbled
    answer raises :class:`~replicator.aws.answers.MalformedAnswer`."""
    client: DynamoDBClient = watch_answers(_client("dynamodb", place, tuning))
    return client


def dynamodb_streams(place: Reach, **tuning: Unpack[Tuning]) -> DynamoDBStreamsClient:
    """A DynamoDB Streams client in the region (and account) of the source table; a
    garbled answer raises :class:`~replicator.aws.answers.MalformedAnswer`."""
    client: DynamoDBStreamsClient = watch_answers(_client("dynamodbstreams", place, tuning))
    return client


def kinesis(place: Reach, **tuning: Unpack[Tuning]) -> KinesisClient:
    """A Kinesis Data Streams client, for a source whose changes go to a Kinesis stream;
    a garbled answer raises :class:`~replicator.aws.answers.MalformedAnswer`."""
    client: KinesisClient = watch_answers(_client("kinesis", place, tuning))
    return client


def sqs(place: Reach, **tuning: Unpack[Tuning]) -> SQSClient:
    """An SQS client, for a dead-letter or conflict-log queue."""
    client: SQSClient = _client("sqs", place, tuning)
    return client


def default_dynamodb(
    region: str | None, endpoint_url: str | None = None, config: Config | None = None
) -> DynamoDBClient:
    """A DynamoDB client with boto3's own defaults (its default session, and retries and
    timeouts unless ``config`` says otherwise), for code an application embeds (the
    watermark reader) and the demo."""
    import boto3  # an application that embeds the reader has it loaded already

    client: DynamoDBClient = _checked(
        "dynamodb",
        Place(region or "the default region", endpoint_url),
        lambda: boto3.client(
            "dynamodb", region_name=region, endpoint_url=endpoint_url, config=config
        ),
    )
    return watch_answers(client)  # type: ignore[no-any-return]
