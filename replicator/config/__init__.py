"""Job files: the schema (``model``) and its checks (``fields``, ``kcl_settings``,
``cross_checks``), loading with every problem reported (``loader``), endpoints.

Nothing is imported here: ``replicator.config.endpoints`` is imported by code that never
reads a job file (an application waiting on the watermark through
``replicator.watermark``), which should not pay for the schema's import."""
