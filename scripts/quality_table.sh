#!/usr/bin/env bash
# The quality table: IMM with M = 1, 2, 4, 8 and flow matching, trained on the same images with the
# same seed, then FID at 1, 2, 4 and 8 steps from the same noise (`imm eval`).
#
#   scripts/quality_table.sh [PRESET] [KIMG] [N]     # defaults: mnist-tiny 24 2000
#
# Writes runs/table-PRESET-KIMG/{imm-m1,...,fm}/ (each a training run with its eval.json and
# samples.png) and table.md there. A run that has its eval.json is not trained again. RUNS (env)
# picks rows, e.g. RUNS="imm-m4 fm"; TRAIN_ARGS adds options to every run, e.g. "--devices 2" for
# two parts at once on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-mnist-tiny}
kimg=${2:-24}
n=${3:-2000}
out=${OUT:-runs/table-$preset-$kimg}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/imm-target}"
cargo build --release --locked -q
imm="$CARGO_TARGET_DIR/release/imm"

runs=${RUNS:-imm-m4 fm imm-m1 imm-m2 imm-m8}
for run in $runs; do
  dir="$out/$run"
  [ -f "$dir/eval.json" ] && continue
  case $run in
    fm) args=(--method fm) ;;
    imm-m*) args=(--method imm --particles "${run#imm-m}") ;;
  esac
  echo "== $run ($(date +%H:%M:%S))"
  rm -rf "$dir"
  start=$(date +%s)
  # shellcheck disable=SC2086 # TRAIN_ARGS is a list of options
  "$imm" train --preset "$preset" --kimg "$kimg" --out "$dir" "${args[@]}" ${TRAIN_ARGS:-} >"$out-$run.log" 2>&1
  echo "$(( $(date +%s) - start ))" >"$dir/train-seconds"
  snapshot=$(ls "$dir"/snapshots/ema-*.safetensors | tail -n 1)
  "$imm" eval --weights "$snapshot" --steps 1,2,4,8 --n "$n" --json "$dir/eval.json"
done

python3 - "$out" $runs <<'EOF'
import json, sys
out, runs = sys.argv[1], sys.argv[2:]
rows = []
for run in runs:
    report = json.load(open(f"{out}/{run}/eval.json"))
    fid = {r["steps"]: r["value"] for r in report["rows"]}
    seconds = open(f"{out}/{run}/train-seconds").read().strip()
    name = "flow matching" if run == "fm" else f"IMM, M = {run[5:]}"
    cells = " | ".join(f"{fid[k]:.2f}" for k in (1, 2, 4, 8))
    rows.append(f"| {name} | {cells} | {seconds} s | [grid]({run}/samples.png) |")
metric = report["metric"]
head = f"FID ({metric}, {report['samples']} samples vs {report['reference']} {report['data']} training images; lower is better)\n\n"
table = head + "| model | 1 step | 2 steps | 4 steps | 8 steps | training | samples |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
open(f"{out}/table.md", "w").write(table)
print(table)
EOF
