"""A change dead-lettered before a restart, read again after it (the checkpoint had not
passed it), fails again and is not stored or counted a second time: ``replicator run``
twice against a moto server over HTTP, with a file target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from replicator.deadletter import FileDeadLetters
from replicator.demo import tables
from tests.support.aws import client
from tests.support.e2e import Job, stop, wait_until
from tests.support.metrics import logged_metrics_port, scrape, total
from tests.support.reliability import with_email_index

BAD = {"pk": {"S": "bad"}, "sk": {"N": "1"}, "email": {"S": ""}}


def restart_job(moto_endpoint: str, name: str, directory: Path) -> Job:
    """Two destinations under ``overwrite``: eu with an index on ``email`` (it rejects an
    empty string there), ap plain; writes refused for a long time are retried, not
    given up on, and a stop waits a second for them."""
    job = Job(
        moto_endpoint,
        name,
        directory,
        kcl="{idle_time_between_reads_ms: 100, failover_time_ms: 6000, shutdown_flush_ms: 1000}",
    )
    eu_region, eu_table = job.destinations[0]
    with_email_index(client("dynamodb", eu_region, moto_endpoint), eu_table)
    text = job.path.read_text()
    text = text.replace(
        "conflict: {policy: last_writer_wins, timestamp_attribute: updated_at}",
        "conflict: {policy: overwrite}",
    ).replace(
        "writer: {max_in_flight: 16}",
        "writer: {access_denied_limit: 10000, retry: {base_delay_ms: 10, max_delay_ms: 500}}",
    )
    job.path.write_text(text)
    return job


def holds(job: Job, number: int, item: dict[str, Any]) -> bool:
    ddb, table = job.destination_clients()[number]
    key = {"pk": item["pk"], "sk": item["sk"]}
    return ddb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item") == item


def logged(log: Path, event: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            found.append(entry)
    return found


def test_a_change_dead_lettered_before_a_restart_is_stored_and_counted_once(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    job = restart_job(moto_endpoint, unique("dldup"), tmp_path)
    (eu_region, _), (ap_region, ap_table) = job.destinations
    ap = client("dynamodb", ap_region, moto_endpoint)
    target = FileDeadLetters(job.dead_letters)
    first_log = tmp_path / "first.log"
    runtime = job.start(first_log)
    try:
        good = {"pk": {"S": "good"}, "sk": {"N": "1"}, "email": {"S": "a@example.com"}}
        job.source.put_item(TableName=job.source_table, Item=good)
        wait_until(lambda: holds(job, 0, good) and holds(job, 1, good), 60, "the catch-up")
        ap.delete_table(TableName=ap_table)  # its writes are retried: the change stays pending
        job.source.put_item(TableName=job.source_table, Item=BAD)
        wait_until(lambda: target.count() == 1, 60, "eu's dead letter")
        port = logged_metrics_port(first_log)
        wait_until(
            lambda: total(scrape(port), "replicator_dead_letters_total") == 1, 30, "its count"
        )
        assert job.lease_rows()[0]["checkpoint"]["S"] != job.last_stream_sequence()
    finally:
        assert stop(runtime) == 0, first_log.read_text()[-3000:]
    # ap's write was still retried at the stop: the last line says a change is left for
    # the next start, not that the stop was clean.
    (left,) = logged(
        first_log,
        "local runtime stopped; 1 shard(s) stopped with changes read past their checkpoint "
        "(not yet applied at every destination, or not checkpointed): whoever takes each "
        "shard next reads them again from its checkpoint",
    )
    (shard,) = left["shards"].values()
    assert shard["read_to"] == job.last_stream_sequence()
    assert "stopped cleanly" not in first_log.read_text()

    tables.create(ap, ap_table, stream=False)
    second_log = tmp_path / "second.log"
    runtime = job.start(second_log)
    try:
        wait_until(lambda: holds(job, 1, BAD), 60, "ap to get the change read again")
        job.wait_checkpointed()  # eu's failure settled again: stored, or found stored
        port = logged_metrics_port(second_log)
        # Counted apart, for the alert: the first run's count went with its process.
        stored = "replicator_dead_letters_already_stored_total"
        wait_until(lambda: total(scrape(port), stored, reason="rejected") == 1, 30, "its count")
        samples = scrape(port)
    finally:
        assert stop(runtime) == 0, second_log.read_text()[-3000:]
    assert logged(second_log, "local runtime stopped cleanly")

    letters = target.letters()
    assert len(letters) == 1, [(x.destination, x.reason, x.time) for x in letters]
    (letter,) = letters
    assert (letter.destination, letter.reason) == (
        f"{eu_region}/{job.destinations[0][1]}",
        "rejected",
    )
    assert letter.keys == {"pk": {"S": "bad"}, "sk": {"N": "1"}}
    assert total(samples, "replicator_dead_letters_total") == 0
    assert total(samples, stored, destination=letter.destination) == 1
    (again,) = logged(second_log, "change dead-lettered already: its letter is stored")
    assert again["level"] == "info"
    assert again["destination"] == letter.destination
    assert logged(second_log, "change dead-lettered") == []
