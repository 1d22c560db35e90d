#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the dashboard's browser test
# (agentkit-server/tests/dashboard.rs): the Debian packages `chromium` and `chromium-driver`.
# Idempotent: does nothing when /usr/bin/chromedriver is already there.
set -euo pipefail

if [ -x /usr/bin/chromedriver ] && { [ -x /usr/bin/chromium ] || [ -x /usr/bin/chromium-browser ]; }; then
  echo "chromium: $(/usr/bin/chromedriver --version 2>/dev/null | head -n 1)"
  exit 0
fi

echo "installing the Debian chromium and chromium-driver packages"
export DEBIAN_FRONTEND=noninteractive
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "chromium: $(/usr/bin/chromedriver --version 2>/dev/null | head -n 1)"
