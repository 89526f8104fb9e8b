#!/usr/bin/env bash
# Makes `prometheus` and `promtool` available for the Prometheus and alert-rule tests.
#
# Does nothing when both are already on PATH (or at PROMETHEUS_BIN / PROMTOOL_BIN).
# Otherwise installs Debian's `prometheus` package, which ships both as plain binaries;
# that needs root (as in CI and the build containers) or passwordless sudo. The tests
# run the server as an ordinary process on 127.0.0.1; the package's own service is not
# started by this script (there is no init system in a container, and on a host with
# systemd the service unit stays as the package leaves it).
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have "${PROMETHEUS_BIN:-prometheus}" && have "${PROMTOOL_BIN:-promtool}"; then
  exit 0
fi

if ! have apt-get; then
  echo "ensure-prometheus: prometheus/promtool not found and apt-get is unavailable;" \
    "install Prometheus (2.x) so that both are on PATH" >&2
  exit 1
fi

SUDO=()
if [ "$(id -u)" != "0" ]; then
  if have sudo && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "ensure-prometheus: installing the prometheus package needs root;" \
      "run: sudo apt-get install -y --no-install-recommends prometheus" >&2
    exit 1
  fi
fi

echo "installing Debian's prometheus package (prometheus and promtool)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null

for tool in prometheus promtool; do
  if ! have "$tool"; then
    echo "ensure-prometheus: the prometheus package did not provide $tool" >&2
    exit 1
  fi
done
