#!/usr/bin/env bash
# Print the path of a C compiler: from $CC, from PATH (cc, gcc), or installed from the Debian
# package `gcc` (needs root and apt). Exits non-zero with a reason when there is none. Tests use it
# to build a stand-in NVML library, so the GPU metrics are exercised on machines without a GPU.
set -euo pipefail
if [[ -n "${CC:-}" ]] && command -v "${CC}" >/dev/null 2>&1; then
    command -v "${CC}"; exit 0
fi
for name in cc gcc; do
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; exit 0; fi
done
if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "no C compiler found; install gcc or set CC" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends gcc libc6-dev >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends gcc libc6-dev >/dev/null 2>&1; } \
    || { echo "apt-get could not install gcc" >&2; exit 1; }
command -v gcc
