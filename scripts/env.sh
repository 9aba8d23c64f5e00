# Sourced by the scripts: one target directory outside the checkout (reused by later runs and
# by CI on the same machine; a cold run simply fills it) and sccache in front of rustc and the
# RocksDB C++ build when it is installed.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meridian-target}"
if command -v sccache >/dev/null 2>&1 && [ -z "${RUSTC_WRAPPER:-}" ]; then
  export RUSTC_WRAPPER=sccache
  export SCCACHE_DIR="${SCCACHE_DIR:-$HOME/.cache/sccache}"
  export SCCACHE_CACHE_SIZE="${SCCACHE_CACHE_SIZE:-10G}"
fi
# Incremental compilation data of the workspace crates grows by gigabytes per build and buys
# little when every run starts from a fresh clone; the dependencies never use it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
mkdir -p "$CARGO_TARGET_DIR"
