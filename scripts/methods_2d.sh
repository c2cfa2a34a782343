#!/usr/bin/env bash
# The 2D comparison of docs/methods.md: IMM, flow matching (Euler and Heun steps), MeanFlow,
# consistency training and shortcut models, each trained with the same network on checkerboard,
# moons and spirals with several seeds; the energy distance to held-out data at 1, 2, 4 and 8 steps
# as mean ± std over the seeds, beside the floor (two data samples). Two views: equal images (KIMG
# thousand points each), then equal wall-clock: each method trains on the points it gets through in
# the seconds IMM took for KIMG (its seconds per point from the equal-images runs, same toy).
#
#   scripts/methods_2d.sh [KIMG] [SEEDS]     # defaults: 300 "0 1 2"
#
# Writes runs/methods-2d-KIMG/{images,time}/TOY-METHOD-SEED/ (each a 2D run with its eval.json;
# flow matching also heun.json) and table.md there. A run that has its eval.json is not trained
# again. JOBS (env, default 2) runs that many at once: a 2D run uses one thread.
set -euo pipefail
cd "$(dirname "$0")/.."
kimg=${1:-300}
seeds=${2:-0 1 2}
out=${OUT:-runs/methods-2d-$kimg}
toys=${TOYS:-checkerboard moons spirals}
methods=${METHODS:-imm fm meanflow ct shortcut}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/imm-target}"
cargo build --release --locked -q --features mpi
export imm="$CARGO_TARGET_DIR/release/imm"
mkdir -p "$out/images" "$out/time"

one() {
  local toy=$1 method=$2 seed=$3 kimg=$4 dir="$5/$1-$2-$3"
  [ -f "$dir/eval.json" ] && return
  echo "== $toy $method seed $seed, ${kimg}K points ($(date +%H:%M:%S))"
  "$imm" train --preset "$toy" --method "$method" --seed "$seed" --kimg "$kimg" --eval-steps 1,2,4,8 \
    --out "$dir.tmp" >"$dir.log" 2>&1
  if [ "$method" = fm ]; then
    "$imm" eval --weights "$dir.tmp/ema.safetensors" --sampler heun --steps 1,2,4,8 --n 2000 --device cpu \
      --json "$dir.tmp/heun.json" >>"$dir.log" 2>&1
  fi
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}
export -f one
for toy in $toys; do for method in $methods; do for seed in $seeds; do
  echo "$toy $method $seed $kimg $out/images"
done; done; done | xargs -P "${JOBS:-2}" -L 1 bash -c 'one $0 $1 $2 $3 $4'

# Equal wall-clock: the points each method gets through in IMM's seconds (means over the seeds).
python3 - "$out" "$kimg" "$toys" "$methods" "$seeds" <<'PY' | xargs -P "${JOBS:-2}" -L 1 bash -c 'one $0 $1 $2 $3 $4'
import json, statistics, sys
out, kimg, toys, methods, seeds = sys.argv[1], float(sys.argv[2]), *[a.split() for a in sys.argv[3:]]
seconds = lambda toy, m: statistics.mean(json.load(open(f"{out}/images/{toy}-{m}-{s}/eval.json"))["train_seconds"] for s in seeds)
for toy in toys:
    budget = seconds(toy, "imm")
    for m in methods:
        for s in seeds:
            print(toy, m, s, f"{kimg * budget / seconds(toy, m):.0f}", f"{out}/time")
PY

python3 - "$out" "$kimg" "$toys" "$methods" "$seeds" <<'PY'
import json, statistics, sys
out, kimg, toys, methods, seeds = sys.argv[1], sys.argv[2], *[a.split() for a in sys.argv[3:]]
names = {"imm": "IMM", "fm": "flow matching, Euler", "heun": "flow matching, Heun", "meanflow": "MeanFlow",
         "ct": "consistency training", "shortcut": "shortcut model"}
passes = {"imm": "2 (1 with gradient)", "fm": "1", "heun": "1", "meanflow": "3 (1 with gradient)",
          "ct": "2 (1 with gradient)", "shortcut": "1 + 2/8 (1 with gradient)"}
evals = {"heun": "2 per step"}

def cell(values, digits=4):
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"

def table(view, toy):
    lines = ["| method | 1 step | 2 steps | 4 steps | 8 steps | training points | network passes per training step | training s |",
             "|---|---|---|---|---|---|---|---|"]
    for method in [m for run in methods for m in ([run, "heun"] if run == "fm" else [run])]:
        run = "fm" if method == "heun" else method
        values, seconds, points = {k: [] for k in "1248"}, [], []
        for s in seeds:
            report = json.load(open(f"{out}/{view}/{toy}-{run}-{s}/eval.json"))
            seconds.append(report["train_seconds"])
            points.append(report["nimg"])
            steps = report["steps"]
            if method == "heun":
                steps = {str(r["steps"]): r["value"] for r in json.load(open(f"{out}/{view}/{toy}-fm-{s}/heun.json"))["rows"]}
            for k in values:
                values[k].append(steps[k])
        name = names[method] + (f" ({evals[method]})" if method in evals else "")
        lines.append(f"| {name} | " + " | ".join(cell(values[k]) for k in "1248") +
                     f" | {statistics.mean(points) / 1000:.0f}K | {passes[method]} | {cell(seconds, 0)} |")
    return lines

lines = [f"Energy distance to 2000 held-out points (lower is better), mean ± std over seeds {', '.join(seeds)}; "
         "network evaluations per sampling step 1 unless noted.\n"]
for view, title in [("images", f"equal images: {kimg}K points per run"),
                    ("time", f"equal wall-clock: the points each method trains in the seconds IMM takes for {kimg}K")]:
    lines.append(f"\n### {title[0].upper() + title[1:]}")
    for toy in toys:
        floor = statistics.mean(json.load(open(f"{out}/{view}/{toy}-imm-{s}/eval.json"))["floor"] for s in seeds)
        lines += [f"\n**{toy}** (floor {floor:.5f})\n"] + table(view, toy)
text = "\n".join(lines) + "\n"
open(f"{out}/table.md", "w").write(text)
print(text)
PY
