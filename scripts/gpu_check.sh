#!/usr/bin/env bash
# The GPU check (docs/gpu.md): what imm does on an NVIDIA GPU, in one JSON file.
#
#   scripts/gpu_check.sh bundle          # here, with the registries: target/gpu-check/imm-gpu-check.tar.xz
#   scripts/gpu_check.sh run [BUNDLE]    # on the GPU machine, offline: target/gpu-check/gpu-check.json
#
# The bundle is self-contained: imm built with CUDA, NVRTC and the CUDA headers its kernels include
# (CUDA 12.4, from NVIDIA's pip wheels), the golden files and a cubecl.toml. `run` checks golden
# parity on CUDA and wgpu, then times the MMD, training and sampling and counts launches, each stage
# under a timeout within GPU_CHECK_SECONDS (default 480). Compiled kernels and autotune results are
# cached beside the unpacked bundle, so a second run skips compilation and tuning.
# Options of `run`: --json FILE (the report), BUNDLE (a .tar.xz or an unpacked directory).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$root/target/gpu-check
nvidia_smi=${NVIDIA_SMI:-nvidia-smi}
# NVRTC and headers of one CUDA release; PTX of 12.4 loads on drivers from 550 on.
cuda_version=12.4
wheels=(nvidia-cuda-nvrtc-cu12==12.4.127 nvidia-cuda-runtime-cu12==12.4.127 nvidia-cuda-nvcc-cu12==12.4.131 nvidia-cuda-cccl-cu12==12.4.127.post1)
max_bundle_mb=60

die() { echo "gpu_check: $*" >&2; exit 1; }

bundle() {
  command -v python3 >/dev/null || die "bundle needs python3 (pip fetches NVIDIA's NVRTC and header wheels)"
  local target=${CARGO_TARGET_DIR:-$root/target}
  echo "== building imm with CUDA ($(date +%H:%M:%S))"
  # cudarc picks its CUDA API version at build time; without nvcc here it would take its newest.
  (cd "$root" && CUDARC_CUDA_VERSION=${cuda_version/./0}0 cargo build --release --locked --features cuda)
  local stage=$dir/stage
  rm -rf "$stage" && mkdir -p "$stage/cuda/include" "$stage/cuda/lib64" "$stage/golden" "$dir/wheels"
  cp "$target/release/imm" "$stage/imm" && strip "$stage/imm"

  echo "== NVRTC and CUDA headers $cuda_version ($(date +%H:%M:%S))"
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    --python-version 3.11 -d "$dir/wheels" "${wheels[@]}"
  local unpacked=$dir/wheels/unpacked
  rm -rf "$unpacked" && mkdir -p "$unpacked"
  for wheel in "$dir"/wheels/*.whl; do python3 -m zipfile -e "$wheel" "$unpacked"; done
  for part in cuda_runtime cuda_nvcc cuda_cccl; do cp -r "$unpacked/nvidia/$part/include/." "$stage/cuda/include/"; done
  cp "$unpacked"/nvidia/cuda_nvrtc/lib/libnvrtc*.so.* "$stage/cuda/lib64/"
  find "$stage/cuda" -name '__init__.py' -delete

  local golden=${IMM_GOLDEN_DIR:-$root/../shared/golden}
  for name in golden_songunet_small golden_songunet_cond golden_dit_small; do
    [ -f "$golden/$name.safetensors" ] || die "no $golden/$name.safetensors (set IMM_GOLDEN_DIR to the golden folder)"
    cp "$golden/$name.safetensors" "$golden/$name.json" "$stage/golden/"
  done
  cat > "$stage/cubecl.toml" <<'EOF'
# cubecl reads this from the working directory: compiled kernels and autotune results are kept here
# (the unpacked bundle), so that a second run compiles and tunes nothing.
[environment]
path = "local"

[compilation]
cache = true
EOF
  printf '{"commit": "%s", "built": "%s", "cuda": "%s"}\n' "$(git -C "$root" rev-parse --short HEAD)" "$(date -u +%FT%TZ)" "$cuda_version" > "$stage/bundle.json"

  echo "== compressing ($(date +%H:%M:%S))"
  tar -C "$stage" -cf - . | xz -9e -T0 > "$dir/imm-gpu-check.tar.xz"
  rm -rf "$stage" "$unpacked"
  local mb=$(( $(stat -c %s "$dir/imm-gpu-check.tar.xz") / 1000000 ))
  [ "$mb" -le "$max_bundle_mb" ] || die "the bundle is $mb MB, over $max_bundle_mb MB"
  echo "$dir/imm-gpu-check.tar.xz: $mb MB"
}

# A JSON string of stdin (control characters dropped).
json_string() {
  printf '"'
  LC_ALL=C tr -d '\000-\010\013-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' | awk 'NR > 1 { printf "\\n" } { printf "%s", $0 }'
  printf '"'
}

has_libcuda() {
  ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1' && return
  local lib paths=${LD_LIBRARY_PATH:-}
  for lib in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 ${paths//:/ }; do
    [ -e "$lib/libcuda.so.1" ] && return
  done
  return 1
}

report() {
  local error=$1
  {
    printf '{"gpu": %s, "bundle": %s, "deadline_s": %s, "error": ' "$gpu" "$bundle_info" "$seconds"
    if [ -n "$error" ]; then printf '%s' "$error" | json_string; else printf 'null'; fi
    printf ', "stages": [%s]}\n' "$stages"
  } > "$json"
}

# Ends the run: the report says why, and so does the exit status.
fail() {
  report "$1"
  echo "gpu_check: $1" >&2
  echo "report: $json" >&2
  exit 2
}

# stage NAME CAP_SECONDS RESULT_JSON COMMAND...: runs COMMAND under a timeout, sampling device
# memory, and appends its figures, exit status, peak memory and last lines to the report.
stage() {
  local name=$1 cap=$2 result=$3; shift 3
  local left=$(( deadline - $(date +%s) )) status peak rc=0 started=$(date +%s)
  [ -n "$stages" ] && stages+=", "
  if [ "$left" -lt 15 ]; then
    stages+="{\"name\": \"$name\", \"status\": \"skipped: out of time\"}"
    failures=$(( failures + 1 ))
    echo "  $name: skipped (out of time)"
    return
  fi
  rm -f "$result"
  "$nvidia_smi" --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 250 > "$work/memory.log" 2>/dev/null &
  local sampler=$!
  timeout --kill-after=10 "$(( cap < left ? cap : left ))" "$@" > "$work/stage.log" 2>&1 || rc=$?
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  peak=$(tr -d ' ' < "$work/memory.log" | grep -E '^[0-9]+$' | sort -n | tail -n 1 || true)
  case $rc in 0) status=ok ;; 124 | 137) status=timeout ;; *) status=failed ;; esac
  [ "$status" = ok ] || failures=$(( failures + 1 ))
  stages+="{\"name\": \"$name\", \"command\": $(printf '%s' "$*" | json_string), \"status\": \"$status\", \"exit\": $rc,"
  stages+=" \"seconds\": $(( $(date +%s) - started )), \"peak_memory_mib\": ${peak:-null},"
  stages+=" \"result\": $([ -s "$result" ] && cat "$result" || echo null), \"log_tail\": $(tail -n 15 "$work/stage.log" | json_string)}"
  echo "  $name: $status ($(( $(date +%s) - started )) s, peak ${peak:-?} MiB)"
  report ""
}

run() {
  local source=$dir/imm-gpu-check.tar.xz
  json=$dir/gpu-check.json
  while [ $# -gt 0 ]; do
    case $1 in
      --json) json=$2; shift 2 ;;
      *) source=$1; shift ;;
    esac
  done
  seconds=${GPU_CHECK_SECONDS:-480}
  deadline=$(( $(date +%s) + seconds ))
  gpu=null bundle_info=null stages="" failures=0
  mkdir -p "$(dirname "$json")"
  json=$(cd "$(dirname "$json")" && pwd)/$(basename "$json")

  if [ -d "$source" ]; then
    work=$(cd "$source" && pwd)
  elif [ -f "$source" ]; then
    # Unpacked over the last run's folder: its kernel and autotune caches stay.
    work=$dir/run
    mkdir -p "$work"
    tar -C "$work" -xJf "$source" || fail "cannot unpack $source"
  else
    fail "no bundle at $source: build one with \`scripts/gpu_check.sh bundle\` on a machine with the registries"
  fi
  [ -s "$work/bundle.json" ] && bundle_info=$(cat "$work/bundle.json")
  [ -x "$work/imm" ] || fail "the bundle in $work has no imm binary"
  compgen -G "$work/cuda/lib64/libnvrtc.so.*" >/dev/null || fail "the bundle in $work has no NVRTC (cuda/lib64/libnvrtc.so.*)"
  [ -f "$work/cuda/include/crt/mma.h" ] && [ -f "$work/cuda/include/cuda_fp16.h" ] \
    || fail "the bundle in $work has no CUDA headers (cuda/include/crt/mma.h, cuda_fp16.h)"

  command -v "$nvidia_smi" >/dev/null || fail "no NVIDIA GPU found: nvidia-smi is not installed (no NVIDIA driver on this machine)"
  local facts
  facts=$("$nvidia_smi" --query-gpu=name,driver_version,memory.total --format=csv,noheader,nounits -i 0 2>&1) \
    || fail "no NVIDIA GPU found: nvidia-smi says: $facts"
  local name driver memory driver_cuda
  IFS=, read -r name driver memory <<< "$facts"
  driver_cuda=$("$nvidia_smi" 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n 1)
  gpu=$(printf '{"name": "%s", "driver": "%s", "memory_mib": %s, "driver_cuda": "%s"}' \
    "${name# }" "${driver# }" "${memory// /}" "$driver_cuda")
  echo "GPU: ${name# }, driver ${driver# } (CUDA ${driver_cuda:-?})"
  has_libcuda || fail "the NVIDIA driver's libcuda.so.1 is not on the loader path"
  if [ -n "$driver_cuda" ] && [ "$(printf '%s\n%s\n' "$cuda_version" "$driver_cuda" | sort -V | head -n 1)" != "$cuda_version" ]; then
    fail "the driver supports CUDA $driver_cuda, the bundled NVRTC emits PTX for CUDA $cuda_version: a driver of version 550 or later is needed"
  fi

  export CUDA_PATH=$work/cuda LD_LIBRARY_PATH=$work/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  cd "$work"
  local imm=$work/imm out=$work/result.json
  # Most wanted first: a stage that does not fit in the time left is recorded as skipped.
  for file in songunet_small dit_small songunet_cond; do
    stage "golden $file cuda" 120 "" "$imm" golden "golden/golden_$file.safetensors" --device cuda
  done
  stage "bench mmd cuda" 60 "$out" "$imm" bench mmd --device cuda --json "$out"
  stage "bench sample cuda" 150 "$out" "$imm" bench sample --preset cifar10-paper --batches 1,64,256 --steps 1,2,4,8 --iters 3 --device cuda --json "$out"
  for precision in f32 f16; do
    for batch in 256 512; do
      stage "bench train cuda $precision batch $batch" 180 "$out" "$imm" bench train --preset cifar10-paper --batch "$batch" --precision "$precision" --iters 3 --device cuda --json "$out"
    done
  done
  # The latent DiT-S/2 at its batch: what an hour of latent-dit-s buys, in f32 and in the FP16 recipe's f16.
  for precision in f32 f16; do
    stage "bench train cuda latent-dit-s $precision" 120 "$out" "$imm" bench train --preset latent-dit-s --batch 256 --precision "$precision" --iters 3 --device cuda --json "$out"
  done
  stage "bench launches cuda" 120 "$out" "$imm" bench launches --device cuda --json "$out"
  for file in songunet_small dit_small songunet_cond; do
    stage "golden $file wgpu" 120 "" "$imm" golden "golden/golden_$file.safetensors" --device wgpu
  done
  stage "bench mmd wgpu" 60 "$out" "$imm" bench mmd --device wgpu --json "$out"
  report ""
  echo "report: $json"
  [ "$failures" -eq 0 ] || { echo "gpu_check: $failures stages did not pass (their last lines are in the report)" >&2; exit 1; }
}

case ${1:-} in
  bundle) bundle ;;
  run) shift; run "$@" ;;
  *) die "usage: scripts/gpu_check.sh bundle | run [--json FILE] [BUNDLE]" ;;
esac
