"""The embedded demo behind ``make run``: a local DynamoDB endpoint, demo tables, a
steady workload, the replicator with live progress, and a convergence check."""
