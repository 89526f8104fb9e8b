"""After the daemon ended without its graceful stop: give up the leader's lock it held.

KCL 3 elects the leader that assigns every lease through a lock row in
``<task>-CoordinatorState`` (the DynamoDB lock client's row, key ``Leader``), which the
holder renews and gives up in its graceful stop. A daemon that exits otherwise (a
processor died: the KCL's multilang calls ``System.exit``, whose shutdown hook cannot
finish the stop; a stop that ran past its grace time) leaves the row as it was, and the
other workers wait out the lock's two minutes before one of them leads and assigns the
dead worker's leases: with the holder of the job's shards usually the leader too, about
four minutes of nothing replicated. Once the daemon's process is gone nothing renews the
row, so the launcher deletes it, on condition that it still names this worker and has
not been renewed since it was read (another worker that took the lock meanwhile keeps
it). Any failure only leaves the lock to expire as before.
"""

from __future__ import annotations

import structlog

from replicator.aws import clients
from replicator.aws.errors import error_code
from replicator.config.kcl_settings import kcl_table
from replicator.config.model import ResolvedJob

log = structlog.get_logger(__name__)

# The lock row, as KCL 3's DynamoDBLockBasedLeaderDecider and the lock client write it.
LEADER_KEY = {"key": {"S": "Leader"}}
OWNER = "ownerName"
VERSION = "recordVersionNumber"


def coordinator_table(resolved: ResolvedJob) -> str:
    """The KCL's table: ``coordinatorStateTableName`` if the job sets it (as the KCL reads
    it: blanks kept, which ``validate`` refuses), else named after the task."""
    return kcl_table(
        resolved.job.kcl.extra_properties, resolved.task_name, "coordinatorStateTableName"
    )


def give_up_leader_lock(resolved: ResolvedJob, worker_id: str) -> bool:
    """Delete the leader's lock row if it names ``worker_id``, whose daemon has exited;
    True when it was deleted. Called only once the daemon's process is gone."""
    source = resolved.job.source
    table = coordinator_table(resolved)
    try:
        ddb = clients.dynamodb(source, connect_timeout=2.0, read_timeout=5.0, sdk_retries=False)
        row = ddb.get_item(TableName=table, Key=LEADER_KEY, ConsistentRead=True).get("Item")
        if not row or row.get(OWNER, {}).get("S") != worker_id or VERSION not in row:
            return False
        ddb.delete_item(
            TableName=table,
            Key=LEADER_KEY,
            ConditionExpression="#owner = :owner AND #version = :version",
            ExpressionAttributeNames={"#owner": OWNER, "#version": VERSION},
            ExpressionAttributeValues={":owner": {"S": worker_id}, ":version": row[VERSION]},
        )
    except Exception as error:  # noqa: BLE001  # only an aid: the run's end stands as it is
        code = error_code(error)
        if code in ("ConditionalCheckFailedException", "ResourceNotFoundException"):
            return False  # taken by another worker meanwhile, or no KCL table yet
        log.warning(
            "the leader's lock could not be read or given up; if this worker held it, "
            "another worker leads, and assigns this worker's leases, once it expires "
            "(about two minutes)",
            table=table,
            error=str(error),
        )
        return False
    log.info(
        "gave up the leader's lock this worker held, which its daemon left as it ended: "
        "another worker leads, and assigns this worker's leases, without waiting for "
        "the lock to expire",
        table=table,
        worker_id=worker_id,
    )
    return True
