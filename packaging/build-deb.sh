#!/usr/bin/env bash
# Builds two Debian packages in target/debian/ (usage: packaging/build-deb.sh):
#   channelgate_<version>_<arch>.deb         the stripped binary, the systemd unit,
#       /etc/channelgate/channelgate.toml and the documented example configs (cargo-deb,
#       installed on first use);
#   channelgate-dbgsym_<version>_<arch>.deb  the binary's debug symbols, as
#       /usr/lib/debug/.build-id/NN/REST.debug, where gdb, perf and systemd-coredump's
#       backtraces find them by build id (the layout of Debian's own -dbgsym packages).
# The release profile keeps line tables (debug = 1) for readable backtraces; the binary
# shipped is stripped of them, so installing the symbols package brings them back.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'build-deb: %s\n' "$*"; }
scripts/setup >/dev/null
if ! command -v objcopy >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
    SUDO=(); [ "$(id -u)" = 0 ] || SUDO=(sudo)
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
        install -y -qq binutils dpkg >/dev/null
fi
command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb

cargo build --release --locked
bin=target/release/channelgate
stage=target/debian-stage
rm -rf "$stage"
mkdir -p "$stage"
objcopy --only-keep-debug --compress-debug-sections "$bin" "$stage/channelgate.debug"
objcopy --strip-debug --strip-unneeded "$bin" "$stage/channelgate"
build_id=$(readelf -n "$stage/channelgate" | awk '/Build ID:/ {print $3}')
[ -n "$build_id" ] || { say "the binary has no build id"; exit 1; }

# Cargo.toml's [package.metadata.deb] assets take the binary from $stage.
deb=$(cargo deb --locked --no-build | tail -n 1)
[ -f "$deb" ] || { say "cargo deb did not name its package (got '$deb')"; exit 1; }
version=$(dpkg-deb -f "$deb" Version)
arch=$(dpkg-deb -f "$deb" Architecture)

root=target/debian-dbgsym
rm -rf "$root"
mkdir -p "$root/DEBIAN" "$root/usr/lib/debug/.build-id/${build_id:0:2}"
chmod -R u=rwX,go=rX "$root"
cp "$stage/channelgate.debug" "$root/usr/lib/debug/.build-id/${build_id:0:2}/${build_id:2}.debug"
cat >"$root/DEBIAN/control" <<CONTROL
Package: channelgate-dbgsym
Source: channelgate
Version: $version
Architecture: $arch
Maintainer: $(dpkg-deb -f "$deb" Maintainer)
Installed-Size: $(du -sk "$root/usr" | cut -f1)
Depends: channelgate (= $version)
Section: debug
Priority: optional
Auto-Built-Package: debug-symbols
Build-Ids: $build_id
Description: debug symbols for channelgate
CONTROL
dbgsym="target/debian/channelgate-dbgsym_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$dbgsym" >/dev/null
say "binary $(du -h "$stage/channelgate" | cut -f1) stripped (build id $build_id)"
ls -l "$deb" "$dbgsym"
