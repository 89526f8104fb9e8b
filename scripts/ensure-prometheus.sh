#!/usr/bin/env bash
# Makes `prometheus` and `promtool` available for the Prometheus and alert-rule tests
# (PROMETHEUS_BIN / PROMTOOL_BIN name other binaries), from Debian's `prometheus` package,
# which ships both as plain binaries. The package's own service is not started (there is no
# init system in a container, and on a host with systemd the unit stays as the package
# leaves it).
set -euo pipefail
exec "$(dirname "$0")/ensure-debian-package.sh" prometheus \
  "${PROMETHEUS_BIN:-prometheus}" "${PROMTOOL_BIN:-promtool}"
