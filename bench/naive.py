"""The baseline: a minimal stream-to-table replicator, as the simplest Lambda or script
would write one. Each record is decoded (with the replicator's own decoder, so the two
differ only in what they do with a change) and written with one unconditional PutItem,
or DeleteItem for a REMOVE, in stream order, one at a time, with boto3.

Runs in its own process (``python -m bench.naive``) and prints JSON; the records are the
same workload the processor gets, generated before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import boto3
from botocore.config import Config

from bench.workload import Workload, WorkloadSpec
from replicator.decode import decode
from replicator.records import Event, raw_record_from

TABLE = "bench-destination"


def replicate(client: Any, records: list[dict[str, Any]]) -> int:
    """Apply ``records`` one by one; returns the number of writes issued."""
    writes = 0
    for record in records:
        change = decode(raw_record_from(record))
        if change.event is Event.REMOVE:
            client.delete_item(TableName=TABLE, Key=change.keys)
        else:
            client.put_item(TableName=TABLE, Item=change.new_image)
        writes += 1
    return writes


def run_naive(endpoint_url: str, records: int, spec: WorkloadSpec, batch: int) -> dict[str, Any]:
    client = boto3.Session(region_name="eu-west-1").client(
        "dynamodb", endpoint_url=endpoint_url, config=Config(retries={"mode": "standard"})
    )
    workload = Workload(spec)
    batches = []
    remaining = records
    while remaining > 0:
        count = min(batch, remaining)
        batches.append(workload.batch(count)[0])
        remaining -= count
    writes = 0
    cpu_start = time.process_time()
    started = time.perf_counter()
    for batch_records in batches:
        writes += replicate(client, batch_records)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_start
    return {
        "changes": records,
        "writes": writes,
        "seconds": elapsed,
        "changes_per_s": records / elapsed,
        "cpu_us_per_change": cpu / records * 1e6,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="naive one-at-a-time replicator")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--keys", type=int, default=WorkloadSpec.keys)
    parser.add_argument("--remove-share", type=float, default=WorkloadSpec.remove_share)
    parser.add_argument("--insert-share", type=float, default=WorkloadSpec.insert_share)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    spec = WorkloadSpec(
        keys=args.keys, remove_share=args.remove_share, insert_share=args.insert_share
    )
    print(json.dumps(run_naive(args.endpoint, args.records, spec, args.batch)))


if __name__ == "__main__":
    main()
