#!/usr/bin/env bash
# The page: build the wasm and its JS bindings, and serve the project root.
#   scripts/web.sh build   release build for wasm32 + bindings in pkg/ (installs the wasm target and
#                          the wasm-bindgen CLI of Cargo.lock's version when missing)
#   scripts/web.sh serve   static server on 127.0.0.1, port $PORT or 8080
#   scripts/web.sh         build, then serve
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/imm-target}"

build() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
  fi
  # The CLI must match the wasm-bindgen crate exactly.
  local version
  version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
    echo "installing wasm-bindgen-cli $version (a few minutes, once)"
    cargo install wasm-bindgen-cli --version "$version"
  fi
  cargo build --release --locked --lib --target wasm32-unknown-unknown
  wasm-bindgen --target web --no-typescript --out-dir pkg \
    "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/imm.wasm"
  echo "built pkg/imm_bg.wasm ($(du -h pkg/imm_bg.wasm | cut -f1))"
}

serve() {
  if ! command -v node >/dev/null; then
    echo "node not found: install Node.js 18 or newer to serve the page" >&2
    exit 1
  fi
  exec node scripts/serve.mjs
}

case "${1:-all}" in
  build) build ;;
  serve) serve ;;
  all) build && serve ;;
  *) echo "usage: scripts/web.sh [build|serve]" >&2; exit 2 ;;
esac
