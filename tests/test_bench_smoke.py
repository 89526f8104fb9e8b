"""The benchmark's fake endpoint answers boto3 the way DynamoDB does, so that a benchmark
can never be measuring error responses; and its delay accounting credits squashed
changes to the write that applied them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bench.analysis import apply_delays
from bench.core import breakdown, run_core
from bench.fake_endpoint import EndpointControl
from bench.host import HostSpec, run_host, shards_per_core
from bench.workload import Generated, Workload, WorkloadSpec
from replicator.aws import clients
from replicator.aws.clients import Place
from replicator.aws.errors import ErrorKind, classify
from replicator.decode import decode
from replicator.records import raw_record_from
from tests.support.e2e import wait_until


@pytest.fixture(scope="module")
def endpoint() -> Iterator[EndpointControl]:
    with EndpointControl.start() as control:
        yield control


@pytest.fixture
def dynamodb(endpoint: EndpointControl) -> Any:
    endpoint.configure(latency_ms=0.0, throttle_rate=0.0, condition_fail_rate=0.0)
    endpoint.reset()
    return clients.dynamodb(Place("eu-west-1", endpoint.url), sdk_retries=False)


def test_writes_are_answered_and_logged_with_key_and_stamp(
    endpoint: EndpointControl, dynamodb: Any
) -> None:
    put = dynamodb.put_item(
        TableName="t",
        Item={"pk": {"S": "a"}, "updated_at": {"N": "1700000000000001"}},
        ConditionExpression="attribute_not_exists(#c) OR #c <= :c",
        ExpressionAttributeNames={"#c": "updated_at"},
        ExpressionAttributeValues={":c": {"N": "1700000000000001"}},
    )
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    dynamodb.delete_item(TableName="t", Key={"pk": {"S": "b"}})
    batch = dynamodb.batch_write_item(
        RequestItems={
            "t": [
                {"PutRequest": {"Item": {"pk": {"S": "c"}, "updated_at": {"N": "7"}}}},
                {"DeleteRequest": {"Key": {"pk": {"S": "d"}}}},
            ]
        }
    )
    assert batch["UnprocessedItems"] == {}
    requests, log = endpoint.log()
    assert requests == 3
    assert [(op, key, stamp, outcome) for _, op, key, stamp, outcome in log] == [
        ("put", "a", 1700000000000001, "ok"),
        ("delete", "b", -1, "ok"),
        ("put", "c", 7, "ok"),
        ("delete", "d", -1, "ok"),
    ]


def test_a_simulated_lost_condition_returns_the_item_as_dynamodb_does(
    endpoint: EndpointControl, dynamodb: Any
) -> None:
    endpoint.configure(condition_fail_rate=1.0)
    item = {"pk": {"S": "a"}, "updated_at": {"N": "5"}}
    with pytest.raises(ClientError) as caught:
        dynamodb.put_item(
            TableName="t",
            Item=item,
            ConditionExpression="attribute_not_exists(#c)",
            ExpressionAttributeNames={"#c": "updated_at"},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert classify(caught.value) is ErrorKind.CONDITION_FAILED
    assert caught.value.response.get("Item") == item
    dynamodb.put_item(TableName="t", Item=item)  # unconditional writes never lose
    assert [entry[4] for entry in endpoint.log()[1]] == ["condition_failed", "ok"]


def test_simulated_throttling_is_what_the_writer_retries(
    endpoint: EndpointControl, dynamodb: Any
) -> None:
    endpoint.configure(throttle_rate=1.0)
    with pytest.raises(ClientError) as caught:
        dynamodb.delete_item(TableName="t", Key={"pk": {"S": "a"}})
    assert caught.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert classify(caught.value) is ErrorKind.THROTTLED


def test_operations_it_does_not_serve_are_refused(dynamodb: Any) -> None:
    with pytest.raises(ClientError) as caught:
        dynamodb.get_item(TableName="t", Key={"pk": {"S": "a"}})
    assert caught.value.response["Error"]["Code"] == "UnknownOperationException"


def test_workload_records_decode_as_the_processor_decodes_them() -> None:
    records, generated = Workload(WorkloadSpec(keys=50)).batch(200, created_us=10**15)
    changes = [decode(raw_record_from(record)) for record in records]
    assert {change.event.value for change in changes} == {"INSERT", "MODIFY", "REMOVE"}
    for change, remembered in zip(changes, generated, strict=True):
        assert change.keys == {"pk": {"S": remembered.key}}
        if remembered.is_put:
            assert change.new_image is not None
            assert change.new_image["updated_at"] == {"N": str(remembered.stamp_us)}


def test_a_squashed_change_is_applied_by_the_later_write_of_its_item() -> None:
    generated = [Generated("k", 1_000_000, True), Generated("k", 2_000_000, True)]
    # Only the newer image was written, arriving at t = 3 s; acknowledged 0.1 s later.
    delays = apply_delays(generated, [(3.0, "put", "k", 2_000_000, "ok")], ack_s=0.1)
    assert delays.unapplied == 0
    assert delays.timed == 2
    assert delays.max_s == pytest.approx(2.1)
    assert delays.p50_s == pytest.approx(1.1)
    # A write of an older image, before the change was even made, does not apply it.
    never = apply_delays([Generated("x", 5_000_000, True)], [(1.0, "put", "x", 0, "ok")], 0)
    assert never.unapplied == 1


def test_the_core_scenario_runs_the_shard_intake_and_pipeline_to_the_last_record() -> None:
    result = run_core("last_writer_wins", 2000, WorkloadSpec())
    assert result["records"] == 2000
    # Every record either planned a write or was squashed into a later one.
    assert 0 < result["writes_planned"] <= 2000
    # The yardstick of the core target, measured in the same run on the same records.
    assert result["json_loads_us_per_record"] > 0
    assert result["core_cpu_us_per_record"] == result["cpu_us_per_record"]
    assert result["core_ratio_vs_json_loads"] == pytest.approx(
        result["cpu_us_per_record"] / result["json_loads_us_per_record"]
    )
    steps = breakdown("overwrite", 1000, WorkloadSpec(shape="small"))
    assert {
        "decode_whole",
        "route",
        "squash",
        "plan_kwargs_body",
        "intake",
        "writes_and_checkpoint",
        "intake_rest",
        "intake_steps",
        "json_loads",
    } <= set(steps)


def test_the_host_scenario_drives_every_shards_processor_to_its_last_record(
    endpoint: EndpointControl, capfd: pytest.CaptureFixture[str]
) -> None:
    result = run_host(HostSpec(shards=2, records=300, batch_size=100), endpoint)
    # Each processor is stopped as the daemon stops one, without a warning of its own.
    said = capfd.readouterr().err
    assert "went away" not in said, said[-2000:]
    assert result["shards"] == 2
    assert result["changes"] == 600
    # Each change is written or squashed into a later write of its item; the endpoint saw
    # every request the processors sent.
    assert 0 < result["writes"] <= 600
    assert result["requests"] >= result["writes"]
    assert len(result["cpu_share_by_shard"]) == 2
    assert result["cpu_us_per_change"] > 0
    assert result["shards_per_core"] == shards_per_core(result["cpu_us_per_change"])
    assert result["endpoint_cpu_s"] > 0


def _group(pgid: int) -> list[str]:
    """The command lines of the processes in process group ``pgid``."""
    listed = subprocess.run(
        ["ps", "-o", "args=", "-g", str(pgid)], capture_output=True, text=True, check=False
    )
    return listed.stdout.splitlines()


def _quick_bench(scenario: str, output: Path) -> subprocess.Popen[str]:
    """``python -m bench --quick`` of one scenario, in its own process group (as a
    terminal's foreground job)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--only", scenario, "--output", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_ctrl_c_ends_the_benchmarks_with_130_and_one_line(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the terminal's process group) while a scenario runs ended the
    benchmarks in a traceback; they end with one line and exit 130, every scenario's
    process gone and no results file written."""
    output = tmp_path / "results.json"
    bench = _quick_bench("core", output)
    try:
        wait_until(
            lambda: any("bench.core" in line for line in _group(bench.pid)),
            60,
            "the core scenario's process",
        )
        os.killpg(bench.pid, signal.SIGINT)
        out, err = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
    assert bench.returncode == 130, err
    assert err.splitlines()[-1] == "benchmarks: interrupted; no results written", err
    assert "Traceback" not in err
    assert out == ""
    assert not output.exists()
    wait_until(lambda: _group(bench.pid) == [], 30, "the scenario's processes to end")


def test_a_fake_endpoint_that_dies_mid_run_ends_the_benchmarks_with_its_status(
    tmp_path: Path,
) -> None:
    """The processors would retry against a dead endpoint for ever, and the run wait on
    them without end: the endpoint's end (not Ctrl-C's) ends the run, exit 1, naming it."""
    output = tmp_path / "results.json"
    bench = _quick_bench("host", output)
    try:
        # The processors are children of the bench in sessions of their own.
        wait_until(
            lambda: (
                subprocess.run(
                    ["pgrep", "-P", str(bench.pid), "-f", "replicator processor"],
                    capture_output=True,
                    check=False,
                ).stdout
            ),
            60,
            "the host scenario's processors",
        )
        listed = subprocess.run(
            ["pgrep", "-g", str(bench.pid), "-f", "bench.fake_endpoint"],
            capture_output=True,
            text=True,
            check=False,
        )
        (endpoint,) = [int(pid) for pid in listed.stdout.split()]
        os.kill(endpoint, signal.SIGTERM)
        _, err = bench.communicate(timeout=120)
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()
    assert bench.returncode == 1, err[-3000:]
    last = err.splitlines()[-1]
    said = f"benchmarks: the fake endpoint (pid {endpoint}) exited with status "
    assert last.startswith(said) and last.endswith("; no results written"), err[-3000:]
    assert "Traceback" not in err
    assert not output.exists()
    wait_until(lambda: _group(bench.pid) == [], 30, "the scenario's processes to end")
