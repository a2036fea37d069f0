#!/usr/bin/env bash
# Installs ds01-runtime on this host, as root: builds the release binaries and runs
# `ds01ctl install` with the flags given here (see `ds01ctl install --help`), e.g.
#   install/install.sh --dry-run
#   install/install.sh --default --interpose
# Undo with: ds01ctl uninstall
set -euo pipefail
cd "$(dirname "$0")/.."
# The shim installed is the static musl build (README.md, "Two commands", says why), by the
# ordinary cargo build for the host's musl target; ds01ctl is the glibc one (it loads NVML).
# `ds01ctl install --from` takes the two from one directory: target/install.
musl=$(uname -m)-unknown-linux-musl
if command -v rustup >/dev/null; then rustup target add "$musl" >/dev/null 2>&1 || true; fi
cargo build --release --quiet
shim=target/release/ds01-runtime
if [ -d "$(rustc --print sysroot)/lib/rustlib/$musl" ]; then
  cargo build --release --quiet --target "$musl" --bin ds01-runtime
  shim=target/$musl/release/ds01-runtime
else
  echo "warning: the $musl target is not installed, so the glibc shim is installed (about 0.5 ms more per call on a VM): rustup target add $musl" >&2
fi
rm -rf target/install && mkdir -p target/install
cp "$shim" target/release/ds01ctl target/install/
exec target/release/ds01ctl install --from target/install "$@"
