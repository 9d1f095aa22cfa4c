#!/usr/bin/python3
"""Independent PyTorch reference of the three model architectures Stagecraft serves.

Written from the published definitions of transformers' CLIPTextModel and diffusers'
PixArtTransformer2DModel, AutoencoderKL, FlowMatchEulerDiscreteScheduler, DDIMScheduler and
DPMSolverMultistepScheduler, using exactly their parameter names and config.json keys, so that a
state dict saved here loads in those classes and the other way round. The C++ parity tests call
the CLI at the bottom; keep its interface stable.

Needs only torch and numpy (no transformers/diffusers/safetensors packages).

    reference.py random-model --preset tiny --seed 0 --out /tmp/m
    reference.py random-model --preset real-width --size 256 --seed 0 --out /tmp/rw
    reference.py run --model /tmp/m --component transformer --inputs in.safetensors --out out.safetensors
    reference.py tokenize --model models/tiny-shapes --prompt "a red circle"
    reference.py scheduler --model models/tiny-shapes --name dpm_2m --steps 20
    reference.py generate --model models/tiny-shapes --prompt "a red circle" --steps 20 --guidance 4 \
        --scheduler flow_match_euler --latents lat.safetensors --out img.safetensors [--bench] [--dump DIR]
    reference.py --threads 2 bench-stages --model /tmp/rw --inputs in.safetensors --out out.safetensors --reps 3
"""
from __future__ import annotations

import argparse
import html
import json
import math
import os
import re
import struct
import sys
import time
from functools import lru_cache

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DIFFUSERS_VERSION = "0.30.0"
TRANSFORMERS_VERSION = "4.44.0"

# ----------------------------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------------------------

_ST_DTYPES = {
    "F32": (torch.float32, np.float32), "F16": (torch.float16, np.float16),
    "F64": (torch.float64, np.float64), "I64": (torch.int64, np.int64),
    "I32": (torch.int32, np.int32), "I16": (torch.int16, np.int16), "I8": (torch.int8, np.int8),
    "U8": (torch.uint8, np.uint8), "BOOL": (torch.bool, np.bool_),
    "BF16": (torch.bfloat16, None),
}
_TORCH_TO_ST = {v[0]: k for k, v in _ST_DTYPES.items()}


def save_safetensors(tensors: dict, path: str, metadata: dict | None = None) -> None:
    """Writes tensors as safetensors: u64 LE header length, JSON header, packed LE data (sorted by name)."""
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _TORCH_TO_ST[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)  # keeps the data 8-byte aligned for mmap readers
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def load_safetensors(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        tdt, ndt = _ST_DTYPES[info["dtype"]]
        a, b = info["data_offsets"]
        buf = data[base + a:base + b]
        shape = info["shape"]
        if tdt == torch.bfloat16:
            arr = np.frombuffer(buf, dtype="<i2").copy().reshape(shape)
            out[name] = torch.from_numpy(arr).view(torch.bfloat16)
        else:
            arr = np.frombuffer(buf, dtype=np.dtype(ndt).newbyteorder("<")).astype(ndt).reshape(shape)
            out[name] = torch.from_numpy(arr.copy())
    return out


# ----------------------------------------------------------------------------------------------
# CLIPTextModel (transformers.models.clip.modeling_clip)
# ----------------------------------------------------------------------------------------------

CLIP_TEXT_DEFAULTS = dict(
    vocab_size=49408, hidden_size=512, intermediate_size=2048, projection_dim=512,
    num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77,
    hidden_act="quick_gelu", layer_norm_eps=1e-5, attention_dropout=0.0, initializer_range=0.02,
    initializer_factor=1.0, pad_token_id=1, bos_token_id=49406, eos_token_id=49407,
)


def _act(name: str):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name == "gelu":
        return lambda x: F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu-approximate", "gelu_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "silu" or name == "swish":
        return F.silu
    raise ValueError(f"unsupported activation {name!r}")


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.token_embedding = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.position_embedding = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])

    def forward(self, input_ids):
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        return self.token_embedding(input_ids) + self.position_embedding(pos)


class CLIPAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.num_heads = c["num_attention_heads"]
        self.head_dim = d // self.num_heads
        self.scale = self.head_dim ** -0.5
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x, mask):
        b, l, d = x.shape
        q = (self.q_proj(x) * self.scale).view(b, l, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, l, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, l, self.num_heads, self.head_dim).transpose(1, 2)
        w = q @ k.transpose(-1, -2) + mask
        w = torch.softmax(w, dim=-1)
        o = (w @ v).transpose(1, 2).reshape(b, l, d)
        return self.out_proj(o)


class CLIPMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.act = _act(c["hidden_act"])
        self.fc1 = nn.Linear(c["hidden_size"], c["intermediate_size"])
        self.fc2 = nn.Linear(c["intermediate_size"], c["hidden_size"])

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn = CLIPAttention(c)
        self.layer_norm1 = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.mlp = CLIPMLP(c)
        self.layer_norm2 = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(c) for _ in range(c["num_hidden_layers"])])


class CLIPTextTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(c)
        self.encoder = CLIPEncoder(c)
        self.final_layer_norm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])


class CLIPTextModel(nn.Module):
    """last_hidden_state = CLIPTextModel(input_ids, attention_mask).  Same compute as transformers:
    causal mask plus the padding mask, both as additive finfo.min, pre-LN layers, final LayerNorm."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = {**CLIP_TEXT_DEFAULTS, **config}
        self.text_model = CLIPTextTransformer(self.config)

    def forward(self, input_ids, attention_mask=None):
        tm = self.text_model
        x = tm.embeddings(input_ids)
        b, l = input_ids.shape
        neg = torch.finfo(x.dtype).min
        causal = torch.full((l, l), neg, dtype=x.dtype, device=x.device).triu(1)[None, None]
        mask = causal
        if attention_mask is not None:
            pad = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * neg
            mask = causal + pad  # transformers adds the two masks the same way
        for layer in tm.encoder.layers:
            x = layer(x, mask)
        return tm.final_layer_norm(x)

    def config_json(self):
        c = dict(self.config)
        c.update({"architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
                  "transformers_version": TRANSFORMERS_VERSION, "dropout": 0.0})
        return c


# ----------------------------------------------------------------------------------------------
# PixArtTransformer2DModel (diffusers.models.transformers.pixart_transformer_2d)
# ----------------------------------------------------------------------------------------------

PIXART_DEFAULTS = dict(
    num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
    dropout=0.0, norm_num_groups=32, cross_attention_dim=1152, attention_bias=True, sample_size=128,
    patch_size=2, activation_fn="gelu-approximate", num_embeds_ada_norm=1000, upcast_attention=False,
    norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None,
    use_additional_conditions=None, caption_channels=None, attention_type="default",
)


def get_timestep_embedding(timesteps, embedding_dim, flip_sin_to_cos=False, downscale_freq_shift=1.0,
                           scale=1.0, max_period=10000):
    half = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=timesteps.device)
    exponent = exponent / (half - downscale_freq_shift)
    emb = torch.exp(exponent)
    emb = timesteps[:, None].float() * emb[None, :]
    emb = scale * emb
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if embedding_dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


def get_2d_sincos_pos_embed(embed_dim, grid_size, base_size=16, interpolation_scale=1.0):
    """diffusers.models.embeddings.get_2d_sincos_pos_embed: first half of the channels encode the
    column (w) coordinate, second half the row (h); tokens in row-major (h, w) order."""
    if isinstance(grid_size, int):
        grid_size = (grid_size, grid_size)
    grid_h = np.arange(grid_size[0], dtype=np.float32) / (grid_size[0] / base_size) / interpolation_scale
    grid_w = np.arange(grid_size[1], dtype=np.float32) / (grid_size[1] / base_size) / interpolation_scale
    grid = np.meshgrid(grid_w, grid_h)
    grid = np.stack(grid, axis=0)

    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64)
        omega /= dim / 2.0
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb_h = one_d(embed_dim // 2, grid[0])
    emb_w = one_d(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1).astype(np.float32)


class PatchEmbed(nn.Module):
    def __init__(self, height, width, patch_size, in_channels, embed_dim, interpolation_scale):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size, bias=True)
        self.patch_size = patch_size
        self.height, self.width = height // patch_size, width // patch_size
        self.base_size = height // patch_size
        self.interpolation_scale = interpolation_scale
        pe = get_2d_sincos_pos_embed(embed_dim, int(((height // patch_size) * (width // patch_size)) ** 0.5),
                                     base_size=self.base_size, interpolation_scale=interpolation_scale)
        self.register_buffer("pos_embed", torch.from_numpy(pe)[None], persistent=False)

    def forward(self, latent):
        h, w = latent.shape[-2] // self.patch_size, latent.shape[-1] // self.patch_size
        x = self.proj(latent).flatten(2).transpose(1, 2)
        if (h, w) != (self.height, self.width):
            pe = torch.from_numpy(get_2d_sincos_pos_embed(x.shape[-1], (h, w), base_size=self.base_size,
                                                          interpolation_scale=self.interpolation_scale))[None]
        else:
            pe = self.pos_embed
        return (x + pe.to(x.device, x.dtype)).to(x.dtype)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels, time_embed_dim):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class PixArtAlphaCombinedTimestepSizeEmbeddings(nn.Module):
    def __init__(self, dim, size_emb_dim, use_additional_conditions):
        super().__init__()
        self.outdim = size_emb_dim
        self.timestep_embedder = TimestepEmbedding(256, dim)
        self.use_additional_conditions = use_additional_conditions
        if use_additional_conditions:
            self.resolution_embedder = TimestepEmbedding(256, size_emb_dim)
            self.aspect_ratio_embedder = TimestepEmbedding(256, size_emb_dim)

    def forward(self, timestep, resolution=None, aspect_ratio=None, batch_size=None, hidden_dtype=None):
        proj = get_timestep_embedding(timestep, 256, flip_sin_to_cos=True, downscale_freq_shift=0)
        emb = self.timestep_embedder(proj.to(hidden_dtype))
        if self.use_additional_conditions:
            r = get_timestep_embedding(resolution.flatten(), 256, True, 0)
            r = self.resolution_embedder(r.to(hidden_dtype)).reshape(batch_size, -1)
            a = get_timestep_embedding(aspect_ratio.flatten(), 256, True, 0)
            a = self.aspect_ratio_embedder(a.to(hidden_dtype)).reshape(batch_size, -1)
            emb = emb + torch.cat([r, a], dim=1)
        return emb


class AdaLayerNormSingle(nn.Module):
    def __init__(self, dim, use_additional_conditions=False):
        super().__init__()
        self.emb = PixArtAlphaCombinedTimestepSizeEmbeddings(dim, dim // 3, use_additional_conditions)
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, timestep, added_cond_kwargs, batch_size, hidden_dtype):
        e = self.emb(timestep, **(added_cond_kwargs or {}), batch_size=batch_size, hidden_dtype=hidden_dtype)
        return self.linear(F.silu(e)), e


class PixArtAlphaTextProjection(nn.Module):
    def __init__(self, in_features, hidden_size):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden_size)
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x):
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


class Attention(nn.Module):
    """diffusers Attention with AttnProcessor2_0 (to_q/to_k/to_v/to_out.0; optional group_norm)."""

    def __init__(self, query_dim, cross_attention_dim=None, heads=8, dim_head=64, bias=False, out_bias=True,
                 norm_num_groups=None, eps=1e-5, residual_connection=False):
        super().__init__()
        inner = heads * dim_head
        kv_dim = cross_attention_dim if cross_attention_dim is not None else query_dim
        self.heads = heads
        self.residual_connection = residual_connection
        self.group_norm = nn.GroupNorm(norm_num_groups, query_dim, eps=eps, affine=True) if norm_num_groups else None
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(kv_dim, inner, bias=bias)
        self.to_v = nn.Linear(kv_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Dropout(0.0)])

    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None):
        residual = hidden_states
        four_d = hidden_states.ndim == 4
        if four_d:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if self.group_norm is not None:
            hidden_states = self.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        bsz = hidden_states.shape[0]
        q = self.to_q(hidden_states)
        k = self.to_k(ctx)
        v = self.to_v(ctx)
        hd = q.shape[-1] // self.heads
        q = q.view(bsz, -1, self.heads, hd).transpose(1, 2)
        k = k.view(bsz, -1, self.heads, hd).transpose(1, 2)
        v = v.view(bsz, -1, self.heads, hd).transpose(1, 2)
        w_ = (q @ k.transpose(-1, -2)) * (hd ** -0.5)
        if attention_mask is not None:
            w_ = w_ + attention_mask.view(bsz, 1, -1, attention_mask.shape[-1])
        o = torch.softmax(w_.float(), dim=-1).to(q.dtype) @ v
        o = o.transpose(1, 2).reshape(bsz, -1, self.heads * hd)
        o = self.to_out[0](o)
        if four_d:
            o = o.transpose(-1, -2).reshape(b, c, h, w)
        if self.residual_connection:
            o = o + residual
        return o


class GELUProj(nn.Module):
    def __init__(self, dim_in, dim_out, approximate="none"):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(self.proj(x), approximate=self.approximate)


class FeedForward(nn.Module):
    def __init__(self, dim, activation_fn="gelu-approximate", mult=4):
        super().__init__()
        inner = dim * mult
        if activation_fn == "gelu-approximate":
            act = GELUProj(dim, inner, "tanh")
        elif activation_fn == "gelu":
            act = GELUProj(dim, inner, "none")
        else:
            raise ValueError(f"unsupported activation_fn {activation_fn!r}")
        self.net = nn.ModuleList([act, nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, x):
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    """BasicTransformerBlock with norm_type='ada_norm_single' (PixArt): no norm before the
    cross-attention, norm2 before the feed-forward, six modulations from scale_shift_table + t."""

    def __init__(self, dim, heads, head_dim, cross_attention_dim, activation_fn, attention_bias, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=eps)
        self.attn1 = Attention(dim, None, heads, head_dim, bias=attention_bias)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=eps)
        self.attn2 = Attention(dim, cross_attention_dim, heads, head_dim, bias=attention_bias)
        self.ff = FeedForward(dim, activation_fn)
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim ** 0.5)

    def forward(self, x, encoder_hidden_states, encoder_attention_mask, timestep):
        b = x.shape[0]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + timestep.reshape(b, 6, -1)).chunk(6, dim=1)
        n = self.norm1(x) * (1 + scale_msa) + shift_msa
        x = gate_msa * self.attn1(n) + x
        x = self.attn2(x, encoder_hidden_states, encoder_attention_mask) + x
        n = self.norm2(x) * (1 + scale_mlp) + shift_mlp
        return gate_mlp * self.ff(n) + x


class PixArtTransformer2DModel(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        c = {**PIXART_DEFAULTS, **config}
        if c["use_additional_conditions"] is None:
            c["use_additional_conditions"] = c["sample_size"] == 128
        self.config = c
        d = c["num_attention_heads"] * c["attention_head_dim"]
        self.inner_dim = d
        self.out_channels = c["in_channels"] if c["out_channels"] is None else c["out_channels"]
        interp = c["interpolation_scale"] if c["interpolation_scale"] is not None else max(c["sample_size"] // 64, 1)
        self.pos_embed = PatchEmbed(c["sample_size"], c["sample_size"], c["patch_size"], c["in_channels"], d, interp)
        self.transformer_blocks = nn.ModuleList([
            BasicTransformerBlock(d, c["num_attention_heads"], c["attention_head_dim"], c["cross_attention_dim"],
                                  c["activation_fn"], c["attention_bias"], c["norm_eps"])
            for _ in range(c["num_layers"])])
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.randn(2, d) / d ** 0.5)
        self.proj_out = nn.Linear(d, c["patch_size"] ** 2 * self.out_channels)
        self.adaln_single = AdaLayerNormSingle(d, use_additional_conditions=c["use_additional_conditions"])
        self.caption_projection = (PixArtAlphaTextProjection(c["caption_channels"], d)
                                   if c["caption_channels"] is not None else None)

    def forward(self, hidden_states, encoder_hidden_states, timestep, encoder_attention_mask=None,
                added_cond_kwargs=None):
        c = self.config
        if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
            encoder_attention_mask = ((1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0).unsqueeze(1)
        b = hidden_states.shape[0]
        p = c["patch_size"]
        h, w = hidden_states.shape[-2] // p, hidden_states.shape[-1] // p
        x = self.pos_embed(hidden_states)
        if c["use_additional_conditions"] and added_cond_kwargs is None:
            raise ValueError("this transformer needs added_cond_kwargs {resolution, aspect_ratio}")
        t, embedded_t = self.adaln_single(timestep, added_cond_kwargs, b, x.dtype)
        if self.caption_projection is not None:
            encoder_hidden_states = self.caption_projection(encoder_hidden_states).view(b, -1, x.shape[-1])
        for blk in self.transformer_blocks:
            x = blk(x, encoder_hidden_states, encoder_attention_mask, t)
        shift, scale = (self.scale_shift_table[None] + embedded_t[:, None]).chunk(2, dim=1)
        x = self.norm_out(x) * (1 + scale) + shift
        x = self.proj_out(x)
        x = x.reshape(-1, h, w, p, p, self.out_channels)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(-1, self.out_channels, h * p, w * p)

    def config_json(self):
        c = dict(self.config)
        c.update({"_class_name": "PixArtTransformer2DModel", "_diffusers_version": DIFFUSERS_VERSION})
        return c


# ----------------------------------------------------------------------------------------------
# AutoencoderKL (diffusers.models.autoencoders.autoencoder_kl / vae.py)
# ----------------------------------------------------------------------------------------------

VAE_DEFAULTS = dict(
    in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"], up_block_types=["UpDecoderBlock2D"],
    block_out_channels=[64], layers_per_block=1, act_fn="silu", latent_channels=4, norm_num_groups=32,
    sample_size=32, scaling_factor=0.18215, shift_factor=None, latents_mean=None, latents_std=None,
    force_upcast=True, use_quant_conv=True, use_post_quant_conv=True, mid_block_add_attention=True,
)


class ResnetBlock2D(nn.Module):
    def __init__(self, in_channels, out_channels, groups, eps=1e-6, act="silu"):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps, affine=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.act = _act(act)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1, 1, 0) if in_channels != out_channels else None

    def forward(self, x):
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.act(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Downsample2D(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample2D(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownEncoderBlock2D(nn.Module):
    def __init__(self, num_layers, cin, cout, groups, add_downsample, act):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, groups, act=act)
                                      for i in range(num_layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(cout)]) if add_downsample else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock2D(nn.Module):
    def __init__(self, num_layers, cin, cout, groups, add_upsample, act):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if i == 0 else cout, cout, groups, act=act)
                                      for i in range(num_layers)])
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if add_upsample else None

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class UNetMidBlock2D(nn.Module):
    def __init__(self, channels, groups, act, add_attention=True):
        super().__init__()
        self.attentions = nn.ModuleList([Attention(channels, None, heads=1, dim_head=channels, bias=True,
                                                   norm_num_groups=groups, eps=1e-6, residual_connection=True)]
                                        if add_attention else [])
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, groups, act=act) for _ in range(2)])

    def forward(self, x):
        x = self.resnets[0](x)
        for a in self.attentions:
            x = a(x)
        return self.resnets[1](x)


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        boc = c["block_out_channels"]
        g = c["norm_num_groups"]
        self.conv_in = nn.Conv2d(c["in_channels"], boc[0], 3, 1, 1)
        self.down_blocks = nn.ModuleList()
        out = boc[0]
        for i, bt in enumerate(c["down_block_types"]):
            assert bt == "DownEncoderBlock2D", bt
            prev, out = out, boc[i]
            self.down_blocks.append(DownEncoderBlock2D(c["layers_per_block"], prev, out, g,
                                                       i != len(boc) - 1, c["act_fn"]))
        self.mid_block = UNetMidBlock2D(boc[-1], g, c["act_fn"], c["mid_block_add_attention"])
        self.conv_norm_out = nn.GroupNorm(g, boc[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(boc[-1], 2 * c["latent_channels"], 3, padding=1)
        self.act = _act(c["act_fn"])

    def forward(self, x):
        x = self.conv_in(x)
        for b in self.down_blocks:
            x = b(x)
        x = self.mid_block(x)
        return self.conv_out(self.act(self.conv_norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        boc = c["block_out_channels"]
        g = c["norm_num_groups"]
        self.conv_in = nn.Conv2d(c["latent_channels"], boc[-1], 3, 1, 1)
        self.mid_block = UNetMidBlock2D(boc[-1], g, c["act_fn"], c["mid_block_add_attention"])
        self.up_blocks = nn.ModuleList()
        rev = list(reversed(boc))
        out = rev[0]
        for i, bt in enumerate(c["up_block_types"]):
            assert bt == "UpDecoderBlock2D", bt
            prev, out = out, rev[i]
            self.up_blocks.append(UpDecoderBlock2D(c["layers_per_block"] + 1, prev, out, g,
                                                   i != len(boc) - 1, c["act_fn"]))
        self.conv_norm_out = nn.GroupNorm(g, boc[0], eps=1e-6)
        self.conv_out = nn.Conv2d(boc[0], c["out_channels"], 3, padding=1)
        self.act = _act(c["act_fn"])

    def forward(self, z):
        x = self.conv_in(z)
        x = self.mid_block(x)
        for b in self.up_blocks:
            x = b(x)
        return self.conv_out(self.act(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        c = {**VAE_DEFAULTS, **config}
        self.config = c
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        lc = c["latent_channels"]
        self.quant_conv = nn.Conv2d(2 * lc, 2 * lc, 1) if c["use_quant_conv"] else None
        self.post_quant_conv = nn.Conv2d(lc, lc, 1) if c["use_post_quant_conv"] else None

    def encode(self, x):
        """Returns (mean, logvar) of the diagonal Gaussian posterior (logvar clamped as diffusers)."""
        h = self.encoder(x)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z):
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def decode_latents(self, latents):
        """What a pipeline does: z = latents / scaling_factor + shift_factor, then decode."""
        z = latents / self.config["scaling_factor"]
        if self.config.get("shift_factor") is not None:
            z = z + self.config["shift_factor"]
        return self.decode(z)

    def config_json(self):
        c = dict(self.config)
        c.update({"_class_name": "AutoencoderKL", "_diffusers_version": DIFFUSERS_VERSION})
        return c


# ----------------------------------------------------------------------------------------------
# Schedulers (diffusers semantics; only the deterministic paths a serving engine uses)
# ----------------------------------------------------------------------------------------------

def _betas(cfg):
    n = cfg["num_train_timesteps"]
    if cfg.get("trained_betas") is not None:
        return torch.tensor(cfg["trained_betas"], dtype=torch.float32)
    sched = cfg["beta_schedule"]
    if sched == "linear":
        return torch.linspace(cfg["beta_start"], cfg["beta_end"], n, dtype=torch.float32)
    if sched == "scaled_linear":
        return torch.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n, dtype=torch.float32) ** 2
    if sched == "squaredcos_cap_v2":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)], dtype=torch.float32)
    raise ValueError(f"unsupported beta_schedule {sched!r}")


def _from_config(defaults, cfg):
    """diffusers' from_config: keys the class knows are taken, the rest are ignored."""
    out = dict(defaults)
    for k, v in (cfg or {}).items():
        if k in defaults:
            out[k] = v
    return out


def flow_shift(sigma, shift):
    """FlowMatchEulerDiscreteScheduler's static shift of the noise levels towards 1:
    sigma' = shift sigma / (1 + (shift - 1) sigma)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


class FlowMatchEulerDiscreteScheduler:
    DEFAULTS = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False, base_shift=0.5,
                    max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096, invert_sigmas=False,
                    shift_terminal=None, use_karras_sigmas=False, use_exponential_sigmas=False,
                    use_beta_sigmas=False)

    def __init__(self, config=None):
        self.config = _from_config(self.DEFAULTS, config)
        c = self.config
        if c["use_dynamic_shifting"] or c["invert_sigmas"] or c["shift_terminal"] or c["use_karras_sigmas"] \
                or c["use_exponential_sigmas"] or c["use_beta_sigmas"]:
            raise ValueError("FlowMatchEulerDiscreteScheduler: only the static-shift schedule is supported here")
        n = c["num_train_timesteps"]
        ts = np.linspace(1, n, n, dtype=np.float32)[::-1].copy()
        sig = torch.from_numpy(ts).to(torch.float32) / n
        sig = flow_shift(sig, c["shift"])
        self.sigma_min = sig[-1].item()
        self.sigma_max = sig[0].item()
        self.init_noise_sigma = 1.0

    def set_timesteps(self, num_inference_steps):
        c = self.config
        n = c["num_train_timesteps"]
        ts = np.linspace(self.sigma_max * n, self.sigma_min * n, num_inference_steps)
        sig = ts / n
        sig = flow_shift(sig, c["shift"])
        sig = torch.from_numpy(sig).to(torch.float32)
        self.timesteps = sig * n
        self.sigmas = torch.cat([sig, torch.zeros(1)])
        self.step_index = 0

    def scale_model_input(self, sample, t):
        return sample

    def step(self, model_output, timestep, sample):
        sample = sample.to(torch.float32)
        s, s_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
        prev = sample + (s_next - s) * model_output
        self.step_index += 1
        return prev.to(model_output.dtype)


class DDIMScheduler:
    DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                    trained_betas=None, clip_sample=True, set_alpha_to_one=True, steps_offset=0,
                    prediction_type="epsilon", thresholding=False, dynamic_thresholding_ratio=0.995,
                    clip_sample_range=1.0, sample_max_value=1.0, timestep_spacing="leading",
                    rescale_betas_zero_snr=False)

    def __init__(self, config=None):
        self.config = _from_config(self.DEFAULTS, config)
        c = self.config
        if c["rescale_betas_zero_snr"] or c["thresholding"]:
            raise ValueError("DDIMScheduler: rescale_betas_zero_snr/thresholding are not supported here")
        self.betas = _betas(c)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        self.final_alpha_cumprod = torch.tensor(1.0) if c["set_alpha_to_one"] else self.alphas_cumprod[0]
        self.init_noise_sigma = 1.0

    def set_timesteps(self, num_inference_steps):
        c = self.config
        n = c["num_train_timesteps"]
        self.num_inference_steps = num_inference_steps
        sp = c["timestep_spacing"]
        if sp == "linspace":
            ts = np.linspace(0, n - 1, num_inference_steps).round()[::-1].copy().astype(np.int64)
        elif sp == "leading":
            r = n // num_inference_steps
            ts = (np.arange(0, num_inference_steps) * r).round()[::-1].copy().astype(np.int64)
            ts += c["steps_offset"]
        elif sp == "trailing":
            r = n / num_inference_steps
            ts = np.round(np.arange(n, 0, -r)).astype(np.int64) - 1
        else:
            raise ValueError(f"unsupported timestep_spacing {sp!r}")
        self.timesteps = torch.from_numpy(ts)
        self.sigmas = None  # DDIM keeps no sigma table

    def scale_model_input(self, sample, t):
        return sample

    def step(self, model_output, timestep, sample):
        c = self.config
        t = int(timestep)
        prev_t = t - c["num_train_timesteps"] // self.num_inference_steps
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        b_t = 1 - a_t
        pt = c["prediction_type"]
        if pt == "epsilon":
            x0 = (sample - b_t ** 0.5 * model_output) / a_t ** 0.5
            eps = model_output
        elif pt == "sample":
            x0 = model_output
            eps = (sample - a_t ** 0.5 * x0) / b_t ** 0.5
        elif pt == "v_prediction":
            x0 = a_t ** 0.5 * sample - b_t ** 0.5 * model_output
            eps = a_t ** 0.5 * model_output + b_t ** 0.5 * sample
        else:
            raise ValueError(f"prediction_type given as {pt} must be one of `epsilon`, `sample`, or `v_prediction`")
        if c["clip_sample"]:
            x0 = x0.clamp(-c["clip_sample_range"], c["clip_sample_range"])
        return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps


class DPMSolverMultistepScheduler:
    DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                    trained_betas=None, solver_order=2, prediction_type="epsilon", thresholding=False,
                    dynamic_thresholding_ratio=0.995, sample_max_value=1.0, algorithm_type="dpmsolver++",
                    solver_type="midpoint", lower_order_final=True, euler_at_final=False,
                    use_karras_sigmas=False, use_exponential_sigmas=False, use_beta_sigmas=False,
                    use_lu_lambdas=False, use_flow_sigmas=False, flow_shift=1.0, final_sigmas_type="zero",
                    lambda_min_clipped=-float("inf"), variance_type=None, timestep_spacing="linspace",
                    steps_offset=0, rescale_betas_zero_snr=False)

    def __init__(self, config=None):
        self.config = _from_config(self.DEFAULTS, config)
        c = self.config
        if c["algorithm_type"] != "dpmsolver++" or c["solver_order"] != 2 or c["thresholding"] \
                or c["use_karras_sigmas"] or c["use_exponential_sigmas"] or c["use_beta_sigmas"] \
                or c["use_lu_lambdas"] or c["rescale_betas_zero_snr"]:
            raise ValueError("DPMSolverMultistepScheduler: only dpmsolver++ order 2 (2M) without sigma "
                             "reshaping is supported here")
        self.betas = _betas(c)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        self.alpha_t = torch.sqrt(self.alphas_cumprod)
        self.sigma_t = torch.sqrt(1 - self.alphas_cumprod)
        self.lambda_t = torch.log(self.alpha_t) - torch.log(self.sigma_t)
        self.init_noise_sigma = 1.0

    def set_timesteps(self, num_inference_steps):
        c = self.config
        n = c["num_train_timesteps"]
        clipped_idx = torch.searchsorted(torch.flip(self.lambda_t, [0]), c["lambda_min_clipped"])
        last = int((n - clipped_idx).numpy().item())
        sp = c["timestep_spacing"]
        if sp == "linspace":
            ts = np.linspace(0, last - 1, num_inference_steps + 1).round()[::-1][:-1].copy().astype(np.int64)
        elif sp == "leading":
            r = last // (num_inference_steps + 1)
            ts = (np.arange(0, num_inference_steps + 1) * r).round()[::-1][:-1].copy().astype(np.int64)
            ts += c["steps_offset"]
        elif sp == "trailing":
            r = n / num_inference_steps
            ts = np.arange(last, 0, -r).round().copy().astype(np.int64) - 1
        else:
            raise ValueError(f"unsupported timestep_spacing {sp!r}")
        sig = np.array(((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5)
        if c["use_flow_sigmas"]:
            al = np.linspace(1, 1 / n, num_inference_steps + 1)
            s = 1.0 - al
            fs = c["flow_shift"]
            s = np.flip(fs * s / (1 + (fs - 1) * s))[:-1].copy()
            ts = (s * n).copy()
            sig = s
        else:
            sig = np.interp(ts, np.arange(0, len(sig)), sig)
        if c["final_sigmas_type"] == "sigma_min":
            last_sig = float(((1 - self.alphas_cumprod[0]) / self.alphas_cumprod[0]) ** 0.5)
        elif c["final_sigmas_type"] == "zero":
            last_sig = 0
        else:
            raise ValueError(f"final_sigmas_type must be one of 'zero' or 'sigma_min', got {c['final_sigmas_type']}")
        self.sigmas = torch.from_numpy(np.concatenate([sig, [last_sig]]).astype(np.float32))
        self.timesteps = torch.from_numpy(np.asarray(ts)).to(torch.int64)
        self.num_inference_steps = len(ts)
        self.model_outputs = [None, None]
        self.lower_order_nums = 0
        self.step_index = 0

    def scale_model_input(self, sample, t):
        return sample

    def _alpha_sigma(self, sigma):
        if self.config["use_flow_sigmas"]:
            return 1 - sigma, sigma
        a = 1 / ((sigma ** 2 + 1) ** 0.5)
        return a, sigma * a

    def _convert(self, model_output, sample):
        c = self.config
        pt = c["prediction_type"]
        sigma = self.sigmas[self.step_index]
        if pt == "epsilon":
            if c["variance_type"] in ("learned", "learned_range"):
                model_output = model_output[:, :3]
            a, s = self._alpha_sigma(sigma)
            return (sample - s * model_output) / a
        if pt == "sample":
            return model_output
        if pt == "v_prediction":
            a, s = self._alpha_sigma(sigma)
            return a * sample - s * model_output
        if pt == "flow_prediction":
            return sample - sigma * model_output
        raise ValueError(f"prediction_type given as {pt} must be one of `epsilon`, `sample`, "
                         "`v_prediction`, or `flow_prediction`")

    def step(self, model_output, timestep, sample):
        c = self.config
        i = self.step_index
        nts = len(self.timesteps)
        lower_final = (i == nts - 1) and (c["euler_at_final"] or (c["lower_order_final"] and nts < 15)
                                          or c["final_sigmas_type"] == "zero")
        lower_second = (i == nts - 2) and c["lower_order_final"] and nts < 15
        m = self._convert(model_output, sample)
        self.model_outputs[0] = self.model_outputs[1]
        self.model_outputs[1] = m
        sample = sample.to(torch.float32)
        a_t, s_t = self._alpha_sigma(self.sigmas[i + 1])
        a_s0, s_s0 = self._alpha_sigma(self.sigmas[i])
        lam_t = torch.log(a_t) - torch.log(s_t)
        lam_s0 = torch.log(a_s0) - torch.log(s_s0)
        h = lam_t - lam_s0
        if self.lower_order_nums < 1 or lower_final:
            prev = (s_t / s_s0) * sample - (a_t * (torch.exp(-h) - 1.0)) * m
        else:
            del lower_second  # order 2 is the highest here, so "lower order second" changes nothing
            a_s1, s_s1 = self._alpha_sigma(self.sigmas[i - 1])
            lam_s1 = torch.log(a_s1) - torch.log(s_s1)
            m0, m1 = self.model_outputs[1], self.model_outputs[0]
            r0 = (lam_s0 - lam_s1) / h
            d0, d1 = m0, (1.0 / r0) * (m0 - m1)
            if c["solver_type"] == "midpoint":
                prev = (s_t / s_s0) * sample - (a_t * (torch.exp(-h) - 1.0)) * d0 \
                    - 0.5 * (a_t * (torch.exp(-h) - 1.0)) * d1
            else:
                prev = (s_t / s_s0) * sample - (a_t * (torch.exp(-h) - 1.0)) * d0 \
                    + (a_t * ((torch.exp(-h) - 1.0) / h + 1.0)) * d1
        if self.lower_order_nums < 2:
            self.lower_order_nums += 1
        self.step_index += 1
        return prev.to(m.dtype)


SCHEDULERS = {"flow_match_euler": FlowMatchEulerDiscreteScheduler, "ddim": DDIMScheduler,
              "dpm_2m": DPMSolverMultistepScheduler}


def make_scheduler(name: str, model_scheduler_config: dict | None):
    """Builds scheduler `name` from the model's scheduler_config.json the way diffusers'
    `Cls.from_config(pipe.scheduler.config)` does (known keys carried over, others defaulted)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; use one of {sorted(SCHEDULERS)}")
    return SCHEDULERS[name](model_scheduler_config)


# ----------------------------------------------------------------------------------------------
# CLIP BPE tokenizer (transformers' CLIPTokenizer, slow path)
# ----------------------------------------------------------------------------------------------

@lru_cache()
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


# CLIP's pattern uses \p{L} / \p{N}; without the `regex` package, [^\W\d_] is "a letter" and \d "a digit".
_CLIP_PAT = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+""",
                       re.IGNORECASE)


def clip_clean(text: str) -> str:
    """basic_clean (html unescape twice, strip) + whitespace_clean + lower, as CLIP (ftfy not applied)."""
    text = html.unescape(html.unescape(text)).strip()
    text = re.sub(r"\s+", " ", text).strip()
    return text.lower()


class CLIPTokenizer:
    def __init__(self, folder: str):
        with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
            self.encoder = json.load(f)
        with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
            merges = f.read().strip().split("\n")[1:49152 - 256 - 2 + 1]
        self.bpe_ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        cfg = {}
        p = os.path.join(folder, "tokenizer_config.json")
        if os.path.exists(p):
            with open(p) as f:
                cfg = json.load(f)

        def tok(v, default):
            if isinstance(v, dict):
                v = v.get("content", default)
            return v or default
        self.bos = tok(cfg.get("bos_token"), "<|startoftext|>")
        self.eos = tok(cfg.get("eos_token"), "<|endoftext|>")
        self.pad = tok(cfg.get("pad_token"), "<|endoftext|>")
        self.unk = tok(cfg.get("unk_token"), "<|endoftext|>")
        self.model_max_length = int(cfg.get("model_max_length", 77))
        self.byte_encoder = bytes_to_unicode()
        self.cache = {self.bos: self.bos, self.eos: self.eos}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = set(zip(word, word[1:]))
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new.extend(word[i:])
                    break
                new.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
            if len(word) == 1:
                break
            pairs = set(zip(word, word[1:]))
        out = " ".join(word)
        self.cache[token] = out
        return out

    def tokenize(self, text):
        toks = []
        for t in _CLIP_PAT.findall(clip_clean(text)):
            t = "".join(self.byte_encoder[b] for b in t.encode("utf-8"))
            toks.extend(self.bpe(t).split(" "))
        return toks

    def __call__(self, text, max_length=None):
        """padding='max_length', truncation=True: [bos] tokens[:L-2] [eos] [pad]*."""
        L = max_length or self.model_max_length
        unk = self.encoder[self.unk]
        ids = [self.encoder.get(t, unk) for t in self.tokenize(text)][:L - 2]
        ids = [self.encoder[self.bos]] + ids + [self.encoder[self.eos]]
        mask = [1] * len(ids)
        ids += [self.encoder[self.pad]] * (L - len(ids))
        mask += [0] * (L - len(mask))
        return {"input_ids": ids, "attention_mask": mask}


def build_clip_vocab(words, folder, model_max_length=16):
    """Writes CLIP-format tokenizer files whose merges make every word in `words` one token.
    Merges are learned the classic way (most frequent adjacent pair first, ties by first
    appearance), which guarantees that applying them by rank re-segments each word to itself."""
    os.makedirs(folder, exist_ok=True)
    b2u = bytes_to_unicode()
    words = sorted(set(w.lower() for w in words))
    segs = {w: [b2u[b] for b in w.encode("utf-8")] for w in words}
    for w in words:
        segs[w][-1] = segs[w][-1] + "</w>"
    merges = []
    while True:
        counts = {}
        order = []
        for w in words:
            s = segs[w]
            for p in zip(s, s[1:]):
                if p not in counts:
                    order.append(p)
                counts[p] = counts.get(p, 0) + 1
        if not counts:
            break
        best = max(order, key=lambda p: (counts[p], -order.index(p)))
        merges.append(best)
        for w in words:
            s = segs[w]
            out, i = [], 0
            while i < len(s):
                if i < len(s) - 1 and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            segs[w] = out
    vocab = list(b2u.values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    enc = {v: i for i, v in enumerate(vocab)}
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(enc, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>"}
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    cfg = dict(special, tokenizer_class="CLIPTokenizer", model_max_length=model_max_length,
               do_lower_case=True, errors="replace", add_prefix_space=False, clean_up_tokenization_spaces=True)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tok = CLIPTokenizer(folder)
    for w in words:
        assert tok.tokenize(w) == [w + "</w>"], (w, tok.tokenize(w))
    return enc


# ----------------------------------------------------------------------------------------------
# diffusers folder layout
# ----------------------------------------------------------------------------------------------

def _write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def save_component(model: nn.Module, folder: str, dtype=torch.float32, weight_name=None):
    """Writes config.json + the safetensors state dict (diffusers names it
    diffusion_pytorch_model.safetensors, transformers model.safetensors)."""
    os.makedirs(folder, exist_ok=True)
    cfg = model.config_json()
    is_hf = isinstance(model, CLIPTextModel)
    cfg["torch_dtype"] = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype]
    if not is_hf:
        cfg.pop("torch_dtype")
    _write_json(os.path.join(folder, "config.json"), cfg)
    sd = {k: v.to(dtype) for k, v in model.state_dict().items()}
    name = weight_name or ("model.safetensors" if is_hf else "diffusion_pytorch_model.safetensors")
    save_safetensors(sd, os.path.join(folder, name), metadata={"format": "pt"})


def _load_config(folder):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k not in
            ("architectures", "model_type", "transformers_version", "torch_dtype", "dropout")}


def load_component(folder: str, cls, dtype=torch.float32):
    cfg = _load_config(folder)
    model = cls(cfg)
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            sd = load_safetensors(p)
            break
    else:
        raise FileNotFoundError(f"no safetensors weights in {folder}")
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder}: missing {missing[:5]} unexpected {unexpected[:5]}")
    return model.to(dtype).eval()


def write_model_index(folder, components, pipeline_class="PixArtAlphaPipeline"):
    idx = {"_class_name": pipeline_class, "_diffusers_version": DIFFUSERS_VERSION}
    lib = {"text_encoder": ("transformers", "CLIPTextModel"), "tokenizer": ("transformers", "CLIPTokenizer"),
           "transformer": ("diffusers", "PixArtTransformer2DModel"), "vae": ("diffusers", "AutoencoderKL"),
           "scheduler": ("diffusers", "FlowMatchEulerDiscreteScheduler")}
    for c in components:
        idx[c] = list(lib[c])
    sp = os.path.join(folder, "scheduler", "scheduler_config.json")
    if "scheduler" in components and os.path.exists(sp):
        with open(sp) as f:
            idx["scheduler"] = ["diffusers", json.load(f)["_class_name"]]
    _write_json(os.path.join(folder, "model_index.json"), idx)


def load_scheduler_config(model_dir):
    p = os.path.join(model_dir, "scheduler", "scheduler_config.json")
    if not os.path.exists(p):
        return {}
    with open(p) as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------------
# Pipeline (what PixArtAlphaPipeline does, with a CLIP text encoder; f32 on the CPU)
# ----------------------------------------------------------------------------------------------

class Pipeline:
    """Text -> image with the three components of a diffusers folder.

    Conditioning follows PixArt: the tokenizer's attention mask goes to the text encoder and, as
    encoder_attention_mask, to the transformer; classifier-free guidance batches [uncond, cond]
    and mixes uncond + g * (cond - uncond); a learned-sigma half is dropped before the scheduler."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.tokenizer = CLIPTokenizer(os.path.join(model_dir, "tokenizer"))
        self.text_encoder = load_component(os.path.join(model_dir, "text_encoder"), CLIPTextModel)
        self.transformer = load_component(os.path.join(model_dir, "transformer"), PixArtTransformer2DModel)
        self.vae = load_component(os.path.join(model_dir, "vae"), AutoencoderKL)
        self.scheduler_config = load_scheduler_config(model_dir)

    @torch.no_grad()
    def encode_prompt(self, prompts):
        toks = [self.tokenizer(p) for p in prompts]
        ids = torch.tensor([t["input_ids"] for t in toks], dtype=torch.int64)
        mask = torch.tensor([t["attention_mask"] for t in toks], dtype=torch.int64)
        return self.text_encoder(ids, mask), mask

    @torch.no_grad()
    def denoise(self, latents, emb, mask, neg_emb, neg_mask, steps, guidance, scheduler):
        sched = make_scheduler(scheduler, self.scheduler_config)
        sched.set_timesteps(steps)
        latents = latents * sched.init_noise_sigma
        cfg = guidance > 1.0
        ctx = torch.cat([neg_emb, emb]) if cfg else emb
        cmask = torch.cat([neg_mask, mask]) if cfg else mask
        lc = latents.shape[1]
        for t in sched.timesteps:
            inp = torch.cat([latents, latents]) if cfg else latents
            inp = sched.scale_model_input(inp, t)
            tt = t.reshape(1).to(torch.float32).expand(inp.shape[0])
            out = self.transformer(inp, ctx, tt, encoder_attention_mask=cmask)
            if self.transformer.out_channels // 2 == lc:
                out = out.chunk(2, dim=1)[0]
            if cfg:
                u, c = out.chunk(2)
                out = u + guidance * (c - u)
            latents = sched.step(out, t, latents)
        return latents

    @torch.no_grad()
    def __call__(self, prompt, latents, steps=20, guidance=4.0, scheduler="flow_match_euler",
                 negative_prompt="", timings=None):
        b = latents.shape[0]
        prompts = [prompt] * b if isinstance(prompt, str) else list(prompt)
        if len(prompts) != b:
            raise ValueError(f"{len(prompts)} prompts for {b} latents; give one prompt or one per latent")
        t0 = time.perf_counter()
        emb, mask = self.encode_prompt(prompts)
        neg_emb, neg_mask = self.encode_prompt([negative_prompt] * b)
        t1 = time.perf_counter()
        lat = self.denoise(latents.float(), emb, mask, neg_emb, neg_mask, steps, guidance, scheduler)
        t2 = time.perf_counter()
        image = self.vae.decode_latents(lat)
        t3 = time.perf_counter()
        u8 = image_to_uint8(image)
        t4 = time.perf_counter()
        if timings is not None:
            timings.append({"text_encoder": (t1 - t0) * 1e3, "denoise": (t2 - t1) * 1e3,
                            "vae_decoder": (t3 - t2) * 1e3, "postprocess": (t4 - t3) * 1e3,
                            "total": (t4 - t0) * 1e3})
        return image, u8


def image_to_uint8(image):
    """The post-processing stage: decoded images in [-1, 1] ([B, 3, H, W]) to uint8 [B, H, W, 3]."""
    return ((image / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def latent_shape(model_dir, height=None, width=None):
    """[C, h, w] of the initial latents for an image of height x width (default: the VAE's sample_size)."""
    vae_cfg = _load_config(os.path.join(model_dir, "vae"))
    f = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    h = height or vae_cfg.get("sample_size", 64)
    w = width or vae_cfg.get("sample_size", 64)
    return [vae_cfg.get("latent_channels", 4), h // f, w // f]


# ----------------------------------------------------------------------------------------------
# Random models for parity tests
# ----------------------------------------------------------------------------------------------

GRAMMAR_WORDS = ("a in the on background red green blue yellow white black purple orange circle square "
                 "triangle center top left right bottom").split()


def randomize(model: nn.Module, seed: int):
    """Non-trivial random weights everywhere (also where diffusers zero-initialises), so that a
    parity test exercises every parameter: weights ~ N(0, 1/fan_in), biases ~ N(0, 0.02^2),
    norm scales ~ 1 + N(0, 0.1^2), embeddings and modulation tables ~ N(0, 0.1^2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scale_shift_table"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif isinstance(_owner(model, name), (nn.LayerNorm, nn.GroupNorm)):
                if name.endswith("weight"):
                    p.copy_(1 + torch.randn(p.shape, generator=g) * 0.1)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif isinstance(_owner(model, name), nn.Embedding):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / math.sqrt(fan_in)))
    return model


def _owner(model, pname):
    mod = model
    for part in pname.split(".")[:-1]:
        mod = getattr(mod, part) if not part.isdigit() else mod[int(part)]
    return mod


def write_random_model(preset: str, seed: int, out: str, dtype=torch.float32, size: int = 256):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(seed)
    if preset == "tiny":
        build_clip_vocab(GRAMMAR_WORDS, os.path.join(out, "tokenizer"), model_max_length=16)
        tok = CLIPTokenizer(os.path.join(out, "tokenizer"))
        eos = tok.encoder[tok.eos]
        text = CLIPTextModel(dict(vocab_size=len(tok.encoder), hidden_size=32, intermediate_size=64,
                                  projection_dim=32, num_hidden_layers=2, num_attention_heads=2,
                                  max_position_embeddings=16, hidden_act="quick_gelu",
                                  bos_token_id=tok.encoder[tok.bos], eos_token_id=eos, pad_token_id=eos))
        dit = PixArtTransformer2DModel(dict(num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                            out_channels=8, num_layers=2, cross_attention_dim=32,
                                            sample_size=8, patch_size=2, caption_channels=32,
                                            use_additional_conditions=False))
        vae = AutoencoderKL(dict(block_out_channels=[8, 16, 16], down_block_types=["DownEncoderBlock2D"] * 3,
                                 up_block_types=["UpDecoderBlock2D"] * 3, layers_per_block=1, latent_channels=4,
                                 norm_num_groups=4, sample_size=32, scaling_factor=0.5, shift_factor=0.1,
                                 force_upcast=False))
        for i, m in enumerate((text, dit, vae)):
            randomize(m, seed * 10 + i)
        save_component(text, os.path.join(out, "text_encoder"), dtype)
        save_component(dit, os.path.join(out, "transformer"), dtype)
        save_component(vae, os.path.join(out, "vae"), dtype)
        _write_json(os.path.join(out, "scheduler", "scheduler_config.json"), {
            "_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": DIFFUSERS_VERSION,
            "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False,
            "prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0})
        write_model_index(out, ["text_encoder", "tokenizer", "transformer", "vae", "scheduler"])
    elif preset == "real-pixart":
        dit = PixArtTransformer2DModel(dict(num_attention_heads=16, attention_head_dim=72, in_channels=4,
                                            out_channels=8, num_layers=2, cross_attention_dim=1152,
                                            sample_size=16, patch_size=2, caption_channels=4096,
                                            use_additional_conditions=False))
        randomize(dit, seed)
        save_component(dit, os.path.join(out, "transformer"), dtype)
        write_model_index(out, ["transformer"])
    elif preset == "real-vae":
        vae = AutoencoderKL(dict(block_out_channels=[128, 256, 512, 512],
                                 down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                                 layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=512,
                                 scaling_factor=0.18215, shift_factor=None))
        randomize(vae, seed)
        save_component(vae, os.path.join(out, "vae"), dtype)
        write_model_index(out, ["vae"])
    elif preset == "real-width":
        # A whole pipeline at real widths for bench_realwidth (issue 13): the PixArt-alpha transformer
        # (16 x 72 = 1152, 2 layers) fed by a 768-wide CLIP text encoder (CLIP ViT-L's width; 2 layers,
        # 12 heads, the grammar vocabulary, 77 tokens), and the SD VAE (128/256/512/512). sample_size
        # makes `size` x `size` the model's default image.
        build_clip_vocab(GRAMMAR_WORDS, os.path.join(out, "tokenizer"), model_max_length=77)
        tok = CLIPTokenizer(os.path.join(out, "tokenizer"))
        eos = tok.encoder[tok.eos]
        text = CLIPTextModel(dict(vocab_size=len(tok.encoder), hidden_size=768, intermediate_size=3072,
                                  projection_dim=768, num_hidden_layers=2, num_attention_heads=12,
                                  max_position_embeddings=77, hidden_act="quick_gelu",
                                  bos_token_id=tok.encoder[tok.bos], eos_token_id=eos, pad_token_id=eos))
        dit = PixArtTransformer2DModel(dict(num_attention_heads=16, attention_head_dim=72, in_channels=4,
                                            out_channels=8, num_layers=2, cross_attention_dim=1152,
                                            sample_size=size // 8, patch_size=2, caption_channels=768,
                                            use_additional_conditions=False))
        vae = AutoencoderKL(dict(block_out_channels=[128, 256, 512, 512],
                                 down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                                 layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=size,
                                 scaling_factor=0.18215, shift_factor=None))
        for i, m in enumerate((text, dit, vae)):
            randomize(m, seed * 10 + i)
        save_component(text, os.path.join(out, "text_encoder"), dtype)
        save_component(dit, os.path.join(out, "transformer"), dtype)
        save_component(vae, os.path.join(out, "vae"), dtype)
        _write_json(os.path.join(out, "scheduler", "scheduler_config.json"), {
            "_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": DIFFUSERS_VERSION,
            "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False,
            "prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0})
        write_model_index(out, ["text_encoder", "tokenizer", "transformer", "vae", "scheduler"])
    else:
        raise ValueError(f"unknown preset {preset!r}; use tiny, real-pixart, real-vae or real-width")


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

def _cmd_random_model(a):
    write_random_model(a.preset, a.seed, a.out, torch.float16 if a.dtype == "float16" else torch.float32, a.size)
    print(json.dumps({"out": a.out, "preset": a.preset, "seed": a.seed}))


@torch.no_grad()
def run_component(model_dir, component, inputs):
    if component == "text_encoder":
        m = load_component(os.path.join(model_dir, "text_encoder"), CLIPTextModel)
        mask = inputs.get("attention_mask")
        return {"last_hidden_state": m(inputs["input_ids"].long(), mask)}
    if component == "transformer":
        m = load_component(os.path.join(model_dir, "transformer"), PixArtTransformer2DModel)
        hs = inputs["hidden_states"].float()
        t = inputs["timestep"].float().reshape(-1)
        if t.numel() == 1:
            t = t.expand(hs.shape[0])
        out = m(hs, inputs["encoder_hidden_states"].float(), t,
                encoder_attention_mask=inputs.get("encoder_attention_mask"))
        if m.out_channels == 2 * hs.shape[1]:
            out = out.chunk(2, dim=1)[0]
        return {"sample": out.contiguous()}
    if component == "vae_decoder":
        m = load_component(os.path.join(model_dir, "vae"), AutoencoderKL)
        return {"sample": m.decode_latents(inputs["latents"].float())}
    raise ValueError(f"unknown component {component!r}; use text_encoder, transformer or vae_decoder")


def _cmd_run(a):
    out = run_component(a.model, a.component, load_safetensors(a.inputs))
    save_safetensors({k: v.float().contiguous() for k, v in out.items()}, a.out)
    print(json.dumps({k: list(v.shape) for k, v in out.items()}))


def _cmd_tokenize(a):
    tok = CLIPTokenizer(os.path.join(a.model, "tokenizer"))
    print(json.dumps(tok(a.prompt, a.max_length)))


def _cmd_scheduler(a):
    s = make_scheduler(a.name, load_scheduler_config(a.model))
    s.set_timesteps(a.steps)
    print(json.dumps({"timesteps": s.timesteps.tolist(),
                      "sigmas": [] if s.sigmas is None else s.sigmas.tolist()}))


def _cmd_generate(a):
    pipe = Pipeline(a.model)
    latents = load_safetensors(a.latents)["latents"].float()
    timings = []
    reps = a.bench_reps if a.bench else 1
    for _ in range(reps):
        image, u8 = pipe(a.prompt, latents, a.steps, a.guidance, a.scheduler, a.negative_prompt, timings)
    save_safetensors({"image": image.float().contiguous(), "image_u8": u8}, a.out)
    if a.dump:
        # Every stage's tensors under Stagecraft's dump names (docs/numerics.md), for `stagecraft compare`.
        import reference_dump
        if latents.shape[0] != 1:
            raise SystemExit(f"--dump writes one job; {a.latents} holds {latents.shape[0]} latents")
        dump = reference_dump.Dump(a.dump)
        reference_dump.dump_generate(pipe, a.prompt, a.negative_prompt, latents, a.steps, a.guidance, a.scheduler,
                                     dump)
        dump.flush()
    if a.bench:
        med = {k: float(np.median([t[k] for t in timings])) for k in timings[0]}
        med["reps"] = reps
        med["threads"] = torch.get_num_threads()
        print(json.dumps(med))
    else:
        print(json.dumps({"image": list(image.shape)}))


def _reset_peak_rss():
    """Resets the process's peak RSS (VmHWM) so the next reading is one stage's own peak
    (Linux >= 4.0: writing 5 to clear_refs). False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib():
    """VmHWM of /proc/self/status in MiB, else ru_maxrss (the peak since the process began)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@torch.no_grad()
def _cmd_bench_stages(a):
    """Times what bench_realwidth compares, on its inputs: one transformer call (the CFG batch as
    given), one VAE decode, and the whole pipeline from the given initial latents. Each stage runs
    --warmup untimed then --reps timed; the JSON on the last line has every time, the medians and
    the stage's peak RSS. The pipeline gets no warm-up when the two other stages ran before it (they
    warmed every large layer). The outputs go to --out for the parity check. Numerics are those of
    `run` and `generate` (same modules, same calls)."""
    inputs = load_safetensors(a.inputs)
    t0 = time.perf_counter()
    pipe = Pipeline(a.model)
    res = {"threads": torch.get_num_threads(), "reps": a.reps, "warmup": a.warmup,
           "load_ms": (time.perf_counter() - t0) * 1e3, "torch": torch.__version__}
    outs = {}

    def stage(name, fn, warmup):
        reset = _reset_peak_rss()
        times, cpu, y = [], [], None
        for i in range(warmup + a.reps):
            t, c = time.perf_counter(), time.process_time()
            y = fn()
            if i >= warmup:
                times.append((time.perf_counter() - t) * 1e3)
                cpu.append((time.process_time() - c) * 1e3)  # all threads of the process
        res[name] = {"ms": times, "median_ms": float(np.median(times)), "cpu_ms": cpu,
                     "peak_rss_mib": _peak_rss_mib(), "peak_rss_reset": reset}
        return y

    stages = a.stages.split(",")
    if "transformer" in stages:
        hs = inputs["hidden_states"].float()
        ehs = inputs["encoder_hidden_states"].float()
        ts = inputs["timestep"].float().reshape(-1)
        mask = inputs["encoder_attention_mask"]
        tr = pipe.transformer

        def call():
            o = tr(hs, ehs, ts, encoder_attention_mask=mask)
            return o.chunk(2, dim=1)[0] if tr.out_channels == 2 * hs.shape[1] else o
        outs["transformer"] = stage("transformer", call, a.warmup).contiguous()
    if "vae_decoder" in stages:
        lat = inputs["vae_latents"].float()
        outs["vae_decoder"] = stage("vae_decoder", lambda: pipe.vae.decode_latents(lat), a.warmup).contiguous()
    if "total" in stages:
        timings = []
        lat = inputs["latents"].float()

        def gen():
            return pipe(a.prompt, lat, a.steps, a.guidance, a.scheduler, a.negative_prompt, timings)
        warm = 0 if "transformer" in stages and "vae_decoder" in stages else a.warmup
        image, u8 = stage("total", gen, warm)
        kept = timings[warm:]
        res["total"]["parts_median_ms"] = {k: float(np.median([t[k] for t in kept])) for k in kept[0]}
        outs["image"] = image.float().contiguous()
        outs["image_u8"] = u8
    save_safetensors(outs, a.out)
    print(json.dumps(res))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default 1; 2 with --bench and bench-stages)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("random-model", help="write a diffusers folder with random weights")
    p.add_argument("--preset", required=True, choices=["tiny", "real-pixart", "real-vae", "real-width"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--size", type=int, default=256, help="real-width: the default image size (multiple of 16)")
    p.set_defaults(fn=_cmd_random_model)
    p = sub.add_parser("run", help="run one component on tensors from a safetensors file")
    p.add_argument("--model", required=True)
    p.add_argument("--component", required=True, choices=["text_encoder", "transformer", "vae_decoder"])
    p.add_argument("--inputs", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=_cmd_run)
    p = sub.add_parser("tokenize", help="print the CLIP token ids and attention mask of a prompt")
    p.add_argument("--model", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-length", type=int, default=None)
    p.set_defaults(fn=_cmd_tokenize)
    p = sub.add_parser("scheduler", help="print a scheduler's timesteps and sigmas")
    p.add_argument("--model", required=True)
    p.add_argument("--name", required=True, choices=sorted(SCHEDULERS))
    p.add_argument("--steps", type=int, required=True)
    p.set_defaults(fn=_cmd_scheduler)
    p = sub.add_parser("generate", help="run the whole pipeline from given initial latents")
    p.add_argument("--model", required=True)
    p.add_argument("--prompt", required=True)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--scheduler", default="flow_match_euler", choices=sorted(SCHEDULERS))
    p.add_argument("--latents", required=True, help="safetensors with tensor `latents` [B,C,h,w]")
    p.add_argument("--out", required=True)
    p.add_argument("--dump", default=None, help="also write a stage dump to this folder (docs/numerics.md)")
    p.add_argument("--bench", action="store_true", help="print median per-stage milliseconds (JSON, last line)")
    p.add_argument("--bench-reps", type=int, default=3)
    p.set_defaults(fn=_cmd_generate)
    p = sub.add_parser("bench-stages", help="time a transformer call, a VAE decode and generate (JSON, last line)")
    p.add_argument("--model", required=True)
    p.add_argument("--inputs", required=True, help="safetensors: hidden_states, timestep, encoder_hidden_states, "
                   "encoder_attention_mask (one transformer call), vae_latents, latents (initial noise)")
    p.add_argument("--out", required=True, help="safetensors with each stage's output")
    p.add_argument("--stages", default="transformer,vae_decoder,total")
    p.add_argument("--prompt", default="a red circle in the center on a blue background")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.5)
    p.add_argument("--scheduler", default="flow_match_euler", choices=sorted(SCHEDULERS))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.set_defaults(fn=_cmd_bench_stages)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads or (2 if getattr(a, "bench", False) or a.cmd == "bench-stages" else 1))
    a.fn(a)


if __name__ == "__main__":
    main()
