#!/usr/bin/python3
"""Stage dumps from the independent PyTorch reference, in Stagecraft's dump format
(docs/numerics.md), so that `stagecraft compare` can say where the two part ways.

    reference_dump.py noise --model M --seed 11 [--width 32 --height 32] [--n 1] --out noise.safetensors
    reference_dump.py generate --model M --prompt TEXT --steps 20 --guidance 4 --scheduler flow_match_euler \
        --latents noise.safetensors --dump DIR

`noise` reproduces Stagecraft's seeded noise (stages/pipeline/noise.hpp: Philox4x32-10 + Box-Muller
in double, rounded to f32) as a latents file: tensor `latents` [N, C, H/s, W/s], job i drawn with
seed + i as `stagecraft run --n N` does. `generate` runs tools/reference.py's Pipeline step by step
and writes the same files and tensor names as `stagecraft generate --dump`:
00-text, 01-denoise, 02-decode, 03-postprocess .safetensors and manifest.json.

Imports tools/reference.py (kept unmodified); needs torch and numpy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402

FORMAT = "stagecraft-dump/1"


# ----------------------------------------------------------------------------------------------
# Stagecraft's seeded noise
# ----------------------------------------------------------------------------------------------

def philox4x32_10(counter, key):
    """Random123's Philox4x32-10 on arrays of uint64 holding 32-bit lanes (vectorised over elements)."""
    M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
    mask = np.uint64(0xFFFFFFFF)
    c0, c1, c2, c3 = (np.asarray(x, dtype=np.uint64) for x in counter)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for r in range(10):
        if r > 0:
            k0 = (k0 + np.uint64(W0)) & mask
            k1 = (k1 + np.uint64(W1)) & mask
        p0 = np.uint64(M0) * c0
        p1 = np.uint64(M1) * c2
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0) & mask, p1 & mask, \
                         ((p0 >> np.uint64(32)) ^ c3 ^ k1) & mask, p0 & mask
    return c0, c1, c2, c3


def gaussian_noise(shape, seed: int) -> torch.Tensor:
    """Element n of the row-major tensor: pair k = n // 2 -> Philox(counter (k lo, k hi, 0, 0),
    key (seed lo, seed hi)) -> u1, u2 (53-bit) -> Box-Muller (cos for even n, sin for odd), f32."""
    n = int(np.prod(shape))
    pairs = (n + 1) // 2
    k = np.arange(pairs, dtype=np.uint64)
    zero = np.zeros(pairs, dtype=np.uint64)
    w0, w1, w2, w3 = philox4x32_10((k & np.uint64(0xFFFFFFFF), k >> np.uint64(32), zero, zero),
                                   (seed & 0xFFFFFFFF, seed >> 32))
    a = (w0 << np.uint64(32)) | w1
    b = (w2 << np.uint64(32)) | w3
    u1 = ((a >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)
    u2 = (b >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    r = np.sqrt(-2.0 * np.log(u1))
    two_pi = 6.283185307179586476925286766559
    out = np.empty(pairs * 2, dtype=np.float64)
    out[0::2] = r * np.cos(two_pi * u2)
    out[1::2] = r * np.sin(two_pi * u2)
    return torch.from_numpy(out[:n].astype(np.float32).reshape(shape))


def _cmd_noise(a):
    c, h, w = ref.latent_shape(a.model, a.height, a.width)
    lat = torch.cat([gaussian_noise([1, c, h, w], a.seed + i) for i in range(a.n)])
    ref.save_safetensors({"latents": lat}, a.out)
    print(json.dumps({"latents": list(lat.shape), "seed": a.seed}))


# ----------------------------------------------------------------------------------------------
# A reference run with dumps
# ----------------------------------------------------------------------------------------------

class Dump:
    def __init__(self, folder):
        self.folder = folder
        self.stages = {}  # insertion order = pipeline order
        self.manifest = {}
        os.makedirs(folder, exist_ok=True)

    def add(self, stage, name, t):
        t = t.detach().cpu()
        self.stages.setdefault(stage, {})[name] = t.float() if t.is_floating_point() else t

    def flush(self):
        files = []
        for i, (stage, tensors) in enumerate(self.stages.items()):
            fname = f"{i:02d}-{stage}.safetensors"
            ref.save_safetensors({k: v.contiguous() for k, v in tensors.items()}, os.path.join(self.folder, fname),
                                 {"stage": stage})
            files.append({"file": fname, "stage": stage, "tensors": sorted(tensors)})
        m = dict(self.manifest, format=FORMAT, files=files)
        with open(os.path.join(self.folder, "manifest.json"), "w") as f:
            json.dump(m, f, indent=2)
            f.write("\n")


@torch.no_grad()
def dump_generate(pipe: ref.Pipeline, prompt, negative_prompt, latents, steps, guidance, scheduler, dump: Dump):
    """reference.Pipeline.__call__ for one latent, unrolled so every stage's tensors can be recorded."""
    cfg = guidance > 1.0

    def encode(text, prefix):
        tok = pipe.tokenizer(text)
        ids = torch.tensor([tok["input_ids"]], dtype=torch.int32)
        mask = torch.tensor([tok["attention_mask"]], dtype=torch.int32)
        emb = pipe.text_encoder(ids.long(), mask.long())
        dump.add("text", prefix + "token_ids", ids)
        dump.add("text", prefix + "attention_mask", mask)
        dump.add("text", prefix + "prompt_embeds", emb)
        return emb, mask.long()

    emb, mask = encode(prompt, "")
    if cfg:
        neg_emb, neg_mask = encode(negative_prompt, "negative_")

    sched = ref.make_scheduler(scheduler, pipe.scheduler_config)
    sched.set_timesteps(steps)
    lat = latents.float() * sched.init_noise_sigma
    dump.add("denoise", "latents.initial", lat)
    ctx = torch.cat([neg_emb, emb]) if cfg else emb
    cmask = torch.cat([neg_mask, mask]) if cfg else mask
    lc = lat.shape[1]
    model_ts = []
    for i, t in enumerate(sched.timesteps):
        inp = torch.cat([lat, lat]) if cfg else lat
        inp = sched.scale_model_input(inp, t)
        tt = t.reshape(1).to(torch.float32).expand(inp.shape[0])
        model_ts.append(float(tt[0]))
        out = pipe.transformer(inp, ctx, tt, encoder_attention_mask=cmask)
        if pipe.transformer.out_channels // 2 == lc:
            out = out.chunk(2, dim=1)[0]
        raw = out
        if cfg:
            u, c = out.chunk(2)
            out = u + guidance * (c - u)
        if i == 0:
            dump.add("denoise", "model_output.step_000", raw)
            dump.add("denoise", "noise_pred.step_000", out)
        lat = sched.step(out, t, lat)
        dump.add("denoise", f"latents.step_{i:03d}", lat)

    image = pipe.vae.decode_latents(lat)
    dump.add("decode", "image", image)
    u8 = ref.image_to_uint8(image)
    dump.add("postprocess", "image_u8", u8)
    dump.manifest.update({
        "pipeline": "tools/reference.py",
        "model": pipe.model_dir,
        "scheduler": {"name": scheduler, "config": pipe.scheduler_config},
        "timesteps": [float(x) for x in sched.timesteps],
        "sigmas": [] if getattr(sched, "sigmas", None) is None else [float(x) for x in sched.sigmas],
        "model_timesteps": model_ts,
        "request": {"prompt": prompt, "negative_prompt": negative_prompt, "steps": steps, "guidance": guidance,
                    "height": image.shape[2], "width": image.shape[3], "scheduler": scheduler,
                    "initial_latents": "supplied"},
    })
    return u8


def _cmd_generate(a):
    pipe = ref.Pipeline(a.model)
    latents = ref.load_safetensors(a.latents)
    if list(latents) != ["latents"]:
        raise SystemExit(f"{a.latents}: expected one tensor named 'latents', found {sorted(latents)}")
    lat = latents["latents"]
    if lat.shape[0] != 1:
        raise SystemExit(f"{a.latents}: a dump is of one job; got {lat.shape[0]} latents")
    dump = Dump(a.dump)
    dump_generate(pipe, a.prompt, a.negative_prompt, lat, a.steps, a.guidance, a.scheduler, dump)
    dump.flush()
    print(json.dumps({"dump": a.dump, "files": [f"{i:02d}-{s}.safetensors" for i, s in enumerate(dump.stages)]}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("noise", help="write Stagecraft's seeded noise as a latents file")
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--width", type=int, default=None, help="pixels (default: the VAE's sample_size)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--n", type=int, default=1, help="jobs: row i uses seed + i")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=_cmd_noise)
    p = sub.add_parser("generate", help="run the reference pipeline and write a stage dump")
    p.add_argument("--model", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--scheduler", default="flow_match_euler", choices=sorted(ref.SCHEDULERS))
    p.add_argument("--latents", required=True, help="safetensors with tensor `latents` [1,C,h,w]")
    p.add_argument("--dump", required=True, help="folder for the dump")
    p.set_defaults(fn=_cmd_generate)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    a.fn(a)


if __name__ == "__main__":
    main()
