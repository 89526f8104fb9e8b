"""A destination is its region, table, endpoint and account: the same region and table in
another account (through a role of that account) is another table, and is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.config.destinations import resolve_destination
from replicator.config.loader import parse_job
from replicator.exceptions import ConfigError
from tests.config.test_job_checks import _refused
from tests.support.cli import validate_in_process

SOURCE = "source: {region: us-east-1, table: orders}\n"
ROLE_222 = "arn:aws:iam::222222222222:role/replica-writer"
ROLE_333 = "arn:aws:iam::333333333333:role/replica-writer"


def _destination(role: str | None = None, name: str | None = None) -> str:
    extra = (f", role_arn: '{role}'" if role else "") + (f", name: {name}" if name else "")
    return f"  - {{region: us-east-1, table: orders{extra}}}\n"


def _validates(tmp_path: Path, text: str) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    result = validate_in_process(path)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_source_tables_twin_in_another_account_is_accepted(tmp_path: Path) -> None:
    out = _validates(tmp_path, SOURCE + "destinations:\n" + _destination(ROLE_222))
    assert "us-east-1/orders: us-east-1/orders" in out


def test_two_disaster_recovery_copies_in_two_accounts_are_accepted_by_name(
    tmp_path: Path,
) -> None:
    text = (
        "source: {region: us-east-1, table: orders}\n"
        "destinations:\n"
        "  - {region: us-west-2, table: orders, name: dr-222, role_arn: '" + ROLE_222 + "'}\n"
        "  - {region: us-west-2, table: orders, name: dr-333, role_arn: '" + ROLE_333 + "'}\n"
    )
    out = _validates(tmp_path, text)
    assert "dr-222: us-west-2/orders" in out
    assert "dr-333: us-west-2/orders" in out
    resolved = parse_job(text, Path("job.yaml"))
    assert resolve_destination(resolved, "dr-333").role_arn == ROLE_333
    offers = r"fits several destinations .*; give 'dr-222' or 'dr-333'$"
    with pytest.raises(ConfigError, match=offers):
        resolve_destination(resolved, "us-west-2/orders")


def test_two_copies_of_one_region_and_table_need_names_of_their_own(tmp_path: Path) -> None:
    """Metrics, dead letters and the watermark's status items tell destinations apart by
    name: the default <region>/<table> would be one name for two tables."""
    text = (
        SOURCE
        + "destinations:\n"
        + _destination(ROLE_222).replace("us-east-1", "us-west-2")
        + _destination(ROLE_333).replace("us-east-1", "us-west-2")
    )
    _refused(
        tmp_path,
        text,
        "destinations[1].name",
        "is missing: the default name 'us-west-2/orders' is already that of destinations[0]",
        "give each destination a name of its own",
    )


ARN_222 = "arn:aws:dynamodb:us-east-1:222222222222:table/orders/stream/2026-01-01T00:00:00.000"


@pytest.mark.parametrize(
    ("source", "destinations", "key", "says"),
    [
        pytest.param(
            SOURCE, _destination(), "destinations[0]", "is the source table itself", id="no-roles"
        ),
        pytest.param(
            SOURCE,
            _destination(ROLE_222, "a") + _destination(ROLE_222.replace("writer", "other"), "b"),
            "destinations[1]",
            "repeats destinations[0]",
            id="two-roles-of-one-account",
        ),
        pytest.param(
            f"source: {{region: us-east-1, table: orders, stream: {{arn: '{ARN_222}'}}}}\n",
            _destination(ROLE_222),
            "destinations[0]",
            "is the source table itself",
            id="stream-arn-names-the-roles-account",
        ),
    ],
)
def test_the_same_table_in_the_same_account_is_still_refused(
    tmp_path: Path, source: str, destinations: str, key: str, says: str
) -> None:
    _refused(tmp_path, source + "destinations:\n" + destinations, key, says)


def test_a_destination_may_not_go_by_the_source_tables_name_when_the_job_writes_back(
    tmp_path: Path,
) -> None:
    """The writer of the source goes by <region>/<table> in conflict-log entries, which
    restore would take for the destination's."""
    active = (
        "conflict: {policy: last_writer_wins, timestamp_attribute: ts}\n"
        "loop_prevention: {origin_attribute: origin}\n"
    )
    text = SOURCE + "destinations:\n" + _destination(ROLE_222) + active
    _refused(
        tmp_path,
        text,
        "destinations[0].name",
        "the default name 'us-east-1/orders' is the name of the job's source table",
    )
    _validates(tmp_path, SOURCE + "destinations:\n" + _destination(ROLE_222, "dr") + active)


def _at(endpoint: str | None, name: str | None = None) -> str:
    where = f", endpoint_url: '{endpoint}'" if endpoint else ""
    return f"{{region: us-east-1, table: orders{where}" + (f", name: {name}" if name else "") + "}"


# One endpoint, written two ways: the scheme's or host's case, the default port left
# out or given, a trailing slash, an IPv6 address spelt out, no endpoint and the
# region's own AWS endpoint.
SAME_ENDPOINT = [
    pytest.param("http://127.0.0.1:48200", "HTTP://127.0.0.1:48200", id="scheme-case"),
    pytest.param("http://localhost", "http://localhost:80", id="http-default-port"),
    pytest.param("http://LocalHost:8000", "http://localhost:8000", id="host-case"),
    pytest.param("https://db.example.com", "https://db.example.com:443", id="https-default-port"),
    pytest.param("http://localhost/", "http://localhost:80", id="trailing-slash"),
    pytest.param("http://[::1]:8000", "http://[0:0::1]:8000", id="ipv6"),
    pytest.param(None, "https://dynamodb.us-east-1.amazonaws.com", id="aws-default"),
    pytest.param(None, "https://DYNAMODB.us-east-1.amazonaws.com:443/", id="aws-default-spelt"),
]


@pytest.mark.parametrize(("source", "destination"), SAME_ENDPOINT)
def test_a_destination_at_the_sources_endpoint_written_otherwise_is_the_source(
    tmp_path: Path, source: str | None, destination: str
) -> None:
    """Endpoints are compared as the server they reach, not as text: a destination that is
    the source table replicates every change back into its own stream, for ever."""
    text = f"source: {_at(source)}\ndestinations:\n  - {_at(destination)}\n"
    _refused(tmp_path, text, "destinations[0]", "is the source table itself")
    twice = (
        "source: {region: us-east-1, table: src}\n"
        f"destinations:\n  - {_at(source, 'a')}\n  - {_at(destination, 'b')}\n"
    )
    _refused(tmp_path, twice, "destinations[1]", "repeats destinations[0]")


@pytest.mark.parametrize(
    ("source", "destination"),
    [
        pytest.param("http://localhost:8000", "http://localhost:8001", id="port"),
        pytest.param("http://localhost:443", "https://localhost:443", id="scheme"),
        pytest.param("http://127.0.0.1:8000", "http://localhost:8000", id="no-dns-lookup"),
        pytest.param(None, "http://127.0.0.1:443", id="a-local-endpoint"),
    ],
)
def test_a_destination_at_another_endpoint_is_another_table(
    tmp_path: Path, source: str | None, destination: str
) -> None:
    _validates(tmp_path, f"source: {_at(source)}\ndestinations:\n  - {_at(destination, 'x')}\n")


def test_a_task_table_at_the_sources_endpoint_written_otherwise_is_refused(
    tmp_path: Path,
) -> None:
    """The lease table is the task's, at the source's endpoint: a destination table of that
    name there (its endpoint written in capitals) would get leases among its items."""
    text = (
        "task_name: orders-leases\n"
        f"source: {_at('http://127.0.0.1:48200')}\n"
        "destinations:\n"
        "  - {region: us-east-1, table: orders-leases, endpoint_url: 'HTTP://127.0.0.1:48200'}\n"
    )
    _refused(tmp_path, text, "task_name", "names the job's lease table 'orders-leases'")


def test_an_active_active_destination_that_is_the_source_is_said_once(tmp_path: Path) -> None:
    """The second direction of a pair copied with its destination left at the source: a
    second problem asked for a name, which would not have fixed the file."""
    text = (
        SOURCE + "destinations:\n" + _destination() + "loop_prevention: {origin_attribute: o}\n"
        "active_active: {write_back: true}\n"
    )
    path = tmp_path / "job.yaml"
    path.write_text(text)
    result = validate_in_process(path)
    assert result.returncode == 2
    assert "is the source table itself" in result.stderr
    assert "destinations[0].name" not in result.stderr, result.stderr
