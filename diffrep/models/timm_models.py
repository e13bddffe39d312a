"""timm models (`timm:<name>`, and `dino_vitb16`): pooled descriptor and patch tokens."""

from __future__ import annotations

import numpy as np
import torch

from diffrep.models.torch_base import TorchEmbedder, split_pil_transform
from diffrep.models.weights import WeightsError, WeightsSpec, load_into, resolve_file


class TimmEmbedder(TorchEmbedder):
    """A timm backbone without classifier. The pooled descriptor is timm's pre-logits
    feature (the CLS token for DINO ViTs); tokens are the patch tokens (prefix tokens
    dropped; a CNN's spatial cells), each L2-normalised, for split-product search.

    weights: "pretrained" (timm's default tag, HF cache or hub), a local state dict, or
    "random".
    """

    has_tokens = True

    def __init__(self, arch: str, weights: WeightsSpec, device: str = "auto", name: str = ""):
        import timm

        self.name = name or f"timm:{arch}"
        if not timm.list_models(arch.split(".")[0]) and not timm.is_model(arch):
            raise ValueError(f"{self.name}: unknown timm model {arch!r}; see timm.list_models()")
        model = timm.create_model(arch, pretrained=weights.kind == "pretrained", num_classes=0)
        if weights.kind in ("file", "url"):
            if weights.file_format not in ("safetensors", "torch"):
                raise WeightsError(f"weights.{self.name}: timm weights must be safetensors or a state dict")
            load_into(model, resolve_file(weights, self.name), weights.file_format, self.name,
                      ignore_prefixes=("head.", "fc.", "classifier."))
        self.random_init = weights.kind == "random"
        self.dim = int(model.num_features)
        config = timm.data.resolve_model_data_config(model)
        transform = timm.data.create_transform(**config, is_training=False)
        pil_stage, mean, std = split_pil_transform(transform)
        super().__init__(model, pil_stage, mean, std, device)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.forward_head(self.module.forward_features(x), pre_logits=True)

    @torch.inference_mode()
    def embed_prepared_tokens(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.autocast("cuda", dtype=torch.float16, enabled=self._autocast):
            feats = self.module.forward_features(self._to_input(batch))
            pooled = self.module.forward_head(feats, pre_logits=True)
        if feats.ndim == 4:  # CNN: N, C, H, W -> N, H*W, C
            tokens = feats.flatten(2).transpose(1, 2)
        else:
            tokens = feats[:, getattr(self.module, "num_prefix_tokens", 0):]
        norm = torch.nn.functional.normalize
        return (norm(pooled.float(), dim=-1).cpu().numpy(),
                norm(tokens.float(), dim=-1).cpu().numpy())
