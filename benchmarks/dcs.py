"""DCS scoring benchmark (figures printed and written to JSON; not a test).

captions/s of diffrep's batched scoring (one UNet row per caption; the unconditional
prediction shared, since every caption sees the same noise) against one caption per call
as the reference implementation (onestep-extraction's whitebox attack) runs it: a
pipeline call per caption with one Euler/Heun step from sigma_max (prompt encoding with
its negative, a UNet batch of 2 for guidance, output latents). Same pipeline, same seed;
the scores are checked to agree. Also a minimal per-caption loop without the pipeline's
call overhead, to separate what batching saves from what sharing the unconditional row saves. On a GPU also
the achieved FLOP rate (UNet + text encoder, counted by torch's FlopCounterMode) as a
fraction of the card's dense fp16 peak, and the hours for 2M captions on one GPU.

Run: python -m benchmarks.dcs --out bench-results/dcs.json
     python -m benchmarks.dcs --pipeline sd_v1 --device cuda --resolution 512 --captions 2048 --batch_size 128
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from benchmarks.common import write_results

PEAK_FP16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM


def reference_pipeline_dcs(pipe, caption: str, resolution: int, seed: int, guidance: float) -> float:
    """One caption per pipeline call, as the reference implementation scores."""
    from diffusers import EulerDiscreteScheduler

    if not isinstance(pipe.scheduler, EulerDiscreteScheduler):
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config,
                                                            timestep_spacing="trailing")
    latent = resolution // pipe.vae_scale_factor
    g = torch.Generator("cpu").manual_seed(seed)
    eps = torch.randn((1, pipe.unet.config.in_channels, latent, latent), generator=g)
    eps = eps.to(pipe.device, pipe.unet.dtype)
    out = pipe(caption, num_inference_steps=1, guidance_scale=guidance, height=resolution,
               width=resolution, latents=eps, output_type="latent").images
    x = eps.float() * float(pipe.scheduler.init_noise_sigma)
    return float(((x - out.float()) ** 2).mean())


def reference_scores(den, caption: str, resolution: int) -> float:
    """One caption per call without the pipeline: encoder on [uncond, cond], UNet on 2 rows."""
    x = den.noise(resolution, den.seed)
    embeds = den.encode(["", caption])
    out = den.model_output(x, embeds)
    u, c = out[:1], out[1:]
    d = den.denoised(x, u + den.guidance_scale * (c - u))
    return float(((x - d) ** 2).mean())


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def count_flops(den, resolution: int) -> float:
    """FLOPs of one caption's scoring (text encoder + one UNet row)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = den.noise(resolution, den.seed)
    with FlopCounterMode(display=False) as counter:
        den.model_output(x, den.encode(["a caption"]))
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-results/dcs.json")
    parser.add_argument("--pipeline", default="tiny", choices=["tiny", "sd_v1"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--captions", type=int, default=512)
    parser.add_argument("--reference_captions", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--channels_last", action="store_true", help="UNet in channels-last layout")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    args = parser.parse_args()

    from diffrep.diffusion.pipelines import Checkpoint, load_pipeline
    from diffrep.diffusion.scores import Denoiser
    from diffrep.diffusion.tiny import build_tiny_pipeline, sd_v1_components

    captions = [f"a photo of object number {i} on a table, studio light" for i in range(args.captions)]
    with tempfile.TemporaryDirectory() as tmp:
        extra = sd_v1_components() if args.pipeline == "sd_v1" else {}
        build_tiny_pipeline(tmp, seed=0, resolution=args.resolution, **extra)
        pipe = load_pipeline(Checkpoint(args.pipeline, tmp), device=args.device, dtype="auto")
    if args.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if args.compile:
        pipe.unet = torch.compile(pipe.unet)
    den = Denoiser(pipe, 7.5, 0)
    den.scores(captions[:args.batch_size], args.resolution)  # warm-up (and the cached unconditional row)
    reference_scores(den, captions[0], args.resolution)

    sync(args.device)
    t0 = time.perf_counter()
    batched = np.concatenate([den.scores(captions[i:i + args.batch_size], args.resolution)["dcs"]
                              for i in range(0, len(captions), args.batch_size)])
    sync(args.device)
    batched_rate = len(captions) / (time.perf_counter() - t0)

    n_ref = min(args.reference_captions, len(captions))
    t0 = time.perf_counter()
    minimal = [reference_scores(den, c, args.resolution) for c in captions[:n_ref]]
    sync(args.device)
    minimal_rate = n_ref / (time.perf_counter() - t0)
    reference_pipeline_dcs(pipe, captions[0], args.resolution, 0, 7.5)  # warm-up
    t0 = time.perf_counter()
    ref = [reference_pipeline_dcs(pipe, c, args.resolution, 0, 7.5) for c in captions[:n_ref]]
    sync(args.device)
    ref_rate = n_ref / (time.perf_counter() - t0)
    agree = float(np.max(np.abs(np.array(ref) - batched[:n_ref]) / np.abs(np.array(ref))))
    agree_minimal = float(np.max(np.abs(np.array(minimal) - batched[:n_ref]) / np.abs(np.array(minimal))))

    results = {"pipeline": args.pipeline, "channels_last": args.channels_last,
               "compile": args.compile, "device": args.device, "dtype": str(pipe.unet.dtype),
               "resolution": args.resolution, "batch_size": args.batch_size,
               "unet_parameters": sum(p.numel() for p in pipe.unet.parameters()),
               "captions_per_s_batched": round(batched_rate, 2),
               "captions_per_s_one_pipeline_call_each": round(ref_rate, 2),
               "captions_per_s_minimal_loop": round(minimal_rate, 2),
               "speedup": round(batched_rate / ref_rate, 2),
               "speedup_vs_minimal_loop": round(batched_rate / minimal_rate, 2),
               "max_relative_difference_vs_pipeline": agree,
               "max_relative_difference_vs_minimal_loop": agree_minimal,
               "cpus": os.cpu_count()}
    print(f"DCS {args.pipeline} on {args.device} at {args.resolution}px: batched "
          f"{batched_rate:.1f} captions/s; one pipeline call per caption {ref_rate:.1f} "
          f"captions/s: x{batched_rate / ref_rate:.1f} (minimal per-caption loop "
          f"{minimal_rate:.1f}/s: x{batched_rate / minimal_rate:.1f}); scores agree to "
          f"{agree:.1e} relative", flush=True)
    if args.device.startswith("cuda"):
        flops = count_flops(den, args.resolution)
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_FP16_TFLOPS.items() if k in name), None)
        achieved = flops * batched_rate / 1e12
        results.update(gpu=name, flops_per_caption=flops, achieved_tflops=round(achieved, 1),
                       peak_fp16_tflops=peak,
                       fraction_of_peak=round(achieved / peak, 3) if peak else None,
                       hours_for_2M_captions=round(2e6 / batched_rate / 3600, 2))
        print(f"{name}: {flops / 1e9:.1f} GFLOP per caption, {achieved:.0f} TFLOP/s achieved "
              f"({results['fraction_of_peak']} of the dense fp16 peak); 2M captions in "
              f"{results['hours_for_2M_captions']} h on one GPU", flush=True)
    write_results(args.out, results)


if __name__ == "__main__":
    main()
