"""The KCL 3 jars the real-KCL tests run: the ones the Docker image ships.

``scripts/build-kcl.sh`` (``make kcl-jars``) builds docker/pom.xml and the launcher with
Maven into ``.cache/kcl/<key>/`` once, and returns at once while the pom and the launcher
are unchanged; ``make test`` runs it before pytest, and the ``kcl_jars`` fixture runs it
again, so a test run started by hand builds them too.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

from replicator.runtime.kcl import java
from tests.support import ROOT

BUILD = ROOT / "scripts" / "build-kcl.sh"


def ensure_jars() -> Path:
    """The jars directory, built by scripts/build-kcl.sh the first time."""
    result = subprocess.run(
        [str(BUILD)], check=False, capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/build-kcl.sh failed:\n{result.stderr}")
    jars = Path(result.stdout.strip().splitlines()[-1])
    # replicator run finds the same directory by itself (kcl.jars_dir unset).
    assert jars == java.built_jars_dir(), (jars, java.built_jars_dir())
    return jars


if __name__ == "__main__":
    print(ensure_jars())


def fake_jars(directory: Path, classes: list[str], content: bytes = b"") -> Path:
    """A jars directory whose one jar has entries named for ``classes``: enough for the
    launcher's checks of the jars, for tests that never start a JVM."""
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(directory / "kcl.jar", "w") as jar:
        for name in classes:
            jar.writestr(name.replace(".", "/") + ".class", content)
    return directory
