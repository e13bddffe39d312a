"""Tiny Stable-Diffusion pipelines with random weights, built from configs: the offline
stand-in for real checkpoints (demo, tests, CPU benchmarks), and SD v1's UNet config for
GPU benchmarks. Everything is written with safetensors, as a real checkpoint would be."""

from __future__ import annotations

import json
from pathlib import Path

import torch

# SD v1's noise schedule (scaled-linear betas 0.00085..0.012, 1000 steps): sigma_max 14.6146.
SD_V1_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "prediction_type": "epsilon",
                  "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False}

# A byte-level BPE vocabulary without merges: every character is a token. The CLIP
# tokenizer needs vocab.json + merges.txt and nothing else.
_SPECIALS = ["<|startoftext|>", "<|endoftext|>"]


def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_clip_tokenizer(out_dir: str | Path, model_max_length: int = 77) -> int:
    """Write a character-level CLIP tokenizer (vocab.json, merges.txt, configs) to
    `out_dir`; returns its vocabulary size."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + _SPECIALS
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (out / "merges.txt").write_text("#version: 0.2\n")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}))
    (out / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}))
    return len(tokens)


def sd_v1_unet_config() -> dict:
    """The UNet2DConditionModel config of Stable Diffusion v1 (860M parameters)."""
    return {"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
            "block_out_channels": (320, 640, 1280, 1280), "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                 "CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                               "CrossAttnUpBlock2D")}


def tiny_unet_config(resolution: int = 64) -> dict:
    """A two-level UNet (~0.5M parameters) over a 4-channel latent at resolution / 2."""
    return {"sample_size": resolution // 2, "in_channels": 4, "out_channels": 4,
            "layers_per_block": 1, "block_out_channels": (32, 64), "cross_attention_dim": 32,
            "attention_head_dim": 8, "norm_num_groups": 32,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D")}


def tiny_vae_config(resolution: int = 64) -> dict:
    """A two-level VAE: latents at resolution / 2."""
    return {"block_out_channels": (32, 64), "layers_per_block": 1, "sample_size": resolution,
            "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2}


def sd_v1_components() -> dict:
    """build_tiny_pipeline arguments for Stable Diffusion v1's shapes: its UNet, its VAE
    (latents at resolution / 8) and a CLIP ViT-L/14-sized text encoder (12 layers, 768)."""
    return {"unet_config": sd_v1_unet_config(),
            "vae_config": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
                           "sample_size": 512, "down_block_types": ("DownEncoderBlock2D",) * 4,
                           "up_block_types": ("UpDecoderBlock2D",) * 4},
            "text_layers": 12, "text_heads": 12}


def build_tiny_pipeline(out_dir: str | Path, seed: int = 0, resolution: int = 64,
                        prediction_type: str = "epsilon", unet_config: dict | None = None,
                        vae_config: dict | None = None, text_layers: int = 2, text_heads: int = 4,
                        scheduler: str = "ddim"):
    """Build a StableDiffusionPipeline with random weights (seeded), save it to `out_dir`
    with safetensors, and return it. `unet_config` / `vae_config` replace the tiny ones
    (see sd_v1_components()); the UNet's cross_attention_dim sets the text encoder's width."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out = Path(out_dir)
    vocab_size = write_clip_tokenizer(out / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    unet_cfg = dict(unet_config or tiny_unet_config(resolution))
    width = unet_cfg["cross_attention_dim"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
                            **(vae_config or tiny_vae_config(resolution)))
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=width, intermediate_size=4 * width,
            num_hidden_layers=text_layers, num_attention_heads=text_heads,
            max_position_embeddings=77,
            bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1, projection_dim=width))
    schedule = dict(SD_V1_SCHEDULE, prediction_type=prediction_type)
    sched_cls = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}[scheduler]
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=sched_cls.from_config(schedule),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    return pipe
