#!/usr/bin/env bash
# Installs what building and testing Meridian needs on a fresh Debian machine:
# libclang (RocksDB's bindgen), sccache (caches RocksDB's C++ between builds), and a Python
# virtual environment with the official RocketMQ client for the conformance tests.
# Safe to run repeatedly; does nothing when everything is there.
set -euo pipefail

need=()
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  need+=(libclang-dev)
fi
command -v sccache >/dev/null 2>&1 || need+=(sccache)
# `python3 -m venv` needs ensurepip, which Debian ships separately in python3-venv.
if ! command -v python3 >/dev/null 2>&1; then
  need+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
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

# The official RocketMQ Python client, pinned, for conformance/tests/python_client.rs (which
# looks for it here unless MERIDIAN_PYTHON names another interpreter).
MERIDIAN_VENV="$HOME/.cache/meridian-venv"
ROCKETMQ_PYTHON_CLIENT="rocketmq-python-client==5.1.2"
installed="$("$MERIDIAN_VENV/bin/python" -m pip show rocketmq-python-client 2>/dev/null || true)"
if ! grep -qx 'Version: 5.1.2' <<<"$installed"; then
  echo "setup: creating $MERIDIAN_VENV with $ROCKETMQ_PYTHON_CLIENT" >&2
  python3 -m venv "$MERIDIAN_VENV"
  "$MERIDIAN_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$ROCKETMQ_PYTHON_CLIENT"
fi
