#!/usr/bin/env bash
# One-command set-up on a fresh Debian 12 / Raspberry Pi OS (bookworm) machine:
# system packages (Mosquitto from Debian), a venv (PEP 668), the project with its extras.
# Usage: ./setup.sh            (developer machine: dev extras)
#        EXTRAS=pi,dev ./setup.sh   (on the Raspberry Pi itself)
set -euo pipefail
cd "$(dirname "$0")"
EXTRAS="${EXTRAS:-dev}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  mosquitto mosquitto-clients python3-venv systemd chromium libnss3-tools systemd-container debootstrap >/dev/null
# The project starts its own brokers with its own configs; Debian's default service is not used.
# systemd: tests run `systemd-analyze verify` on the units in provisioning/systemd.
# systemd-container, debootstrap: the installed lane (tests/test_installed.py) boots a Debian 12
# with systemd-nspawn and installs the box into it (docs/testing.md).
# chromium: the companion app's end-to-end tests drive Debian's headless Chromium (Playwright).
# libnss3-tools: certutil, with which those tests add the box's CA to the browser's own trust
# store (an NSS database) so that Chromium accepts the app's HTTPS as a phone that trusts it does.

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
echo "set-up done: run the tests with  .venv/bin/python -m pytest"
