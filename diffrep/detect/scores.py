"""Per-caption memorization scores of a StableDiffusionPipeline, with their cost in UNet
passes (one pass = one caption row through the UNet; passes on the empty caption that
every caption shares are amortized and reported separately).

- dcs, noise_magnitude: diffrep.diffusion.scores.Denoiser (one conditional pass at
  sigma_max; DCS = mean((x - D(x, c))^2) with guidance, magnitude = ||eps(c) - eps(empty)||,
  Wen et al. 2024 at the first step).
- ecs: J one-step samples (diffrep.diffusion.scores.one_step_images), Sobel edges,
  edge consistency (J passes).
- angle_magnitude: our implementation of the idea of Asthana & Belagiannis (ICLR 2026),
  from its description, not their code: for K (timestep, noise seed) pairs, pure
  Gaussian latent noise z_k ~ N(0, I) (seed k, shared by every caption) is fed at
  timestep t_k (input scaled as the scheduler's x_t ~ sqrt(1 - alphabar) z at high t)
  and the text-conditional difference d_k = eps(z_k, t_k, c) - eps(z_k, t_k, empty) is
  taken. magnitude = mean_k ||d_k|| (per latent element RMS), alignment = mean over pairs
  k < l of cos(d_k, d_l) (memorized captions pull every noise towards the same image, so
  their differences point the same way). score = magnitude * (1 + alignment) / 2.
  Cost: K conditional passes per caption (+ K shared unconditional ones).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from diffrep.diffusion.scores import Denoiser, edge_consistency, one_step_images, sobel_edges

DETECTORS = ("dcs", "noise_magnitude", "ecs", "angle_magnitude")
# UNet passes per caption (conditional rows; shared unconditional rows not counted).
PASSES = {"dcs": 1, "noise_magnitude": 1}


def dcs_and_magnitude(den: Denoiser, captions: Sequence[str], resolution: int,
                      batch_size: int) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {"dcs": [], "noise_magnitude": []}
    for s in range(0, len(captions), batch_size):
        sc = den.scores(list(captions[s:s + batch_size]), resolution)
        for k in out:
            out[k].append(sc[k])
    return {k: np.concatenate(v) for k, v in out.items()}


def ecs(den: Denoiser, captions: Sequence[str], resolution: int, seeds: int,
        edge_threshold: float = 0.5, gamma: float = 0.75, batch_size: int = 64) -> np.ndarray:
    """ECS per caption from `seeds` one-step samples (seeds den.seed .. + J - 1)."""
    vals: list[float] = []
    for s in range(0, len(captions), batch_size):
        imgs = one_step_images(den, list(captions[s:s + batch_size]), resolution,
                               [den.seed + j for j in range(seeds)])
        vals.extend(edge_consistency(sobel_edges(im, edge_threshold), gamma) for im in imgs)
    return np.asarray(vals, np.float64)


@torch.inference_mode()
def angle_magnitude(den: Denoiser, captions: Sequence[str], resolution: int,
                    timesteps: Sequence[int] = (999, 900), seeds: Sequence[int] = (0, 1),
                    batch_size: int = 64) -> dict[str, np.ndarray]:
    """{"angle_magnitude", "am_magnitude", "am_alignment"} per caption (see module doc)."""
    unet = den.pipe.unet
    ac = den.pipe.scheduler.alphas_cumprod.double()
    pairs = [(int(t), int(s)) for t in timesteps for s in seeds]
    inputs, unconds = [], []
    empty = den.encode([""])
    for t, seed in pairs:
        g = torch.Generator("cpu").manual_seed(seed)
        z = torch.randn((1, *den.latent_shape(resolution)), generator=g).to(den.device)
        # x_t = sqrt(ab) x0 + sqrt(1 - ab) z with x0 unknown; at high t the noise term dominates.
        x = (z * float((1 - ac[t]).sqrt())).to(den.dtype)
        tt = torch.full((1,), t, device=den.device, dtype=torch.long)
        inputs.append((x, t))
        unconds.append(unet(x, tt, encoder_hidden_states=empty.to(den.dtype)).sample.float())
    mags, aligns = [], []
    for s in range(0, len(captions), batch_size):
        emb = den.encode(list(captions[s:s + batch_size])).to(den.dtype)
        n = len(emb)
        diffs = []
        for (x, t), un in zip(inputs, unconds, strict=True):
            tt = torch.full((n,), t, device=den.device, dtype=torch.long)
            cond = unet(x.expand(n, *x.shape[1:]), tt, encoder_hidden_states=emb).sample.float()
            diffs.append((cond - un).flatten(1))
        d = torch.stack(diffs, 1)  # (n, K, D)
        mags.append((d.norm(dim=2) / d.shape[2] ** 0.5).mean(1).double().cpu().numpy())
        unit = d / d.norm(dim=2, keepdim=True).clamp_min(1e-12)
        cos = unit @ unit.transpose(1, 2)
        k = len(pairs)
        off = (cos.sum((1, 2)) - cos.diagonal(dim1=1, dim2=2).sum(1)) / max(k * (k - 1), 1)
        aligns.append(off.double().cpu().numpy())
    mag = np.concatenate(mags)
    align = np.concatenate(aligns)
    return {"angle_magnitude": mag * (1 + align) / 2, "am_magnitude": mag, "am_alignment": align}


def score_captions(pipe, captions: Sequence[str], resolution: int, guidance_scale: float = 7.5,
                   seed: int = 0, ecs_seeds: int = 4, am_timesteps: Sequence[int] = (999, 900),
                   am_seeds: Sequence[int] = (0, 1), batch_size: int = 64
                   ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """(scores per detector and component, UNet passes per caption per detector)."""
    den = Denoiser(pipe, guidance_scale, seed)
    scores = dcs_and_magnitude(den, captions, resolution, batch_size)
    scores["ecs"] = ecs(den, captions, resolution, ecs_seeds, batch_size=batch_size)
    scores.update(angle_magnitude(den, captions, resolution, am_timesteps, am_seeds, batch_size))
    passes = dict(PASSES, ecs=ecs_seeds, angle_magnitude=len(am_timesteps) * len(am_seeds))
    return scores, passes
