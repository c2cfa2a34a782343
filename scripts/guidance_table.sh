#!/usr/bin/env bash
# The quality table of a class-conditional model: classifier FID and class accuracy at 1, 2, 4 and 8
# steps for guidance 1, 1.5, 2 and 3, all from the same noise (`imm eval`).
#
#   scripts/guidance_table.sh SNAPSHOT [N]      # N samples per cell, default 2000
#
# Writes eval-wW.json per guidance and table.md into OUT (env; default runs/guidance-NAME);
# a guidance whose JSON exists is not evaluated again.
set -euo pipefail
cd "$(dirname "$0")/.."
snapshot=$1
n=${2:-2000}
out=${OUT:-runs/guidance-$(basename "$snapshot" .safetensors)}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/imm-target}"
cargo build --release --locked -q
imm="$CARGO_TARGET_DIR/release/imm"
mkdir -p "$out"
for w in 1 1.5 2 3; do
  [ -f "$out/eval-w$w.json" ] && continue
  echo "== guidance $w ($(date +%H:%M:%S))"
  "$imm" eval --weights "$snapshot" --steps 1,2,4,8 --n "$n" --cfg "$w" --json "$out/eval-w$w.json"
done

python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
rows = []
for w in ("1", "1.5", "2", "3"):
    report = json.load(open(f"{out}/eval-w{w}.json"))
    cells = " | ".join(f"{r['value']:.1f}, {100 * r['class_accuracy']:.1f}%" for r in report["rows"])
    rows.append(f"| w = {w}{' (none)' if w == '1' else ''} | {cells} |")
head = (f"Classifier FID and class accuracy ({report['samples']} samples of balanced classes vs "
        f"{report['reference']} {report['data']} training images; {report['weights']})\n\n")
table = head + "| guidance | 1 step | 2 steps | 4 steps | 8 steps |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
open(f"{out}/table.md", "w").write(table)
print(table)
EOF
