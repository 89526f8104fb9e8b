#!/usr/bin/env bash
# Creates .venv and installs the project with its test and dev tools, idempotently.
#
# amazon-kclpy is published on PyPI only as a source distribution whose build
# downloads the KCL jars from Maven Central. The record processor needs only the
# Python half, so by default this script installs that half from the unpacked
# source distribution (works without Maven Central). Set KCLPY_WITH_JARS=1 on a
# machine that reaches Maven Central to let amazon-kclpy fetch its jars as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
KCLPY_VERSION=${KCLPY_VERSION:-3.2.0}
STAMP="$VENV/.installed"
want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1) kclpy=${KCLPY_VERSION} jars=${KCLPY_WITH_JARS:-0}"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"Python >= 3.11 is required, found {sys.version.split()[0]}")
PY

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)

if ! "$VENV/bin/python" -c "import amazon_kclpy" 2>/dev/null; then
  if [ "${KCLPY_WITH_JARS:-0}" = "1" ]; then
    echo "installing amazon-kclpy ${KCLPY_VERSION} with its jars (needs Maven Central)"
    "${PIP[@]}" install "amazon-kclpy==${KCLPY_VERSION}"
  else
    echo "installing amazon-kclpy ${KCLPY_VERSION} (Python half, no jars)"
    src="$VENV/src"
    mkdir -p "$src"
    "${PIP[@]}" download --no-deps --no-binary :all: -d "$src" "amazon-kclpy==${KCLPY_VERSION}"
    tar -xzf "$src/amazon_kclpy-${KCLPY_VERSION}.tar.gz" -C "$src"
    # An editable install skips the sdist's jar-downloading build step.
    "${PIP[@]}" install --no-deps -e "$src/amazon_kclpy-${KCLPY_VERSION}"
  fi
fi

echo "installing dynamodb-replicator and its test tools into $VENV"
"${PIP[@]}" install -e ".[test,dev]"
echo "$want" > "$STAMP"
