#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of the workspace.
# Works on a fresh machine: installs its own prerequisites first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -D warnings" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
# Doc tests first (nextest does not run them), so that the test runner's summary closes the output.
echo "== doc tests" >&2
cargo test --workspace --doc --locked
echo "== tests" >&2
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --locked --no-fail-fast
else
  cargo test --workspace --all-targets --locked --no-fail-fast
fi
