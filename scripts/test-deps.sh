#!/usr/bin/env bash
# Debian packages the tests need beyond Python: chromium (tests/ui: the console in a real headless
# browser, driven by playwright, a dev extra) and jq (the README's curl steps capture ids with
# it). Installed once, only when missing; idempotent.
set -euo pipefail
CHROMIUM=${TUNECOST_TEST_CHROMIUM:-/usr/bin/chromium}
missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
command -v jq >/dev/null || missing+=(jq)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing Debian packages for the tests: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
[ -x "$CHROMIUM" ] || { echo "FATAL: no Chromium at $CHROMIUM after apt-get install" >&2; exit 1; }
