#!/usr/bin/env bash
# The image comparison of docs/methods.md: IMM, flow matching (Euler and Heun steps), MeanFlow,
# consistency training and shortcut models on one preset's network (mnist-tiny: MNIST; fmnist-tiny:
# Fashion-MNIST), KIMG thousand images each, several seeds; classifier FID at 1, 2, 4 and 8 steps
# (`imm eval`, the same noise for every model) as mean ± std over the seeds, with each method's
# images/s. Equal wall-clock view: the seconds the cheapest method takes for KIMG, and every method's
# EMA snapshot nearest to the images it trains in that time (its pace from its own runs).
#
#   scripts/methods_images.sh [PRESET] [KIMG] [SEEDS] [N]     # defaults: mnist-tiny 96 "0 1 2" 2000
#
# Writes runs/methods-PRESET-KIMG/METHOD-SEED/ (training runs, snapshots every SNAPSHOT_KIMG = 8,
# eval.json; flow matching also heun.json; time.json for the equal wall-clock snapshot) and
# table.md there. Interrupted: run it again; a run with eval.json is done, one with a saved state
# resumes (`imm train --resume`). METHODS (env) picks rows; one run at a time (each uses every core).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-mnist-tiny}
kimg=${2:-96}
seeds=${3:-0 1 2}
n=${4:-2000}
out=${OUT:-runs/methods-$preset-$kimg}
methods=${METHODS:-imm fm meanflow ct shortcut}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/imm-target}"
cargo build --release --locked -q --features mpi
imm="$CARGO_TARGET_DIR/release/imm"
mkdir -p "$out"

last_snapshot() { ls "$1"/snapshots/ema-*.safetensors | tail -n 1; }
for method in $methods; do for seed in $seeds; do
  dir="$out/$method-$seed"
  [ -f "$dir/eval.json" ] && continue
  echo "== $method seed $seed ($(date +%H:%M:%S))"
  resume=()
  [ -d "$dir/checkpoints" ] && resume=(--resume)
  "$imm" train --preset "$preset" --method "$method" --seed "$seed" --kimg "$kimg" --snapshot-kimg "${SNAPSHOT_KIMG:-8}" \
    --device cpu --out "$dir" "${resume[@]}" >>"$dir.log" 2>&1
  if [ "$method" = fm ]; then
    "$imm" eval --weights "$(last_snapshot "$dir")" --sampler heun --steps 1,2,4,8 --n "$n" --device cpu --json "$dir/heun.json" >>"$dir.log" 2>&1
  fi
  "$imm" eval --weights "$(last_snapshot "$dir")" --steps 1,2,4,8 --n "$n" --device cpu --json "$dir/eval.json" >>"$dir.log" 2>&1
done; done

# Equal wall-clock: each method's pace is the median seconds per thousand images of its records.
python3 - "$out" "$kimg" "$methods" "$seeds" <<'PY' | while read -r dir snapshot; do
import glob, json, statistics, sys
out, kimg, methods, seeds = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
def pace(m):
    return statistics.median(json.loads(l)["sec_per_kimg"] for s in seeds for l in open(f"{out}/{m}-{s}/metrics.jsonl"))
budget = min(pace(m) for m in methods) * kimg
for m in methods:
    for s in seeds:
        snapshots = glob.glob(f"{out}/{m}-{s}/snapshots/ema-*.safetensors")
        nimg = lambda path: int(path.rsplit("ema-", 1)[1].split(".")[0])
        print(f"{out}/{m}-{s}", min(snapshots, key=lambda p: abs(nimg(p) - 1000 * budget / pace(m))))
PY
  [ -f "$dir/time.json" ] && grep -q "$(basename "$snapshot")" "$dir/time.snapshot" 2>/dev/null && continue
  "$imm" eval --weights "$snapshot" --steps 1,2,4,8 --n "$n" --device cpu --json "$dir/time.json" >>"$dir.log" 2>&1
  basename "$snapshot" >"$dir/time.snapshot"
done

python3 - "$out" "$kimg" "$methods" "$seeds" <<'PY'
import json, statistics, sys
out, kimg, methods, seeds = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
names = {"imm": "IMM", "fm": "flow matching, Euler", "heun": "flow matching, Heun (2 per step)", "meanflow": "MeanFlow",
         "ct": "consistency training", "shortcut": "shortcut model"}
passes = {"imm": "2 (1 with gradient)", "fm": "1", "meanflow": "3 (1 with gradient)", "ct": "2 (1 with gradient)",
          "shortcut": "1 + 2/8 (1 with gradient)"}

def cell(values, digits=1):
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"

def fid(path):
    return {str(r["steps"]): r["value"] for r in json.load(open(path))["rows"]}

def pace(m):
    return statistics.median(json.loads(l)["sec_per_kimg"] for s in seeds for l in open(f"{out}/{m}-{s}/metrics.jsonl"))

rows = [m for run in methods for m in ([run, "heun"] if run == "fm" else [run])]
report = json.load(open(f"{out}/{methods[0]}-{seeds[0]}/eval.json"))
lines = [f"FID ({report['metric']}, {report['samples']} samples against {report['reference']} {report['data']} training "
         f"images; lower is better), mean ± std over seeds {', '.join(seeds)}.",
         f"\n**Equal images: {kimg}K per run**\n",
         "| method | 1 step | 2 steps | 4 steps | 8 steps | network passes per training step | images/s |", "|---|---|---|---|---|---|---|"]
for m in rows:
    run, file = ("fm", "heun.json") if m == "heun" else (m, "eval.json")
    values = [fid(f"{out}/{run}-{s}/{file}") for s in seeds]
    lines.append(f"| {names[m]} | " + " | ".join(cell([v[k] for v in values]) for k in "1248") +
                 f" | {passes[run]} | {1000 / pace(run):.0f} |")
budget = min(pace(m) for m in methods) * float(kimg)
lines += [f"\n**Equal wall-clock: {budget:.0f} s of training (the cheapest method's {kimg}K)**\n",
          "| method | images | 1 step | 2 steps | 4 steps | 8 steps |", "|---|---|---|---|---|---|"]
for m in methods:
    values = [fid(f"{out}/{m}-{s}/time.json") for s in seeds]
    nimg = int(open(f"{out}/{m}-{seeds[0]}/time.snapshot").read().strip()[4:-12])
    lines.append(f"| {names[m]} | {nimg / 1000:.0f}K | " + " | ".join(cell([v[k] for v in values]) for k in "1248") + " |")
text = "\n".join(lines) + "\n"
open(f"{out}/table.md", "w").write(text)
print(text)
PY
