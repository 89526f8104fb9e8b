"""The demo's workload writes one stream record per change it counts."""

from __future__ import annotations

import random
from typing import Any

from replicator.demo.workload import Workload
from tests.support.aws import client, create_table


def test_an_update_or_delete_of_an_item_that_is_gone_is_a_put_so_each_change_is_one_record(
    moto_endpoint: str, unique: Any
) -> None:
    """A delete of an item that is not there writes no record, and the demo's progress
    read fewer records than the changes it counted; an update that creates an item is
    counted as an update where its record is an INSERT (and a stock moto_server writes
    two records for it, the first holding only the key). The workload updates and
    deletes only items that exist."""
    ddb = client("dynamodb", "us-east-1", moto_endpoint)
    name = unique("workload")
    create_table(ddb, name, range_key="sk")
    workload = Workload(ddb, name, rate=1000, duration_s=60, keys=4, origin="us-east-1")
    for seed in range(60):  # 4 keys: updates meet deleted items again and again
        workload.rng = random.Random(seed)
        workload._one_change()
    stats = workload.stats
    assert stats.updates and stats.deletes and stats.puts
    streams = client("dynamodbstreams", "us-east-1", moto_endpoint)
    arn = ddb.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]
    keys_only = [
        record
        for record in records
        if "NewImage" in record["dynamodb"] and set(record["dynamodb"]["NewImage"]) == {"pk", "sk"}
    ]
    assert keys_only == []
    assert len(records) == stats.total == 60
