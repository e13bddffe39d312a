"""SSCD (Pizzi et al. 2022), the copy-detection descriptor of paper 1.

`sscd_disc_mixup`: ResNet-50 trunk, GeM pooling (p=3), 512-d linear projection,
L2-normalised. Weights are Meta's released TorchScript file (sha256-pinned) or a state
dict in the layout of SSCD's torchvision implementation (`backbone.*`, the projection
being `backbone.fc`).

The ONNX exports (`sscd_onnx`, `sscd_distilled_onnx`) and the preprocessing both share
are in diffrep.models.sscd_onnx, which does not import torch.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from diffrep.models.sscd_onnx import sscd_pil_stage
from diffrep.models.torch_base import TorchEmbedder
from diffrep.models.weights import WeightsError, WeightsSpec, load_into, resolve_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GeM(nn.Module):
    """Generalised-mean pooling over H, W (inputs are post-ReLU, hence non-negative)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p, self.eps = p, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)


class SSCDResNet50(nn.Module):
    def __init__(self, dim: int = 512):
        super().__init__()
        self.backbone = torchvision.models.resnet50(num_classes=dim, zero_init_residual=True)
        self.backbone.avgpool = GeM(3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.backbone(x), dim=-1)


class SSCDTorch(TorchEmbedder):
    dim = 512

    def __init__(self, weights: WeightsSpec, device: str = "auto", resize: str = "square320",
                 name: str = "sscd_disc_mixup"):
        self.name = name
        if weights.kind == "random":
            module: nn.Module = SSCDResNet50()
            self.random_init = True
        elif weights.kind == "pretrained":
            raise WeightsError(
                f"weights.{name}: SSCD has no library weights; give Meta's TorchScript file "
                "(sscd_disc_mixup.torchscript.pt, with its sha256) or a state dict"
            )
        else:
            path = resolve_file(weights, name)
            if weights.file_format == "torchscript":
                module = torch.jit.load(str(path), map_location="cpu")
            else:
                module = SSCDResNet50()
                load_into(module, path, weights.file_format, name)
        super().__init__(module, sscd_pil_stage(resize), IMAGENET_MEAN, IMAGENET_STD, device)
