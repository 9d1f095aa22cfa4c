#!/usr/bin/python3
"""Pixel-statistics scorer for images of the shapes grammar (the method `stagecraft eval` follows).

For one RGB uint8 image and its caption (`a {colour} {shape} in the {position} on a {colour} background`,
parts may be missing; missing parts are not scored):

 1. Palette: every pixel is labelled with the nearest of the 8 palette colours (squared RGB distance,
    shapes_dataset.COLOURS).
 2. Background = the most common label on the 1-pixel border ring.
 3. Shape mask = pixels whose label is not the background and whose RGB distance to the background
    palette colour is above 80 (so anti-aliased edges and faint blur do not count).
    No mask pixels at all -> nothing was drawn: shape colour, shape and position are all wrong.
 4. Shape colour = the most common label inside the mask. The object mask is then restricted to
    the pixels with that label (the shape's own pixels).
 5. Position = the nearest of the five anchor points (shapes_dataset.POSITION_XY, fractions of the
    side) to the object mask's centroid (pixel centres at (i + 0.5) / size).
 6. Shape from the fill ratio  area / bounding-box area  of the object mask:
    > 0.88 square, >= 0.64 circle, otherwise triangle (ideal values 1.0, pi/4, 0.5).

An image "passes" when every part that its caption names is right. The report gives the accuracy
of each part and of the whole.

    python3 tools/score_shapes.py --check-dataset 500                  # the scorer on true images
    python3 tools/score_shapes.py --model models/tiny-shapes --out /tmp/eval.json [--grid samples.png]
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapes_dataset as D  # noqa: E402

NAMES = list(D.COLOURS)
PALETTE = np.array([D.COLOURS[n] for n in NAMES], dtype=np.float32)
EVAL_CAPTIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eval_captions.txt")
MASK_MIN_DIST2 = 80.0 ** 2
SQUARE_FILL = 0.88
CIRCLE_FILL = 0.64


def analyse(img: np.ndarray) -> dict:
    """What the image shows: background, colour, shape, position (None where nothing was found)."""
    img = img.astype(np.float32)
    h, w, _ = img.shape
    d2 = ((img[:, :, None, :] - PALETTE[None, None]) ** 2).sum(-1)  # [H,W,8]
    labels = d2.argmin(-1)
    border = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    bg = int(np.bincount(border, minlength=len(NAMES)).argmax())
    mask = (labels != bg) & (d2[:, :, bg] > MASK_MIN_DIST2)
    out = {"background": NAMES[bg], "colour": None, "shape": None, "position": None}
    if not mask.any():
        return out
    fg = int(np.bincount(labels[mask], minlength=len(NAMES)).argmax())
    obj = mask & (labels == fg)
    ys, xs = np.nonzero(obj)
    cx, cy = (xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h
    pos = min(D.POSITION_XY, key=lambda p: (D.POSITION_XY[p][0] - cx) ** 2 + (D.POSITION_XY[p][1] - cy) ** 2)
    fill = len(xs) / float((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
    shape = "square" if fill > SQUARE_FILL else ("circle" if fill >= CIRCLE_FILL else "triangle")
    out.update(colour=NAMES[fg], shape=shape, position=pos, fill=round(fill, 3),
               centroid=[round(float(cx), 3), round(float(cy), 3)], area=int(len(xs)))
    return out


def score(img: np.ndarray, caption: str) -> dict:
    want = D.parse_caption(caption)
    got = analyse(img)
    res = {f"{k}_ok": got[k] == v for k, v in want.items()}
    res["all_ok"] = all(res.values())
    res["found"] = got
    return res


def load_captions(path=EVAL_CAPTIONS):
    """The non-empty lines of a captions file (default: the held-out evaluation set)."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def summarize(results):
    keys = sorted({k for r in results for k in r if k.endswith("_ok")})
    return {k[:-3]: round(float(np.mean([r[k] for r in results if k in r])), 4) for k in keys} | {"n": len(results)}


def write_png(img: np.ndarray, path: str):
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[i].tobytes() for i in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def grid(images, cols):
    n, h, w, c = images.shape
    rows = (n + cols - 1) // cols
    g = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i, im in enumerate(images):
        g[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] = im
    return g


def check_dataset(n, size, seed=0):
    """The scorer on true renderings of every caption variant (should be ~100%)."""
    ds = D.ShapesDataset(size)
    rng = np.random.RandomState(seed)
    results = []
    for _ in range(n):
        img, a = ds.sample(rng)
        results.append(score(img, D.caption_for(a, rng, p_full=1.0)))
    return summarize(results), results


def evaluate_model(model, captions, steps, guidance, scheduler, seed, threads=1, batch=28):
    import torch
    import reference as R
    torch.set_num_threads(threads)
    pipe = R.Pipeline(model)
    shape = R.latent_shape(model)
    results, images = [], []
    t0 = time.time()
    # Batched to amortise per-op overhead; caption i always gets the noise of seed + i.
    for start in range(0, len(captions), batch):
        caps = captions[start:start + batch]
        lat = torch.cat([torch.randn([1] + shape, generator=torch.Generator().manual_seed(seed + start + j))
                         for j in range(len(caps))])
        _, u8 = pipe(caps, lat, steps, guidance, scheduler)
        for j, cap in enumerate(caps):
            img = u8[j].numpy()
            images.append(img)
            r = score(img, cap)
            r["caption"] = cap
            results.append(r)
    return summarize(results) | {"seconds": round(time.time() - t0, 1)}, results, np.stack(images)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-dataset", type=int, default=0, help="score N true images and exit")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--model", help="diffusers folder to evaluate")
    ap.add_argument("--captions", default=EVAL_CAPTIONS)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--scheduler", default="flow_match_euler")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--out", help="write the per-image results and the summary as JSON")
    ap.add_argument("--grid", help="write the generated images as one PNG")
    args = ap.parse_args()
    if args.check_dataset:
        summary, _ = check_dataset(args.check_dataset, args.size)
        print(json.dumps(summary))
        return
    caps = load_captions(args.captions)
    if args.limit:
        caps = caps[:args.limit]
    summary, results, images = evaluate_model(args.model, caps, args.steps, args.guidance, args.scheduler,
                                              args.seed)
    summary.update(steps=args.steps, guidance=args.guidance, scheduler=args.scheduler, seed=args.seed)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"summary": summary, "results": results}, f, indent=1)
    if args.grid:
        write_png(grid(images, 12), args.grid)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
