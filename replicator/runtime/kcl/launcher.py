"""Starts the Java KCL MultiLangDaemon for a job (runtime: kcl)."""

from __future__ import annotations

from replicator.config.model import ResolvedJob
from replicator.exceptions import KclUnavailable


def run_kcl(resolved: ResolvedJob) -> int:
    raise KclUnavailable(
        f"{resolved.path}: runtime kcl is not available in this build yet; use runtime: local"
    )
