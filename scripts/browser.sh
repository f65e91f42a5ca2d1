#!/usr/bin/env bash
# Make sure Debian's Chromium is installed at /usr/bin/chromium for the dashboard's browser tests
# (driven by Playwright's Python package; Playwright's own browser downloads are never used).
#
#   scripts/browser.sh      -> prints /usr/bin/chromium, installing the `chromium` package if needed
#
# Exits 1, with a loud message on stderr, when it is missing and cannot be installed (not root,
# no apt-get, no network to the Debian mirror).
set -u

browser=/usr/bin/chromium

loud() {
    echo "!!!!! BROWSER TESTS CANNOT RUN: $* !!!!!" >&2
    exit 1
}

if [[ ! -x $browser ]]; then
    command -v apt-get >/dev/null 2>&1 || loud "$browser is missing and there is no apt-get to install chromium"
    [[ $(id -u) -eq 0 ]] || loud "$browser is missing; run 'apt-get install -y chromium' as root"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends chromium >/tmp/slipway-chromium-install.log 2>&1; then
        apt-get update -q >>/tmp/slipway-chromium-install.log 2>&1 || true
        apt-get install -y -q --no-install-recommends chromium >>/tmp/slipway-chromium-install.log 2>&1 ||
            loud "apt-get install chromium failed; see /tmp/slipway-chromium-install.log"
    fi
    [[ -x $browser ]] || loud "the chromium package installed no $browser"
fi
"$browser" --version >/dev/null 2>&1 || loud "$browser does not run: $("$browser" --version 2>&1 | tail -1)"
echo "$browser"
