"""constraints.txt pins every dependency pyproject.toml names, and both installs (make
setup and the Docker image) use it: a dependency added to pyproject.toml without the
file regenerated would install at whatever version is newest that day."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """The distribution's normalized name (PEP 503), without extras or versions."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def _pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[_name(name)] = version
    return pins


def test_every_dependency_is_pinned_in_constraints() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        named += extra
    pins = _pinned()
    # amazon-kclpy is installed from its sdist by version, checked by its digest.
    missing = sorted({_name(r) for r in named} - set(pins) - {"amazon-kclpy"})
    assert missing == [], f"not in constraints.txt (run make constraints): {missing}"


def test_both_installs_use_the_constraints_and_one_kclpy_digest() -> None:
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "CONSTRAINTS=${CONSTRAINTS-constraints.txt}" in bootstrap
    assert 'install "${CONSTRAINED[@]}" -e ".[test,dev]"' in bootstrap
    assert "pip install --constraint constraints.txt ." in dockerfile
    (script_digest,) = re.findall(r"KCLPY_SHA256_3_1_3=([0-9a-f]{64})", bootstrap)
    (image_digest,) = re.findall(r"ARG KCLPY_SHA256=([0-9a-f]{64})", dockerfile)
    assert script_digest == image_digest
