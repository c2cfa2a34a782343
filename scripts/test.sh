#!/usr/bin/env bash
# The test command: native tests on the CPU (Flex backend) and a wasm32 build of the library.
# Installs what it needs when missing. Builds go to a target directory outside the clone, shared
# between runs (override with CARGO_TARGET_DIR), with the one release profile for build and test.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/imm-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust from https://rustup.rs" >&2
  exit 1
fi
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

step() { echo; echo "== $* ($(date +%H:%M:%S))"; }

step "native tests (release profile, Flex CPU backend)"
cargo test --release --locked

step "library for wasm32-unknown-unknown"
cargo build --release --locked --lib --target wasm32-unknown-unknown

echo
echo "all checks passed"
