#!/usr/bin/env bash
# Installs what building and testing Meridian needs on a fresh Debian machine:
# libclang (RocksDB's bindgen) and sccache (caches RocksDB's C++ between builds).
# Safe to run repeatedly; does nothing when everything is there.
set -euo pipefail

need=()
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  need+=(libclang-dev)
fi
command -v sccache >/dev/null 2>&1 || need+=(sccache)
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install Rust from https://rustup.rs first" >&2
  exit 1
fi
