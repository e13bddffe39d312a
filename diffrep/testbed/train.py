"""The testbed's training recipe: a small AutoencoderKL trained on the pool's images
(then frozen), a random-init frozen CLIP text encoder over the project's char-level
tokenizer, and a ~1M-parameter UNet2DConditionModel (cross-attention only in the
low-resolution block) trained with SD v1's noise schedule (epsilon prediction, uniform
timesteps, 10% caption dropout for classifier-free guidance). The VAE has one level per
entry of `vae_channels` and downsamples by 2 per level after the first: 16x16x4 latents
for 32x32 images with two levels (v1), and for 64x64 images with three (v2), so the
UNet's cost does not depend on the image side. Everything is seeded; the config is
saved."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from diffrep import storage
from diffrep.diffusion.tiny import SD_V1_SCHEDULE, write_clip_tokenizer

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Model sizes and optimisation of the testbed (steps, batch in images, lr)."""

    seed: int = 0
    side: int = 32  # image side, pixels
    text_width: int = 64
    text_layers: int = 2
    max_tokens: int = 48
    vae_channels: tuple[int, ...] = (16, 32)
    latent_channels: int = 4
    vae_steps: int = 1200
    vae_batch: int = 32
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    unet_channels: tuple[int, int] = (32, 64)
    unet_layers: int = 1
    unet_steps: int = 3500
    unet_batch: int = 32
    unet_lr: float = 1e-3
    warmup_steps: int = 200
    caption_dropout: float = 0.1
    threads: int = 1
    device: str = "cpu"  # where the VAE and UNet train; every random draw is made on the CPU


def latent_side(cfg: TrainConfig) -> int:
    """The latents' side: the image side over 2 per VAE level after the first."""
    return cfg.side // 2 ** (len(cfg.vae_channels) - 1)


def vae_kwargs(cfg: TrainConfig) -> dict:
    levels = len(cfg.vae_channels)
    return {"in_channels": 3, "out_channels": 3, "latent_channels": cfg.latent_channels, "norm_num_groups": 8,
            "mid_block_add_attention": False,
            "block_out_channels": tuple(cfg.vae_channels), "layers_per_block": 1,
            "sample_size": cfg.side, "down_block_types": ("DownEncoderBlock2D",) * levels,
            "up_block_types": ("UpDecoderBlock2D",) * levels}


def unet_kwargs(cfg: TrainConfig) -> dict:
    return {"sample_size": latent_side(cfg), "in_channels": cfg.latent_channels,
            "out_channels": cfg.latent_channels,
            "layers_per_block": cfg.unet_layers, "block_out_channels": tuple(cfg.unet_channels),
            "cross_attention_dim": cfg.text_width, "attention_head_dim": 8, "norm_num_groups": 16,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D")}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_vae(images: np.ndarray, cfg: TrainConfig):
    """Train an AutoencoderKL on `images` (reconstruction MSE + small KL); returns it in
    eval mode with config scaling_factor = 1 / std of the latents' means."""
    from diffusers import AutoencoderKL

    torch.manual_seed(cfg.seed)
    vae = AutoencoderKL(**vae_kwargs(cfg)).to(cfg.device)
    x_all = to_tensor(images)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()
    for step in range(cfg.vae_steps):
        lr = cfg.vae_lr * min(1.0, (step + 1) / 100) * (0.1 if step > 0.8 * cfg.vae_steps else 1.0)
        for group in opt.param_groups:
            group["lr"] = lr
        x = x_all[torch.randint(len(x_all), (cfg.vae_batch,), generator=g)].to(cfg.device)
        dist = vae.encode(x).latent_dist
        sample = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g).to(cfg.device)
        rec = vae.decode(sample).sample
        loss = torch.mean((rec - x) ** 2) + cfg.vae_kl_weight * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == cfg.vae_steps - 1:
            log.info("vae step %d/%d loss %.5f (%.0f s)", step, cfg.vae_steps, loss.item(), time.time() - t0)
    vae.eval().requires_grad_(False).to("cpu")
    with torch.no_grad():
        means = torch.cat([vae.encode(x_all[i:i + 256]).latent_dist.mean
                           for i in range(0, len(x_all), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / means.std()))
    return vae


@torch.no_grad()
def reconstruct(vae, images: np.ndarray) -> torch.Tensor:
    """The VAE's reconstructions (encoder mean -> decode) of uint8 (N, H, W, 3) images, as
    (N, 3, H, W) float32 in [-1, 1], 256 images per call."""
    x = to_tensor(images)
    return torch.cat([vae.decode(vae.encode(x[i:i + 256]).latent_dist.mean).sample
                      for i in range(0, len(x), 256)]).clamp(-1, 1)


@torch.no_grad()
def vae_rms(vae, images: np.ndarray) -> float:
    """RMS pixel reconstruction error in [0, 1] units (encode mean -> decode)."""
    return float(((reconstruct(vae, images) - to_tensor(images)) / 2).pow(2).mean().sqrt())


def build_text_encoder(out_dir: Path, cfg: TrainConfig):
    """The char-level tokenizer (written to out_dir/tokenizer) and a seeded random-init
    CLIPTextModel of width cfg.text_width (frozen)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = write_clip_tokenizer(out_dir / "tokenizer", model_max_length=cfg.max_tokens)
    tok = CLIPTokenizer.from_pretrained(out_dir / "tokenizer")
    torch.manual_seed(cfg.seed + 1)
    te = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=cfg.text_width, intermediate_size=4 * cfg.text_width,
        num_hidden_layers=cfg.text_layers, num_attention_heads=4, max_position_embeddings=cfg.max_tokens,
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
        projection_dim=cfg.text_width)).eval().requires_grad_(False)
    return tok, te


@torch.no_grad()
def encode_captions(tok, te, captions: list[str]) -> torch.Tensor:
    out = []
    for i in range(0, len(captions), 256):
        ids = tok(captions[i:i + 256], padding="max_length", truncation=True,
                  max_length=tok.model_max_length, return_tensors="pt").input_ids
        out.append(te(ids)[0])
    return torch.cat(out)


def train_unet(latents: torch.Tensor, embeds: torch.Tensor, uncond: torch.Tensor,
               rows: np.ndarray, cfg: TrainConfig):
    """Train a UNet2DConditionModel on (latent, caption embedding) pairs; `rows` lists the
    training samples (pool indices, repeated as often as seen). Returns it in eval mode and
    the loss history [(step, mean loss over the last 100 steps)]."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(cfg.seed + 2)
    unet = UNet2DConditionModel(**unet_kwargs(cfg)).to(cfg.device)
    sched = DDPMScheduler.from_config({k: v for k, v in SD_V1_SCHEDULE.items()
                                       if k not in ("set_alpha_to_one",)})
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed + 3)
    rows_t = torch.from_numpy(np.asarray(rows, np.int64))
    history, recent, t0 = [], [], time.time()
    for step in range(cfg.unet_steps):
        frac = step / cfg.unet_steps
        lr = cfg.unet_lr * min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + np.cos(np.pi * frac))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = rows_t[torch.randint(len(rows_t), (cfg.unet_batch,), generator=g)]
        x0 = latents[idx]
        cond = embeds[idx].clone()
        drop = torch.rand(cfg.unet_batch, generator=g) < cfg.caption_dropout
        cond[drop] = uncond
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.unet_batch,), generator=g)
        x0, cond, noise, t = (v.to(cfg.device) for v in (x0, cond, noise, t))
        pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=cond).sample
        loss = torch.mean((pred - noise) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        recent.append(loss.item())
        if (step + 1) % 100 == 0:
            history.append((step + 1, float(np.mean(recent))))
            recent = []
            if (step + 1) % 500 == 0:
                log.info("unet step %d/%d loss %.4f (%.0f s)", step + 1, cfg.unet_steps,
                         history[-1][1], time.time() - t0)
    return unet.eval().requires_grad_(False).to("cpu"), history


def save_pipeline(out_dir: Path, vae, tok, te, unet) -> None:
    """A StableDiffusionPipeline directory (safetensors, DDIM with SD v1's schedule)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=te, tokenizer=tok, unet=unet,
        scheduler=DDIMScheduler.from_config(SD_V1_SCHEDULE),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out_dir, safe_serialization=True)


def write_json(path: Path, obj) -> None:
    """Write `obj` as indented JSON, atomically (diffrep.storage): a model's config.json is
    its completion marker."""
    storage.write_bytes(str(path), json.dumps(obj, indent=1).encode())


def config_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)
