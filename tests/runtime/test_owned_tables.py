"""The tables the replicator keeps for itself, found by name. Those named after the task
(the lease table, the watermark's status tables): a name that is an application's table
is refused (validate: exit 2; a table of other keys at start: exit 3, one line), never
written to. Against a moto server over HTTP, with ``replicator`` run as a process of its
own."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
import structlog

from replicator.config.loader import load_job
from replicator.exceptions import EnvironmentProblem
from replicator.owned_tables import ensure_table
from replicator.runtime import preflight
from replicator.shards.leases import Lease, LeaseTable, check_lease_table
from tests.support.aws import client, create_table
from tests.support.cli import replicator, validate_in_process
from tests.support.e2e import Job


@pytest.fixture
def job(moto_endpoint: str, unique: Any, tmp_path: Path) -> Job:
    return Job(moto_endpoint, unique("owned"), tmp_path)


def named(job: Job, task_name: str) -> None:
    """Give the job another task name (on the job file's first line)."""
    text = job.path.read_text()
    job.path.write_text(text.replace(f"task_name: {job.name}\n", f"task_name: {task_name}\n"))


def one_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("replicator: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def items(ddb: Any, table: str) -> list[dict[str, Any]]:
    return list(ddb.scan(TableName=table, ConsistentRead=True)["Items"])


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_task_name_that_names_the_source_table_is_refused(job: Job, command: str) -> None:
    job.put_demo_items(random.Random(1), 0, 1)
    before = items(job.source, job.source_table)
    named(job, job.source_table)

    result = replicator(command, "--config", str(job.path))

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert str(job.path) in result.stderr
    assert (
        f"task_name (line 1): '{job.source_table}' names the job's lease table "
        f"'{job.source_table}' in us-east-1, which is the source table"
    ) in result.stderr
    assert items(job.source, job.source_table) == before


@pytest.mark.parametrize(("region", "status"), [("us-east-1", 2), ("eu-west-1", 0)])
def test_a_task_name_that_names_a_destination_in_the_source_region_is_refused(
    moto_endpoint: str, unique: Any, tmp_path: Path, region: str, status: int
) -> None:
    """The lease table is in the source's region: a destination of that name elsewhere
    is another table."""
    name = unique("owned")
    job = Job(moto_endpoint, name, tmp_path, destinations=[(region, f"{name}-dst")])
    named(job, f"{name}-dst")

    result = validate_in_process(job.path)  # validate reads the file alone

    assert result.returncode == status, result.stdout + result.stderr
    assert ("which is the table of destinations[0]" in result.stderr) == (status == 2)


def test_a_task_name_whose_watermark_table_is_a_destination_is_refused(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    name = unique("owned")
    job = Job(moto_endpoint, name, tmp_path, destinations=[("eu-west-1", f"{name}-watermark")])

    result = validate_in_process(job.path)  # validate reads the file alone

    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        f"names the job's watermark status table '{name}-watermark' in eu-west-1, "
        "which is the table of destinations[0]"
    ) in result.stderr


@pytest.mark.parametrize("with_item", [False, True])
def test_a_lease_table_with_other_keys_stops_the_start_before_any_lease_is_written(
    job: Job, with_item: bool
) -> None:
    """The report's run: a table of the task's name with other keys (empty, or holding an
    application's item) ended in a KeyError traceback, or in a ValidationException after
    leases had been tried in it."""
    create_table(job.source, job.name, range_key="sk", stream=None)
    if with_item:
        job.source.put_item(TableName=job.name, Item={"pk": {"S": "order-1"}, "sk": {"N": "1"}})
    before = items(job.source, job.name)

    line = one_line(replicator("run", "--config", str(job.path), timeout=120), 3)

    assert line.startswith(f"replicator: lease table {job.name} at {job.endpoint} (us-east-1)")
    assert "exists with key schema pk (HASH, S), sk (RANGE, N)" in line
    assert items(job.source, job.name) == before


def test_the_kcl_runtime_refuses_a_lease_table_with_other_keys_at_start(
    job: Job, tmp_path: Path
) -> None:
    """The KCL creates its own lease table: the start-up check (the same for both
    runtimes) is where the replicator refuses one of other keys."""
    create_table(job.source, job.name, stream=None)
    job.path.write_text("runtime: kcl\n" + job.path.read_text())

    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check(load_job(job.path))

    assert f"lease table {job.name} at" in str(raised.value)
    assert "exists with key schema pk (HASH, S)" in str(raised.value)


@pytest.mark.parametrize(
    ("suffix", "key", "role", "setting"),
    [
        ("-CoordinatorState", "key", "coordinator state table (the leader's lock)", None),
        ("-WorkerMetricStats", "wid", "worker metrics table", None),
        (
            "-leader",
            "key",
            "coordinator state table (the leader's lock)",
            "coordinatorStateTableName",
        ),
    ],
)
def test_the_kcl_runtime_refuses_its_other_tables_with_other_keys_at_start(
    job: Job, suffix: str, key: str, role: str, setting: str | None
) -> None:
    """A leftover ``<task>-CoordinatorState`` of other keys: the KCL failed to initialise
    for four minutes, /healthz ok, then exit 1 (a restart loop under a restart policy).
    Refused at start as the lease table is, naming the table, its keys and the KCL's."""
    table = job.name + suffix
    create_table(job.source, table, stream=None)
    if setting:
        job.kcl = job.kcl.replace("}", f", extra_properties: {{{setting}: {table}}}}}")
        job.write()
    text = "runtime: kcl\n" + job.path.read_text()
    job.path.write_text(text)

    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check(load_job(job.path))

    said = str(raised.value)
    assert said.startswith(f"KCL {role} {table} at {job.endpoint} (us-east-1) exists with key ")
    assert f"schema pk (HASH, S); KCL 3 keeps its {role} there, keyed on {key} (hash" in said
    # The local runtime uses neither table: no check, and the start goes on.
    job.path.write_text(text.replace("runtime: kcl\n", "runtime: local\n", 1))
    preflight.check(load_job(job.path))


def test_the_kcl_runtime_starts_with_its_other_tables_as_the_kcl_made_them(job: Job) -> None:
    for suffix, key in (("-CoordinatorState", "key"), ("-WorkerMetricStats", "wid")):
        job.source.create_table(
            TableName=job.name + suffix,
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    job.path.write_text("runtime: kcl\n" + job.path.read_text())
    preflight.check(load_job(job.path))


# An application's table keyed on leaseKey (HASH, S), as a task name may name one.
_APPLICATION_ITEMS = [
    {"leaseKey": {"S": f"car-{index}"}, "model": {"S": "T"}, "seats": {"N": "4"}}
    for index in range(3)
]
# A lease as KCL 3 (through the DynamoDB Streams adapter) leaves it in moto, read back.
_KCL_LEASE = {
    "leaseKey": {"S": "shardId-00000001541626099285-f35f62ef"},
    "leaseOwner": {"S": "host-a"},
    "leaseCounter": {"N": "4"},
    "checkpoint": {"S": "1100000000017454423020"},
    "checkpointSubSequenceNumber": {"N": "0"},
    "ownerSwitchesSinceCheckpoint": {"N": "0"},
    "startingHashKey": {"S": "0"},
    "endingHashKey": {"S": "1"},
}


def _refusal_of_items(job: Job) -> str:
    return (
        f"replicator: lease table {job.name} at {job.endpoint} (us-east-1) holds items that "
        "are not leases (the item with leaseKey 'car-"
    )


def _lease_keyed_table(job: Job, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The task name's table, keyed as a lease table is, holding ``rows``: its items."""
    LeaseTable(job.source, job.name, "app").ensure_exists()
    for row in rows:
        job.source.put_item(TableName=job.name, Item=row)
    return items(job.source, job.name)


def test_a_table_keyed_on_lease_key_that_holds_no_leases_stops_the_start(job: Job) -> None:
    """The check compared key schemas only: the local runtime started and wrote its lease
    among the application's items (the KCL: see the next test)."""
    before = _lease_keyed_table(job, _APPLICATION_ITEMS)

    line = one_line(replicator("run", "--config", str(job.path), timeout=120), 3)

    assert line.startswith(_refusal_of_items(job)), line
    assert "it has no leaseCounter, which every lease has); it is not a lease table" in line
    assert line.endswith("give the job a task_name that names no other table")
    assert items(job.source, job.name) == before


def test_the_kcl_runtime_refuses_a_table_keyed_on_lease_key_that_holds_no_leases(
    job: Job,
) -> None:
    """The KCL failed 20 times on the items (leaseCounter is marked non-null but is null)
    and exited 1 some 25 s later with a generic line."""
    _lease_keyed_table(job, _APPLICATION_ITEMS)
    job.path.write_text("runtime: kcl\n" + job.path.read_text())

    with pytest.raises(EnvironmentProblem) as raised:
        preflight.check(load_job(job.path))

    assert f"replicator: {raised.value}".startswith(_refusal_of_items(job))


def test_an_item_whose_lease_counter_is_no_count_stops_the_start(job: Job) -> None:
    _lease_keyed_table(job, [{**_KCL_LEASE, "leaseCounter": {"S": "many"}}])

    line = one_line(replicator("run", "--config", str(job.path), timeout=120), 3)

    assert (
        f"holds items that are not leases (the item with leaseKey '{_KCL_LEASE['leaseKey']['S']}':"
        " its leaseCounter is of type S, not N); it is not a lease table"
    ) in line


@pytest.mark.parametrize("kind", ["empty", "kcl", "local", "both"])
def test_an_empty_table_or_one_of_leases_passes_the_start_up_check(job: Job, kind: str) -> None:
    """The KCL's leases and the local runtime's (made, taken, checkpointed, released)
    alike, twelve of them: more than the check reads."""
    rows = [] if kind in ("empty", "local") else [_KCL_LEASE]
    if kind in ("kcl", "both"):
        rows += [
            {**_KCL_LEASE, "leaseKey": {"S": f"shardId-{index}"}, "leaseCounter": {"N": "1"}}
            for index in range(11)
        ]
    _lease_keyed_table(job, rows)
    if kind in ("local", "both"):
        leases = LeaseTable(job.source, job.name, "vm")
        for index in range(12):
            lease = leases.create(f"shardId-local-{index}", "TRIM_HORIZON", [])
            assert lease is not None
            if index % 2:
                leases.release(leases.checkpoint(leases.take(lease), "100"))
    assert len(items(job.source, job.name)) == {"empty": 0, "kcl": 12, "local": 12}.get(kind, 24)

    assert preflight.check(load_job(job.path)).stream_arn


def test_a_lease_table_still_being_created_passes_the_start_up_check() -> None:
    """Another worker's KCL has just created it: DescribeTable finds it (CREATING), a Scan
    is refused as if there were no table, and there is nothing in it to check."""
    from botocore.stub import Stubber

    ddb = client("dynamodb", "us-east-1", "http://127.0.0.1:9")
    with Stubber(ddb) as stub:
        stub.add_response(
            "describe_table",
            {
                "Table": {
                    "TableName": "task",
                    "TableStatus": "CREATING",
                    "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}],
                    "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}],
                }
            },
        )
        stub.add_client_error("scan", "ResourceNotFoundException")
        assert check_lease_table(ddb, "task", "here")
        stub.assert_no_pending_responses()


def test_a_status_table_with_other_keys_stops_the_start(job: Job) -> None:
    """Before, the run started and warned twice every interval, for ever."""
    eu = client("dynamodb", "eu-west-1", job.endpoint)
    create_table(eu, f"{job.name}-watermark", stream=None)

    line = one_line(replicator("run", "--config", str(job.path), timeout=120), 3)

    assert line.startswith(
        f"replicator: status table {job.name}-watermark at {job.endpoint} (eu-west-1) "
        "exists with key schema pk (HASH, S)"
    )
    assert job.lease_rows() == []


def test_an_item_of_the_lease_table_that_is_no_lease_is_named(
    moto_endpoint: str, unique: Any
) -> None:
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    leases = LeaseTable(ddb, unique("leases"), "vm")
    leases.ensure_exists()
    ddb.put_item(
        TableName=leases.table,
        Item={"leaseKey": {"S": "shardId-1"}, "leaseCounter": {"S": "many"}},
    )

    with pytest.raises(EnvironmentProblem) as raised:
        leases.all()

    assert str(raised.value).startswith(
        f"lease table {leases.table} at us-east-1: the item with leaseKey 'shardId-1' is "
        "not a lease (its leaseCounter is of type S, not N)"
    )
    with pytest.raises(EnvironmentProblem):
        leases.get("shardId-1")


@pytest.mark.parametrize(
    ("item", "why"),
    [
        ({"pk": {"S": "order-1"}}, "it has no string leaseKey"),
        ({"leaseKey": {"N": "1"}}, "its leaseKey is of type N, not S"),
        ({"leaseKey": {"S": "s"}, "leaseCounter": {"N": "-1"}}, "its leaseCounter is '-1'"),
        ({"leaseKey": {"S": "s"}, "checkpoint": {"N": "1"}}, "its checkpoint is of type N"),
    ],
)
def test_an_item_that_is_no_lease_says_why(item: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Lease.from_item(item)


@pytest.mark.parametrize(
    "checkpoint",
    ["TRIM_HORIZON", "LATEST", "SHARD_END", "AT_TIMESTAMP", "000100", "4" * 21],
)
def test_a_checkpoint_is_a_sequence_number_or_one_of_the_kcls_sentinels(checkpoint: str) -> None:
    item = {"leaseKey": {"S": "s"}, "checkpoint": {"S": checkpoint}}
    assert Lease.from_item(item).checkpoint == checkpoint


@pytest.mark.parametrize(
    "checkpoint", ["garbage", "", "12a", "-12", "trim_horizon", "\uff11\uff12"]
)
def test_any_other_checkpoint_is_refused_naming_the_lease_and_the_value(
    moto_endpoint: str, unique: Any, checkpoint: str
) -> None:
    """A hand edit gone wrong: the item is a lease, with a checkpoint that is no position
    (full-width digits are digits to str.isdigit, not to the stream)."""
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    leases = LeaseTable(ddb, unique("leases"), "vm")
    leases.ensure_exists()
    ddb.put_item(
        TableName=leases.table,
        Item={"leaseKey": {"S": "shardId-1"}, "checkpoint": {"S": checkpoint}},
    )

    with pytest.raises(EnvironmentProblem) as raised:
        leases.get("shardId-1")

    assert str(raised.value).startswith(
        f"lease table {leases.table} at us-east-1: the lease of shard shardId-1 holds "
        f"checkpoint {checkpoint!r}, neither a sequence number nor one of AT_TIMESTAMP, "
        "LATEST, SHARD_END, TRIM_HORIZON: "
    )


def test_a_ttl_on_another_attribute_is_reported_once_per_region_naming_it(
    moto_endpoint: str, unique: Any
) -> None:
    """Tombstone tables of one name in two regions: each warning says which one."""
    name = unique("tombstones")
    places = {}
    for region in ("us-east-1", "eu-west-1"):
        ddb = client("dynamodb", region, moto_endpoint)
        create_table(ddb, name, stream=None)
        ddb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "gone"}
        )
        places[region] = (ddb, f"{moto_endpoint} ({region})")

    with structlog.testing.capture_logs() as logs:
        for ddb, where in places.values():
            ensure_table(
                ddb, name, {"pk": "HASH"}, "expires_at", f"tombstone table {name}", where, ""
            )

    warned = [entry for entry in logs if "its items will not expire" in entry["event"]]
    assert [entry["where"] for entry in warned] == [where for _, where in places.values()]
    assert all(entry["attribute"] == "gone" for entry in warned)
