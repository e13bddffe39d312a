"""CLIP image towers through open_clip: `clip:<open_clip model name>`."""

from __future__ import annotations

import contextlib
import logging

from diffrep.models.torch_base import TorchEmbedder, split_pil_transform
from diffrep.models.weights import WeightsSpec, load_into, resolve_file


class OpenClipImageEmbedder(TorchEmbedder):
    """The image tower of an open_clip model with open_clip's own eval preprocessing.

    weights: "pretrained:<tag>" (open_clip's pretrained tag, from the HF cache or hub),
    a local checkpoint of the whole CLIP model (safetensors or weights_only torch), or
    "random" (explicit random init, for tests and offline demos).
    """

    def __init__(self, arch: str, weights: WeightsSpec, device: str = "auto"):
        import open_clip

        self.name = f"clip:{arch}"
        if arch not in open_clip.list_models():
            raise ValueError(f"clip:{arch}: unknown open_clip model; see open_clip.list_models()")
        pretrained = None
        if weights.kind == "pretrained":
            if not weights.tag:
                tags = [t for a, t in open_clip.list_pretrained() if a == arch]
                raise ValueError(f"weights.{self.name}: name a tag, e.g. pretrained:{tags[0] if tags else 'TAG'}")
            pretrained = weights.tag
        # open_clip warns "initialized randomly" whenever no tag is given, also when the
        # weights are loaded from a file right below; random init is warned about by the job
        with _quiet_random_init_warning():
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
        if weights.kind in ("file", "url"):
            load_into(model, resolve_file(weights, self.name), weights.file_format, self.name)
        self.random_init = weights.kind == "random"
        visual = model.visual
        del model
        self.dim = int(visual.output_dim)
        pil_stage, mean, std = split_pil_transform(preprocess)
        super().__init__(visual, pil_stage, mean, std, device)


@contextlib.contextmanager
def _quiet_random_init_warning():
    """Drop open_clip's "No pretrained weights loaded ... initialized randomly" record."""

    class Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "initialized randomly" not in record.getMessage()

    root, drop = logging.getLogger(), Drop()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
