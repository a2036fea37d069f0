#!/usr/bin/env bash
# Installs ds01-runtime on this host, as root: builds the release binaries and runs
# `ds01ctl install` with the flags given here (see `ds01ctl install --help`), e.g.
#   install/install.sh --dry-run
#   install/install.sh --default --interpose
# Undo with: ds01ctl uninstall
set -euo pipefail
cd "$(dirname "$0")/.."
install/build.sh
exec target/release/ds01ctl install --from target/install "$@"
