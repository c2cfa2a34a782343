#!/usr/bin/env bash
# The paper's particle ablation (its Fig. 5: at batch 4096, M = 1 and 2 collapse and M = 4 is best)
# on a 2D toy, several seeds, energy distance at 1, 2, 4 and 8 steps (mean ± std). Two views:
#   batch 4096, M = 1, 2, 4, 8, 16 (4096 / M groups per step), KIMG thousand points each;
#   256 groups per step (batch 256 M), as many steps as the first view (KIMG M / 16 thousand points).
#
#   scripts/particles_2d.sh [KIMG] [SEEDS] [TOY]     # defaults: 2048 "0 1 2" checkerboard
#
# Writes runs/particles-2d-TOY-KIMG/{batch,groups}/M-SEED/ and table.md there; a run that has its
# eval.json is not trained again. JOBS (env, default 2) runs that many at once (one thread each).
set -euo pipefail
cd "$(dirname "$0")/.."
kimg=${1:-2048}
seeds=${2:-0 1 2}
toy=${3:-checkerboard}
out=${OUT:-runs/particles-2d-$toy-$kimg}
particles="1 2 4 8 16"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/imm-target}"
cargo build --release --locked -q --features mpi
export imm="$CARGO_TARGET_DIR/release/imm" toy
mkdir -p "$out/batch" "$out/groups"

one() {
  local m=$1 seed=$2 batch=$3 kimg=$4 dir="$5/$1-$2"
  [ -f "$dir/eval.json" ] && return
  echo "== M = $m seed $seed, batch $batch, ${kimg}K points ($(date +%H:%M:%S))"
  "$imm" train --preset "$toy" --method imm --particles "$m" --batch "$batch" --seed "$seed" --kimg "$kimg" \
    --eval-steps 1,2,4,8 --out "$dir.tmp" >"$dir.log" 2>&1
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}
export -f one
for m in $particles; do for seed in $seeds; do
  echo "$m $seed 4096 $kimg $out/batch"
  # M = 16 at 256 groups is batch 4096 again: the first view's run.
  [ "$m" = 16 ] || echo "$m $seed $((256 * m)) $(python3 -c "print($kimg * $m / 16)") $out/groups"
done; done | xargs -P "${JOBS:-2}" -L 1 bash -c 'one $0 $1 $2 $3 $4'

python3 - "$out" "$kimg" "$toy" "$seeds" "$particles" <<'PY'
import json, statistics, sys
out, kimg, toy, seeds, particles = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), sys.argv[5].split()

def cell(values, digits=4):
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"

def table(view):
    lines = ["| M | batch | groups per step | points | 1 step | 2 steps | 4 steps | 8 steps | training s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in particles:
        d = "batch" if view == "batch" or m == "16" else "groups"
        reports = [json.load(open(f"{out}/{d}/{m}-{s}/eval.json")) for s in seeds]
        batch = 4096 if view == "batch" else 256 * int(m)
        cells = " | ".join(cell([r["steps"][k] for r in reports]) for k in "1248")
        lines.append(f"| {m} | {batch} | {batch // int(m)} | {reports[0]['nimg'] / 1000:.0f}K | {cells} | "
                     f"{cell([r['train_seconds'] for r in reports], 0)} |")
    return lines

floor = statistics.mean(json.load(open(f"{out}/batch/1-{s}/eval.json"))["floor"] for s in seeds)
lines = [f"IMM on {toy}, energy distance to 2000 held-out points (lower is better; floor {floor:.5f}), "
         f"mean ± std over seeds {', '.join(seeds)}; the 2D presets' network and settings otherwise.",
         f"\n**Batch 4096, {kimg}K points per run**\n"] + table("batch") + \
        [f"\n**256 groups per step, as many steps as above**\n"] + table("groups")
text = "\n".join(lines) + "\n"
open(f"{out}/table.md", "w").write(text)
print(text)
PY
