"""Lease and shard state that both runtimes and the operator tools share.

The lease table is the KCL's own schema (``leases.py``), so the local runtime, the KCL
and ``replicator handoff`` read and write the same items; ``stream.py`` lists a DynamoDB
stream's shards and their lineage and converts records to the adapter's form.
"""
