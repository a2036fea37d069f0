#!/usr/bin/env bash
# Builds what `ds01ctl install --from target/install` installs, into target/install: the shim as
# the static musl build (README.md, "Two commands", says why), by the ordinary cargo build for
# the host's musl target, and ds01ctl (it loads NVML) and ds01-front-door as the glibc ones. install.sh and try.sh
# run it. Without the musl target the glibc shim goes in, with a warning.
set -euo pipefail
cd "$(dirname "$0")/.."
musl=$(uname -m)-unknown-linux-musl
if command -v rustup >/dev/null; then rustup target add "$musl" >/dev/null 2>&1 || true; fi
cargo build --release --quiet
shim=target/release/ds01-runtime
if [ -d "$(rustc --print sysroot)/lib/rustlib/$musl" ]; then
  cargo build --release --quiet --target "$musl" --bin ds01-runtime
  shim=target/$musl/release/ds01-runtime
else
  echo "warning: the $musl target is not installed, so the glibc shim is used (about 0.5 ms more per call on a VM): rustup target add $musl" >&2
fi
rm -rf target/install && mkdir -p target/install
cp "$shim" target/release/ds01ctl target/release/ds01-front-door target/install/
