"""Build the whole testbed: the pool of captioned images, one VAE and text encoder shared
by both models, and the two UNets (A "memorizing", B "large-data"), each saved as a
StableDiffusionPipeline directory with its training manifest, truth and exact config.

Two designs of the pool: "crops" (v1, diffrep.testbed.data: 32x32 crops of 19 photos) and
"scenes" (v2, diffrep.testbed.scene_pool: 64x64 mosaics with object cut-outs, one caption
generator for every kind, four kinds of memorization and prompts that are not captions).

Layout under `out_dir`:
  data/images.npz, data/pool.json           the pool (uint8 images, captions, sources, boxes;
                                            v2 also "prompts")
  <model>/                                  StableDiffusionPipeline (safetensors, DDIM)
  <model>/testbed/manifest.json             training rows: pool index, caption, repeats
  <model>/testbed/truth.json                caption -> memorized, verbatim type (MV / TV / none)
  <model>/testbed/config.json               data + training config, seeds, wall times, losses
  build.json                                VAE reconstruction RMS, timings (written last)
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from diffrep import storage
from diffrep.testbed import data as tdata
from diffrep.testbed import scene_pool
from diffrep.testbed import train as ttrain
from diffrep.testbed.scene_pool import ScenePoolConfig

log = logging.getLogger(__name__)

MODELS = {"A": "memorizing", "B": "large-data"}


def write_dataset(out_dir: Path, config: dict, images: np.ndarray, entries: list, prompts: list[dict]) -> None:
    """<out_dir>/images.npz (the pool) + pool.json (design and config, side, entries,
    prompts that are not training captions), each written atomically (diffrep.storage)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images)
    storage.write_bytes(str(out_dir / "images.npz"), buffer.getvalue())
    pool = {"config": config, "side": int(images.shape[1]), "entries": [asdict(e) for e in entries],
            "prompts": prompts}  # indent 0, keys in this order: the committed pools' bytes
    storage.write_bytes(str(out_dir / "pool.json"), json.dumps(pool, indent=0).encode())


def build_pool(out_dir: str | Path, data_cfg: tdata.DataConfig | ScenePoolConfig):
    """Build and write the pool (<out_dir>/data); returns (images, entries, rows_of,
    truth_of): the design's training_rows(cfg, entries, model) and truth_rows(entries,
    rows, model) with its prompts."""
    out = Path(out_dir)
    if not isinstance(data_cfg, ScenePoolConfig):
        images, entries = tdata.build_pool(data_cfg)
        write_dataset(out / "data", {"design": "crops", **asdict(data_cfg)}, images, entries, [])
        return images, entries, tdata.training_rows, tdata.truth_rows
    from diffrep.data.demo import load_source_photos
    from diffrep.models import create_embedder, default_weights
    from diffrep.testbed.objects import load_cutouts

    photos = {k: v.convert("RGB") for k, v in sorted(load_source_photos(use_opencv_doc=False).items())}
    cutouts, skipped = load_cutouts()
    log.info("objects: %d cut-outs (files skipped: %s)", len(cutouts), dict(skipped))
    embedder = create_embedder("sscd_onnx", weights=default_weights("sscd_onnx"), device="cpu")
    images, entries, prompts, redrawn = scene_pool.build_scene_pool(data_cfg, photos, cutouts, embedder)
    log.info("pool: %d once-seen candidates redrawn (SSCD above %.2f to a scene already in the pool)",
             redrawn, data_cfg.max_similarity)
    write_dataset(out / "data", {**scene_pool.config_dict(data_cfg), "redrawn": redrawn,
                                 "objects": len(cutouts), "objects_skipped": dict(skipped)},
                  images, entries, prompts)

    def truth_of(entries, rows, model):
        return scene_pool.truth_rows(entries, rows, model, prompts)

    return images, entries, scene_pool.training_rows, truth_of


DESIGNS = ("crops", "scenes")


def design_configs(design: str, seed: int = 0, once_a: int = 1500, once_b: int = 4000,
                   object_repeats: int = 0, **train: int | str | tuple
                   ) -> tuple[tdata.DataConfig | ScenePoolConfig, ttrain.TrainConfig]:
    """The data and training configs of a pool design; `train`: TrainConfig fields (steps,
    threads). "scenes" (v2) trains at 64 px through a three-level VAE, so its latents are
    16x16 as v1's, with 160 character tokens for its longer captions. Its VAE is wider than
    v1's (32, 64, 128 channels, 8 latent channels, 2400 steps): with v1's widths and 4
    latent channels its reconstructions scored median SSCD 0.47 to the originals, below
    the 0.5 a copy must reach; this one scores 0.66 (benchmarks/testbed_vae_ceiling.py).
    Its UNet is wider too (48, 96 channels; v1's 32, 64): at v1's width, with each object
    scene seen 12 times, model A learnt the object kind only at the cost of its memorized
    copies (docs/benchmarks.md, "Testbed v2: a wider UNet").
    object_repeats: views of each object-kind scene in A's set; 0: the design's (12)."""
    if design == "scenes":
        train = {"vae_channels": (32, 64, 128), "latent_channels": 8, "vae_steps": 2400,
                 "unet_channels": (48, 96), **train}
        pool = ScenePoolConfig(seed=seed, once_a=once_a, once_b=once_b)
        if object_repeats:
            pool.object_repeats = object_repeats
        return (pool,
                ttrain.TrainConfig(seed=seed, side=64, max_tokens=160, **train))
    if design == "crops":
        if object_repeats:
            raise ValueError("object_repeats is a setting of the scenes design (crops has no object kind)")
        return tdata.DataConfig(seed=seed, once_a=once_a, once_b=once_b), ttrain.TrainConfig(seed=seed, **train)
    raise ValueError(f"unknown testbed design {design!r}: one of {', '.join(DESIGNS)}")


def _config_of(data_cfg: tdata.DataConfig | ScenePoolConfig) -> dict:
    if isinstance(data_cfg, ScenePoolConfig):
        return scene_pool.config_dict(data_cfg)
    return {"design": "crops", **asdict(data_cfg)}


def read_built_pool(out_dir: str | Path, data_cfg: tdata.DataConfig | ScenePoolConfig):
    """The pool already written under <out_dir>/data, as build_pool returns it; raises
    ValueError when it was built with another config."""
    pool = json.loads((Path(out_dir) / "data" / "pool.json").read_text())
    wanted = _config_of(data_cfg)
    built = {"design": "crops", **pool["config"]}  # v1's pool predates the design key
    differ = sorted(k for k in wanted if built.get(k) != wanted[k])
    if differ:
        raise ValueError(f"{out_dir} holds a testbed built with other {', '.join(differ)}: "
                         "use another out_dir or delete it")
    images = np.load(Path(out_dir) / "data" / "images.npz")["images"]
    if isinstance(data_cfg, ScenePoolConfig):
        entries = [scene_pool.SceneEntry(**{**e, "box": tuple(e["box"])}) for e in pool["entries"]]
        prompts = pool.get("prompts", [])

        def truth_of(entries, rows, model):
            return scene_pool.truth_rows(entries, rows, model, prompts)

        return images, entries, scene_pool.training_rows, truth_of
    entries = [tdata.Entry(**{**e, "box": tuple(e["box"])}) for e in pool["entries"]]
    return images, entries, tdata.training_rows, tdata.truth_rows


def load_vae(folder: str | Path, train_cfg: ttrain.TrainConfig):
    """The AutoencoderKL under `folder` (a model folder or its vae/), frozen; ValueError when
    its levels or latent channels differ from train_cfg's."""
    from diffusers import AutoencoderKL

    path = Path(folder) / "vae" if (Path(folder) / "vae").is_dir() else Path(folder)
    vae = AutoencoderKL.from_pretrained(path).eval().requires_grad_(False)
    got = (tuple(vae.config.block_out_channels), vae.config.latent_channels)
    want = (tuple(train_cfg.vae_channels), train_cfg.latent_channels)
    if got != want:
        raise ValueError(f"the VAE under {path} has channels {list(got[0])} and {got[1]} latent "
                         f"channels; this training asks for {list(want[0])} and {want[1]}")
    log.info("VAE read from %s (not trained)", path)
    return vae


def build_testbed(out_dir: str | Path, data_cfg: tdata.DataConfig | ScenePoolConfig,
                  train_cfg: ttrain.TrainConfig,
                  models: tuple[str, ...] = ("A", "B"), vae_from: str | Path | None = None) -> dict:
    """Train and write the testbed (see the module docstring); returns build.json's content.
    Uses cfg.threads torch threads (one heavy process). Resumes: a model whose
    testbed/config.json exists (written last) is not trained again, and then the pool and
    the VAE it was trained with are read back instead of built; when every model asked for
    is built, nothing is written and the existing build.json is returned. A pool already
    under <out_dir>/data (the same design and config) is read back, not built again: it
    can be built on one machine (it needs the image packages and SSCD) and the models
    trained on another. `vae_from`: a model folder (or its vae/ folder) whose VAE is used
    instead of training one (its latent channels and levels must match train_cfg's)."""
    out = Path(out_dir)
    torch.set_num_threads(train_cfg.threads)
    t0 = time.time()
    done = [m for m in models if (out / MODELS[m] / "testbed" / "config.json").exists()]
    if len(done) == len(models) and (out / "build.json").exists():
        read_built_pool(out, data_cfg)  # the same design and config, or a clear error
        log.info("every model asked for is built under %s: nothing to do (delete a model's "
                 "folder to train it again)", out)
        return json.loads((out / "build.json").read_text())
    given_vae = load_vae(vae_from, train_cfg) if vae_from is not None and not done else None
    t_vae = time.time()
    if done:
        images, entries, rows_of, truth_of = read_built_pool(out, data_cfg)
        vae = load_vae(out / MODELS[done[0]], train_cfg)
        log.info("resuming: model(s) %s already built; their pool and VAE are read back", ", ".join(done))
    else:
        if (out / "data" / "pool.json").exists():  # built with this config, or a clear error
            images, entries, rows_of, truth_of = read_built_pool(out, data_cfg)
            log.info("pool: %d images read back from %s", len(images), out / "data")
        else:
            images, entries, rows_of, truth_of = build_pool(out, data_cfg)
            log.info("pool: %d images (%.0f s)", len(images), time.time() - t0)
        t_vae = time.time()
        vae = ttrain.train_vae(images, train_cfg) if given_vae is None else given_vae
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
    info: dict = {"vae_reconstruction_rms": rms, "pool_images": len(images), "models": {}}
    if done:  # the training time of a VAE read back is in no file: say where it came from
        info["vae_read_back_from"] = MODELS[done[0]]
    elif vae_from is not None:
        info["vae_from"] = str(vae_from)
    else:
        info["vae_seconds"] = time.time() - t_vae
    for model in models:
        name = MODELS[model]
        rows = rows_of(data_cfg, entries, model)
        expanded = np.repeat([i for i, _ in rows], [r for _, r in rows])
        if model in done:
            config = json.loads((out / name / "testbed" / "config.json").read_text())
            history = config["loss_history"]
            info["models"][name] = {"seconds": config["train_seconds"], "distinct": len(rows),
                                    "samples": len(expanded), "resumed": True,
                                    "final_loss": history[-1][1] if history else None}
            continue
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
            "model": name, "captions": truth_of(entries, rows, model)})
        ttrain.write_json(meta / "config.json", {
            "model": model, "name": name, "data": asdict(data_cfg), "train": asdict(train_cfg),
            "unet_parameters": sum(p.numel() for p in unet.parameters()),
            "train_seconds": seconds, "loss_history": history})
        info["models"][name] = {"seconds": seconds, "distinct": len(rows), "samples": len(expanded),
                                "final_loss": history[-1][1] if history else None}
        log.info("model %s written to %s (%.0f s)", name, mdir, seconds)
    info["seconds"] = time.time() - t0
    ttrain.write_json(out / "build.json", info)
    return info
