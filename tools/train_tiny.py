#!/usr/bin/python3
"""Trains the small text-to-image model that ships as models/tiny-shapes (the project default).

Three parts, all in the diffusers/transformers layouts of tools/reference.py:
  1. AutoencoderKL (f=2, 4 latent channels) on 32x32 shapes images: L1 + L2 reconstruction plus a
     small KL term. scaling_factor / shift_factor are then measured on the encoded training set
     (latents = (z - shift) * scale have mean 0, std 1).
  2. The training images are encoded once (posterior mean and std kept; a fresh sample is drawn
     from the posterior every time an image is used).
  3. CLIPTextModel and PixArtTransformer2DModel trained jointly with rectified flow
     (x_t = (1 - s) x0 + s n, target n - x0, timestep = 1000 s), 10% caption dropout to the empty
     prompt for classifier-free guidance, EMA of both for export.

Every phase runs on a wall-clock budget (so the whole run fits --minutes), and the diffusers folder
is rewritten every few minutes, so a partial run still leaves a usable model.

    /usr/bin/python3 tools/train_tiny.py --device cpu --out models/tiny-shapes --minutes 70
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402
import score_shapes as S  # noqa: E402
import shapes_dataset as D  # noqa: E402

IMAGE_SIZE = 32
MAX_LEN = 16
# f=2 (one downsampling): at f=4 the decoder rounded a 10-pixel square's corners and cut a
# triangle's tip (shape kept in 67% of reconstructions); at f=2 the latents keep the edges.
VAE_LEVELS = [32, 64]
VAE_SCALE = 2 ** (len(VAE_LEVELS) - 1)
VAE_CONFIG = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * len(VAE_LEVELS),
                  up_block_types=["UpDecoderBlock2D"] * len(VAE_LEVELS), block_out_channels=VAE_LEVELS,
                  layers_per_block=1, act_fn="silu", latent_channels=4, norm_num_groups=16,
                  sample_size=IMAGE_SIZE, scaling_factor=1.0, shift_factor=0.0, force_upcast=False,
                  use_quant_conv=True, use_post_quant_conv=True, mid_block_add_attention=True,
                  latents_mean=None, latents_std=None)
TEXT_CONFIG = dict(hidden_size=128, intermediate_size=512, projection_dim=128, num_hidden_layers=2,
                   num_attention_heads=4, max_position_embeddings=MAX_LEN, hidden_act="quick_gelu",
                   layer_norm_eps=1e-5, initializer_range=0.02, initializer_factor=1.0)
DIT_CONFIG = dict(num_attention_heads=4, attention_head_dim=48, in_channels=4, out_channels=4, num_layers=6,
                  dropout=0.0, norm_num_groups=32, cross_attention_dim=192, attention_bias=True,
                  # 4x4 latent patches: 16 tokens of 8x8 pixels each, as cheap as the f=4 VAE's 2x2.
                  sample_size=IMAGE_SIZE // VAE_SCALE, patch_size=4, activation_fn="gelu-approximate",
                  num_embeds_ada_norm=1000, upcast_attention=False, norm_type="ada_norm_single",
                  norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None,
                  use_additional_conditions=False, caption_channels=128, attention_type="default")
DEFAULTS = {"steps": 20, "guidance": 4.0, "scheduler": "flow_match_euler", "width": IMAGE_SIZE,
            "height": IMAGE_SIZE}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def to_tensor(imgs):
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def init_weights(model, std=0.02):
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                torch.nn.init.zeros_(m.bias)


def write_tokenizer(out):
    R.build_clip_vocab(D.WORDS, os.path.join(out, "tokenizer"), model_max_length=MAX_LEN)
    return R.CLIPTokenizer(os.path.join(out, "tokenizer"))


def write_scheduler(out, shift):
    R._write_json(os.path.join(out, "scheduler", "scheduler_config.json"), {
        "_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": R.DIFFUSERS_VERSION,
        "num_train_timesteps": 1000, "shift": shift, "use_dynamic_shifting": False,
        "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096,
        "invert_sigmas": False,
        # Ignored by FlowMatchEuler; they make DPMSolverMultistepScheduler.from_config(this) a flow solver.
        "prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": shift})


def export(out, vae=None, text=None, dit=None, meta=None):
    """Writes the given components as f16 (component folders replaced whole)."""
    for name, model in (("vae", vae), ("text_encoder", text), ("transformer", dit)):
        if model is None:
            continue
        tmp = os.path.join(out, f".{name}.tmp")
        R.save_component(model, tmp, dtype=torch.float16)
        final = os.path.join(out, name)
        if os.path.exists(final):
            for f in os.listdir(final):
                os.remove(os.path.join(final, f))
            os.rmdir(final)
        os.rename(tmp, final)
    R.write_model_index(out, [c for c in ("text_encoder", "tokenizer", "transformer", "vae", "scheduler")
                              if os.path.exists(os.path.join(out, c))])
    if meta is not None:
        R._write_json(os.path.join(out, "stagecraft.json"), meta)


def cosine_lr(base, frac, warm_frac=0.03):
    if frac < warm_frac:
        return base * frac / warm_frac
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - warm_frac) / (1 - warm_frac)))))


def scheduled_steps(opt, base_lr, budget_s):
    """Yields 1, 2, ... until budget_s seconds have passed, first setting the warm-up + cosine
    learning rate for the fraction of the budget used (every phase runs on wall-clock time)."""
    t0 = time.time()
    step = 0
    while (frac := (time.time() - t0) / budget_s) < 1:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(base_lr, frac)
        step += 1
        yield step


def train_vae(args, device, minutes, out, meta):
    torch.manual_seed(args.seed)
    vae = R.AutoencoderKL(VAE_CONFIG).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    ds = D.ShapesDataset(IMAGE_SIZE)
    rng = np.random.RandomState(args.seed + 1)
    t0 = time.time()
    step = 0
    for step in scheduled_steps(opt, args.vae_lr, minutes * 60):
        imgs = np.stack([ds.sample(rng)[0] for _ in range(args.vae_batch)])
        x = to_tensor(imgs).to(device)
        mean, logvar = vae.encode(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        rec = vae.decode(z)
        l1 = (rec - x).abs().mean()
        l2 = ((rec - x) ** 2).mean()
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).mean()
        loss = l1 + l2 + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 25 == 0:
            log(f"vae step {step} l1 {l1.item():.4f} l2 {l2.item():.4f} kl {kl.item():.3f} "
                f"{step / (time.time() - t0):.2f} it/s")
    meta["vae_steps"] = step
    meta["vae_seconds"] = round(time.time() - t0)
    meta["vae_final_l1"] = round(l1.item(), 5)
    vae.eval()
    meta["vae_shape_ceiling"] = vae_shape_ceiling(vae, device)
    log(f"vae done: {step} steps; shape kept through encode/decode in {meta['vae_shape_ceiling']:.1%} of 200 images")
    return vae


@torch.no_grad()
def vae_shape_ceiling(vae, device, n=200, seed=9):
    """Share of true images whose shape the scorer (score_shapes) still reads after encoding and
    decoding: the most shape adherence any transformer can reach through this VAE."""
    ds = D.ShapesDataset(IMAGE_SIZE)
    rng = np.random.RandomState(seed)
    batch = [ds.sample(rng) for _ in range(n)]
    mean, _ = vae.encode(to_tensor(np.stack([b[0] for b in batch])).to(device))
    rec = R.image_to_uint8(vae.decode(mean)).cpu().numpy()
    return float(np.mean([S.analyse(r)["shape"] == a["shape"] for r, (_, a) in zip(rec, batch)]))


def progress_eval(out, threads):
    """Scores the checkpoint just written on every third held-out caption (20 steps, guidance 4),
    so the log shows when colour, shape and position are learned."""
    caps = S.load_captions()[::3]
    summary, _, _ = S.evaluate_model(out, caps, 20, 4.0, "flow_match_euler", 0, threads=threads, batch=len(caps))
    return {k: summary[k] for k in ("colour", "background", "shape", "position", "all")}


@torch.no_grad()
def encode_set(vae, n, device, seed):
    ds = D.ShapesDataset(IMAGE_SIZE)
    rng = np.random.RandomState(seed)
    means, stds, attrs = [], [], []
    for i in range(0, n, 64):
        batch = [ds.sample(rng) for _ in range(min(64, n - i))]
        x = to_tensor(np.stack([b[0] for b in batch])).to(device)
        m, lv = vae.encode(x)
        means.append(m.cpu())
        stds.append(torch.exp(0.5 * lv).cpu())
        attrs += [b[1] for b in batch]
    return torch.cat(means), torch.cat(stds), attrs


def train_dit(args, device, deadline, out, vae, tok, meta, resume_from=None):
    t_enc = time.time()
    means, stds, attrs = encode_set(vae, args.num_latents, device, args.seed + 2)
    if resume_from:
        # The transformer learned latents normalised with the VAE's stored factors: keep them.
        shift, scale = vae.config["shift_factor"], vae.config["scaling_factor"]
        log(f"encoded {args.num_latents} latents in {time.time() - t_enc:.0f}s; kept shift {shift} scale {scale}")
    else:
        # Measured on posterior samples, as the DiT sees them (the means alone understate the spread).
        g = torch.Generator().manual_seed(args.seed + 5)
        zs = means + stds * torch.randn(means.shape, generator=g)
        shift = zs.mean().item()
        scale = 1.0 / (zs - shift).std().item()
        vae.config["shift_factor"] = round(shift, 6)
        vae.config["scaling_factor"] = round(scale, 6)
        meta.update(latent_shift=shift, latent_scale=scale, num_latents=args.num_latents,
                    encode_seconds=round(time.time() - t_enc))
        log(f"encoded {args.num_latents} latents in {time.time() - t_enc:.0f}s: shift {shift:.4f} scale {scale:.4f}")
        export(out, vae=vae, meta=meta)

    torch.manual_seed(args.seed + 3)
    vocab = len(tok.encoder)
    tcfg = dict(TEXT_CONFIG, vocab_size=vocab, bos_token_id=tok.encoder[tok.bos],
                eos_token_id=tok.encoder[tok.eos], pad_token_id=tok.encoder[tok.pad])
    if resume_from:
        # Continue from an exported model (its EMA weights; the optimiser state starts afresh).
        text = R.load_component(os.path.join(resume_from, "text_encoder"), R.CLIPTextModel).to(device).train()
        dit = R.load_component(os.path.join(resume_from, "transformer"), R.PixArtTransformer2DModel).to(device).train()
        log(f"resuming from {resume_from} after {meta.get('dit_steps', 0)} DiT steps")
    else:
        text = R.CLIPTextModel(tcfg).to(device)
        init_weights(text)
        # Words start as distinct unit-scale vectors. With the 0.02 init of the other weights the
        # first run's encoder left "circle"/"square" and "left"/"right" almost equal (|diff| 0.04 of
        # 8.4 at its output) and the transformer ignored shape and position words altogether.
        torch.nn.init.normal_(text.text_model.embeddings.token_embedding.weight, std=1.0)
        dit = R.PixArtTransformer2DModel(DIT_CONFIG).to(device)
        init_weights(dit)
        # PixArt starts with a zero output projection, so the first updates shape the trunk.
        torch.nn.init.zeros_(dit.proj_out.weight)
        torch.nn.init.zeros_(dit.proj_out.bias)
    params = list(text.parameters()) + list(dit.parameters())
    opt = torch.optim.AdamW(params, lr=args.dit_lr, weight_decay=0.01, betas=(0.9, 0.99))
    ema_text, ema_dit = copy.deepcopy(text).eval(), copy.deepcopy(dit).eval()
    for p in list(ema_text.parameters()) + list(ema_dit.parameters()):
        p.requires_grad_(False)

    cache = {}

    def ids_for(caption):
        if caption not in cache:
            r = tok(caption, MAX_LEN)
            cache[caption] = (r["input_ids"], r["attention_mask"])
        return cache[caption]

    rng = np.random.RandomState(args.seed + 4 + (1000 if resume_from else 0))
    steps_before = meta.get("dit_steps", 0) if resume_from else 0
    seconds_before = meta.get("dit_seconds", 0) if resume_from else 0
    t0 = time.time()
    last_export = t0
    step = 0
    n = means.shape[0]
    loss_avg = None
    for step in scheduled_steps(opt, args.dit_lr, max(60.0, deadline - t0)):
        idx = rng.randint(0, n, size=args.dit_batch)
        z = means[idx] + stds[idx] * torch.randn(args.dit_batch, *means.shape[1:])
        x0 = ((z - shift) * scale).to(device)
        caps = [caption_for_training(attrs[i], rng, args.cfg_dropout) for i in idx]
        ids, mask = zip(*[ids_for(c) for c in caps])
        ids = torch.tensor(ids, device=device)
        mask = torch.tensor(mask, device=device)
        # Half logit-normal, half uniform, then shifted towards noise as the sampler's sigmas are.
        # Layout is decided above s ~ 0.9: below that the shape's place can already be read off
        # x_t, so without the shift the few samples up there taught no position at all (a wrong
        # position word cost nothing: loss 0.4300 vs 0.4299 at s = 0.95 after 2517 steps).
        u = torch.sigmoid(torch.randn(args.dit_batch))
        uni = torch.rand(args.dit_batch)
        s = R.flow_shift(torch.where(torch.rand(args.dit_batch) < 0.5, u, uni), args.noise_shift).to(device)
        noise = torch.randn_like(x0)
        xt = (1 - s[:, None, None, None]) * x0 + s[:, None, None, None] * noise
        emb = text(ids, mask)
        pred = dit(xt, emb, s * 1000.0, encoder_attention_mask=mask)
        loss = F.mse_loss(pred, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for m, e in ((text, ema_text), (dit, ema_dit)):
                for p, pe in zip(m.parameters(), e.parameters()):
                    pe.mul_(decay).add_(p.detach(), alpha=1 - decay)
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if step % 50 == 0:
            log(f"dit step {step} loss {loss_avg:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{step / (time.time() - t0):.2f} it/s")
        if time.time() - last_export > args.export_every * 60:
            meta.update(dit_steps=steps_before + step, dit_seconds=seconds_before + round(time.time() - t0),
                        dit_loss=round(loss_avg, 5), partial=True)
            export(out, text=ema_text, dit=ema_dit, meta=meta)
            log(f"exported checkpoint at dit step {step}; held-out scores {progress_eval(out, args.threads)}")
            last_export = time.time()
    meta.update(dit_steps=steps_before + step, dit_seconds=seconds_before + round(time.time() - t0),
                dit_loss=round(loss_avg, 5), partial=False)
    return ema_text, ema_dit


def caption_for_training(a, rng, dropout):
    if rng.random_sample() < dropout:
        return ""
    return D.caption_for(a, rng)


def measure(device):
    """Prints the speed of one VAE and one DiT training step (to size the run)."""
    torch.manual_seed(0)
    vae = R.AutoencoderKL(VAE_CONFIG).to(device)
    x = torch.randn(16, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
    for i in range(4):
        if i == 1:
            t = time.time()
        m, lv = vae.encode(x)
        (vae.decode(m) - x).abs().mean().backward()
    print(f"vae bs16: {(time.time() - t) / 3:.3f} s/it, params {sum(p.numel() for p in vae.parameters())}")
    with torch.no_grad():
        t = time.time()
        vae.encode(torch.randn(64, 3, IMAGE_SIZE, IMAGE_SIZE))
        print(f"vae encode bs64: {time.time() - t:.3f} s")
    text = R.CLIPTextModel(dict(TEXT_CONFIG, vocab_size=600)).to(device)
    dit = R.PixArtTransformer2DModel(DIT_CONFIG).to(device)
    ids = torch.randint(0, 600, (32, MAX_LEN))
    mask = torch.ones(32, MAX_LEN, dtype=torch.long)
    xt = torch.randn(32, 4, IMAGE_SIZE // VAE_SCALE, IMAGE_SIZE // VAE_SCALE)
    for i in range(4):
        if i == 1:
            t = time.time()
        out = dit(xt, text(ids, mask), torch.rand(32) * 1000, encoder_attention_mask=mask)
        out.pow(2).mean().backward()
    print(f"dit bs32: {(time.time() - t) / 3:.3f} s/it, params dit {sum(p.numel() for p in dit.parameters())} "
          f"text {sum(p.numel() for p in text.parameters())}")


def finetune_decoder(args, device, t_start):
    """--finetune-decoder: more training for the VAE decoder alone on an existing run in --out.

    The encoder (and quant_conv) stay frozen, so the latent space, shift_factor and
    scaling_factor - everything the transformer learned - are unchanged; only the decoding
    of latents to pixels sharpens. The loss weights pixels at shape edges 5x, because edges
    decide the shape a viewer (and the scorer's fill ratio) sees."""
    with open(os.path.join(args.out, "stagecraft.json")) as f:
        meta = json.load(f)
    vae = R.load_component(os.path.join(args.out, "vae"), R.AutoencoderKL).to(device)
    vae.train()
    for p in list(vae.encoder.parameters()) + list(vae.quant_conv.parameters()):
        p.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=args.decoder_lr, weight_decay=0.0)
    ds = D.ShapesDataset(IMAGE_SIZE)
    rng = np.random.RandomState(args.seed + 7)
    t0 = time.time()
    step = 0
    for step in scheduled_steps(opt, args.decoder_lr, args.minutes * 60 - 30):
        x = to_tensor(np.stack([ds.sample(rng)[0] for _ in range(args.vae_batch)])).to(device)
        with torch.no_grad():
            mean, logvar = vae.encode(x)
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().amax(1, keepdim=True)
            dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().amax(1, keepdim=True)
            edge = F.pad(dx, (0, 1, 0, 0)) + F.pad(dy, (0, 0, 0, 1))
            weight = 1.0 + 4.0 * F.max_pool2d((edge > 0.05).float(), 3, 1, 1)
        rec = vae.decode(z)
        l1 = ((rec - x).abs() * weight).mean()
        l2 = (((rec - x) ** 2) * weight).mean()
        loss = l1 + l2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 25 == 0:
            log(f"decoder step {step} weighted l1 {l1.item():.4f} l2 {l2.item():.4f} {step / (time.time() - t0):.2f} it/s")
    meta["decoder_finetune_steps"] = meta.get("decoder_finetune_steps", 0) + step
    meta["decoder_finetune_seconds"] = meta.get("decoder_finetune_seconds", 0) + round(time.time() - t0)
    export(args.out, vae=vae.eval(), meta=meta)
    log(f"decoder fine-tune done: {step} steps; wrote {args.out}/vae")


def resume(args, device, t_start):
    """--resume: more DiT/text-encoder training on a finished (or partial) run in --out."""
    with open(os.path.join(args.out, "stagecraft.json")) as f:
        meta = json.load(f)
    vae = R.load_component(os.path.join(args.out, "vae"), R.AutoencoderKL).to(device)
    tok = R.CLIPTokenizer(os.path.join(args.out, "tokenizer"))
    meta["resumed_minutes"] = meta.get("resumed_minutes", 0) + args.minutes
    meta["noise_shift"] = args.noise_shift
    write_scheduler(args.out, args.noise_shift)  # the sampler's sigmas follow the training shift
    deadline = t_start + args.minutes * 60 - 90
    text, dit = train_dit(args, device, deadline, args.out, vae, tok, meta, resume_from=args.out)
    meta["total_seconds"] = meta.get("total_seconds", 0) + round(time.time() - t_start)
    export(args.out, text=text, dit=dit, meta=meta)
    log(f"resumed run done; wrote {args.out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default="models/tiny-shapes")
    ap.add_argument("--minutes", type=float, default=70.0, help="wall-clock budget for the whole run")
    ap.add_argument("--vae-share", type=float, default=0.27, help="fraction of the budget for the VAE")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vae-lr", type=float, default=2e-3)
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--kl-weight", type=float, default=1e-3)
    ap.add_argument("--num-latents", type=int, default=6000)
    ap.add_argument("--dit-lr", type=float, default=1e-3)
    ap.add_argument("--dit-batch", type=int, default=32)
    ap.add_argument("--cfg-dropout", type=float, default=0.1)
    ap.add_argument("--noise-shift", type=float, default=3.0,
                    help="shift of the training noise levels towards 1, also written as the scheduler's shift")
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--export-every", type=float, default=5.0, help="minutes between checkpoints")
    ap.add_argument("--measure", action="store_true", help="only time one step of each model")
    ap.add_argument("--resume", action="store_true",
                    help="keep the VAE in --out and continue training its text encoder and transformer for "
                         "--minutes (a fresh optimiser and learning-rate schedule)")
    ap.add_argument("--finetune-decoder", action="store_true",
                    help="train only the VAE decoder of the run in --out for --minutes (encoder frozen: "
                         "the latents the transformer learned stay valid)")
    ap.add_argument("--decoder-lr", type=float, default=5e-4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.measure:
        measure(device)
        return
    t_start = time.time()
    if args.resume:
        resume(args, device, t_start)
        return
    if args.finetune_decoder:
        finetune_decoder(args, device, t_start)
        return
    os.makedirs(args.out, exist_ok=True)
    tok = write_tokenizer(args.out)
    write_scheduler(args.out, args.noise_shift)
    meta = {"defaults": DEFAULTS, "image_size": IMAGE_SIZE, "seed": args.seed, "device": args.device,
            "noise_shift": args.noise_shift,
            "threads": args.threads, "budget_minutes": args.minutes}
    # Encoding and exports take a few minutes of the budget; the two trainers split the rest.
    train_minutes = args.minutes - 4.0
    vae = train_vae(args, device, train_minutes * args.vae_share, args.out, meta)
    # The DiT trains until 1.5 minutes before the end of the budget (encoding counts against it).
    deadline = t_start + args.minutes * 60 - 90
    text, dit = train_dit(args, device, deadline, args.out, vae, tok, meta)
    meta["total_seconds"] = round(time.time() - t_start)
    export(args.out, vae=vae, text=text, dit=dit, meta=meta)
    log(f"done in {meta['total_seconds']} s; wrote {args.out}")


if __name__ == "__main__":
    main()
