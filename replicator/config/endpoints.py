"""Endpoint URLs: the form that botocore, the direct JSON-protocol writer and the KCL all take.

botocore refuses a URL without a scheme (``ValueError: Invalid endpoint``) only when a
client is made, and takes a trailing space, a port that is not a number, a path or a
query, which then fail later (``Port could not be cast to integer``) or send requests
somewhere else. A job file's endpoint, and one set for botocore in the environment
(``AWS_ENDPOINT_URL``...), is checked against this one rule instead.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from replicator.hosts import host_problem
from replicator.logs import REDACTED, redact

if TYPE_CHECKING:  # the wait imports this module: pydantic is the job file's, not its
    from pydantic import ValidationInfo

EXAMPLE = "http://127.0.0.1:8000"
USERINFO = "it must not carry a user name or password"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/+")
# A URL with a user name or password in a text, whatever the password holds (a blank too,
# which ends a URL for the log filter): ``http://user:pass word@proxy:3128``.
_USERINFO_IN_TEXT = re.compile(rf"\b{_SCHEME.pattern}[^@]*@")


# The host of an SQS queue URL in AWS (``sqs.<region>.amazonaws.com``, the legacy
# ``<region>.queue.amazonaws.com`` and ``queue.amazonaws.com`` of us-east-1, the
# dual-stack ``sqs.<region>.api.aws``, FIPS's ``sqs-fips.<region>.amazonaws.com``): the
# host names the region the queue is in.
_AWS_QUEUE_HOST = re.compile(
    r"(?:sqs(?:-fips)?\.(?P<sqs>[a-z0-9-]+)\.(?:amazonaws\.com(?:\.cn)?|api\.aws)"
    r"|(?P<legacy>[a-z0-9-]+)\.queue\.amazonaws\.com(?:\.cn)?|queue\.amazonaws\.com)"
)


def aws_queue_region(url: str) -> str | None:
    """The region an AWS queue URL's (or SQS endpoint's) host names; None for any other
    host. SQS answers about a queue only in the queue's own region."""
    found = _AWS_QUEUE_HOST.fullmatch(_host(url))
    return None if found is None else found["sqs"] or found["legacy"] or "us-east-1"


def aws_endpoint_of(service: str, region: str) -> str | None:
    """The endpoint botocore sends ``service``'s requests in ``region`` to, when it is
    AWS's own; None when it comes from ``AWS_ENDPOINT_URL_<SERVICE>``,
    ``AWS_ENDPOINT_URL`` or the AWS config file (an emulator's, which the job cannot see
    but botocore uses), or when botocore refuses to say (a missing profile: what uses
    it reports that). FIPS, dual-stack and the other partitions' endpoints are AWS's."""
    import botocore.exceptions  # here: only its callers' rare cases pay for botocore
    import botocore.session

    try:
        # Placeholder keys: making a client without any would walk the credential chain,
        # which can wait on the instance metadata service; the endpoint needs none.
        client = botocore.session.Session().create_client(
            service,
            region_name=region,
            aws_access_key_id="placeholder",
            aws_secret_access_key="placeholder",  # noqa: S106 - never sent anywhere
        )
        endpoint = str(client.meta.endpoint_url)
    except (botocore.exceptions.BotoCoreError, ValueError):
        return None
    return endpoint if at_aws(endpoint) else None


def at_aws(url: str) -> bool:
    """Whether ``url``'s host is in one of AWS's DNS domains (every partition's, as
    botocore lists them: amazonaws.com, api.aws, amazonaws.com.cn, c2s.ic.gov, ...)."""
    host = _host(url)
    return any(host.endswith(f".{suffix}") for suffix in _aws_dns_suffixes())


def _host(url: str) -> str:
    """``url``'s host as DNS compares it: lower-case, without a final dot."""
    return (urlsplit(url).hostname or "").rstrip(".").lower()


@functools.cache
def _aws_dns_suffixes() -> tuple[str, ...]:
    import botocore.loaders

    partitions = botocore.loaders.create_loader().load_data("partitions")["partitions"]
    suffixes = {
        str(partition["outputs"][name]).lower()
        for partition in partitions
        for name in ("dnsSuffix", "dualStackDnsSuffix")
        if partition["outputs"].get(name)
    }
    return tuple(sorted(suffixes))


def holds_userinfo(text: str) -> bool:
    """Whether ``text`` holds a URL with a user name or password (see above)."""
    return _USERINFO_IN_TEXT.search(text) is not None


def userinfo_problem(url: str) -> str | None:
    """Why a URL key (an endpoint, a queue URL) refuses ``url``'s user name or password
    (None: it has none): SDK requests do not carry them, so they would reach the server
    without, and a password in a job file is printed wherever its URL is. Any ``@`` counts:
    neither an endpoint nor a queue URL has one elsewhere, and a password holding ``/``
    makes urllib read the rest of it as the path."""
    return USERINFO if "@" in url else None


def quoted(url: str) -> str:
    """``url`` as a message quotes it (:func:`without_userinfo`, in quotes)."""
    return repr(without_userinfo(url))


def without_userinfo(url: str) -> str:
    """``url`` as a message shows it: its user name and password never shown, whatever
    they hold (a blank, a quote, ``/``, ``@``) and with or without a scheme: all before
    the last ``@`` (the scheme kept) is hidden."""
    at = url.rfind("@")
    if at >= 0:
        scheme = _SCHEME.match(url)
        start = scheme.end() if scheme else 0
        url = url[:start] + REDACTED + url[at:]
    return redact(url)


def endpoint_problem(url: str) -> str | None:
    """What is wrong with ``url`` as an endpoint (scheme, host, optional port), or None."""
    if "@" in url:
        return USERINFO
    if any(c.isspace() or not c.isprintable() for c in url):
        return "it contains whitespace or a control character"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        # An unclosed [ (http://[::1), or brackets round what is no IPv6 address
        # (http://[zz]:80): urllib's own words name neither the key nor the rule.
        return "its host is not a host name or IP address (an IPv6 address goes in [ ], as in http://[::1]:8000)"
    if parts.scheme not in ("http", "https"):
        return "it must start with http:// or https://"
    if not host:
        return "it names no host"
    try:
        port = parts.port
    except ValueError:
        return "its port is not a number from 1 to 65535"
    if port == 0:
        return "its port is not a number from 1 to 65535"
    if parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith(("?", "#")):
        return "it must be only a scheme, a host and a port (no path, query or fragment)"
    if "[" not in parts.netloc:
        return host_problem(host)
    # An IPv6 address, perhaps with a zone (%25eth0), as botocore reads it. Imported here:
    # botocore.utils takes a tenth of a second to import, which ``validate`` would pay
    # for nothing on the common local endpoint, an IPv4 address.
    from botocore.utils import is_valid_ipv6_endpoint_url

    if not is_valid_ipv6_endpoint_url(url):
        return f"{host!r} is not a host name or IP address"
    return None


def check_endpoint(value: str | None, info: ValidationInfo) -> str | None:
    """A pydantic validator: the endpoint, without a trailing slash, or ValueError. The
    section's ``region`` (validated before it, when given) must be the region of an AWS
    endpoint: AWS refuses every request signed for another region, which a run would
    retry for minutes before it stopped."""
    if value is None:
        return None
    region = info.data.get("region")
    problem = endpoint_problem(value) or (
        aws_region_problem(value, region) if isinstance(region, str) else None
    )
    if problem:
        raise ValueError(
            f"expected an endpoint URL such as {EXAMPLE} (http or https, a host, an "
            f"optional port): {problem}, got {quoted(value)}"
        )
    return value.removesuffix("/")


_DEFAULT_PORTS = {"http": 80, "https": 443}
# The host of an AWS service endpoint of the replicator's services, with its region: the
# service (FIPS and account-based DynamoDB endpoints, and a VPC endpoint's name before it,
# included), the region, then AWS's domain; or SQS's legacy <region>.queue.amazonaws.com.
# Only these: other hosts under amazonaws.com (an EC2 instance's public name, a load
# balancer's) may serve an emulator that takes any region.
_REGION = r"[a-z]{2,4}(?:-[a-z]+)+-\d+"
_AWS_SERVICE_HOST = re.compile(
    r"(?:(?:[a-z0-9-]+\.)*(?:dynamodb|dynamodb-fips|ddb|sqs|sqs-fips|kinesis|kinesis-fips)"
    rf"\.(?P<region>{_REGION})(?:\.vpce)?\.(?P<domain>[a-z0-9.-]+)"
    rf"|(?P<legacy>{_REGION})\.queue\.amazonaws\.com)",
    re.ASCII,
)


def _aws_service_region(url: str) -> str | None:
    """The region of ``url`` when it is an AWS service endpoint, else None. The domain
    must be one of AWS's (every partition's, as botocore lists them), read only for a
    host that names a service and a region."""
    match = _AWS_SERVICE_HOST.fullmatch(_host(url))
    if match is None:
        return None
    if match["legacy"]:
        return match["legacy"]
    return match["region"] if match["domain"] in _aws_dns_suffixes() else None


def aws_region_problem(url: str, region: str, whose: str = "the section's region") -> str | None:
    """Why an AWS service endpoint cannot serve ``region`` (``whose``, as the message
    names it; None: it is no such endpoint, or the region's own): its host names another
    region."""
    named = _aws_service_region(url)
    if not named or named == region:
        return None
    return (
        f"it is AWS's endpoint in {named}, and {whose} is {region} (AWS "
        f"refuses a request signed for another region): give region: {named}, or leave "
        "endpoint_url out to reach the region's own endpoint"
    )


def check_source_endpoint(value: str | None, info: ValidationInfo) -> str | None:
    """:func:`check_endpoint`, and not an AWS service's own endpoint: the source is
    reached through it for two services, DynamoDB (its table, the lease table) and its
    stream's (DynamoDB Streams or Kinesis), which AWS serves at hosts of their own. Only
    an emulator serves both at one URL; another host under amazonaws.com (an EC2
    instance's, a load balancer's) may be one."""
    if value is None or endpoint_problem(value):
        return check_endpoint(value, info)  # its refusal of a malformed URL
    if _aws_service_region(value):  # before its region is compared: no region helps
        raise ValueError(
            f"{quoted(value)} is AWS's endpoint of one service ({_host(value)}), and the source is "
            "reached through this URL for two: DynamoDB (the source table, the lease "
            "table) and its stream's service (DynamoDB Streams, or Kinesis), which AWS "
            "serves at another host: leave endpoint_url out to reach AWS's own endpoints "
            "(FIPS or dual-stack ones through AWS_USE_FIPS_ENDPOINT=true or "
            "AWS_USE_DUALSTACK_ENDPOINT=true, which the AWS SDKs apply to every client of "
            "the worker, destinations included; a VPC endpoint with private DNS answers "
            "under AWS's own names); endpoint_url is for an emulator, such as DynamoDB "
            "Local or moto, serving both"
        )
    return check_endpoint(value, info)


def endpoint_identity(url: str | None, region: str) -> str | None:
    """The server an endpoint (a valid one) reaches, for telling two tables apart:
    ``scheme://host:port`` with the scheme and host lower-cased and the default port
    given, so that ``HTTP://localhost/`` and ``http://localhost:80`` are one. None for
    the region's own AWS endpoint, which a place without an endpoint reaches too.

    Nothing is looked up: two names of one host (``localhost``, ``127.0.0.1``) stay
    two endpoints, and so does the AWS endpoint that ``AWS_ENDPOINT_URL`` or the AWS
    config file may give a place without one."""
    if url is None:
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    if port == _DEFAULT_PORTS.get(scheme) and host in _aws_hosts(region):
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        host = address.compressed if address.version == 4 else f"[{address.compressed}]"
    return f"{scheme}://{host}:{port}"


def _aws_hosts(region: str) -> tuple[str, ...]:
    """DynamoDB's own endpoints in ``region`` (China's regions under ``amazonaws.com.cn``),
    which take HTTP and HTTPS alike."""
    return (f"dynamodb.{region}.amazonaws.com", f"dynamodb.{region}.amazonaws.com.cn")


# The part of botocore's endpoint variable (AWS_ENDPOINT_URL_<ID>) of each service the
# replicator calls.
ENDPOINT_IDS = {
    "dynamodb": "DYNAMODB",
    "dynamodbstreams": "DYNAMODB_STREAMS",
    "kinesis": "KINESIS",
    "sqs": "SQS",
    "sts": "STS",
}


def environment_endpoint_problems(services: dict[str, str]) -> list[str]:
    """What ``validate`` warns of in the endpoint variables botocore would take for
    ``services`` (each with where the job uses it without an ``endpoint_url``): ``run``
    stops on such a value (exit 3) when it makes that client, which ``validate`` could
    see without calling AWS. None under ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``, which
    makes botocore skip the variables."""
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
        return []
    problems: dict[str, str] = {}
    for service, where in services.items():
        for name in (f"AWS_ENDPOINT_URL_{ENDPOINT_IDS[service]}", "AWS_ENDPOINT_URL"):
            url = os.environ.get(name)
            if not url:
                continue
            problem = endpoint_problem(url)
            if problem is not None and name not in problems:
                problems[name] = (
                    f"${name} ({quoted(url)}) is not usable as an endpoint: {problem}; `run` "
                    f"stops on it (exit 3) {where}"
                )
            break
    return list(problems.values())
