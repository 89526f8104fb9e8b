"""AWS clients: credentials from the default chain, or from an assumed role that refreshes.

Credentials are never read, copied or logged here: boto3 resolves them (environment,
shared config, container or instance role), and for a destination in another account
botocore's assume-role fetcher obtains temporary credentials and renews them before
they expire.
"""

from __future__ import annotations

import platform
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials

from replicator import __version__

SESSION_NAME = "dynamodb-replicator"

# A fixed User-Agent (botocore appends its own version). Without it botocore rebuilds and
# sanitizes its composite header twice per request, about a tenth of the CPU of a PutItem;
# and CloudTrail names the replicator.
USER_AGENT = f"dynamodb-replicator/{__version__} Python/{platform.python_version()}"


def session_for(
    region: str, role_arn: str | None = None, external_id: str | None = None
) -> boto3.Session:
    """A session in ``region``; with ``role_arn``, one that assumes that role."""
    if role_arn is None:
        return boto3.Session(region_name=region)
    base = botocore.session.Session()
    base.set_config_variable("region", region)
    extra: dict[str, Any] = {"RoleSessionName": SESSION_NAME}
    if external_id:
        extra["ExternalId"] = external_id
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=base.create_client,
        source_credentials=base.get_credentials(),
        role_arn=role_arn,
        extra_args=extra,
    )
    assumed = botocore.session.Session()
    assumed.set_config_variable("region", region)
    assumed._credentials = DeferredRefreshableCredentials(  # type: ignore[attr-defined]
        method="assume-role", refresh_using=fetcher.fetch_credentials
    )
    return boto3.Session(botocore_session=assumed, region_name=region)


def client(
    service: str,
    region: str,
    *,
    endpoint_url: str | None = None,
    role_arn: str | None = None,
    external_id: str | None = None,
    max_pool_connections: int = 10,
    connect_timeout: float = 5.0,
    read_timeout: float = 10.0,
    sdk_retries: bool = True,
    validate_parameters: bool = True,
) -> Any:
    """A low-level client. ``sdk_retries=False`` leaves every retry to the caller.

    ``validate_parameters=False`` skips botocore's client-side walk of every argument,
    for callers whose arguments were already checked (a decoded stream image): the
    service still validates, and answers ValidationException for anything malformed.

    botocore reads ``retries["max_attempts"]`` as retries *after* the first attempt, so
    the limit is given as ``total_max_attempts`` (first attempt included): 1 means the
    SDK never retries, and every failure reaches the caller and its metrics.
    """
    config = Config(
        region_name=region,
        max_pool_connections=max_pool_connections,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": 3 if sdk_retries else 1},
        tcp_keepalive=True,
        parameter_validation=validate_parameters,
        user_agent=USER_AGENT,
    )
    session = session_for(region, role_arn, external_id)
    return session.client(service, endpoint_url=endpoint_url, config=config)  # type: ignore[call-overload]
