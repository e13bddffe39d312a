"""Build the whole testbed: the pool of captioned images, one VAE and text encoder shared
by both models, and the two UNets (A "memorizing", B "large-data"), each saved as a
StableDiffusionPipeline directory with its training manifest, truth and exact config.

Layout under `out_dir`:
  data/images.npz, data/pool.json           the pool (32x32 uint8 images, captions, crop boxes)
  <model>/                                  StableDiffusionPipeline (safetensors, DDIM)
  <model>/testbed/manifest.json             training rows: pool index, caption, repeats
  <model>/testbed/truth.json                caption -> memorized, verbatim type (MV / TV / none)
  <model>/testbed/config.json               data + training config, seeds, wall times, losses
  build.json                                VAE reconstruction RMS, timings (written last)
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from diffrep.testbed import data as tdata
from diffrep.testbed import train as ttrain

log = logging.getLogger(__name__)

MODELS = {"A": "memorizing", "B": "large-data"}


def build_testbed(out_dir: str | Path, data_cfg: tdata.DataConfig, train_cfg: ttrain.TrainConfig,
                  models: tuple[str, ...] = ("A", "B")) -> dict:
    """Train and write the testbed (see the module docstring); returns build.json's content.
    Uses cfg.threads torch threads (one heavy process)."""
    out = Path(out_dir)
    torch.set_num_threads(train_cfg.threads)
    t0 = time.time()
    images, entries = tdata.build_pool(data_cfg)
    tdata.write_dataset(out / "data", data_cfg, images, entries)
    log.info("pool: %d images (%.0f s)", len(images), time.time() - t0)

    t_vae = time.time()
    vae = ttrain.train_vae(images, train_cfg)
    rms = ttrain.vae_rms(vae, images)
    log.info("vae: reconstruction RMS %.4f (%.0f s)", rms, time.time() - t_vae)
    tok_dir = out / "data" / "text"
    tok, te = ttrain.build_text_encoder(tok_dir, train_cfg)
    embeds = ttrain.encode_captions(tok, te, [e.caption for e in entries])
    uncond = ttrain.encode_captions(tok, te, [""])[0]
    with torch.no_grad():
        x = ttrain.to_tensor(images)
        latents = torch.cat([vae.encode(x[i:i + 256]).latent_dist.mean
                             for i in range(0, len(x), 256)]) * vae.config.scaling_factor
    info: dict = {"vae_reconstruction_rms": rms, "vae_seconds": time.time() - t_vae,
                  "pool_images": len(images), "models": {}}
    for model in models:
        name = MODELS[model]
        rows = tdata.training_rows(data_cfg, entries, model)
        expanded = np.repeat([i for i, _ in rows], [r for _, r in rows])
        t_m = time.time()
        log.info("model %s (%s): %d distinct images, %d samples", model, name, len(rows), len(expanded))
        unet, history = ttrain.train_unet(latents, embeds, uncond, expanded, train_cfg)
        seconds = time.time() - t_m
        mdir = out / name
        ttrain.save_pipeline(mdir, vae, tok, te, unet)
        meta = mdir / "testbed"
        meta.mkdir(exist_ok=True)
        ttrain.write_json(meta / "manifest.json", {
            "pool": "../../data", "rows": [{"index": i, "caption": entries[i].caption, "repeats": r}
                                          for i, r in rows]})
        ttrain.write_json(meta / "truth.json", {
            "model": name, "captions": tdata.truth_rows(entries, rows, model)})
        ttrain.write_json(meta / "config.json", {
            "model": model, "name": name, "data": asdict(data_cfg), "train": asdict(train_cfg),
            "unet_parameters": sum(p.numel() for p in unet.parameters()),
            "train_seconds": seconds, "loss_history": history})
        info["models"][name] = {"seconds": seconds, "distinct": len(rows), "samples": len(expanded),
                                "final_loss": history[-1][1] if history else None}
        log.info("model %s written to %s (%.0f s)", name, mdir, seconds)
    info["seconds"] = time.time() - t0
    (out / "build.json").write_text(json.dumps(info, indent=1))
    return info
