"""Job files: the schema (``model``), loading and checks (``loader``), endpoints.

Nothing is imported here: ``replicator.config.endpoints`` is imported by code that never
reads a job file (an application waiting on the watermark through
``replicator.watermark``), which should not pay for the schema's import."""
