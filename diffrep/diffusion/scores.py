"""Caption scores from one denoiser evaluation (paper 2 and DESIGN.md "Science").

k-diffusion's view of a discrete DDPM model: sigma_t = sqrt((1 - alphabar_t) / alphabar_t),
input scaled by c_in = 1 / sqrt(sigma^2 + 1), and the denoiser
    eps-prediction:  D(x, c) = x - sigma * eps(c_in x, t, c)
    v-prediction:    D(x, c) = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * v(c_in x, t, c)
with classifier-free guidance applied to the model output (D is affine in it).
With x = sigma_1 * eps and one Karras/Heun step to sigma 0 (an Euler step), the one-step
sample is D itself, so

    DCS(c)             = mean((x - D(x, c))^2)            over the latent's elements
    noise magnitude(c) = || D(x, empty) - D(x, c) || / sigma_1
                       = || eps(c) - eps(empty) ||  for eps models (Wen et al. 2024, step 1)

The same noise x serves every caption (one seed), so the unconditional prediction is the
same for all of them: it is computed once, and each caption costs one UNet row. A
caption's scores then depend on its text and the seed, not on its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Denoiser:
    """A text-conditional UNet seen as a k-diffusion denoiser at its largest sigma."""

    pipe: object  # a diffusers StableDiffusionPipeline
    guidance_scale: float = 7.5
    seed: int = 0

    def __post_init__(self):
        sched = self.pipe.scheduler.config
        self.prediction_type = sched.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction type {self.prediction_type!r} is not supported "
                             f"(epsilon or v_prediction)")
        alphas_cumprod = self.pipe.scheduler.alphas_cumprod.double()
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
        self.timestep = len(self.sigmas) - 1
        self.sigma = float(self.sigmas[self.timestep])  # sigma_max: 14.6146 for SD v1
        self.device = self.pipe.unet.device
        self.dtype = self.pipe.unet.dtype
        self._uncond: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        factor = self.pipe.vae_scale_factor
        return (self.pipe.unet.config.in_channels, resolution // factor, resolution // factor)

    def noise(self, resolution: int, seed: int) -> torch.Tensor:
        """x = sigma_1 * eps, eps ~ N(0, I) from `seed` (float32, on CPU, then moved)."""
        g = torch.Generator("cpu").manual_seed(int(seed))
        eps = torch.randn((1, *self.latent_shape(resolution)), generator=g, dtype=torch.float32)
        return (eps * self.sigma).to(self.device)

    @torch.inference_mode()
    def encode(self, captions: list[str]) -> torch.Tensor:
        tok = self.pipe.tokenizer(captions, padding="max_length", truncation=True,
                                  max_length=self.pipe.tokenizer.model_max_length,
                                  return_tensors="pt")
        return self.pipe.text_encoder(tok.input_ids.to(self.device))[0]

    @torch.inference_mode()
    def model_output(self, x: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """UNet output (float32) at sigma_1 for latents x (N or 1, C, h, w) and text embeddings."""
        c_in = 1.0 / (self.sigma ** 2 + 1) ** 0.5
        xin = (x * c_in).to(self.dtype).expand(len(embeds), *x.shape[1:])
        t = torch.full((len(embeds),), self.timestep, device=self.device, dtype=torch.long)
        return self.pipe.unet(xin, t, encoder_hidden_states=embeds.to(self.dtype)).sample.float()

    def denoised(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        s = self.sigma
        if self.prediction_type == "epsilon":
            return x - s * output
        return x / (s ** 2 + 1) - s / (s ** 2 + 1) ** 0.5 * output

    def uncond_output(self, x: torch.Tensor, key: int) -> torch.Tensor:
        if key not in self._uncond:
            self._uncond[key] = (x, self.model_output(x, self.encode([""])))
        return self._uncond[key][1]

    @torch.inference_mode()
    def one_step(self, captions: list[str], resolution: int, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, guided D(x, c), unguided-conditional D) for one batch of captions."""
        x = self.noise(resolution, seed)
        uncond = self.uncond_output(x, seed * 100003 + resolution)
        cond = self.model_output(x, self.encode(captions))
        guided = uncond + self.guidance_scale * (cond - uncond)
        return x, self.denoised(x, guided), self.denoised(x, cond) - self.denoised(x, uncond)

    def scores(self, captions: list[str], resolution: int) -> dict[str, np.ndarray]:
        """{"dcs", "noise_magnitude"} per caption (float64), with this denoiser's seed."""
        x, d, cond_minus_uncond = self.one_step(captions, resolution, self.seed)
        dcs = ((x - d) ** 2).flatten(1).mean(1)
        magnitude = cond_minus_uncond.flatten(1).norm(dim=1) / self.sigma
        return {"dcs": dcs.double().cpu().numpy(), "noise_magnitude": magnitude.double().cpu().numpy()}


def sobel_edges(images: np.ndarray, threshold: float) -> np.ndarray:
    """Binary edge maps of (N, H, W, 3) images in [0, 1]: Sobel gradient magnitude of the
    grey image (ITU-R 601 luma) above `threshold`. Border pixels are never edges."""
    grey = images[..., :3] @ np.array([0.299, 0.587, 0.114])
    p = np.pad(grey, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (p[:, :-2, 2:] + 2 * p[:, 1:-1, 2:] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, 1:-1, :-2] + p[:, 2:, :-2])
    gy = (p[:, 2:, :-2] + 2 * p[:, 2:, 1:-1] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, :-2, 1:-1] + p[:, :-2, 2:])
    edges = np.hypot(gx, gy) > threshold
    edges[:, [0, -1], :] = False
    edges[:, :, [0, -1]] = False
    return edges


def edge_consistency(edge_maps: np.ndarray, gamma: float) -> float:
    """ECS of one caption from its J binary edge maps (J, H, W): average over seeds,
    threshold at gamma, squared L2 norm (the number of consistently-edged pixels)."""
    consistent = edge_maps.mean(axis=0) > gamma
    return float(np.square(consistent.astype(np.float64)).sum())


@torch.inference_mode()
def one_step_images(den: Denoiser, captions: list[str], resolution: int,
                    seeds: list[int]) -> np.ndarray:
    """The decoded one-step samples D(x_j, c) of each caption for each seed: (N, J, H, W, 3)
    float32 in [0, 1]. Seed j's noise is the same for every caption (as in scores)."""
    vae = den.pipe.vae
    out = []
    for seed in seeds:
        _, d, _ = den.one_step(captions, resolution, seed)
        img = vae.decode((d / vae.config.scaling_factor).to(vae.dtype)).sample.float()
        out.append(((img.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy())
    return np.stack(out, axis=1)
