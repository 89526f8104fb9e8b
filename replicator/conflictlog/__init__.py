"""The conflict log: a durable record of every lost conflict, and the reader behind
``replicator conflicts``.

A change that loses its conflict at a destination is a normal outcome (the destination
kept the item that ranks higher); the checkpoint passes it once its entry is stored, or
given up after ``retry_for_s`` and counted (recorder.py). Targets: a JSON-lines file,
an SQS queue, a DynamoDB table with a TTL, or none (targets.py). The modules import
what they need directly; this package module imports nothing, so that the writers can
name the recorder's port (base.py) without pulling the readers in.
"""
