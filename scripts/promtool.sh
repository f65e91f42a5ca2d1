#!/usr/bin/env bash
# Print the path of a promtool binary: from $PROMTOOL, from PATH, or installed from the Debian
# package `prometheus` (needs root and apt). Exits non-zero with a reason when there is none.
set -euo pipefail
if [[ -n "${PROMTOOL:-}" && -x "${PROMTOOL}" ]]; then
    echo "${PROMTOOL}"; exit 0
fi
if command -v promtool >/dev/null 2>&1; then
    command -v promtool; exit 0
fi
if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "promtool not found; install the 'prometheus' package or set PROMTOOL" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The package's postinst starts a daemon where it can; we only want the binary.
apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1; } \
    || { echo "apt-get could not install prometheus (promtool)" >&2; exit 1; }
command -v promtool
