"""The replication watermark: "every change written before T has reached destination D".

Each shard's processor publishes, per destination, a part in the status table
``<task_name>-watermark`` in that destination's region; the watermark is the minimum of
the parts (see parts.py). Applications wait on it with :func:`wait_until_replicated`,
which needs only boto3 and the destination region's status table::

    from replicator.watermark import wait_until_replicated

    result = wait_until_replicated(
        written_at,                                 # time.time() after Event A's write
        destination="eu-west-1/orders-replica",
        status_table="orders-sync-watermark",
        region="eu-west-1",
        timeout=10,
    )
    if result.replicated:
        ...                                         # Event A is readable in eu-west-1
"""

# StatusTableMissing, StatusTableSilent (read_watermark with a timeout) and
# StatusItemUnreadable (an item edited by hand that does not read) belong to
# replicator.exceptions, StatusTableShared (the parts of two jobs given one task name) to
# replicator.watermark.parts; an application waiting on the watermark imports everything
# it needs from here.
from replicator.exceptions import StatusItemUnreadable, StatusTableMissing, StatusTableSilent
from replicator.watermark.parts import StatusTableShared, Watermark
from replicator.watermark.wait import WaitResult, read_watermark, wait_until_replicated

__all__ = [
    "StatusItemUnreadable",
    "StatusTableMissing",
    "StatusTableShared",
    "StatusTableSilent",
    "WaitResult",
    "Watermark",
    "read_watermark",
    "wait_until_replicated",
]
