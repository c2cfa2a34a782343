#!/usr/bin/env bash
# The 2D comparison of docs/methods.md: IMM, flow matching (Euler and Heun steps), MeanFlow,
# consistency training and shortcut models, each trained on the same number of points with the same
# network, on checkerboard, moons and spirals, with several seeds; the energy distance to held-out
# data at 1, 2, 4 and 8 steps as mean ± std over the seeds, beside the floor (two data samples).
#
#   scripts/methods_2d.sh [KIMG] [SEEDS]     # defaults: 300 "0 1 2"
#
# Writes runs/methods-2d-KIMG/TOY-METHOD-SEED/ (each a 2D run with its eval.json; flow matching
# also heun.json) and table.md there. A run that has its eval.json is not trained again. JOBS
# (env, default 2) runs that many at once: a 2D run uses one thread.
set -euo pipefail
cd "$(dirname "$0")/.."
kimg=${1:-300}
seeds=${2:-0 1 2}
out=${OUT:-runs/methods-2d-$kimg}
toys=${TOYS:-checkerboard moons spirals}
methods=${METHODS:-imm fm meanflow ct shortcut}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/imm-target}"
cargo build --release --locked -q --features mpi
export imm="$CARGO_TARGET_DIR/release/imm" kimg out
mkdir -p "$out"

one() {
  local toy=$1 method=$2 seed=$3 dir="$out/$1-$2-$3"
  [ -f "$dir/eval.json" ] && return
  echo "== $toy $method seed $seed ($(date +%H:%M:%S))"
  "$imm" train --preset "$toy" --method "$method" --seed "$seed" --kimg "$kimg" --eval-steps 1,2,4,8 \
    --out "$dir.tmp" >"$dir.log" 2>&1
  if [ "$method" = fm ]; then
    "$imm" eval --weights "$dir.tmp/ema.safetensors" --sampler heun --steps 1,2,4,8 --n 2000 --device cpu \
      --json "$dir.tmp/heun.json" >>"$dir.log" 2>&1
  fi
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}
export -f one
for toy in $toys; do for method in $methods; do for seed in $seeds; do echo "$toy $method $seed"; done; done; done |
  xargs -P "${JOBS:-2}" -L 1 bash -c 'one $0 $1 $2'

python3 - "$out" "$kimg" "$toys" "$methods" "$seeds" <<'PY'
import json, statistics, sys
out, kimg, toys, methods, seeds = sys.argv[1], sys.argv[2], *[a.split() for a in sys.argv[3:]]
names = {"imm": "IMM", "fm": "flow matching, Euler", "heun": "flow matching, Heun", "meanflow": "MeanFlow",
         "ct": "consistency training", "shortcut": "shortcut model"}
passes = {"imm": "2 (1 with gradient)", "fm": "1", "heun": "1", "meanflow": "3 (1 with gradient)",
          "ct": "2 (1 with gradient)", "shortcut": "1 + 2/8 (1 with gradient)"}
evals = {"heun": "2 per step"}

def cell(values):
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {spread:.4f}"

lines = [f"Energy distance to 2000 held-out points (lower is better), {kimg}K training points per run, "
         f"mean ± std over seeds {', '.join(seeds)}; network evaluations per sampling step 1 unless noted.\n"]
for toy in toys:
    floor = [json.load(open(f"{out}/{toy}-imm-{s}/eval.json"))["floor"] for s in seeds]
    lines += [f"\n**{toy}** (floor {statistics.mean(floor):.5f})\n",
              "| method | 1 step | 2 steps | 4 steps | 8 steps | network passes per training step | training s |",
              "|---|---|---|---|---|---|---|"]
    for method in [m for run in methods for m in ([run, "heun"] if run == "fm" else [run])]:
        run = "fm" if method == "heun" else method
        values, seconds = {k: [] for k in "1248"}, []
        for s in seeds:
            report = json.load(open(f"{out}/{toy}-{run}-{s}/eval.json"))
            seconds.append(report["train_seconds"])
            if method == "heun":
                rows = json.load(open(f"{out}/{toy}-fm-{s}/heun.json"))["rows"]
                steps = {str(r["steps"]): r["value"] for r in rows}
            else:
                steps = report["steps"]
            for k in values:
                values[k].append(steps[k])
        name = names[method] + (f" ({evals[method]})" if method in evals else "")
        lines.append(f"| {name} | " + " | ".join(cell(values[k]) for k in "1248") +
                     f" | {passes[method]} | {statistics.mean(seconds):.0f} ± {statistics.stdev(seconds) if len(seconds) > 1 else 0:.0f} |")
table = "\n".join(lines) + "\n"
open(f"{out}/table.md", "w").write(table)
print(table)
PY
