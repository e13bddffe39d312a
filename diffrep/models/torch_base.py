"""Shared machinery for torch embedders: device, precision, normalisation on device."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from diffrep.models.base import Embedder, to_uint8_hwc


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no GPU: use device: cpu or auto")
    return device


def split_pil_transform(
    transform: T.Compose,
) -> tuple[Callable[[Image.Image], Image.Image], Sequence[float], Sequence[float]]:
    """Split a torchvision eval transform (PIL ops, ToTensor, Normalize) into its PIL
    part and the normalisation constants, so normalisation can run batched on device."""
    pil_ops, mean, std = [], (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    seen_tensor = False
    for op in transform.transforms:
        kind = type(op).__name__
        if kind in ("ToTensor", "MaybeToTensor", "PILToTensor"):
            seen_tensor = True
        elif kind == "Normalize":
            mean, std = tuple(op.mean), tuple(op.std)
        elif seen_tensor:
            raise ValueError(f"cannot move tensor op {kind} before normalisation")
        else:
            pil_ops.append(op)
    return T.Compose(pil_ops), mean, std


class TorchEmbedder(Embedder):
    """An nn.Module embedder: uint8 NHWC -> normalised on device -> model -> L2 norm."""

    def __init__(
        self,
        module: torch.nn.Module,
        pil_stage: Callable[[Image.Image], Image.Image],
        mean: Sequence[float],
        std: Sequence[float],
        device: str = "auto",
        half_on_gpu: bool = True,
    ):
        self.device = resolve_device(device)
        self.module = module.eval().to(self.device)
        self._pil_stage = pil_stage
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255.0
        self._autocast = self.device.startswith("cuda") and half_on_gpu

    def prepare(self, image: Image.Image) -> np.ndarray:
        return to_uint8_hwc(self._pil_stage(image))

    def _to_input(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float()
        # (x/255 - mean)/std, with the 255 folded into the constants
        return (x - self._mean) / self._std

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    @torch.inference_mode()
    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        with torch.autocast("cuda", dtype=torch.float16, enabled=self._autocast):
            out = self.forward_pooled(self._to_input(batch))
        out = torch.nn.functional.normalize(out.float(), dim=-1)
        return out.cpu().numpy()
