#!/usr/bin/env python3
"""Ship trained models to the page: f16 weights in www/models/ and their cards in
www/models/models.json (what the page's pretrained choices show).

    python3 scripts/page_models.py NAME=RUN_DIR ... toy:TOY=DEMO_DIR ...

An image RUN_DIR is a run of `imm train` with the files scripts/quality_table.sh adds: eval.json
(from `imm eval`; a conditional model's at the guidance its card should show) and train-seconds. A DEMO_DIR is the output of `imm demo --preset TOY`: its IMM
and flow-matching networks become one file of the 2D playground's format. MACHINE (env) describes
where they trained.
"""
import glob
import json
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fid_weights  # noqa: E402


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, h in header.items():
        assert h["dtype"] == "F32", f"{path}: {name} is {h['dtype']}"
        start, end = h["data_offsets"]
        raw = data[8 + n + start:8 + n + end]
        tensors[name] = (h["shape"], struct.unpack(f"<{len(raw) // 4}f", raw))
    return tensors, meta


def write_safetensors_f16(path, tensors, meta):
    half = {name: ("F16", shape, struct.pack(f"<{len(values)}e", *values)) for name, (shape, values) in tensors.items()}
    with open(path, "wb") as f:
        f.write(fid_weights.safetensors_bytes(half, meta))


def toy_card(toy, demo):
    """Both networks of an `imm demo` run in the playground's format (`imm.*`, `fm.*`)."""
    tensors, reports, nimg, net = {}, {}, 0, None
    for method in ("imm", "fm"):
        part, meta = read_safetensors(os.path.join(demo, method, "ema.safetensors"))
        card = json.loads(meta["imm"])
        nimg, net = card["nimg"], card["net"]
        tensors.update({f"{method}.{k}": v for k, v in part.items()})
        reports[method] = json.load(open(os.path.join(demo, method, "eval.json")))
    file = f"2d-{toy}.safetensors"
    meta = {"kind": "imm-playground-2d", "card": json.dumps({"nimg": nimg, "net": net, "methods": ["imm", "fm"], "trained": "imm demo"})}
    write_safetensors_f16(os.path.join(root, "www", "models", file), tensors, meta)
    return {
        "toy": toy,
        "file": file,
        "methods": ["imm", "fm"],
        "net": {"hidden": net["hidden"], "blocks": net["blocks"]},
        "nimg": nimg,
        "train_seconds": round(sum(r["train_seconds"] for r in reports.values()), 1),
        "machine": machine,
        "quality": {
            "metric": "energy-distance",
            "floor": round(reports["imm"]["floor"], 5),
            **{m: {k: round(v, 5) for k, v in r["steps"].items()} for m, r in reports.items()},
        },
    }


# The methods' names in words, as Rust's AnyMethod::TITLES.
TITLES = {"imm": "IMM", "fm": "flow matching", "meanflow": "MeanFlow", "ct": "consistency training", "shortcut": "shortcut model"}
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
imm = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/imm-target")), "release", "imm")
machine = os.environ.get("MACHINE", "a 2-core CPU (burn's Flex backend)")
manifest = os.path.join(root, "www", "models", "models.json")
shipped = json.load(open(manifest)) if os.path.exists(manifest) else {}
models, toys = shipped.get("models", []), shipped.get("toys", [])

for arg in sys.argv[1:]:
    name, run = arg.split("=", 1)
    if name.startswith("toy:"):
        card = toy_card(name[4:], run)
        toys = [t for t in toys if t["toy"] != card["toy"]] + [card]
        continue
    snapshot = sorted(glob.glob(os.path.join(run, "snapshots", "ema-*.safetensors")))[-1]
    config = json.load(open(os.path.join(run, "config.json")))
    report = json.load(open(os.path.join(run, "eval.json")))
    method = config["method"]
    particles = config["method_config"].get("particles")
    file = f"{name}.safetensors"
    subprocess.run([imm, "export", "--weights", snapshot, "--out", os.path.join(root, "www", "models", file)], check=True)
    nimg = int(os.path.basename(snapshot)[4:-12])
    data = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}[config["data"]]
    conditional = bool(config["net"].get("label_dim"))
    title = f"{data} · " + (f"IMM (M = {particles})" if method == "imm" else TITLES[method]) + (" · class-conditional" if conditional else "")
    card = {
        "file": file,
        "title": title,
        "preset": config["preset"],
        "method": method,
        "particles": particles,
        "k": config["method_config"]["times"]["k"] if method == "imm" else None,
        "nimg": nimg,
        "train": {k: config["train"][k] for k in ("batch", "lr", "optimizer", "ema", "seed")},
        "train_seconds": float(open(os.path.join(run, "train-seconds")).read()),
        "machine": machine,
        "quality": {
            "metric": report["metric"],
            "samples": report["samples"],
            "values": {str(r["steps"]): round(r["value"], 3) for r in report["rows"]},
        },
    }
    if conditional:
        card["quality"]["guidance"] = report["guidance"]
        card["quality"]["accuracy"] = {str(r["steps"]): round(r["class_accuracy"], 4) for r in report["rows"]}
    models = [m for m in models if m["file"] != file] + [card]

json.dump({"models": models, "toys": toys}, open(manifest, "w"), indent=1)
print(f"wrote {manifest} ({len(models)} image models, {len(toys)} 2D toys)")
