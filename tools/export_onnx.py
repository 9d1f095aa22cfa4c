#!/usr/bin/python3
"""Exports a diffusers folder's text encoder, transformer and VAE decoder to ONNX with
torch.onnx.export, from tools/reference.py's modules (the PyTorch reference bench_realwidth
times), for tools/ort_bench.js (ONNX Runtime). Shapes are fixed to one benchmark case:

    export_onnx.py --model DIR --out DIR --height 256 --width 256 [--batch 2] [--text-len 77]

writes OUT/text_encoder.onnx   (input_ids, attention_mask: int64 [B, L]) -> last_hidden_state
       OUT/transformer.onnx    (hidden_states [B, 4, h, w], encoder_hidden_states [B, L, D],
                                timestep [B], encoder_attention_mask [B, L] f32) -> sample [B, 4, h, w]
                                (the learned-sigma half dropped, as the pipelines do)
       OUT/vae_decoder.onnx    (latents [1, 4, h, w], before / scaling_factor) -> sample [1, 3, H, W]
       OUT/export.json         what was exported, with the shapes

B is the classifier-free-guidance batch (2 for one job). Needs only torch (no onnx package).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402


class TextEncoder(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        return self.m(input_ids, attention_mask)


class Transformer(nn.Module):
    def __init__(self, m, in_channels):
        super().__init__()
        self.m = m
        self.in_channels = in_channels

    def forward(self, hidden_states, encoder_hidden_states, timestep, encoder_attention_mask):
        out = self.m(hidden_states, encoder_hidden_states, timestep, encoder_attention_mask=encoder_attention_mask)
        if self.m.out_channels == 2 * self.in_channels:
            out = out[:, :self.in_channels]
        return out


class VaeDecoder(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, latents):
        return self.m.decode_latents(latents)


def export(module, args, names_in, names_out, path, opset):
    t0 = time.perf_counter()
    tmp = path + ".tmp"
    with torch.no_grad():
        torch.onnx.export(module.eval(), args, tmp, input_names=names_in, output_names=names_out,
                          opset_version=opset, do_constant_folding=True)
    os.replace(tmp, path)
    return {"file": os.path.basename(path), "inputs": {n: list(a.shape) for n, a in zip(names_in, args)},
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--text-len", type=int, default=None, help="default: the tokenizer's model_max_length")
    ap.add_argument("--opset", type=int, default=14)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(2)

    tok = R.CLIPTokenizer(os.path.join(a.model, "tokenizer"))
    L = a.text_len or tok.model_max_length
    text = R.load_component(os.path.join(a.model, "text_encoder"), R.CLIPTextModel)
    dit = R.load_component(os.path.join(a.model, "transformer"), R.PixArtTransformer2DModel)
    vae = R.load_component(os.path.join(a.model, "vae"), R.AutoencoderKL)
    f = 2 ** (len(vae.config["block_out_channels"]) - 1)
    lc = vae.config["latent_channels"]
    h, w = a.height // f, a.width // f
    B = a.batch
    g = torch.Generator().manual_seed(0)
    done = {}
    ids = torch.randint(0, text.config["vocab_size"], (B, L), generator=g)
    amask = torch.ones(B, L, dtype=torch.int64)
    done["text_encoder"] = export(TextEncoder(text), (ids, amask), ["input_ids", "attention_mask"],
                                  ["last_hidden_state"], os.path.join(a.out, "text_encoder.onnx"), a.opset)
    cin = dit.config["in_channels"]
    args = (torch.randn(B, cin, h, w, generator=g), torch.randn(B, L, dit.config["caption_channels"], generator=g),
            torch.full((B,), 500.0), torch.ones(B, L))
    done["transformer"] = export(Transformer(dit, cin), args,
                                 ["hidden_states", "encoder_hidden_states", "timestep", "encoder_attention_mask"],
                                 ["sample"], os.path.join(a.out, "transformer.onnx"), a.opset)
    done["vae_decoder"] = export(VaeDecoder(vae), (torch.randn(1, lc, h, w, generator=g),), ["latents"], ["sample"],
                                 os.path.join(a.out, "vae_decoder.onnx"), a.opset)
    info = {"model": os.path.abspath(a.model), "height": a.height, "width": a.width, "batch": B, "text_len": L,
            "opset": a.opset, "torch": torch.__version__, "exported": done}
    with open(os.path.join(a.out, "export.json"), "w") as fp:
        json.dump(info, fp, indent=1)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
