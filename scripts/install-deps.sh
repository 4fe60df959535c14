#!/usr/bin/env bash
# Installs, when missing, the Debian packages samlgate needs: to build and run
# it (always), and with --test also what the test suite needs (Redis, Python
# for the fixtures and the SMTP sink, SimpleSAMLphp and PHP, Chromium).
# Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail
pkgs=(pkg-config libssl-dev libxml2-dev libxmlsec1-dev libxmlsec1-openssl libclang-dev)
if [ "${1:-}" = "--test" ]; then
  pkgs+=(xmlsec1 python3-lxml python3-cryptography python3-aiosmtpd redis-server redis-tools
         simplesamlphp php8.2-cli php8.2-xml php8.2-mbstring php8.2-curl nginx-light
         chromium chromium-driver python3-selenium)
fi
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in "${pkgs[@]}"; do
  have_pkg "$p" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # nginx-light is named beside simplesamlphp so that it satisfies the
  # package's httpd dependency and Apache stays out.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not on PATH: install a Rust toolchain (rustup) first" >&2
  exit 1
fi
