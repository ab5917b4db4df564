#!/usr/bin/env bash
# System packages the test suite needs beyond Python: ffmpeg (pydub conversions), Chromium
# (browser tests) and Dovecot (the IMAP server of the e-mail channel tests, started privately
# by each test on its own port). Installs only what is missing; needs root (CI and the dev
# machines run as root).
set -euo pipefail

want=()
command -v ffmpeg >/dev/null 2>&1 || want+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v pg_isready >/dev/null 2>&1 || want+=(postgresql-client)
# The drills make throwaway clusters of their own with initdb (tests/services.py OwnPostgres).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || want+=(postgresql)
command -v redis-cli >/dev/null 2>&1 || want+=(redis-tools)
[ -x /usr/sbin/dovecot ] || command -v dovecot >/dev/null 2>&1 || want+=(dovecot-imapd)

if ((${#want[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${want[*]} (run as root or install them yourself)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi
