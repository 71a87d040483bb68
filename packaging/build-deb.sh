#!/usr/bin/env bash
# Builds target/debian/channelgate_<version>_<arch>.deb with cargo-deb (installed on
# first use): the binary, the systemd unit, /etc/channelgate/channelgate.toml, and the
# documented example configs. Usage: packaging/build-deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup >/dev/null
command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb
cargo deb --locked
ls -l target/debian/*.deb
