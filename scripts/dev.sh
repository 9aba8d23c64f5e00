#!/usr/bin/env bash
# Builds Meridian and starts the local development fabric (`meridian dev`); Ctrl-C stops it.
# Extra arguments go to `meridian dev` (see `meridian dev --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo build --release --locked -p meridian
exec "$CARGO_TARGET_DIR/release/meridian" dev "$@"
