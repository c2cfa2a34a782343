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

# The wgpu test needs a Vulkan driver; without a GPU, Mesa's software one (lavapipe).
if [ "$(uname)" = Linux ] && command -v apt-get >/dev/null \
  && ! compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null && ! compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null; then
  step "installing lavapipe (mesa-vulkan-drivers) for the wgpu test"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get install -y -qq mesa-vulkan-drivers >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq mesa-vulkan-drivers; }
fi
# Mesa's window-system probing complains without it.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/imm-xdg-$(id -u)}"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"

step "native tests (release profile; Flex CPU backend, one wgpu test)"
cargo test --release --locked

step "library for wasm32-unknown-unknown"
cargo build --release --locked --lib --target wasm32-unknown-unknown

echo
echo "all checks passed"
