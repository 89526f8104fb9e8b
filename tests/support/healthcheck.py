"""Running the image's health probe, ``python -m replicator.runtime.healthcheck``, as the
container's HEALTHCHECK does."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT


def healthcheck(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The probe's run with ``argv`` (a port) and ``env`` on top of this environment
    (REPLICATOR_METRICS_HOST only when given: a probe of 127.0.0.1 by default)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    environment.pop("REPLICATOR_METRICS_HOST", None)
    return subprocess.run(
        [sys.executable, "-m", "replicator.runtime.healthcheck", *argv],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={**environment, **env},
    )
