"""Two jobs that read different sources under one ``task_name`` (a 3-region mesh whose
eu-west-1 job file was copied from the us-east-1 job's, its task name left as it was).
Their lease tables are apart (one per source region, each tagged with its own source),
so the owner tag passes both; but both publish into the one status table of a
destination they share, under one label, and their shards' ids collide (moto gives
every stream's shard the same id, as every Kinesis stream's first shard is
``shardId-000000000000``). ``replicator wait`` exited 0, "replicated", for a write that
never arrived: the job it asked about was stopped, the other raised the part. Each part
now records its job's source; a job that finds another's stops at start (exit 3), a
raise over another's part is refused, and ``wait``/``watermark`` exit 3."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest

from replicator import lastwords
from replicator.demo import tables
from replicator.exceptions import EnvironmentProblem
from replicator.metrics import Metrics
from replicator.shards.stream import Shard
from replicator.watermark import StatusTableShared, read_watermark, wait_until_replicated
from replicator.watermark import publisher as publisher_module
from replicator.watermark.parts import EVERY, Part, names_source
from replicator.watermark.publisher import ShardWatermark
from replicator.watermark.table import StatusTable
from tests.support.aws import client
from tests.support.cli import in_process
from tests.support.e2e import PATIENCE, Job, stop
from tests.support.status_table import created_with_its_stream
from tests.test_processor_protocol import RawDaemon
from tests.watermark.test_commands import AP, EU, job_file

S = 1_000_000
T0 = 1_700_000_000 * S
SHARD = "shardId-000000000000"
OURS = "arn:aws:dynamodb:us-east-1:123456789012:table/src"  # test_commands' job reads it
THEIRS = "arn:aws:dynamodb:eu-west-1:123456789012:table/src"  # the same table name, elsewhere
FAST = "watermark: {publish_interval_ms: 100, caught_up_margin_ms: 0}\n"


def one_line(stderr: str) -> str:
    """The command's one line (``replicator: ...``), with nothing else said but logs."""
    assert "Traceback" not in stderr, stderr
    said = [line for line in stderr.splitlines() if line.startswith("replicator: ")]
    assert len(said) == 1, stderr
    return said[0]


# -- two jobs, end to end ---------------------------------------------------------------------


def _item(key: str) -> dict[str, Any]:
    return {"pk": {"S": key}, "sk": {"N": "0"}, "updated_at": {"N": "1"}}


def _held(ddb: Any, table: str, key: str) -> bool:
    found = ddb.get_item(TableName=table, Key={"pk": {"S": key}, "sk": {"N": "0"}})
    return "Item" in found


def test_a_job_of_another_source_under_the_task_name_is_refused_at_start_and_raises_nothing(
    moto_endpoint: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    name = unique("wm-mesh")
    carts = f"{name}-carts"
    label = f"ap-southeast-2/{carts}"
    first = Job(moto_endpoint, name, tmp_path, destinations=[("ap-southeast-2", carts)], extra=FAST)
    status = StatusTable(
        client("dynamodb", "ap-southeast-2", moto_endpoint), f"{name}-watermark", label
    )
    arn = first.source.describe_table(TableName=first.source_table)["Table"]["TableArn"]

    runtime = first.start()
    try:
        first.source.put_item(TableName=first.source_table, Item=_item("from-us"))
        written = time.time()
        waited = in_process(
            "wait", "-c", str(first.path), "-d", label, "--until", f"{written:.6f}",
            "--timeout", "60",
        )  # fmt: skip
        assert waited.returncode == 0, waited
        # Every part of the job records its source, as the lease table's owner tag does.
        assert {part.source for part in status.parts()} == {arn}
    finally:
        assert stop(runtime) == 0
    before = status.parts()

    # The eu-west-1 job: the same file, its source's region changed (and its dead letters
    # elsewhere, so that nothing but the status table tells the two jobs apart).
    eu = client("dynamodb", "eu-west-1", moto_endpoint)
    tables.create(eu, first.source_table, stream=True)
    other_arn = eu.describe_table(TableName=first.source_table)["Table"]["TableArn"]
    fresh = tmp_path / "eu" / "dead.jsonl"
    second = tmp_path / "eu.yaml"
    second.write_text(
        first.path.read_text()
        .replace("source: {region: us-east-1,", "source: {region: eu-west-1,")
        .replace(str(first.dead_letters), str(fresh))
    )
    eu.put_item(TableName=first.source_table, Item=_item("from-eu"))
    refused = subprocess.run(
        [sys.executable, "-m", "replicator", "run", "--config", str(second)],
        capture_output=True,
        text=True,
        timeout=120 * PATIENCE,
        check=False,
    )
    assert refused.returncode == 3, refused.stdout + refused.stderr
    line = one_line(refused.stderr)
    (shard,) = {part.shard for part in before}
    assert line.startswith(
        f"replicator: status table {name}-watermark at {moto_endpoint} (ap-southeast-2) holds "
        f"another job's parts of destination {label!r}: the part of shard {shard} records the "
        f"source {arn}, and this job reads {other_arn}."
    ), line
    assert f"give each job its own task_name (the two jobs share task_name {name})" in line

    # Refused before it created or raised anything: the first job's parts are as it left
    # them, and the second's change never reached the destination.
    assert status.parts() == before
    assert not fresh.parent.exists()
    assert not _held(client("dynamodb", "ap-southeast-2", moto_endpoint), carts, "from-eu")

    # The reproduction: a wait through the second job's file for its own change exited 0.
    until = ("--until", f"{time.time():.6f}", "--timeout", "2")
    for command in (["wait", "-d", label, *until], ["watermark"], ["watermark", "--json"]):
        result = in_process(command[0], "-c", str(second), *command[1:])
        assert result.returncode == 3, result
        said = one_line(result.stderr)
        assert f"holds another job's parts of destination {label!r}" in said, said
        assert (
            f"records the source {arn}, and this job reads eu-west-1/{first.source_table}" in said
        )
        assert "replicated" not in result.stdout
    # The first job's own file still reads its watermark.
    ours = ("-d", label, "--until", f"{written:.6f}", "--timeout", "2")
    assert in_process("wait", "-c", str(first.path), *ours).returncode == 0


def test_a_processor_the_kcl_starts_stops_at_a_part_of_another_source_with_exit_3(
    moto_endpoint: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    """Under the KCL the processor is the daemon's child, with only the job file, and may
    start on another host long after that host's ``run`` checked the status tables: it
    finds the other job's part itself when it first reads the table, raises nothing, and
    stops, leaving the line and exit 3 for its runtime."""
    name = unique("wm-kcl")
    table = f"{name}-eu"
    job = Job(moto_endpoint, name, tmp_path, destinations=[("eu-west-1", table)], extra=FAST)
    streams = client("dynamodbstreams", job.source_region, moto_endpoint)
    arn = job.source.describe_table(TableName=job.source_table)["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    label = f"eu-west-1/{table}"
    status = StatusTable(client("dynamodb", "eu-west-1", moto_endpoint), f"{name}-watermark", label)
    status.ensure_exists()
    status.raise_part(shard, T0, "eu:1", source=THEIRS)
    before = status.parts()
    job.write(runtime="kcl")
    words = tmp_path / "last-words"
    with RawDaemon(job.path, env={lastwords.ENV: str(words)}) as daemon:
        daemon.initialize(shard, "TRIM_HORIZON")
        assert daemon.process.wait(60 * PATIENCE) == 1
    said, code = lastwords.read(words)
    assert code == 3, said
    assert said.startswith(
        f"status table {name}-watermark at {moto_endpoint} (eu-west-1) holds another job's "
        f"parts of destination {label!r}: the part of shard {shard} records the source "
        f"{THEIRS}, and this job reads {arn.split('/stream/')[0]}."
    ), said
    assert status.parts() == before


# -- the processor ----------------------------------------------------------------------------


@pytest.fixture
def table(moto_endpoint: str, unique: Callable[[str], str]) -> StatusTable:
    status = StatusTable(
        client("dynamodb", "eu-west-1", moto_endpoint), f"{unique('wm-src')}-watermark", EU
    )
    status.ensure_exists()
    return status


def _stream() -> list[Shard]:
    return [Shard(SHARD, None, False)]


def _publisher(
    table: StatusTable, source: str, refused: list[EnvironmentProblem], metrics: Metrics
) -> ShardWatermark:
    watermark = ShardWatermark(
        SHARD,
        {table.destination: table},
        _stream,
        metrics,
        interval_s=3600,  # published by the test
        margin_s=0,
        reads_follow_answers=True,
        source_history=created_with_its_stream,
        source=lambda: source,
        on_refused=refused.append,
    )
    watermark.begin(resumed=False)
    watermark.empty_read(previous_answer_at=(T0 + 50 * S) / S, received_at=0)
    return watermark


def _refusal_names_it(problem: EnvironmentProblem, table: StatusTable, recorded: str) -> None:
    said = str(problem)
    assert isinstance(problem, StatusTableShared) and problem.exit_code == 3
    assert "\n" not in said
    assert said.startswith(
        f"status table {table.name} at {table.where()} holds another job's parts of "
        f"destination {EU!r}: the part of shard {SHARD} records the source {recorded}, and "
        f"this job reads {OURS}."
    ), said
    task = table.name.removesuffix("-watermark")
    assert f"give each job its own task_name (the two jobs share task_name {task})" in said


def test_a_processor_that_finds_a_part_of_another_source_at_its_start_raises_nothing(
    table: StatusTable, metrics: Metrics
) -> None:
    table.raise_part(SHARD, T0 + 10 * S, "eu:1", source=THEIRS)
    before = table.parts()
    refused: list[EnvironmentProblem] = []
    watermark = _publisher(table, OURS, refused, metrics)
    watermark.publish()
    watermark.publish()
    (problem,) = refused  # told once
    _refusal_names_it(problem, table, THEIRS)
    assert watermark.refused is problem
    assert table.parts() == before  # neither raised nor registered over
    watermark.end_shard()
    assert table.parts() == before  # nor marked ended
    watermark.close()


class _Overtaken(StatusTable):
    """The status table, where another job registers and raises the shard's part just
    after this processor read the table at its start (both jobs started at once)."""

    def __init__(self, table: StatusTable, then: Callable[[], object]) -> None:
        super().__init__(table.client, table.name, table.destination)
        self.then: Callable[[], object] | None = then

    def parts_if_any(
        self, attributes: Collection[str] = EVERY, *, unreadable_as_unset: Collection[str] = ()
    ) -> list[Part]:
        found = super().parts_if_any(attributes, unreadable_as_unset=unreadable_as_unset)
        then, self.then = self.then, None
        if then is not None:
            then()
        return found


def test_a_raise_over_a_part_another_source_registered_since_the_start_is_refused(
    table: StatusTable, metrics: Metrics
) -> None:
    refused: list[EnvironmentProblem] = []
    theirs = _Overtaken(table, lambda: table.raise_part(SHARD, T0 + 10 * S, "eu:1", source=THEIRS))
    watermark = _publisher(theirs, OURS, refused, metrics)
    watermark.publish()
    (problem,) = refused
    _refusal_names_it(problem, table, THEIRS)
    (part,) = table.parts()
    assert (part.watermark_us, part.owner, part.source) == (T0 + 10 * S, "eu:1", THEIRS)
    watermark.close()


def test_a_stopped_processor_leaves_the_line_and_exit_3_for_its_runtime(
    table: StatusTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default: as a destination refusing every write, the reason and exit 3 left for
    the runtime (which ends with them once the processor keeps stopping so), exit 1."""
    words = tmp_path / "last-words"
    monkeypatch.setenv(lastwords.ENV, str(words))
    monkeypatch.setattr(lastwords, "_left", [])
    exits: list[int] = []
    monkeypatch.setattr(publisher_module.os, "_exit", exits.append)
    # It holds the log lock until the exit, which this test does not make: not taken here.
    finished: list[bool] = []
    monkeypatch.setattr(publisher_module.logs, "finish_lines", lambda: finished.append(True))
    problem = EnvironmentProblem("status table t at eu-west-1 holds another job's parts")
    publisher_module.stop_the_processor(problem)
    assert exits == [1] and finished == [True]
    assert lastwords.read(words) == (str(problem), 3)


# -- parts written before the source was recorded -----------------------------------------------


def test_parts_without_a_source_are_read_and_raised_as_the_jobs(
    table: StatusTable, metrics: Metrics, moto_endpoint: str, tmp_path: Path
) -> None:
    table.raise_part(SHARD, T0 + 10 * S, "old:1")  # an older version records no source
    (old,) = table.parts()
    assert old.source is None
    path = job_file(tmp_path, table.name.removesuffix("-watermark"), moto_endpoint)
    waited = in_process(
        "wait", "-c", str(path), "-d", EU, "--until", str(T0 / S + 5), "--timeout", "5"
    )
    assert waited.returncode == 0, waited
    shown = json.loads(in_process("watermark", "-c", str(path), "-d", EU, "--json").stdout)
    assert [part["source"] for part in shown["shards"]] == [None]

    refused: list[EnvironmentProblem] = []
    watermark = _publisher(table, OURS, refused, metrics)
    watermark.publish()
    assert refused == []
    (part,) = table.parts()
    assert (part.watermark_us, part.source) == (T0 + 50 * S - 1, OURS)  # raised, and recorded
    waited = in_process(
        "wait", "-c", str(path), "-d", EU, "--until", str(T0 / S + 40), "--timeout", "5"
    )
    assert waited.returncode == 0, waited
    watermark.close()


# -- readers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["wait", "-d", EU, "--until", "1", "--timeout", "5"],
        ["watermark", "-d", EU],
        ["watermark"],
        ["watermark", "--json"],
    ],
    ids=["wait", "watermark", "watermark-all", "watermark-json"],
)
def test_wait_and_watermark_exit_3_on_a_part_of_another_source(
    table: StatusTable, moto_endpoint: str, tmp_path: Path, command: list[str]
) -> None:
    """The part raised past ``--until`` by the other job: ``wait`` answered 0, and
    ``watermark`` showed that job's watermark as this one's. A part of this job's own
    source beside it does not make the other's count."""
    table.raise_part(SHARD, T0, "us:1", source=OURS)
    table.raise_part("shardId-000000000001", T0, "eu:1", source=THEIRS)
    task = table.name.removesuffix("-watermark")
    path = job_file(tmp_path, task, moto_endpoint)
    started = time.monotonic()
    result = in_process(command[0], "--config", str(path), *command[1:])
    assert result.returncode == 3, result
    assert time.monotonic() - started < 5 * PATIENCE  # at once, not at the timeout
    assert one_line(result.stderr) == (
        f"replicator: status table {table.name} at {table.where()} holds another job's "
        f"parts of destination {EU!r}: the part of shard shardId-000000000001 records the "
        f"source {THEIRS}, and this job reads us-east-1/src; the watermark there is not "
        f"this job's alone: give each job its own task_name (the two jobs share task_name "
        f"{task})"
    )
    if command == ["watermark"]:
        assert result.stdout.startswith(f"{AP}: status table {table.name}")  # read first
    if command == ["watermark", "--json"]:
        shown = {entry["destination"]: entry for entry in json.loads(result.stdout)}
        assert shown[EU]["watermark"] is None and "another job's parts" in shown[EU]["error"]


def test_the_library_refuses_another_source_given_its_own_and_two_sources_without(
    table: StatusTable,
) -> None:
    read = {"destination": EU, "status_table": table.name, "client": table.client}
    table.raise_part(SHARD, T0, "eu:1", source=THEIRS)
    # Without its source, one job's parts cannot be told from another's.
    assert read_watermark(**read).watermark_us == T0
    for source in ("us-east-1/src", OURS):
        with pytest.raises(StatusTableShared, match=f"records the source {THEIRS}, and this"):
            read_watermark(**read, source=source)
        started = time.monotonic()
        with pytest.raises(StatusTableShared, match="another job's parts"):
            wait_until_replicated(T0 / S + 60, **read, timeout=60, source=source)
        assert time.monotonic() - started < 30  # at once: waiting will not mend it
    assert read_watermark(**read, source="eu-west-1/src").watermark_us == T0

    table.raise_part("shardId-000000000001", T0, "us:1", source=OURS)
    with pytest.raises(StatusTableShared, match="of two jobs") as raised:
        read_watermark(**read)
    assert f"the part of shard {SHARD} records the source {THEIRS}" in str(raised.value)
    assert f"that of shard shardId-000000000001 the source {OURS}" in str(raised.value)
    with pytest.raises(ValueError, match="source ''"):
        read_watermark(**read, source="")


@pytest.mark.parametrize(
    ("recorded", "source", "named"),
    [
        (OURS, OURS, True),
        (OURS, "us-east-1/src", True),
        (OURS, "eu-west-1/src", False),
        (OURS, "us-east-1/other", False),
        (OURS, THEIRS, False),
        ("arn:aws:dynamodb:ddblocal:000000000000:table/src", "us-east-1/src", True),  # emulator
        (f"arn:aws:dynamodb:us-east-1:1:table/{'t' * 230}...sha256:0f", "us-east-1/x", True),
        ("arn:aws:kinesis:us-east-1:1:stream/s table src", "us-east-1/src", False),
    ],
)
def test_a_recorded_source_names_its_table_by_arn_or_region_and_table(
    recorded: str, source: str, named: bool
) -> None:
    assert names_source(recorded, source) is named
