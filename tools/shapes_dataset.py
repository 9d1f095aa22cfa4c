#!/usr/bin/python3
"""The synthetic "shapes" data set the shipped tiny model is trained on.

One coloured shape (circle, square, triangle) at one of five positions on a plain background.
Captions follow one grammar:  a {colour} {shape} [in the {position}] [on a {colour} background].
Parts left out of a caption are still drawn (at random), so every caption variant of an image is
true of it. Everything is deterministic in the seed. A fixed 10% of the full
(colour, shape, position, background) combinations is held out for evaluation and never drawn
for training; `python3 tools/shapes_dataset.py --write-eval` writes them to tools/eval_captions.txt.

    from shapes_dataset import ShapesDataset
    ds = ShapesDataset(seed=0, size=64)
    img, attrs = ds.sample(rng)                 # uint8 [H,W,3], dict
    caption = caption_for(attrs, rng)           # random caption variant
"""
from __future__ import annotations

import argparse
import itertools
import os

import numpy as np

COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220), "yellow": (240, 220, 30),
    "white": (245, 245, 245), "black": (15, 15, 15), "purple": (140, 40, 180), "orange": (250, 140, 20),
}
SHAPES = ["circle", "square", "triangle"]
POSITIONS = ["center", "top left", "top right", "bottom left", "bottom right"]
# Shape centre as a fraction of the image side (x, y).
POSITION_XY = {"center": (0.5, 0.5), "top left": (0.27, 0.27), "top right": (0.73, 0.27),
               "bottom left": (0.27, 0.73), "bottom right": (0.73, 0.73)}
HOLDOUT_SEED = 1234
HOLDOUT_FRACTION = 0.10
WORDS = ["a", "in", "the", "on", "background"] + list(COLOURS) + SHAPES + \
    sorted({w for p in POSITIONS for w in p.split()})


def all_combinations():
    return [(c, s, p, b) for c, s, p, b in itertools.product(COLOURS, SHAPES, POSITIONS, COLOURS) if c != b]


def holdout_combinations():
    combos = all_combinations()
    rng = np.random.RandomState(HOLDOUT_SEED)
    idx = rng.permutation(len(combos))[:int(round(len(combos) * HOLDOUT_FRACTION))]
    return sorted(combos[i] for i in idx)


def full_caption(c, s, p, b):
    return f"a {c} {s} in the {p} on a {b} background"


def caption_for(attrs, rng, p_full=0.55):
    """A random caption variant that is true of the image: full, no background, no position, or
    colour+shape only."""
    c, s, p, b = attrs["colour"], attrs["shape"], attrs["position"], attrs["background"]
    r = rng.random_sample()
    if r < p_full:
        return full_caption(c, s, p, b)
    if r < p_full + (1 - p_full) / 3:
        return f"a {c} {s} in the {p}"
    if r < p_full + 2 * (1 - p_full) / 3:
        return f"a {c} {s} on a {b} background"
    return f"a {c} {s}"


def parse_caption(text):
    """Inverse of the grammar: dict with colour, shape and optionally position, background."""
    words = text.strip().lower().split()
    out = {}
    if len(words) >= 3 and words[0] == "a":
        out["colour"], out["shape"] = words[1], words[2]
    rest = " ".join(words[3:])
    if rest.startswith("in the "):
        tail = rest[len("in the "):]
        for p in sorted(POSITIONS, key=len, reverse=True):
            if tail.startswith(p):
                out["position"] = p
                rest = tail[len(p):].strip()
                break
    if rest.startswith("on a ") and rest.endswith(" background"):
        out["background"] = rest[len("on a "):-len(" background")].strip()
    return out


def draw(attrs, size=64, supersample=4):
    """Renders one image (uint8 [size,size,3]); edges anti-aliased by supersampling."""
    S = size * supersample
    img = np.empty((S, S, 3), dtype=np.float32)
    img[:] = COLOURS[attrs["background"]]
    cx, cy = attrs["cx"] * S, attrs["cy"] * S
    r = attrs["radius"] * S
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
    if attrs["shape"] == "circle":
        m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    elif attrs["shape"] == "square":
        h = r * 0.886  # same area as the circle
        m = (np.abs(xx - cx) <= h) & (np.abs(yy - cy) <= h)
    else:  # upright isosceles triangle, apex up
        h = r * 1.1
        top, bot = cy - h, cy + h * 0.8
        t = (yy - top) / (bot - top)
        m = (t >= 0) & (t <= 1) & (np.abs(xx - cx) <= t * h * 1.1)
    img[m] = COLOURS[attrs["colour"]]
    img = img.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


class ShapesDataset:
    """Draws training images; held-out (colour, shape, position, background) tuples never occur."""

    def __init__(self, size=64, exclude_holdout=True):
        self.size = size
        held = set(holdout_combinations()) if exclude_holdout else set()
        self.combos = [c for c in all_combinations() if c not in held]

    def attrs(self, rng):
        c, s, p, b = self.combos[rng.randint(len(self.combos))]
        x, y = POSITION_XY[p]
        return {"colour": c, "shape": s, "position": p, "background": b,
                "cx": x + rng.uniform(-0.04, 0.04), "cy": y + rng.uniform(-0.04, 0.04),
                "radius": rng.uniform(0.15, 0.20)}

    def sample(self, rng):
        a = self.attrs(rng)
        return draw(a, self.size), a

    def batch(self, n, seed):
        rng = np.random.RandomState(seed)
        imgs, attrs = [], []
        for _ in range(n):
            i, a = self.sample(rng)
            imgs.append(i)
            attrs.append(a)
        return np.stack(imgs), attrs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write-eval", action="store_true", help="write tools/eval_captions.txt")
    ap.add_argument("--preview", help="write a PPM grid of 16 samples here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.write_eval:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "eval_captions.txt")
        with open(path, "w") as f:
            for combo in holdout_combinations():
                f.write(full_caption(*combo) + "\n")
        print(f"wrote {path}")
    if args.preview:
        imgs, attrs = ShapesDataset().batch(16, args.seed)
        grid = imgs.reshape(4, 4, 64, 64, 3).transpose(0, 2, 1, 3, 4).reshape(256, 256, 3)
        with open(args.preview, "wb") as f:
            f.write(b"P6 256 256 255\n" + grid.tobytes())
        rng = np.random.RandomState(args.seed)
        for a in attrs:
            print(caption_for(a, rng))


if __name__ == "__main__":
    main()
