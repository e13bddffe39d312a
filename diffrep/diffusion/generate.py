"""Batched text-to-image generation with per-image seeds."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image


def generate(pipe, prompts: Sequence[str], seeds: Sequence[int], steps: int,
             guidance_scale: float, resolution: int, batch_size: int) -> list[Image.Image]:
    """One image per (prompt, seed) pair, in order, `batch_size` per pipeline call.

    Each image's initial noise comes from its own torch.Generator seeded with its seed, so
    an image depends on its prompt and seed, not on the batch it was generated in.
    """
    import torch

    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    device = pipe.device
    gen_device = device if device.type == "cuda" else "cpu"
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        generators = [torch.Generator(gen_device).manual_seed(int(s))
                      for s in seeds[start:start + batch_size]]
        with torch.inference_mode():
            out = pipe(chunk, num_inference_steps=steps, guidance_scale=guidance_scale,
                       height=resolution, width=resolution, generator=generators,
                       output_type="pil")
        images.extend(out.images)
    return images
