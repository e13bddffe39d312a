"""Loading diffusion checkpoints safely: diffusers pipeline directories or hub ids
resolved from the local Hugging Face cache, safetensors weights only.

Why only safetensors: a .bin/.ckpt/.pt checkpoint is a pickle, and unpickling runs code
chosen by whoever wrote the file. Checkpoints come from model hubs and shared buckets,
so they are treated as untrusted; a checkpoint without safetensors weights is refused
before any work starts (convert it once, where it is trusted, with save_pretrained).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from diffrep.config import InputError

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder")

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm_solver": "DPMSolverMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
}


class CheckpointError(InputError, ValueError):
    """A checkpoint cannot be used; the message names the path and the fix."""


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint: `name` as configured, `path` a local pipeline directory."""

    name: str
    path: str

    @property
    def label(self) -> str:
        return output_label(self.name)


def output_label(name: str) -> str:
    """Path-safe name for output folders: a directory's last component, else the name
    (a hub id, a set of given images) with "/" as "--"."""
    if os.path.isdir(name):
        return os.path.basename(os.path.normpath(name)) or "checkpoint"
    return name.strip("/").replace("/", "--").replace(":", "-") or "checkpoint"


def resolve_checkpoint(name: str, key: str = "checkpoint") -> Checkpoint:
    """A pipeline directory, or a hub id ("org/model") found in the local HF cache (no
    download: clusters read checkpoints from storage they trust). Raises CheckpointError
    naming the config `key` (e.g. "dcs.checkpoint")."""
    try:
        return _resolve_checkpoint(name)
    except CheckpointError as exc:
        raise CheckpointError(f"{key}: {exc}") from None


def _near_directory(name: str) -> str:
    """ "; did you mean 'x'?" when a sibling directory of `name` is spelled almost alike."""
    import difflib

    parent, base = os.path.split(os.path.normpath(name))
    if not base or not os.path.isdir(parent or "."):
        return ""
    siblings = [d for d in os.listdir(parent or ".") if os.path.isdir(os.path.join(parent or ".", d))]
    near = difflib.get_close_matches(base, siblings, n=1, cutoff=0.75)
    return f"; did you mean {os.path.join(parent, near[0])!r}?" if near else ""


def _resolve_checkpoint(name: str) -> Checkpoint:
    if os.path.isdir(name):
        path = name
    elif os.path.isfile(name):
        raise CheckpointError(
            f"checkpoint {name!r} is a single file; diffrep loads diffusers pipeline "
            f"directories with safetensors weights (convert it with diffusers' "
            f"from_single_file(...).save_pretrained(dir, safe_serialization=True) where you trust it)")
    else:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            path = snapshot_download(name, local_files_only=True)
        except (LocalEntryNotFoundError, ValueError) as exc:
            near = _near_directory(name)
            hint = near or (f"; if it is a hub model, download it first "
                            f"(huggingface-cli download {name})")
            raise CheckpointError(
                f"checkpoint {name!r} is neither a directory nor a model in the local Hugging "
                f"Face cache ({os.environ.get('HF_HUB_CACHE') or '~/.cache/huggingface/hub'})"
                f"{hint}") from exc
    check_safetensors(path)
    return Checkpoint(name, path)


def check_safetensors(path: str) -> None:
    """Every weight-holding component of the pipeline at `path` has safetensors weights."""
    root = Path(path)
    if not (root / "model_index.json").is_file():
        raise CheckpointError(f"{path}: no model_index.json; not a diffusers pipeline directory")
    index = json.loads((root / "model_index.json").read_text())
    for component in WEIGHT_COMPONENTS:
        if component not in index:
            continue
        folder = root / component
        files = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        if any(f.endswith(".safetensors") or f.endswith(".safetensors.index.json") for f in files):
            continue
        pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
        found = f"only pickle weights ({', '.join(sorted(pickles))})" if pickles else "no weights"
        raise CheckpointError(
            f"{folder}: {found}. diffrep loads safetensors only, since unpickling an untrusted "
            f"checkpoint can run arbitrary code; convert it where you trust it with "
            f"pipeline.save_pretrained(dir, safe_serialization=True)")


def load_pipeline(checkpoint: Checkpoint, device: str = "cpu", dtype: str = "auto",
                  scheduler: str | None = None):
    """The StableDiffusionPipeline of `checkpoint` on `device`, safetensors only, no
    safety checker (its verdicts would hide the replications we look for).

    dtype: "auto" (float16 on CUDA, float32 on CPU, where half precision is slow),
    "float16", "bfloat16" or "float32". scheduler: a SCHEDULERS name or None (keep).
    """
    from diffusers import StableDiffusionPipeline

    check_safetensors(checkpoint.path)
    quiet_loading()
    torch_dtype = resolve_dtype(dtype, device)
    # diffusers >= 0.36 names it `dtype` (and warns on `torch_dtype`); older ones do not know it
    dtype_kw = "dtype" if _accepts_dtype_keyword() else "torch_dtype"
    # low_cpu_mem_usage=False: without accelerate diffusers falls back to it after a warning
    pipe = StableDiffusionPipeline.from_pretrained(
        checkpoint.path, use_safetensors=True, local_files_only=True, safety_checker=None,
        requires_safety_checker=False, low_cpu_mem_usage=False, **{dtype_kw: torch_dtype})
    if scheduler:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def quiet_loading() -> None:
    """No per-component progress bars from diffusers and transformers when a worker loads
    a pipeline (a job's own progress lines say how far it is)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _accepts_dtype_keyword() -> bool:
    from diffusers.utils import deprecation_utils

    return hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE")


def make_scheduler(name: str, config: dict):
    import diffusers

    if name not in SCHEDULERS:
        raise CheckpointError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS)}")
    return getattr(diffusers, SCHEDULERS[name]).from_config(config)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if dtype not in ("float16", "bfloat16", "float32"):
        raise CheckpointError(f"dtype must be auto, float16, bfloat16 or float32, not {dtype!r}")
    return getattr(torch, dtype)
